#!/bin/sh
# Echo server and client benchmarks; results go in
# BENCHMARKS.md, "Echo server and client". Loopback only; every run is bounded in time.
#
#   bench/echo.sh [SECONDS]       # SECONDS per server run (default 5)
#
# Builds the release netmon and the bench with cargo, the C reflector (bench/reflector.c) with
# gcc, then runs: server throughput (C reflector vs netmon echo-server), client overhead,
# and the abuse measurement. Needs gcc and taskset; run as root for the port 7/19 checks.
set -eu
cd "$(dirname "$0")/.."
secs="${1:-5}"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench echo --no-run
cargo bench --bench echo -- server "$secs" 2
cargo bench --bench echo -- client 200000
cargo bench --bench echo -- abuse 10
