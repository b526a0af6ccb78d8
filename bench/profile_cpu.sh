#!/usr/bin/env bash
# bench/profile_cpu.sh BINARY: CPU seconds of netmon running 500 ICMP (count 1) + 250 HTTP services every 1 s for 20 s on loopback (HTTP against python3 -m http.server), to compare builds of one commit.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
web=$!
{
  echo "defaults: { interval: 1s, timeout: 900ms }"
  echo "targets:"
  for i in $(seq 1 250); do
    echo "  127.0.$((i / 250)).$((i % 250 + 1)):"
    echo "    services: [{ type: icmp, count: 1 }, { type: icmp, count: 1, name: icmp2 }, { type: http, port: 18080, name: web }]"
  done
} > "$dir/n.yml"
sleep 1
"$bin" serve --config "$dir/n.yml" --web.listen-address 127.0.0.1:19299 >/dev/null 2>&1 &
pid=$!
sleep 8
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
sleep 20
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
probes=$(curl -s http://127.0.0.1:19299/metrics | awk '/^netmon_probes_total/ {s+=$2} END {print s}')
echo "cpu_s=$(echo "($t1-$t0)/100" | bc -l | cut -c1-5) probes_total=$probes load=$(cut -d' ' -f1 /proc/loadavg)"
kill $pid $web; wait 2>/dev/null || true
rm -rf "$dir"
