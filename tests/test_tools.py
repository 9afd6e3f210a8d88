#!/usr/bin/env python3
"""The 57 tools against the fake Cal ID API (a double of the real API), end to end.

    python3 tests/test_tools.py             # every test
    python3 tests/test_tools.py fail_ slow  # tests whose names contain a word

Starts tests/fake_calid.py (HTTPS, test CA from tests/make_certs.sh) and
build/calid_mcp pointed at it (--upstream https://localhost:PORT), then calls
tools through /mcp and checks both sides: the API request the fake recorded
(exact method, path, query or body, headers, and that the API dropped none of
it as unknown) and the tool result (the fake's answer). Each tool's
inputSchema is also held against the API's own request schema
(tests/fake_calid_api.py): no field the API drops, its required fields, types,
enums and limits; and the mistakes a model makes (a missing field, a uid for a
numeric id, an out-of-range limit) come back as tool errors it can act on.

Also: the seed's "Try These Prompts" as chains of tool calls, every transport
and API failure as a tool error that says which failure it was, a slow API call
that must not hold up another client, keep-alive and TLS resumption (full
handshakes counted by the fake), and the latency a tool call adds over a direct
HTTPS request (printed, never asserted).

Timeouts use build/calid_mcp_short, built here from calid_mcp.c with 1.5 s
upstream limits when it is missing or older than the sources. Nothing asserts
on elapsed time; waits are bounded so a hung server fails instead of hanging.
Ends with "N passed, N failed"; exits 1 when anything failed.
"""
import base64
import hashlib
import datetime as dt
import http.client
import json
import os
import re
import shlex
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import Conn, build_request  # noqa: E402

try:
    from zoneinfo import ZoneInfo
    ZoneInfo("Europe/Berlin")
except Exception:  # no tz database: the fake then treats every zone as UTC too
    ZoneInfo = None

ROOT = H.ROOT
# CALID_TEST_CFLAGS: the limits of the profile under test (make tiny-test), for this build too
PROFILE_FLAGS = shlex.split(os.environ.get("CALID_TEST_CFLAGS", ""))
SHORT_BIN = os.path.join(ROOT, "build", "calid_mcp_short" + (
    "-" + hashlib.sha1(" ".join(PROFILE_FLAGS).encode()).hexdigest()[:8] if PROFILE_FLAGS else ""))
SHORT_FLAGS = PROFILE_FLAGS + ["-DCM_UPSTREAM_ANSWER_MS=1500", "-DCM_UPSTREAM_CONNECT_MS=1500",
                               "-DCM_UPSTREAM_HANDSHAKE_MS=1500"]

TOKEN_SESSION = "calid_session_alice_0001"   # the caller's token in session-era calls
TOKEN_MODERN = "calid_modern_bob_0002"       # ... and in modern (2026-07-28) calls

# The route map of shared/calid-api.md: tool -> (method, path), with the
# tools' argument names for the path parameters. This is the specification
# the tests hold the server to (not the server's own catalog).
ROUTES = {
    "get_availability": ("GET", "/availability"),
    "create_availability": ("POST", "/availability"),
    "update_availability": ("PATCH", "/availability/{availabilityId}"),
    "delete_availability": ("DELETE", "/availability/{availabilityId}"),
    "get_schedule": ("GET", "/schedule"),
    "create_schedule": ("POST", "/schedule"),
    "update_schedule": ("PATCH", "/schedule/{scheduleId}"),
    "delete_schedule": ("DELETE", "/schedule/{scheduleId}"),
    "get_booking": ("GET", "/booking"),
    "get_booking_by_id": ("GET", "/booking/{bookingId}"),
    "create_booking": ("POST", "/booking"),
    "cancel_booking": ("POST", "/booking/{bookingId}/cancel"),
    "reschedule_booking": ("PATCH", "/booking/{bookingId}/reschedule"),
    "change_booking_confirmation_status": ("PATCH", "/booking/{bookingId}/change_confirmation"),
    "update_booking_reassignbookingautomatically": ("PATCH", "/booking/{bookingId}/reassignBookingAutomatically"),
    "update_booking_reassignbookingtouser": ("PATCH", "/booking/{bookingId}/reassignBookingToUser"),
    "list_contacts": ("GET", "/contacts"),
    "create_contact": ("POST", "/contacts"),
    "get_contact": ("GET", "/contacts/{contactId}"),
    "update_contact": ("PATCH", "/contacts/{contactId}"),
    "delete_contact": ("DELETE", "/contacts/{contactId}"),
    "get_contact_meetings": ("GET", "/contacts/{contactId}/meetings"),
    "get_event_types": ("GET", "/event-types"),
    "get_event_types_by_id": ("GET", "/event-types/{eventTypeId}"),
    "create_eventtype": ("POST", "/event-types"),
    "update_eventtype": ("PATCH", "/event-types/{eventTypeId}"),
    "delete_eventtype": ("DELETE", "/event-types/{eventTypeId}"),
    "get_slots": ("GET", "/slots"),
    "create_slots_reserve": ("POST", "/slots/reserve"),
    "get_slot": ("GET", "/slots/{uid}"),
    "update_slots": ("PATCH", "/slots/{uid}"),
    "delete_slots": ("DELETE", "/slots/{uid}"),
    "get_teams": ("GET", "/teams"),
    "create_team": ("POST", "/teams"),
    "get_team": ("GET", "/teams/{teamId}"),
    "update_team_details": ("PATCH", "/teams/{teamId}"),
    "delete_team": ("DELETE", "/teams/{teamId}"),
    "get_team_event_types": ("GET", "/teams/{teamId}/event-types"),
    "get_team_event_type": ("GET", "/teams/{teamId}/event-types/{eventTypeId}"),
    "create_team_eventtype": ("POST", "/teams/{teamId}/event-types"),
    "update_team_eventtype": ("PATCH", "/teams/{teamId}/event-types/{eventTypeId}"),
    "delete_team_eventtype": ("DELETE", "/teams/{teamId}/event-types/{eventTypeId}"),
    "get_team_memberships": ("GET", "/teams/{teamId}/memberships"),
    "get_team_membership": ("GET", "/teams/{teamId}/memberships/{membershipId}"),
    "add_team_member": ("POST", "/teams/{teamId}/memberships"),
    "update_team_membership": ("PATCH", "/teams/{teamId}/memberships/{membershipId}"),
    "remove_team_member": ("DELETE", "/teams/{teamId}/memberships/{membershipId}"),
    "get_team_schedules": ("GET", "/teams/{teamId}/schedules"),
    "get_users_me": ("GET", "/users/me"),
    "get_users": ("GET", "/users/{username}"),
    "update_user_profile": ("PUT", "/users/edit-profile"),
    "create_users_edit_profile_avatar": ("POST", "/users/edit-profile/avatar"),
    "get_webhook": ("GET", "/webhook"),
    "get_webhook_by_id": ("GET", "/webhook/{webhookId}"),
    "create_webhook": ("POST", "/webhook"),
    "update_webhook": ("PATCH", "/webhook/{webhookId}"),
    "delete_webhook": ("DELETE", "/webhook/{webhookId}"),
}

# ---------------------------------------------------------------------------
# The fake's control API (one persistent HTTPS connection)
# ---------------------------------------------------------------------------


class Control:
    """GET/POST/DELETE on the fake's /__fake/ endpoints over one kept-alive
    HTTPS connection (so that it adds no handshakes while they are counted)."""

    def __init__(self, fake):
        self.fake = fake
        self.ctx = ssl.create_default_context(cafile=fake.ca_file)
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.fake.port, context=self.ctx,
                                                        timeout=H.IO_TIMEOUT)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.close()     # the fake dropped an idle connection: once more on a new one
                if attempt:
                    raise
        assert r.status == 200, f"fake control {method} {path} answered {r.status}: {raw[:300]!r}"
        return json.loads(raw)

    def reset(self):
        return self.call("POST", "/__fake/reset")

    def state(self):
        return self.call("GET", "/__fake/state")

    def stats(self):
        return self.call("GET", "/__fake/stats")

    def requests(self, path=None):
        q = "?" + urllib.parse.urlencode({"path": path}) if path else ""
        return self.call("GET", "/__fake/requests" + q)

    def clear_requests(self):
        return self.call("DELETE", "/__fake/requests")

    def fault(self, **spec):
        return self.call("POST", "/__fake/fault", spec)

    def clear_faults(self):
        return self.call("DELETE", "/__fake/fault")


# ---------------------------------------------------------------------------
# Fixtures: one fake and one server shared by most tests
# ---------------------------------------------------------------------------

FAKE = None
CTL = None
SRV = None
SHORT = None
SESSIONS = {}       # (server port, token) -> Mcp-Session-Id
CRASHES = []        # what the shared server was doing when it died
LAST_CALL = None    # the tool called last (named in crash reports)
EXTRA = []          # other processes to stop at the end


def upstream_flags(fake, host="localhost"):
    return ["--upstream", f"https://{host}:{fake.port}", "--ca-file", fake.ca_file]


def sources_newer_than(path):
    if not os.path.exists(path):
        return True
    srcs = ["calid_mcp.c", "calid_mcp.h", os.path.join("port", "posix.c")]
    t = os.path.getmtime(path)
    return any(os.path.getmtime(os.path.join(ROOT, s)) > t for s in srcs)


def build_short():
    if not sources_newer_than(SHORT_BIN):
        return
    os.makedirs(os.path.dirname(SHORT_BIN), exist_ok=True)
    cmd = (["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2", "-DCALID_MCP_MAIN"] + SHORT_FLAGS +
           ["-o", SHORT_BIN, "calid_mcp.c", os.path.join("port", "posix.c"), "-lbearssl", "-lpthread"])
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("building build/calid_mcp_short failed: " + p.stderr.decode("utf-8", "replace")[-2000:])


def setup():
    global FAKE, CTL
    H.ensure_certs()
    FAKE = H.FakeCalid().start()
    CTL = Control(FAKE)
    build_short()


def teardown():
    for p in [SRV, SHORT] + EXTRA:
        if p is not None:
            try:
                p.stop()
            except Exception:
                pass
    if CTL is not None:
        CTL.close()
    if FAKE is not None:
        FAKE.stop()


def srv():
    """The shared server (restarted, and the crash remembered, if it died)."""
    global SRV
    if SRV is not None and not SRV.alive():
        CRASHES.append(f"exit {SRV.proc.poll() if SRV.proc else SRV.returncode} after a call of {LAST_CALL}")
        SRV.stop()
        SRV = None
    if SRV is None:
        SRV = H.Server(*upstream_flags(FAKE)).start()
        for k in [k for k in SESSIONS if k[0] == SRV.port]:
            del SESSIONS[k]
    return SRV


def short_srv():
    """A server built with 1.5 s upstream limits, against the shared fake."""
    global SHORT
    if SHORT is not None and not SHORT.alive():
        SHORT.stop()
        SHORT = None
    if SHORT is None:
        SHORT = H.Server(*upstream_flags(FAKE), binary=SHORT_BIN).start()
    return SHORT


def fresh_state():
    """Seeded state again, no faults, no recordings; returns the state."""
    CTL.reset()
    return CTL.state()


# ---------------------------------------------------------------------------
# MCP calls
# ---------------------------------------------------------------------------

def session_id(server, token):
    key = (server.port, token)
    if key not in SESSIONS:
        SESSIONS[key] = H.initialize(server.port, token=token, version=H.LATEST_SESSION)
    return SESSIONS[key]


def describe_death(server):
    time.sleep(0.2)
    if server.alive():
        return "the server is still running"
    rc = server.proc.poll() if server.proc else server.returncode
    sig = f" (signal {-rc})" if isinstance(rc, int) and rc < 0 else ""
    tail = server.stderr_text().strip().splitlines()[-3:]
    return f"the server died with exit status {rc}{sig}; stderr tail: {tail}"


def call_tool(server, name, args, era="session", token=None, raw_args=None, id=7):
    """tools/call through /mcp; returns the result object (asserts it is one).
    raw_args (session era): the arguments object as JSON text, sent verbatim."""
    global LAST_CALL
    LAST_CALL = name
    if token is None:
        token = TOKEN_MODERN if era == "modern" else TOKEN_SESSION
    try:
        if era == "modern":
            r = H.modern_post(server.port, "tools/call", {"name": name, "arguments": args}, id=id, token=token)
        else:
            sid = session_id(server, token)
            if raw_args is not None:
                body = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%s,"arguments":%s}}'
                        % (id, json.dumps(name), raw_args))
            else:
                body = {"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": name, "arguments": args}}
            r = H.session_post(server.port, sid, body, token=token, version=H.LATEST_SESSION)
    except (H.ConnectionClosed, OSError) as e:
        raise AssertionError(f"tools/call {name}: no answer from the server ({type(e).__name__}: {e}); "
                             f"{describe_death(server)}") from None
    assert r.status == 200, f"tools/call {name}: HTTP {r.status}: {r.text[:400]}"
    msg = r.json()
    assert msg.get("id") == id, f"tools/call {name}: answer id {msg.get('id')!r}, sent {id}"
    assert "result" in msg, f"tools/call {name}: JSON-RPC error instead of a result: {msg}"
    res = msg["result"]
    content = res.get("content")
    assert isinstance(content, list) and content and content[0].get("type") == "text", \
        f"tools/call {name}: result without a text content item: {res}"
    assert isinstance(res.get("isError"), bool), f"tools/call {name}: isError missing or not a boolean: {res}"
    return res


def text_of(res):
    return res["content"][0]["text"]


def ok_answer(res, name="tool"):
    """The fake's JSON answer carried by a successful tool result."""
    text = text_of(res)
    assert res["isError"] is False, f"{name}: expected isError false, got true: {text[:500]}"
    try:
        ans = json.loads(text)
    except ValueError as e:
        raise AssertionError(f"{name}: result text is not JSON ({e}): {text[:300]!r}") from None
    assert isinstance(ans, dict) and ans.get("success") is True, f"{name}: API answer not a success: {text[:300]}"
    return ans


def err_text(res, name="tool"):
    text = text_of(res)
    assert res["isError"] is True, f"{name}: expected isError true, got false: {text[:300]}"
    return text


def tool(name, args, era="session", server=None, **kw):
    """Calls a tool on the shared server and returns the API answer's data."""
    return ok_answer(call_tool(server or srv(), name, args, era=era, **kw), name)["data"]


# ---------------------------------------------------------------------------
# What the fake must have received
# ---------------------------------------------------------------------------

def url_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def path_params(path):
    return re.findall(r"\{(\w+)\}", path)


def expected_path(name, args):
    method, pattern = ROUTES[name]
    path = re.sub(r"\{(\w+)\}", lambda m: urllib.parse.quote(url_value(args[m.group(1)]), safe=""), pattern)
    return method, path


def non_path_args(name, args):
    params = set(path_params(ROUTES[name][1]))
    return {k: v for k, v in args.items() if k not in params and v is not None}


def expected_query(name, args):
    pairs = []
    for k, v in non_path_args(name, args).items():
        for item in (v if isinstance(v, list) else [v]):
            pairs.append((k, url_value(item)))
    return pairs


def check_common_headers(rec, token, name):
    h = rec["headers"]
    assert h.get("authorization") == f"Bearer {token}", \
        f"{name}: Authorization {h.get('authorization')!r}, expected 'Bearer {token}'"
    assert "calid-mcp" in h.get("user-agent", ""), f"{name}: User-Agent {h.get('user-agent')!r} lacks calid-mcp"
    accept = [a.split(";")[0].strip() for a in h.get("accept", "").split(",")]
    assert "application/json" in accept, f"{name}: Accept {h.get('accept')!r}, expected application/json"


def check_request(rec, name, args, token):
    """The recorded API request matches the route map and the arguments."""
    method, path = expected_path(name, args)
    assert rec["method"] == method and rec["path"] == path, \
        f"{name}: fake received {rec['method']} {rec['path']}, expected {method} {path}"
    check_common_headers(rec, token, name)
    assert rec.get("dropped") == [], f"{name}: the API dropped {rec.get('dropped')} of the request (unknown to it)"
    if method in ("GET", "DELETE"):
        got = sorted(urllib.parse.parse_qsl(rec["query"], keep_blank_values=True))
        want = sorted(expected_query(name, args))
        assert got == want, f"{name}: query {rec['query']!r} decodes to {got}, expected {want}"
        assert rec["body"] == "", f"{name}: {method} with a body: {rec['body'][:200]!r}"
    else:
        assert rec["query"] == "", f"{name}: {method} with a query string {rec['query']!r}"
        ctype = rec["headers"].get("content-type", "")
        assert ctype.split(";")[0].strip().lower() == "application/json", \
            f"{name}: Content-Type {ctype!r}, expected application/json"
        try:
            body = json.loads(rec["body"])
        except ValueError as e:
            raise AssertionError(f"{name}: body is not JSON ({e}): {rec['body'][:200]!r}") from None
        want = non_path_args(name, args)
        assert body == want, f"{name}: body {body}, expected {want}"
        assert list(body) == list(want), f"{name}: body keys in order {list(body)}, sent {list(want)}"


def only_request(name):
    recs = CTL.requests()
    assert len(recs) == 1, f"{name}: expected exactly one API request, fake recorded {len(recs)}: " \
                           f"{[(r['method'], r['path']) for r in recs]}"
    return recs[0]


# ---------------------------------------------------------------------------
# Times and state lookups
# ---------------------------------------------------------------------------

def parse_iso(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def tz_of(name):
    if ZoneInfo is None or not name or name in ("UTC", "Etc/UTC"):
        return dt.timezone.utc
    return ZoneInfo(name)


def by_id(items, ident, key="id"):
    for it in items:
        if it[key] == ident:
            return it
    raise AssertionError(f"no item with {key}={ident!r} in the fake's state")


def want(cond, msg):
    if not cond:
        raise AssertionError(msg)


def me(st):
    return by_id(st["users"], 1)


def sched_nondefault(st):
    return next(s for s in st["schedules"] if s["userId"] == me(st)["id"] and s["id"] != me(st)["defaultScheduleId"])


def upcoming_accepted(st):
    """The current user's own upcoming accepted bookings, soonest first."""
    now = parse_iso(st["now"])
    return sorted((b for b in st["bookings"] if b["status"] == "ACCEPTED" and b["_userId"] == me(st)["id"]
                   and parse_iso(b["startTime"]) > now), key=lambda b: b["startTime"])


def own_event_types(st):
    return sorted((e for e in st["eventTypes"] if e["teamId"] is None and e["userId"] == me(st)["id"]),
                  key=lambda e: e["id"])


def team_types(st, team_id):
    return [e for e in st["eventTypes"] if e["teamId"] == team_id]


def memberships_of(st, team_id):
    return [m for m in st["memberships"] if m["teamId"] == team_id]


def contact_named(st, name):
    return next(c for c in st["contacts"] if c["name"] == name)


def next_weekday(tz, weekday, min_days=1):
    """The date of the next given weekday (0 = Monday) at least min_days after today in tz."""
    today = dt.datetime.now(tz).date()
    d = today + dt.timedelta(days=min_days)
    while d.weekday() != weekday:
        d += dt.timedelta(days=1)
    return d


def local_time(st, day, h, m=0):
    """day at h:m in the current user's time zone, as ISO with its offset."""
    tz = tz_of(me(st)["timeZone"])
    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=tz).isoformat()


def free_start(st, days_out, h, m=0):
    """A Wednesday at least days_out ahead, h:m in the user's zone: inside the
    default working hours (Mon-Fri 9-17) and past every seeded booking."""
    return local_time(st, next_weekday(tz_of(me(st)["timeZone"]), 2, days_out), h, m)


def plus_minutes(iso, minutes):
    return (parse_iso(iso) + dt.timedelta(minutes=minutes)).isoformat()


AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8 + b"\x00\r\n--\xff"


def multipart_parts(raw, ctype):
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, f"multipart Content-Type without a boundary: {ctype!r}"
    delim = b"--" + m.group(1).encode()
    assert raw.startswith(delim), f"multipart body does not start with its boundary: {raw[:80]!r}"
    assert raw.rstrip(b"\r\n").endswith(delim + b"--"), f"multipart body does not end with the close delimiter: {raw[-80:]!r}"
    parts = []
    for chunk in raw.split(b"\r\n" + delim)[:-1]:
        chunk = chunk[len(delim):] if chunk.startswith(delim) else chunk
        assert chunk.startswith(b"\r\n"), f"bad multipart delimiter line: {chunk[:40]!r}"
        head, sep, data = chunk[2:].partition(b"\r\n\r\n")
        assert sep, "multipart part without a blank line after its headers"
        headers = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        parts.append((headers, data))
    return parts


# ---------------------------------------------------------------------------
# The 57 tools, one test each: (era, arguments from the state, check of data)
# ---------------------------------------------------------------------------

def chk_availability(d, st, a):
    want(d["workingHours"] and d["timeZone"] == me(st)["timeZone"] and "busy" in d, f"availability answer {d}")


def chk_window(d, st, a):
    want(d["scheduleId"] == a["scheduleId"] and d["days"] == a["days"] and d["startTime"] == a["startTime"] and
         d["endTime"] == a["endTime"], f"availability window {d} vs {a}")
    sched = by_id(CTL.state()["schedules"], a["scheduleId"])
    want(d["id"] in [w["id"] for w in sched["availability"]], "the window is not in the fake's schedule")


def chk_deleted(kind, key, arg, items=None):
    def check(d, st, a):
        after = CTL.state()
        left = items(after) if items else after[kind]
        want(all(it[key] != a[arg] for it in left), f"{kind} {a[arg]} still in the fake's state")
    return check


def rows_of(d):
    """A list answer: the items (contacts answer {rows, meta})."""
    return d["rows"] if isinstance(d, dict) and "rows" in d else d


def chk_list(kind, expected_fn, key="id"):
    def check(d, st, a):
        d = rows_of(d)
        want(isinstance(d, list), f"{kind}: data is not a list: {d}")
        got, exp = [x[key] for x in d], expected_fn(st, a)
        want(sorted(got) == sorted(exp), f"{kind}: {got}, expected {exp}")
    return check


def chk_same_ids(kind, arg, key="id"):
    def check(d, st, a):
        want(d[key] == a[arg], f"{kind}: answer {key}={d.get(key)!r}, asked for {a[arg]!r}")
    return check


def chk_schedule(d, st, a):
    want(d["name"] == a["name"] and d["timeZone"] == a["timeZone"] and d["availability"], f"schedule {d}")


def visible(st, b):
    """Bookings the API shows the current user: its own, and those of teams it administers."""
    et = next((e for e in st["eventTypes"] if e["id"] == b["_eventTypeId"]), None)
    if et and et["teamId"]:
        return any(m["teamId"] == et["teamId"] and m["userId"] == me(st)["id"] and m["role"] in ("ADMIN", "OWNER")
                   for m in st["memberships"])
    return b["_userId"] == me(st)["id"]


def live_upcoming(st):
    now = parse_iso(st["now"])
    return sorted((b for b in st["bookings"] if visible(st, b) and b["status"] not in ("CANCELLED", "REJECTED")
                   and parse_iso(b["endTime"]) >= now), key=lambda b: b["startTime"])


def chk_get_booking(d, st, a):
    """The API's "upcoming": every live booking not over yet, its own and its teams'."""
    exp = [b["id"] for b in live_upcoming(st)]
    want([b["id"] for b in d] == exp, f"upcoming bookings {[b['id'] for b in d]}, expected {exp}")


def chk_create_booking(d, st, a):
    want(isinstance(d["id"], int) and d["uid"] and d["status"] == "ACCEPTED", f"created booking {d}")
    want(parse_iso(d["startTime"]) == parse_iso(a["start"]) and parse_iso(d["endTime"]) == parse_iso(a["end"]),
         f"booking {d['startTime']}..{d['endTime']}, asked {a['start']}..{a['end']}")
    b = by_id(CTL.state()["bookings"], d["id"])
    want(b["attendees"][0]["email"] == a["responses"]["email"] and b["attendees"][0]["timeZone"] == a["timeZone"] and
         b["location"] == a["responses"]["location"], f"stored booking {b}")


def chk_cancel(d, st, a):
    want(d["bookingId"] == a["bookingId"], f"cancel answer {d}")
    want(by_id(CTL.state()["bookings"], a["bookingId"])["status"] == "CANCELLED", "booking not cancelled in state")


def chk_confirm(d, st, a):
    want(d["bookingId"] == a["bookingId"] and d["status"] == "REJECTED", f"declined booking {d}")


def chk_reassign_auto(d, st, a):
    old = by_id(st["bookings"], a["bookingId"])
    now = by_id(CTL.state()["bookings"], a["bookingId"])
    want(d["bookingId"] == a["bookingId"] and now["_userId"] != old["_userId"], f"reassigned booking {now['_userId']}")


def chk_reassign_user(d, st, a):
    want(d["bookingId"] == a["bookingId"] and d["newUserId"] == a["userId"], f"reassigned booking {d}")
    want(by_id(CTL.state()["bookings"], a["bookingId"])["_userId"] == a["userId"], "not reassigned in state")


def chk_contact(d, st, a):
    want(all(d[k] == a[k] for k in a if k != "contactId"), f"contact {d} vs {a}")


def chk_meetings(d, st, a):
    email = by_id(st["contacts"], a["contactId"])["email"]
    exp = sorted(b["id"] for b in st["bookings"] if b["_userId"] == me(st)["id"] and
                 email in [x["email"] for x in b["attendees"]])
    got = rows_of(d)
    want(exp and sorted(m["id"] for m in got) == exp, f"meetings {[m['id'] for m in got]}, expected {exp}")


def chk_event_types(d, st, a):
    exp = [e["id"] for e in sorted(own_event_types(st), key=lambda e: (e["length"], e["id"]))]
    want(sorted([e["id"] for e in d]) == sorted(exp) and [e["length"] for e in d] == sorted(e["length"] for e in d),
         f"event types by length {[(e['id'], e['length']) for e in d]}, expected {exp}")


def chk_event_type(d, st, a):
    want(all(d[k] == v for k, v in a.items() if k not in ("eventTypeId", "teamId")), f"event type {d} vs {a}")


def chk_slots(d, st, a):
    slots = d["slots"]
    want(isinstance(slots, dict) and slots, f"no slots in {d}")
    want(all(a["start"] <= day <= a["end"] for day in slots), f"slot days {list(slots)} outside {a['start']}..{a['end']}")


def chk_reserve(d, st, a):
    want(d["reservationUid"] and d["eventTypeId"] == a["eventTypeId"] and
         parse_iso(d["slotStart"]) == parse_iso(a["slotStart"]), f"reservation {d}")
    by_id(CTL.state()["reservedSlots"], d["reservationUid"], "uid")


def chk_update_slot(d, st, a):
    r = by_id(CTL.state()["reservedSlots"], a["uid"], "uid")
    want(parse_iso(r["slotUtcStartDate"]) == parse_iso(a["slotStart"]), f"moved reservation {r}")


def chk_team(d, st, a):
    want(all(d[k] == v for k, v in a.items() if k != "teamId"), f"team {d} vs {a}")


def chk_membership(d, st, a):
    want(all(d[k] == v for k, v in a.items() if k not in ("teamId", "membershipId")) and d["teamId"] == a["teamId"],
         f"membership {d} vs {a}")


def chk_team_schedules(d, st, a):
    members = {m["userId"] for m in memberships_of(st, a["teamId"]) if m["acceptedInvitation"]}
    want(d and {s["userId"] for s in d} <= members, f"team schedules {d}")


def chk_me(d, st, a):
    want(d["id"] == me(st)["id"] and d["email"] == me(st)["email"] and d["username"] == me(st)["username"], f"me {d}")


def chk_users(d, st, a):
    want(isinstance(d, list) and d and d[0]["username"] == a["username"], f"public profile {d}")


def chk_profile(d, st, a):
    u = me(CTL.state())
    want(all(u[k] == v for k, v in a.items()), f"profile in state {u} vs {a}")


def chk_webhook(d, st, a):
    want(all(d[k] == v for k, v in a.items() if k != "webhookId"), f"webhook {d} vs {a}")


def _args_get_slots(st):
    d = next_weekday(tz_of(me(st)["timeZone"]), 2, 14)
    return {"eventTypeId": own_event_types(st)[1]["id"], "start": d.isoformat(),
            "end": (d + dt.timedelta(days=1)).isoformat(), "timeZone": me(st)["timeZone"]}


def _args_create_booking(st):
    start = free_start(st, 20, 10)
    return {"eventTypeId": own_event_types(st)[1]["id"], "start": start,
            "end": plus_minutes(start, own_event_types(st)[1]["length"]), "timeZone": "America/New_York",
            "responses": {"name": "Test Person", "email": "test.person@example.com", "location": "integrations:daily",
                          "guests": ["guest.one@example.com"], "notes": "Agenda: pricing & \"terms\""},
            "language": "en", "metadata": {"source": "test_tools", "ids": [1, 2, 3]}}


def _pending(st):
    """A booking waiting for the host, or else one to decline."""
    return next((b for b in st["bookings"] if b["status"] == "PENDING" and b["_userId"] == me(st)["id"]),
                upcoming_accepted(st)[0])


def _round_robin_booking(st):
    return next(b for b in upcoming_accepted(st)
                if by_id(st["eventTypes"], b["_eventTypeId"])["schedulingType"] == "ROUND_ROBIN")


TEAM = 21     # Acme Sales: the current user owns it; event types 201, 202
OTHER_TEAM = 22


# (tool, era, args(state), check(data, state, args))
TOOL_SPECS = [
    ("get_availability", "modern",
     lambda st: {"dateFrom": next_weekday(tz_of(me(st)["timeZone"]), 0).isoformat(),
                 "dateTo": next_weekday(tz_of(me(st)["timeZone"]), 4).isoformat(),
                 "eventTypeId": own_event_types(st)[1]["id"]},
     chk_availability),
    ("create_availability", "session",
     lambda st: {"scheduleId": sched_nondefault(st)["id"], "days": [1, 3],
                 "startTime": "1970-01-01T07:00:00.000Z", "endTime": "1970-01-01T08:30:00.000Z"},
     chk_window),
    ("update_availability", "session",
     lambda st: {"availabilityId": sched_nondefault(st)["availability"][0]["id"],
                 "scheduleId": sched_nondefault(st)["id"], "days": [2, 4],
                 "startTime": "1970-01-01T18:30:00.000Z", "endTime": "1970-01-01T21:00:00.000Z"},
     chk_window),
    ("delete_availability", "session",
     lambda st: {"availabilityId": sched_nondefault(st)["availability"][0]["id"]},
     chk_deleted("availability", "id", "availabilityId",
                 lambda s: [w for x in s["schedules"] for w in x["availability"]])),
    ("get_schedule", "session", lambda st: {},
     chk_list("schedules", lambda st, a: [s["id"] for s in st["schedules"] if s["userId"] == 1])),
    ("create_schedule", "session", lambda st: {"name": "Weekend hours", "timeZone": "Europe/Lisbon"}, chk_schedule),
    ("update_schedule", "modern",
     lambda st: {"scheduleId": sched_nondefault(st)["id"], "name": "Late evenings", "timeZone": "Europe/Berlin"},
     chk_schedule),
    ("delete_schedule", "session", lambda st: {"scheduleId": sched_nondefault(st)["id"]},
     chk_deleted("schedules", "id", "scheduleId")),
    ("get_booking", "session", lambda st: {"status": "upcoming", "limit": 50, "page": 1}, chk_get_booking),
    ("get_booking_by_id", "modern", lambda st: {"bookingId": upcoming_accepted(st)[0]["id"]},
     chk_same_ids("booking", "bookingId")),
    ("create_booking", "modern", _args_create_booking, chk_create_booking),
    ("cancel_booking", "session",
     lambda st: {"bookingId": upcoming_accepted(st)[0]["id"], "cancellationReason": "Client asked",
                 "cancelledBy": "alex@example.com"},
     chk_cancel),
    # reschedule_booking: its own test (the API answers 500 after rescheduling)
    ("change_booking_confirmation_status", "session",
     lambda st: {"bookingId": _pending(st)["id"], "confirmed": False, "reason": "Fully booked that week"},
     chk_confirm),
    ("update_booking_reassignbookingautomatically", "session",
     lambda st: {"bookingId": _round_robin_booking(st)["id"]}, chk_reassign_auto),
    ("update_booking_reassignbookingtouser", "session",
     lambda st: {"bookingId": upcoming_accepted(st)[0]["id"], "userId": 3, "reason": "Out of office"},
     chk_reassign_user),
    ("list_contacts", "modern", lambda st: {"limit": 10, "offset": 0, "sortBy": "email", "sortDirection": "desc"},
     chk_list("contacts", lambda st, a: [c["id"] for c in st["contacts"]])),
    ("create_contact", "session",
     lambda st: {"name": "Dana Scully", "email": "dana.scully@example.com", "phone": "+1 202 555 0147",
                 "notes": "Met at the FBI conference; wants a demo."},
     chk_contact),
    ("get_contact", "session", lambda st: {"contactId": contact_named(st, "John Doe")["id"]},
     chk_same_ids("contact", "contactId")),
    ("update_contact", "modern",
     lambda st: {"contactId": contact_named(st, "Maria Garcia")["id"], "notes": "Prefers afternoons now.",
                 "phone": "+34 600 000 111"},
     chk_contact),
    ("delete_contact", "session", lambda st: {"contactId": st["contacts"][-1]["id"]},
     chk_deleted("contacts", "id", "contactId")),
    ("get_contact_meetings", "session", lambda st: {"contactId": contact_named(st, "John Doe")["id"], "limit": 20},
     chk_meetings),
    ("get_event_types", "modern", lambda st: {"limit": 10, "orderBy": "length", "orderDir": "asc", "hidden": False},
     chk_event_types),
    ("get_event_types_by_id", "session", lambda st: {"eventTypeId": own_event_types(st)[2]["id"]},
     chk_same_ids("event type", "eventTypeId")),
    ("create_eventtype", "session",
     lambda st: {"title": "Quick chat", "slug": "quick-chat", "length": 10, "description": "Ten minutes, no agenda.",
                 "locations": [{"type": "integrations:daily"}], "minimumBookingNotice": 60},
     chk_event_type),
    ("update_eventtype", "session",
     lambda st: {"eventTypeId": own_event_types(st)[0]["id"], "title": "Intro call (20 min)", "length": 20},
     chk_event_type),
    ("delete_eventtype", "session", lambda st: {"eventTypeId": own_event_types(st)[2]["id"]},
     chk_deleted("eventTypes", "id", "eventTypeId")),
    ("get_slots", "modern", _args_get_slots, chk_slots),
    ("create_slots_reserve", "session",
     lambda st: {"eventTypeId": own_event_types(st)[1]["id"], "slotStart": free_start(st, 22, 11),
                 "reservationDuration": 10},
     chk_reserve),
    ("get_slot", "session", lambda st: {"uid": st["reservedSlots"][0]["uid"]}, chk_same_ids("slot", "uid", "uid")),
    ("update_slots", "session",
     lambda st: {"uid": st["reservedSlots"][0]["uid"], "eventTypeId": st["reservedSlots"][0]["eventTypeId"],
                 "slotStart": free_start(st, 23, 14)},
     chk_update_slot),
    ("delete_slots", "session", lambda st: {"uid": st["reservedSlots"][1]["uid"]},
     chk_deleted("reservedSlots", "uid", "uid")),
    ("get_teams", "session", lambda st: {"limit": 10, "orderBy": "name", "orderDir": "asc"},
     chk_list("teams", lambda st, a: [m["teamId"] for m in st["memberships"] if m["userId"] == 1])),
    ("create_team", "session",
     lambda st: {"name": "Partner Success", "slug": "partner-success", "timeZone": "Europe/Berlin",
                 "isTeamPrivate": True, "bio": "Partners first.", "weekStart": "Sunday"},
     chk_team),
    ("get_team", "modern", lambda st: {"teamId": TEAM}, chk_same_ids("team", "teamId")),
    ("update_team_details", "session",
     lambda st: {"teamId": TEAM, "bio": "Sales, EMEA.", "isTeamPrivate": True, "timeZone": "Europe/Berlin"},
     chk_team),
    ("delete_team", "session", lambda st: {"teamId": OTHER_TEAM}, chk_deleted("teams", "id", "teamId")),
    ("get_team_event_types", "session", lambda st: {"teamId": TEAM, "limit": 10},
     chk_list("team event types", lambda st, a: [e["id"] for e in team_types(st, TEAM)])),
    ("get_team_event_type", "session",
     lambda st: {"teamId": TEAM, "eventTypeId": team_types(st, TEAM)[1]["id"]},
     chk_same_ids("team event type", "eventTypeId", "id")),
    ("create_team_eventtype", "session",
     lambda st: {"teamId": TEAM, "title": "Pricing Q&A", "slug": "pricing-qa", "length": 25,
                 "schedulingType": "ROUND_ROBIN", "assignAllTeamMembers": True},
     chk_event_type),
    ("update_team_eventtype", "session",
     lambda st: {"teamId": TEAM, "eventTypeId": team_types(st, TEAM)[0]["id"], "length": 45,
                 "description": "Longer demo."},
     chk_event_type),
    ("delete_team_eventtype", "session",
     lambda st: {"teamId": TEAM, "eventTypeId": team_types(st, TEAM)[1]["id"]},
     chk_deleted("eventTypes", "id", "eventTypeId")),
    ("get_team_memberships", "session", lambda st: {"teamId": TEAM, "limit": 10, "role": "MEMBER"},
     chk_list("memberships", lambda st, a: [m["id"] for m in memberships_of(st, TEAM) if m["role"] == "MEMBER"])),
    ("get_team_membership", "session",
     lambda st: {"teamId": TEAM, "membershipId": memberships_of(st, TEAM)[1]["id"]},
     chk_same_ids("membership", "membershipId")),
    ("add_team_member", "session",
     lambda st: {"teamId": OTHER_TEAM, "userId": 2, "role": "ADMIN", "acceptedInvitation": True}, chk_membership),
    ("update_team_membership", "modern",
     lambda st: {"teamId": TEAM, "membershipId": next(m["id"] for m in memberships_of(st, TEAM)
                                                       if not m["acceptedInvitation"]),
                 "role": "ADMIN", "acceptedInvitation": True},
     chk_membership),
    ("remove_team_member", "session",
     lambda st: {"teamId": TEAM, "membershipId": memberships_of(st, TEAM)[2]["id"]},
     chk_deleted("memberships", "id", "membershipId")),
    ("get_team_schedules", "session", lambda st: {"teamId": TEAM}, chk_team_schedules),
    ("get_users_me", "modern", lambda st: {}, chk_me),
    ("get_users", "session", lambda st: {"username": me(st)["username"]}, chk_users),
    ("update_user_profile", "session",
     lambda st: {"bio": "Consulting & workshops.", "weekStart": "Sunday", "timeFormat": 12, "locale": "de",
                 "timeZone": "Europe/Vienna"},
     chk_profile),
    # create_users_edit_profile_avatar: its own test (the API refuses multipart, 4.45)
    ("get_webhook", "session", lambda st: {"limit": 10},
     chk_list("webhooks", lambda st, a: [w["id"] for w in st["webhooks"]])),
    ("get_webhook_by_id", "session", lambda st: {"webhookId": st["webhooks"][0]["id"]},
     chk_same_ids("webhook", "webhookId")),
    ("create_webhook", "session",
     lambda st: {"subscriberUrl": "https://hooks.example.com/calid/new?x=1&y=2",
                 "eventTriggers": ["BOOKING_CREATED", "MEETING_ENDED"], "active": True,
                 "payloadTemplate": "{\"type\":\"{{type}}\"}"},
     chk_webhook),
    ("update_webhook", "session",
     lambda st: {"webhookId": st["webhooks"][1]["id"], "active": True,
                 "eventTriggers": ["MEETING_STARTED", "MEETING_ENDED"]},
     chk_webhook),
    ("delete_webhook", "modern", lambda st: {"webhookId": st["webhooks"][0]["id"]},
     chk_deleted("webhooks", "id", "webhookId")),
]


OWN_TESTS = {"reschedule_booking", "create_users_edit_profile_avatar"}   # tools tested by a test of their own below


def check_avatar_request(rec, args):
    ctype = rec["headers"].get("content-type", "")
    assert ctype.lower().startswith("multipart/form-data"), f"avatar upload Content-Type {ctype!r}"
    raw = base64.b64decode(rec["body"]) if rec.get("body_base64") else rec["body"].encode("utf-8")
    parts = multipart_parts(raw, ctype)
    files = [(h, d) for h, d in parts if "filename=" in h.get("content-disposition", "")]
    assert len(files) == 1, f"expected one file part, got {len(parts)} parts: {[h for h, _ in parts]}"
    h, data = files[0]
    assert 'name="avatar"' in h["content-disposition"], f"file part headers {h}"
    assert f'filename="{args["filename"]}"' in h["content-disposition"], f"file part headers {h}"
    assert h.get("content-type") == args["contentType"], f"file part Content-Type {h.get('content-type')!r}"
    assert data == AVATAR, f"file part carries {len(data)} bytes that differ from the {len(AVATAR)} decoded ones"


def run_tool_spec(spec):
    name, era, args_fn, check = spec
    server = srv()
    st = fresh_state()
    args = args_fn(st)
    token = TOKEN_MODERN if era == "modern" else TOKEN_SESSION
    res = call_tool(server, name, args, era=era, token=token)
    ans = ok_answer(res, name)
    rec = only_request(name)
    check_request(rec, name, args, token)
    check(ans.get("data"), st, args)


def _make_tool_test(spec):
    def test():
        run_tool_spec(spec)
    test.__name__ = test.__qualname__ = "test_tool_" + spec[0]
    return test


# ---------------------------------------------------------------------------
# Catalog and argument passing
# ---------------------------------------------------------------------------

def tools_list():
    r = H.modern_post(srv().port, "tools/list")
    assert r.status == 200, r.text[:300]
    return r, r.json()["result"]["tools"]


def test_tools_list_names_the_57_tools_of_the_route_map():
    r, tools = tools_list()
    names = [t["name"] for t in tools]
    assert len(names) == 57 and sorted(names) == sorted(ROUTES), \
        f"tools/list: {len(names)} tools; missing {sorted(set(ROUTES) - set(names))}, extra {sorted(set(names) - set(ROUTES))}"
    assert sorted([s[0] for s in TOOL_SPECS] + sorted(OWN_TESTS)) == sorted(ROUTES)


def test_tools_list_fits_its_budget():
    r, tools = tools_list()
    size = len(json.dumps(tools, separators=(",", ":"), ensure_ascii=False).encode())
    print(f"  tools/list: {size} bytes of tools, {len(r.body if hasattr(r, 'body') else r.text.encode())} in the answer")
    assert size <= 61000, f"tools/list grew to {size} bytes (budget 61000)"


def _api_schemas():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fake_calid_api as API
    return API


def _api_types(s):
    t = s.get("type")
    if t is None:
        return None if "anyOf" not in s else {x for a in s["anyOf"] for x in (_api_types(a) or {"any"})}
    return set(t if isinstance(t, list) else [t])


def _fits(ours, api, where, query=False):
    """Our property schema asks for nothing the API's would refuse or drop.
    In a query every value travels as text, so a number fits a string."""
    problems = []
    at = _api_types(api)
    ot = _api_types(ours)
    if "format" in ours and "minLength" not in ours:
        ours = dict(ours, minLength=1)   # a date-time, an email: never empty
    if at is not None and "any" not in at and ot is not None:
        widened = at | ({"integer"} if "number" in at else set()) | ({"integer", "number"} if query and "string" in at else set())
        if not ot <= widened:
            problems.append(f"{where}: our type {sorted(ot)}, the API's {sorted(at)}")
    if "enum" in ours and "enum" in api and not set(ours["enum"]) <= set(api["enum"]):
        problems.append(f"{where}: enum values the API refuses: {sorted(set(ours['enum']) - set(api['enum']))}")
    for k in ("minimum", "minLength"):
        if k in api and (ours.get(k) is None or ours[k] < api[k]):
            problems.append(f"{where}: {k} {ours.get(k)} below the API's {api[k]}")
    if "exclusiveMinimum" in api and (ours.get("minimum") is None or ours["minimum"] <= api["exclusiveMinimum"]):
        problems.append(f"{where}: minimum {ours.get('minimum')} allows the API's excluded {api['exclusiveMinimum']}")
    for k in ("maximum", "maxLength"):
        if k in api and (ours.get(k) is None or ours[k] > api[k]):
            problems.append(f"{where}: {k} {ours.get(k)} above the API's {api[k]}")
    if ours.get("type") == "object" and api.get("type") == "object" and api.get("additionalProperties") is False:
        for name, sub in ours.get("properties", {}).items():
            if name not in api["properties"]:
                problems.append(f"{where}.{name}: the API drops it")
            else:
                problems += _fits(sub, api["properties"][name], f"{where}.{name}", query)
        missing = set(api.get("required", [])) - set(ours.get("required", []))
        if missing:
            problems.append(f"{where}: the API requires {sorted(missing)}, the tool does not")
    if ours.get("type") == "array" and "items" in ours and api.get("items"):
        problems += _fits(ours["items"], api["items"], where + "[]", query)
    return problems


def test_every_tool_schema_matches_the_api_schema():
    """Each tool's inputSchema against the API's own (tests/fake_calid_api.py,
    read from the API source): no property the API drops, no required field
    missing, types, enums and limits within the API's."""
    API = _api_schemas()
    _, tools = tools_list()
    routes = {r.tool: r for r in API.ROUTES}
    problems = []
    for t in tools:
        name, schema = t["name"], t["inputSchema"]
        route = routes[name]
        method, path = ROUTES[name]
        assert (route.method, re.sub(r":\w+", "{}", route.path)) == (method, re.sub(r"\{\w+\}", "{}", path)), \
            f"{name}: the fake's route {route.method} {route.path} vs the route map {method} {path}"
        params = path_params(path)
        for p in params:
            want(p in schema.get("required", []), f"{name}: path parameter {p} not required")
            api_param = (route.params or {}).get("properties", {}).get(route.names[params.index(p)])
            # no params schema: the handler parseInts the id, except for the string ids
            api_type = api_param["type"] if api_param else ("string" if p in ("uid", "username") else "integer")
            ours = schema["properties"][p]
            if api_type == "integer":
                want(ours["type"] == "integer" and ours.get("minimum") == 1,
                     f"{name}: path id {p} typed {ours}, the API parses an integer > 0")
            else:
                want(ours["type"] == "string", f"{name}: path id {p} typed {ours}, the API takes a string")
        if name == "create_users_edit_profile_avatar":
            continue
        part = route.body if method in ("POST", "PUT", "PATCH") else route.query
        body_props = {k: v for k, v in schema.get("properties", {}).items() if k not in params}
        ours = dict(schema, properties=body_props, required=[r for r in schema.get("required", []) if r not in params])
        if part is None:
            want(not body_props, f"{name}: offers {sorted(body_props)}, the route reads no {'body' if method != 'GET' else 'query'}")
            continue
        problems += _fits(ours, part, name, query=method in ("GET", "DELETE"))
    assert not problems, "catalog vs API schemas:\n  " + "\n  ".join(problems)


def test_write_tools_carry_the_right_hints():
    _, tools = tools_list()
    for t in tools:
        a, method = t["annotations"], ROUTES[t["name"]][0]
        assert a["readOnlyHint"] == (method == "GET"), f"{t['name']}: readOnlyHint {a['readOnlyHint']} for {method}"
        if method == "DELETE":
            assert a["destructiveHint"] and a["idempotentHint"], f"{t['name']}: {a}"


for _spec in TOOL_SPECS:
    globals()["test_tool_" + _spec[0]] = _make_tool_test(_spec)
del _spec


def test_tool_create_users_edit_profile_avatar_sends_one_file_part():
    """The upload goes out as multipart/form-data with one file part named
    avatar. The API's route declares a JSON body schema, so Fastify refuses
    multipart with 400 "body must be object" (calid-api-source.md 4.45): the
    tool error relays that message as it is."""
    fresh_state()
    args = {"image": base64.b64encode(AVATAR).decode(), "filename": "me.png", "contentType": "image/png"}
    res = call_tool(srv(), "create_users_edit_profile_avatar", args, era="modern")
    rec = only_request("create_users_edit_profile_avatar")
    method, path = expected_path("create_users_edit_profile_avatar", args)
    assert (rec["method"], rec["path"], rec["query"]) == (method, path, ""), f"{rec['method']} {rec['path']}"
    check_common_headers(rec, TOKEN_MODERN, "create_users_edit_profile_avatar")
    check_avatar_request(rec, args)
    text = err_text(res, "create_users_edit_profile_avatar")
    assert "400" in text and "body must be object" in text, text[:300]


def test_tool_reschedule_booking_500_after_acting_says_check_first():
    """The API answers 500 after a reschedule that happened (its answer schema
    wants newUserId): the tool error tells the model to check before retrying."""
    st = fresh_state()
    b = upcoming_accepted(st)[1]
    args = {"bookingId": b["id"], "start": free_start(st, 21, 10), "reschedulingReason": "Host travelling",
            "rescheduledBy": "alex@example.com"}
    res = call_tool(srv(), "reschedule_booking", args)
    rec = only_request("reschedule_booking")
    check_request(rec, "reschedule_booking", args, TOKEN_SESSION)
    text = err_text(res, "reschedule_booking")
    assert "500" in text and "may have been rescheduled" in text and "get_booking_by_id" in text, text[:400]
    after = CTL.state()["bookings"]
    moved = [x for x in after if x.get("fromReschedule") == b["uid"]]
    assert moved and parse_iso(moved[0]["startTime"]) == parse_iso(args["start"]), \
        "the fake did not reschedule: the test proves nothing"
    # another API error on that tool is not mistaken for one that acted
    CTL.clear_requests()
    res = call_tool(srv(), "reschedule_booking", {"bookingId": 999999, "start": args["start"]})
    text = err_text(res, "reschedule_booking")
    assert "404" in text and "may have been rescheduled" not in text, text[:300]


def test_path_ids_are_typed_as_the_api_parses_them():
    """A uid where the numeric booking id belongs is refused before any
    request; a string id is percent-encoded; '/' and '..' never reach a path."""
    st = fresh_state()
    b = upcoming_accepted(st)[0]
    for args, words in [({"bookingId": b["uid"]}, ["'bookingId'", "must be integer", "got string"]),
                        ({"bookingId": 0}, ["'bookingId'", ">= 1"]),
                        ({"bookingId": 1.5}, ["'bookingId'", "integer"])]:
        text = err_text(call_tool(srv(), "get_booking_by_id", args), "get_booking_by_id")
        assert all(w in text for w in words), f"{args}: {text[:300]}"
    for name, args in [("get_slot", {"uid": "../users/me"}), ("get_slot", {"uid": ".."}),
                       ("get_webhook_by_id", {"webhookId": "a/b"}), ("get_users", {"username": "."}),
                       ("delete_slots", {"uid": "x/../../teams/21"})]:
        text = err_text(call_tool(srv(), name, args), name)
        assert "no '/'" in text or "'..'" in text, f"{name} {args}: {text[:300]}"
    assert CTL.requests() == [], f"refused ids reached the API: {[(r['method'], r['path']) for r in CTL.requests()]}"
    odd = "uid with space ?&#%+é"
    res = call_tool(srv(), "get_slot", {"uid": odd})
    rec = only_request("get_slot")
    exp = "/slots/" + urllib.parse.quote(odd, safe="")
    assert rec["path"] == exp and rec["query"] == "", f"path {rec['path']!r} query {rec['query']!r}, expected {exp!r}"
    assert "404" in err_text(res, "get_slot") and "Slot not found" in text_of(res), text_of(res)[:300]


def test_query_values_and_keys_are_percent_encoded_and_arrays_repeat():
    fresh_state()
    tricky = "a&b=c+d/é %"
    raw_args = json.dumps({"search": "john doe", "limit": 5}).rstrip("}") + \
        ', "x\\u00e9 \\/y": "1", "note": %s, "tag": ["x y", "z&w"], "flag": true, "skip": null}' % json.dumps(tricky)
    res = call_tool(srv(), "list_contacts", None, raw_args=raw_args)
    ans = ok_answer(res, "list_contacts")
    rec = only_request("list_contacts")
    got = urllib.parse.parse_qsl(rec["query"], keep_blank_values=True)
    expq = [("search", "john doe"), ("limit", "5"), ("x\u00e9 /y", "1"), ("note", tricky), ("tag", "x y"), ("tag", "z&w"),
            ("flag", "true")]
    assert sorted(got) == sorted(expq), f"query {rec['query']!r} decodes to {got}, expected {expq}"
    assert "x%C3%A9%20%2Fy=1" in rec["query"], f"the key is encoded from its decoded text: {rec['query']!r}"
    assert "+" not in rec["query"].replace("%2B", ""), f"a raw + in the query would read as a space: {rec['query']!r}"
    assert [c["name"] for c in rows_of(ans["data"])] == ["John Doe"], f"search answer {ans['data']}"
    # the API drops what it does not know, silently: the fake records it
    assert sorted(rec["dropped"]) == sorted(["querystring.x\u00e9 /y", "querystring.note", "querystring.tag",
                                              "querystring.flag"]), rec["dropped"]


def test_post_body_copied_verbatim_with_nested_values():
    fresh_state()
    nested = ('{"tier": "gold", "scores": [1, 2.50, -0.0, 1e3], '
              '"deep": {"list": [true, null, {"k": "v\\u00e9 \\"q\\""}], "empty": {}}}')
    raw_args = '{"name": "Verbatim Tester", "email": "verbatim@example.com", "customFields": %s}' % nested
    res = call_tool(srv(), "create_contact", None, raw_args=raw_args)
    ok_answer(res, "create_contact")
    rec = only_request("create_contact")
    assert nested in rec["body"], f"nested value not copied verbatim; body: {rec['body']!r}"
    assert json.loads(rec["body"]) == json.loads(raw_args), f"body {rec['body']!r}"
    assert rec["dropped"] == ["body.customFields"], f"the fake's record of dropped keys: {rec['dropped']}"


def test_always_body_tools_send_an_empty_object():
    st = fresh_state()
    b = upcoming_accepted(st)[0]
    res = call_tool(srv(), "cancel_booking", {"bookingId": b["id"]}, era="modern")
    ok_answer(res, "cancel_booking")
    rec = only_request("cancel_booking")
    assert rec["method"] == "POST" and rec["path"] == f"/booking/{b['id']}/cancel", rec["path"]
    assert rec["headers"].get("content-type", "").startswith("application/json"), rec["headers"]
    assert json.loads(rec["body"] or "null") == {}, f"body {rec['body']!r}, expected {{}}"
    assert "body.cancellationReason" in rec["defaulted"], rec["defaulted"]


def test_put_sends_a_json_body():
    fresh_state()
    args = {"name": "Alex M.", "brandColor": "#112233", "hideBranding": True}
    ok_answer(call_tool(srv(), "update_user_profile", args), "update_user_profile")
    rec = only_request("update_user_profile")
    check_request(rec, "update_user_profile", args, TOKEN_SESSION)
    assert int(rec["headers"].get("content-length", "-1")) == len(rec["body"].encode()), rec["headers"]


# ---------------------------------------------------------------------------
# The mistakes a model makes: each a tool error it can correct from
# ---------------------------------------------------------------------------

def test_mistake_missing_required_field_is_refused_before_sending():
    st = fresh_state()
    args = _args_create_booking(st)
    for drop, word in [("end", "'end'"), ("timeZone", "'timeZone'"), ("responses", "'responses'")]:
        text = err_text(call_tool(srv(), "create_booking", {k: v for k, v in args.items() if k != drop}),
                        "create_booking")
        assert text.startswith("Missing required argument") and word in text, text[:300]
    text = err_text(call_tool(srv(), "update_schedule", {"scheduleId": 2, "name": "Evenings only"}), "update_schedule")
    assert "'timeZone'" in text, text[:300]
    text = err_text(call_tool(srv(), "update_availability", {"availabilityId": 12, "startTime": "x"}),
                    "update_availability")
    assert "'scheduleId'" in text, text[:300]
    assert CTL.requests() == [], "a refused call reached the API"


def test_mistake_the_apis_own_message_reaches_the_model():
    """What only the API checks comes back as a tool error with its message."""
    st = fresh_state()
    args = _args_create_booking(st)
    del args["eventTypeId"]
    text = err_text(call_tool(srv(), "create_booking", args), "create_booking")
    assert "400" in text and "Either eventTypeId or eventTypeSlug is required" in text, text[:300]
    CTL.clear_requests()
    text = err_text(call_tool(srv(), "create_eventtype", {"title": "Long one", "slug": "long-one",
                                                          "periodType": "FOREVER"}), "create_eventtype")
    assert "400" in text and "periodType" in text, text[:300]
    CTL.clear_requests()
    et = own_event_types(st)[1]
    start = free_start(st, 20, 10)
    text = err_text(call_tool(srv(), "create_booking", dict(args, eventTypeId=et["id"], end=plus_minutes(start, 7),
                                                            start=start)), "create_booking")
    assert "Invalid event length" in text, text[:300]


def test_mistake_uid_where_a_numeric_id_belongs():
    st = fresh_state()
    b = upcoming_accepted(st)[0]
    for name, args in [("cancel_booking", {"bookingId": b["uid"]}),
                       ("reschedule_booking", {"bookingId": b["uid"], "start": free_start(st, 21, 10)}),
                       ("update_booking_reassignbookingtouser", {"bookingId": b["id"], "userId": "jordan"})]:
        text = err_text(call_tool(srv(), name, args), name)
        assert "must be integer, got string" in text, f"{name}: {text[:300]}"
    assert CTL.requests() == [], "a refused call reached the API"


def test_mistake_out_of_range_limit():
    fresh_state()
    for name, args, word in [("get_event_types", {"limit": 500}, "<= 100"), ("get_booking", {"limit": 1000}, "<= 500"),
                             ("get_teams", {"page": 0}, ">= 1"), ("list_contacts", {"offset": -1}, ">= 0"),
                             ("create_eventtype", {"title": "Hi", "slug": "hello"}, "4 to 255 characters"),
                             ("get_booking", {"status": "someday"}, "must be one of")]:
        text = err_text(call_tool(srv(), name, args), name)
        assert word in text, f"{name} {args}: {text[:300]}"
    assert CTL.requests() == [], "a refused call reached the API"
    # a field the catalog does not offer passes through, and the API's own check answers
    text = err_text(call_tool(srv(), "get_booking", {"userIds": [0]}), "get_booking")
    assert "400" in text and "userIds" in text and "> 0" in text, text[:300]


def test_server_held_api_key_used_when_client_sends_none():
    fresh_state()
    with H.Server(*upstream_flags(FAKE), "--api-key", "calid_server") as s:
        r = H.modern_post(s.port, "tools/call", {"name": "get_users_me", "arguments": {}}, token=None)
        assert r.status == 200, f"HTTP {r.status}: {r.text[:300]}"
        res = r.json()["result"]
        d = ok_answer(res, "get_users_me")["data"]
        rec = only_request("get_users_me")
        assert rec["headers"].get("authorization") == "Bearer calid_server", \
            f"Authorization {rec['headers'].get('authorization')!r}, expected 'Bearer calid_server'"
        assert d["id"] == 1
        # the session era too
        CTL.clear_requests()
        sid = H.initialize(s.port, token=None, version=H.LATEST_SESSION)
        r = H.session_post(s.port, sid, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                         "params": {"name": "get_teams", "arguments": {}}}, token=None)
        assert r.status == 200, f"HTTP {r.status}: {r.text[:300]}"
        ok_answer(r.json()["result"], "get_teams")
        assert only_request("get_teams")["headers"].get("authorization") == "Bearer calid_server"


# ---------------------------------------------------------------------------
# "Try These Prompts" as chains of tool calls
# ---------------------------------------------------------------------------

def test_prompt_what_bookings_do_i_have_this_week():
    st = fresh_state()
    user = tool("get_users_me", {})
    tz = tz_of(me(st)["timeZone"])
    today = dt.datetime.now(tz).date()
    monday = today - dt.timedelta(days=today.weekday())
    start = dt.datetime(monday.year, monday.month, monday.day, tzinfo=tz)
    end = start + dt.timedelta(days=7)
    got = set()
    for status in ("upcoming", "past"):
        CTL.clear_requests()
        args = {"status": status, "afterStartDate": start.isoformat(), "beforeEndDate": end.isoformat(), "limit": 100}
        got |= {b["id"] for b in tool("get_booking", args)}
        check_request(only_request("get_booking"), "get_booking", args, TOKEN_SESSION)
    exp = {b["id"] for b in st["bookings"] if visible(st, b) and b["status"] not in ("CANCELLED", "REJECTED")
           and parse_iso(b["startTime"]) >= start and parse_iso(b["endTime"]) <= end}
    assert got == exp, f"this week's bookings {sorted(got)}, expected {sorted(exp)}"
    print(f"  this week ({monday} .. {monday + dt.timedelta(days=6)}, {user['username']}): bookings {sorted(got)}")


def test_prompt_available_slots_for_next_monday():
    st = fresh_state()
    tz_name = me(st)["timeZone"]
    tz = tz_of(tz_name)
    ets = tool("get_event_types", {})
    assert ets, "no event types"
    et = ets[0]
    monday = next_weekday(tz, 0)
    args = {"eventTypeId": et["id"], "start": monday.isoformat(), "end": monday.isoformat(), "timeZone": tz_name}
    CTL.clear_requests()
    d = tool("get_slots", args)
    check_request(only_request("get_slots"), "get_slots", args, TOKEN_SESSION)
    times = [parse_iso(s["time"]) for day in d["slots"].values() for s in day]
    assert times and all(t.astimezone(tz).date() == monday for t in times), f"slots {d['slots']}"
    print(f"  next Monday {monday}: {len(times)} slots of '{et['title']}' from "
          f"{times[0].astimezone(tz):%H:%M} to {times[-1].astimezone(tz):%H:%M}")


def test_prompt_create_30_minute_sales_demo_event_type():
    fresh_state()
    created = tool("create_eventtype", {"title": "Sales demo", "slug": "sales-demo", "length": 30,
                                        "description": "30-minute sales demo"})
    assert created["title"] == "Sales demo" and created["length"] == 30, created
    fetched = tool("get_event_types_by_id", {"eventTypeId": created["id"]})
    assert fetched["id"] == created["id"] and fetched["length"] == 30 and fetched["title"] == "Sales demo", fetched
    listed = tool("get_event_types", {"limit": 50})
    assert created["id"] in [e["id"] for e in listed], "the new event type is not listed"


def test_prompt_contacts_and_meeting_history():
    st = fresh_state()
    contacts = rows_of(tool("list_contacts", {}))
    assert contacts, "no contacts"
    john = next(c for c in contacts if c["name"] == "John Doe")
    CTL.clear_requests()
    meetings = tool("get_contact_meetings", {"contactId": john["id"]})
    rec = only_request("get_contact_meetings")
    assert rec["path"] == f"/contacts/{john['id']}/meetings", rec["path"]
    rows = rows_of(meetings)
    exp = sorted(b["id"] for b in st["bookings"] if b["_userId"] == me(st)["id"] and
                 john["email"] in [a["email"] for a in b["attendees"]])
    assert exp and sorted(m["id"] for m in rows) == exp, f"meetings {[m['id'] for m in rows]}, expected {exp}"


def test_prompt_booking_with_john_doe_next_tuesday_3pm():
    st = fresh_state()
    tz_name = me(st)["timeZone"]
    tz = tz_of(tz_name)
    ets = tool("get_event_types", {})
    et = next((e for e in ets if e["title"] == "Consultation"), ets[0])
    john = next(c for c in rows_of(tool("list_contacts", {})) if c["name"] == "John Doe")
    tuesday = next_weekday(tz, 1)
    chosen = None
    while chosen is None and tuesday <= dt.datetime.now(tz).date() + dt.timedelta(days=60):
        d = tool("get_slots", {"eventTypeId": et["id"], "start": tuesday.isoformat(), "end": tuesday.isoformat(),
                               "timeZone": tz_name})
        at_15 = [s for day in d["slots"].values() for s in day
                 if parse_iso(s["time"]).astimezone(tz).strftime("%Y-%m-%d %H:%M") == f"{tuesday} 15:00"]
        if at_15:
            chosen = tuesday
        else:
            print(f"  Tuesday {tuesday} 15:00 is not free; trying the next one")
            tuesday = next_weekday(tz, 1, (tuesday - dt.datetime.now(tz).date()).days + 1)
    assert chosen, "no free Tuesday 15:00 slot within 60 days"
    start = local_time(st, chosen, 15)
    args = {"eventTypeId": et["id"], "start": start, "end": plus_minutes(start, et["length"]), "timeZone": tz_name,
            "responses": {"name": john["name"], "email": john["email"]}}
    CTL.clear_requests()
    b = ok_answer(call_tool(srv(), "create_booking", args), "create_booking")["data"]
    check_request(only_request("create_booking"), "create_booking", args, TOKEN_SESSION)
    assert parse_iso(b["startTime"]) == parse_iso(start), f"booked {b['startTime']}, wanted {start}"
    assert parse_iso(b["endTime"]) - parse_iso(b["startTime"]) == dt.timedelta(minutes=et["length"])
    stored = by_id(CTL.state()["bookings"], b["id"])
    assert stored["attendees"][0]["email"] == john["email"] and stored["status"] == "ACCEPTED", stored
    print(f"  booked '{et['title']}' with John Doe on {chosen} 15:00 {tz_name} (booking {b['id']})")


# ---------------------------------------------------------------------------
# Failures: each a tool result with isError true that says which failure
# ---------------------------------------------------------------------------

def assert_recovers(server, name="get_users_me"):
    """The server still answers and a normal call works again."""
    assert server.alive(), f"the server died: {describe_death(server)}"
    CTL.clear_faults()
    ok_answer(call_tool(server, name, {}, era="modern"), name)


def failing_call(server, faults=(), name="get_users_me", args=None, era="modern", token=None):
    fresh_state()
    for f in faults:
        CTL.fault(**f)
    try:
        res = call_tool(server, name, args or {}, era=era, token=token)
    finally:
        CTL.clear_faults()
    return err_text(res, name)


def test_fail_connection_refused():
    port = H.free_port()   # nothing listens there
    with H.Server("--upstream", f"https://localhost:{port}", "--ca-file", FAKE.ca_file) as s:
        res = call_tool(s, "get_users_me", {}, era="modern")
        text = err_text(res)
        assert "refused" in text.lower(), f"text does not say the connection was refused: {text}"
        assert s.alive(), describe_death(s)


def test_fail_dns_lookup():
    with H.Server("--upstream", "https://no-such-host.invalid", "--ca-file", FAKE.ca_file) as s:
        text = err_text(call_tool(s, "get_users_me", {}, era="modern"))
        assert ("resolve" in text.lower() or "dns" in text.lower()) and "no-such-host.invalid" in text, \
            f"text does not say the name did not resolve: {text}"
        assert s.alive(), describe_death(s)


def test_fail_timeout_when_api_stalls():
    s = short_srv()
    text = failing_call(s, [{"mode": "stall", "count": -1}])
    assert re.search(r"did not answer within 1\.5", text), f"text does not name the timeout: {text}"
    assert_recovers(s)


def _fake_with_cert(cert):
    f = H.FakeCalid("--cert", os.path.join(H.CERTS, cert + ".pem"), "--key", os.path.join(H.CERTS, cert + ".key"))
    return f.start()


def test_fail_untrusted_certificate():
    f = _fake_with_cert("untrusted")
    try:
        with H.Server(*upstream_flags(f)) as s:
            text = err_text(call_tool(s, "get_users_me", {}, era="modern"))
            assert "TLS" in text and "not trusted" in text, f"text: {text}"
            assert s.alive(), describe_death(s)
    finally:
        f.stop()


def test_fail_host_name_mismatch():
    f = _fake_with_cert("wronghost")
    try:
        with H.Server(*upstream_flags(f)) as s:
            text = err_text(call_tool(s, "get_users_me", {}, era="modern"))
            assert "TLS" in text and "host name" in text and "localhost" in text, f"text: {text}"
            assert s.alive(), describe_death(s)
    finally:
        f.stop()


def test_fail_connection_reset():
    s = srv()
    text = failing_call(s, [{"mode": "reset", "count": -1}])
    assert "reset" in text.lower(), f"text does not say reset: {text}"
    assert_recovers(s)


def test_fail_truncated_answer():
    s = srv()
    for extra in ({}, {"close_notify": False}):
        text = failing_call(s, [dict(mode="truncate", **extra)])
        assert "truncated" in text.lower() or "before the answer was complete" in text, f"text: {text}"
    assert_recovers(s)


def test_fail_non_json_answer():
    s = srv()
    text = failing_call(s, [{"mode": "nonjson"}])
    assert "not JSON" in text and "text/html" in text, f"text: {text}"
    assert_recovers(s)


def test_chunked_and_close_delimited_answers_succeed():
    s = srv()
    for fault in ({"mode": "chunked"}, {"mode": "chunked", "chunks": 40, "extensions": True},
                  {"mode": "close"}, {"mode": "close_after"}):
        st = fresh_state()
        CTL.fault(**fault)
        res = call_tool(s, "get_contact", {"contactId": st["contacts"][0]["id"]}, era="modern")
        d = ok_answer(res, f"get_contact with {fault}")["data"]
        stored = {k: v for k, v in st["contacts"][0].items() if not k.startswith("_")}
        assert d == stored, f"{fault}: answer {d}"
        assert CTL.state()["contacts"] == st["contacts"]
    # the connection the fake closed after close_after is not a problem for the next call
    ok_answer(call_tool(s, "get_users_me", {}, era="modern"))


def test_api_401_carries_status_and_message():
    text = failing_call(srv(), token="not-a-calid-token")
    assert "401" in text and "Unauthorized: Invalid bearer token" in text, f"text: {text}"
    rec = CTL.requests()[-1]
    assert rec["headers"].get("authorization") == "Bearer not-a-calid-token"


def test_api_404_carries_status_and_message():
    text = failing_call(srv(), name="get_contact", args={"contactId": 987654})
    assert "404" in text and "Contact not found" in text, f"text: {text}"


def test_api_500_carries_status_and_message():
    text = failing_call(srv(), [{"mode": "status", "status": 500, "message": "Database is on fire"}])
    assert "500" in text and "Database is on fire" in text, f"text: {text}"


def test_api_429_keeps_retry_after():
    text = failing_call(srv(), [{"mode": "status", "status": 429, "retry_after": 42}])
    assert "429" in text and "rate limit" in text.lower(), f"text: {text}"
    assert re.search(r"retry.after\D{0,20}42", text, re.I), f"Retry-After 42 is not in the text: {text}"


def test_answer_larger_than_body_buffer_streams_whole():
    s = srv()
    limit = H.limits()["CM_UPSTREAM_BODY_BYTES"]
    for size in (limit, limit + 1, 3 * limit + 7):     # held whole at the limit, streamed past it
        for extra in ({}, {"chunked": True}):
            fresh_state()
            CTL.fault(mode="big", size=size, **extra)
            res = call_tool(s, "get_users_me", {}, era="modern")
            d = ok_answer(res)
            assert d["message"] == "big answer" and len(text_of(res)) == size, f"{size} {extra}: {len(text_of(res))}"
    assert_recovers(s)


def test_endless_chunked_answer_ends_as_tool_error():
    s = short_srv()
    fresh_state()
    CTL.fault(mode="endless_chunked", chunk_size=8192, interval_ms=2)   # past the slot's buffer within the timeout
    try:
        res = call_tool(s, "get_users_me", {}, era="modern")
    finally:
        CTL.clear_faults()
    # what arrived was passed on as it came; the end is a second block that names the timeout
    assert res["isError"] is True and len(res["content"]) == 2, res["content"][-1]["text"][:300]
    assert res["content"][0]["text"].startswith('{"success":true,"message":"endless","data":["xxx')
    text = res["content"][1]["text"]
    assert "did not answer within" in text and "broke off after" in text, f"text: {text}"
    assert_recovers(s)


# ---------------------------------------------------------------------------
# Concurrency, keep-alive, resumption, latency
# ---------------------------------------------------------------------------

def test_slow_api_call_does_not_hold_up_another_clients_tools_list():
    s = srv()
    fresh_state()
    CTL.fault(mode="delay", delay_ms=3000, path="/users/me")
    out = {}

    def slow():
        try:
            out["res"] = call_tool(s, "get_users_me", {}, era="modern")
        except BaseException as e:  # reported below
            out["err"] = e
        out["slow_done"] = time.monotonic()

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not CTL.requests(path="/users/me") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert CTL.requests(path="/users/me"), "the slow call never reached the fake"
    t0 = time.monotonic()
    r = H.modern_post(s.port, "tools/list", id=99)
    t1 = time.monotonic()
    slow_still_running = t.is_alive() and "slow_done" not in out
    assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, f"tools/list: {r.status} {r.text[:200]}"
    t.join(10)
    assert not t.is_alive(), "the slow call did not finish"
    assert "err" not in out, f"the slow call failed: {out.get('err')}"
    ok_answer(out["res"], "slow get_users_me")
    assert slow_still_running and t1 < out["slow_done"], \
        "tools/list was answered only after the slow upstream call finished"
    print(f"  tools/list during a 3 s upstream call took {1000 * (t1 - t0):.1f} ms")


def _sequential_calls(server, n, ids):
    names = [("get_users_me", {}), ("get_teams", {}), ("get_contact", {"contactId": ids["contact"]}),
             ("get_event_types_by_id", {"eventTypeId": ids["et"]})]
    for i in range(n):
        name, args = names[i % len(names)]
        ok_answer(call_tool(server, name, args, era="modern" if i % 2 else "session"), name)


def test_keep_alive_100_calls_at_most_2_full_handshakes():
    st = fresh_state()
    ids = {"contact": st["contacts"][0]["id"], "et": own_event_types(st)[0]["id"]}
    with H.Server(*upstream_flags(FAKE)) as s:
        CTL.stats()                     # the control connection is open before counting
        before = CTL.stats()
        CTL.clear_requests()
        _sequential_calls(s, 100, ids)
        after = CTL.stats()
        recs = CTL.requests()
    assert len(recs) == 100, f"the fake recorded {len(recs)} API requests, expected 100"
    conns = sorted({r["conn"] for r in recs})
    full_by_conn = sorted({r["conn"] for r in recs if not r["tls_resumed"]})
    full_by_stats = (after["handshakes"] - before["handshakes"]) - (after["resumed"] - before["resumed"])
    print(f"  100 tool calls: {len(conns)} API connection(s), full TLS handshakes: {len(full_by_conn)} "
          f"(fake stats: {full_by_stats} full, {after['resumed'] - before['resumed']} resumed)")
    assert len(full_by_conn) <= 2 and full_by_stats <= 2, \
        f"{len(full_by_conn)} full handshakes over {len(conns)} connections (stats say {full_by_stats})"


def test_tls_session_resumed_after_forced_reconnects():
    st = fresh_state()
    ids = {"contact": st["contacts"][0]["id"], "et": own_event_types(st)[0]["id"]}
    with H.Server(*upstream_flags(FAKE)) as s:
        CTL.clear_requests()
        _sequential_calls(s, 1, ids)
        for _ in range(4):
            CTL.fault(mode="close_after")    # the fake closes the connection after answering
            _sequential_calls(s, 3, ids)
        recs = CTL.requests()
    conns = {}
    for r in recs:
        conns.setdefault(r["conn"], r["tls_resumed"])
    full = [c for c, resumed in conns.items() if not resumed]
    print(f"  {len(recs)} calls with 4 forced reconnects: {len(conns)} connections, {len(full)} full handshake(s), "
          f"{len(conns) - len(full)} resumed")
    assert len(conns) >= 5, f"expected at least 5 connections, got {len(conns)}"
    assert len(full) <= 2, f"{len(full)} of {len(conns)} connections did a full handshake: no TLS resumption"


def _mcp_keepalive_call(conn, port, rid, name, args, token):
    """One modern tools/call on an open connection (no Connection: close).
    Returns (result, the answer's Connection header)."""
    body = json.dumps(H.modern_body("tools/call", {"name": name, "arguments": args}, id=rid)).encode()
    headers = [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
               ("Authorization", f"Bearer {token}"), ("MCP-Protocol-Version", H.MODERN),
               ("Mcp-Method", "tools/call"), ("Mcp-Name", name)]
    conn.send(build_request("POST", "/mcp", headers, body))
    r = conn.read_response()
    assert r.status == 200, f"HTTP {r.status}: {r.text[:200]}"
    return r.json()["result"], r.headers.get("connection", "")


def test_mcp_keep_alive_connection_serves_many_tool_calls():
    """A client that keeps its connection open gets every answer, or is told
    Connection: close first. (The server's idle check once closed such a
    connection right after an answer: a race on the millisecond clock, so
    this makes up to 4000 calls, for at most ~3 s, to give it a chance.)"""
    s = srv()
    fresh_state()
    conn = Conn(s.port)
    calls = 0
    try:
        deadline = time.monotonic() + 3
        while calls < 4000 and time.monotonic() < deadline:
            try:
                res, connection = _mcp_keepalive_call(conn, s.port, calls + 1, "get_users_me", {}, TOKEN_MODERN)
            except H.ConnectionClosed as e:
                raise AssertionError(
                    f"the server closed a kept-alive MCP connection without an answer to tools/call #{calls + 1} "
                    f"(the previous {calls} answers on it had no Connection: close); {e}") from None
            calls += 1
            assert res["isError"] is False, text_of(res)[:300]
            if "close" in connection.lower():
                conn.close()
                conn = Conn(s.port)
    finally:
        conn.close()
    assert s.alive(), describe_death(s)
    print(f"  {calls} tool calls on one kept-alive MCP connection")


class TlsConn(Conn):
    """harness.Conn over TLS: the same client code for the direct requests."""

    def __init__(self, port, ctx, host="localhost"):
        super().__init__(port, tls=False)  # plain under any CALID_TEST_TRANSPORT: wrapped here
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)


def test_latency_added_by_a_tool_call_is_printed():
    s = srv()
    fresh_state()
    ctx = ssl.create_default_context(cafile=FAKE.ca_file)
    direct = TlsConn(FAKE.port, ctx)
    direct_req = build_request("GET", "/users/me", [("Host", f"localhost:{FAKE.port}"),
                                                    ("Authorization", f"Bearer {TOKEN_MODERN}"),
                                                    ("Accept", "application/json"), ("User-Agent", "direct")])
    mcp = [Conn(s.port)]
    reconnects = [0]
    try:
        def via_tool(i):
            for attempt in range(3):
                t = time.perf_counter()
                try:
                    res, _ = _mcp_keepalive_call(mcp[0], s.port, i, "get_users_me", {}, TOKEN_MODERN)
                    return time.perf_counter() - t, res
                except H.ConnectionClosed:
                    # see test_mcp_keep_alive_connection_serves_many_tool_calls: not timed, sent again
                    reconnects[0] += 1
                    mcp[0].close()
                    mcp[0] = Conn(s.port)
            raise AssertionError("the server keeps closing the MCP connection")

        def via_direct():
            t = time.perf_counter()
            direct.send(direct_req)
            r = direct.read_response(method="GET")
            return time.perf_counter() - t, r

        for i in range(5):                      # warm up both paths
            via_tool(1000 + i)
            via_direct()
        _, res = via_tool(1)
        _, r = via_direct()
        assert r.status == 200 and res["isError"] is False
        assert text_of(res) == r.text, "the tool result text is not the API answer unchanged"
        CTL.clear_requests()
        tool_t, direct_t = [], []
        for i in range(50):                     # alternating samples
            tool_t.append(via_tool(2 + i)[0])
            direct_t.append(via_direct()[0])
    finally:
        mcp[0].close()
        direct.close()
    recs = CTL.requests(path="/users/me")
    via_server = [r for r in recs if "calid-mcp" in r["headers"].get("user-agent", "")]
    assert len(via_server) == 50 and len(recs) == 100, \
        f"the fake saw {len(via_server)} tool-call requests and {len(recs) - len(via_server)} direct ones, expected 50 + 50"
    assert len({r["conn"] for r in recs}) == 2, "the samples did not stay on two kept-alive API connections"
    mt, md = statistics.median(tool_t), statistics.median(direct_t)
    print(f"  latency: tool call median {mt * 1000:.3f} ms, direct HTTPS median {md * 1000:.3f} ms, "
          f"added {(mt - md) * 1000:.3f} ms, ratio {mt / md:.2f}x (50 samples each, alternating, "
          f"both on kept-alive connections)")
    if reconnects[0]:
        print(f"  (the server closed the MCP connection {reconnects[0]} time(s) without Connection: close; "
              f"those requests were sent again and not timed)")


def test_zz_shared_server_never_crashed():
    assert not CRASHES, f"the shared server crashed (and was restarted) {len(CRASHES)} time(s): {CRASHES}"
    assert SRV is None or SRV.alive(), describe_death(SRV)


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
