#!/usr/bin/env python3
"""Self-test of tests/fake_calid.py and tests/make_certs.sh (standard library only).

Makes certificates in a temporary directory, starts the fake, and checks the
routes, the control API and a few fault modes over real HTTPS. Prints one
FAIL line per failed check and ends with "N passed, N failed"; exits 1 on any
failure. Runs in a few seconds from any directory.
"""

import base64
import datetime as dt
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_calid.py")
MAKE_CERTS = os.path.join(HERE, "make_certs.sh")
TOKEN = "calid_selftest_0123456789"

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL: %s%s" % (name, (": " + str(detail)[:300]) if detail else ""))
    return cond


class Fake:
    def __init__(self, certdir, cert="server", extra=()):
        self.port_file = os.path.join(certdir, "port.%s" % cert)
        self.proc = subprocess.Popen(
            [sys.executable, FAKE, "--cert", os.path.join(certdir, cert + ".pem"),
             "--key", os.path.join(certdir, cert + ".key"), "--port", "0",
             "--port-file", self.port_file] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"listening (\d+)\n", line)
        if not m:
            raise RuntimeError("fake did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        return rc


class Client:
    """One kept-alive HTTPS connection; reconnects when the server closed it."""

    def __init__(self, port, cafile, host="localhost"):
        self.port, self.host = port, host
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.conn = None

    def request(self, method, path, body=None, headers=None, auth=True, raw=False):
        h = {"Accept": "application/json"}
        if auth:
            h["Authorization"] = "Bearer " + TOKEN
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=5)
        try:
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
            data = resp.read()
        except Exception:
            self.close()
            raise
        if resp.will_close:
            self.close()
        if raw:
            return resp, data
        try:
            return resp.status, json.loads(data), resp
        except ValueError:
            return resp.status, data, resp

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


SLOT_1 = "5f1c2d3e-0000-4000-8000-000000000001"     # seeded reservations and webhooks
SLOT_2 = "5f1c2d3e-0000-4000-8000-000000000002"
HOOK_1 = "6a1f0c2e-5b7d-4c11-9e0a-000000000601"
HOOK_2 = "6a1f0c2e-5b7d-4c11-9e0a-000000000602"


# The route map of calid-api.md, written out here so the fake's own table is
# checked against it: (method, path with seeded ids).
ROUTE_MAP = [
    ("GET", "/availability"), ("POST", "/availability"), ("PATCH", "/availability/11"),
    ("DELETE", "/availability/11"), ("GET", "/schedule"), ("POST", "/schedule"), ("PATCH", "/schedule/2"),
    ("DELETE", "/schedule/2"), ("GET", "/booking"), ("POST", "/booking"), ("GET", "/booking/503"),
    ("POST", "/booking/503/cancel"), ("PATCH", "/booking/506/change_confirmation"),
    ("PATCH", "/booking/508/reassignBookingAutomatically"), ("PATCH", "/booking/508/reassignBookingToUser"),
    ("PATCH", "/booking/504/reschedule"), ("GET", "/contacts"), ("POST", "/contacts"), ("GET", "/contacts/301"),
    ("PATCH", "/contacts/301"), ("DELETE", "/contacts/305"), ("GET", "/contacts/301/meetings"),
    ("GET", "/event-types"), ("GET", "/event-types/101"), ("POST", "/event-types"), ("PATCH", "/event-types/101"),
    ("DELETE", "/event-types/103"), ("POST", "/teams/21/memberships"), ("DELETE", "/teams/21/memberships/44"),
    ("POST", "/slots/reserve"), ("DELETE", "/slots/%s" % SLOT_2), ("GET", "/slots/%s" % SLOT_1), ("GET", "/slots"),
    ("PATCH", "/slots/%s" % SLOT_1), ("POST", "/teams"), ("POST", "/teams/21/event-types"), ("DELETE", "/teams/22"),
    ("DELETE", "/teams/21/event-types/202"), ("GET", "/teams/21"), ("GET", "/teams/21/event-types/201"),
    ("GET", "/teams/21/event-types"), ("GET", "/teams/21/memberships/42"), ("GET", "/teams/21/memberships"),
    ("GET", "/teams/21/schedules"), ("GET", "/teams"), ("PATCH", "/teams/21"), ("PATCH", "/teams/21/event-types/201"),
    ("PATCH", "/teams/21/memberships/43"), ("PUT", "/users/edit-profile"), ("POST", "/users/edit-profile/avatar"),
    ("GET", "/users/alex"), ("GET", "/users/me"), ("POST", "/webhook"), ("DELETE", "/webhook/%s" % HOOK_2),
    ("GET", "/webhook"), ("GET", "/webhook/%s" % HOOK_1), ("PATCH", "/webhook/%s" % HOOK_1),
]


def is_fastify_404(st, body):
    return st == 404 and isinstance(body, dict) and set(body) == {"message", "error", "statusCode"}


def fail_message(body):
    return body.get("message") if isinstance(body, dict) else body


def test_envelopes(c):
    st, body, _ = c.request("GET", "/booking", auth=False)
    check("no token -> 401 Bearer token required", st == 401 and body == {
        "success": False, "message": "Bearer token required",
        "error": {"code": "UNAUTHORIZED", "message": "Bearer token required"}}, body)
    st, body, _ = c.request("GET", "/booking", headers={"Authorization": "Bearer sk_live_x"}, auth=False)
    check("a token that is not an API key -> 401", st == 401 and body["message"] == "Invalid bearer token", body)
    st, body, _ = c.request("POST", "/booking", body={}, auth=False)
    check("validation runs before the auth hook", st == 400 and body["error"]["code"] == "VALIDATION_ERROR", body)
    st, body, _ = c.request("GET", "/nowhere?x=1", auth=False)
    check("unknown route -> Fastify's 404", st == 404 and body == {
        "message": "Route GET:/nowhere?x=1 not found", "error": "Not Found", "statusCode": 404}, body)
    st, body, _ = c.request("POST", "/booking/503/reschedule", body={"start": "2030-01-01T10:00:00Z"})
    check("wrong method -> Fastify's 404", st == 404 and body["message"] == "Route POST:/booking/503/reschedule not found",
          body)
    st, body, _ = c.request("PATCH", "/user/profile", body={})
    check("the old guessed profile route does not exist", is_fastify_404(st, body), body)
    st, body, _ = c.request("GET", "/booking/")
    check("a plugin root answers with a trailing slash", st == 200 and body["success"] is True, body)
    st, body, _ = c.request("GET", "/booking/503/")
    check("other routes do not", is_fastify_404(st, body), body)
    resp, data = c.request("HEAD", "/users/me", raw=True)
    check("HEAD on a GET route", resp.status == 200 and data == b"", resp.status)
    st, body, _ = c.request("GET", "/booking?status=past&limit=1&page=2")
    pg = body.get("meta", {}).get("pagination")
    check("paginated list: meta.pagination", st == 200 and len(body["data"]) == 1 and pg == {
        "page": 2, "limit": 1, "total": 2, "totalPages": 2} and body["message"] == "User bookings retrieved", body)


def test_route_map(c, ctl):
    st, routes, _ = ctl.request("GET", "/__fake/routes", auth=False)
    table = sorted((r["method"], re.sub(r":\w+", "X", r["path"])) for r in routes)
    want = sorted((m, re.sub(r"/(\d+|[0-9a-f-]{36})(?=/|$)", "/X", p).replace("/alex", "/X")) for m, p in ROUTE_MAP)
    check("the fake's table is the route map, 57 routes", table == want and len(routes) == 57,
          set(table) ^ set(want))
    check("contacts are the inferred routes", {r["tool"] for r in routes if r["evidence"] == "inferred"} == {
        "list_contacts", "create_contact", "get_contact", "update_contact", "delete_contact", "get_contact_meetings"})
    missing = []
    for method, path in ROUTE_MAP:
        body = None if method in ("GET", "DELETE") else {}
        st, resp, _ = c.request(method, path, body=body)
        if is_fastify_404(st, resp) or not isinstance(resp, dict) or \
                str(resp.get("message", "")).startswith("Internal server error (fake)"):
            missing.append("%s %s: %s %s" % (method, path, st, resp))
    check("every route of the map answers, without a bug of the fake", not missing, missing)
    ctl.request("POST", "/__fake/reset", auth=False)


def test_validation(c, ctl):
    cases = [
        ("GET", "/booking?limit=501", None, "querystring/limit must be <= 500"),
        ("GET", "/booking?limit=0", None, "querystring/limit must be > 0"),
        ("GET", "/booking?page=x", None, "querystring/page must be integer"),
        ("GET", "/booking?status=open", None, "querystring/status must be equal to one of the allowed values"),
        ("GET", "/booking?afterStartDate=2030-01-01T10:00:00", None,
         'querystring/afterStartDate must match format "date-time"'),
        ("GET", "/event-types?limit=101", None, "querystring/limit must be <= 100"),
        ("GET", "/event-types/abc", None, "params/id must be integer"),
        ("GET", "/event-types/0", None, "params/id must be > 0"),
        ("POST", "/booking", {"eventTypeId": 102, "start": "2030-01-07T10:00:00Z",
                              "responses": {"name": "A", "email": "a@b.co"}}, "body must have required property 'end'"),
        ("POST", "/booking", {"eventTypeId": 102, "start": "2030-01-07T10:00:00Z", "end": "2030-01-07T10:30:00Z",
                              "responses": {"name": "A", "email": "nope"}},
         'body/responses/email must match format "email"'),
        ("POST", "/booking", None, "body must be object"),
        ("POST", "/booking/abc/cancel", {}, "params/id must be integer"),
        ("PATCH", "/booking/506/change_confirmation", {"status": "accept"},
         "body must have required property 'confirmed'"),
        ("PATCH", "/booking/506/change_confirmation", {"confirmed": "yes"}, "body/confirmed must be boolean"),
        ("POST", "/event-types", {"title": "Hi", "slug": "hi-there"},
         "body/title must NOT have fewer than 4 characters"),
        ("POST", "/event-types", {"title": "Call", "slug": "call", "length": 5}, "body/length must be >= 10"),
        ("POST", "/event-types", {"title": "Call", "slug": "call", "schedulingType": "RR"},
         "body/schedulingType must be equal to one of the allowed values"),
        ("PATCH", "/availability/11", {"startTime": "2030-01-01T09:00:00Z"},
         "body must have required property 'scheduleId'"),
        ("PATCH", "/schedule/1", {"name": "Renamed"}, "body must have required property 'timeZone'"),
        ("GET", "/availability?dateFrom=2030-01-01&dateTo=2030-01-02", None,
         "querystring must have required property 'eventTypeId'"),
        ("POST", "/slots/reserve", {"eventTypeId": 102, "slotUtcStartDate": "2030-01-01T10:00:00Z"},
         "body must have required property 'slotStart'"),
        ("POST", "/teams", {"name": "T", "timeFormat": 13.5}, "body/timeFormat must be integer,null"),
        ("POST", "/contacts", {"name": "X"}, "body must have required property 'email'"),
    ]
    bad = []
    for method, path, body, message in cases:
        st, got, _ = c.request(method, path, body=body)
        if not (st == 400 and got == {"success": False, "message": message,
                                      "error": {"code": "VALIDATION_ERROR", "message": message}}):
            bad.append((method, path, st, got))
    check("Ajv's first error, in the envelope, for %d mistakes" % len(cases), not bad, bad)
    st, body, _ = c.request("POST", "/booking", body="a=1", headers={"Content-Type": "text/plain"})
    check("a body that is not JSON -> 415", st == 415 and body["error"]["code"] == "FST_ERR_CTP_INVALID_MEDIA_TYPE", body)
    st, body, _ = c.request("POST", "/booking", body=b"", headers={"Content-Type": "application/json"})
    check("an empty JSON body -> 400", st == 400 and body["error"]["code"] == "FST_ERR_CTP_EMPTY_JSON_BODY", body)
    st, body, _ = c.request("POST", "/booking", body="{not json", headers={"Content-Type": "application/json"})
    check("malformed JSON -> 400", st == 400 and body["error"]["code"] == "FST_ERR_CTP_INVALID_JSON_BODY", body)
    st, body, _ = c.request("DELETE", "/webhook/x", body=b"", headers={"Content-Type": "application/json"})
    check("a DELETE with Content-Type: application/json and Content-Length: 0 -> 400",
          st == 400 and body["error"]["code"] == "FST_ERR_CTP_EMPTY_JSON_BODY", body)
    st, body, _ = c.request("DELETE", "/webhook/x")
    check("a DELETE without a body is not parsed", st == 404 and body["message"] == "Webhook not found", body)


def last_record(ctl, method, path):
    st, recs, _ = ctl.request("GET", "/__fake/requests?method=%s&path=%s" % (method, path), auth=False)
    return recs[-1] if recs else {}


def test_coercion_and_dropped(c, ctl):
    st, body, _ = c.request("GET", "/booking?limit=5&teamIds=21&status=upcoming")
    check("query strings coerced: limit, a single teamIds", st == 200
          and [b["id"] for b in body["data"]] == [508] and body["meta"]["pagination"]["limit"] == 5, body)
    check("nothing dropped from a right query", last_record(ctl, "GET", "/booking")["dropped"] == [])
    c.request("GET", "/booking?teamIds[]=21&sort=asc")
    check("unknown query keys are dropped and recorded", sorted(last_record(ctl, "GET", "/booking")["dropped"]) == [
        "querystring.sort", "querystring.teamIds[]"], last_record(ctl, "GET", "/booking"))
    st, body, _ = c.request("GET", "/event-types?hidden=false&limit=2&orderBy=length&orderDir=asc")
    check("boolean and enum query values", st == 200 and [e["length"] for e in body["data"]] == [15, 30], body)
    c.request("GET", "/schedule?page=2")
    check("paging on a route without it is recorded as dropped",
          last_record(ctl, "GET", "/schedule")["dropped"] == ["querystring.page"])
    st, body, _ = c.request("POST", "/booking/503/cancel", body={"seatUid": "abc", "cancellationReason": "Ill"})
    rec = last_record(ctl, "POST", "/booking/503/cancel")
    check("a wrongly named body field is dropped, silently", st == 200 and rec["dropped"] == ["body.seatUid"]
          and "body.autoRefund" in rec["defaulted"], rec)
    st, body, _ = c.request("DELETE", "/contacts/305", body={"force": True})
    check("a body on a route without a body schema is recorded as dropped",
          last_record(ctl, "DELETE", "/contacts/305")["dropped"] == ["body.force"])
    st, body, _ = c.request("POST", "/webhook", body={"subscriberUrl": "https://h.example/x", "eventTypeId": 102,
                                                      "active": "false"})
    check("webhook eventTypeId dropped, active coerced", st == 200 and body["data"]["active"] is False
          and last_record(ctl, "POST", "/webhook")["dropped"] == ["body.eventTypeId"], body)
    ctl.request("POST", "/__fake/reset", auth=False)


def booking_body(start, minutes=30, **extra):
    end = start + dt.timedelta(minutes=minutes)
    body = {"eventTypeId": 102, "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "responses": {"name": "Nora Quinn", "email": "nora.quinn@example.com"}}
    body.update(extra)
    return body


def test_bookings(c, ctl):
    start = next_weekday(1, 9, 0)       # a Tuesday, 09:00 UTC: Berlin working hours
    st, body, _ = c.request("POST", "/booking", body=booking_body(start))
    b = body.get("data", {})
    check("create booking -> 200 Booking created", st == 200 and body.get("message") == "Booking created"
          and b.get("status") == "ACCEPTED" and b.get("uid"), body)
    check("without timeZone the booking is in Asia/Kolkata", b.get("attendees", [{}])[0].get("timeZone") == "Asia/Kolkata",
          b.get("attendees"))
    check("without a location it is Google Meet", b.get("location") == "integrations:google:meet", b.get("location"))
    st, body, _ = c.request("POST", "/booking", body=booking_body(start + dt.timedelta(hours=3),
                                                                 responses={"email": "x@example.com"}))
    check("without a name the booking is for John Doe, phone +91XXXXXXXXXX", st == 200
          and body["data"]["responses"]["name"] == "John Doe"
          and body["data"]["responses"]["phone"] == "+91XXXXXXXXXX", body)
    st, got, _ = c.request("GET", "/booking/%s" % b.get("id"))
    check("the new booking can be fetched", st == 200 and got["data"]["uid"] == b.get("uid"), got)
    st, again, _ = c.request("POST", "/booking", body=booking_body(start))
    check("the same time again -> 500 no_available_users_found_error",
          st == 500 and again["message"] == "no_available_users_found_error", again)
    st, wrong, _ = c.request("POST", "/booking", body=booking_body(start + dt.timedelta(hours=2), 45))
    check("an end that does not fit the length -> 500 Invalid event length",
          st == 500 and wrong["message"] == "Invalid event length", wrong)
    st, res, _ = c.request("PATCH", "/booking/%s/reschedule" % b.get("id"),
                           body={"start": (start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    check("reschedule answers 500 after acting (the source's hazard)",
          st == 500 and res == {"statusCode": 500, "error": "Internal Server Error",
                                "message": '"newUserId" is required!'}, res)
    st, state, _ = ctl.request("GET", "/__fake/state", auth=False)
    old = [x for x in state["bookings"] if x["id"] == b.get("id")]
    new = [x for x in state["bookings"] if x["fromReschedule"] == b.get("uid")]
    check("... and the reschedule did happen", old and old[0]["status"] == "CANCELLED" and old[0]["rescheduled"]
          and len(new) == 1 and new[0]["startTime"].startswith((start + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H")),
          (old, new))
    if new:
        st, body, _ = c.request("POST", "/booking/%d/cancel" % new[0]["id"], body={})
        check("cancel -> 200", st == 200 and body["data"]["bookingId"] == new[0]["id"]
              and body["message"] == "Booking cancelled", body)
        st, body, _ = c.request("POST", "/booking/%d/cancel" % new[0]["id"], body={})
        check("cancel again -> 400", st == 400 and body["message"] == "This booking has already been cancelled.", body)
    st, body, _ = c.request("GET", "/booking/503abc")
    check("parseInt: /booking/503abc is booking 503", st == 200 and body["data"]["id"] == 503, body)
    st, body, _ = c.request("GET", "/booking/abc")
    check("a non-numeric booking id -> 400", st == 400 and body["message"] ==
          "Validation failed: Expected number, received nan", body)
    st, body, _ = c.request("PATCH", "/booking/abc/reschedule", body={"start": "2030-01-01T10:00:00Z"})
    check("a non-numeric id where the handler does not check -> 500", st == 500 and "NaN" in body["message"], body)
    st, body, _ = c.request("GET", "/booking/509")
    check("another user's booking -> 404", st == 404 and body["error"]["code"] == "NOT_FOUND", body)
    ctl.request("POST", "/__fake/hazards", auth=False, body={"reschedule_500": False})
    st, body, _ = c.request("PATCH", "/booking/509/reschedule", body={"start": "2030-01-08T15:00:00Z"})
    check("reschedule, hazard off: the intended answer; no ownership check (Jordan's booking)",
          st == 200 and body == {"success": True, "data": {"bookingId": 509}, "message": "Booking rescheduled"}, body)
    test_confirmation(c)
    ctl.request("POST", "/__fake/reset", auth=False)
    st, body, _ = ctl.request("GET", "/__fake/hazards", auth=False)
    check("reset restores the hazards", body["data"] == {"reschedule_500": True, "avatar_body_schema": True,
                                                         "slots_500": False}, body)


def test_confirmation(c):
    st, body, _ = c.request("PATCH", "/booking/506/change_confirmation", body={"confirmed": "true"})
    check("confirm a pending booking", st == 200 and body["data"] == {
        "status": "ACCEPTED", "message": "Booking confirmed", "bookingId": 506}, body)
    st, body, _ = c.request("PATCH", "/booking/506/change_confirmation", body={"confirmed": False})
    check("decline it once accepted -> 500", st == 500 and body["message"] == "Booking already confirmed", body)
    st, body, _ = c.request("PATCH", "/booking/508/reassignBookingAutomatically", body={})
    check("round-robin reassignment answers only bookingId", st == 200 and body["data"] == {"bookingId": 508}, body)
    st, body, _ = c.request("PATCH", "/booking/503/reassignBookingAutomatically", body={})
    check("no round robin -> 400", st == 400 and body["message"] == "No available users found for reassignment", body)


def test_event_types_and_teams(c, ctl):
    st, body, _ = c.request("POST", "/event-types", body={"title": "Deep dive", "slug": "deep-dive"})
    e = body.get("data", {})
    check("create event type -> 201 with the defaults", st == 201 and e.get("length") == 15
          and e.get("minimumBookingNotice") == 120 and e.get("currency") == "usd", body)
    st, body, _ = c.request("POST", "/event-types", body={"title": "Deep dive", "slug": "deep-dive"})
    check("the same slug -> 409", st == 409 and body["error"]["code"] == "CONFLICT", body)
    st, body, _ = c.request("PATCH", "/event-types/103", body={"title": "Long workshop"})
    check("a partial PATCH gets the create defaults (length back to 15)",
          st == 200 and body["data"]["title"] == "Long workshop" and body["data"]["length"] == 15, body)
    check("... and the record says so", "body.length" in last_record(ctl, "PATCH", "/event-types/103")["defaulted"])
    st, body, _ = c.request("GET", "/event-types/201")
    check("a team event type is not the user's", st == 404 and body["message"] == "Event type not found", body)
    st, body, _ = c.request("POST", "/teams", body={"name": "Night Owls"})
    t = body.get("data", {})
    check("create team -> 201, slug from the name, time zone Asia/Kolkata", st == 201 and t.get("slug") == "night-owls"
          and t.get("timeZone") == "Asia/Kolkata", body)
    st, body, _ = c.request("GET", "/teams/999")
    check("a missing team -> 404 with the database text", st == 404 and body["message"] ==
          "Failed to retrieve team from the database", body)
    st, body, _ = c.request("PATCH", "/teams/23", body={"bio": "x"})
    check("a team where the caller is MEMBER -> 403", st == 403 and body["message"] ==
          "Insufficient permissions to update team", body)
    st, body, _ = c.request("POST", "/teams/21/memberships", body={"userId": 4, "role": "ADMIN"})
    check("a duplicate membership -> 500", st == 500 and body["message"] == "Failed to create team membership", body)
    st, body, _ = c.request("POST", "/teams/%s/memberships" % t.get("id"), body={"userId": 3})
    check("add a member -> 201 with the defaults", st == 201 and body["data"]["role"] == "MEMBER"
          and body["data"]["acceptedInvitation"] is False and body["data"]["impersonation"] is True, body)
    st, body, _ = c.request("GET", "/teams/21/memberships/45")
    check("a membership of another team -> 409", st == 409 and body["message"] ==
          "Membership does not belong to this team", body)
    st, body, _ = c.request("GET", "/teams/21/memberships?role=MEMBER&acceptedInvitation=true")
    check("membership filters", st == 200 and [m["id"] for m in body["data"]] == [43], body)
    ctl.request("POST", "/__fake/reset", auth=False)


def test_slots_and_schedules(c, ctl):
    monday = next_weekday(0, 0)
    day = monday.strftime("%Y-%m-%d")
    st, body, _ = c.request("GET", "/slots?eventTypeId=103&start=%s&end=%s&timeZone=Europe/Berlin" % (day, day))
    times = [s["time"] for v in body.get("data", {}).get("slots", {}).values() for s in v]
    check("slots: 60-minute slots over 09:00-17:00 Berlin", st == 200 and len(times) == 8
          and list(body["data"]["slots"]) == [day], body)
    ctl.request("POST", "/__fake/hazards", auth=False, body={"slots_500": True})
    st, body, _ = c.request("GET", "/slots?eventTypeId=103&start=%s&end=%s" % (day, day))
    check("slots with the double-send hazard on: 500", st == 500 and body["message"] == '"success" is required!', body)
    ctl.request("POST", "/__fake/hazards", auth=False, body={"slots_500": False})
    slot_start = (monday + dt.timedelta(hours=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st, body, _ = c.request("POST", "/slots/reserve", body={"eventTypeId": 102, "slotStart": slot_start})
    r = body.get("data", {})
    check("reserve -> 200, no message, a uid", st == 200 and "message" not in body and r.get("reservationUid")
          and r.get("reservationDuration") == 5 and r.get("slotDuration") == 30, body)
    st, body, _ = c.request("PATCH", "/slots/%s" % r.get("reservationUid"),
                            body={"eventTypeId": 101, "slotStart": slot_start})
    check("another event type on update -> 500", st == 500 and body["message"] ==
          "Cannot change event type when editing a reservation", body)
    st, body, _ = c.request("POST", "/slots/reserve", body={"eventTypeId": 102, "slotStart": slot_start,
                                                            "slotDuration": 60})
    check("slotDuration on a fixed-length event type -> 500", st == 500 and "not a variable length" in body["message"],
          body)
    st, body, _ = c.request("DELETE", "/slots/%s" % r.get("reservationUid"))
    check("delete the reservation", st == 200 and body == {"success": True, "message": "Deleted slot"}, body)
    st, body, _ = c.request("GET", "/slots/%s" % r.get("reservationUid"))
    check("... it is gone", st == 404 and body["message"] == "Slot not found", body)
    st, body, _ = c.request("POST", "/availability", body={"scheduleId": 2, "days": [3], "startTime": "09:00",
                                                           "endTime": "12:00"})
    check("availability times must be ISO date-times (Prisma) -> 500", st == 500 and "ISO-8601" in body["message"],
          body)
    st, body, _ = c.request("POST", "/availability", body={"scheduleId": 2, "days": [3],
                                                           "startTime": "1970-01-01T09:00:00.000Z",
                                                           "endTime": "1970-01-01T12:00:00Z"})
    check("create availability", st == 200 and body["data"]["Schedule"] == {"userId": 1}
          and body["data"]["endTime"] == "1970-01-01T12:00:00.000Z", body)
    st, body, _ = c.request("DELETE", "/availability/13")
    check("another user's availability -> 403", st == 403 and body["message"] == "Forbidden", body)
    st, body, _ = c.request("POST", "/schedule", body={"name": "Weekends", "timeZone": "Mars/Olympus"})
    check("a schedule in no time zone -> 500 (a thrown ZodError)", st == 500 and "Expected one of" in body["message"],
          body)
    st, body, _ = c.request("POST", "/schedule", body={"name": "Weekends", "timeZone": "Europe/Paris"})
    check("create schedule: Mon-Fri 9-17", st == 200 and body["data"]["availability"][0]["days"] == [1, 2, 3, 4, 5],
          body)
    st, body, _ = c.request("GET", "/availability?dateFrom=%s&dateTo=%s&eventTypeId=102" % (day, day))
    check("availability: working hours in minutes, ranges", st == 200
          and body["data"]["workingHours"][0]["startTime"] == 540 and len(body["data"]["dateRanges"]) == 1, body)
    ctl.request("POST", "/__fake/reset", auth=False)


def test_users_webhooks_contacts(c, ctl):
    st, body, _ = c.request("PUT", "/users/edit-profile", body={"name": "Alex M.", "avatarUrl": "x"})
    check("PUT edit-profile; avatarUrl dropped", st == 200 and body["data"]["name"] == "Alex M."
          and last_record(ctl, "PUT", "/users/edit-profile")["dropped"] == ["body.avatarUrl"], body)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    mp = (b"--B42\r\nContent-Disposition: form-data; name=\"file\"; filename=\"me.png\"\r\n"
          b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--B42--\r\n")
    multipart = {"Content-Type": "multipart/form-data; boundary=B42"}
    st, body, _ = c.request("POST", "/users/edit-profile/avatar", body=mp, headers=multipart, auth=False)
    check("avatar: the route's JSON body schema refuses the upload (hazard), before auth",
          st == 400 and body["message"] == "body must be object", body)
    ctl.request("POST", "/__fake/hazards", auth=False, body={"avatar_body_schema": False})
    st, body, _ = c.request("POST", "/users/edit-profile/avatar", body=mp, headers=multipart)
    check("avatar, hazard off: the first file part", st == 200 and body["data"]["avatarUrl"].startswith("https://"),
          body)
    st, body, _ = c.request("POST", "/users/edit-profile/avatar", body=mp.replace(b"image/png", b"image/gif"),
                            headers={"Content-Type": "multipart/form-data; boundary=B42"})
    check("avatar: a GIF -> 400", st == 400 and body["message"] == "Unsupported file type", body)
    st, body, _ = c.request("GET", "/users/alex")
    check("public user: the schema's fields only", st == 200 and body["data"][0]["username"] == "alex"
          and "email" not in body["data"][0], body)
    st, body, _ = c.request("GET", "/users/nobody")
    check("an unknown username: an empty list", st == 200 and body["data"] == [], body)
    st, body, _ = c.request("POST", "/webhook", body={"subscriberUrl": "https://hooks.example.com/calid/bookings"})
    check("a duplicate subscriber -> 500", st == 500 and body["message"].startswith("Duplicate entry"), body)
    st, body, _ = c.request("GET", "/webhook/%s" % HOOK_1)
    check("webhook by uuid", st == 200 and body["data"]["id"] == HOOK_1, body)
    st, body, _ = c.request("POST", "/contacts", body={"name": " Ada ", "email": "Ada@Example.COM"})
    check("create contact -> 201, trimmed, lower-cased", st == 201 and body["data"]["name"] == "Ada"
          and body["data"]["email"] == "ada@example.com" and body["data"]["phone"] == "", body)
    st, body, _ = c.request("PATCH", "/contacts/301", body={})
    check("update contact with nothing -> 400", st == 400 and "At least one field" in body["message"], body)
    st, body, _ = c.request("GET", "/contacts/301/meetings")
    check("contact meetings match by email", st == 200 and body["data"]["rows"]
          and body["data"]["meta"]["limit"] == 100, body)
    ctl.request("POST", "/__fake/reset", auth=False)


def test_rate_limit(c, ctl):
    ctl.request("POST", "/__fake/rate_limit", auth=False, body={"limit": 2})
    st1, _, r1 = c.request("GET", "/users/me")
    st2, _, r2 = c.request("GET", "/contacts/999")
    check("an error answer past the hook carries them too", st2 == 404 and r2.getheader("X-RateLimit-Remaining") == "0",
          r2.getheaders())
    st, body, resp = c.request("GET", "/users/me")
    check("allowed answers carry X-RateLimit-*", st1 == 200 and r1.getheader("X-RateLimit-Limit") == "2"
          and r1.getheader("X-RateLimit-Remaining") == "1", r1.getheaders())
    check("past the limit: 429 with the limiter's body", st == 429 and body == {
        "error": "Rate limit exceeded", "message": "Too many requests. Please try again later.",
        "retryAfter": int(resp.getheader("Retry-After"))} and 0 < body["retryAfter"] <= 60
        and resp.getheader("X-RateLimit-Remaining") == "0" and resp.getheader("X-RateLimit-Reset"), body)
    st, body, _ = c.request("GET", "/users/me", auth=False)
    check("a bad token is refused before the limiter", st == 401, st)
    ctl.request("POST", "/__fake/rate_limit", auth=False, body={"limit": 0})
    st, body, _ = c.request("GET", "/users/me")
    check("limit 0: no limit", st == 200, st)


def next_weekday(weekday, hour, minute=0):
    """The given weekday (0 = Monday), 10 to 16 days ahead (past the seeded bookings), hour:minute UTC."""
    d = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=10)
    while d.weekday() != weekday:
        d += dt.timedelta(days=1)
    return dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=dt.timezone.utc)


def test_certs(tmp):
    r = subprocess.run(["bash", MAKE_CERTS, tmp], capture_output=True, text=True)
    check("make_certs.sh succeeds quietly", r.returncode == 0 and r.stdout == "" and r.stderr == "",
          r.stdout + r.stderr)
    names = ["ca.pem", "ca.key", "server.pem", "server.key", "wronghost.pem", "wronghost.key",
             "untrusted.pem", "untrusted.key", "untrusted-ca.pem"]
    check("make_certs.sh makes every file", all(os.path.isfile(os.path.join(tmp, n)) for n in names))
    before = os.stat(os.path.join(tmp, "ca.pem")).st_mtime_ns
    r = subprocess.run(["bash", MAKE_CERTS, tmp], capture_output=True, text=True)
    check("make_certs.sh is idempotent",
          r.returncode == 0 and os.stat(os.path.join(tmp, "ca.pem")).st_mtime_ns == before)


def test_recording(c, ctl):
    ctl.request("DELETE", "/__fake/requests", auth=False)
    c.request("GET", "/booking?limit=3")
    png = bytes(range(256))
    c.request("POST", "/users/edit-profile/avatar", body=png, headers={"Content-Type": "multipart/form-data; boundary=x"})
    st, recs, _ = ctl.request("GET", "/__fake/requests", auth=False)
    check("requests are recorded", len(recs) == 2 and recs[0]["query"] == "limit=3"
          and recs[0]["headers"]["authorization"] == "Bearer " + TOKEN and recs[0]["dropped"] == [], recs[:1])
    check("binary bodies are recorded as base64", recs[-1].get("body_base64")
          and base64.b64decode(recs[-1]["body"]) == png, recs[-1:])
    ctl.request("DELETE", "/__fake/requests", auth=False)
    st, recs, _ = ctl.request("GET", "/__fake/requests", auth=False)
    check("DELETE /__fake/requests clears", recs == [], recs)


def test_faults(c, ctl, fake, ca):
    ctl.request("POST", "/__fake/fault", auth=False, body={"path": "/booking", "mode": "status", "status": 429})
    st, body, resp = c.request("GET", "/booking")
    check("fault status 429: the limiter's answer", st == 429 and resp.getheader("Retry-After") == "30"
          and body.get("retryAfter") == 30 and resp.getheader("X-RateLimit-Remaining") == "0", (st, body))
    st, body, _ = c.request("GET", "/booking")
    check("fault applies count times only", st == 200, st)
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "status", "status": 500, "message": "On fire"})
    st, body, _ = c.request("GET", "/booking")
    check("fault status 500: the error envelope", st == 500 and body == {
        "success": False, "message": "On fire", "error": {"code": "INTERNAL_ERROR", "message": "On fire"}}, body)
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "truncate"})
    try:
        c.request("GET", "/users/me")
        check("fault truncate breaks the read", False, "read succeeded")
    except (http.client.IncompleteRead, ConnectionError, ssl.SSLError, OSError):
        check("fault truncate breaks the read", True)
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "reset"})
    try:
        c.request("GET", "/users/me")
        check("fault reset aborts the connection", False, "read succeeded")
    except (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError, OSError):
        check("fault reset aborts the connection", True)
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "chunked", "chunks": 5})
    resp, data = c.request("GET", "/users/me", raw=True)
    check("fault chunked still decodes", resp.getheader("Transfer-Encoding") == "chunked"
          and json.loads(data)["data"]["username"] == "alex", resp.getheaders())
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "big", "size": 200000})
    resp, data = c.request("GET", "/users/me", raw=True)
    check("fault big is valid JSON of that size", len(data) == 200000 and json.loads(data)["success"], len(data))
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "delay", "delay_ms": 300})
    t = time.monotonic()
    st, body, _ = c.request("GET", "/users/me")
    check("fault delay", st == 200 and time.monotonic() - t >= 0.3, time.monotonic() - t)
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "nonjson"})
    st, body, resp = c.request("GET", "/users/me")
    check("fault nonjson", st == 200 and isinstance(body, bytes) and b"<html" in body
          and resp.getheader("Content-Type").startswith("text/html"), body)
    test_stall(fake, ca, ctl)
    test_drop_request(c, ctl)
    st, body, _ = ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "nope"})
    check("unknown fault mode -> 400", st == 400, body)


def test_stall(fake, ca, ctl):
    ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "stall", "delay_ms": 2000})
    s = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    ts = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="localhost")
    ts.sendall(b"GET /users/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n" % TOKEN.encode())
    ts.settimeout(0.3)
    try:
        got = ts.recv(100)
        check("fault stall answers nothing", False, got)
    except socket.timeout:
        check("fault stall answers nothing", True)
    ts.close()


def test_drop_request(c, ctl):
    ctl.request("DELETE", "/__fake/requests", auth=False)
    ctl.request("POST", "/__fake/fault", auth=False, body={"kind": "drop_request", "nth": 2})
    c.close()
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(c.request("GET", "/users/me")[0])
        except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError, OSError):
            outcomes.append("dropped")
            c.close()
    check("drop_request drops the 2nd request of each connection", outcomes == [200, "dropped", 200, "dropped"],
          outcomes)
    st, recs, _ = ctl.request("GET", "/__fake/requests", auth=False)
    check("dropped requests are recorded as received", len(recs) == 4
          and [bool(r.get("dropped_connection")) for r in recs] == [False, True, False, True], recs)
    st, body, _ = ctl.request("DELETE", "/__fake/fault", auth=False)
    check("drop_request stays until cleared", body.get("cleared") == 1, body)
    ctl.request("POST", "/__fake/fault", auth=False, body={"kind": "drop_request", "nth": 1, "act": True, "count": 1})
    c.close()
    try:
        c.request("POST", "/contacts", body={"name": "Lost Answer", "email": "lost@example.com"})
        check("drop_request act: no answer", False)
    except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError, OSError):
        c.close()
    st, state, _ = ctl.request("GET", "/__fake/state", auth=False)
    check("drop_request act: the API acted", any(x["email"] == "lost@example.com" for x in state["contacts"]))


def test_reset(c, ctl):
    c.request("DELETE", "/contacts/301")
    c.request("POST", "/booking/503/cancel", body={})
    ctl.request("POST", "/__fake/reset", auth=False)
    st, body, _ = c.request("GET", "/contacts/301")
    check("reset restores the seed", st == 200 and body["data"]["name"] == "John Doe", body)
    st, body, _ = c.request("GET", "/booking/503")
    check("reset undoes the cancel", st == 200 and body["data"]["status"] == "ACCEPTED", body)
    st, faults, _ = ctl.request("GET", "/__fake/fault", auth=False)
    check("reset clears faults", faults["data"] == [], faults)


def test_other_fakes(tmp, ca, fakes):
    for cert, expect in (("wronghost", "match"), ("untrusted", "verify failed")):
        other = Fake(tmp, cert)
        fakes.append(other)
        try:
            Client(other.port, ca).request("GET", "/users/me")
            check("%s certificate is refused" % cert, False, "handshake succeeded")
        except ssl.SSLCertVerificationError as e:
            check("%s certificate is refused" % cert, expect in str(e), e)
        if cert == "untrusted":
            st, body, _ = Client(other.port, os.path.join(tmp, "untrusted-ca.pem")).request("GET", "/users/me")
            check("untrusted leaf verifies against its own CA", st == 200, st)
    one = Fake(tmp, extra=["--token", TOKEN])
    fakes.append(one)
    c = Client(one.port, ca)
    st, body, _ = c.request("GET", "/users/me")
    check("--token: that key is accepted", st == 200, body)
    st, body, _ = c.request("GET", "/users/me", headers={"Authorization": "Bearer calid_other_key"}, auth=False)
    check("--token: another key -> 401 Invalid API key", st == 401 and body["message"] == "Invalid API key", body)
    c.close()


def main():
    tmp = tempfile.mkdtemp(prefix="fake_calid_test.")
    fakes = []
    try:
        test_certs(tmp)
        fake = Fake(tmp)
        fakes.append(fake)
        with open(fake.port_file) as f:
            check("port file holds the port", f.read().strip() == str(fake.port))
        ca = os.path.join(tmp, "ca.pem")
        c = Client(fake.port, ca)
        ctl = Client(fake.port, ca)
        st, body, _ = Client(fake.port, ca, host="127.0.0.1").request("GET", "/users/me")
        check("certificate also valid for 127.0.0.1", st == 200, st)
        test_envelopes(c)
        for test in (test_validation, test_route_map, test_coercion_and_dropped, test_bookings, test_event_types_and_teams,
                     test_slots_and_schedules, test_users_webhooks_contacts, test_rate_limit, test_recording):
            test(c, ctl)
        test_faults(c, ctl, fake, ca)
        test_reset(c, ctl)
        test_other_fakes(tmp, ca, fakes)
        c.close()
        ctl.close()
        rc = fake.stop()
        check("SIGTERM exits 0", rc == 0, rc)
        check("stdout holds only the listening line", fake.proc.stdout.read() == "")
    except Exception as e:  # a crash is a failure, not a traceback without a summary
        import traceback
        traceback.print_exc()
        check("test ran to the end", False, repr(e))
    finally:
        for f in fakes:
            if f.proc.poll() is None:
                f.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
