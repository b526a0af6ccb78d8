#!/usr/bin/env bash
# Runs benches/resolve.rs where it can own port 53 and /etc/resolv.conf: a private network
# namespace (loopback only) and mount namespace, as root. Arguments go to the bench
# ([NAMES] [ROUNDS]). Example: sudo bench/resolve.sh 10000 3
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --no-run --bench resolve
bin=$(ls -t target/release/deps/resolve-* | grep -v '\.d$' | head -1)
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
echo "nameserver 127.0.0.1" > "$conf"
unshare --net --mount sh -c "ip link set lo up && mount --bind '$conf' /etc/resolv.conf && exec '$bin' --bench $*"
