#!/usr/bin/env python3
"""A host that answers ICMP echo requests after an exact delay, behind a TUN device.

Run inside a network namespace made for it (see compare.sh): it creates TUN device `nmtun0`
with 10.77.0.1/24, and every IPv4 echo request to 10.77.0.2 is answered DELAY_MS after it was
read, with its payload unchanged. ping, fping and netmon probing 10.77.0.2 therefore cross the
same path with the same delay; netem is not needed. Stops by itself after --seconds.

Usage: tun_delay.py [--delay-ms 5] [--seconds 120]
"""
import argparse
import fcntl
import heapq
import os
import select
import struct
import subprocess
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reply_to(packet: bytes):
    """The echo reply for an IPv4 echo request to 10.77.0.2, or None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if packet[16:20] != bytes([10, 77, 0, 2]) or packet[ihl] != 8:
        return None
    header = bytearray(packet[:ihl])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[8] = 64
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    icmp = bytearray(packet[ihl:])
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    return bytes(header) + bytes(icmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    args = ap.parse_args()
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"nmtun0", IFF_TUN | IFF_NO_PI))
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", "10.77.0.1/24", "dev", "nmtun0"],
        ["ip", "link", "set", "nmtun0", "up"],
    ):
        subprocess.run(cmd, check=True)
    print("ready", flush=True)
    delay = args.delay_ms / 1000.0
    end = time.monotonic() + args.seconds
    due = []  # (time to send, sequence, packet)
    n = 0
    while time.monotonic() < end:
        now = time.monotonic()
        while due and due[0][0] <= now:
            os.write(tun, heapq.heappop(due)[2])
        wait = max(0.0, due[0][0] - time.monotonic()) if due else 0.5
        # select wakes a little late; the last 200 us are spun so the delay stays exact.
        if wait > 0.0002:
            ready, _, _ = select.select([tun], [], [], wait - 0.0002)
        else:
            ready, _, _ = select.select([tun], [], [], 0)
        if ready:
            packet = os.read(tun, 65536)
            answer = reply_to(packet)
            if answer is not None:
                n += 1
                heapq.heappush(due, (time.monotonic() + delay, n, answer))


if __name__ == "__main__":
    main()
