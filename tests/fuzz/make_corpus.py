#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into
OUTDIR/<target>/seed_<name> (default OUTDIR: build/fuzz/seeds).

The seeds are real MCP requests of both protocol eras (as the official SDK
clients and the seed document's curl commands send them), chunked and
pipelined bodies, batches, and real-looking Cal ID API answers. The corpus in
tests/fuzz/corpus/<target>/ is chosen from these seeds plus what long fuzzing
runs found, by tests/fuzz/trim_corpus.py (see tests/fuzz/README.md).

Layouts (see the comment at the top of each fuzz_*.c):
  fuzz_http      1 option byte + request bytes
  fuzz_upstream  1 option byte + answer bytes
  fuzz_mcp       3 option bytes + client bytes [SEP answer ...]
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n@@UPSTREAM@@\n"
WAIT = b"\n@@WAIT@@\n"
SID = b"ab" * 16  # the fake port's random bytes are all 0xab
TOKEN = b"calid_0123456789abcdef0123456789abcdef"

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "fuzz-client", "version": "1.0.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def post(body, headers=(), path=b"/mcp", host=b"127.0.0.1:8080", token=TOKEN, accept=b"application/json, text/event-stream",
         chunked=None, version=b"HTTP/1.1", ctype=b"application/json"):
    h = [b"POST " + path + b" " + version, b"Host: " + host]
    if ctype:
        h.append(b"Content-Type: " + ctype)
    if accept:
        h.append(b"Accept: " + accept)
    if token:
        h.append(b"Authorization: Bearer " + token)
    h += list(headers)
    if chunked is None:
        h.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(h) + b"\r\n\r\n" + body
    h.append(b"Transfer-Encoding: chunked")
    out = b""
    for i in range(0, len(body), chunked):
        part = body[i:i + chunked]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return b"\r\n".join(h) + b"\r\n\r\n" + out + b"0\r\n\r\n"


def request(method, path=b"/mcp", headers=(), host=b"127.0.0.1:8080"):
    h = [method + b" " + path + b" HTTP/1.1", b"Host: " + host] + list(headers)
    return b"\r\n".join(h) + b"\r\n\r\n"


def modern(method, rid, params=None, name=None, extra=()):
    p = dict(params or {})
    p["_meta"] = META
    body = js({"jsonrpc": "2.0", "id": rid, "method": method, "params": p})
    hdr = [b"MCP-Protocol-Version: 2026-07-28", b"Mcp-Method: " + method.encode()]
    if name:
        hdr.append(b"Mcp-Name: " + name.encode())
    return post(body, hdr + list(extra))


def session(method, rid, params=None, version=b"2025-03-26", extra=()):
    m = {"jsonrpc": "2.0", "method": method}
    if rid is not None:
        m["id"] = rid
    if params is not None:
        m["params"] = params
    return post(js(m), [b"Mcp-Session-Id: " + SID, b"MCP-Protocol-Version: " + version] + list(extra))


def initialize(version="2025-03-26", rid="init-1", client="curl"):
    return post(js({"jsonrpc": "2.0", "id": rid, "method": "initialize",
                    "params": {"protocolVersion": version, "capabilities": {},
                               "clientInfo": {"name": client, "version": "1.0.0"}}}))


def answer(status, body, reason=b"OK", ctype=b"application/json; charset=utf-8", extra=(), chunked=None,
           version=b"HTTP/1.1", length=True):
    h = [version + b" %d " % status + reason]
    if ctype:
        h.append(b"Content-Type: " + ctype)
    h += list(extra)
    if chunked:
        h.append(b"Transfer-Encoding: chunked")
        enc = b""
        for i in range(0, len(body), chunked):
            part = body[i:i + chunked]
            enc += b"%x\r\n" % len(part) + part + b"\r\n"
        return b"\r\n".join(h) + b"\r\n\r\n" + enc + b"0\r\n\r\n"
    if length:
        h.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(h) + b"\r\n\r\n" + body


ME = js({"status": "success", "data": {"id": 4711, "username": "ada", "name": "Ada Lovelace",
                                        "email": "ada@example.com", "timeZone": "Europe/London",
                                        "weekStart": "Monday", "createdDate": "2024-02-01T09:30:00.000Z"}})
BOOKINGS = js({"status": "success", "data": [{"id": 101, "uid": "bk_7f3a9c", "title": "Intro call",
                                              "startTime": "2026-03-02T10:00:00.000Z",
                                              "endTime": "2026-03-02T10:30:00.000Z", "status": "ACCEPTED",
                                              "attendees": [{"name": "Bob", "email": "bob@example.com",
                                                             "timeZone": "America/New_York"}]}],
               "meta": {"pagination": {"totalPages": 3, "page": 1}}})
SLOTS = js({"data": {"slots": {"2026-03-02": [{"time": "2026-03-02T09:00:00Z"}, {"time": "2026-03-02T09:30:00Z"}],
                               "2026-03-03": []}}})
CREATED = js({"status": "success", "data": {"id": 202, "uid": "bk_new", "status": "ACCEPTED",
                                            "startTime": "2026-03-02T09:00:00.000Z", "endTime": "2026-03-02T09:30:00.000Z"}})
ERR404 = js({"status": "error", "message": "Booking not found"})
ERR400 = js({"success": False, "error": {"message": "eventTypeId must be a number", "code": "BAD_REQUEST"}})

UP_ANSWERS = {
    "200_cl": answer(200, ME, extra=[b"Date: Thu, 01 Jan 2026 00:00:00 GMT", b"Connection: keep-alive"]),
    "200_chunked": answer(200, BOOKINGS, chunked=37, extra=[b"Vary: Accept-Encoding"]),
    "200_chunked_trailer": answer(200, SLOTS, chunked=64)[:-2] + b"X-Trace: abc\r\n\r\n",
    "201_created": answer(201, CREATED, reason=b"Created"),
    "204": b"HTTP/1.1 204 No Content\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n",
    "100_then_200": b"HTTP/1.1 100 Continue\r\n\r\n" + answer(200, ME),
    "404_json": answer(404, ERR404, reason=b"Not Found"),
    "400_nested": answer(400, ERR400, reason=b"Bad Request"),
    "429_retry": answer(429, js({"message": "Too many requests"}), reason=b"Too Many Requests",
                        extra=[b"Retry-After: 30"]),
    "502_html": answer(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", reason=b"Bad Gateway",
                       ctype=b"text/html"),
    "200_not_json": answer(200, b"OK", ctype=b"text/plain"),
    "http10_close": answer(200, ME, version=b"HTTP/1.0", length=False),
    "close_delimited": answer(200, BOOKINGS, extra=[b"Connection: close"], length=False),
    "lf_only": answer(200, ME).replace(b"\r\n", b"\n"),
    "truncated": answer(200, ME)[:-10],
    "ext_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=val\r\n{\"a\"\r\n3 \r\n:1}\r\n0\r\n\r\n",
}

seeds = {"fuzz_http": {}, "fuzz_mcp": {}, "fuzz_upstream": {}}

# ---- fuzz_http: option byte + request ----
H = seeds["fuzz_http"]
reqs = {
    "curl_initialize": initialize(),
    "curl_tools_list": session("tools/list", "2", {}),
    "v2_discover": modern("server/discover", "server-discover-probe-1"),
    "v2_tools_call": modern("tools/call", 1, {"name": "get_users_me", "arguments": {}}, name="get_users_me"),
    "v1_initialized": session("notifications/initialized", None, version=b"2025-11-25"),
    "get_sse": request(b"GET", headers=[b"Accept: text/event-stream", b"Mcp-Session-Id: " + SID]),
    "delete": request(b"DELETE", headers=[b"Mcp-Session-Id: " + SID, b"Authorization: Bearer " + TOKEN]),
    "options": request(b"OPTIONS", headers=[b"Origin: http://localhost:6274",
                                            b"Access-Control-Request-Method: POST",
                                            b"Access-Control-Request-Headers: content-type,mcp-protocol-version"]),
    "healthz_query": request(b"GET", path=b"/healthz?verbose=1&x=%20"),
    "chunked": post(js({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}), chunked=9),
    "chunked_ext_trailer": (b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5;foo=bar\r\nhello\r\n6 ; q=\"x\"\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"),
    "http10": post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), version=b"HTTP/1.0"),
    "expect": post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), headers=[b"Expect: 100-continue"]),
    "lf_only": initialize().replace(b"\r\n", b"\n"),
    "pipelined": request(b"GET", path=b"/healthz") + request(b"GET", path=b"/healthz"),
    "folded": b"GET /mcp HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n",
    "cl_te": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "conn_close": request(b"GET", path=b"/healthz", headers=[b"Connection: keep-alive, close"]),
}
for name, r in reqs.items():
    H[name] = b"\x00" + r
H["pipelined_split"] = b"\x0a" + reqs["pipelined"]
H["chunked_bytewise"] = b"\x20" + reqs["chunked"]
H["small_head"] = b"\x01" + reqs["curl_initialize"]
H["body_only_chunks"] = b"\x30" + b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
# chunk lines nginx refuses: a size like 0x5, a CR that is not a line end
H["chunk_0x"] = b"\x30" + b"0x5\r\nhello\r\n0\r\n\r\n"
H["chunk_ext_bare_cr"] = b"\x30" + b"5;a\rb\r\nhello\r\n0\r\nX: a\rb\r\n\r\n"

# ---- fuzz_upstream: option byte + answer ----
U = seeds["fuzz_upstream"]
for name, a in UP_ANSWERS.items():
    U[name] = b"\x00" + a
U["head_request"] = b"\x01" + answer(200, b"", length=True)
U["small_cap_chunked"] = b"\x04" + UP_ANSWERS["200_chunked"]
U["cap_1000_split"] = b"\x3e" + UP_ANSWERS["200_cl"]

# ---- fuzz_mcp: 3 option bytes + client bytes [SEP answer ...] ----
M = seeds["fuzz_mcp"]


def mcp(o0, o1, o2, client_parts, answers=()):
    data = bytes([o0, o1, o2]) + WAIT.join(client_parts)
    for a in answers:
        data += SEP + a
    return data


HTTP, STDIO = 0, 2
NO_DNS, HANG, TLS = 1 << 5, 2 << 5, 3 << 5

M["curl_flow"] = mcp(HTTP, 0, 0, [initialize(), session("tools/list", "2", {}),
                                  session("tools/call", 3, {"name": "get_users_me", "arguments": {}})],
                     [UP_ANSWERS["200_cl"]])
M["v1_flow"] = mcp(HTTP, 0, 0, [initialize("2025-11-25", 0, "sdk"),
                                session("notifications/initialized", None, version=b"2025-11-25"),
                                request(b"GET", headers=[b"Accept: text/event-stream", b"Mcp-Session-Id: " + SID,
                                                         b"Authorization: Bearer " + TOKEN]),
                                session("tools/list", 1, version=b"2025-11-25"),
                                session("tools/call", 2, {"name": "get_booking", "arguments": {"status": "upcoming", "limit": 10}},
                                        version=b"2025-11-25"),
                                request(b"DELETE", headers=[b"Mcp-Session-Id: " + SID, b"Authorization: Bearer " + TOKEN])],
                   [UP_ANSWERS["200_chunked"]])
M["v2_flow"] = mcp(HTTP, 0, 0, [modern("server/discover", "server-discover-probe-1"), modern("tools/list", 1),
                                modern("tools/call", 2, {"name": "get_slots", "arguments": {
                                    "eventTypeId": 12, "start": "2026-03-02T00:00:00Z", "end": "2026-03-03T00:00:00Z",
                                    "timeZone": "Europe/Berlin"}}, name="get_slots")],
                   [UP_ANSWERS["200_chunked_trailer"]])
M["v2_create_booking"] = mcp(HTTP, 0x0b, 0, [modern("tools/call", "cb", {"name": "create_booking", "arguments": {
    "eventTypeId": 12, "start": "2026-03-02T09:00:00Z", "end": "2026-03-02T09:30:00Z", "timeZone": "Europe/Berlin",
    "responses": {"name": "Bob \u00e9\u6f22 \ud83d\ude00", "email": "bob@example.com", "guests": [],
                  "location": {"value": "integrations:daily", "optionValue": ""}, "notes": "line\nbreak \"q\""},
    "language": "en", "metadata": {}}}, name="create_booking")], [UP_ANSWERS["201_created"]])
M["v2_path_params"] = mcp(HTTP, 0, 0, [modern("tools/call", 5, {"name": "remove_team_member", "arguments": {
    "teamId": 42, "membershipId": "m/7?x=1#frag"}}, name="remove_team_member"),
    modern("tools/call", 6, {"name": "get_booking_by_id", "arguments": {"bookingId": "bk 7f\u00e9"}},
           name="get_booking_by_id")], [UP_ANSWERS["404_json"], UP_ANSWERS["204"]])
M["v2_bad_args"] = mcp(HTTP, 0, 0, [modern("tools/call", 8, {"name": "get_slots", "arguments": {"eventTypeId": "x"}},
                                           name="get_slots"),
                                    modern("tools/call", 9, {"name": "nope", "arguments": []}, name="nope"),
                                    modern("tools/call", 10, {"name": "get_users_me"}, name="other"),
                                    modern("initialize", 11), modern("ping", 12)])
M["v2_version_mismatch"] = mcp(HTTP, 0, 0, [post(js({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {
    "_meta": dict(META, **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})}}),
    [b"MCP-Protocol-Version: 2099-01-01", b"Mcp-Method: tools/list"])])
M["mcp_name_base64"] = mcp(HTTP, 0, 0, [modern("tools/call", 3, {"name": "get_users_me", "arguments": None},
                                               name="=?base64?Z2V0X3VzZXJzX21l?=")], [UP_ANSWERS["100_then_200"]])
M["batch_2025_03_26"] = mcp(HTTP, 0x01, 0, [initialize(), post(js([
    {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_teams", "arguments": {"limit": 5}}},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "get_booking_by_id", "arguments": {"bookingId": 9}}},
    {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "cancel_booking", "arguments": {"bookingId": 9, "cancellationReason": "sick"}}},
    7, {"jsonrpc": "2.0", "id": 6, "method": "initialize"}]), [b"Mcp-Session-Id: " + SID])],
    [UP_ANSWERS["200_cl"], UP_ANSWERS["429_retry"], UP_ANSWERS["502_html"]])
M["sse_only"] = mcp(HTTP, 0, 0, [initialize("2025-06-18"), session("tools/call", 3, {"name": "get_users_me", "arguments": {}},
                                                                   version=b"2025-06-18", extra=[]).replace(
    b"Accept: application/json, text/event-stream", b"Accept: text/event-stream")], [UP_ANSWERS["400_nested"]])
M["chunked_expect"] = mcp(HTTP, 0x02, 0, [post(js({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}}),
    [b"Expect: 100-continue"], chunked=16)])
M["avatar_multipart"] = mcp(HTTP, 0, 0, [modern("tools/call", 1, {"name": "create_users_edit_profile_avatar", "arguments": {
    "image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "filename": "me.png", "contentType": "image/png"}}, name="create_users_edit_profile_avatar")], [UP_ANSWERS["200_cl"]])
M["errors_http"] = mcp(HTTP, 0, 0, [request(b"GET", path=b"/healthz"), request(b"POST", path=b"/nope"),
                                    post(b"{\"jsonrpc\":\"2.0\",", []), post(b"[]", []),
                                    post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), ctype=b"text/plain"),
                                    post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), accept=b"text/html"),
                                    post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), host=b"evil.example"),
                                    post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), [b"Origin: https://evil.example"]),
                                    post(js({"jsonrpc": "2.0", "id": 1, "method": "ping"}), token=None),
                                    request(b"OPTIONS", headers=[b"Origin: http://localhost:6274"]),
                                    b"GET /mcp HTTP/2.0\r\n\r\n"])
M["server_key_token"] = mcp(HTTP | 4 | 8 | 16, 0, 0, [post(js({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-03-26"}}), token=b"access-token-for-this-server-42"),
    session("tools/call", 2, {"name": "get_users_me"}).replace(TOKEN, b"access-token-for-this-server-42")],
    [UP_ANSWERS["200_cl"]])
M["allow_origin_0000"] = mcp(HTTP | 16 | 128, 0, 0, [modern("tools/list", 1, extra=[b"Origin: https://app.example.com"])])
M["timeouts_hang"] = mcp(HTTP | HANG, 0x05, 0, [modern("tools/call", 1, {"name": "get_teams", "arguments": {}}, name="get_teams"),
                                               b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n{"])
M["no_dns"] = mcp(HTTP | NO_DNS, 0x10, 0, [modern("tools/call", 1, {"name": "get_webhook", "arguments": {}}, name="get_webhook")])
M["tls_garbage"] = mcp(HTTP | TLS, 0x03, 0, [modern("tools/call", 1, {"name": "delete_webhook", "arguments": {"webhookId": "w1"}},
                                                    name="delete_webhook")],
                       [b"\x16\x03\x03\x00\x31\x02\x00\x00\x2d\x03\x03" + b"\x11" * 32 + b"\x00\xc0\x2f\x00\x00\x05\xff\x01\x00\x01\x00"])
M["busy_idle_conns"] = mcp(HTTP, 0, 28, [request(b"GET", path=b"/healthz")])
M["eof_early_pending"] = mcp(HTTP, 0x20, 0, [modern("tools/call", 1, {"name": "get_users_me", "arguments": {}}, name="get_users_me")],
                             [UP_ANSWERS["200_cl"]])
M["random_broken"] = mcp(HTTP, 0x40 | 0x80, 0, [initialize()])

M["query_args_escapes"] = mcp(HTTP, 0, 0, [modern("tools/call", 1, {"name": "get_booking", "arguments": {
    "status": "past", "limit": 5, "ids": [1, 2, "a b"], "q": "caf\u00e9 \ud83d\ude00 \n\t\"x\" \\ \b\f\r",
    "afterCreatedDate": None, "nested": {"a": [1]}}}, name="get_booking"),
    modern("tools/call", 2, {"name": "get_users", "arguments": {"username": "\u00e9\ud83d\ude00 a/b?c#d"}},
           name="get_users")], [UP_ANSWERS["200_cl"]])
M["url_too_long"] = mcp(HTTP, 0, 0, [modern("tools/call", 1, {"name": "get_booking", "arguments": {"q": "\u00e9" * 1500}},
                                            name="get_booking")])
M["batch_notifications_only"] = mcp(HTTP, 0, 0, [initialize(), post(js([
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
    {"jsonrpc": "2.0", "id": 9, "result": {}}]), [b"Mcp-Session-Id: " + SID])])
BIG = js({"status": "success", "data": [{"id": i, "title": "Meeting number %d with \"quotes\"" % i} for i in range(60)]})
M["batch_overflow"] = mcp(HTTP, 0, 0, [initialize(), post(js([
    {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "get_teams", "arguments": {}}} for i in range(3)]),
    [b"Mcp-Session-Id: " + SID])], [answer(200, BIG)])
INIT_MIN = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"x"}}'
M["session_eviction"] = mcp(HTTP, 0, 0, [b"".join(
    b"POST /mcp HTTP/1.1\r\nHost:localhost\r\nContent-Type:application/json\r\nAuthorization:Bearer t%d\r\n"
    b"Content-Length:%d\r\n\r\n" % (i % 10, len(INIT_MIN)) + INIT_MIN for i in range(66)) + request(b"DELETE", headers=[b"Mcp-Session-Id: " + SID, b"Authorization: Bearer t5"])])
M["five_clients_tool_calls"] = mcp(HTTP, 0x02, 0x80, [modern("tools/call", 1, {"name": "get_users_me", "arguments": {}},
                                                             name="get_users_me"),
                                                      modern("tools/call", 2, {"name": "delete_webhook", "arguments": {"webhookId": 7}},
                                                             name="delete_webhook")],
                                  [UP_ANSWERS["200_cl"], UP_ANSWERS["204"], UP_ANSWERS["429_retry"]])
M["five_clients_hang_batch"] = mcp(HTTP | HANG, 0, 0x80, [initialize(), post(js([
    {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "get_teams", "arguments": {"limit": i}}} for i in range(3)]),
    [b"Mcp-Session-Id: " + SID])])
# parser differentials: duplicate keys (plain and escaped), NULs in names, long ids
M["duplicate_keys_and_nuls"] = mcp(HTTP, 0, 0, [initialize(), b"".join([
    post(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_team","arguments":{"teamId":7},'
         b'"name":"get_teams"}}', [b"Mcp-Session-Id: " + SID]),
    post(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_contact","arguments":'
         b'{"contactId":1,"contact\\u0049d":2}}}', [b"Mcp-Session-Id: " + SID]),
    post(b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_team\\u0000-harmless",'
         b'"arguments":{"teamId":7}}}', [b"Mcp-Session-Id: " + SID]),
    post(b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_\\u0075sers_me","arguments":'
         b'{"a\\/b":1}}}', [b"Mcp-Session-Id: " + SID])])], [UP_ANSWERS["200_cl"]])
M["long_ids"] = mcp(HTTP, 0, 0, [initialize(), post(js([
    {"jsonrpc": "2.0", "id": "i" * 300, "method": "tools/call", "params": {"name": "get_users_me", "arguments": {}}},
    {"jsonrpc": "2.0", "id": int("7" * 90), "method": "ping"}]), [b"Mcp-Session-Id: " + SID]),
    modern("tools/call", "m" * 2000, {"name": "get_users_me", "arguments": {}}, name="get_users_me")],
    [UP_ANSWERS["200_cl"]])
STDIO_LINES = b"\n".join([
    js({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                                                      "clientInfo": {"name": "claude", "version": "1"}}}),
    js({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    js({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    js({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_booking", "arguments": {"status": "past"}}}),
    js([{"jsonrpc": "2.0", "id": 3, "method": "ping"},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "get_users_me"}}]),
    js({"jsonrpc": "2.0", "id": 5, "method": "server/discover", "params": {"_meta": META}}),
    b"{not json", b"", b"[]",
])
M["stdio_flow"] = mcp(STDIO | 4, 0, 0, [STDIO_LINES], [UP_ANSWERS["200_chunked"], UP_ANSWERS["404_json"]])
M["stdio_no_key"] = mcp(STDIO, 0, 0, [js({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                            "params": {"name": "get_users_me", "arguments": {}}})])
M["stdio_hang"] = mcp(STDIO | 4 | HANG, 0, 0, [js({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                   "params": {"name": "get_contact", "arguments": {"contactId": 3}}})])


# Answers larger than fuzz_mcp's API window (CM_UPSTREAM_BODY_BYTES=2048 in
# mk/fuzz.mk): they stream to the client (chunked, close-delimited for
# HTTP/1.0, a stdio line in pieces), also when they fail midway.
BIG = js({"status": "success", "data": [{"id": 1000 + i, "uid": "bk_%04d" % i, "title": "Call \u00e9 %d \"q\"" % i,
                                         "startTime": "2026-03-02T10:00:00.000Z", "status": "ACCEPTED"}
                                        for i in range(64)]})
BIG_ERR = js({"status": "error", "message": "validation failed", "details": ["field %d is wrong" % i for i in range(200)]})
BIG_CALL = {"name": "get_booking", "arguments": {"status": "past"}}


def big_call(rid, extra=()):
    return modern("tools/call", rid, BIG_CALL, name="get_booking", extra=extra)


M["stream_200_cl"] = mcp(HTTP, 0x10, 0, [big_call(1), WAIT.join([big_call(2)])],
                         [answer(200, BIG), answer(200, BIG, chunked=700)])
M["stream_200_chunked_sse"] = mcp(HTTP, 0x12, 0, [big_call(1).replace(
    b"Accept: application/json, text/event-stream", b"Accept: text/event-stream")], [answer(200, BIG, chunked=1500)])
M["stream_cut"] = mcp(HTTP, 0x08, 0, [big_call(1)],
                      [answer(200, BIG[:5000], extra=[b"Content-Length: %d" % len(BIG)], length=False)])
M["stream_not_json"] = mcp(HTTP, 0x18, 0, [big_call(1)],
                           [answer(200, BIG[:4100] + b"<html>oops</html>" + BIG[4100:])])
M["stream_404_big"] = mcp(HTTP, 0x00, 0, [big_call(1)], [answer(404, BIG_ERR, reason=b"Not Found")])
M["stream_http10"] = mcp(HTTP, 0x0a, 0, [post(js({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                  "params": dict(BIG_CALL, _meta=META)}),
                                              [b"MCP-Protocol-Version: 2026-07-28", b"Mcp-Method: tools/call",
                                               b"Mcp-Name: get_booking"], version=b"HTTP/1.0")],
                         [answer(200, BIG[:3000] + b"\x00" + BIG[3000:], chunked=999)])
M["stream_stdio"] = mcp(STDIO | 4, 0x01, 0, [b"\n".join([
    js({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": BIG_CALL}),
    js({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": BIG_CALL}),
    js({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": BIG_CALL})]) + b"\n"],
    [answer(200, BIG, chunked=1024), answer(200, BIG[:4500], extra=[b"Content-Length: %d" % len(BIG)], length=False),
     answer(500, BIG_ERR, reason=b"Internal Server Error")])

def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "build", "fuzz", "seeds")
    total = 0
    for target, items in seeds.items():
        d = os.path.join(out_root, target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed_"):
                os.remove(os.path.join(d, f))
        for name, data in items.items():
            with open(os.path.join(d, "seed_" + name), "wb") as f:
                f.write(data)
            total += len(data)
    print("%d seeds, %d bytes" % (sum(len(v) for v in seeds.values()), total), file=sys.stderr)


if __name__ == "__main__":
    main()
