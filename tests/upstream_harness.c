/*
 * tests/upstream_harness.c - exercises the UPSTREAM CLIENT section
 * (section 8 of calid_mcp.c) on its own: the answer parser, URL and CA loading, and
 * real HTTPS requests through a tiny poll loop.
 *
 *   upstream_harness                         unit tests only (parser, URL, CA, fuzz)
 *   upstream_harness URL CA                  unit tests + the network suite; the server
 *                                            must be tests/upstream_tls_server.py
 *   upstream_harness URL CA --expect-error TEXT [PATH]
 *                                            one GET (default /json) must fail with TEXT
 *                                            (or up_init must fail with TEXT)
 *   upstream_harness URL CA --drop-suite     what is re-sent when the server drops the
 *                                            2nd request of each connection (server:
 *                                            upstream_tls_server.py --drop-nth 2)
 *   upstream_harness URL CA --get PATH [N]   N GETs (default 1) one after the other, prints
 *                                            the last answer (any server, e.g.
 *                                            tests/fake_calid.py)
 *   add -v anywhere for debug logs, --token T to send another bearer token.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -I. tests/upstream_harness.c \
 *            port/posix.c -lbearssl -lpthread -o /tmp/upstream_harness
 * Prints "N passed, N failed" last; exits 1 if anything failed.
 */
#define _POSIX_C_SOURCE 200809L
#define CM_TEST_SEAMS
#include "../calid_mcp.c"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>

/* ---- what the core provides ---- */
static int log_level = CM_LOG_WARN;
static unsigned log_retries; /* "retrying" messages seen, whatever the level */
static const char *token = "test-token-123"; /* --token T changes it (the fake wants calid_...) */

static void harness_log(int level, const char *line)
{
    if (strstr(line, "connection closed by the server; retrying"))
        log_retries++;
    if (strstr(line, token)) {
        fprintf(stderr, "FAIL: the bearer token reached the log: %s\n", line);
        abort();
    }
    if (level <= log_level)
        fprintf(stderr, "  [log %d] %s\n", level, line);
}


/* ---- results recorded by on_upstream_done ---- */
struct rec {
    int done;            /* callbacks received for the current request */
    unsigned owner;
    struct up_result r;  /* copy; r.body points into the slot until released */
};
static struct rec recs[CM_MAX_UPSTREAMS];
static int release_in_callback;
static int chain_in_callback;   /* the callback submits the next request itself */
static int chained_handle = -9;
static unsigned callbacks_total;

static void harness_done(unsigned owner, int handle, const struct up_result *r)
{
    callbacks_total++;
    if (handle < 0 || handle >= CM_MAX_UPSTREAMS) {
        fprintf(stderr, "callback with bad handle %d\n", handle);
        return;
    }
    recs[handle].done++;
    recs[handle].owner = owner;
    recs[handle].r = *r;
    if (release_in_callback)
        up_release(handle);
    if (chain_in_callback) {
        chain_in_callback = 0;
        up_release(handle);
        chained_handle = up_submit(78, "GET", "/json", token, NULL, NULL, 0);
        if (chained_handle >= 0)
            memset(&recs[chained_handle], 0, sizeof recs[chained_handle]);
    }
}

/* ---- test bookkeeping ---- */
static int passed, failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) {                                       \
            passed++;                                     \
        } else {                                          \
            failed++;                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                 \
            fputc('\n', stderr);                          \
        }                                                 \
    } while (0)

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* ======================================================================
 * Parser unit tests
 * ====================================================================== */
struct pcase {
    const char *name;
    const char *in;
    int head;          /* HEAD request */
    int eof;           /* the connection closes after the input: 1 with close_notify, 2 without */
    int status;        /* expected status, or 0 for an error */
    const char *body;  /* expected body (status != 0) */
    int keep;          /* expected keep_alive */
    const char *err;   /* expected error substring (status == 0) */
    size_t cap;        /* body capacity; 0 = 4096 */
    size_t left;       /* bytes expected to remain unconsumed after DONE */
};

static const struct pcase pcases[] = {
    { "content-length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
      0, 0, 200, "{\"ok\":true}", 1, NULL, 0, 0 },
    { "chunked+ext+trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nhello\r\n6 \r\n world\r\n0\r\nX-T: 1\r\n\r\n",
      0, 0, 200, "hello world", 1, NULL, 0, 0 },
    { "close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", 0, 1, 200, "abc", 0, NULL, 0, 0 },
    { "no-length 1.1 = close-delimited", "HTTP/1.1 200 OK\r\n\r\nxyz", 0, 1, 200, "xyz", 0, NULL, 0, 0 },
    { "100-continue skipped", "HTTP/1.1 100 Continue\r\nX: y\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
      0, 0, 201, "ok", 1, NULL, 0, 0 },
    { "429 retry-after", "HTTP/1.1 429 Too Many Requests\r\nretry-after:   7  \r\ncontent-length: 0\r\n\r\n",
      0, 0, 429, "", 1, NULL, 0, 0 },
    { "204 no body", "HTTP/1.1 204 No Content\r\n\r\n", 0, 0, 204, "", 1, NULL, 0, 0 },
    { "HEAD ignores length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 1, 0, 200, "", 1, NULL, 0, 0 },
    { "bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 0, 0, 200, "ok", 1, NULL, 0, 0 },
    { "no reason phrase", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", 0, 0, 200, "x", 1, NULL, 0, 0 },
    { "http/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0, 200, "ok", 0, NULL, 0, 0 },
    { "http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
      0, 0, 200, "ok", 1, NULL, 0, 0 },
    { "connection list with close", "HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 2\r\n\r\nok",
      0, 0, 200, "ok", 0, NULL, 0, 0 },
    { "same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 0, 0, 200, "ok", 1, NULL, 0, 0 },
    { "bytes after the answer", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0, 0, 200, "ok", 1, NULL, 0, 5 },
    { "body exactly at cap", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678", 0, 0, 200, "12345678", 1, NULL, 8, 0 },
    { "chunked exactly at cap", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n1234\r\n4\r\n5678\r\n0\r\n\r\n",
      0, 0, 200, "12345678", 1, NULL, 8, 0 },
    { "uppercase hex chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
      0, 0, 200, "0123456789", 1, NULL, 0, 0 },
    /* malformed */
    { "not http", "HELLO WORLD\r\n\r\n", 0, 0, 0, NULL, 0, "malformed answer from the Cal ID API: bad status line", 0, 0 },
    { "4-digit status", "HTTP/1.1 2000 OK\r\n\r\n", 0, 0, 0, NULL, 0, "bad status line", 0, 0 },
    { "http/2 status", "HTTP/2 200\r\n\r\n", 0, 0, 0, NULL, 0, "bad status line", 0, 0 },
    { "status 099", "HTTP/1.1 099 X\r\n\r\n", 0, 0, 0, NULL, 0, "bad status line", 0, 0 },
    { "no colon", "HTTP/1.1 200 OK\r\nBroken header\r\n\r\n", 0, 0, 0, NULL, 0, "bad header name", 0, 0 },
    { "empty name", "HTTP/1.1 200 OK\r\n: x\r\n\r\n", 0, 0, 0, NULL, 0, "without a name", 0, 0 },
    { "folded", "HTTP/1.1 200 OK\r\nX: a\r\n  b\r\n\r\n", 0, 0, 0, NULL, 0, "folded header", 0, 0 },
    { "bad length", "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n", 0, 0, 0, NULL, 0, "bad Content-Length", 0, 0 },
    { "negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, 0, 0, NULL, 0, "bad Content-Length", 0, 0 },
    { "huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, 0, 0, NULL, 0,
      "bad Content-Length", 0, 0 },
    { "conflicting length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", 0, 0, 0, NULL, 0,
      "conflicting Content-Length", 0, 0 },
    { "gzip TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 0, 0, NULL, 0,
      "unsupported Transfer-Encoding", 0, 0 },
    { "9 hex digits", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n000000001\r\nx\r\n0\r\n\r\n", 0, 0, 0, NULL, 0,
      "more than 8 hex digits", 0, 0 },
    { "bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 0, 0, NULL, 0, "bad chunk size", 0, 0 },
    { "chunk junk after size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n0\r\n\r\n", 0, 0, 0, NULL, 0,
      "bad chunk size", 0, 0 },
    { "chunk too long", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 0, 0, 0, NULL, 0,
      "chunk data longer than its size", 0, 0 },
    { "stray CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", 0, 0, 0, NULL, 0, "stray CR", 0, 0 },
    { "101", "HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, 0, 0, NULL, 0, "101", 0, 0 },
    { "too large by length", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789", 0, 0, 0, NULL, 0,
      "the Cal ID API answer is larger than 8 bytes (CM_UPSTREAM_BODY_BYTES)", 8, 0 },
    { "too large chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n4\r\n6789\r\n0\r\n\r\n", 0, 0, 0,
      NULL, 0, "larger than 8 bytes", 8, 0 },
    { "too large close-delimited", "HTTP/1.1 200 OK\r\n\r\n123456789", 0, 1, 0, NULL, 0, "larger than 8 bytes", 8, 0 },
    { "truncated length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", 0, 1, 0, NULL, 0,
      "before the answer was complete (truncated)", 0, 0 },
    { "truncated head", "HTTP/1.1 200 OK\r\nContent-Le", 0, 1, 0, NULL, 0, "truncated", 0, 0 },
    { "truncated chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 0, 1, 0, NULL, 0, "truncated", 0, 0 },
    /* a bare TCP close (no close_notify) cannot end an answer */
    { "close-delimited, bare close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", 0, 2, 0, NULL, 0,
      "without TLS close_notify, so the answer (delimited by the close) may be cut short (truncated)", 0, 0 },
    { "no-length 1.1, bare close", "HTTP/1.1 200 OK\r\n\r\n", 0, 2, 0, NULL, 0, "without TLS close_notify", 0, 0 },
    { "length, bare close after it", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 0, 2, 200, "ok",
      0, NULL, 0, 0 },
    { "truncated length, bare close", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", 0, 2, 0, NULL, 0,
      "before the answer was complete (truncated)", 0, 0 },
};

static void run_pcase(const struct pcase *c, size_t split, const char *how)
{
    static unsigned char body[4097];
    struct up_parser p;
    size_t len = strlen(c->in), off = 0, cap = c->cap ? c->cap : 4096;
    int keep;
    up_parse_init(&p, body, cap, c->head);
    while (off < len && p.state != UP_P_DONE && p.state != UP_P_ERROR) {
        size_t n = split ? split : len;
        size_t used;
        if (n > len - off)
            n = len - off;
        used = up_parse_feed(&p, (const unsigned char *)c->in + off, n);
        off += used;
        if (used < n)
            break;
    }
    if (c->eof && p.state != UP_P_ERROR && p.state != UP_P_DONE) {
        if (c->eof == 2)
            up_parse_cut(&p);
        else
            up_parse_eof(&p);
    }
    keep = p.keep_alive;
    if (c->status) {
        CHECK(p.state == UP_P_DONE, "%s (%s): state %d, error '%s'", c->name, how, p.state, p.error);
        CHECK(p.status == c->status, "%s (%s): status %d", c->name, how, p.status);
        CHECK(p.body_len == strlen(c->body) && memcmp(body, c->body, p.body_len) == 0, "%s (%s): body '%.*s'",
              c->name, how, (int)p.body_len, body);
        CHECK(keep == c->keep, "%s (%s): keep_alive %d", c->name, how, keep);
        CHECK(len - off == c->left, "%s (%s): %lu bytes left", c->name, how, (unsigned long)(len - off));
    } else {
        CHECK(p.state == UP_P_ERROR && strstr(p.error, c->err) != NULL, "%s (%s): state %d, error '%s'", c->name,
              how, p.state, p.error);
    }
}

static void test_parser(void)
{
    size_t i;
    for (i = 0; i < sizeof pcases / sizeof pcases[0]; i++) {
        run_pcase(&pcases[i], 0, "whole");
        run_pcase(&pcases[i], 1, "byte by byte");
        run_pcase(&pcases[i], 7, "7-byte pieces");
    }
    /* the fields kept from headers */
    {
        static unsigned char body[64];
        struct up_parser p;
        const char *a = "HTTP/1.1 429 Too Many\r\nRETRY-AFTER: 120\r\nContent-Type: application/json; charset=utf-8\r\n"
                        "Content-Length: 2\r\n\r\n{}";
        up_parse_init(&p, body, sizeof body - 1, 0);
        up_parse_feed(&p, (const unsigned char *)a, strlen(a));
        CHECK(p.state == UP_P_DONE && strcmp(p.retry_after, "120") == 0, "retry-after '%s'", p.retry_after);
        CHECK(strcmp(p.content_type, "application/json; charset=utf-8") == 0, "content-type '%s'", p.content_type);
    }
    /* 1xx headers do not leak into the final answer */
    {
        static unsigned char body[64];
        struct up_parser p;
        const char *a = "HTTP/1.1 103 Early Hints\r\nRetry-After: 5\r\nContent-Length: 99\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        up_parse_init(&p, body, sizeof body - 1, 0);
        up_parse_feed(&p, (const unsigned char *)a, strlen(a));
        CHECK(p.state == UP_P_DONE && p.retry_after[0] == '\0' && p.body_len == 2, "1xx leak: state %d ra '%s'",
              p.state, p.retry_after);
    }
    /* a long header we do not care about is fine; a long status line is not */
    {
        static char big[UP_LINE_MAX * 3 + 200];
        static unsigned char body[64];
        struct up_parser p;
        size_t n;
        strcpy(big, "HTTP/1.1 200 OK\r\nX-Long: ");
        n = strlen(big);
        memset(big + n, 'a', UP_LINE_MAX * 2);
        strcpy(big + n + UP_LINE_MAX * 2, "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok");
        up_parse_init(&p, body, sizeof body - 1, 0);
        up_parse_feed(&p, (const unsigned char *)big, strlen(big));
        CHECK(p.state == UP_P_DONE && p.body_len == 2 && strcmp(p.content_type, "text/plain") == 0,
              "long header: state %d err '%s'", p.state, p.error);
        strcpy(big, "HTTP/1.1 200 ");
        memset(big + 13, 'r', UP_LINE_MAX * 2);
        strcpy(big + 13 + UP_LINE_MAX * 2, "\r\n\r\n");
        up_parse_init(&p, body, sizeof body - 1, 0);
        up_parse_feed(&p, (const unsigned char *)big, strlen(big));
        CHECK(p.state == UP_P_ERROR, "long status line accepted");
    }
    /* the header block limit */
    {
        static char big[UP_HEAD_MAX + 4096];
        static unsigned char body[64];
        struct up_parser p;
        size_t n = 0;
        n += (size_t)sprintf(big, "HTTP/1.1 200 OK\r\n");
        while (n < UP_HEAD_MAX + 100)
            n += (size_t)sprintf(big + n, "X-Filler: %0100d\r\n", 0);
        strcpy(big + n, "\r\n");
        up_parse_init(&p, body, sizeof body - 1, 0);
        up_parse_feed(&p, (const unsigned char *)big, strlen(big));
        CHECK(p.state == UP_P_ERROR && strstr(p.error, "headers longer than"), "head limit: '%s'", p.error);
    }
    /* a DONE parser consumes nothing more */
    {
        static unsigned char body[64];
        struct up_parser p;
        const char *a = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        up_parse_init(&p, body, sizeof body - 1, 0);
        CHECK(up_parse_feed(&p, (const unsigned char *)a, strlen(a)) == strlen(a) && p.state == UP_P_DONE, "done");
        CHECK(up_parse_feed(&p, (const unsigned char *)a, strlen(a)) == 0, "feed after done consumed bytes");
        CHECK(up_parse_eof(&p) == 0, "eof after done");
    }
}

/* A windowed parser (a streamed answer) with an 8-byte window: whatever the
   framing and however the bytes come, it stops when the window is full, goes
   on once drained, and the windows together are the body. */
static void test_parser_window(void)
{
    static const char *const answers[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789abcdefghijklmnopqrst",
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n012\r\n11\r\n3456789abcdefghij\r\n"
         "a\r\nklmnopqrst\r\n0\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789abcdefghijklmnopqrst",
    };
    static const size_t pieces[] = {1, 3, 7, 1000};
    size_t a, k;
    for (a = 0; a < sizeof answers / sizeof answers[0]; a++)
        for (k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
            unsigned char body[9];
            char got[64];
            size_t n = strlen(answers[a]), off = 0, gl = 0, windows = 0;
            struct up_parser p;
            up_parse_init(&p, body, 8, 0);
            p.windowed = 1;
            while (off < n && p.state != UP_P_ERROR && p.state != UP_P_DONE) {
                size_t len = n - off < pieces[k] ? n - off : pieces[k];
                size_t used = up_parse_feed(&p, (const unsigned char *)answers[a] + off, len);
                off += used;
                if (used < len && up_parse_window_full(&p)) {
                    memcpy(got + gl, body, p.body_len); /* the owner takes the window */
                    gl += p.body_len;
                    p.body_len = 0;
                    windows++;
                } else if (used < len) {
                    break;
                }
            }
            if (a == 2)
                CHECK(up_parse_eof(&p) == 0, "window: close-delimited end");
            memcpy(got + gl, body, p.body_len);
            gl += p.body_len;
            CHECK(p.state == UP_P_DONE && gl == 30 && memcmp(got, "0123456789abcdefghijklmnopqrst", 30) == 0 &&
                  windows == 3 && p.body_total == 30,
                  "window: answer %u in %u-byte pieces: state %d, %u bytes in %u windows (%s)", (unsigned)a,
                  (unsigned)pieces[k], p.state, (unsigned)gl, (unsigned)windows, p.error);
        }
    /* a cut UTF-8 character waits for the next window */
    CHECK(up_utf8_cut((const unsigned char *)"ab\xe2\x82", 4) == 2 && up_utf8_cut((const unsigned char *)"ab\xe2\x82\xac", 5) == 0 &&
          up_utf8_cut((const unsigned char *)"a\xf0", 2) == 1 && up_utf8_cut((const unsigned char *)"abc", 3) == 0 &&
          up_utf8_cut((const unsigned char *)"\xc3\xa9", 2) == 0, "UTF-8 cut at a window's end");
}

/* Random splits and mutations of the cases: no crash, invariants hold.
   (Run under -fsanitize=address,undefined to make this count.) */
static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;
static unsigned rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

static void test_parser_fuzz(unsigned iterations)
{
    static unsigned char in[2048], body[65];
    unsigned it, bad = 0;
    static const char alphabet[] = "\r\n:; 0123456789abcdefHTPchunkedContent-LengthTransfer-Encoding";
    for (it = 0; it < iterations; it++) {
        const struct pcase *c = &pcases[rnd() % (sizeof pcases / sizeof pcases[0])];
        size_t len = strlen(c->in), off = 0, cap = 1 + rnd() % 64;
        struct up_parser p;
        unsigned m, muts = rnd() % 4;
        memcpy(in, c->in, len);
        for (m = 0; m < muts; m++) {
            size_t at = rnd() % (len + 1);
            unsigned op = rnd() % 3;
            if (op == 0 && at < len)
                in[at] = (rnd() & 1) ? (unsigned char)alphabet[rnd() % (sizeof alphabet - 1)] : (unsigned char)rnd();
            else if (op == 1 && len + 1 < sizeof in) {
                memmove(in + at + 1, in + at, len - at);
                in[at] = (unsigned char)alphabet[rnd() % (sizeof alphabet - 1)];
                len++;
            } else if (at < len) {
                memmove(in + at, in + at + 1, len - at - 1);
                len--;
            }
        }
        up_parse_init(&p, body, cap, rnd() % 8 == 0);
        while (off < len && p.state != UP_P_DONE && p.state != UP_P_ERROR) {
            size_t n = 1 + rnd() % 16, used;
            if (n > len - off)
                n = len - off;
            used = up_parse_feed(&p, in + off, n);
            if (used > n)
                bad++;
            off += used;
            if (used < n)
                break;
        }
        if (rnd() % 3 == 0)
            up_parse_eof(&p);
        else if (rnd() % 2 == 0)
            up_parse_cut(&p);
        if (p.body_len > cap || (p.state == UP_P_ERROR && p.error[0] == '\0') ||
            (p.state == UP_P_DONE && (p.status < 200 || p.status > 599)))
            bad++;
    }
    CHECK(bad == 0, "parser fuzz: %u invariant violations in %u runs", bad, iterations);
}

/* ======================================================================
 * URL, time, error texts, CA loading
 * ====================================================================== */
static void test_url(void)
{
    char err[256];
    CHECK(up_parse_base_url("https://api.cal.id", err, sizeof err) == 0 && strcmp(up.host, "api.cal.id") == 0 &&
              up.port == 443 && up.prefix[0] == '\0' && strcmp(up.host_header, "api.cal.id") == 0 &&
              strcmp(up.host_port, "api.cal.id:443") == 0,
          "default url");
    CHECK(up_parse_base_url("HTTPS://localhost:8443/v2/", err, sizeof err) == 0 && strcmp(up.host, "localhost") == 0 &&
              up.port == 8443 && strcmp(up.prefix, "/v2") == 0 && strcmp(up.host_header, "localhost:8443") == 0,
          "port + prefix: host '%s' prefix '%s'", up.host, up.prefix);
    CHECK(up_parse_base_url("https://[::1]:9000", err, sizeof err) == 0 && strcmp(up.host, "::1") == 0 &&
              strcmp(up.host_header, "[::1]:9000") == 0,
          "ipv6: host '%s' header '%s'", up.host, up.host_header);
    CHECK(up_parse_base_url("https://x.example:443/", err, sizeof err) == 0 && strcmp(up.host_header, "x.example") == 0 &&
              up.prefix[0] == '\0',
          "explicit 443");
    CHECK(up_parse_base_url("http://api.cal.id", err, sizeof err) == -1 && strstr(err, "only https:// is allowed"),
          "http refused: %s", err);
    CHECK(up_parse_base_url("ftp://x", err, sizeof err) == -1 && strstr(err, "must start with https://"), "ftp: %s", err);
    CHECK(up_parse_base_url("https://", err, sizeof err) == -1 && strstr(err, "no host"), "no host: %s", err);
    CHECK(up_parse_base_url("https://h:0", err, sizeof err) == -1 && strstr(err, "bad port"), "port 0: %s", err);
    CHECK(up_parse_base_url("https://h:65536", err, sizeof err) == -1, "port 65536");
    CHECK(up_parse_base_url("https://h:12x", err, sizeof err) == -1, "port 12x");
    CHECK(up_parse_base_url("https://u:p@h", err, sizeof err) == -1, "userinfo: %s", err);
    CHECK(up_parse_base_url("https://h/a?b", err, sizeof err) == -1 && strstr(err, "plain path"), "query: %s", err);
    CHECK(up_parse_base_url("https://h/a b", err, sizeof err) == -1, "space in path");
    CHECK(up_parse_base_url("https://[::1", err, sizeof err) == -1, "unclosed [");
    CHECK(up_parse_base_url(NULL, err, sizeof err) == -1, "null url");
}

static void test_time_and_errors(void)
{
    uint32_t d, s;
    char t[200];
    up_x509_time(0, &d, &s);
    CHECK(d == 719528 && s == 0, "epoch -> %u %u", d, s);
    up_x509_time(946684800, &d, &s); /* 2000-01-01T00:00:00Z */
    CHECK(d == 730485 && s == 0, "2000 -> %u %u", d, s);
    up_x509_time(1785244455, &d, &s); /* 2026-07-28T13:14:15Z */
    CHECK(d == 740190 && s == 13 * 3600 + 14 * 60 + 15, "2026 -> %u %u", d, s);
    up_x509_time(-5, &d, &s);
    CHECK(d == 719528 && s == 0, "negative clamps");
    up_tls_error_text(BR_ERR_X509_NOT_TRUSTED, t, sizeof t);
    CHECK(strcmp(t, "TLS failure: the server certificate is not trusted (BearSSL error 62: BR_ERR_X509_NOT_TRUSTED)") == 0,
          "%s", t);
    up_tls_error_text(BR_ERR_RECV_FATAL_ALERT + 40, t, sizeof t);
    CHECK(strcmp(t, "TLS failure: alert 40 (handshake_failure) from the server") == 0, "%s", t);
    up_tls_error_text(BR_ERR_SEND_FATAL_ALERT + 42, t, sizeof t);
    CHECK(strstr(t, "sent alert 42") != NULL, "%s", t);
    up_tls_error_text(30, t, sizeof t);
    CHECK(strcmp(t, "TLS failure (BearSSL error 30)") == 0, "%s", t);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_ca_loading(const char *url)
{
    char err[256];
    const char *sys = cm_port_default_ca_file();
    write_file("/tmp/upstream_harness_empty.pem", "no certificates here\n");
    write_file("/tmp/upstream_harness_key.pem",
               "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    write_file("/tmp/upstream_harness_junk.pem",
               "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n");
    CHECK(up_init(url, "/nonexistent/ca.pem", err, sizeof err) == -1 && strstr(err, "cannot open the CA file"),
          "missing CA: %s", err);
    CHECK(up_init(url, "/tmp/upstream_harness_empty.pem", err, sizeof err) == -1 && strstr(err, "no certificate"),
          "empty CA: %s", err);
    CHECK(up_init(url, "/tmp/upstream_harness_key.pem", err, sizeof err) == -1 && strstr(err, "no certificate"),
          "key only: %s", err);
    CHECK(up_init(url, "/tmp/upstream_harness_junk.pem", err, sizeof err) == -1 && strstr(err, "could not be decoded"),
          "junk cert: %s", err);
    if (sys && fopen(sys, "r")) {
        int r = up_init(url, sys, err, sizeof err);
#if CM_TRUST_ARENA_BYTES < 60000
        CHECK(r == -1 && strstr(err, "CM_TRUST_ARENA_BYTES"), "small arena: %d %s", r, err);
        printf("  system bundle with a %d-byte arena: %s\n", CM_TRUST_ARENA_BYTES, err);
#elif CM_MAX_TRUST_ANCHORS < 100
        CHECK(r == -1 && strstr(err, "CM_MAX_TRUST_ANCHORS"), "few anchors: %d %s", r, err);
        printf("  system bundle with %d anchors max: %s\n", CM_MAX_TRUST_ANCHORS, err);
#else
        CHECK(r == 0, "system bundle %s: %s", sys, err);
        printf("  system bundle %s: %lu anchors, %lu of %d arena bytes\n", sys, (unsigned long)up.n_anchors,
               (unsigned long)up.arena_used, CM_TRUST_ARENA_BYTES);
#endif
    }
    remove("/tmp/upstream_harness_empty.pem");
    remove("/tmp/upstream_harness_key.pem");
    remove("/tmp/upstream_harness_junk.pem");
}

/* ======================================================================
 * The poll loop
 * ====================================================================== */
static void loop_once(int max_wait_ms)
{
    struct cm_pollfd fds[CM_MAX_UPSTREAMS];
    int hof[CM_MAX_UPSTREAMS];
    unsigned n = up_pollfds(fds, CM_MAX_UPSTREAMS, hof), i;
    int t = up_next_timeout_ms(cm_port_now_ms());
    if (t < 0 || t > max_wait_ms)
        t = max_wait_ms;
    cm_port_poll(fds, n, t);
    for (i = 0; i < n; i++)
        if (fds[i].revents)
            up_on_ready(hof[i], fds[i].revents);
    up_tick(cm_port_now_ms());
}

/* Runs the loop until request h has called back (or limit_ms passed). */
static int wait_done(int h, long limit_ms)
{
    uint64_t end = cm_port_now_ms() + (uint64_t)limit_ms;
    while (!recs[h].done && cm_port_now_ms() < end)
        loop_once(50);
    return recs[h].done;
}

static void run_for(long ms)
{
    uint64_t end = cm_port_now_ms() + (uint64_t)ms;
    while (cm_port_now_ms() < end)
        loop_once(20);
}


/* Submits, waits, returns the handle (result in recs[h]; caller releases). */
static int do_req(const char *method, const char *path, const char *ctype, const char *body, size_t body_len,
                  long limit_ms)
{
    int h = up_submit(7, method, path, token, ctype, body, body_len);
    if (h < 0) {
        fprintf(stderr, "up_submit %s %s -> %d\n", method, path, h);
        return h;
    }
    memset(&recs[h], 0, sizeof recs[h]);
    if (!wait_done(h, limit_ms))
        fprintf(stderr, "%s %s: no answer within %ld ms\n", method, path, limit_ms);
    return h;
}

static int get_ok(const char *path, int *status)
{
    int h = do_req("GET", path, NULL, NULL, 0, 10000);
    int ok = h >= 0 && recs[h].done == 1;
    *status = ok ? recs[h].r.status : -1;
    if (ok && recs[h].r.status == 0)
        fprintf(stderr, "GET %s: %s\n", path, recs[h].r.error);
    if (h >= 0)
        up_release(h);
    return ok;
}

/* Server-side counters from /stats. */
static void server_stats(long *conns, long *resumed)
{
    int h = do_req("GET", "/stats", NULL, NULL, 0, 5000);
    *conns = *resumed = -1;
    if (h >= 0 && recs[h].done && recs[h].r.status == 200) {
        const char *c = strstr(recs[h].r.body, "\"connections\": ");
        const char *r = strstr(recs[h].r.body, "\"resumed\": ");
        if (c)
            *conns = atol(c + 15);
        if (r)
            *resumed = atol(r + 11);
    }
    if (h >= 0)
        up_release(h);
}

/* Requests of one method the server received (/stats "methods"), or -1. */
static long server_count(const char *method)
{
    char key[32];
    long n = -1;
    int h = do_req("GET", "/stats", NULL, NULL, 0, 5000);
    if (h >= 0 && recs[h].done && recs[h].r.status == 200) {
        const char *m = strstr(recs[h].r.body, "\"methods\": {"), *k;
        snprintf(key, sizeof key, "\"%s\": ", method);
        n = 0;
        if (m && (k = strstr(m, key)) != NULL && k < strchr(m, '}'))
            n = atol(k + strlen(key));
    }
    if (h >= 0)
        up_release(h);
    return n;
}

/* Closes every kept-alive connection (the next request opens a new one). */
static void drop_idle_conns(void)
{
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_IDLE)
            up_drop_conn(&up.slots[i], 1), up.slots[i].state = UP_S_FREE;
}

static int expect_fail(const char *path, const char *text, long limit_ms)
{
    int h = do_req("GET", path, NULL, NULL, 0, limit_ms);
    int ok = h >= 0 && recs[h].done == 1 && recs[h].r.status == 0 && strstr(recs[h].r.error, text) != NULL;
    if (!ok && h >= 0)
        fprintf(stderr, "GET %s: status %d error '%s' (wanted '%s')\n", path, recs[h].r.status, recs[h].r.error, text);
    if (h >= 0) {
        printf("  GET %-22s -> %s\n", path, recs[h].r.error);
        up_release(h);
    }
    return ok;
}

/* ======================================================================
 * The network suite (server: tests/upstream_tls_server.py)
 * ====================================================================== */
static void suite(const char *url, const char *ca)
{
    char err[256], want[1024];
    int h, st, i, ok;
    long c0, r0, c1, r1;
    unsigned fh0;
    uint64_t t0;

    CHECK(up_init(url, ca, err, sizeof err) == 0, "up_init: %s", err);
    if (!up.ready)
        return;

    /* GET: the exact request head */
    h = do_req("GET", "/echo?x=1", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200, "GET /echo: %d %s", h >= 0 ? recs[h].r.status : h,
          h >= 0 ? recs[h].r.error : "");
    if (h >= 0 && recs[h].r.status == 200) {
        const char *b = recs[h].r.body;
        snprintf(want, sizeof want, "GET %s/echo?x=1 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                 "Accept: application/json\r\nUser-Agent: calid-mcp/" CM_VERSION "\r\nConnection: keep-alive\r\n\r\n",
                 up.prefix, up.host_header, token);
        CHECK(strcmp(b, want) == 0, "GET head:\n%s\nwanted:\n%s", b, want);
        CHECK(strcmp(recs[h].r.content_type, "text/plain") == 0, "content type '%s'", recs[h].r.content_type);
        CHECK(recs[h].owner == 7 && recs[h].done == 1 && recs[h].r.body[recs[h].r.body_len] == '\0', "owner/NUL");
        printf("  GET /echo -> 200, request head as sent:\n    %s\n", "(checked byte for byte)");
    }
    if (h >= 0)
        up_release(h);

    /* POST with a body, and DELETE without */
    {
        const char *json = "{\"name\":\"x\",\"n\":1}";
        h = do_req("POST", "/echo", "application/json", json, strlen(json), 10000);
        snprintf(want, sizeof want, "Content-Type: application/json\r\nContent-Length: %lu\r\nConnection: keep-alive\r\n\r\n%s",
                 (unsigned long)strlen(json), json);
        CHECK(h >= 0 && recs[h].r.status == 200 && strstr(recs[h].r.body, want) != NULL &&
                  strncmp(recs[h].r.body, "POST ", 5) == 0,
              "POST echo: %s", h >= 0 ? recs[h].r.body : "");
        if (h >= 0)
            up_release(h);
        h = do_req("DELETE", "/echo", NULL, NULL, 0, 10000);
        CHECK(h >= 0 && recs[h].r.status == 200 && strstr(recs[h].r.body, "Content-Length") == NULL &&
                  strstr(recs[h].r.body, "Content-Type") == NULL,
              "DELETE sends no Content-Length: %s", h >= 0 ? recs[h].r.body : "");
        if (h >= 0)
            up_release(h);
        h = do_req("POST", "/echo", NULL, NULL, 0, 10000);
        CHECK(h >= 0 && recs[h].r.status == 200 && strstr(recs[h].r.body, "Content-Length: 0\r\n") != NULL,
              "bodiless POST sends Content-Length: 0");
        if (h >= 0)
            up_release(h);
    }

    /* PUT carries its JSON body like PATCH */
    {
        const char *json = "{\"name\":\"Ada\",\"timeZone\":\"Europe/Berlin\"}";
        h = do_req("PUT", "/echo", "application/json", json, strlen(json), 10000);
        snprintf(want, sizeof want, "Content-Type: application/json\r\nContent-Length: %lu\r\nConnection: keep-alive\r\n\r\n%s",
                 (unsigned long)strlen(json), json);
        CHECK(h >= 0 && recs[h].r.status == 200 && strncmp(recs[h].r.body, "PUT /echo HTTP/1.1\r\n", 20) == 0 &&
                  strstr(recs[h].r.body, want) != NULL,
              "PUT echo: %s", h >= 0 ? recs[h].r.body : "");
        if (h >= 0)
            up_release(h);
    }

    /* a body much larger than one TLS record */
    {
        static char big[60001];
        for (i = 0; i < 60000; i++)
            big[i] = (char)('a' + i % 26);
        h = do_req("PATCH", "/echo", "application/json", big, 60000, 10000);
        CHECK(h >= 0 && recs[h].r.status == 200 && recs[h].r.body_len > 60000 &&
                  memcmp(recs[h].r.body + recs[h].r.body_len - 60000, big, 60000) == 0,
              "60 KB body echoed");
        if (h >= 0)
            up_release(h);
    }

    /* framings */
    h = do_req("GET", "/chunked", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200 && strcmp(recs[h].r.body, "hello, chunked world") == 0,
          "chunked: '%s'", h >= 0 ? recs[h].r.body : "");
    if (h >= 0) {
        printf("  GET /chunked -> %d '%s'\n", recs[h].r.status, recs[h].r.body);
        up_release(h);
    }
    h = do_req("GET", "/close", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200 && strcmp(recs[h].r.body, "body until close_notify") == 0,
          "close-delimited (close_notify): '%s' %s", h >= 0 ? recs[h].r.body : "", h >= 0 ? recs[h].r.error : "");
    if (h >= 0)
        up_release(h);
    CHECK(expect_fail("/close-eof", "closed the connection without TLS close_notify, so the answer "
                      "(delimited by the close) may be cut short (truncated)", 10000),
          "close-delimited answer ended by a bare TCP close is a truncation");
    CHECK(get_ok("/http10", &st) && st == 200, "HTTP/1.0 answer: %d", st);
    CHECK(get_ok("/continue", &st) && st == 201, "100 Continue skipped: %d", st);
    CHECK(get_ok("/slow", &st) && st == 200, "dribbled answer: %d", st);

    /* 429 + Retry-After */
    h = do_req("GET", "/ratelimit", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 429 && strcmp(recs[h].r.retry_after, "7") == 0 &&
              strcmp(recs[h].r.content_type, "application/json") == 0 && strstr(recs[h].r.body, "slow down"),
          "429: %d '%s'", h >= 0 ? recs[h].r.status : -1, h >= 0 ? recs[h].r.retry_after : "");
    if (h >= 0) {
        printf("  GET /ratelimit -> %d, Retry-After '%s', body %s\n", recs[h].r.status, recs[h].r.retry_after,
               recs[h].r.body);
        up_release(h);
    }

    /* size limit, both framings */
    snprintf(want, sizeof want, "/big?n=%d", CM_UPSTREAM_BODY_BYTES);
    h = do_req("GET", want, NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200 && recs[h].r.body_len == CM_UPSTREAM_BODY_BYTES, "body at limit: %s",
          h >= 0 ? recs[h].r.error : "");
    if (h >= 0)
        up_release(h);
    snprintf(want, sizeof want, "/big?n=%d", CM_UPSTREAM_BODY_BYTES + 1);
    CHECK(expect_fail(want, "(CM_UPSTREAM_BODY_BYTES)", 10000), "body over limit");
    snprintf(want, sizeof want, "/bigchunked?n=%d", CM_UPSTREAM_BODY_BYTES + 1000);
    CHECK(expect_fail(want, "larger than", 10000), "chunked body over limit");

    /* broken answers */
    CHECK(expect_fail("/malformed", "malformed answer from the Cal ID API: bad status line", 10000), "malformed");
    CHECK(expect_fail("/truncated", "closed the connection before the answer was complete (truncated)", 10000),
          "truncated");
    CHECK(expect_fail("/reset", "connection reset by the Cal ID API", 10000), "reset");
    h = do_req("GET", "/reset", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 0 && strstr(recs[h].r.error, "may have made the change") == NULL,
          "a failed GET has no outcome note: '%s'", h >= 0 ? recs[h].r.error : "");
    if (h >= 0)
        up_release(h);
    h = do_req("POST", "/reset", "application/json", "{}", 2, 10000);
    CHECK(h >= 0 && recs[h].r.status == 0 && strstr(recs[h].r.error, "connection reset") != NULL &&
              strstr(recs[h].r.error, UP_NOTE_NOT_RESENT) != NULL,
          "a failed POST says the change may have been made: '%s'", h >= 0 ? recs[h].r.error : "");
    if (h >= 0) {
        printf("  POST /reset -> %s\n", recs[h].r.error);
        up_release(h);
    }
    h = do_req("DELETE", "/reset", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 0 && strstr(recs[h].r.error, UP_NOTE_RESENDABLE) != NULL,
          "a failed DELETE says sending it again is safe: '%s'", h >= 0 ? recs[h].r.error : "");
    if (h >= 0)
        up_release(h);

    /* keep-alive: 100 sequential requests from a fresh start (no saved session) */
    server_stats(&c0, &r0);
    CHECK(up_init(url, ca, err, sizeof err) == 0, "re-init: %s", err);
    fh0 = up_full_handshakes;
    t0 = cm_port_now_ms();
    ok = 0;
    for (i = 0; i < 100; i++)
        ok += get_ok("/json", &st) && st == 200;
    server_stats(&c1, &r1);
    CHECK(ok == 100, "100 sequential: %d ok", ok);
    CHECK(up_full_handshakes - fh0 == 1, "100 sequential: %u full handshakes", up_full_handshakes - fh0);
    CHECK(c1 - c0 == 1, "100 sequential: %ld new connections", c1 - c0);
    printf("  100 sequential GET /json after up_init: %d ok in %lu ms, %ld TCP connection(s), %u full handshake(s)\n", ok,
           (unsigned long)(cm_port_now_ms() - t0), c1 - c0, up_full_handshakes - fh0);

    /* resumption: the server closes after every answer */
    server_stats(&c0, &r0);
    fh0 = up_full_handshakes;
    ok = 0;
    for (i = 0; i < 20; i++)
        ok += get_ok("/json-close", &st) && st == 200;
    server_stats(&c1, &r1);
    CHECK(ok == 20, "20 with Connection: close: %d ok", ok);
    CHECK(up_full_handshakes - fh0 == 0, "resumption: %u full handshakes over 20 new connections",
          up_full_handshakes - fh0);
    CHECK(r1 - r0 >= 20, "server saw %ld resumed sessions", r1 - r0);
    printf("  20 GET /json-close: %ld new connections, %ld resumed by the server, %u full handshake(s)\n", c1 - c0,
           r1 - r0, up_full_handshakes - fh0);

    /* concurrency: all slots at once; one more is refused with -1 */
    {
        int hs[CM_MAX_UPSTREAMS], all = 1;
        t0 = cm_port_now_ms();
        for (i = 0; i < CM_MAX_UPSTREAMS; i++) {
            hs[i] = up_submit(100 + (unsigned)i, "GET", "/sleep?ms=400", token, NULL, NULL, 0);
            if (hs[i] >= 0)
                memset(&recs[hs[i]], 0, sizeof recs[hs[i]]);
            else
                all = 0;
        }
        CHECK(all, "submit %d at once", CM_MAX_UPSTREAMS);
        CHECK(up_submit(1, "GET", "/json", token, NULL, NULL, 0) == -1, "one more than CM_MAX_UPSTREAMS -> -1");
        for (i = 0; i < CM_MAX_UPSTREAMS && all; i++)
            wait_done(hs[i], 10000);
        for (i = 0; i < CM_MAX_UPSTREAMS && all; i++) {
            CHECK(recs[hs[i]].r.status == 200 && recs[hs[i]].owner == 100 + (unsigned)i, "parallel %d: %d %s", i,
                  recs[hs[i]].r.status, recs[hs[i]].r.error);
            up_release(hs[i]);
        }
        printf("  %d parallel GET /sleep?ms=400 finished in %lu ms\n", CM_MAX_UPSTREAMS,
               (unsigned long)(cm_port_now_ms() - t0));
        CHECK(cm_port_now_ms() - t0 < 400 * CM_MAX_UPSTREAMS - 200, "parallel requests did not overlap");
    }

    /* the server drops an idle kept-alive connection while no loop runs: the
       close is read when the next request picks the slot, so that request
       goes on a new connection and nothing needs a retry */
    {
        unsigned retries0 = log_retries;
        long posts0 = server_count("POST");
        int hd;
        drop_idle_conns(); /* only one live connection, so the next request reuses it */
        CHECK(get_ok("/json-drop", &st) && st == 200, "json-drop");
        sleep_ms(400);
        h = do_req("POST", "/echo", "application/json", "{}", 2, 10000); /* the slot's connection is gone */
        CHECK(h >= 0 && recs[h].r.status == 200 && !recs[h].r.error[0] && log_retries == retries0,
              "POST after a server-side idle close: %d '%s', %u retries", h >= 0 ? recs[h].r.status : -1,
              h >= 0 ? recs[h].r.error : "", log_retries - retries0);
        if (h >= 0)
            up_release(h);
        CHECK(server_count("POST") == posts0 + 1, "the POST reached the server %ld times", server_count("POST") - posts0);
        /* the same with the loop running while idle: dropped silently, no retry */
        hd = do_req("GET", "/json-drop", NULL, NULL, 0, 10000);
        CHECK(hd >= 0 && recs[hd].r.status == 200, "json-drop 2");
        if (hd >= 0)
            up_release(hd);
        CHECK(hd >= 0 && up.slots[hd].state == UP_S_IDLE, "json-drop 2 kept alive");
        run_for(400);
        CHECK(hd >= 0 && up.slots[hd].state == UP_S_FREE && up.slots[hd].sock == CM_SOCK_INVALID,
              "idle connection closed by the server was dropped silently (state %d)", hd >= 0 ? up.slots[hd].state : -1);
        CHECK(get_ok("/json", &st) && st == 200 && log_retries == retries0, "request after a noticed idle close");
        printf("  server closed an idle connection: noticed before the next request -> %u retries, 1 POST sent\n",
               log_retries - retries0);
    }

    /* submit from inside the callback */
    chain_in_callback = 1;
    chained_handle = -9;
    h = do_req("GET", "/json", NULL, NULL, 0, 10000);
    CHECK(chained_handle >= 0, "submit in callback -> %d", chained_handle);
    if (chained_handle >= 0) {
        CHECK(wait_done(chained_handle, 10000) && recs[chained_handle].r.status == 200 &&
                  recs[chained_handle].owner == 78,
              "chained request");
        up_release(chained_handle);
    }

    /* release from inside the callback */
    release_in_callback = 1;
    h = do_req("GET", "/json", NULL, NULL, 0, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200 && up.slots[h].state != UP_S_DONE, "release in callback");
    release_in_callback = 0;

    /* cancel mid-answer: no callback, the slot is free, the next request works */
    {
        unsigned cb = callbacks_total;
        h = up_submit(9, "GET", "/stall", token, NULL, NULL, 0);
        CHECK(h >= 0, "submit stall");
        if (h >= 0) {
            memset(&recs[h], 0, sizeof recs[h]);
            run_for(300);
            up_cancel(h);
            CHECK(up.slots[h].state == UP_S_FREE && up.slots[h].sock == CM_SOCK_INVALID, "cancel frees the slot");
            run_for(100);
            CHECK(callbacks_total == cb, "no callback after cancel");
        }
        CHECK(get_ok("/json", &st) && st == 200, "request after cancel");
    }

    /* the answer timeout */
    t0 = cm_port_now_ms();
    {
        unsigned long ms = CM_UPSTREAM_ANSWER_MS;
        char text[64];
        if (ms % 1000 == 0)
            snprintf(text, sizeof text, "did not answer within %lu s", ms / 1000);
        else
            snprintf(text, sizeof text, "did not answer within %lu.%03lu s", ms / 1000, ms % 1000);
        CHECK(expect_fail("/stall", text, CM_UPSTREAM_ANSWER_MS + 5000), "stall -> timeout");
        CHECK(cm_port_now_ms() - t0 >= CM_UPSTREAM_ANSWER_MS - 50 && cm_port_now_ms() - t0 < CM_UPSTREAM_ANSWER_MS + 1000,
              "timeout took %lu ms", (unsigned long)(cm_port_now_ms() - t0));
    }

    /* argument checks */
    {
        static char huge[CM_UPSTREAM_REQ_BYTES];
        memset(huge, 'x', sizeof huge);
        static const struct {
            const char *method, *path, *bearer, *ctype, *text;
        } bad[] = {
            { "GET", "/echo", "tok\r\nX-Evil: 1", NULL, "bearer token holds characters" },
            { "GET", "/echo", "t\xc3\xa9", NULL, "bearer token holds characters" },
            { "GET", "/echo x", "t", NULL, "the path must start with '/'" },
            { "GET", "echo", "t", NULL, "the path must start with '/'" },
            { "GE T", "/echo", "t", NULL, "bad HTTP method" },
            { "POST", "/echo", "t", "text/plain\r\nX: y", "content type" },
        };
        size_t k;
        unsigned cb;
        CHECK(up_submit(1, "POST", "/echo", token, "application/json", huge, sizeof huge) == -2, "too large -> -2");
        for (i = 0; i < CM_MAX_UPSTREAMS; i++)
            CHECK(up.slots[i].state == UP_S_FREE || up.slots[i].state == UP_S_IDLE, "slot %d untouched", i);
        for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            cb = callbacks_total;
            h = up_submit(5, bad[k].method, bad[k].path, bad[k].bearer, bad[k].ctype, NULL, 0);
            CHECK(h >= 0 && callbacks_total == cb, "bad arguments %lu: handle %d, no callback inside up_submit",
                  (unsigned long)k, h);
            if (h < 0)
                continue;
            memset(&recs[h], 0, sizeof recs[h]);
            CHECK(wait_done(h, 1000) && recs[h].r.status == 0 && recs[h].owner == 5 &&
                      strstr(recs[h].r.error, bad[k].text) != NULL,
                  "bad arguments %lu: '%s'", (unsigned long)k, recs[h].r.error);
            if (k == 0)
                printf("  bad arguments -> %s\n", recs[h].r.error);
            up_release(h);
            CHECK(up.slots[h].state == UP_S_FREE, "slot free after a refused request");
        }
        /* cancelled before its failure was delivered: no callback */
        cb = callbacks_total;
        h = up_submit(5, "GET", "nope", token, NULL, NULL, 0);
        up_cancel(h);
        run_for(50);
        CHECK(h >= 0 && callbacks_total == cb && up.slots[h].state == UP_S_FREE, "cancel a refused request");
    }

    /* a path prefix in the base URL */
    {
        char url2[300];
        snprintf(url2, sizeof url2, "%s/api/v2", url);
        CHECK(up_init(url2, ca, err, sizeof err) == 0, "re-init with prefix: %s", err);
        h = do_req("GET", "/echo", NULL, NULL, 0, 10000);
        CHECK(h >= 0 && recs[h].r.status == 200 && strncmp(recs[h].r.body, "GET /api/v2/echo HTTP/1.1\r\n", 27) == 0,
              "prefix: %.40s", h >= 0 ? recs[h].r.body : "");
        if (h >= 0)
            up_release(h);
    }
    up_close_all();
}

/*
 * Against upstream_tls_server.py --drop-nth 2 (the second request of every
 * connection is read, then the connection closes unanswered): what is re-sent
 * and what is not. Build with -DCM_UPSTREAM_WRITE_IDLE_MS=300.
 */
static void drop_suite(const char *url, const char *ca)
{
    static const struct {
        const char *method;
        int dropped_ok;      /* the dropped request is re-sent and succeeds */
        const char *note;    /* else its error ends with this */
    } writes[] = {
        { "POST", 0, UP_NOTE_NOT_RESENT },
        { "PATCH", 0, UP_NOTE_NOT_RESENT },
        { "PUT", 1, NULL },
        { "DELETE", 1, NULL },
    };
    char err[256];
    unsigned retries0;
    int h, st;
    size_t k;
    CHECK(up_init(url, ca, err, sizeof err) == 0, "up_init: %s", err);
    if (!up.ready)
        return;
    retries0 = log_retries;
    CHECK(get_ok("/json", &st) && st == 200, "GET 1");
    CHECK(get_ok("/json", &st) && st == 200 && log_retries == retries0 + 1,
          "GET dropped on a kept-alive connection is retried: %d, %u retries", st, log_retries - retries0);
    for (k = 0; k < sizeof writes / sizeof writes[0]; k++) {
        const char *m = writes[k].method;
        unsigned r0 = log_retries;
        drop_idle_conns();
        h = do_req(m, "/echo", "application/json", "{}", 2, 10000); /* request 1 of a new connection */
        CHECK(h >= 0 && recs[h].r.status == 200, "%s 1: %s", m, h >= 0 ? recs[h].r.error : "");
        if (h >= 0)
            up_release(h);
        h = do_req(m, "/echo", "application/json", "{}", 2, 10000); /* request 2: dropped */
        if (h < 0)
            continue;
        if (writes[k].dropped_ok) {
            CHECK(recs[h].r.status == 200 && log_retries == r0 + 1, "%s 2 re-sent: %d '%s', %u retries", m,
                  recs[h].r.status, recs[h].r.error, log_retries - r0);
        } else {
            const char *e = recs[h].r.error;
            size_t n = strlen(e), t = strlen(writes[k].note);
            CHECK(recs[h].r.status == 0 && log_retries == r0 && strstr(e, "closed the connection without answering") &&
                      n > t && strcmp(e + n - t, writes[k].note) == 0,
                  "%s 2 not re-sent: %d '%s', %u retries", m, recs[h].r.status, e, log_retries - r0);
            if (k == 0)
                printf("  POST dropped on a kept-alive connection -> %s\n", e);
        }
        up_release(h);
    }
    /* a POST after the kept-alive connection idled past CM_UPSTREAM_WRITE_IDLE_MS
       takes a new connection, where it is request 1 (not dropped) */
    drop_idle_conns();
    CHECK(get_ok("/json", &st) && st == 200, "GET before idling");
    sleep_ms(CM_UPSTREAM_WRITE_IDLE_MS + 200);
    h = do_req("POST", "/echo", "application/json", "{}", 2, 10000);
    CHECK(h >= 0 && recs[h].r.status == 200, "POST after idling takes a new connection: %d '%s'",
          h >= 0 ? recs[h].r.status : -1, h >= 0 ? recs[h].r.error : "");
    if (h >= 0)
        up_release(h);
    {
        long post = server_count("POST"), patch = server_count("PATCH"), put = server_count("PUT"),
             del = server_count("DELETE");
        printf("  the server received POST %ld, PATCH %ld, PUT %ld, DELETE %ld (each: 1 + dropped [+ re-sent])\n",
               post, patch, put, del);
        CHECK(post == 3 && patch == 2 && put == 3 && del == 3, "requests received: POST %ld PATCH %ld PUT %ld DELETE %ld",
              post, patch, put, del);
    }
    up_close_all();
}

/* One GET must fail with text (or up_init must). */
static void expect_error_mode(const char *url, const char *ca, const char *text, const char *path)
{
    char err[256];
    int h;
    uint64_t t0 = cm_port_now_ms();
    if (up_init(url, ca, err, sizeof err) != 0) {
        printf("  up_init: %s\n", err);
        CHECK(strstr(err, text) != NULL, "up_init error '%s' lacks '%s'", err, text);
        return;
    }
    h = do_req("GET", path, NULL, NULL, 0, 60000);
    CHECK(h >= 0 && recs[h].done == 1, "no result");
    if (h < 0 || !recs[h].done)
        return;
    printf("  GET %s%s -> status %d, error: %s (%lu ms)\n", url, path, recs[h].r.status, recs[h].r.error,
           (unsigned long)(cm_port_now_ms() - t0));
    CHECK(recs[h].r.status == 0 && strstr(recs[h].r.error, text) != NULL, "error '%s' lacks '%s'", recs[h].r.error,
          text);
    up_release(h);
    up_close_all();
}

/* count GETs one after the other; prints the last answer and the handshakes. */
static void get_mode(const char *url, const char *ca, const char *path, int count)
{
    char err[256];
    int h = -1, i, ok = 0;
    if (up_init(url, ca, err, sizeof err) != 0) {
        printf("up_init: %s\n", err);
        failed++;
        return;
    }
    for (i = 0; i < count; i++) {
        if (h >= 0)
            up_release(h);
        h = do_req("GET", path, NULL, NULL, 0, 60000);
        if (h < 0 || !recs[h].done) {
            failed++;
            return;
        }
        ok += recs[h].r.status != 0;
    }
    printf("status %d\ncontent-type %s\nretry-after %s\nerror %s\nbody (%lu bytes):\n%s\n", recs[h].r.status,
           recs[h].r.content_type, recs[h].r.retry_after, recs[h].r.error, (unsigned long)recs[h].r.body_len,
           recs[h].r.body);
    if (count > 1)
        printf("%d requests, %d answered, %u full TLS handshake(s), %u transparent retries\n", count, ok,
               up_full_handshakes, log_retries);
    if (ok == count)
        passed++;
    else
        failed++;
    up_release(h);
    up_close_all();
}

int main(int argc, char **argv)
{
    const char *args[8];
    int n = 0, i;
    test_log_hook = harness_log;
    test_upstream_hook = harness_done;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            log_level = CM_LOG_DEBUG;
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            token = argv[++i];
        else if (n < 8)
            args[n++] = argv[i];
    }
    if (cm_port_init() != 0)
        return 2;
    if (n >= 4 && strcmp(args[2], "--expect-error") == 0) {
        expect_error_mode(args[0], args[1], args[3], n >= 5 ? args[4] : "/json");
    } else if (n >= 3 && strcmp(args[2], "--drop-suite") == 0) {
        drop_suite(args[0], args[1]);
    } else if (n >= 4 && strcmp(args[2], "--get") == 0) {
        get_mode(args[0], args[1], args[3], n >= 5 ? atoi(args[4]) : 1);
    } else {
        printf("upstream: %lu static bytes (%d slots of %lu bytes, trust arena %d, %d anchors)\n",
               (unsigned long)up_static_bytes(), CM_MAX_UPSTREAMS, (unsigned long)sizeof(struct up_slot),
               CM_TRUST_ARENA_BYTES, CM_MAX_TRUST_ANCHORS);
        { /* before up_init: a failure through the callback, and fd 0 is not closed */
            int h = up_submit(3, "GET", "/x", "t", NULL, NULL, 0);
            CHECK(h >= 0 && callbacks_total == 0, "submit before up_init -> %d", h);
            if (h >= 0) {
                memset(&recs[h], 0, sizeof recs[h]);
                up_tick(cm_port_now_ms());
                CHECK(recs[h].done == 1 && recs[h].r.status == 0 && strstr(recs[h].r.error, "not initialised"),
                      "submit before up_init: '%s'", recs[h].r.error);
                up_release(h);
                CHECK(fcntl(0, F_GETFD) != -1 || errno != EBADF, "fd 0 was closed");
            }
        }
        test_parser();
        test_parser_window();
        test_parser_fuzz(200000);
        test_url();
        test_time_and_errors();
        test_ca_loading(n >= 1 ? args[0] : "https://localhost");
        if (n >= 2)
            suite(args[0], args[1]);
    }
    cm_port_cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
