#!/usr/bin/env python3
"""Loopback service farm for the soak test (bench/soak.sh): stable and flapping services.

Serves two kinds of services on 127.0.0.0/8 only, writes a netmon config that probes them,
and logs every state change of the flapping ones, so `check` can compare that log with
netmon's own UP/DOWN lines (each change must be logged by netmon exactly once).

* stable: one TCP listener and one UDP echo socket per host address 127.1.0.K; every host
  carries many services (distinct `name:`, same port), half tcp, half udp. They never change.
* flapping: one socket per service on its own address 127.2.X.Y (tcp or udp alternately),
  opened and closed on a random schedule; every state is held `--min-hold`..`--max-hold`
  seconds so netmon (interval well below the hold) sees each state. Flapping stops
  `--settle` seconds before the end so the last change is seen too.

Ports are ephemeral (bound to port 0 once, then reused with SO_REUSEADDR on reopen).
Python standard library only.

    flap.py serve --config OUT.yml --log TRANSITIONS --duration SECS [options]
    flap.py check --log TRANSITIONS --netmon NETMON_JSON_LOG --config OUT.yml
"""

import argparse
import json
import random
import selectors
import signal
import socket
import sys
import time
from collections import defaultdict


def stable_hosts(n_services, per_host):
    hosts = []
    k = 0
    while k * per_host < n_services:
        hosts.append(f"127.1.{(k + 1) // 250}.{(k + 1) % 250 + 1}")
        k += 1
    return hosts


def flap_addr(i):
    return f"127.2.{i // 250}.{i % 250 + 1}"


class Flapper:
    """One flapping service: a socket that is open or closed."""

    def __init__(self, sel, addr, kind):
        self.sel = sel
        self.addr = addr
        self.kind = kind
        self.port = 0
        self.sock = None

    def open(self):
        if self.kind == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.addr, self.port))
        self.port = s.getsockname()[1]
        if self.kind == "tcp":
            s.listen(128)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, self.kind)
        self.sock = s

    def close(self):
        if self.sock is not None:
            self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    @property
    def is_open(self):
        return self.sock is not None


def serve(args):
    rng = random.Random(args.rng_state)
    sel = selectors.DefaultSelector()
    hosts = stable_hosts(args.stable, args.per_host)
    socks = []
    stable = []  # (host, tcp_port, udp_port)
    for h in hosts:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((h, 0))
        t.listen(1024)
        t.setblocking(False)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((h, 0))
        u.setblocking(False)
        sel.register(t, selectors.EVENT_READ, "tcp")
        sel.register(u, selectors.EVENT_READ, "udp")
        socks += [t, u]
        stable.append((h, t.getsockname()[1], u.getsockname()[1]))

    flappers = []
    for i in range(args.flapping):
        f = Flapper(sel, flap_addr(i), "tcp" if i % 2 == 0 else "udp")
        f.open()  # fixes the port
        if rng.random() < 0.5:
            f.close()
        flappers.append(f)

    # The netmon config.
    lines = [
        "defaults: { interval: %s, timeout: %s }" % (args.interval, args.timeout),
        "targets:",
    ]
    left = args.stable
    for h, tp, up in stable:
        n = min(args.per_host, left)
        left -= n
        lines.append(f'  "{h}":')
        lines.append("    services:")
        for j in range(n):
            if j % 2 == 0:
                lines.append(f"      - {{ type: tcp, name: t{j}, port: {tp} }}")
            else:
                lines.append(f'      - {{ type: udp, name: u{j}, port: {up}, send: "x" }}')
    for f in flappers:
        lines.append(f'  "{f.addr}":')
        lines.append("    services:")
        if f.kind == "tcp":
            lines.append(f"      - {{ type: tcp, name: flap, port: {f.port} }}")
        else:
            lines.append(f'      - {{ type: udp, name: flap, port: {f.port}, send: "x" }}')
    with open(args.config, "w") as out:
        out.write("\n".join(lines) + "\n")

    log = open(args.log, "w", buffering=1)
    start = time.time()
    for f in flappers:
        log.write(f"{start:.3f} {f.addr} flap {'up' if f.is_open else 'down'}\n")
    # The first change comes after a full hold, so netmon has seen the initial state.
    due = [start + args.startup + rng.uniform(args.min_hold, args.max_hold) for _ in flappers]
    stop_flapping = start + args.duration - args.settle
    end = start + args.duration
    print(f"READY {len(stable)} stable hosts, {args.stable} stable services, "
          f"{len(flappers)} flapping", flush=True)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    changes = 0
    last = time.time()
    while not stopping:
        now = time.time()
        # A loop that did not turn for half a second could not answer: netmon is right to see
        # timeouts then. Logged so `check` can tell such stalls from netmon's own mistakes.
        if now - last > 0.5:
            log.write(f"{last:.3f} - stall {now:.3f}\n")
        last = now
        if now >= end:
            break
        if now < stop_flapping:
            for i, f in enumerate(flappers):
                if due[i] <= now:
                    # Stamped before the change, so no probe can see it earlier than its stamp.
                    at = time.time()
                    if f.is_open:
                        f.close()
                    else:
                        f.open()
                    changes += 1
                    log.write(f"{at:.3f} {f.addr} flap {'up' if f.is_open else 'down'}\n")
                    due[i] = now + rng.uniform(args.min_hold, args.max_hold)
        try:
            events = sel.select(timeout=0.05)
        except InterruptedError:
            continue
        for key, _ in events:
            s = key.fileobj
            try:
                if key.data == "tcp":
                    for _ in range(64):
                        c, _ = s.accept()
                        c.close()
                else:
                    for _ in range(64):
                        data, peer = s.recvfrom(2048)
                        s.sendto(data or b"x", peer)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                print(f"socket error: {e}", file=sys.stderr, flush=True)
    print(f"DONE {changes} changes", flush=True)


def check(args):
    """Compares the flapper's transitions with netmon's log; prints a report, exit 1 on
    a mismatch."""
    want = defaultdict(list)  # host -> [(t, state)]
    stalls = []  # (from, to): the flapper could not answer
    for line in open(args.log):
        t, host, what, state = line.split()
        if what == "stall":
            stalls.append((float(t), float(state)))
            continue
        want[host].append((float(t), state))
    flapping = set(want)
    got = defaultdict(list)  # (host, service) -> [(t, state)]
    other = 0
    for line in open(args.netmon):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        msg = e.get("message", "")
        if msg not in ("UP", "DOWN", "first result: UP", "first result: DOWN"):
            continue
        span = e.get("span", {})
        key = (span.get("host"), span.get("service"))
        ts = e["timestamp"]
        # RFC 3339 with nanoseconds, UTC.
        base, frac = ts.rstrip("Z").split(".")
        t = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
        t += float("0." + frac)
        got[key].append((t, "up" if msg.endswith("UP") else "down"))
        if key[0] not in flapping:
            other += 1

    print(f"flapper stalls (loop did not turn for > 0.5 s): {len(stalls)}, longest "
          f"{max((b - a for a, b in stalls), default=0):.2f}s")
    bad = []
    delays = []
    for host, seq in want.items():
        g = got.get((host, "flap"), [])
        ws = [s for _, s in seq]
        gs = [s for _, s in g]
        if ws != gs:
            bad.append(f"{host}: flapper {ws} netmon {gs}")
            continue
        for (wt, _), (gt, _) in zip(seq[1:], g[1:]):
            delays.append(gt - wt)
    stable_bad = [
        f"{k}: {[s for _, s in v]}" for k, v in got.items()
        if k[0] not in flapping and [s for _, s in v] != ["up"]
    ]
    with open(args.config) as c:
        n_stable = sum(1 for l in c if "name: t" in l or "name: u" in l)
    stable_seen = sum(1 for k in got if k[0] not in flapping)
    transitions = sum(len(v) - 1 for v in want.values())
    print(f"flapping services: {len(want)}, transitions by the flapper: {transitions}")
    print(f"netmon UP/DOWN lines for flapping services: "
          f"{sum(len(got.get((h, 'flap'), [])) - 1 for h in want)} (plus one first result each)")
    print(f"flapping services whose netmon sequence differs: {len(bad)}")
    for b in bad[:20]:
        print("  " + b)
    if delays:
        delays.sort()
        print(f"delay from change to netmon's line: min {delays[0]:.3f}s "
              f"median {delays[len(delays) // 2]:.2f}s max {delays[-1]:.2f}s")
        # The stamps have millisecond resolution (and older logs stamped after the change).
        if delays[0] < -0.005:
            bad.append("a netmon line came before its change")
    print(f"stable services: {n_stable}, with a first result: {stable_seen}, "
          f"with anything but one 'first result: UP': {len(stable_bad)}")
    for b in stable_bad[:20]:
        print("  " + b)
    ok = not bad and not stable_bad and stable_seen == n_stable
    print("EXACTLY-ONCE: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--config", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--stable", type=int, default=2700)
    s.add_argument("--per-host", type=int, default=100)
    s.add_argument("--flapping", type=int, default=300)
    s.add_argument("--interval", default="5s")
    s.add_argument("--timeout", default="2s")
    s.add_argument("--min-hold", type=float, default=20)
    s.add_argument("--max-hold", type=float, default=60)
    s.add_argument("--startup", type=float, default=15, help="seconds before the first change")
    s.add_argument("--settle", type=float, default=30)
    s.add_argument("--rng-state", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--log", required=True)
    c.add_argument("--netmon", required=True)
    c.add_argument("--config", required=True)
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a)
        return 0
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
