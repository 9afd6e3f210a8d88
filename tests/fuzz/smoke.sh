#!/usr/bin/env bash
# Fuzz smoke test for CI (make fuzz-smoke): for every target given,
#   1. replays each file of tests/fuzz/corpus/<target>/ and
#      tests/fuzz/regressions/<target>/ once (a crash, sanitizer report or
#      broken invariant fails it), then
#   2. fuzzes it for FUZZ_SECONDS seconds from that corpus (new inputs go to a
#      scratch directory under the build tree, never into the repository).
# One result per replay and per run; the last line is "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
[ $# -gt 0 ] || set -- fuzz_http fuzz_mcp fuzz_upstream

pass=0
fail=0
result() { # name ok|FAIL detail
    if [ "$2" = ok ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
    echo "$2 $1${3:+: $3}"
}

for t in "$@"; do
    bin=$FUZZ_BUILD/$t
    log=$FUZZ_BUILD/$t.smoke.log
    if [ ! -x "$bin" ]; then
        result "$t replay" FAIL "$bin is not built (make fuzz)"
        result "$t ${FUZZ_SECONDS}s run" FAIL "$bin is not built (make fuzz)"
        continue
    fi
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")

    # 1. replay: each file once, so the failing one is named
    files=()
    for d in "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t"; do
        [ -d "$d" ] || continue
        while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$d" -type f ! -name '.*' -print0 | sort -z)
    done
    nbad=0
    for f in "${files[@]}"; do
        if ! "$bin" -timeout=30 -rss_limit_mb=2560 "$f" >"$log" 2>&1; then
            nbad=$((nbad + 1))
            echo "  fails: $f: $(grep -a -m1 -E 'invariant failed|ERROR: |runtime error' "$log" | cut -c1-150)"
            why=$(grep -a -E "^$t: " "$log" | tail -n 1 | cut -c1-200)
            [ -z "$why" ] || echo "         $why"
            cp "$log" "$FUZZ_BUILD/$t.replay-$(basename "$f").log"
        fi
    done
    if [ "$nbad" -eq 0 ]; then
        result "$t replay" ok "${#files[@]} inputs"
    else
        result "$t replay" FAIL "$nbad of ${#files[@]} inputs fail (logs in $FUZZ_BUILD/$t.replay-*.log)"
    fi

    # 2. a short fuzzing run from the corpus
    scratch=$FUZZ_BUILD/smoke-corpus/$t
    art=$FUZZ_BUILD/artifacts/$t
    rm -rf "$scratch"
    mkdir -p "$scratch" "$art"
    if "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=2560 -print_final_stats=1 \
        -artifact_prefix="$art/" "${dict[@]}" "$scratch" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
        result "$t ${FUZZ_SECONDS}s run" ok "$(grep -m1 -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') execs"
    else
        result "$t ${FUZZ_SECONDS}s run" FAIL "$(grep -m1 -E 'invariant failed|ERROR: |runtime error' "$log" | cut -c1-160); artifact in $art; see $log"
    fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
