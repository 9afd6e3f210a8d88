#!/usr/bin/env python3
"""bench.py - calid-mcp against the official TypeScript SDK server and nginx.

    python3 tests/bench/bench.py --calid BUILD/bench/calid_mcp --loadgen BUILD/bench/loadgen
                                 [--out BUILD/bench] [--seconds 5] [--rounds 3] [--soak 20]

Starts the fake Cal ID API (tests/fake_calid.py), calid-mcp and the peer
(tests/bench/peer.mjs: @modelcontextprotocol/sdk's Server with
StreamableHTTPServerTransport on Node, the same 57 tools and schemas, fetched
from calid-mcp's own tools/list at start). The tools/list cells also run
against nginx (Debian's, one worker, config in a temporary directory)
answering the same POST /mcp with the same answer bytes, read from a file:
the speed of serving that many bytes over HTTP at all. Every round starts the
servers afresh and runs each measurement ("cell") on each in turn, rotating
which goes first, so that all see the same machine; the table shows the
median over the rounds. All requests come from tests/bench/loadgen.c, a
closed-loop keep-alive client (one request in flight per connection);
the "direct" cells send the equivalent API request straight to the fake over
TLS with the same client, so "added latency" compares like with like.

Prints the table; writes raw numbers to OUT/results.json. Never fails on
time: the goals are printed, met or not. Exit status 0 unless something
could not run at all.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = "calid_bench_token"
SESSION_VERSION = "2025-11-25"
BOOKING_ID = 503           # a seeded booking of the fake
CALL_TOOL = "get_booking_by_id"

children = []


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv, logfile, env=None):
    f = open(logfile, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                         start_new_session=True)
    children.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in children:
        children.remove(p)


def rss_kib(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# raw HTTP, for start-up timing and the tool list
# --------------------------------------------------------------------------

def http_request(port, method, path, headers, body=b"", timeout=5.0):
    """One request on a new connection; returns (status, headers dict, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (method, path, port)
        for k, v in headers.items():
            head += "%s: %s\r\n" % (k, v)
        head += "Content-Length: %d\r\n\r\n" % len(body)
        s.sendall(head.encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out, p = b"", 0
        while True:
            nl = rest.index(b"\r\n", p)
            n = int(rest[p:nl].split(b";")[0], 16)
            if n == 0:
                break
            out += rest[nl + 2:nl + 2 + n]
            p = nl + 2 + n + 2
        rest = out
    return status, hdrs, rest


MCP_HEADERS = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
INIT_BODY = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": SESSION_VERSION, "capabilities": {},
                                   "clientInfo": {"name": "calid-bench", "version": "1.0.0"}}},
                       separators=(",", ":"))


def time_to_first_answer(argv, port, logfile, env=None, limit=30.0):
    """Spawns the server; seconds until it answers an initialize in full."""
    t0 = time.monotonic()
    p = spawn(argv, logfile, env)
    while True:
        try:
            st, _, _ = http_request(port, "POST", "/mcp", MCP_HEADERS, INIT_BODY.encode(), timeout=limit)
            if st == 200:
                return p, time.monotonic() - t0
        except (OSError, ValueError, IndexError):
            pass
        if p.poll() is not None:
            raise SystemExit("bench: %s exited during start (see %s)" % (argv[0], logfile))
        if time.monotonic() - t0 > limit:
            raise SystemExit("bench: %s did not answer within %d s (see %s)" % (argv[0], limit, logfile))
        time.sleep(0.001)


def fetch_tools(port):
    """(tools, the answer's body bytes, its Content-Type, the session id)."""
    st, h, _ = http_request(port, "POST", "/mcp", MCP_HEADERS, INIT_BODY.encode())
    sid = h.get("mcp-session-id")
    hdrs = dict(MCP_HEADERS, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": SESSION_VERSION})
    st, h, raw = http_request(port, "POST", "/mcp", hdrs, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    if st != 200:
        raise SystemExit("bench: tools/list answered %d" % st)
    ctype = h.get("content-type", "application/json")
    body = raw
    if ctype.startswith("text/event-stream"):
        body = b"".join(l[5:] for l in body.split(b"\n") if l.startswith(b"data:"))
    return json.loads(body)["result"]["tools"], raw, ctype, sid or ""


# --------------------------------------------------------------------------
# nginx: the same answer bytes from a file
# --------------------------------------------------------------------------

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=16;
    types { }
    default_type "%(ctype)s";
    server {
        listen 127.0.0.1:%(port)d;
        root %(dir)s/www;
        # the file "mcp" is the answer; the static module refuses POST with
        # 405, which is turned into a GET of the same file with status 200
        location = /mcp { error_page 405 =200 $uri; }
    }
}
"""


def nginx_argv(nginx, base, port, answer, ctype):
    """Writes the config and the answer file into base; the command line that serves them."""
    os.makedirs(os.path.join(base, "www"), exist_ok=True)
    write(os.path.join(base, "www", "mcp"), answer)
    conf = os.path.join(base, "nginx-%d.conf" % port)
    with open(conf, "w") as f:
        f.write(NGINX_CONF % {"dir": base, "port": port, "ctype": ctype.replace('"', "")})
    return [nginx, "-p", base, "-e", os.path.join(base, "error.log"), "-c", conf]


def wait_answer(p, port, req_bytes, limit=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(req_bytes)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise SystemExit("bench: nginx did not answer on %d (see its error.log)" % port)


# --------------------------------------------------------------------------
# request files for loadgen
# --------------------------------------------------------------------------

def mcp_request_bytes(port, body, session=True):
    head = ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n" % (port, TOKEN))
    if session:
        head += "Mcp-Session-Id: {SID}\r\nMCP-Protocol-Version: %s\r\n" % SESSION_VERSION
    b = body.encode()
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(b) + b


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


# --------------------------------------------------------------------------
# the fake's counters
# --------------------------------------------------------------------------

def fake_stats(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen("https://localhost:%d/__fake/stats" % port, context=ctx, timeout=10) as r:
        return json.load(r)


def fake_fault(port, ca, spec):
    """spec: a fault object to add, or None to clear them all."""
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request("https://localhost:%d/__fake/fault" % port,
                                 data=None if spec is None else json.dumps(spec).encode(),
                                 method="DELETE" if spec is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.load(r)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_kv(line):
    out = {}
    for tok in line.split():
        k, _, v = tok.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


class Bench:
    def __init__(self, a):
        self.a = a
        self.out = a.out
        os.makedirs(self.out, exist_ok=True)
        self.certs = a.certs
        self.logdir = os.path.join(self.out, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.results = {"rounds": []}

    def loadgen(self, port, req, init=None, conns=1, seconds=None, count=None, expect=None, tls=False):
        argv = [self.a.loadgen, "--port", str(port), "--req", req, "--conns", str(conns)]
        if init:
            argv += ["--init", init]
        if count:
            argv += ["--count", str(count)]
        else:
            argv += ["--seconds", str(seconds or self.a.seconds)]
        if expect:
            argv += ["--expect", expect]
        if tls:
            argv += ["--tls", "--ca", os.path.join(self.certs, "ca.pem"), "--sni", "localhost"]
        else:
            argv += ["--reconnect"]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        res = parse_kv(line)
        if r.stderr.strip():
            with open(os.path.join(self.logdir, "loadgen.log"), "a") as f:
                f.write("%s\n%s\n" % (" ".join(argv), r.stderr))
        if not line or res.get("errors", 0) or res.get("dropped", 0):
            log("loadgen %s c=%d: %s %s" % (os.path.basename(req), conns, line or "no output",
                                            r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""))
        return res

    def run(self):
        a = self.a
        subprocess.run(["bash", os.path.join(ROOT, "tests", "make_certs.sh"), self.certs], check=True)
        ca = os.path.join(self.certs, "ca.pem")
        # the fake API
        pf = os.path.join(self.out, "fake.port")
        if os.path.exists(pf):
            os.unlink(pf)
        self.fake = spawn([sys.executable, os.path.join(ROOT, "tests", "fake_calid.py"),
                           "--cert", os.path.join(self.certs, "server.pem"),
                           "--key", os.path.join(self.certs, "server.key"),
                           "--port", "0", "--port-file", pf], os.path.join(self.logdir, "fake.log"))
        for _ in range(500):
            if os.path.exists(pf):
                break
            time.sleep(0.02)
        self.fake_port = int(open(pf).read())
        upstream = "https://localhost:%d" % self.fake_port

        # the tools, from calid-mcp itself
        cport = free_port()
        calid_argv = lambda port: [a.calid, "--listen", "127.0.0.1:%d" % port, "--upstream", upstream,
                                   "--ca-file", ca, "--log-level", "warn"]
        p, _ = time_to_first_answer(calid_argv(cport), cport, os.path.join(self.logdir, "calid.log"))
        tools, list_answer, list_ctype, list_sid = fetch_tools(cport)
        stop(p)
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
        nginx_dir = tempfile.mkdtemp(prefix="calid-bench-nginx-")
        if not nginx:
            log("nginx is not installed: its cells are left out (apt-get install nginx)")
        tools_file = os.path.join(self.out, "tools.json")
        with open(tools_file, "w") as f:
            json.dump(tools, f, separators=(",", ":"), ensure_ascii=False)
        log("%d tools, %d bytes of tools/list array" % (len(tools), os.path.getsize(tools_file)))

        node = shutil.which("node")
        peer_env = dict(os.environ, NODE_EXTRA_CA_CERTS=ca)
        peer_argv = lambda port: [node, os.path.join(HERE, "peer.mjs"), "--port", str(port), "--upstream", upstream,
                                  "--tools", tools_file, "--catalog", catalog]
        # the route-map rows: catalog.inc, or calid_mcp.c once the catalog lives there
        catalog = os.path.join(ROOT, "catalog.inc")
        if not os.path.exists(catalog):
            catalog = os.path.join(ROOT, "calid_mcp.c")

        direct = write(os.path.join(self.out, "direct.http"),
                       ("GET /booking/%d HTTP/1.1\r\nHost: localhost:%d\r\nAuthorization: Bearer %s\r\n"
                        "Accept: application/json\r\nUser-Agent: calid-bench\r\n\r\n"
                        % (BOOKING_ID, self.fake_port, TOKEN)).encode())
        list_body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        call_body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                "params": {"name": CALL_TOOL, "arguments": {"bookingId": BOOKING_ID}}},
                               separators=(",", ":"))

        names = ("calid", "peer")
        for rnd in range(a.rounds):
            order = names if rnd % 2 == 0 else names[::-1]
            R = {"calid": {}, "peer": {}, "direct": {}, "nginx": {}}
            procs, ports, files = {}, {}, {}
            # start both (start-up time, idle RSS)
            for who in order:
                port = free_port()
                argv = calid_argv(port) if who == "calid" else peer_argv(port)
                env = None if who == "calid" else peer_env
                p, t = time_to_first_answer(argv, port, os.path.join(self.logdir, who + ".log"), env)
                procs[who], ports[who] = p, port
                R[who]["start_ms"] = t * 1000
                files[who] = {
                    "init": write(os.path.join(self.out, "%s-init.http" % who),
                                  mcp_request_bytes(port, INIT_BODY, session=False)),
                    "list": write(os.path.join(self.out, "%s-list.http" % who), mcp_request_bytes(port, list_body)),
                    "call": write(os.path.join(self.out, "%s-call.http" % who), mcp_request_bytes(port, call_body)),
                }
            if nginx:
                port = free_port()
                # the same request bytes as calid-mcp's (a session id of the same length)
                req = mcp_request_bytes(port, list_body).replace(b"{SID}", b"0" * len(list_sid))
                files["nginx"] = {"list": write(os.path.join(self.out, "nginx-list.http"), req)}
                procs["nginx"] = spawn(nginx_argv(nginx, nginx_dir, port, list_answer, list_ctype),
                                       os.path.join(self.logdir, "nginx.log"))
                ports["nginx"] = port
                wait_answer(procs["nginx"], port, req)
            time.sleep(1.0)
            for who in order:
                R[who]["rss_idle"] = rss_kib(procs[who].pid)

            # 100 sequential tool calls on a fresh server, then 100 more while the API closes
            # its connection after every answer (so each call needs a new TLS connection):
            # full and resumed TLS handshakes, as the fake counts them
            for who in order:
                for tag, fault in (("seq100", None), ("seq100close", {"mode": "close_after", "count": -1,
                                                                      "path": "/booking"})):
                    if fault:
                        fake_fault(self.fake_port, ca, fault)
                    s0 = fake_stats(self.fake_port, ca)
                    res = self.loadgen(ports[who], files[who]["call"], files[who]["init"], conns=1, count=100,
                                       expect='"isError":false')
                    s1 = fake_stats(self.fake_port, ca)
                    if fault:
                        fake_fault(self.fake_port, ca, None)
                    hs = s1["handshakes"] - s0["handshakes"] - 1   # minus the second stats request itself
                    resumed = s1["resumed"] - s0["resumed"]
                    R[who][tag + "_full_handshakes"] = hs - resumed
                    R[who][tag + "_resumed"] = resumed
                    R[who][tag + "_connections"] = s1["connections"] - s0["connections"] - 1
                    R[who][tag + "_ok"] = res.get("requests", 0)
                    R[who][tag + "_errors"] = res.get("errors", 0)

            # load cells, alternating; RSS sampled while each runs
            peak = {w: 0 for w in names}
            cells = [("list", 1), ("list", 8), ("list", 64), ("call", 1), ("call", 8)]
            for kind, conns in cells:
                turn = list(order)
                if kind == "list" and nginx:
                    turn = (turn + ["nginx"])[rnd % 3:] + (turn + ["nginx"])[:rnd % 3]
                for who in turn:
                    if kind == "call":
                        # the same API request straight to the fake, right before: the baseline for this cell
                        time.sleep(a.pause)
                        R["direct"]["c%d_%s" % (conns, who)] = self.loadgen(
                            self.fake_port, direct, conns=conns, expect='"id":%d' % BOOKING_ID, tls=True)
                    time.sleep(a.pause)  # lets the other server settle (Node collects garbage after load)
                    stop_ev = threading.Event()

                    def sampler(pid=procs[who].pid, w=who):
                        if w not in peak:
                            return
                        while not stop_ev.is_set():
                            v = rss_kib(pid)
                            if v:
                                peak[w] = max(peak[w], v)
                            stop_ev.wait(0.1)
                    th = threading.Thread(target=sampler)
                    th.start()
                    res = self.loadgen(ports[who], files[who][kind], files[who].get("init"), conns=conns,
                                       expect='"get_users_me"' if kind == "list" else '"isError":false')
                    stop_ev.set()
                    th.join()
                    R[who]["%s_c%d" % (kind, conns)] = res
                    log("round %d %-5s %s c=%-2d rps=%.0f p50=%.0fus p99=%.0fus" % (
                        rnd + 1, who, kind, conns, res.get("rps", 0), res.get("p50_us", 0), res.get("p99_us", 0)))
            time.sleep(2.0)
            for who in names:
                R[who]["rss_load"] = peak[who]
                R[who]["rss_after"] = rss_kib(procs[who].pid)
            for who in procs:
                stop(procs[who])
            self.results["rounds"].append(R)

        # soak: RSS over a longer run, both servers, one after the other
        self.results["soak"] = {}
        if a.soak > 0:
            for who in names:
                port = free_port()
                argv = calid_argv(port) if who == "calid" else peer_argv(port)
                p, _ = time_to_first_answer(argv, port, os.path.join(self.logdir, who + ".log"),
                                            None if who == "calid" else peer_env)
                init = write(os.path.join(self.out, "soak-init.http"), mcp_request_bytes(port, INIT_BODY, session=False))
                lst = write(os.path.join(self.out, "soak-list.http"), mcp_request_bytes(port, list_body))
                call = write(os.path.join(self.out, "soak-call.http"), mcp_request_bytes(port, call_body))
                # one warm-up cycle first: pages touched once are not growth
                self.loadgen(port, lst, init, conns=8, seconds=1, expect='"get_users_me"')
                self.loadgen(port, call, init, conns=8, seconds=1, expect='"isError":false')
                samples = [(rss_kib(p.pid), rss_kib(p.pid, "RssAnon"))]
                t_end = time.monotonic() + a.soak
                step = 0
                while time.monotonic() < t_end:
                    req = lst if step % 2 == 0 else call
                    self.loadgen(port, req, init, conns=8, seconds=min(2.0, max(0.5, t_end - time.monotonic())),
                                 expect='"get_users_me"' if req == lst else '"isError":false')
                    samples.append((rss_kib(p.pid), rss_kib(p.pid, "RssAnon")))
                    step += 1
                self.results["soak"][who] = {"seconds": a.soak, "rss": samples}
                stop(p)
        stop(self.fake)
        shutil.rmtree(nginx_dir, ignore_errors=True)

        # sizes
        self.results["size"] = self.sizes(node)
        self.results["machine"] = self.machine(node)
        ver = subprocess.run([a.calid, "--version"], capture_output=True, text=True)
        self.results["config"] = {"seconds": a.seconds, "rounds": a.rounds, "soak": a.soak,
                                  "calid": a.calid, "calid_cflags": a.cflags,
                                  "calid_version": (ver.stdout or ver.stderr).strip().splitlines()[0:1]}
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        print(render(self.results))

    def sizes(self, node):
        tmp = tempfile.mkdtemp()
        try:
            s = os.path.join(tmp, "calid_mcp")
            shutil.copy(self.a.calid, s)
            subprocess.run(["strip", s], check=True)
            calid = os.path.getsize(s)
        finally:
            shutil.rmtree(tmp)
        libs = 0
        try:
            ldd = subprocess.run(["ldd", self.a.calid], capture_output=True, text=True).stdout
            for m in re.finditer(r"(libbearssl\S*) => (\S+)", ldd):
                libs += os.path.getsize(os.path.realpath(m.group(2)))
        except OSError:
            pass
        nm = os.path.join(HERE, "node_modules")
        du = int(subprocess.run(["du", "-sb", nm], capture_output=True, text=True).stdout.split()[0])
        nodebin = os.path.getsize(os.path.realpath(node))
        peer = os.path.getsize(os.path.join(HERE, "peer.mjs"))
        return {"calid_stripped": calid, "calid_libbearssl": libs, "peer_node_modules": du,
                "node_binary": nodebin, "peer_script": peer}

    def machine(self, node):
        cpu = "?"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        nv = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        sdk = json.load(open(os.path.join(HERE, "node_modules", "@modelcontextprotocol", "sdk", "package.json")))["version"]
        return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                "loadavg": open("/proc/loadavg").read().split()[:3], "node": nv, "sdk": sdk,
                "python": platform.python_version()}


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def render(res):
    rounds = res["rounds"]
    m = res.get("machine", {})
    cfg = res.get("config", {})

    def get(who, *path):
        out = []
        for R in rounds:
            v = R.get(who, {})
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            out.append(v)
        return med(out)

    rows = []

    def row(label, c, p, unit, ratio=True, goal="", fmt="%.0f", met=None):
        rs = "" if c is None else fmt % c
        ps = "" if p is None else fmt % p
        r = ""
        if ratio and c is not None and p:
            q = c / p
            r = ("%.1fx" % q) if q >= 1 else ("%.3f" % q)
        g = goal
        if met is not None:
            g += "  " + ("met" if met else "NOT met")
        rows.append((label, rs, ps, unit, r, g))

    for c in (1, 8, 64):
        rc, rp = get("calid", "list_c%d" % c, "rps"), get("peer", "list_c%d" % c, "rps")
        row("tools/list  c=%-2d throughput" % c, rc, rp, "req/s", goal=">= 30x" if c else "",
            met=(rc / rp >= 30) if rc and rp else None)
        rn = get("nginx", "list_c%d" % c, "rps")
        if rn:
            q = rc / rn if rc else None
            row("  nginx, the same answer bytes from a file", None, rn, "req/s", ratio=False,
                goal=("calid/nginx %.2f" % q if q else "") + ("; goal >= 1.0" if c == 8 else ""),
                met=(q >= 1.0) if c == 8 and q else None)
        row("tools/list  c=%-2d p50" % c, get("calid", "list_c%d" % c, "p50_us"),
            get("peer", "list_c%d" % c, "p50_us"), "us", fmt="%.1f")
        pc, pp = get("calid", "list_c%d" % c, "p99_us"), get("peer", "list_c%d" % c, "p99_us")
        row("tools/list  c=%-2d p99" % c, pc, pp, "us", goal="<= 0.1", fmt="%.1f",
            met=(pc / pp <= 0.1) if pc and pp else None)
        row("initialize  c=%-2d p50 (1st request per connection)" % c, get("calid", "list_c%d" % c, "init_p50_us"),
            get("peer", "list_c%d" % c, "init_p50_us"), "us", fmt="%.1f")
    for c in (1, 8):
        row("tools/call  c=%-2d throughput" % c, get("calid", "call_c%d" % c, "rps"),
            get("peer", "call_c%d" % c, "rps"), "req/s")
        row("tools/call  c=%-2d p50" % c, get("calid", "call_c%d" % c, "p50_us"),
            get("peer", "call_c%d" % c, "p50_us"), "us", fmt="%.1f")
        row("tools/call  c=%-2d p99" % c, get("calid", "call_c%d" % c, "p99_us"),
            get("peer", "call_c%d" % c, "p99_us"), "us", fmt="%.1f")
        row("  direct to the fake, just before: throughput", get("direct", "c%d_calid" % c, "rps"),
            get("direct", "c%d_peer" % c, "rps"), "req/s", ratio=False, goal="same client, TLS kept alive")
        row("  direct to the fake, just before: p50", get("direct", "c%d_calid" % c, "p50_us"),
            get("direct", "c%d_peer" % c, "p50_us"), "us", ratio=False, fmt="%.1f")

        def added(who):
            out, pct = [], []
            for R in rounds:
                d = R["direct"].get("c%d_%s" % (c, who), {}).get("p50_us")
                v = R[who].get("call_c%d" % c, {}).get("p50_us")
                if d and v:
                    out.append(v - d)
                    pct.append((v - d) / d * 100)
            return med(out), med(pct)
        ac, pc_ = added("calid")
        ap, pp_ = added("peer")
        row("tools/call  c=%-2d added p50 over direct" % c, ac, ap, "us", fmt="%.1f", ratio=False,
            goal=("calid %+.0f%%, peer %+.0f%% of direct" % (pc_ or 0, pp_ or 0)) + ("; goal <= +5%" if c == 1 else ""),
            met=(pc_ <= 5) if c == 1 and pc_ is not None else None)
    for k, label in (("rss_idle", "RSS idle"), ("rss_load", "RSS under load (peak)"), ("rss_after", "RSS after load")):
        c, p = get("calid", k), get("peer", k)
        row(label, c, p, "KiB", goal="<= 1/30" if k == "rss_load" else "",
            met=(c / p <= 1 / 30) if (k == "rss_load" and c and p) else None, fmt="%.0f")
    soak = res.get("soak", {})
    if soak:
        def growth(w, k):
            s = [x[k] if isinstance(x, (list, tuple)) else (x if k == 0 else None)
                 for x in soak.get(w, {}).get("rss", []) if x]
            s = [v for v in s if v]
            return (s[0], s[-1]) if s else (None, None)
        secs = soak["calid"]["seconds"]
        c0, c1 = growth("calid", 0)
        p0, p1 = growth("peer", 0)
        row("RSS during a %gs soak (after a warm-up): first -> last" % secs, None, None, "KiB", ratio=False,
            goal="calid %s -> %s, peer %s -> %s" % (c0, c1, p0, p1))
        a0, a1 = growth("calid", 1)
        b0, b1 = growth("peer", 1)
        row("  of it anonymous (heap, static data, stacks)", None, None, "KiB", ratio=False,
            goal="calid %s -> %s, peer %s -> %s; flat" % (a0, a1, b0, b1),
            met=(a1 <= a0) if a0 else None)
    row("start to first answer (initialize)", get("calid", "start_ms"), get("peer", "start_ms"), "ms", fmt="%.1f")
    fc, fp = get("calid", "seq100_full_handshakes"), get("peer", "seq100_full_handshakes")
    row("100 sequential tool calls (fresh server): full TLS handshakes", fc, fp, "", ratio=False, goal="<= 2",
        met=(fc <= 2) if fc is not None else None)
    row("  resumed handshakes / API connections opened", None, None, "", ratio=False,
        goal="calid %s / %s, peer %s / %s" % (get("calid", "seq100_resumed"), get("calid", "seq100_connections"),
                                              get("peer", "seq100_resumed"), get("peer", "seq100_connections")))
    fc2, fp2 = get("calid", "seq100close_full_handshakes"), get("peer", "seq100close_full_handshakes")
    row("100 more, the API closing after each answer: full handshakes", fc2, fp2, "", ratio=False, goal="<= 2 in all",
        met=(fc + fc2 <= 2) if fc is not None and fc2 is not None else None)
    row("  resumed handshakes / API connections opened / calls ok", None, None, "", ratio=False,
        goal="calid %s / %s / %s, peer %s / %s / %s" % (
            get("calid", "seq100close_resumed"), get("calid", "seq100close_connections"), get("calid", "seq100close_ok"),
            get("peer", "seq100close_resumed"), get("peer", "seq100close_connections"), get("peer", "seq100close_ok")))
    sz = res.get("size", {})
    if sz:
        peer_total = sz["peer_node_modules"] + sz["node_binary"] + sz["peer_script"]
        row("size: stripped binary | node_modules + node + peer.mjs", sz["calid_stripped"] / 1024, peer_total / 1024, "KiB")
        row("  (libbearssl.so, linked dynamically)", sz["calid_libbearssl"] / 1024, None, "KiB", ratio=False)

    w0 = max(len(r[0]) for r in rows)
    lines = []
    lines.append("%s vs @modelcontextprotocol/sdk %s (Server + StreamableHTTPServerTransport, Node %s)"
                 % ((cfg.get("calid_version") or ["calid-mcp"])[0], m.get("sdk", "?"), m.get("node", "?")))
    lines.append("medians of %d rounds, %g s per cell, alternating; machine: %s, %s cores, Linux %s, load %s at start"
                 % (len(rounds), cfg.get("seconds", 0), m.get("cpu", "?"), m.get("cores", "?"), m.get("kernel", "?"),
                    " ".join(m.get("loadavg", []))))
    lines.append("calid-mcp binary: %s (make bench builds it with %s)" % (cfg.get("calid", "?"), cfg.get("calid_cflags", "?")))
    lines.append("")
    hdr = ("%-*s  %12s  %12s  %-5s  %10s  %s" % (w0, "metric", "calid-mcp", "peer", "unit", "calid/peer", "goal"))
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in rows:
        lines.append("%-*s  %12s  %12s  %-5s  %10s  %s" % (w0, r[0], r[1], r[2], r[3], r[4], r[5]))
    drops = sum(int(R[w][k].get("dropped", 0)) for R in rounds for w in ("calid", "peer", "nginx") if w in R
                for k in R[w] if isinstance(R[w][k], dict))
    errs = sum(int(R[w][k].get("errors", 0)) for R in rounds for w in ("calid", "peer", "direct", "nginx") if w in R
               for k in R[w] if isinstance(R[w][k], dict))
    lines.append("")
    lines.append("errors: %d; kept-alive connections closed by a server under a request (reconnected, counted in latency): %d"
                 % (errs, drops))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calid")
    ap.add_argument("--loadgen")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--certs", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--soak", type=float, default=20.0)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds of quiet before each cell")
    ap.add_argument("--cflags", default="")
    ap.add_argument("--render", help="print the table of an earlier results.json and exit")
    a = ap.parse_args()
    if a.render:
        print(render(json.load(open(a.render))))
        return 0
    if not a.calid or not a.loadgen:
        ap.error("--calid and --loadgen are required")
    a.certs = a.certs or os.path.join(a.out, "certs")
    for f in (a.calid, a.loadgen):
        if not os.access(f, os.X_OK):
            raise SystemExit("bench: %s is not built" % f)
    if not os.path.isdir(os.path.join(HERE, "node_modules", "@modelcontextprotocol", "sdk")):
        raise SystemExit("bench: the peer's packages are missing: (cd tests/bench && npm ci)")
    try:
        Bench(a).run()
    finally:
        for p in list(children):
            stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
