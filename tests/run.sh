#!/usr/bin/env bash
# Runs every test suite and sums their results. Each suite is a command whose
# last line of output is "N passed, N failed"; this script ends with the total
# in the same form and exits non-zero if anything failed or a suite crashed.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export CALID_MCP_BIN=${CALID_MCP_BIN:-$PWD/$BUILD/calid_mcp}
export CALID_TEST_CERTS=${CALID_TEST_CERTS:-$PWD/$BUILD/certs}
bash tests/make_certs.sh "$CALID_TEST_CERTS" || { echo "0 passed, 1 failed"; exit 1; }

total_pass=0
total_fail=0
run_suite() {
    local name=$1; shift
    local log="$BUILD/test-$name.log" last p f
    echo "== $name"
    "$@" >"$log" 2>&1
    local rc=$?
    tail -n 15 "$log"
    last=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$last" ]; then
        echo "suite $name printed no result (exit $rc): counted as 1 failure; see $log"
        total_fail=$((total_fail + 1))
        return
    fi
    p=$(echo "$last" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
    f=$(echo "$last" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "suite $name exited $rc with no failures counted: counted as 1 failure"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

run_suite unit "$BUILD/unit_tests"
run_suite upstream sh tests/upstream_test.sh
for t in tests/test_*.py; do
    [ -e "$t" ] || continue
    run_suite "$(basename "$t" .py)" python3 "$t"
done
# The protocol suites again over HTTPS served by the binary itself: the same
# tests, a second transport (tests/harness.py, tests/node/lib.mjs).
for t in test_server test_hardening; do
    run_suite "$t-https" env CALID_TEST_TRANSPORT=https python3 "tests/$t.py"
done
# The tiny profile (mk/tiny.mk): the protocol, tool and lwIP suites at its limits
if [ "${CALID_SKIP_TINY:-0}" != 1 ]; then
    if ${MAKE:-make} -s BUILD="$BUILD" "$BUILD/calid_mcp-tiny" >"$BUILD/tiny-build.log" 2>&1; then
        tiny=$PWD/$BUILD/calid_mcp-tiny
        tiny_flags=$(${MAKE:-make} -s tiny-flags)
        run_suite tiny-server env CALID_MCP_BIN="$tiny" python3 tests/test_server.py
        run_suite tiny-tools env CALID_MCP_BIN="$tiny" CALID_TEST_CFLAGS="$tiny_flags" python3 tests/test_tools.py
        # answers streamed through the tiny profile's 12 KiB API buffer
        run_suite tiny-streaming env CALID_MCP_BIN="$tiny" python3 tests/test_streaming.py
        run_suite tiny-lwip ${MAKE:-make} -s BUILD="$BUILD" tiny-test-lwip
    else
        echo "the tiny profile does not build: counted as 1 failure; see $BUILD/tiny-build.log"
        total_fail=$((total_fail + 1))
    fi
fi
if [ -d tests/node ] && [ "${CALID_SKIP_NODE:-0}" != 1 ]; then
    for t in tests/node/test_*.mjs; do
        [ -e "$t" ] || continue
        run_suite "$(basename "$t" .mjs)" node "$t"
    done
    # (the conformance suite stays on HTTP: its DNS-rebinding scenario sends a
    # foreign Host, which over HTTPS fails the certificate check first)
    for t in test_sdk_v1 test_sdk_v2 test_mcp_remote; do
        [ -e "tests/node/$t.mjs" ] || continue
        run_suite "$t-https" env CALID_TEST_TRANSPORT=https NODE_EXTRA_CA_CERTS="$CALID_TEST_CERTS/ca.pem" node "tests/node/$t.mjs"
    done
fi

# Ports (lwIP, Windows under wine, static musl builds under qemu-user, the
# vendoring example): each suite builds what it needs; cross builds are cached
# in build/ports.
if [ "${CALID_SKIP_PORTS:-0}" != 1 ]; then
    ports="lwip vendor windows static-x86_64 static-mipsel static-aarch64"
    # under sanitizers only the ports built with them (the cross builds are not)
    [ "${SANITIZE:-0}" = 1 ] && ports="lwip vendor"
    for s in $ports; do
        run_suite "port-$s" ${MAKE:-make} -s "ports-test-$s"
    done
fi

# calid-mcp as Cortex-M4 firmware under qemu-system-arm (tests/firmware/)
if [ "${CALID_SKIP_PORTS:-0}" != 1 ] && [ "${SANITIZE:-0}" != 1 ]; then
    run_suite firmware ${MAKE:-make} -s firmware-test
    # the board serving HTTPS itself (same suite, TLS to the board)
    run_suite firmware-https env CALID_TEST_TRANSPORT=https ${MAKE:-make} -s firmware-test
fi

# The Debian and OpenWrt packages (built from the binaries above)
if [ "${CALID_SKIP_PORTS:-0}" != 1 ] && [ "${SANITIZE:-0}" != 1 ]; then
    run_suite packages ${MAKE:-make} -s pkg-test
fi

# The suites again under ASan+UBSan and under valgrind (skipped when this run
# is itself the sanitizer build).
if [ "${SANITIZE:-0}" != 1 ] && [ "${CALID_SKIP_SANITIZERS:-0}" != 1 ]; then
    run_suite asan bash tests/asan_check.sh
    run_suite valgrind bash tests/valgrind_check.sh
fi
# fuzz smoke: replay the corpus and the regressions, then 30 s per target
if [ "${SANITIZE:-0}" != 1 ] && [ "${CALID_SKIP_FUZZ:-0}" != 1 ]; then
    run_suite fuzz ${MAKE:-make} -s fuzz-smoke
fi
[ "${SANITIZE:-0}" = 1 ] || run_suite load bash tests/load_check.sh

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
