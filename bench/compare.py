#!/usr/bin/env python3
"""Peer comparison: netmon against blackbox_exporter (and fping for ICMP) on loopback.

Run through bench/compare.sh, which installs the peers and builds netmon in release mode.
Standard library only. Every target listens on 127.0.0.1 (ICMP goes to 127.0.0.0/8
addresses, which the kernel answers); nothing is sent anywhere else. Each phase is bounded by
SECONDS and the whole run stops by itself.

For each protocol, at the same fixed rate (RATE probes/s = SERVICES / INTERVAL):
  * netmon monitors SERVICES services at INTERVAL; its CPU is read from /proc/PID/stat over
    SECONDS and its probe count from netmon_probes_total on /metrics;
  * blackbox_exporter is driven through /probe?module=... at RATE per second (keep-alive
    connections, as Prometheus scrapes), its CPU read the same way;
  * for ICMP, fping pings the same addresses at the same rate.
It prints CPU seconds per 1,000 probes for each tool, their ratio, and RSS.

Environment: NETMON (binary), BLACKBOX (binary), SERVICES (100), INTERVAL (1, seconds),
SECONDS (30), PROTOCOLS (tcp,http,https,dns,icmp).
"""

import http.client
import http.server
import os
import queue
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

NETMON = os.environ.get("NETMON", "target/release/netmon")
BLACKBOX = os.environ.get("BLACKBOX", "prometheus-blackbox-exporter")
SERVICES = int(os.environ.get("SERVICES", "100"))
INTERVAL = float(os.environ.get("INTERVAL", "1"))
SECONDS = float(os.environ.get("SECONDS", "30"))
PROTOCOLS = os.environ.get("PROTOCOLS", "tcp,http,https,dns,icmp").split(",")
RATE = SERVICES / INTERVAL
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        return c.getresponse().read().decode()
    finally:
        c.close()


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- targets (loopback only)


def serve_forever_thread(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


class TcpTarget(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class Closer(socketserver.BaseRequestHandler):
    def handle(self):
        pass  # accept, then close: a TCP connect check needs nothing more


class Ok(http.server.BaseHTTPRequestHandler):
    # Head and body in one write, so a client that closes after the response finds nothing
    # left to send.
    wbufsize = -1

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


class HttpTarget(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass  # a client gone early is not the target's problem


class HttpsTarget(HttpTarget):
    context = None

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake runs in the handler thread, not in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def dns_server(sock):
    """Answers every A query with 127.0.0.1 (no OPT record back)."""
    while True:
        try:
            q, peer = sock.recvfrom(2048)
        except OSError:
            return
        if len(q) < 12:
            continue
        i = 12
        while i < len(q) and q[i] != 0:
            i += q[i] + 1
        qend = i + 5
        if qend > len(q):
            continue
        header = q[:2] + struct.pack(">HHHHH", 0x8180 | (q[2] & 1) << 8, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 1])
        sock.sendto(header + q[12:qend] + answer, peer)


def make_cert(d):
    """A CA and a leaf for IP 127.0.0.1 signed by it (webpki refuses a CA as end entity)."""
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    ca_key, ca, key, csr, crt, ext = (os.path.join(d, n) for n in
                                      ("ca.key", "ca.pem", "key.pem", "leaf.csr", "leaf.pem", "ext.cnf"))
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=netmon bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


# ---------------------------------------------------------------- netmon


def icmp_hosts(n):
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


def netmon_config(proto, ports, ca):
    timeout = f"{max(0.1, min(INTERVAL * 0.9, 5.0)):.3f}s"
    lines = [f"defaults: {{ interval: {INTERVAL}s, timeout: {timeout} }}", "targets:"]
    if proto == "icmp":
        for h in icmp_hosts(SERVICES):
            lines.append(f"  {h}: {{ services: [{{ type: icmp, count: 1 }}] }}")
        return "\n".join(lines) + "\n"
    lines += ["  127.0.0.1:", "    services:"]
    for i in range(SERVICES):
        if proto == "tcp":
            s = f"type: tcp, port: {ports['tcp']}"
        elif proto == "http":
            s = f"type: http, port: {ports['http']}"
        elif proto == "https":
            s = f"type: https, port: {ports['https']}, tls: {{ ca_file: {ca} }}"
        else:
            s = f"type: dns, port: {ports['dns']}, query_name: example.com"
        lines.append(f"      - {{ {s}, name: s{i} }}")
    return "\n".join(lines) + "\n"


def netmon_phase(proto, ports, ca, d):
    cfg = os.path.join(d, f"netmon-{proto}.yml")
    with open(cfg, "w") as f:
        f.write(netmon_config(proto, ports, ca))
    port = free_port()
    p = subprocess.Popen([NETMON, "--config.file", cfg, "--web.listen-address",
                          f"127.0.0.1:{port}", "--log.level", "error"],
                         stdout=subprocess.DEVNULL)
    try:
        # First round is spread over 5 s; then one whole interval to settle.
        time.sleep(6 + INTERVAL)
        first = http_get(port, "/metrics")
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(SECONDS)
        c1, t1 = cpu_seconds(p.pid), time.monotonic()
        last = http_get(port, "/metrics")
        rss = rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=10)
    probes = metric_sum(last, "netmon_probes_total") - metric_sum(first, "netmon_probes_total")
    failures = (metric_sum(last, "netmon_probe_failures_total")
                - metric_sum(first, "netmon_probe_failures_total"))
    reasons = {}
    for line in last.splitlines():
        if line.startswith("netmon_probe_failures_total{") and 'reason="' in line:
            r = line.split('reason="', 1)[1].split('"', 1)[0]
            reasons[r] = reasons.get(r, 0) + float(line.rsplit(" ", 1)[1])
    return dict(cpu=c1 - c0, probes=probes, failed=failures, wall=t1 - t0, rss=rss,
                reasons={k: v for k, v in reasons.items() if v})


def netmon_idle(d):
    """RSS of netmon monitoring one TCP service every 30 s (nothing else running)."""
    cfg = os.path.join(d, "netmon-idle.yml")
    with open(cfg, "w") as f:
        f.write("targets:\n  127.0.0.1: { services: [\"TCP:9\"], interval: 30s }\n")
    port = free_port()
    p = subprocess.Popen([NETMON, "--config.file", cfg, "--web.listen-address",
                          f"127.0.0.1:{port}", "--log.level", "error"],
                         stdout=subprocess.DEVNULL)
    try:
        time.sleep(8)
        http_get(port, "/metrics")
        time.sleep(1)
        return rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=10)


# ---------------------------------------------------------------- blackbox_exporter

BLACKBOX_CONFIG = """modules:
  tcp:
    prober: tcp
    timeout: {timeout}s
    tcp: {{ preferred_ip_protocol: ip4 }}
  http:
    prober: http
    timeout: {timeout}s
    http: {{ preferred_ip_protocol: ip4 }}
  https:
    prober: http
    timeout: {timeout}s
    http:
      preferred_ip_protocol: ip4
      tls_config: {{ ca_file: {ca} }}
  dns:
    prober: dns
    timeout: {timeout}s
    dns: {{ query_name: example.com, query_type: A, transport_protocol: udp, preferred_ip_protocol: ip4 }}
  icmp:
    prober: icmp
    timeout: {timeout}s
    icmp: {{ preferred_ip_protocol: ip4 }}
"""


def blackbox_targets(proto, ports):
    if proto == "icmp":
        return icmp_hosts(SERVICES)
    return [{"tcp": f"127.0.0.1:{ports['tcp']}",
             "http": f"http://127.0.0.1:{ports['http']}/",
             "https": f"https://127.0.0.1:{ports['https']}/",
             "dns": f"127.0.0.1:{ports['dns']}"}[proto]]


def drive(port, proto, targets, seconds):
    """Calls /probe at RATE per second for `seconds`; returns (sent, succeeded)."""
    work = queue.Queue()
    ok = [0]
    lock = threading.Lock()

    def worker():
        conn = None
        while True:
            t = work.get()
            if t is None:
                return
            for _ in range(2):  # one retry on a dropped keep-alive connection
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", f"/probe?module={proto}&target={t}")
                    body = conn.getresponse().read()
                    if b"\nprobe_success 1" in body:
                        with lock:
                            ok[0] += 1
                    break
                except (OSError, http.client.HTTPException):
                    conn = None

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(16)]
    for t in threads:
        t.start()
    start = time.monotonic()
    sent = 0
    while True:
        due = start + sent / RATE
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put(targets[sent % len(targets)])
        sent += 1
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join(timeout=15)
    return sent, ok[0]


def blackbox_run(protos, ports, ca, d):
    cfg = os.path.join(d, "blackbox.yml")
    timeout = max(0.1, min(INTERVAL * 0.9, 5.0))
    with open(cfg, "w") as f:
        f.write(BLACKBOX_CONFIG.format(timeout=timeout, ca=ca))
    port = free_port()
    p = subprocess.Popen([BLACKBOX, f"--config.file={cfg}",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        time.sleep(2)
        idle = rss_mb(p.pid)
        for proto in protos:
            drive(port, proto, blackbox_targets(proto, ports), 3)  # warm-up
            c0 = cpu_seconds(p.pid)
            sent, ok = drive(port, proto, blackbox_targets(proto, ports), SECONDS)
            c1 = cpu_seconds(p.pid)
            out[proto] = dict(cpu=c1 - c0, probes=sent, failed=sent - ok, rss=rss_mb(p.pid))
        out["_idle"] = idle
        out["_end"] = rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=10)
    return out


# ---------------------------------------------------------------- fping


def fping_run():
    """fping pings the ICMP addresses at RATE per second for SECONDS (CPU from wait4)."""
    if shutil.which("fping") is None:
        return None
    hosts = icmp_hosts(SERVICES)
    count = max(1, int(SECONDS / INTERVAL))
    per_target_ms = str(max(1, int(INTERVAL * 1000)))
    gap_ms = str(max(1, int(1000 / RATE)))
    p = subprocess.Popen(["fping", "-q", "-c", str(count), "-p", per_target_ms, "-i", gap_ms,
                          *hosts], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    summary = p.stderr.read().decode()
    received = 0
    for line in summary.splitlines():
        # "127.0.1.1 : xmt/rcv/%loss = 30/30/0%, ..."
        if "xmt/rcv" in line:
            received += int(line.split("=")[1].split("/")[1])
    return dict(cpu=ru.ru_utime + ru.ru_stime, probes=count * len(hosts),
                failed=count * len(hosts) - received, rss=ru.ru_maxrss / 1024)


# ---------------------------------------------------------------- main


def per_k(r):
    return 1000 * r["cpu"] / max(1, r["probes"])


def main():
    d = tempfile.mkdtemp(prefix="netmon-compare-")
    try:
        ca, crt, key = make_cert(d)
        ports = {}
        ports["tcp"] = serve_forever_thread(TcpTarget(("127.0.0.1", 0), Closer))
        ports["http"] = serve_forever_thread(HttpTarget(("127.0.0.1", 0), Ok))
        https = HttpsTarget(("127.0.0.1", 0), Ok)
        https.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        https.context.load_cert_chain(crt, key)
        ports["https"] = serve_forever_thread(https)
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dns.bind(("127.0.0.1", 0))
        ports["dns"] = dns.getsockname()[1]
        threading.Thread(target=dns_server, args=(dns,), daemon=True).start()

        print(f"machine: {os.cpu_count()} cpus, {cpu_model()}; load before: {load()}")
        print(f"rate: {SERVICES} services every {INTERVAL:g}s = {RATE:g} probes/s per protocol, "
              f"{SECONDS:g}s measured per phase")
        idle = netmon_idle(d)
        nm = {}
        for proto in PROTOCOLS:
            nm[proto] = netmon_phase(proto, ports, ca, d)
            print(f"  netmon {proto:5}: {nm[proto]['probes']:.0f} probes "
                  f"({nm[proto]['failed']:.0f} failed), cpu {nm[proto]['cpu']:.2f}s, "
                  f"rss {nm[proto]['rss']:.1f} MB; load {load()} {nm[proto]['reasons'] or ''}", flush=True)
        bb = blackbox_run(PROTOCOLS, ports, ca, d)
        for proto in PROTOCOLS:
            print(f"  blackbox {proto:5}: {bb[proto]['probes']} probes "
                  f"({bb[proto]['failed']} failed), cpu {bb[proto]['cpu']:.2f}s; load {load()}",
                  flush=True)
        fp = fping_run() if "icmp" in PROTOCOLS else None
        if fp:
            print(f"  fping icmp : {fp['probes']} pings ({fp['failed']} lost), "
                  f"cpu {fp['cpu']:.2f}s; load {load()}")

        print()
        print("CPU seconds per 1,000 probes (lower is better)")
        print(f"{'protocol':9} {'netmon':>8} {'blackbox':>9} {'bb/netmon':>10} {'fping':>7}")
        for proto in PROTOCOLS:
            n, b = per_k(nm[proto]), per_k(bb[proto])
            f = f"{per_k(fp):7.3f}" if proto == "icmp" and fp else f"{'-':>7}"
            ratio = f"{b / n:9.1f}x" if n > 0 else f"{'inf':>10}"
            print(f"{proto:9} {n:8.3f} {b:9.3f} {ratio} {f}")
        print()
        print("RSS MB")
        print(f"  netmon   idle (1 service) {idle:.1f}; after load, per phase: "
              + ", ".join(f"{p} {nm[p]['rss']:.1f}" for p in PROTOCOLS))
        print(f"  blackbox idle {bb['_idle']:.1f}; after load {bb['_end']:.1f}")
        if fp:
            print(f"  fping    max {fp['rss']:.1f}")
        print(f"load after: {load()}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
