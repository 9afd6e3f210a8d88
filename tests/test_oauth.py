#!/usr/bin/env python3
"""OAuth 2.1 sign-in (--oauth --public-url) and the two pages for people.

Protocol tests of every endpoint and refusal: the metadata (RFC 9728, RFC
8414), /register (RFC 7591), /authorize (the consent page, its CSRF token, the
key check against the fake API, PKCE), /token (codes, rotating refresh
tokens), sealed access tokens on /mcp (tampered, expired, wrong audience, a
second instance with the same secret), the rate limit of key checks, and that
the key never shows in a log, a page, a URL or a token. Then both pages in
headless Chromium (screenshots kept under build/screenshots/).

Runs over the transport under test (CALID_TEST_TRANSPORT, see harness.py).
"""
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import Skip, build_request, free_port, request  # noqa: E402

GOOD_KEY = "calid_good_key_0123456789"
FORM = "application/x-www-form-urlencoded"
ROOT = H.ROOT
SHOTS = os.path.join(ROOT, os.environ.get("BUILD", "build"), "screenshots")

fake = None
tmp = None
srv = None      # the main OAuth server
PORT = None
BASE = None     # its public URL


class FixedPortServer(H.Server):
    """A server on a port chosen before it starts, so that --public-url can name it."""

    def __init__(self, port, *flags):
        super().__init__("--listen", f"127.0.0.1:{port}", *flags, listen=False)
        self.fixed_port = port

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([self.binary] + self.flags, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, env=H.clean_env(self.env), cwd=ROOT)
        self.port = self.fixed_port
        if not H.wait_listening(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"server did not start on {self.port}: {self.stderr_text()}")
        return self


def start_server(*flags, public=None, secret=None, oauth=True):
    port = free_port()
    args = fake.server_flags() + (["--oauth"] if oauth else [])
    if public is not False:
        args += ["--public-url", public or f"{H.SCHEME}://127.0.0.1:{port}"]
    args += ["--secret-file", secret or os.path.join(tmp, "secret")]
    return FixedPortServer(port, *args, *flags).start()


def setup():
    global fake, tmp, srv, PORT, BASE
    tmp = tempfile.mkdtemp(prefix="calid_oauth_")
    fake = H.FakeCalid("--token", GOOD_KEY).start()
    srv = start_server("--log-level", "debug")
    PORT = srv.port
    BASE = f"{H.SCHEME}://127.0.0.1:{PORT}"


def teardown():
    for p in (srv, fake):
        if p is not None:
            p.close()
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- HTTP helpers

def http(method, path, body=b"", headers=(), port=None):
    port = port or PORT
    hs = [("Host", f"127.0.0.1:{port}"), ("Connection", "close")] + list(headers)
    return request(port, build_request(method, path, hs, body), method=method)


def get(path, headers=(), port=None):
    return http("GET", path, headers=headers, port=port)


def post_form(path, fields, headers=(), port=None):
    body = urllib.parse.urlencode(fields).encode()
    return http("POST", path, body, [("Content-Type", FORM)] + list(headers), port=port)


def post_json(path, obj, port=None):
    body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
    return http("POST", path, body, [("Content-Type", "application/json")], port=port)


def api_reason(key):
    """The reason the fake API itself gives for refusing this key (the page must quote it)."""
    import http.client
    import ssl
    c = http.client.HTTPSConnection("127.0.0.1", fake.port, context=ssl.create_default_context(cafile=fake.ca_file),
                                    timeout=H.IO_TIMEOUT)
    c.request("GET", "/users/me", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    assert r.status == 401, f"the fake accepted {key}"
    return j.get("message") or j["error"]["message"]


def fake_requests(path=None):
    import http.client
    import ssl
    ctx = ssl.create_default_context(cafile=fake.ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", fake.port, context=ctx, timeout=H.IO_TIMEOUT)
    q = "?" + urllib.parse.urlencode({"path": path}) if path else ""
    c.request("DELETE" if path == "CLEAR" else "GET", "/__fake/requests" + ("" if path == "CLEAR" else q))
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def pkce():
    verifier = b64url(secrets.token_bytes(48))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def register(name="Test App", uris=("http://127.0.0.1:9/callback",), port=None):
    r = post_json("/register", {"client_name": name, "redirect_uris": list(uris)}, port=port)
    assert r.status == 201, f"register: {r.status} {r.text}"
    return r.json()


def auth_params(client, challenge, state="st-1", redirect=None, port=None, **extra):
    p = {"response_type": "code", "client_id": client["client_id"],
         "redirect_uri": redirect or client["redirect_uris"][0], "code_challenge": challenge,
         "code_challenge_method": "S256", "state": state,
         "resource": f"{H.SCHEME}://127.0.0.1:{port}/mcp" if port else f"{BASE}/mcp"}
    p.update(extra)
    return {k: v for k, v in p.items() if v is not None}


def hidden_fields(page):
    """The form's fields as a browser would send them (name -> value)."""
    fields = {}
    for m in re.finditer(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page):
        fields[m.group(1)] = html.unescape(m.group(2))
    return fields


def consent(client, challenge, key=GOOD_KEY, action="allow", state="st-1", port=None, **extra):
    """GET the consent page, then POST its form with the key: the answer."""
    q = urllib.parse.urlencode(auth_params(client, challenge, state=state, port=port, **extra))
    page = get("/authorize?" + q, port=port)
    assert page.status == 200, f"consent page: {page.status} {page.text[:300]}"
    fields = hidden_fields(page.text)
    fields["api_key"] = key
    fields["action"] = action
    return post_form("/authorize", fields, port=port)


def location_params(r):
    assert r.status == 303, f"expected a redirect, got {r.status} {r.text[:300]}"
    loc = r.headers["location"]
    return loc, dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))


def sign_in(client=None, port=None):
    """The whole browser part: (client, verifier, code)."""
    client = client or register(port=port)
    verifier, challenge = pkce()
    _, q = location_params(consent(client, challenge, port=port))
    return client, verifier, q["code"]


def exchange(client, verifier, code, port=None, **extra):
    f = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
         "client_id": client["client_id"], "redirect_uri": client["redirect_uris"][0],
         "resource": f"{BASE}/mcp"}
    f.update(extra)
    return post_form("/token", {k: v for k, v in f.items() if v is not None}, port=port)


def tokens(port=None):
    client, verifier, code = sign_in(port=port)
    r = exchange(client, verifier, code, port=port)
    assert r.status == 200, f"token: {r.status} {r.text}"
    return client, r.json()


def mcp_call(token, port=None):
    """tools/call get_users_me (modern era) with this bearer token."""
    body = H.modern_body("tools/call", {"name": "get_users_me", "arguments": {}})
    hs = [("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH), ("MCP-Protocol-Version", H.MODERN),
          ("Mcp-Method", "tools/call"), ("Mcp-Name", "get_users_me")]
    if token:
        hs.append(("Authorization", f"Bearer {token}"))
    return http("POST", "/mcp", json.dumps(body), hs, port=port)


def oauth_error(r, status, error):
    assert r.status == status, f"expected {status} {error}, got {r.status} {r.text}"
    assert r.json()["error"] == error, r.text
    assert r.json().get("error_description"), r.text


# ---------------------------------------------------------------- start-up

def test_start_refusals():
    secret = os.path.join(tmp, "secret")
    cases = [(["--oauth"], "--public-url"),
             (["--oauth", "--public-url", "http://example.com"], "https"),
             (["--oauth", "--public-url", "https://example.com/mcp"], "no path"),
             (["--oauth", "--public-url", "ftp://example.com"], "https://"),
             (["--oauth", "--public-url", "https://example.com", "--api-key", "calid_x"], "--api-key")]
    for flags, want in cases:
        rc, _, err = H.run_binary(["--listen", f"127.0.0.1:{free_port()}", "--secret-file", secret] + flags)
        assert rc != 0 and want in err, f"{flags}: rc {rc}, {err!r}"


def test_help_names_the_flags():
    rc, out, _ = H.run_binary(["--help"])
    assert rc == 0 and "--oauth" in out and "--public-url" in out and "CALID_MCP_PUBLIC_URL" in out, out


# ---------------------------------------------------------------- discovery

def test_401_names_the_resource_metadata():
    r = mcp_call(None)
    assert r.status == 401, r.status
    want = f'Bearer resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp"'
    assert r.headers["www-authenticate"] == want, r.headers.get("www-authenticate")


def test_resource_metadata_both_paths():
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        r = get(path)
        assert r.status == 200 and r.headers["content-type"].startswith("application/json"), (path, r.status)
        j = r.json()
        assert j["resource"] == f"{BASE}/mcp" and j["authorization_servers"] == [BASE], j
        assert j["bearer_methods_supported"] == ["header"], j
        assert r.headers["access-control-allow-origin"] == "*", r.headers


def test_server_metadata():
    r = get("/.well-known/oauth-authorization-server")
    assert r.status == 200, r.status
    j = r.json()
    assert j["issuer"] == BASE, j
    for k, v in [("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"), ("registration_endpoint", "/register")]:
        assert j[k] == BASE + v, (k, j[k])
    assert j["code_challenge_methods_supported"] == ["S256"], j
    assert j["token_endpoint_auth_methods_supported"] == ["none"], j
    assert set(j["grant_types_supported"]) == {"authorization_code", "refresh_token"}, j
    assert j["response_types_supported"] == ["code"], j


def test_preflight_and_methods():
    r = http("OPTIONS", "/token", headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")])
    assert r.status == 204 and r.headers["access-control-allow-origin"] == "*", (r.status, r.headers)
    assert "POST" in r.headers["access-control-allow-methods"], r.headers
    r = get("/token")
    assert r.status == 405 and "POST" in r.headers["allow"], (r.status, r.headers)
    r = http("DELETE", "/.well-known/oauth-authorization-server")
    assert r.status == 405, r.status


def test_oauth_off_keeps_the_endpoints_closed():
    s = start_server(oauth=False, public=False)
    try:
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server", "/authorize"):
            r = get(path, port=s.port)
            assert r.status == 404 and "--oauth" in r.text, (path, r.status, r.text)
        r = post_json("/register", {"redirect_uris": ["https://a.example/cb"]}, port=s.port)
        assert r.status == 404, r.status
        r = mcp_call(None, port=s.port)
        assert r.status == 401 and r.headers["www-authenticate"] == 'Bearer realm="calid-mcp"', r.headers
    finally:
        s.close()


# ---------------------------------------------------------------- /register

def test_register_accepts_the_three_kinds_of_redirect():
    uris = ["https://claude.ai/api/mcp/auth_callback", "cursor://anysphere.cursor-retrieval/oauth/user-MCP/callback",
            "http://localhost:33418/oauth/callback", "http://127.0.0.1:5555/cb?x=1"]
    j = register("Claude", uris)
    assert j["client_id"].startswith("cmcl_") and j["redirect_uris"] == uris, j
    assert j["token_endpoint_auth_method"] == "none" and j["client_name"] == "Claude", j
    assert set(j["grant_types"]) == {"authorization_code", "refresh_token"}, j
    j = register("v6", ["http://[::1]:8000/cb", "com.example.app:/oauth2redirect"])
    assert j["client_id"].startswith("cmcl_"), j


def test_register_refusals():
    bad_uris = ["http://example.com/cb", "http://localhost.evil.example/cb", "javascript:alert(1)",
                "https://a.example/cb#frag", "https://user@a.example/cb", "data:text/html,hi", "file:///etc/passwd",
                "not a uri", "https:///nohost", "https://a.example/<x>"]
    for u in bad_uris:
        r = post_json("/register", {"redirect_uris": [u]})
        oauth_error(r, 400, "invalid_redirect_uri")
    for body in ({"redirect_uris": []}, {"redirect_uris": ["https://a.example/%d" % i for i in range(5)]}, {},
                 {"redirect_uris": "https://a.example/cb"}, {"redirect_uris": [5]}):
        oauth_error(post_json("/register", body), 400, "invalid_redirect_uri")
    ok = ["https://a.example/cb"]
    for extra in ({"token_endpoint_auth_method": "client_secret_basic"}, {"grant_types": ["client_credentials"]},
                  {"response_types": ["token"]}, {"client_name": "x" * 101}, {"client_name": 5}):
        oauth_error(post_json("/register", dict(redirect_uris=ok, **extra)), 400, "invalid_client_metadata")
    oauth_error(post_json("/register", b"{not json"), 400, "invalid_client_metadata")
    r = http("POST", "/register", json.dumps({"redirect_uris": ok}), [("Content-Type", "text/plain")])
    oauth_error(r, 400, "invalid_client_metadata")


def test_client_id_is_sealed():
    j = register("Seal Test", ["https://seal.example/cb"])
    raw = base64.urlsafe_b64decode(j["client_id"][5:] + "==")
    assert b"seal.example" not in raw and b"Seal Test" not in raw, "the client id carries its fields in clear"


# ---------------------------------------------------------------- /authorize

def test_consent_page_names_the_client_and_escapes():
    client = register('Evil <script>alert("x")</script> & Co', ["https://evil.example/cb"])
    _, challenge = pkce()
    r = get("/authorize?" + urllib.parse.urlencode(auth_params(client, challenge, state='s"><b>')))
    assert r.status == 200 and r.headers["content-type"].startswith("text/html"), (r.status, r.text[:300])
    t = r.text
    assert "<script>" not in t and "&lt;script&gt;" in t and "&amp; Co" in t, t[:800]
    assert 's"><b>' not in t and "s&quot;&gt;&lt;b&gt;" in t, "state is not escaped"
    assert 'type="password"' in t and 'name="api_key"' in t, "no password field"
    assert 'href="https://cal.id/settings/developer/api-keys"' in t, "no link to where keys are made"
    assert "<script" not in t.lower().replace("&lt;script", ""), "the page must work without JavaScript"
    assert "https://evil.example/cb" in t, "the page does not say where it returns to"
    f = hidden_fields(t)
    assert f["client_id"] == client["client_id"] and f["state"] == 's"><b>' and len(f["csrf"]) >= 32, f
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store", r.headers


def test_authorize_refusals_before_the_redirect_is_trusted():
    client = register()
    _, challenge = pkce()
    tampered = dict(client, client_id=client["client_id"][:-3] + ("AAA" if not client["client_id"].endswith("AAA") else "BBB"))
    for params, want in [(auth_params(tampered, challenge), "register again"),
                         (auth_params(client, challenge, redirect="http://127.0.0.1:9/other"), "not one the app registered"),
                         ({k: v for k, v in auth_params(client, challenge).items() if k != "client_id"}, "no client_id")]:
        r = get("/authorize?" + urllib.parse.urlencode(params))
        assert r.status == 400 and "location" not in r.headers, (want, r.status, r.headers)
        assert want in r.text and "<title>Sign-in cannot continue</title>" in r.text, (want, r.text[:500])
    r = get("/authorize?client_id=a&client_id=b")
    assert r.status == 400 and "repeated" in r.text, r.status


def test_authorize_errors_go_back_to_the_app():
    client = register()
    _, challenge = pkce()
    for extra, error in [({"code_challenge": None}, "invalid_request"), ({"code_challenge_method": "plain"}, "invalid_request"),
                         ({"code_challenge": "short"}, "invalid_request"), ({"response_type": "token"}, "unsupported_response_type"),
                         ({"resource": "https://other.example/mcp"}, "invalid_target")]:
        p = auth_params(client, challenge, state="keep me", **extra)
        loc, q = location_params(get("/authorize?" + urllib.parse.urlencode({k: v for k, v in p.items() if v is not None})))
        assert loc.startswith("http://127.0.0.1:9/callback?"), loc
        assert q["error"] == error and q["state"] == "keep me" and q["iss"] == BASE, (extra, q)


def test_good_key_gives_a_code_and_state_back():
    fake_requests("CLEAR")
    client = register()
    _, challenge = pkce()
    r = consent(client, challenge, state="xyz/+ =&")
    loc, q = location_params(r)
    assert loc.startswith("http://127.0.0.1:9/callback?code="), loc
    assert q["state"] == "xyz/+ =&" and q["iss"] == BASE and q["code"].startswith("cmco_"), q
    assert GOOD_KEY not in loc and GOOD_KEY not in r.raw_head.decode("latin-1"), "the key is in the redirect"
    hits = [h for h in fake_requests("/users/me") if h["method"] == "GET"]
    assert len(hits) == 1 and hits[0]["headers"]["authorization"] == f"Bearer {GOOD_KEY}", hits


def test_wrong_key_shows_the_page_again_with_the_reason():
    client = register()
    _, challenge = pkce()
    r = consent(client, challenge, key="calid_wrong_key_987")
    assert r.status == 401 and r.headers["content-type"].startswith("text/html"), (r.status, r.text[:300])
    assert "Cal ID did not accept this key: " + html.escape(api_reason("calid_wrong_key_987")) in r.text, r.text[:1500]
    assert 'name="api_key"' in r.text and "calid_wrong_key_987" not in r.text, "the page must ask again, without the key"
    r = consent(client, challenge, key="two words")
    assert r.status == 400 and "not a Cal ID API key" in r.text, r.status
    r = consent(client, challenge, key="")
    assert r.status == 400 and "Enter your Cal ID API key" in r.text, r.status


def test_csrf_token_protects_the_form():
    client = register()
    _, challenge = pkce()
    page = get("/authorize?" + urllib.parse.urlencode(auth_params(client, challenge)))
    fields = dict(hidden_fields(page.text), api_key=GOOD_KEY, action="allow")
    for change in ({"csrf": ""}, {"csrf": "A" * 32}, {"state": "another"}, {"code_challenge": pkce()[1]}):
        r = post_form("/authorize", dict(fields, **change))
        assert r.status == 403 and "form has expired" in r.text, (change, r.status, r.text[:300])
    r = http("POST", "/authorize", urllib.parse.urlencode(fields), [("Content-Type", "application/json")])
    assert r.status == 415, r.status


def test_deny_goes_back_with_access_denied():
    fake_requests("CLEAR")
    client = register()
    _, challenge = pkce()
    _, q = location_params(consent(client, challenge, action="deny"))
    assert q["error"] == "access_denied" and q["state"] == "st-1" and "code" not in q, q
    assert fake_requests("/users/me") == [], "a denied sign-in must not check the key"


# ---------------------------------------------------------------- /token and /mcp

def test_code_exchange_and_a_tool_call_with_the_users_key():
    client, verifier, code = sign_in()
    r = exchange(client, verifier, code)
    assert r.status == 200 and r.headers["cache-control"] == "no-store", (r.status, r.text)
    t = r.json()
    assert t["token_type"] == "Bearer" and t["expires_in"] == 3600, t
    assert t["access_token"].startswith("cmat_") and t["refresh_token"].startswith("cmrt_"), t
    for tok in (t["access_token"], t["refresh_token"], code):
        raw = base64.urlsafe_b64decode(tok[5:] + "==")
        assert GOOD_KEY.encode() not in raw, "a token carries the key in clear"
    fake_requests("CLEAR")
    r = mcp_call(t["access_token"])
    assert r.status == 200, (r.status, r.text)
    res = r.json()["result"]
    assert res["isError"] is False, res
    hits = fake_requests("/users/me")
    assert len(hits) == 1 and hits[0]["headers"]["authorization"] == f"Bearer {GOOD_KEY}", hits


def test_code_refusals():
    client, verifier, code = sign_in()
    other = register("Other")
    oauth_error(exchange(client, "x" * 43, code), 400, "invalid_grant")             # wrong verifier
    oauth_error(exchange(client, None, code), 400, "invalid_request")               # no verifier
    oauth_error(exchange(other, verifier, code), 400, "invalid_grant")              # another client
    oauth_error(exchange(client, verifier, code, redirect_uri="http://127.0.0.1:9/x"), 400, "invalid_grant")
    oauth_error(exchange(client, verifier, code, resource="https://x.example/mcp"), 400, "invalid_target")
    oauth_error(exchange(client, verifier, code[:-2] + "xx"), 400, "invalid_grant")  # tampered
    assert exchange(client, verifier, code).status == 200                           # all of that did not use it up
    oauth_error(exchange(client, verifier, code), 400, "invalid_grant")             # reused
    oauth_error(exchange(dict(client, client_id="cmcl_forged"), verifier, code), 401, "invalid_client")
    oauth_error(post_form("/token", {"grant_type": "password", "client_id": client["client_id"]}), 400, "unsupported_grant_type")
    oauth_error(post_form("/token", {"client_id": client["client_id"]}), 400, "invalid_request")
    oauth_error(http("POST", "/token", "{}", [("Content-Type", "application/json")]), 400, "invalid_request")


def test_refresh_rotates():
    client, t = tokens()
    f = {"grant_type": "refresh_token", "refresh_token": t["refresh_token"], "client_id": client["client_id"]}
    r = post_form("/token", f)
    assert r.status == 200, r.text
    t2 = r.json()
    assert t2["refresh_token"] != t["refresh_token"] and t2["access_token"] != t["access_token"], t2
    assert mcp_call(t2["access_token"]).status == 200
    oauth_error(post_form("/token", f), 400, "invalid_grant")   # the old one, again
    other = register("Other")
    oauth_error(post_form("/token", dict(f, refresh_token=t2["refresh_token"], client_id=other["client_id"])), 400, "invalid_grant")
    oauth_error(post_form("/token", dict(f, refresh_token=t2["access_token"])), 400, "invalid_grant")  # an access token
    r = post_form("/token", dict(f, refresh_token=t2["refresh_token"]))
    assert r.status == 200, r.text


def test_bad_access_tokens_are_401():
    _, t = tokens()
    a = t["access_token"]
    flipped = a[:20] + ("A" if a[20] != "A" else "B") + a[21:]
    for bad in (flipped, a[:-4], t["refresh_token"], "cmat_", "cmat_" + "A" * 80, "cmco_" + a[5:]):
        r = mcp_call(bad)
        assert r.status == 401, (bad[:30], r.status)
        assert 'error="invalid_token"' in r.headers["www-authenticate"] and "resource_metadata=" in r.headers["www-authenticate"], r.headers


def seal_access(secret, exp, audience, key, client=b"\0" * 16):
    """An access token made here the way the server makes them (a test of the format)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    k = hmac.new(secret, b"calid-mcp oauth seal", hashlib.sha256).digest()
    plain = struct.pack(">Q", exp) + secrets.token_bytes(16) + client
    for s in (audience.encode(), key.encode()):
        plain += struct.pack(">H", len(s)) + s
    nonce = secrets.token_bytes(12)
    return "cmat_" + b64url(nonce + ChaCha20Poly1305(k).encrypt(nonce, plain, b"cmat_"))


def test_expired_and_foreign_tokens():
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise Skip("python3-cryptography is not installed")
    with open(os.path.join(tmp, "secret"), "rb") as f:
        secret = f.read()
    now = int(time.time())
    good = seal_access(secret, now + 600, f"{BASE}/mcp", GOOD_KEY)
    assert mcp_call(good).status == 200, "a token sealed the documented way is accepted"
    r = mcp_call(seal_access(secret, now - 5, f"{BASE}/mcp", GOOD_KEY))
    assert r.status == 401 and "expired" in r.text, (r.status, r.text)
    r = mcp_call(seal_access(secret, now + 600, "https://other.example/mcp", GOOD_KEY))
    assert r.status == 401 and "another server" in r.text, (r.status, r.text)
    r = mcp_call(seal_access(b"\1" * 32, now + 600, f"{BASE}/mcp", GOOD_KEY))
    assert r.status == 401 and "not valid" in r.text, (r.status, r.text)


def test_second_instance_with_the_same_secret():
    _, t = tokens()
    same = start_server(public=BASE)                       # behind the same public URL
    other = start_server()                                 # its own public URL: another audience
    fresh = start_server(secret=os.path.join(tmp, "another-secret"), public=BASE)
    try:
        assert mcp_call(t["access_token"], port=same.port).status == 200
        r = mcp_call(t["access_token"], port=other.port)
        assert r.status == 401 and "another server" in r.text, (r.status, r.text)
        r = mcp_call(t["access_token"], port=fresh.port)
        assert r.status == 401 and "not valid" in r.text, (r.status, r.text)
    finally:
        for s in (same, other, fresh):
            s.close()


def test_session_era_session_outlives_a_refresh():
    client, t = tokens()
    sid = H.initialize(PORT, token=t["access_token"], version="2025-06-18")
    r = post_form("/token", {"grant_type": "refresh_token", "refresh_token": t["refresh_token"], "client_id": client["client_id"]})
    t2 = r.json()
    r = H.session_post(PORT, sid, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=t2["access_token"],
                       version="2025-06-18")
    assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, (r.status, r.text[:300])
    r = H.session_post(PORT, sid, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, token="calid_someone_else",
                       version="2025-06-18")
    assert r.status == 404, "the session is bound to the signed-in user's key"


def test_direct_keys_still_work():
    fake_requests("CLEAR")
    r = mcp_call(GOOD_KEY)
    assert r.status == 200 and r.json()["result"]["isError"] is False, r.text


def test_key_checks_are_rate_limited():
    s = start_server()
    try:
        client = register(port=s.port)
        _, challenge = pkce()
        statuses = [consent(client, challenge, key="calid_wrong_%d" % i, port=s.port).status for i in range(10)]
        assert statuses == [401] * 10, statuses
        r = consent(client, challenge, key=GOOD_KEY, port=s.port)
        assert r.status == 429 and "Too many keys" in r.text, r.status
    finally:
        s.close()


def test_the_key_is_never_logged():
    log = srv.stderr_text()
    assert "oauth: a code for" in log, "the debug log should show the sign-ins"
    assert GOOD_KEY not in log and "calid_wrong" not in log, "a key is in the log"


def test_keep_alive_sign_in_requests():
    """Token requests and the consent form on one kept-alive connection (the body is not touched after the answer)."""
    client, verifier, code = sign_in()
    f = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                                "client_id": client["client_id"], "redirect_uri": client["redirect_uris"][0]})
    hs = [("Host", f"127.0.0.1:{PORT}"), ("Content-Type", FORM)]
    with H.Conn(PORT) as c:
        c.send(build_request("POST", "/token", hs, f))
        first = c.read_response()
        c.send(build_request("POST", "/token", hs, f) + build_request("GET", "/healthz", [("Host", f"127.0.0.1:{PORT}")]))
        second, health = c.read_response(), c.read_response(method="GET")
    assert first.status == 200 and second.status == 400 and health.status == 200, (first.status, second.status, health.status)


# ---------------------------------------------------------------- the home page

def test_home_page():
    r = get("/", headers=[("Accept", "text/html,application/xhtml+xml")])
    assert r.status == 200 and r.headers["content-type"].startswith("text/html"), r.status
    t = r.text
    assert "<title>Cal ID MCP server</title>" in t and f"{BASE}/mcp" in t, t[:500]
    assert t.count(f'"url": "{BASE}/mcp"') >= 3 and f'"mcp-remote", "{BASE}/mcp"' in t, "configs lack the URL"
    assert "OAuth sign-in is <b>on</b>" in t and "serving" in t, t
    assert GOOD_KEY not in t and "calid_xxx" in t
    assert get("/").status == 404, "GET / without Accept: text/html keeps its 404"
    css = get("/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css") and "max-width" in css.text


def test_home_page_without_oauth_uses_the_host():
    s = start_server(oauth=False, public=False)
    try:
        r = get("/", headers=[("Accept", "text/html")], port=s.port)
        assert r.status == 200 and f"{H.SCHEME}://127.0.0.1:{s.port}/mcp" in r.text, r.text[:400]
        assert "OAuth sign-in is <b>off</b>" in r.text
        r = http("GET", "/", headers=[("Accept", "text/html"), ("Host", '127.0.0.1:1"><script>')], port=s.port)
        assert "<script>" not in r.text, "a hostile Host header reached the page"
    finally:
        s.close()


# ---------------------------------------------------------------- both pages in Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(url, *args):
    profile = tempfile.mkdtemp(prefix="chromium_", dir=tmp)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars"]
    if H.HTTPS:
        cmd.append("--ignore-certificate-errors")  # the test CA is not in Chromium's store
    p = subprocess.run(cmd + list(args) + [url], capture_output=True, timeout=90)
    return p.stdout.decode("utf-8", "replace"), p.returncode


def shoot(url, name, sizes=(("phone", "390,844"), ("desktop", "1280,900"))):
    os.makedirs(SHOTS, exist_ok=True)
    dom, _ = chromium(url, "--dump-dom")
    for label, size in sizes:
        path = os.path.join(SHOTS, f"{name}-{label}-{H.TRANSPORT}.png")
        if os.path.exists(path):
            os.unlink(path)
        chromium(url, f"--screenshot={path}", f"--window-size={size}")
        assert os.path.exists(path) and os.path.getsize(path) > 5000, f"no screenshot {path}"
    return dom


def test_pages_in_chromium():
    if not os.path.exists(CHROMIUM):
        raise Skip("chromium is not installed")
    dom = shoot(f"{BASE}/", "home", (("phone", "390,844"), ("phone-scrolled", "390,3200"), ("desktop", "1280,900")))
    assert "<title>Cal ID MCP server</title>" in dom, dom[:400]
    assert f"{BASE}/mcp" in dom and "Connect your app" in dom, "the home page lacks its URL"
    client = register("Claude", ["https://claude.ai/api/mcp/auth_callback"])
    _, challenge = pkce()
    url = f"{BASE}/authorize?" + urllib.parse.urlencode(auth_params(client, challenge))
    dom = shoot(url, "consent")
    assert "<title>Sign in to Cal ID: Claude</title>" in dom, dom[:400]
    assert re.search(r'<form method="post" action="/authorize">', dom) and 'type="password"' in dom, "no form"
    assert "Allow <b>Claude</b> to use your Cal ID account?" in dom, "the client is not named"
    assert "https://claude.ai/api/mcp/auth_callback" in dom and BASE in dom


def test_zz_server_survived():
    assert srv.alive(), f"the server died: {srv.stderr_text()[-2000:]}"
    log = srv.stderr_text()
    assert "runtime error" not in log and "AddressSanitizer" not in log, log[-2000:]


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
