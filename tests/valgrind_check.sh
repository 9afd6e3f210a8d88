#!/usr/bin/env bash
# Runs integration suites against the server under valgrind (memcheck): every
# server process the suites start runs as "valgrind calid_mcp ...", writing a
# report per process. Any memory error or definite leak in any report fails.
# Ends with "N passed, N failed" (one line per suite, plus the report check).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
real_bin=${CALID_MCP_BIN:-$PWD/$BUILD/calid_mcp}
vg_dir=$(mktemp -d)
trap 'rm -rf "$vg_dir"' EXIT
wrapper="$vg_dir/calid_mcp"
cat >"$wrapper" <<WRAP
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \\
    --show-leak-kinds=definite --log-file="$vg_dir/vg.%p.log" "$real_bin" "\$@"
WRAP
chmod +x "$wrapper"
pass=0
fail=0
for suite in "tests/ports_check.py server" "tests/test_tools.py" "tests/test_tls.py" "tests/test_streaming.py"; do
    echo "== under valgrind: $suite"
    if CALID_MCP_BIN="$wrapper" CALID_PORT_NAME=valgrind CALID_VALGRIND=1 python3 $suite >"$vg_dir/out.log" 2>&1; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
    fi
    tail -n 3 "$vg_dir/out.log"
done
reports=$(ls "$vg_dir"/vg.*.log 2>/dev/null | wc -l)
bad=$(find "$vg_dir" -name 'vg.*.log' -size +0 | wc -l)
echo "valgrind: $reports server processes checked, $bad with errors or definite leaks"
if [ "$bad" -eq 0 ] && [ "$reports" -gt 0 ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    find "$vg_dir" -name 'vg.*.log' -size +0 -exec head -n 40 {} \;
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
