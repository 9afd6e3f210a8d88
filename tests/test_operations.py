#!/usr/bin/env python3
"""What an operator sees: GET /metrics (checked with a real Prometheus text
parser), the access log (text and --log-format json), and the graceful stop
on SIGTERM that finishes the tool calls in flight.

    python3 tests/test_operations.py [name-filter...]

Tool calls reach the fake Cal ID API (tests/fake_calid.py), which is told to
answer slowly or fail where a test needs it.
"""
import http.client
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def prometheus_parser():
    """prometheus_client's text parser (Debian's python3-prometheus-client,
    which tests/setup.sh installs; found on the system path when the python3
    running the tests is another one)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            raise AssertionError("python3-prometheus-client is not installed (bash tests/setup.sh)") from None
    return text_string_to_metric_families


TOKEN = "calid_ops_S3CRET_token"
FAKE = None


def setup():
    global FAKE
    FAKE = H.FakeCalid().start()


def teardown():
    if FAKE:
        FAKE.close()


def fake_control(method, path, body=None):
    ctx = ssl.create_default_context(cafile=FAKE.ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", FAKE.port, context=ctx, timeout=H.IO_TIMEOUT)
    try:
        c.request(method, path, body=None if body is None else json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        raw = r.read()
        assert r.status == 200, f"fake {method} {path}: {r.status} {raw[:200]!r}"
        return json.loads(raw)
    finally:
        c.close()


def rpc(method, id=1, params=None):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def call(port, name, args=None, id=1, source=None):
    r = H.modern_post(port, "tools/call", {"name": name, "arguments": args or {}}, id=id, token=TOKEN, source=source)
    assert r.status == 200, f"{name}: {r.status} {r.text[:300]}"
    return r.json()["result"]


def scrape(port):
    """{(name, frozenset(labels)): value} from GET /metrics, parsed by prometheus_client."""
    r = H.get(port, "/metrics")
    assert r.status == 200, f"/metrics: {r.status} {r.text[:200]}"
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.header_list
    out = {}
    for fam in prometheus_parser()(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, r.text


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def test_metrics_count_what_was_asked():
    fake_control("POST", "/__fake/reset")
    with H.Server(*FAKE.server_flags()) as s:
        port = s.port
        sids = [H.initialize(port, token=TOKEN) for _ in range(3)]
        for sid in sids[:2]:
            assert H.session_post(port, sid, rpc("tools/list", 2), token=TOKEN).status == 200
        H.session_post(port, sids[0], [rpc("ping", 1), rpc("ping", 2)], token=TOKEN)  # a batch
        for i in range(4):
            assert call(port, "get_users_me", id=i)["isError"] is False
        assert call(port, "get_contact", {"contactId": 987654321})["isError"] is True  # the API answers 404
        fake_control("POST", "/__fake/fault", {"path": "/teams", "mode": "reset", "count": -1})
        res = call(port, "get_teams")
        fake_control("DELETE", "/__fake/fault")
        assert res["isError"] is True and "Could not complete" in res["content"][0]["text"], res
        # what a client sends never becomes a label
        r = H.modern_post(port, 'evil"method', token=TOKEN)
        assert r.status in (400, 404), r.status
        r = H.modern_post(port, "tools/call", {"name": "evil_tool_name", "arguments": {}}, token=TOKEN)
        assert r.status == 200 and "error" in r.json(), r.text[:200]
        assert H.get(port, "/healthz").status == 200
        assert H.get(port, "/mcp", method="DELETE", headers={"Mcp-Session-Id": sids[2],
                                                             "Authorization": f"Bearer {TOKEN}"}).status == 200
        m, text = scrape(port)
        assert "evil" not in text, "a client's method or tool name became a label"
        checks = [
            (val(m, "calid_mcp_requests_total", method="initialize", status="200"), 3),
            (val(m, "calid_mcp_requests_total", method="tools/list", status="200"), 2),
            (val(m, "calid_mcp_requests_total", method="batch", status="200"), 1),
            (val(m, "calid_mcp_requests_total", method="tools/call", status="200"), 7),
            (val(m, "calid_mcp_requests_total", method="none", status="200"), 2),  # /healthz and the DELETE
            (val(m, "calid_mcp_tool_calls_total", tool="get_users_me", outcome="ok"), 4),
            (val(m, "calid_mcp_tool_calls_total", tool="get_contact", outcome="api_error"), 1),
            (val(m, "calid_mcp_tool_calls_total", tool="get_teams", outcome="transport_error"), 1),
            (val(m, "calid_mcp_api_request_duration_seconds_count"), 6),
            (val(m, "calid_mcp_api_request_duration_seconds_bucket", le="+Inf"), 6),
            (val(m, "calid_mcp_sessions_opened_total"), 3),
            (val(m, "calid_mcp_ended_sessions"), 1),
            (val(m, "calid_mcp_ended_sessions_limit"), 64),
            (val(m, "calid_mcp_connections"), 1),
            (val(m, "calid_mcp_connections_limit"), 16),
            (val(m, "calid_mcp_refused_busy_total"), 0),
        ]
        bad = [f"check {i}: {got} != {want}" for i, (got, want) in enumerate(checks) if got != want]
        assert not bad, "\n".join(bad) + "\n" + text
        other = sum(v for (n, ls), v in m.items() if n == "calid_mcp_requests_total" and ("method", "other") in ls)
        assert other == 1, f"the made-up method counts {other} under 'other'"
        full = val(m, "calid_mcp_tls_handshakes_total", side="upstream", kind="full")
        resumed = val(m, "calid_mcp_tls_handshakes_total", side="upstream", kind="resumed")
        stats = fake_control("GET", "/__fake/stats")
        assert full >= 1 and full + resumed >= 1, (full, resumed, stats)
        # buckets are cumulative and the sum is plausible
        les = sorted((float(dict(ls)["le"]), v) for (n, ls), v in m.items()
                     if n == "calid_mcp_api_request_duration_seconds_bucket")
        assert all(a[1] <= b[1] for a, b in zip(les, les[1:])), les
        assert 0 < val(m, "calid_mcp_api_request_duration_seconds_sum") < 60
        r = H.get(port, "/metrics", method="POST")
        assert r.status == 405 and "GET" in r.headers.get("allow", ""), r.status
        r = H.get(port, "/metrics", headers={"Host": "evil.example"})
        assert r.status == 403, f"/metrics under another Host name: {r.status}"


def test_refused_tool_calls_are_counted():
    """Tool calls answered without an API request count as outcome="refused"
    under their tool (a name not in the catalog under "unknown"): an unknown
    name, arguments the schema refuses (isError), arguments that are not an
    object (-32602), a tool a request's ?toolsets= or --read-only leaves out,
    an Mcp-Param header that disagrees (-32020), one inside a batch. None
    reaches the API, and the calls that do are counted as before."""
    fake_control("POST", "/__fake/reset")
    with H.Server(*FAKE.server_flags()) as s:
        port = s.port
        base = fake_control("GET", "/__fake/stats")
        r = H.modern_post(port, "tools/call", {"name": "no_such_tool", "arguments": {}}, token=TOKEN)
        assert r.status == 200 and r.json()["error"]["code"] == -32602, r.text[:200]
        assert call(port, "get_contact", {"contactId": "not a number"})["isError"] is True
        r = H.modern_post(port, "tools/call", {"name": "get_contact", "arguments": [1]}, token=TOKEN)
        assert r.json()["error"]["code"] == -32602, r.text[:200]
        body = H.modern_body("tools/call", {"name": "get_teams", "arguments": {}})
        r = H.post_json(port, body, token=TOKEN, path="/mcp?toolsets=users",
                        headers=[("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "get_teams")])
        assert r.json()["error"]["code"] == -32602 and "toolsets" in r.json()["error"]["message"], r.text[:300]
        r = H.modern_post(port, "tools/call", {"name": "get_contact", "arguments": {"contactId": 5}}, token=TOKEN,
                          headers={"Mcp-Param-ContactId": "6"})
        assert r.status == 400 and r.json()["error"]["code"] == -32020, r.text[:200]
        sid = H.initialize(port, token=TOKEN)
        r = H.session_post(port, sid, [rpc("tools/call", 1, {"name": "get_users_me", "arguments": {}}),
                                       rpc("tools/call", 2, {"name": "other_missing_tool", "arguments": {}})], token=TOKEN)
        assert r.status == 200 and len(r.json()) == 2, r.text[:300]
        assert call(port, "get_users_me")["isError"] is False
        stats = fake_control("GET", "/__fake/stats")
        m, text = scrape(port)
    with H.Server(*FAKE.server_flags(), "--read-only") as s:
        r = H.modern_post(s.port, "tools/call", {"name": "delete_contact", "arguments": {"contactId": 5}}, token=TOKEN)
        assert r.json()["error"]["code"] == -32602 and "--read-only" in r.json()["error"]["message"], r.text[:300]
        m_ro, text_ro = scrape(s.port)
    assert "no_such_tool" not in text and "other_missing_tool" not in text, "a client's tool name became a label"
    checks = [
        (val(m, "calid_mcp_tool_calls_total", tool="unknown", outcome="refused"), 2),
        (val(m, "calid_mcp_tool_calls_total", tool="get_contact", outcome="refused"), 3),
        (val(m, "calid_mcp_tool_calls_total", tool="get_teams", outcome="refused"), 1),
        (val(m, "calid_mcp_tool_calls_total", tool="get_users_me", outcome="ok"), 2),
        (val(m, "calid_mcp_api_request_duration_seconds_count"), 2),
        (sum(v for (n, _), v in m.items() if n == "calid_mcp_tool_calls_total"), 8),
        (val(m_ro, "calid_mcp_tool_calls_total", tool="delete_contact", outcome="refused"), 1),
    ]
    bad = [f"check {i}: {got} != {want}" for i, (got, want) in enumerate(checks) if got != want]
    assert not bad, "\n".join(bad) + "\n" + text
    assert stats["api_requests"] - base["api_requests"] == 2, (base, stats)  # the two get_users_me only


ACCESS_RE = re.compile(r"calid-mcp info: access time=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) client=127\.0\.0\.1 "
                       r"http=(\S+) path=(\S+) mcp=(\S+) tool=(\S+) status=(\d+) ms=(\d+) api_status=(\S+) api_ms=(\S+)$")


def traffic(port):
    sid = H.initialize(port, token=TOKEN)
    H.session_post(port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}), token=TOKEN)
    call(port, "get_contact", {"contactId": 987654321})
    H.get(port, "/healthz")
    H.get(port, "/nowhere?secret=S3CRET")
    H.post_json(port, rpc("ping"), token=None)  # 401


def test_access_log_text_one_line_per_request():
    with H.Server(*FAKE.server_flags()) as s:
        traffic(s.port)
        s.stop()
        log = s.stderr_text()
    assert "S3CRET" not in log, "a token or query string reached the log"
    lines = [ln for ln in log.splitlines() if " access " in ln]
    got = []
    for ln in lines:
        m = ACCESS_RE.match(ln)
        assert m, f"malformed access line: {ln!r}"
        got.append(m.groups()[1:])
    want = [
        ("POST", "/mcp", "initialize", "-", "200", "-", "-"),
        ("POST", "/mcp", "tools/call", "get_users_me", "200", "200", None),
        ("POST", "/mcp", "tools/call", "get_contact", "200", "404", None),
        ("GET", "/healthz", "none", "-", "200", "-", "-"),
        ("GET", "-", "none", "-", "404", "-", "-"),
        ("POST", "/mcp", "none", "-", "401", "-", "-"),
    ]
    assert len(got) == len(want), "\n".join(lines)
    for g, w in zip(got, want):
        http_, path, mcp, tool, status, _ms, api_status, api_ms = g
        assert (http_, path, mcp, tool, status, api_status) == w[:6], f"{g} != {w}"
        if w[6] is None:
            assert api_ms.isdigit(), g
        else:
            assert api_ms == "-", g


def test_access_log_json_for_shippers():
    with H.Server(*FAKE.server_flags(), "--log-format", "json") as s:
        traffic(s.port)
        s.stop()
        log = s.stderr_text()
    assert "S3CRET" not in log
    docs = []
    for ln in log.splitlines():
        try:
            docs.append(json.loads(ln))
        except ValueError:
            raise AssertionError(f"a log line is not JSON: {ln!r}") from None
    assert all({"time", "level", "msg"} <= d.keys() for d in docs), docs[:3]
    access = [d for d in docs if d["msg"] == "access"]
    assert len(access) == 6, access
    call_ = access[1]
    assert call_["http"] == "POST" and call_["path"] == "/mcp" and call_["mcp"] == "tools/call", call_
    assert call_["tool"] == "get_users_me" and call_["status"] == 200 and call_["api_status"] == 200, call_
    assert isinstance(call_["ms"], int) and isinstance(call_["api_ms"], int), call_
    assert access[0]["tool"] is None and access[0]["api_status"] is None and access[0]["api_ms"] is None, access[0]
    assert call_["client"] == "127.0.0.1", call_  # the address, not the port
    assert any(d["msg"].startswith("serving MCP") for d in docs), "the start line is not JSON too"
    rc, _, err = H.run_binary(["--log-format", "xml"])
    assert rc == 2 and "log format" in err, (rc, err)


def test_sigterm_finishes_ten_tool_calls_waiting_on_a_slow_api():
    """Ten tool calls wait on an API that takes 1.5 s each (four at a time:
    CM_MAX_UPSTREAMS), so about 4.5 s of work, well inside CM_DRAIN_MS
    (30 s). SIGTERM arrives while they wait; all ten are answered, new
    connections are refused, and the process exits 0 afterwards."""
    fake_control("POST", "/__fake/reset")
    fake_control("POST", "/__fake/fault", {"path": "/users/me", "mode": "delay", "delay_ms": 1500, "count": -1})
    s = H.Server(*FAKE.server_flags()).start()
    results = [None] * 10
    try:
        port = s.port

        def one(i):
            try:
                # two clients: one address holds at most CM_MAX_CONNS_PER_ADDR (8) connections
                results[i] = call(port, "get_users_me", id=i, source=f"127.0.0.{1 + i % 2}")
            except Exception as e:  # noqa: BLE001 - recorded and asserted below
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # all ten connected, the first calls at the API
            m, _ = scrape(port)
            if val(m, "calid_mcp_connections") == 11:
                break
            time.sleep(0.05)
        assert val(m, "calid_mcp_connections") == 11, "the ten calls did not all arrive"
        time.sleep(0.3)  # their bodies are in: each was sent in one write
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        refused = False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            refused = True
        for t in threads:
            t.join(40)
        try:
            rc = s.proc.wait(40)
        except Exception:  # noqa: BLE001
            rc = None
        bad = [(i, r) for i, r in enumerate(results) if not isinstance(r, dict) or r.get("isError") is not False]
        assert not bad, f"{len(bad)} of 10 calls were not answered: {bad[:3]}"
        assert refused, "a new connection was accepted while stopping"
        assert rc == 0, f"exit status {rc}"
        recorded = fake_control("GET", "/__fake/requests?path=/users/me")
        assert len(recorded) == 10, f"the API saw {len(recorded)} calls"
        log = s.stderr_text()
        assert "every request was answered" in log, log[-600:]
    finally:
        s.close()
        fake_control("DELETE", "/__fake/fault")


def test_a_second_signal_stops_at_once():
    fake_control("POST", "/__fake/fault", {"path": "/users/me", "mode": "stall", "delay_ms": 60000, "count": 1})
    s = H.Server(*FAKE.server_flags()).start()
    out = {}
    try:
        t = threading.Thread(target=lambda: out.update(r=_try_call(s.port)))
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not fake_control("GET", "/__fake/requests?path=/users/me"):
            time.sleep(0.05)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert s.proc.poll() is None, "the first SIGTERM did not wait for the call in flight"
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(10)
        assert rc == 0, rc
        t.join(10)
        assert isinstance(out.get("r"), Exception), f"the stalled call was answered: {out}"
    finally:
        s.close()
        fake_control("DELETE", "/__fake/fault")


def _try_call(port):
    try:
        return call(port, "get_users_me")
    except Exception as e:  # noqa: BLE001
        return e


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
