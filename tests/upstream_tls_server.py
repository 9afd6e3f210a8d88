#!/usr/bin/env python3
"""A small HTTPS server that misbehaves on request, for tests/upstream_harness.c.

Usage: upstream_tls_server.py --cert CERT --key KEY [--port 0] [--port-file F]
                              [--tls13-only | --plain | --no-tls-stall | --backlog-full]
                              [--api] [--api-delay-ms N] [--api-close notify|eof]
                              [--drop-nth N]

Writes the port it listens on to --port-file (or stdout) once ready.
Each connection runs on its own thread and serves requests until it closes.

Routes (answers are written as raw bytes so framing is exact):
  /echo            200 text/plain: the raw request head + body, Content-Length
  /json            200 {"ok":true,...} Content-Length, keep-alive
  /json-close      like /json with Connection: close, then close_notify + close
  /json-drop       like /json, keep-alive, but the server drops the idle
                   connection 100 ms later (close_notify + close)
  /chunked         chunked, with a chunk extension and a trailer
  /bigchunked?n=N  N bytes, chunked in 1000-byte chunks
  /close           HTTP/1.1 200 without length: body until close_notify
  /close-eof       same but ends with a TCP FIN and no close_notify
  /http10          HTTP/1.0 200 with Content-Length, then close
  /ratelimit       429 with Retry-After: 7
  /continue        100 Continue, then 201
  /big?n=N         N bytes with Content-Length
  /slow            a JSON answer dribbled in 12 pieces, 15 ms apart
  /sleep?ms=N      answers after N ms
  /stall           reads the request, never answers (30 s)
  /malformed       "HELLO WORLD" instead of a status line
  /truncated       Content-Length: 100 but 10 bytes, then close
  /reset           Content-Length: 100 but 4 bytes, then a TCP RST
  /stats           {"connections":N,"resumed":N,"requests":N,"methods":{"POST":N,...}}
                   ("methods" counts every request but /stats, dropped ones too)
  any other path   404 {"message":"no such route"}; with --api, a Cal ID-like
                   success instead: 201 for POST, else 200, {"status":"success",
                   "data":{"id":N,"method":M,"path":P}}, after --api-delay-ms;
                   with --api-close, without Content-Length: the body ends
                   with the connection, by close_notify (notify) or by a bare
                   TCP close (eof)

--drop-nth N: the Nth request on every connection is read whole and then the
connection is closed (close_notify + close) without an answer, as an API that
crashed or restarted mid-request would: the client cannot know whether the
request took effect.
"""
import argparse
import json
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

stats = {"connections": 0, "resumed": 0, "requests": 0, "methods": {}}
lock = threading.Lock()
opts = argparse.Namespace(api=False, api_delay_ms=0, api_close=None, drop_nth=0)


def read_request(conn, buf):
    """Returns ((method, target, headers, raw_head, body), rest) or (None, b"")."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _ver = lines[0].decode("latin-1").split(" ")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        data = conn.recv(65536)
        if not data:
            return None, b""
        rest += data
    return (method, target, headers, head + b"\r\n\r\n", rest[:n]), rest[n:]


def answer(status, body, ctype="application/json", extra=""):
    reason = {200: "OK", 201: "Created", 429: "Too Many Requests"}.get(status, "X")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def route(conn, method, target, headers, raw_head, body):
    """Sends the answer. Returns 'keep', 'notify' (close_notify + close),
    'eof' (FIN without close_notify), or 'drop' (keep, then drop when idle)."""
    url = urllib.parse.urlsplit(target)
    q = dict(urllib.parse.parse_qsl(url.query))
    path = url.path
    with lock:
        stats["requests"] += 1
        n_req = stats["requests"]
    if path.endswith("/echo"):
        conn.sendall(answer(200, raw_head + body, "text/plain"))
    elif path == "/json":
        conn.sendall(answer(200, json.dumps({"ok": True, "n": n_req}).encode()))
    elif path == "/json-close":
        conn.sendall(answer(200, b'{"ok":true}', extra="Connection: close\r\n"))
        return "notify"
    elif path == "/json-drop":
        conn.sendall(answer(200, b'{"ok":true,"drop":1}'))
        return "drop"
    elif path == "/chunked":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     b"7;name=value\r\nhello, \r\n"
                     b"8\r\nchunked \r\n"
                     b"5\r\nworld\r\n"
                     b"0\r\nX-Checksum: abc\r\n\r\n")
    elif path == "/bigchunked":
        n = int(q.get("n", "1000"))
        out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        left = n
        while left > 0:
            k = min(1000, left)
            out.append(b"%x\r\n" % k + b"c" * k + b"\r\n")
            left -= k
        out.append(b"0\r\n\r\n")
        conn.sendall(b"".join(out))
    elif path == "/close":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                     b"body until close_notify")
        return "notify"
    elif path == "/close-eof":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                     b"body until TCP EOF")
        return "eof"
    elif path == "/http10":
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhttp10")
        return "notify"
    elif path == "/ratelimit":
        conn.sendall(answer(429, b'{"message":"slow down"}', extra="Retry-After: 7\r\n"))
    elif path == "/continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.02)
        conn.sendall(answer(201, b'{"created":true}'))
    elif path == "/big":
        n = int(q.get("n", "1000"))
        conn.sendall(answer(200, b"b" * n, "text/plain"))
    elif path == "/slow":
        data = answer(200, json.dumps({"slow": True, "pad": "x" * 200}).encode())
        step = len(data) // 12 + 1
        for i in range(0, len(data), step):
            conn.sendall(data[i:i + step])
            time.sleep(0.015)
    elif path == "/sleep":
        time.sleep(int(q.get("ms", "100")) / 1000.0)
        conn.sendall(answer(200, b'{"slept":true}'))
    elif path == "/stall":
        time.sleep(30)
        return "eof"
    elif path == "/malformed":
        conn.sendall(b"HELLO WORLD\r\n\r\n")
        return "notify"
    elif path == "/truncated":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        return "eof"
    elif path == "/reset":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123")
        time.sleep(0.05)
        return "reset"
    elif path == "/stats":
        with lock:
            body = json.dumps(stats).encode()
        conn.sendall(answer(200, body))
    elif opts.api:
        time.sleep(opts.api_delay_ms / 1000.0)
        data = {"id": n_req, "method": method, "path": path}
        body = json.dumps({"status": "success", "data": data}).encode()
        status = 201 if method == "POST" else 200
        if opts.api_close:
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" % status
                         + body)
            return opts.api_close
        conn.sendall(answer(status, body))
    else:
        conn.sendall(answer(404, b'{"message":"no such route"}'))
    return "keep"


def close_notify(conn):
    try:
        conn.settimeout(1.0)
        conn.unwrap().close()
    except (OSError, ValueError):
        conn.close()


def close_eof(conn):
    try:
        conn.shutdown(socket.SHUT_RDWR)  # on an SSLSocket: no close_notify
    except OSError:
        pass
    conn.close()


def serve_conn(ctx, raw):
    raw.settimeout(10)
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        raw.close()
        return
    with lock:
        stats["connections"] += 1
        if conn.session_reused:
            stats["resumed"] += 1
    buf = b""
    idle_drop = False
    served = 0
    try:
        while True:
            conn.settimeout(0.1 if idle_drop else 60)
            try:
                req, buf = read_request(conn, buf)
            except socket.timeout:
                close_notify(conn)  # the server's idle timeout
                return
            if req is None:  # the client closed: answer its close_notify
                close_notify(conn)
                return
            served += 1
            if not req[1].startswith("/stats"):
                with lock:
                    stats["methods"][req[0]] = stats["methods"].get(req[0], 0) + 1
            if served == opts.drop_nth:  # read, then gone without an answer
                close_notify(conn)
                return
            what = route(conn, *req)
            if what == "notify":
                close_notify(conn)
                return
            if what == "eof":
                close_eof(conn)
                return
            if what == "reset":  # TCP RST: linger 0, no close_notify
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            idle_drop = what == "drop"
    except (OSError, ssl.SSLError, ValueError):
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--tls13-only", action="store_true", help="refuse TLS 1.2 (BearSSL gets an alert)")
    ap.add_argument("--ciphers", help="TLS 1.2 only, with just these OpenSSL cipher suites")
    ap.add_argument("--plain", action="store_true", help="speak plain HTTP on the port")
    ap.add_argument("--no-tls-stall", action="store_true", help="accept TCP, never answer")
    ap.add_argument("--backlog-full", action="store_true", help="never accept; connects hang")
    ap.add_argument("--api", action="store_true", help="unknown paths answer like a Cal ID API success")
    ap.add_argument("--api-delay-ms", type=int, default=0, help="--api answers wait this long")
    ap.add_argument("--api-close", choices=["notify", "eof"], help="--api answers end with the connection")
    ap.add_argument("--drop-nth", type=int, default=0, help="drop every connection at its Nth request")
    a = ap.parse_args()
    opts.api, opts.api_delay_ms, opts.api_close, opts.drop_nth = a.api, a.api_delay_ms, a.api_close, a.drop_nth

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    if a.backlog_full:
        ls.listen(0)
        fillers = []
        for _ in range(4):  # fill the accept queue so that the next SYN is dropped
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(ls.getsockname())
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)
    else:
        ls.listen(64)
    port = ls.getsockname()[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.rename(a.port_file + ".tmp", a.port_file)
    else:
        print(port, flush=True)
    if a.backlog_full:
        while True:
            time.sleep(3600)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if not a.plain and not a.no_tls_stall:
        ctx.load_cert_chain(a.cert, a.key)
        if a.tls13_only:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if a.ciphers:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(a.ciphers)
    while True:
        raw, _ = ls.accept()
        if a.no_tls_stall:
            threading.Thread(target=lambda s=raw: (time.sleep(30), s.close()), daemon=True).start()
        elif a.plain:
            raw.recv(4096)
            raw.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            raw.close()
        else:
            threading.Thread(target=serve_conn, args=(ctx, raw), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
