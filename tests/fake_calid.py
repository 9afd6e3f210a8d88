#!/usr/bin/env python3
"""fake_calid.py - a double of the Cal ID REST API over HTTPS, for the calid-mcp tests.

Standard library only. Behaves as the API's own source reads
(/work/shared/calid-api-source.md; section numbers in the comments): the
routes of tests/fake_calid_api.py (exactly the route map of calid-api.md, the
six /contacts routes inferred), served from an in-memory, seeded state:

  - an unknown route or method: Fastify's 404,
    {"message":"Route PATCH:/x not found","error":"Not Found","statusCode":404};
  - params, body and query checked as Fastify's Ajv does (types coerced,
    defaults filled in, unknown keys dropped; the first error is a 400 such as
    "body must have required property 'start'"), then the auth hook (401
    "Bearer token required"), then the rate limit (--rate-limit), then the
    route's handler with the source's messages and envelopes:
    {success:true, data?, message?, meta?} and
    {success:false, message, error:{code, message, details?}};
  - path ids parsed as each handler does: parseInt ("12abc" is 12), or a
    params schema (integer > 0);
  - the source's hazards: PATCH /booking/:id/reschedule answers 500 after it
    rescheduled; POST /users/edit-profile/avatar refuses every upload with
    "body must be object" (both can be switched off, /__fake/hazards); POST
    /booking without timeZone books in Asia/Kolkata, without a location uses
    Google Meet, without a name books for "John Doe" (phone "+91XXXXXXXXXX");
    PATCH on event types and teams gets the create defaults filled in (a
    partial update resets length, timeZone ...).

Every API request is recorded (GET /__fake/requests) with "dropped": the keys
the API never read ("body.seatUid", "querystring.page": removed by Ajv, or a
part the route has no schema for) and "defaulted": the defaults Ajv filled in.
Faults (delays, error statuses, broken framing, resets, stalls, endless
answers, dropped requests) are set through control endpoints under /__fake/.

    python3 tests/fake_calid.py --cert CERT --key KEY [--host 127.0.0.1]
                                [--port 0] [--port-file FILE] [--token TOKEN]
                                [--rate-limit N] [--idle-timeout S]
                                [--tls-max 1.2] [--tls-min 1.3] [--verbose]

--token: only this API key is valid (401 "Invalid API key" for another
calid_ key); without it any calid_... key is. A bearer token without the
calid_ prefix is taken for a JWT and refused ("Invalid bearer token").
Prints exactly one line on stdout, "listening PORT", once the socket is bound
(and --port-file, if given, already holds the port). SIGTERM or SIGINT exits 0.

Control API (no auth):
    GET    /__fake/requests    recorded API requests, oldest first
                               (?path=PREFIX&method=M filter them)
    DELETE /__fake/requests    forget them
    POST   /__fake/reset       seeded state again; faults and recordings cleared
    POST   /__fake/fault       add a fault (an object, or a list of them)
    GET    /__fake/fault       the active faults
    DELETE /__fake/fault       clear the faults
    POST   /__fake/rate_limit  {"limit": N (0 = off), "window_ms": 60000,
                               "epoch_retry_after": false}: the API's limiter
                               (429 with Retry-After, X-RateLimit-*); true
                               reproduces its Retry-After in epoch seconds (1.6)
    GET    /__fake/hazards     the source's hazards reproduced: {"reschedule_500":
                               true, "avatar_body_schema": true, "slots_500": false}
    POST   /__fake/hazards     switch some off (or on); reset restores them all
    GET    /__fake/state       the whole state as JSON (keys starting with _
                               are the fake's bookkeeping, never on the wire)
    GET    /__fake/stats       connection, handshake, resumption, request counters
    GET    /__fake/routes      the route table: method, path, tool, evidence
    POST   /__fake/bookings    {"count": N, "notes_bytes": M}: N more upcoming
                               bookings of the user (copies of booking 503 with
                               their own ids and uids), each with notes of M
                               bytes of mixed text (quotes, backslashes, new
                               lines, accents, emoji): list answers of megabytes

Fault object: {"path": PREFIX (default: any API path), "method": M (default
any), "count": N (default 1; -1 = until cleared), "skip": N (let N matching
requests through first), "mode": MODE, ...}. Modes:
    delay            sleep delay_ms, then answer normally
    status           answer `status` (default 500) with the error envelope
                     (`message`, `code`); 429 answers as the API's limiter:
                     {"error":"Rate limit exceeded",...,"retryAfter":N} with
                     Retry-After: `retry_after` (default 30) and X-RateLimit-*;
                     `headers` adds more header fields
    nonjson          answer `status` (default 200) with an HTML page
    truncate         the real answer, but only `bytes` (default half) of the
                     body under the full Content-Length, then close (with a
                     TLS close_notify unless "close_notify": false); with
                     `stall_ms`, silence that long before the close
    reset            close without answering, with RST (SO_LINGER 0)
    reset_mid_answer the real answer's status line and headers (with its full
                     Content-Length) and only `bytes` (default half) of the
                     body, then a pause of delay_ms (default 100), then RST
                     (SO_LINGER 0, no close_notify): a reset in mid-answer
    stall            read the request, never answer; hold the connection for
                     delay_ms (default 120000) or until the peer goes away
    chunked          the real answer, Transfer-Encoding: chunked, in `chunks`
                     (default 4) pieces; "extensions": true adds chunk
                     extensions and a trailer field
    close            the real answer without Content-Length, Connection: close,
                     body delimited by closing (after a TLS close_notify)
    close_after      the real answer, normal framing and no Connection: close,
                     then the connection is closed anyway (keep-alive race)
    endless_chunked  a chunked answer that never ends: `chunk_size` (default
                     1024) bytes every `interval_ms` (default 50) until the
                     peer goes away (or `max_seconds`, default 600)
    big              a valid JSON answer of exactly `size` bytes (default
                     1 MiB); "chunked": true sends it chunked
    drop_request     on every connection, the `nth` (default 2) API request is
                     read and recorded, then the connection is closed without
                     an answer (TLS close_notify, FIN): the API closing a
                     kept-alive connection as a request arrives. The request
                     is not acted on unless "act": true (then the outcome is
                     unknown to the client). Default count -1 (until cleared);
                     `count` limits how many requests it drops in all.
"kind" is accepted as another name for "mode". `garbage_at`: N (with a mode
that gives the real answer) replaces the answer's bytes from N on with a NUL
and HTML, at the same length: content that stops being JSON at byte N.
Modes that give "the real answer" run the request (a truncated POST still
creates its booking); the others leave the state alone.

--tls-min 1.3 serves TLS 1.3 only: a TLS 1.2-only client gets a
protocol_version alert during the handshake (counted in handshake_failures).
"""

import argparse
import base64
import copy
import datetime as dt
import hashlib
import http.server
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_calid_api as spec    # noqa: E402  the route table and the Ajv-like checker
from fake_calid_api import Invalid, Outcome, js_parse_int, to_utc, type_of   # noqa: E402

try:
    from zoneinfo import ZoneInfo, available_timezones
    ZoneInfo("Europe/Berlin")
    TIME_ZONES = available_timezones()
except Exception:  # no zoneinfo module or no tz database: every zone is UTC
    ZoneInfo, TIME_ZONES = None, None

UTC = dt.timezone.utc
MAX_BODY = 10 * 1024 * 1024      # one request body (the API's multipart file limit, 1.7)
MAX_RECORDS = 10000              # recorded requests kept (oldest dropped)
MAX_SLOT_DAYS = 92               # widest /slots and /availability range computed
RATE_LIMIT = 100                 # requests a minute per key, as the API (1.6)
VERBOSE = False


def log(msg):
    if VERBOSE:
        sys.stderr.write("fake_calid: %s\n" % msg)
        sys.stderr.flush()


# --------------------------------------------------------------------------
# Answers: the API's envelopes (1.3, 1.4) and Fastify's own bodies
# --------------------------------------------------------------------------

class ApiError(Exception):
    """An error answer: status, JSON body, extra header fields."""

    def __init__(self, status, body, headers=()):
        super().__init__(body.get("message") if isinstance(body, dict) else body)
        self.status, self.body, self.headers = status, body, list(headers)


def envelope_error(status, message, code="INTERNAL_ERROR", details=None):
    """ResponseFormatter.error(): code INTERNAL_ERROR unless a helper set one."""
    err = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return ApiError(status, {"success": False, "message": message, "error": err})


def not_found(message):
    return envelope_error(404, message, "NOT_FOUND")


def forbidden(message):
    return envelope_error(403, message, "FORBIDDEN")


def conflict(message):
    return envelope_error(409, message, "CONFLICT")


def bad_request(message):
    """error(reply, msg, 400): the code stays INTERNAL_ERROR (1.4)."""
    return envelope_error(400, message)


def thrown(message, status=500, code=None):
    """An error the handler throws and nobody catches: Fastify's default body."""
    body = {"statusCode": status, "error": REASONS.get(status, "Error"), "message": message}
    if code:
        body["code"] = code
    return ApiError(status, body)


def prisma_nan(model, op):
    """Prisma refusing the NaN that parseInt gave for a non-numeric id."""
    return thrown("Invalid `prisma.%s.%s()` invocation: Argument `id`: Invalid value provided. "
                  "Expected Int, provided NaN." % (model, op))


def zod_issues(issues):
    """A thrown ZodError: its message is the issues as indented JSON."""
    return json.dumps(issues, indent=2)


UNSET = object()


def success(data=UNSET, message=None, status=200, meta=None):
    out = {"success": True}
    if data is not UNSET:
        out["data"] = data
    if message is not None:
        out["message"] = message
    if meta is not None:
        out["meta"] = meta
    return status, out


def paginated(items, page, limit, total, message):
    meta = {"pagination": {"page": page, "limit": limit, "total": total,
                           "totalPages": int(math.ceil(total / limit))}}
    return success(items, message, meta=meta)


def page_of(items, q):
    return items[(q["page"] - 1) * q["limit"]: q["page"] * q["limit"]]


# --------------------------------------------------------------------------
# Small utilities: times, uids
# --------------------------------------------------------------------------

def iso_z(t):
    """2026-01-05T09:00:00.000Z, as JavaScript's toISOString()."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def stored_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def js_date(s):
    """new Date(s) / dayjs(s) for the strings a client sends: an ISO date or
    date-time (no offset = UTC, the server's zone); None when invalid."""
    if not isinstance(s, str):
        return None
    t = s.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
        t += "T00:00:00Z"
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:?\d{2})?", t, re.I)
    if not m:
        return None
    zone = m.group(3) or "Z"
    try:
        return to_utc("%sT%s%s" % (m.group(1), m.group(2) if m.group(2).count(":") == 2 else m.group(2) + ":00",
                                   zone))
    except ValueError:
        return None


def zone(name):
    if ZoneInfo is None or name in (None, "", "UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except Exception:
        return UTC


def valid_zone(name):
    return TIME_ZONES is None or name in TIME_ZONES or name == "UTC"


def minutes_of_day(iso):
    """A Prisma @db.Time value ("1970-01-01T09:00:00.000Z") -> minutes."""
    t = stored_time(iso)
    return t.hour * 60 + t.minute


def db_time(minutes):
    return "1970-01-01T%02d:%02d:00.000Z" % divmod(minutes, 60)


def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def stable_uid(kind, n):
    """A Cal.com-looking 22-character uid that is the same on every run."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    x = int.from_bytes(hashlib.sha256(("%s-%s" % (kind, n)).encode()).digest(), "big")
    out = []
    for _ in range(22):
        x, r = divmod(x, 62)
        out.append(alphabet[r])
    return "".join(out)


def uuid4():
    h = secrets.token_hex(16)
    return "%s-%s-4%s-%s%s-%s" % (h[:8], h[8:12], h[13:16], "89ab"[int(h[16], 16) % 4], h[17:20], h[20:32])


def public(rec):
    """A stored record without the fake's own bookkeeping (keys with _)."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def pick(rec, fields):
    return {k: rec.get(k) for k in fields}


# --------------------------------------------------------------------------
# Seed data. Times are relative to the moment of the (re)seed.
# --------------------------------------------------------------------------

USERS = [
    # id, username, name, email, timeZone
    (1, "alex", "Alex Morgan", "alex@example.com", "Europe/Berlin"),
    (2, "jordan", "Jordan Lee", "jordan.lee@example.com", "America/New_York"),
    (3, "sam", "Sam Okafor", "sam.okafor@example.com", "Europe/London"),
    (4, "taylor", "Taylor Kim", "taylor.kim@example.com", "Asia/Seoul"),
]
ME = 1      # every accepted token is Alex's

EVENT_TYPE_EXTRA_COLUMNS = {"profileId": None, "lockTimeZoneToggleOnBookingPage": False,
                            "lockedTimeZone": None, "secondaryEmailId": None}


def event_type_record(etid, fields, user_id, team_id, stamp, hosts=()):
    """A stored event type: the create defaults, then the given fields."""
    rec = {"id": etid}
    for k, s in spec.EVENT_TYPE_FIELDS.items():
        rec[k] = copy.deepcopy(s.get("default"))
    rec.update(EVENT_TYPE_EXTRA_COLUMNS)
    rec.update(fields)
    rec.update(userId=user_id, teamId=team_id, createdDate=stamp, updatedDate=stamp, _hosts=list(hosts))
    return rec


class SeedClock:
    """Seeded times, relative to the moment of the (re)seed."""

    def __init__(self, now):
        self.now = now
        self.today = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def at(self, days, h, m=0):
        return self.today + dt.timedelta(days=days, hours=h, minutes=m)

    def stamp(self, days):
        return iso_z(self.at(days, 8, 0))


def seed_users(clk):
    users = {}
    for uid, username, name, email, tz in USERS:
        users[uid] = {
            "id": uid, "username": username, "name": name, "email": email, "role": "USER",
            "timeZone": tz, "weekStart": "Monday", "locale": "en", "timeFormat": 24,
            "defaultScheduleId": {1: 1, 2: 3, 3: 4, 4: 5}[uid], "avatarUrl": None, "bio": "",
            "brandColor": "#292929", "darkBrandColor": "#fafafa", "theme": None, "appTheme": None,
            "allowSEOIndexing": True, "hideBranding": False, "allowDynamicBooking": True,
            "receiveMonthlyDigestEmail": False, "completedOnboarding": True, "disableImpersonation": False,
            "metadata": {}, "travelSchedules": [], "secondaryEmails": [],
            "createdAt": clk.stamp(-400 + uid), "emailVerified": clk.stamp(-400 + uid),
        }
    users[1]["bio"] = "Product consultant. Book a slot that suits you."
    return users


def seed_schedules():
    def block(aid, sched, days, start_h, end_h):
        return {"id": aid, "userId": None, "eventTypeId": None, "days": days,
                "startTime": db_time(start_h * 60), "endTime": db_time(end_h * 60), "date": None,
                "scheduleId": sched}

    def schedule(sid, user, name, tz, days, start_h, end_h):
        return {"id": sid, "userId": user, "name": name, "timeZone": tz,
                "availability": [block(10 + sid, sid, days, start_h, end_h)]}

    return [schedule(1, 1, "Working hours", "Europe/Berlin", [1, 2, 3, 4, 5], 9, 17),
            schedule(2, 1, "Evenings", "Europe/Berlin", [2, 4], 18, 20),
            schedule(3, 2, "Jordan's hours", "America/New_York", [1, 2, 3, 4, 5], 9, 17),
            schedule(4, 3, "Sam's hours", "Europe/London", [1, 2, 3, 4], 8, 16),
            schedule(5, 4, "Taylor's hours", "Asia/Seoul", [1, 2, 3, 4, 5], 10, 18)]


def seed_event_types(clk):
    def et(etid, title, length, description, location, position, team_id=None, hosts=(), **extra):
        fields = dict(title=title, slug=slugify(title), length=length, description=description,
                      locations=[location], position=position, minimumBookingNotice=0)
        fields["metadata"] = {}
        fields.update(extra)
        return event_type_record(etid, fields, None if team_id else ME, team_id, clk.stamp(-300), hosts)

    return [
        et(101, "Intro call", 15, "A quick 15-minute introduction to see if we are a good fit.",
           {"type": "integrations:daily"}, 3),
        et(102, "Consultation", 30, "A 30-minute consultation about your project.",
           {"type": "integrations:google:meet"}, 2),
        et(103, "Workshop", 60, "A one-hour hands-on workshop.",
           {"type": "inPerson", "address": "Torstrasse 1, 10119 Berlin"}, 1, scheduleId=1),
        et(104, "Strategy session", 30, "30 or 60 minutes, as you need.",
           {"type": "integrations:daily"}, 4, metadata={"multipleDuration": [30, 60]}),
        et(201, "Sales demo", 30, "See the product in action with our sales team.",
           {"type": "integrations:daily"}, 1, team_id=21, hosts=(1, 2, 3), schedulingType="ROUND_ROBIN"),
        et(202, "Team sync", 45, "Weekly sync of the sales team.",
           {"type": "integrations:google:meet"}, 2, team_id=21, hosts=(1, 2), schedulingType="COLLECTIVE"),
        et(203, "Support session", 20, "Get help from the support crew.",
           {"type": "integrations:daily"}, 1, team_id=22, hosts=(1, 3), schedulingType="ROUND_ROBIN"),
        et(204, "Partner onboarding", 45, "Onboarding for new partners.",
           {"type": "integrations:daily"}, 1, team_id=23, hosts=(2,), schedulingType="ROUND_ROBIN"),
    ]


PEOPLE = {
    "john": ("John Doe", "john.doe@example.com", "America/New_York"),
    "maria": ("Maria Garcia", "maria.garcia@example.org", "Europe/Madrid"),
    "priya": ("Priya Patel", "priya@patel.example", "Europe/London"),
    "chen": ("Chen Wei", "chen.wei@example.net", "Asia/Shanghai"),
    "lena": ("Lena Fischer", "lena.fischer@northwind.example", "Europe/Berlin"),
}


def seed_bookings(clk, users, event_types):
    et_by_id = {e["id"]: e for e in event_types}

    def booking(bid, etid, who, start, status, created_days, host=ME, **extra):
        e = et_by_id[etid]
        name, email, tz = PEOPLE[who]
        loc = e["locations"][0]
        b = new_booking(bid, e, users[host], start, start + dt.timedelta(minutes=e["length"]),
                        {"name": name, "email": email, "guests": []}, tz, "en",
                        loc.get("address") or loc["type"], clk.stamp(created_days))
        b.update(extra, status=status)
        return b

    at = clk.at     # odd minutes keep the seeded bookings off the grid that tests usually pick
    bookings = [
        booking(501, 101, "john", at(-7, 9, 15), "ACCEPTED", -12),
        booking(502, 102, "maria", at(-2, 13, 45), "ACCEPTED", -9),
        booking(503, 102, "john", at(1, 10, 15), "ACCEPTED", -3),
        booking(504, 103, "priya", at(3, 13, 15), "ACCEPTED", -5),
        booking(505, 101, "maria", at(2, 11, 45), "CANCELLED", -4, _cancellationReason="Conflict"),
        booking(506, 102, "chen", at(5, 8, 45), "PENDING", -1),
        booking(507, 101, "priya", at(8, 14, 45), "ACCEPTED", -1),
        booking(508, 201, "lena", at(4, 9, 30), "ACCEPTED", -2),
        booking(509, 204, "lena", at(4, 15, 30), "ACCEPTED", -2, host=2),   # Jordan's: not ours
    ]
    bookings[1]["responses"]["notes"] = "Please bring last quarter's numbers."
    return bookings


def seed_contacts(clk):
    def contact(cid, name, email, phone, notes, created, updated):
        return {"id": cid, "name": name, "email": email, "phone": phone, "notes": notes,
                "createdAt": clk.stamp(created), "updatedAt": clk.stamp(updated), "_userId": ME}

    return [
        contact(301, "John Doe", "john.doe@example.com", "+1 415 555 0100",
                "Met at SaaS Summit; interested in the annual plan.", -30, -3),
        contact(302, "Maria Garcia", "maria.garcia@example.org", "+34 600 123 456", "Prefers morning meetings.",
                -25, -9),
        contact(303, "Priya Patel", "priya@patel.example", "+44 20 7946 0958", "", -20, -5),
        contact(304, "Chen Wei", "chen.wei@example.net", "", "Referred by Maria.", -6, -1),
        contact(305, "Sam Rivera", "sam.rivera@example.com", "+1 212 555 0199", "No meetings yet.", -2, -2),
    ]


def seed_teams(clk):
    """-> (teams, memberships). Alex owns 21 and 22 and is a MEMBER of 23."""
    def team(tid, name, tz, private, created):
        rec = {"id": tid}
        for k, s in spec.TEAM_FIELDS.items():
            rec[k] = copy.deepcopy(s.get("default"))
        rec.update(name=name, slug=slugify(name), bio="The %s team." % name, timeZone=tz,
                   isTeamPrivate=private, metadata={}, createdAt=clk.stamp(created), updatedAt=clk.stamp(created))
        return rec

    def membership(mid, team_id, user, role, accepted):
        return {"id": mid, "teamId": team_id, "userId": user, "acceptedInvitation": accepted, "role": role,
                "impersonation": True, "createdAt": clk.stamp(-100), "updatedAt": clk.stamp(-100)}

    teams = [team(21, "Acme Sales", "Europe/Berlin", False, -200),
             team(22, "Support Crew", "Europe/London", True, -150),
             team(23, "Partner Guild", "America/New_York", False, -120)]
    memberships = [
        membership(41, 21, 1, "OWNER", True), membership(42, 21, 2, "ADMIN", True),
        membership(43, 21, 3, "MEMBER", True), membership(44, 21, 4, "MEMBER", False),
        membership(45, 22, 1, "OWNER", True), membership(46, 22, 3, "MEMBER", True),
        membership(47, 23, 2, "OWNER", True), membership(48, 23, 1, "MEMBER", True),
    ]
    return teams, memberships


def seed_webhooks():
    def webhook(n, url, triggers, active, secret=None):
        return {"id": "6a1f0c2e-5b7d-4c11-9e0a-%012d" % n, "eventTriggers": triggers, "subscriberUrl": url,
                "active": active, "payloadTemplate": None, "platformOAuthClientId": None, "secret": secret,
                "_userId": ME}

    return [webhook(601, "https://hooks.example.com/calid/bookings",
                    ["BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_RESCHEDULED"], True),
            webhook(602, "https://hooks.slack.example/services/T0000/B0000/XXXXXXXX", ["MEETING_ENDED"], False,
                    "s3cr3t")]


def seed_reserved_slots(clk, event_types):
    lengths = {e["id"]: e["length"] for e in event_types}

    def reserved(n, etid, start, user=ME):
        end = start + dt.timedelta(minutes=lengths[etid])
        return {"id": n, "eventTypeId": etid, "userId": user, "slotUtcStartDate": iso_z(start),
                "slotUtcEndDate": iso_z(end), "uid": "5f1c2d3e-0000-4000-8000-%012d" % n,
                "releaseAt": iso_z(clk.now + dt.timedelta(minutes=5)), "isSeat": False, "_minutes": 5,
                "_duration": lengths[etid]}

    return [reserved(1, 102, clk.at(6, 9, 0)), reserved(2, 101, clk.at(6, 10, 0)),
            reserved(3, 101, clk.at(6, 11, 0), user=2)]


def seed_state(now):
    clk = SeedClock(now)
    users, event_types = seed_users(clk), seed_event_types(clk)
    teams, memberships = seed_teams(clk)
    return {
        "now": iso_z(now), "users": users, "schedules": seed_schedules(), "eventTypes": event_types,
        "bookings": seed_bookings(clk, users, event_types), "contacts": seed_contacts(clk), "teams": teams,
        "memberships": memberships, "webhooks": seed_webhooks(),
        "reservedSlots": seed_reserved_slots(clk, event_types), "nextId": 1000,
    }


def new_booking(bid, et, host, start, end, responses, tz, language, location, created, metadata=None):
    """A stored booking, as handleNewBooking makes it."""
    attendee = responses["name"] if isinstance(responses.get("name"), str) else \
        " ".join(x for x in (responses.get("name") or {}).values() if x) or responses["email"]
    return {
        "id": bid, "uid": stable_uid("booking", "%s-%s" % (bid, created)),
        "title": "%s between %s and %s" % (et["title"], host["name"], attendee),
        "description": responses.get("notes") or "", "customInputs": {},
        "startTime": iso_z(start), "endTime": iso_z(end), "createdAt": created, "updatedAt": created,
        "metadata": metadata or {}, "responses": copy.deepcopy(responses), "recurringEventId": None,
        "location": location, "status": "PENDING" if et["requiresConfirmation"] else "ACCEPTED",
        "paid": False, "fromReschedule": None, "rescheduled": False, "isRecorded": False,
        "userPrimaryEmail": host["email"],
        "user": {"id": host["id"], "name": host["name"], "email": host["email"]},
        "attendees": [{"name": attendee, "email": responses["email"], "timeZone": tz, "locale": language}]
        + [{"name": g, "email": g, "timeZone": tz, "locale": language} for g in responses.get("guests") or []],
        "references": [], "payment": [], "seatsReferences": [], "assignmentReason": [],
        "_userId": host["id"], "_eventTypeId": et["id"], "_cancellationReason": None,
        "_rejectionReason": None,
    }


# --------------------------------------------------------------------------
# The API: one request's journey, as Fastify runs it
# --------------------------------------------------------------------------

class Request:
    """What a route handler sees: params as strings (or checked, where the
    route has a params schema), the checked query and body."""

    def __init__(self, route, params, query, body, headers, raw_body):
        self.route, self.params, self.q, self.body = route, params, query, body
        self.headers, self.raw_body = headers, raw_body


class Answer:
    def __init__(self, status, body, headers=(), dropped=(), defaulted=()):
        self.status, self.body, self.headers = status, body, list(headers)
        self.dropped, self.defaulted = list(dropped), list(defaulted)


def query_object(query):
    """Node's querystring.parse: repeated keys give an array."""
    out = {}
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        out[k] = out[k] + [v] if isinstance(out.get(k), list) else ([out[k], v] if k in out else v)
    return out


def parse_body(method, headers, raw):
    """Fastify 4's body parsing (handleRequest, contentTypeParser): the body,
    or None for "undefined". DELETE is parsed only with a Content-Type and a
    length; POST, PUT and PATCH whenever they carry one."""
    if method in ("GET", "HEAD"):
        return None
    ctype = headers.get("content-type")
    framed = "content-length" in headers or "transfer-encoding" in headers
    if method in ("DELETE", "OPTIONS") and (ctype is None or not framed):
        return None
    if ctype is None:
        if "transfer-encoding" not in headers and headers.get("content-length", "0") == "0":
            return None
        raise envelope_error(415, "Unsupported Media Type: ", "FST_ERR_CTP_INVALID_MEDIA_TYPE")
    media = ctype.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return None     # @fastify/multipart, attachFieldsToBody false: the handler reads the parts
    if not media.startswith("application/json"):
        raise envelope_error(415, "Unsupported Media Type: %s" % ctype, "FST_ERR_CTP_INVALID_MEDIA_TYPE")
    if not raw:
        raise envelope_error(400, "Body cannot be empty when content-type is set to 'application/json'",
                             "FST_ERR_CTP_EMPTY_JSON_BODY")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise envelope_error(400, "Body is not valid JSON but content-type is set to 'application/json'",
                             "FST_ERR_CTP_INVALID_JSON_BODY")


def ignored_keys(where, value):
    """What a route without a schema for this part never reads."""
    if isinstance(value, dict):
        return ["%s.%s" % (where, k) for k in value]
    return [] if value in (None, "", {}) else [where]


class RateLimiter:
    """@unkey/ratelimit as the API uses it: `limit` a window per identifier."""

    def __init__(self, limit=0, window_s=60.0, epoch_retry_after=False):
        self.lock = threading.Lock()
        self.configure(limit, window_s, epoch_retry_after)

    def configure(self, limit, window_s=60.0, epoch_retry_after=False):
        with self.lock:
            self.limit, self.window_s, self.epoch = limit, window_s, epoch_retry_after
            self.windows = {}

    def take(self, ident):
        """-> header fields for an allowed request; ApiError 429 otherwise."""
        with self.lock:
            if not self.limit:
                return []
            now = time.time()
            start, used = self.windows.get(ident, (now, 0))
            if now - start >= self.window_s:
                start, used = now, 0
            reset_ms = (start + self.window_s - now) * 1000
            if used >= self.limit:
                retry = int(math.ceil((time.time() * 1000 + reset_ms) / 1000)) if self.epoch else \
                    max(1, int(math.ceil(reset_ms / 1000)))
                headers = [("X-RateLimit-Limit", str(self.limit)), ("X-RateLimit-Remaining", "0"),
                           ("X-RateLimit-Reset", iso_z(dt.datetime.now(UTC) + dt.timedelta(milliseconds=reset_ms))),
                           ("Retry-After", str(retry))]
                raise ApiError(429, rate_limited_body(retry), headers)
            self.windows[ident] = (start, used + 1)
            return [("X-RateLimit-Limit", str(self.limit)), ("X-RateLimit-Remaining", str(self.limit - used - 1))]


def rate_limited_body(retry_after):
    return {"error": "Rate limit exceeded", "message": "Too many requests. Please try again later.",
            "retryAfter": retry_after}


# The API's answers that its own source shows to be broken, reproduced unless
# switched off (POST /__fake/hazards) so that a test can also see the intended answer.
HAZARDS = {
    "reschedule_500": True,         # PATCH /booking/:id/reschedule: 500 after rescheduling (2.16)
    "avatar_body_schema": True,     # POST /users/edit-profile/avatar: 400 "body must be object" (4.45)
    "slots_500": False,             # GET /slots: a first reply.send that fails its schema (4.38); off,
                                    # as the version live is newer than those read (UNVERIFIED)
}


class ApiCore:
    """One request's journey and the lookups over the state; the routes are the
    mixins below, one per section of calid-api-source.md."""

    def __init__(self, token=None, rate_limit=0):
        self.lock = threading.RLock()
        self.token = token                  # --token: only this API key; else any calid_... key
        self.limiter = RateLimiter(rate_limit)
        self.hazards = dict(HAZARDS)
        self.reset()

    def reset(self):
        with self.lock:
            self.s = seed_state(dt.datetime.now(UTC))
            self.hazards = dict(HAZARDS)
        self.limiter.configure(self.limiter.limit, self.limiter.window_s, self.limiter.epoch)

    def snapshot(self):
        with self.lock:
            s = copy.deepcopy(self.s)
        s["users"] = [s["users"][k] for k in sorted(s["users"])]
        return s

    def handle(self, method, path, target, query, headers, raw_body):
        """-> Answer. Fastify's order: route, body parsing, params, body and
        query checks, then the auth and rate-limit hooks, then the handler."""
        route, params = spec.match_route("GET" if method == "HEAD" else method, path)
        if route is None:
            return Answer(404, {"message": "Route %s:%s not found" % (method, target),
                                "error": "Not Found", "statusCode": 404})
        outcome, rate_headers = Outcome(), []
        try:
            body = parse_body(method, headers, raw_body)
            q = query_object(query)
            try:
                if route.params:
                    params = spec.validate(route.params, params, "params", outcome)
                if route.body and (not route.multipart or self.hazards["avatar_body_schema"]):
                    # the avatar route's JSON schema meets a multipart body that the parser
                    # left undefined: "body must be object" before the handler runs (4.45)
                    body = spec.validate(route.body, body, "body", outcome)
                elif not route.multipart:
                    outcome.dropped += ignored_keys("body", body)
                if route.query:
                    q = spec.validate(route.query, q, "querystring", outcome)
                else:
                    outcome.dropped += ignored_keys("querystring", q)
            except Invalid as e:
                raise envelope_error(400, str(e), "VALIDATION_ERROR")
            rate_headers = self.limiter.take("apikey:" + self.authenticate(headers)[:255])
            with self.lock:
                status, out = getattr(self, "r_" + route.tool)(Request(route, params, q, body, headers, raw_body))
            return Answer(status, out, rate_headers, outcome.dropped, outcome.defaulted)
        except ApiError as e:   # the limiter's headers were set by its hook, before the handler failed
            return Answer(e.status, e.body, e.headers + rate_headers, outcome.dropped, outcome.defaulted)

    def authenticate(self, headers):
        """AuthGuards.authenticateFlexible (1.2): an API key or a JWT."""
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise envelope_error(401, "Bearer token required", "UNAUTHORIZED")
        token = auth[len("Bearer "):]
        if not (token.startswith("calid_") and len(token) > len("calid_")):
            raise envelope_error(401, "Invalid bearer token", "UNAUTHORIZED")
        if self.token is not None and token != self.token:
            raise envelope_error(401, "Invalid API key", "UNAUTHORIZED")
        return token

    # ---- lookups over the state ----

    def now(self):
        return dt.datetime.now(UTC)

    def stamp(self):
        return iso_z(self.now())

    def new_id(self):
        self.s["nextId"] += 1
        return self.s["nextId"]

    def user(self, uid):
        return self.s["users"].get(uid)

    def me(self):
        return self.s["users"][ME]

    def role_in(self, team_id, user=ME):
        for m in self.s["memberships"]:
            if m["teamId"] == team_id and m["userId"] == user and m["acceptedInvitation"]:
                return m["role"]
        return None

    def event_type(self, etid):
        return next((e for e in self.s["eventTypes"] if e["id"] == etid), None)

    def schedule(self, sid):
        return next((s for s in self.s["schedules"] if s["id"] == sid), None)

    def booking_visible(self, bid):
        """bookingExists (2): the caller's booking, or a team booking of a
        team the caller is ADMIN or OWNER of."""
        for b in self.s["bookings"]:
            if b["id"] == bid:
                et = self.event_type(b["_eventTypeId"])
                if et and et["teamId"]:
                    return b if self.role_in(et["teamId"]) in ("ADMIN", "OWNER") else None
                return b if b["_userId"] == ME else None
        return None

    def schedule_for(self, et, user_id=ME):
        sid = (et or {}).get("scheduleId") or self.user(user_id)["defaultScheduleId"]
        return self.schedule(sid) or next((s for s in self.s["schedules"] if s["userId"] == user_id), None)

    def busy(self, user_id=ME, exclude=None):
        return [(stored_time(b["startTime"]), stored_time(b["endTime"]), b) for b in self.s["bookings"]
                if b["status"] in ("ACCEPTED", "PENDING") and b["_userId"] == user_id and b is not exclude]

    def is_free(self, user_id, start, end, exclude=None):
        return not any(s < end and start < e for s, e, _ in self.busy(user_id, exclude))

    def working_ranges(self, sched, start, end):
        """Concrete [s, e) UTC ranges of the schedule's hours that meet [start, end)."""
        tz = zone(sched["timeZone"])
        out = []
        d = start.astimezone(tz).date() - dt.timedelta(days=1)
        last = end.astimezone(tz).date() + dt.timedelta(days=1)
        while d <= last:
            weekday = d.isoweekday() % 7    # Cal.com: 0 = Sunday
            base = dt.datetime(d.year, d.month, d.day, tzinfo=tz)
            for blk in sched["availability"]:
                if weekday in blk["days"]:
                    s = (base + dt.timedelta(minutes=minutes_of_day(blk["startTime"]))).astimezone(UTC)
                    e = (base + dt.timedelta(minutes=minutes_of_day(blk["endTime"]))).astimezone(UTC)
                    if s < end and start < e:
                        out.append((max(s, start), min(e, end)))
            d += dt.timedelta(days=1)
        return sorted(out)

    def within_hours(self, et, user_id, start, end):
        sched = self.schedule_for(et, user_id)
        return sched is not None and any(s <= start and end <= e for s, e in self.working_ranges(sched, start, end))


class AvailabilityRoutes:
    """Availability (3.1-3.4): rows of a schedule, times as Prisma @db.Time."""

    def r_get_availability(self, req):
        start, end = js_date(req.q["dateFrom"]), js_date(req.q["dateTo"])
        if start is None or end is None:
            raise thrown("Invalid time value")
        if re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", req.q["dateTo"]):
            end += dt.timedelta(days=1)         # a bare dateTo takes in its whole day
        end = min(end, start + dt.timedelta(days=MAX_SLOT_DAYS))
        sched = self.schedule_for(self.event_type(req.q["eventTypeId"]))
        ranges = [{"start": iso_z(s), "end": iso_z(e)} for s, e in self.working_ranges(sched, start, end)]
        busy = [{"start": iso_z(s), "end": iso_z(e), "title": b["title"]}
                for s, e, b in sorted(self.busy(), key=lambda x: x[0]) if s < end and start < e]
        working = [{"days": a["days"], "startTime": minutes_of_day(a["startTime"]),
                    "endTime": minutes_of_day(a["endTime"]), "userId": ME} for a in sched["availability"]]
        return success({"busy": busy, "timeZone": sched["timeZone"], "dateRanges": ranges,
                        "oooExcludedDateRanges": ranges, "workingHours": working, "dateOverrides": [],
                        "currentSeats": None, "datesOutOfOffice": {}}, "User availability retrieved")

    def availability_row(self, a):
        sched = self.schedule(a["scheduleId"])
        return dict(a, Schedule={"userId": sched["userId"] if sched else None})

    def availability_write(self, body, row):
        """What Prisma makes of the body: Int[] days, @db.Time times, an
        existing schedule (no ownership check, hazard 10)."""
        if not all(type_of(d) == "number" and d % 1 == 0 for d in body["days"]):
            raise thrown("Invalid value for argument `days`: Expected Int.")
        for k in ("startTime", "endTime"):
            if not spec.is_date_time(body[k]):
                raise thrown("Invalid value for argument `%s`: input contains invalid characters. "
                             "Expected ISO-8601 DateTime." % k)
        if not isinstance(body["scheduleId"], int) or self.schedule(body["scheduleId"]) is None:
            raise thrown("Foreign key constraint failed on the field: `Availability_scheduleId_fkey (index)`")
        old = self.schedule(row.get("scheduleId")) if row.get("scheduleId") else None
        t = {k: to_utc(body[k]) for k in ("startTime", "endTime")}
        row.update(days=list(body["days"]), scheduleId=body["scheduleId"],
                   startTime=db_time(t["startTime"].hour * 60 + t["startTime"].minute),
                   endTime=db_time(t["endTime"].hour * 60 + t["endTime"].minute))
        if old is not None and old["id"] != row["scheduleId"]:
            old["availability"].remove(row)
        if row not in self.schedule(row["scheduleId"])["availability"]:
            self.schedule(row["scheduleId"])["availability"].append(row)
        return row

    def r_create_availability(self, req):
        for i, d in enumerate(req.body["days"]):         # availabilityCreationSchema.parse, uncaught (3.2)
            if type_of(d) != "number":
                raise thrown(zod_issues([{"code": "invalid_type", "expected": "number", "received": type_of(d),
                                          "path": ["days", i], "message": "Expected number, received %s" % type_of(d)}]))
        row = {"id": self.new_id(), "userId": None, "eventTypeId": None, "date": None}
        return success(self.availability_row(self.availability_write(req.body, row)), "Availability created")

    def own_availability(self, raw_id):
        aid = js_parse_int(raw_id)
        if aid != aid:
            raise prisma_nan("availability", "findFirst")
        for s in self.s["schedules"]:
            for a in s["availability"]:
                if a["id"] == aid and s["userId"] == ME:
                    return s, a
        raise forbidden("Forbidden")

    def r_update_availability(self, req):
        _, row = self.own_availability(req.params["availability"])
        return success(self.availability_row(self.availability_write(req.body, row)), "Availability updated")

    def r_delete_availability(self, req):
        sched, row = self.own_availability(req.params["availability"])
        sched["availability"].remove(row)
        return success(message="Availability deleted")


class ScheduleRoutes:
    """Schedules (3.5-3.8)."""

    @staticmethod
    def schedule_view(s):
        return {"id": s["id"], "userId": s["userId"], "name": s["name"], "availability": s["availability"],
                "timeZone": s["timeZone"]}

    def r_get_schedule(self, req):
        return success([self.schedule_view(s) for s in self.s["schedules"] if s["userId"] == ME],
                       "User schedules retrieved")

    def r_create_schedule(self, req):
        if not valid_zone(req.body["timeZone"]):
            raise thrown(zod_issues([{"code": "custom", "path": ["timeZone"],
                                      "message": "Expected one of the following: Africa/Abidjan, Africa/Accra, "
                                                 "Africa/Addis_Ababa, ... (the tzdata zone names)"}]))
        sid = self.new_id()
        sched = {"id": sid, "userId": ME, "name": req.body["name"], "timeZone": req.body["timeZone"],
                 "availability": [{"id": self.new_id(), "userId": None, "eventTypeId": None,
                                   "days": [1, 2, 3, 4, 5], "startTime": db_time(9 * 60),
                                   "endTime": db_time(17 * 60), "date": None, "scheduleId": sid}]}
        self.s["schedules"].append(sched)
        return success(self.schedule_view(sched), "Schedule created")

    def own_schedule(self, raw_id):
        sid = js_parse_int(raw_id)
        if sid != sid:
            raise prisma_nan("schedule", "findFirst")
        s = self.schedule(sid)
        if s is None or s["userId"] != ME:
            raise forbidden("Forbidden")
        return s

    def r_update_schedule(self, req):
        s = self.own_schedule(req.params["schedule"])
        s.update(name=req.body["name"], timeZone=req.body["timeZone"])     # no zone check on update
        return success(self.schedule_view(s), "Schedule updated")

    def r_delete_schedule(self, req):
        s = self.own_schedule(req.params["schedule"])
        for u in self.s["users"].values():
            if u["defaultScheduleId"] == s["id"]:
                u["defaultScheduleId"] = None
        self.s["schedules"].remove(s)
        return success(message="Schedule deleted")


class BookingRoutes:
    """Bookings (2.9-2.16)."""

    def booking_event_type_view(self, et):
        if et is None:
            return None
        team = next((t for t in self.s["teams"] if t["id"] == et["teamId"]), None)
        view = pick(et, ("id", "title", "slug", "price", "currency", "recurringEvent", "metadata",
                         "schedulingType", "seatsShowAttendees", "length", "customReplyToEmail",
                         "allowReschedulingPastBookings", "hideOrganizerEmail", "disableCancelling",
                         "disableRescheduling", "eventTypeColor"))
        view["eventName"] = None
        view["hosts"] = [{"user": {"id": h, "email": self.user(h)["email"]}} for h in et["_hosts"]]
        view["calIdTeam"] = pick(team, ("id", "name", "slug")) if team else None
        return view

    def booking_view(self, b):
        out = public(b)
        out["eventType"] = self.booking_event_type_view(self.event_type(b["_eventTypeId"]))
        return out

    BOOKING_BY_ID_FIELDS = ("id", "title", "description", "customInputs", "startTime", "endTime", "createdAt",
                            "updatedAt", "metadata", "uid", "recurringEventId", "location", "status", "paid",
                            "fromReschedule", "rescheduled", "isRecorded", "eventType", "user")

    def booking_filter(self, q, now):
        status = q["status"]
        since = {k: to_utc(q[k]) for k in ("afterStartDate", "beforeEndDate", "afterUpdatedDate",
                                             "beforeUpdatedDate", "afterCreatedDate", "beforeCreatedDate")
                 if k in q}

        def keep(b):
            start, end = stored_time(b["startTime"]), stored_time(b["endTime"])
            live = b["status"] not in ("CANCELLED", "REJECTED")
            if not {"upcoming": live and end >= now, "recurring": live and end >= now and b["recurringEventId"],
                    "past": live and end <= now, "cancelled": not live,
                    "unconfirmed": b["status"] == "PENDING" and end >= now}[status]:
                return False
            checks = [("afterStartDate", start, 1), ("beforeEndDate", end, -1),
                      ("afterUpdatedDate", stored_time(b["updatedAt"]), 1),
                      ("beforeUpdatedDate", stored_time(b["updatedAt"]), -1),
                      ("afterCreatedDate", stored_time(b["createdAt"]), 1),
                      ("beforeCreatedDate", stored_time(b["createdAt"]), -1)]
            if any(k in since and (v < since[k] if sign > 0 else v > since[k]) for k, v, sign in checks):
                return False
            et = self.event_type(b["_eventTypeId"])
            if "eventTypeIds" in q and b["_eventTypeId"] not in q["eventTypeIds"]:
                return False
            if "teamIds" in q and (et is None or et["teamId"] not in q["teamIds"]):
                return False
            att = b["attendees"]
            if "attendeeEmail" in q and not any(a["email"].lower() == q["attendeeEmail"].lower() for a in att):
                return False
            if "attendeeName" in q and not any(q["attendeeName"].lower() in a["name"].lower() for a in att):
                return False
            return "bookingUid" not in q or b["uid"] == q["bookingUid"]
        return keep

    def r_get_booking(self, req):
        q, now = req.q, self.now()
        mine = [b for b in self.s["bookings"] if self.booking_visible(b["id"])]
        items = [b for b in mine if self.booking_filter(q, now)(b)]
        order = [("sortStart", "startTime"), ("sortEnd", "endTime"), ("sortCreated", "createdAt")]
        # sortUpdated is read as sortUpdatedAt by the repository: it has no effect (2.9)
        chosen = [(q[k], f) for k, f in order if k in q]
        if not chosen:
            chosen = [("desc" if q["status"] in ("past", "cancelled") else "asc", "startTime")]
        for direction, field in reversed(chosen):
            items.sort(key=lambda b: b[field], reverse=direction == "desc")
        return paginated([self.booking_view(b) for b in page_of(items, q)], q["page"], q["limit"], len(items),
                         "User bookings retrieved")

    def r_get_booking_by_id(self, req):
        raw = req.params["id"]
        bid = js_parse_int(raw)
        if bid != bid:
            raise bad_request("Validation failed: Expected number, received nan")
        if bid <= 0:
            raise bad_request("Validation failed: Number must be greater than 0")
        b = self.booking_visible(bid)
        if b is None:
            raise not_found("Booking not found or doesn't belong to the user")
        view = pick(self.booking_view(b), self.BOOKING_BY_ID_FIELDS)
        view["attendees"] = [{"email": a["email"], "name": a["name"]} for a in b["attendees"]]
        view["payment"] = []
        return success(view, "Booking")

    def book(self, et, start, end, host_id, exclude=None):
        """handleNewBooking's checks (upstream cal.com): thrown messages."""
        if start < self.now():
            raise envelope_error(500, "Attempting to book a meeting in the past.")
        lengths = (et["metadata"] or {}).get("multipleDuration") or [et["length"]]
        if (end - start) != dt.timedelta(minutes=et["length"]) and \
                (end - start) not in [dt.timedelta(minutes=m) for m in lengths]:
            raise envelope_error(500, "Invalid event length")
        if not self.within_hours(et, host_id, start, end) or not self.is_free(host_id, start, end, exclude):
            raise envelope_error(500, "no_available_users_found_error")

    def r_create_booking(self, req):
        body = req.body
        if "eventTypeId" not in body and "eventTypeSlug" not in body:
            raise bad_request("Validation failed: Either eventTypeId or eventTypeSlug is required")
        # (the refine "Responses object must contain both email and name" cannot fail:
        # Ajv has filled in the name "John Doe" and the phone "+91XXXXXXXXXX")
        if "eventTypeId" in body:
            et = self.event_type(body["eventTypeId"])
        else:
            et = next((e for e in self.s["eventTypes"] if e["slug"] == body["eventTypeSlug"]
                       and e["userId"] == ME), None)
        if et is None:
            raise envelope_error(500, "No EventType found")
        start, end = to_utc(body["start"]), to_utc(body["end"])
        host_id = et["_hosts"][0] if et["teamId"] and et["_hosts"] else (et["userId"] or ME)
        self.book(et, start, end, host_id)
        loc = body["responses"]["location"]
        b = new_booking(self.new_id(), et, self.user(host_id), start, end, body["responses"], body["timeZone"],
                        body["language"], loc if isinstance(loc, str) else loc.get("value"), self.stamp(),
                        body["metadata"])
        self.s["bookings"].append(b)
        data = dict(public(b), userId=b["_userId"], eventTypeId=et["id"], paymentRequired=False,
                    paymentUid=None, paymentId=None, isDryRun=False)
        return success(data, "Booking created")

    def r_cancel_booking(self, req):
        b = self.booking_visible(req.params["id"])
        if b is None:
            raise not_found("Booking not found or invalid credentials")
        if b["status"] == "CANCELLED":
            raise bad_request("This booking has already been cancelled.")
        b.update(status="CANCELLED", updatedAt=self.stamp(), _cancellationReason=req.body["cancellationReason"])
        return success({"success": True, "message": "Booking successfully cancelled.", "onlyRemovedAttendee": False,
                        "bookingId": b["id"], "bookingUid": b["uid"]}, "Booking cancelled")

    def r_change_booking_confirmation_status(self, req):
        bid = js_parse_int(req.params["id"])
        if bid != bid or bid <= 0:
            raise bad_request("Validation failed: id must be a positive integer")
        b = self.booking_visible(bid)
        if b is None:
            raise not_found("Booking not found or invalid credentials")
        confirmed = req.body["confirmed"]
        if b["status"] == "ACCEPTED":       # confirmHandler refuses an accepted booking, even to decline it
            raise envelope_error(500, "Booking already confirmed")
        b.update(status="ACCEPTED" if confirmed else "REJECTED", updatedAt=self.stamp(),
                 _rejectionReason=None if confirmed else req.body.get("reason"))
        return success({"status": b["status"], "message": "Booking %s" % ("confirmed" if confirmed else "rejected"),
                        "bookingId": b["id"]}, "Booking confirmation status updated")

    def booking_by_parsed_id(self, raw, visible=True):
        bid = js_parse_int(raw)
        if bid != bid:
            raise prisma_nan("booking", "findUnique")
        if visible:
            return self.booking_visible(bid)
        return next((b for b in self.s["bookings"] if b["id"] == bid), None)

    def reassign(self, b, user_id, reason):
        u = self.user(user_id)
        b.update(_userId=u["id"], userPrimaryEmail=u["email"], updatedAt=self.stamp(),
                 user={"id": u["id"], "name": u["name"], "email": u["email"]})
        b["assignmentReason"] = [{"reasonString": reason or "Reassigned"}]

    def r_update_booking_reassignbookingautomatically(self, req):
        b = self.booking_by_parsed_id(req.params["id"])
        if b is None:
            raise not_found("Booking not found or invalid credentials")
        et = self.event_type(b["_eventTypeId"])
        start, end = stored_time(b["startTime"]), stored_time(b["endTime"])
        others = [h for h in (et["_hosts"] if et and et["schedulingType"] == "ROUND_ROBIN" else [])
                  if h != b["_userId"] and self.is_free(h, start, end)]
        if not others:
            raise bad_request("No available users found for reassignment")
        self.reassign(b, others[0], "Round robin reassignment")
        return success({"bookingId": b["id"]}, "Booking reassigned")     # newUserId: not in the 200 schema

    def r_update_booking_reassignbookingtouser(self, req):
        b = self.booking_by_parsed_id(req.params["id"], visible=False)   # no ownership check (hazard 10)
        if b is None:
            raise envelope_error(404, "Booking not found or invalid credentials")
        if self.user(req.body["userId"]) is None:
            raise envelope_error(500, "User not found")
        self.reassign(b, req.body["userId"], req.body.get("reason"))
        return success({"newUserId": req.body["userId"], "bookingId": b["id"]}, "Booking reassigned")

    def r_reschedule_booking(self, req):
        b = self.booking_by_parsed_id(req.params["id"], visible=False)   # getBookingById: no ownership check
        if b is None:
            raise envelope_error(404, "Booking not found or invalid credentials")
        et = self.event_type(b["_eventTypeId"])
        if et is None:
            raise thrown("Booking is missing event type")
        start = js_date(req.body["start"])
        if start is None:
            raise thrown("Invalid time value")
        end = start + dt.timedelta(minutes=et["length"])
        try:
            self.book(et, start, end, b["_userId"], exclude=b)
        except ApiError as e:
            if e.body.get("message") == "no_available_users_found_error":
                raise bad_request("Conflicting reschedule")
            raise thrown(e.body["message"])       # rethrown to Fastify
        responses = dict(b["responses"], rescheduledReason=req.body.get("reschedulingReason"))
        new = new_booking(self.new_id(), et, self.user(b["_userId"]), start, end, responses,
                          b["attendees"][0]["timeZone"], b["attendees"][0]["locale"], b["location"], self.stamp(),
                          b["metadata"])
        new["fromReschedule"] = b["uid"]
        self.s["bookings"].append(new)
        b.update(status="CANCELLED", rescheduled=True, updatedAt=self.stamp())
        if self.hazards["reschedule_500"]:
            # The 200 schema requires newUserId, which the handler does not send: the
            # serializer throws after the reschedule happened (hazard 4).
            raise thrown('"newUserId" is required!')
        return success({"bookingId": b["id"]}, "Booking rescheduled")


class ContactRoutes:
    """Contacts (5): no published REST route; the tRPC procedures' fields."""

    def own_contact(self, cid):
        c = next((c for c in self.s["contacts"] if c["id"] == cid and c["_userId"] == ME), None)
        if c is None:
            raise not_found("Contact not found")
        return c

    def r_list_contacts(self, req):
        q = req.q
        items = [c for c in self.s["contacts"] if c["_userId"] == ME]
        needle = q.get("search", "").strip().lower()
        if needle:
            items = [c for c in items if any(needle in (c[k] or "").lower() for k in ("name", "email", "phone", "notes"))]
        items.sort(key=lambda c: -c["id"])
        items.sort(key=lambda c: (c[q["sortBy"]] or "").lower(), reverse=q["sortDirection"] == "desc")
        rows = items[q["offset"]: q["offset"] + q["limit"]]
        meta = {"totalRowCount": len(items), "limit": q["limit"], "offset": q["offset"],
                "hasMore": q["offset"] + len(rows) < len(items)}
        return success({"rows": [public(c) for c in rows], "meta": meta}, "Contacts retrieved")

    def contact_fields(self, body, c):
        if "name" in body:
            if not body["name"].strip():
                raise bad_request("Validation failed: name: String must contain at least 1 character(s)")
            c["name"] = body["name"].strip()
        if "email" in body:
            c["email"] = body["email"].strip().lower()
        for k in ("phone", "notes"):
            if k in body:
                c[k] = body[k].strip() if k == "phone" else body[k]
        c["updatedAt"] = self.stamp()

    def r_create_contact(self, req):
        c = {"id": self.new_id(), "name": "", "email": "", "phone": "", "notes": "", "createdAt": self.stamp(),
             "_userId": ME}
        self.contact_fields(req.body, c)
        self.s["contacts"].append(c)
        return success(public(c), "Contact created", 201)

    def r_get_contact(self, req):
        return success(public(self.own_contact(req.params["id"])), "Contact retrieved")

    def r_update_contact(self, req):
        c = self.own_contact(req.params["id"])
        if not req.body:
            raise bad_request("Validation failed: At least one field must be provided")
        self.contact_fields(req.body, c)
        return success(public(c), "Contact updated")

    def r_delete_contact(self, req):
        c = self.own_contact(req.params["id"])
        self.s["contacts"].remove(c)
        return success({"id": c["id"]}, "Contact deleted")

    def r_get_contact_meetings(self, req):
        c = self.own_contact(req.params["id"])
        now = self.now()

        def meets(b):
            return b["_userId"] == ME and any(a["email"].lower() == c["email"].lower() for a in b["attendees"]) \
                or (c["phone"] and b["responses"].get("phone") == c["phone"])
        rows = []
        for b in sorted((b for b in self.s["bookings"] if meets(b)), key=lambda b: (b["startTime"], b["id"]),
                        reverse=True)[:req.q["limit"]]:
            start, end = stored_time(b["startTime"]), stored_time(b["endTime"])
            status = "cancelled" if b["status"] in ("CANCELLED", "REJECTED") else \
                "upcoming" if end >= now else "completed"
            link = b["location"] if isinstance(b["location"], str) and b["location"].startswith("http") else None
            rows.append({"id": b["id"], "title": b["title"], "date": b["startTime"],
                         "duration": max(1, int((end - start).total_seconds() // 60)), "status": status,
                         "meetingLink": link, "notes": (b["metadata"] or {}).get("meetingNote")})
        return success({"rows": rows, "meta": {"totalRowCount": len(rows), "limit": req.q["limit"]}},
                       "Contact meetings retrieved")


class EventTypeRoutes:
    """Event types (4.17-4.21), shared with the team event types."""

    @staticmethod
    def ordered(items, field, direction):
        if field:
            items.sort(key=lambda x: (x.get(field) is None, x.get(field)), reverse=direction == "desc")
        return items

    def event_type_page(self, items, q, message):
        if "title" in q:
            items = [e for e in items if q["title"].lower() in e["title"].lower()]
        if "slug" in q:
            items = [e for e in items if q["slug"] in e["slug"]]
        if "hidden" in q:
            items = [e for e in items if e["hidden"] == q["hidden"]]
        items = self.ordered(list(items), q.get("orderBy"), q["orderDir"])
        return paginated([public(e) for e in page_of(items, q)], q["page"], q["limit"], len(items), message)

    def own_event_type(self, etid):
        e = self.event_type(etid)
        if e is None or e["userId"] != ME or e["teamId"] is not None:
            raise not_found("Event type not found")
        return e

    def slug_taken(self, slug, team_id, but=None):
        return any(e["slug"] == slug and e["teamId"] == team_id and (team_id or e["userId"] == ME)
                   and e is not but for e in self.s["eventTypes"])

    def save_event_type(self, body, team_id, message, existing=None, clash="Event type with this slug already exists"):
        if "slug" in body and self.slug_taken(body["slug"], team_id, existing):
            raise conflict(clash)
        if existing is None:
            hosts = [m["userId"] for m in self.s["memberships"] if m["teamId"] == team_id and m["acceptedInvitation"]] \
                if team_id and body.get("assignAllTeamMembers") else []
            existing = event_type_record(self.new_id(), body, None if team_id else ME, team_id, self.stamp(), hosts)
            self.s["eventTypes"].append(existing)
            return success(public(existing), message, 201)
        existing.update(body, updatedDate=self.stamp())
        return success(public(existing), message)

    def r_get_event_types(self, req):
        mine = [e for e in self.s["eventTypes"] if e["userId"] == ME and e["teamId"] is None]
        return self.event_type_page(mine, req.q, "Event types list retrieved successfully")

    def r_get_event_types_by_id(self, req):
        return success(public(self.own_event_type(req.params["id"])), "Event type details retrieved")

    def r_create_eventtype(self, req):
        return self.save_event_type(req.body, None, "Event type created successfully",
                                    clash="Event type with this slug already exists for this user")

    def r_update_eventtype(self, req):
        e = self.own_event_type(req.params["id"])
        return self.save_event_type(req.body, None, "Event type updated successfully", e,
                                    clash="Event type with this slug already exists for this user")

    def r_delete_eventtype(self, req):
        self.s["eventTypes"].remove(self.own_event_type(req.params["id"]))
        return success(None, "Event type deleted successfully")


class TeamRoutes:
    """Teams, their event types and memberships (4.22-4.37)."""

    def team(self, tid):
        return next((t for t in self.s["teams"] if t["id"] == tid), None)

    def team_view(self, t):
        return dict(t, memberCount=sum(1 for m in self.s["memberships"] if m["teamId"] == t["id"]),
                    eventTypeCount=sum(1 for e in self.s["eventTypes"] if e["teamId"] == t["id"]))

    def member_team(self, tid, missing):
        """A team the caller belongs to; else the route's dbError 404 (4.24)."""
        t = self.team(tid)
        if t is None or self.role_in(tid) is None:
            raise not_found(missing)
        return t

    def admin_of(self, tid, refused):
        if self.role_in(tid) not in ("ADMIN", "OWNER"):
            raise forbidden(refused)

    def r_get_teams(self, req):
        q = req.q
        items = [t for t in self.s["teams"] if self.role_in(t["id"]) is not None]
        if "name" in q:
            items = [t for t in items if q["name"].lower() in t["name"].lower()]
        if "slug" in q:
            items = [t for t in items if q["slug"] in (t["slug"] or "")]
        if "isTeamPrivate" in q:
            items = [t for t in items if t["isTeamPrivate"] == q["isTeamPrivate"]]
        items = self.ordered(items, q.get("orderBy"), q["orderDir"])
        return paginated([self.team_view(t) for t in page_of(items, q)], q["page"], q["limit"], len(items),
                         "Teams list retrieved successfully")

    def team_slug_taken(self, slug, but=None):
        return any(t["slug"] == slug and t is not but for t in self.s["teams"])

    def r_create_team(self, req):
        body = dict(req.body)
        body.setdefault("slug", slugify(body["name"]))
        if self.team_slug_taken(body["slug"]):
            raise conflict("Team with this slug already exists")
        t = dict(body, id=self.new_id(), createdAt=self.stamp(), updatedAt=self.stamp())
        for k in spec.TEAM_FIELDS:
            t.setdefault(k, None)
        self.s["teams"].append(t)
        self.s["memberships"].append({"id": self.new_id(), "teamId": t["id"], "userId": ME, "acceptedInvitation": True,
                                      "role": "OWNER", "impersonation": True, "createdAt": self.stamp(),
                                      "updatedAt": self.stamp()})
        return success(self.team_view(t), "Team created successfully", 201)

    def r_get_team(self, req):
        t = self.member_team(req.params["teamId"], "Failed to retrieve team from the database")
        return success(self.team_view(t), "Team details retrieved")

    def existing_team(self, tid):
        t = self.team(tid)
        if t is None:
            raise not_found("Team not found")
        return t

    def r_update_team_details(self, req):
        t = self.existing_team(req.params["teamId"])
        self.admin_of(t["id"], "Insufficient permissions to update team")
        if "slug" in req.body and self.team_slug_taken(req.body["slug"], t):
            raise conflict("Team with this slug already exists")
        t.update(req.body, updatedAt=self.stamp())
        return success(self.team_view(t), "Team updated successfully")

    def r_delete_team(self, req):
        t = self.existing_team(req.params["teamId"])
        self.admin_of(t["id"], "Insufficient permissions")
        self.s["teams"].remove(t)
        self.s["memberships"] = [m for m in self.s["memberships"] if m["teamId"] != t["id"]]
        self.s["eventTypes"] = [e for e in self.s["eventTypes"] if e["teamId"] != t["id"]]
        return success(None, "Team deleted successfully")

    def r_get_team_event_types(self, req):
        t = self.member_team(req.params["teamId"], "Failed to retrieve team event types from the database")
        items = [e for e in self.s["eventTypes"] if e["teamId"] == t["id"]]
        return self.event_type_page(items, req.q, "Team event types retrieved successfully")

    def team_event_type(self, tid, etid, missing):
        e = self.event_type(etid)
        if e is None or e["teamId"] != tid:
            raise not_found(missing)
        return e

    def r_create_team_eventtype(self, req):
        tid = req.params["teamId"]
        self.admin_of(tid, "Insufficient permissions to create team event type")
        return self.save_event_type(req.body, tid, "Team event type created successfully")

    def r_get_team_event_type(self, req):
        missing = "Failed to retrieve team event type from the database"
        self.member_team(req.params["teamId"], missing)
        e = self.team_event_type(req.params["teamId"], req.params["eventTypeId"], missing)
        return success(public(e), "Team event type retrieved")

    def r_update_team_eventtype(self, req):
        tid = req.params["teamId"]
        self.admin_of(tid, "Insufficient permissions to update team event type")
        e = self.team_event_type(tid, req.params["eventTypeId"], "Failed to update team event type in the database")
        return self.save_event_type(req.body, tid, "Team event type updated successfully", e)

    def r_delete_team_eventtype(self, req):
        tid = req.params["teamId"]
        self.admin_of(tid, "Insufficient permissions to delete team event type")
        e = self.team_event_type(tid, req.params["eventTypeId"],
                                 "Failed to delete team event type from the database")
        self.s["eventTypes"].remove(e)
        return success(None, "Team event type deleted successfully")

    def membership_view(self, m):
        u, t = self.user(m["userId"]), self.team(m["teamId"])
        return dict(m, user=pick(u, ("id", "name", "email", "username", "avatarUrl", "timeZone")),
                    team=pick(t, ("id", "name", "slug")))

    def r_get_team_memberships(self, req):
        q = req.q
        t = self.member_team(req.params["teamId"], "Failed to retrieve team memberships from the database")
        items = [m for m in self.s["memberships"] if m["teamId"] == t["id"]]
        for k in ("role", "acceptedInvitation"):
            if k in q:
                items = [m for m in items if m[k] == q[k]]
        items = self.ordered(items, q.get("orderBy"), q["orderDir"])
        return paginated([self.membership_view(m) for m in page_of(items, q)], q["page"], q["limit"], len(items),
                         "Team memberships retrieved successfully")

    def r_add_team_member(self, req):
        tid, body = req.params["teamId"], req.body
        self.admin_of(tid, "Insufficient permissions to add team members")
        if self.user(body["userId"]) is None or any(m["teamId"] == tid and m["userId"] == body["userId"]
                                                    for m in self.s["memberships"]):
            raise envelope_error(500, "Failed to create team membership")   # P2002 / a foreign key (4.33)
        m = dict(body, id=self.new_id(), teamId=tid, createdAt=self.stamp(), updatedAt=self.stamp())
        self.s["memberships"].append(m)
        return success(self.membership_view(m), "Team membership created successfully", 201)

    def team_membership(self, tid, mid, missing):
        m = next((m for m in self.s["memberships"] if m["id"] == mid), None)
        if m is None:
            raise not_found(missing)
        if m["teamId"] != tid:
            raise conflict("Membership does not belong to this team")
        return m

    def r_get_team_membership(self, req):
        missing = "Failed to retrieve team membership from the database"
        self.member_team(req.params["teamId"], missing)
        m = self.team_membership(req.params["teamId"], req.params["membershipId"], missing)
        return success(self.membership_view(m), "Team membership retrieved")

    def r_update_team_membership(self, req):
        tid = req.params["teamId"]
        self.admin_of(tid, "Insufficient permissions to update team membership")
        m = self.team_membership(tid, req.params["membershipId"], "Failed to update team membership in the database")
        m.update(req.body, updatedAt=self.stamp())
        return success(self.membership_view(m), "Team membership updated successfully")

    def r_remove_team_member(self, req):
        tid = req.params["teamId"]
        m = self.team_membership(tid, req.params["membershipId"], "Failed to delete team membership from the database")
        if m["userId"] != ME:
            self.admin_of(tid, "Insufficient permissions to delete team membership")
        self.s["memberships"].remove(m)
        return success(None, "Team membership deleted successfully")

    def r_get_team_schedules(self, req):
        tid = req.params["teamId"]
        self.admin_of(tid, "Insufficient permissions to view team schedules")
        out = []
        for m in self.s["memberships"]:
            if m["teamId"] == tid and m["acceptedInvitation"]:
                u = self.user(m["userId"])
                out.append({"userId": u["id"], "userName": u["name"], "userEmail": u["email"], "schedules": [
                    {"id": s["id"], "name": s["name"], "timeZone": s["timeZone"],
                     "isDefault": s["id"] == u["defaultScheduleId"], "availability": s["availability"]}
                    for s in self.s["schedules"] if s["userId"] == u["id"]]})
        return success(out, "Team schedules retrieved")


class SlotRoutes:
    """Slots and reservations (4.38-4.42)."""

    def host_of(self, et):
        return et["userId"] or (et["_hosts"][0] if et["_hosts"] else None)

    def live_reservations(self, et_id, but=None):
        now = self.now()
        return [r for r in self.s["reservedSlots"] if r["eventTypeId"] == et_id and r is not but
                and stored_time(r["releaseAt"]) > now]

    def compute_slots(self, et, start, end, out_tz):
        host = self.host_of(et)
        sched = self.schedule_for(et, host) if host else None
        slots = {}
        if sched is None:
            return slots
        length = dt.timedelta(minutes=et["length"])
        step = dt.timedelta(minutes=et["slotInterval"] or et["length"])
        busy = [(s, e) for s, e, _ in self.busy(host)]
        busy += [(stored_time(r["slotUtcStartDate"]), stored_time(r["slotUtcEndDate"]))
                 for r in self.live_reservations(et["id"]) if r["userId"] != ME]
        earliest = self.now() + dt.timedelta(minutes=et["minimumBookingNotice"])
        for s, e in self.working_ranges(sched, start - dt.timedelta(days=1), end + dt.timedelta(days=1)):
            t = s
            while t + length <= e:
                if start <= t < end and t >= earliest and not any(bs < t + length and t < be for bs, be in busy):
                    slots.setdefault(t.astimezone(out_tz).strftime("%Y-%m-%d"), []).append({"time": iso_z(t)})
                t += step
        return slots

    def r_get_slots(self, req):
        q = req.q
        et = None
        if "eventTypeId" in q:
            et = self.event_type(js_parse_int(q["eventTypeId"]))
        elif "eventTypeSlug" in q:
            et = next((e for e in self.s["eventTypes"] if e["slug"] == q["eventTypeSlug"] and e["userId"] == ME), None)
        if et is None:
            raise envelope_error(500, "Event type not found")
        start, end = js_date(q["start"]), js_date(q["end"])
        if start is None or end is None:
            raise thrown("Invalid time value")
        if re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", q["end"]):
            end += dt.timedelta(days=1)
        end = min(end, start + dt.timedelta(days=MAX_SLOT_DAYS))
        if self.hazards["slots_500"]:
            raise thrown('"success" is required!')
        return success({"slots": self.compute_slots(et, start, end, zone(q.get("timeZone")))}, "User slots")

    def reservation_checks(self, body, current=None):
        """The reserve/update checks of the slots service: 500s (4.39, 4.41)."""
        et = self.event_type(body["eventTypeId"])
        if et is None:
            raise envelope_error(500, "Event Type with ID=%d not found" % body["eventTypeId"])
        if current is not None and current["eventTypeId"] != et["id"]:
            raise envelope_error(500, "Cannot change event type when editing a reservation")
        if et["teamId"] and not et["_hosts"]:
            raise envelope_error(500, "Cannot reserve a slot for a team event without any hosts")
        minutes = et["length"]
        if "slotDuration" in body:
            options = (et["metadata"] or {}).get("multipleDuration")
            if not options:
                raise envelope_error(500, "You passed 'slotDuration' but this event type is not a variable "
                                          "length event type.")
            minutes = spec.js_number(str(body["slotDuration"]))
            if minutes not in options:
                raise envelope_error(500, "Provided 'slotDuration' is not one of the possible lengths for the event "
                                          "type. The possible lengths are: %s" % ", ".join(map(str, options)))
        start = to_utc(body["slotStart"])
        end = start + dt.timedelta(minutes=minutes)
        if any(b["_eventTypeId"] == et["id"] and stored_time(b["startTime"]) == start
               and b["status"] in ("ACCEPTED", "PENDING") for b in self.s["bookings"]):
            raise envelope_error(500, "Can't edit slot to this time as the event is already booked." if current
                                 else "Can't reserve a slot if the event is already booked.")
        if any(r["userId"] != ME and stored_time(r["slotUtcStartDate"]) < end
               and start < stored_time(r["slotUtcEndDate"]) for r in self.live_reservations(et["id"], current)):
            raise envelope_error(500, "This time slot is already reserved by another user. Please choose a "
                                      "different time.")
        return et, start, end, int(minutes)

    @staticmethod
    def reservation_view(r):
        return {"eventTypeId": r["eventTypeId"], "slotStart": r["slotUtcStartDate"], "slotEnd": r["slotUtcEndDate"],
                "slotDuration": r["_duration"], "reservationUid": r["uid"], "reservationDuration": r["_minutes"],
                "reservationUntil": r["releaseAt"]}

    def reserve(self, r, body):
        et, start, end, minutes = self.reservation_checks(body, r.get("uid") and r)
        r.update(eventTypeId=et["id"], slotUtcStartDate=iso_z(start), slotUtcEndDate=iso_z(end), _duration=minutes,
                 _minutes=body["reservationDuration"],
                 releaseAt=iso_z(self.now() + dt.timedelta(minutes=body["reservationDuration"])))
        return r

    def r_create_slots_reserve(self, req):
        r = self.reserve({"id": self.new_id(), "userId": ME, "isSeat": False}, req.body)
        r["uid"] = uuid4()
        self.s["reservedSlots"].append(r)
        return success(self.reservation_view(r))        # no message (4.39)

    def own_slot(self, uid):
        r = next((r for r in self.s["reservedSlots"] if r["uid"] == uid and r["userId"] == ME), None)
        if r is None:
            raise not_found("Slot not found")
        return r

    def r_get_slot(self, req):
        return success(public(self.own_slot(req.params["uid"])), "Selected slot")

    def r_update_slots(self, req):
        r = self.own_slot(req.params["uid"])
        return success(self.reservation_view(self.reserve(r, req.body)))

    def r_delete_slots(self, req):
        self.s["reservedSlots"].remove(self.own_slot(req.params["uid"]))
        return success(message="Deleted slot")


class UserRoutes:
    """Users (4.43-4.46)."""

    def r_get_users_me(self, req):
        u = self.me()
        return success({"id": u["id"], "email": u["email"], "name": u["name"], "username": u["username"],
                        "role": u["role"], "organizationId": None, "createdAt": u["createdAt"],
                        "emailVerified": u["emailVerified"]}, "Current user profile")

    def r_update_user_profile(self, req):
        body, u = req.body, self.me()
        if "timeZone" in body and not valid_zone(body["timeZone"]):
            raise bad_request("Validation failed: timeZone: Invalid time zone")
        if "username" in body:
            body["username"] = slugify(body["username"])
            if any(o["username"] == body["username"] and o is not u for o in self.s["users"].values()):
                raise envelope_error(500, "Failed to update profile")      # "Username already taken", caught
        changed_email = "email" in body and body["email"].lower() != u["email"].lower()
        if changed_email:       # the change waits for the new address to be verified
            u["metadata"]["emailChangeWaitingForVerification"] = body.pop("email").lower()
        else:
            body.pop("email", None)
        if "metadata" in body:
            u["metadata"].update(body.pop("metadata"))
        u.update(body)
        return success({"id": u["id"], "username": u["username"], "email": u["email"], "name": u["name"],
                        "avatarUrl": u["avatarUrl"], "hasEmailBeenChanged": changed_email,
                        "sendEmailVerification": changed_email}, "Profile updated successfully")

    AVATAR_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/svg+xml")

    def r_create_users_edit_profile_avatar(self, req):
        ctype = req.headers.get("content-type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.lower().startswith("multipart/form-data") or not m:
            raise envelope_error(500, "Failed to update avatar")     # request.file() throws, caught
        try:
            parts = parse_multipart(req.raw_body, m.group(1).encode("latin-1"))
        except ValueError:
            raise envelope_error(500, "Failed to update avatar")
        files = [(h, data) for h, data in parts if "filename=" in h.get("content-disposition", "")]
        if not files:
            raise bad_request("No file uploaded")
        h, data = files[0]          # the first file part, whatever its field name
        if h.get("content-type", "").lower() not in self.AVATAR_TYPES:
            raise bad_request("Unsupported file type")
        u = self.me()
        u["avatarUrl"] = "https://cal.id/api/avatar/%s.png" % hashlib.sha256(data).hexdigest()[:32]
        return success({"avatarUrl": u["avatarUrl"]}, "Avatar updated successfully")

    def r_get_users(self, req):
        names = [n for n in re.split(r"[+,\s]", req.params["user"].lower()) if n]
        found = [u for n in names for u in self.s["users"].values() if u["username"] == n]
        # what the 200 schema keeps of what the handler builds (events, image dropped); none found: []
        return success([dict(pick(u, ("username", "avatarUrl", "allowSEOIndexing", "brandColor", "darkBrandColor",
                                      "theme")), name=u["name"] or u["username"], organizationId="") for u in found],
                       "User public events retrieved")


class WebhookRoutes:
    """Webhooks (4.47-4.51)."""

    def own_webhook(self, wid):
        w = next((w for w in self.s["webhooks"] if w["id"] == wid and w["_userId"] == ME), None)
        if w is None:
            raise not_found("Webhook not found")
        return w

    def unique_subscriber(self, url, but=None):
        if any(w["_userId"] == ME and w["subscriberUrl"] == url and w is not but for w in self.s["webhooks"]):
            raise thrown("Duplicate entry: userId, subscriberUrl", code="DATABASE_ERROR")

    def r_get_webhook(self, req):
        mine = [public(w) for w in self.s["webhooks"] if w["_userId"] == ME]
        items = page_of(mine, req.q)
        # meta.pagination.total is the number of items on this page (4.47)
        return paginated(items, req.q["page"], req.q["limit"], len(items), "User webhook retrieved")

    def r_create_webhook(self, req):
        self.unique_subscriber(req.body["subscriberUrl"])
        w = {"id": uuid4(), "eventTriggers": [], "subscriberUrl": None, "active": True, "payloadTemplate": None,
             "platformOAuthClientId": None, "secret": None, "_userId": ME}
        w.update(req.body)
        self.s["webhooks"].append(w)
        return success(public(w), "Webhook created")

    def r_get_webhook_by_id(self, req):
        return success(public(self.own_webhook(req.params["id"])), "Webhook retrieved")

    def r_update_webhook(self, req):
        w = self.own_webhook(req.params["id"])
        if "subscriberUrl" in req.body:
            self.unique_subscriber(req.body["subscriberUrl"], w)
        w.update(req.body)
        return success(public(w), "Webhook updated")

    def r_delete_webhook(self, req):
        w = self.own_webhook(req.params["id"])
        self.s["webhooks"].remove(w)
        return success(public(w), "Webhook deleted")


class Api(ApiCore, AvailabilityRoutes, ScheduleRoutes, BookingRoutes, ContactRoutes, EventTypeRoutes,
          TeamRoutes, SlotRoutes, UserRoutes, WebhookRoutes):
    """The Cal ID API: handle() runs a request through route, checks, hooks, handler."""


def parse_multipart(body, boundary):
    """-> [(headers dict lowercased, data bytes)]; ValueError when malformed."""
    delim = b"--" + boundary
    if not body.startswith(delim):
        pos = body.find(b"\r\n" + delim)
        if pos < 0:
            raise ValueError("Malformed multipart body: boundary not found")
        body = body[pos + 2:]
    parts = []
    pos = len(delim)
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise ValueError("Malformed multipart body: bad delimiter line")
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise ValueError("Malformed multipart body: part without header end")
        headers = {}
        for line in body[pos + 2:head_end].split(b"\r\n"):
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode("latin-1")] = v.strip().decode("utf-8", "replace")
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise ValueError("Malformed multipart body: missing closing boundary")
        parts.append((headers, body[head_end + 4:nxt]))
        pos = nxt + 2 + len(delim)


# --------------------------------------------------------------------------
# Recording and faults
# --------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.dropped = 0

    def add(self, rec):
        with self.lock:
            self.items.append(rec)
            if len(self.items) > MAX_RECORDS:
                del self.items[0]
                self.dropped += 1

    def list(self, path_prefix=None, method=None):
        with self.lock:
            return [r for r in self.items
                    if (not path_prefix or r["path"].startswith(path_prefix))
                    and (not method or r["method"] == method.upper())]

    def clear(self):
        with self.lock:
            n = len(self.items)
            self.items = []
            self.dropped = 0
            return n


FAULT_MODES = ("delay", "status", "nonjson", "truncate", "reset", "stall", "chunked", "close",
               "close_after", "endless_chunked", "big", "reset_mid_answer", "drop_request")


class ControlError(Exception):
    """A bad request to the /__fake/ control API (answered 400)."""


def control_int(value, field, minimum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError("%s must be an integer" % field)
    if minimum is not None and value < minimum:
        raise ControlError("%s must be at least %d" % (field, minimum))
    return value


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.next_id = 1
        self.generation = 0     # bumped by clear(): stalled / endless answers give up

    def add(self, fault):
        """Check and add one fault object; ControlError when it is bad."""
        if not isinstance(fault, dict):
            raise ControlError("A fault must be a JSON object")
        mode = fault.get("mode", fault.get("kind"))
        if mode not in FAULT_MODES:
            raise ControlError("mode must be one of %s" % ", ".join(FAULT_MODES))
        f = dict(fault)
        f["mode"] = mode
        f["path"] = fault.get("path") or ""
        if not isinstance(f["path"], str):
            raise ControlError("path must be a string prefix")
        f["method"] = (fault.get("method") or "").upper() or None
        f["count"] = control_int(fault.get("count", -1 if mode == "drop_request" else 1), "count")
        if f["count"] == 0 or f["count"] < -1:
            raise ControlError("count must be a positive number, or -1 for until cleared")
        f["skip"] = control_int(fault.get("skip", 0), "skip", minimum=0)
        if mode == "drop_request":
            f["nth"] = control_int(fault.get("nth", 2), "nth", minimum=1)
        for k in ("delay_ms", "status", "retry_after", "size", "bytes", "chunks", "chunk_size",
                  "interval_ms", "max_seconds"):
            if k in fault:
                f[k] = control_int(fault[k], k, minimum=0)
        if mode == "status" and not 100 <= f.get("status", 500) <= 599:
            raise ControlError("status must be an HTTP status code")
        with self.lock:
            f["id"] = self.next_id
            self.next_id += 1
            f["applied"] = 0
            self.items.append(f)
            return dict(f)

    def take(self, method, path, seq_on_conn):
        """The first fault that applies to this request (the seq_on_conn-th
        API request on its connection), counted as applied."""
        with self.lock:
            for f in self.items:
                if not path.startswith(f["path"]) or (f["method"] and f["method"] != method):
                    continue
                if f["mode"] == "drop_request" and f["nth"] != seq_on_conn:
                    continue
                if f["skip"] > 0:
                    f["skip"] -= 1
                    continue
                f["applied"] += 1
                if f["count"] > 0:
                    f["count"] -= 1
                    if f["count"] == 0:
                        self.items.remove(f)
                return dict(f)
        return None

    def list(self):
        with self.lock:
            return [dict(f) for f in self.items]

    def clear(self):
        with self.lock:
            n = len(self.items)
            self.items = []
            self.generation += 1
            return n


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {"connections": 0, "handshakes": 0, "handshake_failures": 0, "resumed": 0,
                  "requests": 0, "api_requests": 0, "faults_applied": 0}

    def inc(self, k, n=1):
        with self.lock:
            self.c[k] += n
            return self.c[k]

    def get(self):
        with self.lock:
            return dict(self.c)


API = None
RECORDER = Recorder()
FAULTS = Faults()
STATS = Stats()


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class PeerGone(Exception):
    pass


REASONS = {c.value: c.phrase for c in http.HTTPStatus}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-calid/1.0"
    sys_version = ""
    timeout = 60            # idle keep-alive connections are closed after this (--idle-timeout)
    disable_nagle_algorithm = True

    # ---- connection life ----

    def setup(self):
        super().setup()
        self.conn_id = STATS.inc("connections")
        self.seq = 0
        self.api_seq = 0            # API requests (not /__fake/ ones) on this connection
        self.abort = False          # close with RST
        self.close_notify = True    # send a TLS close_notify when closing
        sock = self.request
        self.tls = {"version": sock.version(), "cipher": sock.cipher()[0] if sock.cipher() else None,
                    "resumed": bool(sock.session_reused)}
        if self.tls["resumed"]:
            STATS.inc("resumed")
        log("conn %d from %s: %s %s%s" % (self.conn_id, self.client_address[0], self.tls["version"],
                                        self.tls["cipher"], " (resumed)" if self.tls["resumed"] else ""))

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        sock = self.request
        if self.abort:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        elif self.close_notify:
            try:
                sock.settimeout(0)
                sock.unwrap()       # sends close_notify; does not wait for the peer's
            except (OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass

    def log_message(self, fmt, *args):
        log("conn %d: %s" % (getattr(self, "conn_id", 0), fmt % args))

    # every method lands in one place
    def do_GET(self):
        self.dispatch()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = do_GET

    def do_HEAD(self):
        self.dispatch()

    # ---- writing ----

    def head_bytes(self, status, headers):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        lines.append("Date: " + self.date_time_string())
        lines.append("Server: " + self.server_version)
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, data):
        try:
            self.wfile.write(data)
        except (OSError, ValueError) as e:
            log("conn %d: write failed: %s" % (self.conn_id, e))
            self.close_connection = True
            raise PeerGone()

    def send_body(self, status, ctype, body, extra=()):
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        headers += list(extra)
        if self.close_connection:
            headers.append(("Connection", "close"))
        self.write(self.head_bytes(status, headers) + (b"" if self.command == "HEAD" else body))

    def send_json(self, status, obj, extra=()):
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_body(status, "application/json; charset=utf-8", body, extra)

    # ---- reading ----

    def read_body(self):
        te = self.headers.get_all("Transfer-Encoding") or []
        if te:
            if ",".join(te).strip().lower() != "chunked":
                raise HttpError(501, "Unsupported Transfer-Encoding: %s" % ",".join(te))
            return self.read_chunked()
        cls = self.headers.get_all("Content-Length") or []
        if not cls:
            return b""
        if len(set(v.strip() for v in cls)) != 1 or not cls[0].strip().isdigit():
            raise HttpError(400, "Invalid Content-Length")
        n = int(cls[0].strip())
        if n > MAX_BODY:
            raise HttpError(413, "Request body too large: at most %d bytes" % MAX_BODY)
        data = self.rfile.read(n)
        if len(data) < n:
            raise PeerGone()
        return data

    def read_chunked(self):
        out = bytearray()
        while True:
            line = self.rfile.readline(4096)
            if not line:
                raise PeerGone()
            size_txt = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_txt):
                raise HttpError(400, "Malformed chunk size")
            size = int(size_txt, 16)
            if size == 0:
                while True:     # trailer fields
                    t = self.rfile.readline(4096)
                    if not t:
                        raise PeerGone()
                    if t in (b"\r\n", b"\n"):
                        return bytes(out)
            if len(out) + size > MAX_BODY:
                raise HttpError(413, "Request body too large: at most %d bytes" % MAX_BODY)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise PeerGone()
            out += chunk
            if self.rfile.readline(4096) not in (b"\r\n", b"\n"):
                raise HttpError(400, "Malformed chunk: missing CRLF after data")

    # ---- one request ----

    def dispatch(self):
        self.seq += 1
        STATS.inc("requests")
        target = self.path
        if not target.startswith("/"):
            parts = urllib.parse.urlsplit(target)
            target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        path = path.split("#", 1)[0]
        try:
            try:
                body = self.read_body()
            except HttpError as e:
                self.close_connection = True
                self.send_json(e.status, {"success": False, "message": e.message})
                return
            if path == "/__fake" or path.startswith("/__fake/"):
                self.control(path, query, body)
            else:
                self.api(path, query, body)
        except PeerGone:
            self.close_connection = True

    def header_dict(self):
        out = {}
        for k, v in self.headers.items():
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return out

    def api(self, path, query, body):
        STATS.inc("api_requests")
        self.api_seq += 1
        rec = self.record(path, query, body)
        fault = FAULTS.take(self.command, path, self.api_seq)
        mode = fault["mode"] if fault else None
        if fault:
            STATS.inc("faults_applied")
            log("conn %d #%d: fault %s" % (self.conn_id, self.seq, mode))
        if mode in self.UNANSWERED_FAULTS and not (mode == "drop_request" and fault.get("act")):
            return getattr(self, "fault_" + mode)(fault, rec)
        if mode == "delay":
            time.sleep(fault.get("delay_ms", 1000) / 1000.0)
        ans = self.answer(path, query, rec["headers"], body)
        rec["dropped"], rec["defaulted"] = ans.dropped, ans.defaulted
        if mode == "drop_request":      # "act": the API acted, the client never hears
            return self.fault_drop_request(fault, rec)
        payload = json.dumps(ans.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.deliver(ans.status, payload, ans.headers, mode, fault)

    def record(self, path, query, body):
        rec = {"method": self.command, "path": path, "query": query, "headers": self.header_dict(),
               "header_list": [[k, v] for k, v in self.headers.items()],
               "http_version": self.request_version, "conn": self.conn_id, "seq": self.seq,
               "tls_version": self.tls["version"], "tls_resumed": self.tls["resumed"],
               "time": time.time(), "dropped": [], "defaulted": []}
        try:
            rec["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            rec["body"] = base64.b64encode(body).decode("ascii")
            rec["body_base64"] = True
        RECORDER.add(rec)
        log("conn %d #%d: %s %s%s" % (self.conn_id, self.seq, self.command, path, "?" + query if query else ""))
        return rec

    def answer(self, path, query, headers, body):
        try:
            return API.handle(self.command, path, self.path, query, headers, body)
        except Exception as e:  # a bug in this fake: say so loudly, keep serving
            sys.stderr.write("fake_calid: internal error on %s %s: %r\n" % (self.command, path, e))
            import traceback
            traceback.print_exc()
            return Answer(500, {"success": False, "message": "Internal server error (fake): %r" % e})

    # ---- faults that answer instead of the API ----

    UNANSWERED_FAULTS = ("reset", "drop_request", "stall", "endless_chunked", "status", "nonjson", "big")

    def fault_reset(self, fault, rec):
        self.abort = True
        self.close_connection = True

    def fault_drop_request(self, fault, rec):
        rec["dropped_connection"] = True
        self.close_connection = True

    def fault_stall(self, fault, rec):
        self.hold(fault.get("delay_ms", 120000) / 1000.0)
        self.close_connection = True

    def fault_endless_chunked(self, fault, rec):
        self.endless(fault)

    def fault_status(self, fault, rec):
        status = fault.get("status", 500)
        extra = [(str(k), str(v)) for k, v in (fault.get("headers") or {}).items()]
        if status == 429:           # the API's own 429 (1.6)
            retry = fault.get("retry_after", 30)
            obj = rate_limited_body(retry)
            extra += [("X-RateLimit-Limit", str(RATE_LIMIT)), ("X-RateLimit-Remaining", "0"),
                      ("X-RateLimit-Reset", iso_z(dt.datetime.now(UTC) + dt.timedelta(seconds=retry))),
                      ("Retry-After", str(retry))]
        else:
            message = fault.get("message") or {401: "Bearer token required", 500: "Internal server error"}.get(
                status, REASONS.get(status, "Error"))
            obj = envelope_error(status, message, fault.get("code", "UNAUTHORIZED" if status == 401
                                                            else "INTERNAL_ERROR")).body
        payload = json.dumps(obj, separators=(",", ":")).encode()
        self.send_body(status, "application/json; charset=utf-8", payload, extra)

    def fault_nonjson(self, fault, rec):
        html = ("<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>\n"
                "<body><h1>We'll be back soon</h1><p>Cal ID is down for maintenance.</p></body></html>\n")
        self.send_body(fault.get("status", 200), "text/html; charset=utf-8", html.encode())

    def fault_big(self, fault, rec):
        size = fault.get("size", 1 << 20)
        head = b'{"success":true,"message":"big answer","data":{"filler":"'
        tail = b'"}}'
        payload = head + b"x" * max(0, size - len(head) - len(tail)) + tail
        if fault.get("chunked"):
            return self.send_chunked(200, "application/json; charset=utf-8", payload, 16, False)
        self.send_body(200, "application/json; charset=utf-8", payload)

    # ---- the API's answer, framed as a fault may say ----

    def deliver(self, status, payload, extra, mode, fault):
        ctype = "application/json; charset=utf-8"
        if fault and "garbage_at" in fault:   # the real answer with bytes that are not JSON from there on
            at = min(control_int(fault["garbage_at"], "garbage_at", minimum=0), len(payload))
            junk = (b"\x00<html>not JSON</html>" * (len(payload) // 22 + 1))[:len(payload) - at]
            payload = payload[:at] + junk
        if mode == "chunked":
            return self.send_chunked(status, ctype, payload, fault.get("chunks", 4), bool(fault.get("extensions")))
        if mode == "close":
            self.close_connection = True
            self.write(self.head_bytes(status, [("Content-Type", ctype), ("Connection", "close")] + extra) + payload)
            return
        if mode in ("truncate", "reset_mid_answer"):
            n = min(fault.get("bytes", len(payload) // 2), max(0, len(payload) - 1))
            self.close_connection = True
            head = self.head_bytes(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))] + extra)
            if mode == "truncate":
                self.close_notify = fault.get("close_notify", True) is not False
                self.write(head + payload[:n])
                if fault.get("stall_ms"):   # silent mid-answer before the close
                    self.hold(fault["stall_ms"] / 1000.0)
                return
            self.write(head + payload[:n])
            # let the peer read what was sent before the reset discards it
            self.hold(fault.get("delay_ms", 100) / 1000.0)
            self.abort = True
            return
        self.send_body(status, ctype, payload, extra)
        if mode == "close_after":
            self.close_connection = True

    def send_chunked(self, status, ctype, payload, chunks, extensions):
        headers = [("Content-Type", ctype), ("Transfer-Encoding", "chunked")]
        if extensions:
            headers.append(("Trailer", "X-Fake-Trailer"))
        if self.close_connection:
            headers.append(("Connection", "close"))
        self.write(self.head_bytes(status, headers))
        chunks = max(1, chunks)
        step = max(1, -(-len(payload) // chunks))
        for i in range(0, len(payload), step):
            piece = payload[i:i + step]
            ext = ";piece=%d" % (i // step) if extensions else ""
            self.write(b"%x%s\r\n" % (len(piece), ext.encode()) + piece + b"\r\n")
            if chunks <= 64:
                time.sleep(0.005)
        self.write(b"0\r\nX-Fake-Trailer: done\r\n\r\n" if extensions else b"0\r\n\r\n")

    def endless(self, fault):
        gen = FAULTS.generation
        interval = fault.get("interval_ms", 50) / 1000.0
        size = max(8, fault.get("chunk_size", 1024))
        deadline = time.monotonic() + fault.get("max_seconds", 600)
        self.close_connection = True
        self.write(self.head_bytes(200, [("Content-Type", "application/json; charset=utf-8"),
                                         ("Transfer-Encoding", "chunked")]))
        first = b'{"success":true,"message":"endless","data":['
        self.write(b"%x\r\n%s\r\n" % (len(first), first))
        piece = b'"' + b"x" * (size - 3) + b'",'
        while time.monotonic() < deadline and FAULTS.generation == gen:
            self.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if self.peer_gone(interval):
                break
        self.close_notify = False

    def peer_gone(self, seconds):
        """Wait up to `seconds`; True if the peer closed or reset meanwhile."""
        sock = self.request
        try:
            r, _, _ = select.select([sock], [], [], max(0.0, seconds))
        except (OSError, ValueError):
            return True
        if not r and not sock.pending():
            return False
        try:
            sock.settimeout(0.2)
            data = sock.recv(65536)
            return not data
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (OSError, ssl.SSLError, ValueError):
            return True
        finally:
            try:
                sock.settimeout(self.timeout)
            except OSError:
                pass

    def hold(self, seconds):
        gen = FAULTS.generation
        deadline = time.monotonic() + seconds
        while FAULTS.generation == gen:
            left = deadline - time.monotonic()
            if left <= 0 or self.peer_gone(min(left, 0.5)):
                return

    # ---- control endpoints ----

    def control(self, path, query, body):
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        handler = self.CONTROL.get((self.command, path.rstrip("/").replace("/__fake/faults", "/__fake/fault")))
        try:
            if handler is None:
                return self.send_json(404, {"success": False, "message": "Unknown control endpoint %s %s"
                                            % (self.command, path)})
            try:
                arg = json.loads(body.decode("utf-8") or "null")
            except ValueError as e:
                raise ControlError("Invalid JSON body: %s" % e)
            self.send_json(200, handler(q, arg))
        except ControlError as e:
            self.send_json(400, {"success": False, "message": str(e)})

    @staticmethod
    def ctl_reset(q, arg):
        FAULTS.clear()
        RECORDER.clear()
        API.reset()
        return {"success": True, "message": "state reset"}

    @staticmethod
    def ctl_add_fault(q, arg):
        added = [FAULTS.add(f) for f in (arg if isinstance(arg, list) else [arg])]
        return {"success": True, "data": added if isinstance(arg, list) else added[0]}

    @staticmethod
    def ctl_rate_limit(q, arg):
        if not isinstance(arg, dict):
            raise ControlError('expected {"limit": N, "window_ms": MS, "epoch_retry_after": false}')
        API.limiter.configure(control_int(arg.get("limit", RATE_LIMIT), "limit", minimum=0),
                              control_int(arg.get("window_ms", 60000), "window_ms", minimum=1) / 1000.0,
                              bool(arg.get("epoch_retry_after")))
        return {"success": True, "data": {"limit": API.limiter.limit, "window_ms": int(API.limiter.window_s * 1000)}}

    @staticmethod
    def ctl_hazards(q, arg):
        if not isinstance(arg, dict) or not set(arg) <= set(HAZARDS) or \
                not all(isinstance(v, bool) for v in arg.values()):
            raise ControlError("expected an object of booleans with keys among %s" % ", ".join(HAZARDS))
        API.hazards.update(arg)
        return {"success": True, "data": dict(API.hazards)}

    @staticmethod
    def ctl_bookings(q, arg):
        if not isinstance(arg, dict):
            raise ControlError('expected {"count": N, "notes_bytes": M}')
        count = control_int(arg.get("count", 100), "count", minimum=0)
        size = control_int(arg.get("notes_bytes", 1000), "notes_bytes", minimum=0)
        piece = 'Agenda "Q3" \\ caf\u00e9 \u20ac\U0001F600 line\n\ttab; '
        with API.lock:
            base = next(b for b in API.s["bookings"] if b["id"] == 503)
            next_id = max(b["id"] for b in API.s["bookings"]) + 1
            for k in range(count):
                b = copy.deepcopy(base)
                b["id"] = next_id + k
                b["uid"] = "bulk%06d%s" % (k, base["uid"][10:])
                b["responses"]["notes"] = (piece * (size // len(piece) + 1))[:size] if size else ""
                API.s["bookings"].append(b)
        return {"success": True, "data": {"added": count, "first_id": next_id}}

    @staticmethod
    def ctl_stats(q, arg):
        st = STATS.get()
        st["recorded"] = len(RECORDER.items)
        st["recorded_dropped"] = RECORDER.dropped
        return st

    CONTROL = {
        ("GET", "/__fake/requests"): lambda q, arg: RECORDER.list(q.get("path"), q.get("method")),
        ("DELETE", "/__fake/requests"): lambda q, arg: {"success": True, "cleared": RECORDER.clear()},
        ("POST", "/__fake/reset"): ctl_reset.__func__,
        ("POST", "/__fake/fault"): ctl_add_fault.__func__,
        ("GET", "/__fake/fault"): lambda q, arg: {"success": True, "data": FAULTS.list()},
        ("DELETE", "/__fake/fault"): lambda q, arg: {"success": True, "cleared": FAULTS.clear()},
        ("POST", "/__fake/rate_limit"): ctl_rate_limit.__func__,
        ("GET", "/__fake/hazards"): lambda q, arg: {"success": True, "data": dict(API.hazards)},
        ("POST", "/__fake/hazards"): ctl_hazards.__func__,
        ("GET", "/__fake/state"): lambda q, arg: API.snapshot(),
        ("GET", "/__fake/stats"): ctl_stats.__func__,
        ("POST", "/__fake/bookings"): ctl_bookings.__func__,
        ("GET", "/__fake/routes"): lambda q, arg: [{"method": r.method, "path": r.path, "tool": r.tool,
                                                    "evidence": r.evidence} for r in spec.ROUTES],
    }


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # SIGTERM exits now, whatever connections are open
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ctx, ipv6=False):
        self.ssl_ctx = ctx
        if ipv6:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)

    def server_bind(self):
        # HTTPServer.server_bind would call getfqdn(), which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread, so a slow handshake blocks no one.
        request.settimeout(10)
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            STATS.inc("handshake_failures")
            log("handshake with %s failed: %s" % (client_address[0], e))
            try:
                request.close()
            except OSError:
                pass
            return
        STATS.inc("handshakes")
        tls.settimeout(Handler.timeout)
        self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request, client_address):
        if VERBOSE:
            super().handle_error(request, client_address)


def main(argv=None):
    global API, VERBOSE
    ap = argparse.ArgumentParser(description="Fake Cal ID REST API over HTTPS, for tests.")
    ap.add_argument("--cert", required=True, help="PEM certificate (chain) to serve")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--token", help="accept only this bearer token (default: any calid_...)")
    ap.add_argument("--rate-limit", type=int, default=0, metavar="N",
                    help="answer 429 past N requests a minute per key, as the API does at %d "
                         "(default 0: no limit, so long suites need no pacing)" % RATE_LIMIT)
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="seconds before an idle keep-alive connection is closed (default 60)")
    ap.add_argument("--tls-max", choices=("1.2", "1.3"), default=None, help="highest TLS version offered")
    ap.add_argument("--tls-min", choices=("1.2", "1.3"), default=None,
                    help="lowest TLS version accepted (default 1.2; 1.3 refuses TLS 1.2 clients)")
    ap.add_argument("--verbose", action="store_true", help="log connections and requests to stderr")
    args = ap.parse_args(argv)
    VERBOSE = args.verbose
    Handler.timeout = args.idle_timeout

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.tls_max == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if args.tls_min == "1.3":
        if args.tls_max == "1.2":
            ap.error("--tls-min 1.3 contradicts --tls-max 1.2")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(args.cert, args.key)

    API = Api(token=args.token, rate_limit=args.rate_limit)
    server = Server((args.host, args.port), ctx, ipv6=":" in args.host)
    port = server.server_address[1]
    if args.port_file:
        tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("listening %d\n" % port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.25)
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
