/*
 * calid_mcp.h - an MCP server for the Cal ID scheduling API, in one .c/.h pair.
 *
 * Conventions
 * -----------
 * - Every public name starts with cm_ (functions, types) or CM_ (macros).
 * - All memory is static, sized by the compile-time limits below. The server
 *   never calls malloc after cm_start() returns; nothing here returns memory
 *   the caller must free.
 * - One thread. cm_poll() does one bounded step of work and returns; the host
 *   calls it from its own loop. No function blocks longer than the timeout it
 *   was given, except cm_stdio_run(), which owns the loop while it runs.
 * - Strings passed in (the config) must outlive the server.
 * - The port layer (port/posix.c, port/lwip.c, port/win32.c) supplies sockets,
 *   clocks, random bytes and name resolution; exactly one is linked.
 */
#ifndef CALID_MCP_H
#define CALID_MCP_H

#include <stddef.h>
#include <stdint.h>

#define CM_VERSION "0.1.0"

/* ---- Compile-time limits (override with -D; each is documented in README) ---- */
#ifndef CM_MAX_CONNS
#define CM_MAX_CONNS 16            /* simultaneous inbound HTTP connections; more get 503 */
#endif
#ifndef CM_MAX_CONNS_PER_ADDR
/* connections one client address may hold (an IPv6 client: its /64), loopback
 * included: half the table (8 of 16), so one client can never fill it, but at
 * least 4, as one MCP client may hold 3 at once (the SDK's POSTs and its GET).
 * The default of cm_config.max_conns_per_addr (--max-conns-per-addr): behind a
 * reverse proxy or NAT on the way every client shares one address, so set that
 * to CM_MAX_CONNS */
#define CM_MAX_CONNS_PER_ADDR (CM_MAX_CONNS / 2 >= 4 ? CM_MAX_CONNS / 2 : CM_MAX_CONNS < 4 ? CM_MAX_CONNS : 4)
#endif
#ifndef CM_MAX_HEADER_BYTES
#define CM_MAX_HEADER_BYTES 8192   /* request line + headers; more gets 431 */
#endif
#ifndef CM_MAX_HEADERS
#define CM_MAX_HEADERS 32          /* header fields per request; more gets 431 */
#endif
#ifndef CM_MAX_BODY_BYTES
#define CM_MAX_BODY_BYTES 65536    /* one request body; more gets 413 */
#endif
#ifndef CM_CONN_IN_BYTES
#define CM_CONN_IN_BYTES 2048      /* each connection's own buffer: a request head and a small body */
#endif
#ifndef CM_BODY_POOL
#define CM_BODY_POOL 1             /* shared buffers for larger requests (head + CM_MAX_BODY_BYTES); more wait */
#endif
#ifndef CM_OUT_BYTES
#define CM_OUT_BYTES 6144          /* per-connection staging buffer for answers */
#endif
#ifndef CM_MAX_ENDED_SESSIONS
#define CM_MAX_ENDED_SESSIONS 64   /* session ids ended by DELETE, remembered until they expire */
#endif
#ifndef CM_MAX_UPSTREAMS
#define CM_MAX_UPSTREAMS 4         /* concurrent HTTPS requests to the Cal ID API; more wait */
#endif
#ifndef CM_UPSTREAM_REQ_BYTES
#define CM_UPSTREAM_REQ_BYTES 65536   /* one outgoing API request (headers + body) */
#endif
#ifndef CM_UPSTREAM_BODY_BYTES
#define CM_UPSTREAM_BODY_BYTES 65536 /* an API answer held whole (it shares a buffer with the request); a larger one
                                        streams to the client through this buffer as a window */
#endif
#ifndef CM_UPSTREAM_ANSWER_MAX_BYTES
#define CM_UPSTREAM_ANSWER_MAX_BYTES 8388608 /* policy, not memory: the longest API answer passed on (0: no limit);
                                                8 MiB is far past any model's context and any Cal ID page */
#endif
#ifndef CM_JSON_TOKENS
#define CM_JSON_TOKENS 1024        /* jsmn tokens for one request body; more is -32600 */
#endif
#ifndef CM_TRUST_ARENA_BYTES
#define CM_TRUST_ARENA_BYTES 65536 /* names and keys of the trusted CAs (Debian's 144 need 61,917 bytes) */
#endif
#ifndef CM_MAX_TRUST_ANCHORS
#define CM_MAX_TRUST_ANCHORS 160   /* CA certificates in the CA file (Debian's bundle has 144) */
#endif
#ifndef CM_OAUTH
#define CM_OAUTH 1                 /* 0 leaves OAuth sign-in and its pages out (callers bring their own keys) */
#endif
#ifndef CM_STATIC_BUDGET
#define CM_STATIC_BUDGET 1048576   /* the goal for cm_static_bytes() at these limits; --version says if it is met */
#endif
#ifndef CM_PROFILE
#define CM_PROFILE "default"       /* the name of this set of limits, for --version ("tiny": make tiny) */
#endif
#ifndef CM_MAX_ORIGINS
#define CM_MAX_ORIGINS 8           /* --allow-origin entries */
#endif
#ifndef CM_IDLE_TIMEOUT_MS
#define CM_IDLE_TIMEOUT_MS 30000   /* a connection idle or trickling this long is closed */
#endif
#ifndef CM_EVICT_IDLE_MS
#define CM_EVICT_IDLE_MS 1000      /* when full and none is stalled, a kept-alive connection idle this long
                                      makes room (only for a fair newcomer: see README, Limits) */
#endif
#ifndef CM_SLOW_GRACE_MS
#define CM_SLOW_GRACE_MS 1000      /* a request still incomplete, or an answer not taken, this long is "stalled":
                                      when the table is full, stalled connections make room first */
#endif
#ifndef CM_MIN_RECV_BYTES_PER_S
#define CM_MIN_RECV_BYTES_PER_S 256 /* a request still arriving CM_MIN_RECV_AFTER_MS after its first byte must
                                      have averaged this rate, or it gets 408 (0: only CM_HEADER_TIMEOUT_MS) */
#endif
#ifndef CM_MIN_RECV_AFTER_MS
#define CM_MIN_RECV_AFTER_MS 3000  /* later than CM_SLOW_GRACE_MS: a slow socket stays evictable a while first */
#endif
#ifndef CM_HEADER_TIMEOUT_MS
#define CM_HEADER_TIMEOUT_MS 10000 /* a request must arrive whole within this */
#endif
#ifndef CM_SESSION_TTL_MS
#define CM_SESSION_TTL_MS (24L * 3600 * 1000) /* session-era session lifetime, from its creation */
#endif
#ifndef CM_DRAIN_MS
#define CM_DRAIN_MS 30000          /* cm_shutdown(): longest wait for the requests in flight */
#endif
#ifndef CM_UPSTREAM_CONNECT_MS
#define CM_UPSTREAM_CONNECT_MS 10000  /* DNS + TCP connect */
#endif
#ifndef CM_UPSTREAM_HANDSHAKE_MS
#define CM_UPSTREAM_HANDSHAKE_MS 10000
#endif
#ifndef CM_UPSTREAM_ANSWER_MS
#define CM_UPSTREAM_ANSWER_MS 30000   /* from request sent to the last byte of the answer (not counting
                                         time a streamed answer waits for a slow client) */
#endif
#ifndef CM_UPSTREAM_IDLE_MS
#define CM_UPSTREAM_IDLE_MS 60000     /* an idle kept-alive API connection is closed after this */
#endif
#ifndef CM_UPSTREAM_WRITE_IDLE_MS
/* POST and PATCH reuse a kept-alive API connection only if it has been idle
 * for less than this, else they open a new one (a resumed TLS handshake):
 * a write cannot be re-sent safely if the server closes the connection under
 * it. The API is Fastify 4 on Node, which closes idle connections after 72 s
 * (Fastify's keepAliveTimeout); a proxy in front may keep Node's own 5 s
 * default, so 2 s stays well inside either. */
#define CM_UPSTREAM_WRITE_IDLE_MS 2000
#endif
#ifndef CM_UPSTREAM_WAIT_MS
/* A tool call waits at most this long, first come first served, for one of
 * the CM_MAX_UPSTREAMS API connections; then it ends in a tool error and is
 * not sent. With CM_UPSTREAM_ANSWER_MS on top the call ends within 45 s,
 * inside the 60 s request timeout of the MCP SDKs. */
#define CM_UPSTREAM_WAIT_MS 15000
#endif
/* HTTPS on the listener (--tls-cert/--tls-key). Each TLS connection costs a
 * BearSSL server context and a 16,709-byte half-duplex I/O buffer (about
 * 20.9 KB in all); 0 builds the server without TLS serving. */
#ifndef CM_TLS_CONNS
#define CM_TLS_CONNS (CM_MAX_CONNS / 2) /* connections that may be TLS at once (20 KiB each); more are closed at accept */
#endif
#ifndef CM_TLS_HANDSHAKE_MS
#define CM_TLS_HANDSHAKE_MS 10000  /* a TLS handshake must be done within this */
#endif
#ifndef CM_TLS_SESSIONS
#define CM_TLS_SESSIONS 64         /* TLS sessions remembered for resumption (100 bytes each) */
#endif
#ifndef CM_TLS_CHAIN_BYTES
#define CM_TLS_CHAIN_BYTES 16384   /* DER bytes of the certificate chain in --tls-cert */
#endif
#ifndef CM_TLS_CHAIN_CERTS
#define CM_TLS_CHAIN_CERTS 8       /* certificates in that chain */
#endif

/* ---- Configuration ---- */
enum cm_log_level { CM_LOG_ERROR = 0, CM_LOG_WARN, CM_LOG_INFO, CM_LOG_DEBUG };

struct cm_config {
    const char *listen;        /* "ADDR:PORT"; default "127.0.0.1:8080" */
    const char *tls_cert;      /* PEM certificate chain (leaf first): the listener speaks HTTPS; NULL = HTTP */
    const char *tls_key;       /* PEM private key (RSA or EC) of that certificate */
    const char *upstream;      /* API base URL; default "https://api.cal.id" */
    const char *ca_file;       /* PEM trust anchors; NULL = the system bundle */
    const char *api_key;       /* server-held Cal ID key, or NULL */
    const char *access_token;  /* token clients must present when api_key is set off loopback */
    const char *secret_file;   /* 32-byte server secret shared by instances; NULL = random per process */
    int oauth;                 /* serve OAuth 2.1 sign-in in front of /mcp (needs public_url) */
    const char *public_url;    /* "https://host[:port]" clients reach this server at */
    const char *allow_origins[CM_MAX_ORIGINS];
    int n_allow_origins;
    int log_level;             /* enum cm_log_level; default CM_LOG_INFO */
    int log_json;              /* 1: one JSON object per log line (--log-format json) */
    int read_only;             /* list and run only the tools that change nothing */
    const char *toolsets;      /* "bookings,slots" ...; NULL or "all": every toolset */
    int max_conns_per_addr;    /* connections one client address may hold: 1 .. CM_MAX_CONNS; default CM_MAX_CONNS_PER_ADDR */
};

/* Fills *cfg with the defaults above. */
void cm_config_defaults(struct cm_config *cfg);

/* Loads trust anchors, checks the config and (unless stdio_only) opens the
 * listening socket. Returns 0, or -1 with a message in err. */
int cm_start(const struct cm_config *cfg, int stdio_only, char *err, size_t errlen);

/* One bounded step: waits at most timeout_ms for socket events, then serves
 * them. Returns 0; 1 once a drain begun by cm_shutdown() is over (call
 * cm_stop() then); -1 if the server is not started. */
int cm_poll(int timeout_ms);

/* Begins a graceful stop: the listening socket closes, idle connections
 * close, and the requests already received (tool calls included) are
 * finished and answered, for at most CM_DRAIN_MS; keep calling cm_poll()
 * until it returns 1. Calling it again does nothing. */
void cm_shutdown(void);

/* Closes every socket. cm_start() may be called again afterwards. */
void cm_stop(void);

/* Serves MCP over stdin/stdout (one JSON-RPC message per line) until stdin
 * ends. Logs go to stderr only. Returns 0 at end of input. */
int cm_stdio_run(void);

/* The calid_mcp command: parses the flags of --help (and their environment
 * variables), starts, and serves until SIGINT or SIGTERM. Compiled with
 * CALID_MCP_MAIN, which also defines main() unless CM_OWN_MAIN is set. */
int cm_main(int argc, char **argv);

/* Bytes of static memory the server reserves at its compiled limits. */
size_t cm_static_bytes(void);

/* ---- Port interface: implemented once per platform in port/ ---- */
typedef intptr_t cm_sock_t;
#define CM_SOCK_INVALID ((cm_sock_t)-1)
#define CM_PORT_AGAIN (-2)   /* would block / still pending */

struct cm_addr {               /* an opaque socket address (sockaddr storage) */
    unsigned char bytes[32];
    unsigned len;
};

#define CM_POLL_IN  1
#define CM_POLL_OUT 2
#define CM_POLL_ERR 4          /* error or hang-up: only ever set in revents */
struct cm_pollfd {
    cm_sock_t sock;
    short events;              /* CM_POLL_IN | CM_POLL_OUT */
    short revents;
};

int cm_port_init(void);                          /* 0 ok; sockets ready to use */
void cm_port_cleanup(void);
uint64_t cm_port_now_ms(void);                   /* monotonic milliseconds */
int64_t cm_port_unix_time(void);                 /* wall clock, for certificate validity */
int cm_port_random(void *buf, size_t len);       /* 0 ok, -1 no secure source */
/* Non-blocking listening TCP socket on host:port (numeric address). */
cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen);
/* Next pending connection, non-blocking, or CM_SOCK_INVALID when none. The
 * peer's IP address goes to peer: IPv6 as is, IPv4 as ::ffff:a.b.c.d (all
 * zero when the platform cannot tell). */
cm_sock_t cm_port_accept(cm_sock_t listener, unsigned char peer[16]);
/* Starts a non-blocking connect. 0 started (wait for CM_POLL_OUT), -1 failed. */
int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out);
/* After the socket turned writable: 0 connected, or -1 the connect failed. */
int cm_port_connect_result(cm_sock_t s);
/* Bytes moved (>0), CM_PORT_AGAIN, 0 (recv only: peer closed) or -1 (error). */
long cm_port_send(cm_sock_t s, const void *buf, size_t len);
/* Gathered send of n pieces in order (writev): same results as cm_port_send. */
struct cm_iovec {
    const void *p;
    size_t n;
};
long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned n);
long cm_port_recv(cm_sock_t s, void *buf, size_t len);
void cm_port_close(cm_sock_t s);
/* Like poll(2). Returns the number of ready sockets, 0 on timeout, -1 error. */
int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms);
/* Name resolution without blocking the loop: 0 with *out filled, CM_PORT_AGAIN
 * while a lookup runs in the background (call again later), -1 failed.
 * IPv4 results are preferred. */
int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out);
/* Path of the system CA bundle, or NULL if the platform has none. */
const char *cm_port_default_ca_file(void);
/* Creates the file path, which must not exist yet, readable and writable by
 * its owner only (mode 0600 where the platform has modes), and writes the len
 * bytes of buf to it. 0 ok, -1 failed (it exists, or no write access). */
int cm_port_create_private_file(const char *path, const void *buf, size_t len);

#endif /* CALID_MCP_H */
