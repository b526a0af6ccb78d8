#!/usr/bin/env bash
# bench/idle_rss.sh BINARY [RUNS]: idle RSS of netmon (VmRSS, RssAnon, RssFile) with one TCP
# service every 30 s, read 2 s after one gzip scrape, RUNS starts (default 3).
set -euo pipefail
bin=$1; runs=${2:-3}
dir=$(mktemp -d)
cat > "$dir/netmon.yml" <<YML
targets:
  127.0.0.1:
    services: ["TCP:1"]
    interval: 30s
YML
for i in $(seq "$runs"); do
  port=$((19100 + i))
  "$bin" serve --config "$dir/netmon.yml" --web.listen-address "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  sleep 3
  curl -s -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/metrics"
  sleep 2
  awk '/VmRSS|RssAnon|RssFile/ {printf "%s %.2f MB  ", $1, $2/1024} END {print ""}' /proc/$pid/status
  kill $pid; wait $pid 2>/dev/null || true
done
rm -rf "$dir"
