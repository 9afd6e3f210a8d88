#!/usr/bin/env bash
# Load: wrk at twice the connection limit (32 connections against
# CM_MAX_CONNS=16) for LOAD_SECONDS (default 60). Passes when the server stays
# up, answers only 200 or the documented 503, frees every connection slot
# afterwards, and still answers a normal request. Prints the figures and ends
# with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=${CALID_MCP_BIN:-$PWD/$BUILD/calid_mcp}
secs=${LOAD_SECONDS:-60}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --listen "127.0.0.1:$port" --log-level error &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
pass=0
fail=0
check() { if eval "$2"; then pass=$((pass+1)); echo "ok   $1"; else fail=$((fail+1)); echo "FAIL $1"; fi; }

rss_before=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
out=$(wrk -t2 -c32 -d"${secs}s" --latency -s tests/load_check.lua "http://127.0.0.1:$port/mcp" 2>&1)
echo "$out" | grep -E "Requests/sec|Latency|50%|99%|requests in|status|errors|Non-2xx"
rss_after=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)
echo "RSS before ${rss_before} kB, after ${rss_after:-?} kB"
check "server alive after ${secs}s of load" "kill -0 $pid"
others=$(echo "$out" | grep -E '^status ' | grep -vE '^status (200|503):' | wc -l)
check "only 200 and 503 answers" "[ $others -eq 0 ]"
check "200 answers were served" "echo \"\$out\" | grep -qE '^status 200: [1-9]'"
sleep 1.5
health=$(curl -s "http://127.0.0.1:$port/healthz")
echo "healthz after load: $health"
conns=$(echo "$health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null || echo 99)
check "no connection slot leaked (only the health check's own open)" "[ ${conns:-99} -le 1 ]"
check "a normal request is answered after the load" "curl -sf -o /dev/null -H 'Content-Type: application/json' -H 'Authorization: Bearer calid_x' -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}' http://127.0.0.1:$port/mcp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
