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


# Every route of the route map, with ids that exist in the seed.
ROUTES = [
    ("GET", "/availability"), ("POST", "/availability"), ("PATCH", "/availability/11"),
    ("DELETE", "/availability/11"), ("GET", "/schedule"), ("POST", "/schedule"),
    ("PATCH", "/schedule/2"), ("DELETE", "/schedule/2"), ("GET", "/booking"), ("GET", "/booking/503"),
    ("POST", "/booking"), ("POST", "/booking/503/cancel"), ("POST", "/booking/504/reschedule"),
    ("PATCH", "/booking/506/confirmation"), ("PATCH", "/booking/508/reassignBookingAutomatically"),
    ("PATCH", "/booking/508/reassignBookingToUser"), ("GET", "/contacts"), ("POST", "/contacts"),
    ("GET", "/contacts/301"), ("PATCH", "/contacts/301"), ("DELETE", "/contacts/305"),
    ("GET", "/contacts/301/meetings"), ("GET", "/event-types"), ("GET", "/event-types/101"),
    ("POST", "/event-types"), ("PATCH", "/event-types/101"), ("DELETE", "/event-types/103"),
    ("GET", "/slots"), ("POST", "/slots/reserve"), ("GET", "/slots/5f1c2d3e-0000-4000-8000-000000000001"),
    ("PATCH", "/slots/5f1c2d3e-0000-4000-8000-000000000001"),
    ("DELETE", "/slots/5f1c2d3e-0000-4000-8000-000000000002"), ("GET", "/teams"), ("POST", "/teams"),
    ("GET", "/teams/21"), ("PATCH", "/teams/21"), ("DELETE", "/teams/22"), ("GET", "/teams/21/event-types"),
    ("GET", "/teams/21/event-types/201"), ("POST", "/teams/21/event-types"),
    ("PATCH", "/teams/21/event-types/201"), ("DELETE", "/teams/21/event-types/202"),
    ("GET", "/teams/21/memberships"), ("GET", "/teams/21/memberships/42"), ("POST", "/teams/21/memberships"),
    ("PATCH", "/teams/21/memberships/43"), ("DELETE", "/teams/21/memberships/44"),
    ("GET", "/teams/21/schedules"), ("GET", "/users/me"), ("GET", "/users/alex"), ("PATCH", "/user/profile"),
    ("POST", "/users/edit-profile/avatar"), ("GET", "/webhook"), ("GET", "/webhook/601"), ("POST", "/webhook"),
    ("PATCH", "/webhook/601"), ("DELETE", "/webhook/602"),
]


def next_weekday(weekday, hour, minute=0):
    """The given weekday (0 = Monday), 10 to 16 days ahead (past the seeded bookings), hour:minute UTC."""
    d = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=10)
    while d.weekday() != weekday:
        d += dt.timedelta(days=1)
    return dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=dt.timezone.utc)


def main():
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="fake_calid_test.")
    fakes = []
    try:
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

        fake = Fake(tmp)
        fakes.append(fake)
        with open(fake.port_file) as f:
            check("port file holds the port", f.read().strip() == str(fake.port))
        ca = os.path.join(tmp, "ca.pem")
        c = Client(fake.port, ca)
        ctl = Client(fake.port, ca)

        st, body, _ = Client(fake.port, ca, host="127.0.0.1").request("GET", "/users/me")
        check("certificate also valid for 127.0.0.1", st == 200, st)

        # ---- auth and envelope ----
        st, body, _ = c.request("GET", "/booking", auth=False)
        check("no token -> 401", st == 401 and body == {"success": False,
                                                         "message": "Unauthorized: missing or invalid API key"}, body)
        st, body, _ = c.request("GET", "/booking", headers={"Authorization": "Bearer sk_live_x"}, auth=False)
        check("non-calid token -> 401", st == 401, st)

        st, body, _ = c.request("GET", "/booking/")
        ok = st == 200 and body.get("success") is True and isinstance(body.get("data"), list)
        check("GET /booking/ lists bookings", ok, body)
        if ok:
            data = body["data"]
            check("default status is upcoming", data and all(b["status"] == "accepted" for b in data), data)
            check("upcoming is sorted by start", [b["startTime"] for b in data] == sorted(b["startTime"] for b in data))
            pg = body.get("meta", {}).get("pagination", {})
            check("list has meta.pagination", pg.get("page") == 1 and pg.get("total") == len(data)
                  and "totalPages" in pg and "limit" in pg, body.get("meta"))
        st, body, _ = c.request("GET", "/booking?status=past&limit=1&page=2")
        check("past + limit/page", st == 200 and len(body["data"]) == 1
              and body["meta"]["pagination"]["total"] == 2 and body["meta"]["pagination"]["totalPages"] == 2, body)
        st, body, _ = c.request("GET", "/booking?status=cancelled")
        check("cancelled filter", st == 200 and [b["id"] for b in body["data"]] == [505], body)
        st, body, _ = c.request("GET", "/booking/999")
        check("missing booking -> 404", st == 404 and body == {"success": False, "message": "Booking 999 not found"},
              body)
        st, body, _ = c.request("GET", "/contacts/abc")
        check("non-numeric id -> 400", st == 400 and body["success"] is False, body)
        st, body, _ = c.request("GET", "/nowhere")
        check("unknown route -> 404", st == 404, st)

        # ---- every route exists ----
        missing = []
        for method, path in ROUTES:
            body = None if method in ("GET", "DELETE") else {}
            hdr = {}
            if path == "/users/edit-profile/avatar":
                body, hdr = b"", {"Content-Type": "multipart/form-data; boundary=x"}
            st, resp, _ = c.request(method, path, body=body, headers=hdr)
            if st == 404 and isinstance(resp, dict) and resp.get("message", "").startswith("Cannot "):
                missing.append("%s %s" % (method, path))
            if not isinstance(resp, dict) or "success" not in resp:
                missing.append("%s %s (no envelope)" % (method, path))
        check("all 57 routes answer", len(ROUTES) == 57 and not missing, missing)
        ctl.request("POST", "/__fake/reset", auth=False)

        # ---- create booking ----
        start = next_weekday(1, 14, 0)      # a Tuesday, 14:00 UTC
        new = {"eventTypeId": 102, "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "timeZone": "Europe/Berlin",
               "responses": {"name": "Nora Quinn", "email": "nora.quinn@example.com",
                             "location": {"value": "integrations:daily", "optionValue": ""},
                             "guests": [], "notes": "Selftest"},
               "language": "en", "metadata": {}}
        st, body, _ = c.request("POST", "/booking/", body=new)
        ok = check("create booking -> 201", st == 201 and body["data"].get("id") and body["data"].get("uid")
                   and body["data"]["status"] == "accepted", body)
        if ok:
            b = body["data"]
            check("end computed from event type length",
                  b["endTime"] == (start + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z"), b)
            st, got, _ = c.request("GET", "/booking/%d" % b["id"])
            check("created booking is readable", st == 200 and got["data"]["uid"] == b["uid"], got)
            st, state, _ = ctl.request("GET", "/__fake/state", auth=False)
            check("attendee became a contact",
                  any(x["email"] == "nora.quinn@example.com" for x in state["contacts"]), state.get("contacts"))
            st, body, _ = c.request("POST", "/booking", body=new)
            check("double booking -> 409", st == 409, body)
        bad = dict(new)
        del bad["start"]
        st, body, _ = c.request("POST", "/booking", body=bad)
        check("missing start -> 400 naming it", st == 400 and "start" in body["message"], body)
        st, body, _ = c.request("POST", "/booking", body="{not json",
                                headers={"Content-Type": "application/json"})
        check("malformed JSON -> 400", st == 400 and body["message"].startswith("Invalid JSON body:"), body)

        # ---- cancel ----
        st, body, _ = c.request("POST", "/booking/503/cancel", body=b"",
                                headers={"Content-Type": "application/json"})
        check("cancel with empty body -> 400", st == 400 and body["message"] == "Request body is required", body)
        st, body, _ = c.request("POST", "/booking/503/cancel", body={"cancellationReason": "Out sick"})
        check("cancel -> cancelled", st == 200 and body["data"]["status"] == "cancelled"
              and body["data"]["cancellationReason"] == "Out sick", body)

        # ---- slots and availability ----
        monday = next_weekday(0, 0)
        q = "/slots?eventTypeId=103&start=%s&end=%s&timeZone=Europe/Berlin" % (
            monday.strftime("%Y-%m-%d"), monday.strftime("%Y-%m-%d"))
        st, body, _ = c.request("GET", q)
        slots = body.get("data", {}).get("slots") if isinstance(body, dict) else None
        ok = st == 200 and isinstance(slots, dict) and slots
        check("slots answer data.slots keyed by date", ok, body)
        if ok:
            check("slot keys are YYYY-MM-DD", all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", k) for k in slots), slots.keys())
            times = [s["time"] for v in slots.values() for s in v]
            check("slots are {time: ISO 8601}", all(dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)
                  and all(set(s) == {"time"} for v in slots.values() for s in v), times)
            check("60-min slots in 09:00-17:00 Berlin", len(times) == 8 and "T09:00:00" in times[0], times)
        st, body, _ = c.request("GET", "/slots?eventTypeId=103&start=2030-01-01")
        check("slots without end -> 400", st == 400, body)
        st, body, _ = c.request("GET", "/availability?dateFrom=%s&dateTo=%s&eventTypeId=102&timeZone=UTC" % (
            monday.strftime("%Y-%m-%d"), monday.strftime("%Y-%m-%d")))
        check("availability has workingHours", st == 200 and body["data"]["workingHours"][0]["startTime"] == 540
              and body["data"]["dateRanges"] and "busy" in body["data"], body)

        # ---- contacts, avatar ----
        st, body, _ = c.request("GET", "/contacts/301/meetings")
        check("contact meetings match by email", st == 200 and body["data"]
              and all(any(a["email"] == "john.doe@example.com" for a in b["attendees"]) for b in body["data"]), body)
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        mp = (b"--BOUNDARY42\r\nContent-Disposition: form-data; name=\"file\"; filename=\"me.png\"\r\n"
              b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--BOUNDARY42--\r\n")
        st, body, _ = c.request("POST", "/users/edit-profile/avatar", body=mp,
                                headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY42"})
        check("avatar upload decodes the file part", st == 200 and body["data"]["size"] == len(png)
              and body["data"]["filename"] == "me.png" and body["data"]["contentType"] == "image/png", body)

        # ---- recording ----
        st, recs, _ = ctl.request("GET", "/__fake/requests", auth=False)
        posts = [r for r in recs if r["method"] == "POST" and r["path"] == "/booking/"]
        check("requests are recorded", posts and json.loads(posts[0]["body"]) == new
              and posts[0]["headers"]["authorization"] == "Bearer " + TOKEN and posts[0]["query"] == "", posts[:1])
        av = [r for r in recs if r["path"] == "/users/edit-profile/avatar" and r.get("body_base64")]
        check("binary bodies are recorded as base64", av and base64.b64decode(av[-1]["body"]) == mp)
        conns = {r["conn"] for r in recs}
        check("one kept-alive connection served them all", len(conns) == 1 and max(r["seq"] for r in recs) > 50,
              (conns, len(recs)))
        ctl.request("DELETE", "/__fake/requests", auth=False)
        st, recs, _ = ctl.request("GET", "/__fake/requests", auth=False)
        check("DELETE /__fake/requests clears", recs == [], recs)

        # ---- faults ----
        ctl.request("POST", "/__fake/fault", auth=False, body={"path": "/booking", "mode": "status", "status": 429})
        st, body, resp = c.request("GET", "/booking")
        check("fault status 429 + Retry-After", st == 429 and resp.getheader("Retry-After") == "30"
              and body["success"] is False, (st, body))
        st, body, _ = c.request("GET", "/booking")
        check("fault applies count times only", st == 200, st)

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

        st, body, _ = ctl.request("POST", "/__fake/fault", auth=False, body={"mode": "nope"})
        check("unknown fault mode -> 400", st == 400, body)

        # ---- reset ----
        c.request("DELETE", "/contacts/301")
        ctl.request("POST", "/__fake/reset", auth=False)
        st, body, _ = c.request("GET", "/contacts/301")
        check("reset restores the seed", st == 200 and body["data"]["name"] == "John Doe", body)
        st, body, _ = c.request("GET", "/booking/503")
        check("reset undoes the cancel", st == 200 and body["data"]["status"] == "accepted", body)
        st, faults, _ = ctl.request("GET", "/__fake/fault", auth=False)
        check("reset clears faults", faults["data"] == [], faults)

        # ---- the other certificates ----
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
    check("took under 10 s", time.monotonic() - t0 < 10, time.monotonic() - t0)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
