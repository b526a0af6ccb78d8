#!/usr/bin/env bash
# Memory and time of loading a large valid configuration (not run by CI): generates files of
# about 1, 4 and 16 MiB (the largest just under the 16 MiB limit), runs `netmon config check`
# on each under `/usr/bin/time -f '%M %e'` (peak RSS in KiB, wall seconds), then starts
# `netmon serve` on the largest and reads its RSS once it serves. Every service is a tcp or
# http probe of 127.0.0.1 port 9 (closed), every hour, so serve starts them all but probes
# rarely. Prints one Markdown table row per measurement.
#
#   bench/config_size.sh [SIZES_MIB...]        (default: 1 4 16)
#   env: NETMON=path/to/netmon (default: target/release/netmon, else target/debug/netmon)
#        OUT=dir for the generated files (default: a new temporary directory, removed after)
#        SERVE=0 to skip the serve measurement; SERVE_WAIT=seconds to wait for serve (120)
#
# Bounded: each check gets at most 300 s (timeout(1)); serve at most SERVE_WAIT seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z "${NETMON:-}" ]]; then
    NETMON=$TARGET/release/netmon
    [[ -x $NETMON ]] || NETMON=$TARGET/debug/netmon
fi
[[ -x $NETMON ]] || { echo "config_size: no netmon binary at $NETMON (cargo build first)" >&2; exit 2; }
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(1 4 16)
SERVE=${SERVE:-1}
SERVE_WAIT=${SERVE_WAIT:-120}
if [[ -z "${OUT:-}" ]]; then
    OUT=$(mktemp -d)
    trap 'rm -rf "$OUT"' EXIT
fi

# A target per loopback address, each with four services and two labels (about 230 bytes),
# repeated up to SIZE bytes; the last target that would cross the limit is left out.
generate() {
    python3 - "$1" "$2" <<'EOF'
import sys
limit, path = int(sys.argv[1]), sys.argv[2]
head = "defaults: { interval: 1h, timeout: 2s }\ntargets:\n"
out, size, i = [head], len(head), 0
while True:
    a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
    t = (f"  127.{a}.{b}.{c}:\n"
         f"    labels: {{ site: bench, rack: r{i % 100} }}\n"
         "    services:\n"
         f"      - {{ type: tcp, port: 9, name: t{i}a }}\n"
         f"      - {{ type: tcp, port: 9, name: t{i}b, expect_regex: \"^SSH-\" }}\n"
         "      - { type: http, url: \"http://127.0.0.1:9/healthz\", expect_status: [200] }\n"
         "      - \"TCP:9\"\n")
    if size + len(t) > limit:
        break
    out.append(t)
    size += len(t)
    i += 1
open(path, "w").write("".join(out))
print(i, 4 * i)
EOF
}

echo "netmon: $NETMON ($("$NETMON" --version 2>/dev/null | head -1))" >&2
echo "| file | targets | services | check: peak RSS | RSS / file size | check: wall time |"
echo "|---|---:|---:|---:|---:|---:|"
largest=
for mib in "${SIZES[@]}"; do
    file=$OUT/config-${mib}MiB.yml
    # The largest stays below the limit (16 MiB is refused unread).
    read -r targets services < <(generate $((mib * 1048576 - 1)) "$file")
    bytes=$(stat -c %s "$file")
    read -r kib secs < <(timeout 300 /usr/bin/time -f '%M %e' "$NETMON" config check "$file" 2>&1 >/dev/null | tail -1)
    printf '| %.1f MiB | %d | %d | %d MiB | %.1f× | %s s |\n' \
        "$(echo "$bytes / 1048576" | bc -l)" "$targets" "$services" $((kib / 1024)) \
        "$(echo "$kib * 1024 / $bytes" | bc -l)" "$secs"
    largest=$file
done

if [[ $SERVE == 1 && -n $largest ]]; then
    log=$OUT/serve.log
    started=$(date +%s.%N)
    "$NETMON" serve --config.file "$largest" --web.listen-address 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    deadline=$(($(date +%s) + SERVE_WAIT))
    until grep -q "serving metrics at" "$log"; do
        if ! kill -0 "$pid" 2>/dev/null || [[ $(date +%s) -gt $deadline ]]; then
            echo "serve did not start within ${SERVE_WAIT}s:" >&2
            tail -5 "$log" >&2
            kill "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
    ready=$(echo "$(date +%s.%N) - $started" | bc -l)
    sleep 5
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    bytes=$(stat -c %s "$largest")
    echo
    echo "| serve, $(basename "$largest") | RSS 5 s after serving | peak RSS | RSS / file size | time to serving |"
    echo "|---|---:|---:|---:|---:|"
    printf '| %.1f MiB | %d MiB | %d MiB | %.1f× | %.1f s |\n' "$(echo "$bytes / 1048576" | bc -l)" \
        $((rss / 1024)) $((hwm / 1024)) "$(echo "$rss * 1024 / $bytes" | bc -l)" "$ready"
fi
