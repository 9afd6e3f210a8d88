#!/usr/bin/env python3
"""Three calid-mcp instances with one --secret-file behind nginx (Debian's,
plain round robin, no sticky routing), driven by the official SDK clients:
v1 (the session era, Mcp-Session-Id) and v2 pinned to 2026-07-28. Each
lists the tools and makes a run of tool calls; then one instance is killed
and both runs are repeated on the same client connections: every call must
succeed. Each instance's /metrics is parsed with prometheus_client and its
counters are checked against the calls made.

    python3 tests/test_scaleout.py

nginx runs unprivileged in a temporary directory (-p/-c, daemon off; pid,
logs and temp files there); every port is a free loopback port.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from test_operations import prometheus_parser  # noqa: E402

NODE_CLIENT = os.path.join(H.ROOT, "tests", "node", "scaleout_client.mjs")
CALLS = 12          # tool calls per run, per client
TOKEN = "calid_scaleout"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream calid {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://calid;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""

STATE = {}


def setup():
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        raise AssertionError("nginx is not installed (bash tests/setup.sh)")
    if not os.path.isdir(os.path.join(H.ROOT, "tests", "node", "node_modules")):
        raise AssertionError("tests/node/node_modules is missing (npm ci in tests/node)")
    tmp = tempfile.mkdtemp(prefix="calid_scaleout_")
    STATE["tmp"] = tmp
    STATE["fake"] = H.FakeCalid().start()
    secret = os.path.join(tmp, "secret.key")
    flags = STATE["fake"].server_flags() + ["--secret-file", secret]
    STATE["servers"] = [H.Server(*flags).start() for _ in range(3)]
    STATE["nginx"] = start_nginx(tmp, [s.port for s in STATE["servers"]])


def teardown():
    for c in STATE.get("clients", {}).values():
        if c.poll() is None:
            c.kill()
            c.wait()
    ng = STATE.get("nginx")
    if ng and ng[0].poll() is None:
        ng[0].send_signal(signal.SIGQUIT)
        try:
            ng[0].wait(5)
        except subprocess.TimeoutExpired:
            ng[0].kill()
            ng[0].wait()
    for s in STATE.get("servers", []):
        s.close()
    if STATE.get("fake"):
        STATE["fake"].close()
    if STATE.get("tmp"):
        shutil.rmtree(STATE["tmp"], ignore_errors=True)


def start_nginx(tmp, ports):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for _attempt in range(5):
        port = H.free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=port,
                                      servers="\n".join(f"        server 127.0.0.1:{p};" for p in ports)))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        err = open(os.path.join(tmp, "nginx.stderr"), "wb")
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log")],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if H.wait_listening(port, proc):
            return proc, port
        with open(os.path.join(tmp, "error.log"), "rb") as f:
            log = f.read().decode("utf-8", "replace")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if "in use" not in log:
            raise AssertionError(f"nginx did not start: {log[-600:]}")
    raise AssertionError("no free port for nginx")


def client(kind):
    """The node client for kind (v1 or v2), connected through nginx."""
    url = f"http://127.0.0.1:{STATE['nginx'][1]}/mcp"
    env = dict(os.environ)
    env.pop("NODE_OPTIONS", None)
    p = subprocess.Popen(["node", NODE_CLIENT, kind, url, TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=os.path.join(H.ROOT, "tests", "node"), env=env)
    first = read_line(p, kind)
    assert first.get("connected"), f"{kind}: {first}"
    STATE.setdefault("clients", {})[kind] = p
    return p, first


def read_line(p, what, timeout=60):
    import select
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            line = p.stdout.readline()
            if not line:
                break
            return json.loads(line)
        if p.poll() is not None:
            break
    raise AssertionError(f"{what}: no answer from the node client; stderr: {p.stderr.read()[-800:] if p.poll() is not None else ''}")


def run(kind, n=CALLS):
    p = STATE["clients"][kind]
    p.stdin.write(f"run {n}\n")
    p.stdin.flush()
    return read_line(p, f"{kind} run")


def scrape(port):
    r = H.get(port, "/metrics")
    assert r.status == 200, f"/metrics on {port}: {r.status}"
    out = {}
    for fam in prometheus_parser()(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples_list, name, **labels):
    want = set(labels.items())
    return sum(v for m in samples_list for (n, ls), v in m.items() if n == name and want <= set(ls))


def ok_calls(samples_list):
    return total(samples_list, "calid_mcp_tool_calls_total", outcome="ok")


def test_both_clients_through_round_robin_then_with_an_instance_killed():
    servers = STATE["servers"]
    v1, hello1 = client("v1")
    v2, hello2 = client("v2")
    assert hello1["sessionId"], f"v1 got no session id: {hello1}"
    assert hello2["sessionId"] is None, f"v2 (2026-07-28) got a session id: {hello2}"

    first = {k: run(k) for k in ("v1", "v2")}
    for k, r in first.items():
        assert r["tools"] == 57 and r["ok"] == CALLS and not r["failed"], f"{k} before the kill: {r}"
    assert first["v1"]["sessionIdAfter"] == hello1["sessionId"]

    before = [scrape(s.port) for s in servers]
    per_instance = [ok_calls([m]) for m in before]
    print(f"  tool calls per instance before the kill: {per_instance}")
    assert ok_calls(before) == 2 * CALLS, f"ok tool calls counted {ok_calls(before)}, made {2 * CALLS}"
    assert all(n > 0 for n in per_instance), f"round robin did not reach every instance: {per_instance}"
    assert total(before, "calid_mcp_requests_total", method="initialize", status="200") == 1
    assert total(before, "calid_mcp_requests_total", method="tools/list", status="200") == 2
    assert total(before, "calid_mcp_requests_total", method="tools/call", status="200") == 2 * CALLS
    assert total(before, "calid_mcp_tool_calls_total", outcome="api_error") == 0
    assert total(before, "calid_mcp_tool_calls_total", outcome="transport_error") == 0
    assert total(before, "calid_mcp_api_request_duration_seconds_count") == 2 * CALLS
    assert total(before, "calid_mcp_sessions_opened_total") == 1

    victim = servers[1]
    victim.proc.kill()          # SIGKILL: no drain, no goodbye
    victim.proc.wait()
    survivors = [servers[0], servers[2]]
    mid = [scrape(s.port) for s in survivors]

    second = {k: run(k) for k in ("v1", "v2")}
    for k, r in second.items():
        assert r["tools"] == 57 and r["ok"] == CALLS and not r["failed"], f"{k} after the kill: {r}"
    assert second["v1"]["sessionIdAfter"] == hello1["sessionId"], "the v1 client had to open another session"

    after = [scrape(s.port) for s in survivors]
    served = ok_calls(after) - ok_calls(mid)
    assert served == 2 * CALLS, f"the two survivors counted {served} ok calls after the kill, made {2 * CALLS}"
    assert total(after, "calid_mcp_requests_total", method="initialize") == total(mid, "calid_mcp_requests_total",
                                                                                     method="initialize"), \
        "a client initialized again after the kill"

    v1.stdin.write("end\n")
    v1.stdin.flush()
    ended = read_line(v1, "v1 end")
    assert ended["ended"] == "ok", f"DELETE through the balancer: {ended}"
    v2.stdin.write("end\n")
    v2.stdin.flush()
    read_line(v2, "v2 end")
    with open(os.path.join(STATE["tmp"], "access.log")) as f:
        lines = f.read().splitlines()
    print(f"  nginx logged {len(lines)} requests; v1 session {hello1['sessionId'][:12]}... kept across the kill")


def test_control_without_a_shared_secret_the_session_era_breaks():
    """The same balancer in front of instances that each make their own
    secret: a session opened on one is refused by the others, so this
    setup is what the shared secret fixes (and the test above can fail)."""
    tmp = tempfile.mkdtemp(prefix="calid_scaleout_ctl_")
    servers = [H.Server(*STATE["fake"].server_flags()).start() for _ in range(3)]
    ng = None
    try:
        ng = start_nginx(tmp, [s.port for s in servers])
        sid = H.initialize(ng[1], token=TOKEN)
        statuses = [H.session_post(ng[1], sid, {"jsonrpc": "2.0", "id": i, "method": "ping"}, token=TOKEN).status
                    for i in range(6)]
        assert statuses.count(404) == 4 and statuses.count(200) == 2, statuses
    finally:
        if ng and ng[0].poll() is None:
            ng[0].send_signal(signal.SIGQUIT)
            ng[0].wait(5)
        for s in servers:
            s.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    H.run_tests(globals(), setup=setup, teardown=teardown)
