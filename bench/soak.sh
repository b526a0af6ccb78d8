#!/usr/bin/env bash
# Soak test (not run by CI): netmon probes a few thousand loopback services,
# a tenth of them flapping, for DURATION seconds (default 1200 = 20 minutes). Every 10 s it
# samples netmon's RSS, open fds, threads (and `netmon_runtime_tasks` when the binary exports
# it); at the end it checks that RSS, fds and tasks stayed flat and that every state change of
# a flapping service was logged by netmon exactly once (bench/flap.py check).
#
#   bench/soak.sh [DURATION_SECONDS]
#   env: NETMON=path/to/netmon (default: target/release/netmon, else target/debug/netmon)
#        OUT=dir for the logs (default: a new temporary directory, printed)
#        STABLE=2700 FLAPPING=300 INTERVAL=5s TIMEOUT=2s
#        WARMUP=seconds not judged for flatness (default a quarter of DURATION: the allocator
#        and the label sets of first failures grow during the first minutes)
#
# Loopback only (127.1.0.0/16 and 127.2.0.0/16, ephemeral ports). Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-1200}
STABLE=${STABLE:-2700}
FLAPPING=${FLAPPING:-300}
INTERVAL=${INTERVAL:-5s}
TIMEOUT=${TIMEOUT:-2s}
WARMUP=${WARMUP:-$((DURATION / 4))}
TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z "${NETMON:-}" ]]; then
    NETMON=$TARGET/release/netmon
    [[ -x $NETMON ]] || NETMON=$TARGET/debug/netmon
fi
[[ -x $NETMON ]] || { echo "soak: no netmon binary at $NETMON (cargo build first)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/netmon-soak.XXXXXX)}
mkdir -p "$OUT"
echo "soak: $DURATION s, $STABLE stable + $FLAPPING flapping services, interval $INTERVAL," \
    "binary $NETMON, logs in $OUT"

FLAP_PID= NETMON_PID=
cleanup() {
    [[ -n $NETMON_PID ]] && kill "$NETMON_PID" 2>/dev/null || true
    [[ -n $FLAP_PID ]] && kill "$FLAP_PID" 2>/dev/null || true
}
trap cleanup EXIT

# The flapper must outlive netmon (its sockets closing would be state changes netmon logs):
# it runs 120 s longer than the soak and is stopped by this script once netmon has exited. It
# stops flapping 40 s before netmon stops so the last change is probed (hold 20-60 s,
# interval 5 s).
# The flapper is the ground truth: if it stalls, netmon rightly logs timeouts. As root it
# runs at a higher priority than netmon so a busy machine starves netmon first.
NICE=()
[[ $(id -u) == 0 ]] && NICE=(nice -n -10)
"${NICE[@]}" python3 bench/flap.py serve --config "$OUT/netmon.yml" --log "$OUT/flaps.log" \
    --duration $((DURATION + 120)) --settle 160 --stable "$STABLE" --flapping "$FLAPPING" \
    --interval "$INTERVAL" --timeout "$TIMEOUT" >"$OUT/flap.out" 2>&1 &
FLAP_PID=$!
for _ in $(seq 100); do grep -q READY "$OUT/flap.out" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$OUT/flap.out" || { cat "$OUT/flap.out"; echo "soak: flapper did not start" >&2; exit 2; }

"$NETMON" --config.file "$OUT/netmon.yml" --web.listen-address 127.0.0.1:0 --log.format json \
    >"$OUT/netmon.log" 2>&1 &
NETMON_PID=$!
ADDR=
for _ in $(seq 200); do
    ADDR=$(grep -o '"address":"[^"]*"' "$OUT/netmon.log" 2>/dev/null | head -1 | cut -d'"' -f4) || true
    [[ -n $ADDR ]] && break
    sleep 0.1
done
[[ -n $ADDR ]] || { cat "$OUT/netmon.log"; echo "soak: netmon did not start" >&2; exit 2; }

echo "elapsed_s,rss_kb,fds,threads,runtime_tasks,process_open_fds,probes_total" >"$OUT/samples.csv"
START=$(date +%s)
while :; do
    now=$(date +%s)
    elapsed=$((now - START))
    kill -0 "$NETMON_PID" 2>/dev/null || { echo "soak: netmon died" >&2; tail "$OUT/netmon.log"; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$NETMON_PID/status")
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$NETMON_PID/status")
    fds=$(ls "/proc/$NETMON_PID/fd" | wc -l)
    metrics=$(curl -s --max-time 5 "http://$ADDR/metrics" || true)
    tasks=$(awk '$1 == "netmon_runtime_tasks" {print $2}' <<<"$metrics")
    pfds=$(awk '$1 == "process_open_fds" {print $2}' <<<"$metrics")
    probes=$(awk '/^netmon_probes_total\{/ {s += $2} END {printf "%d", s}' <<<"$metrics")
    echo "$elapsed,$rss,$fds,$threads,${tasks:-},${pfds:-},$probes" >>"$OUT/samples.csv"
    ((elapsed >= DURATION)) && break
    sleep 10
done

kill -TERM "$NETMON_PID"
wait "$NETMON_PID" || true
NETMON_PID=
kill "$FLAP_PID" 2>/dev/null || true
wait "$FLAP_PID" || true
FLAP_PID=

echo "== samples ($OUT/samples.csv)"
cat "$OUT/samples.csv"
echo "== flatness (after a $WARMUP s warm-up)"
set +e
python3 - "$OUT/samples.csv" "$WARMUP" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["elapsed_s"]) >= int(sys.argv[2])]
ok = True
for col, tol in (("rss_kb", 0.05), ("fds", None), ("threads", None), ("runtime_tasks", None)):
    vals = [float(r[col]) for r in rows if r[col]]
    if not vals:
        print(f"{col}: not exported by this binary")
        continue
    lo, hi, first, last = min(vals), max(vals), vals[0], vals[-1]
    mean = sum(vals) / len(vals)
    # RSS is flat when every sample after warm-up is within 5% of the first; for fds and
    # tasks single samples are only reported (their floors are judged below).
    drift = (last - first) / first if first else 0.0
    verdict = "ok"
    if tol is not None and (hi > first * (1 + tol) or lo < first * (1 - tol)):
        verdict = "NOT FLAT"
        ok = False
    print(f"{col}: first {first:.0f} last {last:.0f} min {lo:.0f} max {hi:.0f} mean {mean:.0f} "
          f"drift {drift * 100:+.1f}% spread {(hi - lo) / mean * 100:.1f}% {verdict}")
# fds and tasks: each probe in flight holds a socket, so single samples jump around; a leak
# raises the floor. The last third's minimum must not exceed the first third's by more than 5.
for col in ("fds", "threads", "runtime_tasks"):
    vals = [float(r[col]) for r in rows if r[col]]
    if len(vals) < 6:
        continue
    third = len(vals) // 3
    a, b = min(vals[:third]), min(vals[-third:])
    ok_col = b <= a + 5
    print(f"{col}: floor (minimum) of the first third {a:.0f}, of the last third {b:.0f} "
          f"({'ok' if ok_col else 'GROWING'})")
    ok = ok and ok_col
print("FLAT: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
EOF
flat=$?
echo "== exactly-once logging"
python3 bench/flap.py check --log "$OUT/flaps.log" --netmon "$OUT/netmon.log" --config "$OUT/netmon.yml"
once=$?
set -e
if ((flat == 0 && once == 0)); then echo "SOAK: PASS"; else echo "SOAK: FAIL"; exit 1; fi
