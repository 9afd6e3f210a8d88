#!/usr/bin/env python3
"""API answers larger than an API slot's buffer stream to the MCP client.

The fake Cal ID API (tests/fake_calid.py) is given a few hundred extra
bookings with long notes (POST /__fake/bookings), so that get_booking's
answer is megabytes; its faults cut, reset, stall or spoil that real answer
in the middle (truncate, reset_mid_answer, garbage_at). Checked:
  - the decoded text the MCP client gets equals the fake's body byte for
    byte, in JSON and SSE answers, in both protocol eras, for resources/read,
    over HTTP/1.1 (chunked) and HTTP/1.0 (close-delimited), and on stdio;
    whether the API framed it by Content-Length, chunks or its close;
  - the server's memory does not grow with a 4 MB answer;
  - a client that reads slowly still gets all of it while others are
    served, and the answer timeout does not fire for the client's slowness;
  - a client that leaves mid-answer frees the API slot (its connection is
    closed, not reused);
  - each failure after the answer began (a bare TCP close, a reset, a stall
    past the answer timeout, content that stops being JSON, an answer over
    CM_UPSTREAM_ANSWER_MAX_BYTES) ends the text, adds a second text block
    naming it and the bytes that came, isError true, and a valid message;
  - a large 4xx/5xx answer streams with the "Cal ID API error" line first.

Run: CALID_MCP_BIN=build/calid_mcp CALID_TEST_CERTS=build/certs python3 tests/test_streaming.py
"""
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
import test_tools as T  # noqa: E402  (the fake's control client and the build of variant binaries)

ROOT = H.ROOT
TOKEN = H.DEFAULT_TOKEN
VALGRIND = os.environ.get("CALID_VALGRIND") == "1"
# A variant: 1 API slot and a 4 s answer timeout (long enough for the fake to build its answer)
VARIANT_BIN = os.path.join(ROOT, os.environ.get("BUILD", "build"), "calid_mcp_stream_variant")
VARIANT_FLAGS = ["-DCM_MAX_UPSTREAMS=1", "-DCM_UPSTREAM_ANSWER_MS=4000"]

FAKE = CTL = SRV = VARIANT = None
BIG = {"count": 400, "notes_bytes": 8000}   # get_booking's answer: about 4.5 MB


def setup():
    global FAKE, CTL
    H.ensure_certs()
    FAKE = H.FakeCalid().start()
    CTL = T.Control(FAKE)
    if T.sources_newer_than(VARIANT_BIN):
        os.makedirs(os.path.dirname(VARIANT_BIN), exist_ok=True)
        cmd = (["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-DCALID_MCP_MAIN"] + VARIANT_FLAGS +
               ["-o", VARIANT_BIN, "calid_mcp.c", os.path.join("port", "posix.c"), "-lbearssl", "-lpthread"])
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr.decode("utf-8", "replace")[-2000:]


def teardown():
    for p in (SRV, VARIANT):
        if p is not None:
            p.close()
    if CTL is not None:
        CTL.close()
    if FAKE is not None:
        FAKE.stop()


def srv():
    global SRV
    if SRV is None or not SRV.alive():
        SRV = H.Server(*T.upstream_flags(FAKE)).start()
    return SRV


def variant():
    global VARIANT
    if VARIANT is None or not VARIANT.alive():
        VARIANT = H.Server(*T.upstream_flags(FAKE), binary=VARIANT_BIN).start()
    return VARIANT


ARGS = {"status": "upcoming", "limit": 500}


def big_state(big=BIG):
    """Seeded state plus the bulk bookings; returns the fake's body for get_booking(ARGS)."""
    CTL.reset()
    CTL.call("POST", "/__fake/bookings", big)
    return reference("/booking", "status=upcoming&limit=500")


def reference(path, query):
    """What the fake answers to this GET (no fault active), as bytes."""
    req = urllib.request.Request(f"{FAKE.url}{path}?{query}", headers={"Authorization": f"Bearer {TOKEN}"})
    ctx = ssl.create_default_context(cafile=FAKE.ca_file)
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        return r.read()


def check_query_sent(path, query):
    rec = CTL.requests(path)[-1]
    assert rec["query"] == query, f"the server asked {rec['path']}?{rec['query']}, the reference is ?{query}"


def call(port, era="modern", sse=False, version=H.LATEST_SESSION, name="get_booking", args=ARGS, headers=None,
         id=7, http10=False):
    """tools/call; returns (Response, message)."""
    h = [("Accept", "text/event-stream")] if sse else []
    h += list(headers or [])
    if era == "modern":
        body = H.modern_body("tools/call", {"name": name, "arguments": args}, id=id)
        h = [("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", name)] + \
            H.mcp_param_headers(args) + h
    else:
        sid = H.initialize(port, token=TOKEN, version=version)
        body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}
        h = [("Mcp-Session-Id", sid), ("MCP-Protocol-Version", version)] + h
    if http10:
        return raw_http10(port, body, h)
    r = H.post_json(port, body, headers=h, token=TOKEN)
    assert r.status == 200, f"HTTP {r.status}: {r.text[:300]}"
    return r, r.json()


def raw_http10(port, body, headers):
    data = json.dumps(body).encode()
    hdrs = [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
            ("Authorization", f"Bearer {TOKEN}")] + headers
    with H.Conn(port, timeout=60) as c:
        c.send(H.build_request("POST", "/mcp", hdrs, data, version="HTTP/1.0"))
        r = c.read_response()
    assert r.status == 200, f"HTTP {r.status}: {r.text[:300]}"
    return r, r.json()


def texts(msg):
    res = msg["result"]
    assert all(c["type"] == "text" for c in res["content"]), res["content"][:2]
    return res["isError"], [c["text"] for c in res["content"]]


def assert_whole(msg, ref, what):
    is_error, t = texts(msg)
    assert not is_error and len(t) == 1, f"{what}: isError {is_error}, {len(t)} blocks: {t[-1][:300]}"
    assert t[0] == ref.decode("utf-8"), f"{what}: {len(t[0])} characters, the fake sent {len(ref)} bytes"


# ---------------------------------------------------------------------------
# Whole answers, every way
# ---------------------------------------------------------------------------

def test_big_answer_arrives_whole_json_and_sse_modern():
    ref = big_state()
    assert len(ref) > 4_000_000, len(ref)
    for sse in (False, True):
        r, msg = call(srv().port, sse=sse)
        assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers, r.headers
        assert r.headers["content-type"].startswith("text/event-stream" if sse else "application/json")
        assert_whole(msg, ref, f"modern sse={sse}")
    check_query_sent("/booking", "status=upcoming&limit=500")


def test_big_answer_arrives_whole_session_eras():
    ref = big_state()
    for version in ("2025-11-25", "2025-03-26"):
        for sse in (False, True):
            _, msg = call(srv().port, era="session", version=version, sse=sse)
            assert_whole(msg, ref, f"{version} sse={sse}")


def test_big_answer_with_log_message_on_sse():
    ref = big_state()
    body = H.modern_body("tools/call", {"name": "get_booking", "arguments": ARGS})
    body["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = "info"
    h = [("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "get_booking"),
         ("Accept", "text/event-stream")] + H.mcp_param_headers(ARGS)
    r = H.post_json(srv().port, body, headers=h, token=TOKEN)
    ev = r.sse_events()
    assert len(ev) == 2, f"{len(ev)} events"
    log = json.loads(ev[0]["data"])
    assert log["method"] == "notifications/message" and log["params"]["data"]["status"] == 200, log
    assert_whole(json.loads(ev[1]["data"]), ref, "SSE with a log message")


def test_big_answer_framed_by_api_chunks_or_close():
    ref = big_state()
    for fault in ({"mode": "chunked", "chunks": 300}, {"mode": "chunked", "chunks": 7, "extensions": True},
                  {"mode": "close"}):
        CTL.fault(path="/booking", **fault)
        _, msg = call(srv().port)
        assert_whole(msg, ref, f"API framing {fault}")


def test_http10_client_gets_a_close_delimited_answer():
    ref = big_state()
    r, msg = call(srv().port, http10=True)
    assert "transfer-encoding" not in r.headers and "content-length" not in r.headers, r.headers
    assert r.headers.get("connection", "").lower() == "close", r.headers
    assert_whole(msg, ref, "HTTP/1.0")


def test_resources_read_streams():
    big_state()
    ref = reference("/booking", "status=upcoming")
    r = H.modern_post(srv().port, "resources/read", {"uri": "calid://bookings/upcoming"},
                      name="calid://bookings/upcoming", token=TOKEN)
    rec = CTL.requests("/booking")[-1]
    if rec["query"] != "status=upcoming":
        ref = reference("/booking", rec["query"])
    assert r.status == 200 and r.headers.get("transfer-encoding") == "chunked", (r.status, r.headers)
    c = r.json()["result"]["contents"]
    assert len(c) == 1 and c[0]["mimeType"] == "application/json", c[-1].get("text", "")[:300]
    assert c[0]["text"] == ref.decode("utf-8") and len(ref) > 100_000, len(ref)


def test_stdio_big_answer():
    ref = big_state()
    args = [H.BIN, "--stdio", "--api-key", TOKEN] + T.upstream_flags(FAKE)
    line = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                       "params": {"name": "get_booking", "arguments": ARGS}}) + "\n"
    p = subprocess.run(args, input=line.encode(), capture_output=True, timeout=120, env=H.clean_env(), cwd=ROOT)
    lines = p.stdout.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 2, f"{len(lines) - 1} lines; stderr {p.stderr[-500:]!r}"
    assert_whole(json.loads(lines[0]), ref, "stdio")


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_memory_does_not_grow_with_a_4_mb_answer():
    if VALGRIND:
        raise H.Skip("valgrind's own memory is in the process")
    ref = big_state()
    with H.Server(*T.upstream_flags(FAKE)) as s:
        call(s.port, args={"status": "upcoming", "limit": 5})       # every path of a call once
        before = vm(s.proc.pid, "VmHWM")
        for sse in (False, True):
            _, msg = call(s.port, sse=sse)
            assert_whole(msg, ref, "memory")
        grown = vm(s.proc.pid, "VmHWM") - before
        assert grown < 512 * 1024, f"peak RSS grew {grown} bytes over a {len(ref)}-byte answer"


# ---------------------------------------------------------------------------
# Back-pressure and clients that leave
# ---------------------------------------------------------------------------

def slow_request(port):
    body = json.dumps(H.modern_body("tools/call", {"name": "get_booking", "arguments": ARGS})).encode()
    h = [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
         ("Authorization", f"Bearer {TOKEN}"), ("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/call"),
         ("Mcp-Name", "get_booking"), ("Connection", "close")] + H.mcp_param_headers(ARGS)
    return H.build_request("POST", "/mcp", h, body)


def test_slow_reader_gets_everything_and_others_are_served():
    ref = big_state()
    s = variant()   # a 1.5 s answer timeout: the pauses below are longer
    c = H.Conn(s.port, timeout=60)
    c.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
    c.send(slow_request(s.port))
    got = bytearray()
    paused = False
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        got += chunk
        if not paused and len(got) > 300_000:
            paused = True
            time.sleep(6)                   # longer than the answer timeout
            r = H.get(srv().port, "/healthz")   # another server, and this one, keep serving
            assert r.status == 200, (r.status, r.text[:300])
            lst = H.modern_post(s.port, "tools/list", {}, token=TOKEN)
            assert lst.status == 200 and "tools" in lst.json()["result"], (lst.status, lst.text[:300])
    c.close()
    assert paused, f"the answer ended after {len(got)} bytes: {got[:300]!r} ... {got[-300:]!r}"
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    dechunked, at = bytearray(), 0
    while True:
        eol = body.index(b"\r\n", at)
        n = int(body[at:eol], 16)
        if n == 0:
            break
        dechunked += body[eol + 2:eol + 2 + n]
        at = eol + 4 + n
    assert_whole(json.loads(bytes(dechunked)), ref, "slow reader")


def test_client_leaving_mid_answer_frees_the_api_slot():
    big_state()
    s = variant()   # one API slot: the next call needs it back
    c = H.Conn(s.port, timeout=30)
    c.send(slow_request(s.port))
    got = b""
    while len(got) < 300_000:
        got += c.sock.recv(65536)
    c.close()
    time.sleep(0.3)
    _, msg = call(s.port, args={"status": "upcoming", "limit": 5})
    is_error, t = texts(msg)
    assert not is_error and json.loads(t[0])["data"], t[0][:300]
    # the API connection of the abandoned answer was closed, not reused
    recs = CTL.requests("/booking")[-2:]
    assert recs[0]["conn"] != recs[1]["conn"], [(r["conn"], r["query"]) for r in recs]


# ---------------------------------------------------------------------------
# Failures after the answer began
# ---------------------------------------------------------------------------

def failed(s, fault, ref, words, cut=None, same_upto=None):
    CTL.fault(path="/booking", **fault)
    r, msg = call(s.port)
    assert r.headers.get("transfer-encoding") == "chunked", r.headers
    is_error, t = texts(msg)
    assert is_error and len(t) == 2, f"{fault}: isError {is_error}, {len(t)} blocks, last: {t[-1][:300]}"
    for w in words:
        assert w in t[1], f"{fault}: {w!r} not in {t[1]!r}"
    shown = t[0].rstrip("\ufffd")       # the first bytes of a character cut at the end are replaced
    n = len(shown.encode("utf-8"))
    said = int(t[1].split(" bytes")[0].split(" ")[-1])
    assert n <= said <= n + 3, f"{fault}: {n} bytes shown, the error says {said}: {t[1]!r}"
    k = n if same_upto is None else min(n, same_upto)
    assert ref[:k] == shown.encode("utf-8")[:k], f"{fault}: the text is not the answer's start"
    if cut is not None:
        assert said == cut, f"{fault}: the error says {said} bytes, the fake sent {cut}"
    return t[1]


def test_bare_tcp_close_mid_answer():
    ref = big_state()
    failed(srv(), {"mode": "truncate", "bytes": 2_000_000, "close_notify": False}, ref,
           ["broke off", "truncated"], cut=2_000_000)


def test_close_notify_before_the_length_mid_answer():
    ref = big_state()
    failed(srv(), {"mode": "truncate", "bytes": 1_500_000}, ref, ["broke off", "before the answer was complete"],
           cut=1_500_000)


def test_reset_mid_answer():
    ref = big_state()
    # (a reset discards what the server had not read yet: the error names what came)
    said = failed(srv(), {"mode": "reset_mid_answer", "bytes": 1_000_000, "delay_ms": 300}, ref, ["broke off", "reset"])
    assert int(said.split(" bytes")[0].split(" ")[-1]) <= 1_000_000, said


def test_stall_mid_answer_hits_the_answer_timeout():
    ref = big_state()
    failed(variant(), {"mode": "truncate", "bytes": 500_000, "stall_ms": 10000}, ref,
           ["broke off", "did not answer within 4 s"], cut=500_000)


def test_content_that_stops_being_json():
    ref = big_state()
    text = failed(srv(), {"mode": "delay", "delay_ms": 0, "garbage_at": 3_000_000}, ref,
                  ["not JSON", "at byte 3000000", "application/json"], same_upto=3_000_000)
    assert "the rest was not read" in text


def test_answer_over_the_policy_limit():
    limit = H.limits()["CM_UPSTREAM_ANSWER_MAX_BYTES"]
    ref = big_state({"count": 400, "notes_bytes": 20000})   # about 10 MB, over the default 8 MiB
    assert len(ref) > limit, len(ref)
    # chunked: the limit is met in mid-answer
    failed(srv(), {"mode": "chunked", "chunks": 100}, ref, ["broke off", "CM_UPSTREAM_ANSWER_MAX_BYTES", str(limit)])
    # with a Content-Length over it: refused before anything streams
    _, msg = call(srv().port)
    is_error, t = texts(msg)
    assert is_error and len(t) == 1 and "CM_UPSTREAM_ANSWER_MAX_BYTES" in t[0], t[0][:300]


def test_big_error_answer_streams_with_its_status_line_first():
    CTL.reset()
    CTL.fault(path="/booking", mode="status", status=500, message="disk full " + "x" * 300_000)
    _, msg = call(srv().port)
    is_error, t = texts(msg)
    assert is_error and len(t) == 1, t[-1][:300]
    head, _, rest = t[0].partition("\n")
    assert head.startswith("Cal ID API error 500 Internal Server Error"), head[:200]
    assert json.loads(rest)["message"].startswith("disk full xxx"), rest[:200]


def test_resources_read_failure_mid_answer():
    big_state()
    CTL.fault(path="/booking", mode="truncate", bytes=800_000, close_notify=False)
    r = H.modern_post(srv().port, "resources/read", {"uri": "calid://bookings/upcoming"},
                      name="calid://bookings/upcoming", token=TOKEN)
    c = r.json()["result"]["contents"]
    assert len(c) == 2 and c[1]["mimeType"] == "text/plain" and "broke off after" in c[1]["text"], c[-1]


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
