#!/usr/bin/env python3
"""hop.py - what one tools/call adds over the same request sent straight to the API.

    python3 tests/bench/hop.py --calid BUILD/bench/calid_mcp --loadgen BUILD/bench/loadgen
                               [--out BUILD/bench] [--rounds 3] [--count 3000]

At one client (tests/bench/loadgen.c, keep-alive), in turn, each round:
  direct      GET /booking/503 straight to the fake Cal ID API over TLS
  call        tools/call get_booking_by_id through calid-mcp (HTTP)
  ping        ping in a session through calid-mcp: one loopback round trip
              to this server with the least work it does for a request
  nginx       nginx answering a 2-byte file: one loopback round trip to a
              server that answers at once
and calid-mcp's CPU time per tools/call (user and system, from /proc over the
call cell). Prints the medians; the added latency cannot be smaller than one
loopback round trip. Never fails on time.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))


def cpu_s(pid):
    """(user, system) seconds a process has used."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tick, int(f[12]) / tick


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calid", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=3000)
    a = ap.parse_args()
    certs = os.path.join(a.out, "certs")
    subprocess.run(["bash", os.path.join(ROOT, "tests", "make_certs.sh"), certs], check=True, stdout=subprocess.DEVNULL)
    ca = os.path.join(certs, "ca.pem")
    tmp = tempfile.mkdtemp(prefix="calid-hop-")
    procs = []
    try:
        port_file = os.path.join(tmp, "fake.port")
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fake_calid.py"), "--cert",
                                       os.path.join(certs, "server.pem"), "--key", os.path.join(certs, "server.key"),
                                       "--port", "0", "--port-file", port_file],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(400):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.05)
        fport = int(open(port_file).read())
        cport, nport = B.free_port(), B.free_port()
        calid = subprocess.Popen([a.calid, "--listen", "127.0.0.1:%d" % cport, "--upstream", "https://localhost:%d" % fport,
                                  "--ca-file", ca, "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(calid)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen(B.nginx_argv(nginx, tmp, nport, b"{}", "application/json"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def req(name, data):
            return B.write(os.path.join(tmp, name), data)
        init = req("init.http", B.mcp_request_bytes(cport, B.INIT_BODY, session=False))
        call = req("call.http", B.mcp_request_bytes(cport, '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":'
                                                           '{"name":"%s","arguments":{"bookingId":%d}}}'
                                                    % (B.CALL_TOOL, B.BOOKING_ID)))
        ping = req("ping.http", B.mcp_request_bytes(cport, '{"jsonrpc":"2.0","id":3,"method":"ping"}'))
        tiny = req("tiny.http", B.mcp_request_bytes(nport, '{"jsonrpc":"2.0","id":3,"method":"ping"}', session=False))
        direct = req("direct.http", ("GET /booking/%d HTTP/1.1\r\nHost: localhost:%d\r\nAuthorization: Bearer %s\r\n"
                                     "Accept: application/json\r\nUser-Agent: calid-bench\r\n\r\n"
                                     % (B.BOOKING_ID, fport, B.TOKEN)).encode())
        B.wait_answer(procs[-1], nport, open(tiny, "rb").read())
        B.wait_answer(calid, cport, open(init, "rb").read())

        def run(port, r, init=None, tls=False, expect=None):
            argv = [a.loadgen, "--port", str(port), "--req", r, "--conns", "1", "--count", str(a.count)]
            argv += ["--init", init] if init else []
            argv += ["--expect", expect] if expect else []
            argv += ["--tls", "--ca", ca, "--sni", "localhost"] if tls else ["--reconnect"]
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout.strip()
            return B.parse_kv(out.splitlines()[-1] if out else "")
        R = {k: [] for k in ("direct", "call", "ping", "nginx", "user", "sys")}
        load = open("/proc/loadavg").read().split()[:3]
        for _ in range(a.rounds):
            R["direct"].append(run(fport, direct, tls=True, expect='"id":%d' % B.BOOKING_ID).get("p50_us", 0))
            u0, s0 = cpu_s(calid.pid)
            res = run(cport, call, init, expect='"isError":false')
            u1, s1 = cpu_s(calid.pid)
            n = res.get("requests", 0) + 1
            R["call"].append(res.get("p50_us", 0))
            R["user"].append((u1 - u0) * 1e6 / n)
            R["sys"].append((s1 - s0) * 1e6 / n)
            R["ping"].append(run(cport, ping, init, expect='"result"').get("p50_us", 0))
            R["nginx"].append(run(nport, tiny).get("p50_us", 0))
        m = {k: statistics.median(v) for k, v in R.items()}
        print("one client, medians of %d rounds of %d requests; load %s at start" % (a.rounds, a.count, " ".join(load)))
        print("  direct to the fake (TLS)      p50 %7.1f us" % m["direct"])
        print("  tools/call through calid-mcp  p50 %7.1f us   added %+.1f us (%+.0f%% of direct)"
              % (m["call"], m["call"] - m["direct"], 100 * (m["call"] - m["direct"]) / m["direct"] if m["direct"] else 0))
        print("  one round trip: calid-mcp ping p50 %7.1f us, nginx 2-byte file p50 %.1f us" % (m["ping"], m["nginx"]))
        print("  calid-mcp CPU per tools/call: %.1f us user + %.1f us system" % (m["user"], m["sys"]))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
