#!/usr/bin/env python3
"""The server against an API that misbehaves: writes never sent twice, reads
retried, API slots shared first come first served, and a call that cannot get
a slot in time ends in a clear tool error.

The API here is tests/upstream_tls_server.py in --api mode (every unknown path
answers like a Cal ID success), with --drop-nth 2 (the second request of each
connection is read and then the connection closes without an answer) or
--api-delay-ms (slow answers). Its /stats counts the requests it received per
method, dropped ones included.

Run: CALID_MCP_BIN=build/calid_mcp CALID_TEST_CERTS=build/certs python3 tests/test_upstream_faults.py
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

# the deadline the variant binary is built with for the waiting test
SHORT_WAIT_MS = 1000


class TlsApi(H.FakeCalid):
    """tests/upstream_tls_server.py, started like the fake (same certificates)."""
    SCRIPT = os.path.join(H.ROOT, "tests", "upstream_tls_server.py")

    def stats(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(self.url + "/stats", context=ctx, timeout=10) as r:
            return json.loads(r.read())

    def count(self, method):
        return self.stats()["methods"].get(method, 0)


def call_body(name, arguments, id=1):
    return H.modern_body("tools/call", {"name": name, "arguments": arguments}, id=id)


def call(port, name, arguments, id=1):
    """One tools/call on a fresh connection; returns (is_error, text)."""
    r = H.modern_post(port, "tools/call", {"name": name, "arguments": arguments}, id=id)
    assert r.status == 200, f"{name}: HTTP {r.status} {r.text[:300]}"
    res = r.json()["result"]
    return res.get("isError", False), res["content"][0]["text"]


class KeptAliveClient:
    """One MCP client on one kept-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = H.Conn(port, timeout=30)

    def call(self, name, arguments, id=1):
        body = json.dumps(call_body(name, arguments, id)).encode()
        headers = [("Host", f"127.0.0.1:{self.port}"), ("Content-Type", "application/json"),
                   ("Accept", H.ACCEPT_BOTH), ("Authorization", f"Bearer {H.DEFAULT_TOKEN}"),
                   ("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", name)]
        self.conn.send(H.build_request("POST", "/mcp", headers, body))
        r = self.conn.read_response()
        assert r.status == 200, f"{name}: HTTP {r.status} {r.text[:300]}"
        res = r.json()["result"]
        return res.get("isError", False), res["content"][0]["text"]

    def close(self):
        self.conn.close()


# create_booking with every field the API needs (and then some): whatever the
# catalog requires, this passes its checks
BOOKING = {"eventTypeId": 1, "start": "2030-01-07T10:00:00Z", "end": "2030-01-07T10:30:00Z",
           "timeZone": "Europe/Berlin", "language": "en", "metadata": {},
           "responses": {"name": "Ada Lovelace", "email": "ada@example.com"}}


def read_tool(port):
    """A read-only tool that needs no arguments (get_users_me if there is one)."""
    r = H.modern_post(port, "tools/list")
    tools = r.json()["result"]["tools"]
    free = [t["name"] for t in tools
            if t.get("annotations", {}).get("readOnlyHint") and not t["inputSchema"].get("required")]
    assert free, "no read-only tool without required arguments in tools/list"
    return "get_users_me" if "get_users_me" in free else free[0]


def test_writes_are_never_sent_twice():
    with TlsApi("--api", "--drop-nth", "2") as api:
        srv = H.Server(*api.server_flags()).start()
        try:
            results = [call(srv.port, "create_booking", BOOKING, id=i) for i in range(4)]
            posts = api.count("POST")
        finally:
            srv.stop()
    unknown = [text for err, text in results if err]
    ok = [text for err, text in results if not err]
    print(f"  4 create_booking against an API that drops the 2nd request of each connection: "
          f"{posts} POSTs received, {len(ok)} answered, {len(unknown)} with an unknown outcome")
    assert posts == 4, f"{posts} POSTs reached the API for 4 calls"
    assert len(ok) == 2 and len(unknown) == 2, results
    for text in unknown:
        assert "may have" in text and "not sent again" in text, text
        assert "before" in text and ("get_" in text or "list_" in text), text
    print(f"  unknown outcome -> {unknown[0]}")


def test_reads_are_retried_transparently():
    with TlsApi("--api", "--drop-nth", "2") as api:
        srv = H.Server(*api.server_flags()).start()
        try:
            tool = read_tool(srv.port)
            results = [call(srv.port, tool, {}, id=i) for i in range(4)]
            gets = api.count("GET")
        finally:
            srv.stop()
    print(f"  4 {tool} on the same API: {sum(not e for e, _ in results)} answered, {gets} GETs sent")
    assert all(not e for e, _ in results), results
    assert gets == 7, f"{gets} GETs: calls 2-4 should each have been retried once"


def batch_call(name, arguments, id):
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_batch_and_stdio_follow_the_same_rule():
    """The 2025-03-26 batch path and the stdio transport: a dropped write is
    not re-sent, a dropped read is."""
    with TlsApi("--api", "--drop-nth", "2") as api:
        srv = H.Server(*api.server_flags()).start()
        try:
            tool = read_tool(srv.port)
            sid = H.initialize(srv.port, version="2025-03-26")
            batch = [batch_call("create_booking", BOOKING, 1), batch_call("create_booking", BOOKING, 2),
                     batch_call(tool, {}, 3), batch_call(tool, {}, 4)]
            r = H.session_post(srv.port, sid, batch, version="2025-03-26")
            assert r.status == 200, r.text[:300]
            answers = {m["id"]: m["result"] for m in r.json()}
            posts, gets = api.count("POST"), api.count("GET")
        finally:
            srv.stop()
        flags = [not answers[i].get("isError", False) for i in (1, 2, 3, 4)]
        print(f"  batch [create_booking x2, {tool} x2]: ok {flags}, {posts} POSTs, {gets} GETs")
        assert flags == [True, False, True, True], answers
        assert "not sent again" in answers[2]["content"][0]["text"], answers[2]
        assert posts == 2 and gets == 3, (posts, gets)

        before = api.count("POST")
        lines = [{"jsonrpc": "2.0", "id": 0, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "t", "version": "1"}}},
                 {"jsonrpc": "2.0", "method": "notifications/initialized"}]
        lines += [batch_call("create_booking", BOOKING, i) for i in range(1, 5)]
        p = subprocess.run([H.BIN, "--stdio", "--upstream", api.url, "--ca-file", api.ca_file],
                           input="".join(json.dumps(x) + "\n" for x in lines), capture_output=True, text=True,
                           timeout=60, env=H.clean_env({"CALID_API_KEY": H.DEFAULT_TOKEN}))
        out = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        results = [m["result"] for m in out if m.get("id") in (1, 2, 3, 4)]
        stdio_posts = api.count("POST") - before
    errs = sum(bool(res.get("isError")) for res in results)
    print(f"  stdio: 4 create_booking -> {stdio_posts} POSTs, {errs} with an unknown outcome")
    assert len(results) == 4, p.stdout[-500:] + p.stderr[-500:]
    assert stdio_posts == 4 and errs == 2, (stdio_posts, results)


def test_slots_are_shared_first_come_first_served():
    """8 kept-alive clients, 4 API slots, answers after 0.3 s: every client
    gets about the same number of calls."""
    clients, seconds = 8, 4.0
    with TlsApi("--api", "--api-delay-ms", "300") as api:
        srv = H.Server(*api.server_flags()).start()
        try:
            tool = read_tool(srv.port)
            counts = [0] * clients
            errors = []
            start = threading.Barrier(clients)
            stop_at = [0.0]

            def run(k):
                c = KeptAliveClient(srv.port)
                try:
                    start.wait()
                    if k == 0:
                        stop_at[0] = time.monotonic() + seconds
                    while stop_at[0] == 0.0:
                        time.sleep(0.001)
                    while time.monotonic() < stop_at[0]:
                        err, text = c.call(tool, {}, id=counts[k])
                        if err:
                            errors.append(text)
                            return
                        counts[k] += 1
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                finally:
                    c.close()

            threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            srv.stop()
    print(f"  {clients} kept-alive clients, 4 slots, 0.3 s answers, {seconds:.0f} s: calls per client "
          f"{sorted(counts, reverse=True)}")
    assert not errors, errors[:3]
    lo, hi = min(counts), max(counts)
    assert lo >= 1, counts
    assert hi - lo <= 2 or hi <= 1.5 * lo, f"unfair: {counts}"


def test_an_answer_ended_by_a_bare_close_is_a_truncation():
    """An API answer delimited by the connection's close counts only when the
    close is TLS close_notify; a bare TCP close could have cut it short."""
    results = {}
    for how in ("notify", "eof"):
        with TlsApi("--api", "--api-close", how) as api:
            srv = H.Server(*api.server_flags()).start()
            try:
                results[how] = call(srv.port, read_tool(srv.port), {})
            finally:
                srv.stop()
    print(f"  close-delimited answer, close_notify -> isError {results['notify'][0]}; "
          f"bare TCP close -> {results['eof'][1]}")
    assert results["notify"][0] is False and '"status": "success"' in results["notify"][1], results["notify"]
    err, text = results["eof"]
    assert err and "without TLS close_notify" in text and "truncated" in text, text


def build_short_wait_binary(out):
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-std=c11", "-O1", "-D_POSIX_C_SOURCE=200809L", "-DCALID_MCP_MAIN",
           f"-DCM_UPSTREAM_WAIT_MS={SHORT_WAIT_MS}", "-o", out,
           os.path.join(H.ROOT, "calid_mcp.c"), os.path.join(H.ROOT, "port", "posix.c"), "-lbearssl", "-lpthread"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"building the short-wait variant failed: {p.stderr[-2000:]}"


def test_a_waiting_call_has_a_deadline():
    """4 slots busy for 6 s; a 5th call waits past CM_UPSTREAM_WAIT_MS (1 s in
    this build) and is answered with a tool error, and so is each call of a
    2025-03-26 batch (one after the other); the 4 finish normally. /metrics
    counts the 3 under outcome="busy", the 4 as ok."""
    tmp = tempfile.mkdtemp(prefix="calid_wait_")
    binary = os.path.join(tmp, "calid_mcp")
    try:
        build_short_wait_binary(binary)
        with TlsApi("--api", "--api-delay-ms", "6000") as api:
            srv = H.Server(*api.server_flags(), binary=binary).start()
            try:
                tool = read_tool(srv.port)
                sid = H.initialize(srv.port, version="2025-03-26")
                base = api.count("GET")
                busy = [None] * 4

                def run(k):
                    busy[k] = call(srv.port, tool, {}, id=k)

                threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 10
                while api.count("GET") < base + 4 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert api.count("GET") == base + 4, "the 4 calls did not reach the API"
                t0 = time.monotonic()
                err, text = call(srv.port, tool, {}, id=9)
                waited = time.monotonic() - t0
                r = H.session_post(srv.port, sid, [batch_call(tool, {}, 10), batch_call(tool, {}, 11)],
                                   version="2025-03-26")
                batch = r.json()
                for t in threads:
                    t.join(30)
                sent = api.count("GET") - base
                from test_operations import prometheus_parser
                page = H.get(srv.port, "/metrics").text
                calls = {s.labels["outcome"]: s.value for fam in prometheus_parser()(page) for s in fam.samples
                         if s.name == "calid_mcp_tool_calls_total" and s.labels["tool"] == tool}
            finally:
                srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  5th call with 4 slots busy: answered after {waited:.1f} s: {text}")
    assert err, text
    assert "CM_UPSTREAM_WAIT_MS" in text and "not sent" in text, text
    assert sent == 4, f"{sent} requests reached the API: the 5th must not"
    assert [m["id"] for m in batch] == [10, 11], batch
    assert all(m["result"]["isError"] and "CM_UPSTREAM_WAIT_MS" in m["result"]["content"][0]["text"]
               for m in batch), batch
    assert all(b is not None and not b[0] for b in busy), busy
    assert calls == {"ok": 4, "busy": 3}, f"/metrics: {calls} (4 sent, 3 not sent: busy)"


if __name__ == "__main__":
    H.ensure_certs(H.CERTS)
    H.run_tests(globals())
