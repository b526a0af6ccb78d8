#!/usr/bin/env bash
# ICMP RTT next to fping and ping: loopback, and a host 5 ms away behind a TUN device in a
# network namespace made for the run. As root:
#
#   bench/rtt/compare.sh            # 20 rounds of 20 requests per tool and path
#   bench/rtt/compare.sh 40 50      # 40 rounds of 50
#
# Installs fping with apt-get when missing, builds the release netmon and the C delay
# responder (tun_delay.c), runs compare.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v fping >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fping >/dev/null; }
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin netmon
cc -O2 -o "$target/tun_delay" bench/rtt/tun_delay.c
NETMON="$target/release/netmon" TUN_DELAY="$target/tun_delay" exec timeout 900 python3 bench/rtt/compare.py "$@"
