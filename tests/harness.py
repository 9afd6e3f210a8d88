"""Shared helpers for the calid-mcp integration tests (Python 3.11, stdlib only).

What is here:
  - processes: free_port(), Server (the binary under test), FakeCalid (the
    fake Cal ID API), run_binary() for one-shot runs such as --help;
  - a raw HTTP/1.1 client over a socket: Conn sends exact bytes (whole or in
    pieces) and reads one full answer at a time, so pipelining and
    keep-alive can be tested; request(), post_json() and get() wrap it;
  - MCP helpers: initialize(), session_post(), modern_body(), modern_post();
  - run_tests(): a tiny runner that ends with "N passed, N failed".

Transport: CALID_TEST_TRANSPORT=https runs the same tests over HTTPS: every
Server is started with the test certificate (tests/make_certs.sh: server.pem,
for localhost and 127.0.0.1) and every Conn wraps its socket in TLS trusting
the test CA. Tests that need plain text raise Skip under HTTPS.

Everything talks to 127.0.0.1 only. Nothing asserts on elapsed time: socket
timeouts exist only so that a hung server fails a test instead of hanging
the suite.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CALID_MCP_BIN") or os.path.join(ROOT, "build", "calid_mcp")
CERTS = os.environ.get("CALID_TEST_CERTS") or os.path.join(ROOT, "build", "certs")

MODERN = "2026-07-28"
SESSION_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
LATEST_SESSION = "2025-11-25"
DEFAULT_TOKEN = "calid_test_token"
ACCEPT_BOTH = "application/json, text/event-stream"
IO_TIMEOUT = 10.0          # seconds a read may block before the test fails
START_TIMEOUT = 10.0       # seconds a process may take to start listening

# Variables the server reads; the tests pass everything as flags instead.
_SERVER_ENV_VARS = ("CALID_MCP_LISTEN", "CALID_API_BASE", "CALID_CA_FILE", "CALID_API_KEY",
                    "CALID_MCP_ACCESS_TOKEN", "CALID_MCP_TLS_CERT", "CALID_MCP_TLS_KEY", "CALID_MCP_MAX_CONNS_PER_ADDR")

TRANSPORT = os.environ.get("CALID_TEST_TRANSPORT", "http")
if TRANSPORT not in ("http", "https"):
    raise SystemExit(f"CALID_TEST_TRANSPORT must be http or https, not {TRANSPORT!r}")
HTTPS = TRANSPORT == "https"
SCHEME = TRANSPORT  # for URLs: f"{H.SCHEME}://127.0.0.1:{port}/mcp"


class Skip(Exception):
    """Raised by a test that cannot run here; counted neither passed nor failed."""


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_VARS}
    if extra:
        env.update(extra)
    return env


def wait_listening(port, proc=None, timeout=START_TIMEOUT):
    """Waits until 127.0.0.1:port accepts a connection. False if proc died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def tls_flags(certs=None):
    """--tls-cert/--tls-key with the test server certificate."""
    certs = ensure_certs(certs)
    return ["--tls-cert", os.path.join(certs, "server.pem"), "--tls-key", os.path.join(certs, "server.key")]


class Server:
    """The calid_mcp binary, listening on a fresh 127.0.0.1 port.

    Server(flags...) then start(); flags are passed as given, after
    --listen 127.0.0.1:PORT (host= another address, e.g. 0.0.0.0) unless
    listen=False (the flags then choose).
    tls=True adds the test certificate (tls_flags()); the default is the
    transport under test (CALID_TEST_TRANSPORT), unless the flags already
    name a --tls-cert. stderr goes to a file, read with stderr_text().
    """

    def __init__(self, *flags, binary=None, listen=True, env=None, tls=None, host="127.0.0.1"):
        self.flags = list(flags)
        self.host = host  # the address listened on; clients always use 127.0.0.1
        self.binary = binary or BIN
        self.listen = listen
        self.env = env
        self.tls = HTTPS if tls is None else tls
        if self.tls and "--tls-cert" not in self.flags:
            self.flags += tls_flags()
        self.proc = None
        self.port = None
        self.returncode = None
        fd, self.stderr_path = tempfile.mkstemp(prefix="calid_mcp_stderr_", suffix=".log")
        os.close(fd)

    def start(self):
        if not os.path.exists(self.binary):
            raise RuntimeError(f"server binary {self.binary} not found (make build/calid_mcp)")
        for _attempt in range(5):
            self.port = free_port()
            args = [self.binary]
            if self.listen:
                args += ["--listen", f"{self.host}:{self.port}"]
            args += self.flags
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=err, env=clean_env(self.env), cwd=ROOT)
            if wait_listening(self.port, self.proc):
                return self
            if self.proc.poll() is None:
                self.stop()
                raise RuntimeError(f"server did not listen within {START_TIMEOUT}s: {self.stderr_text()}")
            text = self.stderr_text()
            if "in use" not in text.lower():
                raise RuntimeError(f"server exited with {self.proc.returncode}: {text}")
            # someone took the port between free_port() and bind(): try another
        raise RuntimeError("could not find a free port for the server")

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns the exit status."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        """stop(), then remove the stderr file."""
        rc = self.stop()
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def run_binary(args, timeout=10, binary=None, env=None):
    """Runs the binary to completion: (returncode, stdout, stderr) as text."""
    p = subprocess.run([binary or BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, env=clean_env(env), cwd=ROOT)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


_LIMITS = {}


def limits(binary=None):
    """The compiled limits of the binary under test, from its --version line
    "limits: NAME=VALUE ...", and its profile name under "profile"."""
    binary = binary or BIN
    if binary not in _LIMITS:
        _, out, _ = run_binary(["--version"], binary=binary)
        found = {}
        for line in out.splitlines():
            if line.startswith("limits:"):
                found.update({k: int(v) for k, v in (t.split("=", 1) for t in line.split()[1:])})
            elif line.startswith("profile "):
                found["profile"] = line.split()[1].rstrip(":")
        _LIMITS[binary] = found
    return _LIMITS[binary]


_CERTS_MADE = set()


def ensure_certs(directory=None):
    """Test certificates (tests/make_certs.sh); returns their directory."""
    directory = directory or CERTS
    if directory in _CERTS_MADE:
        return directory
    _CERTS_MADE.add(directory)
    subprocess.run(["bash", os.path.join(ROOT, "tests", "make_certs.sh"), directory], check=True,
                   cwd=ROOT, timeout=120)
    return directory


class FakeCalid:
    """The fake Cal ID API (tests/fake_calid.py) over HTTPS on 127.0.0.1.

    After start(): .port, .url (https://127.0.0.1:PORT) and .ca_file (the CA
    the server under test must trust). server_flags() gives --upstream and
    --ca-file for Server().
    """

    SCRIPT = os.path.join(ROOT, "tests", "fake_calid.py")

    def __init__(self, *extra_args, certs=None):
        self.extra_args = list(extra_args)
        self.certs = certs or CERTS
        self.proc = None
        self.port = None
        fd, self.log_path = tempfile.mkstemp(prefix="fake_calid_", suffix=".log")
        os.close(fd)

    @classmethod
    def available(cls):
        return os.path.exists(cls.SCRIPT)

    def start(self):
        ensure_certs(self.certs)
        fd, port_file = tempfile.mkstemp(prefix="fake_calid_port_")
        os.close(fd)
        os.unlink(port_file)  # the fake writes it once it listens
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, self.SCRIPT, "--cert", os.path.join(self.certs, "server.pem"),
                     "--key", os.path.join(self.certs, "server.key"), "--port", "0",
                     "--port-file", port_file] + self.extra_args,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"fake_calid.py exited with {self.proc.returncode}: {self.log_text()}")
                try:
                    with open(port_file) as f:
                        text = f.read().strip()
                    if text.isdigit():
                        self.port = int(text)
                        break
                except OSError:
                    pass
                time.sleep(0.02)
            if self.port is None:
                self.stop()
                raise RuntimeError("fake_calid.py wrote no port file in time")
            if not wait_listening(self.port, self.proc):
                self.stop()
                raise RuntimeError(f"fake_calid.py does not listen on {self.port}: {self.log_text()}")
            return self
        finally:
            try:
                os.unlink(port_file)
            except OSError:
                pass

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self):
        return os.path.join(self.certs, "ca.pem")

    def server_flags(self):
        return ["--upstream", self.url, "--ca-file", self.ca_file]

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        """stop(), then remove the log file."""
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 client
# ---------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """The server closed the connection before a whole answer arrived."""


class Response:
    def __init__(self, status, reason, header_list, body, raw_head):
        self.status = status
        self.reason = reason
        self.header_list = header_list            # [(lowercased name, value)], in order
        self.headers = {}                         # lowercased name -> last value
        for k, v in header_list:
            self.headers[k] = v
        self.body = body
        self.raw_head = raw_head

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body as JSON; for an SSE answer, the data of its single event."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            events = self.sse_events()
            assert len(events) == 1, f"expected one SSE event, got {len(events)}: {self.text!r}"
            return json.loads(events[0]["data"])
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"answer {self.status} is not JSON ({e}): {self.text[:300]!r}") from None

    def sse_events(self):
        """[{"event": ..., "data": ...}] parsed from a text/event-stream body."""
        events, cur = [], {}
        for line in self.text.split("\n"):
            line = line.rstrip("\r")
            if line == "":
                if cur:
                    events.append(cur)
                    cur = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data" and "data" in cur:
                cur["data"] += "\n" + value
            else:
                cur[name] = value
        if cur:
            events.append(cur)
        return events

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


_TLS_CONTEXT = None


def tls_client_context():
    """An ssl context trusting the test CA (made once)."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        _TLS_CONTEXT = ssl.create_default_context(cafile=os.path.join(ensure_certs(), "ca.pem"))
    return _TLS_CONTEXT


class Conn:
    """One client connection; answers are read one at a time, in order.

    Over HTTPS (tls=True, by default the transport under test) the socket
    is wrapped in TLS, handshake done, before the constructor returns;
    session= resumes an earlier connection's .sock.session."""

    def __init__(self, port, timeout=IO_TIMEOUT, tls=None, session=None, source=None):
        """source: the local address to connect from, e.g. "127.0.0.2" (any
        127.0.0.0/8 address is loopback), so one test can be several clients."""
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if HTTPS if tls is None else tls:
            self.sock = tls_client_context().wrap_socket(self.sock, server_hostname="127.0.0.1", session=session)
        self.buf = b""
        self.eof = False

    def send(self, data, pieces=1, delay=0.0):
        """Sends bytes, in `pieces` parts with `delay` seconds between them,
        or each element of a list as one part. Errors from a server that
        already answered and closed are swallowed: read the answer next."""
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, (list, tuple)):
            parts = [p.encode() if isinstance(p, str) else p for p in data]
        elif pieces > 1:
            step = max(1, -(-len(data) // pieces))
            parts = [data[i:i + step] for i in range(0, len(data), step)]
        else:
            parts = [data]
        for i, part in enumerate(parts):
            if i and delay:
                time.sleep(delay)
            try:
                self.sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                return False
        return True

    def _fill(self):
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, sep):
        while sep not in self.buf:
            if not self._fill():
                raise ConnectionClosed(f"closed while waiting for {sep!r}; got {self.buf[:200]!r}")
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionClosed(f"closed with {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method="POST"):
        """Reads one whole answer (a 1xx answer is returned on its own)."""
        head = self._read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise AssertionError(f"malformed status line {lines[0]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        header_list = []
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            header_list.append((name.strip().lower(), value.strip()))
        hdrs = dict(header_list)
        if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
            body = b""
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line = self._read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
        elif "content-length" in hdrs:
            body = self._read_exact(int(hdrs["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(status, reason, header_list, body, head)

    def read_until_close(self):
        """Every byte until the server closes the connection (raw, unparsed)."""
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def closed_by_peer(self, timeout=IO_TIMEOUT):
        """True once the server has closed this connection (EOF or reset)
        with no further bytes; waits up to timeout for that."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method, path, headers=(), body=b"", port=None, version="HTTP/1.1",
                  content_length=True):
    """Request bytes. headers: list of (name, value) sent as given, in order.
    A Host header is added when port is given and none is in headers;
    Content-Length when there is a body and content_length is set."""
    if isinstance(body, str):
        body = body.encode()
    headers = list(headers)
    names = {h[0].lower() for h in headers}
    if port is not None and "host" not in names:
        headers.insert(0, ("Host", f"127.0.0.1:{port}"))
    if content_length and body and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    out = f"{method} {path} {version}\r\n"
    out += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return out.encode("latin-1") + b"\r\n" + body


def request(port, data, pieces=1, delay=0.0, method="POST", source=None):
    """Sends raw request bytes on a fresh connection (from the loopback
    address source, if given) and reads one answer."""
    with Conn(port, source=source) as c:
        c.send(data, pieces=pieces, delay=delay)
        return c.read_response(method=method)


def _merge_headers(defaults, overrides):
    """defaults + overrides; an override replaces a default with the same
    name (case-insensitively); a value of None removes it."""
    out = list(defaults)
    for name, value in (overrides.items() if isinstance(overrides, dict) else overrides or []):
        out = [(k, v) for k, v in out if k.lower() != name.lower()]
        if value is not None:
            out.append((name, value))
    return out


def post_json(port, body, headers=None, token=DEFAULT_TOKEN, path="/mcp", source=None):
    """POSTs a JSON-RPC body (dict/list, or str/bytes sent verbatim) and
    returns the Response. token=None sends no Authorization header."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    defaults = [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH)]
    if token is not None:
        defaults.append(("Authorization", f"Bearer {token}"))
    defaults.append(("Connection", "close"))
    return request(port, build_request("POST", path, _merge_headers(defaults, headers), body), source=source)


def get(port, path, headers=None, method="GET"):
    defaults = [("Host", f"127.0.0.1:{port}"), ("Connection", "close")]
    return request(port, build_request(method, path, _merge_headers(defaults, headers)), method=method)


# ---------------------------------------------------------------------------
# MCP helpers
# ---------------------------------------------------------------------------

def initialize_response(port, token=DEFAULT_TOKEN, version="2025-03-26", headers=None, id="init-1"):
    body = {"jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "harness", "version": "1.0.0"}}}
    return post_json(port, body, headers=headers, token=token)


def initialize(port, token=DEFAULT_TOKEN, version="2025-03-26", headers=None):
    """Opens a session-era session; returns its Mcp-Session-Id."""
    r = initialize_response(port, token=token, version=version, headers=headers)
    assert r.status == 200, f"initialize answered {r.status}: {r.text}"
    sid = r.headers.get("mcp-session-id")
    assert sid, f"initialize answered without Mcp-Session-Id: {r.header_list}"
    return sid


def session_post(port, sid, body, token=DEFAULT_TOKEN, version=None, headers=None):
    """A POST in a session: Mcp-Session-Id, and MCP-Protocol-Version when given."""
    h = [("Mcp-Session-Id", sid)] if sid is not None else []
    if version:
        h.append(("MCP-Protocol-Version", version))
    return post_json(port, body, headers=_merge_headers(h, headers), token=token)


def modern_meta(version=MODERN, capabilities=None, client_info=True):
    meta = {"io.modelcontextprotocol/protocolVersion": version}
    if client_info:
        meta["io.modelcontextprotocol/clientInfo"] = {"name": "harness", "version": "1.0.0"}
    if capabilities is not False:
        meta["io.modelcontextprotocol/clientCapabilities"] = capabilities if capabilities is not None else {}
    return meta


def modern_body(method, params=None, id=1, version=MODERN, capabilities=None):
    """A 2026-07-28 request: params carry the _meta envelope. id=None gives
    a notification; capabilities=False leaves clientCapabilities out."""
    p = dict(params or {})
    p["_meta"] = modern_meta(version, capabilities)
    body = {"jsonrpc": "2.0", "method": method, "params": p}
    if id is not None:
        body["id"] = id
    return body


# The path ids the catalog marks with x-mcp-header: a 2026-07-28 client
# mirrors each as Mcp-Param-{Name} (a header the server does not check for a
# tool is ignored, so sending one for a body field of that name is harmless).
PATH_ID_ARGS = ("bookingId", "eventTypeId", "teamId", "membershipId", "scheduleId", "availabilityId", "contactId",
                "webhookId", "uid")


def mcp_param_value(v):
    """A header value as SEP-2243 writes it: plain ASCII, else =?base64?...?=."""
    text = str(v)
    if all(0x20 < ord(ch) < 0x7f for ch in text):
        return text
    import base64
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


def mcp_param_headers(arguments):
    if not isinstance(arguments, dict):
        return []
    return [("Mcp-Param-" + k[0].upper() + k[1:], mcp_param_value(v)) for k, v in arguments.items()
            if k in PATH_ID_ARGS and isinstance(v, (int, str)) and not isinstance(v, bool)]


def modern_post(port, method, params=None, id=1, token=DEFAULT_TOKEN, version=MODERN, name=None,
                headers=None, body=None, header_version=None, capabilities=None, source=None):
    """POSTs a modern request with MCP-Protocol-Version, Mcp-Method and (for
    tools/call, or when name is given) Mcp-Name. headers override or
    remove (None) any of them; body replaces the built body; source is the
    loopback address to send from."""
    if body is None:
        body = modern_body(method, params, id=id, version=version, capabilities=capabilities)
    h = [("MCP-Protocol-Version", header_version or version), ("Mcp-Method", method)]
    if name is None and method == "tools/call" and params and isinstance(params.get("name"), str):
        name = params["name"]
    if name is not None:
        h.append(("Mcp-Name", name))
    if method == "tools/call" and params:
        h += mcp_param_headers(params.get("arguments"))
    return post_json(port, body, headers=_merge_headers(h, headers), token=token, source=source)


# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------

def _run_one(name, fn):
    """Runs one test: True passed, False failed (reason printed), None skipped."""
    try:
        fn()
    except Skip as e:
        print(f"skip {name}: {e}", flush=True)
        return None
    except AssertionError as e:
        msg = str(e) or "assertion failed"
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"line {fr.lineno}" for fr in reversed(tb) if fr.name == name), "")
        print(f"FAIL {name} ({where}): {msg}", flush=True)
        return False
    except Exception as e:
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(limit=4, file=sys.stdout)
        return False
    return True


def run_tests(namespace, setup=None, teardown=None, argv=None, after_each=None):
    """Runs every function named test_* in namespace (a module's globals), in
    definition order; argv entries, when given, select tests whose names
    contain one of them. after_each(name), when given, runs after every test;
    an AssertionError from it fails that test (used to notice a crashed
    server). Prints each failure with its message and ends with
    "N passed, N failed"; exits 1 when anything failed."""
    argv = sys.argv[1:] if argv is None else argv
    tests = [(name, fn) for name, fn in namespace.items()
             if name.startswith("test_") and callable(fn)
             and getattr(fn, "__module__", None) == namespace.get("__name__")]
    if argv:
        tests = [(n, f) for n, f in tests if any(a in n for a in argv)]
    passed = failed = skipped = 0
    try:
        if setup:
            setup()
    except Exception:
        traceback.print_exc()
        print(f"setup failed: every test counted as failed")
        print(f"0 passed, {len(tests)} failed")
        sys.exit(1)
    try:
        for name, fn in tests:
            t0 = time.monotonic()
            ok = _run_one(name, fn)
            if after_each:
                try:
                    after_each(name)
                except AssertionError as e:
                    print(f"FAIL {name} (after the test): {e}", flush=True)
                    ok = False
            if ok is None:
                skipped += 1
            elif ok:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
            else:
                failed += 1
    finally:
        if teardown:
            try:
                teardown()
            except Exception:
                traceback.print_exc()
    if skipped:
        print(f"({skipped} skipped)")
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
