#!/usr/bin/env python3
"""What HTTPS costs per connection: plain HTTP vs a full TLS handshake vs a
resumed one, each a fresh connection carrying one GET /healthz.

    python3 tests/bench/tls_handshake.py [N]          # wall time, N connections per kind (default 200)
    python3 tests/bench/tls_handshake.py --callgrind  # server instructions per connection (valgrind)

Wall times are what a Python client on loopback sees (its own TLS work
included); the callgrind mode counts only the server's instructions: the
whole run's total, less a run with no connections, divided by the count.
Prints numbers; never fails on time. Uses build/calid_mcp (CALID_MCP_BIN)
and the test certificate: EC P-256 (server.pem), or RSA 2048 (server-rsa.pem)
with --rsa.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness as H  # noqa: E402

RSA = "--rsa" in sys.argv


def tls_server_flags(tls):
    if not tls:
        return []
    name = "server-rsa" if RSA else "server"
    return ["--tls-cert", os.path.join(H.CERTS, name + ".pem"), "--tls-key", os.path.join(H.CERTS, name + ".key")]


def one(port, tls, session=None):
    """Seconds for connect + handshake + GET /healthz + close; the TLS session."""
    t0 = time.perf_counter()
    with H.Conn(port, tls=tls, session=session) as c:
        c.send(H.build_request("GET", "/healthz", [("Host", f"127.0.0.1:{port}"), ("Connection", "close")]))
        r = c.read_response(method="GET")
        sess = c.sock.session if tls else None
        reused = c.sock.session_reused if tls else False
    assert r.status == 200, r
    return time.perf_counter() - t0, sess, reused


def run_kinds(port_plain, port_tls, n):
    out = {}
    out["plain HTTP"] = [one(port_plain, False)[0] for _ in range(n)]
    full = []
    for _ in range(n):
        dt, sess, reused = one(port_tls, True)
        assert not reused
        full.append(dt)
    out["HTTPS, full handshake"] = full
    _, sess, _ = one(port_tls, True)
    resumed = []
    for _ in range(n):
        dt, _, reused = one(port_tls, True, session=sess)
        assert reused, "the session was not resumed"
        resumed.append(dt)
    out["HTTPS, resumed session"] = resumed
    return out


def wall(n):
    ca = ("--ca-file", os.path.join(H.CERTS, "ca.pem"))
    with H.Server(*ca, tls=False) as plain, H.Server(*ca, *tls_server_flags(True)) as secure:
        for _ in range(20):  # warm up
            one(plain.port, False)
            one(secure.port, True)
        res = run_kinds(plain.port, secure.port, n)
    print(f"per connection (connect, handshake, GET /healthz, close), {n} each, {'RSA 2048' if RSA else 'EC P-256'} key, "
          f"Python {sys.version.split()[0]} client on loopback")
    print(f"{'kind':28} {'median ms':>10} {'p90 ms':>8}")
    for k, v in res.items():
        v = sorted(v)
        print(f"{k:28} {statistics.median(v) * 1000:10.3f} {v[int(len(v) * 0.9)] * 1000:8.3f}")


def callgrind_total(conns, tls, resume):
    """Instructions the server executes for a run with `conns` connections."""
    d = tempfile.mkdtemp(prefix="calid_cg_")
    wrapper = os.path.join(d, "calid_mcp")
    out = os.path.join(d, "cg.out")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file={out} {H.BIN} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    s = H.Server("--ca-file", os.path.join(H.CERTS, "ca.pem"), *tls_server_flags(tls), binary=wrapper, tls=False).start()
    try:
        sess = one(s.port, tls)[1] if resume else None  # the one full handshake a resumed run needs
        for _ in range(conns):
            one(s.port, tls, session=sess)
    finally:
        s.close()
    text = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", text) or re.search(r"([\d,]+)\s+PROGRAM TOTALS", text)
    assert m, text[:500]
    return int(m.group(1).replace(",", ""))


def callgrind(n=20):
    base_plain = callgrind_total(0, False, False)
    plain = callgrind_total(n, False, False)
    base_tls = callgrind_total(0, True, False)
    full = callgrind_total(n, True, False)
    resumed = callgrind_total(n, True, True)
    one_full = (full - base_tls) / n
    print(f"server instructions per connection (callgrind, {n} connections, less an idle run; {'RSA 2048' if RSA else 'EC P-256'} key)")
    print(f"  plain HTTP                 {(plain - base_plain) / n:12,.0f}")
    print(f"  HTTPS, full handshake      {one_full:12,.0f}")
    print(f"  HTTPS, resumed session     {(resumed - base_tls - one_full) / n:12,.0f}")
    print(f"  (start-up with TLS: {base_tls:,} instructions; without: {base_plain:,})")


if __name__ == "__main__":
    H.ensure_certs()
    if "--callgrind" in sys.argv:
        callgrind()
    else:
        nums = [a for a in sys.argv[1:] if a.isdigit()]
        wall(int(nums[0]) if nums else 200)
