#!/usr/bin/env python3
"""RSS of calid-mcp after N requests on one kept-alive session (default
10,000: nine tools/list for every tools/call against the fake Cal ID API).

    python3 tests/bench/rss_after_requests.py [N]

Uses build/calid_mcp (or CALID_MCP_BIN) and the certificates in build/certs
(or CALID_TEST_CERTS; made by tests/make_certs.sh). Prints VmRSS at start,
after 1,000 and 5,000 requests and at the end. A measurement, not a test.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    binary = os.environ.get("CALID_MCP_BIN", os.path.join(ROOT, "build", "calid_mcp"))
    certs = os.environ.get("CALID_TEST_CERTS", os.path.join(ROOT, "build", "certs"))
    subprocess.run(["bash", os.path.join(ROOT, "tests", "make_certs.sh"), certs], check=True)
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fake_calid.py"),
                             "--cert", f"{certs}/server.pem", "--key", f"{certs}/server.key",
                             "--port", str(fake_port)], stdout=subprocess.PIPE)
    fake.stdout.readline()
    port = free_port()
    server = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}",
                               "--upstream", f"https://localhost:{fake_port}",
                               "--ca-file", f"{certs}/ca.pem"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        print(f"RSS at start: {rss_kb(server.pid)} kB")
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer calid_rss"}
        conn.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "rss", "version": "1"}}}),
            headers)
        answer = conn.getresponse()
        headers["Mcp-Session-Id"] = answer.getheader("mcp-session-id")
        answer.read()
        started = time.time()
        for i in range(n):
            if i % 10 == 0:
                body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": {"name": "get_booking", "arguments": {"limit": 2}}}
            else:
                body = {"jsonrpc": "2.0", "id": i, "method": "tools/list"}
            conn.request("POST", "/mcp", json.dumps(body), headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                sys.exit(f"request {i} answered {answer.status}")
            if i + 1 in (1000, 5000):
                print(f"RSS after {i + 1} requests: {rss_kb(server.pid)} kB")
        print(f"RSS after {n} requests (9 tools/list : 1 tools/call): {rss_kb(server.pid)} kB "
              f"({time.time() - started:.1f} s)")
    finally:
        server.terminate()
        fake.terminate()
        server.wait()
        fake.wait()


if __name__ == "__main__":
    main()
