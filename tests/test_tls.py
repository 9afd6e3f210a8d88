#!/usr/bin/env python3
"""HTTPS served by the binary itself (--tls-cert/--tls-key).

    python3 tests/test_tls.py            # every test
    python3 tests/test_tls.py resum      # tests whose names contain a word

The protocol suites run over HTTPS too (tests/run.sh runs test_server.py and
test_hardening.py again with CALID_TEST_TRANSPORT=https); this suite covers
what belongs to TLS itself:
  - EC and RSA keys, a chain with its CA, key and chain in one file; TLS 1.2
    with an ECDHE AEAD suite; session resumption;
  - start-up refusals that name the problem (missing key, a key that is not
    the certificate's, an encrypted key, no certificate, no file), and the
    warning when listening off loopback without TLS; a build without HTTPS
    serving (-DCM_TLS_CONNS=0) refuses the flags and says so;
  - bad handshakes: garbage, a TLS 1.0 or SSLv3 ClientHello, plain HTTP to the
    HTTPS port end at once; a stalled or half-sent ClientHello ends at the
    handshake timeout (a build with -DCM_TLS_HANDSHAKE_MS=2000); after each,
    /healthz shows the slot free again; with every TLS engine slot taken
    (-DCM_TLS_CONNS=16 of 20 connections) the next client is closed at once;
  - a full server: the next TLS client is closed without a handshake, and
    served again once slots free up.
  - /metrics counts the listener's handshakes: full, resumed, and failed by
    reason (version, cipher, certificate, protocol, plain_http, timeout,
    closed), each case moving its own counter only.

Nothing asserts on elapsed time beyond "well before the 10 s default
handshake timeout" for failures that must end at once.
"""
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

os.environ["CALID_TEST_TRANSPORT"] = "https"  # every Server and Conn here speaks TLS
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import Conn, Server  # noqa: E402

FAKE = None
SHORT_BIN = None
UP = []  # --upstream/--ca-file of the fake API


def setup():
    global FAKE
    H.ensure_certs()
    FAKE = H.FakeCalid().start()
    UP.extend(FAKE.server_flags())


def teardown():
    if FAKE:
        FAKE.close()
    if SHORT_BIN:
        shutil.rmtree(os.path.dirname(SHORT_BIN), ignore_errors=True)


def cert(name):
    return os.path.join(H.CERTS, name)


def short_handshake_binary():
    """The server built with a 2 s TLS handshake timeout and 20 connection
    slots of which 16 may be TLS, once per run."""
    global SHORT_BIN
    if SHORT_BIN:
        return SHORT_BIN
    out = os.path.join(tempfile.mkdtemp(prefix="calid_mcp_tls_"), "calid_mcp_tls_short")
    cmd = [os.environ.get("CC", "cc"), "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-DCALID_MCP_MAIN",
           "-DCM_TLS_HANDSHAKE_MS=2000", "-DCM_MAX_CONNS=20", "-DCM_TLS_CONNS=16", "-o", out, "calid_mcp.c", os.path.join("port", "posix.c"),
           "-lbearssl", "-lpthread"]
    p = subprocess.run(cmd, cwd=H.ROOT, capture_output=True, timeout=180)
    assert p.returncode == 0, f"building {out} failed: {p.stderr.decode(errors='replace')[-1500:]}"
    SHORT_BIN = out
    return out


def healthz(port):
    r = H.get(port, "/healthz")
    assert r.status == 200, r
    return r.json()


def connections_settle(port, want=1, timeout=8.0):
    """/healthz's connection count (its own connection included) reaches want."""
    deadline = time.monotonic() + timeout
    n = None
    while time.monotonic() < deadline:
        n = healthz(port)["connections"]
        if n <= want:
            return n
        time.sleep(0.05)
    raise AssertionError(f"{n} connections still open, expected {want}")


def raw(port, source=None):
    """A plain TCP socket to the server: bytes exactly as given (from the
    loopback address source, if given)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, timeout):
    """(bytes, closed): what arrives until the server closes, within timeout."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except socket.timeout:
        return data, False


def client_hello(version, record_version=None):
    """A minimal ClientHello offering client_version `version` (e.g. 0x0301),
    two RSA suites, no extensions: what an old client sends."""
    body = struct.pack(">H", version) + os.urandom(32) + b"\x00"
    body += struct.pack(">HHH", 4, 0x002F, 0x0035) + b"\x01\x00"
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16" + struct.pack(">HH", record_version or version, len(hs)) + hs


# ---------------------------------------------------------------------------
# Working connections
# ---------------------------------------------------------------------------

def tls_request(port, path="/healthz", session=None):
    """One GET over a fresh TLS connection: (response, ssl socket facts)."""
    with Conn(port, tls=True, session=session) as c:
        c.send(H.build_request("GET", path, [("Host", f"127.0.0.1:{port}"), ("Connection", "close")]))
        r = c.read_response(method="GET")
        facts = {"version": c.sock.version(), "cipher": c.sock.cipher()[0], "session": c.sock.session,
                 "reused": c.sock.session_reused}
    return r, facts


def test_ec_key_tls12_ecdhe_aead():
    with Server(*UP) as s:
        r, f = tls_request(s.port)
        assert r.status == 200 and r.json()["status"] == "ok", r
        assert f["version"] == "TLSv1.2", f
        assert f["cipher"].startswith("ECDHE-ECDSA-") and ("GCM" in f["cipher"] or "CHACHA20" in f["cipher"]), f
        # the whole MCP exchange works on top
        sid = H.initialize(s.port)
        r = H.session_post(s.port, sid, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, r


def test_rsa_key():
    with Server(*UP, "--tls-cert", cert("server-rsa.pem"), "--tls-key", cert("server-rsa.key")) as s:
        r, f = tls_request(s.port)
        assert r.status == 200, r
        assert f["cipher"].startswith("ECDHE-RSA-"), f


def handshake_with(port, ciphers, curve=None):
    """A TLS 1.2 client offering only `ciphers` (OpenSSL names) and, if
    given, only the key exchange group `curve`: (cipher, None) once the
    handshake is done, or (None, the ssl error)."""
    ctx = ssl.create_default_context(cafile=cert("ca.pem"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    if curve:
        ctx.set_ecdh_curve(curve)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT) as raw_sock:
            with ctx.wrap_socket(raw_sock, server_hostname="127.0.0.1") as t:
                return t.cipher()[0], None
    except (ssl.SSLError, OSError) as e:
        return None, e


def test_tls_profile_suites_and_curves():
    """What tls_profile() offers, one suite and one key exchange group at a
    time, for an EC and an RSA key; CBC, RSA key exchange and finite-field
    DHE find nothing."""
    keys = [("server", "ECDSA"), ("server-rsa", "RSA")]
    for name, sig in keys:
        with Server(*UP, "--tls-cert", cert(name + ".pem"), "--tls-key", cert(name + ".key")) as s:
            for suite in ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "CHACHA20-POLY1305"):
                want = f"ECDHE-{sig}-{suite}"
                got, err = handshake_with(s.port, want)
                assert got == want, f"{name}: {want} was not negotiated: {err}"
            # (one group on the client also limits the certificate's curve: with
            # the P-256 EC key only P-256 is left; the RSA key takes every group)
            for curve in ("prime256v1",) if sig == "ECDSA" else ("X25519", "prime256v1", "secp384r1", "secp521r1"):
                got, err = handshake_with(s.port, f"ECDHE-{sig}-AES128-GCM-SHA256", curve)
                assert got, f"{name}: the handshake over {curve} failed: {err}"
            for refused in (f"ECDHE-{sig}-AES128-SHA256:ECDHE-{sig}-AES128-SHA", "AES128-GCM-SHA256:AES128-SHA",
                            "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-CHACHA20-POLY1305"):
                got, err = handshake_with(s.port, refused)
                assert got is None, f"{name}: {got} was negotiated from {refused}"
            assert s.alive() and tls_request(s.port)[0].status == 200


def test_chain_and_key_in_one_file():
    """The leaf, then its CA, then the key, all in one PEM given to both flags."""
    d = tempfile.mkdtemp(prefix="calid_tls_bundle_")
    try:
        bundle = os.path.join(d, "bundle.pem")
        with open(bundle, "wb") as out:
            for name in ("server.pem", "ca.pem", "server.key"):
                with open(cert(name), "rb") as f:
                    out.write(f.read())
        with Server(*UP, "--tls-cert", bundle, "--tls-key", bundle) as s:
            with Conn(s.port, tls=True) as c:
                chain = c.sock.get_unverified_chain() if hasattr(c.sock, "get_unverified_chain") else None
            if chain is not None:
                assert len(chain) == 2, f"the server sent {len(chain)} certificates, not leaf + CA"
            assert tls_request(s.port)[0].status == 200
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_session_resumption():
    with Server(*UP, "--log-level", "debug") as s:
        r, first = tls_request(s.port)
        assert r.status == 200 and not first["reused"], first
        for _ in range(3):
            r, again = tls_request(s.port, session=first["session"])
            assert r.status == 200, r
            assert again["reused"], "the server did not resume the session"
        log = s.stderr_text()
    assert "resumed handshake" in log, log[-500:]


def test_keep_alive_and_pipelining_over_tls():
    """Two requests in one TLS write, then a third on the same connection."""
    with Server(*UP) as s:
        req = H.build_request("GET", "/healthz", [("Host", f"127.0.0.1:{s.port}")])
        with Conn(s.port, tls=True) as c:
            c.send(req + req)
            assert c.read_response(method="GET").status == 200
            assert c.read_response(method="GET").status == 200
            c.send(req)
            assert c.read_response(method="GET").status == 200


def slow_reader(port, rcvbuf=4096):
    """A TLS Conn whose socket has a tiny receive buffer: the server's writes
    block long before a large answer is out."""
    raw_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw_sock.settimeout(H.IO_TIMEOUT)
    raw_sock.connect(("127.0.0.1", port))
    c = Conn.__new__(Conn)
    c.port, c.buf, c.eof = port, b"", False
    c.sock = H.tls_client_context().wrap_socket(raw_sock, server_hostname="127.0.0.1")
    return c


def test_answers_under_back_pressure_then_close():
    """100 pipelined tools/list (about 60 kB each, 6 MB in all, more than a
    loopback socket buffers; the last with Connection:
    close) to a client that reads only later: the server's socket fills, it
    waits for POLLOUT, and every answer arrives whole, the last one's final
    TLS records too, before the connection closes."""
    with Server(*UP) as s:
        sid = H.initialize(s.port)
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).encode()

        def req(close):
            h = [("Host", f"127.0.0.1:{s.port}"), ("Content-Type", "application/json"), ("Accept", H.ACCEPT_BOTH),
                 ("Authorization", f"Bearer {H.DEFAULT_TOKEN}"), ("Mcp-Session-Id", sid)]
            return H.build_request("POST", "/mcp", h + ([("Connection", "close")] if close else []), body)

        with slow_reader(s.port) as c:
            c.send(b"".join(req(i == 99) for i in range(100)))
            time.sleep(1.0)  # the server fills the socket and waits for POLLOUT
            for i in range(100):
                r = c.read_response()
                assert r.status == 200 and len(r.json()["result"]["tools"]) == 57, (i, r.status, len(r.body))
            assert c.closed_by_peer(), "the connection stayed open after Connection: close"


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------

def start_fails(*flags):
    rc, out, err = H.run_binary(["--listen", f"127.0.0.1:{H.free_port()}", *UP, *flags])
    assert rc == 1, f"exit {rc}, stderr {err!r}"
    return err


def test_start_refusals_name_the_problem():
    d = tempfile.mkdtemp(prefix="calid_tls_bad_")
    try:
        enc = os.path.join(d, "enc.key")
        subprocess.run(["openssl", "pkey", "-in", cert("server.key"), "-aes256", "-passout", "pass:x", "-out", enc],
                       check=True, capture_output=True)
        cases = [
            (["--tls-cert", cert("server.pem")], "needs both --tls-cert and --tls-key"),
            (["--tls-key", cert("server.key")], "needs both --tls-cert and --tls-key"),
            (["--tls-cert", cert("server.pem"), "--tls-key", cert("server-rsa.key")], "does not belong"),
            (["--tls-cert", cert("server.pem"), "--tls-key", cert("wronghost.key")], "does not belong"),
            (["--tls-cert", cert("server.pem"), "--tls-key", enc], "is encrypted"),
            (["--tls-cert", cert("server.key"), "--tls-key", cert("server.key")], "no certificate"),
            (["--tls-cert", cert("server.pem"), "--tls-key", cert("server.pem")], "no private key"),
            (["--tls-cert", os.path.join(d, "missing.pem"), "--tls-key", cert("server.key")], "cannot open"),
        ]
        for flags, words in cases:
            err = start_fails(*flags)
            assert words in err, f"{flags[1::2]}: expected {words!r} in {err!r}"
        # the same through the environment
        rc, _, err = H.run_binary(["--listen", f"127.0.0.1:{H.free_port()}", *UP],
                                  env={"CALID_MCP_TLS_CERT": cert("server.pem")})
        assert rc == 1 and "needs both" in err, err
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_environment_variables_turn_tls_on():
    s = Server(*UP, tls=False, env={"CALID_MCP_TLS_CERT": cert("server.pem"), "CALID_MCP_TLS_KEY": cert("server.key")})
    with s:
        assert tls_request(s.port)[0].status == 200
        assert "https://" in s.stderr_text()


def test_off_loopback_without_tls_warns():
    with Server(*UP, tls=False, host="0.0.0.0") as plain:  # logged before it listens
        err = plain.stderr_text()
    assert "without TLS" in err and "in clear" in err, err
    with Server(*UP, host="0.0.0.0") as secure:
        assert tls_request(secure.port)[0].status == 200
        err = secure.stderr_text()
    assert "without TLS" not in err, err
    with Server(*UP, tls=False) as loop:
        assert "without TLS" not in loop.stderr_text()


def test_build_without_tls_serving_says_so():
    """-DCM_TLS_CONNS=0 leaves HTTPS serving out: --tls-cert is refused with
    the reason, --version says so, and the static memory shrinks."""
    d = tempfile.mkdtemp(prefix="calid_mcp_notls_")
    try:
        out = os.path.join(d, "calid_mcp_notls")
        cmd = [os.environ.get("CC", "cc"), "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O0", "-DCALID_MCP_MAIN",
               "-DCM_TLS_CONNS=0", "-o", out, "calid_mcp.c", os.path.join("port", "posix.c"), "-lbearssl", "-lpthread"]
        p = subprocess.run(cmd, cwd=H.ROOT, capture_output=True, timeout=180)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-1500:]
        rc, _, err = H.run_binary(["--listen", f"127.0.0.1:{H.free_port()}", *UP, "--tls-cert", cert("server.pem"),
                                   "--tls-key", cert("server.key")], binary=out)
        assert rc == 1 and "CM_TLS_CONNS=0" in err, (rc, err)
        rc, without, _ = H.run_binary(["--version"], binary=out)
        assert rc == 0 and "not built in" in without, without
        rc, with_tls, _ = H.run_binary(["--version"])
        total = lambda text: int(text.split("static memory: ")[1].split()[0])  # noqa: E731
        assert total(with_tls) - total(without) > H.limits()["CM_TLS_CONNS"] * 20000, (with_tls, without)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_version_counts_tls_memory():
    rc, out, _ = H.run_binary(["--version"])
    assert rc == 0 and "HTTPS:" in out and "bytes each" in out, out


# ---------------------------------------------------------------------------
# Bad handshakes
# ---------------------------------------------------------------------------

def refused_at_once(port, data, what):
    """Sends data on a raw socket: the server must close well before the
    10 s handshake timeout. Returns what it sent back."""
    s = raw(port)
    try:
        s.sendall(data)
        got, closed = read_until_close(s, 5.0)
    finally:
        s.close()
    assert closed, f"{what}: still open after 5 s (the handshake timeout is 10 s)"
    return got


def test_garbage_old_versions_and_plain_http_end_at_once():
    with Server(*UP, "--log-level", "debug") as s:
        cases = [
            (b"\x00\x01\x02\x03" + os.urandom(200), "binary garbage"),
            (b"\x16\x03\x03\xff\xff" + os.urandom(64), "a record longer than TLS allows"),
            (b"\x16\x03\x01\x00\x05" + b"\x02\x00\x00\x01\x00", "a handshake message that is no ClientHello"),
            (client_hello(0x0301), "a TLS 1.0 ClientHello"),
            (client_hello(0x0302), "a TLS 1.1 ClientHello"),
            (client_hello(0x0300), "an SSLv3 ClientHello"),
        ]
        for data, what in cases:
            got = refused_at_once(s.port, data, what)
            assert got == b"" or got[0] == 0x15, f"{what}: expected nothing or a TLS alert, got {got[:40]!r}"
            assert connections_settle(s.port) == 1
        got = refused_at_once(s.port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\n\r\n".encode(), "plain HTTP")
        assert got.startswith(b"HTTP/1.1 400 ") and b"https://" in got, got
        assert connections_settle(s.port) == 1
        assert tls_request(s.port)[0].status == 200
        log = s.stderr_text()
    assert "protocol_version" in log or "no TLS 1.2" in log, log[-800:]


def server_handshakes(port):
    """{kind or failure reason: count} of the listener's handshakes, from
    GET /metrics parsed by prometheus_client (the scrape's own full handshake
    included)."""
    from test_operations import prometheus_parser
    r = H.get(port, "/metrics")
    assert r.status == 200, r
    out = {}
    for fam in prometheus_parser()(r.text):
        for smp in fam.samples:
            ls = smp.labels
            if smp.name == "calid_mcp_tls_handshakes_total" and ls.get("side") == "server":
                out[ls["reason"] if ls["kind"] == "failed" else ls["kind"]] = smp.value
    assert set(out) == {"full", "resumed", "version", "cipher", "certificate", "protocol", "plain_http",
                        "timeout", "closed"}, out
    return out


def test_metrics_count_server_handshakes_by_kind_and_reason():
    """Each kind of listener handshake moves its own counter and no other:
    full, resumed, and failed by reason (an old version, no common suite, a
    client that distrusts the certificate, garbage, plain HTTP, a stall to
    the 2 s timeout, a client that leaves mid-handshake)."""
    with Server(*UP, binary=short_handshake_binary()) as s:
        port = s.port
        before = server_handshakes(port)
        assert before["full"] >= 1, before  # the scrape's own

        def expect(what, **moved):
            """The counters move as said (each scrape adds its own full
            handshake); failures counted at close may take a moment."""
            nonlocal before
            scrapes, deadline = 0, time.monotonic() + 5
            while True:
                after = server_handshakes(port)
                scrapes += 1
                want = {k: v + moved.get(k, 0) + (scrapes if k == "full" else 0) for k, v in before.items()}
                if after == want or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert after == want, f"{what}: {after} != {want}"
            before = after

        r, first = tls_request(port)
        assert r.status == 200 and not first["reused"]
        expect("a full handshake", full=1)
        r, again = tls_request(port, session=first["session"])
        assert r.status == 200 and again["reused"], again
        expect("a resumed handshake", resumed=1)
        refused_at_once(port, client_hello(0x0301), "a TLS 1.0 ClientHello")
        expect("a TLS 1.0 ClientHello", version=1)
        hello = client_hello(0x0303)  # TLS 1.2 offering only RSA key exchange: no suite in common
        refused_at_once(port, hello, "a ClientHello with no common suite")
        expect("no common cipher suite", cipher=1)
        try:  # a client without the test CA refuses the certificate with an alert
            with socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT) as plain:
                with ssl.create_default_context().wrap_socket(plain, server_hostname="127.0.0.1"):
                    raise AssertionError("a client without the test CA accepted the certificate")
        except ssl.SSLCertVerificationError:
            pass
        expect("a client that refuses the certificate", certificate=1)
        refused_at_once(port, b"\x00\x01\x02\x03" + os.urandom(200), "binary garbage")
        expect("garbage", protocol=1)
        refused_at_once(port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(), "plain HTTP")
        expect("plain HTTP", plain_http=1)
        c = raw(port)
        c.sendall(hello[:len(hello) // 2])
        _, closed = read_until_close(c, 8.0)
        c.close()
        assert closed, "a stalled handshake was still open 8 s later (timeout 2 s)"
        expect("a stall past the handshake timeout", timeout=1)
        c = raw(port)
        c.sendall(hello[:len(hello) // 2])
        time.sleep(0.2)
        c.close()
        expect("a client that left mid-handshake", closed=1)
        c = raw(port)  # connected and left without a byte: no handshake was tried
        c.close()
        time.sleep(0.2)
        expect("a connection without a byte")


def test_stalled_handshakes_cost_a_slot_until_the_timeout():
    """16 clients that connect and stall (nothing, half a ClientHello, a
    record header then silence) hold the 16 TLS engine slots: a 17th client
    is closed without a handshake. Each stalled one is closed at the 2 s
    handshake timeout; then the server serves normally with every slot free."""
    with Server(*UP, binary=short_handshake_binary()) as s:
        hello = client_hello(0x0303)
        socks = []
        t0 = time.monotonic()
        for i in range(16):
            c = raw(s.port, source=f"127.0.0.{1 + i % 2}")  # one address holds at most half the table
            if i % 3 == 1:
                c.sendall(hello[:len(hello) // 2])
            elif i % 3 == 2:
                c.sendall(hello[:5])
            socks.append(c)
        try:
            try:
                with Conn(s.port, tls=True, source="127.0.0.3"):
                    pass
                raise AssertionError("a 17th TLS client got a handshake with all 16 engine slots taken")
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass
            for c in socks:
                _, closed = read_until_close(c, 8.0)
                assert closed, "a stalled handshake was still open 8 s later (timeout 2 s)"
            print(f"  16 stalled handshakes closed after {time.monotonic() - t0:.2f} s (CM_TLS_HANDSHAKE_MS=2000)")
        finally:
            for c in socks:
                c.close()
        assert connections_settle(s.port) == 1
        assert healthz(s.port)["refusedBusy"] >= 1
        assert tls_request(s.port)[0].status == 200


def test_full_server_closes_new_tls_clients_then_recovers():
    """CM_TLS_CONNS (8) TLS connections mid-request hold every TLS slot: one
    more is closed without a handshake (a 503 would need one); freed slots
    serve again."""
    n = min(H.limits()["CM_TLS_CONNS"], H.limits()["CM_MAX_CONNS"])
    with Server(*UP) as s:
        held = []
        partial = b"GET /healthz HTTP/1.1\r\n"
        try:
            for i in range(n):  # one address holds at most half the table
                held.append(Conn(s.port, tls=True, source=f"127.0.0.{1 + i % 2}"))
            for c in held:  # busy: half a request (just now: not stalled), not an idle keep-alive
                c.send(partial)
            time.sleep(0.2)
            try:
                with Conn(s.port, tls=True, source="127.0.0.3") as extra:
                    extra.send(H.build_request("GET", "/healthz", [("Host", "127.0.0.1")]))
                    got = extra.read_until_close()
                raise AssertionError(f"a 17th TLS client got a handshake and {got[:80]!r}")
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass
            for c in held[:max(1, n // 4)]:
                c.close()
            held = held[max(1, n // 4):]
            time.sleep(0.2)
            assert tls_request(s.port)[0].status == 200
            for c in held:  # the others finish their requests and are answered
                c.send(f"Host: 127.0.0.1:{s.port}\r\n\r\n".encode())
                assert c.read_response(method="GET").status == 200
        finally:
            for c in held:
                c.close()
        assert s.alive()


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
