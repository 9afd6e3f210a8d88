"""fake_calid_api.py - the Cal ID API's routes and request schemas, as data,
and the Ajv-like checker that applies them (used by tests/fake_calid.py).

Everything here is read from /work/shared/calid-api-source.md (section numbers
in the comments). The API is a Fastify 4 app: each route's params, query and
body schemas are JSON schemas made by zod-to-json-schema and checked by Ajv
with Fastify's options before the handler runs:
  - coerceTypes "array": "5" -> 5, "true" -> true, 5 -> "5", a scalar -> [it]
    for an array type, a one-element array -> its element for a scalar type;
  - useDefaults: a missing property with a `default` gets it;
  - removeAdditional: unknown keys of an object with additionalProperties
    false (every zod object but .passthrough()) are deleted, silently;
  - allErrors false: the first error ends the check; Fastify's message is
    "<body|querystring|params><instancePath> <Ajv message>".
The checker records what it deleted ("body.seatUid") and what defaults it
filled in, so a test can see what the API would silently do.

ROUTES holds the 57 routes of the route map: 51 read in the source, the six
/contacts routes inferred (no REST route is published for them).
"""

import copy
import datetime as dt
import math
import re

# --------------------------------------------------------------------------
# Schema constructors: JSON schema as zod-to-json-schema emits it
# --------------------------------------------------------------------------


def string(**kw):
    return dict(type="string", **kw)


def integer(**kw):
    return dict(type="integer", **kw)


def number(**kw):
    return dict(type="number", **kw)


def boolean(**kw):
    return dict(type="boolean", **kw)


def enum(*values, **kw):
    return dict(type="string", enum=list(values), **kw)


def array(items=None, **kw):
    return dict(type="array", items=items if items is not None else {}, **kw)


def anything(**kw):
    """z.any(), z.unknown(): no type at all."""
    return dict(kw)


def any_of(*schemas, **kw):
    return dict(anyOf=list(schemas), **kw)


def nullable(schema, **kw):
    """.nullable(): the type list gains "null" (anyOf with null for no type)."""
    s = dict(schema, **kw)
    if "type" in s:
        s["type"] = [s["type"], "null"] if isinstance(s["type"], str) else s["type"] + ["null"]
        if "enum" in s:
            s["enum"] = s["enum"] + [None]
        return s
    return s if "anyOf" not in s else dict(s, anyOf=s["anyOf"] + [{"type": "null"}])


def obj(properties, required=(), passthrough=False, **kw):
    """z.object(): unknown keys are removed unless .passthrough()."""
    return dict(type="object", properties=properties, required=list(required),
                additionalProperties=passthrough, **kw)


def record(**kw):
    """z.record(z.any()): any keys."""
    return dict(type="object", additionalProperties={}, **kw)


POSITIVE_INT = integer(exclusiveMinimum=0)        # z.number().int().positive()
DATE_TIME = string(format="date-time")            # z.string().datetime({offset: true})
EMAIL = string(format="email")
URI = string(format="uri")
SORT = enum("asc", "desc")


def partial(schema):
    """.partial(): nothing required. zod-to-json-schema keeps each field's
    `default`, so Ajv fills the create-time defaults into a PATCH body (4.20)."""
    return dict(schema, required=[])


def params(*names, schema=POSITIVE_INT):
    """A Fastify params schema: z.coerce.number().int().positive() per name."""
    return obj({n: schema for n in names}, required=names)


# --------------------------------------------------------------------------
# The request schemas (calid-api-source.md sections in brackets)
# --------------------------------------------------------------------------

# paging: booking and webhook lists [2.9, 4.47]; event types, teams, memberships [4.17]
PAGE_500 = {"page": integer(exclusiveMinimum=0, default=1),
            "limit": integer(exclusiveMinimum=0, maximum=500, default=100)}
PAGE_100 = {"page": integer(minimum=1, default=1),
            "limit": integer(minimum=1, maximum=100, default=10)}
ORDER_DIR = {"orderDir": enum("asc", "desc", default="desc")}

BOOKING_STATUS_FILTER = ("upcoming", "recurring", "past", "cancelled", "unconfirmed")
BOOKINGS_QUERY = obj({                                                       # [2.9]
    "status": enum(*BOOKING_STATUS_FILTER, default="upcoming"),
    "teamIds": array(POSITIVE_INT), "userIds": array(POSITIVE_INT), "eventTypeIds": array(POSITIVE_INT),
    "attendeeEmail": EMAIL, "attendeeName": string(), "bookingUid": string(),
    "afterStartDate": DATE_TIME, "beforeEndDate": DATE_TIME,
    "afterUpdatedDate": DATE_TIME, "beforeUpdatedDate": DATE_TIME,
    "afterCreatedDate": DATE_TIME, "beforeCreatedDate": DATE_TIME,
    "sortStart": SORT, "sortEnd": SORT, "sortCreated": SORT, "sortUpdated": SORT,
    **PAGE_500,
})

CREATE_BOOKING = obj({                                                       # [2.10]
    "eventTypeId": POSITIVE_INT,
    "eventTypeSlug": string(minLength=1),
    "start": DATE_TIME,
    "end": DATE_TIME,
    "timeZone": string(default="Asia/Kolkata"),
    "responses": obj({
        "name": any_of(string(minLength=1), obj({"firstName": string(), "lastName": string()}),
                       default="John Doe"),
        "email": EMAIL,
        "location": any_of(string(), obj({"value": string(), "optionValue": string()}),
                           default={"value": "integrations:google:meet", "optionValue": ""}),
        "phone": string(default="+91XXXXXXXXXX"),
        "guests": array(EMAIL, default=[]),
        "notes": string(),
    }, required=["email"], passthrough=True),
    "language": string(default="en"),
    "metadata": record(default={}),
}, required=["start", "end", "responses"])

CANCEL_BOOKING = obj({                                                       # [2.12]
    "uid": string(),
    "allRemainingBookings": boolean(),
    "cancelSubsequentBookings": boolean(),
    "cancellationReason": string(default="Not Provided"),
    "seatReferenceUid": string(),
    "cancelledBy": EMAIL,
    "internalNote": nullable(obj({"id": number(), "name": string(),
                                  "cancellationReason": nullable(string())}, required=["id", "name"])),
    "autoRefund": boolean(default=False),
})

CHANGE_CONFIRMATION = obj({"confirmed": boolean(), "recurringEventId": string(), "reason": string()},
                          required=["confirmed"])                           # [2.13]
REASSIGN_TO_USER = obj({"userId": POSITIVE_INT, "reason": string()}, required=["userId"])   # [2.15]
RESCHEDULE_BOOKING = obj({"start": string(minLength=1), "reschedulingReason": string(),    # [2.16]
                          "rescheduledBy": EMAIL, "seatUid": string()}, required=["start"])

AVAILABILITY_QUERY = obj({"dateFrom": string(), "dateTo": string(), "eventTypeId": number()},
                         required=["dateFrom", "dateTo", "eventTypeId"])    # [3.1]
AVAILABILITY_BODY = obj({"scheduleId": number(), "days": array(), "startTime": string(),
                         "endTime": string()},
                        required=["scheduleId", "days", "startTime", "endTime"])   # [3.2, 3.3]
SCHEDULE_BODY = obj({"name": string(), "timeZone": string()}, required=["name", "timeZone"])  # [3.6, 3.7]

EVENT_TYPES_QUERY = obj({                                                    # [4.17]
    **PAGE_100,
    "orderBy": enum("id", "title", "slug", "length", "position"),
    **ORDER_DIR,
    "title": string(), "slug": string(), "hidden": boolean(),
})

SCHEDULING_TYPES = ("ROUND_ROBIN", "COLLECTIVE", "MANAGED")
PERIOD_TYPES = ("UNLIMITED", "ROLLING", "ROLLING_WINDOW", "RANGE")
OPT_INT = nullable(integer())
OPT_ANY = anything()
# The event-type fields of createEventTypeBodySchema [4.18], in its order.
EVENT_TYPE_FIELDS = {
    "title": string(minLength=4, maxLength=255),
    "slug": string(minLength=4, maxLength=100),
    "description": nullable(string()),
    "interfaceLanguage": nullable(string()),
    "position": integer(default=0),
    "locations": OPT_ANY,
    "length": integer(minimum=10, default=15),
    "offsetStart": integer(default=0),
    "hidden": boolean(default=False),
    "timeZone": nullable(string()),
    "periodType": enum(*PERIOD_TYPES, default="UNLIMITED"),
    "periodStartDate": nullable(DATE_TIME),
    "periodEndDate": nullable(DATE_TIME),
    "periodDays": OPT_INT,
    "periodCountCalendarDays": nullable(boolean()),
    "requiresConfirmation": boolean(default=False),
    "requiresConfirmationWillBlockSlot": boolean(default=False),
    "requiresConfirmationForFreeEmail": boolean(default=False),
    "requiresBookerEmailVerification": boolean(default=False),
    "recurringEvent": OPT_ANY,
    "disableGuests": boolean(default=False),
    "hideCalendarNotes": boolean(default=False),
    "hideCalendarEventDetails": boolean(default=False),
    "minimumBookingNotice": integer(minimum=0, default=120),
    "beforeEventBuffer": integer(default=0),
    "afterEventBuffer": integer(default=0),
    "seatsPerTimeSlot": OPT_INT,
    "onlyShowFirstAvailableSlot": boolean(default=False),
    "disableCancelling": nullable(boolean(), default=False),
    "disableRescheduling": nullable(boolean(), default=False),
    "seatsShowAttendees": nullable(boolean(), default=False),
    "seatsShowAvailabilityCount": nullable(boolean(), default=True),
    "schedulingType": nullable(enum(*SCHEDULING_TYPES)),
    "scheduleId": OPT_INT,
    "price": integer(default=0),
    "currency": string(default="usd"),
    "slotInterval": OPT_INT,
    "metadata": OPT_ANY,
    "successRedirectUrl": nullable(URI),
    "forwardParamsSuccessRedirect": nullable(boolean(), default=True),
    "bookingLimits": OPT_ANY,
    "durationLimits": OPT_ANY,
    "isInstantEvent": boolean(default=False),
    "instantMeetingExpiryTimeOffsetInSeconds": integer(default=90),
    "assignAllTeamMembers": boolean(default=False),
    "assignRRMembersUsingSegment": boolean(default=False),
    "rrSegmentQueryValue": OPT_ANY,
    "useEventTypeDestinationCalendarEmail": boolean(default=False),
    "isRRWeightsEnabled": boolean(default=False),
    "maxLeadThreshold": OPT_INT,
    "includeNoShowInRRCalculation": boolean(default=False),
    "allowReschedulingPastBookings": boolean(default=False),
    "hideOrganizerEmail": boolean(default=False),
    "maxActiveBookingsPerBooker": OPT_INT,
    "maxActiveBookingPerBookerOfferReschedule": boolean(default=False),
    "customReplyToEmail": nullable(EMAIL),
    "eventTypeColor": OPT_ANY,
    "rescheduleWithSameRoundRobinHost": boolean(default=False),
    "useBookerTimezone": boolean(default=False),
    "restrictionScheduleId": OPT_INT,
}
CREATE_EVENT_TYPE = obj(EVENT_TYPE_FIELDS, required=["title", "slug"])
UPDATE_EVENT_TYPE = partial(CREATE_EVENT_TYPE)

TEAMS_QUERY = obj({**PAGE_100, "orderBy": enum("id", "name", "slug", "createdAt"), **ORDER_DIR,
                   "name": string(), "slug": string(), "isTeamPrivate": boolean()})      # [4.22]
TEAM_FIELDS = {                                                              # [4.23]
    "name": string(minLength=1, maxLength=255),
    "slug": string(minLength=1, maxLength=100),
    "bio": nullable(string()),
    "logoUrl": nullable(URI),
    "hideTeamBranding": boolean(default=False),
    "hideTeamProfileLink": boolean(default=False),
    "isTeamPrivate": boolean(default=False),
    "hideBookATeamMember": boolean(default=False),
    "theme": nullable(string()),
    "brandColor": nullable(string()),
    "darkBrandColor": nullable(string()),
    "timeFormat": nullable(integer(minimum=12, maximum=24)),
    "timeZone": string(default="Asia/Kolkata"),
    "weekStart": string(default="Monday"),
    "metadata": OPT_ANY,
    "bookingFrequency": OPT_ANY,
}
CREATE_TEAM = obj(TEAM_FIELDS, required=["name"])
UPDATE_TEAM = partial(CREATE_TEAM)

ROLES = ("MEMBER", "ADMIN", "OWNER")
MEMBERSHIPS_QUERY = obj({**PAGE_100, "orderBy": enum("id", "role", "acceptedInvitation", "createdAt"),
                         **ORDER_DIR, "role": enum(*ROLES), "acceptedInvitation": boolean()})  # [4.32]
ADD_MEMBER = obj({"userId": POSITIVE_INT, "role": enum(*ROLES, default="MEMBER"),
                  "acceptedInvitation": boolean(default=False), "impersonation": boolean(default=True)},
                 required=["userId"])                                       # [4.33]
UPDATE_MEMBERSHIP = obj({"role": enum(*ROLES), "acceptedInvitation": boolean(),
                         "impersonation": boolean()})                       # [4.35]

SLOTS_QUERY = obj({"eventTypeId": string(), "eventTypeSlug": string(),      # [4.38]
                   "start": string(minLength=1), "end": string(minLength=1), "timeZone": string(),
                   "duration": integer(), "format": enum("time", "range"),
                   "bookingUidToReschedule": string()}, required=["start", "end"])
RESERVATION = obj({"eventTypeId": POSITIVE_INT, "slotStart": DATE_TIME,     # [4.39, 4.41]
                   "slotDuration": any_of(string(), number()),
                   "reservationDuration": integer(exclusiveMinimum=0, default=5)},
                  required=["eventTypeId", "slotStart"])

UPDATE_PROFILE = obj({                                                       # [4.44]
    "username": string(), "name": string(maxLength=50), "email": EMAIL, "bio": string(),
    "timeZone": string(), "weekStart": string(),
    "hideBranding": boolean(), "allowDynamicBooking": boolean(), "allowSEOIndexing": boolean(),
    "receiveMonthlyDigestEmail": boolean(),
    "brandColor": string(), "darkBrandColor": string(),
    "theme": nullable(string()), "appTheme": nullable(string()),
    "completedOnboarding": boolean(), "locale": string(), "timeFormat": number(),
    "disableImpersonation": boolean(),
    "metadata": record(),
    "travelSchedules": array(obj({"id": number(), "timeZone": string(), "endDate": string(),
                                  "startDate": string()}, required=["timeZone", "startDate"])),
    "secondaryEmails": array(obj({"id": number(), "email": string(), "isDeleted": boolean(default=False)},
                                 required=["id", "email"])),
})

WEBHOOK_TRIGGERS = (                                                         # [Webhooks] (UNVERIFIED list)
    "BOOKING_CREATED", "BOOKING_PAYMENT_INITIATED", "BOOKING_PAID", "BOOKING_RESCHEDULED",
    "BOOKING_REQUESTED", "BOOKING_CANCELLED", "BOOKING_REJECTED", "BOOKING_NO_SHOW_UPDATED",
    "FORM_SUBMITTED", "FORM_SUBMITTED_NO_EVENT", "MEETING_STARTED", "MEETING_ENDED",
    "RECORDING_READY", "RECORDING_TRANSCRIPTION_GENERATED", "INSTANT_MEETING", "OOO_CREATED",
    "AFTER_HOSTS_CAL_VIDEO_NO_SHOW", "AFTER_GUESTS_CAL_VIDEO_NO_SHOW",
)
WEBHOOK_FIELDS = {"subscriberUrl": string(), "eventTriggers": array(enum(*WEBHOOK_TRIGGERS)),
                  "active": boolean(), "payloadTemplate": nullable(string()), "secret": nullable(string())}
CREATE_WEBHOOK = obj(WEBHOOK_FIELDS, required=["subscriberUrl"])            # [4.48]
UPDATE_WEBHOOK = obj(WEBHOOK_FIELDS)                                         # [4.50]
WEBHOOKS_QUERY = obj(PAGE_500)                                               # [4.47]

# The avatar route's hand-written body schema [4.45]: JSON, though the upload is multipart.
AVATAR_BODY = {"type": "object", "properties": {"avatar": {"type": "string", "format": "binary"}},
               "required": ["avatar"]}

# Contacts [5]: no REST route is published; the fields of the tRPC schemas.
CONTACTS_QUERY = obj({"search": string(), "sortBy": enum("name", "email", "createdAt", "updatedAt", default="name"),
                      "sortDirection": enum("asc", "desc", default="asc"),
                      "limit": integer(minimum=1, maximum=100, default=10),
                      "offset": integer(minimum=0, default=0)})
CONTACT_FIELDS = {"name": string(minLength=1, maxLength=255), "email": string(format="email", maxLength=320),
                  "phone": string(maxLength=50), "notes": string(maxLength=5000)}
CREATE_CONTACT = obj(dict(CONTACT_FIELDS, phone=string(maxLength=50, default=""),
                          notes=string(maxLength=5000, default="")), required=["name", "email"])
UPDATE_CONTACT = obj(CONTACT_FIELDS)
CONTACT_MEETINGS_QUERY = obj({"limit": integer(minimum=1, maximum=200, default=100)})

# --------------------------------------------------------------------------
# The route map (calid-api.md). params=None: the handler parses the path
# parameter itself (parseInt, or a string) as the source does.
# --------------------------------------------------------------------------


class Route:
    def __init__(self, method, path, tool, params=None, query=None, body=None, evidence="source",
                 multipart=False):
        self.method, self.path, self.tool = method, path, tool
        self.params, self.query, self.body = params, query, body
        self.evidence, self.multipart = evidence, multipart
        segs = path.strip("/").split("/")
        self.names = [s[1:] for s in segs if s.startswith(":")]
        # a plugin's "/" route answers with and without the trailing slash
        rx = "/".join("([^/]+)" if s.startswith(":") else re.escape(s) for s in segs)
        self.rx = re.compile("^/" + rx + ("/?" if len(segs) == 1 else "") + "$")


ID = params("id")
TEAM = params("teamId")
TEAM_EVENT_TYPE = params("teamId", "eventTypeId")
TEAM_MEMBERSHIP = params("teamId", "membershipId")
WEBHOOK_ID = params("id", schema=string())
R = Route
ROUTES = [
    R("GET", "/availability", "get_availability", query=AVAILABILITY_QUERY),
    R("POST", "/availability", "create_availability", body=AVAILABILITY_BODY),
    R("PATCH", "/availability/:availability", "update_availability", body=AVAILABILITY_BODY),
    R("DELETE", "/availability/:availability", "delete_availability"),
    R("GET", "/schedule", "get_schedule"),
    R("POST", "/schedule", "create_schedule", body=SCHEDULE_BODY),
    R("PATCH", "/schedule/:schedule", "update_schedule", body=SCHEDULE_BODY),
    R("DELETE", "/schedule/:schedule", "delete_schedule"),
    R("GET", "/booking", "get_booking", query=BOOKINGS_QUERY),
    R("POST", "/booking", "create_booking", body=CREATE_BOOKING),
    R("GET", "/booking/:id", "get_booking_by_id"),
    R("POST", "/booking/:id/cancel", "cancel_booking", params=ID, body=CANCEL_BOOKING),
    R("PATCH", "/booking/:id/change_confirmation", "change_booking_confirmation_status", body=CHANGE_CONFIRMATION),
    R("PATCH", "/booking/:id/reassignBookingAutomatically", "update_booking_reassignbookingautomatically"),
    R("PATCH", "/booking/:id/reassignBookingToUser", "update_booking_reassignbookingtouser", body=REASSIGN_TO_USER),
    R("PATCH", "/booking/:id/reschedule", "reschedule_booking", body=RESCHEDULE_BOOKING),
    R("GET", "/contacts", "list_contacts", query=CONTACTS_QUERY, evidence="inferred"),
    R("POST", "/contacts", "create_contact", body=CREATE_CONTACT, evidence="inferred"),
    R("GET", "/contacts/:id", "get_contact", params=ID, evidence="inferred"),
    R("PATCH", "/contacts/:id", "update_contact", params=ID, body=UPDATE_CONTACT, evidence="inferred"),
    R("DELETE", "/contacts/:id", "delete_contact", params=ID, evidence="inferred"),
    R("GET", "/contacts/:id/meetings", "get_contact_meetings", params=ID, query=CONTACT_MEETINGS_QUERY,
      evidence="inferred"),
    R("GET", "/event-types", "get_event_types", query=EVENT_TYPES_QUERY),
    R("GET", "/event-types/:id", "get_event_types_by_id", params=ID),
    R("POST", "/event-types", "create_eventtype", body=CREATE_EVENT_TYPE),
    R("PATCH", "/event-types/:id", "update_eventtype", params=ID, body=UPDATE_EVENT_TYPE),
    R("DELETE", "/event-types/:id", "delete_eventtype", params=ID),
    R("POST", "/teams/:teamId/memberships", "add_team_member", params=TEAM, body=ADD_MEMBER),
    R("DELETE", "/teams/:teamId/memberships/:membershipId", "remove_team_member", params=TEAM_MEMBERSHIP),
    R("POST", "/slots/reserve", "create_slots_reserve", body=RESERVATION),
    R("DELETE", "/slots/:uid", "delete_slots"),
    R("GET", "/slots/:uid", "get_slot"),
    R("GET", "/slots", "get_slots", query=SLOTS_QUERY),
    R("PATCH", "/slots/:uid", "update_slots", body=RESERVATION),
    R("POST", "/teams", "create_team", body=CREATE_TEAM),
    R("POST", "/teams/:teamId/event-types", "create_team_eventtype", params=TEAM, body=CREATE_EVENT_TYPE),
    R("DELETE", "/teams/:teamId", "delete_team", params=TEAM),
    R("DELETE", "/teams/:teamId/event-types/:eventTypeId", "delete_team_eventtype", params=TEAM_EVENT_TYPE),
    R("GET", "/teams/:teamId", "get_team", params=TEAM),
    R("GET", "/teams/:teamId/event-types/:eventTypeId", "get_team_event_type", params=TEAM_EVENT_TYPE),
    R("GET", "/teams/:teamId/event-types", "get_team_event_types", params=TEAM, query=EVENT_TYPES_QUERY),
    R("GET", "/teams/:teamId/memberships/:membershipId", "get_team_membership", params=TEAM_MEMBERSHIP),
    R("GET", "/teams/:teamId/memberships", "get_team_memberships", params=TEAM, query=MEMBERSHIPS_QUERY),
    R("GET", "/teams/:teamId/schedules", "get_team_schedules", params=TEAM),
    R("GET", "/teams", "get_teams", query=TEAMS_QUERY),
    R("PATCH", "/teams/:teamId", "update_team_details", params=TEAM, body=UPDATE_TEAM),
    R("PATCH", "/teams/:teamId/event-types/:eventTypeId", "update_team_eventtype", params=TEAM_EVENT_TYPE,
      body=UPDATE_EVENT_TYPE),
    R("PATCH", "/teams/:teamId/memberships/:membershipId", "update_team_membership", params=TEAM_MEMBERSHIP,
      body=UPDATE_MEMBERSHIP),
    R("PUT", "/users/edit-profile", "update_user_profile", body=UPDATE_PROFILE),
    R("POST", "/users/edit-profile/avatar", "create_users_edit_profile_avatar", body=AVATAR_BODY, multipart=True),
    R("GET", "/users/me", "get_users_me"),          # before /users/:user: the static route wins
    R("GET", "/users/:user", "get_users"),
    R("POST", "/webhook", "create_webhook", body=CREATE_WEBHOOK),
    R("DELETE", "/webhook/:id", "delete_webhook", params=WEBHOOK_ID),
    R("GET", "/webhook", "get_webhook", query=WEBHOOKS_QUERY),
    R("GET", "/webhook/:id", "get_webhook_by_id", params=WEBHOOK_ID),
    R("PATCH", "/webhook/:id", "update_webhook", params=WEBHOOK_ID, body=UPDATE_WEBHOOK),
]
del R


def match_route(method, path):
    """-> (route, {name: decoded value}) or (None, None)."""
    import urllib.parse
    for r in ROUTES:
        m = r.rx.match(path) if r.method == method else None
        if m:
            return r, {n: urllib.parse.unquote(v) for n, v in zip(r.names, m.groups())}
    return None, None


# --------------------------------------------------------------------------
# The checker: Ajv 8 with Fastify 4's options, enough of it for these schemas
# --------------------------------------------------------------------------

class Invalid(Exception):
    """A failed check; str() is Fastify's message, e.g. "body must be object"."""


class Outcome:
    """What the check did besides failing: keys removed, defaults filled."""

    def __init__(self):
        self.dropped = []
        self.defaulted = []


NAN = float("nan")
_JS_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def js_number(s):
    """JavaScript's +s for a string: a number, or NaN."""
    t = s.strip()
    if t == "":
        return 0
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", t):
        return int(t, 16)
    if re.fullmatch(r"0[oO][0-7]+", t):
        return int(t[2:], 8)
    if re.fullmatch(r"0[bB][01]+", t):
        return int(t[2:], 2)
    if _JS_NUMBER.fullmatch(t):
        v = float(t)
        return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v
    return NAN


def js_parse_int(s):
    """JavaScript's parseInt(s, 10): the leading integer, or NaN ("12abc" -> 12)."""
    m = re.match(r"\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else NAN


def js_string(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def type_of(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def has_type(v, t):
    vt = type_of(v)
    if t == "integer":
        return vt == "number" and not (isinstance(v, float) and not v.is_integer())
    return vt == t


def coerce(v, t):
    """Ajv's coerceTypes for one target type; -> (ok, value)."""
    vt = type_of(v)
    if t in ("number", "integer"):
        if vt == "string" and v != "":
            n = js_number(v)
            if isinstance(n, float) and (math.isnan(n) or math.isinf(n)):
                return False, v
            if t == "integer" and n % 1:
                return False, v
            return True, n
        if vt == "boolean":
            return True, int(v)
        if vt == "null":
            return True, 0
    elif t == "string":
        if vt in ("number", "boolean"):
            return True, js_string(v)
        if vt == "null":
            return True, ""
    elif t == "boolean":
        if v in ("true", 1) and vt != "boolean":
            return True, True
        if (v in ("false", 0) and vt != "boolean") or v is None:
            return True, False
    elif t == "null":
        if v in ("", 0) and vt != "boolean" or v is False:
            return True, None
    elif t == "array":
        if vt in ("string", "number", "boolean", "null"):
            return True, [v]
    return False, v


def check_type(schema, v, where):
    types = schema.get("type")
    if types is None:
        return v
    types = [types] if isinstance(types, str) else types
    if any(has_type(v, t) for t in types):
        return int(v) if isinstance(v, float) and v.is_integer() and "integer" in types else v
    if "array" not in types and isinstance(v, list) and len(v) == 1:
        v = v[0]                        # coerceTypes "array": [x] -> x
        if any(has_type(v, t) for t in types):
            return v
    for t in types:
        ok, out = coerce(v, t)
        if ok:
            return out
    raise Invalid("%s must be %s" % (where, ",".join(types)))


def check(schema, v, where, outcome, dotted):
    """Check v (already present) against schema; -> the coerced value."""
    v = check_type(schema, v, where)
    if "enum" in schema and v not in schema["enum"]:
        raise Invalid("%s must be equal to one of the allowed values" % where)
    if "anyOf" in schema:
        v = check_any_of(schema["anyOf"], v, where, outcome, dotted)
    if type_of(v) == "number":
        check_number(schema, v, where)
    elif isinstance(v, str):
        check_string(schema, v, where)
    elif isinstance(v, list):
        for k in ("maxItems", "minItems"):
            if k in schema and (len(v) > schema[k] if k == "maxItems" else len(v) < schema[k]):
                raise Invalid("%s must NOT have %s than %d items"
                              % (where, "more" if k == "maxItems" else "fewer", schema[k]))
        if "items" in schema:
            v = [check(schema["items"], x, "%s/%d" % (where, i), outcome, "%s.%d" % (dotted, i))
                 for i, x in enumerate(v)]
    elif isinstance(v, dict) and schema.get("type") is not None:
        v = check_object(schema, v, where, outcome, dotted)
    return v


def check_any_of(branches, v, where, outcome, dotted):
    for b in branches:
        trial = Outcome()
        try:
            out = check(b, copy.deepcopy(v), where, trial, dotted)
        except Invalid:
            continue
        outcome.dropped += trial.dropped
        outcome.defaulted += trial.defaulted
        return out
    raise Invalid("%s must match a schema in anyOf" % where)


def check_number(schema, v, where):
    for k, op, bad in (("maximum", "<=", lambda a, b: a > b), ("minimum", ">=", lambda a, b: a < b),
                       ("exclusiveMaximum", "<", lambda a, b: a >= b),
                       ("exclusiveMinimum", ">", lambda a, b: a <= b)):
        if k in schema and bad(v, schema[k]):
            raise Invalid("%s must be %s %s" % (where, op, js_string(schema[k])))


def check_string(schema, v, where):
    if "maxLength" in schema and len(v) > schema["maxLength"]:
        raise Invalid("%s must NOT have more than %d characters" % (where, schema["maxLength"]))
    if "minLength" in schema and len(v) < schema["minLength"]:
        raise Invalid("%s must NOT have fewer than %d characters" % (where, schema["minLength"]))
    fmt = schema.get("format")
    if fmt and not FORMATS[fmt](v):
        raise Invalid('%s must match format "%s"' % (where, fmt))


def check_object(schema, v, where, outcome, dotted):
    props = schema.get("properties", {})
    for k, s in props.items():                       # useDefaults comes first
        if k not in v and "default" in s:
            v[k] = copy.deepcopy(s["default"])
            outcome.defaulted.append("%s.%s" % (dotted, k))
    for k in schema.get("required", []):
        if k not in v:
            raise Invalid("%s must have required property '%s'" % (where, k))
    extra = schema.get("additionalProperties", True)
    for k in [k for k in v if k not in props]:
        if extra is False:                           # removeAdditional: silently
            del v[k]
            outcome.dropped.append("%s.%s" % (dotted, k))
        elif isinstance(extra, dict):
            v[k] = check(extra, v[k], "%s/%s" % (where, k), outcome, "%s.%s" % (dotted, k))
    for k, s in props.items():
        if k in v:
            v[k] = check(s, v[k], "%s/%s" % (where, k), outcome, "%s.%s" % (dotted, k))
    return v


# ajv-formats, "full" mode
_DATE = re.compile(r"(\d\d\d\d)-(\d\d)-(\d\d)")
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d(?:\.\d+)?)(z|([+-])(\d\d)(?::?(\d\d))?)?", re.I)
_EMAIL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.I)
_URI = re.compile(r"[a-z][a-z0-9+\-.]*:[^\s]*", re.I)
_UUID = re.compile(r"(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", re.I)


def is_date(s):
    m = _DATE.fullmatch(s)
    if not m:
        return False
    y, mo, d = (int(x) for x in m.groups())
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return 1 <= mo <= 12 and 1 <= d <= days[mo - 1]


def is_time_with_zone(s):
    m = _TIME.fullmatch(s)
    if not m or not m.group(4):
        return False
    h, mi, sec = int(m.group(1)), int(m.group(2)), float(m.group(3))
    return (h <= 23 and mi <= 59 and sec < 60) or (h == 23 and mi == 59 and sec < 61)


def is_date_time(s):
    parts = re.split(r"t|\s", s, maxsplit=1, flags=re.I)
    return len(parts) == 2 and is_date(parts[0]) and is_time_with_zone(parts[1])


FORMATS = {
    "date-time": is_date_time,
    "date": is_date,
    "email": lambda s: bool(_EMAIL.fullmatch(s)),
    "uri": lambda s: bool(_URI.fullmatch(s)),
    "uuid": lambda s: bool(_UUID.fullmatch(s)),
    "binary": lambda s: True,       # an OpenAPI annotation: Ajv checks nothing
}


def validate(schema, value, where, outcome):
    """Fastify's check of one part ("params", "body", "querystring"): the
    value with coercions and defaults applied; Invalid on the first error.
    An absent body (None here stands for undefined) fails "must be object"."""
    return check(schema, value, where, outcome, where)


def to_utc(s):
    """A date-time string that passed the format, as an aware datetime."""
    s = re.sub(r"(?i)z$", "+00:00", s.replace(" ", "T").replace("t", "T"))
    m = re.search(r"([+-]\d\d)(\d\d)$", s)
    if m and not re.search(r"[+-]\d\d:\d\d$", s):
        s = s[:m.start()] + m.group(1) + ":" + m.group(2)
    if re.search(r"[+-]\d\d$", s):
        s += ":00"
    return dt.datetime.fromisoformat(s).astimezone(dt.timezone.utc)
