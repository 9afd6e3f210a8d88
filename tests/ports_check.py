#!/usr/bin/env python3
"""ports_check.py - the short integration check every port binary must pass.

    ports_check.py server          the binary in CALID_MCP_BIN (a native file or
                                   a wrapper running it under wine or qemu-user)
    ports_check.py vendor PROGRAM [OBJECT...]
                                   tests/vendor_example, pointed at the fake API;
                                   then every OBJECT must export cm_ names only

server: against the fake Cal ID API (tests/fake_calid.py) over HTTPS it runs
initialize, tools/list and tools/call in a session, a stateless 2026-07-28
tools/call (also with the API named "localhost", through the port's
resolver), and initialize + tools/list over --stdio; then prints the
server's resident set size as an "info:" line (for wine and qemu-user that is
the host process: the emulator's own memory included). CALID_PORT_NAME
labels the output; CALID_PORT_BINARY names the stripped binary, whose size
is printed with CALID_PORT_SIZE_GOAL (the size wanted: met or NOT met) and
must not exceed CALID_PORT_SIZE_CEILING (the size it has reached: no growth
past it) when those are set. Ends with "N passed, N failed".

vendor: starts the fake, runs PROGRAM with CALID_API_BASE and CALID_CA_FILE
pointing at it, relays its checks, adds one check per OBJECT (nm: no global
symbol without the cm_ prefix) and prints one result line for all.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NAME = os.environ.get("CALID_PORT_NAME", "native")
# The stripped binary (CALID_MCP_BIN may be a wrapper), the size wanted and
# the size it must not grow past (0: none)
BINARY = os.environ.get("CALID_PORT_BINARY", "")
SIZE_GOAL = int(os.environ.get("CALID_PORT_SIZE_GOAL", "0") or 0)
SIZE_CEILING = int(os.environ.get("CALID_PORT_SIZE_CEILING", "0") or 0)
fake = None
server = None


def rss_kb(pid):
    """VmRSS of pid and of its children (wine and wrappers may fork)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def setup():
    global fake, server
    fake = h.FakeCalid().start()
    server = h.Server(*fake.server_flags()).start()


def teardown():
    if server:
        server.stop()
    if fake:
        fake.stop()


session = {}


def test_binary_size():
    """The stripped binary's size, printed against the goal; over CALID_PORT_SIZE_CEILING (when given) fails."""
    if not BINARY:
        return
    n = os.path.getsize(BINARY)
    goal = ""
    if SIZE_GOAL:
        verdict = "met" if n <= SIZE_GOAL else f"NOT met, {n - SIZE_GOAL:,} bytes over"
        goal = f", goal {SIZE_GOAL:,} ({SIZE_GOAL / 1024:g} KiB): {verdict}"
    if SIZE_CEILING:
        goal += f"; ceiling {SIZE_CEILING:,}"
    print(f"info: {NAME}: stripped binary {n:,} bytes{goal}", flush=True)
    assert not SIZE_CEILING or n <= SIZE_CEILING, f"{BINARY} is {n - SIZE_CEILING:,} bytes over the ceiling (it grew)"


def test_initialize():
    r = h.initialize_response(server.port)
    assert r.status == 200, f"initialize answered {r.status}: {r.text}"
    body = r.json()
    assert body["result"]["serverInfo"]["name"], body
    assert body["result"]["protocolVersion"] == "2025-03-26", body
    session["sid"] = r.headers.get("mcp-session-id")
    assert session["sid"], r.header_list
    r = h.session_post(server.port, session["sid"], {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status == 202, f"notifications/initialized answered {r.status}: {r.text}"


def test_tools_list():
    r = h.session_post(server.port, session.get("sid"), {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert r.status == 200, f"tools/list answered {r.status}: {r.text[:300]}"
    tools = r.json()["result"]["tools"]
    names = {t["name"] for t in tools}
    assert len(tools) >= 50 and {"get_schedule", "create_booking"} <= names, sorted(names)
    assert all("inputSchema" in t for t in tools)


def tool_text(r):
    assert r.status == 200, f"tools/call answered {r.status}: {r.text[:300]}"
    result = r.json()["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]


def test_tools_call_in_session():
    r = h.session_post(server.port, session.get("sid"),
                       {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                        "params": {"name": "get_schedule", "arguments": {"limit": 2}}})
    api = json.loads(tool_text(r))
    assert isinstance(api.get("data"), list) and api["data"], api


def test_tools_call_stateless():
    r = h.modern_post(server.port, "tools/call", {"name": "get_event_types", "arguments": {}}, id=4)
    api = json.loads(tool_text(r))
    assert api.get("data"), api


def test_tools_call_via_host_name():
    # "localhost" instead of 127.0.0.1: the port's resolver thread has to answer
    with h.Server("--upstream", f"https://localhost:{fake.port}", "--ca-file", fake.ca_file) as s:
        r = h.modern_post(s.port, "tools/call", {"name": "get_schedule", "arguments": {}}, id=5)
        api = json.loads(tool_text(r))
        assert isinstance(api.get("data"), list), api


def test_stdio_initialize_and_tools_list():
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "ports_check", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    text = "".join(json.dumps(m) + "\n" for m in lines)
    p = subprocess.run([server.binary, "--stdio"] + fake.server_flags(), input=text.encode(),
                       capture_output=True, timeout=60,
                       env=h.clean_env({"CALID_API_KEY": h.DEFAULT_TOKEN}), cwd=h.ROOT)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, f"--stdio exited {p.returncode}: {p.stderr.decode()[:300]}"
    assert "\r\n" not in out, "stdio answers must end in a bare \\n"
    answers = [json.loads(line) for line in out.split("\n") if line.strip()]
    assert [a.get("id") for a in answers] == [1, 2], out[:300]
    assert answers[0]["result"]["protocolVersion"] == "2025-06-18", answers[0]
    assert len(answers[1]["result"]["tools"]) >= 50


def test_windows_ca_file_beside_the_exe():
    # Windows has no PEM bundle: without --ca-file, cacert.pem next to the
    # .exe is used (port/win32.c). Only where CALID_PORT_EXE_DIR is given.
    exe_dir = os.environ.get("CALID_PORT_EXE_DIR")
    if not exe_dir:
        raise h.Skip("CALID_PORT_EXE_DIR not set")
    target = os.path.join(exe_dir, "cacert.pem")
    with open(fake.ca_file, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    try:
        msgs = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "ports_check", "version": "1"}}},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "get_schedule", "arguments": {}}}]
        p = subprocess.run([server.binary, "--stdio", "--upstream", fake.url],
                           input="".join(json.dumps(m) + "\n" for m in msgs).encode(), capture_output=True,
                           timeout=60, env=h.clean_env({"CALID_API_KEY": h.DEFAULT_TOKEN}), cwd=h.ROOT)
    finally:
        os.unlink(target)
    lines = [json.loads(x) for x in p.stdout.decode().split("\n") if x.strip()]
    assert p.returncode == 0 and len(lines) == 2, (p.returncode, p.stderr.decode()[-300:])
    result = lines[1]["result"]
    assert not result.get("isError"), result
    assert json.loads(result["content"][0]["text"]).get("data") is not None, result


def test_server_still_alive():
    assert server.alive(), f"the server exited: {server.stderr_text()[-500:]}"
    print(f"info: {NAME}: VmRSS {rss_kb(server.proc.pid)} kB after the requests above "
          f"(pid {server.proc.pid})", flush=True)


def exported_symbols(obj):
    """Global symbols an object file defines (GNU nm reads ELF and PE alike)."""
    p = subprocess.run(["nm", "-g", "--defined-only", "-P", obj], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"nm {obj}: {p.stderr.strip()}")
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def vendor(program, objects):
    """Runs the vendoring example against the fake API, then checks that the
    vendored objects export nothing but cm_ names (so they link into any
    firmware without clashes). One result line for both."""
    with h.FakeCalid() as f:
        env = dict(os.environ, CALID_API_BASE=f.url, CALID_CA_FILE=f.ca_file)
        p = subprocess.run([program], env=env, capture_output=True, timeout=120, cwd=h.ROOT)
    out = p.stdout.decode("utf-8", "replace")
    lines = out.strip().splitlines()
    sys.stdout.write("".join(line + "\n" for line in lines[:-1]))
    sys.stderr.write(p.stderr.decode("utf-8", "replace")[-2000:])
    passed = failed = 0
    last = lines[-1] if lines else ""
    if " passed, " in last and p.returncode in (0, 1):
        passed = int(last.split()[0])
        failed = int(last.split(", ")[1].split()[0])
    else:
        print(f"FAIL - {program} exited {p.returncode} without a result line")
        failed += 1
    for obj in objects:
        try:
            bad = [name for name in exported_symbols(obj) if not name.startswith("cm_")]
        except (OSError, RuntimeError) as e:
            bad = [str(e)]
        if bad:
            print(f"FAIL - {os.path.basename(obj)} exports names without the cm_ prefix: {bad}")
            failed += 1
        else:
            print(f"ok - {os.path.basename(obj)} exports only cm_ names")
            passed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "vendor":
        sys.exit(vendor(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        print(f"ports_check: {NAME}: {h.BIN}", flush=True)
        h.run_tests(globals(), setup=setup, teardown=teardown, argv=sys.argv[2:])
    print(__doc__, file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(2)
