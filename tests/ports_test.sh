#!/usr/bin/env bash
# tests/ports_test.sh - `make ports-test`: every port's suite, then the total.
# Each suite is a make target whose last line is "N passed, N failed" (it
# builds what it needs first: BearSSL per target is cached in build/ports).
# PORTS_SUITES narrows the list, e.g. PORTS_SUITES="lwip vendor".
set -u
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
suites=${PORTS_SUITES:-"lwip vendor windows static-x86_64 static-mipsel static-aarch64"}
mkdir -p build
total_pass=0
total_fail=0
for s in $suites; do
    log=build/ports-test-$s.log
    start=$(date +%s)
    echo "== ports: $s"
    $MAKE -s "ports-test-$s" >"$log" 2>&1
    rc=$?
    tail -n 12 "$log"
    last=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$last" ]; then
        echo "suite $s printed no result (exit $rc): counted as 1 failure; see $log"
        total_fail=$((total_fail + 1))
        continue
    fi
    p=$(echo "$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    f=$(echo "$last" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "suite $s exited $rc with no failures counted: counted as 1 failure"
        f=1
    fi
    echo "(suite $s: $(($(date +%s) - start)) s)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
