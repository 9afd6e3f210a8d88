#!/usr/bin/env bash
# The whole test suite again, built with AddressSanitizer + UBSan (the
# SANITIZE=1 make variable, into build/asan): unit tests, the upstream
# client, the protocol and tool suites, the client tests and the lwIP and
# vendoring ports. A sanitizer report aborts the process, which the suites
# see as a failure. Ends with the inner run's "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
unset CALID_MCP_BIN CALID_TEST_CERTS
exec make -s SANITIZE=1 test
