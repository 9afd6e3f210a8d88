/*
 * fuzz_mcp.c - libFuzzer target for the whole request-to-response path of
 * calid_mcp.c without sockets: HTTP parsing, routing, Host/Origin/token
 * checks, sessions, JSON checks, JSON-RPC dispatch in both protocol eras,
 * batches, tool argument checks, the API request built from them, the API
 * answer coming back (simulated from part of the input) and the answer
 * written to the client. A second mode drives the stdio transport.
 *
 * The file includes calid_mcp.c and replaces port/posix.c with a fake port:
 * client sockets whose recv() hands out the fuzz input in pieces, send()
 * captures what the server writes (in pieces, sometimes "would block"),
 * poll() says what is ready, and the clock moves on by the poll timeout when
 * nothing is, so every timeout path can be reached in a few hundred steps.
 *
 * mk/fuzz.mk builds it with a 2 KiB API answer window
 * (CM_UPSTREAM_BODY_BYTES=2048; requests keep the default buffer), so any
 * answer of a few KiB streams: the simulated API hands each full window to
 * its owner and reads on only when up_release() gives it back (a client
 * that takes writes in pieces or says "would block" holds the API back),
 * and an answer cut or turning non-JSON midway fails after streaming began.
 *
 * Input layout
 *   byte 0  bits 0-1  transport: 2 = stdio, else HTTP
 *           bit 2     the server holds an API key (cfg.api_key)
 *           bit 3     ... and requires an access token (cfg.access_token)
 *           bit 4     listen on 0.0.0.0 instead of loopback
 *           bits 5-6  upstream: 0 answers simulated from the input, 1 DNS fails,
 *                     2 DNS never answers (timeouts), 3 TCP connects and the
 *                     "TLS server" sends the answer bytes raw (or refuses)
 *           bit 7     --allow-origin https://app.example.com
 *   byte 1  bits 0-2  recv piece sizes: 0 all at once, else random 1..{1,3,16,64,256,1024,4096}
 *           bits 3-4  send: 0 takes all, 1 random pieces, 2 pieces and EAGAIN, 3 one byte at a time
 *           bit 5     the client half-closes as soon as its bytes are sent
 *           bit 6     the random source fails after start
 *           bit 7     debug logging (to /dev/null)
 *   byte 2  bits 0-4  idle connections opened before the client (>= 24: (v-24)*3)
 *           bit 5     the server's API key contains a space (a copy-paste accident)
 *           bit 6     the API base URL has a path prefix (/api/v2)
 *           bit 7     five clients send the same bytes at once (more than
 *                     CM_MAX_UPSTREAMS tool calls in flight: calls wait for a slot)
 *   rest    client bytes [SEP answer1 [SEP answer2 ...]], SEP = "\n@@UPSTREAM@@\n".
 *           Each tool call consumes the next answer (the last one repeats);
 *           with no answer at all, name resolution fails. Inside the client
 *           bytes, "\n@@WAIT@@\n" makes the client wait until it has read one
 *           more complete answer before it sends on (a client that does not
 *           pipeline); without it every byte is sent as soon as it is read.
 *
 * Checked properties (abort() on violation, besides ASan/UBSan):
 *   - the bytes the client receives are a sequence of well-formed HTTP/1.1
 *     answers (100 Continue allowed): status line, header fields, and a body
 *     framed one of three ways: exactly one Content-Length equal to the body
 *     that follows; or Transfer-Encoding: chunked (never with Content-Length,
 *     never to an HTTP/1.0 request) with strict chunk-size lines (hex, no
 *     leading zero, no extension), CRLF after each chunk's data, the
 *     last-chunk and an empty trailer; or, only for an HTTP/1.0 request with
 *     Connection: close, the bytes up to the close. Nothing after an answer
 *     that said Connection: close, nothing left over or cut short;
 *   - an application/json body (de-chunked) is one valid JSON value (checked with the
 *     server's own json_check) and a text/event-stream body is a sequence of
 *     "event: message / data: <JSON>" events; every JSON-RPC message in them
 *     has jsonrpc "2.0", an id, and exactly one of result or error{code,message};
 *   - stdio: every output line is such a JSON-RPC message (checked whole,
 *     also when the server wrote it in pieces while an answer streamed);
 *   - the server's API key and access token never reach the client unless the
 *     client sent them itself;
 *   - every API request parses as HTTP/1.1 (with the server's own parser), has
 *     the right Host, a Content-Length equal to its body, a bearer token with no
 *     blanks, and a path that matches a catalog route with every {param} one
 *     opaque, non-dot segment;
 *   - 408 is never sent while a complete request sits in the buffer;
 *   - the connection is closed in the end (no stuck state), no socket is used
 *     after close or closed twice.
 *
 * CALID_FUZZ_DUMP=1 in the environment copies what the client received to
 * stderr, and how many windows of streamed API answers were delivered (to
 * look at what an input does: build/fuzz/fuzz_mcp FILE).
 * CALID_FUZZ_KNOWN=tag,tag skips the checks of bugs already reported and not
 * yet fixed, so that a long run looks for new ones: "utf8" (non-UTF-8 bytes
 * of an API answer reach the client's JSON), "dotseg" ("." or ".." as a path
 * parameter). CI never sets it.
 */
#define _GNU_SOURCE /* memmem */
/* The simulated API (upstream mode 0) has no TLS connection under its slots:
 * when the owner gives a streamed window back, the rest of the answer comes
 * from the fuzzer (sim_resume), not from up_pump(). So up_resume() is
 * wrapped: its definition becomes up_resume_real(), its one call
 * "up_resume(s)" fuzz_up_resume(s). */
#define up_resume(x) FUZZ_RESUME_##x )
#define FUZZ_RESUME_struct up_resume_real(struct
#define FUZZ_RESUME_s fuzz_up_resume(s
struct up_slot;
static void fuzz_up_resume(struct up_slot *s);
#include "../../calid_mcp.c"
#undef up_resume

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

static FILE *real_stderr;
static const char *known; /* CALID_FUZZ_KNOWN: tags of reported, not yet fixed bugs whose checks to skip */

static int is_known(const char *tag) { return known && strstr(known, tag) != NULL; }

#define FUZZ_ASSERT(cond, ...)                                                          \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            FILE *e_ = real_stderr ? real_stderr : stderr;                              \
            fprintf(e_, "fuzz_mcp: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                             \
            fprintf(e_, "fuzz_mcp: " __VA_ARGS__);                                      \
            fputc('\n', e_);                                                            \
            fflush(e_);                                                                 \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#define SEP "\n@@UPSTREAM@@\n"
#define WAIT "\n@@WAIT@@\n"
#define MAX_WAITS 64
#define MAX_ANSWERS 32
#define OUT_LIMIT (32u << 20)
#define START_MS 1000000u
#define MAX_CLIENTS 5

enum { S_LISTEN = 1, S_CLIENT = 2 /* ..2+MAX_CLIENTS-1 */, S_EXTRA = 100, S_UP = 200 };
enum { UPM_SIM, UPM_NO_DNS, UPM_HANG, UPM_TLS };

static const char *const API_KEY = "calid_server_held_key_0123456789";
static const char *const API_KEY_ODD = "calid_server key";
static const char *const ACCESS_TOKEN = "access-token-for-this-server-42";

/* One client connection; every client sends the same bytes. */
struct client {
    int accepted, closed;
    size_t in_off;                 /* client bytes sent so far */
    int gap;                       /* a piece was delivered in this poll */
    int waits_passed;              /* WAIT markers passed */
    size_t scan_pos;               /* count_answers(): where the next answer starts */
    int answers_seen;
    unsigned char head_only[4096]; /* per answer (not 100 Continue): ANS_HEAD | ANS_HTTP10 */
    int n_heads, pending_head;
    char *out;                     /* what the client received */
    size_t out_len, out_cap;
    int out_overflow;
};

static struct {
    int stdio, up_mode, eof_early, random_broken;
    unsigned recv_cls, send_cls;
    const uint8_t *in;
    size_t in_len;
    size_t wait_at[MAX_WAITS]; /* offsets of the WAIT markers in the client bytes */
    int n_waits;
    struct client cl[MAX_CLIENTS];
    int n_clients;
    struct {
        const uint8_t *p;
        size_t n;
    } ans[MAX_ANSWERS];
    int n_ans, next_ans;
    int extra_total, extra_accepted, extra_open;
    int listener_open;
    uint32_t rng;
    uint64_t now;
    struct {
        const uint8_t *p;
        size_t n, off;
        int open;
    } ups[CM_MAX_UPSTREAMS];
    unsigned long polls;
    const char *api_key;
    uint64_t checked[CM_MAX_UPSTREAMS]; /* started_ms of the request check_api_request() last saw, + 1 */
    struct {
        const uint8_t *p;
        size_t n, off;
        int active; /* a window of it is out; the rest follows once it is given back */
    } sim[CM_MAX_UPSTREAMS];
    unsigned long windows; /* windows of streamed answers delivered (CALID_FUZZ_DUMP prints it) */
} F;

/* Fills the stack the server is about to use with non-zero bytes, so that a
 * buffer it forgets to initialise or terminate shows up (as an ASan report
 * or as garbage in the output) instead of reading zeros by luck. */
static __attribute__((noinline)) void stack_scribble(void)
{
    unsigned char junk[32768];
    memset(junk, 0xaa, sizeof junk);
    __asm__ volatile("" : : "r"(junk) : "memory"); /* keep the stores */
}

static uint32_t rnd(void)
{
    F.rng = F.rng * 1103515245u + 12345u;
    return F.rng >> 8;
}

#define TE_CHUNKED "\r\nTransfer-Encoding: chunked\r\n"
enum { ANS_HEAD = 1 /* no body follows (HEAD) */, ANS_HTTP10 = 2 /* for an HTTP/1.0 request */ };

/* Where a chunked body that starts at p ends (after its last-chunk and the
 * blank line), or NULL when it is not all there yet. Strict: a chunk-size
 * line is hex digits (no leading zero but in "0", no extension) and CRLF,
 * chunk data is followed by CRLF, no trailer fields. Each chunk's data is
 * appended to *body (malloc'd, *blen bytes) when body is not NULL. *bad
 * names the first framing error (and NULL is returned). */
static const char *chunked_end(const char *p, size_t n, char **body, size_t *blen, const char **bad)
{
    size_t i = 0;
    *bad = NULL;
    for (;;) {
        size_t size = 0, d = 0;
        while (i + d < n && isxdigit((unsigned char)p[i + d])) {
            FUZZ_ASSERT(d < 8, "chunk size of more than 8 hex digits");
            size = size * 16 + (size_t)(isdigit((unsigned char)p[i + d]) ? p[i + d] - '0' : (p[i + d] | 0x20) - 'a' + 10);
            d++;
        }
        if (i + d + 2 > n)
            return NULL;
        if (d == 0 || p[i + d] != '\r' || p[i + d + 1] != '\n' || (d > 1 && p[i] == '0')) {
            *bad = "bad chunk-size line";
            return NULL;
        }
        i += d + 2;
        if (size == 0) {
            if (i + 2 > n)
                return NULL;
            if (p[i] != '\r' || p[i + 1] != '\n') {
                *bad = "no CRLF after the last-chunk (or a trailer)";
                return NULL;
            }
            return p + i + 2;
        }
        if (n - i < size + 2)
            return NULL;
        if (p[i + size] != '\r' || p[i + size + 1] != '\n') {
            *bad = "chunk data not followed by CRLF";
            return NULL;
        }
        if (body) {
            *body = realloc(*body, *blen + size + 1);
            if (!*body)
                abort();
            memcpy(*body + *blen, p + i, size);
            *blen += size;
        }
        i += size + 2;
    }
}

/* Counts the complete answers the client has received so far (leniently:
 * the strict check runs at the end). */
static int count_answers(struct client *k)
{
    if (!k->out)
        return k->answers_seen;
    for (;;) {
        const char *p = k->out + k->scan_pos, *hend, *cl;
        size_t left = k->out_len - k->scan_pos, hlen;
        long clen = 0;
        if (left >= 25 && memcmp(p, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0) {
            k->scan_pos += 25;
            continue;
        }
        hend = left ? memmem(p, left, "\r\n\r\n", 4) : NULL;
        if (!hend)
            return k->answers_seen;
        hlen = (size_t)(hend - p) + 4;
        cl = memmem(p, hlen, "\r\nContent-Length: ", 18);
        if (cl)
            clen = strtol(cl + 18, NULL, 10);
        if (k->answers_seen < k->n_heads && (k->head_only[k->answers_seen] & ANS_HEAD))
            clen = 0;
        else if (!cl && memmem(p, hlen, TE_CHUNKED, sizeof TE_CHUNKED - 1)) {
            const char *bad, *end = chunked_end(p + hlen, left - hlen, NULL, NULL, &bad);
            if (!end)
                return k->answers_seen; /* not all there (or bad: the end check says so) */
            clen = (long)(end - (p + hlen));
        } else if (!cl && !memmem(p, hlen, " 204 ", 5))
            return k->answers_seen; /* ends with the connection */
        if (clen < 0 || left - hlen < (size_t)clen)
            return k->answers_seen;
        k->scan_pos += hlen + (size_t)clen;
        k->answers_seen++;
    }
}

/* Client bytes that may be sent now: up to the next WAIT marker, or past it
 * once the answer the client waits for is in. */
static size_t client_avail(struct client *k)
{
    while (k->waits_passed < F.n_waits && k->in_off == F.wait_at[k->waits_passed]) {
        if (k->out_overflow || count_answers(k) < k->waits_passed + 1)
            return 0;
        k->in_off += sizeof WAIT - 1;
        k->waits_passed++;
    }
    if (k->waits_passed < F.n_waits)
        return F.wait_at[k->waits_passed] - k->in_off;
    return F.in_len - k->in_off;
}

static int client_all_sent(const struct client *k) { return k->in_off >= F.in_len; }

static struct client *client_of(cm_sock_t s)
{
    return s >= S_CLIENT && s < S_CLIENT + F.n_clients ? &F.cl[s - S_CLIENT] : NULL;
}

static int all_clients_closed(void)
{
    int i;
    for (i = 0; i < F.n_clients; i++)
        if (!F.cl[i].closed)
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* The fake port layer                                                     */
/* ---------------------------------------------------------------------- */

int cm_port_init(void) { return 0; }
void cm_port_cleanup(void) {}
uint64_t cm_port_now_ms(void) { return F.now; }
int64_t cm_port_unix_time(void) { return 1767225600; /* 2026-01-01 */ }

int cm_port_random(void *buf, size_t len)
{
    if (F.random_broken)
        return -1;
    memset(buf, 0xab, len); /* deterministic: every session id is "abab...ab" */
    return 0;
}

cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen)
{
    (void)host;
    (void)port;
    (void)err;
    (void)errlen;
    F.listener_open = 1;
    return S_LISTEN;
}

cm_sock_t cm_port_accept(cm_sock_t l, unsigned char peer[16])
{
    FUZZ_ASSERT(l == S_LISTEN && F.listener_open, "accept on socket %ld", (long)l);
    /* every client its own IPv4 loopback address, 127.0.0.(1 + k) */
    memset(peer, 0, 16);
    peer[10] = peer[11] = 0xff;
    peer[12] = 127;
    if (F.extra_accepted < F.extra_total) {
        F.extra_open |= 1 << F.extra_accepted;
        peer[15] = (unsigned char)(100 + F.extra_accepted);
        return S_EXTRA + F.extra_accepted++;
    }
    {
        int i;
        for (i = 0; i < F.n_clients; i++)
            if (!F.cl[i].accepted) {
                F.cl[i].accepted = 1;
                peer[15] = (unsigned char)(1 + i);
                return S_CLIENT + i;
            }
    }
    return CM_SOCK_INVALID;
}

static int up_index_of_sockptr(cm_sock_t *out)
{
    size_t off = (size_t)((char *)out - (char *)&up.slots[0].sock);
    FUZZ_ASSERT(off % sizeof(struct up_slot) == 0 && off / sizeof(struct up_slot) < CM_MAX_UPSTREAMS,
                "cm_port_connect with a pointer outside the upstream slots");
    return (int)(off / sizeof(struct up_slot));
}

static void next_answer(const uint8_t **p, size_t *n)
{
    int k = F.next_ans < F.n_ans ? F.next_ans : F.n_ans - 1;
    F.next_ans++;
    *p = F.ans[k].p;
    *n = F.ans[k].n;
}

int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out)
{
    int h = up_index_of_sockptr(out);
    (void)addr;
    FUZZ_ASSERT(F.up_mode == UPM_TLS && !F.ups[h].open, "connect in mode %d, slot %d", F.up_mode, h);
    F.ups[h].p = NULL;
    F.ups[h].n = F.ups[h].off = 0;
    if (F.n_ans)
        next_answer(&F.ups[h].p, &F.ups[h].n);
    F.ups[h].open = 1;
    *out = S_UP + h;
    return 0;
}

int cm_port_connect_result(cm_sock_t s)
{
    int h = (int)(s - S_UP);
    FUZZ_ASSERT(h >= 0 && h < CM_MAX_UPSTREAMS && F.ups[h].open, "connect_result on %ld", (long)s);
    return F.ups[h].n ? 0 : -1; /* nothing to answer with: refused */
}

static int client_in_conns(cm_sock_t s)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].state != C_FREE && conns[i].sock == s)
            return 1;
    return 0;
}

/* Is there a whole request (or a parse verdict) in the buffer of the client's connection? */
static int client_has_complete_request(cm_sock_t s)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        struct http_req q;
        int r;
        if (c->state == C_FREE || c->sock != s || c->in_len == 0)
            continue;
        r = http_parse_head(c->in, c->in_len, 0, CM_MAX_HEADER_BYTES, &q);
        if (r < 0)
            return 1;
        if (r == 0)
            return 0;
        if (q.chunked) {
            size_t enc, dec;
            return chunked_scan(c->in + q.head_len, c->in_len - q.head_len, CM_MAX_BODY_BYTES, &enc, &dec) != 0;
        }
        return q.content_length > (long)CM_MAX_BODY_BYTES ||
               c->in_len - q.head_len >= (size_t)(q.content_length > 0 ? q.content_length : 0);
    }
    return 0;
}

/* send() and writev() in one: the client may take only part of it. */
long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned niov)
{
    struct client *k = client_of(s);
    size_t len = 0;
    unsigned v;
    FUZZ_ASSERT(niov > 0, "sendv of no pieces");
    for (v = 0; v < niov; v++)
        len += iov[v].n;
    if (k) {
        size_t n = len, left;
        FUZZ_ASSERT(k->accepted && !k->closed, "send on a closed client socket");
        FUZZ_ASSERT(len > 0, "send of 0 bytes");
        {
            /* the start of an answer the server built: remember whether it is for HEAD */
            int i;
            for (i = 0; i < CM_MAX_CONNS; i++)
                if (conns[i].state != C_FREE && conns[i].sock == s && iov[0].p == conns[i].hdr &&
                    conns[i].hdr_sent == 0 && k->n_heads < (int)sizeof k->head_only && iov[0].n >= 13 &&
                    memcmp(iov[0].p, "HTTP/1.1 ", 9) == 0 && memcmp((const char *)iov[0].p + 9, "100 ", 4) != 0)
                    k->pending_head =
                        1 + ((conns[i].head_only ? ANS_HEAD : 0) | (conns[i].req.minor < 1 ? ANS_HTTP10 : 0));
        }
        if (iov[0].n >= 13 && memcmp(iov[0].p, "HTTP/1.1 408 ", 13) == 0)
            FUZZ_ASSERT(!client_has_complete_request(s),
                        "408 Request Timeout sent while a complete request sits in the connection's buffer "
                        "(pipelined request never processed)");
        /* Tiny writes (100 Continue) and the 503 on a fresh socket are assumed
           to fit, as the server assumes; everything else may be cut short. */
        if (len > 32 && client_in_conns(s)) {
            switch (F.send_cls) {
            case 1:
                n = 1 + rnd() % len;
                break;
            case 2:
                if (rnd() % 4 == 0)
                    return CM_PORT_AGAIN;
                n = 1 + rnd() % len;
                break;
            case 3:
                n = 1;
                break;
            default:
                break;
            }
        }
        if (k->pending_head) {
            k->head_only[k->n_heads++] = (unsigned char)(k->pending_head - 1);
            k->pending_head = 0;
        }
        if (!k->out_overflow) {
            if (k->out_len + n > k->out_cap) {
                size_t cap = k->out_cap ? k->out_cap : 65536;
                while (cap < k->out_len + n)
                    cap *= 2;
                if (cap > OUT_LIMIT) {
                    k->out_overflow = 1;
                    return (long)n;
                }
                k->out = realloc(k->out, cap);
                if (!k->out)
                    abort();
                k->out_cap = cap;
            }
            for (v = 0, left = n; left > 0; v++) {
                size_t t = iov[v].n < left ? iov[v].n : left;
                memcpy(k->out + k->out_len, iov[v].p, t);
                k->out_len += t;
                left -= t;
            }
        }
        return (long)n;
    }
    if (s >= S_EXTRA && s < S_EXTRA + 32) {
        FUZZ_ASSERT(F.extra_open & (1 << (s - S_EXTRA)), "send on closed idle socket");
        return (long)len;
    }
    if (s >= S_UP && s < S_UP + CM_MAX_UPSTREAMS) {
        FUZZ_ASSERT(F.ups[s - S_UP].open, "send on a closed upstream socket");
        return (long)len; /* TLS records go nowhere */
    }
    FUZZ_ASSERT(0, "send on unknown socket %ld", (long)s);
    return -1;
}

long cm_port_send(cm_sock_t s, const void *buf, size_t len)
{
    struct cm_iovec one;
    one.p = buf;
    one.n = len;
    return cm_port_sendv(s, &one, 1);
}

long cm_port_recv(cm_sock_t s, void *buf, size_t len)
{
    static const size_t caps[8] = {0, 1, 3, 16, 64, 256, 1024, 4096};
    struct client *k = client_of(s);
    if (k) {
        size_t n, avail;
        FUZZ_ASSERT(k->accepted && !k->closed, "recv on a closed client socket");
        FUZZ_ASSERT(len > 0, "recv into 0 bytes");
        if (client_all_sent(k))
            return F.eof_early ? 0 : CM_PORT_AGAIN;
        if (k->gap)
            return CM_PORT_AGAIN; /* one piece per poll, like segments arriving */
        avail = client_avail(k);
        if (avail == 0)
            return CM_PORT_AGAIN;
        n = avail;
        if (F.recv_cls)
            n = 1 + rnd() % caps[F.recv_cls];
        if (n > avail)
            n = avail;
        if (n > len)
            n = len;
        memcpy(buf, F.in + k->in_off, n);
        k->in_off += n;
        k->gap = 1;
        return (long)n;
    }
    if (s >= S_EXTRA && s < S_EXTRA + 32) {
        FUZZ_ASSERT(F.extra_open & (1 << (s - S_EXTRA)), "recv on closed idle socket");
        return CM_PORT_AGAIN;
    }
    if (s >= S_UP && s < S_UP + CM_MAX_UPSTREAMS) {
        int h = (int)(s - S_UP);
        size_t n;
        FUZZ_ASSERT(F.ups[h].open, "recv on a closed upstream socket");
        if (F.ups[h].off >= F.ups[h].n)
            return 0;
        n = F.ups[h].n - F.ups[h].off;
        if (n > len)
            n = len;
        if (F.recv_cls)
            n = 1 + rnd() % n;
        memcpy(buf, F.ups[h].p + F.ups[h].off, n);
        F.ups[h].off += n;
        return (long)n;
    }
    FUZZ_ASSERT(0, "recv on unknown socket %ld", (long)s);
    return -1;
}

void cm_port_close(cm_sock_t s)
{
    if (s == CM_SOCK_INVALID)
        return;
    if (s == S_LISTEN) {
        FUZZ_ASSERT(F.listener_open, "listener closed twice");
        F.listener_open = 0;
    } else if (client_of(s)) {
        FUZZ_ASSERT(client_of(s)->accepted && !client_of(s)->closed, "client socket closed twice");
        client_of(s)->closed = 1;
    } else if (s >= S_EXTRA && s < S_EXTRA + 32) {
        FUZZ_ASSERT(F.extra_open & (1 << (s - S_EXTRA)), "idle socket closed twice");
        F.extra_open &= ~(1 << (s - S_EXTRA));
    } else if (s >= S_UP && s < S_UP + CM_MAX_UPSTREAMS) {
        FUZZ_ASSERT(F.ups[s - S_UP].open, "upstream socket closed twice");
        F.ups[s - S_UP].open = 0;
    } else {
        FUZZ_ASSERT(0, "close of unknown socket %ld", (long)s);
    }
}

static int sim_resume(void);

int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    unsigned i;
    int ready = 0;
    /* the rest of a streamed answer arrives; its callback may end a client
       connection that is in fds already (the server skips a freed one) */
    int fed = sim_resume();
    F.polls++;
    for (i = 0; i < (unsigned)F.n_clients; i++)
        F.cl[i].gap = 0;
    for (i = 0; i < n; i++) {
        cm_sock_t s = fds[i].sock;
        fds[i].revents = 0;
        if (s == S_LISTEN) {
            FUZZ_ASSERT(F.listener_open, "closed listener polled");
            if ((fds[i].events & CM_POLL_IN) &&
                (F.extra_accepted < F.extra_total || (F.n_clients && !F.cl[F.n_clients - 1].accepted)))
                fds[i].revents = CM_POLL_IN;
        } else if (client_of(s)) {
            struct client *k = client_of(s);
            if (fed && k->closed)
                continue;
            FUZZ_ASSERT(k->accepted && !k->closed, "closed client socket polled");
            if ((fds[i].events & CM_POLL_IN) && (client_all_sent(k) ? F.eof_early : client_avail(k) > 0))
                fds[i].revents |= CM_POLL_IN;
            if (fds[i].events & CM_POLL_OUT)
                fds[i].revents |= CM_POLL_OUT;
        } else if (s >= S_EXTRA && s < S_EXTRA + 32) {
            FUZZ_ASSERT(F.extra_open & (1 << (s - S_EXTRA)), "closed idle socket polled");
            if (fds[i].events & CM_POLL_OUT)
                fds[i].revents = CM_POLL_OUT;
        } else if (s >= S_UP && s < S_UP + CM_MAX_UPSTREAMS) {
            FUZZ_ASSERT(F.ups[s - S_UP].open, "closed upstream socket polled");
            fds[i].revents = fds[i].events & (CM_POLL_IN | CM_POLL_OUT);
        } else {
            FUZZ_ASSERT(0, "poll on unknown socket %ld", (long)s);
        }
        if (fds[i].revents)
            ready++;
    }
    F.now += ready ? 1 : (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    FUZZ_ASSERT(F.now - START_MS < 6ull * 3600 * 1000,
                "the server is stuck: 6 hours of (fake) time passed without it finishing (%s transport)",
                F.stdio ? "stdio" : "HTTP");
    return ready;
}

/* ---------------------------------------------------------------------- */
/* The API request the server built                                        */
/* ---------------------------------------------------------------------- */

static int segment_matches(const char *tpl, size_t tn, const char *seg, size_t sn)
{
    if (tn >= 2 && tpl[0] == '{' && tpl[tn - 1] == '}')
        return sn > 0 && (is_known("dotseg") ||
                          (!(sn == 1 && seg[0] == '.') && !(sn == 2 && seg[0] == '.' && seg[1] == '.')));
    return tn == sn && memcmp(tpl, seg, sn) == 0;
}

/* Does path (no query) match the route template segment by segment? */
static int route_matches(const char *tpl, const char *path, size_t n)
{
    size_t ti = 0, pi = 0, tl = strlen(tpl);
    for (;;) {
        size_t te = ti, pe = pi;
        while (te < tl && tpl[te] != '/')
            te++;
        while (pe < n && path[pe] != '/')
            pe++;
        if (!segment_matches(tpl + ti, te - ti, path + pi, pe - pi))
            return 0;
        if (te == tl || pe == n)
            return te == tl && pe == n;
        ti = te + 1;
        pi = pe + 1;
    }
}

/* A JSON API body never holds one key twice in an object (the client's
 * duplicate keys are refused where the request enters). */
static void check_api_body_keys(const char *body, size_t n)
{
    static jsmntok_t t[CM_JSON_TOKENS * 2];
    static char why_buf[160];
    struct jdoc d;
    const char *why;
    size_t at;
    char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, body, n);
    if (jdoc_parse(&d, copy, n, t, sizeof t / sizeof t[0], &why, &at) == 0 && n > 0 &&
        json_message_rules(&d, copy, why_buf, sizeof why_buf) < 0)
        FUZZ_ASSERT(!strstr(why_buf, "appears twice"), "API request body: %s: %.*s", why_buf, (int)(n > 300 ? 300 : n),
                    body);
    free(copy);
}

static void check_api_request(int h)
{
    struct up_slot *s = &up.slots[h];
    struct http_req q;
    const struct view *v;
    char *copy;
    size_t i, plen;
    int r;
    size_t k;
    FUZZ_ASSERT(s->req_len > 0 && s->req_len <= sizeof s->req, "request of %zu bytes", s->req_len);
    copy = malloc(s->req_len);
    if (!copy)
        abort();
    memcpy(copy, s->req, s->req_len);
    r = http_parse_head(copy, s->req_len, 0, CM_UPSTREAM_REQ_BYTES, &q);
    FUZZ_ASSERT(r > 0, "the API request does not parse as HTTP: %d (%s): %.*s", r, q.error ? q.error : "",
                (int)(s->req_len > 300 ? 300 : s->req_len), copy);
    FUZZ_ASSERT(view_eq(q.method, "GET") || view_eq(q.method, "POST") || view_eq(q.method, "PUT") ||
                    view_eq(q.method, "PATCH") || view_eq(q.method, "DELETE"),
                "API method %.*s", (int)q.method.n, q.method.p);
    FUZZ_ASSERT(q.minor == 1 && !q.chunked, "API request version/framing");
    v = http_header(&q, "host");
    FUZZ_ASSERT(v && view_eq(*v, up.host_header), "API request Host");
    if (q.content_length >= 0)
        FUZZ_ASSERT((size_t)q.content_length == s->req_len - q.head_len, "API request Content-Length %ld, body %zu",
                    q.content_length, s->req_len - q.head_len);
    else
        FUZZ_ASSERT(s->req_len == q.head_len, "API request body without Content-Length");
    v = http_header(&q, "authorization");
    if (v) {
        FUZZ_ASSERT(v->n > 7 && memcmp(v->p, "Bearer ", 7) == 0, "Authorization header shape");
        for (k = 7; k < v->n; k++)
            FUZZ_ASSERT((unsigned char)v->p[k] > 0x20 && (unsigned char)v->p[k] < 0x7f, "bearer token byte 0x%02x",
                        (unsigned char)v->p[k]);
    }
    /* the target: prefix + a catalog route, every parameter one opaque segment */
    for (k = 0; k < q.target.n; k++) {
        unsigned char c = (unsigned char)q.target.p[k];
        FUZZ_ASSERT((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~/?&=%", c),
                    "API request target byte '%c' (0x%02x) in %.*s", c, c, (int)q.target.n, q.target.p);
    }
    plen = strlen(up.prefix);
    FUZZ_ASSERT(q.path.n >= plen && memcmp(q.path.p, up.prefix, plen) == 0, "API path lacks the base prefix");
    for (i = 0; i < N_TOOLS; i++)
        if (view_eq(q.method, tools[i].method) && route_matches(tools[i].path, q.path.p + plen, q.path.n - plen))
            break;
    FUZZ_ASSERT(i < N_TOOLS, "API path %.*s matches no route of the catalog with opaque, non-dot parameters",
                (int)q.target.n, q.target.p);
    v = http_header(&q, "content-type");
    if (v && view_icontains(*v, "application/json"))
        check_api_body_keys(copy + q.head_len, s->req_len - q.head_len);
    free(copy);
}

/* A simulated answer arrives; it is delivered the way up_pump()/up_lost()
 * would: bytes to the parser, a full window of a streamed answer to its
 * owner (the rest waits, as in TLS and TCP, until up_release() resumes the
 * slot: then sim_resume() goes on), and the end (complete, failed, cut). */
static void sim_feed(int h)
{
    struct up_slot *s = &up.slots[h];
    F.sim[h].active = 0;
    if (s->req_len) { /* the answer begins: its body takes the request's place (as in up_pump) */
        memset(s->req, 0, s->req_len);
        s->req_len = s->req_off = 0;
    }
    while (F.sim[h].off < F.sim[h].n && s->parser.state != UP_P_DONE && s->parser.state != UP_P_ERROR) {
        size_t left = F.sim[h].n - F.sim[h].off;
        size_t piece = F.recv_cls ? 1 + rnd() % left : left;
        size_t used = up_parse_feed(&s->parser, F.sim[h].p + F.sim[h].off, piece);
        F.sim[h].off += used;
        if (s->parser.state != UP_P_ERROR && used < piece && up_parse_window_full(&s->parser)) {
            stack_scribble();
            F.sim[h].active = 1;
            F.windows++;
            up_deliver_window(h);
            if (s->state == UP_S_RECEIVING && F.sim[h].active)
                continue; /* given back at once: read on (no slot is left RECEIVING for up_pump) */
            F.sim[h].active = s->state == UP_S_PAUSED;
            return; /* the rest waits for up_release(); or the owner cancelled, or not JSON ended it */
        }
    }
    s->keep_conn = 0;
    stack_scribble(); /* check_api_request() left zeros where the callback's frames go */
    if (s->parser.state == UP_P_ERROR)
        up_fail(h, "%s", s->parser.error);
    else if (s->parser.state == UP_P_DONE)
        up_complete(h);
    else if (s->parser.seen == 0)
        up_fail(h, "the Cal ID API closed the connection without answering");
    else if (up_parse_eof(&s->parser) == 0)
        up_complete(h);
    else
        up_fail(h, "%s", s->parser.error);
}

static void fuzz_up_resume(struct up_slot *s)
{
    int h = (int)(s - up.slots);
    up_resume_real(s);
    if (F.up_mode == UPM_SIM && F.sim[h].active)
        s->kick = 0; /* nothing for up_pump(): the next fake poll brings the rest */
}

/* Streamed answers whose window was given back read on (called by the fake
 * poll: the rest of the answer "arrives"). 1 if any did. */
static int sim_resume(void)
{
    int h, any = 0;
    for (h = 0; h < CM_MAX_UPSTREAMS; h++)
        if (F.up_mode == UPM_SIM && F.sim[h].active && up.slots[h].state == UP_S_RECEIVING) {
            sim_feed(h);
            any = 1;
        }
    return any;
}

/* The upstream slot cm_port_resolve() is being called for: up_tick() clears
 * kick just before, and newly submitted requests have kick set. */
static int resolving_slot(void)
{
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_RESOLVING && !up.slots[i].kick)
            return i;
    return -1;
}

int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    int h = resolving_slot(), i;
    (void)port;
    FUZZ_ASSERT(h >= 0, "cm_port_resolve called with no request resolving");
    FUZZ_ASSERT(strcmp(host, up.host) == 0, "resolving %s", host);
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_RESOLVING && F.checked[i] != up.slots[i].started_ms + 1) {
            check_api_request(i); /* once per request: a slow DNS asks again every few ms */
            F.checked[i] = up.slots[i].started_ms + 1;
        }
    switch (F.up_mode) {
    case UPM_NO_DNS:
        F.checked[h] = 0; /* this request ends now; the slot's next one is checked again */
        return -1;
    case UPM_HANG:
        return CM_PORT_AGAIN;
    case UPM_TLS:
        memset(out, 0, sizeof *out);
        out->len = 16;
        return 0;
    default:
        break;
    }
    F.checked[h] = 0;
    if (F.n_ans == 0)
        return -1;
    next_answer(&F.sim[h].p, &F.sim[h].n);
    F.sim[h].off = 0;
    sim_feed(h);
    /* the slot may be reused by now; up_try_resolve() does not touch it on AGAIN */
    return CM_PORT_AGAIN;
}

const char *cm_port_default_ca_file(void) { return NULL; }

int cm_port_create_private_file(const char *path, const void *buf, size_t len)
{
    (void)path;
    (void)buf;
    (void)len;
    return -1; /* the fuzzer gives no --secret-file */
}

/* ---------------------------------------------------------------------- */
/* Checking what the client got                                            */
/* ---------------------------------------------------------------------- */

#define CHECK_TOKENS 65536
static jsmntok_t check_toks[CHECK_TOKENS];

/* One JSON-RPC message object (or a plain JSON answer like /healthz). */
static void check_rpc_object(const struct jdoc *d, int i)
{
    int jv, id, res, err;
    FUZZ_ASSERT(d->t[i].type == JSMN_OBJECT, "JSON-RPC message is not an object");
    jv = obj_get(d, i, "jsonrpc");
    if (jv < 0)
        return; /* /healthz, {} after DELETE, 404 texts */
    FUZZ_ASSERT(tok_is_str(d, jv, "2.0"), "jsonrpc is not \"2.0\"");
    id = obj_get(d, i, "id");
    res = obj_get(d, i, "result");
    err = obj_get(d, i, "error");
    FUZZ_ASSERT(id >= 0, "JSON-RPC answer without id");
    FUZZ_ASSERT(d->t[id].type == JSMN_STRING || d->t[id].type == JSMN_PRIMITIVE, "id type");
    FUZZ_ASSERT((res >= 0) != (err >= 0), "JSON-RPC answer needs exactly one of result and error");
    if (res >= 0)
        FUZZ_ASSERT(d->t[res].type == JSMN_OBJECT, "result is not an object");
    if (err >= 0) {
        int code = obj_get(d, err, "code"), msg = obj_get(d, err, "message");
        FUZZ_ASSERT(d->t[err].type == JSMN_OBJECT && code >= 0 && msg >= 0, "error lacks code or message");
        FUZZ_ASSERT(d->t[code].type == JSMN_PRIMITIVE && strcmp(tok_type_name(d, code), "integer") == 0,
                    "error code is not an integer");
        FUZZ_ASSERT(d->t[msg].type == JSMN_STRING, "error message is not a string");
    }
}

static void check_json_text(const char *p, size_t n, const char *where)
{
    struct jdoc d;
    const char *why = NULL;
    size_t at = 0;
    int r = jdoc_parse(&d, p, n, check_toks, CHECK_TOKENS, &why, &at);
    if (r == -1 && why && strcmp(why, "invalid UTF-8") == 0 && is_known("utf8"))
        return;
    FUZZ_ASSERT(r != -1, "%s: invalid JSON (%s at byte %zu): %.*s", where, why ? why : "?", at,
                (int)(n > 400 ? 400 : n), p);
    if (r == -2)
        return;
    if (d.t[0].type == JSMN_ARRAY) {
        int k, el;
        FUZZ_ASSERT(d.t[0].size > 0, "%s: empty batch answer", where);
        for (k = 0, el = 1; k < d.t[0].size; k++, el = tok_next(&d, el))
            check_rpc_object(&d, el);
    } else {
        check_rpc_object(&d, 0);
    }
}

static const char *find_mem(const char *h, size_t hn, const char *needle, size_t nn)
{
    return nn == 0 ? h : memmem(h, hn, needle, nn);
}

static void check_sse(const char *p, size_t n)
{
    size_t i = 0;
    static const char ev[] = "event: message\ndata: ";
    FUZZ_ASSERT(n > 0, "empty event stream answer");
    while (i < n) {
        const char *end;
        FUZZ_ASSERT(n - i > sizeof ev - 1 && memcmp(p + i, ev, sizeof ev - 1) == 0, "SSE event framing at %zu", i);
        i += sizeof ev - 1;
        end = find_mem(p + i, n - i, "\n\n", 2);
        FUZZ_ASSERT(end != NULL, "SSE event not ended by a blank line");
        FUZZ_ASSERT(!memchr(p + i, '\n', (size_t)(end - (p + i))), "newline inside an SSE data line");
        check_json_text(p + i, (size_t)(end - (p + i)), "SSE data");
        i = (size_t)(end - p) + 2;
    }
}

static int status_known(int st)
{
    static const int ok[] = {200, 202, 204, 400, 401, 403, 404, 405, 406, 408, 413, 415, 417, 431, 500, 501, 503, 505};
    size_t i;
    for (i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (ok[i] == st)
            return 1;
    return 0;
}

static void check_http_stream(const struct client *who, int complete)
{
    const char *o = who->out;
    size_t n = who->out_len;
    size_t pos = 0;
    int answer = 0;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    while (pos < n) {
        const char *p = o + pos, *hend, *line, *eol;
        size_t left = n - pos, hlen, k;
        long clen = -1;
        int st, closes = 0, ctype_json = 0, ctype_sse = 0, n_ctype = 0, chunked = 0, flags;
        char *body = NULL;
        size_t blen = 0;
        if (left >= sizeof cont - 1 && memcmp(p, cont, sizeof cont - 1) == 0) {
            pos += sizeof cont - 1;
            continue;
        }
        hend = find_mem(p, left, "\r\n\r\n", 4);
        if (!hend) {
            FUZZ_ASSERT(!complete, "answer head cut short at byte %zu: %.*s", pos, (int)(left > 200 ? 200 : left), p);
            return;
        }
        hlen = (size_t)(hend - p) + 4;
        FUZZ_ASSERT(hlen > 15 && memcmp(p, "HTTP/1.1 ", 9) == 0 && p[9] >= '1' && p[9] <= '5' && p[10] >= '0' &&
                        p[10] <= '9' && p[11] >= '0' && p[11] <= '9' && p[12] == ' ',
                    "bad status line at byte %zu: %.40s", pos, p);
        st = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        FUZZ_ASSERT(status_known(st), "unexpected status %d", st);
        eol = find_mem(p, hlen, "\r\n", 2);
        for (k = 13; p + k < eol; k++)
            FUZZ_ASSERT((unsigned char)p[k] >= 0x20 && (unsigned char)p[k] < 0x7f, "reason phrase byte");
        FUZZ_ASSERT(eol > p + 13, "empty reason phrase");
        line = eol + 2;
        while (line < hend + 2) {
            const char *colon, *e = find_mem(line, (size_t)(hend + 2 - line), "\r\n", 2);
            size_t ln = (size_t)(e - line);
            colon = memchr(line, ':', ln);
            FUZZ_ASSERT(colon && colon > line && colon[1] == ' ', "bad header line %.*s", (int)ln, line);
            for (k = 0; line + k < colon; k++)
                FUZZ_ASSERT(is_tchar((unsigned char)line[k]), "bad header name %.*s", (int)ln, line);
            for (k = (size_t)(colon - line) + 2; k < ln; k++) /* field-content: VCHAR, SP, HTAB, obs-text */
                FUZZ_ASSERT(((unsigned char)line[k] >= 0x20 || line[k] == '\t') && (unsigned char)line[k] != 0x7f,
                            "header value byte 0x%02x in %.*s", (unsigned char)line[k], (int)(ln > 200 ? 200 : ln), line);
            if ((size_t)(colon - line) == 14 && strncasecmp(line, "content-length", 14) == 0) {
                char *endp;
                FUZZ_ASSERT(clen < 0, "two Content-Length fields");
                clen = strtol(colon + 2, &endp, 10);
                FUZZ_ASSERT(endp == line + ln && clen >= 0, "bad Content-Length value");
            } else if ((size_t)(colon - line) == 12 && strncasecmp(line, "content-type", 12) == 0) {
                n_ctype++;
                ctype_json = ln - 14 == 16 && memcmp(colon + 2, "application/json", 16) == 0;
                ctype_sse = ln - 14 == 17 && memcmp(colon + 2, "text/event-stream", 17) == 0;
            } else if ((size_t)(colon - line) == 10 && strncasecmp(line, "connection", 10) == 0) {
                closes = ln - 12 == 5 && memcmp(colon + 2, "close", 5) == 0;
            } else if ((size_t)(colon - line) == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                FUZZ_ASSERT(!chunked && ln - 19 == 7 && memcmp(colon + 2, "chunked", 7) == 0,
                            "Transfer-Encoding other than one \"chunked\": %.*s", (int)ln, line);
                chunked = 1;
            }
            line = e + 2;
        }
        flags = answer < who->n_heads ? who->head_only[answer] : 0;
        if (st == 204) { /* no content: RFC 9110 forbids Content-Length on it */
            FUZZ_ASSERT(clen < 0 && !chunked, "a 204 answer with Content-Length or chunked");
            clen = 0;
        }
        FUZZ_ASSERT(!(chunked && clen >= 0), "answer %d with both Content-Length and Transfer-Encoding", st);
        FUZZ_ASSERT(!chunked || !(flags & ANS_HTTP10), "a chunked answer to an HTTP/1.0 request");
        /* a streamed answer to HTTP/1.0 has no length: the close ends it */
        FUZZ_ASSERT(clen >= 0 || chunked || (closes && (flags & ANS_HTTP10)),
                    "answer %d without Content-Length (%s)", st,
                    flags & ANS_HTTP10 ? "and without Connection: close" : "nor chunked, to an HTTP/1.1 request");
        FUZZ_ASSERT(n_ctype <= 1, "two Content-Type fields");
        if (flags & ANS_HEAD) {
            answer++;
            pos += hlen; /* HEAD: the length of the body that is not sent */
            if (closes)
                FUZZ_ASSERT(pos == n, "%zu bytes sent after an answer that said Connection: close", n - pos);
            continue;
        }
        answer++;
        if (st == 202 || st == 204)
            FUZZ_ASSERT(clen == 0 && !chunked, "%d with a body", st);
        if (chunked) { /* the body is the chunks' data */
            const char *bad, *end = chunked_end(p + hlen, left - hlen, &body, &blen, &bad);
            FUZZ_ASSERT(!bad, "answer %d: %s at byte %zu of its chunked body", st, bad, blen);
            if (!end) {
                FUZZ_ASSERT(!complete, "answer %d: chunked body cut short (no last-chunk) after %zu bytes", st,
                            left - hlen);
                free(body);
                return;
            }
            FUZZ_ASSERT(blen > 0, "a chunked answer %d with no data", st);
            clen = (long)(end - (p + hlen)); /* the encoding's length, to step over it */
        } else if (clen < 0) { /* close-delimited: the rest, and the end check says the connection closed */
            clen = (long)(left - hlen);
            body = malloc(clen ? (size_t)clen : 1);
            if (!body)
                abort();
            memcpy(body, p + hlen, (size_t)clen);
            blen = (size_t)clen;
            FUZZ_ASSERT(!complete || who->closed, "a close-delimited answer on a connection left open");
            FUZZ_ASSERT(!complete || blen > 0, "a close-delimited answer %d with no body", st);
        }
        if (left - hlen < (size_t)clen) {
            FUZZ_ASSERT(!complete, "answer %d body cut short: Content-Length %ld, %zu bytes follow", st, clen,
                        left - hlen);
            return;
        }
        if (body ? blen > 0 : clen > 0) {
            const char *b = body ? body : p + hlen;
            size_t bn = body ? blen : (size_t)clen;
            FUZZ_ASSERT(ctype_json || ctype_sse, "answer %d with a body of another type", st);
            if (ctype_json)
                check_json_text(b, bn, body ? "streamed application/json body" : "application/json body");
            else
                check_sse(b, bn);
        }
        free(body);
        pos += hlen + (size_t)clen;
        if (closes)
            FUZZ_ASSERT(pos == n, "%zu bytes sent after an answer that said Connection: close", n - pos);
    }
}

static void check_stdio_output(const char *o, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        const char *nl = memchr(o + pos, '\n', n - pos);
        FUZZ_ASSERT(nl != NULL, "stdio output does not end with a newline");
        FUZZ_ASSERT(nl > o + pos, "empty stdio output line");
        check_json_text(o + pos, (size_t)(nl - (o + pos)), "stdio line");
        pos = (size_t)(nl - o) + 1;
    }
}

/* ---------------------------------------------------------------------- */
/* The driver                                                              */
/* ---------------------------------------------------------------------- */

static char ca_path[64];
static FILE *devnull;

static const char ca_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBjzCCATWgAwIBAgIUVn3d7nxULEQZ6953jJ++7E8la0gwCgYIKoZIzj0EAwIw\n"
    "HDEaMBgGA1UEAwwRY2FsaWQtbWNwIGZ1enogQ0EwIBcNMjYxMTI3MTcwMjU5WhgP\n"
    "MjEyNjExMDMxNzAyNTlaMBwxGjAYBgNVBAMMEWNhbGlkLW1jcCBmdXp6IENBMFkw\n"
    "EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAynODf68+AGn1IX0NHpOXknXc5zNboNG\n"
    "p97mSN4OgS7cGNxbUqGESyeGJlPfXkfDgDhy6iQWw5cGFfsBAgtIzKNTMFEwHQYD\n"
    "VR0OBBYEFBlbo+vUwjezy7XvzsabNsogNtBTMB8GA1UdIwQYMBaAFBlbo+vUwjez\n"
    "y7XvzsabNsogNtBTMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg\n"
    "WkFtjAC6YmHkAOkRyo8T8TXJg8q3jfopWfP/ha6ieDgCIQCm06grhNZKXvbBYVja\n"
    "92cgeBi4vys+Qy61E6HGrIMjGQ==\n"
    "-----END CERTIFICATE-----\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int fd;
    FILE *f;
    (void)argc;
    (void)argv;
    real_stderr = stderr;
    known = getenv("CALID_FUZZ_KNOWN");
    snprintf(ca_path, sizeof ca_path, "/tmp/calid-fuzz-ca-XXXXXX");
    fd = mkstemp(ca_path);
    if (fd < 0 || !(f = fdopen(fd, "w")) || fputs(ca_pem, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "fuzz_mcp: cannot write %s\n", ca_path);
        exit(1);
    }
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        exit(1);
    return 0;
}

static void secrets_not_leaked(const char *o, size_t n, const uint8_t *input, size_t in_len)
{
    const char *secrets[2];
    int i;
    if (n == 0)
        return;
    secrets[0] = F.api_key;
    secrets[1] = ACCESS_TOKEN;
    for (i = 0; i < 2; i++) {
        size_t sl;
        if (!secrets[i])
            continue;
        sl = strlen(secrets[i]);
        if (memmem(input, in_len, secrets[i], sl))
            continue; /* the client (or the simulated API) sent it itself */
        FUZZ_ASSERT(!memmem(o, n, secrets[i], sl), "the server's secret %s reached the client", i ? "access token" : "API key");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cm_config c;
    char err[400];
    unsigned o0, o1, o2;
    const uint8_t *rest, *sep;
    size_t rest_n;
    int i;
    if (size < 3)
        return 0;
    memset(&F, 0, sizeof F);
    o0 = data[0];
    o1 = data[1];
    o2 = data[2];
    rest = data + 3;
    rest_n = size - 3;
    F.stdio = (o0 & 3) == 2;
    F.up_mode = (o0 >> 5) & 3;
    F.recv_cls = o1 & 7;
    F.send_cls = (o1 >> 3) & 3;
    F.eof_early = (o1 >> 5) & 1;
    F.rng = (uint32_t)size * 2654435761u ^ (o0 << 16 | o1 << 8 | o2);
    F.now = START_MS;
    F.extra_total = (o2 & 31) >= 24 ? ((int)(o2 & 31) - 24) * 3 : 0;
    F.n_clients = F.stdio ? 0 : (o2 & 128) ? MAX_CLIENTS : 1;
    if (F.stdio)
        F.extra_total = 0;

    /* client bytes, then the simulated API answers */
    sep = memmem(rest, rest_n, SEP, sizeof SEP - 1);
    F.in = rest;
    F.in_len = sep ? (size_t)(sep - rest) : rest_n;
    {
        const uint8_t *w = F.in;
        while (F.n_waits < MAX_WAITS && (w = memmem(w, F.in_len - (size_t)(w - F.in), WAIT, sizeof WAIT - 1))) {
            F.wait_at[F.n_waits++] = (size_t)(w - F.in);
            w += sizeof WAIT - 1;
        }
    }
    while (sep && F.n_ans < MAX_ANSWERS) {
        const uint8_t *p = sep + sizeof SEP - 1, *next;
        size_t left = rest_n - (size_t)(p - rest);
        next = memmem(p, left, SEP, sizeof SEP - 1);
        F.ans[F.n_ans].p = p;
        F.ans[F.n_ans].n = next ? (size_t)(next - p) : left;
        F.n_ans++;
        sep = next;
    }

    cm_config_defaults(&c);
    c.ca_file = ca_path;
    c.log_level = (o1 & 128) ? CM_LOG_DEBUG : CM_LOG_ERROR;
    c.listen = (o0 & 16) ? "0.0.0.0:8080" : "127.0.0.1:8080";
    if (o2 & 64)
        c.upstream = "https://api.cal.id/api/v2/";
    if (o0 & 4) {
        F.api_key = (o2 & 32) ? API_KEY_ODD : API_KEY;
        c.api_key = F.api_key;
        if (o0 & 8)
            c.access_token = ACCESS_TOKEN;
    }
    if (o0 & 128) {
        c.allow_origins[0] = "https://app.example.com";
        c.n_allow_origins = 1;
    }
    snprintf(stdio_version, sizeof stdio_version, "%s", LATEST_SESSION_VERSION); /* process state of stdio */
    stderr = devnull; /* the server logs go nowhere; sanitizer reports use fd 2 directly */
    if (cm_start(&c, F.stdio, err, sizeof err) != 0) {
        stderr = real_stderr;
        FUZZ_ASSERT(!F.stdio && (o0 & 16) && c.api_key && !c.access_token, "cm_start failed: %s", err);
        return 0; /* --api-key off loopback without --access-token: refused, as documented */
    }
    F.random_broken = (o1 >> 6) & 1;

    if (F.stdio) {
        FILE *saved_in = stdin, *saved_out = stdout;
        char *in_copy = malloc(F.in_len + 1), *outbuf = NULL;
        size_t outlen = 0;
        if (!in_copy)
            abort();
        memcpy(in_copy, F.in, F.in_len);
        stdin = F.in_len ? fmemopen(in_copy, F.in_len, "r") : fopen("/dev/null", "r");
        stdout = open_memstream(&outbuf, &outlen);
        if (!stdin || !stdout)
            abort();
        stack_scribble();
        cm_stdio_run();
        fclose(stdin);
        fclose(stdout);
        stdin = saved_in;
        stdout = saved_out;
        cm_stop();
        stderr = real_stderr;
        if (getenv("CALID_FUZZ_DUMP"))
            fwrite(outbuf, 1, outlen, stderr);
        check_stdio_output(outbuf, outlen);
        secrets_not_leaked(outbuf, outlen, data, size);
        free(outbuf);
        free(in_copy);
    } else {
        unsigned long max_polls = 200000 + 4 * (unsigned long)F.in_len;
        while (!all_clients_closed() && F.polls < max_polls) {
            stack_scribble();
            cm_poll(1000);
        }
        stderr = real_stderr;
        FUZZ_ASSERT(all_clients_closed(), "a connection was never closed (%lu polls, %llu ms): state %d", F.polls,
                    (unsigned long long)(F.now - START_MS), conns[0].state);
        cm_stop();
        FUZZ_ASSERT(!F.listener_open && F.extra_open == 0, "sockets left open after cm_stop");
        for (i = 0; i < CM_MAX_UPSTREAMS; i++)
            FUZZ_ASSERT(!F.ups[i].open || up.slots[i].sock == S_UP + i, "upstream socket %d leaked", i);
        for (i = 0; i < F.n_clients; i++) {
            struct client *k = &F.cl[i];
            if (getenv("CALID_FUZZ_DUMP") && k->out) {
                fprintf(stderr, "---- client %d received %zu bytes:\n", i, k->out_len);
                fwrite(k->out, 1, k->out_len, stderr);
                fputc('\n', stderr);
            }
            if (!k->out_overflow) {
                check_http_stream(k, 1);
                secrets_not_leaked(k->out, k->out_len, data, size);
            }
        }
    }
    if (getenv("CALID_FUZZ_DUMP"))
        fprintf(stderr, "---- %lu window(s) of streamed API answers\n", F.windows);
    /* upstream connections the server keeps (none here: no TLS completes) are dropped */
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (F.ups[i].open && up.slots[i].sock == S_UP + i) {
            cm_port_close(up.slots[i].sock);
            up.slots[i].sock = CM_SOCK_INVALID;
        }
    for (i = 0; i < MAX_CLIENTS; i++) {
        free(F.cl[i].out);
        F.cl[i].out = NULL;
    }
    return 0;
}
