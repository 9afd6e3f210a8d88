#!/usr/bin/env bash
# profile.sh DIR - callgrind profiles of calid-mcp's hot paths (make bench-profile).
#
# Runs DIR/calid_mcp (built with -g) under valgrind --tool=callgrind twice:
#   list: one session, PROFILE_LIST_N (default 5000) tools/list requests
#   call: one session, PROFILE_CALL_N (default 2000) tools/call get_booking_by_id
#         requests against the fake Cal ID API
# driven by DIR/loadgen on one keep-alive connection, and writes
# DIR/callgrind.{list,call}.out and DIR/profile-{list,call}.txt (the top
# functions by exclusive and by inclusive cost, in instructions).
# PROFILE_BIN=path profiles another build of calid_mcp (for before/after).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:?usage: profile.sh DIR}
command -v valgrind >/dev/null || { echo "profile.sh: valgrind is not installed" >&2; exit 1; }
certs=$dir/certs
bash tests/make_certs.sh "$certs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

rm -f "$dir/fake.port"
python3 tests/fake_calid.py --cert "$certs/server.pem" --key "$certs/server.key" --port 0 \
    --port-file "$dir/fake.port" >"$dir/profile-fake.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -s "$dir/fake.port" ] && break; sleep 0.05; done
fport=$(cat "$dir/fake.port")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

req() { # req FILE BODY [session]
    local body=$2 extra=""
    [ "${3:-}" = session ] && extra=$'Mcp-Session-Id: {SID}\r\nMCP-Protocol-Version: 2025-11-25\r\n'
    printf 'POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nAuthorization: Bearer calid_bench_token\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n%sContent-Length: %s\r\n\r\n%s' \
        "$port" "$extra" "${#body}" "$body" >"$1"
}
req "$dir/prof-init.http" '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"calid-bench","version":"1.0.0"}}}'
req "$dir/prof-list.http" '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' session
req "$dir/prof-call.http" '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_booking_by_id","arguments":{"bookingId":503}}}' session

profile() { # profile NAME REQFILE COUNT EXPECT
    local name=$1 out=$dir/callgrind.$1.out
    rm -f "$out"
    valgrind --tool=callgrind --callgrind-out-file="$out" "${PROFILE_BIN:-$dir/calid_mcp}" --listen "127.0.0.1:$port" \
        --upstream "https://localhost:$fport" --ca-file "$certs/ca.pem" --log-level warn \
        >"$dir/profile-$name.log" 2>&1 &
    local vp=$!
    pids+=($vp)
    for _ in $(seq 300); do
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
        sleep 0.1
    done
    "$dir/loadgen" --port "$port" --init "$dir/prof-init.http" --req "$2" --conns 1 --count "$3" \
        --expect "$4" --reconnect | sed "s/^/$name: /"
    kill -TERM "$vp"
    wait "$vp" || true
    callgrind_annotate "$out" >"$dir/annotate-$name.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$out" >"$dir/annotate-$name-incl.txt" 2>/dev/null || true
    {
        echo "== $name: $3 requests on one connection; instructions (Ir), exclusive"
        grep -E '^ *[0-9,]+ ' "$dir/annotate-$name.txt" | head -25 || true
        echo
        echo "== $name: inclusive"
        grep -E '^ *[0-9,]+ ' "$dir/annotate-$name-incl.txt" | head -25 || true
    } >"$dir/profile-$name.txt"
    cat "$dir/profile-$name.txt"
    echo
}

profile list "$dir/prof-list.http" "${PROFILE_LIST_N:-5000}" '"get_users_me"'
profile call "$dir/prof-call.http" "${PROFILE_CALL_N:-2000}" '"isError":false'
