#!/usr/bin/env bash
# Peer comparison: netmon vs blackbox_exporter (and fping for ICMP) on loopback targets.
#
#   bench/compare.sh                      # 100 services per protocol every 1 s, 30 s per phase
#   SERVICES=200 INTERVAL=2 SECONDS=60 PROTOCOLS=tcp,icmp bench/compare.sh
#
# Installs prometheus-blackbox-exporter and fping with apt-get (as root, when missing), builds
# the release netmon, then runs bench/compare.py, which starts the loopback targets and both
# tools and prints CPU seconds per 1,000 probes, their ratio and RSS. It runs for about
# (5 protocols x (SECONDS + 8) x 2 + SECONDS) seconds and stops by itself. ICMP needs root
# (raw sockets) for blackbox_exporter and netmon alike.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v prometheus-blackbox-exporter >/dev/null || need+=(prometheus-blackbox-exporter)
command -v fping >/dev/null || need+=(fping)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package may start its own service; ours runs on an ephemeral port regardless.

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin netmon
export NETMON="${NETMON:-$target/release/netmon}"
exec timeout 1800 python3 bench/compare.py
