#!/usr/bin/env python3
"""Integration tests: run the calid_mcp binary and talk to it over real sockets.

    python3 tests/test_server.py            # every test
    python3 tests/test_server.py modern     # the tests whose names contain "modern"

The binary is $CALID_MCP_BIN (default build/calid_mcp). Most tests share one
server; tests that need other flags start their own. The API upstream points
at a closed local port, so tool calls end in a tool error (isError) without
leaving the machine; these tests check the MCP side, not the API.
"""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import (ACCEPT_BOTH, DEFAULT_TOKEN, MODERN, Conn, Server, build_request,  # noqa: E402
                     get, initialize, modern_body, modern_post, post_json, request, session_post)

# A port nothing listens on: tool calls fail fast with a tool error.
UPSTREAM_FLAGS = ["--upstream", "https://127.0.0.1:1"]

# The 57 tools of calid-tools.tsv.
TOOL_NAMES = """
create_availability create_schedule delete_availability delete_schedule get_availability
get_schedule update_availability update_schedule create_booking get_booking get_booking_by_id
update_booking_reassignbookingautomatically update_booking_reassignbookingtouser create_contact
delete_contact get_contact get_contact_meetings update_contact get_event_types
get_event_types_by_id create_eventtype delete_eventtype update_eventtype add_team_member
cancel_booking change_booking_confirmation_status list_contacts remove_team_member
reschedule_booking create_slots_reserve delete_slots get_slot get_slots update_slots create_team
create_team_eventtype delete_team delete_team_eventtype get_team get_team_event_type
get_team_event_types get_team_membership get_team_memberships get_team_schedules get_teams
update_team_details update_team_eventtype update_team_membership update_user_profile
create_users_edit_profile_avatar get_users get_users_me create_webhook delete_webhook get_webhook
get_webhook_by_id update_webhook
""".split()

SHARED = None
CRASHES = []  # tests during which the shared server died


def setup():
    global SHARED
    SHARED = Server(*UPSTREAM_FLAGS).start()


def teardown():
    if SHARED is not None:
        SHARED.close()
    if SHORT_BIN:
        shutil.rmtree(os.path.dirname(SHORT_BIN), ignore_errors=True)


def after_each(name):
    """A test that kills the shared server fails; the next test gets a new one."""
    global SHARED
    if SHARED is None or SHARED.alive():
        return
    rc = SHARED.stop()
    tail = SHARED.stderr_text()[-800:]
    SHARED.close()
    CRASHES.append(f"{name} (exit {rc})")
    SHARED = Server(*UPSTREAM_FLAGS).start()
    raise AssertionError(f"the shared server died during this test (exit status {rc}; "
                         f"restarted for the next test); its stderr ended with: {tail!r}")


def P():
    """Port of the shared server."""
    return SHARED.port


def rpc(method, id=1, params=None):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def note(method, params=None):
    body = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    return body


def error_of(r, status=None, code=None):
    """The JSON-RPC error of an answer, after checking status and code."""
    if status is not None:
        assert r.status == status, f"expected HTTP {status}, got {r.status}: {r.text[:400]}"
    msg = r.json()
    assert "error" in msg, f"expected a JSON-RPC error, got {r.text[:400]}"
    if code is not None:
        assert msg["error"]["code"] == code, f"expected code {code}, got {msg['error']}"
    assert isinstance(msg["error"].get("message"), str) and msg["error"]["message"], msg
    return msg["error"]


def result_of(r, status=200):
    assert r.status == status, f"expected HTTP {status}, got {r.status}: {r.text[:400]}"
    msg = r.json()
    assert msg.get("jsonrpc") == "2.0", msg
    assert "result" in msg, f"expected a result, got {r.text[:400]}"
    return msg["result"]


def tool_text(result):
    assert isinstance(result.get("content"), list) and result["content"], result
    assert result["content"][0]["type"] == "text", result
    return result["content"][0]["text"]


def ping_in(port, sid, id=1, token=DEFAULT_TOKEN):
    return session_post(port, sid, rpc("ping", id), token=token)


# ---------------------------------------------------------------------------
# The seed's curl commands, word for word
# ---------------------------------------------------------------------------

CURL_INIT = ('curl -i http://127.0.0.1:PORT/mcp -H "Content-Type: application/json" '
             '-H "Accept: application/json, text/event-stream" -H "Authorization: Bearer calid_xxx" '
             '-d \'{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":'
             '"2025-03-26","capabilities":{},"clientInfo":{"name":"curl","version":"1.0.0"}}}\'')
CURL_LIST = ('curl -i http://127.0.0.1:PORT/mcp -H "Content-Type: application/json" '
             '-H "Accept: application/json, text/event-stream" -H "Authorization: Bearer calid_xxx" '
             '-H "mcp-session-id: <SESSION_ID>" '
             '-d \'{"jsonrpc":"2.0","id":"2","method":"tools/list","params":{}}\'')


def run_curl(command):
    if H.HTTPS:  # the seed's commands, pointed at the HTTPS listener
        command = command.replace("curl -i http://", f"curl -i --cacert {H.CERTS}/ca.pem https://")
    p = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30)
    assert p.returncode == 0, f"curl exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    head, sep, body = p.stdout.partition(b"\r\n\r\n")
    assert sep, f"curl -i printed no header block: {p.stdout[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def test_seed_curl_initialize_then_tools_list():
    status, headers, body = run_curl(CURL_INIT.replace("PORT", str(P())))
    assert status == 200, f"initialize: {status} {body[:300]!r}"
    sid = headers.get("mcp-session-id", "")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid), f"session id {sid!r} is not 43 base64url characters"
    msg = json.loads(body)
    assert msg["id"] == "init-1" and msg["result"]["protocolVersion"] == "2025-03-26", msg
    assert msg["result"]["serverInfo"]["name"], msg
    assert "tools" in msg["result"]["capabilities"], msg

    status, headers, body = run_curl(CURL_LIST.replace("PORT", str(P())).replace("<SESSION_ID>", sid))
    assert status == 200, f"tools/list: {status} {body[:300]!r}"
    msg = json.loads(body)
    assert msg["id"] == "2", msg.get("id")
    tools = msg["result"]["tools"]
    names = [t["name"] for t in tools]
    assert len(names) == 57, f"{len(names)} tools"
    assert len(set(names)) == 57, "duplicate tool names"
    assert set(names) == set(TOOL_NAMES), (f"missing {sorted(set(TOOL_NAMES) - set(names))}, "
                                           f"unexpected {sorted(set(names) - set(TOOL_NAMES))}")
    destructive = {"cancel_booking", "remove_team_member"}
    for t in tools:
        n = t["name"]
        assert t["inputSchema"]["type"] == "object", f"{n}: inputSchema type {t['inputSchema'].get('type')}"
        assert isinstance(t.get("description"), str) and t["description"], n
        ann = t.get("annotations")
        assert isinstance(ann, dict), f"{n}: no annotations"
        if n.startswith("get_"):
            assert ann.get("readOnlyHint") is True, f"{n}: readOnlyHint {ann.get('readOnlyHint')}"
            assert ann.get("destructiveHint") is not True, f"{n}: a get_ tool marked destructive"
        if n.startswith("delete_") or n in destructive:
            assert ann.get("destructiveHint") is True, f"{n}: destructiveHint {ann.get('destructiveHint')}"
            assert ann.get("readOnlyHint") is not True, f"{n}: a destructive tool marked read-only"


# ---------------------------------------------------------------------------
# Session era: negotiation and the transport rules
# ---------------------------------------------------------------------------

def test_initialize_echoes_each_supported_version():
    for v in ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]:
        r = H.initialize_response(P(), version=v)
        res = result_of(r)
        assert res["protocolVersion"] == v, f"asked {v}, got {res['protocolVersion']}"
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", r.headers.get("mcp-session-id", "")), r.header_list


def test_initialize_unknown_version_gets_latest():
    for v in ["2099-01-01", "1.0", ""]:
        res = result_of(H.initialize_response(P(), version=v))
        assert res["protocolVersion"] == "2025-11-25", f"asked {v!r}, got {res['protocolVersion']}"


def test_session_ids_differ():
    ids = {initialize(P()) for _ in range(5)}
    assert len(ids) == 5, ids


def test_session_usable_after_initialize():
    sid = initialize(P(), version="2025-11-25")
    res = result_of(session_post(P(), sid, rpc("tools/list", 7), version="2025-11-25"))
    assert len(res["tools"]) == 57


def test_initialized_notification_gets_202_without_body():
    sid = initialize(P(), version="2025-11-25")
    r = session_post(P(), sid, note("notifications/initialized"), version="2025-11-25")
    assert r.status == 202, f"{r.status} {r.text}"
    assert r.body == b"", r.body
    assert r.headers.get("content-length", "0") == "0", r.header_list


def test_posted_response_gets_202():
    sid = initialize(P(), version="2025-11-25")
    r = session_post(P(), sid, {"jsonrpc": "2.0", "id": 5, "result": {}}, version="2025-11-25")
    assert r.status == 202 and r.body == b"", f"{r.status} {r.text}"
    r = session_post(P(), sid, {"jsonrpc": "2.0", "id": 6, "error": {"code": -1, "message": "x"}})
    assert r.status == 202 and r.body == b"", f"{r.status} {r.text}"


def test_ping_returns_empty_result():
    sid = initialize(P())
    r = ping_in(P(), sid, id="p-1")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json"), r.header_list
    assert r.json() == {"jsonrpc": "2.0", "id": "p-1", "result": {}}, r.text


def test_sse_answer_when_accept_is_only_event_stream():
    r = H.initialize_response(P(), headers={"Accept": "text/event-stream"})
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream"), r.header_list
    assert r.text.startswith("event: message\ndata: "), repr(r.text[:60])
    events = r.sse_events()
    assert len(events) == 1 and events[0]["event"] == "message", events
    assert json.loads(events[0]["data"])["result"]["protocolVersion"] == "2025-03-26"
    sid = r.headers["mcp-session-id"]
    r = session_post(P(), sid, rpc("ping", 3), headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream"), r.header_list
    assert r.json() == {"jsonrpc": "2.0", "id": 3, "result": {}}, r.text
    r = session_post(P(), sid, rpc("tools/list", 4), headers={"Accept": "text/event-stream"})
    assert len(r.json()["result"]["tools"]) == 57


def test_json_answer_when_accept_is_only_json_or_absent():
    for accept in ["application/json", None, "*/*"]:
        r = H.initialize_response(P(), headers={"Accept": accept})
        assert r.status == 200, f"Accept {accept!r}: {r.status} {r.text}"
        assert r.headers["content-type"].startswith("application/json"), (accept, r.header_list)


def test_406_when_accept_allows_neither():
    r = H.initialize_response(P(), headers={"Accept": "text/html"})
    assert r.status == 406, f"{r.status} {r.text}"
    assert "mcp-session-id" not in r.headers, "a refused initialize still opened a session"


def test_415_on_wrong_content_type():
    for ct in ["text/plain", "application/x-www-form-urlencoded", None]:
        r = H.initialize_response(P(), headers={"Content-Type": ct})
        assert r.status == 415, f"Content-Type {ct!r}: {r.status} {r.text}"
    r = H.initialize_response(P(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status == 200, f"application/json with charset refused: {r.status} {r.text}"


def test_get_mcp_is_405_with_allow():
    for accept in ["text/event-stream", ACCEPT_BOTH]:
        r = get(P(), "/mcp", headers={"Accept": accept, "Authorization": f"Bearer {DEFAULT_TOKEN}"})
        assert r.status == 405, f"{r.status} {r.text}"
        assert "POST" in r.headers.get("allow", ""), r.header_list


def test_delete_ends_the_session():
    sid = initialize(P())
    assert ping_in(P(), sid).status == 200
    r = get(P(), "/mcp", method="DELETE", headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {DEFAULT_TOKEN}"})
    assert r.status == 200, f"DELETE: {r.status} {r.text}"
    r = ping_in(P(), sid)
    assert r.status == 404, f"after DELETE: {r.status} {r.text}"
    r = get(P(), "/mcp", method="DELETE", headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {DEFAULT_TOKEN}"})
    assert r.status == 404, f"second DELETE: {r.status} {r.text}"


def test_delete_with_another_token_keeps_the_session():
    sid = initialize(P(), token="calid_owner")
    r = get(P(), "/mcp", method="DELETE", headers={"Mcp-Session-Id": sid, "Authorization": "Bearer calid_intruder"})
    assert r.status == 404, f"DELETE with another token: {r.status} {r.text}"
    assert ping_in(P(), sid, token="calid_owner").status == 200, "the session was ended by another token"


def test_delete_without_session_is_405():
    r = get(P(), "/mcp", method="DELETE", headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
    assert r.status == 405, f"{r.status} {r.text}"
    assert r.headers.get("allow"), r.header_list


def test_missing_session_id_is_400():
    r = post_json(P(), rpc("tools/list"))
    assert r.status == 400, f"{r.status} {r.text}"
    assert "session" in r.text.lower(), r.text


def test_unknown_session_is_404():
    for sid in ["0123456789abcdef0123456789abcdef", "nope", "x" * 100]:
        r = ping_in(P(), sid)
        assert r.status == 404, f"session {sid!r}: {r.status} {r.text}"


def test_session_with_another_token_is_404():
    sid = initialize(P(), token="calid_alice")
    assert ping_in(P(), sid, token="calid_alice").status == 200
    r = ping_in(P(), sid, token="calid_bob")
    assert r.status == 404, f"{r.status} {r.text}"
    r = ping_in(P(), sid, token="calid_alicE")
    assert r.status == 404, f"token compared case-insensitively? {r.status} {r.text}"


def test_unsupported_protocol_version_header_is_400():
    sid = initialize(P(), version="2025-11-25")
    for v in ["1999-01-01", "2025-11-25x", "garbage"]:
        r = session_post(P(), sid, rpc("ping"), version=v)
        assert r.status == 400, f"MCP-Protocol-Version {v!r}: {r.status} {r.text}"
    r = H.initialize_response(P(), headers={"MCP-Protocol-Version": "1999-01-01"})
    assert r.status == 400, f"initialize with a bad header: {r.status} {r.text}"


def test_supported_protocol_version_headers_accepted():
    sid = initialize(P(), version="2025-11-25")
    for v in H.SESSION_VERSIONS:
        r = session_post(P(), sid, rpc("ping"), version=v)
        assert r.status == 200, f"MCP-Protocol-Version {v}: {r.status} {r.text}"


def test_batch_in_2025_03_26_session():
    sid = initialize(P(), version="2025-03-26")
    batch = [rpc("ping", 1), note("notifications/initialized"), rpc("ping", "two"),
             rpc("no/such/method", 3)]
    r = session_post(P(), sid, batch, version="2025-03-26")
    assert r.status == 200, f"{r.status} {r.text[:300]}"
    msgs = r.json()
    assert isinstance(msgs, list), f"batch answer is not an array: {r.text[:200]}"
    assert [m.get("id") for m in msgs] == [1, "two", 3], [m.get("id") for m in msgs]
    assert msgs[0]["result"] == {} and msgs[1]["result"] == {}
    assert msgs[2]["error"]["code"] == -32601
    r = session_post(P(), sid, batch, version="2025-03-26", headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream"), r.header_list
    assert [m.get("id") for m in r.json()] == [1, "two", 3], r.text


def test_batch_with_tools_list():
    sid = initialize(P(), version="2025-03-26")
    r = session_post(P(), sid, [rpc("ping", 1), rpc("tools/list", 2)], version="2025-03-26")
    assert r.status == 200, f"{r.status} {r.text[:300]}"
    msgs = r.json()
    assert isinstance(msgs, list), f"batch answer is not an array: {r.text[:300]}"
    assert [m.get("id") for m in msgs] == [1, 2], msgs
    assert len(msgs[1]["result"]["tools"]) == 57


def test_batch_with_tool_call():
    sid = initialize(P(), version="2025-03-26")
    r = session_post(P(), sid, [rpc("tools/call", 1, {"name": "get_booking_by_id", "arguments": {}}),
                                rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}),
                                rpc("ping", 3)], version="2025-03-26")
    msgs = r.json()
    assert isinstance(msgs, list) and [m.get("id") for m in msgs] == [1, 2, 3], r.text[:300]
    assert msgs[0]["result"]["isError"] is True and "bookingId" in tool_text(msgs[0]["result"])
    tool_text(msgs[1]["result"])
    assert msgs[2]["result"] == {}


def test_batch_of_notifications_only_gets_202():
    sid = initialize(P(), version="2025-03-26")
    r = session_post(P(), sid, [note("notifications/initialized"), note("notifications/cancelled")])
    assert r.status == 202 and r.body == b"", f"{r.status} {r.text}"


def test_batch_in_2025_11_25_session_is_400():
    sid = initialize(P(), version="2025-11-25")
    r = session_post(P(), sid, [rpc("ping", 1), rpc("ping", 2)], version="2025-11-25")
    assert r.status == 400, f"{r.status} {r.text}"


def test_empty_batch_is_400():
    sid = initialize(P(), version="2025-03-26")
    r = session_post(P(), sid, [], version="2025-03-26")
    assert r.status == 400, f"{r.status} {r.text}"


def test_initialize_inside_batch_is_an_error_element():
    sid = initialize(P(), version="2025-03-26")
    init = rpc("initialize", "i", {"protocolVersion": "2025-03-26", "capabilities": {},
                                   "clientInfo": {"name": "x", "version": "1"}})
    r = session_post(P(), sid, [init, rpc("ping", "p")], version="2025-03-26")
    assert r.status == 200, f"{r.status} {r.text}"
    msgs = r.json()
    assert isinstance(msgs, list) and len(msgs) == 2, r.text
    assert msgs[0]["id"] == "i" and msgs[0]["error"]["code"] == -32600, msgs[0]
    assert msgs[1] == {"jsonrpc": "2.0", "id": "p", "result": {}}, msgs[1]
    assert "mcp-session-id" not in r.headers, "a batched initialize opened a session"


def test_batch_with_a_non_object_element():
    sid = initialize(P(), version="2025-03-26")
    r = session_post(P(), sid, [1, rpc("ping", "p")], version="2025-03-26")
    msgs = r.json()
    assert isinstance(msgs, list) and len(msgs) == 2, r.text
    assert msgs[0]["error"]["code"] == -32600 and msgs[0]["id"] is None, msgs[0]
    assert msgs[1]["result"] == {}, msgs[1]


# ---------------------------------------------------------------------------
# Modern era (2026-07-28)
# ---------------------------------------------------------------------------

def test_modern_server_discover():
    r = modern_post(P(), "server/discover", id="d-1")
    res = result_of(r)
    assert r.json()["id"] == "d-1"
    assert MODERN in res["supportedVersions"], res
    assert "tools" in res["capabilities"], res
    assert res["resultType"] == "complete", res
    assert isinstance(res["ttlMs"], int) and res["ttlMs"] >= 0, res
    assert res["cacheScope"] in ("public", "private"), res
    info = res["_meta"]["io.modelcontextprotocol/serverInfo"]
    assert info["name"] and info["version"], info
    assert "mcp-session-id" not in r.headers, r.header_list


def test_modern_tools_list():
    r = modern_post(P(), "tools/list", id=2)
    res = result_of(r)
    assert sorted(t["name"] for t in res["tools"]) == sorted(TOOL_NAMES)
    assert res["resultType"] == "complete", res.get("resultType")
    assert isinstance(res["ttlMs"], int) and res["ttlMs"] >= 0, res.get("ttlMs")
    assert res["cacheScope"] in ("public", "private"), res.get("cacheScope")
    assert res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
    assert "mcp-session-id" not in r.headers, r.header_list


def test_modern_tools_call_with_mcp_name():
    r = modern_post(P(), "tools/call", {"name": "get_users_me", "arguments": {}}, id=3)
    res = result_of(r)
    assert r.json()["id"] == 3
    assert res["resultType"] == "complete", res
    assert isinstance(res["isError"], bool), res
    tool_text(res)
    assert "mcp-session-id" not in r.headers, r.header_list


def test_modern_tool_argument_error_is_a_complete_result():
    r = modern_post(P(), "tools/call", {"name": "get_booking_by_id", "arguments": {}}, id=4)
    res = result_of(r)
    assert res["isError"] is True and res["resultType"] == "complete", res
    assert "bookingId" in tool_text(res)


def test_modern_header_body_version_mismatch():
    r = modern_post(P(), "tools/list", version="2025-11-25", header_version=MODERN, id=5)
    error_of(r, 400, -32020)
    assert r.json()["id"] == 5


def test_modern_unsupported_version():
    r = modern_post(P(), "tools/list", version="2099-01-01", id=6)
    e = error_of(r, 400, -32022)
    assert r.json()["id"] == 6
    assert "2099-01-01" in e["message"], e
    assert MODERN in e["data"]["supported"], e
    assert e["data"]["requested"] == "2099-01-01", e


def test_modern_missing_client_capabilities():
    r = modern_post(P(), "tools/list", capabilities=False, id=7)
    e = error_of(r, 400, -32602)
    assert "clientCapabilities" in e["message"], e
    body = modern_body("tools/list", id=8)
    body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = "all"
    error_of(modern_post(P(), "tools/list", body=body), 400, -32602)


def test_modern_protocol_version_not_a_string():
    body = modern_body("tools/list", id=9)
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = 20260728
    error_of(modern_post(P(), "tools/list", body=body), 400, -32602)


def test_modern_mcp_method_mismatch():
    r = modern_post(P(), "tools/list", headers={"Mcp-Method": "server/discover"}, id=10)
    error_of(r, 400, -32020)
    r = modern_post(P(), "tools/list", headers={"Mcp-Method": None}, id=11)
    error_of(r, 400, -32020)
    r = modern_post(P(), "tools/list", headers={"Mcp-Method": "Tools/List"}, id=12)
    error_of(r, 400, -32020)


def test_modern_missing_protocol_version_header():
    r = modern_post(P(), "tools/list", headers={"MCP-Protocol-Version": None}, id=13)
    error_of(r, 400, -32020)


def test_modern_tools_call_without_or_with_wrong_mcp_name():
    params = {"name": "get_users_me", "arguments": {}}
    r = modern_post(P(), "tools/call", params, headers={"Mcp-Name": None}, id=14)
    error_of(r, 400, -32020)
    r = modern_post(P(), "tools/call", params, name="get_users", id=15)
    error_of(r, 400, -32020)


def test_modern_mcp_name_base64():
    enc = base64.b64encode(b"get_users_me").decode()
    r = modern_post(P(), "tools/call", {"name": "get_users_me", "arguments": {}}, name=f"=?base64?{enc}?=", id=16)
    res = result_of(r)
    assert res["resultType"] == "complete", res
    # non-ASCII names travel base64-encoded; this one matches the body and is an unknown tool
    odd = "t\u00f6\u00f6l"
    enc = base64.b64encode(odd.encode()).decode()
    r = modern_post(P(), "tools/call", {"name": odd, "arguments": {}}, name=f"=?base64?{enc}?=", id=17)
    error_of(r, 200, -32602)
    r = modern_post(P(), "tools/call", {"name": "get_users_me", "arguments": {}}, name="=?base64?!!!?=", id=18)
    error_of(r, 400, -32020)


def test_modern_unknown_method_is_404():
    r = modern_post(P(), "no/such/method", id="u")
    error_of(r, 404, -32601)
    assert r.json()["id"] == "u"


def test_modern_ping_and_initialize_are_404():
    r = modern_post(P(), "ping", id=20)
    error_of(r, 404, -32601)
    r = modern_post(P(), "initialize", {"protocolVersion": MODERN, "capabilities": {},
                                        "clientInfo": {"name": "x", "version": "1"}}, id=21)
    error_of(r, 404, -32601)
    assert "mcp-session-id" not in r.headers, r.header_list


def test_modern_header_without_envelope_is_400():
    r = post_json(P(), rpc("tools/list", 22), headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    error_of(r, 400, -32602)
    assert r.json()["id"] == 22


def test_session_initialize_with_modern_header_is_400():
    r = H.initialize_response(P(), headers={"MCP-Protocol-Version": MODERN})
    error_of(r, 400, -32020)
    assert "mcp-session-id" not in r.headers


def test_modern_notification_is_202():
    body = modern_body("notifications/cancelled", {"requestId": 1}, id=None)
    r = modern_post(P(), "notifications/cancelled", body=body)
    assert r.status == 202 and r.body == b"", f"{r.status} {r.text}"
    r = post_json(P(), note("notifications/cancelled", {"requestId": 1}),
                  headers={"MCP-Protocol-Version": MODERN, "Mcp-Method": "notifications/cancelled"})
    assert r.status == 202 and r.body == b"", f"header-only notification: {r.status} {r.text}"


def test_modern_batch_is_400():
    r = post_json(P(), [modern_body("tools/list", id=1), modern_body("server/discover", id=2)],
                  headers={"MCP-Protocol-Version": MODERN})
    error_of(r, 400, -32600)


def test_modern_sse_answer():
    r = modern_post(P(), "server/discover", id=23, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream"), r.header_list
    assert r.json()["result"]["resultType"] == "complete"


def test_modern_and_session_clients_side_by_side():
    sid = initialize(P(), version="2025-11-25")
    res = result_of(modern_post(P(), "server/discover", id=1))
    assert MODERN in res["supportedVersions"]
    assert len(result_of(session_post(P(), sid, rpc("tools/list", 2), version="2025-11-25"))["tools"]) == 57
    assert len(result_of(modern_post(P(), "tools/list", id=3))["tools"]) == 57
    # a modern request ignores a session id, even a stale or foreign one
    r = modern_post(P(), "tools/list", id=4, headers={"Mcp-Session-Id": sid})
    assert "_meta" in result_of(r), r.text[:200]
    r = modern_post(P(), "tools/list", id=5, headers={"Mcp-Session-Id": "0" * 32})
    result_of(r)
    assert result_of(ping_in(P(), sid, id=6)) == {}
    r = session_post(P(), sid, rpc("tools/call", 7, {"name": "get_users_me", "arguments": {}}), version="2025-11-25")
    res = result_of(r)
    assert "resultType" not in res, "a session-era result carries modern fields"
    tool_text(res)


# ---------------------------------------------------------------------------
# JSON-RPC errors
# ---------------------------------------------------------------------------

def test_malformed_json_is_400_parse_error():
    for body in [b'{"jsonrpc":"2.0","id":1,', b"{'jsonrpc':'2.0'}", b'{"jsonrpc":"2.0","id":1} x',
                 b'{"jsonrpc":"2.0","id":01,"method":"ping"}', b'{"a":NaN}', b'{"a":"unterminated}',
                 b'{"a":1,}', b'', b'   ']:
        r = post_json(P(), body)
        e = error_of(r, 400, -32700)
        m = e["message"]
        assert m.lower().startswith("parse error") and len(m) > len("parse error: "), f"{body!r}: {m!r}"
        assert r.json()["id"] is None, r.text


def test_parse_error_names_the_problem():
    e = error_of(post_json(P(), b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"a\\qb"}'), 400, -32700)
    assert "escape" in e["message"], e
    e = error_of(post_json(P(), b'{"jsonrpc":"2.0" "id":1}'), 400, -32700)
    assert "','" in e["message"] or "expected" in e["message"], e


def test_invalid_utf8_is_parse_error():
    for bad in [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]:
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + bad + b'"}}'
        e = error_of(post_json(P(), body), 400, -32700)
        assert "UTF-8" in e["message"], f"{bad!r}: {e}"
    ok = '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\u00e9\u20ac\U0001f600"}}'.encode()
    sid = initialize(P())
    r = session_post(P(), sid, ok)
    assert r.status == 200, f"valid UTF-8 refused: {r.status} {r.text}"


def test_jsonrpc_1_0_is_invalid_request():
    sid = initialize(P())
    for body in [{"jsonrpc": "1.0", "id": 1, "method": "ping"}, {"id": 1, "method": "ping"},
                 {"jsonrpc": 2.0, "id": 1, "method": "ping"}]:
        error_of(session_post(P(), sid, body), code=-32600)


def test_method_not_a_string_or_missing():
    sid = initialize(P())
    error_of(session_post(P(), sid, {"jsonrpc": "2.0", "id": 1, "method": 5}), code=-32600)
    error_of(session_post(P(), sid, {"jsonrpc": "2.0", "id": 1}), code=-32600)


def test_non_object_message_is_invalid_request():
    wrong = []
    for body in ["1", '"ping"', "null", "true", "  1  ", "-2.5e3"]:
        r = post_json(P(), body)
        e = r.json().get("error", {})
        if r.status != 400 or e.get("code") != -32600:
            wrong.append(f"{body!r} -> {r.status} {e.get('code')} {e.get('message')!r}")
    assert not wrong, "valid JSON that is not a message must be -32600 Invalid Request: " + "; ".join(wrong)


def test_unknown_method_in_session_is_200_method_not_found():
    sid = initialize(P())
    r = session_post(P(), sid, rpc("tools/destroy", 9))
    e = error_of(r, 200, -32601)
    assert r.json()["id"] == 9
    assert "tools/destroy" in e["message"], e


def test_unknown_tool_is_invalid_params():
    sid = initialize(P())
    r = session_post(P(), sid, rpc("tools/call", 1, {"name": "drop_database", "arguments": {}}))
    e = error_of(r, 200, -32602)
    assert "drop_database" in e["message"], e


def test_tools_call_without_name_is_invalid_params():
    sid = initialize(P())
    error_of(session_post(P(), sid, rpc("tools/call", 1, {"arguments": {}})), 200, -32602)
    error_of(session_post(P(), sid, rpc("tools/call", 1, {"name": 42})), 200, -32602)


def test_missing_required_argument_is_tool_error():
    sid = initialize(P())
    for args in [{}, {"bookingId": None}, None]:
        params = {"name": "get_booking_by_id"}
        if args is not None:
            params["arguments"] = args
        res = result_of(session_post(P(), sid, rpc("tools/call", 1, params)))
        assert res["isError"] is True, res
        assert "bookingId" in tool_text(res), tool_text(res)


def test_mistyped_argument_is_tool_error():
    sid = initialize(P())
    res = result_of(session_post(P(), sid, rpc("tools/call", 1, {"name": "get_contact", "arguments": {"contactId": "abc"}})))
    assert res["isError"] is True, res
    text = tool_text(res)
    assert "contactId" in text and "integer" in text and "string" in text, text
    res = result_of(session_post(P(), sid, rpc("tools/call", 2, {"name": "get_booking_by_id", "arguments": {"bookingId": True}})))
    assert res["isError"] is True, res
    text = tool_text(res)
    assert "bookingId" in text and "integer" in text and "boolean" in text, text
    res = result_of(session_post(P(), sid, rpc("tools/call", 3, {"name": "get_contact", "arguments": {"contactId": 1.5}})))
    assert res["isError"] is True and "contactId" in tool_text(res), res


def test_params_not_an_object_is_invalid_params():
    sid = initialize(P())
    for params in [[1, 2], "x", 5]:
        r = session_post(P(), sid, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params})
        error_of(r, code=-32602)


def test_arguments_not_an_object_is_invalid_params():
    sid = initialize(P())
    for args in [[1], "bookingId=1", 7]:
        r = session_post(P(), sid, rpc("tools/call", 1, {"name": "get_booking_by_id", "arguments": args}))
        error_of(r, code=-32602)


def test_string_and_integer_ids_echoed_exactly():
    sid = initialize(P())
    for raw in ['"abc"', '""', '"a\\"b\\u00e9"', "0", "-7", "9007199254740993", "123456789012345678901234567890"]:
        body = '{"jsonrpc":"2.0","id":%s,"method":"ping"}' % raw
        r = session_post(P(), sid, body)
        assert r.status == 200, f"id {raw}: {r.status} {r.text}"
        m = re.search(r'"id":((?:"(?:[^"\\]|\\.)*")|-?\d+)', r.text)
        assert m and m.group(1) == raw, f"id {raw} echoed as {m and m.group(1)}: {r.text}"
        assert json.loads(r.text)["id"] == json.loads(raw)


def test_bad_id_types_are_invalid_request():
    sid = initialize(P())
    for raw in ["1.5", "1e3", "true", "false", '{"a":1}', "[1]"]:
        body = '{"jsonrpc":"2.0","id":%s,"method":"ping"}' % raw
        e = error_of(session_post(P(), sid, body), code=-32600)
        assert "id" in e["message"], e


# ---------------------------------------------------------------------------
# Access: tokens, Host, Origin, CORS, secrets in logs
# ---------------------------------------------------------------------------

def test_no_token_and_no_api_key_is_401():
    r = H.initialize_response(P(), token=None)
    assert r.status == 401, f"{r.status} {r.text}"
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.header_list
    assert "Cal ID token" in r.json()["error"]["message"], r.text
    assert "mcp-session-id" not in r.headers


def test_non_bearer_authorization_is_401():
    for auth in ["Basic x", "Basic Y2FsaWQ6eA==", "Bearer", "Bearer ", "calid_xxx"]:
        r = H.initialize_response(P(), token=None, headers={"Authorization": auth})
        assert r.status == 401, f"Authorization {auth!r}: {r.status} {r.text}"
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.header_list


def test_bearer_scheme_is_case_insensitive():
    r = H.initialize_response(P(), token=None, headers={"Authorization": "bearer calid_lower"})
    assert r.status == 200, f"{r.status} {r.text}"


def test_server_api_key_needs_no_client_token():
    with Server(*UPSTREAM_FLAGS, "--api-key", "calid_server") as s:
        sid = initialize(s.port, token=None)
        res = result_of(session_post(s.port, sid, rpc("tools/list", 2), token=None))
        assert len(res["tools"]) == 57
        res = result_of(session_post(s.port, sid, rpc("tools/call", 3, {"name": "get_users_me", "arguments": {}}), token=None))
        assert "No Cal ID token" not in tool_text(res), tool_text(res)
        assert len(result_of(modern_post(s.port, "tools/list", token=None))["tools"]) == 57


def test_api_key_off_loopback_without_access_token_refuses_to_start():
    port = H.free_port()
    try:
        rc, out, err = H.run_binary(["--listen", f"0.0.0.0:{port}", "--api-key", "k"] + UPSTREAM_FLAGS, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the server started (it ran until the timeout) instead of refusing") from None
    assert rc != 0, f"exit status {rc}"
    assert "--access-token" in err, f"stderr does not name --access-token: {err!r}"


def test_access_token_required_when_set():
    with Server(*UPSTREAM_FLAGS, "--api-key", "calid_server", "--access-token", "secret") as s:
        sid = initialize(s.port, token="secret")
        assert result_of(session_post(s.port, sid, rpc("ping", 1), token="secret")) == {}
        for tok in ["wrong", "secre", "secret2", "calid_server"]:
            r = H.initialize_response(s.port, token=tok)
            assert r.status == 401, f"token {tok!r}: {r.status} {r.text}"
            assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.header_list
        r = H.initialize_response(s.port, token=None)
        assert r.status == 401, f"no token: {r.status} {r.text}"
        r = modern_post(s.port, "tools/list", token="wrong")
        assert r.status == 401, f"modern, wrong token: {r.status} {r.text}"
        assert result_of(modern_post(s.port, "tools/list", token="secret"))["tools"]


def test_host_header_checks():
    r = H.initialize_response(P(), headers={"Host": "evil.example"})
    assert r.status == 403, f"Host evil.example: {r.status} {r.text}"
    r = H.initialize_response(P(), headers={"Host": f"evil.example:{P()}"})
    assert r.status == 403, f"Host evil.example:PORT: {r.status} {r.text}"
    for host in [f"localhost:{P()}", "localhost", f"127.0.0.1:{P()}", f"[::1]:{P()}", "LOCALHOST"]:
        r = H.initialize_response(P(), headers={"Host": host})
        assert r.status == 200, f"Host {host}: {r.status} {r.text}"
    r = request(P(), b"POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer x\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert r.status == 400, f"HTTP/1.1 without Host: {r.status} {r.text}"


def test_origin_checks():
    r = H.initialize_response(P(), headers={"Origin": "http://evil.example"})
    assert r.status == 403, f"{r.status} {r.text}"
    assert "access-control-allow-origin" not in r.headers, r.header_list
    r = H.initialize_response(P(), headers={"Origin": "http://localhost.evil.example"})
    assert r.status == 403, f"{r.status} {r.text}"
    for origin in ["http://localhost:3000", "http://127.0.0.1:5173", "http://localhost"]:
        r = H.initialize_response(P(), headers={"Origin": origin})
        assert r.status == 200, f"Origin {origin}: {r.status} {r.text}"
        assert r.headers.get("access-control-allow-origin") == origin, r.header_list
        assert "mcp-session-id" in r.headers.get("access-control-expose-headers", "").lower(), r.header_list


def test_allow_origin_flag():
    with Server(*UPSTREAM_FLAGS, "--allow-origin", "https://app.example") as s:
        r = H.initialize_response(s.port, headers={"Origin": "https://app.example"})
        assert r.status == 200, f"{r.status} {r.text}"
        assert r.headers.get("access-control-allow-origin") == "https://app.example", r.header_list
        r = H.initialize_response(s.port, headers={"Origin": "https://other.example"})
        assert r.status == 403, f"{r.status} {r.text}"
        r = H.initialize_response(s.port, headers={"Origin": "http://app.example"})
        assert r.status == 403, f"scheme ignored: {r.status} {r.text}"


def test_options_preflight():
    r = get(P(), "/mcp", method="OPTIONS", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization, mcp-session-id, mcp-protocol-version"})
    assert r.status == 204, f"{r.status} {r.text}"
    allow = r.headers.get("access-control-allow-headers", "").lower()
    for h in ["authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name"]:
        assert h in allow, f"{h} not in Access-Control-Allow-Headers: {allow!r}"
    assert "POST" in r.headers.get("access-control-allow-methods", ""), r.header_list
    assert r.headers.get("access-control-allow-origin") == "http://localhost:3000", r.header_list
    r = get(P(), "/mcp", method="OPTIONS", headers={"Origin": "http://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert r.status == 403, f"preflight from a foreign origin: {r.status} {r.text}"


def test_tools_call_through_fake_calid():
    if not H.FakeCalid.available():
        raise H.Skip("tests/fake_calid.py is not there")
    token = "calid_fake_caller_1"
    with H.FakeCalid("--token", token) as fake, Server(*fake.server_flags()) as s:
        res = result_of(modern_post(s.port, "tools/call", {"name": "get_users_me", "arguments": {}}, token=token))
        assert res["isError"] is False, f"the API call failed: {tool_text(res)[:300]}"
        json.loads(tool_text(res))
        sid = initialize(s.port, token=token)
        res = result_of(session_post(s.port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}), token=token))
        assert res["isError"] is False, tool_text(res)[:300]
        res = result_of(modern_post(s.port, "tools/call", {"name": "get_users_me", "arguments": {}}, token="calid_other"))
        assert res["isError"] is True and "401" in tool_text(res), f"another token reached the API: {tool_text(res)[:300]}"


def test_token_never_in_stderr_at_debug():
    token = "calid_S3CRET_tok_9f8e7d"
    key = "calid_K3Y_server_6c5b4a"
    fake = H.FakeCalid().start() if H.FakeCalid.available() else None
    upstream = fake.server_flags() if fake else UPSTREAM_FLAGS
    try:
        _token_never_in_stderr(token, key, upstream)
    finally:
        if fake:
            fake.close()


def _token_never_in_stderr(token, key, upstream):
    with Server(*upstream, "--log-level", "debug") as s:
        port = s.port
        sid = initialize(port, token=token)
        session_post(port, sid, rpc("tools/list", 1), token=token)
        session_post(port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}), token=token)
        session_post(port, sid, rpc("tools/call", 3, {"name": "get_booking_by_id", "arguments": {"bookingId": 7}}), token=token)
        modern_post(port, "tools/call", {"name": "get_users_me", "arguments": {}}, token=token)
        ping_in(port, sid, token=token + "x")
        H.initialize_response(port, token=None, headers={"Authorization": "Basic " + token})
        get(port, "/mcp", method="DELETE", headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {token}"})
        s.stop()
        log = s.stderr_text()
    assert "POST /mcp" in log or "debug" in log, f"no debug output to check: {log[:300]!r}"
    assert token not in log, "the bearer token appears in stderr:\n" + "\n".join(
        line for line in log.splitlines() if token in line)
    assert "S3CRET_tok" not in log, "part of the bearer token appears in stderr"
    with Server(*upstream, "--log-level", "debug", "--api-key", key) as s:
        sid = initialize(s.port, token=None)
        session_post(s.port, sid, rpc("tools/call", 2, {"name": "get_users_me", "arguments": {}}), token=None)
        s.stop()
        log = s.stderr_text()
    assert key not in log and "K3Y_server" not in log, "the server's API key appears in stderr"


# ---------------------------------------------------------------------------
# HTTP limits and framing
# ---------------------------------------------------------------------------

def healthz_request(port, extra=(), connection=None):
    headers = list(extra)
    if connection:
        headers.append(("Connection", connection))
    return build_request("GET", "/healthz", headers, port=port)


def session_request_bytes(port, sid, body, close=False, extra=()):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    headers = [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
               ("Authorization", f"Bearer {DEFAULT_TOKEN}"), ("Mcp-Session-Id", sid)] + list(extra)
    if close:
        headers.append(("Connection", "close"))
    return build_request("POST", "/mcp", headers, body, port=port)


def test_healthz_and_unknown_path():
    r = get(P(), "/healthz")
    assert r.status == 200, f"{r.status} {r.text}"
    j = r.json()
    assert j["status"] == "ok" and j["tools"] == 57, j
    r = get(P(), "/healthz?probe=1")
    assert r.status == 200, f"query string: {r.status}"
    for path in ["/", "/mcp/", "/MCP", "/nope", "/healthz/x"]:
        r = get(P(), path)
        assert r.status == 404, f"{path}: {r.status} {r.text}"


def test_head_healthz_has_no_body():
    with Conn(P(), timeout=5) as c:
        c.send(build_request("HEAD", "/healthz", port=P()))
        r = c.read_response(method="HEAD")
        assert r.status == 200, f"HEAD: {r.status}"
        c.send(healthz_request(P(), connection="close"))
        r = c.read_response()
        assert r.status == 200 and r.json()["status"] == "ok", \
            f"the GET after a HEAD was garbled (HEAD answer carried a body?): {r.raw_head[:80]!r}"


def test_header_block_over_limit_is_431():
    r = request(P(), build_request("GET", "/healthz", [("X-Big", "a" * 9000), ("Connection", "close")], port=P()))
    assert r.status == 431, f"{r.status} {r.text}"
    # one that never ends: no blank line within the limit
    with Conn(P()) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"b" * 9000)
        r = c.read_response()
        assert r.status == 431, f"unterminated head: {r.status} {r.text}"


def test_header_block_just_under_limit_is_served():
    head = build_request("GET", "/healthz", [("Connection", "close"), ("X-Pad", "")], port=P())
    pad = H.limits()["CM_MAX_HEADER_BYTES"] - len(head) - 16
    r = request(P(), build_request("GET", "/healthz", [("Connection", "close"), ("X-Pad", "p" * pad)], port=P()))
    assert r.status == 200, f"{r.status} {r.text}"


def test_header_count_limit():
    n = H.limits()["CM_MAX_HEADERS"]
    extra = [(f"X-H{i}", "v") for i in range(n - 1)]  # + Host = CM_MAX_HEADERS fields
    r = request(P(), build_request("GET", "/healthz", extra, port=P()))
    assert r.status == 200, f"{n} header fields: {r.status} {r.text}"
    extra = [(f"X-H{i}", "v") for i in range(n)]  # + Host = one more
    r = request(P(), build_request("GET", "/healthz", extra, port=P()))
    assert r.status == 431, f"{n + 1} header fields: {r.status} {r.text}"


def test_body_over_limit_is_413():
    with Conn(P()) as c:
        c.send(build_request("POST", "/mcp", [("Content-Type", "application/json"),
                                              ("Authorization", "Bearer x"), ("Content-Length", "65537")], port=P()))
        r = c.read_response()
        assert r.status == 413, f"{r.status} {r.text}"
        assert c.closed_by_peer(), "connection left open after 413 without reading the body"


def test_body_at_limit_is_served():
    sid = initialize(P())
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    body += b" " * (H.limits()["CM_MAX_BODY_BYTES"] - len(body))
    r = request(P(), session_request_bytes(P(), sid, body, close=True))
    assert r.status == 200, f"{r.status} {r.text[:200]}"
    assert r.json()["result"] == {}


def test_chunked_body_over_limit_is_413():
    with Conn(P()) as c:
        c.send(build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Authorization", "Bearer x"),
                                              ("Transfer-Encoding", "chunked")], port=P())
               + b"10001\r\n" + b" " * 64)  # the size line alone is over the limit
        r = c.read_response()
        assert r.status == 413, f"{r.status} {r.text}"


def test_content_length_with_transfer_encoding_is_400():
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    data = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Authorization", "Bearer x"),
                                          ("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")],
                         port=P()) + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    r = request(P(), data)
    assert r.status == 400, f"{r.status} {r.text}"


def test_conflicting_content_length_is_400():
    sid = initialize(P())
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    data = session_request_bytes(P(), sid, body, extra=[("Content-Length", str(len(body))),
                                                        ("Content-Length", str(len(body) + 1))])
    r = request(P(), data)
    assert r.status == 400, f"{r.status} {r.text}"
    data = session_request_bytes(P(), sid, body, close=True, extra=[("Content-Length", str(len(body))),
                                                                    ("Content-Length", str(len(body)))])
    r = request(P(), data)
    assert r.status == 200, f"two equal Content-Length: {r.status} {r.text}"


def test_bad_content_length_is_400():
    for value in ["-1", "abc", "1e3", "", "0x10", "+5", "12345678901", "4 2"]:
        data = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Authorization", "Bearer x"),
                                              ("Content-Length", value)], port=P()) + b"{}"
        r = request(P(), data)
        assert r.status == 400, f"Content-Length {value!r}: {r.status} {r.text}"


def test_unsupported_transfer_encoding():
    data = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Authorization", "Bearer x"),
                                          ("Transfer-Encoding", "gzip, chunked")], port=P()) + b"0\r\n\r\n"
    r = request(P(), data)
    assert r.status in (400, 501), f"{r.status} {r.text}"


def test_chunked_body_accepted():
    sid = initialize(P())
    body = json.dumps(rpc("tools/list", "chunky")).encode()
    a, b = body[:10], body[10:]
    encoded = (b"%x\r\n" % len(a) + a + b"\r\n" + b"%x;ext=1\r\n" % len(b) + b + b"\r\n" + b"0\r\n\r\n")
    head = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
                                          ("Authorization", f"Bearer {DEFAULT_TOKEN}"), ("Mcp-Session-Id", sid),
                                          ("Transfer-Encoding", "chunked"), ("Connection", "close")], port=P())
    r = request(P(), head + encoded, pieces=5, delay=0.01)
    res = result_of(r)
    assert r.json()["id"] == "chunky" and len(res["tools"]) == 57


def test_bad_chunk_size_is_400():
    sid = initialize(P())
    head = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Authorization", f"Bearer {DEFAULT_TOKEN}"),
                                          ("Mcp-Session-Id", sid), ("Transfer-Encoding", "chunked")], port=P())
    for bad in [b"zz\r\n{}\r\n0\r\n\r\n", b"123456789\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b";x\r\n"]:
        r = request(P(), head + bad)
        assert r.status == 400, f"chunked {bad!r}: {r.status} {r.text}"


def test_expect_100_continue():
    sid = initialize(P())
    body = json.dumps(rpc("ping", "c")).encode()
    head = build_request("POST", "/mcp", [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH),
                                          ("Authorization", f"Bearer {DEFAULT_TOKEN}"), ("Mcp-Session-Id", sid),
                                          ("Content-Length", str(len(body))), ("Expect", "100-continue"),
                                          ("Connection", "close")], port=P())
    with Conn(P()) as c:
        c.send(head)
        r = c.read_response()
        assert r.status == 100, f"expected 100 Continue, got {r.status} {r.text}"
        assert r.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n"), r.raw_head
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.json() == {"jsonrpc": "2.0", "id": "c", "result": {}}, f"{r.status} {r.text}"


def test_unknown_expectation_is_417():
    r = request(P(), build_request("GET", "/healthz", [("Expect", "magic")], port=P()))
    assert r.status == 417, f"{r.status} {r.text}"


def test_http2_request_line_is_505():
    for line in [b"GET /healthz HTTP/2.0\r\n", b"POST /mcp HTTP/2\r\n", b"GET /healthz HTTP/3.0\r\n"]:
        r = request(P(), line + b"Host: 127.0.0.1\r\n\r\n")
        assert r.status == 505, f"{line!r}: {r.status} {r.text}"


def test_garbage_request_line_is_400():
    for data in [b"hello\r\n\r\n", b"GET\r\n\r\n", b"GET /healthz\r\n\r\n", b"GET  /healthz HTTP/1.1\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"G@T /healthz HTTP/1.1\r\n\r\n",
                 b"GET /healthz FTP/1.1\r\n\r\n"]:
        r = request(P(), data)
        assert r.status == 400, f"{data!r}: {r.status} {r.text}"


def test_malformed_header_lines_are_400():
    for header in [b"No-Colon\r\n", b" folded: x\r\n", b"Bad Name: x\r\n", b"X: a\x01b\r\n"]:
        r = request(P(), b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n")
        assert r.status == 400, f"{header!r}: {r.status} {r.text}"


def test_http10_request_is_served_and_closed():
    with Conn(P()) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, f"{r.status} {r.text}"
        assert c.closed_by_peer(), "HTTP/1.0 connection without keep-alive left open"


def test_pipelined_requests_answered_in_order():
    sid = initialize(P())
    data = (session_request_bytes(P(), sid, rpc("ping", "first")) +
            session_request_bytes(P(), sid, rpc("tools/list", "second")) +
            session_request_bytes(P(), sid, rpc("ping", "third"), close=True))
    with Conn(P(), timeout=3) as c:
        c.send(data)
        ids = []
        for _ in range(3):
            try:
                r = c.read_response()
            except (socket.timeout, H.ConnectionClosed) as e:
                raise AssertionError(f"answers received {ids}, then none ({type(e).__name__}): "
                                     "pipelined requests after the first are not served") from None
            assert r.status == 200, f"{r.status} {r.text}"
            ids.append(r.json()["id"])
        assert ids == ["first", "second", "third"], ids


def test_pipelined_healthz_in_one_packet():
    with Conn(P(), timeout=3) as c:
        c.send(healthz_request(P()) + healthz_request(P(), connection="close"))
        try:
            r1 = c.read_response()
            r2 = c.read_response()
        except (socket.timeout, H.ConnectionClosed) as e:
            raise AssertionError(f"second pipelined request not answered ({type(e).__name__})") from None
        assert r1.status == 200 and r2.status == 200, (r1.status, r2.status)


def test_keep_alive_reuse():
    sid = initialize(P())
    with Conn(P()) as c:
        for i in range(5):
            c.send(session_request_bytes(P(), sid, rpc("ping", i)))
            r = c.read_response()
            assert r.status == 200 and r.json()["id"] == i, f"request {i}: {r.status} {r.text}"
            assert "close" not in r.headers.get("connection", "").lower(), f"request {i} closed the connection"
        c.send(healthz_request(P()))
        assert c.read_response().status == 200
        # an error answer that is not a framing error keeps the connection too
        c.send(session_request_bytes(P(), sid, "{bad json"))
        r = c.read_response()
        assert r.status == 400
        if "close" not in r.headers.get("connection", "").lower():
            c.send(session_request_bytes(P(), sid, rpc("ping", "after")))
            assert c.read_response().json()["id"] == "after"


def test_request_sent_byte_by_byte():
    sid = initialize(P())
    data = session_request_bytes(P(), sid, rpc("ping", "slow"), close=True)
    r = request(P(), [data[i:i + 1] for i in range(len(data))])
    assert r.status == 200 and r.json()["id"] == "slow", f"{r.status} {r.text}"


def open_answered(port, n, deadline_s=10.0, sources=("127.0.0.1", "127.0.0.2")):
    """Opens n connections that each get a healthz answer and stay open, from
    the source addresses in turn (one address holds at most
    CM_MAX_CONNS_PER_ADDR, half the table). A 503 (the server has not yet seen
    a slot freed) is retried."""
    conns = []
    deadline = time.monotonic() + deadline_s
    while len(conns) < n and time.monotonic() < deadline:
        c = Conn(port, timeout=5, source=sources[len(conns) % len(sources)])
        c.send(healthz_request(port))
        try:
            r = c.read_response()
        except H.ConnectionClosed:
            c.close()
            time.sleep(0.05)
            continue
        if r.status == 503:
            c.close()
            time.sleep(0.05)
            continue
        assert r.status == 200, f"{r.status} {r.text}"
        conns.append(c)
    return conns


def conn_slots():
    """Connections the server under test holds at once: CM_MAX_CONNS, or over
    HTTPS the CM_TLS_CONNS of them that may be TLS."""
    lim = H.limits()
    return min(lim["CM_MAX_CONNS"], lim.get("CM_TLS_CONNS", lim["CM_MAX_CONNS"])) if H.HTTPS else lim["CM_MAX_CONNS"]


def test_connection_limit_503_then_recovers():
    """All CM_MAX_CONNS (16) slots busy mid-request (for less than CM_SLOW_GRACE_MS,
    so none is stalled yet): one more gets 503; freed slots serve again."""
    if H.HTTPS:
        raise H.Skip("a full HTTPS server closes new connections (a 503 needs a handshake): test_tls.py covers it")
    problems = []
    partial = b"GET /healthz HTTP/1.1\r\n"
    n = conn_slots()
    k = max(1, n // 4)
    with Server(*UPSTREAM_FLAGS) as s:
        held = open_answered(s.port, n)
        try:
            assert len(held) == n, f"only {len(held)} of {n} connections served"
            for c in held:  # each now holds half a request: busy, not idle
                c.send(partial)
            time.sleep(0.2)
            with Conn(s.port, source="127.0.0.3") as extra:
                raw = extra.read_until_close()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), f"17th connection: {raw[:200]!r}"
            assert b"\r\nRetry-After:" in head, head
            m = re.search(rb"\r\nContent-Length: *(\d+)", head, re.I)
            if not m or int(m.group(1)) != len(body):
                problems.append(f"the 503 answer announces Content-Length {m and int(m.group(1))} "
                                f"but carries {len(body)} body bytes: {body!r}")
            else:
                assert json.loads(body)["error"]["message"], body
            for c in held[:k]:
                c.close()
            held = held[k:]
            more = open_answered(s.port, k)
            assert len(more) == k, f"after closing {k}, only {len(more)} new connections served"
            for c in held:  # the old ones finish their request and still work
                c.send(f"Host: 127.0.0.1:{s.port}\r\n\r\n".encode())
                assert c.read_response().status == 200
            held += more
            for c in held:  # all busy again, just now
                c.send(partial)
            time.sleep(0.2)
            with Conn(s.port, source="127.0.0.3") as extra:
                assert extra.read_until_close().startswith(b"HTTP/1.1 503 "), "limit not enforced after reuse"
        finally:
            for c in held:
                c.close()
        assert s.alive()
    assert not problems, "; ".join(problems)


def test_idle_keepalive_connections_make_room():
    """CM_MAX_CONNS (16) idle kept-alive connections do not lock out one more client."""
    with Server(*UPSTREAM_FLAGS) as s:
        n = conn_slots()
        held = open_answered(s.port, n)
        try:
            assert len(held) == n, f"only {len(held)} of {n} connections served"
            time.sleep(1.2)  # idle for longer than CM_EVICT_IDLE_MS (1 s)
            with Conn(s.port, source="127.0.0.3") as extra:  # an address holding none: it may ask one to leave
                extra.send(healthz_request(s.port))
                assert extra.read_response().status == 200, "17th client refused while 16 were idle"
        finally:
            for c in held:
                c.close()
        assert s.alive()


def test_half_request_does_not_block_others():
    sid = initialize(P())
    stalled = []
    try:
        c1 = Conn(P())
        c1.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        stalled.append(c1)
        c2 = Conn(P())
        c2.send(session_request_bytes(P(), sid, rpc("ping", 1))[:-5])
        stalled.append(c2)
        c3 = Conn(P())
        c3.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n")
        stalled.append(c3)
        for i in range(3):
            assert result_of(ping_in(P(), sid, id=i)) == {}
        assert get(P(), "/healthz").status == 200
        # the stalled request can still complete
        c2.send(session_request_bytes(P(), sid, rpc("ping", 1))[-5:])
        assert c2.read_response().json()["id"] == 1
    finally:
        for c in stalled:
            c.close()


SHORT_BIN = None


def short_timeout_binary():
    """The server built with 1 s header and idle timeouts, into a private
    temporary directory (built once per run, so it is never stale or shared)."""
    global SHORT_BIN
    if SHORT_BIN:
        return SHORT_BIN
    out = os.path.join(tempfile.mkdtemp(prefix="calid_mcp_short_"), "calid_mcp_short")
    cmd = [os.environ.get("CC", "cc"), "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-DCALID_MCP_MAIN",
           "-DCM_HEADER_TIMEOUT_MS=1000", "-DCM_IDLE_TIMEOUT_MS=1000"]
    cmd += ["-o", out, "calid_mcp.c", os.path.join("port", "posix.c"), "-lbearssl", "-lpthread"]
    p = subprocess.run(cmd, cwd=H.ROOT, capture_output=True, timeout=120)
    assert p.returncode == 0, f"building {out} failed: {p.stderr.decode(errors='replace')[-1500:]}"
    SHORT_BIN = out
    return out


def test_stalled_requests_time_out_with_408():
    with Server(*UPSTREAM_FLAGS, binary=short_timeout_binary()) as s:
        half_head = Conn(s.port)
        half_head.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        half_body = Conn(s.port)
        half_body.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Authorization: Bearer x\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"")
        idle = Conn(s.port)
        try:
            assert get(s.port, "/healthz").status == 200
            for name, c in [("half head", half_head), ("half body", half_body)]:
                r = c.read_response()
                assert r.status == 408, f"{name}: {r.status} {r.text}"
                assert c.closed_by_peer(), f"{name}: connection left open after 408"
            assert idle.closed_by_peer(), "an idle connection was never closed"
            assert get(s.port, "/healthz").status == 200
        finally:
            for c in (half_head, half_body, idle):
                c.close()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def test_help_lists_every_flag():
    rc, out, err = H.run_binary(["--help"])
    assert rc == 0, f"--help exited {rc}: {err}"
    for flag in ["--listen", "--upstream", "--ca-file", "--api-key", "--access-token", "--allow-origin",
                 "--stdio", "--log-level", "--help", "--version"]:
        assert flag in out, f"--help does not mention {flag}"


def test_version_prints_version_and_memory():
    rc, out, err = H.run_binary(["--version"])
    assert rc == 0, f"--version exited {rc}: {err}"
    assert re.search(r"\d+\.\d+\.\d+", out), out
    m = re.search(r"(\d+) bytes", out)
    assert m and int(m.group(1)) > 0, f"no static memory figure: {out!r}"
    assert "static memory" in out.lower(), out


def test_unknown_flag_exits_2():
    for args in [["--bogus"], ["--listen"], ["--log-level", "loud"], ["-x"]]:
        rc, out, err = H.run_binary(args, timeout=5)
        assert rc == 2, f"{args}: exit {rc}"
        assert err.strip(), f"{args}: no message on stderr"
    rc, out, err = H.run_binary(["--bogus"])
    assert "--bogus" in err, err


def test_sigterm_exits_cleanly():
    s = Server(*UPSTREAM_FLAGS).start()
    assert get(s.port, "/healthz").status == 200
    rc = s.stop()
    text = s.stderr_text()
    s.close()
    assert rc == 0, f"exit status {rc} after SIGTERM: {text}"


# ---------------------------------------------------------------------------
# Last: the shared server survived everything above
# ---------------------------------------------------------------------------

def test_zz_shared_server_still_healthy_after_the_suite():
    assert not CRASHES, f"the shared server crashed (and was restarted) during: {', '.join(CRASHES)}"
    assert SHARED.alive(), f"the shared server died: {SHARED.stderr_text()[-2000:]}"
    sid = initialize(P())
    assert result_of(ping_in(P(), sid)) == {}
    assert len(result_of(modern_post(P(), "tools/list"))["tools"]) == 57
    assert get(P(), "/healthz").status == 200
    # every slot is free again: 16 connections at once are all served
    # (checked last: right after they close, the server may still count them)
    n = conn_slots()
    held = open_answered(P(), n)
    try:
        assert len(held) == n, f"only {len(held)} of {n} connections answered: a slot leaked"
        for c in held:
            c.send(healthz_request(P()))
            assert c.read_response().status == 200
    finally:
        for c in held:
            c.close()


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown, after_each=after_each)
