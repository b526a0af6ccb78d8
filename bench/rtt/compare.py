#!/usr/bin/env python3
"""ICMP RTT as netmon reads it, next to fping and ping on the same path.

Two paths: loopback (127.0.0.1), and a host 5 ms away behind a TUN device in a network
namespace made here (tun_delay.py). On each, ROUNDS rounds of COUNT echo requests PACKET_MS
apart alternate between the tools; a round's figure is its mean RTT, and the table shows the
median of the round means per tool, so one slow round does not decide. Run as root (network
namespaces, raw sockets). Stops by itself; the namespace is deleted at the end.

Usage: NETMON=target/release/netmon [TUN_DELAY=path/to/tun_delay] python3 bench/rtt/compare.py [ROUNDS] [COUNT]
"""
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETMON = os.environ.get("NETMON", "target/release/netmon")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 20
PACKET_MS = 20
NS = "nmrtt"


def run(cmd, ns=None, timeout=60):
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def netmon_round(host, ns=None):
    out = run(
        [NETMON, "check", "icmp", host, "-o", f"count={COUNT}", "-o",
         f"packet_interval={PACKET_MS}ms"],
        ns,
    ).stdout
    m = re.search(r"time=([0-9.]+)s", out)
    return float(m.group(1)) * 1000 if m else None


def fping_round(host, ns=None):
    # fping -C prints every RTT on stderr: "host : 0.05 0.04 ..."
    out = run(["fping", "-q", "-C", str(COUNT), "-p", str(PACKET_MS), host], ns).stderr
    values = [float(v) for v in out.split(":")[-1].split() if v != "-"]
    return statistics.mean(values) if values else None


def ping_round(host, ns=None):
    out = run(
        ["ping", "-q", "-n", "-c", str(COUNT), "-i", str(PACKET_MS / 1000), host], ns
    ).stdout
    m = re.search(r"= [0-9.]+/([0-9.]+)/", out)
    return float(m.group(1)) if m else None


def compare(title, host, ns=None):
    rounds = {"netmon": [], "fping": [], "ping": []}
    tools = {"netmon": netmon_round, "fping": fping_round, "ping": ping_round}
    for _ in range(ROUNDS):
        for name, f in tools.items():
            v = f(host, ns)
            if v is not None:
                rounds[name].append(v)
    print(f"\n{title}: {ROUNDS} rounds of {COUNT} requests {PACKET_MS} ms apart")
    print("| tool | median of round means (ms) | min round | max round |")
    print("|---|---|---|---|")
    medians = {}
    compare.best = {}
    for name, values in rounds.items():
        if not values:
            print(f"| {name} | no answer | | |")
            continue
        medians[name] = statistics.median(values)
        compare.best[name] = min(values)
        print(f"| {name} | {medians[name]:.4f} | {min(values):.4f} | {max(values):.4f} |")
    return medians


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: network namespaces and raw ICMP sockets")
    loop = compare("loopback 127.0.0.1", "127.0.0.1")
    run(["ip", "netns", "del", NS])
    run(["ip", "netns", "add", NS]).check_returncode()
    # The C responder keeps the delay exact to microseconds; the Python one is the fallback.
    binary = os.environ.get("TUN_DELAY")
    if binary:
        command = [binary, "5000", "600"]
    else:
        command = ["python3", os.path.join(HERE, "tun_delay.py"), "--delay-ms", "5", "--seconds", "600"]
    responder = subprocess.Popen(
        ["ip", "netns", "exec", NS] + command, stdout=subprocess.PIPE, text=True
    )
    try:
        if responder.stdout.readline().strip() != "ready":
            sys.exit("the TUN responder did not start")
        time.sleep(0.2)
        delayed = compare("10.77.0.2, 5 ms away behind a TUN device", "10.77.0.2", NS)
        best = dict(compare.best)
    finally:
        responder.kill()
        responder.wait()
        run(["ip", "netns", "del", NS])
    print()
    if "netmon" in loop and "fping" in loop:
        bound = 1.2 * loop["fping"] + 0.010
        verdict = "met" if loop["netmon"] <= bound else "NOT met"
        print(f"loopback: netmon {loop['netmon']:.4f} ms vs 1.2 x fping + 10 us = {bound:.4f} ms: {verdict}")
    if "netmon" in delayed and "ping" in delayed:
        diff = delayed["netmon"] - delayed["ping"]
        verdict = "met" if abs(diff) <= 0.1 else "NOT met"
        print(f"5 ms path: netmon - ping = {diff:+.4f} ms (target within 0.1 ms): {verdict}")
        # The quietest rounds show the tools' own difference; the medians also carry the
        # machine's scheduling noise, which moves every tool alike but not at the same moments.
        print(f"5 ms path, quietest rounds: netmon - ping = {best['netmon'] - best['ping']:+.4f} ms")


if __name__ == "__main__":
    main()
