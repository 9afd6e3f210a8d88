#!/usr/bin/env python3
"""The memory profiles and the shared request pool.

    python3 tests/test_memory.py

- Each profile's static memory (cm_static_bytes, printed by --version) is
  within its goal: the default build (CALID_MCP_BIN) at most 1 MiB, the tiny
  one (make tiny: build/calid_mcp-tiny, built here when missing) at most
  128 KiB. Sizes, not timings.
- The pool, on the tiny build (CM_BODY_POOL=1): a request larger than a
  connection's own buffer borrows the one pool buffer; a second one that
  needs it meanwhile waits, and is served once the first is done (not 413);
  a body over the limit is 413 at once even then; a waiting request that
  never completes ends in 408 and frees nothing it did not hold.
Ends with "N passed, N failed".
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import ACCEPT_BOTH, Conn, build_request  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
TINY = os.environ.get("CALID_MCP_TINY_BIN") or os.path.join(H.ROOT, BUILD, "calid_mcp-tiny")


def version_of(binary):
    rc, out, err = H.run_binary(["--version"], binary=binary)
    assert rc == 0, f"{binary} --version exited {rc}: {err}"
    used = goal = None
    for line in out.splitlines():
        if line.startswith("static memory: "):
            used = int(line.split()[2])
        elif line.startswith("profile "):
            goal = int(line.split("goal ")[1].split()[0])
            assert line.endswith(": met"), line
    assert used is not None and goal is not None, out
    return used, goal


def setup():
    if not os.path.exists(TINY) or os.path.getmtime(TINY) < os.path.getmtime(os.path.join(H.ROOT, "calid_mcp.c")):
        subprocess.run(["make", "-s", "BUILD=" + BUILD, os.path.join(BUILD, "calid_mcp-tiny")], cwd=H.ROOT,
                       check=True, timeout=300, stdout=subprocess.DEVNULL)


def test_default_profile_within_1_mib():
    used, goal = version_of(H.BIN)
    if H.limits(H.BIN).get("profile") != "default":
        raise H.Skip(f"{H.BIN} is the {H.limits(H.BIN).get('profile')} profile")
    assert goal == 1048576 and used <= goal, f"default profile: {used} of {goal} bytes"


def test_tiny_profile_within_128_kib():
    used, goal = version_of(TINY)
    assert H.limits(TINY)["profile"] == "tiny", H.limits(TINY)
    assert goal == 131072 and used <= goal, f"tiny profile: {used} of {goal} bytes"


def big_request(port, size, complete=True):
    """A modern tools/list whose body is padded with spaces to size bytes; the
    whole request, or its head and half of its body."""
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list",
                       "params": {"_meta": H.modern_meta()}}).encode()
    body += b" " * (size - len(body))
    head = [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
            ("Authorization", f"Bearer {H.DEFAULT_TOKEN}"), ("MCP-Protocol-Version", H.MODERN),
            ("Mcp-Method", "tools/list")]
    data = build_request("POST", "/mcp", head, body, port=port)
    return data if complete else data[:len(data) - size // 2]


def test_pool_waits_then_serves():
    lim = H.limits(TINY)
    size = lim["CM_MAX_BODY_BYTES"]
    assert lim["CM_BODY_POOL"] == 1 and size > lim["CM_CONN_IN_BYTES"], lim
    with H.Server(binary=TINY) as s:
        first, second = Conn(s.port), Conn(s.port, source="127.0.0.2")
        try:
            whole = big_request(s.port, size)
            first.send(whole[:len(whole) - size // 2])   # holds the pool buffer, half its body sent
            time.sleep(0.3)
            second.send(whole)                           # needs the buffer too: waits
            time.sleep(0.5)
            second.sock.settimeout(0.5)
            try:
                early = second.sock.recv(1)
            except OSError:
                early = b""
            second.sock.settimeout(H.IO_TIMEOUT)
            assert early == b"", f"the waiting request was answered before the buffer was free: {early!r}"
            with Conn(s.port, source="127.0.0.2") as over:  # over the limit: 413 at once, pool or not
                over.send(big_request(s.port, size + 1))
                r = over.read_response()
                assert r.status == 413, f"{r.status} {r.text[:200]}"
            first.send(whole[len(whole) - size // 2:])
            r1 = first.read_response()
            r2 = second.read_response()
            for r in (r1, r2):
                assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"{r.status} {r.text[:200]}"
            assert s.alive()
        finally:
            first.close()
            second.close()


def test_waiting_request_still_times_out():
    """The request holding the buffer stalls: it gets 408 after CM_HEADER_TIMEOUT_MS
    (10 s), then the one that waited for the buffer is served."""
    lim = H.limits(TINY)
    size = lim["CM_MAX_BODY_BYTES"]
    with H.Server(binary=TINY) as s:
        stalled, waiting = Conn(s.port, timeout=30), Conn(s.port, timeout=30, source="127.0.0.2")
        try:
            whole = big_request(s.port, size)
            stalled.send(whole[:len(whole) - size // 2])
            time.sleep(5)   # the waiting request's own 10 s start later: it has time left when served
            waiting.send(whole)
            r = stalled.read_response()   # after CM_HEADER_TIMEOUT_MS (10 s)
            assert r.status == 408, f"{r.status} {r.text[:200]}"
            r = waiting.read_response()
            assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"{r.status} {r.text[:200]}"
        finally:
            stalled.close()
            waiting.close()


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup)
