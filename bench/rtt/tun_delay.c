/* A host that answers ICMP echo requests after an exact delay, behind a TUN device: the C
 * twin of tun_delay.py for measurements, where Python's own scheduling noise (~0.1 ms) would be
 * as large as the differences being measured. Absolute-deadline sleeps on CLOCK_MONOTONIC,
 * then a short spin, keep each reply within a few microseconds of its due time.
 *
 * Run inside a network namespace made for it (compare.py does): creates `nmtun0` with
 * 10.77.0.1/24 (via `ip`), answers echo requests to 10.77.0.2 after DELAY_US, stops after
 * SECONDS. Build: cc -O2 -o tun_delay tun_delay.c
 * Usage: tun_delay [DELAY_US=5000] [SECONDS=120]
 */
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define QUEUE 4096
#define MTU 2048

struct pending {
    uint64_t due_ns;
    size_t len;
    unsigned char data[MTU];
};

static struct pending queue[QUEUE];
static size_t head, tail;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint16_t checksum(const unsigned char *p, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1) sum += (uint32_t)(p[n - 1] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Turns an IPv4 echo request to 10.77.0.2 into its reply in place; 0 when it is not one. */
static int make_reply(unsigned char *p, size_t n) {
    if (n < 28 || p[0] >> 4 != 4 || p[9] != 1) return 0;
    size_t ihl = (size_t)(p[0] & 0x0f) * 4;
    static const unsigned char peer[4] = {10, 77, 0, 2};
    if (n < ihl + 8 || memcmp(p + 16, peer, 4) != 0 || p[ihl] != 8) return 0;
    unsigned char src[4];
    memcpy(src, p + 12, 4);
    memcpy(p + 12, p + 16, 4);
    memcpy(p + 16, src, 4);
    p[8] = 64;
    p[10] = p[11] = 0;
    uint16_t c = checksum(p, ihl);
    p[10] = (unsigned char)(c >> 8);
    p[11] = (unsigned char)c;
    p[ihl] = 0;
    p[ihl + 2] = p[ihl + 3] = 0;
    c = checksum(p + ihl, n - ihl);
    p[ihl + 2] = (unsigned char)(c >> 8);
    p[ihl + 3] = (unsigned char)c;
    return 1;
}

int main(int argc, char **argv) {
    uint64_t delay = (uint64_t)(argc > 1 ? atol(argv[1]) : 5000) * 1000;
    uint64_t end = now_ns() + (uint64_t)(argc > 2 ? atol(argv[2]) : 120) * 1000000000u;
    int tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (tun < 0) { perror("open /dev/net/tun"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, "nmtun0", IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); return 1; }
    if (system("ip link set lo up && ip addr add 10.77.0.1/24 dev nmtun0 && ip link set nmtun0 up") != 0) {
        fprintf(stderr, "ip setup failed\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (now_ns() < end) {
        uint64_t t = now_ns();
        while (head != tail && queue[head].due_ns <= t) {
            if (write(tun, queue[head].data, queue[head].len) < 0) perror("write");
            head = (head + 1) % QUEUE;
        }
        int wait_ms = 100;
        if (head != tail) {
            uint64_t left = queue[head].due_ns - t;
            /* Sleep to 100 us before the deadline, then spin on the clock. */
            wait_ms = left > 1100000 ? (int)((left - 100000) / 1000000) : 0;
        }
        struct pollfd pfd = {.fd = tun, .events = POLLIN};
        if (poll(&pfd, 1, wait_ms) > 0 && (pfd.revents & POLLIN)) {
            size_t next = (tail + 1) % QUEUE;
            if (next == head) continue; /* full: drop, like a real queue */
            ssize_t n = read(tun, queue[tail].data, MTU);
            if (n > 0 && make_reply(queue[tail].data, (size_t)n)) {
                queue[tail].len = (size_t)n;
                queue[tail].due_ns = now_ns() + delay;
                tail = next;
            }
        }
    }
    return 0;
}
