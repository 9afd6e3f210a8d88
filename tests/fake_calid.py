#!/usr/bin/env python3
"""fake_calid.py - a fake Cal ID REST API over HTTPS, for the calid-mcp tests.

Standard library only. Serves the 57 routes of the route map in
shared/calid-api.md from an in-memory, seeded state, records every API request,
and can be told to misbehave (delays, error statuses, broken framing, resets,
stalls, endless answers) through control endpoints under /__fake/.

    python3 tests/fake_calid.py --cert CERT --key KEY [--host 127.0.0.1]
                                [--port 0] [--port-file FILE] [--token TOKEN]
                                [--idle-timeout S] [--tls-max 1.2] [--tls-min 1.3]
                                [--verbose]

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
    GET    /__fake/state       the whole state as JSON
    GET    /__fake/stats       connection, handshake, resumption, request counters

Fault object: {"path": PREFIX (default: any API path), "method": M (default
any), "count": N (default 1; -1 = until cleared), "skip": N (let N matching
requests through first), "mode": MODE, ...}. Modes:
    delay            sleep delay_ms, then answer normally
    status           answer `status` (default 500) with {"success":false,
                     "message":`message`}; 429 adds Retry-After: `retry_after`
                     (default 30); `headers` adds more header fields
    nonjson          answer `status` (default 200) with an HTML page
    truncate         the real answer, but only `bytes` (default half) of the
                     body under the full Content-Length, then close (with a
                     TLS close_notify unless "close_notify": false)
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
    drop_request     on every connection, the `nth` (default 2) request is
                     read and recorded, then the connection is closed without
                     an answer (TLS close_notify, FIN): the API closing a
                     kept-alive connection as a request arrives. The request
                     is not acted on unless "act": true (then the outcome is
                     unknown to the client). Default count -1 (until cleared);
                     `count` limits how many requests it drops in all.
"kind" is accepted as another name for "mode".
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

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    ZoneInfo("Europe/Berlin")
    HAVE_TZDATA = True
except Exception:  # no zoneinfo module or no tz database: everything is UTC
    HAVE_TZDATA = False

UTC = dt.timezone.utc
MAX_BODY = 10 * 1024 * 1024      # one request body
MAX_RECORDS = 10000              # recorded requests kept (oldest dropped)
DEFAULT_LIMIT = 10               # list routes without ?limit=
MAX_LIMIT = 100
MAX_SLOT_DAYS = 92               # widest /slots and /availability range
VERBOSE = False


def log(msg):
    if VERBOSE:
        sys.stderr.write("fake_calid: %s\n" % msg)
        sys.stderr.flush()


class ApiError(Exception):
    """An answer {"success": false, "message": ...} with an HTTP status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------
# Small utilities: times, validation
# --------------------------------------------------------------------------

def iso_z(t):
    """2026-01-05T09:00:00.000Z"""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def iso_local(t, tz):
    """2026-01-05T10:00:00.000+01:00 (or ...Z when tz is UTC)."""
    if tz is UTC:
        return iso_z(t)
    t = t.astimezone(tz)
    off = t.strftime("%z")
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (t.microsecond // 1000) + off[:3] + ":" + off[3:]


def stored_time(s):
    """Parse a time this fake stored (always ISO with Z or an offset)."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def get_tz(name, field="timeZone"):
    if name is None or name == "" or name == "UTC" or name == "Etc/UTC":
        return UTC
    if not isinstance(name, str):
        raise ApiError(400, "%s must be an IANA time zone name" % field)
    if not HAVE_TZDATA:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ApiError(400, "Invalid %s: %s" % (field, name))


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(value, field, tz=UTC, end_of_day=False):
    """An ISO 8601 date or date-time. A bare date is midnight in tz, or with
    end_of_day the following midnight (an exclusive end). A date-time without
    offset is taken in tz."""
    if value is None or value == "":
        raise ApiError(400, "%s is required" % field)
    if not isinstance(value, str):
        raise ApiError(400, "%s must be an ISO 8601 date-time string" % field)
    try:
        if _DATE_ONLY.fullmatch(value):
            d = dt.date.fromisoformat(value)
            t = dt.datetime(d.year, d.month, d.day, tzinfo=tz)
            return t + dt.timedelta(days=1) if end_of_day else t
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "%s must be an ISO 8601 date-time, got %r" % (field, value))
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t


def want_int(value, field, required=True, minimum=None):
    if value is None or value == "":
        if required:
            raise ApiError(400, "%s is required" % field)
        return None
    if isinstance(value, bool):
        raise ApiError(400, "%s must be an integer" % field)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        n = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    else:
        raise ApiError(400, "%s must be an integer" % field)
    if minimum is not None and n < minimum:
        raise ApiError(400, "%s must be at least %d" % (field, minimum))
    return n


def want_str(obj, key, required=True, field=None):
    field = field or key
    v = obj.get(key)
    if v is None or (isinstance(v, str) and v.strip() == ""):
        if required:
            raise ApiError(400, "%s is required" % field)
        return None
    if not isinstance(v, str):
        raise ApiError(400, "%s must be a string" % field)
    return v


def want_bool(obj, key, default=None):
    v = obj.get(key, default)
    if v is None or isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return v == "true"
    raise ApiError(400, "%s must be a boolean" % key)


def want_email(obj, key, required=True, field=None):
    v = want_str(obj, key, required, field)
    if v is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
        raise ApiError(400, "%s must be a valid email address" % (field or key))
    return v


def slugify(text):
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "event"


def stable_uid(kind, n):
    """A Cal.com-looking 22-character uid that is the same on every run."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    x = int.from_bytes(hashlib.sha256(("%s-%s" % (kind, n)).encode()).digest(), "big")
    out = []
    for _ in range(22):
        x, r = divmod(x, 62)
        out.append(alphabet[r])
    return "".join(out)


def random_uid():
    return stable_uid("random", secrets.token_hex(16))


DAY_NAMES = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]


def parse_days(value, field="days"):
    """Days of week as Cal.com numbers, 0 = Sunday. Names are accepted too."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, "%s must be a non-empty array of weekdays (0 = Sunday ... 6 = Saturday)" % field)
    out = []
    for d in value:
        if isinstance(d, str) and d.strip().lower() in DAY_NAMES:
            n = DAY_NAMES.index(d.strip().lower())
        elif isinstance(d, str) and d.strip().lower()[:3] in [x[:3] for x in DAY_NAMES]:
            n = [x[:3] for x in DAY_NAMES].index(d.strip().lower()[:3])
        else:
            n = want_int(d, field)
            if not 0 <= n <= 6:
                raise ApiError(400, "%s entries must be 0 (Sunday) to 6 (Saturday)" % field)
        if n not in out:
            out.append(n)
    return sorted(out)


def parse_hhmm(value, field):
    """'09:00', '09:00:00' or an ISO date-time (its time part) -> minutes."""
    if isinstance(value, str):
        m = re.fullmatch(r"(?:.*T)?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?Z?", value.strip())
        if m:
            h, mi = int(m.group(1)), int(m.group(2))
            if (0 <= h < 24 and 0 <= mi < 60) or (h == 24 and mi == 0):
                return h * 60 + mi
    raise ApiError(400, "%s must be a time of day like \"09:00\"" % field)


def hhmm(minutes):
    return "%02d:%02d" % divmod(minutes, 60)


# --------------------------------------------------------------------------
# Seed data. Times are relative to the moment of the (re)seed.
# --------------------------------------------------------------------------

STANDARD_BOOKING_FIELDS = [
    {"name": "name", "type": "name", "label": "Your name", "required": True, "editable": "system"},
    {"name": "email", "type": "email", "label": "Email address", "required": True, "editable": "system"},
    {"name": "location", "type": "radioInput", "label": "Location", "required": False, "editable": "system"},
    {"name": "notes", "type": "textarea", "label": "Additional notes", "required": False, "editable": "system-but-optional"},
    {"name": "guests", "type": "multiemail", "label": "Add guests", "required": False, "editable": "system-but-optional"},
]

USERS = [
    # id, username, name, email, timeZone
    (1, "alex", "Alex Morgan", "alex@example.com", "Europe/Berlin"),
    (2, "jordan", "Jordan Lee", "jordan.lee@example.com", "America/New_York"),
    (3, "sam", "Sam Okafor", "sam.okafor@example.com", "Europe/London"),
    (4, "taylor", "Taylor Kim", "taylor.kim@example.com", "Asia/Seoul"),
]
ME = 1

WEBHOOK_TRIGGERS = [
    "BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED", "BOOKING_REQUESTED",
    "BOOKING_REJECTED", "BOOKING_PAYMENT_INITIATED", "BOOKING_PAID", "BOOKING_NO_SHOW_UPDATED",
    "MEETING_STARTED", "MEETING_ENDED", "RECORDING_READY", "FORM_SUBMITTED",
    "INSTANT_MEETING", "OOO_CREATED",
]


def seed_state(now):
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)

    def at(days, h, m=0):
        return today + dt.timedelta(days=days, hours=h, minutes=m)

    def stamp(days):
        return iso_z(at(days, 8, 0))

    users = {}
    for uid, username, name, email, tz in USERS:
        users[uid] = {
            "id": uid, "username": username, "name": name, "email": email,
            "timeZone": tz, "weekStart": "Monday", "locale": "en", "timeFormat": 24,
            "defaultScheduleId": {1: 1, 2: 3, 3: 4, 4: 5}[uid],
            "avatarUrl": None, "bio": "", "brandColor": "#292929", "darkBrandColor": "#fafafa",
            "createdDate": stamp(-400 + uid),
        }
    users[1]["bio"] = "Product consultant. Book a slot that suits you."

    def block(bid, sched, days, start, end):
        return {"id": bid, "scheduleId": sched, "days": days, "startTime": start, "endTime": end}

    schedules = [
        {"id": 1, "userId": 1, "name": "Working hours", "timeZone": "Europe/Berlin", "isDefault": True,
         "availability": [block(11, 1, [1, 2, 3, 4, 5], "09:00", "17:00")], "dateOverrides": []},
        {"id": 2, "userId": 1, "name": "Evenings", "timeZone": "Europe/Berlin", "isDefault": False,
         "availability": [block(12, 2, [2, 4], "18:00", "20:00")], "dateOverrides": []},
        {"id": 3, "userId": 2, "name": "Jordan's hours", "timeZone": "America/New_York", "isDefault": True,
         "availability": [block(13, 3, [1, 2, 3, 4, 5], "09:00", "17:00")], "dateOverrides": []},
        {"id": 4, "userId": 3, "name": "Sam's hours", "timeZone": "Europe/London", "isDefault": True,
         "availability": [block(14, 4, [1, 2, 3, 4], "08:00", "16:00")], "dateOverrides": []},
        {"id": 5, "userId": 4, "name": "Taylor's hours", "timeZone": "Asia/Seoul", "isDefault": True,
         "availability": [block(15, 5, [1, 2, 3, 4, 5], "10:00", "18:00")], "dateOverrides": []},
    ]

    def event_type(etid, title, length, description, locations, position, team_id=None,
                   scheduling=None, hosts=None, schedule_id=None):
        return {
            "id": etid, "title": title, "slug": slugify(title), "length": length,
            "description": description, "hidden": False, "position": position,
            "userId": None if team_id else ME, "teamId": team_id,
            "schedulingType": scheduling, "hosts": hosts or [],
            "scheduleId": schedule_id, "locations": locations,
            "bookingFields": copy.deepcopy(STANDARD_BOOKING_FIELDS),
            "requiresConfirmation": False, "minimumBookingNotice": 0,
            "beforeEventBuffer": 0, "afterEventBuffer": 0, "slotInterval": None,
            "price": 0, "currency": "usd", "seatsPerTimeSlot": None, "metadata": {},
        }

    def hosts(*ids):
        return [{"userId": i, "isFixed": False, "priority": 2} for i in ids]

    event_types = [
        event_type(101, "Intro call", 15, "A quick 15-minute introduction to see if we are a good fit.",
                   [{"type": "integrations:daily"}], 3),
        event_type(102, "Consultation", 30, "A 30-minute consultation about your project.",
                   [{"type": "integrations:google:meet"}], 2),
        event_type(103, "Workshop", 60, "A one-hour hands-on workshop.",
                   [{"type": "inPerson", "address": "Torstrasse 1, 10119 Berlin"}], 1, schedule_id=1),
        event_type(201, "Sales demo", 30, "See the product in action with our sales team.",
                   [{"type": "integrations:daily"}], 1, team_id=21, scheduling="ROUND_ROBIN",
                   hosts=hosts(1, 2, 3)),
        event_type(202, "Team sync", 45, "Weekly sync of the sales team.",
                   [{"type": "integrations:google:meet"}], 2, team_id=21, scheduling="COLLECTIVE",
                   hosts=[{"userId": 1, "isFixed": True, "priority": 2}, {"userId": 2, "isFixed": True, "priority": 2}]),
        event_type(203, "Support session", 20, "Get help from the support crew.",
                   [{"type": "integrations:daily"}], 1, team_id=22, scheduling="ROUND_ROBIN",
                   hosts=hosts(1, 3)),
    ]

    people = {
        "john": ("John Doe", "john.doe@example.com", "America/New_York"),
        "maria": ("Maria Garcia", "maria.garcia@example.org", "Europe/Madrid"),
        "priya": ("Priya Patel", "priya@patel.example", "Europe/London"),
        "chen": ("Chen Wei", "chen.wei@example.net", "Asia/Shanghai"),
        "lena": ("Lena Fischer", "lena.fischer@northwind.example", "Europe/Berlin"),
    }
    et_by_id = {e["id"]: e for e in event_types}

    def booking(bid, etid, who, start, status, created_days, **extra):
        et = et_by_id[etid]
        name, email, tz = people[who]
        b = {
            "id": bid, "uid": stable_uid("booking", bid),
            "title": "%s between %s and %s" % (et["title"], users[1]["name"], name),
            "description": "", "status": status,
            "startTime": iso_z(start), "endTime": iso_z(start + dt.timedelta(minutes=et["length"])),
            "eventTypeId": etid, "userId": 1,
            "user": user_ref(users[1]),
            "attendees": [{"name": name, "email": email, "timeZone": tz, "locale": "en"}],
            "location": et["locations"][0].get("address") or et["locations"][0]["type"],
            "responses": {"name": name, "email": email},
            "metadata": {}, "cancellationReason": None, "rejectionReason": None,
            "rescheduled": False, "fromReschedule": None,
            "createdAt": stamp(created_days), "updatedAt": stamp(created_days),
        }
        b.update(extra)
        return b

    # Odd minutes keep the seeded bookings off the grid that tests usually pick.
    bookings = [
        booking(501, 101, "john", at(-7, 9, 15), "accepted", -12),
        booking(502, 102, "maria", at(-2, 13, 45), "accepted", -9),
        booking(503, 102, "john", at(1, 10, 15), "accepted", -3),
        booking(504, 103, "priya", at(3, 13, 15), "accepted", -5),
        booking(505, 101, "maria", at(2, 11, 45), "cancelled", -4,
                cancellationReason="Conflict with another meeting"),
        booking(506, 102, "chen", at(5, 8, 45), "pending", -1),
        booking(507, 101, "priya", at(8, 14, 45), "accepted", -1),
        booking(508, 201, "lena", at(4, 9, 30), "accepted", -2),
    ]
    bookings[1]["responses"]["notes"] = "Please bring last quarter's numbers."

    contacts = [
        {"id": 301, "userId": 1, "name": "John Doe", "email": "john.doe@example.com",
         "phone": "+1 415 555 0100", "notes": "Met at SaaS Summit; interested in the annual plan.",
         "createdAt": stamp(-30), "updatedAt": stamp(-3)},
        {"id": 302, "userId": 1, "name": "Maria Garcia", "email": "maria.garcia@example.org",
         "phone": "+34 600 123 456", "notes": "Prefers morning meetings.",
         "createdAt": stamp(-25), "updatedAt": stamp(-9)},
        {"id": 303, "userId": 1, "name": "Priya Patel", "email": "priya@patel.example",
         "phone": "+44 20 7946 0958", "notes": "",
         "createdAt": stamp(-20), "updatedAt": stamp(-5)},
        {"id": 304, "userId": 1, "name": "Chen Wei", "email": "chen.wei@example.net",
         "phone": None, "notes": "Referred by Maria.",
         "createdAt": stamp(-6), "updatedAt": stamp(-1)},
        {"id": 305, "userId": 1, "name": "Sam Rivera", "email": "sam.rivera@example.com",
         "phone": "+1 212 555 0199", "notes": "No meetings yet.",
         "createdAt": stamp(-2), "updatedAt": stamp(-2)},
    ]

    teams = [
        {"id": 21, "name": "Acme Sales", "slug": "acme-sales", "bio": "The Acme sales team.",
         "logoUrl": None, "timeZone": "Europe/Berlin", "weekStart": "Monday", "isPrivate": False,
         "hideBranding": False, "metadata": {}, "createdAt": stamp(-200)},
        {"id": 22, "name": "Support Crew", "slug": "support-crew", "bio": "Customer support.",
         "logoUrl": None, "timeZone": "Europe/London", "weekStart": "Monday", "isPrivate": True,
         "hideBranding": False, "metadata": {}, "createdAt": stamp(-150)},
    ]

    def membership(mid, team, user, role, accepted):
        return {"id": mid, "teamId": team, "userId": user, "role": role, "accepted": accepted,
                "disableImpersonation": False}

    memberships = [
        membership(41, 21, 1, "OWNER", True),
        membership(42, 21, 2, "ADMIN", True),
        membership(43, 21, 3, "MEMBER", True),
        membership(44, 21, 4, "MEMBER", False),
        membership(45, 22, 1, "OWNER", True),
        membership(46, 22, 3, "MEMBER", True),
    ]

    webhooks = [
        {"id": 601, "userId": 1, "eventTypeId": None, "subscriberUrl": "https://hooks.example.com/calid/bookings",
         "eventTriggers": ["BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_RESCHEDULED"],
         "active": True, "payloadTemplate": None, "secret": None, "createdAt": stamp(-60)},
        {"id": 602, "userId": 1, "eventTypeId": 102,
         "subscriberUrl": "https://hooks.slack.example/services/T0000/B0000/XXXXXXXX",
         "eventTriggers": ["MEETING_ENDED"], "active": False, "payloadTemplate": None,
         "secret": None, "createdAt": stamp(-45)},
    ]

    def reserved(n, etid, start):
        et = et_by_id[etid]
        return {"uid": "5f1c2d3e-0000-4000-8000-%012d" % n, "eventTypeId": etid,
                "slotUtcStartDate": iso_z(start),
                "slotUtcEndDate": iso_z(start + dt.timedelta(minutes=et["length"])),
                "reservationDuration": 5, "reservationUntil": iso_z(now + dt.timedelta(minutes=5)),
                "userId": 1, "createdAt": iso_z(now)}

    reserved_slots = [reserved(1, 102, at(6, 9, 0)), reserved(2, 101, at(6, 10, 0))]

    return {
        "now": iso_z(now),
        "users": users,
        "schedules": schedules,
        "eventTypes": event_types,
        "bookings": bookings,
        "contacts": contacts,
        "teams": teams,
        "memberships": memberships,
        "webhooks": webhooks,
        "reservedSlots": reserved_slots,
        "nextId": 1000,
    }


def user_ref(u):
    return {"id": u["id"], "username": u["username"], "name": u["name"], "email": u["email"],
            "timeZone": u["timeZone"]}


# --------------------------------------------------------------------------
# The API: state, lookups and one method per route
# --------------------------------------------------------------------------

class Request:
    """What a route handler sees."""

    def __init__(self, method, path, query, headers, body, params):
        self.method = method
        self.path = path
        self.query_string = query
        self.q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        self.headers = headers      # dict, lowercased names
        self.raw_body = body
        self.params = params
        self._json = None
        self._parsed = False

    def content_type(self):
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self, required=False):
        """The JSON body as a dict; {} when absent (unless required)."""
        if not self._parsed:
            self._parsed = True
            if self.raw_body.strip():
                ctype = self.content_type()
                if ctype and not (ctype == "application/json" or ctype.endswith("+json")):
                    raise ApiError(415, "Content-Type must be application/json, got %s" % ctype)
                try:
                    self._json = json.loads(self.raw_body.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise ApiError(400, "Invalid JSON body: not UTF-8 (%s)" % e.reason)
                except ValueError as e:
                    raise ApiError(400, "Invalid JSON body: %s" % e)
                if not isinstance(self._json, dict):
                    raise ApiError(400, "Invalid JSON body: expected an object")
        if self._json is None:
            if required:
                raise ApiError(400, "Request body is required")
            return {}
        return self._json

    def int_param(self, name):
        v = self.params[name]
        if not re.fullmatch(r"\d{1,18}", v):
            raise ApiError(400, "Invalid %s: expected an integer, got %r" % (name, v))
        return int(v)


def ok(data, message, status=200, meta=None):
    out = {"success": True, "message": message, "data": data}
    if meta is not None:
        out["meta"] = meta
    return status, out


def paginate(req, items):
    limit = want_int(req.q.get("limit"), "limit", required=False, minimum=1)
    if limit is None:
        limit = DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise ApiError(400, "limit must be at most %d" % MAX_LIMIT)
    page = want_int(req.q.get("page"), "page", required=False, minimum=1) or 1
    total = len(items)
    meta = {"pagination": {"page": page, "limit": limit, "total": total,
                           "totalPages": int(math.ceil(total / limit))}}
    return items[(page - 1) * limit: page * limit], meta


class Api:
    ROUTES = [
        # (method, path pattern, handler) -- the 57 routes of calid-api.md
        ("GET", "/availability", "get_availability"),
        ("POST", "/availability", "create_availability"),
        ("PATCH", "/availability/{availabilityId}", "update_availability"),
        ("DELETE", "/availability/{availabilityId}", "delete_availability"),
        ("GET", "/schedule", "get_schedule"),
        ("POST", "/schedule", "create_schedule"),
        ("PATCH", "/schedule/{scheduleId}", "update_schedule"),
        ("DELETE", "/schedule/{scheduleId}", "delete_schedule"),
        ("GET", "/booking", "get_booking"),
        ("GET", "/booking/{bookingId}", "get_booking_by_id"),
        ("POST", "/booking", "create_booking"),
        ("POST", "/booking/{bookingId}/cancel", "cancel_booking"),
        ("POST", "/booking/{bookingId}/reschedule", "reschedule_booking"),
        ("PATCH", "/booking/{bookingId}/confirmation", "change_booking_confirmation_status"),
        ("PATCH", "/booking/{bookingId}/reassignBookingAutomatically", "reassign_automatically"),
        ("PATCH", "/booking/{bookingId}/reassignBookingToUser", "reassign_to_user"),
        ("GET", "/contacts", "list_contacts"),
        ("POST", "/contacts", "create_contact"),
        ("GET", "/contacts/{contactId}", "get_contact"),
        ("PATCH", "/contacts/{contactId}", "update_contact"),
        ("DELETE", "/contacts/{contactId}", "delete_contact"),
        ("GET", "/contacts/{contactId}/meetings", "get_contact_meetings"),
        ("GET", "/event-types", "get_event_types"),
        ("GET", "/event-types/{eventTypeId}", "get_event_types_by_id"),
        ("POST", "/event-types", "create_eventtype"),
        ("PATCH", "/event-types/{eventTypeId}", "update_eventtype"),
        ("DELETE", "/event-types/{eventTypeId}", "delete_eventtype"),
        ("GET", "/slots", "get_slots"),
        ("POST", "/slots/reserve", "create_slots_reserve"),
        ("GET", "/slots/{uid}", "get_slot"),
        ("PATCH", "/slots/{uid}", "update_slots"),
        ("DELETE", "/slots/{uid}", "delete_slots"),
        ("GET", "/teams", "get_teams"),
        ("POST", "/teams", "create_team"),
        ("GET", "/teams/{teamId}", "get_team"),
        ("PATCH", "/teams/{teamId}", "update_team_details"),
        ("DELETE", "/teams/{teamId}", "delete_team"),
        ("GET", "/teams/{teamId}/event-types", "get_team_event_types"),
        ("GET", "/teams/{teamId}/event-types/{eventTypeId}", "get_team_event_type"),
        ("POST", "/teams/{teamId}/event-types", "create_team_eventtype"),
        ("PATCH", "/teams/{teamId}/event-types/{eventTypeId}", "update_team_eventtype"),
        ("DELETE", "/teams/{teamId}/event-types/{eventTypeId}", "delete_team_eventtype"),
        ("GET", "/teams/{teamId}/memberships", "get_team_memberships"),
        ("GET", "/teams/{teamId}/memberships/{membershipId}", "get_team_membership"),
        ("POST", "/teams/{teamId}/memberships", "add_team_member"),
        ("PATCH", "/teams/{teamId}/memberships/{membershipId}", "update_team_membership"),
        ("DELETE", "/teams/{teamId}/memberships/{membershipId}", "remove_team_member"),
        ("GET", "/teams/{teamId}/schedules", "get_team_schedules"),
        ("GET", "/users/me", "get_users_me"),
        ("GET", "/users/{username}", "get_users"),
        ("PATCH", "/user/profile", "update_user_profile"),
        ("POST", "/users/edit-profile/avatar", "create_users_edit_profile_avatar"),
        ("GET", "/webhook", "get_webhook"),
        ("GET", "/webhook/{webhookId}", "get_webhook_by_id"),
        ("POST", "/webhook", "create_webhook"),
        ("PATCH", "/webhook/{webhookId}", "update_webhook"),
        ("DELETE", "/webhook/{webhookId}", "delete_webhook"),
    ]

    def __init__(self):
        self.lock = threading.RLock()
        self.compiled = []
        for method, pattern, name in self.ROUTES:
            rx = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
            self.compiled.append((method, re.compile(rx), getattr(self, "r_" + name)))
        self.reset()

    def reset(self):
        with self.lock:
            self.s = seed_state(dt.datetime.now(UTC))

    def snapshot(self):
        with self.lock:
            s = copy.deepcopy(self.s)
        s["users"] = [s["users"][k] for k in sorted(s["users"])]
        return s

    # ---- dispatch ----

    def handle(self, method, path, query, headers, body):
        """-> (status, json-able answer). Path is without the query string."""
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        for m, rx, fn in self.compiled:
            match = rx.match(path) if m == method else None
            if not match:
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            req = Request(method, path, query, headers, body, params)
            with self.lock:
                try:
                    return fn(req)
                except ApiError as e:
                    return e.status, {"success": False, "message": e.message}
        # an unknown path and a known path with the wrong method both answer like Express
        return 404, {"success": False, "message": "Cannot %s %s" % (method, path)}

    # ---- helpers over the state ----

    def now(self):
        return dt.datetime.now(UTC)

    def new_id(self):
        self.s["nextId"] += 1
        return self.s["nextId"]

    def me(self):
        return self.s["users"][ME]

    @staticmethod
    def find(items, key, value, what, ident=None):
        for it in items:
            if it[key] == value:
                return it
        raise ApiError(404, "%s %s not found" % (what, value if ident is None else ident))

    def event_type(self, etid, own_only=False):
        for e in self.s["eventTypes"]:
            if e["id"] == etid and (not own_only or e["teamId"] is None):
                return e
        raise ApiError(404, "Event type %s not found" % etid)

    def booking(self, req):
        raw = req.params["bookingId"]
        if re.fullmatch(r"\d{1,18}", raw):
            return self.find(self.s["bookings"], "id", int(raw), "Booking")
        # a uid works too, as in Cal.com
        for b in self.s["bookings"]:
            if b["uid"] == raw:
                return b
        raise ApiError(404, "Booking %s not found" % raw)

    def schedule_of_me(self, sid):
        for s in self.s["schedules"]:
            if s["id"] == sid and s["userId"] == ME:
                return s
        raise ApiError(404, "Schedule %s not found" % sid)

    def schedule_for_event_type(self, et):
        if et.get("scheduleId"):
            for s in self.s["schedules"]:
                if s["id"] == et["scheduleId"]:
                    return s
        default = self.me()["defaultScheduleId"]
        for s in self.s["schedules"]:
            if s["id"] == default:
                return s
        for s in self.s["schedules"]:
            if s["userId"] == ME:
                return s
        return None

    def team(self, req):
        tid = req.int_param("teamId")
        return self.find(self.s["teams"], "id", tid, "Team")

    def busy_intervals(self, exclude_booking=None):
        out = []
        for b in self.s["bookings"]:
            if b["status"] in ("accepted", "pending") and b["userId"] == ME and b is not exclude_booking:
                out.append((stored_time(b["startTime"]), stored_time(b["endTime"]), b))
        return out

    def check_free(self, start, end, exclude_booking=None):
        for s, e, b in self.busy_intervals(exclude_booking):
            if s < end and start < e:
                raise ApiError(409, "The requested time is not available: it overlaps booking %d (%s to %s)"
                               % (b["id"], b["startTime"], b["endTime"]))

    def upsert_contact(self, name, email, phone=None):
        for c in self.s["contacts"]:
            if c["email"].lower() == email.lower():
                if name and c["name"] != name:
                    c["name"] = name
                if phone and not c.get("phone"):
                    c["phone"] = phone
                c["updatedAt"] = iso_z(self.now())
                return c
        stamp = iso_z(self.now())
        c = {"id": self.new_id(), "userId": ME, "name": name or email, "email": email,
             "phone": phone, "notes": "", "createdAt": stamp, "updatedAt": stamp}
        self.s["contacts"].append(c)
        return c

    # ---- availability & schedules ----

    def my_blocks(self):
        for s in self.s["schedules"]:
            if s["userId"] == ME:
                for b in s["availability"]:
                    yield s, b

    def block_from(self, body, sched_id, bid=None, old=None):
        old = old or {}
        days = parse_days(body["days"]) if "days" in body else old.get("days")
        if days is None:
            raise ApiError(400, "days is required")
        if "startTime" not in body and "startTime" not in old:
            raise ApiError(400, "startTime is required")
        if "endTime" not in body and "endTime" not in old:
            raise ApiError(400, "endTime is required")
        start = parse_hhmm(body.get("startTime", old.get("startTime")), "startTime")
        end = parse_hhmm(body.get("endTime", old.get("endTime")), "endTime")
        if end <= start:
            raise ApiError(400, "endTime must be after startTime")
        return {"id": bid if bid is not None else self.new_id(), "scheduleId": sched_id,
                "days": days, "startTime": hhmm(start), "endTime": hhmm(end)}

    def r_get_availability(self, req):
        et = None
        if req.q.get("eventTypeId"):
            et = self.event_type(want_int(req.q["eventTypeId"], "eventTypeId"))
            sched = self.schedule_for_event_type(et)
        elif req.q.get("scheduleId"):
            sched = self.schedule_of_me(want_int(req.q["scheduleId"], "scheduleId"))
        else:
            sched = self.schedule_for_event_type({})
        out_tz_name = req.q.get("timeZone") or sched["timeZone"]
        out_tz = get_tz(out_tz_name)
        now = self.now()
        start = parse_time(req.q.get("dateFrom") or iso_z(now)[:10], "dateFrom", out_tz)
        end = parse_time(req.q.get("dateTo") or iso_z(now + dt.timedelta(days=7))[:10], "dateTo", out_tz,
                         end_of_day=True)
        if end <= start:
            raise ApiError(400, "dateTo must be after dateFrom")
        if end - start > dt.timedelta(days=MAX_SLOT_DAYS):
            raise ApiError(400, "Date range too large: at most %d days" % MAX_SLOT_DAYS)
        ranges = [{"start": iso_local(s, out_tz), "end": iso_local(e, out_tz)}
                  for s, e in self.working_ranges(sched, start, end)]
        busy = [{"start": iso_local(s, out_tz), "end": iso_local(e, out_tz), "title": b["title"],
                 "source": "booking", "bookingId": b["id"]}
                for s, e, b in sorted(self.busy_intervals(), key=lambda x: x[0])
                if s < end and start < e]
        working = [{"days": b["days"], "startTime": parse_hhmm(b["startTime"], "startTime"),
                    "endTime": parse_hhmm(b["endTime"], "endTime"), "userId": sched["userId"]}
                   for b in sched["availability"]]
        return ok({"scheduleId": sched["id"], "eventTypeId": et["id"] if et else None,
                   "timeZone": out_tz_name if out_tz is not UTC else "UTC",
                   "scheduleTimeZone": sched["timeZone"], "workingHours": working,
                   "dateRanges": ranges, "busy": busy, "dateOverrides": sched.get("dateOverrides", [])},
                  "Availability fetched successfully")

    def r_create_availability(self, req):
        body = req.json(required=True)
        sched = self.schedule_of_me(want_int(body.get("scheduleId"), "scheduleId"))
        blk = self.block_from(body, sched["id"])
        sched["availability"].append(blk)
        return ok(blk, "Availability created successfully", 201)

    def r_update_availability(self, req):
        aid = req.int_param("availabilityId")
        body = req.json(required=True)
        for sched, blk in self.my_blocks():
            if blk["id"] == aid:
                new = self.block_from(body, sched["id"], bid=aid, old=blk)
                if "scheduleId" in body and want_int(body["scheduleId"], "scheduleId") != sched["id"]:
                    target = self.schedule_of_me(want_int(body["scheduleId"], "scheduleId"))
                    sched["availability"].remove(blk)
                    new["scheduleId"] = target["id"]
                    target["availability"].append(new)
                else:
                    blk.clear()
                    blk.update(new)
                    new = blk
                return ok(new, "Availability updated successfully")
        raise ApiError(404, "Availability %d not found" % aid)

    def r_delete_availability(self, req):
        aid = req.int_param("availabilityId")
        for sched, blk in self.my_blocks():
            if blk["id"] == aid:
                sched["availability"].remove(blk)
                return ok(blk, "Availability %d deleted successfully" % aid)
        raise ApiError(404, "Availability %d not found" % aid)

    def r_get_schedule(self, req):
        items = [s for s in self.s["schedules"] if s["userId"] == ME]
        page, meta = paginate(req, items)
        return ok(page, "Schedules fetched successfully", meta=meta)

    def apply_schedule_fields(self, sched, body):
        if "name" in body:
            sched["name"] = want_str(body, "name")
        if "timeZone" in body:
            get_tz(body["timeZone"])
            sched["timeZone"] = body["timeZone"]
        if "availability" in body:
            if not isinstance(body["availability"], list):
                raise ApiError(400, "availability must be an array")
            sched["availability"] = [self.block_from(b if isinstance(b, dict) else {}, sched["id"])
                                     for b in body["availability"]]
        if "dateOverrides" in body:
            if not isinstance(body["dateOverrides"], list):
                raise ApiError(400, "dateOverrides must be an array")
            sched["dateOverrides"] = body["dateOverrides"]
        if want_bool(body, "isDefault"):
            for s in self.s["schedules"]:
                if s["userId"] == ME:
                    s["isDefault"] = False
            sched["isDefault"] = True
            self.me()["defaultScheduleId"] = sched["id"]

    def r_create_schedule(self, req):
        body = req.json(required=True)
        want_str(body, "name")
        sched = {"id": self.new_id(), "userId": ME, "name": "", "timeZone": self.me()["timeZone"],
                 "isDefault": False, "availability": [], "dateOverrides": []}
        if "availability" not in body:
            sched["availability"] = [self.block_from({"days": [1, 2, 3, 4, 5], "startTime": "09:00",
                                                      "endTime": "17:00"}, sched["id"])]
        self.apply_schedule_fields(sched, body)
        self.s["schedules"].append(sched)
        return ok(sched, "Schedule created successfully", 201)

    def r_update_schedule(self, req):
        sched = self.schedule_of_me(req.int_param("scheduleId"))
        body = req.json(required=True)
        if body.get("isDefault") is False and sched["isDefault"]:
            raise ApiError(400, "Cannot unset the default schedule; make another schedule the default")
        self.apply_schedule_fields(sched, body)
        return ok(sched, "Schedule updated successfully")

    def r_delete_schedule(self, req):
        sched = self.schedule_of_me(req.int_param("scheduleId"))
        if sched["isDefault"]:
            raise ApiError(400, "Cannot delete the default schedule")
        self.s["schedules"].remove(sched)
        for e in self.s["eventTypes"]:
            if e.get("scheduleId") == sched["id"]:
                e["scheduleId"] = None
        return ok(sched, "Schedule %d deleted successfully" % sched["id"])

    # ---- bookings ----

    STATUS_FILTERS = ("upcoming", "past", "cancelled", "unconfirmed")

    def booking_class(self, b, now):
        if b["status"] in ("cancelled", "rejected"):
            return "cancelled"
        if stored_time(b["endTime"]) < now:
            return "past"
        return "unconfirmed" if b["status"] == "pending" else "upcoming"

    def r_get_booking(self, req):
        now = self.now()
        wanted = [s.strip() for s in (req.q.get("status") or "upcoming").split(",") if s.strip()]
        for s in wanted:
            if s not in self.STATUS_FILTERS:
                raise ApiError(400, "status must be one of %s" % ", ".join(self.STATUS_FILTERS))
        tz = get_tz(req.q.get("timeZone"))
        after = parse_time(req.q["afterStart"], "afterStart", tz) if req.q.get("afterStart") else None
        before = parse_time(req.q["beforeEnd"], "beforeEnd", tz, end_of_day=True) if req.q.get("beforeEnd") else None
        created = parse_time(req.q["afterCreatedDate"], "afterCreatedDate", tz) if req.q.get("afterCreatedDate") else None
        etid = want_int(req.q.get("eventTypeId"), "eventTypeId", required=False)
        email = (req.q.get("attendeeEmail") or "").lower()
        items = []
        for b in self.s["bookings"]:
            if self.booking_class(b, now) not in wanted:
                continue
            if after and stored_time(b["startTime"]) < after:
                continue
            if before and stored_time(b["endTime"]) > before:
                continue
            if created and stored_time(b["createdAt"]) < created:
                continue
            if etid is not None and b["eventTypeId"] != etid:
                continue
            if email and email not in [a["email"].lower() for a in b["attendees"]]:
                continue
            items.append(b)
        items.sort(key=lambda b: b["startTime"], reverse=(wanted == ["past"]))
        page, meta = paginate(req, items)
        return ok(page, "Bookings fetched successfully", meta=meta)

    def r_get_booking_by_id(self, req):
        return ok(self.booking(req), "Booking fetched successfully")

    def r_create_booking(self, req):
        body = req.json(required=True)
        etid = want_int(body.get("eventTypeId"), "eventTypeId")
        if body.get("start") in (None, ""):
            raise ApiError(400, "start is required")
        if body.get("timeZone") in (None, ""):
            raise ApiError(400, "timeZone is required")
        tz = get_tz(body["timeZone"])
        start = parse_time(body["start"], "start", tz)
        responses = body.get("responses")
        if responses is None:
            raise ApiError(400, "responses is required")
        if not isinstance(responses, dict):
            raise ApiError(400, "responses must be an object")
        name = want_str(responses, "name", field="responses.name")
        email = want_email(responses, "email", field="responses.email")
        guests = responses.get("guests") or []
        if not isinstance(guests, list) or not all(isinstance(g, str) and "@" in g for g in guests):
            raise ApiError(400, "responses.guests must be an array of email addresses")
        et = self.event_type(etid)
        if body.get("end") not in (None, ""):
            end = parse_time(body["end"], "end", tz)
            if end <= start:
                raise ApiError(400, "end must be after start")
        else:
            end = start + dt.timedelta(minutes=et["length"])
        now = self.now()
        if start < now:
            raise ApiError(400, "Cannot book a time in the past (%s)" % iso_z(start))
        self.check_free(start, end)
        loc = responses.get("location")
        if isinstance(loc, dict):
            location = loc.get("optionValue") or loc.get("value")
        elif isinstance(loc, str):
            location = loc
        else:
            location = et["locations"][0].get("address") or et["locations"][0]["type"] if et["locations"] else None
        me = self.me()
        bid = self.new_id()
        stamp = iso_z(now)
        b = {
            "id": bid, "uid": random_uid(),
            "title": "%s between %s and %s" % (et["title"], me["name"], name),
            "description": responses.get("notes") or "",
            "status": "pending" if et.get("requiresConfirmation") else "accepted",
            "startTime": iso_z(start), "endTime": iso_z(end),
            "eventTypeId": et["id"], "userId": ME, "user": user_ref(me),
            "attendees": [{"name": name, "email": email, "timeZone": body["timeZone"],
                           "locale": body.get("language") or "en"}]
                         + [{"name": g, "email": g, "timeZone": body["timeZone"], "locale": "en"} for g in guests],
            "location": location, "responses": responses,
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
            "language": body.get("language") or "en",
            "cancellationReason": None, "rejectionReason": None,
            "rescheduled": False, "fromReschedule": None,
            "createdAt": stamp, "updatedAt": stamp,
        }
        self.s["bookings"].append(b)
        self.upsert_contact(name, email, responses.get("attendeePhoneNumber") or responses.get("phone"))
        return ok(b, "Booking created successfully", 201)

    def r_cancel_booking(self, req):
        body = req.json(required=True)
        b = self.booking(req)
        if b["status"] in ("cancelled", "rejected"):
            raise ApiError(400, "Booking %d is already cancelled" % b["id"])
        b["status"] = "cancelled"
        b["cancellationReason"] = body.get("cancellationReason")
        b["cancelledBy"] = self.me()["email"]
        for k in ("allRemainingBookings", "seatUid", "autoRefund"):
            if k in body:
                b.setdefault("metadata", {})[k] = body[k]
        b["updatedAt"] = iso_z(self.now())
        return ok(b, "Booking cancelled successfully")

    def r_reschedule_booking(self, req):
        """As Cal.com does it: a new booking at the new time; the old one is
        marked cancelled + rescheduled and points at the new one."""
        body = req.json(required=True)
        old = self.booking(req)
        if old["status"] in ("cancelled", "rejected"):
            raise ApiError(400, "Booking %d is cancelled and cannot be rescheduled" % old["id"])
        tz_name = body.get("timeZone")
        if not tz_name and old["attendees"]:
            tz_name = old["attendees"][0]["timeZone"]
        tz = get_tz(tz_name)
        start = parse_time(body.get("start"), "start", tz)
        length = stored_time(old["endTime"]) - stored_time(old["startTime"])
        end = parse_time(body["end"], "end", tz) if body.get("end") else start + length
        if end <= start:
            raise ApiError(400, "end must be after start")
        now = self.now()
        if start < now:
            raise ApiError(400, "Cannot reschedule to a time in the past (%s)" % iso_z(start))
        self.check_free(start, end, exclude_booking=old)
        new = copy.deepcopy(old)
        stamp = iso_z(now)
        new.update({"id": self.new_id(), "uid": random_uid(), "startTime": iso_z(start),
                    "endTime": iso_z(end), "fromReschedule": old["uid"], "rescheduledFromId": old["id"],
                    "rescheduled": False, "createdAt": stamp, "updatedAt": stamp})
        old.update({"status": "cancelled", "rescheduled": True, "rescheduledToUid": new["uid"],
                    "rescheduledToId": new["id"],
                    "cancellationReason": body.get("rescheduledReason") or body.get("reschedulingReason"),
                    "updatedAt": stamp})
        if body.get("rescheduledReason"):
            new["rescheduledReason"] = body["rescheduledReason"]
        self.s["bookings"].append(new)
        return ok(new, "Booking rescheduled successfully")

    def r_change_booking_confirmation_status(self, req):
        body = req.json(required=True)
        status = body.get("status")
        if status not in ("accept", "decline"):
            raise ApiError(400, "status must be \"accept\" or \"decline\"")
        b = self.booking(req)
        if b["status"] != "pending":
            raise ApiError(400, "Booking %d is not awaiting confirmation (status %s)" % (b["id"], b["status"]))
        if status == "accept":
            b["status"] = "accepted"
        else:
            b["status"] = "rejected"
            b["rejectionReason"] = body.get("reason")
        b["updatedAt"] = iso_z(self.now())
        return ok(b, "Booking %s" % ("accepted" if status == "accept" else "declined"))

    def reassignable(self, b):
        if b["status"] in ("cancelled", "rejected"):
            raise ApiError(400, "Booking %d is cancelled and cannot be reassigned" % b["id"])

    def set_host(self, b, user, reason):
        b["userId"] = user["id"]
        b["user"] = user_ref(user)
        b["reassignedById"] = ME
        b["reassignReason"] = reason
        b["updatedAt"] = iso_z(self.now())

    def r_reassign_automatically(self, req):
        body = req.json()
        b = self.booking(req)
        self.reassignable(b)
        et = self.event_type(b["eventTypeId"])
        candidates = [h["userId"] for h in et.get("hosts", [])]
        if len(candidates) < 2:
            # not a team event: round-robin over the members of my teams
            my_teams = {m["teamId"] for m in self.s["memberships"] if m["userId"] == ME}
            candidates = sorted({m["userId"] for m in self.s["memberships"]
                                 if m["teamId"] in my_teams and m["accepted"]})
        candidates = [c for c in candidates if c in self.s["users"]]
        if len(candidates) < 2:
            raise ApiError(400, "No other host is available to take booking %d" % b["id"])
        cur = b["userId"]
        nxt = candidates[(candidates.index(cur) + 1) % len(candidates)] if cur in candidates else candidates[0]
        self.set_host(b, self.s["users"][nxt], body.get("reassignReason") or body.get("reason"))
        return ok(b, "Booking reassigned to %s" % self.s["users"][nxt]["name"])

    def r_reassign_to_user(self, req):
        body = req.json(required=True)
        uid = want_int(body.get("userId", req.q.get("userId")), "userId")
        b = self.booking(req)
        self.reassignable(b)
        if uid not in self.s["users"]:
            raise ApiError(404, "User %d not found" % uid)
        if b["userId"] == uid:
            raise ApiError(400, "Booking %d is already assigned to user %d" % (b["id"], uid))
        self.set_host(b, self.s["users"][uid], body.get("reassignReason") or body.get("reason"))
        return ok(b, "Booking reassigned to %s" % self.s["users"][uid]["name"])

    # ---- contacts ----

    def contact(self, req):
        return self.find(self.s["contacts"], "id", req.int_param("contactId"), "Contact")

    def r_list_contacts(self, req):
        items = self.s["contacts"]
        term = (req.q.get("search") or req.q.get("q") or "").lower()
        if term:
            items = [c for c in items if term in c["name"].lower() or term in c["email"].lower()]
        items = sorted(items, key=lambda c: c["name"].lower())
        page, meta = paginate(req, items)
        return ok(page, "Contacts fetched successfully", meta=meta)

    def contact_fields(self, body, c):
        if "name" in body:
            c["name"] = want_str(body, "name")
        if "email" in body:
            email = want_email(body, "email")
            for other in self.s["contacts"]:
                if other is not c and other["email"].lower() == email.lower():
                    raise ApiError(409, "A contact with email %s already exists (id %d)" % (email, other["id"]))
            c["email"] = email
        for k in ("phone", "notes"):
            if k in body:
                if body[k] is not None and not isinstance(body[k], str):
                    raise ApiError(400, "%s must be a string" % k)
                c[k] = body[k]
        for k, v in body.items():
            if k not in ("id", "userId", "createdAt", "updatedAt", "name", "email", "phone", "notes"):
                c[k] = v
        c["updatedAt"] = iso_z(self.now())

    def r_create_contact(self, req):
        body = req.json(required=True)
        want_str(body, "name")
        want_email(body, "email")
        stamp = iso_z(self.now())
        c = {"id": None, "userId": ME, "name": "", "email": "", "phone": None, "notes": "",
             "createdAt": stamp, "updatedAt": stamp}
        self.contact_fields(body, c)
        c["id"] = self.new_id()
        self.s["contacts"].append(c)
        return ok(c, "Contact created successfully", 201)

    def r_get_contact(self, req):
        return ok(self.contact(req), "Contact fetched successfully")

    def r_update_contact(self, req):
        c = self.contact(req)
        self.contact_fields(req.json(required=True), c)
        return ok(c, "Contact updated successfully")

    def r_delete_contact(self, req):
        c = self.contact(req)
        self.s["contacts"].remove(c)
        return ok(c, "Contact %d deleted successfully" % c["id"])

    def r_get_contact_meetings(self, req):
        c = self.contact(req)
        email = c["email"].lower()
        items = [b for b in self.s["bookings"] if email in [a["email"].lower() for a in b["attendees"]]]
        items.sort(key=lambda b: b["startTime"], reverse=True)
        page, meta = paginate(req, items)
        return ok(page, "Meetings with %s fetched successfully" % c["name"], meta=meta)

    # ---- event types (own and team) ----

    ET_DEFAULTS = {
        "description": "", "hidden": False, "position": 0, "schedulingType": None, "hosts": [],
        "scheduleId": None, "locations": [{"type": "integrations:daily"}],
        "requiresConfirmation": False, "minimumBookingNotice": 0, "beforeEventBuffer": 0,
        "afterEventBuffer": 0, "slotInterval": None, "price": 0, "currency": "usd",
        "seatsPerTimeSlot": None, "metadata": {},
    }

    def et_fields(self, body, e, siblings):
        for k, v in body.items():
            if k in ("id", "userId", "teamId"):
                continue
            if k in ("length", "lengthInMinutes"):
                e["length"] = want_int(v, k, minimum=1)
                if e["length"] > 720:
                    raise ApiError(400, "%s must be at most 720 minutes" % k)
            elif k == "title":
                e["title"] = want_str(body, "title")
            elif k == "slug":
                s = want_str(body, "slug")
                if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", s):
                    raise ApiError(400, "slug may hold only lowercase letters, digits and single dashes")
                e["slug"] = s
            elif k in ("hidden", "requiresConfirmation"):
                e[k] = want_bool(body, k)
            elif k in ("minimumBookingNotice", "beforeEventBuffer", "afterEventBuffer", "slotInterval",
                       "position", "price"):
                e[k] = want_int(v, k, required=False, minimum=0)
            elif k == "scheduleId":
                e[k] = None if v is None else self.schedule_of_me(want_int(v, k))["id"]
            elif k in ("locations", "bookingFields", "hosts") and not isinstance(v, list):
                raise ApiError(400, "%s must be an array" % k)
            elif k == "schedulingType" and v not in (None, "ROUND_ROBIN", "COLLECTIVE", "MANAGED"):
                raise ApiError(400, "schedulingType must be ROUND_ROBIN, COLLECTIVE or MANAGED")
            else:
                e[k] = v
        if "lengthInMinutes" in e:
            del e["lengthInMinutes"]
        for other in siblings:
            if other is not e and other["slug"] == e["slug"]:
                raise ApiError(409, "An event type with slug '%s' already exists (id %d)" % (e["slug"], other["id"]))

    def new_event_type(self, body, team_id, siblings):
        title = want_str(body, "title")
        if body.get("length") is None and body.get("lengthInMinutes") is None:
            raise ApiError(400, "length is required")
        e = {"id": None, "title": title, "slug": slugify(title), "length": None,
             "userId": None if team_id else ME, "teamId": team_id}
        e.update(copy.deepcopy(self.ET_DEFAULTS))
        e["bookingFields"] = copy.deepcopy(STANDARD_BOOKING_FIELDS)
        self.et_fields(body, e, siblings)
        e["id"] = self.new_id()
        self.s["eventTypes"].append(e)
        return e

    def own_event_types(self):
        return [e for e in self.s["eventTypes"] if e["teamId"] is None]

    def r_get_event_types(self, req):
        items = self.own_event_types()
        hidden = req.q.get("hidden")
        if hidden not in (None, ""):
            if hidden not in ("true", "false"):
                raise ApiError(400, "hidden must be true or false")
            items = [e for e in items if e["hidden"] == (hidden == "true")]
        order_by = req.q.get("orderBy") or "position"
        if order_by not in ("position", "id", "title", "length", "slug"):
            raise ApiError(400, "orderBy must be one of position, id, title, length, slug")
        order_dir = (req.q.get("orderDir") or ("desc" if order_by == "position" else "asc")).lower()
        if order_dir not in ("asc", "desc"):
            raise ApiError(400, "orderDir must be asc or desc")
        def key(e):
            v = e.get(order_by)
            return (str(v).lower() if order_by in ("title", "slug") else (v if isinstance(v, int) else -1), e["id"])
        items = sorted(items, key=key, reverse=(order_dir == "desc"))
        page, meta = paginate(req, items)
        return ok(page, "Event types fetched successfully", meta=meta)

    def r_get_event_types_by_id(self, req):
        return ok(self.event_type(req.int_param("eventTypeId"), own_only=True), "Event type fetched successfully")

    def r_create_eventtype(self, req):
        e = self.new_event_type(req.json(required=True), None, self.own_event_types())
        return ok(e, "Event type created successfully", 201)

    def r_update_eventtype(self, req):
        e = self.event_type(req.int_param("eventTypeId"), own_only=True)
        self.et_fields(req.json(required=True), e, self.own_event_types())
        return ok(e, "Event type updated successfully")

    def r_delete_eventtype(self, req):
        e = self.event_type(req.int_param("eventTypeId"), own_only=True)
        self.s["eventTypes"].remove(e)
        return ok(e, "Event type %d deleted successfully" % e["id"])

    # ---- slots ----

    def working_ranges(self, sched, start, end):
        """Concrete [s, e) UTC ranges of the schedule's working hours that meet [start, end)."""
        tz = get_tz(sched["timeZone"])
        out = []
        d = start.astimezone(tz).date() - dt.timedelta(days=1)
        last = end.astimezone(tz).date() + dt.timedelta(days=1)
        while d <= last:
            weekday = d.isoweekday() % 7    # Cal.com: 0 = Sunday
            for blk in sched["availability"]:
                if weekday in blk["days"]:
                    a = parse_hhmm(blk["startTime"], "startTime")
                    b = parse_hhmm(blk["endTime"], "endTime")
                    base = dt.datetime(d.year, d.month, d.day, tzinfo=tz)
                    s = (base + dt.timedelta(minutes=a)).astimezone(UTC)
                    e = (base + dt.timedelta(minutes=b)).astimezone(UTC)
                    if s < end and start < e:
                        out.append((max(s, start), min(e, end)))
            d += dt.timedelta(days=1)
        return sorted(out)

    def compute_slots(self, et, start, end, out_tz):
        sched = self.schedule_for_event_type(et)
        slots = {}
        if sched is None:
            return slots
        tz = get_tz(sched["timeZone"])
        length = dt.timedelta(minutes=et["length"])
        step = dt.timedelta(minutes=et.get("slotInterval") or et["length"])
        busy = [(s, e) for s, e, _ in self.busy_intervals()]
        busy += [(stored_time(r["slotUtcStartDate"]), stored_time(r["slotUtcEndDate"]))
                 for r in self.s["reservedSlots"] if r["eventTypeId"] == et["id"]]
        now = self.now()
        seen = set()
        d = start.astimezone(tz).date() - dt.timedelta(days=1)
        last = end.astimezone(tz).date() + dt.timedelta(days=1)
        while d <= last:
            weekday = d.isoweekday() % 7
            base = dt.datetime(d.year, d.month, d.day, tzinfo=tz)
            for blk in sched["availability"]:
                if weekday not in blk["days"]:
                    continue
                t = base + dt.timedelta(minutes=parse_hhmm(blk["startTime"], "startTime"))
                stop = base + dt.timedelta(minutes=parse_hhmm(blk["endTime"], "endTime"))
                while t + length <= stop:
                    tu = t.astimezone(UTC)
                    if start <= tu < end and tu >= now and tu not in seen and \
                            not any(bs < tu + length and tu < be for bs, be in busy):
                        seen.add(tu)
                    t += step
            d += dt.timedelta(days=1)
        for tu in sorted(seen):
            key = tu.astimezone(out_tz).strftime("%Y-%m-%d")
            slots.setdefault(key, []).append({"time": iso_local(tu, out_tz)})
        return slots

    def r_get_slots(self, req):
        if not req.q.get("eventTypeId") and not req.q.get("eventTypeSlug"):
            raise ApiError(400, "eventTypeId is required")
        if not req.q.get("start") and not req.q.get("startTime"):
            raise ApiError(400, "start is required")
        if not req.q.get("end") and not req.q.get("endTime"):
            raise ApiError(400, "end is required")
        if req.q.get("eventTypeId"):
            et = self.event_type(want_int(req.q["eventTypeId"], "eventTypeId"))
        else:
            et = self.find(self.own_event_types(), "slug", req.q["eventTypeSlug"], "Event type")
        out_tz = get_tz(req.q.get("timeZone"))
        start = parse_time(req.q.get("start") or req.q.get("startTime"), "start", out_tz)
        end = parse_time(req.q.get("end") or req.q.get("endTime"), "end", out_tz, end_of_day=True)
        if end <= start:
            raise ApiError(400, "end must be after start")
        if end - start > dt.timedelta(days=MAX_SLOT_DAYS):
            raise ApiError(400, "Date range too large: at most %d days" % MAX_SLOT_DAYS)
        return ok({"slots": self.compute_slots(et, start, end, out_tz)}, "Slots fetched successfully")

    def reserved(self, req):
        return self.find(self.s["reservedSlots"], "uid", req.params["uid"], "Reserved slot")

    def reservation_fields(self, body, r):
        if "eventTypeId" in body:
            r["eventTypeId"] = self.event_type(want_int(body["eventTypeId"], "eventTypeId"))["id"]
        et = self.event_type(r["eventTypeId"])
        if "slotUtcStartDate" in body:
            start = parse_time(body["slotUtcStartDate"], "slotUtcStartDate")
            r["slotUtcStartDate"] = iso_z(start)
            if "slotUtcEndDate" not in body:
                r["slotUtcEndDate"] = iso_z(start + dt.timedelta(minutes=et["length"]))
        if "slotUtcEndDate" in body:
            r["slotUtcEndDate"] = iso_z(parse_time(body["slotUtcEndDate"], "slotUtcEndDate"))
        if stored_time(r["slotUtcEndDate"]) <= stored_time(r["slotUtcStartDate"]):
            raise ApiError(400, "slotUtcEndDate must be after slotUtcStartDate")
        if "reservationDuration" in body:
            r["reservationDuration"] = want_int(body["reservationDuration"], "reservationDuration", minimum=1)
        r["reservationUntil"] = iso_z(self.now() + dt.timedelta(minutes=r["reservationDuration"]))

    def r_create_slots_reserve(self, req):
        body = req.json(required=True)
        want_int(body.get("eventTypeId"), "eventTypeId")
        parse_time(body.get("slotUtcStartDate"), "slotUtcStartDate")
        r = {"uid": None, "eventTypeId": None, "slotUtcStartDate": None, "slotUtcEndDate": None,
             "reservationDuration": 5, "userId": ME, "createdAt": iso_z(self.now())}
        self.reservation_fields(body, r)
        start, end = stored_time(r["slotUtcStartDate"]), stored_time(r["slotUtcEndDate"])
        for other in self.s["reservedSlots"]:
            if other["eventTypeId"] == r["eventTypeId"] and \
                    stored_time(other["slotUtcStartDate"]) < end and start < stored_time(other["slotUtcEndDate"]):
                raise ApiError(409, "This slot is already reserved (%s)" % other["uid"])
        self.check_free(start, end)
        r["uid"] = "%s-%s-4%s-8%s-%s" % (secrets.token_hex(4), secrets.token_hex(2), secrets.token_hex(2)[1:],
                                         secrets.token_hex(2)[1:], secrets.token_hex(6))
        self.s["reservedSlots"].append(r)
        return ok(r, "Slot reserved successfully", 201)

    def r_get_slot(self, req):
        return ok(self.reserved(req), "Reserved slot fetched successfully")

    def r_update_slots(self, req):
        r = self.reserved(req)
        body = req.json(required=True)
        trial = dict(r)
        self.reservation_fields(body, trial)
        r.update(trial)
        return ok(r, "Reserved slot updated successfully")

    def r_delete_slots(self, req):
        r = self.reserved(req)
        self.s["reservedSlots"].remove(r)
        return ok(r, "Reserved slot %s deleted successfully" % r["uid"])

    # ---- teams ----

    def my_team_ids(self):
        return {m["teamId"] for m in self.s["memberships"] if m["userId"] == ME}

    def team_view(self, t):
        out = dict(t)
        out["membersCount"] = sum(1 for m in self.s["memberships"] if m["teamId"] == t["id"])
        return out

    def r_get_teams(self, req):
        mine = self.my_team_ids()
        items = [self.team_view(t) for t in self.s["teams"] if t["id"] in mine]
        page, meta = paginate(req, items)
        return ok(page, "Teams fetched successfully", meta=meta)

    def team_fields(self, body, t):
        for k, v in body.items():
            if k in ("id", "createdAt", "membersCount"):
                continue
            if k == "name":
                t["name"] = want_str(body, "name")
            elif k == "slug":
                s = want_str(body, "slug")
                if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", s):
                    raise ApiError(400, "slug may hold only lowercase letters, digits and single dashes")
                t["slug"] = s
            elif k == "timeZone":
                get_tz(v)
                t[k] = v
            else:
                t[k] = v
        for other in self.s["teams"]:
            if other is not t and other["slug"] == t["slug"]:
                raise ApiError(409, "A team with slug '%s' already exists" % t["slug"])

    def r_create_team(self, req):
        body = req.json(required=True)
        name = want_str(body, "name")
        t = {"id": None, "name": name, "slug": slugify(name), "bio": "", "logoUrl": None,
             "timeZone": self.me()["timeZone"], "weekStart": "Monday", "isPrivate": False,
             "hideBranding": False, "metadata": {}, "createdAt": iso_z(self.now())}
        self.team_fields(body, t)
        t["id"] = self.new_id()
        self.s["teams"].append(t)
        self.s["memberships"].append({"id": self.new_id(), "teamId": t["id"], "userId": ME, "role": "OWNER",
                                      "accepted": True, "disableImpersonation": False})
        return ok(self.team_view(t), "Team created successfully", 201)

    def r_get_team(self, req):
        return ok(self.team_view(self.team(req)), "Team fetched successfully")

    def r_update_team_details(self, req):
        t = self.team(req)
        self.team_fields(req.json(required=True), t)
        return ok(self.team_view(t), "Team updated successfully")

    def r_delete_team(self, req):
        t = self.team(req)
        view = self.team_view(t)
        self.s["teams"].remove(t)
        self.s["memberships"] = [m for m in self.s["memberships"] if m["teamId"] != t["id"]]
        self.s["eventTypes"] = [e for e in self.s["eventTypes"] if e["teamId"] != t["id"]]
        return ok(view, "Team %d deleted successfully" % t["id"])

    def team_event_type(self, req, t):
        etid = req.int_param("eventTypeId")
        for e in self.s["eventTypes"]:
            if e["id"] == etid and e["teamId"] == t["id"]:
                return e
        raise ApiError(404, "Event type %d not found in team %d" % (etid, t["id"]))

    def team_event_types(self, t):
        return [e for e in self.s["eventTypes"] if e["teamId"] == t["id"]]

    def r_get_team_event_types(self, req):
        t = self.team(req)
        page, meta = paginate(req, sorted(self.team_event_types(t), key=lambda e: e["id"]))
        return ok(page, "Team event types fetched successfully", meta=meta)

    def r_get_team_event_type(self, req):
        t = self.team(req)
        return ok(self.team_event_type(req, t), "Team event type fetched successfully")

    def r_create_team_eventtype(self, req):
        t = self.team(req)
        body = req.json(required=True)
        body.setdefault("schedulingType", "COLLECTIVE")
        if "hosts" not in body:
            body["hosts"] = [{"userId": m["userId"], "isFixed": body["schedulingType"] == "COLLECTIVE",
                              "priority": 2}
                             for m in self.s["memberships"] if m["teamId"] == t["id"] and m["accepted"]]
        e = self.new_event_type(body, t["id"], self.team_event_types(t))
        return ok(e, "Team event type created successfully", 201)

    def r_update_team_eventtype(self, req):
        t = self.team(req)
        e = self.team_event_type(req, t)
        self.et_fields(req.json(required=True), e, self.team_event_types(t))
        return ok(e, "Team event type updated successfully")

    def r_delete_team_eventtype(self, req):
        t = self.team(req)
        e = self.team_event_type(req, t)
        self.s["eventTypes"].remove(e)
        return ok(e, "Team event type %d deleted successfully" % e["id"])

    def membership_view(self, m):
        out = dict(m)
        u = self.s["users"].get(m["userId"])
        out["user"] = user_ref(u) if u else None
        return out

    def membership(self, req, t):
        mid = req.int_param("membershipId")
        for m in self.s["memberships"]:
            if m["id"] == mid and m["teamId"] == t["id"]:
                return m
        raise ApiError(404, "Membership %d not found in team %d" % (mid, t["id"]))

    def membership_fields(self, body, m):
        if "role" in body:
            if body["role"] not in ("MEMBER", "ADMIN", "OWNER"):
                raise ApiError(400, "role must be MEMBER, ADMIN or OWNER")
            m["role"] = body["role"]
        for k in ("accepted", "disableImpersonation"):
            if k in body:
                m[k] = want_bool(body, k)

    def r_get_team_memberships(self, req):
        t = self.team(req)
        items = [self.membership_view(m) for m in self.s["memberships"] if m["teamId"] == t["id"]]
        page, meta = paginate(req, items)
        return ok(page, "Team memberships fetched successfully", meta=meta)

    def r_get_team_membership(self, req):
        t = self.team(req)
        return ok(self.membership_view(self.membership(req, t)), "Team membership fetched successfully")

    def r_add_team_member(self, req):
        t = self.team(req)
        body = req.json(required=True)
        uid = want_int(body.get("userId"), "userId")
        if uid not in self.s["users"]:
            raise ApiError(404, "User %d not found" % uid)
        for m in self.s["memberships"]:
            if m["teamId"] == t["id"] and m["userId"] == uid:
                raise ApiError(409, "User %d is already a member of team %d (membership %d)" % (uid, t["id"], m["id"]))
        m = {"id": None, "teamId": t["id"], "userId": uid, "role": "MEMBER", "accepted": False,
             "disableImpersonation": False}
        self.membership_fields(body, m)
        m["id"] = self.new_id()
        self.s["memberships"].append(m)
        return ok(self.membership_view(m), "Team membership created successfully", 201)

    def r_update_team_membership(self, req):
        t = self.team(req)
        m = self.membership(req, t)
        self.membership_fields(req.json(required=True), m)
        return ok(self.membership_view(m), "Team membership updated successfully")

    def r_remove_team_member(self, req):
        t = self.team(req)
        m = self.membership(req, t)
        self.s["memberships"].remove(m)
        return ok(self.membership_view(m), "Team membership %d deleted successfully" % m["id"])

    def r_get_team_schedules(self, req):
        t = self.team(req)
        members = [m["userId"] for m in self.s["memberships"] if m["teamId"] == t["id"] and m["accepted"]]
        items = []
        for s in self.s["schedules"]:
            if s["userId"] in members:
                v = dict(s)
                v["user"] = user_ref(self.s["users"][s["userId"]])
                items.append(v)
        page, meta = paginate(req, items)
        return ok(page, "Team schedules fetched successfully", meta=meta)

    # ---- users ----

    def r_get_users_me(self, req):
        return ok(self.me(), "User profile fetched successfully")

    def r_get_users(self, req):
        username = req.params["username"]
        for u in self.s["users"].values():
            if u["username"] == username:
                events = [{k: e[k] for k in ("id", "title", "slug", "length", "description", "locations",
                                             "price", "currency")}
                          for e in self.own_event_types() if not e["hidden"]] if u["id"] == ME else []
                events.sort(key=lambda e: e["id"])
                return ok({"user": {"id": u["id"], "username": u["username"], "name": u["name"],
                                    "bio": u["bio"], "avatarUrl": u["avatarUrl"], "timeZone": u["timeZone"]},
                           "eventTypes": events}, "Public event types fetched successfully")
        raise ApiError(404, "User %s not found" % username)

    def r_update_user_profile(self, req):
        body = req.json(required=True)
        me = self.me()
        new = dict(me)
        for k, v in body.items():
            if k in ("id", "createdDate"):
                continue
            if k == "timeZone":
                get_tz(v)
            elif k == "email":
                want_email(body, "email")
            elif k in ("name", "username"):
                want_str(body, k)
                if k == "username":
                    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v):
                        raise ApiError(400, "username may hold only lowercase letters, digits, dots, dashes, underscores")
                    if any(u["username"] == v and u["id"] != ME for u in self.s["users"].values()):
                        raise ApiError(409, "Username %s is already taken" % v)
            elif k == "weekStart" and v not in [d.capitalize() for d in DAY_NAMES]:
                raise ApiError(400, "weekStart must be a day name such as Monday")
            elif k == "timeFormat" and v not in (12, 24):
                raise ApiError(400, "timeFormat must be 12 or 24")
            elif k == "defaultScheduleId":
                self.schedule_of_me(want_int(v, k))
            new[k] = v
        me.clear()
        me.update(new)
        if "defaultScheduleId" in body:
            for s in self.s["schedules"]:
                if s["userId"] == ME:
                    s["isDefault"] = s["id"] == me["defaultScheduleId"]
        return ok(me, "Profile updated successfully")

    def r_create_users_edit_profile_avatar(self, req):
        ctype = req.headers.get("content-type", "")
        if req.content_type() != "multipart/form-data":
            raise ApiError(400, "Content-Type must be multipart/form-data")
        m = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', ctype, re.I)
        if not m:
            raise ApiError(400, "multipart/form-data without a boundary parameter")
        boundary = (m.group(1) or m.group(2)).encode("latin-1")
        parts = parse_multipart(req.raw_body, boundary)
        for headers, data in parts:
            disp = headers.get("content-disposition", "")
            fn = re.search(r'filename="([^"]*)"|filename=([^;\s]+)', disp)
            if fn is None:
                continue
            filename = fn.group(1) if fn.group(1) is not None else fn.group(2)
            field = re.search(r'\bname="([^"]*)"', disp)
            part_type = headers.get("content-type", "application/octet-stream")
            if len(data) == 0:
                raise ApiError(400, "The file part is empty")
            if len(data) > 5 * 1024 * 1024:
                raise ApiError(413, "Avatar too large: at most 5 MiB")
            digest = hashlib.sha256(data).hexdigest()[:16]
            ext = os.path.splitext(filename)[1] or ".bin"
            url = "https://cdn.cal.id/avatars/%d/%s%s" % (ME, digest, ext)
            self.me()["avatarUrl"] = url
            return ok({"avatarUrl": url, "size": len(data), "contentType": part_type,
                       "filename": filename, "fieldName": field.group(1) if field else None,
                       "sha256": hashlib.sha256(data).hexdigest()},
                      "Avatar uploaded successfully")
        raise ApiError(400, "No file part in the multipart/form-data body")

    # ---- webhooks ----

    def webhook(self, req):
        return self.find(self.s["webhooks"], "id", req.int_param("webhookId"), "Webhook")

    def webhook_fields(self, body, w):
        for k, v in body.items():
            if k in ("id", "userId", "createdAt"):
                continue
            if k == "subscriberUrl":
                url = want_str(body, k)
                if not re.match(r"https?://[^\s/]+", url):
                    raise ApiError(400, "subscriberUrl must be an http(s) URL")
                w[k] = url
            elif k == "eventTriggers":
                if not isinstance(v, list) or not v:
                    raise ApiError(400, "eventTriggers must be a non-empty array")
                for trig in v:
                    if trig not in WEBHOOK_TRIGGERS:
                        raise ApiError(400, "Unknown event trigger %r; expected one of %s"
                                       % (trig, ", ".join(WEBHOOK_TRIGGERS)))
                w[k] = v
            elif k == "active":
                w[k] = want_bool(body, k)
            elif k == "eventTypeId":
                w[k] = None if v is None else self.event_type(want_int(v, k))["id"]
            else:
                w[k] = v

    def r_get_webhook(self, req):
        page, meta = paginate(req, self.s["webhooks"])
        return ok(page, "Webhooks fetched successfully", meta=meta)

    def r_get_webhook_by_id(self, req):
        return ok(self.webhook(req), "Webhook fetched successfully")

    def r_create_webhook(self, req):
        body = req.json(required=True)
        want_str(body, "subscriberUrl")
        if "eventTriggers" not in body:
            raise ApiError(400, "eventTriggers is required")
        w = {"id": None, "userId": ME, "eventTypeId": None, "subscriberUrl": "", "eventTriggers": [],
             "active": True, "payloadTemplate": None, "secret": None, "createdAt": iso_z(self.now())}
        self.webhook_fields(body, w)
        w["id"] = self.new_id()
        self.s["webhooks"].append(w)
        return ok(w, "Webhook created successfully", 201)

    def r_update_webhook(self, req):
        w = self.webhook(req)
        self.webhook_fields(req.json(required=True), w)
        return ok(w, "Webhook updated successfully")

    def r_delete_webhook(self, req):
        w = self.webhook(req)
        self.s["webhooks"].remove(w)
        return ok(w, "Webhook %d deleted successfully" % w["id"])


def parse_multipart(body, boundary):
    """-> [(headers dict lowercased, data bytes)]; ApiError 400 when malformed."""
    delim = b"--" + boundary
    if not body.startswith(delim):
        pos = body.find(b"\r\n" + delim)
        if pos < 0:
            raise ApiError(400, "Malformed multipart body: boundary not found")
        body = body[pos + 2:]
    parts = []
    pos = len(delim)
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise ApiError(400, "Malformed multipart body: bad delimiter line")
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            raise ApiError(400, "Malformed multipart body: part without header end")
        headers = {}
        for line in body[pos + 2:head_end].split(b"\r\n"):
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode("latin-1")] = v.strip().decode("utf-8", "replace")
        nxt = body.find(b"\r\n" + delim, head_end + 4)
        if nxt < 0:
            raise ApiError(400, "Malformed multipart body: missing closing boundary")
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


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.next_id = 1
        self.generation = 0     # bumped by clear(): stalled / endless answers give up

    def add(self, spec):
        if not isinstance(spec, dict):
            raise ApiError(400, "A fault must be a JSON object")
        mode = spec.get("mode", spec.get("kind"))
        if mode not in FAULT_MODES:
            raise ApiError(400, "mode must be one of %s" % ", ".join(FAULT_MODES))
        f = dict(spec)
        f["mode"] = mode
        f["path"] = spec.get("path") or ""
        if not isinstance(f["path"], str):
            raise ApiError(400, "path must be a string prefix")
        f["method"] = (spec.get("method") or "").upper() or None
        f["count"] = want_int(spec.get("count", -1 if mode == "drop_request" else 1), "count")
        if f["count"] == 0 or f["count"] < -1:
            raise ApiError(400, "count must be a positive number, or -1 for until cleared")
        f["skip"] = want_int(spec.get("skip", 0), "skip", minimum=0)
        if mode == "drop_request":
            f["nth"] = want_int(spec.get("nth", 2), "nth", minimum=1)
        for k in ("delay_ms", "status", "retry_after", "size", "bytes", "chunks", "chunk_size",
                  "interval_ms", "max_seconds"):
            if k in spec:
                f[k] = want_int(spec[k], k, minimum=0)
        if mode == "status" and not 100 <= f.get("status", 500) <= 599:
            raise ApiError(400, "status must be an HTTP status code")
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
AUTH_TOKEN = None     # --token: exactly this token; else any "calid_..."


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
        headers = self.header_dict()
        rec = {"method": self.command, "path": path, "query": query, "headers": headers,
               "header_list": [[k, v] for k, v in self.headers.items()],
               "http_version": self.request_version, "conn": self.conn_id, "seq": self.seq,
               "tls_version": self.tls["version"], "tls_resumed": self.tls["resumed"],
               "time": time.time()}
        try:
            rec["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            rec["body"] = base64.b64encode(body).decode("ascii")
            rec["body_base64"] = True
        RECORDER.add(rec)
        log("conn %d #%d: %s %s%s" % (self.conn_id, self.seq, self.command, path, "?" + query if query else ""))

        fault = FAULTS.take(self.command, path, self.api_seq)
        mode = fault["mode"] if fault else None
        if fault:
            STATS.inc("faults_applied")
            log("conn %d #%d: fault %s" % (self.conn_id, self.seq, mode))
        if mode == "reset":
            self.abort = True
            self.close_connection = True
            return
        if mode == "drop_request":
            rec["dropped_connection"] = True
            if fault.get("act"):
                self.answer(path, query, headers, body, self.headers.get("Authorization", ""))
            self.close_connection = True
            return
        if mode == "stall":
            self.hold(fault.get("delay_ms", 120000) / 1000.0)
            self.close_connection = True
            return
        if mode == "endless_chunked":
            self.endless(fault)
            return
        if mode == "delay":
            time.sleep(fault.get("delay_ms", 1000) / 1000.0)

        extra = []
        if mode == "status":
            status = fault.get("status", 500)
            message = fault.get("message") or {
                400: "Bad request", 401: "Unauthorized: missing or invalid API key", 403: "Forbidden",
                404: "Not found", 429: "Too many requests: rate limit exceeded",
                500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable",
            }.get(status, REASONS.get(status, "Error"))
            if status == 429:
                extra.append(("Retry-After", str(fault.get("retry_after", 30))))
            for k, v in (fault.get("headers") or {}).items():
                extra.append((str(k), str(v)))
            payload = json.dumps({"success": False, "message": message}, separators=(",", ":")).encode()
            return self.send_body(status, "application/json; charset=utf-8", payload, extra)
        if mode == "nonjson":
            status = fault.get("status", 200)
            html = ("<!DOCTYPE html>\n<html><head><title>Maintenance</title></head>\n"
                    "<body><h1>We'll be back soon</h1><p>Cal ID is down for maintenance.</p></body></html>\n")
            return self.send_body(status, "text/html; charset=utf-8", html.encode())
        if mode == "big":
            size = fault.get("size", 1 << 20)
            head = b'{"success":true,"message":"big answer","data":{"filler":"'
            tail = b'"}}'
            payload = head + b"x" * max(0, size - len(head) - len(tail)) + tail
            if fault.get("chunked"):
                return self.send_chunked(200, "application/json; charset=utf-8", payload, 16, False)
            return self.send_body(200, "application/json; charset=utf-8", payload)

        status, obj = self.answer(path, query, headers, body, self.headers.get("Authorization", ""))
        payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        ctype = "application/json; charset=utf-8"
        if status == 401:
            extra.append(("WWW-Authenticate", 'Bearer realm="api.cal.id"'))
        if mode == "chunked":
            return self.send_chunked(status, ctype, payload, fault.get("chunks", 4), bool(fault.get("extensions")))
        if mode == "close":
            self.close_connection = True
            self.write(self.head_bytes(status, [("Content-Type", ctype), ("Connection", "close")] + extra) + payload)
            return
        if mode == "truncate":
            n = fault.get("bytes", len(payload) // 2)
            n = min(n, max(0, len(payload) - 1))
            self.close_connection = True
            self.close_notify = fault.get("close_notify", True) is not False
            head = self.head_bytes(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))] + extra)
            self.write(head + payload[:n])
            return
        if mode == "reset_mid_answer":
            n = fault.get("bytes", len(payload) // 2)
            n = min(n, max(0, len(payload) - 1))
            self.close_connection = True
            head = self.head_bytes(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))] + extra)
            self.write(head + payload[:n])
            # let the peer read what was sent before the reset discards it
            self.hold(fault.get("delay_ms", 100) / 1000.0)
            self.abort = True
            return
        self.send_body(status, ctype, payload, extra)
        if mode == "close_after":
            self.close_connection = True

    def answer(self, path, query, headers, body, auth):
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith("calid_") or \
                (AUTH_TOKEN is not None and token != AUTH_TOKEN):
            return 401, {"success": False, "message": "Unauthorized: missing or invalid API key"}
        try:
            return API.handle(self.command if self.command != "HEAD" else "GET", path, query, headers, body)
        except ApiError as e:
            return e.status, {"success": False, "message": e.message}
        except Exception as e:  # a bug in this fake: say so loudly, keep serving
            sys.stderr.write("fake_calid: internal error on %s %s: %r\n" % (self.command, path, e))
            import traceback
            traceback.print_exc()
            return 500, {"success": False, "message": "Internal server error (fake): %r" % e}

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
        p = path.rstrip("/")
        m = self.command
        try:
            if p == "/__fake/requests" and m == "GET":
                return self.send_json(200, RECORDER.list(q.get("path"), q.get("method")))
            if p == "/__fake/requests" and m == "DELETE":
                return self.send_json(200, {"success": True, "cleared": RECORDER.clear()})
            if p == "/__fake/reset" and m == "POST":
                FAULTS.clear()
                RECORDER.clear()
                API.reset()
                return self.send_json(200, {"success": True, "message": "state reset"})
            if p in ("/__fake/fault", "/__fake/faults"):
                if m == "POST":
                    try:
                        spec = json.loads(body.decode("utf-8") or "null")
                    except ValueError as e:
                        raise ApiError(400, "Invalid JSON body: %s" % e)
                    specs = spec if isinstance(spec, list) else [spec]
                    added = [FAULTS.add(s) for s in specs]
                    return self.send_json(200, {"success": True, "data": added if isinstance(spec, list) else added[0]})
                if m == "GET":
                    return self.send_json(200, {"success": True, "data": FAULTS.list()})
                if m == "DELETE":
                    return self.send_json(200, {"success": True, "cleared": FAULTS.clear()})
            if p == "/__fake/state" and m == "GET":
                return self.send_json(200, API.snapshot())
            if p == "/__fake/stats" and m == "GET":
                st = STATS.get()
                st["recorded"] = len(RECORDER.items)
                st["recorded_dropped"] = RECORDER.dropped
                return self.send_json(200, st)
            raise ApiError(404, "Unknown control endpoint %s %s" % (m, path))
        except ApiError as e:
            self.send_json(e.status, {"success": False, "message": e.message})


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
    global API, VERBOSE, AUTH_TOKEN
    ap = argparse.ArgumentParser(description="Fake Cal ID REST API over HTTPS, for tests.")
    ap.add_argument("--cert", required=True, help="PEM certificate (chain) to serve")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--token", help="accept only this bearer token (default: any calid_...)")
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="seconds before an idle keep-alive connection is closed (default 60)")
    ap.add_argument("--tls-max", choices=("1.2", "1.3"), default=None, help="highest TLS version offered")
    ap.add_argument("--tls-min", choices=("1.2", "1.3"), default=None,
                    help="lowest TLS version accepted (default 1.2; 1.3 refuses TLS 1.2 clients)")
    ap.add_argument("--verbose", action="store_true", help="log connections and requests to stderr")
    args = ap.parse_args(argv)
    VERBOSE = args.verbose
    AUTH_TOKEN = args.token
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

    API = Api()
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
