#!/usr/bin/env python3
"""calid-mcp as Cortex-M4 firmware, booted under qemu-system-arm (mps2-an386).

The board gets its command line by semihosting, reads the test CA from the
host, and reaches the fake Cal ID API at 10.0.2.2 (user-mode networking's
name for the host's loopback) with a certificate for that address. Clients
on the host reach the board through a forwarded port. Checked: the seed's
curl commands, the official SDK clients (v1 and v2: tests/node/firmware_clients.mjs),
a sample of bad input, a figure for tools/list throughput, and a clean stop
of qemu through its monitor. With CALID_TEST_TRANSPORT=https the board serves
HTTPS itself (--tls-cert/--tls-key with the test certificate, read by
semihosting) and every client speaks TLS to it.

    python3 tests/firmware/test_firmware.py build/firmware/calid_mcp-mps2.elf
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import harness as H  # noqa: E402

ELF = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(H.ROOT, "build/firmware/calid_mcp-mps2.elf"))
BOOT_TIMEOUT = 30.0
state = {}


def boot(fake):
    port = H.free_port()
    tmp = tempfile.mkdtemp(prefix="calid-fw-")
    monitor = os.path.join(tmp, "monitor.sock")
    args = ["calid_mcp", "--listen", "0.0.0.0:8080", "--upstream", f"https://10.0.2.2:{fake.port}",
            "--ca-file", fake.ca_file] + (H.tls_flags() if H.HTTPS else [])
    cmd = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", f"unix:{monitor},server=on,wait=off",
           "-semihosting-config", "enable=on,target=native," + ",".join("arg=" + a for a in args),
           "-nic", f"user,hostfwd=tcp:127.0.0.1:{port}-:8080", "-kernel", ELF]
    log = open(os.path.join(tmp, "console.log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    state.update(proc=proc, port=port, monitor=monitor, log=log.name)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"qemu exited with {proc.returncode}: {console()}")
        try:
            r = H.get(port, "/healthz")  # the forward accepts at once; the board answers once up
            if r.status == 200:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the board did not answer /healthz within {BOOT_TIMEOUT} s: {console()}")


def console():
    with open(state["log"], "rb") as f:
        return f.read().decode("utf-8", "replace")[-3000:]


def fake_requests():
    ctx = ssl.create_default_context(cafile=state["fake"].ca_file)
    c = http.client.HTTPSConnection("127.0.0.1", state["fake"].port, context=ctx, timeout=10)
    c.request("GET", "/__fake/requests")
    j = json.loads(c.getresponse().read())
    c.close()
    return j if isinstance(j, list) else j.get("requests", [])


# ---- tests ----

def test_boot_console_says_where_it_serves():
    text = console()
    assert "network up, 10.0.2.15" in text, text
    assert f"https://10.0.2.2:{state['fake'].port}" in text, text
    assert f"serving MCP on {H.SCHEME}://" in text, text


def test_seed_curl_initialize_then_tools_list():
    """The seed's two curl commands, word for word but for the URL."""
    url = f"{H.SCHEME}://127.0.0.1:{state['port']}/mcp"
    tls = ["--cacert", state["fake"].ca_file] if H.HTTPS else []
    init = subprocess.run(
        ["curl", "-si", *tls, url, "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "-H", "Authorization: Bearer calid_xxx", "-d",
         '{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-03-26",'
         '"capabilities":{},"clientInfo":{"name":"curl","version":"1.0.0"}}}'],
        capture_output=True, text=True, timeout=30)
    head, _, body = init.stdout.partition("\n\n")  # text mode: CRLF arrives as LF
    assert head.startswith("HTTP/1.1 200"), init.stdout[:500]
    sid = [ln.split(":", 1)[1].strip() for ln in head.split("\n") if ln.lower().startswith("mcp-session-id:")]
    assert sid, head
    assert '"protocolVersion":"2025-03-26"' in body, body[:300]
    listed = subprocess.run(
        ["curl", "-si", *tls, url, "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "-H", "Authorization: Bearer calid_xxx", "-H", f"mcp-session-id: {sid[0]}", "-d",
         '{"jsonrpc":"2.0","id":"2","method":"tools/list","params":{}}'],
        capture_output=True, text=True, timeout=30)
    head, _, body = listed.stdout.partition("\n\n")
    assert head.startswith("HTTP/1.1 200"), listed.stdout[:500]
    payload = body.split("data: ", 1)[1] if body.startswith("event:") else body
    tools = json.loads(payload)["result"]["tools"]
    assert len(tools) == 57, len(tools)


def test_tool_call_reaches_the_fake_over_tls_from_the_board():
    before = len(fake_requests())
    r = H.modern_post(state["port"], "tools/call", {"name": "get_users_me", "arguments": {}}, token="calid_board")
    assert r.status == 200, r.text[:300]
    res = r.json()["result"]
    assert res["isError"] is False, res
    assert json.loads(res["content"][0]["text"])["success"] is True, res
    got = fake_requests()[before:]
    assert len(got) == 1 and got[0]["path"] == "/users/me", got
    assert got[0]["headers"].get("authorization") == "Bearer calid_board", got[0]["headers"]


def test_sdk_clients_v1_and_v2():
    env = dict(os.environ, FW_URL=f"{H.SCHEME}://127.0.0.1:{state['port']}/mcp", FAKE_URL=state["fake"].url,
               NODE_EXTRA_CA_CERTS=state["fake"].ca_file)
    p = subprocess.run(["node", os.path.join(H.ROOT, "tests/node/firmware_clients.mjs")], env=env,
                       capture_output=True, text=True, timeout=150)
    print(p.stdout.strip())
    assert p.returncode == 0 and "2 passed, 0 failed" in p.stdout, p.stdout[-2000:] + p.stderr[-1000:]


def test_bad_input_gets_clear_errors_and_the_board_serves_on():
    port = state["port"]
    r = H.post_json(port, b'{"jsonrpc":"2.0","id":1,"method":')
    assert r.status == 400 and r.json()["error"]["code"] == -32700, r.text[:300]
    r = H.modern_post(port, "no/such/method")
    assert r.json()["error"]["code"] == -32601, r.text[:300]
    r = H.post_json(port, b"x" * 20000)
    assert r.status == 413, (r.status, r.text[:200])
    r = H.modern_post(port, "tools/call", {"name": "get_booking_by_id", "arguments": {"bookingId": "abc"}})
    assert r.status == 200 and r.json()["result"]["isError"] is True, r.text[:300]
    r = H.post_json(port, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token=None)
    assert r.status == 401, r.status
    assert H.get(port, "/healthz").status == 200


def test_tools_list_throughput_figure():
    """Not a goal: how many tools/list answers the emulated board serves in 3 s on one kept-alive connection."""
    body = json.dumps(H.modern_body("tools/list")).encode()
    req = H.build_request("POST", "/mcp", [("Host", "127.0.0.1"), ("Content-Type", "application/json"),
                                           ("Accept", H.ACCEPT_BOTH), ("Authorization", "Bearer calid_xxx"),
                                           ("MCP-Protocol-Version", H.MODERN), ("Mcp-Method", "tools/list")], body)
    n, t0 = 0, time.monotonic()
    with H.Conn(state["port"], timeout=30) as c:
        while time.monotonic() - t0 < 3.0:
            c.send(req)
            r = c.read_response()
            assert r.status == 200
            n += 1
    dt = time.monotonic() - t0
    print(f"figure: tools/list on the emulated board: {n / dt:.1f} req/s ({n} in {dt:.1f} s, one connection)")


def test_tls_handshake_figure():
    """Not a goal: a full and a resumed TLS handshake with the emulated board
    (connect, handshake, GET /healthz), medians of 5; HTTPS runs only."""
    if not H.HTTPS:
        raise H.Skip("the board serves plain HTTP in this run (CALID_TEST_TRANSPORT=https serves TLS)")
    req = H.build_request("GET", "/healthz", [("Host", "127.0.0.1"), ("Connection", "close")])

    def once(session=None):
        t0 = time.monotonic()
        with H.Conn(state["port"], timeout=30, session=session) as c:
            c.send(req)
            assert c.read_response(method="GET").status == 200
            return time.monotonic() - t0, c.sock.session, c.sock.session_reused

    full = [once() for _ in range(5)]
    assert not any(f[2] for f in full)
    resumed = [once(full[-1][1]) for _ in range(5)]
    assert all(r[2] for r in resumed), "the board did not resume the session"
    med = lambda xs: sorted(x[0] for x in xs)[len(xs) // 2] * 1000  # noqa: E731
    print(f"figure: TLS on the emulated board: full handshake {med(full):.0f} ms, resumed {med(resumed):.0f} ms "
          "(connect + handshake + GET /healthz)")


def test_zz_clean_shutdown_through_the_qemu_monitor():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(state["monitor"])
    greeting = b""
    while b"(qemu)" not in greeting:  # the monitor is ready for a command
        chunk = s.recv(4096)
        assert chunk, f"the monitor closed: {greeting!r}"
        greeting += chunk
    s.sendall(b"quit\n")
    rc = state["proc"].wait(10)
    s.close()
    assert rc == 0, f"qemu exited with {rc}"


def setup():
    if not os.path.exists(ELF):
        raise RuntimeError(f"{ELF} is missing: make firmware")
    fake = H.FakeCalid("--cert", os.path.join(H.CERTS, "guest.pem"), "--key", os.path.join(H.CERTS, "guest.key"))
    fake.start()
    state["fake"] = fake
    boot(fake)


def teardown():
    p = state.get("proc")
    if p and p.poll() is None:
        p.kill()
        p.wait()
    if state.get("fake"):
        state["fake"].close()


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown, argv=[])  # argv[1] is the image, not a filter
