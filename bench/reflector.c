/*
 * A minimal UDP echo reflector for the echo benchmark only (not part of netmon): the C-level
 * ceiling netmon's echo server is compared with. One thread, one socket,
 * recvmmsg of up to BATCH datagrams then one sendmmsg of them back to their sources; no
 * checks at all. Same 4 MiB receive buffer as netmon's server.
 *
 *   gcc -O2 -o reflector bench/reflector.c && ./reflector 127.0.0.1 0
 *
 * Prints "port N" once bound (stdout, flushed), runs until SIGTERM/SIGINT, then prints the
 * datagrams it echoed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BATCH 32
#define SLOT 2049

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
    const char *ip = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", ip); return 2; }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    int rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    /* Wake every 100 ms to notice a signal, as netmon's server does. */
    struct timeval tv = {0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);

    static char bufs[BATCH][SLOT];
    struct iovec iov[BATCH];
    struct sockaddr_in6 from[BATCH]; /* room for either family */
    struct mmsghdr msgs[BATCH];
    unsigned long long echoed = 0;
    while (!stop) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = SLOT;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
        int done = 0;
        while (done < n) {
            int m = sendmmsg(fd, msgs + done, n - done, 0);
            if (m < 0) {
                if (errno == EINTR) continue;
                done++; /* skip the refused one, as netmon does */
                continue;
            }
            done += m;
            echoed += m;
        }
    }
    printf("echoed %llu\n", echoed);
    return 0;
}
