#!/usr/bin/env python3
"""Issue #13: prompts, resources, completions, logging and tool selection.

    python3 tests/test_features.py             # every test
    python3 tests/test_features.py logging     # tests whose names contain a word

The protocol on the wire, in both eras (session era through initialize and
Mcp-Session-Id, 2026-07-28 through the per-request _meta envelope) and over
stdio: what prompts/list, prompts/get, resources/*, completion/complete,
logging/setLevel and the _meta logLevel answer, the API requests resource
reads make at the fake Cal ID API, and what --read-only, --toolsets and
/mcp?toolsets= leave in tools/list, prompts and resources. Also prints the
size of tools/list for each toolset (numbers, never asserted).
Ends with "N passed, N failed"; exits 1 when anything failed.
"""
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

TOKEN = "calid_features_alice"
TOOLSETS = ["availability", "bookings", "contacts", "event-types", "slots", "teams", "users", "webhooks"]
PROMPTS = ["book_meeting", "bookings_this_week", "contact_meeting_history", "create_event_type", "free_slots_on_day"]
RESOURCES = ["calid://bookings/upcoming", "calid://event-types", "calid://me", "calid://schedules"]
LOG_KEY = "io.modelcontextprotocol/logLevel"

# The toolset each API path prefix belongs to (the README's table): the
# specification the selection is held to.
PATH_TOOLSET = [("/availability", "availability"), ("/schedule", "availability"), ("/booking", "bookings"),
                ("/contacts", "contacts"), ("/event-types", "event-types"), ("/slots", "slots"),
                ("/teams", "teams"), ("/users", "users"), ("/user/", "users"), ("/webhook", "webhooks")]

FAKE = None
SERVERS = {}


def setup():
    global FAKE
    FAKE = H.FakeCalid().start()
    for name, flags in [("all", []), ("narrow", ["--read-only", "--toolsets", "bookings"]),
                        ("slots", ["--toolsets", "slots,event-types"])]:
        SERVERS[name] = H.Server(*FAKE.server_flags(), *flags).start()


def teardown():
    for s in SERVERS.values():
        s.close()
    if FAKE:
        FAKE.close()


def port(name="all"):
    return SERVERS[name].port


def fake_call(method, path):
    ctx = ssl.create_default_context(cafile=FAKE.ca_file)
    ctx.check_hostname = False
    req = urllib.request.Request(FAKE.url + path, method=method, data=b"{}" if method == "POST" else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def fake_requests():
    got = fake_call("GET", "/__fake/requests")
    items = got if isinstance(got, list) else got["requests"]
    return [q for q in items if not q["path"].startswith("/__fake")]


def fake_clear():
    fake_call("DELETE", "/__fake/requests")


def rpc(method, params=None, id=1):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        body["params"] = params
    return body


class Session:
    """A session-era client: initialize, then posts with the session id."""

    def __init__(self, server="all", path="/mcp"):
        self.port = port(server)
        self.path = path
        r = H.post_json(self.port, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                               "clientInfo": {"name": "t", "version": "1"}}},
                        token=TOKEN, path=path)
        assert r.status == 200, r.text
        self.init = r.json()["result"]
        self.sid = r.headers["mcp-session-id"]

    def post(self, method, params=None, accept=H.ACCEPT_BOTH):
        return H.post_json(self.port, rpc(method, params), token=TOKEN, path=self.path,
                           headers=[("Mcp-Session-Id", self.sid), ("MCP-Protocol-Version", "2025-11-25"),
                                    ("Accept", accept)])

    def call(self, method, params=None):
        r = self.post(method, params)
        assert r.status == 200, f"{method}: HTTP {r.status} {r.text[:300]}"
        return r.json()


def modern(method, params=None, server="all", path="/mcp", name=None, meta=None, accept=H.ACCEPT_BOTH):
    """A 2026-07-28 request; name sets Mcp-Name, meta adds _meta keys."""
    body = H.modern_body(method, params)
    body["params"]["_meta"].update(meta or {})
    h = [("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", method), ("Accept", accept)]
    if name is not None:
        h.append(("Mcp-Name", name))
    return H.post_json(port(server), body, headers=h, token=TOKEN, path=path)


def mjson(method, params=None, **kw):
    r = modern(method, params, **kw)
    assert r.status == 200, f"{method}: HTTP {r.status} {r.text[:300]}"
    return r.json()


def stdio(lines, flags=(), env=None):
    """Runs --stdio with these JSON lines; returns the JSON answers, in order."""
    e = dict(H.clean_env(env), CALID_API_KEY=TOKEN)
    p = subprocess.run([H.BIN, "--stdio", *FAKE.server_flags(), *flags], input="".join(json.dumps(x) + "\n" for x in lines),
                       capture_output=True, text=True, timeout=30, env=e)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def toolset_of(path):
    for prefix, ts in PATH_TOOLSET:
        if path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/"):
            return ts
    raise AssertionError(f"no toolset for {path}")


# The route map the tests already hold the catalog to (tests/test_tools.py).
def routes():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_tools.py")).read()
    block = src[src.index("ROUTES = {"):src.index("}\n", src.index("ROUTES = {")) + 1]
    return eval(block[len("ROUTES = "):])  # a dict literal of (method, path) pairs


# ---------------------------------------------------------------------------
# capabilities


def test_capabilities_in_initialize_and_discover():
    want = {"tools", "prompts", "resources", "logging", "completions"}
    caps = Session().init["capabilities"]
    assert want <= set(caps), caps
    d = mjson("server/discover")["result"]
    assert want <= set(d["capabilities"]), d
    assert d["supportedVersions"][0] == H.MODERN and "2025-11-25" in d["supportedVersions"], d
    # a version not served: -32022 lists exactly what discover lists
    body = H.modern_body("tools/list", version="2099-01-01")
    r = H.post_json(port(), body, token=TOKEN, headers=[("MCP-Protocol-Version", "2099-01-01"), ("Mcp-Method", "tools/list")])
    assert r.status == 400 and r.json()["error"]["data"]["supported"] == d["supportedVersions"], r.text


# ---------------------------------------------------------------------------
# prompts


def test_prompts_list_both_eras_and_stdio():
    s = Session().call("prompts/list")["result"]["prompts"]
    m = mjson("prompts/list")["result"]
    assert sorted(p["name"] for p in s) == PROMPTS, s
    assert m["prompts"] == s, "the two eras list different prompts"
    assert m["cacheScope"] == "public" and m["ttlMs"] > 0 and m["resultType"] == "complete", m
    out = stdio([rpc("prompts/list")])
    assert out[0]["result"]["prompts"] == s
    for p in s:
        assert p["title"] and p["description"], p
        for a in p["arguments"]:
            assert set(a) == {"name", "description", "required"}, a


def test_prompts_name_only_tools_the_server_lists():
    s = Session()
    tools = {t["name"] for t in s.call("tools/list")["result"]["tools"]}
    values = {"day": "tomorrow", "title": "Sales demo", "length": "30", "attendeeName": "John Doe", "when": "next Tuesday at 3pm"}
    for prompt in s.call("prompts/list")["result"]["prompts"]:
        p = prompt["name"]
        args = {a["name"]: values[a["name"]] for a in prompt["arguments"] if a["required"]}
        text = s.call("prompts/get", {"name": p, "arguments": args})["result"]["messages"][0]["content"]["text"]
        named = set(re.findall(r"\b(?:get|list|create)_[a-z_]+\b", text))
        assert named and named <= tools, f"{p} names {named - tools}, which tools/list does not have"


def test_prompt_get_renders_arguments_and_what_to_ask():
    got = Session().call("prompts/get", {"name": "free_slots_on_day", "arguments": {"day": "next Monday", "timeZone": "Europe/Berlin"}})
    msg = got["result"]["messages"]
    assert len(msg) == 1 and msg[0]["role"] == "user" and msg[0]["content"]["type"] == "text", msg
    text = msg[0]["content"]["text"]
    assert "next Monday" in text and "Europe/Berlin" in text, text
    assert "ask me which one" in text, "no eventType given: the message must say to ask which event type"
    assert "get_event_types" in text and "get_slots" in text, text
    text = Session().call("prompts/get", {"name": "bookings_this_week"})["result"]["messages"][0]["content"]["text"]
    assert "ask me for it" in text and "time zone" in text, "no timeZone given: the message must say to ask for it"
    m = mjson("prompts/get", {"name": "create_event_type", "arguments": {"title": 'A "quoted" demo', "length": "45"}},
              name="create_event_type")["result"]
    assert m["resultType"] == "complete" and 'A "quoted" demo' in m["messages"][0]["content"]["text"], m


def test_prompt_get_errors():
    s = Session()
    cases = [({"name": "nope"}, "unknown prompt"),
             ({}, "unknown prompt"),
             ({"name": "book_meeting", "arguments": {"attendeeName": "J"}}, "'when'"),
             ({"name": "bookings_this_week", "arguments": {"zone": "x"}}, "no argument 'zone'"),
             ({"name": "bookings_this_week", "arguments": {"timeZone": 5}}, "must be a string"),
             ({"name": "bookings_this_week", "arguments": {"timeZone": "x" * 500}}, "over 200 bytes"),
             ({"name": "bookings_this_week", "arguments": ["x"]}, "must be an object")]
    for params, words in cases:
        e = s.call("prompts/get", params).get("error")
        assert e and e["code"] == -32602 and words in e["message"], (params, e)
    r = modern("prompts/get", {"name": "book_meeting"}, name="bookings_this_week")
    assert r.status == 400 and r.json()["error"]["code"] == -32020, r.text
    r = modern("prompts/get", {"name": "book_meeting"})
    assert r.status == 400 and "Mcp-Name" in r.json()["error"]["message"], r.text


# ---------------------------------------------------------------------------
# resources


def test_resources_lists_both_eras():
    s = Session()
    res = s.call("resources/list")["result"]["resources"]
    assert sorted(r["uri"] for r in res) == RESOURCES, res
    assert all(r["mimeType"] == "application/json" and r["name"] and r["description"] for r in res), res
    tpl = s.call("resources/templates/list")["result"]["resourceTemplates"]
    assert sorted(t["uriTemplate"] for t in tpl) == ["calid://bookings/{bookingId}", "calid://event-types/{eventTypeId}"], tpl
    m = mjson("resources/list")["result"]
    assert m["resources"] == res and m["cacheScope"] == "public", m
    assert mjson("resources/templates/list")["result"]["resourceTemplates"] == tpl


def test_resource_read_is_one_api_call_with_the_callers_token():
    want = {"calid://me": "/users/me", "calid://event-types": "/event-types", "calid://schedules": "/schedule",
            "calid://bookings/upcoming": "/booking"}
    s = Session()
    for uri, path in want.items():
        fake_clear()
        got = s.call("resources/read", {"uri": uri})["result"]["contents"]
        recs = fake_requests()
        assert len(recs) == 1 and recs[0]["method"] == "GET" and recs[0]["path"].split("?")[0] == path, (uri, recs)
        auth = {k.lower(): v for k, v in (recs[0]["headers"].items() if isinstance(recs[0]["headers"], dict) else recs[0]["headers"])}
        assert auth["authorization"] == f"Bearer {TOKEN}", auth
        assert got[0]["uri"] == uri and got[0]["mimeType"] == "application/json", got
        json.loads(got[0]["text"])
    assert "status=upcoming" in recs[0]["path"] + "?" + str(recs[0].get("query", "")), recs[0]


def test_resource_templates_read_and_cache_fields():
    booking = json.loads(Session().call("resources/read", {"uri": "calid://bookings/upcoming"})["result"]["contents"][0]["text"])
    bid = booking["data"][0]["id"]
    uri = f"calid://bookings/{bid}"
    m = mjson("resources/read", {"uri": uri}, name=uri)["result"]
    assert m["contents"][0]["uri"] == uri and json.loads(m["contents"][0]["text"])["data"]["id"] == bid, m
    assert m["cacheScope"] == "private" and m["ttlMs"] == 60000 and m["resultType"] == "complete", m
    ets = json.loads(mjson("resources/read", {"uri": "calid://event-types"}, name="calid://event-types")["result"]["contents"][0]["text"])
    first = ets["data"][0] if isinstance(ets["data"], list) else ets["data"]["eventTypeGroups"][0]["eventTypes"][0]
    uri = f"calid://event-types/{first['id']}"
    m = mjson("resources/read", {"uri": uri}, name=uri)["result"]
    assert json.loads(m["contents"][0]["text"])["data"]["id"] == first["id"] and m["ttlMs"] == 300000, m


def test_resource_not_found_codes_per_era():
    s = Session()
    for uri in ["calid://nope", "calid://bookings/", "calid://bookings/1/2", "calid://bookings/../me", "calid://bookings/a%20b",
                "https://example.com", "calid://event-types/" + "9" * 65]:
        fake_clear()
        e = s.call("resources/read", {"uri": uri})["error"]
        assert e["code"] == -32002 and "not found" in e["message"], (uri, e)
        r = modern("resources/read", {"uri": uri}, name=uri)
        assert r.status == 200 and r.json()["error"]["code"] == -32602 and r.json()["error"]["data"]["uri"] == uri, (uri, r.text)
        assert fake_requests() == [], f"{uri}: a malformed URI must not reach the API"
    e = s.call("resources/read", {"uri": "calid://bookings/999999"})["error"]
    assert e["code"] == -32002 and "404" in e["message"], e
    e = mjson("resources/read", {"uri": "calid://event-types/424242"}, name="calid://event-types/424242")["error"]
    assert e["code"] == -32602 and "404" in e["message"], e
    e = s.call("resources/read", {})["error"]
    assert e["code"] == -32602 and "params.uri" in e["message"], e
    r = modern("resources/read", {"uri": "calid://me"}, name="calid://schedules")
    assert r.status == 400 and r.json()["error"]["code"] == -32020 and "params.uri" in r.json()["error"]["message"], r.text


def test_resource_read_api_error_is_a_jsonrpc_error():
    r = H.post_json(port(), {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "calid://me",
                    "_meta": H.modern_meta()}}, token="not_a_calid_token",
                    headers=[("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "resources/read"), ("Mcp-Name", "calid://me")])
    e = r.json()["error"]
    assert e["code"] == -32000 and "401" in e["message"] and "calid://me" in e["message"], e


def test_resources_over_stdio():
    out = stdio([rpc("resources/list"), rpc("resources/read", {"uri": "calid://me"}, 2),
                 rpc("resources/read", {"uri": "calid://me", "_meta": H.modern_meta()}, 3),
                 rpc("resources/read", {"uri": "calid://x"}, 4)])
    assert sorted(x["uri"] for x in out[0]["result"]["resources"]) == RESOURCES
    assert json.loads(out[1]["result"]["contents"][0]["text"])["data"]["username"], out[1]
    assert out[2]["result"]["cacheScope"] == "private", out[2]
    assert out[3]["error"]["code"] == -32002, out[3]


# ---------------------------------------------------------------------------
# completions


def complete(ref, name, value, era="session"):
    params = {"ref": ref, "argument": {"name": name, "value": value}}
    return Session().call("completion/complete", params) if era == "session" else mjson("completion/complete", params)


def test_completion_time_zones():
    ref = {"type": "ref/prompt", "name": "bookings_this_week"}
    c = complete(ref, "timeZone", "berl")["result"]["completion"]
    assert c == {"values": ["Europe/Berlin"], "total": 1, "hasMore": False}, c
    c = complete(ref, "timeZone", "AMERICA/NEW", era="modern")["result"]
    assert c["completion"]["values"] == ["America/New_York"] and c["resultType"] == "complete", c
    c = complete(ref, "timeZone", "")["result"]["completion"]
    assert len(c["values"]) == 100 and c["total"] > 400 and c["hasMore"] is True, c
    assert "UTC" in complete(ref, "timeZone", "ut")["result"]["completion"]["values"]
    assert complete(ref, "timeZone", "Mars/")["result"]["completion"] == {"values": [], "total": 0, "hasMore": False}


def test_completion_days_and_errors():
    c = complete({"type": "ref/prompt", "name": "free_slots_on_day"}, "day", "next t")["result"]["completion"]
    assert c["values"] == ["next Tuesday", "next Thursday"], c
    c = complete({"type": "ref/prompt", "name": "book_meeting"}, "when", "tom")["result"]["completion"]
    assert c["values"] == ["tomorrow"], c
    c = complete({"type": "ref/prompt", "name": "book_meeting"}, "attendeeName", "J")["result"]["completion"]
    assert c["values"] == [], "the server cannot know attendee names"
    c = complete({"type": "ref/resource", "uri": "calid://bookings/{bookingId}"}, "bookingId", "1")["result"]["completion"]
    assert c["values"] == [], c
    for ref, name in [({"type": "ref/prompt", "name": "nope"}, "x"), ({"type": "ref/prompt", "name": "book_meeting"}, "nope"),
                      ({"type": "ref/resource", "uri": "calid://nope/{x}"}, "x"), ({"type": "ref/tool", "name": "x"}, "x")]:
        e = complete(ref, name, "a")["error"]
        assert e["code"] == -32602, (ref, e)
    e = Session().call("completion/complete", {"ref": {"type": "ref/prompt", "name": "book_meeting"}})["error"]
    assert e["code"] == -32602 and "argument" in e["message"], e


def test_completion_event_type_slugs_one_cached_call_per_token():
    ref = {"type": "ref/prompt", "name": "free_slots_on_day"}
    fake_clear()
    c = complete(ref, "eventType", "")["result"]["completion"]
    recs = fake_requests()
    assert len(recs) == 1 and recs[0]["method"] == "GET" and recs[0]["path"].split("?")[0] == "/event-types", recs
    hdrs = recs[0]["headers"]
    auth = {k.lower(): v for k, v in (hdrs.items() if isinstance(hdrs, dict) else hdrs)}["authorization"]
    assert auth == f"Bearer {TOKEN}", auth
    assert c["values"] == ["intro-call", "consultation", "workshop", "strategy-session"] and c["total"] == 4, c  # the fake's own event types
    c = complete(ref, "eventType", "WORK", era="modern")["result"]["completion"]
    assert c["values"] == ["workshop"], c
    assert len(fake_requests()) == 1, "a second completion within a minute must come from the cache"
    body = H.modern_body("completion/complete", {"ref": ref, "argument": {"name": "eventType", "value": "c"}})
    r = H.post_json(port(), body, token="calid_features_bob",
                    headers=[("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "completion/complete")])
    assert r.json()["result"]["completion"]["values"] == ["consultation"], r.text
    recs = fake_requests()
    assert len(recs) == 2 and "calid_features_bob" in json.dumps(recs[1]["headers"]), "another token: its own API call"
    r = H.post_json(port(), body, token="not_a_calid_token",
                    headers=[("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "completion/complete")])
    e = r.json()["error"]
    assert e["code"] == -32000 and "Unauthorized" in e["message"], e


# ---------------------------------------------------------------------------
# logging


def log_events(r):
    assert r.headers.get("content-type", "").startswith("text/event-stream"), f"not an SSE answer: {r.headers} {r.text[:200]}"
    msgs = [json.loads(e["data"]) for e in r.sse_events()]
    assert "result" in msgs[-1] or "error" in msgs[-1], msgs
    return [m["params"] for m in msgs[:-1]], msgs[-1]


def test_logging_session_era():
    s = Session()
    r = s.post("tools/call", {"name": "get_users_me", "arguments": {}})
    assert r.headers["content-type"] == "application/json", "no level set: a plain JSON answer, no log messages"
    assert s.call("logging/setLevel", {"level": "info"}) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    logs, res = log_events(s.post("tools/call", {"name": "get_users_me", "arguments": {}}))
    assert res["result"]["isError"] is False and len(logs) == 1, logs
    assert logs[0]["level"] == "info" and logs[0]["logger"] == "calid-api", logs
    d = logs[0]["data"]
    assert d["method"] == "GET" and d["path"] == "/users/me" and d["status"] == 200 and isinstance(d["ms"], int), d
    logs, res = log_events(s.post("tools/call", {"name": "get_booking", "arguments": {"attendeeEmail": "secret@example.com"}}))
    assert logs[0]["data"]["path"] == "/booking" and "secret" not in json.dumps(logs), "the query stays out of the log"
    assert TOKEN not in json.dumps(logs)
    logs, res = log_events(s.post("tools/call", {"name": "get_booking_by_id", "arguments": {"bookingId": 999999}}))
    assert logs[0]["level"] == "warning" and logs[0]["data"]["status"] == 404, logs
    logs, _ = log_events(s.post("resources/read", {"uri": "calid://schedules"}))
    assert logs[0]["data"]["path"] == "/schedule", logs
    r = s.post("tools/call", {"name": "get_users_me", "arguments": {}}, accept="application/json")
    assert r.headers["content-type"] == "application/json", "a client that takes only JSON gets no log stream"
    assert s.call("logging/setLevel", {"level": "error"})["result"] == {}
    r = s.post("tools/call", {"name": "get_users_me", "arguments": {}})
    logs, _ = log_events(r)
    assert logs == [], f"level error: an info message was sent: {logs}"
    e = s.call("logging/setLevel", {"level": "loud"})["error"]
    assert e["code"] == -32602 and "debug, info" in e["message"], e
    other = Session()  # the level belongs to its session
    assert other.post("tools/call", {"name": "get_users_me", "arguments": {}}).headers["content-type"] == "application/json"


def test_logging_modern_per_request_level():
    call = {"name": "get_users_me", "arguments": {}}
    r = modern("tools/call", call, name="get_users_me")
    assert r.headers["content-type"] == "application/json", "no logLevel: no log messages"
    logs, res = log_events(modern("tools/call", call, name="get_users_me", meta={LOG_KEY: "debug"}))
    assert len(logs) == 1 and logs[0]["data"]["path"] == "/users/me" and res["result"]["resultType"] == "complete", logs
    r = modern("tools/call", call, name="get_users_me", meta={LOG_KEY: "warning"})
    assert log_events(r)[0] == [], "warning: a 200 call logs nothing"
    r = modern("tools/call", call, name="get_users_me", meta={LOG_KEY: "chatty"})
    assert r.status == 400 and r.json()["error"]["code"] == -32602, r.text
    r = modern("logging/setLevel", {"level": "info"})
    assert r.status == 404 and r.json()["error"]["code"] == -32601, r.text


def test_logging_over_stdio():
    out = stdio([rpc("tools/call", {"name": "get_users_me", "arguments": {}}, 1),
                 rpc("logging/setLevel", {"level": "info"}, 2),
                 rpc("tools/call", {"name": "get_users_me", "arguments": {}}, 3),
                 rpc("tools/call", {"name": "get_users_me", "arguments": {}, "_meta": dict(H.modern_meta(), **{LOG_KEY: "info"})}, 4)])
    kinds = [x.get("method") or x.get("id") for x in out]
    assert kinds == [1, 2, "notifications/message", 3, "notifications/message", 4], kinds
    assert out[2]["params"]["data"]["path"] == "/users/me" and TOKEN not in json.dumps(out[2])


# ---------------------------------------------------------------------------
# tool selection


def tool_names(server="all", path="/mcp"):
    return [t["name"] for t in mjson("tools/list", server=server, path=path)["result"]["tools"]]


def test_toolsets_follow_the_api_path():
    r = routes()
    allnames = tool_names()
    assert sorted(allnames) == sorted(r), "tools/list vs the route map"
    total = 0
    for ts in TOOLSETS:
        names = tool_names(path=f"/mcp?toolsets={ts}")
        want = sorted(n for n, (_, p) in r.items() if toolset_of(p) == ts)
        assert sorted(names) == want, f"{ts}: {sorted(names)} vs {want}"
        assert names == [n for n in allnames if n in names], "the catalog order is kept"
        total += len(names)
    assert total == len(allnames), "every tool is in exactly one toolset"
    assert tool_names(path="/mcp?toolsets=all") == allnames
    assert sorted(tool_names(path="/mcp?toolsets=slots%2Cteams")) == sorted(tool_names(path="/mcp?toolsets=teams,slots"))


def test_read_only_and_toolsets_flags():
    tools = mjson("tools/list", server="narrow")["result"]["tools"]
    assert [t["name"] for t in tools] == ["get_booking", "get_booking_by_id"], tools
    assert all(t["annotations"]["readOnlyHint"] for t in tools)
    s = Session("narrow")
    for name in ["create_booking", "cancel_booking", "get_users_me"]:
        e = s.call("tools/call", {"name": name, "arguments": {}})["error"]
        assert e["code"] == -32602 and "left out by --read-only or the toolsets" in e["message"], e
    e = s.call("tools/call", {"name": "no_such", "arguments": {}})["error"]
    assert e["code"] == -32602 and "left out" not in e["message"], e
    fake_clear()
    assert s.call("tools/call", {"name": "get_booking", "arguments": {}})["result"]["isError"] is False
    assert [q["path"].split("?")[0] for q in fake_requests()] == ["/booking"]
    assert [p["name"] for p in s.call("prompts/list")["result"]["prompts"]] == ["bookings_this_week"]
    assert [r["uri"] for r in s.call("resources/list")["result"]["resources"]] == ["calid://bookings/upcoming"]
    assert [t["uriTemplate"] for t in s.call("resources/templates/list")["result"]["resourceTemplates"]] == ["calid://bookings/{bookingId}"]
    assert s.call("resources/read", {"uri": "calid://me"})["error"]["code"] == -32002
    assert s.call("prompts/get", {"name": "book_meeting"})["error"]["code"] == -32602
    ins = s.init["instructions"]
    assert "get_booking" in ins and "get_event_types" not in ins and "create_booking" not in ins, ins
    assert "Only these toolsets are offered: bookings." in ins and "Read-only" in ins, ins
    full = Session().init["instructions"]
    assert "get_event_types" in full and "To book: get_slots" in full and "Only these" not in full, full


def test_query_narrows_never_widens():
    assert sorted(tool_names("slots", "/mcp?toolsets=slots")) == sorted(tool_names(path="/mcp?toolsets=slots"))
    r = modern("tools/list", server="slots", path="/mcp?toolsets=bookings")
    assert r.status == 400 and "none of the toolsets" in r.json()["error"]["message"], r.text
    assert sorted(tool_names("slots", "/mcp?toolsets=slots,bookings")) == sorted(tool_names(path="/mcp?toolsets=slots"))
    r = modern("tools/list", path="/mcp?toolsets=slot")
    assert r.status == 400 and "unknown toolset 'slot'" in r.json()["error"]["message"], r.text
    r = modern("tools/list", path="/mcp?toolsets=")
    assert r.status == 400, r.text
    s = Session(path="/mcp?toolsets=contacts")  # a session client narrows on every request it sends
    assert [p["name"] for p in s.call("prompts/list")["result"]["prompts"]] == ["contact_meeting_history"]
    assert s.call("tools/call", {"name": "get_users_me", "arguments": {}})["error"]["code"] == -32602
    d = mjson("server/discover", path="/mcp?toolsets=contacts")["result"]
    assert "list_contacts for contactId" in d["instructions"] and "get_booking" not in d["instructions"], d


def test_selection_flags_environment_and_errors():
    out = stdio([rpc("tools/list")], env={"CALID_MCP_READ_ONLY": "1", "CALID_MCP_TOOLSETS": "users"})
    assert [t["name"] for t in out[0]["result"]["tools"]] == ["get_users", "get_users_me"], out
    out = stdio([rpc("tools/list")], env={"CALID_MCP_READ_ONLY": "0"})
    assert len(out[0]["result"]["tools"]) == len(routes())
    rc, _, err = H.run_binary(["--stdio", "--toolsets", "bookings,nope"])
    assert rc == 1 and "unknown toolset 'nope'" in err, (rc, err)
    rc, _, err = H.run_binary(["--stdio"], env={"CALID_MCP_READ_ONLY": "yes please"})
    assert rc == 2 and "CALID_MCP_READ_ONLY" in err, (rc, err)
    rc, out, _ = H.run_binary(["--help"])
    assert "--read-only" in out and "--toolsets LIST" in out, out


def test_zz_tools_list_sizes():
    """Prints what each selection costs a model (about 4 characters a token)."""
    full = len(json.dumps(mjson("tools/list")["result"]["tools"], separators=(",", ":")))
    rows = [("all", full)]
    for ts in TOOLSETS:
        rows.append((ts, len(json.dumps(mjson("tools/list", path=f"/mcp?toolsets={ts}")["result"]["tools"], separators=(",", ":")))))
    ro = stdio([rpc("tools/list")], flags=["--read-only"])[0]["result"]["tools"]
    rows.append(("--read-only", len(json.dumps(ro, separators=(",", ":")))))
    for name, n in rows:
        print(f"  tools/list {name:>12}: {n:6d} bytes, ~{n // 4:5d} tokens, saves ~{(full - n) // 4:5d}")


def test_path_ids_are_mirrored_as_mcp_param_headers():
    """2026-07-28: path ids carry x-mcp-header, and a tools/call must repeat them as Mcp-Param-{Name}."""
    tools = {t["name"]: t for t in mjson("tools/list")["result"]["tools"]}
    props = tools["get_team_membership"]["inputSchema"]["properties"]
    assert props["teamId"]["x-mcp-header"] == "TeamId" and props["membershipId"]["x-mcp-header"] == "MembershipId", props
    assert "x-mcp-header" not in tools["get_availability"]["inputSchema"]["properties"]["eventTypeId"]  # a query field
    call = {"name": "get_booking_by_id", "arguments": {"bookingId": 501}}
    ok = H.modern_post(port(), "tools/call", call, token=TOKEN)  # the harness mirrors it, as the v2 SDK does
    assert ok.status == 200 and "result" in ok.json(), ok.text[:300]
    for headers, why in [([("Mcp-Param-BookingId", None)], "is required"),
                         ([("Mcp-Param-BookingId", "502")], "differs from arguments.bookingId"),
                         ([("Mcp-Param-BookingId", "501x")], "differs")]:
        r = H.modern_post(port(), "tools/call", call, token=TOKEN, headers=headers)
        assert r.status == 400 and r.json()["error"]["code"] == -32020 and why in r.json()["error"]["message"], r.text[:300]
    r = H.modern_post(port(), "tools/call", call, token=TOKEN, headers=[("Mcp-Param-BookingId", "=?base64?NTAx?=")])
    assert r.status == 200 and "result" in r.json(), r.text[:300]  # "501", base64-encoded
    r = H.modern_post(port(), "tools/call", {"name": "get_webhook_by_id", "arguments": {"webhookId": "wh-1"}}, token=TOKEN,
                      headers=[("Mcp-Param-WebhookId", "wh-2")])
    assert r.status == 400 and r.json()["error"]["code"] == -32020, r.text[:300]
    assert "result" in Session().call("tools/call", call), "the session era has no such headers"


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
