#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each and prints, per target,
# executions, exec/s, corpus size and findings. Not part of CI: see docs/fuzzing.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
#
# Environment: FUZZ_SANITIZER=address|none (default address: ASan works on stable here with
# RUSTC_BOOTSTRAP=1), FUZZ_TARGET_DIR (default fuzz/target), FUZZ_JOBS (default 1).
# New corpus entries go to fuzz/corpus/<target> (ignored by git), seeds come from
# fuzz/seeds/<target>; a crashing input lands in fuzz/artifacts/<target>/ and makes the script
# exit 1 after the other targets have run. Copy it to fuzz/regressions/<target>/ with the fix.
set -euo pipefail

cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
# With -jobs, libFuzzer writes each job's output to fuzz-N.log in the current folder instead.
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
# Statics (the OnceLock options, the per-thread runtime) are reachable at exit, not leaks.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "building ${#targets[@]} targets (sanitizer: $sanitizer)" >&2
if [ $# -gt 0 ]; then
    for t in "${targets[@]}"; do cargo fuzz build -s "$sanitizer" "$t" >&2; done
else
    cargo fuzz build -s "$sanitizer" >&2
fi

logs=fuzz/logs
mkdir -p "$logs"
failed=0
printf '%-16s %8s %12s %10s %8s  %s\n' target seconds executions exec/s corpus findings
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    start=$(date +%s)
    set +e
    cargo fuzz run -s "$sanitizer" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        "${parallel[@]}" >"$logs/$t.log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    # libFuzzer's final stats, else its last status line (`#N ... exec/s: R`).
    execs=$(awk '/stat::number_of_executed_units/ {s += $2; f = 1} /^#[0-9]+/ {l = substr($1, 2)}
        END {print f ? s : l + 0}' "$logs/$t.log")
    rate=$(awk '/stat::average_exec_per_sec/ {s += $2; f = 1} /exec\/s: [0-9]+/ {
        for (i = 1; i < NF; i++) if ($i == "exec/s:") l = $(i + 1) } END {print f ? s : l + 0}' "$logs/$t.log")
    size=$(find "$corpus" -type f | wc -l)
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    findings=$((after - before))
    note=$findings
    if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
        failed=1
        note="$findings (exit $rc; see $logs/$t.log and fuzz/artifacts/$t/)"
    fi
    printf '%-16s %8s %12s %10s %8s  %s\n' "$t" "$took" "$execs" "$rate" "$size" "$note"
done
exit $failed
