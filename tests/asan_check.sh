#!/usr/bin/env bash
# Builds the server and the unit tests with AddressSanitizer + UBSan (the
# SANITIZE=1 make variable) and runs the unit, protocol and tool suites
# against them. Any sanitizer report aborts the server, which the suites see.
# Ends with "N passed, N failed" summed over the suites.
set -u
cd "$(dirname "$0")/.."
make -s SANITIZE=1 build/asan/calid_mcp build/asan/unit_tests || { echo "0 passed, 1 failed"; exit 1; }
export CALID_MCP_BIN=$PWD/build/asan/calid_mcp
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0
fail=0
for suite in build/asan/unit_tests "python3 tests/test_server.py" "python3 tests/test_tools.py"; do
    echo "== under ASan+UBSan: $suite"
    out=$($suite 2>&1)
    rc=$?
    echo "$out" | grep -E "^(FAIL|ERROR)|Sanitizer|runtime error" | head -n 20
    last=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    echo "${last:-no result line}"
    p=$(echo "$last" | grep -oE '^[0-9]+')
    f=$(echo "$last" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    pass=$((pass + ${p:-0}))
    fail=$((fail + ${f:-1}))
    [ "$rc" -eq 0 ] || [ "${f:-1}" -gt 0 ] || fail=$((fail + 1))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
