#!/usr/bin/env python3
"""Session ids that any instance with the same secret accepts, and the small
table of ended ids that strangers cannot churn.

    python3 tests/test_sessions.py [name-filter...]

Instances run side by side on loopback (no balancer here: the requests go to
the instance each test names; tests/test_scaleout.py puts nginx in front).
Tool calls reach the fake Cal ID API (tests/fake_calid.py).
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

TOKEN = "calid_session_owner"
FAKE = None
TMP = None


def setup():
    global FAKE, TMP
    FAKE = H.FakeCalid().start()
    TMP = tempfile.mkdtemp(prefix="calid_sessions_")


def teardown():
    if FAKE:
        FAKE.close()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def rpc(method, id=1, params=None):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def ping(port, sid, token=TOKEN):
    return H.session_post(port, sid, rpc("ping", "p"), token=token)


def delete(port, sid, token=TOKEN):
    return H.get(port, "/mcp", method="DELETE", headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {token}"})


def instances(n, secret_name="shared.key", *extra):
    """n servers sharing one secret file (None: each its own random secret)."""
    flags = list(FAKE.server_flags()) + list(extra)
    if secret_name:
        flags += ["--secret-file", os.path.join(TMP, secret_name)]
    servers = [H.Server(*flags).start()]  # the first creates the file
    servers += [H.Server(*flags).start() for _ in range(n - 1)]
    return servers


def close_all(servers):
    for s in servers:
        s.close()


def test_the_secret_file_is_made_once_with_mode_0600():
    servers = instances(2, "made.key")
    try:
        path = os.path.join(TMP, "made.key")
        st = os.stat(path)
        assert st.st_size == 32 and (st.st_mode & 0o777) == 0o600, f"{st.st_size} bytes, mode {oct(st.st_mode)}"
    finally:
        close_all(servers)


def test_a_session_opened_on_one_instance_works_on_the_others():
    a, b, c = servers = instances(3)
    try:
        sid = H.initialize(a.port, token=TOKEN, version="2025-11-25")
        for s in servers:
            r = H.session_post(s.port, sid, rpc("tools/list", 2), token=TOKEN, version="2025-11-25")
            assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"{s.port}: {r.status} {r.text[:200]}"
        r = H.session_post(c.port, sid, rpc("tools/call", 3, {"name": "get_users_me", "arguments": {}}), token=TOKEN)
        res = r.json()["result"]
        assert res["isError"] is False, res
        assert b.alive()
    finally:
        close_all(servers)


def test_the_negotiated_version_travels_in_the_id():
    a, b = servers = instances(2)
    try:
        old = H.initialize(a.port, token=TOKEN, version="2025-03-26")
        new = H.initialize(a.port, token=TOKEN, version="2025-11-25")
        r = H.session_post(b.port, old, [rpc("ping", 1), rpc("ping", 2)], token=TOKEN)
        assert r.status == 200 and len(r.json()) == 2, f"batch in a 2025-03-26 session on another instance: {r.status} {r.text[:200]}"
        r = H.session_post(b.port, new, [rpc("ping", 1)], token=TOKEN)
        assert r.status == 400 and "2025-11-25" in r.text, f"batch in a 2025-11-25 session: {r.status} {r.text[:200]}"
    finally:
        close_all(servers)


def test_another_token_is_refused_on_every_instance():
    servers = instances(2)
    try:
        sid = H.initialize(servers[0].port, token=TOKEN)
        for s in servers:
            r = ping(s.port, sid, token="calid_someone_else")
            assert r.status == 404, f"{s.port}: {r.status} {r.text[:200]}"
            assert ping(s.port, sid).status == 200
    finally:
        close_all(servers)


def test_other_secrets_refuse_the_id():
    shared = instances(1, "one.key")
    other = instances(1, "two.key")
    random_secret = instances(1, None)
    try:
        sid = H.initialize(shared[0].port, token=TOKEN)
        for s in other + random_secret:
            r = ping(s.port, sid)
            assert r.status == 404 and "Session not found" in r.text, f"{s.port}: {r.status} {r.text[:200]}"
        own = H.initialize(random_secret[0].port, token=TOKEN)
        assert ping(random_secret[0].port, own).status == 200, "a random-secret instance refuses its own session"
        assert ping(shared[0].port, own).status == 404
    finally:
        close_all(shared + other + random_secret)


def test_a_restart_with_the_same_secret_keeps_the_session():
    (a,) = instances(1, "restart.key")
    try:
        sid = H.initialize(a.port, token=TOKEN)
        a.stop()
        a.start()
        assert ping(a.port, sid).status == 200, "the session did not survive a restart with the same secret"
    finally:
        a.close()


def test_delete_ends_the_session_on_the_instance_that_receives_it():
    a, b = servers = instances(2)
    try:
        sid = H.initialize(a.port, token=TOKEN)
        assert delete(b.port, sid, token="calid_intruder").status == 404, "another token ended the session"
        r = delete(b.port, sid)
        assert r.status == 200, f"DELETE: {r.status} {r.text[:200]}"
        assert ping(b.port, sid).status == 404, "the instance that ended the session still serves it"
        assert delete(b.port, sid).status == 404, "a second DELETE"
        # documented: the other instances do not hear of it
        assert ping(a.port, sid).status == 200
        assert H.get(b.port, "/healthz").json()["endedSessions"] == 1
    finally:
        close_all(servers)


def kept_alive_ping(c, port, sid, token=TOKEN):
    """A ping on the kept-alive connection c; the Response."""
    body = json.dumps(rpc("ping", "k")).encode()
    headers = [("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH), ("Mcp-Session-Id", sid)]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    c.send(H.build_request("POST", "/mcp", headers, body, port=port))
    return c.read_response()


def test_a_kept_alive_connection_sees_every_change_to_its_session():
    """A connection remembers the session it last proved (the same id with
    the same token skips the id's HMAC): another token, a DELETE on another
    connection or on the same one, and a forged id are still refused on it,
    and the connection goes on serving."""
    (s,) = instances(1, "memo.key")
    try:
        port = s.port
        sid, other = H.initialize(port, token=TOKEN), H.initialize(port, token=TOKEN)
        with H.Conn(port) as c:
            for k in range(3):
                assert kept_alive_ping(c, port, sid).status == 200, f"ping {k}"
            r = kept_alive_ping(c, port, sid, token="calid_intruder")
            assert r.status == 404, f"another token used the remembered session: {r.status} {r.text[:200]}"
            r = kept_alive_ping(c, port, sid, token=TOKEN + "x")
            assert r.status == 404, f"a longer token with the same prefix: {r.status}"
            r = kept_alive_ping(c, port, sid, token=None)
            assert r.status == 401, f"no token at all: {r.status}"
            assert kept_alive_ping(c, port, sid).status == 200, "the right token again"
        with H.Conn(port) as c:
            assert kept_alive_ping(c, port, sid).status == 200
            assert kept_alive_ping(c, port, sid[:-1] + ("A" if sid[-1] != "A" else "B")).status == 404, "a forged id"
            assert kept_alive_ping(c, port, other).status == 200, "the other session"
            assert kept_alive_ping(c, port, sid).status == 200, "back to the first"
            assert delete(port, sid).status == 200, "DELETE on another connection"
            r = kept_alive_ping(c, port, sid)
            assert r.status == 404, f"the ended session still served on a kept-alive connection: {r.status}"
            assert kept_alive_ping(c, port, other).status == 200, "the other session is still open"
            c.send(H.build_request("DELETE", "/mcp", [("Mcp-Session-Id", other), ("Authorization", f"Bearer {TOKEN}")],
                                       port=port))
            assert c.read_response(method="DELETE").status == 200, "DELETE on the same connection"
            assert kept_alive_ping(c, port, other).status == 404, "ended on this very connection"
    finally:
        s.close()


def test_the_log_level_is_kept_by_the_instance_that_was_told():
    """logging/setLevel comes after the id is made, so it cannot travel in
    it: the instance told keeps it; another instance sends no log messages
    for that session (harmless: the client just gets none)."""
    a, b = servers = instances(2)
    try:
        sid = H.initialize(a.port, token=TOKEN, version="2025-11-25")
        r = H.session_post(a.port, sid, rpc("logging/setLevel", 1, {"level": "info"}), token=TOKEN)
        assert r.status == 200 and r.json()["result"] == {}, r.text[:200]
        sse = {"Accept": "text/event-stream"}

        def messages(port):
            r = H.session_post(port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}),
                               token=TOKEN, headers=sse)
            assert r.status == 200, r.text[:200]
            events = [json.loads(e["data"]) for e in r.sse_events()]
            assert events[-1]["result"]["isError"] is False, events[-1]
            return [e for e in events if e.get("method") == "notifications/message"]

        assert len(messages(a.port)) == 1, "the instance told sends no log message"
        assert messages(b.port) == [], "another instance knew the level"
    finally:
        close_all(servers)


def test_junk_tokens_neither_evict_real_sessions_nor_revive_ended_ones():
    """Issue 16 item 3: any bearer can initialize (and DELETE) for free. A
    real session opened before the churn keeps working; a real session
    ended before it stays ended."""
    (s,) = instances(1, "churn.key")
    try:
        port = s.port
        live = H.initialize(port, token=TOKEN)
        gone = H.initialize(port, token=TOKEN)
        assert delete(port, gone).status == 200
        with H.Conn(port) as c:
            refused = ended = 0
            for k in range(200):
                junk = f"calid_junk_{k}"
                body = json.dumps(rpc("initialize", k, {"protocolVersion": "2025-11-25", "capabilities": {},
                                                          "clientInfo": {"name": "junk", "version": "1"}})).encode()
                c.send(H.build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
                                                        ("Authorization", f"Bearer {junk}")], body, port=port))
                r = c.read_response()
                assert r.status == 200, f"junk initialize {k}: {r.status}"
                sid = r.headers["mcp-session-id"]
                c.send(H.build_request("DELETE", "/mcp", [("Mcp-Session-Id", sid), ("Authorization", f"Bearer {junk}")],
                                       port=port))
                r = c.read_response(method="DELETE")
                assert r.status in (200, 503), f"junk DELETE {k}: {r.status} {r.text[:200]}"
                if r.status == 503:
                    refused += 1
                    assert "stays open" in r.text and r.headers.get("retry-after"), r.header_list
                else:
                    ended += 1
            # one junk token, many sessions: bounded by its share
            for k in range(100):
                sid = H.initialize(port, token="calid_junk_one")
                delete(port, sid, token="calid_junk_one")
        print(f"  200 junk tokens: {ended} DELETEs remembered, {refused} refused (table full of recent entries)")
        # the table holds 64: the real DELETE and 63 junk ones; the rest are refused, nothing is forgotten
        assert (ended, refused) == (63, 137), f"expected 63 remembered and 137 refused, got {ended} and {refused}"
        r = ping(port, live)
        assert r.status == 200, f"the real session was pushed out: {r.status} {r.text[:200]}"
        r = ping(port, gone)
        assert r.status == 404, f"the real ended session came back: {r.status} {r.text[:200]}"
        assert H.get(port, "/healthz").json()["endedSessions"] == 64
    finally:
        s.close()


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
