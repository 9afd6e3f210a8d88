#!/usr/bin/env python3
"""Issue #6: bad input, faults and security, against the binary and the fake API.

    python3 tests/test_hardening.py              # every test
    python3 tests/test_hardening.py bad_input    # tests whose names contain a word

Parts:
  - a systematic bad-input table: every case names the request, the documented
    answer (HTTP status + JSON-RPC code + words the message must contain) and
    is checked against one fresh server; afterwards a normal request is served
    and GET /healthz shows no leaked session or connection slot;
  - slow clients trickling requests while a normal client is served, then
    timing out with 408 and freeing their slots;
  - upstream faults (reset in mid-answer, a TLS alert, a stall, an endless
    chunked answer) ending as tool errors that name the failure, with the
    server serving tools/list meanwhile and the next call working;
  - security: tokens never in stderr at any log level, Origin checks, sessions
    bound to their token, unpredictable session ids, a server-held key behind
    an access token off loopback, refusal to start without one, and TLS
    verification that no option or environment variable switches off.

Short-timeout builds (-DCM_SESSION_TTL_MS=1500; -DCM_HEADER_TIMEOUT_MS=1500
with -DCM_UPSTREAM_ANSWER_MS=1500) are compiled into a private temporary
directory at start. Everything talks to 127.0.0.1; nothing asserts on elapsed
time (sleeps only wait past the short build's limits). Ends with
"N passed, N failed"; exits 1 when anything failed.
"""
import base64
import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import ACCEPT_BOTH, Conn, build_request  # noqa: E402

ROOT = H.ROOT
TOKEN = H.DEFAULT_TOKEN                # what the harness helpers send by default
OTHER_TOKEN = "calid_hardening_bob_02"
FLAGS_TTL = ["-DCM_SESSION_TTL_MS=1500"]
# (the minimum data rate off: the trickle test checks the whole-request timeout)
FLAGS_SHORT = ["-DCM_HEADER_TIMEOUT_MS=1500", "-DCM_UPSTREAM_ANSWER_MS=1500", "-DCM_MIN_RECV_BYTES_PER_S=0"]
ANY = object()              # "any value" in an expectation

FAKE = None                 # the shared fake Cal ID API
CTL = None                  # its control API
TABLE = None                # the server the bad-input table runs against
BUILD_DIR = None
TTL_BIN = None
SHORT_BIN = None
STARTED = []                # every process started here, stopped at the end
CASES = {"run": 0, "failed": 0}


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

class Control:
    """The fake's /__fake/ control API over one kept-alive HTTPS connection."""

    def __init__(self, fake):
        self.port = fake.port
        self.ctx = ssl.create_default_context(cafile=fake.ca_file)
        self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                        timeout=H.IO_TIMEOUT)
            try:
                self.conn.request(method, path, body=data,
                                  headers={"Content-Type": "application/json"} if data else {})
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        assert resp.status == 200, f"fake control {method} {path}: {resp.status} {raw[:300]!r}"
        return json.loads(raw)

    def fault(self, **spec):
        return self.call("POST", "/__fake/fault", spec)

    def clear_faults(self):
        return self.call("DELETE", "/__fake/fault")

    def requests(self, path=None):
        return self.call("GET", "/__fake/requests" + (f"?path={path}" if path else ""))

    def clear_requests(self):
        return self.call("DELETE", "/__fake/requests")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def compile_binary(out, flags):
    """Starts compiling the server with extra -D flags (under `make
    SANITIZE=1 test`, with the same sanitizers as the binary under test)."""
    if os.environ.get("SANITIZE") == "1":
        cc = ["clang", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
              "-fno-sanitize-recover=undefined"]
    else:
        cc = [os.environ.get("CC", "gcc"), "-O1"]
    cmd = (cc + ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-DCALID_MCP_MAIN"] + flags
           + ["-o", out, "calid_mcp.c", os.path.join("port", "posix.c"), "-lbearssl", "-lpthread"])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def setup():
    global FAKE, CTL, TABLE, BUILD_DIR, TTL_BIN, SHORT_BIN
    H.ensure_certs()
    BUILD_DIR = tempfile.mkdtemp(prefix="calid_hardening_")
    TTL_BIN = os.path.join(BUILD_DIR, "calid_mcp_ttl")
    SHORT_BIN = os.path.join(BUILD_DIR, "calid_mcp_short")
    builds = [(TTL_BIN, compile_binary(TTL_BIN, FLAGS_TTL)), (SHORT_BIN, compile_binary(SHORT_BIN, FLAGS_SHORT))]
    FAKE = start(H.FakeCalid())
    CTL = Control(FAKE)
    TABLE = start(H.Server(*FAKE.server_flags()))
    for out, p in builds:
        _, err = p.communicate(timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"building {out} failed: {err.decode(errors='replace')[-1500:]}")


def teardown():
    for p in reversed(STARTED):
        try:
            p.close()
        except Exception:
            pass
    if CTL is not None:
        CTL.close()
    if BUILD_DIR:
        shutil.rmtree(BUILD_DIR, ignore_errors=True)


def start(proc):
    STARTED.append(proc)
    return proc.start()


def stop(proc):
    proc.close()
    if proc in STARTED:
        STARTED.remove(proc)


class AddrServer(H.Server):
    """A server listening on HOST:PORT for any host (e.g. 0.0.0.0); the
    harness's Server always listens on 127.0.0.1. Reached through 127.0.0.1."""

    def __init__(self, host, *flags, **kw):
        super().__init__(*flags, listen=False, **kw)
        self.host = host

    def start(self):
        for _attempt in range(5):
            self.port = H.free_port()
            args = [self.binary, "--listen", f"{self.host}:{self.port}"] + self.flags
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=err, env=H.clean_env(self.env), cwd=ROOT)
            if H.wait_listening(self.port, self.proc):
                return self
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"server did not listen: {self.stderr_text()}")
            if "in use" not in self.stderr_text().lower():
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.stderr_text()}")
        raise RuntimeError("no free port for the server")


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def rpc(method, id=1, params=None):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def init_params(version="2025-03-26"):
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "hardening", "version": "1.0.0"}}


def healthz(port):
    r = H.get(port, "/healthz")
    assert r.status == 200, f"/healthz: {r.status} {r.text[:200]}"
    return r.json()


def wait_healthz(port, key, want, deadline_s=8.0):
    """Polls /healthz until j[key] == want (the connection asking counts
    itself); returns the last document."""
    end = time.monotonic() + deadline_s
    while True:
        j = healthz(port)
        if j.get(key) == want or time.monotonic() > end:
            return j
        time.sleep(0.05)


def delete_session(port, sid, token=TOKEN):
    return H.get(port, "/mcp", method="DELETE",
                 headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {token}"})


OPENED = []                 # (port, session id, token) of every session open_session() opened


def open_session(port, version="2025-11-25", token=TOKEN):
    sid = H.initialize(port, token=token, version=version)
    OPENED.append((port, sid, token))
    return sid


def end_opened_sessions(port):
    """Ends the sessions open_session() opened on port (a test that failed
    half-way may have left some); already ended ones answer 404."""
    for p, sid, token in [o for o in OPENED if o[0] == port]:
        delete_session(p, sid, token=token)
        OPENED.remove((p, sid, token))


def tool_result(r, name):
    assert r.status == 200, f"{name}: HTTP {r.status}: {r.text[:300]}"
    msg = r.json()
    assert "result" in msg, f"{name}: JSON-RPC error instead of a tool result: {r.text[:300]}"
    res = msg["result"]
    assert isinstance(res.get("content"), list) and res["content"] and res["content"][0].get("type") == "text", res
    assert isinstance(res.get("isError"), bool), res
    return res


def modern_call(port, name="get_users_me", args=None, token=TOKEN, id=1):
    return H.modern_post(port, "tools/call", {"name": name, "arguments": args or {}}, id=id, token=token)


def call_ok(port, name="get_users_me", args=None, token=TOKEN):
    res = tool_result(modern_call(port, name, args, token), name)
    text = res["content"][0]["text"]
    assert res["isError"] is False, f"{name}: expected success, got an error: {text[:300]}"
    return json.loads(text)


def tools_list_ok(port, id="tl"):
    r = H.modern_post(port, "tools/list", id=id)
    assert r.status == 200, f"tools/list: {r.status} {r.text[:200]}"
    n = len(r.json()["result"]["tools"])
    assert n == 57, f"tools/list named {n} tools"


# ---------------------------------------------------------------------------
# The bad-input table
# ---------------------------------------------------------------------------

class Case:
    """One bad input and its documented answer.

    send(port) -> Response. status: the HTTP status; code: the JSON-RPC error
    code (None: the answer is checked by `check` instead); words: each a
    string, or a tuple of alternatives, that the error message must contain
    (case-insensitive); closes: the server must close the connection after
    answering; id: the id the error must carry (ANY to skip);
    check(resp) -> list of problems, for answers that are not one error.
    """

    def __init__(self, name, send, status, code=None, words=(), closes=False, id=ANY, check=None,
                 session_ok=False):
        self.name, self.send, self.status, self.code = name, send, status, code
        self.words, self.closes, self.id, self.check = list(words), closes, id, check
        self.session_ok = session_ok


def raw_send(data):
    """A runner sending raw bytes on a fresh connection; notes whether the
    server closed the connection after its answer."""
    def send(port):
        with Conn(port) as c:
            c.send(data)
            r = c.read_response()
            r.closed = c.closed_by_peer(timeout=5)
            return r
    return send


def post_send(body, headers=None, token=TOKEN):
    def send(port):
        return H.post_json(port, body, headers=headers, token=token)
    return send


def session_send(sid, body, token=TOKEN, version=None, headers=None):
    def send(port):
        return H.session_post(port, sid, body, token=token, version=version, headers=headers)
    return send


def modern_send(method, params=None, id=1, headers=None, body=None, version=H.MODERN, header_version=None):
    def send(port):
        return H.modern_post(port, method, params, id=id, headers=headers, body=body, version=version,
                             header_version=header_version)
    return send


def judge(case, r):
    """The problems with answer r for case (empty when it is as documented)."""
    problems = []
    if r.status != case.status:
        problems.append(f"HTTP {r.status}, expected {case.status}")
    if case.closes and not getattr(r, "closed", False):
        problems.append("connection left open (expected close)")
    if "mcp-session-id" in r.headers and not case.session_ok:
        problems.append(f"opened a session ({r.headers['mcp-session-id']})")
    if case.code is not None:
        try:
            msg = r.json()
        except AssertionError as e:
            return problems + [str(e)]
        err = msg.get("error") if isinstance(msg, dict) else None
        if not isinstance(err, dict):
            return problems + [f"no JSON-RPC error in {r.text[:200]!r}"]
        if err.get("code") != case.code:
            problems.append(f"code {err.get('code')}, expected {case.code}")
        text = str(err.get("message", ""))
        for w in case.words:
            alts = w if isinstance(w, tuple) else (w,)
            if not any(a.lower() in text.lower() for a in alts):
                problems.append(f"message {text!r} does not name {' or '.join(map(repr, alts))}")
        if case.id is not ANY and msg.get("id", "<absent>") != case.id:
            problems.append(f"id {msg.get('id', '<absent>')!r}, expected {case.id!r}")
    if case.check:
        problems += case.check(r)
    return problems


def run_cases(port, cases):
    """Runs every case; fails with one line per case answered otherwise."""
    bad = []
    for case in cases:
        CASES["run"] += 1
        try:
            r = case.send(port)
        except (H.ConnectionClosed, OSError) as e:
            bad.append(f"{case.name}: no answer ({type(e).__name__}: {e}); expected HTTP {case.status}"
                       f"{'' if case.code is None else f' code {case.code}'}")
            continue
        problems = judge(case, r)
        sid = r.headers.get("mcp-session-id")
        if sid:    # end every session a case opened, rightly or not, so that none lingers
            delete_session(port, sid)
        if problems:
            bad.append(f"{case.name}: " + "; ".join(problems) + f" -- got {r.status} {r.text[:160]!r}")
    CASES["failed"] += len(bad)
    assert not bad, f"{len(bad)} of {len(cases)} cases answered otherwise than documented:\n    " + \
        "\n    ".join(bad)


def P():
    return TABLE.port


def mcp_head(extra=()):
    return [("Content-Type", "application/json"), ("Authorization", f"Bearer {TOKEN}")] + list(extra)


PING = json.dumps(rpc("ping", 1)).encode()


def test_bad_input_request_lines():
    host = f"Host: 127.0.0.1:{P()}\r\n".encode()
    lines = [
        ("only a method", b"GET\r\n", 400, "malformed request"),
        ("no HTTP version", b"GET /healthz\r\n", 400, "malformed request"),
        ("two spaces before the target", b"GET  /healthz HTTP/1.1\r\n", 400, "request target"),
        ("tab as separator", b"GET\t/healthz HTTP/1.1\r\n", 400, "request line"),
        ("no method", b" /healthz HTTP/1.1\r\n", 400, "request line"),
        ("NUL in the method", b"G\x00T /healthz HTTP/1.1\r\n", 400, "request line"),
        ("( in the method", b"GE(T /healthz HTTP/1.1\r\n", 400, "request line"),
        ("control byte in the target", b"GET /heal\x01thz HTTP/1.1\r\n", 400, "request target"),
        ("DEL in the target", b"GET /heal\x7fthz HTTP/1.1\r\n", 400, "request target"),
        ("words after the version", b"GET /healthz HTTP/1.1 extra\r\n", 400, "request line"),
        ("lower-case http", b"GET /healthz http/1.1\r\n", 400, "HTTP version"),
        ("HTTPS/1.1 as version", b"POST /mcp HTTPS/1.1\r\n", 400, "HTTP version"),
        ("two-digit minor version", b"GET /healthz HTTP/1.10\r\n", 400, "request line"),
        ("bare CR ends the line", b"GET /healthz HTTP/1.1\r", 400, "request line"),
        ("HTTP/2.0", b"GET /healthz HTTP/2.0\r\n", 505, "HTTP/1.x"),
        ("HTTP/0.9", b"GET /healthz HTTP/0.9\r\n", 505, "HTTP/1.x"),
        ("HTTP/9", b"POST /mcp HTTP/9\r\n", 505, "HTTP/1.x"),
    ]
    cases = [Case(f"request line: {name} ({line!r})", raw_send(line + host + b"\r\n"), status, -32000,
                  [word], closes=True, id=None) for name, line, status, word in lines]
    run_cases(P(), cases)


def test_bad_input_header_fields():
    def get_with(headers_bytes):
        return raw_send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers_bytes + b"\r\n")
    many33 = b"".join(b"X-H%d: v\r\n" % i for i in range(32))      # + Host = 33
    many200 = b"".join(b"X-%d: v\r\n" % i for i in range(200))
    cases = [
        Case("one header of 9000 bytes", get_with(b"X-Big: " + b"a" * 9000 + b"\r\n"), 431, -32000,
             ["CM_MAX_HEADER_BYTES"], closes=True),
        Case("many headers, 12000 bytes in all", get_with(b"".join(b"X-P%d: %s\r\n" % (i, b"p" * 100)
                                                                    for i in range(110))),
             431, -32000, ["CM_MAX_HEADER_BYTES"], closes=True),
        Case("a head that never ends", raw_send(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"b" * 9000), 431, -32000,
             ["CM_MAX_HEADER_BYTES"], closes=True),
        Case("33 header fields", get_with(many33), 431, -32000, ["CM_MAX_HEADERS"], closes=True),
        Case("201 header fields", get_with(many200), 431, -32000, ["CM_MAX_HEADERS"], closes=True),
        Case("header without a colon", get_with(b"NoColon\r\n"), 400, -32000, ["header"], closes=True),
        Case("space in a header name", get_with(b"Bad Name: x\r\n"), 400, -32000, ["header field name"],
             closes=True),
        Case("empty header name", get_with(b": x\r\n"), 400, -32000, ["header field name"], closes=True),
        Case("space before the colon", get_with(b"X-A : x\r\n"), 400, -32000, ["header field name"],
             closes=True),
        Case("obsolete line folding", get_with(b"X-A: x\r\n  folded\r\n"), 400, -32000, ["folding"],
             closes=True),
        Case("control byte in a value", get_with(b"X-A: a\x01b\r\n"), 400, -32000, ["control character"],
             closes=True),
        Case("NUL in a value", get_with(b"X-A: a\x00b\r\n"), 400, -32000, ["control character"], closes=True),
        Case("DEL in a value", get_with(b"X-A: a\x7fb\r\n"), 400, -32000, ["control character"], closes=True),
        Case("bare CR inside a header line", get_with(b"X-A: a\rb\r\n"), 400, -32000, ["header line"],
             closes=True),
        Case("unknown Expect", get_with(b"Expect: 200-ok\r\n"), 417, -32000, ["Expect"], closes=True),
    ]
    run_cases(P(), cases)


def test_bad_input_body_framing():
    port = P()
    sid = open_session(port)

    def post(extra, body=b"", version="HTTP/1.1"):
        head = build_request("POST", "/mcp", mcp_head(list(extra) + [("Mcp-Session-Id", sid)]), b"", port=port,
                             version=version, content_length=False)
        return raw_send(head + body)

    chunked = [("Transfer-Encoding", "chunked")]
    both = "both Content-Length and Transfer-Encoding"
    cases = [
        Case("Content-Length then Transfer-Encoding",
             post([("Content-Length", str(len(PING)))] + chunked, b"%x\r\n%s\r\n0\r\n\r\n" % (len(PING), PING)),
             400, -32000, [both], closes=True),
        Case("Transfer-Encoding then Content-Length",
             post(chunked + [("Content-Length", "5")], b"5\r\nhello\r\n0\r\n\r\n"), 400, -32000, [both],
             closes=True),
        Case("Transfer-Encoding twice", post(chunked + chunked, b"0\r\n\r\n"), 400, -32000, ["repeated"],
             closes=True),
        Case("Transfer-Encoding: gzip", post([("Transfer-Encoding", "gzip")], b""), 501, -32000,
             ["Transfer-Encoding"], closes=True),
        Case("Transfer-Encoding: chunked, gzip", post([("Transfer-Encoding", "chunked, gzip")], b"0\r\n\r\n"),
             501, -32000, ["Transfer-Encoding"], closes=True),
        Case("chunked in HTTP/1.0", post(chunked, b"0\r\n\r\n", version="HTTP/1.0"), 400, -32000,
             ["HTTP/1.0"], closes=True),
        Case("Content-Length: -1", post([("Content-Length", "-1")], b"{}"), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("Content-Length: -0", post([("Content-Length", "-0")], b""), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("Content-Length of 20 digits", post([("Content-Length", "9" * 20)], b"{}"), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("Content-Length of 11 digits", post([("Content-Length", "12345678901")], b"{}"), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("Content-Length: 9999999999 (huge, 10 digits)", post([("Content-Length", "9999999999")]), 413,
             -32000, ["CM_MAX_BODY_BYTES"], closes=True),
        Case("Content-Length: 2147483648", post([("Content-Length", "2147483648")]), 413, -32000,
             ["CM_MAX_BODY_BYTES"], closes=True),
        Case("Content-Length: 0x10", post([("Content-Length", "0x10")], b"{}"), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("Content-Length list '2, 2'", post([("Content-Length", "2, 2")], b"{}"), 400, -32000,
             ["invalid Content-Length"], closes=True),
        Case("two different Content-Length", post([("Content-Length", str(len(PING))),
                                                   ("Content-Length", str(len(PING) - 1))], PING),
             400, -32000, ["conflicting Content-Length"], closes=True),
        Case("three Content-Length, the last different",
             post([("Content-Length", "2"), ("Content-Length", "2"), ("Content-Length", "3")], b"{} "),
             400, -32000, ["conflicting Content-Length"], closes=True),
        Case("chunk size not hex", post(chunked, b"zz\r\n{}\r\n0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("negative chunk size", post(chunked, b"-2\r\n{}\r\n0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("empty chunk size line", post(chunked, b"\r\n{}\r\n0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("chunk size of 9 digits", post(chunked, b"123456789\r\n{}\r\n0\r\n\r\n"), 400, -32000,
             ["chunked"], closes=True),
        Case("chunk size of 9 digits with leading zeros", post(chunked, b"000000002\r\n{}\r\n0\r\n\r\n"), 400,
             -32000, ["chunked"], closes=True),
        Case("junk after the chunk size", post(chunked, b"2@\r\n{}\r\n0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("no CRLF after chunk data", post(chunked, b"2\r\n{}XX0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("last chunk right after data", post(chunked, b"2\r\n{}0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("CR but no LF after chunk data", post(chunked, b"2\r\n{}\rX0\r\n\r\n"), 400, -32000, ["chunked"],
             closes=True),
        Case("Content-Length 65537 (over the limit)", post([("Content-Length", "65537")]), 413, -32000,
             ["CM_MAX_BODY_BYTES"], closes=True),
        Case("Content-Length 65537 with Expect: 100-continue (no 100 first)",
             post([("Content-Length", "65537"), ("Expect", "100-continue")]), 413, -32000,
             ["CM_MAX_BODY_BYTES"], closes=True),
        Case("chunked: 0x8000 bytes, then a chunk of 0x8001", post(chunked, b"8000\r\n" + b" " * 0x8000 +
                                                                   b"\r\n8001\r\n"),
             413, -32000, ["CM_MAX_BODY_BYTES"], closes=True),
        Case("chunked: 65 chunks of 1 KiB", post(chunked, b"".join(b"400\r\n" + b" " * 1024 + b"\r\n"
                                                                   for _ in range(64)) + b"400\r\n"),
             413, -32000, ["CM_MAX_BODY_BYTES"], closes=True),
    ]
    run_cases(port, cases)
    delete_session(port, sid)


def test_bad_input_invalid_utf8():
    port = P()
    sid = open_session(port)
    prefix = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"ok '
    seqs = [
        ("lone continuation 0x80", b"\x80"),
        ("lone continuation 0xbf", b"\xbf"),
        ("overlong 2-byte '/'", b"\xc0\xaf"),
        ("overlong 2-byte 0xc1", b"\xc1\xbf"),
        ("overlong 3-byte", b"\xe0\x80\xaf"),
        ("overlong 4-byte", b"\xf0\x80\x80\xaf"),
        ("high surrogate U+D800", b"\xed\xa0\x80"),
        ("low surrogate U+DFFF", b"\xed\xbf\xbf"),
        ("truncated 2-byte", b"\xc3"),
        ("truncated 3-byte", b"\xe2\x82"),
        ("truncated 4-byte", b"\xf0\x9f\x98"),
        ("above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("lead byte 0xf5", b"\xf5\x80\x80\x80"),
        ("byte 0xfe", b"\xfe"),
        ("byte 0xff", b"\xff"),
    ]
    cases = []
    for name, seq in seqs:
        body = prefix + seq + b' end"}}'
        cases.append(Case(f"invalid UTF-8 in a value: {name}", session_send(sid, body), 400, -32700,
                          ["Parse error", "UTF-8", f"at byte {len(prefix)}"], id=None))
    key = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"k'
    cases.append(Case("invalid UTF-8 in a key", session_send(sid, key + b'\xc0\x80":1}}'), 400, -32700,
                      ["UTF-8", f"at byte {len(key)}"], id=None))
    cut = prefix + b"\xe2"
    cases.append(Case("body ends inside a UTF-8 sequence", session_send(sid, cut), 400, -32700,
                      ["UTF-8", f"at byte {len(prefix)}"], id=None))
    meth = b'{"jsonrpc":"2.0","id":1,"method":"pi'
    cases.append(Case("invalid UTF-8 in the method name", session_send(sid, meth + b'\xedng"}'), 400, -32700,
                      ["UTF-8", f"at byte {len(meth)}"], id=None))
    cases.append(Case("invalid UTF-8 before initialize (no session)",
                      post_send(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"\xff"}}'),
                      400, -32700, ["UTF-8"], id=None))
    run_cases(port, cases)
    delete_session(port, sid)


def test_bad_input_invalid_json():
    port = P()
    sid = open_session(port)
    bodies = [
        ("trailing comma in an object", b'{"jsonrpc":"2.0","id":1,"method":"ping",}', "expected a string key", 40),
        ("trailing comma in an array", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":[1,]}}',
         "invalid", 57),
        ("single quotes", b"{'jsonrpc':'2.0','id':1,'method':'ping'}", "expected a string key", 1),
        ("unquoted key", b'{jsonrpc:"2.0","id":1,"method":"ping"}', "expected a string key", 1),
        ("NaN", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":NaN}}', "invalid", 54),
        ("Infinity", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":-Infinity}}', "invalid", 54),
        ("leading zero", b'{"jsonrpc":"2.0","id":01,"method":"ping"}', "expected ','", 23),
        ("plus sign", b'{"jsonrpc":"2.0","id":+1,"method":"ping"}', "invalid number", 22),
        ("number ending in a dot", b'{"jsonrpc":"2.0","id":1.,"method":"ping"}', "invalid number", 22),
        ("number starting with a dot", b'{"jsonrpc":"2.0","id":.5,"method":"ping"}', "invalid number", 22),
        ("exponent without digits", b'{"jsonrpc":"2.0","id":1e,"method":"ping"}', "invalid number", 22),
        ("hex number", b'{"jsonrpc":"2.0","id":0x1F,"method":"ping"}', "expected ','", 23),
        ("truncated literal", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":tru}}', "invalid literal", 54),
        ("capitalised literal", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":True}}', "invalid", 54),
        ("unterminated string", b'{"jsonrpc":"2.0","id":1,"method":"ping', "unterminated string", None),
        ("unterminated object", b'{"jsonrpc":"2.0","id":1,"method":"ping"', "expected ','", None),
        ("unterminated array", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}', "expected ','", None),
        ("missing colon", b'{"jsonrpc" "2.0","id":1,"method":"ping"}', "expected ':'", 11),
        ("missing comma", b'{"jsonrpc":"2.0" "id":1,"method":"ping"}', "expected ','", 17),
        ("two values", b'{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}',
         "extra data", 41),
        ("raw tab inside a string", b'{"jsonrpc":"2.0","id":1,"method":"pi\tng"}', "control character", 36),
        ("raw newline inside a string", b'{"jsonrpc":"2.0","id":1,"method":"pi\nng"}', "control character", 36),
        ("bad escape", b'{"jsonrpc":"2.0","id":1,"method":"pi\\xng"}', "bad escape", None),
        ("bad \\u escape", b'{"jsonrpc":"2.0","id":1,"method":"pi\\u12G4ng"}', "\\u escape", None),
        ("short \\u escape at the end", b'{"jsonrpc":"2.0","id":1,"method":"\\u12', "\\u escape", None),
        ("a comment", b'{"jsonrpc":"2.0","id":1,"method":"ping"} // hi', "extra data", 41),
        ("a leading comment", b'/* hi */ {"jsonrpc":"2.0","id":1,"method":"ping"}', "invalid", 0),
        ("byte order mark", b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}', "invalid", 0),
        ("empty body", b"", "unexpected end of input", 0),
        ("only white space", b" \r\n\t ", "unexpected end of input", 5),
        ("plain text", b"ping", "invalid", 0),
        ("a lone closing brace", b"}", "invalid", 0),
        ("NUL byte after the value", b'{"jsonrpc":"2.0","id":1,"method":"ping"}\x00', "extra data", 40),
    ]
    cases = []
    for name, body, why, at in bodies:
        words = ["Parse error", why] + ([f"at byte {at}"] if at is not None else ["at byte"])
        cases.append(Case(f"invalid JSON: {name}", session_send(sid, body), 400, -32700, words, id=None))
    # more tokens than CM_JSON_TOKENS (1024), and nesting deeper than the checker's 64 levels
    cases += [
        Case("an array of 2000 numbers (> CM_JSON_TOKENS tokens)",
             session_send(sid, "[" + ",".join(["1"] * 2000) + "]"), 400, -32600, ["CM_JSON_TOKENS"], id=None),
        Case("a request whose params hold 1100 strings",
             session_send(sid, json.dumps(rpc("ping", 1, {"a": ["x"] * 1100}))), 400, -32600,
             ["CM_JSON_TOKENS"], id=None),
        Case("a batch of 600 small requests (> CM_JSON_TOKENS tokens)",
             session_send(sid, json.dumps([{"jsonrpc": "2.0"}] * 600)), 400, -32600, ["CM_JSON_TOKENS"], id=None),
        Case("arrays nested 100 deep", session_send(sid, "[" * 100 + "]" * 100), 400, -32700, ["nesting"],
             id=None),
        Case("objects nested 100 deep in params",
             session_send(sid, '{"jsonrpc":"2.0","id":1,"method":"ping","params":' + '{"a":' * 100 + "1"
                          + "}" * 100 + "}"), 400, -32700, ["nesting"], id=None),
        Case("arrays nested 5000 deep", session_send(sid, "[" * 5000 + "]" * 5000), 400, -32700, ["nesting"],
             id=None),
        Case("arrays nested 5000 deep, unclosed", session_send(sid, "[" * 5000), 400, -32700, ["nesting"],
             id=None),
    ]
    # valid JSON that is not a JSON-RPC message
    for body in ["1", '"ping"', "null", "true", "-2.5e3"]:
        cases.append(Case(f"not a message: {body}", session_send(sid, body), 400, -32600, ["Invalid Request"],
                          id=None))
    run_cases(port, cases)
    delete_session(port, sid)


# Wrong JSON types for a field: name -> value
WRONG = {"string": "x", "integer": 5, "number": 2.5, "true": True, "false": False, "null": None,
         "array": ["x"], "object": {"a": 1}}


def _wrong(*skip):
    return [(k, v) for k, v in WRONG.items() if k not in skip]


def test_bad_input_initialize_fields():
    cases = []
    for field in ("protocolVersion", "capabilities", "clientInfo"):
        skip = ("string",) if field == "protocolVersion" else ("object",)
        for tname, value in _wrong(*skip):
            params = init_params()
            params[field] = value
            cases.append(Case(f"initialize: {field} is {tname} ({json.dumps(value)})",
                              post_send(rpc("initialize", "i-1", params)), 200, -32602, [field], id="i-1"))
    for tname, value in _wrong("object"):
        cases.append(Case(f"initialize: params is {tname} ({json.dumps(value)})",
                          post_send(rpc("initialize", "i-2", value) if value is not None else
                                    {"jsonrpc": "2.0", "id": "i-2", "method": "initialize", "params": None}),
                          200, -32602, ["params"], id="i-2"))
    cases.append(Case("initialize: params missing", post_send(rpc("initialize", "i-3")), 200, -32602, ["params"],
                      id="i-3"))
    missing = init_params()
    del missing["protocolVersion"]
    cases.append(Case("initialize: protocolVersion missing", post_send(rpc("initialize", "i-4", missing)), 200,
                      -32602, ["protocolVersion"], id="i-4"))
    cases.append(Case("initialize as a notification (no id)",
                      post_send({"jsonrpc": "2.0", "method": "initialize", "params": init_params()}), 200, -32600,
                      ["id"]))
    for name, jv in [("\"1.0\"", "1.0"), ("2.0 (a number)", 2.0), ("null", None)]:
        cases.append(Case(f"initialize: jsonrpc is {name}",
                          post_send({"jsonrpc": jv, "id": "i-5", "method": "initialize", "params": init_params()}),
                          200, -32600, ["jsonrpc"], id="i-5"))
    cases.append(Case("initialize: jsonrpc missing",
                      post_send({"id": "i-6", "method": "initialize", "params": init_params()}), 200, -32600,
                      ["jsonrpc"], id="i-6"))
    run_cases(P(), cases)


def test_bad_input_tools_call_fields():
    port = P()
    sid = open_session(port)
    cases = []
    for tname, value in _wrong("string"):
        cases.append(Case(f"tools/call: name is {tname} ({json.dumps(value)})",
                          session_send(sid, rpc("tools/call", 11, {"name": value, "arguments": {}})), 200, -32602,
                          ["name"], id=11))
    cases.append(Case("tools/call: name missing", session_send(sid, rpc("tools/call", 12, {"arguments": {}})), 200,
                      -32602, ["name"], id=12))
    cases.append(Case("tools/call: name of an unknown tool",
                      session_send(sid, rpc("tools/call", 13, {"name": "rm_rf", "arguments": {}})), 200, -32602,
                      ["Unknown tool", "rm_rf"], id=13))
    cases.append(Case("tools/call: name 200 characters long",
                      session_send(sid, rpc("tools/call", 14, {"name": "n" * 200, "arguments": {}})), 200, -32602,
                      ["name"], id=14))
    for tname, value in _wrong("object", "null"):
        cases.append(Case(f"tools/call: arguments is {tname} ({json.dumps(value)})",
                          session_send(sid, rpc("tools/call", 15, {"name": "get_users_me", "arguments": value})),
                          200, -32602, ["arguments", "object"], id=15))
    for tname, value in _wrong("object"):
        params = value
        cases.append(Case(f"tools/call: params is {tname} ({json.dumps(value)})",
                          session_send(sid, {"jsonrpc": "2.0", "id": 16, "method": "tools/call", "params": params}),
                          200, -32602, ["params"], id=16))
    cases.append(Case("tools/call: params missing", session_send(sid, rpc("tools/call", 17)), 200, -32602, ["name"],
                      id=17))

    def is_ok_result(r):
        res = r.json().get("result", {})
        return [] if res.get("isError") is False else [f"expected a successful tool result: {r.text[:200]}"]
    cases.append(Case("tools/call: arguments null is taken as absent",
                      session_send(sid, rpc("tools/call", 18, {"name": "get_users_me", "arguments": None})), 200,
                      check=is_ok_result))
    # the same in the 2026-07-28 era
    for tname, value in _wrong("object", "null"):
        cases.append(Case(f"2026-07-28 tools/call: arguments is {tname} ({json.dumps(value)})",
                          modern_send("tools/call", {"name": "get_users_me", "arguments": value}, id=21), 200, -32602,
                          ["arguments", "object"], id=21))
    for tname, value in [("integer", 5), ("null", None), ("array", ["get_users_me"])]:
        cases.append(Case(f"2026-07-28 tools/call: name is {tname} (no Mcp-Name can match)",
                          modern_send("tools/call", {"name": value, "arguments": {}}, id=22), 400, -32020,
                          ["Mcp-Name"], id=22))
    run_cases(port, cases)
    delete_session(port, sid)


# ids as raw JSON: strings and integers are echoed exactly; every other type is -32600
IDS_OK = ['"s-1"', '""', "7", "-7", "0", "9007199254740993"]
IDS_BAD = ["1.5", "1e3", "-2.5E-3", "1.0", "true", "false", "null", '{"a":1}', "[1]", "[]"]


def _echo_check(raw):
    def check(r):
        m = re.search(r'"id":(\S+?),"(?:result|error)"', r.text)
        if not m or m.group(1) != raw:
            return [f"id not echoed exactly: sent {raw}, got {m and m.group(1)}"]
        if "result" not in r.json():
            return [f"expected a result: {r.text[:200]}"]
        return []
    return check


def test_bad_input_ids_of_every_type_in_both_eras():
    port = P()
    sid = open_session(port)
    ping = '{"jsonrpc":"2.0","id":%s,"method":"ping"}'
    init = ('{"jsonrpc":"2.0","id":%s,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
            '"capabilities":{},"clientInfo":{"name":"ids","version":"1"}}}')
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
    modern = '{"jsonrpc":"2.0","id":%s,"method":"tools/list","params":{' + meta + '}}'
    cases = []
    for raw in IDS_OK:
        cases.append(Case(f"session era ping, id {raw}", session_send(sid, ping % raw), 200, check=_echo_check(raw)))
        cases.append(Case(f"session era initialize, id {raw}", post_send(init % raw), 200, check=_echo_check(raw),
                          session_ok=True))
        cases.append(Case(f"2026-07-28 tools/list, id {raw}", modern_send("tools/list", body=modern % raw), 200,
                          check=_echo_check(raw)))
    for raw in IDS_BAD:
        want = ["id", ("string or an integer", "string or integer")]
        cases.append(Case(f"session era ping, id {raw}", session_send(sid, ping % raw), 200, -32600, want))
        cases.append(Case(f"session era initialize, id {raw}", post_send(init % raw), 200, -32600, want))
        cases.append(Case(f"2026-07-28 tools/list, id {raw}", modern_send("tools/list", body=modern % raw), 200,
                          -32600, want))
    # run_cases ends the sessions the good initialize cases open
    run_cases(port, cases)
    delete_session(port, sid)


def _result_text_check(*words):
    def check(r):
        try:
            res = r.json().get("result", {})
            text = res["content"][0]["text"]
        except (AssertionError, KeyError, IndexError, TypeError):
            return [f"expected a tool result: {r.text[:200]}"]
        return [f"the result does not say {w!r}: {text[:200]}" for w in words if w not in text]
    return check


def test_bad_input_parser_differentials():
    """Issue 16, item 4: what a first-wins and a last-wins JSON reader would
    see differently is refused: duplicate keys anywhere, control characters
    in method, tool name, resource URI and keys; an escaped key is the key it
    spells (a duplicate of the plain one, and checked against the schema)."""
    port = P()
    sid = open_session(port)
    call = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":%s}'
    dup_name = call % ("31", '{"name":"delete_team","arguments":{"teamId":7},"name":"get_teams"}')
    dup_deep = call % ("32", '{"name":"get_booking","arguments":{"filters":[{"a":1,"a":2}]}}')
    dup_escaped = call % ("33", '{"name":"get_contact","arguments":{"contactId":1,"contact\\u0049d":2}}')
    nul_name = call % ("34", '{"name":"delete_team\\u0000-harmless","arguments":{"teamId":7}}')
    nul_key = call % ("35", '{"name":"get_users_me","arguments":{"a\\u0000":1}}')
    escaped_alone = call % ("36", '{"name":"get_booking_by_id","arguments":{"booking\\u0049d":[1]}}')
    escaped_name = call % ("37", '{"name":"get_\\u0075sers_me","arguments":{}}')
    nul_method = '{"jsonrpc":"2.0","id":38,"method":"tools/list\\u0000x"}'
    uri = '{"jsonrpc":"2.0","id":39,"method":"resources/read","params":{"uri":"cal://x\\u0001"}}'
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
    modern_nul = '{"jsonrpc":"2.0","id":40,"method":"tools/call","params":{"name":"delete_team\\u0000x","arguments":{"teamId":7},' + meta + '}}'
    modern_dup = '{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"get_users_me","arguments":{},' + meta + ',"name":"delete_team"}}'
    import base64
    nul_header = "=?base64?" + base64.b64encode(b"get_users_me\x00x").decode() + "?="
    cases = [
        Case("duplicate key name (first delete_team, last get_teams)", session_send(sid, dup_name), 400, -32600,
             ["name", "twice"], id=None),
        Case("duplicate key deep in the arguments", session_send(sid, dup_deep), 400, -32600, ['"a"', "twice"]),
        Case("escaped key duplicates the plain one", session_send(sid, dup_escaped), 400, -32600,
             ['"contactId"', "twice"]),
        Case("NUL in the tool name", session_send(sid, nul_name), 400, -32600, ["params.name", "control character"]),
        Case("NUL in an argument key", session_send(sid, nul_key), 400, -32600, ["key", "control character"]),
        Case("NUL in the method", session_send(sid, nul_method), 400, -32600, ["method", "control character"]),
        Case("control character in a resource URI", session_send(sid, uri), 400, -32600, ["params.uri"]),
        Case("an escaped key alone is checked against the schema", session_send(sid, escaped_alone), 200,
             check=_result_text_check("bookingId", "got array")),
        Case("an escaped tool name is the tool it spells", session_send(sid, escaped_name), 200,
             check=_result_text_check('"id"')),
        Case("2026-07-28: NUL in the tool name", modern_send("tools/call", body=modern_nul, id=40,
                                                              headers={"Mcp-Name": "delete_team"}),
             400, -32600, ["params.name"]),
        Case("2026-07-28: duplicate name in params", modern_send("tools/call", body=modern_dup, id=41,
                                                                  headers={"Mcp-Name": "get_users_me"}),
             400, -32600, ["name", "twice"]),
        Case("2026-07-28: a NUL in the decoded Mcp-Name does not hide a difference",
             modern_send("tools/call", {"name": "get_users_me", "arguments": {}}, id=42,
                         headers={"Mcp-Name": nul_header}), 400, -32020, ["Mcp-Name"]),
    ]
    run_cases(port, cases)
    delete_session(port, sid)


def _long_id_check(raw):
    def check(r):
        m = re.search(r'"id":(\S+?),"(?:result|error)"', r.text)
        if not m or m.group(1) != raw:
            return [f"id not echoed byte for byte: sent {len(raw)} bytes, got {m and m.group(1)[:60]!r}"]
        return []
    return check


LONG_IDS = ['"' + "i" * 76 + '"', '"' + "x" * 300 + '\\u00e9\\"' + '"', '"' + "L" * 5000 + '"', "7" * 78, "9" * 3000]


def test_long_ids_come_back_byte_for_byte():
    """Issue 16, item 5: tools/call ids of 78 bytes and more, string or
    number, in both eras, in a batch and over stdio, come back whole."""
    port = P()
    sid = open_session(port)
    sid_batch = open_session(port, version="2025-03-26")
    call = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"get_users_me","arguments":{}}}'
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
    modern = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"get_users_me","arguments":{},' + meta + '}}'
    cases = []
    for raw in LONG_IDS:
        cases.append(Case(f"session era tools/call, id of {len(raw)} bytes", session_send(sid, call % raw), 200,
                          check=_long_id_check(raw)))
        cases.append(Case(f"2026-07-28 tools/call, id of {len(raw)} bytes",
                          modern_send("tools/call", body=modern % raw, headers={"Mcp-Name": "get_users_me"}), 200,
                          check=_long_id_check(raw)))
        cases.append(Case(f"an error answer, id of {len(raw)} bytes",
                          session_send(sid, '{"jsonrpc":"2.0","id":%s,"method":"no/such"}' % raw), 200,
                          check=_long_id_check(raw)))

    def batch_check(r):
        got = re.findall(r'"id":(\S+?),"result"', r.text)
        want = [LONG_IDS[0], LONG_IDS[1], LONG_IDS[3]]
        return [] if sorted(got) == sorted(want) else [f"batch ids {[g[:20] for g in got]}"]
    batch = "[" + ",".join(call % raw for raw in (LONG_IDS[0], LONG_IDS[1], LONG_IDS[3])) + "]"
    cases.append(Case("2025-03-26 batch of three calls with long ids", session_send(sid_batch, batch), 200,
                      check=batch_check))
    run_cases(port, cases)
    delete_session(port, sid)
    delete_session(port, sid_batch)
    # stdio: one call and a batch
    lines = (call % LONG_IDS[2]) + "\n" + "[" + call % LONG_IDS[0] + "," + call % LONG_IDS[4] + "]\n"
    p = subprocess.run([H.BIN, "--stdio"] + FAKE.server_flags(), input=lines.encode(), capture_output=True,
                       timeout=30, env=H.clean_env({"CALID_API_KEY": TOKEN}), cwd=ROOT)
    out = p.stdout.decode()
    got = re.findall(r'"id":(\S+?),"result"', out)
    assert sorted(got) == sorted([LONG_IDS[2], LONG_IDS[0], LONG_IDS[4]]), \
        f"stdio ids: {[g[:20] for g in got]}; stderr {p.stderr.decode()[-300:]}"


def test_stdio_refuses_nul_bytes_and_duplicate_keys():
    """stdio reads the same rules: a raw NUL inside a line is a parse error
    (not the end of the line), a duplicate key is -32600 naming it."""
    lines = (b'{"jsonrpc":"2.0","id":1,"method":"ping"}\x00{"jsonrpc":"2.0","id":2,"method":"ping"}\n'
             b'{"jsonrpc":"2.0","id":3,"method":"ping","id":4}\n'
             b'{"jsonrpc":"2.0","id":5,"method":"ping"}\n')
    p = subprocess.run([H.BIN, "--stdio"] + FAKE.server_flags(), input=lines, capture_output=True, timeout=30,
                       env=H.clean_env({"CALID_API_KEY": TOKEN}), cwd=ROOT)
    out = [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]
    assert len(out) == 3, f"expected 3 answers: {out}"
    assert out[0]["error"]["code"] == -32700 and "NUL" in out[0]["error"]["message"], out[0]
    assert out[1]["error"]["code"] == -32600 and '"id" appears twice' in out[1]["error"]["message"], out[1]
    assert out[2].get("id") == 5 and "result" in out[2], out[2]


def test_bad_input_chunk_lines_and_healthz_host():
    """Issue 16, item 6: a chunk-size like 0x5 and a bare CR in a chunk line
    are 400; /healthz has the Host and Origin checks of /mcp."""
    port = P()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    body = json.dumps(rpc("ping", 1)).encode()
    hexlen = b"%x" % len(body)
    cases = [
        Case("chunk size 0x.. (nginx: 400)", raw_send(head + b"0x" + hexlen + b"\r\n" + body + b"\r\n0\r\n\r\n"), 400,
             -32000, ["chunked"], closes=True),
        Case("bare CR in a chunk extension", raw_send(head + hexlen + b";a\rb\r\n" + body + b"\r\n0\r\n\r\n"), 400,
             -32000, ["chunked"], closes=True),
        Case("bare CR in a trailer", raw_send(head + hexlen + b"\r\n" + body + b"\r\n0\r\nX: a\rb\r\n\r\n"), 400,
             -32000, ["chunked"], closes=True),
        Case("/healthz with a foreign Host (DNS rebinding)",
             raw_send(b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"), 403, -32000, ["Host"]),
        Case("/healthz with a foreign Origin",
             raw_send(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n".encode()),
             403, -32000, ["Origin"]),
    ]
    run_cases(port, cases)


def _batch_answers(r):
    if r.status != 200:
        return None, [f"HTTP {r.status}"]
    try:
        arr = r.json()
    except AssertionError as e:
        return None, [str(e)]
    if not isinstance(arr, list):
        return None, [f"expected a JSON array, got {r.text[:200]}"]
    return arr, []


def test_bad_input_mixed_batches():
    port = P()
    sid = open_session(port, version="2025-03-26")
    mixed = [
        rpc("ping", 1),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "resp-1", "result": {}},
        {"jsonrpc": "2.0", "id": "resp-2", "error": {"code": -1, "message": "client-side failure"}},
        42,
        "ping",
        None,
        [],
        {"id": 3, "method": "ping"},
        rpc("no/such/method", 4),
        {"jsonrpc": "2.0", "id": 5.5, "method": "ping"},
        rpc("tools/call", 6, {"name": "get_users_me", "arguments": {}}),
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": "x"},
        rpc("tools/list", 8),
    ]

    def check_mixed(r):
        arr, problems = _batch_answers(r)
        if arr is None:
            return problems
        by_id = {}
        nulls = []
        for a in arr:
            if not isinstance(a, dict) or a.get("jsonrpc") != "2.0":
                problems.append(f"not a JSON-RPC answer: {a!r:.100}")
                continue
            if a.get("id") is None:
                nulls.append(a)
            else:
                if json.dumps(a["id"]) in by_id:
                    problems.append(f"two answers for id {a['id']!r}")
                by_id[json.dumps(a["id"])] = a
        if len(arr) != 11:
            problems.append(f"{len(arr)} answers, expected 11 (8 requests or invalid elements with ids, "
                            f"4 invalid elements without; none for the notification and the 2 responses)")
        want = {"1": "result", "3": -32600, "4": -32601, "5.5": -32600, "6": "result", "7": -32602, "8": "result"}
        for k, w in want.items():
            a = by_id.get(k)
            if a is None:
                problems.append(f"no answer for id {k}")
            elif w == "result" and "result" not in a:
                problems.append(f"id {k}: expected a result, got {a}")
            elif w != "result" and a.get("error", {}).get("code") != w:
                problems.append(f"id {k}: expected error {w}, got {a}")
        for k in ('"resp-1"', '"resp-2"'):
            if k in by_id:
                problems.append(f"the response element {k} was answered")
        if len(nulls) != 4 or any(a.get("error", {}).get("code") != -32600 for a in nulls):
            problems.append(f"expected 4 answers with id null and code -32600, got {nulls}")
        if "6" in by_id and by_id["6"].get("result", {}).get("isError") is not False:
            problems.append(f"the tool call inside the batch failed: {by_id['6']}")
        if "8" in by_id and len(by_id["8"].get("result", {}).get("tools", [])) != 57:
            problems.append("tools/list inside the batch did not list 57 tools")
        return problems

    def check_all_invalid(r):
        arr, problems = _batch_answers(r)
        if arr is None:
            return problems
        if len(arr) != 3 or any(a.get("id") is not None or a.get("error", {}).get("code") != -32600 for a in arr):
            problems.append(f"expected 3 errors -32600 with id null, got {arr}")
        return problems

    def check_two_calls(r):
        arr, problems = _batch_answers(r)
        if arr is None:
            return problems
        got = sorted((a.get("id"), a.get("result", {}).get("isError")) for a in arr)
        if got != [("a", False), ("b", False)]:
            problems.append(f"expected two successful tool results a and b, got {arr}")
        return problems

    def check_202(r):
        return [] if not r.body else [f"202 with a body {r.text[:100]!r}"]

    sid_0618 = open_session(port, version="2025-06-18")
    sid_1105 = open_session(port, version="2024-11-05")
    with_envelope = H.modern_body("tools/list", id=2)
    cases = [
        Case("batch: requests, notification, responses and invalid elements", session_send(sid, mixed), 200,
             check=check_mixed),
        Case("batch: only notifications and responses", session_send(sid, [
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "r", "result": {}},
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}]), 202,
            check=check_202),
        Case("batch: only invalid elements", session_send(sid, [1, "x", {"foo": 1}]), 200, check=check_all_invalid),
        Case("batch: two tool calls", session_send(sid, [
            rpc("tools/call", "a", {"name": "get_users_me", "arguments": {}}),
            rpc("tools/call", "b", {"name": "get_teams", "arguments": {}})]), 200, check=check_two_calls),
        Case("batch: 17 messages", session_send(sid, [rpc("ping", i) for i in range(17)]), 400, -32600,
             ["1 to 16"], id=None),
        Case("batch: empty", session_send(sid, []), 400, -32600, ["1 to 16"], id=None),
        Case("batch: an element with the 2026-07-28 envelope", session_send(sid, [rpc("ping", 1), with_envelope]),
             400, -32600, ["2026-07-28"], id=None),
        Case("batch: in a 2025-06-18 session", session_send(sid_0618, [rpc("ping", 1)]), 400, -32600,
             ["2025-06-18"], id=None),
        Case("batch: in a 2024-11-05 session (allowed)", session_send(sid_1105, [rpc("ping", 1), rpc("ping", 2)]),
             200, check=lambda r: [] if sorted(a["id"] for a in r.json()) == [1, 2] else [r.text[:200]]),
        Case("batch: without a session", post_send([rpc("ping", 1)]), 400, -32000, ["Mcp-Session-Id"], id=None),
    ]
    run_cases(port, cases)
    for s in (sid, sid_0618, sid_1105):
        delete_session(port, s)


def test_bad_input_methods_sessions_and_versions():
    port = P()
    sid = open_session(port)
    other = open_session(port, token=OTHER_TOKEN)
    gone = open_session(port)
    assert delete_session(port, gone).status == 200
    unknown = ["resources/subscribe", "sampling/createMessage", "tasks/list", "", "TOOLS/LIST", "tools/list/",
               "tools/list ", "server/discover", "rpc.discover", "x" * 300]
    cases = []
    for m in unknown:
        words = ["Method not found"] + ([m[:60]] if m.strip() else [])
        cases.append(Case(f"session era: unknown method {m[:40]!r}", session_send(sid, rpc(m, 31)), 200, -32601,
                          words, id=31))
    cases.append(Case("session era: unknown notification", session_send(sid, {"jsonrpc": "2.0", "method": "no/such"}),
                      202, check=lambda r: [] if not r.body else [f"body {r.text[:80]!r}"]))
    for m in ["resources/subscribe", "tasks/get", "logging/setLevel", "initialize", "ping"]:
        cases.append(Case(f"2026-07-28: unknown method {m!r}", modern_send(m, id=32), 404, -32601,
                          ["Method not found", m], id=32))
    no_sid = "Mcp-Session-Id"
    for name, body in [("tools/list", rpc("tools/list", 1)), ("ping", rpc("ping", 1)),
                       ("tools/call", rpc("tools/call", 1, {"name": "get_users_me", "arguments": {}})),
                       ("notifications/initialized", {"jsonrpc": "2.0", "method": "notifications/initialized"})]:
        cases.append(Case(f"before initialize: {name} without a session", post_send(body), 400, -32000, [no_sid],
                          id=None))
        cases.append(Case(f"before initialize: {name} with a made-up session",
                          session_send("0123456789abcdef0123456789abcdef", body), 404, -32001,
                          ["Session not found"], id=None))
    for name, bad in [("random", "f" * 32), ("all zeros", "0" * 32), ("upper-case copy", sid.upper()),
                      ("one character more", sid + "0"), ("one character less", sid[:-1]), ("empty", ""),
                      ("path-like", "../../../../etc/passwd"), ("ended (DELETE)", gone),
                      ("a 4000-character id", "a" * 4000)]:
        cases.append(Case(f"unknown session: {name}", session_send(bad, rpc("ping", 1)), 404, -32001,
                          ["Session not found"], id=None))
    cases += [
        Case("other token: session of alice with bob's token", session_send(sid, rpc("ping", 1), token=OTHER_TOKEN),
             404, -32001, ["Session not found"], id=None),
        Case("other token: session of bob with alice's token", session_send(other, rpc("ping", 1)), 404, -32001,
             ["Session not found"], id=None),
        Case("other token: token differing in case", session_send(sid, rpc("ping", 1), token=TOKEN.upper()), 404,
             -32001, ["Session not found"], id=None),
        Case("other token: token with a suffix", session_send(sid, rpc("ping", 1), token=TOKEN + "x"), 404, -32001,
             ["Session not found"], id=None),
        Case("other token: tools/call with another token", session_send(
            sid, rpc("tools/call", 1, {"name": "get_users_me", "arguments": {}}), token=OTHER_TOKEN), 404, -32001,
            ["Session not found"], id=None),
        Case("other token: DELETE with another token", lambda p: H.get(p, "/mcp", method="DELETE", headers={
            "Mcp-Session-Id": sid, "Authorization": f"Bearer {OTHER_TOKEN}"}), 404, -32001, ["Session not found"]),
        Case("no token at all", session_send(sid, rpc("ping", 1), token=None), 401, -32001, ["token"],
             check=lambda r: [] if r.headers.get("www-authenticate", "").startswith("Bearer") else
             ["no WWW-Authenticate: Bearer"]),
    ]
    for v in ["2025-13-45", "2025-11-25x", "garbage", "1.0", "2025-11-2"]:
        cases.append(Case(f"session era: MCP-Protocol-Version {v!r}", session_send(sid, rpc("ping", 1), version=v),
                          400, -32000, ["MCP-Protocol-Version", v], id=None))
    cases.append(Case("session era: empty MCP-Protocol-Version",
                      session_send(sid, rpc("ping", 1), headers={"MCP-Protocol-Version": ""}), 400, -32000,
                      ["MCP-Protocol-Version"], id=None))
    for v in ["2026-07-28", "2099-01-01"]:
        cases.append(Case(f"session era body with MCP-Protocol-Version {v}",
                          session_send(sid, rpc("ping", 41), version=v), 400, -32602, ["_meta"], id=41))
    mb = H.modern_body
    cases += [
        Case("2026-07-28: header 2025-11-25, envelope 2026-07-28",
             modern_send("tools/list", id=42, header_version="2025-11-25"), 400, -32020, ["MCP-Protocol-Version"],
             id=42),
        Case("2026-07-28: header garbage, envelope 2026-07-28", modern_send("tools/list", id=43,
                                                                            header_version="garbage"),
             400, -32020, ["MCP-Protocol-Version"], id=43),
        Case("2026-07-28: no MCP-Protocol-Version header",
             modern_send("tools/list", id=44, headers={"MCP-Protocol-Version": None}), 400, -32020,
             ["MCP-Protocol-Version"], id=44),
        Case("2026-07-28: header and envelope 2099-01-01", modern_send("tools/list", id=45, version="2099-01-01"),
             400, -32022, ["2099-01-01"], id=45,
             check=lambda r: [] if "2026-07-28" in (r.json()["error"].get("data") or {}).get("supported", [])
             else [f"error data does not list the supported versions: {r.text[:200]}"]),
        Case("2026-07-28: header and envelope 2025-11-25", modern_send("tools/list", id=46, version="2025-11-25"),
             400, -32022, ["2025-11-25"], id=46),
        Case("2026-07-28: envelope version is a number", modern_send(
            "tools/list", id=47, body={"jsonrpc": "2.0", "id": 47, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": 20260728,
                "io.modelcontextprotocol/clientCapabilities": {}}}}), 400, -32602, ["protocolVersion"], id=47),
        Case("2026-07-28: envelope clientCapabilities is an array", modern_send(
            "tools/list", id=48, body=dict(mb("tools/list", id=48), params={"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": []}})), 400, -32602, ["clientCapabilities"], id=48),
    ]
    run_cases(port, cases)
    for s, t in ((sid, TOKEN), (other, OTHER_TOKEN)):
        delete_session(port, s, token=t)


def test_bad_input_expired_sessions():
    """A server built with CM_SESSION_TTL_MS=1500: sessions older than that answer 404 (the lifetime
    counts from creation: the id carries it), and ended ids are forgotten once they would have expired."""
    s = start(H.Server(*FAKE.server_flags(), binary=TTL_BIN))
    try:
        port = s.port
        sids = {name: open_session(port, version=v) for name, v in
                [("ping", "2025-11-25"), ("call", "2025-11-25"), ("delete", "2025-11-25"), ("batch", "2025-03-26"),
                 ("list", "2025-06-18")]}
        for name, sid in sids.items():
            r = H.session_post(port, sid, rpc("ping", name))
            assert r.status == 200, f"fresh session {name}: {r.status} {r.text[:200]}"
        assert healthz(port)["sessionsOpened"] == len(sids)
        ended_one = open_session(port)
        assert delete_session(port, ended_one).status == 200
        assert healthz(port)["endedSessions"] == 1
        kept = H.Conn(port)      # a kept-alive connection remembers the session it proved
        ping_kept = H.build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
                                                     ("Authorization", f"Bearer {TOKEN}"), ("Mcp-Session-Id", sids["ping"])],
                                    json.dumps(rpc("ping", "kept")), port=port)
        kept.send(ping_kept)
        assert kept.read_response().status == 200, "ping on the kept-alive connection"
        time.sleep(2.0)          # past the 1.5 s time to live
        kept.send(ping_kept)
        r = kept.read_response()
        kept.close()
        assert r.status == 404, f"an expired session served on the connection that proved it: {r.status} {r.text[:200]}"
        gone = ["Session not found"]
        cases = [
            Case("expired session: ping", session_send(sids["ping"], rpc("ping", 1)), 404, -32001, gone, id=None),
            Case("expired session: tools/call", session_send(sids["call"], rpc(
                "tools/call", 1, {"name": "get_users_me", "arguments": {}})), 404, -32001, gone, id=None),
            Case("expired session: DELETE", lambda p: H.get(p, "/mcp", method="DELETE", headers={
                "Mcp-Session-Id": sids["delete"], "Authorization": f"Bearer {TOKEN}"}), 404, -32001, gone),
            Case("expired session: a batch", session_send(sids["batch"], [rpc("ping", 1)]), 404, -32001, gone,
                 id=None),
            Case("expired session: tools/list with its MCP-Protocol-Version",
                 session_send(sids["list"], rpc("tools/list", 1), version="2025-06-18"), 404, -32001, gone, id=None),
        ]
        run_cases(port, cases)
        j = healthz(port)
        assert j["endedSessions"] == 0, f"an expired ended id is still remembered: {j}"
        fresh = open_session(port)
        assert fresh not in sids.values()
        assert H.session_post(port, fresh, rpc("ping", 1)).status == 200, "initialize again did not work"
    finally:
        stop(s)


def test_bad_input_zz_no_slot_leaked_after_the_table():
    port = P()
    end_opened_sessions(port)
    sid = open_session(port)
    r = H.session_post(port, sid, rpc("tools/list", "after"))
    assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"{r.status} {r.text[:200]}"
    call_ok(port)
    assert delete_session(port, sid).status == 200
    j = wait_healthz(port, "connections", 1)
    print(f"  bad-input cases: {CASES['run']} ({CASES['failed']} answered otherwise than documented)")
    assert j["connections"] == 1, f"/healthz counts {j['connections']} connections (only its own expected): {j}"
    # the id just ended is remembered (there is no table of open sessions to leak from)
    assert j["endedSessions"] >= 1, f"/healthz remembers no ended session: {j}"
    assert H.session_post(port, sid, rpc("ping", "gone")).status == 404, "an ended session still answers"
    assert TABLE.alive(), "the table's server died"


# ---------------------------------------------------------------------------
# Slow clients
# ---------------------------------------------------------------------------

def _trickler(port, data, head_at_once, out, started, source=None):
    """Sends data one byte every 200 ms (the head at once when head_at_once)
    until the server answers; stores (status, message, closed) in out."""
    try:
        c = Conn(port, timeout=10, source=source)
    except OSError as e:
        out["error"] = f"connect: {e}"
        started.set()
        return
    try:
        pos = 0
        if head_at_once:
            pos = data.index(b"\r\n\r\n") + 4
            c.sock.sendall(data[:pos])
        sent_first = 0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            if pos < len(data):
                try:
                    c.sock.sendall(data[pos:pos + 1])
                except OSError:
                    break
                pos += 1
                sent_first += 1
                if sent_first == 2:
                    started.set()
            readable, _, _ = select.select([c.sock], [], [], 0.2)
            if readable:
                break
        started.set()
        out["sent"] = pos
        r = c.read_response()
        try:
            msg = r.json().get("error", {})
        except AssertionError:
            msg = {}
        out["answer"] = (r.status, msg.get("code"), msg.get("message", ""), c.closed_by_peer(timeout=5))
    except Exception as e:  # reported by the test
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["done"] = True
        c.close()


def test_slow_clients_trickle_then_408_and_slots_free():
    s = start(H.Server(*FAKE.server_flags(), binary=SHORT_BIN))
    lim = H.limits(SHORT_BIN)
    slots = min(lim["CM_MAX_CONNS"], lim["CM_TLS_CONNS"]) if H.HTTPS else lim["CM_MAX_CONNS"]
    slow = min(12, slots - 4)  # room left for the normal client's connections
    try:
        port = s.port
        body = json.dumps(rpc("tools/list", "slow")).encode()
        data = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
                                              ("Authorization", f"Bearer {TOKEN}")], body, port=port)
        outs, threads, starts = [], [], []
        for i in range(slow):
            out, ev = {}, threading.Event()
            # each from its own loopback address: one address holds at most CM_MAX_CONNS_PER_ADDR
            t = threading.Thread(target=_trickler, args=(port, data, i % 2 == 1, out, ev, f"127.0.0.{20 + i}"),
                                 daemon=True)
            outs.append(out)
            starts.append(ev)
            threads.append(t)
            t.start()
        for ev in starts:
            ev.wait(10)
        # a normal client, meanwhile
        assert healthz(port)["status"] == "ok"
        sid = open_session(port)
        r = H.session_post(port, sid, rpc("tools/list", 1))
        assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"tools/list: {r.status}"
        tools_list_ok(port)
        call_ok(port)
        busy = healthz(port)["connections"]
        pending = sum(1 for o in outs if not o.get("done"))
        for t in threads:
            t.join(15)
        assert all(not t.is_alive() for t in threads), "a trickling client never got an answer"
        problems = []
        for i, o in enumerate(outs):
            if "error" in o:
                problems.append(f"client {i}: {o['error']}")
                continue
            status, code, message, closed = o["answer"]
            if status != 408 or code != -32000 or "timeout" not in message.lower() or not closed:
                problems.append(f"client {i} (sent {o.get('sent')} bytes): {status} {code} {message!r} "
                                f"closed={closed}; expected 408 -32000 'Request Timeout' and close")
        assert not problems, "; ".join(problems)
        assert pending == slow, (f"only {pending} of {slow} slow clients were still sending while the normal client was "
                               "served: the test did not overlap them")
        assert busy >= slow + 1, f"/healthz counted {busy} connections while {slow} clients trickled"
        j = wait_healthz(port, "connections", 1)
        assert j["connections"] == 1, f"slots not freed after the 408s: {j}"
        assert H.session_post(port, sid, rpc("ping", 2)).status == 200
        assert s.alive()
    finally:
        stop(s)


def _slow_socket_loop(port, source, slow_post, stop, stats, lock):
    """One hostile client slot: a slowloris (the head one byte every 250 ms)
    or a slow POST (the head at once, then the body one byte every 250 ms),
    reconnecting from source as soon as the server closes it. Counts what the
    server answered in stats: "408 rate" (cut at the minimum data rate),
    "408 room" (closed to make room), "408 other", "503", "closed" (closed
    without an answer)."""
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 4000\r\n\r\n").encode()
    while not stop.is_set():
        try:
            c = Conn(port, timeout=5, source=source)
        except OSError:
            time.sleep(0.05)
            continue
        kind = "closed"
        try:
            data = b"{" + b" " * 3999 if slow_post else head
            if slow_post:
                c.sock.sendall(head)
            pos = 0
            while not stop.is_set():
                readable, _, _ = select.select([c.sock], [], [], 0.25)
                if readable:
                    break
                if pos < len(data):
                    c.sock.sendall(data[pos:pos + 1])
                    pos += 1
            if not stop.is_set():
                answer = c.sock.recv(4096)
                if answer.startswith(b"HTTP/1.1 408 "):
                    kind = ("408 rate" if b"CM_MIN_RECV_BYTES_PER_S" in answer else
                            "408 room" if b"needed for another client" in answer else "408 other")
                elif answer.startswith(b"HTTP/1.1 503 "):
                    kind = "503"
                elif answer:
                    kind = answer[:12].decode("latin-1")
        except OSError:
            pass
        finally:
            c.close()
        if not stop.is_set():
            with lock:
                stats[kind] = stats.get(kind, 0) + 1
        time.sleep(0.1 if kind == "503" else 0.02)


class Attack:
    """Slow-socket loops (see _slow_socket_loop), n from each source address."""

    def __init__(self, port, sources, n):
        self.stop_ev, self.lock, self.stats, self.threads = threading.Event(), threading.Lock(), {}, []
        for src in sources:
            for i in range(n):
                t = threading.Thread(target=_slow_socket_loop, daemon=True,
                                     args=(port, src, i % 2 == 1, self.stop_ev, self.stats, self.lock))
                t.start()
                self.threads.append(t)

    def stop(self):
        """Ends every loop; True when all ended."""
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)
        return not any(t.is_alive() for t in self.threads)


def test_slow_sockets_from_one_address_lock_no_one_out():
    """16 slowloris and slow-POST sockets from 127.0.0.2, reconnecting as
    they are closed, against the default build: a client on 127.0.0.1 gets
    every answer, a kept-alive client idle meanwhile keeps its connection;
    the slow sockets hold at most their address's share, and their
    reconnections, meeting the per-address limit, close their own stalled
    ones (408) or are refused (503). A lone slow socket from 127.0.0.6 is
    cut at the minimum data rate, long before the whole-request timeout."""
    if H.HTTPS:
        raise H.Skip("counts plain-text refusals (over HTTPS a full server closes at accept: test_tls.py)")
    s = start(H.Server(*FAKE.server_flags()))
    attacks = []
    try:
        port = s.port
        idle = Conn(port)
        idle.send(build_request("GET", "/healthz", port=port))
        assert idle.read_response("GET").status == 200
        attack, lone = Attack(port, ["127.0.0.2"], 16), Attack(port, ["127.0.0.6"], 1)
        attacks = [attack, lone]
        deadline = time.monotonic() + 8
        while healthz(port)["connections"] < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        answered, failures = 0, []
        for i in range(40):  # about 5 s: past the minimum-rate cut (3 s)
            try:
                if i % 10 == 9:
                    call_ok(port)
                else:
                    tools_list_ok(port, id=f"during-{i}")
                answered += 1
            except (AssertionError, OSError, H.ConnectionClosed) as e:
                failures.append(f"request {i}: {e}"[:200])
            time.sleep(0.1)
        j = healthz(port)
        idle.send(build_request("GET", "/healthz", port=port))
        try:
            idle_status = idle.read_response("GET").status
        except H.ConnectionClosed:
            idle_status = "closed"
        stopped = all([a.stop() for a in attacks])
        attacks = []
        assert answered == 40, f"the client on 127.0.0.1 got {answered} of 40 answers during the attack: {failures[:3]}"
        assert idle_status == 200, f"the kept-alive idle client was pushed off ({idle_status}); attack: {attack.stats}"
        assert attack.stats.get("408 room", 0) >= 8 and attack.stats.get("503", 0) > 0, f"attack: {attack.stats}"
        assert j["refusedPerAddress"] > 0, f"no reconnection met the per-address limit: {j} {attack.stats}"
        assert lone.stats.get("408 rate", 0) >= 1, f"the lone slow socket was not cut at the minimum data rate: {lone.stats}"
        assert not lone.stats.get("408 other"), f"the lone slow socket met another timeout first: {lone.stats}"
        assert stopped, "an attacking thread did not stop"
        assert s.alive()
    finally:
        for a in attacks:
            a.stop()
        stop(s)


def _half_request(port, source):
    c = Conn(port, timeout=5, source=source)
    c.send(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Le".encode())
    return c


def test_full_table_makes_room_from_stalled_not_from_idle():
    """The table full of stalled half-requests from two addresses and one
    idle kept-alive client: past CM_SLOW_GRACE_MS a newcomer from a third
    address gets in by closing a stalled one (which is told 408), a newcomer
    from a heavy address does not take a slot from the other heavy one, and
    the idle client is never the one closed."""
    if H.HTTPS:
        raise H.Skip("counts plain-text refusals (over HTTPS a full server closes at accept: test_tls.py)")
    s = start(H.Server(*FAKE.server_flags()))
    held = []
    try:
        port = s.port
        idle = Conn(port)
        idle.send(build_request("GET", "/healthz", port=port))
        assert idle.read_response("GET").status == 200
        held = [_half_request(port, "127.0.0.2") for _ in range(8)] + [_half_request(port, "127.0.0.3") for _ in range(7)]
        time.sleep(1.3)  # past CM_SLOW_GRACE_MS (1 s), well before the minimum-rate cut (3 s)
        with Conn(port, source="127.0.0.3") as heavy:
            heavy.send(build_request("GET", "/healthz", port=port))
            r = heavy.read_response("GET")
            assert r.status == 503, f"a newcomer from the heavy 127.0.0.3 took a slot: {r.status} {r.text[:200]}"
        served = 0
        for i in range(5):
            with Conn(port, source="127.0.0.9") as c:
                c.send(build_request("GET", "/healthz", port=port))
                served += c.read_response("GET").status == 200
        told = 0
        for c in held:
            readable, _, _ = select.select([c.sock], [], [], 0)
            if readable:
                data = c.sock.recv(4096)
                told += data.startswith(b"HTTP/1.1 408 ") and b"needed for another client" in data
        idle.send(build_request("GET", "/healthz", port=port))
        r = idle.read_response("GET")
        assert served == 5, f"only {served} of 5 newcomers served from a table of stalled connections"
        assert told >= 1, "no stalled connection was told why it was closed"
        assert r.status == 200 and r.json()["evictedStalled"] >= 1, f"idle client: {r.status} {r.text[:200]}"
        assert s.alive()
    finally:
        for c in held:
            c.close()
        stop(s)


def test_per_address_limit_names_itself():
    """8 busy connections from 127.0.0.4: the 9th from there gets 503 naming
    --max-conns-per-addr, one from 127.0.0.5 is served meanwhile."""
    if H.HTTPS:
        raise H.Skip("counts plain-text refusals (over HTTPS a full server closes at accept: test_tls.py)")
    s = start(H.Server(*FAKE.server_flags()))
    held = []
    try:
        port = s.port
        held = [_half_request(port, "127.0.0.4") for _ in range(8)]
        time.sleep(0.1)
        with Conn(port, source="127.0.0.4") as c:
            c.send(build_request("GET", "/healthz", port=port))
            r = c.read_response("GET")
        assert r.status == 503 and "8 connections (--max-conns-per-addr)" in r.json()["error"]["message"], f"{r.status} {r.text[:300]}"
        assert "retry-after" in r.headers, r.headers
        with Conn(port, source="127.0.0.5") as c:
            c.send(build_request("GET", "/healthz", port=port))
            assert c.read_response("GET").status == 200
        assert s.alive()
    finally:
        for c in held:
            c.close()
        stop(s)


def _per_address_cap(port, source, n):
    """Holds n busy connections from source, then asks for one more from
    there: (its status, its error message or "", the held connections)."""
    held = [_half_request(port, source) for _ in range(n)]
    time.sleep(0.1)  # well within CM_SLOW_GRACE_MS: none is stalled, so none can be replaced
    with Conn(port, source=source) as c:  # (Connection: close: its slot is free once it is answered)
        c.send(build_request("GET", "/healthz", [("Connection", "close")], port=port))
        r = c.read_response("GET")
    return r.status, r.json().get("error", {}).get("message", "") if r.status == 503 else "", held


def test_per_address_cap_is_a_flag():
    """--max-conns-per-addr moves the cap both ways from the compiled 8: at 3
    the 4th busy connection from one address is refused (another address is
    served); at 12 the 12th is served and only the 13th refused (what a
    reverse proxy needs). CALID_MCP_MAX_CONNS_PER_ADDR does the same;
    --version shows the value in use; 0, 17 (past CM_MAX_CONNS) and words are
    refused at start, naming the range."""
    if H.HTTPS:
        raise H.Skip("counts plain-text refusals (over HTTPS a full server closes at accept: test_tls.py)")
    assert H.limits()["CM_MAX_CONNS"] == 16 and H.limits()["CM_MAX_CONNS_PER_ADDR"] == 8, H.limits()
    for flags, env, cap, src in ((["--max-conns-per-addr", "3"], None, 3, "127.0.0.6"),
                                 ([], {"CALID_MCP_MAX_CONNS_PER_ADDR": "12"}, 12, "127.0.0.7")):
        s = start(H.Server(*FAKE.server_flags(), *flags, env=env))
        held = []
        try:
            status, _, held = _per_address_cap(s.port, src, cap - 1)
            assert status == 200, f"cap {cap}: connection {cap} from one address answered {status}"
            status, message, more = _per_address_cap(s.port, src, 1)
            held += more
            assert status == 503 and f"{cap} connections (--max-conns-per-addr)" in message, \
                f"cap {cap}: connection {cap + 1} from one address: {status} {message}"
            with Conn(s.port, source="127.0.0.8") as c:
                c.send(build_request("GET", "/healthz", port=s.port))
                assert c.read_response("GET").status == 200, f"cap {cap}: another address was refused"
            assert s.alive()
        finally:
            for c in held:
                c.close()
            stop(s)
    rc, out, _ = H.run_binary(["--max-conns-per-addr", "16", "--version"])
    assert rc == 0 and "per client address: at most 16 of the 16 connections" in out, out
    rc, out, _ = H.run_binary(["--version"], env={"CALID_MCP_MAX_CONNS_PER_ADDR": "5"})
    assert rc == 0 and "at most 5 of the 16" in out and "compiled default 8" in out, out
    for value, words in (("0", "must be 1 to 16"), ("17", "must be 1 to 16"), ("-2", "whole number"),
                         ("eight", "whole number"), ("", "whole number")):
        rc, _, err = H.run_binary(["--listen", f"127.0.0.1:{H.free_port()}", *FAKE.server_flags(),
                                   "--max-conns-per-addr", value], timeout=5)
        assert rc != 0 and words in err and "--max-conns-per-addr" in err, f"{value!r}: rc {rc}: {err}"
    rc, _, err = H.run_binary(["--listen", f"127.0.0.1:{H.free_port()}", *FAKE.server_flags()],
                              env={"CALID_MCP_MAX_CONNS_PER_ADDR": "99"}, timeout=5)
    assert rc != 0 and "CALID_MCP_MAX_CONNS_PER_ADDR" in err and "not 99" in err, err


# ---------------------------------------------------------------------------
# Upstream faults
# ---------------------------------------------------------------------------

def _fault_round(port, label, words, wait=None):
    """Calls get_users_me while a fault is armed; once wait() is true (by
    default: the fake has the request) serves tools/list, which must be
    answered while the call is still pending; returns the tool result's text."""
    out = {}

    def call():
        try:
            out["res"] = tool_result(modern_call(port, id=f"fault-{label}"), label)
        except BaseException as e:
            out["err"] = e
        out["done"] = True

    t = threading.Thread(target=call, daemon=True)
    t.start()
    wait = wait or (lambda: bool(CTL.requests(path="/users/me")))
    deadline = time.monotonic() + 8
    while not wait() and time.monotonic() < deadline and not out.get("done"):
        time.sleep(0.02)
    tools_list_ok(port, id=f"during-{label}")
    pending = not out.get("done")
    t.join(20)
    assert not t.is_alive(), f"{label}: the tool call never ended"
    assert "err" not in out, f"{label}: {out.get('err')}"
    res = out["res"]
    text = res["content"][-1]["text"]   # (after an answer that had begun streaming, the error is a second block)
    assert res["isError"] is True, f"{label}: expected isError true: {text[:300]}"
    for w in words:
        alts = w if isinstance(w, tuple) else (w,)
        assert any(a.lower() in text.lower() for a in alts), f"{label}: the error does not name {alts}: {text}"
    assert pending, f"{label}: the call had already ended when tools/list was served (no overlap)"
    return text


def test_upstream_faults_end_as_tool_errors_and_the_next_call_works():
    s = start(H.Server(*FAKE.server_flags(), binary=SHORT_BIN))
    try:
        port = s.port
        call_ok(port)        # a kept-alive API connection exists from here on
        rounds = [
            ("reset in mid-answer", {"mode": "reset_mid_answer", "path": "/users/me", "delay_ms": 800},
             ["reset"]),
            ("stall", {"mode": "stall", "path": "/users/me", "count": -1}, ["did not answer within 1.5"]),
            ("endless chunked answer", {"mode": "endless_chunked", "path": "/users/me"},
             [("did not answer within 1.5", "larger than")]),
        ]
        for label, fault, words in rounds:
            CTL.clear_faults()
            CTL.clear_requests()
            CTL.fault(**fault)
            try:
                text = _fault_round(port, label, words)
            finally:
                CTL.clear_faults()
            print(f"  {label}: {text[:120]}")
            call_ok(port)
            assert s.alive()
        recs = CTL.requests(path="/users/me")
        assert recs, "the fake saw no request after the faults"
    finally:
        stop(s)


class SwitchProxy:
    """A TCP relay on 127.0.0.1 to one backend port at a time. switch()
    closes every relayed connection and sends new ones to another backend;
    with delay_s set, a new connection waits that long before it is relayed
    (so that a request through it is still pending while others are served).
    accepted counts the connections taken."""

    def __init__(self, target_port):
        self.target = target_port
        self.delay_s = 0.0
        self.accepted = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.socks.append(c)
            threading.Thread(target=self._relay, args=(c, self.target, self.delay_s), daemon=True).start()

    def _relay(self, c, target, delay_s):
        if delay_s:
            time.sleep(delay_s)
        try:
            u = socket.create_connection(("127.0.0.1", target), timeout=5)
        except OSError:
            c.close()
            return
        u.settimeout(None)
        with self.lock:
            self.socks.append(u)
        threading.Thread(target=self._pump, args=(u, c), daemon=True).start()
        self._pump(c, u)

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(data)
        except OSError:
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass

    def switch(self, target_port):
        with self.lock:
            self.target = target_port
            socks, self.socks = self.socks, []
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self):
        self.lsock.close()
        self.switch(self.target)


def test_upstream_tls_alert_ends_as_tool_error_and_the_next_call_works():
    tls13 = start(H.FakeCalid("--tls-min", "1.3"))
    proxy = SwitchProxy(FAKE.port)
    s = start(H.Server("--upstream", f"https://127.0.0.1:{proxy.port}", "--ca-file", FAKE.ca_file,
                       binary=SHORT_BIN))
    try:
        port = s.port
        call_ok(port)
        accepted_before = proxy.accepted
        proxy.switch(tls13.port)
        proxy.delay_s = 0.8         # the handshake starts late: tools/list is served meanwhile
        text = _fault_round(port, "TLS 1.3-only API", ["TLS", "protocol_version"],
                            wait=lambda: proxy.accepted > accepted_before)
        print(f"  TLS alert: {text[:140]}")
        proxy.delay_s = 0.0
        proxy.switch(FAKE.port)
        call_ok(port)
        tools_list_ok(port)
        assert s.alive()
    finally:
        stop(s)
        proxy.close()
        stop(tls13)


# ---------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------

def _exercise_with_token(port, token):
    """Requests that carry the token: successes, API errors, a reset, local
    errors, refusals and framing errors."""
    sid = H.initialize(port, token=token, version="2025-11-25")
    H.session_post(port, sid, rpc("tools/list", 1), token=token)
    H.session_post(port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}), token=token)
    CTL.fault(path="/users/me", mode="status", status=401)
    H.session_post(port, sid, rpc("tools/call", 3, {"name": "get_users_me", "arguments": {}}), token=token)
    H.session_post(port, sid, rpc("tools/call", 4, {"name": "get_contact", "arguments": {"contactId": 987654321}}),
                   token=token)
    CTL.fault(path="/teams", mode="reset")
    H.session_post(port, sid, rpc("tools/call", 5, {"name": "get_teams", "arguments": {}}), token=token)
    H.session_post(port, sid, rpc("tools/call", 6, {"name": "get_booking_by_id", "arguments": {}}), token=token)
    H.session_post(port, sid, rpc("tools/call", 8, {"name": "list_contacts", "arguments": {"search": "qsecret4711"}}),
                   token=token)
    H.modern_post(port, "tools/call", {"name": "get_users_me", "arguments": {}}, token=token)
    H.session_post(port, sid, rpc("ping", 7), token=token + "x")
    H.initialize_response(port, token=None, headers={"Authorization": "Basic " + token})
    H.initialize_response(port, token=None, headers={"Authorization": "Token " + token})
    H.request(port, f"POST /mcp?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode())
    H.request(port, f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\x01\r\n\r\n".encode())
    H.request(port, f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nX-Pad: {'p' * 9000}"
                    "\r\n\r\n".encode())
    H.request(port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    "Connection: close\r\n\r\n".encode(), method="GET")
    delete_session(port, sid, token=token)
    CTL.clear_faults()


def test_token_never_in_stderr_at_any_log_level():
    token = "calid_Zq8RwX3mLeak_tok"
    key = "calid_Kv7PsN2serverKEY"
    access = "access_Tt5YhB9clientPASS"
    problems = []
    for level in ["error", "warn", "info", "debug"]:
        s = start(H.Server(*FAKE.server_flags(), "--log-level", level))
        try:
            _exercise_with_token(s.port, token)
            s.stop()
            log = s.stderr_text()
        finally:
            stop(s)
        for secret, frag in [(token, "Zq8RwX3mLeak")]:
            if secret in log or frag in log:
                lines = [ln for ln in log.splitlines() if frag in ln]
                problems.append(f"--log-level {level}: the caller's token is in stderr: {lines[:3]}")
        if "qsecret4711" in log:
            lines = [ln for ln in log.splitlines() if "qsecret4711" in ln]
            problems.append(f"--log-level {level}: a query string value is in stderr: {lines[:3]}")
        if level == "debug" and "debug" not in log:
            problems.append(f"--log-level debug wrote no debug lines: {log[:200]!r}")
        # a key held by the server and the access token clients present
        s = start(H.Server(*FAKE.server_flags(), "--log-level", level, "--api-key", key, "--access-token", access))
        try:
            _exercise_with_token(s.port, access)
            s.stop()
            log = s.stderr_text()
        finally:
            stop(s)
        for name, secret, frag in [("server's API key", key, "Kv7PsN2"), ("access token", access, "Tt5YhB9")]:
            if secret in log or frag in log:
                lines = [ln for ln in log.splitlines() if frag in ln]
                problems.append(f"--log-level {level} with --api-key: the {name} is in stderr: {lines[:3]}")
    assert not problems, "; ".join(problems)


def test_origin_checks_bad_null_and_allowed():
    s = start(H.Server(*FAKE.server_flags(), "--allow-origin", "https://app.example"))
    try:
        port = s.port
        bad = ["http://evil.example", "null", "http://localhost.evil.example", "http://127.0.0.1.evil.example",
               "http://evil.example:8080", "https://localhost@evil.example", "http://evil.example/localhost",
               "file://", "", "https://app.example.evil", "http://app.example", "https://app.example:8443",
               "ws://localhost:3000", "localhost:3000", "http://[::2]:3000", "http://127.0.0.2"]
        good = ["http://localhost:3000", "http://127.0.0.1:5173", "https://localhost", "http://[::1]:8080",
                "http://localhost", "https://app.example"]
        problems = []
        for origin in bad:
            for what, r in [("initialize", H.initialize_response(port, headers={"Origin": origin})),
                            ("2026-07-28 tools/list", H.modern_post(port, "tools/list", headers={"Origin": origin})),
                            ("OPTIONS", H.get(port, "/mcp", method="OPTIONS", headers={
                                "Origin": origin, "Access-Control-Request-Method": "POST"}))]:
                msg = r.json().get("error", {}) if r.body else {}
                if r.status != 403 or msg.get("code") != -32000 or "origin" not in msg.get("message", "").lower():
                    problems.append(f"Origin {origin!r}, {what}: {r.status} {r.text[:120]!r}, expected 403 naming Origin")
                if "access-control-allow-origin" in r.headers or "mcp-session-id" in r.headers:
                    problems.append(f"Origin {origin!r}, {what}: CORS or session headers on a refusal: {r.header_list}")
        for origin in good:
            r = H.initialize_response(port, headers={"Origin": origin})
            if r.status != 200 or r.headers.get("access-control-allow-origin") != origin:
                problems.append(f"allowed Origin {origin!r}: {r.status}, ACAO {r.headers.get('access-control-allow-origin')!r}")
            elif "origin" not in r.headers.get("vary", "").lower():
                problems.append(f"allowed Origin {origin!r}: no Vary: Origin")
            if r.headers.get("mcp-session-id"):
                delete_session(port, r.headers["mcp-session-id"])
        assert healthz(port)["sessionsOpened"] == len(good), "a refused request opened a session"
        assert not problems, "\n    ".join([""] + problems)
    finally:
        stop(s)


def test_sessions_bound_to_their_token():
    s = start(H.Server(*FAKE.server_flags()))
    srv_key = start(H.Server(*FAKE.server_flags(), "--api-key", "calid_bound_server_key"))
    try:
        port = s.port
        a = open_session(port, token=TOKEN)
        b = open_session(port, token=OTHER_TOKEN)
        assert H.session_post(port, a, rpc("ping", 1)).status == 200
        assert H.session_post(port, b, rpc("ping", 1), token=OTHER_TOKEN).status == 200
        for sid, tok in [(a, OTHER_TOKEN), (b, TOKEN), (a, TOKEN + " "), (a, "x" + TOKEN)]:
            r = H.session_post(port, sid, rpc("ping", 2), token=tok)
            if tok != TOKEN and tok.strip() == TOKEN:     # trailing white space is not part of a header value
                assert r.status == 200, f"same token with trailing space: {r.status}"
                continue
            assert r.status == 404, f"session with another token {tok!r}: {r.status} {r.text[:200]}"
        # a refused DELETE leaves the session alone; a tool call with another token never reaches the API
        CTL.clear_requests()
        r = H.session_post(port, a, rpc("tools/call", 3, {"name": "get_users_me", "arguments": {}}),
                           token=OTHER_TOKEN)
        assert r.status == 404, f"tools/call in alice's session with bob's token: {r.status}"
        assert not CTL.requests(path="/users/me"), "a refused tools/call reached the API"
        assert delete_session(port, a, token=OTHER_TOKEN).status == 404
        assert H.session_post(port, a, rpc("ping", 4)).status == 200, "a refused DELETE ended the session"
        res = tool_result(H.session_post(port, a, rpc("tools/call", 5, {"name": "get_users_me", "arguments": {}})),
                          "get_users_me")
        assert res["isError"] is False, res
        assert CTL.requests(path="/users/me")[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
        # with a key held by the server: a session opened without a token is not usable with one
        k = open_session(srv_key.port, token=None)
        assert H.session_post(srv_key.port, k, rpc("ping", 1), token=None).status == 200
        r = H.session_post(srv_key.port, k, rpc("ping", 2), token="calid_someone_else")
        assert r.status == 404, f"server-key session used with a caller token: {r.status} {r.text[:200]}"
        t = open_session(srv_key.port, token="calid_someone_else")
        r = H.session_post(srv_key.port, t, rpc("ping", 3), token=None)
        assert r.status == 404, f"caller-token session used without a token: {r.status} {r.text[:200]}"
    finally:
        stop(srv_key)
        stop(s)


def test_session_ids_unpredictable_over_1000_initializes():
    s = start(H.Server(*FAKE.server_flags()))
    try:
        port = s.port
        body = json.dumps(rpc("initialize", 1, init_params())).encode()
        req = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
                                             ("Authorization", f"Bearer {TOKEN}")], body, port=port)
        ids = []
        c = Conn(port)
        try:
            while len(ids) < 1000:
                c.send(req)
                try:
                    r = c.read_response()
                except H.ConnectionClosed:
                    c.close()
                    c = Conn(port)
                    continue
                assert r.status == 200, f"initialize #{len(ids)}: {r.status} {r.text[:200]}"
                ids.append(r.headers.get("mcp-session-id", ""))
        finally:
            c.close()
        bad_form = [i for i in ids if not re.fullmatch(r"[A-Za-z0-9_-]{43}", i)]
        assert not bad_form, f"{len(bad_form)} ids are not 43 base64url characters, e.g. {bad_form[:3]}"
        assert len(set(ids)) == 1000, f"only {len(set(ids))} distinct ids in 1000"
        # the id's layout (README): format and version, creation time, then 26 unpredictable bytes
        raw = [base64.urlsafe_b64decode(i + "=") for i in ids]
        assert all(len(b) == 32 and b[0] == 0x11 for b in raw), f"byte 0 is not format 1 / 2025-03-26: {raw[0][:1]!r}"
        now = int(time.time())
        created = {int.from_bytes(b[1:6], "big") for b in raw}
        assert all(now - 120 <= t <= now + 1 for t in created), f"creation times {sorted(created)[:3]} are not now ({now})"
        vals = [int.from_bytes(b[6:], "big") for b in raw]
        prefixes = {v >> 128 for v in vals}
        assert len(prefixes) == 1000, f"{1000 - len(prefixes)} ids share their 80-bit nonce with another"
        # consecutive ids differ in about half of their 208 random bits (mean of 999 pairs; sd about 0.23)
        diffs = [bin(x ^ y).count("1") for x, y in zip(vals, vals[1:])]
        mean = sum(diffs) / len(diffs)
        assert 100 <= mean <= 108, f"consecutive ids differ in {mean:.1f} bits on average, expected about 104"
        # every random bit position is set in 35..65 % of the ids (sd 1.6 %)
        skewed = [b for b in range(208) if not 350 <= sum((v >> b) & 1 for v in vals) <= 650]
        assert not skewed, f"bit positions {skewed[:8]} are set in too few or too many ids"
        print(f"  1000 session ids: distinct, base64url, distinct nonces; consecutive ids differ in "
              f"{mean:.1f} of 208 random bits on average")
        assert s.alive()
    finally:
        stop(s)


def test_server_held_key_off_host_needs_the_access_token():
    access = "T_hardening_access_9d2c"
    s = start(AddrServer("0.0.0.0", *FAKE.server_flags(), "--api-key", "calid_srv", "--access-token", access))
    try:
        port = s.port
        problems = []
        for name, tok, hdrs in [("no token", None, None), ("wrong token", "wrong", None),
                                ("Bearer calid_srv (the key itself)", "calid_srv", None),
                                ("a prefix of the token", access[:-1], None), ("the token plus a byte", access + "0", None),
                                ("Basic with the token", None, {"Authorization": f"Basic {access}"}),
                                ("the token without a scheme", None, {"Authorization": access})]:
            for what, r in [("initialize", H.initialize_response(port, token=tok, headers=hdrs)),
                            ("2026-07-28 tools/call", H.modern_post(port, "tools/call", {"name": "get_users_me",
                                                                                          "arguments": {}},
                                                                   token=tok, headers=hdrs))]:
                if r.status != 401 or not r.headers.get("www-authenticate", "").startswith("Bearer"):
                    problems.append(f"{name}, {what}: {r.status} {r.text[:120]!r}, expected 401 with WWW-Authenticate")
        assert not problems, "\n    ".join([""] + problems)
        CTL.clear_requests()
        d = call_ok(port, token=access)
        assert d.get("success") is True
        sid = H.initialize(port, token=access, version="2025-11-25")
        res = tool_result(H.session_post(port, sid, rpc("tools/call", 2, {"name": "get_teams", "arguments": {}}),
                                         token=access), "get_teams")
        assert res["isError"] is False, res
        auths = {r["headers"].get("authorization") for r in CTL.requests()}
        assert auths == {"Bearer calid_srv"}, f"the fake received Authorization {auths}, expected only Bearer calid_srv"
        # off loopback, even a loopback Origin must be allowed explicitly
        r = H.initialize_response(port, token=access, headers={"Origin": "http://localhost:3000"})
        assert r.status == 403, f"Origin http://localhost:3000 on a 0.0.0.0 listener: {r.status}"
    finally:
        stop(s)


def test_refuses_to_start_with_api_key_off_loopback_without_access_token():
    port = H.free_port()
    variants = [
        ("--api-key on 0.0.0.0", ["--listen", f"0.0.0.0:{port}", "--api-key", "calid_k"], None),
        ("CALID_API_KEY on 0.0.0.0", ["--listen", f"0.0.0.0:{port}"], {"CALID_API_KEY": "calid_k"}),
        ("CALID_MCP_LISTEN=0.0.0.0 with --api-key", ["--api-key", "calid_k"],
         {"CALID_MCP_LISTEN": f"0.0.0.0:{port}"}),
        ("--api-key on [::]", ["--listen", f"[::]:{port}", "--api-key", "calid_k"], None),
        ("--api-key on 0.0.0.0 with an empty --access-token",
         ["--listen", f"0.0.0.0:{port}", "--api-key", "calid_k", "--access-token", ""], None),
        ("--api-key on 0.0.0.0 with an empty CALID_MCP_ACCESS_TOKEN",
         ["--listen", f"0.0.0.0:{port}", "--api-key", "calid_k"], {"CALID_MCP_ACCESS_TOKEN": ""}),
    ]
    problems = []
    for name, args, env in variants:
        try:
            rc, out, err = H.run_binary(args + FAKE.server_flags(), timeout=4, env=env)
        except subprocess.TimeoutExpired:
            problems.append(f"{name}: the server started (ran until the timeout) instead of refusing")
            continue
        if rc == 0 or "--access-token" not in err:
            problems.append(f"{name}: exit {rc}, stderr {err.strip()[:200]!r}; expected a refusal naming --access-token")
    assert not problems, "\n    ".join([""] + problems)


def test_tls_verification_cannot_be_switched_off():
    rc, out, err = H.run_binary(["--help"])
    assert rc == 0, f"--help: exit {rc}"
    lowered = out.lower()
    for word in ["insecure", "verify", "no-check", "skip", "unsafe", "allow-untrusted", "trust-all"]:
        assert word not in lowered, f"--help mentions {word!r}: {out}"
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out))
    assert "--ca-file" in flags, f"--help does not list --ca-file: {out}"
    for flag in flags:  # none of the listed options turns certificate checks off
        assert not re.search(r"insecure|verify|no-check|skip|unsafe|untrusted|trust-all", flag), flag
    for flag in ["--insecure", "-k", "--no-verify", "--tls-no-verify", "--skip-tls-verify", "--ca-file=none"]:
        rc, _out, err = H.run_binary([flag], timeout=5)
        assert rc == 2 and "unknown option" in err, f"{flag}: exit {rc}, {err.strip()[:200]!r}"
    untrusted = start(H.FakeCalid("--cert", os.path.join(H.CERTS, "untrusted.pem"),
                                  "--key", os.path.join(H.CERTS, "untrusted.key")))
    untrusted_ca = os.path.join(H.CERTS, "untrusted-ca.pem")
    env = {"CALID_INSECURE": "1", "CALID_TLS_INSECURE": "1", "CALID_SKIP_TLS_VERIFY": "1", "CALID_MCP_INSECURE": "1",
           "CALID_TLS_VERIFY": "0", "CALID_VERIFY_TLS": "0", "CALID_NO_VERIFY": "1", "INSECURE": "1",
           "NODE_TLS_REJECT_UNAUTHORIZED": "0", "PYTHONHTTPSVERIFY": "0", "SSL_CERT_FILE": untrusted_ca,
           "SSL_CERT_DIR": os.path.dirname(untrusted_ca), "CURL_CA_BUNDLE": untrusted_ca,
           "REQUESTS_CA_BUNDLE": untrusted_ca, "GIT_SSL_NO_VERIFY": "1"}
    problems = []
    try:
        for label, flags in [("--ca-file with the test CA", ["--ca-file", FAKE.ca_file]),
                             ("the system bundle", [])]:
            s = start(H.Server("--upstream", untrusted.url, *flags, env=env))
            try:
                for era in ("modern", "session"):
                    if era == "modern":
                        r = modern_call(s.port)
                    else:
                        sid = open_session(s.port)
                        r = H.session_post(s.port, sid, rpc("tools/call", 1, {"name": "get_users_me",
                                                                               "arguments": {}}))
                    res = tool_result(r, "get_users_me")
                    text = res["content"][0]["text"]
                    if res["isError"] is not True or "TLS" not in text or "not trusted" not in text:
                        problems.append(f"{label}, {era}: the untrusted certificate was not refused as untrusted: "
                                        f"{text[:200]}")
            finally:
                stop(s)
    finally:
        stop(untrusted)
    assert not problems, "\n    ".join([""] + problems)


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
