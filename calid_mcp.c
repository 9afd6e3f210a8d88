/*
 * calid_mcp.c - an MCP server for the Cal ID scheduling API.
 *
 * One translation unit, in the order data flows:
 *   1. limits, config and state        6. tool catalog and route map
 *   2. small utilities                 7. tool calls: arguments -> API request
 *   3. strict JSON checks + jsmn       8. upstream HTTPS client (BearSSL)
 *   4. HTTP/1.1 request parser         9. sessions
 *   5. response builder                10. MCP dispatch (both protocol eras)
 *                                      11. connections and the event loop
 *                                          (11a. HTTPS: BearSSL server engine)
 *                                      12. stdio transport
 *                                      13. main (only with CALID_MCP_MAIN)
 *
 * Vendoring: compile this file with calid_mcp.h and one port/ file, link
 * BearSSL (jsmn is header-only), leave CALID_MCP_MAIN undefined and call
 * cm_start()/cm_poll() from the firmware's loop.
 */
#include "calid_mcp.h"

#include <bearssl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#ifdef CM_TRUST_ANCHORS_H
#include CM_TRUST_ANCHORS_H /* const trust anchors from mk/pem2c.py: cm_builtin_anchors[] */
#endif

/* ===================================================================== */
/* 1. Limits, config and state                                           */
/* ===================================================================== */

#define MODERN_VERSION "2026-07-28"
#define LATEST_SESSION_VERSION "2025-11-25"
static const char *const session_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};
#define N_SESSION_VERSIONS (sizeof session_versions / sizeof session_versions[0])

#define SERVER_NAME "calid-mcp"
#define SERVER_TITLE "Cal ID"
#define MAX_BATCH 16            /* JSON-RPC messages in one 2025-03-26 batch */
#define MAX_SEGS (4 * MAX_BATCH + 4)
#ifndef CM_STAGE_BYTES
#define CM_STAGE_BYTES 1024     /* escaped bytes staged per connection while writing (when out[] is full) */
#endif
#define STAGE_BYTES CM_STAGE_BYTES
#ifndef CM_URL_BYTES
#define CM_URL_BYTES 4096       /* path + query of one API request; longer arguments are a tool error */
#endif
#ifndef CM_ARG_BYTES
#define CM_ARG_BYTES 4096       /* one decoded string argument that goes into a URL or is length-checked */
#endif
#ifndef CM_STDIO_OUT_BYTES
#define CM_STDIO_OUT_BYTES CM_OUT_BYTES /* one stdio answer line (a whole batch), as over HTTP */
#endif
#define SCHEMA_TOKENS 256     /* one catalog entry (the largest has 220; the unit tests check them all) */

static struct cm_config cfg;
static int server_started;
static int listener_on_loopback;
static cm_sock_t listener = CM_SOCK_INVALID;
static unsigned char server_secret[32]; /* keys token fingerprints */
static char upstream_host_for_log[128];

/* ===================================================================== */
/* 2. Small utilities                                                    */
/* ===================================================================== */

#ifdef CM_TEST_SEAMS
/* Tests that drive one section alone see its log lines and API answers. */
static void (*test_log_hook)(int level, const char *line);
struct up_result;
static void (*test_upstream_hook)(unsigned owner, int handle, const struct up_result *r);
#endif

/* Wall-clock time as 2026-12-01T19:40:00Z (Unix days to a proleptic Gregorian date, in 400-year eras). */
static void utc_text(int64_t t, char out[24])
{
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400, secs = t - days * 86400, z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    snprintf(out, 24, "%04d-%02d-%02dT%02d:%02d:%02dZ", (int)y, (int)m, (int)d, (int)(secs / 3600),
             (int)(secs / 60 % 60), (int)(secs % 60));
}

/* One log line on stderr: "calid-mcp LEVEL: msg fields" or, with
 * --log-format json, {"time":...,"level":...,"msg":...,json_fields}. */
static void log_write(int level, const char *msg, const char *text_fields, const char *json_fields)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
#ifdef CM_TEST_SEAMS
    if (test_log_hook) {
        char line[1024];
        snprintf(line, sizeof line, "%s%s%s", msg, text_fields ? " " : "", text_fields ? text_fields : "");
        test_log_hook(level, line);
        return;
    }
#endif
    if (cfg.log_json) {
        char t[24];
        const unsigned char *m = (const unsigned char *)msg;
        utc_text(cm_port_unix_time(), t);
        fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", t, names[level]);
        for (; *m; m++) {
            if (*m == '"' || *m == '\\')
                fprintf(stderr, "\\%c", *m);
            else if (*m < 0x20)
                fprintf(stderr, "\\u%04x", *m);
            else
                fputc(*m, stderr);
        }
        fprintf(stderr, "\"%s%s}\n", json_fields ? "," : "", json_fields ? json_fields : "");
        return;
    }
    fprintf(stderr, "calid-mcp %s: %s%s%s\n", names[level], msg, text_fields ? " " : "", text_fields ? text_fields : "");
}

static void cm_logf(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
#ifdef CM_TEST_SEAMS
    if (!test_log_hook) /* a test hook sees every level */
#endif
        if (level > cfg.log_level)
            return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(level, line, NULL, NULL);
}

/* A view into a buffer: the parsers hand these out instead of copies. */
struct view {
    const char *p;
    size_t n;
};

static int view_eq(struct view v, const char *s)
{
    size_t n = strlen(s);
    return v.n == n && memcmp(v.p, s, n) == 0;
}

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Case-insensitive equality with the n bytes at s. */
static int view_ieq_n(struct view v, const char *s, size_t n)
{
    size_t i;
    if (v.n != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)v.p[i]) != lower((unsigned char)s[i]))
            return 0;
    return 1;
}

static int view_ieq(struct view v, const char *s) { return view_ieq_n(v, s, strlen(s)); }
/* The same with a string literal, whose length the compiler knows. */
#define VIEW_IEQ_LIT(v, lit) view_ieq_n(v, lit, sizeof lit - 1)

/* Case-insensitive substring search within a view. */
static int view_icontains(struct view v, const char *s)
{
    size_t i, j, n = strlen(s);
    for (i = 0; i + n <= v.n; i++) {
        for (j = 0; j < n; j++)
            if (lower((unsigned char)v.p[i + j]) != lower((unsigned char)s[j]))
                break;
        if (j == n)
            return 1;
    }
    return 0;
}

/* Equality that takes the same time wherever the first difference is. */
static int const_time_eq(const void *a, size_t an, const void *b, size_t bn)
{
    const unsigned char *x = a, *y = b;
    unsigned char diff = (unsigned char)(an != bn);
    size_t i, n = an < bn ? an : bn;
    for (i = 0; i < n; i++)
        diff |= (unsigned char)(x[i] ^ y[i]);
    return diff == 0;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

/* Keyed fingerprint of a bearer token: sessions remember this, never the token. */
static br_hmac_key_context fp_key; /* HMAC key schedule of server_secret, set once by cm_start */

static void token_fingerprint(const char *tok, size_t n, unsigned char out[16])
{
    br_hmac_context hc;
    unsigned char full[32];
    if (!fp_key.dig_vtable) /* not started by cm_start (unit tests): key it now */
        br_hmac_key_init(&fp_key, &br_sha256_vtable, server_secret, sizeof server_secret);
    br_hmac_init(&hc, &fp_key, 0);
    br_hmac_update(&hc, tok, n);
    br_hmac_out(&hc, full);
    memcpy(out, full, 16);
}

/* Decodes standard or URL-safe base64, ignoring whitespace. Returns the
 * decoded length or -1 on a bad character or length. out may alias nothing. */
static long base64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    int bits = 0, pad = 0;
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)in[i], v;
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad)
            return -1; /* data after padding */
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+' || c == '-')
            v = 62;
        else if (c == '/' || c == '_')
            v = 63;
        else
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (pad > 2 || bits >= 6)
        return -1;
    return (long)o;
}

/* Appends s percent-encoded (everything but RFC 3986 unreserved characters). */
static int percent_encode(const char *s, size_t n, char *out, size_t cap, size_t *len)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~';
        if (*len + (plain ? 1 : 3) >= cap)
            return -1;
        if (plain) {
            out[(*len)++] = (char)c;
        } else {
            out[(*len)++] = '%';
            out[(*len)++] = digits[c >> 4];
            out[(*len)++] = digits[c & 15];
        }
    }
    out[*len] = 0;
    return 0;
}

/* A fixed-capacity text buffer that remembers when it ran out of room. */
struct textbuf {
    char *p;
    size_t cap, len;
    int overflow;
};

static void tb_put(struct textbuf *b, const char *s, size_t n)
{
    if (b->overflow || b->len + n + 1 > b->cap) {
        b->overflow = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void tb_str(struct textbuf *b, const char *s) { tb_put(b, s, strlen(s)); }

static void tb_printf(struct textbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->overflow)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->overflow = 1;
        if (b->len < b->cap)
            b->p[b->len] = 0;
        return;
    }
    b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at u (first byte >= 0x80), or 0
 * when it is not one (bad lead, short, overlong, surrogate, over U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *u, size_t left)
{
    size_t len, k;
    unsigned cp;
    if (u[0] >= 0xc2 && u[0] <= 0xdf) { len = 2; cp = u[0] & 0x1f; }
    else if (u[0] >= 0xe0 && u[0] <= 0xef) { len = 3; cp = u[0] & 0x0f; }
    else if (u[0] >= 0xf0 && u[0] <= 0xf4) { len = 4; cp = u[0] & 0x07; }
    else return 0;
    if (left < len)
        return 0;
    for (k = 1; k < len; k++) {
        if ((u[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (u[k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Extra bytes each byte takes once escaped: 0 plain, 1 for \" \\ \n \r \t \b \f,
 * 5 for \u00XX; NON_ASCII: a UTF-8 sequence, copied if well formed, else
 * replaced by \ufffd, so that every answer is valid JSON whatever the API sent. */
#define NON_ASCII 0xff
static const unsigned char json_esc_extra[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
#define X16 NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, \
            NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII, NON_ASCII
    X16, X16, X16, X16, X16, X16, X16, X16
#undef X16
};

/* Length of s once escaped as the inside of a JSON string. */
static size_t json_escaped_len(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i, total = n;
    for (i = 0; i < n; i++) {
        unsigned extra = json_esc_extra[u[i]];
        if (extra == NON_ASCII) {
            size_t len = utf8_seq_len(u + i, n - i);
            if (len)
                i += len - 1; /* copied as it is */
            else
                total += 5;   /* one bad byte becomes \ufffd */
        } else {
            total += extra;
        }
    }
    return total;
}

/* Escapes src into out as the inside of a JSON string; stops when out is
 * full. Returns source bytes consumed; *out_len gets the bytes written. */
static size_t json_escape_some(const char *src, size_t n, char *out, size_t cap, size_t *out_len)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)src;
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = u[i];
        char two = 0;
        if (json_esc_extra[c] == 0) { /* the common case first */
            if (o == cap)
                break;
            out[o++] = (char)c;
            continue;
        }
        if (json_esc_extra[c] == NON_ASCII) {
            size_t len = utf8_seq_len(u + i, n - i);
            if (len) {
                if (o + len > cap)
                    break;
                memcpy(out + o, u + i, len);
                o += len;
                i += len - 1;
            } else {
                if (o + 6 > cap)
                    break;
                memcpy(out + o, "\\ufffd", 6);
                o += 6;
            }
            continue;
        }
        switch (c) {
        case '"': two = '"'; break;
        case '\\': two = '\\'; break;
        case '\n': two = 'n'; break;
        case '\r': two = 'r'; break;
        case '\t': two = 't'; break;
        case '\b': two = 'b'; break;
        case '\f': two = 'f'; break;
        default: break;
        }
        if (two) {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = two;
        } else if (c < 0x20 || c == 0x7f) {
            if (o + 6 > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = digits[c >> 4];
            out[o + 5] = digits[c & 15];
            o += 6;
        }
    }
    *out_len = o;
    return i;
}

static void tb_json_string(struct textbuf *b, const char *s, size_t n)
{
    size_t need = json_escaped_len(s, n), w;
    if (b->overflow || b->len + need + 3 > b->cap) {
        b->overflow = 1;
        return;
    }
    b->p[b->len++] = '"';
    json_escape_some(s, n, b->p + b->len, b->cap - b->len, &w);
    b->len += w;
    b->p[b->len++] = '"';
    b->p[b->len] = 0;
}

/* ===================================================================== */
/* 3. Strict JSON checks, then jsmn                                      */
/* ===================================================================== */
/*
 * jsmn tokenizes but does not check numbers, literals, UTF-8 or what follows
 * the value, so every body first goes through this strict RFC 8259 checker.
 * It is a state machine fed bytes in pieces of any size (an API answer is
 * checked as it streams through, window by window), with an explicit depth
 * bound; it allocates nothing and names the byte offset of the first problem.
 * json_check() is the same machine fed one whole buffer.
 */
#define JSON_MAX_DEPTH 64

enum {
    JS_VALUE,     /* a value must start here (after white space) */
    JS_ARR_FIRST, /* just after '[': a value or ']' */
    JS_OBJ_FIRST, /* just after '{': a key or '}' */
    JS_OBJ_KEY,   /* after ',' in an object: a key */
    JS_COLON,     /* after a key */
    JS_AFTER,     /* after a value: ',' or the closing bracket, or the end at depth 0 */
    JS_STR,       /* inside a string */
    JS_STR_ESC,   /* after a backslash */
    JS_STR_U,     /* inside \uXXXX: got = hex digits read */
    JS_STR_UTF8,  /* inside a UTF-8 sequence: got of need bytes in seq */
    JS_NUM,       /* inside a number: sub is the part */
    JS_LIT,       /* inside true, false or null: lit, got bytes matched */
    JS_FAIL       /* why and mark tell the first problem */
};
/* The parts of a number: MINUS, DOT, E, ESIGN still need a digit to end. */
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

struct jscan {
    size_t at;            /* bytes fed so far */
    size_t mark;          /* where the number, literal, escape or UTF-8 sequence being read began; the problem's offset */
    const char *why;
    unsigned char state, key, depth, sub, lit, got, need;
    unsigned char seq[4];
    unsigned char objects[(JSON_MAX_DEPTH + 8) / 8]; /* bit d: the container at depth d is an object */
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char *const json_literals[] = {"true", "false", "null"};

static void js_init(struct jscan *j) { memset(j, 0, sizeof *j); }

static int js_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int js_fail(struct jscan *j, size_t pos, const char *why)
{
    j->state = JS_FAIL;
    j->mark = pos;
    j->why = why;
    return -1;
}

static int js_in_object(const struct jscan *j) { return (j->objects[(j->depth - 1) / 8] >> ((j->depth - 1) % 8)) & 1; }

/* The first byte c of a value at offset pos. */
static int js_value_start(struct jscan *j, unsigned char c, size_t pos)
{
    if (j->depth > JSON_MAX_DEPTH)
        return js_fail(j, pos, "nesting deeper than 64 levels");
    j->mark = pos;
    if (c == '{' || c == '[') {
        unsigned char bit = (unsigned char)(1u << (j->depth % 8));
        j->objects[j->depth / 8] = (unsigned char)(c == '{' ? j->objects[j->depth / 8] | bit : j->objects[j->depth / 8] & ~bit);
        j->depth++;
        j->state = c == '{' ? JS_OBJ_FIRST : JS_ARR_FIRST;
    } else if (c == '"') {
        j->state = JS_STR;
        j->key = 0;
    } else if (c == 't' || c == 'f' || c == 'n') {
        j->state = JS_LIT;
        j->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        j->got = 1;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        j->state = JS_NUM;
        j->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
    } else {
        return js_fail(j, pos, "invalid number");
    }
    return 0;
}

/* One byte of a number; 1 when c ends it (c is not part of it), -1 bad. */
static int js_number_byte(struct jscan *j, unsigned char c)
{
    int digit = c >= '0' && c <= '9';
    switch (j->sub) {
    case N_MINUS: if (!digit) return -1; j->sub = c == '0' ? N_ZERO : N_INT; return 0;
    case N_INT: if (digit) return 0; /* fall through */
    case N_ZERO:
        if (c == '.') j->sub = N_DOT;
        else if (c == 'e' || c == 'E') j->sub = N_E;
        else return 1;
        return 0;
    case N_DOT: if (!digit) return -1; j->sub = N_FRAC; return 0;
    case N_FRAC:
        if (digit) return 0;
        if (c != 'e' && c != 'E') return 1;
        j->sub = N_E;
        return 0;
    case N_E:
        if (c == '+' || c == '-') { j->sub = N_ESIGN; return 0; }
        /* fall through */
    case N_ESIGN: if (!digit) return -1; j->sub = N_EXP; return 0;
    default: return digit ? 0 : 1; /* N_EXP */
    }
}

/* One byte inside a string (past the plain run); pos is its offset. */
static int js_string_byte(struct jscan *j, unsigned char c, size_t pos)
{
    switch (j->state) {
    case JS_STR:
        if (c == '"') {
            j->state = j->key ? JS_COLON : JS_AFTER;
        } else if (c < 0x20) {
            return js_fail(j, pos, "control character inside a string");
        } else if (c == '\\') {
            j->state = JS_STR_ESC;
            j->mark = pos;
        } else if (c >= 0x80) {
            j->need = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            if (!j->need)
                return js_fail(j, pos, "invalid UTF-8");
            j->seq[0] = c;
            j->got = 1;
            j->mark = pos;
            j->state = JS_STR_UTF8;
        }
        return 0;
    case JS_STR_ESC:
        if (c == 'u') {
            j->state = JS_STR_U;
            j->got = 0;
        } else if (c && strchr("\"\\/bfnrt", c)) {
            j->state = JS_STR;
        } else {
            return js_fail(j, j->mark, "bad escape in a string");
        }
        return 0;
    case JS_STR_U:
        if (hexval(c) < 0)
            return js_fail(j, j->mark, "bad \\u escape");
        if (++j->got == 4)
            j->state = JS_STR;
        return 0;
    default: /* JS_STR_UTF8 */
        if ((c & 0xc0) != 0x80)
            return js_fail(j, j->mark, "invalid UTF-8");
        j->seq[j->got++] = c;
        if (j->got == j->need) {
            if (utf8_seq_len(j->seq, j->need) != j->need)
                return js_fail(j, j->mark, "invalid UTF-8");
            j->state = JS_STR;
        }
        return 0;
    }
}

/* One byte where structure is expected (white space, brackets, separators). */
static int js_struct_byte(struct jscan *j, unsigned char c, size_t pos)
{
    if (js_ws(c))
        return 0;
    switch (j->state) {
    case JS_VALUE:
        return js_value_start(j, c, pos);
    case JS_ARR_FIRST:
    case JS_OBJ_FIRST:
        if (c == (j->state == JS_ARR_FIRST ? ']' : '}')) {
            j->depth--;
            j->state = JS_AFTER;
            return 0;
        }
        if (j->state == JS_ARR_FIRST)
            return js_value_start(j, c, pos);
        /* fall through */
    case JS_OBJ_KEY:
        if (c != '"')
            return js_fail(j, pos, "expected a string key");
        j->state = JS_STR;
        j->key = 1;
        return 0;
    case JS_COLON:
        if (c != ':')
            return js_fail(j, pos, "expected ':'");
        j->state = JS_VALUE;
        return 0;
    default: /* JS_AFTER */
        if (j->depth == 0)
            return js_fail(j, pos, "extra data after the JSON value");
        if (c == ',') {
            j->state = js_in_object(j) ? JS_OBJ_KEY : JS_VALUE;
        } else if (c == (js_in_object(j) ? '}' : ']')) {
            j->depth--;
        } else {
            return js_fail(j, pos, js_in_object(j) ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        return 0;
    }
}

/* Feeds the next n bytes. 0 while they may still make one JSON value; -1
 * once they cannot (why and mark set; feeding more changes nothing). */
static int js_feed(struct jscan *j, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, base = j->at;
    if (j->state == JS_FAIL)
        return -1;
    while (i < n) {
        unsigned char c;
        int r;
        if (j->state == JS_STR) { /* plain ASCII, the common case, in a tight loop */
            size_t len;
            while (i < n && u[i] >= 0x20 && u[i] < 0x80 && u[i] != '"' && u[i] != '\\')
                i++;
            if (i == n)
                break;
            if (u[i] >= 0x80 && (len = utf8_seq_len(u + i, n - i)) != 0) {
                i += len; /* a whole character in this piece (a cut or bad one goes byte by byte below) */
                continue;
            }
        } else if (j->state == JS_NUM && (j->sub == N_INT || j->sub == N_FRAC || j->sub == N_EXP)) {
            while (i < n && u[i] >= '0' && u[i] <= '9') /* digits, in the same way */
                i++;
            if (i == n)
                break;
        }
        c = u[i];
        if (j->state >= JS_STR && j->state <= JS_STR_UTF8) {
            r = js_string_byte(j, c, base + i);
        } else if (j->state == JS_NUM) {
            r = js_number_byte(j, c);
            if (r < 0)
                return js_fail(j, j->mark, "invalid number");
            if (r == 1) {
                j->state = JS_AFTER;
                continue; /* the byte after the number is read as structure */
            }
        } else if (j->state == JS_LIT) {
            if (c != (unsigned char)json_literals[j->lit][j->got])
                return js_fail(j, j->mark, "invalid literal");
            if (!json_literals[j->lit][++j->got])
                j->state = JS_AFTER;
            r = 0;
        } else {
            r = js_struct_byte(j, c, base + i);
        }
        if (r < 0)
            return -1;
        i++;
    }
    j->at = base + n;
    return 0;
}

/* The input ended: 0 when it was exactly one JSON value, else -1. */
static int js_finish(struct jscan *j)
{
    static const unsigned char ends_number[] = {0, 1, 1, 0, 1, 0, 0, 1}; /* by N_ part */
    switch (j->state) {
    case JS_FAIL: return -1;
    case JS_NUM:
        if (!ends_number[j->sub])
            return js_fail(j, j->mark, "invalid number");
        j->state = JS_AFTER;
        return js_finish(j);
    case JS_AFTER:
        if (j->depth == 0)
            return 0;
        return js_fail(j, j->at, js_in_object(j) ? "expected ',' or '}'" : "expected ',' or ']'");
    case JS_VALUE:
    case JS_ARR_FIRST: return js_fail(j, j->at, "unexpected end of input");
    case JS_OBJ_FIRST:
    case JS_OBJ_KEY: return js_fail(j, j->at, "expected a string key");
    case JS_COLON: return js_fail(j, j->at, "expected ':'");
    case JS_STR: return js_fail(j, j->at, "unterminated string");
    case JS_STR_ESC: return js_fail(j, j->mark, "unterminated string");
    case JS_STR_U: return js_fail(j, j->mark, "short \\u escape");
    case JS_STR_UTF8: return js_fail(j, j->mark, "invalid UTF-8");
    default: return js_fail(j, j->mark, "invalid literal"); /* JS_LIT */
    }
}

/* 0 when s is exactly one valid JSON value (surrounded by optional white
 * space); otherwise -1 with *why and *at describing the first problem. */
static int json_check(const char *s, size_t n, const char **why, size_t *at)
{
    struct jscan j;
    js_init(&j);
    if (js_feed(&j, s, n) == 0 && js_finish(&j) == 0)
        return 0;
    *why = j.why;
    *at = j.mark;
    return -1;
}

/* A parsed JSON document: the text and its jsmn tokens. */
struct jdoc {
    const char *js;
    jsmntok_t *t;
    int n;
};

/* Index of the token after the whole subtree rooted at i. */
static int tok_next(const struct jdoc *d, int i)
{
    int end = d->t[i].end, j = i + 1;
    while (j < d->n && d->t[j].start < end)
        j++;
    return j;
}

static struct view tok_view(const struct jdoc *d, int i)
{
    struct view v;
    v.p = d->js + d->t[i].start;
    v.n = (size_t)(d->t[i].end - d->t[i].start);
    return v;
}

/* The raw JSON text of a token, quotes included for strings. */
static struct view tok_raw(const struct jdoc *d, int i)
{
    struct view v = tok_view(d, i);
    if (d->t[i].type == JSMN_STRING) {
        v.p--;
        v.n += 2;
    }
    return v;
}

static int tok_is_str(const struct jdoc *d, int i, const char *s)
{
    return i >= 0 && d->t[i].type == JSMN_STRING && view_eq(tok_view(d, i), s);
}

/* Value token of key in the object at obj, or -1. Keys are compared raw:
 * the keys we look for have no escapes, and a client message's keys are
 * canonical (json_message_rules, below). */
static int obj_get_n(const struct jdoc *d, int obj, const char *key, size_t n)
{
    int i, k, count;
    if (obj < 0 || d->t[obj].type != JSMN_OBJECT)
        return -1;
    count = d->t[obj].size;
    i = obj + 1;
    for (k = 0; k < count; k++) {
        if (d->t[i].type == JSMN_STRING && (size_t)(d->t[i].end - d->t[i].start) == n &&
            memcmp(d->js + d->t[i].start, key, n) == 0)
            return i + 1;
        i = tok_next(d, i + 1);
    }
    return -1;
}

static int obj_get(const struct jdoc *d, int obj, const char *key) { return obj_get_n(d, obj, key, strlen(key)); }

static int tok_is_null(const struct jdoc *d, int i)
{
    return i >= 0 && d->t[i].type == JSMN_PRIMITIVE && d->js[d->t[i].start] == 'n';
}

/* JSON type name of a token: "object", "array", "string", "integer", "number", "boolean", "null". */
static const char *tok_type_name(const struct jdoc *d, int i)
{
    struct view v;
    size_t k;
    switch (d->t[i].type) {
    case JSMN_OBJECT: return "object";
    case JSMN_ARRAY: return "array";
    case JSMN_STRING: return "string";
    default: break;
    }
    v = tok_view(d, i);
    if (v.p[0] == 't' || v.p[0] == 'f')
        return "boolean";
    if (v.p[0] == 'n')
        return "null";
    for (k = 0; k < v.n; k++)
        if (v.p[k] == '.' || v.p[k] == 'e' || v.p[k] == 'E')
            return "number";
    return "integer";
}

/* Decodes a JSON string token (escapes, surrogate pairs) into out, NUL
 * terminated. Returns the length, or -1 if it is not a string or too long. */
static long tok_unescape(const struct jdoc *d, int i, char *out, size_t cap)
{
    struct view v;
    size_t k, o = 0;
    if (i < 0 || d->t[i].type != JSMN_STRING || cap == 0)
        return -1;
    v = tok_view(d, i);
    for (k = 0; k < v.n; k++) {
        unsigned cp;
        char c = v.p[k];
        if (c != '\\') {
            if (o + 1 >= cap)
                return -1;
            out[o++] = c;
            continue;
        }
        c = v.p[++k];
        switch (c) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            cp = (unsigned)(hexval(v.p[k + 1]) << 12 | hexval(v.p[k + 2]) << 8 |
                            hexval(v.p[k + 3]) << 4 | hexval(v.p[k + 4]));
            k += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && k + 6 < v.n && v.p[k + 1] == '\\' &&
                v.p[k + 2] == 'u') {
                unsigned lo = (unsigned)(hexval(v.p[k + 3]) << 12 | hexval(v.p[k + 4]) << 8 |
                                         hexval(v.p[k + 5]) << 4 | hexval(v.p[k + 6]));
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    k += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                cp = 0xfffd; /* a lone surrogate becomes U+FFFD */
            break;
        default: cp = (unsigned char)c; break;
        }
        if (o + 5 >= cap)
            return -1;
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xc0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xe0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    out[o] = 0;
    return (long)o;
}

/* Parses text into tokens. 0 ok; -1 not JSON (why/at set); -2 too many tokens. */
static int jdoc_parse(struct jdoc *d, const char *js, size_t n, jsmntok_t *toks, unsigned cap,
                      const char **why, size_t *at)
{
    jsmn_parser p;
    int r;
    if (json_check(js, n, why, at) < 0)
        return -1;
    {
        /* jsmn wants a closing byte after a top-level scalar; the checker
         * has already vetted it, so one token describes it. */
        size_t i = 0;
        while (i < n && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r'))
            i++;
        if (js[i] != '{' && js[i] != '[') {
            size_t e = n;
            while (e > i && (js[e - 1] == ' ' || js[e - 1] == '\t' || js[e - 1] == '\n' || js[e - 1] == '\r'))
                e--;
            toks[0].type = js[i] == '"' ? JSMN_STRING : JSMN_PRIMITIVE;
            toks[0].start = (int)(js[i] == '"' ? i + 1 : i);
            toks[0].end = (int)(js[i] == '"' ? e - 1 : e);
            toks[0].size = 0;
            toks[0].parent = -1;
            d->js = js;
            d->t = toks;
            d->n = 1;
            return 0;
        }
    }
    jsmn_init(&p);
    r = jsmn_parse(&p, js, n, toks, cap);
    if (r == JSMN_ERROR_NOMEM)
        return -2;
    if (r < 1) {
        *why = "unparsable JSON";
        *at = 0;
        return -1;
    }
    d->js = js;
    d->t = toks;
    d->n = r;
    return 0;
}

/*
 * Rules for a message a client sent, on top of well-formed JSON: a reader
 * that keeps the first of two equal keys and one that keeps the last must
 * not see different requests, and text that names what runs must not hide
 * anything after a NUL. So every object key, and the method, tool name and
 * resource URI of each message, is first rewritten in place to one
 * canonical spelling (escapes decoded except \" \\ and control characters,
 * hex in lower case; the text only ever gets shorter, the gap becomes white
 * space after the closing quote). Raw comparisons then compare what the
 * strings spell, and a duplicate key is two equal raw keys.
 */

/* Rewrites the string body p[0..n) canonically; returns the new length and
 * sets *control when it spells a control character (U+0000-U+001F, U+007F). */
static size_t json_canon_string(char *p, size_t n, int *control)
{
    static const char short_esc[] = "\bb\ff\nn\rr\tt\"\"\\\\";
    size_t r = 0, w = 0;
    while (r < n) {
        unsigned cp;
        const char *se;
        if (p[r] != '\\') {
            *control |= (unsigned char)p[r] == 0x7f;
            p[w++] = p[r++];
            continue;
        }
        if (p[r + 1] != 'u') {
            cp = p[r + 1] == 'b' ? '\b' : p[r + 1] == 'f' ? '\f' : p[r + 1] == 'n' ? '\n' : p[r + 1] == 'r' ? '\r'
               : p[r + 1] == 't' ? '\t' : (unsigned char)p[r + 1];
            r += 2;
        } else {
            cp = (unsigned)(hexval(p[r + 2]) << 12 | hexval(p[r + 3]) << 8 | hexval(p[r + 4]) << 4 | hexval(p[r + 5]));
            if (cp >= 0xd800 && cp <= 0xdbff && r + 12 <= n && p[r + 6] == '\\' && p[r + 7] == 'u') {
                unsigned lo = (unsigned)(hexval(p[r + 8]) << 12 | hexval(p[r + 9]) << 8 |
                                         hexval(p[r + 10]) << 4 | hexval(p[r + 11]));
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    r += 6;
                }
            }
            r += 6;
        }
        *control |= cp < 0x20 || cp == 0x7f;
        se = cp && cp < 0x80 ? strchr(short_esc, (int)cp) : NULL;
        if (se && (se - short_esc) % 2 == 0) {
            p[w++] = '\\';
            p[w++] = se[1];
        } else if (cp < 0x20 || (cp >= 0xd800 && cp <= 0xdfff)) { /* kept as an escape */
            static const char hex[] = "0123456789abcdef";
            p[w++] = '\\';
            p[w++] = 'u';
            p[w++] = hex[cp >> 12];
            p[w++] = hex[(cp >> 8) & 15];
            p[w++] = hex[(cp >> 4) & 15];
            p[w++] = hex[cp & 15];
        } else if (cp < 0x80) {
            p[w++] = (char)cp;
        } else if (cp < 0x800) {
            p[w++] = (char)(0xc0 | (cp >> 6));
            p[w++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            p[w++] = (char)(0xe0 | (cp >> 12));
            p[w++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            p[w++] = (char)(0x80 | (cp & 0x3f));
        } else {
            p[w++] = (char)(0xf0 | (cp >> 18));
            p[w++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            p[w++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            p[w++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return w;
}

/* Canonicalises string token i of d (whose text is the writable text). */
static int tok_canon(struct jdoc *d, char *text, int i)
{
    int control = 0;
    size_t old_n = (size_t)(d->t[i].end - d->t[i].start);
    size_t n = json_canon_string(text + d->t[i].start, old_n, &control);
    if (n < old_n) {
        text[d->t[i].start + n] = '"';
        memset(text + d->t[i].start + n + 1, ' ', old_n - n);
        d->t[i].end = d->t[i].start + (int)n;
    }
    return control;
}

/* The string token as text for a message, at most 64 bytes. */
#define TOK_FOR_MSG(d, i) (int)(tok_view(d, i).n > 64 ? 64 : tok_view(d, i).n), tok_view(d, i).p

/* Applies the rules above to a parsed client message (the top value or each
 * element of a batch). 0 ok, or -1 with why (for an Invalid Request). */
static int json_message_rules(struct jdoc *d, char *text, char *why, size_t cap)
{
    static const char *const named[][2] = {{"", "method"}, {"params", "name"}, {"params", "uri"}};
    int i, u, k, el, n_msgs;
    for (i = 1; i < d->n; i++) {
        int p = d->t[i].parent;
        if (p < 0 || d->t[p].type != JSMN_OBJECT)
            continue; /* not a key */
        if (tok_canon(d, text, i)) {
            snprintf(why, cap, "the key \"%.*s\" holds a control character", TOK_FOR_MSG(d, i));
            return -1;
        }
        for (u = i - 1; u > p; u--)
            if (d->t[u].parent == p && d->t[u].end - d->t[u].start == d->t[i].end - d->t[i].start &&
                memcmp(text + d->t[u].start, text + d->t[i].start, (size_t)(d->t[i].end - d->t[i].start)) == 0) {
                snprintf(why, cap, "the key \"%.*s\" appears twice in one object", TOK_FOR_MSG(d, i));
                return -1;
            }
    }
    n_msgs = d->t[0].type == JSMN_ARRAY ? d->t[0].size : 1;
    for (k = 0, el = d->t[0].type == JSMN_ARRAY ? 1 : 0; k < n_msgs; k++, el = tok_next(d, el)) {
        size_t m;
        for (m = 0; m < sizeof named / sizeof named[0]; m++) {
            int holder = named[m][0][0] ? obj_get(d, el, named[m][0]) : el, v = obj_get(d, holder, named[m][1]);
            if (v >= 0 && d->t[v].type == JSMN_STRING && tok_canon(d, text, v)) {
                snprintf(why, cap, "%s%s%s holds a control character", named[m][0], named[m][0][0] ? "." : "",
                         named[m][1]);
                return -1;
            }
        }
    }
    return 0;
}

/* ===================================================================== */
/* 4. HTTP/1.1 request parser                                            */
/* ===================================================================== */
/*
 * http_parse_head() is stateless: give it the bytes received so far and it
 * returns the length of the head once the blank line has arrived, 0 while
 * more is needed, or a negative HTTP status (-400, -431, -501, -505) saying
 * why the request cannot be served. Every view points into the caller's
 * buffer. scan_from lets a caller skip bytes already searched for the end of
 * the head, so a client trickling bytes costs O(n) in total, not O(n^2).
 */
struct http_req {
    struct view method, target, path, query;
    int minor;                       /* HTTP/1.minor */
    struct view name[CM_MAX_HEADERS], value[CM_MAX_HEADERS];
    int nh;
    size_t head_len;
    long content_length;             /* -1 when absent */
    int chunked, keep_alive, expect_continue;
    const char *error;               /* the reason behind a negative result */
};

/* A token character (RFC 9110): letters, digits and !#$%&'*+-.^_`|~, one
 * bit per byte value (every byte of a head is tested). */
static int is_tchar(int c)
{
    static const unsigned char tchar_bits[32] = {
        0x00, 0x00, 0x00, 0x00, 0xfa, 0x6c, 0xff, 0x03, 0xfe, 0xff, 0xff, 0xc7, 0xff, 0xff, 0xff, 0x57,
    };
    return c >= 0 && c < 256 && (tchar_bits[c >> 3] >> (c & 7) & 1);
}

static const struct view *http_header(const struct http_req *r, const char *name)
{
    size_t n = strlen(name);
    int i;
    for (i = 0; i < r->nh; i++)
        if (view_ieq_n(r->name[i], name, n))
            return &r->value[i];
    return NULL;
}

/* Finds the end of the head ("\r\n\r\n" or "\n\n"). Returns its length or 0. */
static size_t http_head_end(const char *b, size_t len, size_t scan_from)
{
    size_t i = scan_from > 3 ? scan_from - 3 : 0;
    const char *lf;
    for (; i < len && (lf = memchr(b + i, '\n', len - i)) != NULL; i++) {
        i = (size_t)(lf - b);
        if (i + 1 < len && b[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && b[i + 1] == '\r' && b[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int http_fail(struct http_req *r, int status, const char *why)
{
    r->error = why;
    return -status;
}

/* METHOD SP target SP HTTP/1.x CRLF, from b[0]; *at is past its LF.
 * 0, or a negative status with r->error set. */
static int http_request_line(const char *b, size_t end, size_t *at, struct http_req *r)
{
    size_t i = 0, ls = 0;
    const char *q;
    while (i < end && is_tchar((unsigned char)b[i]))
        i++;
    if (i == ls || i >= end || b[i] != ' ')
        return http_fail(r, 400, "malformed request line");
    r->method.p = b + ls;
    r->method.n = i - ls;
    ls = ++i;
    while (i < end && b[i] != ' ' && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] != 0x7f)
        i++;
    if (i == ls || i >= end || b[i] != ' ')
        return http_fail(r, 400, "malformed request target");
    r->target.p = b + ls;
    r->target.n = i - ls;
    i++;
    if (end - i < 9 || memcmp(b + i, "HTTP/1.", 7) != 0 || b[i + 7] < '0' || b[i + 7] > '9') {
        if (end - i >= 5 && memcmp(b + i, "HTTP/", 5) == 0)
            return http_fail(r, 505, "only HTTP/1.x is served");
        return http_fail(r, 400, "malformed HTTP version");
    }
    r->minor = b[i + 7] - '0';
    i += 8;
    if (b[i] == '\r')
        i++;
    if (b[i] != '\n')
        return http_fail(r, 400, "malformed request line");
    *at = i + 1;
    r->path = r->target;
    q = memchr(r->target.p, '?', r->target.n);
    if (q) {
        r->path.n = (size_t)(q - r->target.p);
        r->query.p = q + 1;
        r->query.n = r->target.n - r->path.n - 1;
    }
    r->keep_alive = r->minor >= 1;
    return 0;
}

/* The header fields from b[*at] to the blank line: views into b. */
static int http_fields(const char *b, size_t end, size_t *at, struct http_req *r)
{
    size_t i = *at;
    while (i < end) {
        size_t ns = i, ne, vs, ve;
        if (b[i] == '\r' || b[i] == '\n')
            break; /* the blank line */
        if (b[i] == ' ' || b[i] == '\t')
            return http_fail(r, 400, "obsolete header line folding");
        while (i < end && is_tchar((unsigned char)b[i]))
            i++;
        ne = i;
        if (ne == ns || b[i] != ':')
            return http_fail(r, 400, "malformed header field name");
        i++;
        while (i < end && (b[i] == ' ' || b[i] == '\t'))
            i++;
        vs = i;
        while (i < end) {
            unsigned char c = (unsigned char)b[i];
            if (c < 0x20 || c == 0x7f) { /* rare: the line's end, a tab, or a refusal */
                if (c == '\r' || c == '\n')
                    break;
                if (c != '\t')
                    return http_fail(r, 400, "control character in a header value");
            }
            i++;
        }
        ve = i;
        while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
            ve--;
        if (b[i] == '\r')
            i++;
        if (b[i] != '\n')
            return http_fail(r, 400, "malformed header line");
        i++;
        if (r->nh == CM_MAX_HEADERS)
            return http_fail(r, 431, "more than CM_MAX_HEADERS header fields");
        r->name[r->nh].p = b + ns;
        r->name[r->nh].n = ne - ns;
        r->value[r->nh].p = b + vs;
        r->value[r->nh].n = ve - vs;
        r->nh++;
    }
    *at = i;
    return 0;
}

/* Content-Length: up to 10 digits (long may be 32 bits); -1 if malformed. */
static long http_content_length(struct view v)
{
    unsigned long long n = 0;
    size_t k;
    if (v.n == 0 || v.n > 10)
        return -1;
    for (k = 0; k < v.n; k++) {
        if (v.p[k] < '0' || v.p[k] > '9')
            return -1;
        n = n * 10 + (unsigned)(v.p[k] - '0');
    }
    return n > 0x7fffffffULL ? 0x7fffffffL : (long)n; /* far over any body limit: answered 413 */
}

/* What the fields say about the body and the connection. */
static int http_framing(struct http_req *r)
{
    int i, seen_cl = 0;
    for (i = 0; i < r->nh; i++) {
        struct view v = r->value[i];
        if (VIEW_IEQ_LIT(r->name[i], "content-length")) {
            long n = http_content_length(v);
            if (n < 0)
                return http_fail(r, 400, "invalid Content-Length");
            if (seen_cl && n != r->content_length)
                return http_fail(r, 400, "conflicting Content-Length headers");
            seen_cl = 1;
            r->content_length = n;
        } else if (VIEW_IEQ_LIT(r->name[i], "transfer-encoding")) {
            if (!view_ieq(v, "chunked"))
                return http_fail(r, 501, "only Transfer-Encoding: chunked is supported");
            if (r->chunked)
                return http_fail(r, 400, "repeated Transfer-Encoding");
            r->chunked = 1;
        } else if (VIEW_IEQ_LIT(r->name[i], "connection")) {
            if (view_icontains(v, "close"))
                r->keep_alive = 0;
            else if (view_icontains(v, "keep-alive"))
                r->keep_alive = 1;
        } else if (VIEW_IEQ_LIT(r->name[i], "expect")) {
            if (!view_ieq(v, "100-continue"))
                return http_fail(r, 417, "only Expect: 100-continue is understood");
            r->expect_continue = 1;
        }
    }
    if (r->chunked && seen_cl)
        return http_fail(r, 400, "both Content-Length and Transfer-Encoding (request smuggling)");
    if (r->chunked && r->minor == 0)
        return http_fail(r, 400, "chunked encoding in an HTTP/1.0 request");
    return 0;
}

/* The request head in b[0..len): its length once whole, 0 while partial, or a
 * negative status (400, 431, 501, 505, 417) with r->error saying why. Only
 * bytes from scan_from on are searched for the blank line. */
static int http_parse_head(const char *b, size_t len, size_t scan_from, size_t max_head, struct http_req *r)
{
    size_t end = http_head_end(b, len, scan_from), at = 0;
    int e;
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    if (end == 0) {
        if (len >= max_head)
            return http_fail(r, 431, "request head larger than CM_MAX_HEADER_BYTES");
        return 0;
    }
    if (end > max_head)
        return http_fail(r, 431, "request head larger than CM_MAX_HEADER_BYTES");
    if ((e = http_request_line(b, end, &at, r)) < 0 || (e = http_fields(b, end, &at, r)) < 0)
        return e;
    r->head_len = end;
    if ((e = http_framing(r)) < 0)
        return e;
    return (int)end;
}

/*
 * Chunked request bodies. chunked_scan() checks the encoded body in p[0..n):
 * 1 complete (*enc_len = bytes of the encoding, *dec_len = decoded size),
 * 0 incomplete, -1 malformed, -2 decoded size over max. chunked_decode()
 * then compacts the data in place.
 */
static int chunked_scan(const char *p, size_t n, size_t max, size_t *enc_len, size_t *dec_len)
{
    size_t i = 0, total = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < n && hexval((unsigned char)p[i]) >= 0) {
            if (++digits > 8)
                return -1;
            size = size * 16 + (size_t)hexval((unsigned char)p[i]);
            i++;
        }
        if (i >= n)
            return 0;
        if (digits == 0 || (p[i] != ';' && p[i] != '\r' && p[i] != '\n' && p[i] != ' ' && p[i] != '\t'))
            return -1; /* "0x5" is not a size of 0 with an extension "x5" */
        while (i < n && p[i] != '\n') { /* chunk extensions are skipped */
            if (p[i] != ';' && p[i] != '\r' && p[i] != ' ' && p[i] != '\t' && !is_tchar((unsigned char)p[i]) && p[i] != '=' && p[i] != '"')
                return -1;
            if (p[i] == '\r' && i + 1 < n && p[i + 1] != '\n')
                return -1; /* a CR ends the line only together with LF */
            i++;
        }
        if (i >= n)
            return 0;
        i++;
        if (size == 0) {
            for (;;) { /* trailer fields until the blank line */
                size_t ls = i;
                while (i < n && p[i] != '\n') {
                    if (p[i] == '\r' && i + 1 < n && p[i + 1] != '\n')
                        return -1;
                    i++;
                }
                if (i >= n)
                    return 0;
                i++;
                if (p[ls] == '\n' || (p[ls] == '\r' && p[ls + 1] == '\n')) { /* the blank line */
                    *enc_len = i;
                    *dec_len = total;
                    return 1;
                }
            }
        }
        total += size;
        if (total > max)
            return -2;
        if (n - i < size)
            return 0;
        i += size;
        if (i < n && p[i] == '\r')
            i++;
        if (i >= n)
            return 0;
        if (p[i] != '\n')
            return -1;
        i++;
    }
}

static void chunked_decode(char *p, size_t enc_len)
{
    size_t i = 0, o = 0;
    (void)enc_len;
    for (;;) {
        size_t size = 0;
        while (hexval((unsigned char)p[i]) >= 0)
            size = size * 16 + (size_t)hexval((unsigned char)p[i++]);
        while (p[i] != '\n')
            i++;
        i++;
        if (size == 0)
            break;
        memmove(p + o, p + i, size);
        o += size;
        i += size;
        if (p[i] == '\r')
            i++;
        i++;
    }
}

/* ===================================================================== */
/* 5. Response builder                                                   */
/* ===================================================================== */
/*
 * An answer body is a list of segments: text written into the connection's
 * own buffer, or views of bytes that live elsewhere (the prebuilt tool list,
 * an API answer), optionally JSON-escaped on the way out. Large answers are
 * therefore never copied, and the length is known before the first byte is
 * sent, so every answer carries a Content-Length; only an API answer larger
 * than its slot's buffer goes out in parts, chunked (conn_stream_part).
 */
struct seg {
    const char *p;
    size_t n;
    unsigned char escape;
};

struct resp {
    struct seg seg[MAX_SEGS];
    int nseg;
    int overflow;          /* text or segments ran out: the answer is replaced by an error */
    int sse;               /* frame each JSON-RPC message as an SSE event */
    struct textbuf tb;     /* backing store for text segments */
};

static void rs_init(struct resp *r, char *buf, size_t cap, int sse)
{
    r->nseg = 0;
    r->overflow = 0;
    r->sse = sse;
    r->tb.p = buf;
    r->tb.cap = cap;
    r->tb.len = 0;
    r->tb.overflow = 0;
}

/* Records text just appended to tb at [from, tb.len) as a segment. */
static void rs_claim(struct resp *r, size_t from)
{
    struct seg *last = r->nseg ? &r->seg[r->nseg - 1] : NULL;
    if (r->tb.overflow) {
        r->overflow = 1;
        return;
    }
    if (r->tb.len == from)
        return;
    if (last && !last->escape && last->p + last->n == r->tb.p + from) {
        last->n += r->tb.len - from;
        return;
    }
    if (r->nseg == MAX_SEGS) {
        r->overflow = 1;
        return;
    }
    r->seg[r->nseg].p = r->tb.p + from;
    r->seg[r->nseg].n = r->tb.len - from;
    r->seg[r->nseg].escape = 0;
    r->nseg++;
}

static void rs_put(struct resp *r, const char *s, size_t n)
{
    size_t from = r->tb.len;
    tb_put(&r->tb, s, n);
    rs_claim(r, from);
}

static void rs_str(struct resp *r, const char *s) { rs_put(r, s, strlen(s)); }

static void rs_printf(struct resp *r, const char *fmt, ...)
{
    size_t from = r->tb.len;
    va_list ap;
    int n;
    if (r->tb.overflow) {
        r->overflow = 1;
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(r->tb.p + from, r->tb.cap - from, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= r->tb.cap - from) {
        r->tb.overflow = 1;
        r->tb.p[from] = 0;
    } else {
        r->tb.len += (size_t)n;
    }
    rs_claim(r, from);
}

static void rs_json_string(struct resp *r, const char *s, size_t n)
{
    size_t from = r->tb.len;
    tb_json_string(&r->tb, s, n);
    rs_claim(r, from);
}

/* Bytes kept elsewhere; they must stay valid until the answer is sent. */
static void rs_ext(struct resp *r, const char *p, size_t n, int escape)
{
    if (n == 0)
        return;
    if (r->nseg == MAX_SEGS) {
        r->overflow = 1;
        return;
    }
    r->seg[r->nseg].p = p;
    r->seg[r->nseg].n = n;
    r->seg[r->nseg].escape = (unsigned char)escape;
    r->nseg++;
}

/* Like rs_ext with escape, but copies into the text buffer (for batches,
 * whose parts must not pin API answers). */
static void rs_escaped_copy(struct resp *r, const char *p, size_t n)
{
    size_t from = r->tb.len, w;
    size_t need = json_escaped_len(p, n);
    if (r->tb.overflow || from + need + 1 > r->tb.cap) {
        r->overflow = 1;
        return;
    }
    json_escape_some(p, n, r->tb.p + from, r->tb.cap - from, &w);
    r->tb.len += w;
    r->tb.p[r->tb.len] = 0;
    rs_claim(r, from);
}

static size_t rs_length(const struct resp *r)
{
    size_t total = 0;
    int i;
    for (i = 0; i < r->nseg; i++)
        total += r->seg[i].escape ? json_escaped_len(r->seg[i].p, r->seg[i].n) : r->seg[i].n;
    return total;
}

/* Takes back what was appended since (mark, nseg): the separator written
 * before a batch element that turned out to need no reply. */
static void rs_rewind(struct resp *r, size_t mark, int nseg)
{
    struct seg *last = nseg ? &r->seg[nseg - 1] : NULL;
    r->tb.len = mark;
    r->nseg = nseg;
    if (last && !last->escape && last->p >= r->tb.p && last->p < r->tb.p + r->tb.cap &&
        last->p + last->n > r->tb.p + mark)
        last->n = (size_t)(r->tb.p + mark - last->p); /* the separator had extended it */
}

/* One JSON-RPC message in the answer: SSE framing when asked for. */
static void msg_begin(struct resp *r)
{
    if (r->sse)
        rs_str(r, "event: message\ndata: ");
}

static void msg_end(struct resp *r)
{
    if (r->sse)
        rs_str(r, "\n\n");
}

/* ===================================================================== */
/* 6. Tool catalog and route map                                         */
/* ===================================================================== */
/*
 * One row per tool: the MCP side (name, title, description, input schema,
 * hints) and the API side (method, path) together, so that correcting a route
 * is a one-line change. {x} in a path is the argument x, percent-encoded;
 * other arguments go to the query string (GET, DELETE) or the JSON body
 * (POST, PUT, PATCH), copied as the caller gave them. Each row names its
 * evidence: "source" rows follow the API's own route and schema (the section
 * of the API reading in brackets), "inferred" rows (contacts) follow the
 * API's conventions because the API publishes no such route.
 *
 * The input schemas use the API's field names, required lists, types, enums
 * and limits. They offer the fields a person would ask for, not every column,
 * and stay open (no additionalProperties:false), so other API fields still
 * pass through to the request.
 *
 * The catalog is JSON built by the preprocessor: every tools/list entry is
 * one string literal, and all of them are members of one const struct, back
 * to back, so that tools/list is a single view of read-only data.
 */
enum {
    T_READ = 1,        /* reads only: readOnlyHint */
    T_DESTRUCTIVE = 2, /* deletes, cancels or removes: destructiveHint */
    T_IDEMPOTENT = 4,  /* repeating it changes nothing more: idempotentHint */
    T_MULTIPART = 8,   /* sends multipart/form-data built from a base64 argument */
    T_ALWAYS_BODY = 16, /* the API refuses an empty body: send {} at least */
    T_ACTS_BEFORE_5XX = 32 /* the API may answer 5xx after it acted: say so */
};
/* The tool error text of a 5xx answer to a T_ACTS_BEFORE_5XX tool (the API's
 * reschedule answer schema wants a field the handler does not send). */
#define ACTED_BEFORE_5XX                                                                                     \
    "The booking may have been rescheduled even so: the API can answer 500 after rescheduling. Check with " \
    "get_booking_by_id before retrying."

/* --- JSON text at compile time ---------------------------------------- */
/* JS(text): a JSON string. The texts below contain no " and no backslash;
 * the start-up check (tool_list_check) refuses a catalog that is not JSON. */
#define JS(text) "\"" text "\""
#define ID_(x) x
#define CM_CAT_(a, b) a##b
#define CM_CAT(a, b) CM_CAT_(a, b)
#define CM_NARGS(...) CM_NARGS_(__VA_ARGS__, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, \
                                16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define CM_NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, \
                  a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, n, ...)                      \
    n
/* MAP(f, a, b, c) -> f(a) "," f(b) "," f(c): a JSON list of up to 32 items */
#define MAP(f, ...) CM_CAT(MAP_, CM_NARGS(__VA_ARGS__))(f, __VA_ARGS__)
#define MAP_1(f, a) f(a)
#define MAP_2(f, a, ...) f(a) "," MAP_1(f, __VA_ARGS__)
#define MAP_3(f, a, ...) f(a) "," MAP_2(f, __VA_ARGS__)
#define MAP_4(f, a, ...) f(a) "," MAP_3(f, __VA_ARGS__)
#define MAP_5(f, a, ...) f(a) "," MAP_4(f, __VA_ARGS__)
#define MAP_6(f, a, ...) f(a) "," MAP_5(f, __VA_ARGS__)
#define MAP_7(f, a, ...) f(a) "," MAP_6(f, __VA_ARGS__)
#define MAP_8(f, a, ...) f(a) "," MAP_7(f, __VA_ARGS__)
#define MAP_9(f, a, ...) f(a) "," MAP_8(f, __VA_ARGS__)
#define MAP_10(f, a, ...) f(a) "," MAP_9(f, __VA_ARGS__)
#define MAP_11(f, a, ...) f(a) "," MAP_10(f, __VA_ARGS__)
#define MAP_12(f, a, ...) f(a) "," MAP_11(f, __VA_ARGS__)
#define MAP_13(f, a, ...) f(a) "," MAP_12(f, __VA_ARGS__)
#define MAP_14(f, a, ...) f(a) "," MAP_13(f, __VA_ARGS__)
#define MAP_15(f, a, ...) f(a) "," MAP_14(f, __VA_ARGS__)
#define MAP_16(f, a, ...) f(a) "," MAP_15(f, __VA_ARGS__)
#define MAP_17(f, a, ...) f(a) "," MAP_16(f, __VA_ARGS__)
#define MAP_18(f, a, ...) f(a) "," MAP_17(f, __VA_ARGS__)
#define MAP_19(f, a, ...) f(a) "," MAP_18(f, __VA_ARGS__)
#define MAP_20(f, a, ...) f(a) "," MAP_19(f, __VA_ARGS__)
#define MAP_21(f, a, ...) f(a) "," MAP_20(f, __VA_ARGS__)
#define MAP_22(f, a, ...) f(a) "," MAP_21(f, __VA_ARGS__)
#define MAP_23(f, a, ...) f(a) "," MAP_22(f, __VA_ARGS__)
#define MAP_24(f, a, ...) f(a) "," MAP_23(f, __VA_ARGS__)
#define MAP_25(f, a, ...) f(a) "," MAP_24(f, __VA_ARGS__)
#define MAP_26(f, a, ...) f(a) "," MAP_25(f, __VA_ARGS__)
#define MAP_27(f, a, ...) f(a) "," MAP_26(f, __VA_ARGS__)
#define MAP_28(f, a, ...) f(a) "," MAP_27(f, __VA_ARGS__)
#define MAP_29(f, a, ...) f(a) "," MAP_28(f, __VA_ARGS__)
#define MAP_30(f, a, ...) f(a) "," MAP_29(f, __VA_ARGS__)
#define MAP_31(f, a, ...) f(a) "," MAP_30(f, __VA_ARGS__)
#define MAP_32(f, a, ...) f(a) "," MAP_31(f, __VA_ARGS__)

/* --- JSON Schema pieces ----------------------------------------------- */
/* SCHEMA(PROPS(...), REQUIRED("a", "b")) or SCHEMA(PROPS(...), NONE) */
#define SCHEMA(props, required) "{\"type\":\"object\",\"properties\":{" props "}" required "}"
#define NO_PROPS ""
#define PROPS(...) MAP(ID_, __VA_ARGS__)
#define REQUIRED(...) ",\"required\":[" MAP(JS, __VA_ARGS__) "]"
#define NONE ""
#define VALUES(...) MAP(JS, __VA_ARGS__)
/* keywords of a property, each with its leading comma */
#define TYPE(t) ",\"type\":" JS(t)
#define TYPE_EITHER(a, b) ",\"type\":[" JS(a) "," JS(b) "]"
#define FORMAT(f) ",\"format\":" JS(f)
#define MIN_LENGTH(n) ",\"minLength\":" #n
#define MAX_LENGTH(n) ",\"maxLength\":" #n
#define MINIMUM(n) ",\"minimum\":" #n
#define MAXIMUM(n) ",\"maximum\":" #n
#define ONE_OF(values) ",\"enum\":[" values "]"
#define ITEMS(type, more) ",\"items\":{\"type\":" JS(type) more "}"
/* one property: "name":{"description":...,<keywords>} */
#define PROP(name, desc, keywords) JS(name) ":{\"description\":" JS(desc) keywords "}"
#define STR(name, desc) PROP(name, desc, TYPE("string"))
#define STR_FORMAT(name, format, desc) PROP(name, desc, TYPE("string") FORMAT(format))
#define STR_NONEMPTY(name, desc) PROP(name, desc, TYPE("string") MIN_LENGTH(1))
#define STR_LEN(name, lo, hi, desc) PROP(name, desc, TYPE("string") MIN_LENGTH(lo) MAX_LENGTH(hi))
#define INT(name, desc) PROP(name, desc, TYPE("integer"))
#define INT_AT_LEAST(name, lo, desc) PROP(name, desc, TYPE("integer") MINIMUM(lo))
#define INT_RANGE(name, lo, hi, desc) PROP(name, desc, TYPE("integer") MINIMUM(lo) MAXIMUM(hi))
#define BOOL(name, desc) PROP(name, desc, TYPE("boolean"))
#define ENUM(name, values, desc) PROP(name, desc, TYPE("string") ONE_OF(values))
#define ARRAY(name, items, desc) PROP(name, desc, TYPE("array") items)
#define OBJECT(name, props, desc) PROP(name, desc, TYPE("object") ",\"properties\":{" props "}")
#define OBJECT_REQ(name, props, required, desc) PROP(name, desc, TYPE("object") ",\"properties\":{" props "}" required)
#define OPEN_OBJECT(name, desc) PROP(name, desc, TYPE("object"))
#define ANY(name, desc) PROP(name, desc, "")
/* array items */
#define OF_STR ITEMS("string", "")
#define OF_EMAIL ITEMS("string", FORMAT("email"))
#define OF_ID ITEMS("integer", MINIMUM(1))
#define OF_WEEKDAY ITEMS("integer", MINIMUM(0) MAXIMUM(6))
#define OF_OBJECT ITEMS("object", "")
#define OF_ENUM(values) ITEMS("string", ONE_OF(values))

/* --- Shared properties, each written once ----------------------------- */
/* Ids: integers wherever the API parses them with parseInt / z.coerce */
#define ID(name, desc) PROP(name, desc, TYPE("integer") MINIMUM(1))
/* Path ids also ask 2026-07-28 clients to mirror them as an Mcp-Param-{Name}
 * header (x-mcp-header), so that a gateway can route on them; the name is the
 * property's with its first letter in capitals (check_mcp_params relies on it). */
#define MCP_HEADER(h) ",\"x-mcp-header\":" JS(h)
#define PATH_ID(name, header, desc) PROP(name, desc, TYPE("integer") MINIMUM(1) MCP_HEADER(header))
#define PATH_STR(name, header, desc) PROP(name, desc, TYPE("string") MCP_HEADER(header))
#define ID_BOOKING PATH_ID("bookingId", "BookingId", "Numeric booking id (id, not uid), from get_booking or create_booking.")
#define ID_EVENT_TYPE                                                                                        \
    PATH_ID("eventTypeId", "EventTypeId", "Numeric event type id, from get_event_types or create_eventtype.")
#define ID_TEAM PATH_ID("teamId", "TeamId", "Numeric team id, from get_teams or create_team.")
#define ID_TEAM_EVENT_TYPE                                                                                   \
    PATH_ID("eventTypeId", "EventTypeId", "Numeric id of the team's event type, from get_team_event_types.")
#define ID_MEMBERSHIP                                                                                       \
    PATH_ID("membershipId", "MembershipId",                                                                  \
            "Numeric membership id (not the user id), from get_team_memberships or add_team_member.")
#define ID_SCHEDULE PATH_ID("scheduleId", "ScheduleId", "Numeric schedule id, from get_schedule or create_schedule.")
#define ID_AVAILABILITY                                                                                     \
    PATH_ID("availabilityId", "AvailabilityId",                                                              \
            "Numeric id of one availability window, from get_schedule (availability[].id) or create_availability.")
#define ID_CONTACT PATH_ID("contactId", "ContactId", "Numeric contact id, from list_contacts or create_contact.")
#define ID_WEBHOOK PATH_STR("webhookId", "WebhookId", "Webhook id (a uuid string), from get_webhook or create_webhook.")
#define ID_SLOT PATH_STR("uid", "Uid", "The reservation's uid: reservationUid from create_slots_reserve.")
/* Times */
#define TZ_NAME "IANA time zone name, e.g. 'Europe/Berlin' or 'America/New_York'."
#define TIME_ZONE(what) STR("timeZone", what " " TZ_NAME)
#define DATE_TIME(name, what) STR_FORMAT(name, "date-time", what " ISO 8601 date-time with an offset, e.g. '2026-03-02T14:30:00Z'.")
#define WEEK_START(what) ENUM("weekStart", VALUES("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"), what)
/* Paging: page-numbered lists answer meta.pagination {page, limit, total, totalPages} */
#define PAGE INT_AT_LEAST("page", 1, "Page number, from 1 (default 1).")
#define LIMIT(max, dflt) INT_RANGE("limit", 1, max, "Items per page, 1.." #max " (default " #dflt ").")
#define ORDER_DIR ENUM("orderDir", VALUES("asc", "desc"), "Sort direction (default desc).")
/* Availability windows (3.2, 3.3): the API needs all four fields, on update too */
#define AVAILABILITY_WINDOW                                                                                  \
    ID("scheduleId", "Numeric id of the schedule the window belongs to, from get_schedule."),                \
    ARRAY("days", OF_WEEKDAY, "Weekdays: 0=Sunday, 1=Monday ... 6=Saturday."),                               \
    STR("startTime", "Start time of day, in the schedule's time zone, as an ISO 8601 date-time of which "    \
                     "only the time counts: '1970-01-01T09:00:00.000Z' for 09:00."),                           \
    STR("endTime", "End time of day, written like startTime: '1970-01-01T17:00:00.000Z' for 17:00.")
#define AVAILABILITY_REQUIRED "scheduleId", "days", "startTime", "endTime"
/* Schedules (3.6, 3.7): name and timeZone, both always */
#define SCHEDULE_FIELDS STR("name", "Schedule name, e.g. 'Working hours'."), TIME_ZONE("Time zone of its times:")
/* Event types (4.18): the create body; updates take the same fields */
#define EVENT_TYPE_FIELDS                                                                                    \
    STR_LEN("title", 4, 255, "Title shown to bookers, e.g. 'Sales demo'."),                                  \
    STR_LEN("slug", 4, 100, "Booking link part, unique per owner, e.g. 'sales-demo'."),                      \
    INT_AT_LEAST("length", 10, "Duration in minutes (default 15)."),                                              \
    STR("description", "Text on the booking page."),                                                         \
    ARRAY("locations", OF_OBJECT,                                                                \
          "Where meetings happen, objects with a type: [{type: 'integrations:daily'}], "                       \
          "[{type: 'inPerson', address: 'Main St 1'}], [{type: 'link', link: 'https://...'}]."),               \
    BOOL("hidden", "Hide from the public profile (default false)."),                                         \
    ID("scheduleId", "Schedule whose availability applies (get_schedule); the default schedule if omitted."), \
    BOOL("requiresConfirmation", "Bookings wait for the host to accept (default false)."),                   \
    INT_AT_LEAST("minimumBookingNotice", 0, "Minimum notice in minutes (default 120)."),                          \
    INT_AT_LEAST("beforeEventBuffer", 0, "Free minutes before each meeting (default 0)."),                        \
    INT_AT_LEAST("afterEventBuffer", 0, "Free minutes after each meeting (default 0)."),                          \
    INT_AT_LEAST("slotInterval", 1, "Minutes between offered start times (default: the length)."),                \
    INT_AT_LEAST("seatsPerTimeSlot", 1, "Seats per slot for group events; omit for one booking per slot."),       \
    INT_AT_LEAST("price", 0, "Price in the currency's smallest unit, e.g. cents (default 0: free)."),             \
    STR("currency", "Currency of the price, e.g. 'usd' (default 'usd').")
#define TEAM_EVENT_TYPE_FIELDS                                                                               \
    EVENT_TYPE_FIELDS,                                                                                       \
    ENUM("schedulingType", VALUES("ROUND_ROBIN", "COLLECTIVE", "MANAGED"),                                   \
         "How hosts are assigned: ROUND_ROBIN (one free host per booking), COLLECTIVE (all hosts attend), "    \
         "MANAGED (a copy per member)."),                                                                      \
    BOOL("assignAllTeamMembers", "Make every current and future member a host (default false).")
#define EVENT_TYPE_PATCH_NOTE                                                                                \
    " The API may fill fields left out with their create defaults (length 15, hidden false, "               \
    "minimumBookingNotice 120, buffers 0, price 0): send the current values of settings to keep (read them "  \
    "first)."
/* Event type lists (4.17, 4.27) */
#define EVENT_TYPE_QUERY                                                                                     \
    PAGE, LIMIT(100, 10),                                                                                    \
    ENUM("orderBy", VALUES("id", "title", "slug", "length", "position"), "Sort field (none if omitted)."),   \
    ORDER_DIR, STR("title", "Only titles containing this text (any case)."),                                 \
    STR("slug", "Only slugs containing this text."), BOOL("hidden", "Only hidden (true) or visible (false) ones.")
/* Teams (4.23): the create body; updates take the same fields */
#define TEAM_FIELDS(time_zone)                                                                               \
    STR_LEN("name", 1, 255, "Team name."),                                                                   \
    STR_LEN("slug", 1, 100, "Team page link part; made from the name if omitted."),                          \
    STR("bio", "About text on the team page."), STR_FORMAT("logoUrl", "uri", "URL of the team logo."),       \
    BOOL("isTeamPrivate", "Make the team private (default false)."),                                         \
    BOOL("hideBookATeamMember", "Hide the book-a-team-member option (default false)."),                      \
    STR("brandColor", "Brand color, hex, e.g. '#292929'."), time_zone,                                       \
    WEEK_START("First day of the week (default Monday)."),                                                   \
    INT_RANGE("timeFormat", 12, 24, "Clock format: 12 or 24.")
/* Memberships (4.33, 4.35) */
#define ROLE(what) ENUM("role", VALUES("MEMBER", "ADMIN", "OWNER"), what)
#define MEMBERSHIP_FIELDS(role_desc, accepted_desc, impersonation_desc)                                      \
    ROLE(role_desc), BOOL("acceptedInvitation", accepted_desc), BOOL("impersonation", impersonation_desc)
/* Slot reservations (4.39, 4.41) */
#define SLOT_RESERVATION(event_type_desc)                                                                    \
    ID("eventTypeId", event_type_desc), DATE_TIME("slotStart", "Start of the slot to hold:"),                \
    PROP("slotDuration", "Length in minutes, for event types offering several lengths.",                     \
         TYPE_EITHER("integer", "string")),                                                              \
    INT_AT_LEAST("reservationDuration", 1, "How long to hold it, in minutes (default 5).")
/* Webhooks (4.48, 4.50); the trigger list is Cal.com's, the fork's enum is unpublished */
#define WEBHOOK_TRIGGERS                                                                                     \
    VALUES("BOOKING_CREATED", "BOOKING_RESCHEDULED", "BOOKING_CANCELLED", "BOOKING_REQUESTED",               \
           "BOOKING_REJECTED", "BOOKING_PAYMENT_INITIATED", "BOOKING_PAID", "BOOKING_NO_SHOW_UPDATED",        \
           "MEETING_STARTED", "MEETING_ENDED", "RECORDING_READY", "RECORDING_TRANSCRIPTION_GENERATED",        \
           "INSTANT_MEETING", "FORM_SUBMITTED", "FORM_SUBMITTED_NO_EVENT", "OOO_CREATED",                 \
           "AFTER_HOSTS_CAL_VIDEO_NO_SHOW", "AFTER_GUESTS_CAL_VIDEO_NO_SHOW")
#define WEBHOOK_FIELDS(url_desc)                                                                             \
    STR("subscriberUrl", url_desc),                                                                          \
    ARRAY("eventTriggers", OF_ENUM(WEBHOOK_TRIGGERS), "Events that fire it; it fires for none if empty."),   \
    BOOL("active", "Delivering (true, the default) or paused (false)."),                                     \
    STR("payloadTemplate", "Custom JSON payload with {{variables}} such as {{title}} or {{startTime}}."),    \
    STR("secret", "Shared secret the deliveries are signed with.")
/* Contacts (inferred: Cal ID's own contacts schema) */
#define CONTACT_FIELDS                                                                                       \
    STR_LEN("name", 1, 255, "Full name."),                                                                   \
    PROP("email", "Email address.", TYPE("string") FORMAT("email") MAX_LENGTH(320)),                   \
    STR_LEN("phone", 0, 50, "Phone number."), STR_LEN("notes", 0, 5000, "Free-form notes.")

/* Hint sets per kind of tool: the flags and the annotations they show */
#define HINTS(ro, de, id) ",\"readOnlyHint\":" #ro ",\"destructiveHint\":" #de ",\"idempotentHint\":" #id
#define K_READS_FLAGS (T_READ | T_IDEMPOTENT)
#define K_READS_HINTS HINTS(true, false, true)
#define K_CREATES_FLAGS 0
#define K_CREATES_HINTS HINTS(false, false, false)
#define K_UPDATES_FLAGS T_IDEMPOTENT
#define K_UPDATES_HINTS HINTS(false, false, true)
#define K_DELETES_FLAGS (T_DESTRUCTIVE | T_IDEMPOTENT)
#define K_DELETES_HINTS HINTS(false, true, true)
#define K_CANCELS_FLAGS T_DESTRUCTIVE
#define K_CANCELS_HINTS HINTS(false, true, false)
#define K_DECIDES_FLAGS (T_DESTRUCTIVE | T_IDEMPOTENT) /* a decision that cannot be taken back */
#define K_DECIDES_HINTS HINTS(false, true, true)

/*
 * The catalog, in tools/list order:
 * X(name, method, path, kind, extra flags, title, description, input schema)
 */
#define CM_TOOLS(X)                                                                                          \
/* ---- Availability & Schedules ---- */                                                                     \
/* source [3.2] POST /availability */                                                                        \
X(create_availability, "POST", "/availability", CREATES, 0, "Add availability window",                          \
  "Add a weekly window of bookable time to one of the current user's schedules: weekdays plus start and "    \
  "end time of day. Returns the window with its numeric id.",                                                 \
  SCHEMA(PROPS(AVAILABILITY_WINDOW), REQUIRED(AVAILABILITY_REQUIRED)))                                        \
/* source [3.6] POST /schedule */                                                                            \
X(create_schedule, "POST", "/schedule", CREATES, 0, "Create schedule",                                           \
  "Create a named availability schedule in one time zone. The API gives it Monday-Friday 09:00-17:00; "     \
  "change the hours with create_availability / update_availability. Returns the schedule with its id.",      \
  SCHEMA(PROPS(SCHEDULE_FIELDS), REQUIRED("name", "timeZone")))                                              \
/* source [3.4] DELETE /availability/:availability */                                                        \
X(delete_availability, "DELETE", "/availability/{availabilityId}", DELETES, 0, "Delete availability window",    \
  "Delete one availability window of a schedule; the schedule itself stays.",                                 \
  SCHEMA(PROPS(ID_AVAILABILITY), REQUIRED("availabilityId")))                                                 \
/* source [3.8] DELETE /schedule/:schedule */                                                                \
X(delete_schedule, "DELETE", "/schedule/{scheduleId}", DELETES, 0, "Delete schedule",                           \
  "Delete one of the current user's schedules with all of its availability windows.",                        \
  SCHEMA(PROPS(ID_SCHEDULE), REQUIRED("scheduleId")))                                                         \
/* source [3.1] GET /availability */                                                                         \
X(get_availability, "GET", "/availability", READS, 0, "Get availability",                                        \
  "Get the current user's availability for one event type between two dates: working hours, date ranges, " \
  "busy times and time zone. Use get_slots for bookable start times.",                                       \
  SCHEMA(PROPS(STR("dateFrom", "Start of the range: a date 'YYYY-MM-DD' or an ISO 8601 date-time."),       \
               STR("dateTo", "End of the range, written like dateFrom."),                                     \
               ID("eventTypeId", "Numeric event type id, from get_event_types.")),                            \
         REQUIRED("dateFrom", "dateTo", "eventTypeId")))                                                      \
/* source [3.5] GET /schedule (no paging) */                                                                 \
X(get_schedule, "GET", "/schedule", READS, 0, "List schedules",                                                  \
  "List the current user's schedules, each with its numeric id, name, time zone and availability windows "  \
  "(each window with its id, days, startTime, endTime).",                                                    \
  SCHEMA(NO_PROPS, NONE))                                                                                     \
/* source [3.3] PATCH /availability/:availability */                                                         \
X(update_availability, "PATCH", "/availability/{availabilityId}", UPDATES, 0, "Update availability window",     \
  "Change one availability window. The API needs all four fields even to change one: send the current "     \
  "values (get_schedule) of those that stay.",                                                                \
  SCHEMA(PROPS(ID_AVAILABILITY, AVAILABILITY_WINDOW), REQUIRED("availabilityId", AVAILABILITY_REQUIRED)))    \
/* source [3.7] PATCH /schedule/:schedule */                                                                 \
X(update_schedule, "PATCH", "/schedule/{scheduleId}", UPDATES, 0, "Update schedule",                            \
  "Rename a schedule or change its time zone. The API needs both name and timeZone every time: send the "   \
  "current value (get_schedule) of the one that stays. Hours: update_availability.",                         \
  SCHEMA(PROPS(ID_SCHEDULE, SCHEDULE_FIELDS), REQUIRED("scheduleId", "name", "timeZone")))                  \
                                                                                                              \
/* ---- Booking ---- */                                                                                      \
/* source [2.10] POST /booking */                                                                            \
X(create_booking, "POST", "/booking", CREATES, 0, "Create booking",                                              \
  "Book a meeting at a free time of an event type (find one with get_slots). end must be start plus the "   \
  "event length. Without responses.location the API books a Google Meet call. Returns the booking with "    \
  "its numeric id, uid and status.",                                                                           \
  SCHEMA(PROPS(ID("eventTypeId", "Numeric event type id, from get_event_types; or give eventTypeSlug."),     \
               STR_LEN("eventTypeSlug", 1, 255, "The event type's slug, instead of eventTypeId."),            \
               DATE_TIME("start", "Start, one of the get_slots times:"),                                      \
               DATE_TIME("end", "End, start plus the event type's length:"),                                  \
               TIME_ZONE("Attendee's time zone (required here: the API would use Asia/Kolkata):"),            \
               OBJECT_REQ("responses",                                                                        \
                      PROPS(STR("name", "Attendee's full name."),                                             \
                            STR_FORMAT("email", "email", "Attendee's email."),                                \
                            ANY("location", "One of the event type's locations: a type such as "              \
                                            "'integrations:daily' or 'inPerson', or {value, optionValue}. "   \
                                            "Omitted: Google Meet."),                                         \
                            STR("phone", "Attendee's phone number."),                                          \
                            ARRAY("guests", OF_EMAIL, "Extra attendees' emails."),                            \
                            STR("notes", "Message to the host.")),                                             \
                      REQUIRED("name", "email"),                                                              \
                      "Booking form answers; custom booking fields go here too, by field name."),             \
               STR("language", "Language of the emails, e.g. 'en' (default 'en')."),                          \
               OPEN_OBJECT("metadata", "Own key/value data stored with the booking.")),                       \
         REQUIRED("start", "end", "timeZone", "responses")))                                                  \
/* source [2.9] GET /booking */                                                                              \
X(get_booking, "GET", "/booking", READS, 0, "List bookings",                                                     \
  "List the current user's bookings (default: upcoming), each with its numeric id, uid, title, status, "    \
  "startTime, endTime and attendees.",                                                                         \
  SCHEMA(PROPS(ENUM("status", VALUES("upcoming", "recurring", "past", "cancelled", "unconfirmed"),           \
                    "Which bookings (default upcoming); unconfirmed ones wait for the host."),                \
               STR_FORMAT("attendeeEmail", "email", "Only bookings with this attendee email."),               \
               STR("attendeeName", "Only bookings with this attendee name."),                                  \
               ARRAY("eventTypeIds", OF_ID, "Only these event types."),                                        \
               ARRAY("teamIds", OF_ID, "Only these teams' event types."),                                      \
               DATE_TIME("afterStartDate", "Only bookings starting after:"),                                  \
               DATE_TIME("beforeEndDate", "Only bookings ending before:"),                                    \
               ENUM("sortStart", VALUES("asc", "desc"), "Order by start time."), PAGE, LIMIT(500, 100)),     \
         NONE))                                                                                               \
/* source [2.11] GET /booking/:id */                                                                         \
X(get_booking_by_id, "GET", "/booking/{bookingId}", READS, 0, "Get booking",                                     \
  "Get one booking: title, status, start and end time, event type, location, attendees and payment.",        \
  SCHEMA(PROPS(ID_BOOKING), REQUIRED("bookingId")))                                                           \
/* source [2.14] PATCH /booking/:id/reassignBookingAutomatically (no fields: {}) */                          \
X(update_booking_reassignbookingautomatically, "PATCH", "/booking/{bookingId}/reassignBookingAutomatically",    \
  CREATES, T_ALWAYS_BODY, "Reassign booking automatically",                                                    \
  "Give a round robin booking to another of the event type's hosts, picked by the API; same time.",          \
  SCHEMA(PROPS(ID_BOOKING), REQUIRED("bookingId")))                                                           \
/* source [2.15] PATCH /booking/:id/reassignBookingToUser */                                                 \
X(update_booking_reassignbookingtouser, "PATCH", "/booking/{bookingId}/reassignBookingToUser", UPDATES, 0,       \
  "Reassign booking to user",                                                                                  \
  "Give a round robin booking to a chosen host of its event type, who must be free then; same time.",        \
  SCHEMA(PROPS(ID_BOOKING, ID("userId", "Numeric user id of the new host (get_team_memberships)."),          \
               STR("reason", "Why, for the record.")),                                                         \
         REQUIRED("bookingId", "userId")))                                                                    \
                                                                                                              \
/* ---- Contacts: the API publishes no contacts route; inferred from its conventions ---- */                 \
/* inferred POST /contacts (create: name, email, phone, notes) */                                             \
X(create_contact, "POST", "/contacts", CREATES, 0, "Create contact",                                             \
  "Add a contact to the current user's address book. Returns it with its numeric id.",                        \
  SCHEMA(PROPS(CONTACT_FIELDS), REQUIRED("name", "email")))                                                   \
/* inferred DELETE /contacts/:id */                                                                          \
X(delete_contact, "DELETE", "/contacts/{contactId}", DELETES, 0, "Delete contact",                               \
  "Delete a contact; bookings with that person are not affected.",                                            \
  SCHEMA(PROPS(ID_CONTACT), REQUIRED("contactId")))                                                           \
/* inferred GET /contacts/:id */                                                                             \
X(get_contact, "GET", "/contacts/{contactId}", READS, 0, "Get contact",                                          \
  "Get one contact: name, email, phone and notes.",                                                            \
  SCHEMA(PROPS(ID_CONTACT), REQUIRED("contactId")))                                                           \
/* inferred GET /contacts/:id/meetings (limit 1..200) */                                                     \
X(get_contact_meetings, "GET", "/contacts/{contactId}/meetings", READS, 0, "Get contact meetings",               \
  "Get the meetings with one contact, newest first: booking id, title, date, duration, status "              \
  "(upcoming, completed, cancelled) and meeting link.",                                                        \
  SCHEMA(PROPS(ID_CONTACT, LIMIT(200, 100)), REQUIRED("contactId")))                                          \
/* inferred PATCH /contacts/:id */                                                                           \
X(update_contact, "PATCH", "/contacts/{contactId}", UPDATES, 0, "Update contact",                                \
  "Change a contact's name, email, phone or notes (at least one). Only the fields given change.",            \
  SCHEMA(PROPS(ID_CONTACT, CONTACT_FIELDS), REQUIRED("contactId")))                                           \
                                                                                                              \
/* ---- Event Types ---- */                                                                                  \
/* source [4.17] GET /event-types */                                                                         \
X(get_event_types, "GET", "/event-types", READS, 0, "List event types",                                          \
  "List the current user's event types (the kinds of meeting people book), each with its numeric id, "      \
  "title, slug and length in minutes.",                                                                        \
  SCHEMA(PROPS(EVENT_TYPE_QUERY), NONE))                                                                      \
/* source [4.19] GET /event-types/:id */                                                                     \
X(get_event_types_by_id, "GET", "/event-types/{eventTypeId}", READS, 0, "Get event type",                       \
  "Get one of the current user's event types with all of its settings.",                                      \
  SCHEMA(PROPS(ID_EVENT_TYPE), REQUIRED("eventTypeId")))                                                      \
/* source [4.18] POST /event-types (201) */                                                                  \
X(create_eventtype, "POST", "/event-types", CREATES, 0, "Create event type",                                     \
  "Create an event type (a bookable kind of meeting), e.g. a 30-minute demo. Returns it with its numeric "   \
  "id; the booking link is the user's page plus the slug.",                                                    \
  SCHEMA(PROPS(EVENT_TYPE_FIELDS), REQUIRED("title", "slug")))                                                \
/* source [4.21] DELETE /event-types/:id */                                                                  \
X(delete_eventtype, "DELETE", "/event-types/{eventTypeId}", DELETES, 0, "Delete event type",                    \
  "Delete one of the current user's event types; its booking link stops working.",                           \
  SCHEMA(PROPS(ID_EVENT_TYPE), REQUIRED("eventTypeId")))                                                      \
/* source [4.20] PATCH /event-types/:id */                                                                   \
X(update_eventtype, "PATCH", "/event-types/{eventTypeId}", UPDATES, 0, "Update event type",                     \
  "Change the settings of one of the current user's event types." EVENT_TYPE_PATCH_NOTE,                     \
  SCHEMA(PROPS(ID_EVENT_TYPE, EVENT_TYPE_FIELDS), REQUIRED("eventTypeId")))                                   \
                                                                                                              \
/* ---- Mixed group, in the order of the seed ---- */                                                      \
/* source [4.33] POST /teams/:teamId/memberships (201) */                                                    \
X(add_team_member, "POST", "/teams/{teamId}/memberships", CREATES, 0, "Add team member",                         \
  "Add an existing user to a team; needs admin rights there. Returns the membership with its numeric id.",   \
  SCHEMA(PROPS(ID_TEAM, ID("userId", "Numeric user id of the person to add."),                               \
               MEMBERSHIP_FIELDS("Role in the team (default MEMBER).",                                        \
                                 "Make the membership active at once (default false: an invitation).",       \
                                 "Let admins act as this member (default true).")),                          \
         REQUIRED("teamId", "userId")))                                                                       \
/* source [2.12] POST /booking/:id/cancel (a JSON object body, {} at least) */                               \
X(cancel_booking, "POST", "/booking/{bookingId}/cancel", CANCELS, T_ALWAYS_BODY, "Cancel booking",               \
  "Cancel a booking; attendees are notified. Options: all remaining occurrences of a recurring series, "    \
  "one seat of a seated event, a refund of a paid booking.",                                                   \
  SCHEMA(PROPS(ID_BOOKING, STR("cancellationReason", "Reason given to attendees."),                          \
               BOOL("allRemainingBookings", "Recurring: cancel this and all later occurrences."),            \
               BOOL("cancelSubsequentBookings", "Recurring: cancel the occurrences after this one."),        \
               STR("seatReferenceUid", "Seated event: the seat's reference uid, to cancel only that seat."), \
               STR_FORMAT("cancelledBy", "email", "Email of the person cancelling."),                        \
               BOOL("autoRefund", "Refund a paid booking (default false).")),                                 \
         REQUIRED("bookingId")))                                                                              \
/* source [2.13] PATCH /booking/:id/change_confirmation */                                                   \
X(change_booking_confirmation_status, "PATCH", "/booking/{bookingId}/change_confirmation", DECIDES, 0,          \
  "Accept or decline booking",                                                                  \
  "Accept or decline a booking waiting for the host (status unconfirmed in get_booking). Declining "         \
  "rejects it and notifies the attendee; it cannot be undone.",                                               \
  SCHEMA(PROPS(ID_BOOKING, BOOL("confirmed", "true accepts the booking, false declines it."),               \
               STR("reason", "Reason, shown to the attendee when declining."),                                \
               STR("recurringEventId", "Recurring series: its recurringEventId, to answer all at once.")),   \
         REQUIRED("bookingId", "confirmed")))                                                                 \
/* inferred GET /contacts (search, sortBy, sortDirection, limit 1..100, offset) */                           \
X(list_contacts, "GET", "/contacts", READS, 0, "List contacts",                                                  \
  "List the current user's contacts, each with its numeric id, name, email and phone; paged by limit and "  \
  "offset (meta.hasMore tells if more follow).",                                                              \
  SCHEMA(PROPS(STR("search", "Only contacts whose name, email, phone or notes contain this text."),          \
               ENUM("sortBy", VALUES("name", "email", "createdAt", "updatedAt"), "Sort field (default name)."), \
               ENUM("sortDirection", VALUES("asc", "desc"), "Sort direction (default asc)."),               \
               LIMIT(100, 10), INT_AT_LEAST("offset", 0, "Contacts to skip (default 0).")),                       \
         NONE))                                                                                               \
/* source [4.36] DELETE /teams/:teamId/memberships/:membershipId */                                         \
X(remove_team_member, "DELETE", "/teams/{teamId}/memberships/{membershipId}", DELETES, 0, "Remove team member",   \
  "Remove a member from a team by deleting their membership; they stop hosting its event types.",            \
  SCHEMA(PROPS(ID_TEAM, ID_MEMBERSHIP), REQUIRED("teamId", "membershipId")))                                  \
/* source [2.16] PATCH /booking/:id/reschedule (may answer 500 after rescheduling) */                         \
X(reschedule_booking, "PATCH", "/booking/{bookingId}/reschedule", CREATES, T_ACTS_BEFORE_5XX,                    \
  "Reschedule booking",                                                                                        \
  "Move a booking to a new start time (find one with get_slots); the end follows from the event length "    \
  "and attendees are notified. On an error answer, check get_booking_by_id before retrying: the API may "   \
  "have rescheduled it anyway.",                                                                               \
  SCHEMA(PROPS(ID_BOOKING, DATE_TIME("start", "New start:"),                                                  \
               STR("reschedulingReason", "Reason given to attendees."),                                        \
               STR_FORMAT("rescheduledBy", "email", "Email of the person rescheduling."),                    \
               STR("seatUid", "Seated event: the seat's uid, to move only that seat.")),                      \
         REQUIRED("bookingId", "start")))                                                                     \
                                                                                                              \
/* ---- Slots ---- */                                                                                        \
/* source [4.39] POST /slots/reserve */                                                                      \
X(create_slots_reserve, "POST", "/slots/reserve", CREATES, 0, "Reserve slot",                                    \
  "Hold a time slot of an event type for a few minutes so nobody else books it meanwhile. Returns the "      \
  "reservationUid for get_slot, update_slots and delete_slots.",                                              \
  SCHEMA(PROPS(SLOT_RESERVATION("Numeric event type id, from get_event_types.")),                            \
         REQUIRED("eventTypeId", "slotStart")))                                                               \
/* source [4.42] DELETE /slots/:uid */                                                                       \
X(delete_slots, "DELETE", "/slots/{uid}", DELETES, 0, "Release reserved slot",                                   \
  "Release a slot reservation so the time is bookable by others again.",                                      \
  SCHEMA(PROPS(ID_SLOT), REQUIRED("uid")))                                                                    \
/* source [4.40] GET /slots/:uid */                                                                          \
X(get_slot, "GET", "/slots/{uid}", READS, 0, "Get reserved slot",                                                \
  "Get a slot reservation: event type, start and end (UTC) and when the hold ends.",                         \
  SCHEMA(PROPS(ID_SLOT), REQUIRED("uid")))                                                                    \
/* source [4.38] GET /slots */                                                                               \
X(get_slots, "GET", "/slots", READS, 0, "Find available slots",                                                  \
  "Find free start times of an event type between start and end. data.slots maps each date (YYYY-MM-DD) "   \
  "to a list of {time}; pass a time as start to create_booking or reschedule_booking.",                      \
  SCHEMA(PROPS(ID("eventTypeId", "Numeric event type id, from get_event_types; or give eventTypeSlug."),     \
               STR("eventTypeSlug", "The event type's slug, instead of eventTypeId."),                        \
               STR_NONEMPTY("start", "First day: 'YYYY-MM-DD' or an ISO 8601 date-time."),                   \
               STR_NONEMPTY("end", "Last day, written like start."),                                                    \
               TIME_ZONE("Time zone of the answer's times:")),                                                \
         REQUIRED("start", "end")))                                                                           \
/* source [4.41] PATCH /slots/:uid */                                                                        \
X(update_slots, "PATCH", "/slots/{uid}", UPDATES, 0, "Update reserved slot",                                     \
  "Move a slot reservation to another time, keeping its uid. The API needs eventTypeId and slotStart "      \
  "every time; the event type cannot change.",                                                                \
  SCHEMA(PROPS(ID_SLOT, SLOT_RESERVATION("Numeric event type id: the one it was reserved for.")),           \
         REQUIRED("uid", "eventTypeId", "slotStart")))                                                        \
                                                                                                              \
/* ---- Teams ---- */                                                                                        \
/* source [4.23] POST /teams (201) */                                                                        \
X(create_team, "POST", "/teams", CREATES, 0, "Create team",                                                      \
  "Create a team owned by the current user. Returns it with its numeric id; then add_team_member and "      \
  "create_team_eventtype.",                                                                                    \
  SCHEMA(PROPS(TEAM_FIELDS(TIME_ZONE("Team time zone (required here: the API would use Asia/Kolkata):"))),  \
         REQUIRED("name", "timeZone")))                                                                       \
/* source [4.28] POST /teams/:teamId/event-types (201) */                                                    \
X(create_team_eventtype, "POST", "/teams/{teamId}/event-types", CREATES, 0, "Create team event type",           \
  "Create an event type owned by a team, hosted round robin, collectively or managed; needs admin rights. " \
  "Returns it with its numeric id.",                                                                           \
  SCHEMA(PROPS(ID_TEAM, TEAM_EVENT_TYPE_FIELDS), REQUIRED("teamId", "title", "slug")))                       \
/* source [4.26] DELETE /teams/:teamId */                                                                    \
X(delete_team, "DELETE", "/teams/{teamId}", DELETES, 0, "Delete team",                                           \
  "Delete a team with its memberships and event types; it cannot be undone.",                                 \
  SCHEMA(PROPS(ID_TEAM), REQUIRED("teamId")))                                                                 \
/* source [4.31] DELETE /teams/:teamId/event-types/:eventTypeId */                                          \
X(delete_team_eventtype, "DELETE", "/teams/{teamId}/event-types/{eventTypeId}", DELETES, 0,                      \
  "Delete team event type", "Delete one event type of a team; its booking link stops working.",              \
  SCHEMA(PROPS(ID_TEAM, ID_TEAM_EVENT_TYPE), REQUIRED("teamId", "eventTypeId")))                              \
/* source [4.24] GET /teams/:teamId */                                                                       \
X(get_team, "GET", "/teams/{teamId}", READS, 0, "Get team",                                                      \
  "Get one team the current user belongs to: name, slug, bio, logo, settings and counts.",                   \
  SCHEMA(PROPS(ID_TEAM), REQUIRED("teamId")))                                                                 \
/* source [4.29] GET /teams/:teamId/event-types/:eventTypeId */                                             \
X(get_team_event_type, "GET", "/teams/{teamId}/event-types/{eventTypeId}", READS, 0, "Get team event type",    \
  "Get one event type of a team with its settings and scheduling type.",                                      \
  SCHEMA(PROPS(ID_TEAM, ID_TEAM_EVENT_TYPE), REQUIRED("teamId", "eventTypeId")))                              \
/* source [4.27] GET /teams/:teamId/event-types */                                                           \
X(get_team_event_types, "GET", "/teams/{teamId}/event-types", READS, 0, "List team event types",               \
  "List the event types of a team, each with its numeric id, title, slug, length and scheduling type.",      \
  SCHEMA(PROPS(ID_TEAM, EVENT_TYPE_QUERY), REQUIRED("teamId")))                                               \
/* source [4.34] GET /teams/:teamId/memberships/:membershipId */                                            \
X(get_team_membership, "GET", "/teams/{teamId}/memberships/{membershipId}", READS, 0, "Get team membership",   \
  "Get one membership of a team: the member's user, role and whether the invitation was accepted.",          \
  SCHEMA(PROPS(ID_TEAM, ID_MEMBERSHIP), REQUIRED("teamId", "membershipId")))                                  \
/* source [4.32] GET /teams/:teamId/memberships */                                                           \
X(get_team_memberships, "GET", "/teams/{teamId}/memberships", READS, 0, "List team memberships",                \
  "List the memberships of a team: membership id, user (id, name, email), role, acceptedInvitation.",        \
  SCHEMA(PROPS(ID_TEAM, PAGE, LIMIT(100, 10),                                                                 \
               ENUM("orderBy", VALUES("id", "role", "acceptedInvitation", "createdAt"), "Sort field."),      \
               ORDER_DIR, ROLE("Only members with this role."),                                               \
               BOOL("acceptedInvitation", "Only accepted (true) or pending (false) memberships.")),          \
         REQUIRED("teamId")))                                                                                 \
/* source [4.37] GET /teams/:teamId/schedules (no paging; admins and owners) */                              \
X(get_team_schedules, "GET", "/teams/{teamId}/schedules", READS, 0, "List team schedules",                      \
  "List the schedules of every member of a team, to compare working hours; needs admin rights.",             \
  SCHEMA(PROPS(ID_TEAM), REQUIRED("teamId")))                                                                 \
/* source [4.22] GET /teams */                                                                               \
X(get_teams, "GET", "/teams", READS, 0, "List teams",                                                            \
  "List the teams the current user belongs to, each with its numeric id, name and slug.",                    \
  SCHEMA(PROPS(PAGE, LIMIT(100, 10),                                                                          \
               ENUM("orderBy", VALUES("id", "name", "slug", "createdAt"), "Sort field."), ORDER_DIR,          \
               STR("name", "Only names containing this text."), STR("slug", "Only slugs containing this."),  \
               BOOL("isTeamPrivate", "Only private (true) or public (false) teams.")),                        \
         NONE))                                                                                               \
/* source [4.25] PATCH /teams/:teamId */                                                                     \
X(update_team_details, "PATCH", "/teams/{teamId}", UPDATES, 0, "Update team",                                    \
  "Change a team's name, slug, bio, logo or settings; needs admin rights. The API may fill fields left "    \
  "out with their create defaults (timeZone Asia/Kolkata, weekStart Monday, the booleans false): send the " \
  "current values (get_team) of settings to keep.",                                                           \
  SCHEMA(PROPS(ID_TEAM, TEAM_FIELDS(TIME_ZONE("Team time zone:"))), REQUIRED("teamId")))                     \
/* source [4.30] PATCH /teams/:teamId/event-types/:eventTypeId */                                           \
X(update_team_eventtype, "PATCH", "/teams/{teamId}/event-types/{eventTypeId}", UPDATES, 0,                       \
  "Update team event type", "Change the settings of one team event type." EVENT_TYPE_PATCH_NOTE,             \
  SCHEMA(PROPS(ID_TEAM, ID_TEAM_EVENT_TYPE, TEAM_EVENT_TYPE_FIELDS), REQUIRED("teamId", "eventTypeId")))     \
/* source [4.35] PATCH /teams/:teamId/memberships/:membershipId */                                          \
X(update_team_membership, "PATCH", "/teams/{teamId}/memberships/{membershipId}", UPDATES, 0,                     \
  "Update team membership", "Change a member's role in a team, or accept the membership for them.",          \
  SCHEMA(PROPS(ID_TEAM, ID_MEMBERSHIP,                                                                        \
               MEMBERSHIP_FIELDS("New role.", "Accepted (true) or a pending invitation (false).",            \
                                 "Let admins act as this member.")),                                          \
         REQUIRED("teamId", "membershipId")))                                                                 \
                                                                                                              \
/* ---- User ---- */                                                                                         \
/* source [4.44] PUT /users/edit-profile */                                                                  \
X(update_user_profile, "PUT", "/users/edit-profile", UPDATES, 0, "Update profile",                               \
  "Change the current user's profile and preferences. Only the fields given change; a new email may "       \
  "need verification first.",                                                                                  \
  SCHEMA(PROPS(STR("username", "Username: the handle in the booking page link."), STR_LEN("name", 0, 50, "Display name."), \
               STR_FORMAT("email", "email", "Email address."), STR("bio", "Text on the public profile."),    \
               TIME_ZONE("The user's time zone:"), WEEK_START("First day of the week in calendars."),       \
               INT_RANGE("timeFormat", 12, 24, "Clock format: 12 or 24."),                                    \
               STR("locale", "Language of the interface and emails, e.g. 'en' or 'de'."),                     \
               STR("brandColor", "Brand color, hex, e.g. '#292929'."),                                        \
               BOOL("hideBranding", "Hide Cal ID branding on the booking pages.")),                           \
         NONE))                                                                                               \
                                                                                                              \
/* ---- Users ---- */                                                                                        \
/* source [4.45] POST /users/edit-profile/avatar (multipart/form-data, one file part) */                     \
X(create_users_edit_profile_avatar, "POST", "/users/edit-profile/avatar", UPDATES, T_MULTIPART, "Upload avatar", \
  "Upload a new profile picture (PNG, JPEG or SVG, at most 10 MB), replacing the old one. Give the bytes "  \
  "base64-encoded; they are sent as a multipart/form-data file.",                                              \
  SCHEMA(PROPS(STR("image", "The image file's bytes, base64 (no data: URL prefix)."),                        \
               STR("filename", "File name sent with the upload (default avatar.png)."),                       \
               ENUM("contentType", VALUES("image/png", "image/jpeg", "image/jpg", "image/svg+xml"),            \
                    "Type of the image (default image/png).")),                                                \
         REQUIRED("image")))                                                                                  \
/* source [4.46] GET /users/:user */                                                                         \
X(get_users, "GET", "/users/{username}", READS, 0, "Get user's public profile",                                  \
  "Get the public profile of a user by username: name, bio, avatar and brand colors.",                        \
  SCHEMA(PROPS(STR("username", "The user's username: the handle in their booking page link.")),              \
         REQUIRED("username")))                                                                               \
/* source [4.43] GET /users/me */                                                                            \
X(get_users_me, "GET", "/users/me", READS, 0, "Get my profile",                                                  \
  "Get the current user's profile: numeric id, email, name, username and role.",                             \
  SCHEMA(NO_PROPS, NONE))                                                                                     \
                                                                                                              \
/* ---- Webhook ---- */                                                                                      \
/* source [4.48] POST /webhook */                                                                            \
X(create_webhook, "POST", "/webhook", CREATES, 0, "Create webhook",                                              \
  "Create a webhook: Cal ID POSTs a JSON payload to subscriberUrl whenever one of the chosen events "       \
  "happens. One webhook per URL. Returns it with its id (a uuid).",                                            \
  SCHEMA(PROPS(WEBHOOK_FIELDS("URL that receives a POST for each event.")), REQUIRED("subscriberUrl")))      \
/* source [4.51] DELETE /webhook/:id */                                                                      \
X(delete_webhook, "DELETE", "/webhook/{webhookId}", DELETES, 0, "Delete webhook",                                \
  "Delete a webhook; its URL receives no more events.",                                                        \
  SCHEMA(PROPS(ID_WEBHOOK), REQUIRED("webhookId")))                                                           \
/* source [4.47] GET /webhook */                                                                             \
X(get_webhook, "GET", "/webhook", READS, 0, "List webhooks",                                                     \
  "List the current user's webhooks, each with its id, subscriber URL, event triggers and active state.",    \
  SCHEMA(PROPS(PAGE, LIMIT(500, 100)), NONE))                                                                 \
/* source [4.49] GET /webhook/:id */                                                                         \
X(get_webhook_by_id, "GET", "/webhook/{webhookId}", READS, 0, "Get webhook",                                     \
  "Get one webhook: subscriber URL, event triggers, active state and payload template.",                     \
  SCHEMA(PROPS(ID_WEBHOOK), REQUIRED("webhookId")))                                                           \
/* source [4.50] PATCH /webhook/:id */                                                                       \
X(update_webhook, "PATCH", "/webhook/{webhookId}", UPDATES, 0, "Update webhook",                                 \
  "Change a webhook's URL, triggers, template or secret, or pause it with active false. Only the fields "   \
  "given change.",                                                                                             \
  SCHEMA(PROPS(ID_WEBHOOK, WEBHOOK_FIELDS("URL that receives a POST for each event.")), REQUIRED("webhookId")))

/* Each tools/list entry as one literal, with a comma before it; the head is
 * what comes before the input schema (whose place the catalog rows record) */
#define TOOL_ENTRY_HEAD(name, title, desc)                                                                   \
    "{\"name\":" JS(#name) ",\"title\":" JS(title) ",\"description\":" JS(desc) ",\"inputSchema\":"
#define TOOL_ENTRY(name, kind, title, desc, schema)                                                          \
    "," TOOL_ENTRY_HEAD(name, title, desc) schema                                                            \
    ",\"annotations\":{\"title\":" JS(title) K_##kind##_HINTS ",\"openWorldHint\":true}}"

#if defined(__has_attribute)
#if __has_attribute(nonstring)
#define CM_NONSTRING __attribute__((nonstring)) /* sized to the text: no NUL, on purpose */
#endif
#endif
#ifndef CM_NONSTRING
#define CM_NONSTRING
#endif

/* All entries back to back, then "]": tools/list is [ plus this, less the first comma */
#define AS_MEMBER(name, method, path, kind, extra, title, desc, schema)                                      \
    char name[sizeof TOOL_ENTRY(name, kind, title, desc, schema) - 1] CM_NONSTRING;
#define AS_INIT(name, method, path, kind, extra, title, desc, schema) TOOL_ENTRY(name, kind, title, desc, schema),
static const struct tool_list {
    CM_TOOLS(AS_MEMBER)
    char end[1] CM_NONSTRING;
} tool_list = {CM_TOOLS(AS_INIT) "]"};

struct cm_tool {
    const char *name;
    const char *method;
    const char *path;
    unsigned flags;
    unsigned short schema_at, schema_len; /* its inputSchema within the entry (checked at start) */
    size_t entry_at, entry_len; /* its tools/list entry in tool_list, without the comma */
};

#define AS_ROW(name, method, path, kind, extra, title, desc, schema)                                         \
    {#name, method, path, K_##kind##_FLAGS | (extra), sizeof TOOL_ENTRY_HEAD(name, title, desc) - 1,         \
     sizeof schema - 1, offsetof(struct tool_list, name) + 1, sizeof tool_list.name - 1},
static const struct cm_tool tools[] = {CM_TOOLS(AS_ROW)};
#define N_TOOLS (sizeof tools / sizeof tools[0])

/* The schema vocabulary ends with the catalog: these short names stay free */
#undef JS
#undef SCHEMA
#undef NO_PROPS
#undef PROPS
#undef REQUIRED
#undef NONE
#undef VALUES
#undef TYPE
#undef TYPE_EITHER
#undef FORMAT
#undef MIN_LENGTH
#undef MAX_LENGTH
#undef MINIMUM
#undef MCP_HEADER
#undef PATH_ID
#undef PATH_STR
#undef MAXIMUM
#undef ONE_OF
#undef ITEMS
#undef PROP
#undef STR
#undef STR_FORMAT
#undef STR_NONEMPTY
#undef STR_LEN
#undef INT
#undef INT_AT_LEAST
#undef INT_RANGE
#undef BOOL
#undef ENUM
#undef ARRAY
#undef OBJECT
#undef OBJECT_REQ
#undef OPEN_OBJECT
#undef ANY
#undef ID
#undef PAGE
#undef LIMIT
#undef HINTS

static const char *tool_entry(const struct cm_tool *t) { return (const char *)&tool_list + t->entry_at; }

static int find_tool(const char *name)
{
    size_t i;
    for (i = 0; i < N_TOOLS; i++)
        if (strcmp(tools[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* One tool's entry of the tools/list array, in the const catalog. */
static struct view tool_json(size_t i)
{
    struct view v;
    v.p = tool_entry(&tools[i]);
    v.n = tools[i].entry_len;
    return v;
}

/* ===================================================================== */
/* 7. Tool calls: arguments -> one API request                           */
/* ===================================================================== */

static jsmntok_t schema_toks[SCHEMA_TOKENS]; /* a tool's schema while its arguments are checked; an API error answer while it is quoted */
static char req_path[CM_URL_BYTES];          /* path + query of the API request being built */
static char *req_body;               /* its body: built in the buffer of the API slot that sends it (up_body_room) */
static size_t req_body_cap;
static char bearer_buf[1024];        /* NUL-terminated copy of the token for the API */
static char arg_buf[CM_ARG_BYTES];           /* one decoded string argument */

/* Does a value token have one of the schema's types ("integer", ["integer","string"])? */
static int type_matches(const struct jdoc *sd, int type_tok, const char *actual)
{
    int i, k;
    if (type_tok < 0)
        return 1;
    if (sd->t[type_tok].type == JSMN_STRING) {
        struct view want = tok_view(sd, type_tok);
        return view_eq(want, actual) || (view_eq(want, "number") && strcmp(actual, "integer") == 0);
    }
    if (sd->t[type_tok].type != JSMN_ARRAY)
        return 1;
    for (i = type_tok + 1, k = 0; k < sd->t[type_tok].size; k++, i = tok_next(sd, i))
        if (type_matches(sd, i, actual))
            return 1;
    return 0;
}

/* The tool's inputSchema, parsed alone from where its row says it lies in
 * the catalog entry (the title and description around it are not read): the
 * token of the schema object, or -1. */
static int parse_schema(const struct cm_tool *t, struct jdoc *sd)
{
    jsmn_parser p;
    int r;
    jsmn_init(&p);
    r = jsmn_parse(&p, tool_entry(t) + t->schema_at, t->schema_len, schema_toks, SCHEMA_TOKENS);
    if (r < 1 || schema_toks[0].type != JSMN_OBJECT || schema_toks[0].end != (int)t->schema_len)
        return -1;
    sd->js = tool_entry(t) + t->schema_at;
    sd->t = schema_toks;
    sd->n = r;
    return 0;
}

/* At start: the whole entry parses, and its inputSchema member is exactly
 * where the row says (an entry past 64 KiB could not be named). */
static int schema_place_check(const struct cm_tool *t)
{
    jsmn_parser p;
    struct jdoc whole;
    int r, v;
    jsmn_init(&p);
    r = jsmn_parse(&p, tool_entry(t), t->entry_len, schema_toks, SCHEMA_TOKENS);
    if (r < 1)
        return -1;
    whole.js = tool_entry(t);
    whole.t = schema_toks;
    whole.n = r;
    v = obj_get(&whole, 0, "inputSchema");
    return v >= 0 && schema_toks[v].start == (int)t->schema_at && schema_toks[v].end - schema_toks[v].start == (int)t->schema_len
               ? 0 : -1;
}

/* A JSON number as a double: whole numbers of up to 15 digits (exact in a
 * double, as strtod would give them) directly, others through strtod. */
static double json_number(struct view v)
{
    char num[64];
    size_t k = v.n && v.p[0] == '-';
    double x = 0;
    if (v.n > k && v.n - k <= 15) {
        for (; k < v.n && v.p[k] >= '0' && v.p[k] <= '9'; k++)
            x = x * 10 + (v.p[k] - '0');
        if (k == v.n)
            return v.p[0] == '-' ? -x : x;
    }
    snprintf(num, sizeof num, "%.*s", (int)(v.n < sizeof num ? v.n : sizeof num - 1), v.p);
    return strtod(num, NULL);
}

/* A whole-number keyword of a schema property ("minimum"...), or fallback. */
static double schema_number(const struct jdoc *sd, int prop, const char *key, double fallback)
{
    int v = obj_get(sd, prop, key);
    return v < 0 ? fallback : json_number(tok_view(sd, v));
}

/* Code points of a decoded UTF-8 string. */
static size_t utf8_length(const char *s, size_t n)
{
    size_t i, count = 0;
    for (i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            count++;
    return count;
}

/* The limits of one property: minimum/maximum, minLength/maxLength, enum. */
static int check_limits(const struct jdoc *sd, int prop, struct view key, const struct jdoc *d, int v, char *msg,
                        size_t cap)
{
    struct view raw = tok_raw(d, v);
    int en = obj_get(sd, prop, "enum");
    if (d->t[v].type == JSMN_PRIMITIVE && raw.p[0] != 't' && raw.p[0] != 'f') {
        double x = json_number(raw), lo = schema_number(sd, prop, "minimum", -1e300), hi = schema_number(sd, prop, "maximum", 1e300);
        if (x < lo || x > hi) {
            snprintf(msg, cap, "Argument '%.*s' must be %s %.0f, got %.*s", (int)key.n, key.p, x < lo ? ">=" : "<=",
                     x < lo ? lo : hi, (int)raw.n, raw.p);
            return -1;
        }
    }
    if (d->t[v].type == JSMN_STRING) {
        long n = tok_unescape(d, v, arg_buf, sizeof arg_buf);
        double len = n < 0 ? 0 : (double)utf8_length(arg_buf, (size_t)n);
        double lo = schema_number(sd, prop, "minLength", 0), hi = schema_number(sd, prop, "maxLength", 1e300);
        if (n >= 0 && (len < lo || len > hi)) {
            snprintf(msg, cap, "Argument '%.*s' must be %.0f to %.0f characters long, got %.0f", (int)key.n, key.p, lo,
                     hi < 1e300 ? hi : len, len);
            return -1;
        }
    }
    if (en >= 0 && sd->t[en].type == JSMN_ARRAY) {
        int e, q;
        for (e = en + 1, q = 0; q < sd->t[en].size; q++, e = tok_next(sd, e)) {
            struct view allowed = tok_raw(sd, e);
            if (allowed.n == raw.n && memcmp(allowed.p, raw.p, raw.n) == 0)
                return 0;
        }
        snprintf(msg, cap, "Argument '%.*s' must be one of [%.*s], got %.*s", (int)key.n, key.p,
                 (int)tok_view(sd, en).n, tok_view(sd, en).p, (int)raw.n, raw.p);
        return -1;
    }
    return 0;
}

/* Every required property is given (and not null). */
static int check_required(const struct jdoc *sd, int schema, const struct jdoc *d, int args, char *msg, size_t cap)
{
    int props = obj_get(sd, schema, "properties"), req = obj_get(sd, schema, "required"), i, k;
    if (req < 0 || sd->t[req].type != JSMN_ARRAY)
        return 0;
    for (i = req + 1, k = 0; k < sd->t[req].size; k++, i = tok_next(sd, i)) {
        struct view name = tok_view(sd, i);
        int v = obj_get_n(d, args, name.p, name.n), pd;
        if (v >= 0 && !tok_is_null(d, v))
            continue;
        pd = obj_get(sd, obj_get_n(sd, props, name.p, name.n), "description");
        snprintf(msg, cap, "Missing required argument '%.*s'%s%.*s", (int)name.n, name.p, pd >= 0 ? ": " : "",
                 pd >= 0 ? (int)tok_view(sd, pd).n : 0, pd >= 0 ? tok_view(sd, pd).p : "");
        return -1;
    }
    return 0;
}

/* Checks arguments against the tool's schema: required present, declared
 * properties of the declared type, within their limits and enums. Other
 * arguments pass through to the API unchecked. 0 ok, or -1 with msg. */
static int validate_args(const struct cm_tool *t, const struct jdoc *d, int args, char *msg, size_t cap)
{
    struct jdoc sd;
    int schema = parse_schema(t, &sd), props, i, k;
    if (schema < 0) {
        snprintf(msg, cap, "internal error: the schema of %s does not parse", t->name);
        return -1;
    }
    if (check_required(&sd, schema, d, args, msg, cap) < 0)
        return -1;
    props = obj_get(&sd, schema, "properties");
    if (args < 0 || props < 0)
        return 0;
    for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
        struct view key = tok_view(d, i);
        int v = i + 1, prop = -1, j, m, type;
        const char *actual;
        for (j = props + 1, m = 0; m < sd.t[props].size; m++, j = tok_next(&sd, j + 1))
            if (tok_view(&sd, j).n == key.n && memcmp(tok_view(&sd, j).p, key.p, key.n) == 0) {
                prop = j + 1;
                break;
            }
        if (prop < 0 || tok_is_null(d, v))
            continue; /* extra arguments pass through; null means not given */
        actual = tok_type_name(d, v);
        type = obj_get(&sd, prop, "type");
        if (!type_matches(&sd, type, actual)) {
            snprintf(msg, cap, "Argument '%.*s' must be %.*s, got %s", (int)key.n, key.p, (int)tok_view(&sd, type).n,
                     tok_view(&sd, type).p, actual);
            return -1;
        }
        if (check_limits(&sd, prop, key, d, v, msg, cap) < 0)
            return -1;
    }
    return 0;
}

/* At start: every catalog entry is JSON whose inputSchema parses within
 * SCHEMA_TOKENS, and the entries lie back to back, so that "[" followed by
 * tool_list less its first comma is one JSON array. */
static int tool_list_check(char *err, size_t errlen)
{
    size_t i, next = 1;
    for (i = 0; i < N_TOOLS; i++) {
        const struct cm_tool *t = &tools[i];
        const char *e = tool_entry(t), *why = "misplaced";
        char head[160];
        size_t at = 0;
        struct jdoc sd;
        int n = snprintf(head, sizeof head, "{\"name\":\"%s\",", t->name);
        if (t->entry_at != next || strncmp(e, head, (size_t)n) != 0 || json_check(e, t->entry_len, &why, &at) < 0 ||
            schema_place_check(t) < 0 || parse_schema(t, &sd) < 0) {
            snprintf(err, errlen, "the catalog entry of %s is not JSON (%s at byte %lu) or needs over %d tokens",
                     t->name, why, (unsigned long)at, SCHEMA_TOKENS);
            return -1;
        }
        next = t->entry_at + t->entry_len + 1;
    }
    if (next != sizeof tool_list || tool_list.end[0] != ']') {
        snprintf(err, errlen, "the catalog entries do not lie back to back");
        return -1;
    }
    return 0;
}

/* POST, PUT and PATCH carry the arguments as a JSON body; GET and DELETE as a query. */
static int method_has_body(const struct cm_tool *t)
{
    return strcmp(t->method, "POST") == 0 || strcmp(t->method, "PUT") == 0 || strcmp(t->method, "PATCH") == 0 ||
           (t->flags & T_ALWAYS_BODY);
}

/* Is key one of the {placeholders} of the path? */
static int is_path_param(const char *path, struct view key)
{
    const char *p = path;
    while ((p = strchr(p, '{')) != NULL) {
        const char *e = strchr(p, '}');
        if (!e)
            return 0;
        if ((size_t)(e - p - 1) == key.n && memcmp(p + 1, key.p, key.n) == 0)
            return 1;
        p = e + 1;
    }
    return 0;
}

/* Appends a scalar argument as it goes into a URL: strings decoded then
 * percent-encoded, numbers and booleans as written, anything else as JSON. */
static int put_url_value(const struct jdoc *d, int v, char *out, size_t cap, size_t *len)
{
    if (d->t[v].type == JSMN_STRING) {
        long n = tok_unescape(d, v, arg_buf, sizeof arg_buf);
        if (n < 0)
            return -1;
        return percent_encode(arg_buf, (size_t)n, out, cap, len);
    }
    {
        struct view raw = tok_raw(d, v);
        return percent_encode(raw.p, raw.n, out, cap, len);
    }
}

/* A string path id names one resource: not empty, no '/', not '.' or '..'. */
static int check_path_id(const struct jdoc *d, int v, const char *key, char *msg, size_t cap)
{
    long n;
    if (v < 0 || (d->t[v].type != JSMN_STRING && d->t[v].type != JSMN_PRIMITIVE) || tok_view(d, v).n == 0) {
        snprintf(msg, cap, "Argument '%s' must be a non-empty id", key);
        return -1;
    }
    if (d->t[v].type != JSMN_STRING)
        return 0;
    n = tok_unescape(d, v, arg_buf, sizeof arg_buf);
    if (n < 0 || memchr(arg_buf, '/', (size_t)n) || (n == 1 && arg_buf[0] == '.') ||
        (n == 2 && arg_buf[0] == '.' && arg_buf[1] == '.')) {
        /* would name another path of the API instead of an id */
        snprintf(msg, cap, "Argument '%s' must be one id as returned by the API: no '/', not '.' or '..'", key);
        return -1;
    }
    return 0;
}

/* Appends sep, key=value (key decoded, then percent-encoded like the value). */
static int put_query_pair(const struct jdoc *d, int key_tok, int v, char sep, size_t *len)
{
    char key[256];
    long n = tok_unescape(d, key_tok, key, sizeof key);
    if (n < 0 || *len + 2 >= sizeof req_path)
        return -1;
    req_path[(*len)++] = sep;
    if (percent_encode(key, (size_t)n, req_path, sizeof req_path, len) < 0 || *len + 2 >= sizeof req_path)
        return -1;
    req_path[(*len)++] = '=';
    return put_url_value(d, v, req_path, sizeof req_path, len);
}

/* The query string: every argument but the path parameters; arrays as
 * repeated keys (key=a&key=b). */
static int build_query(const struct cm_tool *t, const struct jdoc *d, int args, size_t *len)
{
    int i, k;
    char sep = '?';
    for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
        int v = i + 1, e, q;
        if (is_path_param(t->path, tok_view(d, i)) || tok_is_null(d, v))
            continue;
        if (d->t[v].type != JSMN_ARRAY) {
            if (put_query_pair(d, i, v, sep, len) < 0)
                return -1;
            sep = '&';
            continue;
        }
        for (e = v + 1, q = 0; q < d->t[v].size; q++, e = tok_next(d, e)) {
            if (put_query_pair(d, i, e, sep, len) < 0)
                return -1;
            sep = '&';
        }
    }
    return 0;
}

/* Builds req_path (path with parameters filled in, then the query string). */
static int build_path(const struct cm_tool *t, const struct jdoc *d, int args, char *msg, size_t cap)
{
    size_t len = 0;
    const char *p = t->path;
    req_path[0] = 0;
    while (*p) {
        if (*p == '{') {
            const char *e = strchr(p, '}');
            char key[64];
            int v;
            snprintf(key, sizeof key, "%.*s", (int)(e - p - 1), p + 1);
            v = obj_get(d, args, key);
            if (check_path_id(d, v, key, msg, cap) < 0)
                return -1;
            if (put_url_value(d, v, req_path, sizeof req_path, &len) < 0)
                goto too_long;
            p = e + 1;
        } else {
            if (len + 2 >= sizeof req_path)
                goto too_long;
            req_path[len++] = *p++;
            req_path[len] = 0;
        }
    }
    if (method_has_body(t) || args < 0)
        return 0;
    if (build_query(t, d, args, &len) < 0)
        goto too_long;
    return 0;
too_long:
    snprintf(msg, cap, "The arguments make a URL longer than %u bytes", (unsigned)sizeof req_path);
    return -1;
}

/* JSON body: every argument but the path parameters, copied verbatim. */
static long build_json_body(const struct cm_tool *t, const struct jdoc *d, int args)
{
    struct textbuf b;
    int i, k, first = 1;
    b.p = req_body;
    b.cap = req_body_cap;
    b.len = 0;
    b.overflow = 0;
    tb_str(&b, "{");
    if (args >= 0)
        for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
            struct view key = tok_raw(d, i), val = tok_raw(d, i + 1);
            if (is_path_param(t->path, tok_view(d, i)))
                continue;
            if (!first)
                tb_str(&b, ",");
            first = 0;
            tb_put(&b, key.p, key.n);
            tb_str(&b, ":");
            tb_put(&b, val.p, val.n);
        }
    tb_str(&b, "}");
    return b.overflow ? -1 : (long)b.len;
}

/* multipart/form-data with one file part, from base64 `image`. */
static long build_multipart(const struct jdoc *d, int args, char *ctype, size_t ctcap, char *msg, size_t cap)
{
    char boundary[40], filename[128] = "avatar.png", content_type[64] = "image/png";
    unsigned char rnd[12];
    struct textbuf b;
    int img = obj_get(d, args, "image"), v;
    long n;
    size_t room;
    if (cm_port_random(rnd, sizeof rnd) < 0)
        memset(rnd, 0x5a, sizeof rnd);
    memcpy(boundary, "calid-mcp-", 10);
    hex_encode(rnd, sizeof rnd, boundary + 10);
    if ((v = obj_get(d, args, "filename")) >= 0 && tok_unescape(d, v, filename, sizeof filename) < 0) {
        snprintf(msg, cap, "Argument 'filename' must be a string under %u bytes", (unsigned)sizeof filename);
        return -1;
    }
    if ((v = obj_get(d, args, "contentType")) >= 0 && tok_unescape(d, v, content_type, sizeof content_type) < 0) {
        snprintf(msg, cap, "Argument 'contentType' must be a string under %u bytes", (unsigned)sizeof content_type);
        return -1;
    }
    if (strpbrk(filename, "\"\r\n") || strpbrk(content_type, "\"\r\n;")) {
        snprintf(msg, cap, "Arguments 'filename' and 'contentType' must not contain quotes or line breaks");
        return -1;
    }
    b.p = req_body;
    b.cap = req_body_cap;
    b.len = 0;
    b.overflow = 0;
    tb_printf(&b, "--%s\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"%s\"\r\nContent-Type: %s\r\n\r\n",
              boundary, filename, content_type);
    room = b.overflow ? 0 : b.cap - b.len - 64;
    n = base64_decode(d->js + d->t[img].start, (size_t)(d->t[img].end - d->t[img].start),
                      (unsigned char *)b.p + b.len, room);
    if (n < 0) {
        snprintf(msg, cap, "Argument 'image' must be base64 (standard or URL-safe) of at most %u bytes",
                 (unsigned)(room * 1));
        return -1;
    }
    b.len += (size_t)n;
    tb_printf(&b, "\r\n--%s--\r\n", boundary);
    snprintf(ctype, ctcap, "multipart/form-data; boundary=%s", boundary);
    return b.overflow ? -1 : (long)b.len;
}

/* ===================================================================== */
/* 8. Upstream HTTPS client (BearSSL, non-blocking)                      */
/* ===================================================================== */

/*
 * Shape
 *   - CM_MAX_UPSTREAMS slots, all static. A slot holds one request at a time
 *     and, between requests, may keep its TLS connection open (keep-alive).
 *     The slot index is the request handle.
 *   - A request walks RESOLVING -> CONNECTING -> HANDSHAKE -> SENDING ->
 *     RECEIVING -> DONE; a request on a kept-alive connection starts at
 *     SENDING. DONE means on_upstream_done() has been called and the answer
 *     body stays valid until up_release(); then the slot becomes IDLE (live
 *     connection kept) or FREE. Arguments that cannot make a request go
 *     straight to FAILED, delivered as a failure by the next up_tick().
 *   - up_submit() does no I/O and never calls back: it marks the slot "kick"
 *     and up_tick() (or up_on_ready()) does the work, so the caller always
 *     has its handle before on_upstream_done() can fire for it.
 *   - Every failure is delivered once, with status 0 and an error text that
 *     names it (DNS, refused, which timeout, which TLS check, reset,
 *     truncated, malformed, too large).
 *   - No write is sent twice. A request that fails on a reused kept-alive
 *     connection before any answer byte arrived (the server closed it
 *     meanwhile) is retried once on a new connection only if repeating it is
 *     harmless (GET, HEAD, PUT, DELETE, OPTIONS: RFC 9110 9.2.2) or none of
 *     it was sent. POST and PATCH go out only on a connection known to be
 *     alive: a new one, or one idle for less than CM_UPSTREAM_WRITE_IDLE_MS
 *     whose close has not already arrived. When a request that changes
 *     something was sent and no whole answer came, the error text says that
 *     the change may have been made, and whether sending it again is safe.
 *   - An answer delimited by the connection's close is whole only if the
 *     close is TLS close_notify; a bare TCP close is a truncation.
 *   - on_upstream_done() is only called from up_on_ready() and up_tick(). It
 *     may call up_release(), up_cancel() and up_submit() (even for the same
 *     handle); this code never touches a slot after calling back for it.
 *   - The answer parser (up_parse_*) is pure: bytes in, state out. It is
 *     unit-tested and fuzzed on its own.
 *   - Streaming (up_allow_stream): an answer that fits the slot's buffer is
 *     delivered whole, as above. One that outgrows it is delivered in windows
 *     of the buffer: on_upstream_done() with r->partial, and the slot stops
 *     reading the API (the bytes wait in BearSSL and TCP: back-pressure)
 *     until the owner calls up_release() for the window; the answer timeout
 *     does not run meanwhile. The last window comes without partial (or as a
 *     failure that keeps the window's bytes). A 2xx answer streamed is
 *     checked as JSON on the way (struct jscan); the first byte that cannot be
 *     JSON ends it as not_json. CM_UPSTREAM_ANSWER_MAX_BYTES bounds the whole.
 *   - TLS: one BearSSL client context per slot, TLS 1.2 only, chain and host
 *     name checked against the anchors loaded by up_init(). One saved session
 *     is shared by all slots so every new connection tries to resume it.
 *   - The bearer token is written into the slot's request buffer only; it is
 *     never logged and the buffer is wiped once the request has ended.
 */

/* ---- the result handed to on_upstream_done() ---- */
struct up_result {
    int status;               /* HTTP status from the API, or 0 for a transport failure */
    unsigned char partial;    /* body is one window of a longer answer: up_release() it; the next part follows */
    unsigned char streamed;   /* windows of this answer were delivered before (body continues them) */
    const char *body;         /* answer body (de-chunked), valid until up_release(); NUL-terminated */
    size_t body_len;
    char retry_after[32];     /* Retry-After header value if any, else "" */
    char content_type[64];    /* Content-Type of the answer, else "" */
    char error[448];          /* transport failure, human readable (with the outcome note); "" when status != 0 */
    uint64_t offset;          /* answer bytes delivered in earlier windows */
    const char *not_json;     /* (streamed 2xx answer) why the answer is not JSON, at byte not_json_at; else NULL */
    uint64_t not_json_at;
};

/* Defined in section 11: where finished requests are handed back. */
static void on_upstream_done(unsigned owner, int handle, const struct up_result *r);

/* ---- limits of this section (not worth a public knob) ---- */
#define UP_LINE_MAX 1024      /* longest status/header/chunk-size line kept whole */
#define UP_HEAD_MAX 65536     /* status line + headers (+ trailers) of one answer */
#define UP_CHUNK_HEX_MAX 8    /* hex digits of a chunk size: at most 4 GiB - 1 */
#define UP_DNS_POLL_MS 5      /* how often a pending DNS lookup is asked again */
#define UP_HOST_MAX 254       /* DNS name length limit (+ NUL) */
#define UP_PREFIX_MAX 256     /* path prefix of the base URL */

/* ======================================================================
 * Answer parser: pure, incremental. Feed decrypted bytes as they come.
 * ====================================================================== */
enum up_pstate {
    UP_P_STATUS = 0,  /* reading the status line */
    UP_P_HEADER,      /* reading header lines */
    UP_P_BODY_LEN,    /* Content-Length framed body */
    UP_P_BODY_CLOSE,  /* body runs until the connection closes */
    UP_P_CHUNK_SIZE,  /* chunk-size line */
    UP_P_CHUNK_DATA,  /* chunk bytes */
    UP_P_CHUNK_END,   /* the CRLF after chunk bytes */
    UP_P_TRAILER,     /* trailer lines after the last chunk (skipped) */
    UP_P_DONE,        /* a complete answer was read */
    UP_P_ERROR        /* malformed or too large: see error */
};

struct up_parser {
    unsigned char state;        /* enum up_pstate */
    unsigned char head_request; /* the request was HEAD: the answer has no body */
    unsigned char http_minor;   /* HTTP/1.x of the answer */
    unsigned char chunked;      /* Transfer-Encoding: chunked */
    unsigned char have_length;  /* a Content-Length was seen */
    unsigned char conn_close;   /* Connection: close */
    unsigned char conn_keep;    /* Connection: keep-alive (matters for HTTP/1.0) */
    unsigned char keep_alive;   /* (valid after the headers) connection reusable */
    unsigned char line_long;    /* current line exceeded UP_LINE_MAX: kept truncated */
    unsigned char windowed;     /* the body buffer is a window: when full, feeding stops (the caller drains it) */
    int status;                 /* HTTP status of the final answer */
    uint64_t length;            /* Content-Length, then bytes still to read (body or chunk) */
    size_t line_len;            /* bytes in line[] */
    size_t head_bytes;          /* status + header + trailer bytes so far */
    size_t seen;                /* all bytes fed so far (0: nothing arrived yet) */
    unsigned char *body;        /* caller's body buffer */
    size_t body_cap;            /* its capacity (the answer is refused beyond) */
    size_t body_len;            /* bytes of body stored */
    uint64_t body_total;        /* body bytes of the whole answer so far (CM_UPSTREAM_ANSWER_MAX_BYTES) */
    char retry_after[32];
    char content_type[64];
    char error[200];
    char line[UP_LINE_MAX];
};

static void up_parse_init(struct up_parser *p, unsigned char *body, size_t body_cap, int head_request)
{
    memset(p, 0, offsetof(struct up_parser, line));
    p->line[0] = '\0';
    p->state = UP_P_STATUS;
    p->head_request = (unsigned char)(head_request != 0);
    p->body = body;
    p->body_cap = body_cap;
}

static int up_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

/* Case-insensitive equality of a view [s, s+n) with a NUL-terminated lower-case word. */
static int up_view_ieq(const char *s, size_t n, const char *word)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (word[i] == '\0' || up_lower((unsigned char)s[i]) != word[i])
            return 0;
    return word[n] == '\0';
}

static int up_is_tchar(int c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void up_copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t up_parse_fail(struct up_parser *p, size_t used, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(p->error, sizeof p->error, "malformed answer from the Cal ID API: ");
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof p->error)
        vsnprintf(p->error + n, sizeof p->error - (size_t)n, fmt, ap);
    va_end(ap);
    p->state = UP_P_ERROR;
    return used;
}

static size_t up_parse_too_large(struct up_parser *p, size_t used)
{
    snprintf(p->error, sizeof p->error,
             "the Cal ID API answer is larger than %lu bytes (CM_UPSTREAM_BODY_BYTES)",
             (unsigned long)p->body_cap);
    p->state = UP_P_ERROR;
    return used;
}

/* Whether n more body bytes pass the policy limit (0 when they do not: error set). */
static int up_parse_within_policy(struct up_parser *p, uint64_t n)
{
    if (CM_UPSTREAM_ANSWER_MAX_BYTES == 0 || p->body_total + n <= (uint64_t)CM_UPSTREAM_ANSWER_MAX_BYTES)
        return 1;
    snprintf(p->error, sizeof p->error,
             "the Cal ID API answer is larger than %lu bytes (CM_UPSTREAM_ANSWER_MAX_BYTES)",
             (unsigned long)CM_UPSTREAM_ANSWER_MAX_BYTES);
    p->state = UP_P_ERROR;
    return 0;
}

/* A windowed body buffer is full while body bytes still come: drain it. */
static int up_parse_window_full(const struct up_parser *p)
{
    return p->windowed && p->body_len == p->body_cap &&
           (p->state == UP_P_BODY_LEN || p->state == UP_P_CHUNK_DATA || p->state == UP_P_BODY_CLOSE);
}

/* "HTTP/1.x SSS[ reason]" */
static int up_parse_status_line(struct up_parser *p, const char *l, size_t n)
{
    int st;
    if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') || l[8] != ' ')
        return -1;
    if (l[9] < '1' || l[9] > '5' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9')
        return -1;
    if (n > 12 && l[12] != ' ')
        return -1;
    st = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    p->status = st;
    p->http_minor = (unsigned char)(l[7] - '0');
    return 0;
}

/* One header line (without its line end). Returns 0, or -1 with p->error set. */
static int up_parse_header_line(struct up_parser *p, const char *l, size_t n)
{
    size_t colon = 0, vs, ve;
    const char *name = l;
    if (l[0] == ' ' || l[0] == '\t') {
        up_parse_fail(p, 0, "folded header line");
        return -1;
    }
    while (colon < n && l[colon] != ':') {
        if (!up_is_tchar((unsigned char)l[colon])) {
            up_parse_fail(p, 0, "bad header name");
            return -1;
        }
        colon++;
    }
    if (colon == 0 || colon == n) {
        up_parse_fail(p, 0, "header line without a name and colon");
        return -1;
    }
    vs = colon + 1;
    ve = n;
    while (vs < ve && (l[vs] == ' ' || l[vs] == '\t'))
        vs++;
    while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
        ve--;

    if (up_view_ieq(name, colon, "content-length")) {
        uint64_t v = 0;
        size_t i;
        if (p->line_long || ve == vs) {
            up_parse_fail(p, 0, "bad Content-Length");
            return -1;
        }
        for (i = vs; i < ve; i++) {
            if (l[i] < '0' || l[i] > '9' || v > (UINT64_MAX - 9) / 10) {
                up_parse_fail(p, 0, "bad Content-Length");
                return -1;
            }
            v = v * 10 + (uint64_t)(l[i] - '0');
        }
        if (p->have_length && p->length != v) {
            up_parse_fail(p, 0, "conflicting Content-Length headers");
            return -1;
        }
        p->have_length = 1;
        p->length = v;
    } else if (up_view_ieq(name, colon, "transfer-encoding")) {
        if (!up_view_ieq(l + vs, ve - vs, "chunked")) {
            up_parse_fail(p, 0, "unsupported Transfer-Encoding");
            return -1;
        }
        p->chunked = 1;
    } else if (up_view_ieq(name, colon, "connection")) {
        size_t i = vs;
        while (i < ve) {
            size_t s, e;
            while (i < ve && (l[i] == ' ' || l[i] == '\t' || l[i] == ','))
                i++;
            s = i;
            while (i < ve && l[i] != ',')
                i++;
            e = i;
            while (e > s && (l[e - 1] == ' ' || l[e - 1] == '\t'))
                e--;
            if (up_view_ieq(l + s, e - s, "close"))
                p->conn_close = 1;
            else if (up_view_ieq(l + s, e - s, "keep-alive"))
                p->conn_keep = 1;
        }
    } else if (up_view_ieq(name, colon, "retry-after")) {
        up_copy_value(p->retry_after, sizeof p->retry_after, l + vs, ve - vs);
    } else if (up_view_ieq(name, colon, "content-type")) {
        up_copy_value(p->content_type, sizeof p->content_type, l + vs, ve - vs);
    }
    return 0;
}

/* The empty line after the headers: decide how the body is framed. */
static void up_parse_headers_end(struct up_parser *p)
{
    if (p->status < 200) {
        if (p->status == 101) {
            up_parse_fail(p, 0, "unexpected 101 Switching Protocols");
            return;
        }
        /* 1xx interim answer (100 Continue...): forget it, read the next one */
        p->chunked = p->have_length = p->conn_close = p->conn_keep = 0;
        p->length = 0;
        p->retry_after[0] = p->content_type[0] = '\0';
        p->state = UP_P_STATUS;
        return;
    }
    p->keep_alive = (unsigned char)(p->http_minor >= 1 ? !p->conn_close
                                                       : (p->conn_keep && !p->conn_close));
    if (p->head_request || p->status == 204 || p->status == 304) {
        p->state = UP_P_DONE;
    } else if (p->chunked) {
        p->state = UP_P_CHUNK_SIZE;
    } else if (p->have_length) {
        if (p->length > p->body_cap && !p->windowed) {
            up_parse_too_large(p, 0);
            return;
        }
        if (!up_parse_within_policy(p, p->length))
            return;
        p->state = p->length == 0 ? UP_P_DONE : UP_P_BODY_LEN;
    } else {
        p->state = UP_P_BODY_CLOSE;
        p->keep_alive = 0;
    }
}

/* "HEX[ ][;ext]" */
static void up_parse_chunk_size(struct up_parser *p, const char *l, size_t n)
{
    size_t i = 0;
    uint64_t v = 0;
    if (p->line_long) {
        up_parse_fail(p, 0, "chunk size line too long");
        return;
    }
    while (i < n) {
        int c = up_lower((unsigned char)l[i]), d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            break;
        if (i >= UP_CHUNK_HEX_MAX) {
            up_parse_fail(p, 0, "chunk size has more than %d hex digits", UP_CHUNK_HEX_MAX);
            return;
        }
        v = v * 16 + (uint64_t)d;
        i++;
    }
    if (i == 0) {
        up_parse_fail(p, 0, "bad chunk size");
        return;
    }
    while (i < n && (l[i] == ' ' || l[i] == '\t'))
        i++;
    if (i < n && l[i] != ';') {
        up_parse_fail(p, 0, "bad chunk size");
        return;
    }
    if (v == 0) {
        p->state = UP_P_TRAILER;
        return;
    }
    if (v > p->body_cap - p->body_len && !p->windowed) {
        up_parse_too_large(p, 0);
        return;
    }
    if (!up_parse_within_policy(p, v))
        return;
    p->length = v;
    p->state = UP_P_CHUNK_DATA;
}

/* A complete line is in p->line (line end removed). */
static void up_parse_line(struct up_parser *p)
{
    const char *l = p->line;
    size_t n = p->line_len;
    if (memchr(l, '\r', n) || memchr(l, '\0', n)) {
        up_parse_fail(p, 0, "stray CR or NUL in a line");
        return;
    }
    switch (p->state) {
    case UP_P_STATUS:
        if (p->line_long || up_parse_status_line(p, l, n) != 0)
            up_parse_fail(p, 0, "bad status line");
        else
            p->state = UP_P_HEADER;
        break;
    case UP_P_HEADER:
        if (n == 0)
            up_parse_headers_end(p);
        else
            up_parse_header_line(p, l, n);
        break;
    case UP_P_CHUNK_SIZE:
        up_parse_chunk_size(p, l, n);
        break;
    case UP_P_CHUNK_END:
        if (n != 0)
            up_parse_fail(p, 0, "chunk data longer than its size");
        else
            p->state = UP_P_CHUNK_SIZE;
        break;
    case UP_P_TRAILER:
        if (n == 0)
            p->state = UP_P_DONE;
        break;
    default:
        break;
    }
}

/*
 * Feeds len bytes. Returns how many were consumed: all of them, or fewer when
 * the answer ended (UP_P_DONE: the rest belongs to no answer) or is malformed
 * (UP_P_ERROR, message in p->error). Feeding a DONE or ERROR parser consumes
 * nothing.
 */
static size_t up_parse_feed(struct up_parser *p, const unsigned char *data, size_t len)
{
    size_t i = 0;
    while (i < len && p->state != UP_P_DONE && p->state != UP_P_ERROR) {
        switch (p->state) {
        case UP_P_BODY_LEN:
        case UP_P_CHUNK_DATA: {
            size_t n = len - i;
            if ((uint64_t)n > p->length)
                n = (size_t)p->length;
            if (n > p->body_cap - p->body_len && !p->windowed)
                return up_parse_too_large(p, i);
            if (n > p->body_cap - p->body_len)
                n = p->body_cap - p->body_len;
            if (n == 0)
                return i; /* the window is full */
            memcpy(p->body + p->body_len, data + i, n);
            p->body_len += n;
            p->body_total += n;
            p->length -= n;
            i += n;
            p->seen += n;
            if (p->length == 0)
                p->state = p->state == UP_P_BODY_LEN ? UP_P_DONE : UP_P_CHUNK_END;
            break;
        }
        case UP_P_BODY_CLOSE: {
            size_t n = len - i;
            if (n > p->body_cap - p->body_len && !p->windowed)
                return up_parse_too_large(p, i);
            if (n > p->body_cap - p->body_len)
                n = p->body_cap - p->body_len;
            if (n == 0)
                return i; /* the window is full */
            if (!up_parse_within_policy(p, n))
                return i;
            memcpy(p->body + p->body_len, data + i, n);
            p->body_len += n;
            p->body_total += n;
            i += n;
            p->seen += n;
            break;
        }
        default: { /* line-oriented states */
            const unsigned char *nl = memchr(data + i, '\n', len - i);
            size_t n = nl ? (size_t)(nl - (data + i)) : len - i;
            size_t room = (UP_LINE_MAX - 1) - p->line_len;
            int in_head = p->state == UP_P_STATUS || p->state == UP_P_HEADER ||
                          p->state == UP_P_TRAILER;
            if (in_head && p->head_bytes + n + 1 > UP_HEAD_MAX)
                return up_parse_fail(p, i, "headers longer than %d bytes", UP_HEAD_MAX);
            if (n > room) {
                p->line_long = 1;
                memcpy(p->line + p->line_len, data + i, room);
                p->line_len += room;
            } else {
                memcpy(p->line + p->line_len, data + i, n);
                p->line_len += n;
            }
            p->head_bytes += in_head ? n + (nl != NULL) : 0;
            i += n + (nl != NULL);
            p->seen += n + (nl != NULL);
            if (nl) {
                /* a line ends at LF; a CR just before it is part of the line end */
                if (!p->line_long && p->line_len > 0 && p->line[p->line_len - 1] == '\r')
                    p->line_len--;
                p->line[p->line_len] = '\0';
                up_parse_line(p);
                p->line_len = 0;
                p->line_long = 0;
            }
            break;
        }
        }
    }
    return i;
}

/*
 * The connection ended (close_notify or TCP EOF). Returns 0 when that
 * completes the answer (close-delimited body), else -1 with p->error set.
 */
static int up_parse_eof(struct up_parser *p)
{
    if (p->state == UP_P_DONE)
        return 0;
    if (p->state == UP_P_BODY_CLOSE) {
        p->state = UP_P_DONE;
        return 0;
    }
    if (p->state != UP_P_ERROR) {
        snprintf(p->error, sizeof p->error,
                 "the Cal ID API closed the connection before the answer was complete (truncated)");
        p->state = UP_P_ERROR;
    }
    return -1;
}

/*
 * The connection ended without TLS close_notify (a bare TCP close): nothing
 * shows that the server meant to end there, so an answer delimited by the
 * close is a truncation too. Returns 0 only for an answer already complete.
 */
static int up_parse_cut(struct up_parser *p)
{
    if (p->state == UP_P_BODY_CLOSE) {
        snprintf(p->error, sizeof p->error,
                 "the Cal ID API closed the connection without TLS close_notify, so the answer "
                 "(delimited by the close) may be cut short (truncated)");
        p->state = UP_P_ERROR;
        return -1;
    }
    return up_parse_eof(p);
}

/* ======================================================================
 * Static state
 * ====================================================================== */
enum up_sstate {
    UP_S_FREE = 0,   /* no request, no connection */
    UP_S_IDLE,       /* no request; a kept-alive TLS connection is open */
    UP_S_RESOLVING,  /* waiting for cm_port_resolve() */
    UP_S_CONNECTING, /* TCP connect in progress (wait for writable) */
    UP_S_HANDSHAKE,  /* TLS handshake running */
    UP_S_SENDING,    /* writing the request into the engine */
    UP_S_RECEIVING,  /* reading the answer */
    UP_S_FAILED,     /* refused at up_submit(): the failure is delivered by the next up_tick() */
    UP_S_DONE,       /* result delivered; waiting for up_release() */
    UP_S_PAUSED      /* one window of a streamed answer delivered; reading waits for up_release() */
};

struct up_slot {
    br_ssl_client_context cc;      /* ~3.7 KB */
    br_x509_minimal_context xc;    /* ~3.2 KB */
    /*
     * MONO (half-duplex) I/O buffer, 16,709 B instead of 33,178 B for BIDI:
     * HTTP/1.1 without pipelining is strictly request-then-answer, so the
     * engine never needs to send and receive application data at the same
     * time. Half-duplex only means the engine cannot send while unread input
     * sits in the buffer, which never happens in that pattern. It still holds
     * a maximum-size (16 KiB) record, so any server interoperates.
     */
    unsigned char iobuf[BR_SSL_BUFSIZE_MONO];
    /*
     * The request is needed until the first byte of the answer arrives (a
     * request retried or sent on goes out from here); the answer body only
     * after that: one buffer holds both, the request wiped when the answer
     * begins.
     */
    union {
        unsigned char req[CM_UPSTREAM_REQ_BYTES];       /* request line + headers + body */
        unsigned char body[CM_UPSTREAM_BODY_BYTES + 1]; /* answer body + NUL */
    };
    struct up_parser parser;
    struct up_result result;
    cm_sock_t sock;                /* CM_SOCK_INVALID when no connection */
    unsigned char state;           /* enum up_sstate */
    unsigned char kick;            /* has work that does not wait on the socket: run in up_tick */
    unsigned char reused;          /* this request runs on a kept-alive connection */
    unsigned char retried;         /* already retried once on a fresh connection */
    unsigned char replay_safe;     /* the method may be repeated (GET, HEAD, PUT, DELETE, OPTIONS) */
    unsigned char changes;         /* the method may change something (not GET, HEAD, OPTIONS) */
    unsigned char keep_conn;       /* (DONE) connection stays open for the next request */
    unsigned char early;           /* the answer began before the request was fully sent */
    unsigned char tls_started;     /* the engine was reset for the current connection */
    unsigned char stream_ok;       /* the owner takes the answer in windows (up_allow_stream) */
    unsigned char streamed;        /* windows of the current answer were delivered */
    unsigned char offered_len;     /* session id offered for resumption (0: none) */
    unsigned char offered_id[32];
    unsigned owner;
    size_t req_len, req_off;       /* request bytes, and bytes already given to the engine */
    uint64_t started_ms;           /* up_submit time (for debug timing) */
    uint64_t deadline_ms;          /* the current phase times out here; 0 = none */
    uint64_t paused_left_ms;       /* (PAUSED) what was left of the answer timeout */
    struct jscan json;             /* a streamed 2xx answer, checked as it passes */
    uint64_t idle_since_ms;        /* (IDLE) when the connection's last answer ended */
    unsigned conn_requests;        /* requests served on the current connection */
    char what[96];                 /* "METHOD /path" for logs: no query string, no token */
};

static struct {
    int ready;                                  /* up_init() succeeded */
    char host[UP_HOST_MAX];                     /* for DNS and SNI, without brackets */
    char host_header[UP_HOST_MAX + 8];          /* Host: value ([v6] and :port unless 443) */
    char host_port[UP_HOST_MAX + 8];            /* host:port, for error texts */
    char prefix[UP_PREFIX_MAX];                 /* prepended to every path ("" or "/x/y") */
    unsigned short port;
    br_ssl_session_parameters session;          /* last negotiated session, shared by all slots */
    int have_session;
    const br_x509_trust_anchor *trusted;        /* what the slots check against: anchors or built in */
    size_t n_trusted;
    size_t n_anchors;
    size_t arena_used;
    br_x509_trust_anchor anchors[CM_MAX_TRUST_ANCHORS];
    unsigned char arena[CM_TRUST_ARENA_BYTES];  /* DNs and public keys of the anchors */
    struct up_slot slots[CM_MAX_UPSTREAMS];
} up;

static unsigned up_full_handshakes; /* full (non-resumed) TLS handshakes done */
static unsigned up_resumed_handshakes;

static size_t up_static_bytes(void) { return sizeof up + sizeof up_full_handshakes + sizeof up_resumed_handshakes; }

/* ======================================================================
 * Error texts
 * ====================================================================== */
struct up_err_name {
    int code;
    const char *name;
    const char *words;
};

static const struct up_err_name up_br_errors[] = {
    { BR_ERR_BAD_PARAM, "BR_ERR_BAD_PARAM", "invalid TLS engine parameter" },
    { BR_ERR_BAD_STATE, "BR_ERR_BAD_STATE", "TLS engine used in a wrong state" },
    { BR_ERR_UNSUPPORTED_VERSION, "BR_ERR_UNSUPPORTED_VERSION", "the server does not support TLS 1.2" },
    { BR_ERR_BAD_VERSION, "BR_ERR_BAD_VERSION", "the server used an unexpected protocol version" },
    { BR_ERR_BAD_LENGTH, "BR_ERR_BAD_LENGTH", "the server sent a record of invalid length (is it TLS?)" },
    { BR_ERR_TOO_LARGE, "BR_ERR_TOO_LARGE", "the server sent a record too large for the I/O buffer" },
    { BR_ERR_BAD_MAC, "BR_ERR_BAD_MAC", "a record failed its integrity check (corrupted or tampered)" },
    { BR_ERR_NO_RANDOM, "BR_ERR_NO_RANDOM", "no source of random bytes (cm_port_random failed and the OS has none)" },
    { BR_ERR_UNKNOWN_TYPE, "BR_ERR_UNKNOWN_TYPE", "the server sent an unknown record type" },
    { BR_ERR_UNEXPECTED, "BR_ERR_UNEXPECTED", "the server sent an unexpected message" },
    { BR_ERR_BAD_CCS, "BR_ERR_BAD_CCS", "the server sent an invalid ChangeCipherSpec" },
    { BR_ERR_BAD_ALERT, "BR_ERR_BAD_ALERT", "the server sent an invalid alert" },
    { BR_ERR_BAD_HANDSHAKE, "BR_ERR_BAD_HANDSHAKE", "the server sent an invalid handshake message" },
    { BR_ERR_OVERSIZED_ID, "BR_ERR_OVERSIZED_ID", "the server sent an oversized session id" },
    { BR_ERR_BAD_CIPHER_SUITE, "BR_ERR_BAD_CIPHER_SUITE", "no cipher suite in common with the server" },
    { BR_ERR_BAD_COMPRESSION, "BR_ERR_BAD_COMPRESSION", "the server chose an unsupported compression" },
    { BR_ERR_BAD_FRAGLEN, "BR_ERR_BAD_FRAGLEN", "the server sent a bad max fragment length" },
    { BR_ERR_BAD_SECRENEG, "BR_ERR_BAD_SECRENEG", "secure renegotiation failed" },
    { BR_ERR_EXTRA_EXTENSION, "BR_ERR_EXTRA_EXTENSION", "the server sent an unexpected extension" },
    { BR_ERR_BAD_SNI, "BR_ERR_BAD_SNI", "the server sent an invalid SNI extension" },
    { BR_ERR_BAD_HELLO_DONE, "BR_ERR_BAD_HELLO_DONE", "the server sent an invalid ServerHelloDone" },
    { BR_ERR_LIMIT_EXCEEDED, "BR_ERR_LIMIT_EXCEEDED", "a BearSSL limit was exceeded (server key too large?)" },
    { BR_ERR_BAD_FINISHED, "BR_ERR_BAD_FINISHED", "the handshake Finished check failed" },
    { BR_ERR_RESUME_MISMATCH, "BR_ERR_RESUME_MISMATCH", "the server resumed a session with other parameters" },
    { BR_ERR_INVALID_ALGORITHM, "BR_ERR_INVALID_ALGORITHM", "the server chose an unsupported algorithm" },
    { BR_ERR_BAD_SIGNATURE, "BR_ERR_BAD_SIGNATURE", "the server's key exchange signature is invalid" },
    { BR_ERR_WRONG_KEY_USAGE, "BR_ERR_WRONG_KEY_USAGE", "the server key does not fit the chosen cipher suite" },
    { BR_ERR_NO_CLIENT_AUTH, "BR_ERR_NO_CLIENT_AUTH", "the server demands a client certificate" },
    { BR_ERR_X509_INVALID_VALUE, "BR_ERR_X509_INVALID_VALUE", "the server certificate is malformed" },
    { BR_ERR_X509_TRUNCATED, "BR_ERR_X509_TRUNCATED", "the server certificate is truncated" },
    { BR_ERR_X509_EMPTY_CHAIN, "BR_ERR_X509_EMPTY_CHAIN", "the server sent no certificate" },
    { BR_ERR_X509_BAD_TIME, "BR_ERR_X509_BAD_TIME", "the server certificate has an invalid date" },
    { BR_ERR_X509_UNSUPPORTED, "BR_ERR_X509_UNSUPPORTED", "the server certificate uses an unsupported algorithm or format" },
    { BR_ERR_X509_LIMIT_EXCEEDED, "BR_ERR_X509_LIMIT_EXCEEDED", "the server certificate chain exceeds BearSSL limits" },
    { BR_ERR_X509_WRONG_KEY_TYPE, "BR_ERR_X509_WRONG_KEY_TYPE", "the server certificate key type is not the expected one" },
    { BR_ERR_X509_BAD_SIGNATURE, "BR_ERR_X509_BAD_SIGNATURE", "a signature in the server certificate chain is invalid" },
    { BR_ERR_X509_TIME_UNKNOWN, "BR_ERR_X509_TIME_UNKNOWN", "the current time is unknown, so the certificate cannot be checked" },
    { BR_ERR_X509_EXPIRED, "BR_ERR_X509_EXPIRED", "the server certificate has expired or is not yet valid (check the system clock)" },
    { BR_ERR_X509_DN_MISMATCH, "BR_ERR_X509_DN_MISMATCH", "the server certificate chain is not linked (issuer/subject mismatch)" },
    { BR_ERR_X509_BAD_SERVER_NAME, "BR_ERR_X509_BAD_SERVER_NAME", NULL /* special: names the host */ },
    { BR_ERR_X509_CRITICAL_EXTENSION, "BR_ERR_X509_CRITICAL_EXTENSION", "the server certificate has an unsupported critical extension" },
    { BR_ERR_X509_NOT_CA, "BR_ERR_X509_NOT_CA", "a certificate in the server chain that signs others is not a CA" },
    { BR_ERR_X509_FORBIDDEN_KEY_USAGE, "BR_ERR_X509_FORBIDDEN_KEY_USAGE", "the server certificate may not be used for a TLS server" },
    { BR_ERR_X509_WEAK_PUBLIC_KEY, "BR_ERR_X509_WEAK_PUBLIC_KEY", "the server certificate key is too weak" },
    { BR_ERR_X509_NOT_TRUSTED, "BR_ERR_X509_NOT_TRUSTED", "the server certificate is not trusted" },
};

static const char *up_alert_name(int a)
{
    switch (a) {
    case 0: return "close_notify";
    case 10: return "unexpected_message";
    case 20: return "bad_record_mac";
    case 22: return "record_overflow";
    case 40: return "handshake_failure";
    case 42: return "bad_certificate";
    case 43: return "unsupported_certificate";
    case 44: return "certificate_revoked";
    case 45: return "certificate_expired";
    case 46: return "certificate_unknown";
    case 47: return "illegal_parameter";
    case 48: return "unknown_ca";
    case 49: return "access_denied";
    case 50: return "decode_error";
    case 51: return "decrypt_error";
    case 70: return "protocol_version";
    case 71: return "insufficient_security";
    case 80: return "internal_error";
    case 86: return "inappropriate_fallback";
    case 90: return "user_canceled";
    case 109: return "missing_extension";
    case 110: return "unsupported_extension";
    case 112: return "unrecognized_name";
    case 116: return "certificate_required";
    case 120: return "no_application_protocol";
    default: return "unknown alert";
    }
}

/* Words for a BearSSL error code (engine or X.509). */
static void up_tls_error_text(int err, char *buf, size_t len)
{
    size_t i;
    if (err >= BR_ERR_SEND_FATAL_ALERT) {
        snprintf(buf, len, "TLS failure: sent alert %d (%s) to the server", err - BR_ERR_SEND_FATAL_ALERT,
                 up_alert_name(err - BR_ERR_SEND_FATAL_ALERT));
        return;
    }
    if (err >= BR_ERR_RECV_FATAL_ALERT) {
        snprintf(buf, len, "TLS failure: alert %d (%s) from the server", err - BR_ERR_RECV_FATAL_ALERT,
                 up_alert_name(err - BR_ERR_RECV_FATAL_ALERT));
        return;
    }
    for (i = 0; i < sizeof up_br_errors / sizeof up_br_errors[0]; i++) {
        if (up_br_errors[i].code != err)
            continue;
        if (err == BR_ERR_X509_BAD_SERVER_NAME)
            snprintf(buf, len, "TLS failure: the certificate does not match host name %.80s (BearSSL error %d: %s)",
                     up.host, err, up_br_errors[i].name);
        else
            snprintf(buf, len, "TLS failure: %s (BearSSL error %d: %s)", up_br_errors[i].words, err,
                     up_br_errors[i].name);
        return;
    }
    snprintf(buf, len, "TLS failure (BearSSL error %d)", err);
}

/* ======================================================================
 * up_init: base URL and trust anchors
 * ====================================================================== */
static int up_prefix_ieq(const char *s, const char *lower_prefix)
{
    size_t i;
    for (i = 0; lower_prefix[i]; i++)
        if (up_lower((unsigned char)s[i]) != lower_prefix[i])
            return 0;
    return 1;
}

/* The first character of host h[0..n) a URL may not have there, or -1:
 * letters, digits, '.', and '-' '_' for names or ':' inside [brackets]. */
static int up_url_bad_host_char(const char *h, size_t n, int bracket)
{
    size_t i;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)h[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 (!bracket && (c == '-' || c == '_')) || (bracket && c == ':');
        if (!ok)
            return c;
    }
    return -1;
}

/* ":PORT" at *pp (1..65535, then the end or '/'): 0 with *port set and *pp
 * past it, -1 if malformed. Without one, *port stays. */
static int up_url_port(const char **pp, unsigned long *port)
{
    const char *p = *pp;
    int digits = 0;
    if (*p != ':')
        return 0;
    *port = 0;
    for (p++; *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
        *port = *port * 10 + (unsigned long)(*p - '0');
    if (digits == 0 || *port == 0 || *port > 65535 || (*p != '\0' && *p != '/'))
        return -1;
    *pp = p;
    return 0;
}

/* A plain path: no spaces, controls, query or fragment. */
static int up_url_path_ok(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
            return 0;
    }
    return 1;
}

/* Host, port and path prefix of the API base URL into up: https:// only,
 * since the bearer token travels with every request. */
static int up_parse_base_url(const char *url, char *err, size_t errlen)
{
    const char *p, *h, *hend;
    size_t hlen, plen;
    unsigned long port = 443;
    int bracket = 0, bad;
    if (url == NULL || *url == '\0') {
        snprintf(err, errlen, "the Cal ID API URL is empty");
        return -1;
    }
    if (up_prefix_ieq(url, "http://")) {
        snprintf(err, errlen, "the Cal ID API URL '%s' uses http://: only https:// is allowed, "
                 "the bearer token must not travel in clear text", url);
        return -1;
    }
    if (!up_prefix_ieq(url, "https://")) {
        snprintf(err, errlen, "the Cal ID API URL '%s' must start with https://", url);
        return -1;
    }
    p = url + 8;
    if (*p == '[') {
        bracket = 1;
        h = p + 1;
        hend = strchr(h, ']');
        if (hend == NULL) {
            snprintf(err, errlen, "the Cal ID API URL '%s' has an unclosed '['", url);
            return -1;
        }
        p = hend + 1;
    } else {
        for (h = p; *p && *p != ':' && *p != '/'; p++)
            ;
        hend = p;
    }
    hlen = (size_t)(hend - h);
    if (hlen == 0) {
        snprintf(err, errlen, "the Cal ID API URL '%s' has no host name", url);
        return -1;
    }
    if (hlen >= sizeof up.host) {
        snprintf(err, errlen, "the host name in the Cal ID API URL is longer than %d characters",
                 (int)sizeof up.host - 1);
        return -1;
    }
    if ((bad = up_url_bad_host_char(h, hlen, bracket)) >= 0) {
        snprintf(err, errlen, "the Cal ID API URL '%s' has a bad character in its host name%s", url,
                 bad == '@' ? " (user:password@ is not supported)" : "");
        return -1;
    }
    if (up_url_port(&p, &port) < 0) {
        snprintf(err, errlen, "the Cal ID API URL '%s' has a bad port", url);
        return -1;
    }
    if (*p != '\0' && *p != '/') {
        snprintf(err, errlen, "the Cal ID API URL '%s' has something unexpected after the host", url);
        return -1;
    }
    for (plen = strlen(p); plen > 0 && p[plen - 1] == '/'; plen--)
        ;
    if (plen >= sizeof up.prefix) {
        snprintf(err, errlen, "the path in the Cal ID API URL is longer than %d characters",
                 (int)sizeof up.prefix - 1);
        return -1;
    }
    if (!up_url_path_ok(p, plen)) {
        snprintf(err, errlen, "the Cal ID API URL '%s' may only have a plain path after the host "
                 "(no query, fragment, spaces)", url);
        return -1;
    }
    memcpy(up.host, h, hlen);
    up.host[hlen] = '\0';
    memcpy(up.prefix, p, plen);
    up.prefix[plen] = '\0';
    up.port = (unsigned short)port;
    snprintf(up.host_port, sizeof up.host_port, bracket ? "[%s]:%lu" : "%s:%lu", up.host, port);
    if (port == 443) /* the Host header leaves the default port out */
        snprintf(up.host_header, sizeof up.host_header, bracket ? "[%s]" : "%s", up.host);
    else
        snprintf(up.host_header, sizeof up.host_header, bracket ? "[%s]:%lu" : "%s:%lu", up.host, port);
    return 0;
}

/* Trust anchor loading: PEM decoder -> X.509 decoder -> arena. */
struct up_ta_loader {
    br_pem_decoder_context pem;
    br_x509_decoder_context x509;
    int overflow; /* the DN did not fit the arena */
};

static void up_ta_append_dn(void *ctx, const void *buf, size_t len)
{
    struct up_ta_loader *l = ctx;
    if (l->overflow || len > sizeof up.arena - up.arena_used) {
        l->overflow = 1;
        return;
    }
    memcpy(up.arena + up.arena_used, buf, len);
    up.arena_used += len;
}

static void up_ta_push_der(void *ctx, const void *buf, size_t len)
{
    struct up_ta_loader *l = ctx;
    br_x509_decoder_push(&l->x509, buf, len);
}

static unsigned char *up_arena_copy(const unsigned char *src, size_t len)
{
    unsigned char *d;
    if (len > sizeof up.arena - up.arena_used)
        return NULL;
    d = up.arena + up.arena_used;
    memcpy(d, src, len);
    up.arena_used += len;
    return d;
}

/* The certificate object ended: turn it into an anchor. 1 added, 0 skipped, -1 full. */
static int up_ta_finish(struct up_ta_loader *l, size_t dn_start, const char *ca_file, char *err, size_t errlen)
{
    br_x509_trust_anchor *ta;
    const br_x509_pkey *pk;
    if (l->overflow)
        goto arena_full;
    pk = br_x509_decoder_get_pkey(&l->x509);
    if (br_x509_decoder_last_error(&l->x509) != 0 || pk == NULL) {
        up.arena_used = dn_start; /* undecodable (unsupported key type...): skip it */
        return 0;
    }
    if (up.n_anchors >= CM_MAX_TRUST_ANCHORS) {
        snprintf(err, errlen, "%s holds more than %d certificates (CM_MAX_TRUST_ANCHORS); "
                 "rebuild with a larger -DCM_MAX_TRUST_ANCHORS or use a smaller CA file",
                 ca_file, CM_MAX_TRUST_ANCHORS);
        return -1;
    }
    ta = &up.anchors[up.n_anchors];
    memset(ta, 0, sizeof *ta);
    ta->dn.data = up.arena + dn_start;
    ta->dn.len = up.arena_used - dn_start;
    ta->flags = br_x509_decoder_isCA(&l->x509) ? BR_X509_TA_CA : 0;
    ta->pkey.key_type = pk->key_type;
    if (pk->key_type == BR_KEYTYPE_RSA) {
        ta->pkey.key.rsa.n = up_arena_copy(pk->key.rsa.n, pk->key.rsa.nlen);
        ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
        ta->pkey.key.rsa.e = up_arena_copy(pk->key.rsa.e, pk->key.rsa.elen);
        ta->pkey.key.rsa.elen = pk->key.rsa.elen;
        if (ta->pkey.key.rsa.n == NULL || ta->pkey.key.rsa.e == NULL)
            goto arena_full;
    } else if (pk->key_type == BR_KEYTYPE_EC) {
        ta->pkey.key.ec.curve = pk->key.ec.curve;
        ta->pkey.key.ec.q = up_arena_copy(pk->key.ec.q, pk->key.ec.qlen);
        ta->pkey.key.ec.qlen = pk->key.ec.qlen;
        if (ta->pkey.key.ec.q == NULL)
            goto arena_full;
    } else {
        up.arena_used = dn_start;
        return 0;
    }
    up.n_anchors++;
    return 1;
arena_full:
    snprintf(err, errlen, "the certificates in %s need more than %d bytes (CM_TRUST_ARENA_BYTES); "
             "rebuild with a larger -DCM_TRUST_ARENA_BYTES or use a smaller CA file",
             ca_file, CM_TRUST_ARENA_BYTES);
    return -1;
}

static int up_load_anchors(const char *ca_file, char *err, size_t errlen)
{
    struct up_ta_loader l; /* ~2 KB of stack, at start-up only */
    unsigned char buf[1024];
    FILE *f;
    size_t n, dn_start = 0;
    int in_cert = 0, skipped = 0, eof = 0;
    up.n_anchors = 0;
    up.arena_used = 0;
    f = fopen(ca_file, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open the CA file %s: %s", ca_file, strerror(errno));
        return -1;
    }
    memset(&l, 0, sizeof l);
    br_pem_decoder_init(&l.pem);
    while (!eof) {
        size_t off = 0;
        n = fread(buf, 1, sizeof buf, f);
        if (n == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "cannot read the CA file %s", ca_file);
                fclose(f);
                return -1;
            }
            buf[0] = '\n'; /* lets the decoder see an END line that has no newline */
            n = 1;
            eof = 1;
        }
        while (off < n) {
            off += br_pem_decoder_push(&l.pem, buf + off, n - off);
            switch (br_pem_decoder_event(&l.pem)) {
            case BR_PEM_BEGIN_OBJ: {
                const char *name = br_pem_decoder_name(&l.pem);
                in_cert = strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "X509 CERTIFICATE") == 0;
                if (in_cert) {
                    dn_start = up.arena_used;
                    l.overflow = 0;
                    br_x509_decoder_init(&l.x509, up_ta_append_dn, &l);
                    br_pem_decoder_setdest(&l.pem, up_ta_push_der, &l);
                } else {
                    br_pem_decoder_setdest(&l.pem, NULL, NULL);
                }
                break;
            }
            case BR_PEM_END_OBJ:
                if (in_cert) {
                    int r = up_ta_finish(&l, dn_start, ca_file, err, errlen);
                    if (r < 0) {
                        fclose(f);
                        up.n_anchors = 0;
                        return -1;
                    }
                    skipped += r == 0;
                }
                in_cert = 0;
                break;
            case BR_PEM_ERROR:
                if (in_cert) {
                    up.arena_used = dn_start;
                    skipped++;
                }
                in_cert = 0;
                break;
            default:
                break;
            }
        }
    }
    fclose(f);
    if (up.n_anchors == 0) {
        if (skipped)
            snprintf(err, errlen, "no usable certificate in the CA file %s (%d could not be decoded)", ca_file,
                     skipped);
        else
            snprintf(err, errlen, "no certificate (-----BEGIN CERTIFICATE-----) in the CA file %s", ca_file);
        return -1;
    }
    cm_logf(CM_LOG_DEBUG, "upstream: %lu trust anchors from %s (%lu of %d arena bytes, %d skipped)",
            (unsigned long)up.n_anchors, ca_file, (unsigned long)up.arena_used, CM_TRUST_ARENA_BYTES, skipped);
    return 0;
}

static void up_close_sock(struct up_slot *s)
{
    if (s->sock != CM_SOCK_INVALID)
        cm_port_close(s->sock);
    s->sock = CM_SOCK_INVALID;
}

/* Abandons every request and connection without calling back (for cm_stop). */
static void up_close_all(void)
{
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++) {
        struct up_slot *s = &up.slots[i];
        if (up.ready)
            up_close_sock(s);
        s->sock = CM_SOCK_INVALID;
        s->tls_started = 0;
        s->state = UP_S_FREE;
        s->kick = 0;
        memset(s->req, 0, s->req_len);
        s->req_len = 0;
    }
}

/*
 * The TLS profile, the API client's and the HTTPS listener's alike: TLS 1.2;
 * ECDHE key exchange (forward secrecy) signed with ECDSA or RSA; AES-128-GCM,
 * ChaCha20-Poly1305 or AES-256-GCM (in that order: AES-NI makes AES-GCM the
 * fastest where present); curves X25519, P-256, P-384 and P-521 (BearSSL's
 * default EC code); certificate signatures RSA PKCS#1 v1.5 or ECDSA with
 * SHA-1/224/256/384/512 (MD5 never). Naming each piece, instead of BearSSL's
 * "full" profiles, links only these: no CBC, CCM, 3DES, MD5, TLS 1.0 PRF or
 * RSA key exchange in the binary.
 */
static const uint16_t tls_suites[] = {
    BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,       BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,       BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

/* By BearSSL's hash ids (br_sha1_ID 2 .. br_sha512_ID 6): the handshake
 * and the PRF use SHA-256/384, signatures any of them. */
static const br_hash_class *const tls_hashes[] = {&br_sha1_vtable, &br_sha224_vtable, &br_sha256_vtable,
                                                  &br_sha384_vtable, &br_sha512_vtable};

/* What the client and server engines share; each adds its own keys. */
static void tls_profile(br_ssl_engine_context *eng)
{
    int id;
    br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
    br_ssl_engine_set_suites(eng, tls_suites, sizeof tls_suites / sizeof tls_suites[0]);
    for (id = br_sha1_ID; id <= br_sha512_ID; id++)
        br_ssl_engine_set_hash(eng, id, tls_hashes[id - br_sha1_ID]);
    br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
    br_ssl_engine_set_prf_sha384(eng, &br_tls12_sha384_prf);
    br_ssl_engine_set_default_aes_gcm(eng);
    br_ssl_engine_set_default_chapol(eng);
    br_ssl_engine_set_ec(eng, br_ec_get_default());
    br_ssl_engine_add_flags(eng, BR_OPT_NO_RENEGOTIATION);
}

/* The client: the profile, plus the X.509 engine (chain to the anchors,
 * host name, validity dates) and the server's handshake signature checks. */
static void up_tls_client_init(struct up_slot *s)
{
    int id;
    br_ssl_client_zero(&s->cc);
    tls_profile(&s->cc.eng);
    br_x509_minimal_init(&s->xc, &br_sha256_vtable, up.trusted, up.n_trusted); /* SHA-256 compares DNs */
    for (id = br_sha1_ID; id <= br_sha512_ID; id++)
        br_x509_minimal_set_hash(&s->xc, id, tls_hashes[id - br_sha1_ID]);
    br_x509_minimal_set_rsa(&s->xc, br_rsa_pkcs1_vrfy_get_default());
    br_x509_minimal_set_ecdsa(&s->xc, br_ec_get_default(), br_ecdsa_vrfy_asn1_get_default());
    br_ssl_engine_set_rsavrfy(&s->cc.eng, br_rsa_pkcs1_vrfy_get_default());
    br_ssl_engine_set_ecdsa(&s->cc.eng, br_ecdsa_vrfy_asn1_get_default());
    br_ssl_engine_set_x509(&s->cc.eng, &s->xc.vtable);
}

/*
 * The anchors: --ca-file's when given; else the ones compiled in with
 * -DCM_TRUST_ANCHORS_H (mk/pem2c.py: const data, flash on a microcontroller,
 * no file system needed); else the platform's bundle.
 */
static int up_choose_anchors(const char *ca_file, char *err, size_t errlen)
{
#ifdef CM_BUILTIN_ANCHORS
    if (ca_file == NULL) {
        up.trusted = cm_builtin_anchors;
        up.n_trusted = CM_BUILTIN_ANCHORS;
        cm_logf(CM_LOG_DEBUG, "upstream: %lu trust anchors compiled in", (unsigned long)up.n_trusted);
        return 0;
    }
#endif
    if (ca_file == NULL)
        ca_file = cm_port_default_ca_file();
    if (ca_file == NULL) {
        snprintf(err, errlen, "no CA file given and this platform has no system CA bundle");
        return -1;
    }
    if (up_load_anchors(ca_file, err, errlen) != 0)
        return -1;
    up.trusted = up.anchors;
    up.n_trusted = up.n_anchors;
    return 0;
}

static int up_init(const char *base_url, const char *ca_file, char *err, size_t errlen)
{
    int i;
    up_close_all();
    up.ready = 0;
    up.have_session = 0;
    memset(&up.session, 0, sizeof up.session);
    if (up_parse_base_url(base_url, err, errlen) != 0)
        return -1;
    if (up_choose_anchors(ca_file, err, errlen) != 0)
        return -1;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++) {
        struct up_slot *s = &up.slots[i];
        unsigned char seed[32];
        up_tls_client_init(s);
        br_ssl_engine_set_buffer(&s->cc.eng, s->iobuf, sizeof s->iobuf, 0);
        /* BearSSL seeds from the OS where it can; this also covers firmware
           without an OS random source (the DRBG state survives resets). */
        if (cm_port_random(seed, sizeof seed) == 0)
            br_ssl_engine_inject_entropy(&s->cc.eng, seed, sizeof seed);
        else if (i == 0)
            cm_logf(CM_LOG_WARN, "upstream: cm_port_random failed; TLS relies on BearSSL's own OS seeding");
        memset(seed, 0, sizeof seed);
        s->sock = CM_SOCK_INVALID;
        s->state = UP_S_FREE;
    }
    up.ready = 1;
    return 0;
}

/* ======================================================================
 * Request slots
 * ====================================================================== */
static int up_has_tls(const struct up_slot *s)
{
    return s->state == UP_S_IDLE || s->state == UP_S_HANDSHAKE || s->state == UP_S_SENDING ||
           s->state == UP_S_RECEIVING;
}

/* Closes the connection; graceful sends close_notify if the socket takes it now. */
static void up_drop_conn(struct up_slot *s, int graceful)
{
    if (s->sock == CM_SOCK_INVALID)
        return;
    if (graceful && s->tls_started) { /* never touch an engine that was not reset for this socket */
        br_ssl_engine_context *eng = &s->cc.eng;
        int guard = 4;
        br_ssl_engine_close(eng);
        while (guard-- > 0 && (br_ssl_engine_current_state(eng) & BR_SSL_SENDREC)) {
            size_t len;
            unsigned char *buf = br_ssl_engine_sendrec_buf(eng, &len);
            long n = cm_port_send(s->sock, buf, len);
            if (n <= 0)
                break;
            br_ssl_engine_sendrec_ack(eng, (size_t)n);
        }
    }
    up_close_sock(s);
    s->tls_started = 0;
    s->conn_requests = 0;
}

static void up_deliver(int h)
{
    struct up_slot *s = &up.slots[h];
    uint64_t ms = cm_port_now_ms() - s->started_ms;
    s->state = UP_S_DONE;
    s->kick = 0;
    s->deadline_ms = 0;
    memset(s->req, 0, s->req_len); /* the bearer token is not kept once the request has ended */
    s->req_len = s->req_off = 0;
    if (s->result.status)
        cm_logf(CM_LOG_DEBUG, "upstream: %s -> %d (%lu bytes) in %lu ms%s", s->what, s->result.status,
                (unsigned long)s->result.body_len, (unsigned long)ms, s->reused ? " (kept-alive connection)" : "");
    else
        cm_logf(CM_LOG_DEBUG, "upstream: %s failed after %lu ms: %s", s->what, (unsigned long)ms,
                s->result.error);
    on_upstream_done(s->owner, h, &s->result);
    /* the slot may have been released or reused by now: do not touch it */
}

/* What a failed request that was sent (in part or whole) may have done. */
#define UP_NOTE_NOT_RESENT                                                                     \
    ". The request was sent, so the API may have made the change although no answer came; "   \
    "it was not sent again. Check whether it took effect (with the matching get_ or list_ "    \
    "tool) before retrying, or it may be made twice."
#define UP_NOTE_RESENDABLE                                                                     \
    ". The request was sent, so the API may have made the change although no answer came; "   \
    "sending it again is safe (it sets the same state)."

/* Appends the outcome note when the request may have taken effect. */
static void up_note_outcome(struct up_slot *s)
{
    size_t n = strlen(s->result.error);
    int sent = s->state == UP_S_RECEIVING || (s->state == UP_S_SENDING && s->req_off > 0);
    if (!s->changes || !sent)
        return;
    snprintf(s->result.error + n, sizeof s->result.error - n, "%s",
             s->replay_safe ? UP_NOTE_RESENDABLE : UP_NOTE_NOT_RESENT);
}

static void up_fail(int h, const char *fmt, ...)
{
    struct up_slot *s = &up.slots[h];
    va_list ap;
    memset(&s->result, 0, sizeof s->result);
    va_start(ap, fmt);
    vsnprintf(s->result.error, sizeof s->result.error, fmt, ap);
    va_end(ap);
    up_note_outcome(s);
    s->result.status = 0;
    s->result.body = "";
    s->result.body_len = 0;
    if (s->streamed) { /* the owner has sent the answer's start: it gets what arrived since, then the error */
        s->result.streamed = 1;
        s->result.offset = s->parser.body_total - s->parser.body_len;
        s->result.body = (const char *)s->body;
        s->result.body_len = s->parser.body_len;
    }
    s->keep_conn = 0;
    up_drop_conn(s, 1); /* close_notify if the engine still can: servers keep the session */
    up_deliver(h);
}

static void up_fail_tls(int h, int err)
{
    char text[200];
    up_tls_error_text(err, text, sizeof text);
    up_fail(h, "%s", text);
}

static void up_complete(int h)
{
    struct up_slot *s = &up.slots[h];
    struct up_parser *p = &s->parser;
    memset(&s->result, 0, sizeof s->result);
    s->result.status = p->status;
    s->body[p->body_len] = '\0';
    s->result.body = (const char *)s->body;
    s->result.body_len = p->body_len;
    memcpy(s->result.retry_after, p->retry_after, sizeof s->result.retry_after);
    memcpy(s->result.content_type, p->content_type, sizeof s->result.content_type);
    if (s->streamed) {
        s->result.streamed = 1;
        s->result.offset = s->parser.body_total - s->parser.body_len;
        if (p->status < 300 && (js_feed(&s->json, (const char *)s->body, p->body_len) < 0 || js_finish(&s->json) < 0)) {
            s->result.not_json = s->json.why;
            s->result.not_json_at = s->json.mark;
        }
    }
    if (s->keep_conn)
        s->conn_requests++;
    else
        up_drop_conn(s, 1);
    up_deliver(h);
}

/* How many bytes at the end of b[0..n) begin a UTF-8 sequence that n cuts:
 * they wait for the next window, so that no window ends in half a character
 * (which escaping would replace). */
static size_t up_utf8_cut(const unsigned char *b, size_t n)
{
    size_t k;
    for (k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = b[n - k];
        if (c < 0x80)
            return 0;
        if (c >= 0xc0) {
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            return len > k ? k : 0;
        }
    }
    return 0;
}

/* The window is full and the answer goes on: hand it to the owner, who
 * gives it back with up_release(). Until then nothing is read from the API
 * and the answer timeout stands still. A 2xx answer that turns out not to be
 * JSON ends here: its window is the last, and the connection is closed. */
static void up_deliver_window(int h)
{
    struct up_slot *s = &up.slots[h];
    struct up_parser *p = &s->parser;
    uint64_t now = cm_port_now_ms();
    size_t n = p->body_len - up_utf8_cut(s->body, p->body_len);
    if (p->status < 300 && js_feed(&s->json, (const char *)s->body, n) < 0) {
        s->keep_conn = 0;
        up_complete(h); /* delivers the window with not_json set */
        return;
    }
    memset(&s->result, 0, sizeof s->result);
    s->result.status = p->status;
    s->result.body = (const char *)s->body;
    s->result.body_len = n;
    memcpy(s->result.retry_after, p->retry_after, sizeof s->result.retry_after);
    memcpy(s->result.content_type, p->content_type, sizeof s->result.content_type);
    s->result.partial = 1;
    s->result.streamed = s->streamed;
    s->result.offset = s->parser.body_total - s->parser.body_len;
    s->streamed = 1;
    s->state = UP_S_PAUSED;
    s->kick = 0;
    s->paused_left_ms = s->deadline_ms > now ? s->deadline_ms - now : 0;
    s->deadline_ms = 0;
    on_upstream_done(s->owner, h, &s->result);
    /* the slot may have been released or cancelled by now: do not touch it */
}

/* The window was written: reading goes on where it stopped. */
static void up_resume(struct up_slot *s)
{
    size_t sent = s->result.body_len;
    memmove(s->body, s->body + sent, s->parser.body_len - sent); /* a cut character's first bytes */
    s->parser.body_len -= sent;
    s->state = UP_S_RECEIVING;
    s->deadline_ms = cm_port_now_ms() + s->paused_left_ms;
    s->kick = 1; /* bytes may wait in the engine, where no poll sees them */
}

static void up_begin_connect(struct up_slot *s)
{
    s->state = UP_S_RESOLVING;
    s->deadline_ms = cm_port_now_ms() + CM_UPSTREAM_CONNECT_MS;
    s->kick = 1;
}

static void up_pump(int h);

/* Unix time -> BearSSL's validation time: days since 0000-01-01 in the
   proleptic Gregorian calendar (year 0 is a leap year, so 1970-01-01 is day
   366 + 719162 = 719528) and seconds since midnight UTC. */
static void up_x509_time(int64_t unix_time, uint32_t *days, uint32_t *seconds)
{
    if (unix_time < 0)
        unix_time = 0; /* no clock: certificates will look "not yet valid" */
    *days = (uint32_t)(unix_time / 86400 + 719528);
    *seconds = (uint32_t)(unix_time % 86400);
}

static void up_start_tls(int h)
{
    struct up_slot *s = &up.slots[h];
    br_ssl_engine_context *eng = &s->cc.eng;
    uint32_t days, seconds;
    int resume = 0;
    up_x509_time(cm_port_unix_time(), &days, &seconds);
    br_x509_minimal_set_time(&s->xc, days, seconds);
    s->offered_len = 0;
    if (up.have_session) {
        br_ssl_engine_set_session_parameters(eng, &up.session);
        s->offered_len = up.session.session_id_len;
        memcpy(s->offered_id, up.session.session_id, sizeof s->offered_id);
        resume = 1;
    }
    if (!br_ssl_client_reset(&s->cc, up.host, resume)) {
        up_fail_tls(h, br_ssl_engine_last_error(eng));
        return;
    }
    s->tls_started = 1;
    s->state = UP_S_HANDSHAKE;
    s->deadline_ms = cm_port_now_ms() + CM_UPSTREAM_HANDSHAKE_MS;
    up_pump(h);
}

static void up_handshake_done(struct up_slot *s)
{
    br_ssl_session_parameters sp;
    int resumed;
    br_ssl_engine_get_session_parameters(&s->cc.eng, &sp);
    /* TLS 1.2: the server echoes the offered session id iff it resumes */
    resumed = s->offered_len != 0 && sp.session_id_len == s->offered_len &&
              memcmp(sp.session_id, s->offered_id, s->offered_len) == 0;
    if (!resumed)
        up_full_handshakes++;
    else
        up_resumed_handshakes++;
    if (sp.session_id_len != 0) {
        up.session = sp;
        up.have_session = 1;
    }
    memset(&sp, 0, sizeof sp); /* the master secret */
    cm_logf(CM_LOG_DEBUG, "upstream: TLS with %s ready (%s handshake)", up.host_port,
            resumed ? "resumed" : "full");
}

/* Whether the server ended the connection with TLS close_notify: BearSSL
   sets shutdown_recv (a documented field of the engine context) once the
   peer's close_notify arrived, and this side never closes first while it
   reads an answer. */
static int up_closed_by_notify(const struct up_slot *s)
{
    return s->cc.eng.shutdown_recv && br_ssl_engine_last_error(&s->cc.eng) == BR_ERR_OK;
}

/* How a connection ended under a request. */
enum up_lost_kind { UP_LOST_EOF, UP_LOST_RESET, UP_LOST_TLS, UP_LOST_JUNK };

static void up_lost(int h, int kind, int tls_err)
{
    struct up_slot *s = &up.slots[h];
    switch (s->state) {
    case UP_S_IDLE: /* the server closed a kept-alive connection: normal */
        up_drop_conn(s, 0);
        s->state = UP_S_FREE;
        s->deadline_ms = 0;
        return;
    case UP_S_HANDSHAKE:
        if (kind == UP_LOST_TLS) {
            if (s->offered_len)
                up.have_session = 0; /* do not offer that session again */
            up_fail_tls(h, tls_err);
        } else if (kind == UP_LOST_RESET) {
            up_fail(h, "connection reset by the Cal ID API during the TLS handshake with %s", up.host_port);
        } else {
            up_fail(h, "the Cal ID API closed the connection during the TLS handshake with %s", up.host_port);
        }
        return;
    case UP_S_SENDING:
    case UP_S_RECEIVING:
        if (kind != UP_LOST_TLS && s->reused && !s->retried && s->parser.seen == 0 && s->req_len > 0 &&
            (s->replay_safe || s->req_off == 0)) {
            /* the server closed the kept-alive connection while we reused it:
               nothing of the answer came and repeating the request is
               harmless, so try once more on a new one */
            cm_logf(CM_LOG_DEBUG, "upstream: kept-alive connection closed by the server; retrying %s", s->what);
            up_drop_conn(s, 0);
            s->retried = 1;
            s->reused = 0;
            s->req_off = 0;
            s->early = 0;
            up_parse_init(&s->parser, s->body, CM_UPSTREAM_BODY_BYTES, s->parser.head_request);
            s->parser.windowed = s->stream_ok;
            up_begin_connect(s);
            return;
        }
        if (kind == UP_LOST_TLS) {
            up_fail_tls(h, tls_err);
        } else if (kind == UP_LOST_RESET) {
            if (s->parser.seen > 0) /* part of the answer had arrived */
                up_fail(h, "connection reset by the Cal ID API before the answer was complete");
            else
                up_fail(h, "connection reset by the Cal ID API");
        } else if (s->state == UP_S_SENDING) {
            up_fail(h, "the Cal ID API closed the connection while the request was being sent");
        } else if (s->parser.seen == 0) {
            up_fail(h, "the Cal ID API closed the connection without answering");
        } else if ((up_closed_by_notify(s) ? up_parse_eof(&s->parser) : up_parse_cut(&s->parser)) == 0) {
            s->keep_conn = 0;
            up_complete(h);
        } else {
            up_fail(h, "%s", s->parser.error);
        }
        return;
    default:
        return;
    }
}

/* Decrypted answer bytes to the parser. 1 when the slot is done with for
 * now (failed, complete, or a full window handed to its owner), else 0. */
static int up_feed_answer(int h, unsigned char *buf, size_t len)
{
    struct up_slot *s = &up.slots[h];
    br_ssl_engine_context *eng = &s->cc.eng;
    size_t used = up_parse_feed(&s->parser, buf, len);
    if (used > 0)
        br_ssl_engine_recvapp_ack(eng, used);
    if (s->parser.state == UP_P_ERROR) {
        up_fail(h, "%s", s->parser.error);
        return 1;
    }
    if (used < len && up_parse_window_full(&s->parser)) {
        up_deliver_window(h); /* the rest waits in the engine until the owner gives the window back */
        return 1;
    }
    if (s->parser.state != UP_P_DONE)
        return 0;
    /* reusable only if nothing follows the answer */
    s->keep_conn = (unsigned char)(s->parser.keep_alive && used == len && !s->early &&
                                   !(br_ssl_engine_current_state(eng) & (BR_SSL_CLOSED | BR_SSL_RECVAPP)));
    up_complete(h);
    return 1;
}

/*
 * Moves bytes between the socket, the engine, the request and the parser
 * until the socket would block or the slot changes state for good. SENDREC is
 * served first (the engine cannot go on before its records are out).
 */
static void up_pump(int h)
{
    struct up_slot *s = &up.slots[h];
    br_ssl_engine_context *eng = &s->cc.eng;
    for (;;) {
        unsigned st;
        unsigned char *buf;
        size_t len;
        long n;
        if (!up_has_tls(s))
            return;
        st = br_ssl_engine_current_state(eng);
        if (st == 0 || (st & BR_SSL_CLOSED)) {
            int e = br_ssl_engine_last_error(eng);
            up_lost(h, e ? UP_LOST_TLS : UP_LOST_EOF, e);
            return;
        }
        if (st & BR_SSL_SENDREC) {
            buf = br_ssl_engine_sendrec_buf(eng, &len);
            n = cm_port_send(s->sock, buf, len);
            if (n == CM_PORT_AGAIN)
                return; /* up_pollfds asks for writable */
            if (n <= 0) {
                /* while receiving, a failed send (our close_notify reply to
                   the server's) just means the server is gone: an EOF */
                up_lost(h, s->state == UP_S_RECEIVING ? UP_LOST_EOF : UP_LOST_RESET, 0);
                return;
            }
            br_ssl_engine_sendrec_ack(eng, (size_t)n);
            continue;
        }
        if (st & BR_SSL_RECVAPP) {
            buf = br_ssl_engine_recvapp_buf(eng, &len);
            if (s->state == UP_S_SENDING) { /* the server answered before reading it all */
                s->state = UP_S_RECEIVING;
                s->early = 1;
            }
            if (s->state != UP_S_RECEIVING) {
                up_lost(h, UP_LOST_JUNK, 0); /* bytes on an idle connection: drop it */
                return;
            }
            if (s->req_len) { /* the answer begins: its body takes the request's place */
                memset(s->req, 0, s->req_len);
                s->req_len = s->req_off = 0;
            }
            if (up_feed_answer(h, buf, len))
                return;
            continue;
        }
        if (s->state == UP_S_HANDSHAKE && (st & BR_SSL_SENDAPP)) {
            up_handshake_done(s);
            s->state = UP_S_SENDING;
            s->deadline_ms = cm_port_now_ms() + CM_UPSTREAM_ANSWER_MS;
            continue;
        }
        if (s->state == UP_S_SENDING && (st & BR_SSL_SENDAPP)) {
            size_t todo = s->req_len - s->req_off;
            buf = br_ssl_engine_sendapp_buf(eng, &len);
            if (len > todo)
                len = todo;
            memcpy(buf, s->req + s->req_off, len);
            br_ssl_engine_sendapp_ack(eng, len);
            s->req_off += len;
            if (s->req_off == s->req_len) {
                br_ssl_engine_flush(eng, 0);
                s->state = UP_S_RECEIVING;
            }
            continue;
        }
        if (st & BR_SSL_RECVREC) {
            buf = br_ssl_engine_recvrec_buf(eng, &len);
            n = cm_port_recv(s->sock, buf, len);
            if (n == CM_PORT_AGAIN)
                return; /* up_pollfds asks for readable */
            if (n == 0) {
                up_lost(h, UP_LOST_EOF, 0);
                return;
            }
            if (n < 0) {
                up_lost(h, UP_LOST_RESET, 0);
                return;
            }
            br_ssl_engine_recvrec_ack(eng, (size_t)n);
            continue;
        }
        return;
    }
}

/* Returns 1 when the request ended (delivered), else 0. */
static int up_try_resolve(int h)
{
    struct up_slot *s = &up.slots[h];
    struct cm_addr addr;
    int r = cm_port_resolve(up.host, up.port, &addr);
    if (r == CM_PORT_AGAIN)
        return 0;
    if (r != 0) {
        up_fail(h, "could not resolve host %s", up.host);
        return 1;
    }
    if (cm_port_connect(&addr, &s->sock) != 0) {
        s->sock = CM_SOCK_INVALID;
        up_fail(h, "connection to %s failed (could not start it)", up.host_port);
        return 1;
    }
    s->state = UP_S_CONNECTING;
    s->conn_requests = 0;
    return 0;
}

/* ---- request building ---- */
/*
 * Where a caller builds a request body, so that no separate buffer of
 * CM_UPSTREAM_REQ_BYTES is needed: the buffer of a slot that is free now
 * (NULL when every slot is busy). up_submit() takes a body from there, even
 * when it picks that very slot.
 */
static char *up_body_room(size_t *cap)
{
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_FREE || up.slots[i].state == UP_S_IDLE) {
            *cap = sizeof up.slots[i].req;
            return (char *)up.slots[i].req;
        }
    return NULL;
}

static int up_put(struct up_slot *s, const void *src, size_t n)
{
    if (n > sizeof s->req - s->req_len)
        return -1;
    memmove(s->req + s->req_len, src, n); /* the body may come from this buffer (up_body_room) */
    s->req_len += n;
    return 0;
}

static int up_puts(struct up_slot *s, const char *str) { return up_put(s, str, strlen(str)); }

/* Bytes allowed in a header value we send: visible ASCII and space, no CR/LF. */
static int up_header_safe(const char *v, int allow_space)
{
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 0x20 || c > 0x7e || (!allow_space && c == ' '))
            return 0;
    }
    return 1;
}

static int up_build_request(struct up_slot *s, const char *method, const char *path_query, const char *bearer,
                            const char *content_type, const char *body, size_t body_len)
{
    char num[32];
    int want_length = body_len > 0 || content_type != NULL || strcmp(method, "POST") == 0 ||
                      strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
    if (body_len && (const unsigned char *)body >= s->req && (const unsigned char *)body < s->req + sizeof s->req) {
        /* built in this slot's buffer: parked at its end while the head goes first */
        if (body_len > sizeof s->req - ((const unsigned char *)body - s->req))
            return -1;
        memmove(s->req + sizeof s->req - body_len, body, body_len);
        body = (const char *)s->req + sizeof s->req - body_len;
    }
    s->req_len = 0;
    if (up_puts(s, method) || up_puts(s, " ") || up_puts(s, up.prefix) || up_puts(s, path_query) ||
        up_puts(s, " HTTP/1.1\r\nHost: ") || up_puts(s, up.host_header) || up_puts(s, "\r\n"))
        return -1;
    if (bearer && *bearer &&
        (up_puts(s, "Authorization: Bearer ") || up_puts(s, bearer) || up_puts(s, "\r\n")))
        return -1;
    if (up_puts(s, "Accept: application/json\r\nUser-Agent: calid-mcp/" CM_VERSION "\r\n"))
        return -1;
    if (content_type && (up_puts(s, "Content-Type: ") || up_puts(s, content_type) || up_puts(s, "\r\n")))
        return -1;
    if (want_length) {
        snprintf(num, sizeof num, "%lu", (unsigned long)body_len);
        if (up_puts(s, "Content-Length: ") || up_puts(s, num) || up_puts(s, "\r\n"))
            return -1;
    }
    if (up_puts(s, "Connection: keep-alive\r\n\r\n"))
        return -1;
    if (body_len > 0 && up_put(s, body, body_len))
        return -1;
    return 0;
}

/* Why these arguments cannot make a request, or NULL when they can. */
static const char *up_bad_arguments(const char *method, const char *path_query, const char *bearer,
                                    const char *content_type, const char *body, size_t body_len)
{
    size_t k, mlen;
    if (!up.ready)
        return "the upstream client is not initialised (up_init failed or was not called)";
    if (method == NULL || (mlen = strlen(method)) == 0 || mlen > 16)
        return "bad HTTP method";
    for (k = 0; k < mlen; k++)
        if (!up_is_tchar((unsigned char)method[k]))
            return "bad HTTP method";
    if (path_query == NULL || path_query[0] != '/' || !up_header_safe(path_query, 0))
        return "the path must start with '/' and hold only visible ASCII (percent-encode the rest)";
    if (bearer && !up_header_safe(bearer, 0))
        return "the bearer token holds characters not allowed in an HTTP header (only visible ASCII)";
    if (content_type && !up_header_safe(content_type, 1))
        return "the content type holds characters not allowed in an HTTP header";
    if (body_len > 0 && body == NULL)
        return "no body bytes given";
    return NULL;
}

/* Repeating these has the effect of sending them once (RFC 9110 9.2.2). */
static int up_method_replay_safe(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "DELETE") == 0 || strcmp(method, "OPTIONS") == 0;
}

static int up_method_changes(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "OPTIONS") != 0;
}

/*
 * Whether slot i holds a kept-alive connection fit for a request now. A close
 * the server already sent is read here (the slot becomes FREE, without a
 * callback); a request that must not be sent twice also needs a connection
 * idle for less than CM_UPSTREAM_WRITE_IDLE_MS, well inside the server's
 * keep-alive, so that it cannot be closed under the request.
 */
static int up_idle_fit(int i, int replay_safe, uint64_t now)
{
    struct up_slot *s = &up.slots[i];
    if (s->state != UP_S_IDLE)
        return 0;
    up_pump(i);
    if (s->state != UP_S_IDLE)
        return 0;
    return replay_safe || (now >= s->idle_since_ms && now - s->idle_since_ms < CM_UPSTREAM_WRITE_IDLE_MS);
}

/* The slot for a new request, or -1 when all are busy. A fit kept-alive
   connection first, then a free slot, then an idle slot whose connection is
   replaced by a new one; a request that fails anyway takes a free slot first. */
static int up_pick_slot(const char *bad, int replay_safe)
{
    uint64_t now = cm_port_now_ms();
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS && !bad; i++)
        if (up_idle_fit(i, replay_safe, now))
            return i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_FREE)
            return i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++)
        if (up.slots[i].state == UP_S_IDLE) {
            up_drop_conn(&up.slots[i], 1);
            up.slots[i].state = UP_S_FREE;
            up.slots[i].deadline_ms = 0;
            return i;
        }
    return -1;
}

/*
 * Starts one request. Returns the handle (>= 0), -1 when every slot is busy
 * (retry later), or -2 when the request does not fit CM_UPSTREAM_REQ_BYTES.
 * Arguments that cannot make a request (CR/LF or non-ASCII in the token or
 * path, a bad method...) still get a handle: the failure arrives through
 * on_upstream_done() from the next up_tick(), like any transport failure.
 * The only I/O here is reading a close that already sits on an idle
 * connection; it never calls back.
 */
static int up_submit(unsigned owner, const char *method, const char *path_query, const char *bearer,
                     const char *content_type, const char *body, size_t body_len)
{
    int h;
    struct up_slot *s;
    size_t mlen;
    const char *bad = up_bad_arguments(method, path_query, bearer, content_type, body, body_len);
    h = up_pick_slot(bad, bad ? 0 : up_method_replay_safe(method));
    if (h < 0) {
        /* busy, but say "too large" first if it would never fit anyway */
        if (body_len > CM_UPSTREAM_REQ_BYTES)
            return -2;
        return -1;
    }
    s = &up.slots[h];
    if (bad) {
        if (!up.ready)
            s->sock = CM_SOCK_INVALID; /* never initialised: not fd 0 of the zeroed statics */
        s->owner = owner;
        s->changes = 0;
        s->reused = 0;
        s->req_len = s->req_off = 0;
        s->started_ms = cm_port_now_ms();
        snprintf(s->what, sizeof s->what, "(refused request)");
        memset(&s->result, 0, sizeof s->result);
        snprintf(s->result.error, sizeof s->result.error, "the request cannot be sent: %s", bad);
        s->result.body = "";
        s->state = UP_S_FAILED;
        s->deadline_ms = 0;
        s->kick = 1;
        return h;
    }
    mlen = strlen(method);
    if (up_build_request(s, method, path_query, bearer, content_type, body, body_len) != 0) {
        memset(s->req, 0, s->req_len);
        s->req_len = 0;
        return -2;
    }
    s->owner = owner;
    s->req_off = 0;
    s->retried = 0;
    s->replay_safe = (unsigned char)up_method_replay_safe(method);
    s->changes = (unsigned char)up_method_changes(method);
    s->early = 0;
    s->keep_conn = 0;
    s->started_ms = cm_port_now_ms();
    memset(&s->result, 0, sizeof s->result);
    up_parse_init(&s->parser, s->body, CM_UPSTREAM_BODY_BYTES, strcmp(method, "HEAD") == 0);
    s->stream_ok = s->streamed = 0;
    js_init(&s->json);
    { /* "METHOD /prefix/path" without the query string, cut to fit */
        size_t n = 0, i, plen = strcspn(path_query, "?");
        const char *parts[3];
        size_t lens[3];
        parts[0] = method, lens[0] = mlen;
        parts[1] = up.prefix, lens[1] = strlen(up.prefix);
        parts[2] = path_query, lens[2] = plen;
        for (i = 0; i < 3; i++) {
            size_t k = lens[i] < sizeof s->what - 1 - n ? lens[i] : sizeof s->what - 1 - n;
            memcpy(s->what + n, parts[i], k);
            n += k;
            if (i == 0 && n < sizeof s->what - 1)
                s->what[n++] = ' ';
        }
        s->what[n] = '\0';
    }
    if (s->state == UP_S_IDLE) {
        s->reused = 1;
        s->state = UP_S_SENDING;
        s->deadline_ms = s->started_ms + CM_UPSTREAM_ANSWER_MS;
        s->kick = 1;
    } else {
        s->reused = 0;
        up_begin_connect(s);
    }
    return h;
}

/* The owner of handle (just submitted) takes an answer larger than the
 * slot's buffer in windows (see Shape); others get the too-large failure. */
static void up_allow_stream(int handle)
{
    if (handle >= 0 && handle < CM_MAX_UPSTREAMS && up.slots[handle].state != UP_S_FAILED) {
        up.slots[handle].stream_ok = 1;
        up.slots[handle].parser.windowed = 1;
    }
}

/* Ends the owner's hold: a delivered answer (the slot becomes IDLE or FREE)
 * or a streamed window (reading goes on). */
static void up_release(int handle)
{
    struct up_slot *s;
    if (handle < 0 || handle >= CM_MAX_UPSTREAMS)
        return;
    s = &up.slots[handle];
    if (s->state == UP_S_PAUSED) {
        up_resume(s);
        return;
    }
    if (s->state != UP_S_DONE)
        return;
    s->result.body = "";
    s->result.body_len = 0;
    if (s->keep_conn && s->sock != CM_SOCK_INVALID) {
        s->state = UP_S_IDLE;
        s->idle_since_ms = cm_port_now_ms();
        s->deadline_ms = s->idle_since_ms + CM_UPSTREAM_IDLE_MS;
        s->kick = 1; /* notice a close_notify that already sits in the engine */
    } else {
        up_drop_conn(s, 1);
        s->state = UP_S_FREE;
        s->deadline_ms = 0;
        s->kick = 0;
    }
}

static void up_cancel(int handle)
{
    struct up_slot *s;
    if (handle < 0 || handle >= CM_MAX_UPSTREAMS)
        return;
    s = &up.slots[handle];
    switch (s->state) {
    case UP_S_DONE:
        up_release(handle);
        return;
    case UP_S_FAILED:
    case UP_S_RESOLVING:
    case UP_S_CONNECTING:
    case UP_S_HANDSHAKE:
    case UP_S_SENDING:
    case UP_S_RECEIVING:
    case UP_S_PAUSED:
        cm_logf(CM_LOG_DEBUG, "upstream: %s cancelled", s->what);
        up_drop_conn(s, 1); /* mid-answer: the rest of the answer must not be read as the next one */
        memset(s->req, 0, s->req_len);
        s->req_len = s->req_off = 0;
        s->state = UP_S_FREE;
        s->deadline_ms = 0;
        s->kick = 0;
        return;
    default:
        return;
    }
}

/* ======================================================================
 * Poll integration
 * ====================================================================== */
static unsigned up_pollfds(struct cm_pollfd *fds, unsigned max, int *handle_of)
{
    unsigned n = 0;
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS && n < max; i++) {
        struct up_slot *s = &up.slots[i];
        short ev = 0;
        if (s->state == UP_S_CONNECTING) {
            ev = CM_POLL_OUT;
        } else if (up_has_tls(s)) {
            unsigned st = br_ssl_engine_current_state(&s->cc.eng);
            if (st & BR_SSL_SENDREC)
                ev = CM_POLL_OUT;
            else if (st & BR_SSL_RECVREC)
                ev = CM_POLL_IN;
        }
        if (ev == 0 || s->sock == CM_SOCK_INVALID)
            continue;
        fds[n].sock = s->sock;
        fds[n].events = ev;
        fds[n].revents = 0;
        handle_of[n] = i;
        n++;
    }
    return n;
}

static void up_on_ready(int handle, short revents)
{
    struct up_slot *s;
    if (handle < 0 || handle >= CM_MAX_UPSTREAMS || revents == 0)
        return;
    s = &up.slots[handle];
    if (s->state == UP_S_CONNECTING) {
        if (cm_port_connect_result(s->sock) != 0) {
            up_fail(handle, "connection to %s refused or failed", up.host_port);
            return;
        }
        up_start_tls(handle);
    } else if (up_has_tls(s)) {
        up_pump(handle);
    }
}

static void up_answer_timeout(int h)
{
    unsigned long ms = CM_UPSTREAM_ANSWER_MS;
    if (ms % 1000 == 0)
        up_fail(h, "the Cal ID API did not answer within %lu s", ms / 1000);
    else
        up_fail(h, "the Cal ID API did not answer within %lu.%03lu s", ms / 1000, ms % 1000);
}

static void up_tick(uint64_t now_ms)
{
    int i;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++) {
        struct up_slot *s = &up.slots[i];
        int kicked = s->kick;
        s->kick = 0;
        if (s->state == UP_S_FAILED) {
            up_deliver(i);
            continue;
        }
        if (s->state == UP_S_RESOLVING && up_try_resolve(i))
            continue; /* failed and delivered: the slot is not ours any more */
        if (s->deadline_ms != 0 && now_ms >= s->deadline_ms) {
            switch (s->state) {
            case UP_S_RESOLVING:
                up_fail(i, "timed out connecting to %s (the DNS lookup did not finish)", up.host_port);
                continue;
            case UP_S_CONNECTING:
                up_fail(i, "timed out connecting to %s", up.host_port);
                continue;
            case UP_S_HANDSHAKE:
                up_fail(i, "timed out during the TLS handshake with %s", up.host_port);
                continue;
            case UP_S_SENDING:
            case UP_S_RECEIVING:
                up_answer_timeout(i);
                continue;
            case UP_S_IDLE:
                cm_logf(CM_LOG_DEBUG, "upstream: closing a connection idle for %d ms", CM_UPSTREAM_IDLE_MS);
                up_drop_conn(s, 1);
                s->state = UP_S_FREE;
                s->deadline_ms = 0;
                continue;
            default:
                break;
            }
        }
        if (kicked && up_has_tls(s))
            up_pump(i);
    }
}

static int up_next_timeout_ms(uint64_t now_ms)
{
    int i;
    int64_t best = -1;
    for (i = 0; i < CM_MAX_UPSTREAMS; i++) {
        const struct up_slot *s = &up.slots[i];
        int64_t t = -1;
        if (s->state == UP_S_FREE || s->state == UP_S_DONE)
            continue;
        if (s->kick)
            return 0;
        if (s->deadline_ms != 0)
            t = s->deadline_ms > now_ms ? (int64_t)(s->deadline_ms - now_ms) : 0;
        if (s->state == UP_S_RESOLVING && (t < 0 || t > UP_DNS_POLL_MS))
            t = UP_DNS_POLL_MS;
        if (t >= 0 && (best < 0 || t < best))
            best = t;
    }
    if (best > 0x7fffffff)
        best = 0x7fffffff;
    return (int)best;
}

/* ===================================================================== */
/* 9. Sessions (the 2025-11-25 era and before)                           */
/* ===================================================================== */
/*
 * A session id carries its own state and its own proof, so that every
 * instance holding the same server secret accepts it and none keeps a table
 * of live sessions (a balancer may send each request anywhere):
 *
 *   byte 0       id format (high nibble) and the negotiated version, as an
 *                index into sid_versions (low nibble)
 *   bytes 1-5    creation time, Unix seconds, big-endian
 *   bytes 6-15   random nonce
 *   bytes 16-31  HMAC-SHA256 under a key derived from the secret, over
 *                bytes 0-15 and the keyed fingerprint of the token that
 *                opened the session (its first 16 bytes)
 *
 * sent as 43 characters of base64url. The fingerprint is in the MAC, not in
 * the id: the same id presented with another token fails the check, and the
 * id reveals nothing about the token. The lifetime counts from creation,
 * since the id cannot change.
 */
#define SID_FORMAT 1
#define SID_BODY_BYTES 16
#define SID_MAC_BYTES 16
#define SID_BYTES (SID_BODY_BYTES + SID_MAC_BYTES)
#define SESSION_ID_CHARS 43 /* base64url of 32 bytes, unpadded */
static void secret_derive(const char *label, unsigned char out[32]);
static uint64_t ms_since(uint64_t now, uint64_t since);
static void session_memo_forget_all(void);
#ifndef CM_SESSION_CLOCK_SKEW_S
#define CM_SESSION_CLOCK_SKEW_S 300 /* an id up to this far "from the future" (another instance's clock) is accepted */
#endif

/* Version codes in ids: append only, so that instances of different builds
 * read each other's ids alike during a rolling upgrade. */
static const char *const sid_versions[] = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"};
#define N_SID_VERSIONS (sizeof sid_versions / sizeof sid_versions[0])

/* What a valid id says. */
struct session {
    const char *version;
    int64_t created_s;
    unsigned char mac[SID_MAC_BYTES];   /* names the session in the ended table */
    unsigned char token_fp[16];
};

static br_hmac_key_context sid_key; /* set by cm_start from the server secret */
static unsigned long sessions_opened;

static void sid_mac(const unsigned char body[SID_BODY_BYTES], const unsigned char fp[16], unsigned char out[SID_MAC_BYTES])
{
    br_hmac_context hc;
    unsigned char full[32];
    if (!sid_key.dig_vtable) { /* not started by cm_start (unit tests): key it now */
        unsigned char k[32];
        secret_derive("calid-mcp session id", k);
        br_hmac_key_init(&sid_key, &br_sha256_vtable, k, sizeof k);
    }
    br_hmac_init(&hc, &sid_key, 0);
    br_hmac_update(&hc, body, SID_BODY_BYTES);
    br_hmac_update(&hc, fp, 16);
    br_hmac_out(&hc, full);
    memcpy(out, full, SID_MAC_BYTES);
}

static void base64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;
    for (i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = abc[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = abc[v & 63];
    }
    out[o] = 0;
}

static int session_expired(int64_t created_s, int64_t now_s)
{
    if (created_s > now_s)
        return created_s - now_s > CM_SESSION_CLOCK_SKEW_S;
    return (now_s - created_s) * 1000 > (int64_t)CM_SESSION_TTL_MS;
}

/* Makes the id of a new session in out. 0, or -1 without a random source. */
static int session_create(const char *version, const char *token, size_t token_len, int64_t now_s,
                          char out[SESSION_ID_CHARS + 1])
{
    unsigned char raw[SID_BYTES], fp[16];
    unsigned v = 0;
    int i;
    while (v < N_SID_VERSIONS && strcmp(sid_versions[v], version) != 0)
        v++;
    if (v == N_SID_VERSIONS)
        return -1; /* not a session-era version this build can name */
    raw[0] = (unsigned char)(SID_FORMAT << 4 | v);
    for (i = 0; i < 5; i++)
        raw[1 + i] = (unsigned char)((uint64_t)now_s >> (8 * (4 - i)));
    if (cm_port_random(raw + 6, SID_BODY_BYTES - 6) < 0)
        return -1;
    token_fingerprint(token, token_len, fp);
    sid_mac(raw, fp, raw + SID_BODY_BYTES);
    base64url_encode(raw, sizeof raw, out);
    sessions_opened++;
    return 0;
}

/* What a proven id's bytes say: its creation time (-1 once expired), its
 * version (-1 when this build no longer serves it) and its MAC. */
static int session_read(const unsigned char raw[SID_BYTES], int64_t now_s, struct session *s)
{
    size_t i;
    int64_t t = 0;
    for (i = 0; i < 5; i++)
        t = t << 8 | raw[1 + i];
    if (session_expired(t, now_s))
        return -1;
    s->version = NULL;
    for (i = 0; i < N_SESSION_VERSIONS; i++)
        if (strcmp(session_versions[i], sid_versions[raw[0] & 15]) == 0)
            s->version = session_versions[i];
    if (!s->version)
        return -1; /* a version this build no longer serves */
    s->created_s = t;
    memcpy(s->mac, raw + SID_BODY_BYTES, SID_MAC_BYTES);
    return 0;
}

/* Reads and checks an id presented with a token: 0 with *s filled, or -1
 * when it is malformed, forged, bound to another token or expired. (Whether
 * it was ended is the ended table's question.) */
static int session_check(struct view id, const char *token, size_t token_len, int64_t now_s, struct session *s)
{
    unsigned char raw[SID_BYTES + 2], mac[SID_MAC_BYTES];
    char again[SESSION_ID_CHARS + 1];
    size_t i;
    if (id.n != SESSION_ID_CHARS)
        return -1;
    for (i = 0; i < id.n; i++) {
        char ch = id.p[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return -1;
    }
    if (base64_decode(id.p, id.n, raw, sizeof raw) != SID_BYTES)
        return -1;
    base64url_encode(raw, SID_BYTES, again); /* one spelling per id: no unused bits set */
    if (memcmp(again, id.p, id.n) != 0 || raw[0] >> 4 != SID_FORMAT || (raw[0] & 15) >= N_SID_VERSIONS)
        return -1;
    token_fingerprint(token, token_len, s->token_fp);
    sid_mac(raw, s->token_fp, mac);
    if (!const_time_eq(mac, sizeof mac, raw + SID_BODY_BYTES, SID_MAC_BYTES))
        return -1;
    return session_read(raw, now_s, s);
}

/*
 * Ended sessions. DELETE ends a session on the instance that receives it: the
 * id's MAC stays in this table until the id would have expired anyway.
 * Strangers cannot use the table to bring ended sessions back (issue: any
 * bearer can open and end sessions, for free):
 *   - each token fingerprint holds at most CM_ENDED_PER_TOKEN entries; past
 *     that, a token's own least recently used entry makes room;
 *   - when the table is full, the entry that makes room is one not used
 *     (ended, or presented again) for CM_ENDED_SPARE_MS, from the token
 *     holding the most entries, least recently used first;
 *   - when every entry was used that recently, the DELETE is refused (503,
 *     the session stays open) rather than forgetting a recent one.
 */
#ifndef CM_ENDED_PER_TOKEN
#define CM_ENDED_PER_TOKEN (CM_MAX_ENDED_SESSIONS / 4) /* one token's share of the ended table */
#endif
#ifndef CM_ENDED_SPARE_MS
#define CM_ENDED_SPARE_MS 300000 /* an entry used this recently is never the one forgotten */
#endif
#define ENDED_FP_BYTES 8

struct ended_session {
    int64_t created_s;                  /* 0: free */
    uint64_t last_ms;                   /* ended, or presented again */
    unsigned char mac[SID_MAC_BYTES];
    unsigned char fp[ENDED_FP_BYTES];
};
static struct ended_session ended[CM_MAX_ENDED_SESSIONS];
static unsigned long ended_refused;

static int ended_live(int i, int64_t now_s)
{
    if (ended[i].created_s && session_expired(ended[i].created_s, now_s))
        memset(&ended[i], 0, sizeof ended[i]);
    return ended[i].created_s != 0;
}

/* Index of the id's entry, or -1. A hit counts as a use. */
static int ended_find(const struct session *s, uint64_t now_ms, int64_t now_s)
{
    int i;
    for (i = 0; i < CM_MAX_ENDED_SESSIONS; i++)
        if (ended_live(i, now_s) && memcmp(ended[i].mac, s->mac, SID_MAC_BYTES) == 0) {
            ended[i].last_ms = now_ms;
            return i;
        }
    return -1;
}

static int ended_holding(const unsigned char *fp, int64_t now_s)
{
    int i, n = 0;
    for (i = 0; i < CM_MAX_ENDED_SESSIONS; i++)
        n += ended_live(i, now_s) && memcmp(ended[i].fp, fp, ENDED_FP_BYTES) == 0;
    return n;
}

/* The slot a new entry for fingerprint fp takes, by the rules above, or -1. */
static int ended_slot(const unsigned char *fp, uint64_t now_ms, int64_t now_s)
{
    int i, pick = -1, pick_holds = 0;
    int own = ended_holding(fp, now_s) >= CM_ENDED_PER_TOKEN;
    for (i = 0; i < CM_MAX_ENDED_SESSIONS; i++) {
        int holds;
        if (!ended_live(i, now_s)) {
            if (!own)
                return i;
            continue;
        }
        if (own) {
            if (memcmp(ended[i].fp, fp, ENDED_FP_BYTES) == 0 && (pick < 0 || ended[i].last_ms < ended[pick].last_ms))
                pick = i;
            continue;
        }
        if (ms_since(now_ms, ended[i].last_ms) < CM_ENDED_SPARE_MS)
            continue;
        holds = ended_holding(ended[i].fp, now_s);
        if (pick < 0 || holds > pick_holds || (holds == pick_holds && ended[i].last_ms < ended[pick].last_ms)) {
            pick = i;
            pick_holds = holds;
        }
    }
    return pick;
}

/* Ends a session here. 0, or -1 when the table cannot take it now. */
static int ended_add(const struct session *s, uint64_t now_ms, int64_t now_s)
{
    int i = ended_find(s, now_ms, now_s);
    if (i < 0)
        i = ended_slot(s->token_fp, now_ms, now_s);
    if (i < 0) {
        ended_refused++;
        cm_logf(CM_LOG_WARN, "ended-session table full of recent entries (CM_MAX_ENDED_SESSIONS=%d): a DELETE was refused",
                CM_MAX_ENDED_SESSIONS);
        return -1;
    }
    ended[i].created_s = s->created_s ? s->created_s : 1;
    ended[i].last_ms = now_ms;
    memcpy(ended[i].mac, s->mac, SID_MAC_BYTES);
    memcpy(ended[i].fp, s->token_fp, ENDED_FP_BYTES);
    session_memo_forget_all(); /* a memo may name this session */
    return 0;
}

static int ended_in_use(int64_t now_s)
{
    int i, n = 0;
    for (i = 0; i < CM_MAX_ENDED_SESSIONS; i++)
        n += ended_live(i, now_s);
    return n;
}

/* A session the client may use: valid for this token and not ended here. */
static int session_open(struct view id, const char *token, size_t token_len, uint64_t now_ms, int64_t now_s,
                        struct session *s)
{
    if (session_check(id, token, token_len, now_s, s) < 0)
        return -1;
    return ended_find(s, now_ms, now_s) >= 0 ? -1 : 0;
}

/*
 * A connection's memo of the last session it proved: the id's bytes and the
 * keyed fingerprint of the token it was proved with. A client on a kept-alive
 * connection sends the same id with every request; when it comes again, byte
 * for byte, with the same token (the fingerprint is still computed and
 * compared: the memo keeps no token), the id's own HMAC and the ended-table
 * scan are skipped, and the session is still refused once it expires. Any change to the ended table (a DELETE on
 * any connection) or to the keys (cm_start) forgets every memo, and a
 * connection forgets its own when it closes. Only an open session is
 * remembered, never a refusal.
 */
struct session_memo {
    unsigned gen;                 /* session_memo_gen when made; 0: empty */
    unsigned char raw[SID_BYTES]; /* the id, decoded */
    unsigned char token_fp[16];
};
static unsigned session_memo_gen = 1; /* never 0 */

static void session_memo_forget_all(void)
{
    if (++session_memo_gen == 0)
        session_memo_gen = 1;
}

/* The memo's session when id is the one it proved, presented with the same
 * token, and it has not expired since: 0 with *s filled, else -1. */
static int session_memo_use(const struct session_memo *m, struct view id, const char *token, size_t token_len,
                            int64_t now_s, struct session *s)
{
    char text[SESSION_ID_CHARS + 1];
    if (m->gen != session_memo_gen)
        return -1;
    base64url_encode(m->raw, SID_BYTES, text);
    if (!const_time_eq(id.p, id.n, text, SESSION_ID_CHARS) || session_read(m->raw, now_s, s) < 0)
        return -1;
    token_fingerprint(token, token_len, s->token_fp);
    return const_time_eq(s->token_fp, sizeof s->token_fp, m->token_fp, sizeof m->token_fp) ? 0 : -1;
}

/* Remembers a session just proved open with id. */
static void session_memo_keep(struct session_memo *m, struct view id, const struct session *s)
{
    m->gen = 0;
    if (base64_decode(id.p, id.n, m->raw, sizeof m->raw) != SID_BYTES)
        return;
    memcpy(m->token_fp, s->token_fp, sizeof m->token_fp);
    m->gen = session_memo_gen;
}

/*
 * The one piece of session state that cannot travel in the id: the level a
 * client set with logging/setLevel after the id was made. It is kept on the
 * instance that was told, keyed by the id's MAC, until the id expires; when
 * the table is full the least recently used entry makes room. Losing it is
 * harmless: that client gets no log messages until it sets the level again
 * (and another instance of a balanced group never knew it).
 */
#ifndef CM_MAX_SESSION_LEVELS
#define CM_MAX_SESSION_LEVELS 64 /* sessions whose logging/setLevel level is remembered */
#endif

struct session_level {
    int64_t created_s;                  /* 0: free */
    uint64_t last_ms;                   /* the session's last request here */
    unsigned char mac[SID_MAC_BYTES];
    unsigned char level;                /* 0 none, else 1 + the level (section 10) */
};
static struct session_level session_levels[CM_MAX_SESSION_LEVELS];

/* The level byte of a session, or NULL when none is kept and create is not
 * set (a request that cannot set one needs no entry). */
static unsigned char *session_level(const struct session *s, int create, uint64_t now_ms, int64_t now_s)
{
    int i, pick = -1;
    for (i = 0; i < CM_MAX_SESSION_LEVELS; i++) {
        struct session_level *e = &session_levels[i];
        if (e->created_s && session_expired(e->created_s, now_s))
            memset(e, 0, sizeof *e);
        if (e->created_s && memcmp(e->mac, s->mac, SID_MAC_BYTES) == 0) {
            e->last_ms = now_ms;
            return &e->level;
        }
        if (pick < 0 || !e->created_s || (session_levels[pick].created_s && e->last_ms < session_levels[pick].last_ms))
            pick = i;
    }
    if (!create)
        return NULL;
    session_levels[pick].created_s = s->created_s ? s->created_s : 1;
    session_levels[pick].last_ms = now_ms;
    session_levels[pick].level = 0;
    memcpy(session_levels[pick].mac, s->mac, SID_MAC_BYTES);
    return &session_levels[pick].level;
}

/* ===================================================================== */
/* 10. MCP dispatch, both protocol eras                                  */
/* ===================================================================== */

enum { ERA_SESSION = 1, ERA_MODERN = 2 };

/* JSON-RPC and MCP error codes */
#define E_PARSE (-32700)
#define E_INVALID_REQUEST (-32600)
#define E_METHOD_NOT_FOUND (-32601)
#define E_INVALID_PARAMS (-32602)
#define E_INTERNAL (-32603)
#define E_SERVER (-32000)
#define E_HEADER_MISMATCH (-32020)
#define E_MISSING_CAPABILITY (-32021)
#define E_UNSUPPORTED_VERSION (-32022)

/* What waits on the API: a tool call, a resource read, or the event type
 * list behind a completion. */
enum { PC_TOOL = 0, PC_RESOURCE = 1, PC_SLUGS = 2 };

/* What one request needs once the API has answered. */
struct pending_call {
    int active;
    int kind;         /* PC_TOOL, PC_RESOURCE or PC_SLUGS */
    int tool;         /* index into tools[], or resources[] for a read */
    char res_id[65];  /* a resource template's id, or the typed start of a slug */
    unsigned char token_fp[16]; /* whose slugs a completion fetches */
    struct view id;   /* the JSON-RPC id, raw JSON text in the request (which outlives the call) */
    int modern;
    int handle;       /* upstream handle, -1 until submitted */
    int jdoc_args;    /* token index of the arguments, for resubmission */
    int log_level;    /* 0, or 1 + the lowest log level the request asked for */
    uint64_t start_ms;
    char api_method[8], api_path[96]; /* for the log message: no query, no token */
};

/* Everything dispatch needs to know about where a message came from. */
struct rpc_ctx {
    int era;
    const char *version;      /* version in force for this message */
    const char *token;        /* token for the API (may be NULL: no token) */
    size_t token_len;
    int http_status;          /* out: the HTTP status dispatch wants (200 default) */
    int batch;                /* inside a 2025-03-26 batch */
    int new_session;          /* out: 1 when initialize opened a session (its id below), -1 none, -2 never (stdio) */
    char new_session_id[SESSION_ID_CHARS + 1];
    unsigned toolsets;        /* this request's toolsets (0: the server's selection) */
    unsigned char *log_level; /* the session's logging/setLevel level (NULL: none kept) */
};

static int is_session_version(const char *v, size_t n)
{
    size_t i;
    for (i = 0; i < N_SESSION_VERSIONS; i++)
        if (strlen(session_versions[i]) == n && memcmp(session_versions[i], v, n) == 0)
            return 1;
    return 0;
}

/* ---- Tool selection: --read-only, --toolsets and ?toolsets= ---- */
/*
 * A tool's toolset is the first segment of its API path, so the catalog
 * needs no extra column. The server's selection (flags) is the widest a
 * request sees; a request may narrow it with /mcp?toolsets=a,b.
 */
enum {
    TS_AVAILABILITY = 1, TS_BOOKINGS = 2, TS_CONTACTS = 4, TS_EVENT_TYPES = 8,
    TS_SLOTS = 16, TS_TEAMS = 32, TS_USERS = 64, TS_WEBHOOKS = 128,
    TS_ALL = 255
};

static const struct {
    const char *name;
    unsigned bit;
} toolset_names[] = {
    {"availability", TS_AVAILABILITY}, {"bookings", TS_BOOKINGS}, {"contacts", TS_CONTACTS},
    {"event-types", TS_EVENT_TYPES},   {"slots", TS_SLOTS},       {"teams", TS_TEAMS},
    {"users", TS_USERS},               {"webhooks", TS_WEBHOOKS},
};
#define N_TOOLSETS (sizeof toolset_names / sizeof toolset_names[0])

static const struct {
    const char *segment; /* first segment of the API path */
    unsigned toolset;
} toolset_of_path[] = {
    {"availability", TS_AVAILABILITY}, {"schedule", TS_AVAILABILITY}, {"booking", TS_BOOKINGS},
    {"contacts", TS_CONTACTS},         {"event-types", TS_EVENT_TYPES}, {"slots", TS_SLOTS},
    {"teams", TS_TEAMS},               {"users", TS_USERS},           {"user", TS_USERS},
    {"webhook", TS_WEBHOOKS},
};

static unsigned served_toolsets = TS_ALL; /* --toolsets */
static int served_read_only;              /* --read-only */

static unsigned tool_toolset(const struct cm_tool *t)
{
    size_t i, n = strcspn(t->path + 1, "/");
    for (i = 0; i < sizeof toolset_of_path / sizeof toolset_of_path[0]; i++)
        if (strlen(toolset_of_path[i].segment) == n && memcmp(t->path + 1, toolset_of_path[i].segment, n) == 0)
            return toolset_of_path[i].toolset;
    return 0; /* a path outside every toolset: only listed with all of them */
}

/* The toolset of catalog row ti, worked out from the paths once: every
 * tools/list asks it of every row. */
static unsigned row_toolset(size_t ti)
{
    static unsigned char of_row[N_TOOLS]; /* TS_ bits: they fit a byte */
    static int known;
    if (!known) {
        size_t i;
        for (i = 0; i < N_TOOLS; i++)
            of_row[i] = (unsigned char)tool_toolset(&tools[i]);
        known = 1;
    }
    return of_row[ti];
}

/* Parses "bookings,slots" (or "all"; %2C counts as a comma) into a mask.
 * 0, or -1 with the offending name in err. */
static int parse_toolsets(const char *s, size_t n, unsigned *mask, char *err, size_t cap)
{
    size_t at = 0;
    *mask = 0;
    while (at <= n) {
        size_t end = at, next, i;
        while (end < n && s[end] != ',' && !(end + 3 <= n && s[end] == '%' && s[end + 1] == '2' && lower(s[end + 2]) == 'c'))
            end++;
        next = end < n && s[end] == '%' ? end + 3 : end + 1;
        for (i = 0; i < N_TOOLSETS; i++)
            if (strlen(toolset_names[i].name) == end - at && memcmp(s + at, toolset_names[i].name, end - at) == 0)
                break;
        if (i < N_TOOLSETS)
            *mask |= toolset_names[i].bit;
        else if (end - at == 3 && memcmp(s + at, "all", 3) == 0)
            *mask |= TS_ALL;
        else {
            snprintf(err, cap, "unknown toolset '%.*s' (availability, bookings, contacts, event-types, slots, teams, users, webhooks or all)",
                     (int)(end - at > 40 ? 40 : end - at), s + at);
            return -1;
        }
        at = next;
    }
    return 0;
}

/* The value of name=... in a query string, or a view with p NULL. */
static struct view query_param(struct view q, const char *name)
{
    struct view v = {NULL, 0};
    size_t at = 0, n = strlen(name);
    while (at < q.n) {
        size_t end = at;
        while (end < q.n && q.p[end] != '&')
            end++;
        if (end - at > n && memcmp(q.p + at, name, n) == 0 && q.p[at + n] == '=') {
            v.p = q.p + at + n + 1;
            v.n = end - at - n - 1;
            return v;
        }
        at = end + 1;
    }
    return v;
}

/* The whole catalog: every toolset (and the rows outside all of them), not read-only. */
static int all_tools_selected(const struct rpc_ctx *c)
{
    return !served_read_only && (c->toolsets ? c->toolsets : served_toolsets) == TS_ALL;
}

static int tool_selected(const struct rpc_ctx *c, size_t ti)
{
    unsigned mask = c->toolsets ? c->toolsets : served_toolsets;
    if (all_tools_selected(c))
        return 1;
    if (served_read_only && !(tools[ti].flags & T_READ))
        return 0;
    return mask == TS_ALL || (row_toolset(ti) & mask) != 0;
}

/* A tool by name, only when this request's selection offers it. */
static int find_selected_tool(const struct rpc_ctx *c, const char *name)
{
    int ti = find_tool(name);
    return ti >= 0 && tool_selected(c, (size_t)ti) ? ti : -1;
}

static unsigned selected_tool_count(const struct rpc_ctx *c)
{
    size_t i;
    unsigned n = 0;
    for (i = 0; i < N_TOOLS; i++)
        n += (unsigned)tool_selected(c, i);
    return n;
}

/* The instructions name only tools the request's selection offers. */
static const struct {
    const char *tool, *finds;
} id_lookups[] = {
    {"get_event_types", "eventTypeId"}, {"get_booking", "bookingId"},
    {"list_contacts", "contactId"},     {"get_teams", "teamId"},
};

static void render_instructions(struct resp *r, const struct rpc_ctx *c)
{
    char text[900];
    struct textbuf b;
    size_t i;
    int n = 0;
    unsigned mask = c->toolsets ? c->toolsets : served_toolsets;
    b.p = text;
    b.cap = sizeof text;
    b.len = 0;
    b.overflow = 0;
    tb_str(&b, "Tools for the user's Cal ID scheduling account. Times are ISO 8601; pass timeZone as an "
               "IANA name (e.g. Europe/Berlin).");
    for (i = 0; i < sizeof id_lookups / sizeof id_lookups[0]; i++)
        if (find_selected_tool(c, id_lookups[i].tool) >= 0)
            tb_printf(&b, "%s%s for %s", n++ ? ", " : " Look ids up before using them: ", id_lookups[i].tool,
                      id_lookups[i].finds);
    if (n)
        tb_str(&b, ".");
    if (find_selected_tool(c, "get_slots") >= 0 && find_selected_tool(c, "create_booking") >= 0)
        tb_str(&b, " To book: get_slots for free times, then create_booking.");
    tb_str(&b, " Each tool returns the API's JSON answer; isError results carry the API's status and message.");
    if (mask != TS_ALL) {
        for (i = 0, n = 0; i < N_TOOLSETS; i++)
            if (mask & toolset_names[i].bit)
                tb_printf(&b, "%s%s", n++ ? ", " : " Only these toolsets are offered: ", toolset_names[i].name);
        tb_str(&b, ".");
    }
    if (served_read_only)
        tb_str(&b, " Read-only: no tool here changes the account.");
    rs_json_string(r, text, b.len);
}

/* The id as raw JSON text ("null" when absent or not a string/number). */
static struct view rpc_id(const struct jdoc *d, int msg)
{
    struct view v;
    int id = obj_get(d, msg, "id");
    const char *type = id >= 0 ? tok_type_name(d, id) : "";
    if (strcmp(type, "string") == 0 || strcmp(type, "integer") == 0 || strcmp(type, "number") == 0)
        return tok_raw(d, id);
    v.p = "null";
    v.n = 4;
    return v;
}

/* Opens a message with its id, byte for byte as the client wrote it. A long
 * id is referenced where it lies (the request text outlives the answer), so
 * any id a body can hold comes back whole. */
#define ID_COPY_BYTES 64
static void msg_head(struct resp *r, struct view id)
{
    msg_begin(r);
    rs_str(r, "{\"jsonrpc\":\"2.0\",\"id\":");
    if (id.n <= ID_COPY_BYTES)
        rs_put(r, id.p, id.n);
    else
        rs_ext(r, id.p, id.n, 0);
}

static void rpc_error(struct resp *r, struct view id, int code, const char *message, const char *data_json)
{
    msg_head(r, id);
    rs_printf(r, ",\"error\":{\"code\":%d,\"message\":", code);
    rs_json_string(r, message, strlen(message));
    if (data_json) {
        rs_str(r, ",\"data\":");
        rs_str(r, data_json);
    }
    rs_str(r, "}}");
    msg_end(r);
}

static void result_begin(struct resp *r, struct view id)
{
    msg_head(r, id);
    rs_str(r, ",\"result\":{");
}

/* Closes a result; modern results carry resultType and serverInfo. */
static void result_end(struct resp *r, int modern, int cacheable)
{
    if (modern) {
        if (cacheable)
            rs_str(r, ",\"ttlMs\":3600000,\"cacheScope\":\"public\"");
        rs_str(r, ",\"resultType\":\"complete\",\"_meta\":{\"io.modelcontextprotocol/serverInfo\":{\"name\":\"" SERVER_NAME
                  "\",\"version\":\"" CM_VERSION "\"}}");
    }
    rs_str(r, "}}");
    msg_end(r);
}

static void supported_versions_json(char *out, size_t cap)
{
    size_t i;
    struct textbuf b;
    b.p = out;
    b.cap = cap;
    b.len = 0;
    b.overflow = 0;
    tb_str(&b, "[\"" MODERN_VERSION "\"");
    for (i = 0; i < N_SESSION_VERSIONS; i++)
        tb_printf(&b, ",\"%s\"", session_versions[i]);
    tb_str(&b, "]");
}

/* A tool result with text built here (errors before any API call). */
static void tool_text_result(struct resp *r, struct view id, int modern, int is_error, const char *text)
{
    result_begin(r, id);
    rs_str(r, "\"content\":[{\"type\":\"text\",\"text\":");
    rs_json_string(r, text, strlen(text));
    rs_printf(r, "}],\"isError\":%s", is_error ? "true" : "false");
    result_end(r, modern, 0);
}

enum { D_REPLIED, D_NO_REPLY, D_PENDING };

/* Validates tools/call, builds the API request and submits it. D_PENDING
 * when the request went out (or waits for a free upstream slot). */
static int start_tool_call(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r,
                           struct pending_call *pc)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params"), name = obj_get(d, params, "name");
    int args = obj_get(d, params, "arguments");
    char tool_name[128], msg_text[512];
    int ti;
    if (name < 0 || d->t[name].type != JSMN_STRING || tok_unescape(d, name, tool_name, sizeof tool_name) < 0) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: tools/call needs params.name, a tool name string", NULL);
        return D_REPLIED;
    }
    if (args >= 0 && tok_is_null(d, args))
        args = -1;
    if (args >= 0 && d->t[args].type != JSMN_OBJECT) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params.arguments must be an object", NULL);
        return D_REPLIED;
    }
    ti = find_selected_tool(c, tool_name);
    if (ti < 0) {
        char m[300];
        snprintf(m, sizeof m, "Unknown tool: %s (tools/list names the %u tools%s)", tool_name, selected_tool_count(c),
                 find_tool(tool_name) >= 0 ? " this server offers; it is left out by --read-only or the toolsets" : "");
        rpc_error(r, id, E_INVALID_PARAMS, m, NULL);
        return D_REPLIED;
    }
    if (validate_args(&tools[ti], d, args, msg_text, sizeof msg_text) < 0) {
        tool_text_result(r, id, c->era == ERA_MODERN, 1, msg_text);
        return D_REPLIED;
    }
    if ((tools[ti].flags & T_MULTIPART) && d->t[obj_get(d, args, "image")].type != JSMN_STRING) {
        tool_text_result(r, id, c->era == ERA_MODERN, 1, "Argument 'image' must be a base64 string");
        return D_REPLIED;
    }
    if (!c->token) {
        tool_text_result(r, id, c->era == ERA_MODERN, 1,
                         "No Cal ID token: send Authorization: Bearer calid_..., or give the server a key (--api-key or CALID_API_KEY)");
        return D_REPLIED;
    }
    if (c->token_len >= sizeof bearer_buf) {
        tool_text_result(r, id, c->era == ERA_MODERN, 1, "The bearer token is too long (1023 bytes at most)");
        return D_REPLIED;
    }
    pc->active = 1;
    pc->kind = PC_TOOL;
    pc->tool = ti;
    pc->modern = c->era == ERA_MODERN;
    pc->handle = -1;
    pc->jdoc_args = args;
    pc->id = id;
    return D_PENDING;
}

/* Builds and submits the API request for a pending call. Returns the handle,
 * -1 when all upstream slots are busy (try again), or -2 with msg set. */
static int submit_tool_call(unsigned owner, struct pending_call *pc, const struct jdoc *d,
                            const char *token, size_t token_len, char *msg, size_t cap)
{
    const struct cm_tool *t = &tools[pc->tool];
    char ctype[96];
    const char *content_type = NULL;
    long body_len = 0;
    int h;
    if (build_path(t, d, pc->jdoc_args, msg, cap) < 0)
        return -2;
    if (method_has_body(t)) {
        req_body = up_body_room(&req_body_cap);
        if (!req_body)
            return -1; /* every API slot is busy: the body is built once one is free */
        if (t->flags & T_MULTIPART) {
            body_len = build_multipart(d, pc->jdoc_args, ctype, sizeof ctype, msg, cap);
            content_type = ctype;
        } else {
            body_len = build_json_body(t, d, pc->jdoc_args);
            content_type = "application/json";
        }
        if (body_len < 0) {
            if (!msg[0])
                snprintf(msg, cap, "The arguments make a request body over %u bytes", (unsigned)req_body_cap);
            return -2;
        }
    }
    memcpy(bearer_buf, token, token_len);
    bearer_buf[token_len] = 0;
    h = up_submit(owner, t->method, req_path, bearer_buf, content_type, req_body, (size_t)body_len);
    if (h == -2)
        snprintf(msg, cap, "The request for %s does not fit CM_UPSTREAM_REQ_BYTES (%u)", t->name,
                 (unsigned)CM_UPSTREAM_REQ_BYTES);
    /* the path without its query: query values are user data */
    cm_logf(CM_LOG_DEBUG, "tool %s -> %s %s%.*s", t->name, t->method, upstream_host_for_log, (int)strcspn(req_path, "?"), req_path);
    return h;
}

/* Pulls "message" out of an API error answer, if it has one. */
static void api_message(const char *body, size_t n, char *out, size_t cap)
{
    struct jdoc d;
    const char *why;
    size_t at;
    int m, r;
    out[0] = 0;
    r = jdoc_parse(&d, body, n, schema_toks, SCHEMA_TOKENS, &why, &at); /* no schema is in use while answers render */
    if (r < 0 && r != -2)
        return;
    if (r == -2)
        return;
    m = obj_get(&d, 0, "message");
    if (m < 0)
        m = obj_get(&d, obj_get(&d, 0, "error"), "message");
    if (m >= 0 && d.t[m].type == JSMN_STRING && tok_unescape(&d, m, out, cap) < 0)
        out[0] = 0; /* too long to quote: the whole answer follows anyway */
}

static const char *status_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : "Error";
    }
}

/* Renders the tool result for a finished API request; returns whether it is
 * an error result. With copy set (batch parts) the API answer is copied;
 * otherwise the answer is referenced and the caller must keep the upstream
 * slot until the answer is written. */
/* The line that opens a tool result for an API error status (the API's
 * message when its answer, whole, says one). */
static void api_error_head(const struct pending_call *pc, const struct up_result *u, char *head, size_t cap)
{
    char m[300];
    api_message(u->body, u->body_len, m, sizeof m);
    snprintf(head, cap, "Cal ID API error %d %s%s%s%s%s%s\n", u->status, status_reason(u->status),
             m[0] ? ": " : "", m, u->retry_after[0] ? ". Retry after " : "", u->retry_after,
             u->retry_after[0] ? " seconds (Retry-After)." : "");
    if (u->status >= 500 && (tools[pc->tool].flags & T_ACTS_BEFORE_5XX))
        snprintf(head + strlen(head), cap - strlen(head), "%s\n", ACTED_BEFORE_5XX);
}

static int render_tool_result(struct resp *r, const struct pending_call *pc, const struct up_result *u, int copy)
{
    struct view id = pc->id;
    char head[600];
    int is_error = 0, show_body = 1;
    head[0] = 0;
    if (u->status == 0) {
        is_error = 1;
        show_body = 0;
        snprintf(head, sizeof head, "Could not complete the Cal ID API request: %s", u->error);
    } else if (u->status >= 300) {
        is_error = 1;
        api_error_head(pc, u, head, sizeof head);
    } else {
        const char *why;
        size_t at;
        if (json_check(u->body, u->body_len, &why, &at) < 0) {
            is_error = 1;
            show_body = 0;
            snprintf(head, sizeof head,
                     "The Cal ID API answered %d with content that is not JSON (Content-Type: %s, %lu bytes; %s at byte %lu): %.160s",
                     u->status, u->content_type[0] ? u->content_type : "none", (unsigned long)u->body_len,
                     why ? why : "invalid", (unsigned long)at, u->body);
        }
    }
    result_begin(r, id);
    rs_str(r, "\"content\":[{\"type\":\"text\",\"text\":\"");
    if (head[0])
        rs_escaped_copy(r, head, strlen(head));
    if (show_body) {
        if (copy)
            rs_escaped_copy(r, u->body, u->body_len);
        else
            rs_ext(r, u->body, u->body_len, 1);
    }
    rs_printf(r, "\"}],\"isError\":%s", is_error ? "true" : "false");
    result_end(r, pc->modern, 0);
    return is_error;
}

/* ---- Prompts ---- */
/*
 * The seed's example requests as MCP prompts. Each renders one user message
 * that says which tools to chain and what to ask the user first. A prompt is
 * listed only when the request's selection offers every tool it names.
 */
enum { COMPLETE_NONE, COMPLETE_TIME_ZONE, COMPLETE_DAY, COMPLETE_EVENT_TYPE };

struct prompt_arg {
    const char *name;
    const char *description;
    int required;
    const char *if_absent; /* stands in for an optional argument not given */
    int completes;         /* what completion/complete offers for it */
};

#define MAX_PROMPT_ARGS 5
#ifndef CM_PROMPT_ARG_BYTES
#define CM_PROMPT_ARG_BYTES 200 /* one argument value: a name, a day, a title */
#endif
#define PROMPT_TEXT_BYTES 2048  /* the longest message with every argument at its limit */

struct cm_prompt {
    const char *name, *title, *description;
    const char *tools; /* the tools the message chains, space separated */
    struct prompt_arg args[MAX_PROMPT_ARGS];
    const char *text;  /* the user message; {name} is that argument */
};

#define ARG_TIME_ZONE                                                                                   \
    {"timeZone", "Your IANA time zone, e.g. Europe/Berlin", 0,                                          \
     "not given: ask me for it (an IANA name such as Europe/Berlin) before calling any tool",          \
     COMPLETE_TIME_ZONE}
#define ARG_EVENT_TYPE                                                                                  \
    {"eventType", "Event type slug or title, e.g. 30min", 0,                                            \
     "not chosen: show me my event types from get_event_types and ask me which one", COMPLETE_EVENT_TYPE}

static const struct cm_prompt prompts[] = {
    {"bookings_this_week", "This week's bookings", "What bookings do I have this week?",
     "get_booking",
     {ARG_TIME_ZONE},
     "What bookings do I have this week? My time zone: {timeZone}.\n"
     "Steps: work out this week's Monday 00:00 and Sunday 23:59 in my time zone; call get_booking for the "
     "bookings that start in that range (ISO 8601 times with the offset). List each booking with its title, "
     "start and end in my time zone and its attendees; say so plainly if there are none."},
    {"free_slots_on_day", "Free slots on a day", "Show my available slots for a day, e.g. next Monday.",
     "get_event_types get_slots",
     {{"day", "The day: a date (2026-12-07), a weekday (Monday) or a word like tomorrow or next Monday", 1, NULL,
       COMPLETE_DAY},
      ARG_EVENT_TYPE,
      ARG_TIME_ZONE},
     "Show my available slots for {day}. Event type: {eventType}. My time zone: {timeZone}.\n"
     "Steps: find the event type's numeric id with get_event_types (match its slug or title); call get_slots "
     "with that id, a start and end covering {day} and my time zone. List the free start times of that day "
     "in my time zone."},
    {"create_event_type", "Create an event type", "Create an event type, e.g. a 30-minute sales demo.",
     "get_event_types create_eventtype",
     {{"title", "What bookers see, e.g. Sales demo", 1, NULL, COMPLETE_NONE},
      {"length", "Length of a meeting in minutes, e.g. 30", 1, NULL, COMPLETE_NONE},
      {"slug", "URL slug, e.g. sales-demo", 0, "made from the title: lowercase words joined by hyphens",
       COMPLETE_NONE}},
     "Create a {length}-minute event type titled \"{title}\". Slug: {slug}.\n"
     "Steps: call get_event_types to check that none of my event types uses that slug yet (if one does, ask "
     "me for another); then call create_eventtype with the title, slug and length in minutes. Show me the new "
     "event type's id and its booking link."},
    {"contact_meeting_history", "A contact's meeting history",
     "List my contacts and show recent meeting history for one of them.",
     "list_contacts get_contact_meetings",
     {{"contact", "Name or email of the contact", 0,
       "the one I pick: show me the list first and ask me which contact", COMPLETE_NONE}},
     "List my contacts, then show the recent meeting history of one of them: {contact}.\n"
     "Steps: call list_contacts and show each contact's name and email; take that contact's id from the "
     "answer; call get_contact_meetings with it and list the meetings, most recent first, with title, date "
     "and status."},
    {"book_meeting", "Book a meeting", "Create a booking with a person at a time, e.g. John Doe next Tuesday at 3pm.",
     "get_event_types get_slots create_booking",
     {{"attendeeName", "Who the meeting is with, e.g. John Doe", 1, NULL, COMPLETE_NONE},
      {"when", "When, e.g. next Tuesday at 3pm", 1, NULL, COMPLETE_DAY},
      {"attendeeEmail", "The attendee's email address", 0, "unknown: ask me for it, the booking needs it",
       COMPLETE_NONE},
      ARG_EVENT_TYPE,
      ARG_TIME_ZONE},
     "Create a booking with {attendeeName} ({attendeeEmail}) for {when}. Event type: {eventType}. My time "
     "zone: {timeZone}.\n"
     "Steps: find the event type's numeric id with get_event_types; call get_slots for that day in my time "
     "zone to check the time is free (if it is not, offer me the nearest free times); tell me the exact time, "
     "event type and attendee and wait for my yes; then call create_booking with the event type id, the start "
     "in UTC, my time zone and the attendee's name and email."},
};
#define N_PROMPTS (sizeof prompts / sizeof prompts[0])

/* Calls fn for each tool a prompt names; -1 as soon as fn does. */
static int prompt_tools_each(const struct cm_prompt *p, int (*fn)(const char *name, const void *arg), const void *arg)
{
    const char *s = p->tools;
    while (*s) {
        char name[64];
        size_t n = strcspn(s, " ");
        snprintf(name, sizeof name, "%.*s", (int)n, s);
        if (fn(name, arg) < 0)
            return -1;
        s += n + (s[n] == ' ');
    }
    return 0;
}

static int tool_offered(const char *name, const void *ctx)
{
    return find_selected_tool(ctx, name) >= 0 ? 0 : -1;
}

static int prompt_selected(const struct rpc_ctx *c, const struct cm_prompt *p)
{
    return prompt_tools_each(p, tool_offered, c) == 0;
}

/* A prompt by name (the name token), when this request's selection offers it. */
static const struct cm_prompt *find_prompt(const struct rpc_ctx *c, const struct jdoc *d, int name)
{
    size_t i;
    if (name < 0 || d->t[name].type != JSMN_STRING)
        return NULL;
    for (i = 0; i < N_PROMPTS; i++)
        if (view_eq(tok_view(d, name), prompts[i].name))
            return prompt_selected(c, &prompts[i]) ? &prompts[i] : NULL;
    return NULL;
}

static void render_prompts_list(struct resp *r, const struct rpc_ctx *c, struct view id, int modern)
{
    size_t i, k;
    int listed = 0;
    result_begin(r, id);
    rs_str(r, "\"prompts\":[");
    for (i = 0; i < N_PROMPTS; i++) {
        const struct cm_prompt *p = &prompts[i];
        if (!prompt_selected(c, p))
            continue;
        rs_printf(r, "%s{\"name\":\"%s\",\"title\":", listed++ ? "," : "", p->name);
        rs_json_string(r, p->title, strlen(p->title));
        rs_str(r, ",\"description\":");
        rs_json_string(r, p->description, strlen(p->description));
        rs_str(r, ",\"arguments\":[");
        for (k = 0; k < MAX_PROMPT_ARGS && p->args[k].name; k++) {
            rs_printf(r, "%s{\"name\":\"%s\",\"description\":", k ? "," : "", p->args[k].name);
            rs_json_string(r, p->args[k].description, strlen(p->args[k].description));
            rs_printf(r, ",\"required\":%s}", p->args[k].required ? "true" : "false");
        }
        rs_str(r, "]}");
    }
    rs_str(r, "]");
    result_end(r, modern, 1);
}

/* The argument's value from params.arguments into out; 0 given, 1 absent,
 * -1 malformed (with why). */
static int prompt_arg_value(const struct jdoc *d, int args, const struct prompt_arg *a, char *out, size_t cap,
                            char *why, size_t why_cap)
{
    int v = obj_get(d, args, a->name);
    if (v < 0 || tok_is_null(d, v))
        return 1;
    if (d->t[v].type != JSMN_STRING) {
        snprintf(why, why_cap, "Invalid params: prompt argument '%s' must be a string", a->name);
        return -1;
    }
    if (tok_unescape(d, v, out, cap) < 0) {
        snprintf(why, why_cap, "Invalid params: prompt argument '%s' is over %u bytes", a->name,
                 (unsigned)CM_PROMPT_ARG_BYTES);
        return -1;
    }
    return out[0] ? 0 : 1;
}

/* Every key of params.arguments must be one of the prompt's arguments. */
static int prompt_args_known(const struct cm_prompt *p, const struct jdoc *d, int args, char *why, size_t cap)
{
    int i, k, j;
    if (args < 0)
        return 0;
    for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
        for (j = 0; j < MAX_PROMPT_ARGS && p->args[j].name; j++)
            if (view_eq(tok_view(d, i), p->args[j].name))
                break;
        if (j == MAX_PROMPT_ARGS || !p->args[j].name) {
            snprintf(why, cap, "Invalid params: prompt %s has no argument '%.*s'", p->name,
                     (int)(tok_view(d, i).n > 60 ? 60 : tok_view(d, i).n), tok_view(d, i).p);
            return -1;
        }
    }
    return 0;
}

/* Fills the message template. 0, or -1 with why (a bad or missing argument). */
static int prompt_render_text(const struct cm_prompt *p, const struct jdoc *d, int args, struct textbuf *b,
                              char *why, size_t why_cap)
{
    const char *s = p->text;
    while (*s) {
        const char *open = strchr(s, '{'), *close = open ? strchr(open, '}') : NULL;
        char value[CM_PROMPT_ARG_BYTES + 1];
        int k, got;
        if (!open || !close) {
            tb_str(b, s);
            break;
        }
        tb_put(b, s, (size_t)(open - s));
        for (k = 0; k < MAX_PROMPT_ARGS && p->args[k].name; k++)
            if (strlen(p->args[k].name) == (size_t)(close - open - 1) && memcmp(open + 1, p->args[k].name, (size_t)(close - open - 1)) == 0)
                break;
        got = prompt_arg_value(d, args, &p->args[k], value, sizeof value, why, why_cap);
        if (got < 0)
            return -1;
        if (got == 1 && p->args[k].required) {
            snprintf(why, why_cap, "Invalid params: prompt %s needs the argument '%s'", p->name, p->args[k].name);
            return -1;
        }
        tb_str(b, got == 0 ? value : p->args[k].if_absent);
        s = close + 1;
    }
    return 0;
}

static int serve_prompts_get(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params"), args = obj_get(d, params, "arguments");
    const struct cm_prompt *p = find_prompt(c, d, obj_get(d, params, "name"));
    char text[PROMPT_TEXT_BYTES], why[200];
    struct textbuf b;
    (void)pc;
    if (!p) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: unknown prompt (prompts/list names them)", NULL);
        return D_REPLIED;
    }
    if (args >= 0 && tok_is_null(d, args))
        args = -1;
    if (args >= 0 && d->t[args].type != JSMN_OBJECT) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params.arguments must be an object of strings", NULL);
        return D_REPLIED;
    }
    b.p = text;
    b.cap = sizeof text;
    b.len = 0;
    b.overflow = 0;
    if (prompt_args_known(p, d, args, why, sizeof why) < 0 || prompt_render_text(p, d, args, &b, why, sizeof why) < 0) {
        rpc_error(r, id, E_INVALID_PARAMS, why, NULL);
        return D_REPLIED;
    }
    result_begin(r, id);
    rs_str(r, "\"description\":");
    rs_json_string(r, p->description, strlen(p->description));
    rs_str(r, ",\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":");
    rs_json_string(r, text, b.len);
    rs_str(r, "}}]");
    result_end(r, c->era == ERA_MODERN, 0);
    return D_REPLIED;
}

static int tool_in_catalog(const char *name, const void *err)
{
    (void)err;
    return find_tool(name) >= 0 ? 0 : -1;
}

/* Every {name} in the template is one of the prompt's arguments. */
static int prompt_placeholders_known(const struct cm_prompt *p)
{
    const char *s = p->text;
    while ((s = strchr(s, '{')) != NULL) {
        const char *close = strchr(s, '}');
        int k;
        if (!close)
            return -1;
        for (k = 0; k < MAX_PROMPT_ARGS && p->args[k].name; k++)
            if (strlen(p->args[k].name) == (size_t)(close - s - 1) && memcmp(s + 1, p->args[k].name, (size_t)(close - s - 1)) == 0)
                break;
        if (k == MAX_PROMPT_ARGS || !p->args[k].name)
            return -1;
        s = close + 1;
    }
    return 0;
}

/* At start: every tool a prompt names is in the catalog, every placeholder
 * is an argument. */
static int prompts_check(char *err, size_t errlen)
{
    size_t i;
    for (i = 0; i < N_PROMPTS; i++) {
        if (prompt_tools_each(&prompts[i], tool_in_catalog, NULL) < 0) {
            snprintf(err, errlen, "prompt %s names a tool the catalog lacks (%s)", prompts[i].name, prompts[i].tools);
            return -1;
        }
        if (prompt_placeholders_known(&prompts[i]) < 0) {
            snprintf(err, errlen, "prompt %s has a {placeholder} that is none of its arguments", prompts[i].name);
            return -1;
        }
    }
    return 0;
}

/* ---- Resources ---- */
/*
 * Read-only views a client can attach to a conversation. Each read is one
 * GET with the caller's token, through the same upstream path tools/call
 * takes; the answer is the API's JSON. A template's last segment is an id.
 */
struct cm_resource {
    const char *uri;      /* calid://...; a template ends in {name} */
    const char *name, *title, *description;
    const char *api_path; /* the one GET a read takes; {id} is the URI's id */
    unsigned toolset;     /* listed only when the selection offers it */
    long ttl_ms;          /* how long a 2026-07-28 client may keep a read */
};

#define RESOURCE_ID_CHARS 64 /* ids are numbers or uids: letters, digits, - and _ */
#define E_RESOURCE_NOT_FOUND_SESSION_ERA (-32002) /* 2026-07-28 uses -32602 instead */

static const struct cm_resource resources[] = {
    {"calid://me", "me", "My profile",
     "The current user's Cal ID profile: name, email, username, time zone, week start.",
     "/users/me", TS_USERS, 300000},
    {"calid://event-types", "event-types", "My event types",
     "The current user's event types, each with its id, slug, title and length.",
     "/event-types", TS_EVENT_TYPES, 300000},
    {"calid://schedules", "schedules", "My schedules",
     "The current user's availability schedules with their time zones and working hours.",
     "/schedule", TS_AVAILABILITY, 300000},
    {"calid://bookings/upcoming", "upcoming-bookings", "Upcoming bookings",
     "The current user's upcoming bookings with title, start, end and attendees.",
     "/booking?status=upcoming", TS_BOOKINGS, 60000},
    {"calid://bookings/{bookingId}", "booking", "A booking",
     "One booking by its numeric id (as in calid://bookings/upcoming): title, times, attendees, status.",
     "/booking/{id}", TS_BOOKINGS, 60000},
    {"calid://event-types/{eventTypeId}", "event-type", "An event type",
     "One event type by its numeric id (as in calid://event-types): title, slug, length, locations.",
     "/event-types/{id}", TS_EVENT_TYPES, 300000},
};
#define N_RESOURCES (sizeof resources / sizeof resources[0])

static int resource_is_template(const struct cm_resource *res) { return strchr(res->uri, '{') != NULL; }

static int resource_selected(const struct rpc_ctx *c, const struct cm_resource *res)
{
    return (res->toolset & (c->toolsets ? c->toolsets : served_toolsets)) != 0;
}

/* resources/list (templates 0) or resources/templates/list (templates 1). */
static void render_resources_list(struct resp *r, const struct rpc_ctx *c, struct view id, int templates)
{
    size_t i;
    int listed = 0;
    result_begin(r, id);
    rs_str(r, templates ? "\"resourceTemplates\":[" : "\"resources\":[");
    for (i = 0; i < N_RESOURCES; i++) {
        const struct cm_resource *res = &resources[i];
        if (resource_is_template(res) != templates || !resource_selected(c, res))
            continue;
        rs_printf(r, "%s{\"%s\":\"%s\",\"name\":\"%s\",\"title\":", listed++ ? "," : "", templates ? "uriTemplate" : "uri",
                  res->uri, res->name);
        rs_json_string(r, res->title, strlen(res->title));
        rs_str(r, ",\"description\":");
        rs_json_string(r, res->description, strlen(res->description));
        rs_str(r, ",\"mimeType\":\"application/json\"}");
    }
    rs_str(r, "]");
    result_end(r, c->era == ERA_MODERN, 1);
}

/* Which resource a URI names, with the id of a template in id. -1: none. */
static int match_resource(const struct rpc_ctx *c, struct view uri, char *id, size_t cap)
{
    size_t i, k;
    for (i = 0; i < N_RESOURCES; i++)
        if (!resource_is_template(&resources[i]) && view_eq(uri, resources[i].uri))
            return resource_selected(c, &resources[i]) ? (int)i : -1;
    for (i = 0; i < N_RESOURCES; i++) {
        const struct cm_resource *res = &resources[i];
        size_t pre = (size_t)(strchr(res->uri, '{') - res->uri);
        if (!resource_is_template(res) || uri.n <= pre || uri.n - pre > RESOURCE_ID_CHARS || uri.n - pre >= cap ||
            memcmp(uri.p, res->uri, pre) != 0)
            continue;
        for (k = pre; k < uri.n; k++) {
            int ch = (unsigned char)uri.p[k];
            if (!((ch >= '0' && ch <= '9') || (lower(ch) >= 'a' && lower(ch) <= 'z') || ch == '-' || ch == '_'))
                return -1; /* only letters, digits, - and _ make an id: nothing can climb the API's path */
        }
        memcpy(id, uri.p + pre, uri.n - pre);
        id[uri.n - pre] = 0;
        return resource_selected(c, res) ? (int)i : -1;
    }
    return -1;
}

/* Not found: -32602 in 2026-07-28, -32002 before (as each revision says). */
static void resource_not_found(struct resp *r, struct view id, int modern, const char *uri, size_t uri_n, const char *why)
{
    char m[800], data[200];
    snprintf(m, sizeof m, "Resource not found: %.*s%s%s", (int)(uri_n > 120 ? 120 : uri_n), uri, why ? " " : "",
             why ? why : "");
    snprintf(data, sizeof data, "{\"uri\":\"%.*s\"}", (int)(uri_n > 120 ? 120 : uri_n), uri);
    rpc_error(r, id, modern ? E_INVALID_PARAMS : E_RESOURCE_NOT_FOUND_SESSION_ERA, m, json_check(data, strlen(data), &(const char *){NULL}, &(size_t){0}) == 0 ? data : NULL);
}

/* Validates resources/read; D_PENDING once the read is set up to go out. */
static int start_resource_read(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    struct view id = rpc_id(d, msg);
    int uri = obj_get(d, obj_get(d, msg, "params"), "uri"), ri;
    char res_id[RESOURCE_ID_CHARS + 1];
    if (uri < 0 || d->t[uri].type != JSMN_STRING) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: resources/read needs params.uri, a string", NULL);
        return D_REPLIED;
    }
    ri = match_resource(c, tok_view(d, uri), res_id, sizeof res_id);
    if (ri < 0) {
        resource_not_found(r, id, c->era == ERA_MODERN, tok_view(d, uri).p, tok_view(d, uri).n,
                           "(resources/list and resources/templates/list name the resources)");
        return D_REPLIED;
    }
    if (!c->token || c->token_len >= sizeof bearer_buf) {
        rpc_error(r, id, E_SERVER, !c->token ? "No Cal ID token: send Authorization: Bearer calid_..., or give the server a key (--api-key or CALID_API_KEY)"
                                             : "The bearer token is too long (1023 bytes at most)", NULL);
        return D_REPLIED;
    }
    pc->active = 1;
    pc->kind = PC_RESOURCE;
    pc->tool = ri;
    pc->modern = c->era == ERA_MODERN;
    pc->handle = -1;
    pc->jdoc_args = -1;
    snprintf(pc->res_id, sizeof pc->res_id, "%s", resources[ri].api_path[strlen(resources[ri].api_path) - 1] == '}' ? res_id : "");
    pc->id = id;
    return D_PENDING;
}

/* The one GET of a read: the same slots and error handling as a tool call. */
static int submit_resource_read(unsigned owner, struct pending_call *pc, const char *token, size_t token_len, char *msg,
                                size_t cap)
{
    const struct cm_resource *res = &resources[pc->tool];
    const char *brace = strchr(res->api_path, '{');
    int h;
    if (brace)
        snprintf(req_path, sizeof req_path, "%.*s%s", (int)(brace - res->api_path), res->api_path, pc->res_id);
    else
        snprintf(req_path, sizeof req_path, "%s", res->api_path);
    memcpy(bearer_buf, token, token_len);
    bearer_buf[token_len] = 0;
    h = up_submit(owner, "GET", req_path, bearer_buf, NULL, NULL, 0);
    if (h == -2)
        snprintf(msg, cap, "The request for %s does not fit CM_UPSTREAM_REQ_BYTES", res->uri);
    cm_logf(CM_LOG_DEBUG, "resource %s -> GET %s%s", res->uri, upstream_host_for_log, req_path);
    return h;
}

/* The URI a read was for (a template with its id filled in). */
static void resource_uri(const struct pending_call *pc, char *out, size_t cap)
{
    const char *uri = resources[pc->tool].uri, *brace = strchr(uri, '{');
    if (brace)
        snprintf(out, cap, "%.*s%s", (int)(brace - uri), uri, pc->res_id);
    else
        snprintf(out, cap, "%s", uri);
}

static void render_resource_result(struct resp *r, const struct pending_call *pc, const struct up_result *u, int copy)
{
    struct view id;
    char uri[160], m[800], api[300]; /* m holds uri and a transport error (up_result.error) */
    const char *why;
    size_t at;
    id = pc->id;
    resource_uri(pc, uri, sizeof uri);
    if (u->status == 404) {
        api_message(u->body, u->body_len, api, sizeof api);
        snprintf(m, sizeof m, "(Cal ID API 404%s%s)", api[0] ? ": " : "", api);
        resource_not_found(r, id, pc->modern, uri, strlen(uri), m);
        return;
    }
    if (u->status == 0 || u->status >= 300 || json_check(u->body, u->body_len, &why, &at) < 0) {
        api_message(u->body, u->body_len, api, sizeof api);
        if (u->status == 0)
            snprintf(m, sizeof m, "Could not complete the Cal ID API request for %s: %s", uri, u->error);
        else if (u->status >= 300)
            snprintf(m, sizeof m, "Cal ID API error %d %s reading %s%s%s", u->status, status_reason(u->status), uri,
                     api[0] ? ": " : "", api);
        else
            snprintf(m, sizeof m, "The Cal ID API answered %s with content that is not JSON", uri);
        rpc_error(r, id, E_SERVER, m, NULL);
        return;
    }
    result_begin(r, id);
    rs_printf(r, "\"contents\":[{\"uri\":\"%s\",\"mimeType\":\"application/json\",\"text\":\"", uri);
    if (copy)
        rs_escaped_copy(r, u->body, u->body_len);
    else
        rs_ext(r, u->body, u->body_len, 1);
    rs_str(r, "\"}]");
    if (pc->modern) /* the user's own data: this authorization only */
        rs_printf(r, ",\"ttlMs\":%ld,\"cacheScope\":\"private\"", resources[pc->tool].ttl_ms);
    result_end(r, pc->modern, 0);
}

/* ---- Completions (completion/complete) ---- */
/*
 * Values the server can know for a prompt argument: IANA time zone names
 * (the zone.tab and zone1970.tab names of the tz database, and UTC) and day
 * words. Matching ignores case, at the start of the name or of its part after
 * a slash ("berl" finds Europe/Berlin).
 */
static const char *const time_zones[] = {
    "Africa/Abidjan", "Africa/Accra", "Africa/Addis_Ababa", "Africa/Algiers", "Africa/Asmara",
    "Africa/Bamako", "Africa/Bangui", "Africa/Banjul", "Africa/Bissau", "Africa/Blantyre",
    "Africa/Brazzaville", "Africa/Bujumbura", "Africa/Cairo", "Africa/Casablanca", "Africa/Ceuta",
    "Africa/Conakry", "Africa/Dakar", "Africa/Dar_es_Salaam", "Africa/Djibouti", "Africa/Douala",
    "Africa/El_Aaiun", "Africa/Freetown", "Africa/Gaborone", "Africa/Harare", "Africa/Johannesburg",
    "Africa/Juba", "Africa/Kampala", "Africa/Khartoum", "Africa/Kigali", "Africa/Kinshasa", "Africa/Lagos",
    "Africa/Libreville", "Africa/Lome", "Africa/Luanda", "Africa/Lubumbashi", "Africa/Lusaka",
    "Africa/Malabo", "Africa/Maputo", "Africa/Maseru", "Africa/Mbabane", "Africa/Mogadishu",
    "Africa/Monrovia", "Africa/Nairobi", "Africa/Ndjamena", "Africa/Niamey", "Africa/Nouakchott",
    "Africa/Ouagadougou", "Africa/Porto-Novo", "Africa/Sao_Tome", "Africa/Tripoli", "Africa/Tunis",
    "Africa/Windhoek", "America/Adak", "America/Anchorage", "America/Anguilla", "America/Antigua",
    "America/Araguaina", "America/Argentina/Buenos_Aires", "America/Argentina/Catamarca",
    "America/Argentina/Cordoba", "America/Argentina/Jujuy", "America/Argentina/La_Rioja",
    "America/Argentina/Mendoza", "America/Argentina/Rio_Gallegos", "America/Argentina/Salta",
    "America/Argentina/San_Juan", "America/Argentina/San_Luis", "America/Argentina/Tucuman",
    "America/Argentina/Ushuaia", "America/Aruba", "America/Asuncion", "America/Atikokan", "America/Bahia",
    "America/Bahia_Banderas", "America/Barbados", "America/Belem", "America/Belize", "America/Blanc-Sablon",
    "America/Boa_Vista", "America/Bogota", "America/Boise", "America/Cambridge_Bay", "America/Campo_Grande",
    "America/Cancun", "America/Caracas", "America/Cayenne", "America/Cayman", "America/Chicago",
    "America/Chihuahua", "America/Ciudad_Juarez", "America/Costa_Rica", "America/Coyhaique",
    "America/Creston", "America/Cuiaba", "America/Curacao", "America/Danmarkshavn", "America/Dawson",
    "America/Dawson_Creek", "America/Denver", "America/Detroit", "America/Dominica", "America/Edmonton",
    "America/Eirunepe", "America/El_Salvador", "America/Fort_Nelson", "America/Fortaleza",
    "America/Glace_Bay", "America/Goose_Bay", "America/Grand_Turk", "America/Grenada", "America/Guadeloupe",
    "America/Guatemala", "America/Guayaquil", "America/Guyana", "America/Halifax", "America/Havana",
    "America/Hermosillo", "America/Indiana/Indianapolis", "America/Indiana/Knox", "America/Indiana/Marengo",
    "America/Indiana/Petersburg", "America/Indiana/Tell_City", "America/Indiana/Vevay",
    "America/Indiana/Vincennes", "America/Indiana/Winamac", "America/Inuvik", "America/Iqaluit",
    "America/Jamaica", "America/Juneau", "America/Kentucky/Louisville", "America/Kentucky/Monticello",
    "America/Kralendijk", "America/La_Paz", "America/Lima", "America/Los_Angeles", "America/Lower_Princes",
    "America/Maceio", "America/Managua", "America/Manaus", "America/Marigot", "America/Martinique",
    "America/Matamoros", "America/Mazatlan", "America/Menominee", "America/Merida", "America/Metlakatla",
    "America/Mexico_City", "America/Miquelon", "America/Moncton", "America/Monterrey", "America/Montevideo",
    "America/Montserrat", "America/Nassau", "America/New_York", "America/Nome", "America/Noronha",
    "America/North_Dakota/Beulah", "America/North_Dakota/Center", "America/North_Dakota/New_Salem",
    "America/Nuuk", "America/Ojinaga", "America/Panama", "America/Paramaribo", "America/Phoenix",
    "America/Port-au-Prince", "America/Port_of_Spain", "America/Porto_Velho", "America/Puerto_Rico",
    "America/Punta_Arenas", "America/Rankin_Inlet", "America/Recife", "America/Regina", "America/Resolute",
    "America/Rio_Branco", "America/Santarem", "America/Santiago", "America/Santo_Domingo",
    "America/Sao_Paulo", "America/Scoresbysund", "America/Sitka", "America/St_Barthelemy", "America/St_Johns",
    "America/St_Kitts", "America/St_Lucia", "America/St_Thomas", "America/St_Vincent",
    "America/Swift_Current", "America/Tegucigalpa", "America/Thule", "America/Tijuana", "America/Toronto",
    "America/Tortola", "America/Vancouver", "America/Whitehorse", "America/Winnipeg", "America/Yakutat",
    "Antarctica/Casey", "Antarctica/Davis", "Antarctica/DumontDUrville", "Antarctica/Macquarie",
    "Antarctica/Mawson", "Antarctica/McMurdo", "Antarctica/Palmer", "Antarctica/Rothera", "Antarctica/Syowa",
    "Antarctica/Troll", "Antarctica/Vostok", "Arctic/Longyearbyen", "Asia/Aden", "Asia/Almaty", "Asia/Amman",
    "Asia/Anadyr", "Asia/Aqtau", "Asia/Aqtobe", "Asia/Ashgabat", "Asia/Atyrau", "Asia/Baghdad",
    "Asia/Bahrain", "Asia/Baku", "Asia/Bangkok", "Asia/Barnaul", "Asia/Beirut", "Asia/Bishkek", "Asia/Brunei",
    "Asia/Chita", "Asia/Colombo", "Asia/Damascus", "Asia/Dhaka", "Asia/Dili", "Asia/Dubai", "Asia/Dushanbe",
    "Asia/Famagusta", "Asia/Gaza", "Asia/Hebron", "Asia/Ho_Chi_Minh", "Asia/Hong_Kong", "Asia/Hovd",
    "Asia/Irkutsk", "Asia/Jakarta", "Asia/Jayapura", "Asia/Jerusalem", "Asia/Kabul", "Asia/Kamchatka",
    "Asia/Karachi", "Asia/Kathmandu", "Asia/Khandyga", "Asia/Kolkata", "Asia/Krasnoyarsk",
    "Asia/Kuala_Lumpur", "Asia/Kuching", "Asia/Kuwait", "Asia/Macau", "Asia/Magadan", "Asia/Makassar",
    "Asia/Manila", "Asia/Muscat", "Asia/Nicosia", "Asia/Novokuznetsk", "Asia/Novosibirsk", "Asia/Omsk",
    "Asia/Oral", "Asia/Phnom_Penh", "Asia/Pontianak", "Asia/Pyongyang", "Asia/Qatar", "Asia/Qostanay",
    "Asia/Qyzylorda", "Asia/Riyadh", "Asia/Sakhalin", "Asia/Samarkand", "Asia/Seoul", "Asia/Shanghai",
    "Asia/Singapore", "Asia/Srednekolymsk", "Asia/Taipei", "Asia/Tashkent", "Asia/Tbilisi", "Asia/Tehran",
    "Asia/Thimphu", "Asia/Tokyo", "Asia/Tomsk", "Asia/Ulaanbaatar", "Asia/Urumqi", "Asia/Ust-Nera",
    "Asia/Vientiane", "Asia/Vladivostok", "Asia/Yakutsk", "Asia/Yangon", "Asia/Yekaterinburg", "Asia/Yerevan",
    "Atlantic/Azores", "Atlantic/Bermuda", "Atlantic/Canary", "Atlantic/Cape_Verde", "Atlantic/Faroe",
    "Atlantic/Madeira", "Atlantic/Reykjavik", "Atlantic/South_Georgia", "Atlantic/St_Helena",
    "Atlantic/Stanley", "Australia/Adelaide", "Australia/Brisbane", "Australia/Broken_Hill",
    "Australia/Darwin", "Australia/Eucla", "Australia/Hobart", "Australia/Lindeman", "Australia/Lord_Howe",
    "Australia/Melbourne", "Australia/Perth", "Australia/Sydney", "Europe/Amsterdam", "Europe/Andorra",
    "Europe/Astrakhan", "Europe/Athens", "Europe/Belgrade", "Europe/Berlin", "Europe/Bratislava",
    "Europe/Brussels", "Europe/Bucharest", "Europe/Budapest", "Europe/Busingen", "Europe/Chisinau",
    "Europe/Copenhagen", "Europe/Dublin", "Europe/Gibraltar", "Europe/Guernsey", "Europe/Helsinki",
    "Europe/Isle_of_Man", "Europe/Istanbul", "Europe/Jersey", "Europe/Kaliningrad", "Europe/Kirov",
    "Europe/Kyiv", "Europe/Lisbon", "Europe/Ljubljana", "Europe/London", "Europe/Luxembourg", "Europe/Madrid",
    "Europe/Malta", "Europe/Mariehamn", "Europe/Minsk", "Europe/Monaco", "Europe/Moscow", "Europe/Oslo",
    "Europe/Paris", "Europe/Podgorica", "Europe/Prague", "Europe/Riga", "Europe/Rome", "Europe/Samara",
    "Europe/San_Marino", "Europe/Sarajevo", "Europe/Saratov", "Europe/Simferopol", "Europe/Skopje",
    "Europe/Sofia", "Europe/Stockholm", "Europe/Tallinn", "Europe/Tirane", "Europe/Ulyanovsk", "Europe/Vaduz",
    "Europe/Vatican", "Europe/Vienna", "Europe/Vilnius", "Europe/Volgograd", "Europe/Warsaw", "Europe/Zagreb",
    "Europe/Zurich", "Indian/Antananarivo", "Indian/Chagos", "Indian/Christmas", "Indian/Cocos",
    "Indian/Comoro", "Indian/Kerguelen", "Indian/Mahe", "Indian/Maldives", "Indian/Mauritius",
    "Indian/Mayotte", "Indian/Reunion", "Pacific/Apia", "Pacific/Auckland", "Pacific/Bougainville",
    "Pacific/Chatham", "Pacific/Chuuk", "Pacific/Easter", "Pacific/Efate", "Pacific/Fakaofo", "Pacific/Fiji",
    "Pacific/Funafuti", "Pacific/Galapagos", "Pacific/Gambier", "Pacific/Guadalcanal", "Pacific/Guam",
    "Pacific/Honolulu", "Pacific/Kanton", "Pacific/Kiritimati", "Pacific/Kosrae", "Pacific/Kwajalein",
    "Pacific/Majuro", "Pacific/Marquesas", "Pacific/Midway", "Pacific/Nauru", "Pacific/Niue",
    "Pacific/Norfolk", "Pacific/Noumea", "Pacific/Pago_Pago", "Pacific/Palau", "Pacific/Pitcairn",
    "Pacific/Pohnpei", "Pacific/Port_Moresby", "Pacific/Rarotonga", "Pacific/Saipan", "Pacific/Tahiti",
    "Pacific/Tarawa", "Pacific/Tongatapu", "Pacific/Wake", "Pacific/Wallis", "UTC",
};
#define N_TIME_ZONES (sizeof time_zones / sizeof time_zones[0])

static const char *const day_words[] = {
    "today", "tomorrow", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    "next Monday", "next Tuesday", "next Wednesday", "next Thursday", "next Friday", "next Saturday", "next Sunday",
};
#define N_DAY_WORDS (sizeof day_words / sizeof day_words[0])

#define MAX_COMPLETIONS 100 /* the most values one answer may carry (MCP) */

static int starts_with_ci(const char *s, struct view prefix)
{
    size_t i;
    for (i = 0; i < prefix.n; i++)
        if (!s[i] || lower((unsigned char)s[i]) != lower((unsigned char)prefix.p[i]))
            return 0;
    return 1;
}

static int completion_matches(const char *value, struct view typed)
{
    const char *slash = strchr(value, '/');
    return starts_with_ci(value, typed) || (slash && starts_with_ci(slash + 1, typed));
}

/* {"completion":{"values":[...],"total":N,"hasMore":...}}: begin, offer
 * each candidate word, end. */
static void completion_begin(struct resp *r, struct view id)
{
    result_begin(r, id);
    rs_str(r, "\"completion\":{\"values\":[");
}

static void completion_offer(struct resp *r, size_t *total, const char *word, struct view typed)
{
    if (!completion_matches(word, typed))
        return;
    if (*total < MAX_COMPLETIONS) {
        if (*total)
            rs_str(r, ",");
        rs_json_string(r, word, strlen(word));
    }
    (*total)++;
}

static void completion_end(struct resp *r, size_t total, int modern)
{
    rs_printf(r, "],\"total\":%lu,\"hasMore\":%s}", (unsigned long)total, total > MAX_COMPLETIONS ? "true" : "false");
    result_end(r, modern, 0);
}

static void render_completion(struct resp *r, struct view id, int modern, const char *const *words, size_t n, struct view typed)
{
    size_t i, total = 0;
    completion_begin(r, id);
    for (i = 0; i < n; i++)
        completion_offer(r, &total, words[i], typed);
    completion_end(r, total, modern);
}

/* What completion/complete's ref and argument name: a COMPLETE_ kind, or -1
 * with the error rendered. */
static int completion_kind(const struct rpc_ctx *c, const struct jdoc *d, int params, struct resp *r, struct view id)
{
    int ref = obj_get(d, params, "ref"), arg = obj_get(d, params, "argument");
    int type = obj_get(d, ref, "type"), name = obj_get(d, arg, "name");
    size_t i;
    if (ref < 0 || d->t[ref].type != JSMN_OBJECT || arg < 0 || d->t[arg].type != JSMN_OBJECT || name < 0 ||
        d->t[name].type != JSMN_STRING || d->t[obj_get(d, arg, "value")].type != JSMN_STRING) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: completion/complete needs params.ref and params.argument {name, value}", NULL);
        return -1;
    }
    if (tok_is_str(d, type, "ref/prompt")) {
        const struct cm_prompt *p = find_prompt(c, d, obj_get(d, ref, "name"));
        for (i = 0; p && i < MAX_PROMPT_ARGS && p->args[i].name; i++)
            if (view_eq(tok_view(d, name), p->args[i].name))
                return p->args[i].completes;
        rpc_error(r, id, E_INVALID_PARAMS, p ? "Invalid params: the prompt has no such argument" : "Invalid params: unknown prompt (prompts/list names them)", NULL);
        return -1;
    }
    if (tok_is_str(d, type, "ref/resource")) {
        int uri = obj_get(d, ref, "uri");
        for (i = 0; i < N_RESOURCES; i++)
            if (resource_is_template(&resources[i]) && resource_selected(c, &resources[i]) && tok_is_str(d, uri, resources[i].uri))
                return COMPLETE_NONE; /* ids: nothing the server can list without an API call per key stroke */
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: unknown resource template (resources/templates/list names them)", NULL);
        return -1;
    }
    rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params.ref.type must be ref/prompt or ref/resource", NULL);
    return -1;
}

/* Event type slugs come from one GET /event-types with the caller's token,
 * kept a minute per token (by its keyed fingerprint, never the token) in a
 * small table: the least recently fetched entry makes room. */
#ifndef CM_SLUG_CACHE_ENTRIES
#define CM_SLUG_CACHE_ENTRIES 8 /* callers whose slugs are kept at once */
#endif
#ifndef CM_SLUG_CACHE_BYTES
#define CM_SLUG_CACHE_BYTES 1024 /* one caller's slugs, NUL separated; more are left out */
#endif
#define SLUG_CACHE_MS 60000      /* a new event type shows up within a minute */

static struct slug_cache_entry {
    int used;
    unsigned char token_fp[16];
    uint64_t fetched_ms;
    size_t len;
    char slugs[CM_SLUG_CACHE_BYTES];
} slug_cache[CM_SLUG_CACHE_ENTRIES];

/* The entry for this fingerprint (fresh or not), else the one to reuse. */
static struct slug_cache_entry *slug_entry(const unsigned char fp[16], uint64_t now, int *fresh)
{
    size_t i, pick = 0;
    for (i = 0; i < CM_SLUG_CACHE_ENTRIES; i++)
        if (slug_cache[i].used && memcmp(slug_cache[i].token_fp, fp, 16) == 0) {
            *fresh = now >= slug_cache[i].fetched_ms && now - slug_cache[i].fetched_ms < SLUG_CACHE_MS;
            return &slug_cache[i];
        }
    *fresh = 0;
    for (i = 0; i < CM_SLUG_CACHE_ENTRIES; i++) {
        if (!slug_cache[i].used)
            return &slug_cache[i];
        if (slug_cache[i].fetched_ms < slug_cache[pick].fetched_ms)
            pick = i;
    }
    return &slug_cache[pick];
}

static void render_slug_completion(struct resp *r, struct view id, int modern, const struct slug_cache_entry *e, struct view typed)
{
    size_t at, total = 0;
    completion_begin(r, id);
    for (at = 0; at < e->len; at += strlen(e->slugs + at) + 1)
        completion_offer(r, &total, e->slugs + at, typed);
    completion_end(r, total, modern);
}

/* Copies the string value of every "slug" key of a valid JSON text into out
 * (NUL separated, no repeats, none with escapes); returns the bytes used. */
static size_t collect_slugs(const char *j, size_t n, char *out, size_t cap)
{
    size_t i = 0, len = 0;
    while (i < n) {
        size_t start, end, k;
        if (j[i++] != '"')
            continue;
        for (start = i; i < n && j[i] != '"'; i += j[i] == '\\' ? 2 : 1)
            ;
        end = i++;
        for (k = i; k < n && strchr(" \t\r\n", j[k]); k++)
            ;
        if (end - start != 4 || memcmp(j + start, "slug", 4) != 0 || k >= n || j[k] != ':')
            continue; /* a value, or another key */
        for (k++; k < n && strchr(" \t\r\n", j[k]); k++)
            ;
        if (k >= n || j[k] != '"')
            continue;
        for (start = end = k + 1; end < n && j[end] != '"' && j[end] != '\\'; end++)
            ;
        if (end < n && j[end] == '"' && end > start && len + (end - start) + 1 <= cap) {
            size_t s;
            for (s = 0; s < len && !(strlen(out + s) == end - start && memcmp(out + s, j + start, end - start) == 0);
                 s += strlen(out + s) + 1)
                ;
            if (s >= len) {
                memcpy(out + len, j + start, end - start);
                len += end - start;
                out[len++] = 0;
            }
        }
        i = k; /* the value is scanned as an ordinary string, from its quote */
    }
    return len;
}

/* An event type completion: from the cache, or D_PENDING for the one GET. */
static int start_slug_completion(struct rpc_ctx *c, struct view id, struct view typed, struct resp *r, struct pending_call *pc)
{
    unsigned char fp[16];
    int fresh;
    struct slug_cache_entry *e;
    if (!c->token || c->token_len >= sizeof bearer_buf || typed.n >= sizeof pc->res_id) {
        render_completion(r, id, c->era == ERA_MODERN, NULL, 0, typed); /* nothing to ask, or no slug that long */
        return D_REPLIED;
    }
    token_fingerprint(c->token, c->token_len, fp);
    e = slug_entry(fp, cm_port_now_ms(), &fresh);
    if (fresh) {
        render_slug_completion(r, id, c->era == ERA_MODERN, e, typed);
        return D_REPLIED;
    }
    pc->active = 1;
    pc->kind = PC_SLUGS;
    pc->tool = -1;
    pc->modern = c->era == ERA_MODERN;
    pc->handle = -1;
    pc->jdoc_args = -1;
    memcpy(pc->res_id, typed.p, typed.n);
    pc->res_id[typed.n] = 0;
    memcpy(pc->token_fp, fp, 16);
    pc->id = id;
    return D_PENDING;
}

static void render_slugs_result(struct resp *r, const struct pending_call *pc, const struct up_result *u)
{
    struct view id, typed;
    const char *why;
    size_t at;
    int fresh;
    struct slug_cache_entry *e;
    id = pc->id;
    if (u->status == 0 || u->status >= 300 || json_check(u->body, u->body_len, &why, &at) < 0) {
        char m[720], api[200]; /* m holds a transport error (up_result.error) and the API message */
        api_message(u->body, u->body_len, api, sizeof api);
        snprintf(m, sizeof m, "Could not list event types to complete: %s%s%s", u->status ? status_reason(u->status) : u->error,
                 api[0] ? ": " : "", api);
        rpc_error(r, id, E_SERVER, m, NULL);
        return;
    }
    e = slug_entry(pc->token_fp, cm_port_now_ms(), &fresh);
    e->used = 1;
    memcpy(e->token_fp, pc->token_fp, 16);
    e->fetched_ms = cm_port_now_ms();
    e->len = collect_slugs(u->body, u->body_len, e->slugs, sizeof e->slugs);
    typed.p = pc->res_id;
    typed.n = strlen(pc->res_id);
    render_slug_completion(r, id, pc->modern, e, typed);
}

static int serve_completion(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params");
    int kind = completion_kind(c, d, params, r, id);
    struct view typed;
    if (kind < 0)
        return D_REPLIED;
    typed = tok_view(d, obj_get(d, obj_get(d, params, "argument"), "value"));
    if (kind == COMPLETE_TIME_ZONE)
        render_completion(r, id, c->era == ERA_MODERN, time_zones, N_TIME_ZONES, typed);
    else if (kind == COMPLETE_DAY)
        render_completion(r, id, c->era == ERA_MODERN, day_words, N_DAY_WORDS, typed);
    else if (kind == COMPLETE_EVENT_TYPE)
        return start_slug_completion(c, id, typed, r, pc);
    else
        render_completion(r, id, c->era == ERA_MODERN, NULL, 0, typed);
    return D_REPLIED;
}

/* ---- Logging: one notifications/message per API call ---- */
/*
 * A client asks with logging/setLevel (session era, kept per session) or with
 * _meta io.modelcontextprotocol/logLevel on the request (2026-07-28). It then
 * gets, on that request's SSE answer (or stdout on stdio), one message per API
 * call: method, path without the query, status and milliseconds. Never the
 * token, never the query or body (they hold attendees' details).
 */
static const char *const log_levels[] = {"debug", "info", "notice", "warning",
                                         "error", "critical", "alert", "emergency"};
#define N_LOG_LEVELS (sizeof log_levels / sizeof log_levels[0])

/* 1 + the level's index for a level string token; -1 for anything else. */
static int log_level_of(const struct jdoc *d, int tok)
{
    size_t i;
    if (tok < 0 || d->t[tok].type != JSMN_STRING)
        return -1;
    for (i = 0; i < N_LOG_LEVELS; i++)
        if (view_eq(tok_view(d, tok), log_levels[i]))
            return (int)i + 1;
    return -1;
}

/* The level this request asked for: 0 none, 1.. a level, -1 malformed. */
static int request_log_level(const struct rpc_ctx *c, const struct jdoc *d, int msg)
{
    if (c->era == ERA_MODERN) {
        int lv = obj_get(d, obj_get(d, obj_get(d, msg, "params"), "_meta"), "io.modelcontextprotocol/logLevel");
        return lv < 0 ? 0 : log_level_of(d, lv);
    }
    return c->log_level ? *c->log_level : 0;
}

static int serve_set_level(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    struct view id = rpc_id(d, msg);
    int level = log_level_of(d, obj_get(d, obj_get(d, msg, "params"), "level"));
    (void)pc;
    if (level < 0) {
        rpc_error(r, id, E_INVALID_PARAMS,
                  "Invalid params: params.level must be one of debug, info, notice, warning, error, critical, alert, emergency", NULL);
        return D_REPLIED;
    }
    if (c->log_level)
        *c->log_level = (unsigned char)level;
    result_begin(r, id);
    result_end(r, 0, 0);
    return D_REPLIED;
}

/* Remembers what the log message will say, once the request went out. */
static void pending_log_start(struct pending_call *pc, const char *method)
{
    pc->start_ms = cm_port_now_ms();
    snprintf(pc->api_method, sizeof pc->api_method, "%s", method);
    snprintf(pc->api_path, sizeof pc->api_path, "%.*s", (int)strcspn(req_path, "?"), req_path);
}

/* The message for a finished API call, if the request asked for its level. */
static void render_api_log(struct resp *r, const struct pending_call *pc, const struct up_result *u)
{
    int level = u->status == 0 || u->status >= 500 ? 5 : u->status >= 400 ? 4 : 2; /* error, warning, info */
    if (!pc->log_level || level < pc->log_level)
        return;
    msg_begin(r);
    rs_printf(r, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"%s\","
                 "\"logger\":\"calid-api\",\"data\":{\"method\":\"%s\",\"path\":",
              log_levels[level - 1], pc->api_method);
    rs_json_string(r, pc->api_path, strlen(pc->api_path));
    rs_printf(r, ",\"status\":%d,\"ms\":%lu}}}", u->status, (unsigned long)(cm_port_now_ms() > pc->start_ms ? cm_port_now_ms() - pc->start_ms : 0));
    msg_end(r);
}

/* ---- A request waiting on the API: a tool call or a resource read ---- */

static int submit_pending(unsigned owner, struct pending_call *pc, const struct jdoc *d, const char *token,
                          size_t token_len, char *msg, size_t cap)
{
    int h;
    if (pc->kind == PC_SLUGS) {
        memcpy(bearer_buf, token, token_len);
        bearer_buf[token_len] = 0;
        snprintf(req_path, sizeof req_path, "/event-types?limit=100"); /* the most one page holds */
        h = up_submit(owner, "GET", req_path, bearer_buf, NULL, NULL, 0);
    } else if (pc->kind == PC_RESOURCE) {
        h = submit_resource_read(owner, pc, token, token_len, msg, cap);
    } else {
        h = submit_tool_call(owner, pc, d, token, token_len, msg, cap);
    }
    if (h == -2 && !msg[0])
        snprintf(msg, cap, "The API request does not fit CM_UPSTREAM_REQ_BYTES");
    if (h >= 0)
        pending_log_start(pc, pc->kind == PC_TOOL ? tools[pc->tool].method : "GET");
    return h;
}

/* The request could not even be built: a tool error for a tool call, a
 * JSON-RPC error for anything else. */
static void render_pending_failure(struct resp *r, const struct pending_call *pc, const char *msg)
{
    struct view id = pc->id;
    if (pc->kind == PC_TOOL)
        tool_text_result(r, id, pc->modern, 1, msg);
    else
        rpc_error(r, id, E_SERVER, msg, NULL);
}

static int render_pending_result(struct resp *r, const struct pending_call *pc, const struct up_result *u, int copy)
{
    if (r->sse) /* log messages travel only on an SSE answer */
        render_api_log(r, pc, u);
    if (pc->kind == PC_SLUGS)
        render_slugs_result(r, pc, u);
    else if (pc->kind == PC_RESOURCE)
        render_resource_result(r, pc, u, copy);
    else
        return render_tool_result(r, pc, u, copy);
    return u->status == 0 || u->status >= 300; /* whether the API request failed */
}

/* ---- A streamed API answer (larger than the API slot's buffer) ---- */
/*
 * The answer's text goes out as it arrives: stream_begin opens the message
 * (for a tool, the "Cal ID API error" line first when the status says so),
 * each window follows JSON-escaped, and stream_end closes it. A failure once
 * the answer has begun cannot become another answer: the text so far is
 * closed and a second text block says what happened and after how many
 * bytes, with isError true (for resources/read, a second contents entry,
 * text/plain). The message stays valid JSON either way.
 */
static void render_stream_begin(struct resp *r, const struct pending_call *pc, const struct up_result *u)
{
    if (r->sse) /* log messages travel only on an SSE answer */
        render_api_log(r, pc, u);
    result_begin(r, pc->id);
    if (pc->kind == PC_RESOURCE) {
        char uri[160];
        resource_uri(pc, uri, sizeof uri);
        rs_printf(r, "\"contents\":[{\"uri\":\"%s\",\"mimeType\":\"application/json\",\"text\":\"", uri);
        return;
    }
    rs_str(r, "\"content\":[{\"type\":\"text\",\"text\":\"");
    if (u->status >= 300) {
        char head[600];
        api_error_head(pc, u, head, sizeof head);
        rs_escaped_copy(r, head, strlen(head));
    }
}

/* Closes a streamed answer (after its last window); returns whether it is an error. */
static int render_stream_end(struct resp *r, const struct pending_call *pc, const struct up_result *u)
{
    char m[800];
    unsigned long long bytes = (unsigned long long)(u->offset + u->body_len);
    int failed = u->status == 0 || u->not_json;
    if (u->status == 0)
        snprintf(m, sizeof m, "The Cal ID API answer broke off after %llu bytes (the text above is all that came): %s",
                 bytes, u->error);
    else if (u->not_json)
        snprintf(m, sizeof m,
                 "The Cal ID API answered %d with content that is not JSON (Content-Type: %s; %s at byte %llu); "
                 "the text above is its first %llu bytes, and the rest was not read",
                 u->status, u->content_type[0] ? u->content_type : "none", u->not_json, (unsigned long long)u->not_json_at,
                 bytes);
    if (pc->kind == PC_RESOURCE) {
        if (failed) {
            char uri[160];
            resource_uri(pc, uri, sizeof uri);
            rs_printf(r, "\"},{\"uri\":\"%s\",\"mimeType\":\"text/plain\",\"text\":", uri);
            rs_json_string(r, m, strlen(m));
            rs_str(r, "}]");
        } else {
            rs_str(r, "\"}]");
            if (pc->modern) /* the user's own data: this authorization only */
                rs_printf(r, ",\"ttlMs\":%ld,\"cacheScope\":\"private\"", resources[pc->tool].ttl_ms);
        }
        result_end(r, pc->modern, 0);
        return failed;
    }
    if (failed) {
        rs_str(r, "\"},{\"type\":\"text\",\"text\":");
        rs_json_string(r, m, strlen(m));
        rs_str(r, "}],\"isError\":true");
    } else {
        rs_printf(r, "\"}],\"isError\":%s", u->status >= 300 ? "true" : "false");
    }
    result_end(r, pc->modern, 0);
    return failed || u->status >= 300;
}

/* Checks a modern message's _meta envelope. 0 ok, or renders the error. */
static int check_envelope(const struct jdoc *d, int msg, struct resp *r, struct rpc_ctx *c, struct view header_version)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params"), meta = obj_get(d, params, "_meta");
    int ver = obj_get(d, meta, "io.modelcontextprotocol/protocolVersion");
    int caps = obj_get(d, meta, "io.modelcontextprotocol/clientCapabilities");
    int info = obj_get(d, meta, "io.modelcontextprotocol/clientInfo");
    char supported[160], data[400];
    struct view v;
    if (header_version.p && ver >= 0 && d->t[ver].type == JSMN_STRING && !view_eq(header_version, "") &&
        !(tok_view(d, ver).n == header_version.n && memcmp(tok_view(d, ver).p, header_version.p, header_version.n) == 0)) {
        snprintf(data, sizeof data, "{\"mismatch\":{\"header\":\"MCP-Protocol-Version\",\"headerValue\":\"%.*s\",\"body\":\"%.*s\"}}",
                 (int)(header_version.n > 40 ? 40 : header_version.n), header_version.p,
                 (int)(tok_view(d, ver).n > 40 ? 40 : tok_view(d, ver).n), tok_view(d, ver).p);
        c->http_status = 400;
        rpc_error(r, id, E_HEADER_MISMATCH,
                  "Bad Request: the request headers and body disagree: MCP-Protocol-Version differs from params._meta protocolVersion",
                  json_check(data, strlen(data), &(const char *){NULL}, &(size_t){0}) == 0 ? data : NULL);
        return -1;
    }
    if (ver < 0 || d->t[ver].type != JSMN_STRING) {
        c->http_status = 400;
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params._meta[\"io.modelcontextprotocol/protocolVersion\"] must be a string",
                  "{\"envelope\":{\"key\":\"io.modelcontextprotocol/protocolVersion\",\"problem\":\"missing or not a string\"}}");
        return -1;
    }
    if (caps < 0 || d->t[caps].type != JSMN_OBJECT) {
        c->http_status = 400;
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params._meta[\"io.modelcontextprotocol/clientCapabilities\"] must be an object",
                  "{\"envelope\":{\"key\":\"io.modelcontextprotocol/clientCapabilities\",\"problem\":\"missing or not an object\"}}");
        return -1;
    }
    if (info >= 0 && d->t[info].type != JSMN_OBJECT) {
        c->http_status = 400;
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params._meta[\"io.modelcontextprotocol/clientInfo\"] must be an object",
                  "{\"envelope\":{\"key\":\"io.modelcontextprotocol/clientInfo\",\"problem\":\"not an object\"}}");
        return -1;
    }
    v = tok_view(d, ver);
    if (!view_eq(v, MODERN_VERSION)) {
        char m[120];
        supported_versions_json(supported, sizeof supported);
        /* every version served: 2026-07-28 per request, the others through initialize */
        snprintf(data, sizeof data, "{\"supported\":%s,\"requested\":%.*s}", supported,
                 (int)tok_raw(d, ver).n, tok_raw(d, ver).p);
        snprintf(m, sizeof m, "Unsupported protocol version: %.*s", (int)(v.n > 60 ? 60 : v.n), v.p);
        c->http_status = 400;
        rpc_error(r, id, E_UNSUPPORTED_VERSION, m, tok_raw(d, ver).n < 300 ? data : NULL);
        return -1;
    }
    return 0;
}

/* What both eras advertise (initialize and server/discover). */
#define SERVER_CAPABILITIES                                                                      \
    "{\"tools\":{\"listChanged\":false},\"prompts\":{\"listChanged\":false},"                          \
    "\"resources\":{\"listChanged\":false,\"subscribe\":false},\"logging\":{},\"completions\":{}}"

static void render_initialize(struct resp *r, const struct rpc_ctx *c, struct view id, const char *version)
{
    result_begin(r, id);
    rs_printf(r, "\"protocolVersion\":\"%s\",\"capabilities\":" SERVER_CAPABILITIES ","
                 "\"serverInfo\":{\"name\":\"" SERVER_NAME "\",\"title\":\"" SERVER_TITLE "\",\"version\":\"" CM_VERSION "\"},"
                 "\"instructions\":",
              version);
    render_instructions(r, c);
    result_end(r, 0, 0);
}

/* supportedVersions names every version served (2026-07-28 per request, the
 * others through initialize): the same list a -32022 error carries. */
static void render_discover(struct resp *r, const struct rpc_ctx *c, struct view id)
{
    char versions[160];
    supported_versions_json(versions, sizeof versions);
    result_begin(r, id);
    rs_printf(r, "\"supportedVersions\":%s,\"capabilities\":" SERVER_CAPABILITIES ",\"instructions\":", versions);
    render_instructions(r, c);
    result_end(r, 1, 1);
}

/* The selected tools, referenced where they lie (static: safe even in a
 * batch); neighbours in the catalog go out as one segment. */
static void render_tools_list(struct resp *r, const struct rpc_ctx *c, struct view id, int modern)
{
    size_t i;
    struct view run = {NULL, 0};
    int listed = 0;
    result_begin(r, id);
    rs_str(r, "\"tools\":[");
    if (all_tools_selected(c)) { /* the entries lie back to back (tool_list_check): one segment */
        struct view first = tool_json(0), last = tool_json(N_TOOLS - 1);
        run.p = first.p;
        run.n = (size_t)(last.p + last.n - first.p);
    }
    for (i = run.p ? N_TOOLS : 0; i < N_TOOLS; i++) {
        struct view t;
        if (!tool_selected(c, i))
            continue;
        t = tool_json(i);
        if (run.p && run.p + run.n + 1 == t.p) {
            run.n += 1 + t.n; /* the comma between them comes along */
            continue;
        }
        if (run.p) {
            if (listed++)
                rs_str(r, ",");
            rs_ext(r, run.p, run.n, 0);
        }
        run = t;
    }
    if (run.p) {
        if (listed)
            rs_str(r, ",");
        rs_ext(r, run.p, run.n, 0);
    }
    rs_str(r, "]");
    result_end(r, modern, 1);
}

/*
 * Dispatches one JSON-RPC message (the object token msg). Session checks and
 * header checks are done by the transport before this is called.
 */
/* The JSON-RPC 2.0 shape every message must have. D_REPLIED with the error
 * rendered, D_NO_REPLY for a response we never asked for, or -1: well formed. */
static int check_message_shape(const struct jdoc *d, int msg, struct resp *r)
{
    int method = obj_get(d, msg, "method"), id_tok = obj_get(d, msg, "id");
    struct view id = rpc_id(d, msg);
    int jv = obj_get(d, msg, "jsonrpc");
    if (d->t[msg].type != JSMN_OBJECT || !tok_is_str(d, jv, "2.0")) {
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: a JSON-RPC 2.0 message object with \"jsonrpc\":\"2.0\" is expected", NULL);
        return D_REPLIED;
    }
    if (method < 0) {
        if (obj_get(d, msg, "result") >= 0 || obj_get(d, msg, "error") >= 0)
            return D_NO_REPLY; /* a response to a request we never send: accepted, nothing to do */
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: no \"method\"", NULL);
        return D_REPLIED;
    }
    if (d->t[method].type != JSMN_STRING) {
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: \"method\" must be a string", NULL);
        return D_REPLIED;
    }
    if (id_tok >= 0 && d->t[id_tok].type != JSMN_STRING &&
        !(d->t[id_tok].type == JSMN_PRIMITIVE && strcmp(tok_type_name(d, id_tok), "integer") == 0)) {
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: \"id\" must be a string or an integer", NULL);
        return D_REPLIED;
    }
    {
        int params = obj_get(d, msg, "params");
        if (params >= 0 && d->t[params].type != JSMN_OBJECT && !tok_is_null(d, params)) {
            rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: \"params\" must be an object", NULL);
            return D_REPLIED;
        }
    }
    return -1;
}

/* Every method has one handler of this shape: D_REPLIED, D_NO_REPLY or
 * D_PENDING (the pending call is filled in and waits on the API). */
typedef int (*method_fn)(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc);

static int serve_tools_list(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)pc;
    render_tools_list(r, c, rpc_id(d, msg), c->era == ERA_MODERN);
    return D_REPLIED;
}

static int serve_prompts_list(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)pc;
    render_prompts_list(r, c, rpc_id(d, msg), c->era == ERA_MODERN);
    return D_REPLIED;
}

static int serve_resources_list(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)pc;
    render_resources_list(r, c, rpc_id(d, msg), 0);
    return D_REPLIED;
}

static int serve_templates_list(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)pc;
    render_resources_list(r, c, rpc_id(d, msg), 1);
    return D_REPLIED;
}

static int serve_discover(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)pc;
    render_discover(r, c, rpc_id(d, msg));
    return D_REPLIED;
}

static int serve_ping(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)c;
    (void)pc;
    result_begin(r, rpc_id(d, msg));
    result_end(r, 0, 0);
    return D_REPLIED;
}

/* Reached only from transports that handle initialize themselves. */
static int serve_late_initialize(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    (void)c;
    (void)pc;
    rpc_error(r, rpc_id(d, msg), E_INVALID_REQUEST, "Invalid Request: initialize must be the first message of a session", NULL);
    return D_REPLIED;
}

/* The methods, with the eras that have them. */
static const struct {
    const char *method;
    int eras; /* ERA_SESSION, ERA_MODERN or both */
    method_fn serve;
} methods[] = {
    {"tools/list", ERA_SESSION | ERA_MODERN, serve_tools_list},
    {"tools/call", ERA_SESSION | ERA_MODERN, start_tool_call},
    {"prompts/list", ERA_SESSION | ERA_MODERN, serve_prompts_list},
    {"prompts/get", ERA_SESSION | ERA_MODERN, serve_prompts_get},
    {"resources/list", ERA_SESSION | ERA_MODERN, serve_resources_list},
    {"resources/templates/list", ERA_SESSION | ERA_MODERN, serve_templates_list},
    {"resources/read", ERA_SESSION | ERA_MODERN, start_resource_read},
    {"completion/complete", ERA_SESSION | ERA_MODERN, serve_completion},
    {"server/discover", ERA_MODERN, serve_discover},
    {"logging/setLevel", ERA_SESSION, serve_set_level},
    {"ping", ERA_SESSION, serve_ping},
    {"initialize", ERA_SESSION, serve_late_initialize},
};
#define N_METHODS (sizeof methods / sizeof methods[0])

static int dispatch(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    int method = obj_get(d, msg, "method"), id_tok = obj_get(d, msg, "id");
    int modern = c->era == ERA_MODERN;
    struct view id = rpc_id(d, msg), m;
    int shape = check_message_shape(d, msg, r), level, other_era = 0;
    size_t i;
    char text[200];
    if (shape >= 0)
        return shape;
    m = tok_view(d, method);
    if (id_tok < 0) /* a notification: never answered */
        return D_NO_REPLY;
    level = request_log_level(c, d, msg);
    if (level < 0) {
        c->http_status = 400;
        rpc_error(r, id, E_INVALID_PARAMS,
                  "Invalid params: params._meta[\"io.modelcontextprotocol/logLevel\"] must be one of debug, info, notice, warning, error, critical, alert, emergency",
                  "{\"envelope\":{\"key\":\"io.modelcontextprotocol/logLevel\",\"problem\":\"not a log level\"}}");
        return D_REPLIED;
    }
    pc->log_level = level;
    for (i = 0; i < N_METHODS; i++) {
        if (!view_eq(m, methods[i].method))
            continue;
        if (methods[i].eras & c->era)
            return methods[i].serve(c, d, msg, r, pc);
        other_era = 1;
    }
    snprintf(text, sizeof text, "Method not found: %.*s%s", (int)(m.n > 80 ? 80 : m.n), m.p,
             modern && other_era ? " (not part of protocol 2026-07-28)" : "");
    if (modern)
        c->http_status = 404;
    rpc_error(r, id, E_METHOD_NOT_FOUND, text, NULL);
    return D_REPLIED;
}

/* Handles initialize in the session era: negotiates the version and opens a
 * session bound to the caller's token. */
static int handle_initialize(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, int64_t now_s)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params");
    int pv = obj_get(d, params, "protocolVersion"), caps = obj_get(d, params, "capabilities");
    int info = obj_get(d, params, "clientInfo");
    const char *version = LATEST_SESSION_VERSION;
    size_t i;
    int shape = check_message_shape(d, msg, r);
    if (shape >= 0)
        return shape; /* no session is opened for a malformed initialize */
    if (obj_get(d, msg, "id") < 0) {
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: initialize is a request and needs an id", NULL);
        return D_REPLIED;
    }
    if (pv < 0 || d->t[pv].type != JSMN_STRING) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: initialize needs params.protocolVersion, a string", NULL);
        return D_REPLIED;
    }
    if ((caps >= 0 && d->t[caps].type != JSMN_OBJECT) || (info >= 0 && d->t[info].type != JSMN_OBJECT)) {
        rpc_error(r, id, E_INVALID_PARAMS, "Invalid params: params.capabilities and params.clientInfo must be objects", NULL);
        return D_REPLIED;
    }
    for (i = 0; i < N_SESSION_VERSIONS; i++)
        if (view_eq(tok_view(d, pv), session_versions[i]))
            version = session_versions[i];
    if (c->new_session != -2) { /* -2: the transport keeps no sessions (stdio) */
        if (session_create(version, c->token ? c->token : "", c->token ? c->token_len : 0, now_s, c->new_session_id) < 0) {
            c->http_status = 500;
            rpc_error(r, id, E_INTERNAL, "Internal error: no random source for a session id", NULL);
            return D_REPLIED;
        }
        c->new_session = 1;
    }
    render_initialize(r, c, id, version);
    return D_REPLIED;
}

/* ===================================================================== */
/* 11. Connections and the event loop                                    */
/* ===================================================================== */

/* ---------------------------------------------------------------------- */
/* Counters for GET /metrics, and the access log                           */
/* ---------------------------------------------------------------------- */
/*
 * Every label value comes from a fixed table here or from the tool catalog,
 * never from what a client sent: an MCP method not in the table counts as
 * "other", a status not in the table as "other".
 */
static const char *const metric_methods[] = {
    "none", /* no MCP message: DELETE, OPTIONS, other endpoints, refusals before the body */
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/templates/list", "resources/read", "completion/complete", "server/discover", "logging/setLevel",
    "notifications/initialized", "notifications/cancelled", "batch", "other",
};
#define N_METRIC_METHODS (sizeof metric_methods / sizeof metric_methods[0])
#define METHOD_NONE 0
#define METHOD_OTHER ((int)N_METRIC_METHODS - 1)
#define METHOD_BATCH ((int)N_METRIC_METHODS - 2)
static const int metric_statuses[] = {200, 202, 204, 400, 401, 403, 404, 405, 406, 408, 413,
                                      415, 417, 431, 500, 501, 502, 503, 504, 505, 0 /* other */};
#define N_METRIC_STATUSES (sizeof metric_statuses / sizeof metric_statuses[0])
/* refused: answered here, no API request (bad or unknown call); busy: not
 * sent, every API connection stayed in use past CM_UPSTREAM_WAIT_MS */
enum { OUTCOME_OK, OUTCOME_API_ERROR, OUTCOME_TRANSPORT_ERROR, OUTCOME_REFUSED, OUTCOME_BUSY, N_OUTCOMES };
static const char *const outcome_names[N_OUTCOMES] = {"ok", "api_error", "transport_error", "refused", "busy"};
#define TOOL_UNKNOWN N_TOOLS /* the tool_calls row of a name not in the catalog */
static const unsigned api_ms_bounds[] = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};
#define N_API_BOUNDS (sizeof api_ms_bounds / sizeof api_ms_bounds[0])

static struct {
    unsigned long requests[N_METRIC_METHODS][N_METRIC_STATUSES];
    unsigned long tool_calls[N_TOOLS + 1][N_OUTCOMES]; /* by catalog index, then TOOL_UNKNOWN */
    unsigned long api_ms_buckets[N_API_BOUNDS + 1]; /* per bucket; made cumulative when shown */
    uint64_t api_ms_sum;
} metrics;

static int metric_method(struct view m)
{
    int i;
    for (i = 1; i < METHOD_OTHER; i++)
        if (view_eq(m, metric_methods[i]))
            return i;
    return METHOD_OTHER;
}

/* The label of a parsed body: its method, "batch", or "other". */
static int note_method(const struct jdoc *d)
{
    int m;
    if (d->t[0].type == JSMN_ARRAY)
        return METHOD_BATCH;
    m = obj_get(d, 0, "method");
    return d->t[0].type == JSMN_OBJECT && m >= 0 && d->t[m].type == JSMN_STRING ? metric_method(tok_view(d, m)) : METHOD_OTHER;
}

static int metric_status(int status)
{
    int i;
    for (i = 0; i + 1 < (int)N_METRIC_STATUSES; i++)
        if (metric_statuses[i] == status)
            break;
    return i;
}

/* What the access log and the counters learn about one request. */
struct req_note {
    const char *endpoint; /* the endpoints[] path served, or "-" */
    int method;           /* index into metric_methods */
    int tool;             /* catalog index of the last tool called, or -1 */
    int api_status;       /* the API's status for it, 0 transport failure, -1 no API call */
    uint64_t api_start_ms;
    uint64_t api_ms;
};

static void note_reset(struct req_note *n)
{
    n->endpoint = "-";
    n->method = METHOD_NONE;
    n->tool = -1;
    n->api_status = -1;
    n->api_start_ms = n->api_ms = 0;
}

/* An API request finished (is_error: the result is an error); tool calls
 * are counted by tool and outcome, every API request in the latency. */
static void note_api_done(struct req_note *n, const struct pending_call *pc, int status, int is_error)
{
    uint64_t ms = ms_since(cm_port_now_ms(), n->api_start_ms);
    size_t b = 0;
    n->api_status = status;
    n->api_ms = ms;
    if (pc->kind == PC_TOOL) {
        n->tool = pc->tool;
        metrics.tool_calls[pc->tool][status == 0 ? OUTCOME_TRANSPORT_ERROR : is_error ? OUTCOME_API_ERROR : OUTCOME_OK]++;
    }
    while (b < N_API_BOUNDS && ms > api_ms_bounds[b])
        b++;
    metrics.api_ms_buckets[b]++;
    metrics.api_ms_sum += ms;
}

/* A tools/call message (msg) answered without an API request: counted as
 * refused under its tool, or "unknown" for a name not in the catalog. */
static void note_tool_refused(const struct jdoc *d, int msg)
{
    char name[128];
    int t;
    if (!tok_is_str(d, obj_get(d, msg, "method"), "tools/call"))
        return;
    t = tok_unescape(d, obj_get(d, obj_get(d, msg, "params"), "name"), name, sizeof name) >= 0 ? find_tool(name) : -1;
    metrics.tool_calls[t >= 0 ? (size_t)t : TOOL_UNKNOWN][OUTCOME_REFUSED]++;
}

enum { C_FREE = 0, C_READ, C_WAIT_API, C_WRITE };
/* A streamed answer (on_upstream_done): between windows the connection
 * waits on the API again (C_WAIT_API); the last window ends the answer. */
enum { STREAM_NONE = 0, STREAM_MORE, STREAM_LAST };
#define OA_KEY_MAX 256 /* a Cal ID API key (OAuth sign-in, section 11b) */

#define IN_BYTES (CM_MAX_HEADER_BYTES + CM_MAX_BODY_BYTES) /* the largest request: one pool buffer */
#define STDIO_OWNER 0xffffffffu
#if CM_CONN_IN_BYTES > IN_BYTES || CM_CONN_IN_BYTES < 256 || CM_BODY_POOL < 1
#error "CM_CONN_IN_BYTES must be 256 .. CM_MAX_HEADER_BYTES + CM_MAX_BODY_BYTES, CM_BODY_POOL at least 1"
#endif

#if CM_MAX_CONNS_PER_ADDR < 1 || CM_MAX_CONNS_PER_ADDR > CM_MAX_CONNS
#error "CM_MAX_CONNS_PER_ADDR must be 1 .. CM_MAX_CONNS"
#endif

struct conn {
    int state;
    cm_sock_t sock;
    unsigned char peer[16];       /* the client's address (see cm_port_accept) */
    unsigned served;              /* answers finished on this connection */
    unsigned gen;                 /* bumps on reuse: stale API answers are recognised */
    uint64_t last_ms;             /* last progress */
    uint64_t req_start_ms;        /* first byte of the current request */
    /*
     * The request bytes: in points at own_in, or at a pool buffer lent while
     * a request larger than own_in arrives, waits on the API and is answered.
     */
    char own_in[CM_CONN_IN_BYTES];
    char *in;
    size_t in_cap;
    int pool_buf;                 /* index of the lent pool buffer, or -1 */
    int pool_wait;                /* own_in is full and every pool buffer is lent: not read until one is free */
    int pool_wake;                /* got a pool buffer while waiting: read on at the next loop step */
    size_t in_len, scanned;
    struct http_req req;
    int head_done, sent_continue;
    size_t req_total;             /* bytes of in[] the current request occupies */
    char *body;
    size_t body_len;
    int keep_alive, close_after;
    int head_only;                /* HEAD: headers with Content-Length, no body */
    int parse_pending;            /* pipelined bytes wait in in[] to be parsed */
    /* the request being served */
    struct rpc_ctx ctx;
    struct pending_call pc;
    uint64_t queued_ms;           /* (pc.handle == PC_IN_LINE) since when the call waits for an API slot */
    int batch_pos, batch_len, batch_replies; /* 2025-03-26 batches */
    int want_sse;
    char origin_ok[160];          /* Origin to echo for CORS, "" for none */
    /* the answer */
    char hdr[CM_OAUTH ? 2048 : 768]; /* room for a sign-in redirect's Location */
    size_t hdr_len, hdr_sent;
    struct resp resp;
    char out[CM_OUT_BYTES];
    int seg_i;
    size_t seg_off;
    char stage[STAGE_BYTES];      /* fallback when out[] has little room left */
    char *stage_p;                /* where escaped bytes are staged: the free tail of out[] */
    size_t stage_cap, stage_len, stage_sent;
    int held_handle;              /* upstream answer referenced by the answer, or -1 */
    unsigned char stream;         /* STREAM_*: the answer streams an API answer larger than its slot's buffer */
    struct req_note note;         /* for the access log and /metrics */
    int oauth_wait;               /* the API call in flight checks a key for the sign-in page */
    char oauth_key[OA_KEY_MAX + 1]; /* the Cal ID key opened from this request's access token */
    struct session_memo memo;     /* the session this connection last proved (section 9) */
};

static struct conn conns[CM_MAX_CONNS];

/*
 * Requests larger than a connection's own buffer borrow one of CM_BODY_POOL
 * buffers of IN_BYTES, so memory does not grow with CM_MAX_CONNS x
 * CM_MAX_BODY_BYTES. A connection that needs one while all are lent stops
 * reading (TCP holds the client back) until one is given back, oldest request
 * first; its request timeout still runs. The stdio transport has no HTTP
 * connections: its line and answer buffers use the same memory.
 */
static union {
    char buf[CM_BODY_POOL][IN_BYTES];
    struct {
        char line[CM_MAX_BODY_BYTES + 2];
        char out[CM_STDIO_OUT_BYTES];
    } stdio;
} big;
static unsigned char pool_lent[CM_BODY_POOL];

static void conn_use_own_buffer(struct conn *c)
{
    c->in = c->own_in;
    c->in_cap = sizeof c->own_in;
    c->pool_buf = -1;
    c->pool_wait = 0;
    c->pool_wake = 0;
}

/* Moves c's bytes into a free pool buffer. 0, or -1 when all are lent. */
static int pool_take(struct conn *c)
{
    int i;
    for (i = 0; i < CM_BODY_POOL; i++)
        if (!pool_lent[i]) {
            pool_lent[i] = 1;
            memcpy(big.buf[i], c->in, c->in_len);
            c->in = big.buf[i];
            c->in_cap = sizeof big.buf[i];
            c->pool_buf = i;
            c->pool_wait = 0;
            if (c->head_done) /* the head's views must point into the new buffer */
                (void)http_parse_head(c->in, c->in_len, 0, CM_MAX_HEADER_BYTES, &c->req);
            return 0;
        }
    return -1;
}

/* A buffer came free: the connection that has waited longest gets it. */
static void pool_hand_out(void)
{
    struct conn *oldest = NULL;
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].state != C_FREE && conns[i].pool_wait && (!oldest || conns[i].req_start_ms < oldest->req_start_ms))
            oldest = &conns[i];
    if (oldest && pool_take(oldest) == 0) {
        oldest->pool_wake = 1; /* what waits may sit in a TLS engine, where no poll sees it */
        cm_logf(CM_LOG_DEBUG, "a waiting request got a pool buffer");
    }
}

/* Gives c's pool buffer back; what is left in it (pipelined bytes) moves
 * home, unless it does not fit there (then c keeps the buffer) or drop. */
static void pool_give_back(struct conn *c, int drop)
{
    if (c->pool_buf < 0)
        return;
    if (!drop && c->in_len > sizeof c->own_in)
        return;
    if (!drop)
        memcpy(c->own_in, c->in, c->in_len);
    pool_lent[c->pool_buf] = 0;
    conn_use_own_buffer(c);
    pool_hand_out();
}

/* c's buffer is full and its request is not whole: its own buffer moves
 * into a pool buffer, or c waits for one. (A full pool buffer means the
 * request is over the limits: the callers answer 413 or 431.) */
static void conn_need_room(struct conn *c)
{
    if (c->in_len < c->in_cap || c->in_cap == IN_BYTES)
        return;
    if (pool_take(c) != 0 && !c->pool_wait) {
        c->pool_wait = 1;
        cm_logf(CM_LOG_DEBUG, "a request larger than %u bytes waits for a pool buffer (CM_BODY_POOL %d)",
                (unsigned)CM_CONN_IN_BYTES, CM_BODY_POOL);
    }
}

/* Milliseconds from since to now; 0 if since is later (stamps taken after
 * now was read must not wrap around into a huge age). */
static uint64_t ms_since(uint64_t now, uint64_t since) { return now > since ? now - since : 0; }
static jsmntok_t toks[CM_JSON_TOKENS];
static unsigned long stat_requests, stat_refused_busy, stat_refused_addr, stat_evicted;

/* ======================================================================
 * 11a. HTTPS on the listener: the BearSSL server engine under the
 *      connections
 * ====================================================================== */
/*
 * Shape
 *   - With --tls-cert/--tls-key every accepted connection takes one of
 *     CM_TLS_CONNS engine slots: a server context and a half-duplex I/O
 *     buffer. The connection code below reads and writes through
 *     conn_recv()/conn_sendv(), which go straight to the socket without TLS
 *     and through the engine with it; the HTTP parser and the answer code
 *     are the same either way.
 *   - Half-duplex buffer (BR_SSL_BUFSIZE_MONO, 16,709 B instead of 33,178 B
 *     for both directions): HTTP/1.1 alternates request and answer. The
 *     engine cannot send while decrypted input waits in its buffer, so before
 *     writing, that input (pipelined requests) is moved into the connection's
 *     in[]; a client that pipelines more than in[] holds is closed. The buffer
 *     still takes a full 16 KiB record, so clients need no max-fragment
 *     negotiation (which few of them offer).
 *   - TLS 1.2 only (BearSSL's highest), ECDHE key exchange with AES-GCM or
 *     ChaCha20-Poly1305 (forward secret, authenticated encryption), no
 *     renegotiation: tls_profile() of section 8, the server's order winning;
 *     the key signs (RSA PKCS#1 v1.5 or ECDSA), it never decrypts. Sessions
 *     resume from one LRU cache of CM_TLS_SESSIONS entries shared by all
 *     connections.
 *   - Non-blocking: tls_pump() moves records while the socket takes them,
 *     outgoing records first. A handshake that fails (garbage, an old
 *     protocol version, no common cipher suite) ends the connection at once;
 *     one not done within CM_TLS_HANDSHAKE_MS ends it then. Plain HTTP sent
 *     to the HTTPS port gets a plain-text 400 that says to use https://.
 */
#if CM_TLS_CONNS > 0

struct tls_conn {
    br_ssl_server_context sc;            /* 4,128 B with BearSSL 0.6 */
    unsigned char iobuf[BR_SSL_BUFSIZE_MONO];
    uint64_t started_ms;                 /* accept time: the handshake ends by + CM_TLS_HANDSHAKE_MS */
    unsigned char in_use;
    unsigned char ready;                 /* handshake done */
    unsigned char got_bytes;             /* the first bytes were looked at (plain HTTP?) */
    unsigned char resume_len;            /* session id found in the cache for this handshake */
    unsigned char resume_id[32];
    unsigned char failed;                /* its failed handshake is counted */
};

/* Why a handshake failed, for /metrics: a fixed set, so an operator can alert
 * on each (old clients, clients that distrust the certificate, scanners). */
enum { TLS_FAIL_VERSION, TLS_FAIL_CIPHER, TLS_FAIL_CERTIFICATE, TLS_FAIL_PROTOCOL, TLS_FAIL_PLAIN_HTTP, TLS_FAIL_TIMEOUT,
       TLS_FAIL_CLOSED, N_TLS_FAILS };
static const char *const tls_fail_names[N_TLS_FAILS] = {"version", "cipher", "certificate", "protocol", "plain_http",
                                                        "timeout", "closed"};

#define TLS_SESSION_ENTRY 100 /* bytes per entry in BearSSL's LRU cache */

static struct {
    int on;                                            /* the listener speaks TLS */
    int key_type;                                      /* BR_KEYTYPE_RSA or BR_KEYTYPE_EC */
    size_t n_chain, der_used;
    br_x509_certificate chain[CM_TLS_CHAIN_CERTS];
    unsigned char der[CM_TLS_CHAIN_BYTES];             /* the chain's certificates, DER */
    br_skey_decoder_context key;                       /* the private key, decoded in place */
    const br_ssl_session_cache_class *cache_vtable;    /* tls_cache_class: the LRU below, noting hits */
    br_ssl_session_cache_lru lru;
    unsigned char cache_store[CM_TLS_SESSIONS * TLS_SESSION_ENTRY];
    struct tls_conn conns[CM_TLS_CONNS];
    unsigned short of_conn[CM_MAX_CONNS];              /* per connection: 0 plain, else 1 + its engine slot */
    unsigned long full, resumed, failed[N_TLS_FAILS];  /* handshakes, for /metrics and the debug log */
} tls;

static size_t tls_static_bytes(void) { return sizeof tls; }
#define TLS_CONN_BYTES sizeof(struct tls_conn) /* for --version */
static int tls_on(void) { return tls.on; }

/* ---- certificate chain and key, from PEM ---- */
struct tls_pem_load {
    br_pem_decoder_context pem;
    int want_key;       /* reading the key file (else the certificate file) */
    int in_obj;         /* inside an object whose DER is taken */
    int overflow;       /* the chain outgrew der[] */
    int n_keys, encrypted;
    size_t obj_start;
};

static void tls_der_to_chain(void *ctx, const void *p, size_t n)
{
    struct tls_pem_load *l = ctx;
    if (l->overflow || n > sizeof tls.der - tls.der_used) {
        l->overflow = 1;
        return;
    }
    memcpy(tls.der + tls.der_used, p, n);
    tls.der_used += n;
}

static void tls_der_to_key(void *ctx, const void *p, size_t n)
{
    (void)ctx;
    br_skey_decoder_push(&tls.key, p, n);
}

static void tls_pem_begin(struct tls_pem_load *l)
{
    const char *name = br_pem_decoder_name(&l->pem);
    int is_key = strcmp(name, "PRIVATE KEY") == 0 || strcmp(name, "RSA PRIVATE KEY") == 0 ||
                 strcmp(name, "EC PRIVATE KEY") == 0;
    l->in_obj = 0;
    if (l->want_key && strcmp(name, "ENCRYPTED PRIVATE KEY") == 0)
        l->encrypted = 1;
    if (l->want_key && is_key && l->n_keys++ == 0) {
        br_skey_decoder_init(&tls.key);
        br_pem_decoder_setdest(&l->pem, tls_der_to_key, l);
        l->in_obj = 1;
    } else if (!l->want_key && (strcmp(name, "CERTIFICATE") == 0 || strcmp(name, "X509 CERTIFICATE") == 0)) {
        l->obj_start = tls.der_used;
        br_pem_decoder_setdest(&l->pem, tls_der_to_chain, l);
        l->in_obj = 1;
    } else {
        br_pem_decoder_setdest(&l->pem, NULL, NULL); /* other objects (EC PARAMETERS...) are skipped */
    }
}

/* A taken certificate ended: it joins the chain. 0, or -1 with err. */
static int tls_pem_end(struct tls_pem_load *l, const char *path, char *err, size_t errlen)
{
    if (!l->in_obj || l->want_key) {
        l->in_obj = 0;
        return 0;
    }
    l->in_obj = 0;
    if (l->overflow) {
        snprintf(err, errlen, "the certificates in %s need more than %d bytes (CM_TLS_CHAIN_BYTES)", path, CM_TLS_CHAIN_BYTES);
        return -1;
    }
    if (tls.n_chain == CM_TLS_CHAIN_CERTS) {
        snprintf(err, errlen, "%s holds more than %d certificates (CM_TLS_CHAIN_CERTS)", path, CM_TLS_CHAIN_CERTS);
        return -1;
    }
    tls.chain[tls.n_chain].data = tls.der + l->obj_start;
    tls.chain[tls.n_chain].data_len = tls.der_used - l->obj_start;
    tls.n_chain++;
    return 0;
}

/* Feeds a PEM file to the decoder: certificates to the chain, or the first
 * private key to the key decoder. 0, or -1 with err. */
static int tls_read_pem(const char *path, int want_key, struct tls_pem_load *l, char *err, size_t errlen)
{
    unsigned char buf[1024];
    int eof = 0, rc = 0;
    FILE *f = fopen(path, "rb");
    memset(l, 0, sizeof *l);
    l->want_key = want_key;
    if (!f) {
        snprintf(err, errlen, "cannot open the TLS %s %s: %s", want_key ? "key" : "certificate", path, strerror(errno));
        return -1;
    }
    br_pem_decoder_init(&l->pem);
    while (!eof && rc == 0) {
        size_t n = fread(buf, 1, sizeof buf, f), off = 0;
        if (n == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "cannot read %s", path);
                rc = -1;
                break;
            }
            buf[0] = '\n'; /* lets the decoder see an END line without a newline */
            n = 1;
            eof = 1;
        }
        while (off < n && rc == 0) {
            off += br_pem_decoder_push(&l->pem, buf + off, n - off);
            switch (br_pem_decoder_event(&l->pem)) {
            case BR_PEM_BEGIN_OBJ:
                tls_pem_begin(l);
                break;
            case BR_PEM_END_OBJ:
                rc = tls_pem_end(l, path, err, errlen);
                break;
            case BR_PEM_ERROR:
                snprintf(err, errlen, "%s is not valid PEM", path);
                rc = -1;
                break;
            default:
                break;
            }
        }
    }
    fclose(f);
    memset(buf, 0, sizeof buf); /* it held key bytes */
    return rc;
}

static void tls_dn_ignore(void *ctx, const void *p, size_t n)
{
    (void)ctx;
    (void)p;
    (void)n;
}

/* Big-endian integers equal, leading zeros aside? */
static int tls_int_eq(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    while (an && !*a) {
        a++;
        an--;
    }
    while (bn && !*b) {
        b++;
        bn--;
    }
    return an == bn && memcmp(a, b, an) == 0;
}

/* The key must belong to the leaf (the first certificate). 0, or -1 with err. */
static int tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    br_x509_decoder_context xd; /* ~1.2 KB of stack, at start-up only */
    const br_x509_pkey *pk;
    unsigned char mine[512];
    int match = 0;
    br_x509_decoder_init(&xd, tls_dn_ignore, NULL);
    br_x509_decoder_push(&xd, tls.chain[0].data, tls.chain[0].data_len);
    pk = br_x509_decoder_get_pkey(&xd);
    if (!pk || br_x509_decoder_last_error(&xd)) {
        snprintf(err, errlen, "the first certificate in %s could not be decoded (BearSSL error %d)", cert,
                 br_x509_decoder_last_error(&xd));
        return -1;
    }
    if (pk->key_type == BR_KEYTYPE_RSA && tls.key_type == BR_KEYTYPE_RSA) {
        const br_rsa_private_key *sk = br_skey_decoder_get_rsa(&tls.key);
        br_rsa_compute_modulus modulus = br_rsa_compute_modulus_get_default();
        size_t n = modulus(NULL, sk);
        match = n > 0 && n <= sizeof mine && modulus(mine, sk) == n && tls_int_eq(mine, n, pk->key.rsa.n, pk->key.rsa.nlen);
    } else if (pk->key_type == BR_KEYTYPE_EC && tls.key_type == BR_KEYTYPE_EC) {
        const br_ec_private_key *sk = br_skey_decoder_get_ec(&tls.key);
        br_ec_public_key pub;
        size_t n = br_ec_compute_pub(br_ec_get_default(), &pub, mine, sk);
        match = n > 0 && sk->curve == pk->key.ec.curve && n == pk->key.ec.qlen && memcmp(mine, pk->key.ec.q, n) == 0;
    }
    memset(mine, 0, sizeof mine);
    if (!match) {
        snprintf(err, errlen, "the private key in %s does not belong to the first certificate in %s (the leaf must come first)",
                 key, cert);
        return -1;
    }
    return 0;
}

static int tls_load(const char *cert, const char *key, char *err, size_t errlen)
{
    struct tls_pem_load l; /* ~0.7 KB of stack, at start-up only */
    tls.n_chain = tls.der_used = 0;
    if (tls_read_pem(cert, 0, &l, err, errlen) < 0)
        return -1;
    if (tls.n_chain == 0) {
        snprintf(err, errlen, "no certificate (-----BEGIN CERTIFICATE-----) in %s", cert);
        return -1;
    }
    if (tls_read_pem(key, 1, &l, err, errlen) < 0)
        return -1;
    if (l.n_keys == 0) {
        if (l.encrypted)
            snprintf(err, errlen, "the private key in %s is encrypted: give an unencrypted copy (openssl pkey -in %s -out plain.key)",
                     key, key);
        else
            snprintf(err, errlen, "no private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) in %s", key);
        return -1;
    }
    tls.key_type = br_skey_decoder_key_type(&tls.key);
    if (br_skey_decoder_last_error(&tls.key) || (tls.key_type != BR_KEYTYPE_RSA && tls.key_type != BR_KEYTYPE_EC)) {
        snprintf(err, errlen, "the private key in %s could not be decoded (BearSSL error %d; RSA and EC keys are supported)", key,
                 br_skey_decoder_last_error(&tls.key));
        return -1;
    }
    return tls_check_pair(cert, key, err, errlen);
}

/* ---- session cache: BearSSL's LRU, noting which handshakes resume ---- */
static void tls_cache_save(const br_ssl_session_cache_class **ctx, br_ssl_server_context *sc, const br_ssl_session_parameters *p)
{
    (void)ctx;
    tls.lru.vtable->save(&tls.lru.vtable, sc, p);
}

static int tls_cache_load(const br_ssl_session_cache_class **ctx, br_ssl_server_context *sc, br_ssl_session_parameters *p)
{
    struct tls_conn *tc = (struct tls_conn *)(void *)sc; /* sc is the first member */
    int found = tls.lru.vtable->load(&tls.lru.vtable, sc, p);
    (void)ctx;
    if (found) {
        tc->resume_len = p->session_id_len;
        memcpy(tc->resume_id, p->session_id, sizeof tc->resume_id);
    }
    return found;
}

static const br_ssl_session_cache_class tls_cache_class = {sizeof(const br_ssl_session_cache_class *), tls_cache_save,
                                                           tls_cache_load};

/* Loads the certificate and key and readies every engine slot. */
static int tls_start(const char *cert, const char *key, char *err, size_t errlen)
{
    int t;
    tls.on = 0;
    if (!cert || !key) {
        snprintf(err, errlen, "HTTPS needs both --tls-cert and --tls-key (CALID_MCP_TLS_CERT, CALID_MCP_TLS_KEY)");
        return -1;
    }
    if (tls_load(cert, key, err, errlen) < 0)
        return -1;
    br_ssl_session_cache_lru_init(&tls.lru, tls.cache_store, sizeof tls.cache_store);
    tls.cache_vtable = &tls_cache_class;
    for (t = 0; t < CM_TLS_CONNS; t++) {
        struct tls_conn *tc = &tls.conns[t];
        br_ssl_engine_context *eng = &tc->sc.eng;
        unsigned char seed[32];
        br_ssl_server_zero(&tc->sc);
        tls_profile(eng);
        br_ssl_engine_add_flags(eng, BR_OPT_ENFORCE_SERVER_PREFERENCES);
        if (tls.key_type == BR_KEYTYPE_RSA)
            br_ssl_server_set_single_rsa(&tc->sc, tls.chain, tls.n_chain, br_skey_decoder_get_rsa(&tls.key),
                                         BR_KEYTYPE_SIGN, br_rsa_private_get_default(), br_rsa_pkcs1_sign_get_default());
        else
            br_ssl_server_set_single_ec(&tc->sc, tls.chain, tls.n_chain, br_skey_decoder_get_ec(&tls.key), BR_KEYTYPE_SIGN,
                                        BR_KEYTYPE_EC, br_ec_get_default(), br_ecdsa_sign_asn1_get_default());
        br_ssl_engine_set_buffer(eng, tc->iobuf, sizeof tc->iobuf, 0);
        br_ssl_server_set_cache(&tc->sc, &tls.cache_vtable);
        if (cm_port_random(seed, sizeof seed) == 0)
            br_ssl_engine_inject_entropy(eng, seed, sizeof seed);
        memset(seed, 0, sizeof seed);
        tc->in_use = 0;
    }
    tls.on = 1;
    return 0;
}

/* Forgets the key and every session (cm_stop). */
static void tls_stop(void)
{
    tls.on = 0;
    memset(&tls.key, 0, sizeof tls.key);
    memset(tls.cache_store, 0, sizeof tls.cache_store);
    memset(tls.conns, 0, sizeof tls.conns);
}

/* ---- one connection ---- */

/* A free engine slot, reset for a new client; -1 when all are taken. */
static int tls_attach(void)
{
    int t;
    for (t = 0; t < CM_TLS_CONNS; t++) {
        struct tls_conn *tc = &tls.conns[t];
        if (tc->in_use)
            continue;
        if (!br_ssl_server_reset(&tc->sc))
            return -1;
        tc->in_use = 1;
        tc->ready = tc->got_bytes = tc->resume_len = tc->failed = 0;
        tc->started_ms = cm_port_now_ms();
        return t;
    }
    return -1;
}

/* Counts a connection's failed handshake once, under its reason. */
static void tls_count_failure(struct tls_conn *tc, int reason)
{
    if (!tc->failed)
        tls.failed[reason]++;
    tc->failed = 1;
}

static unsigned long tls_failed_total(void)
{
    unsigned long n = 0;
    int i;
    for (i = 0; i < N_TLS_FAILS; i++)
        n += tls.failed[i];
    return n;
}

static void tls_log_failure(struct tls_conn *tc)
{
    int e = br_ssl_engine_last_error(&tc->sc.eng);
    int alert = e >= BR_ERR_SEND_FATAL_ALERT   ? e - BR_ERR_SEND_FATAL_ALERT
                : e >= BR_ERR_RECV_FATAL_ALERT ? e - BR_ERR_RECV_FATAL_ALERT
                                               : -1;
    const char *why =
        alert == 70                                  ? "the client offers no TLS 1.2 (an old protocol version)"
        : alert == 40 || e == BR_ERR_BAD_CIPHER_SUITE ? "no cipher suite in common (ECDHE with AES-GCM or ChaCha20 is needed)"
        : e == BR_ERR_UNSUPPORTED_VERSION            ? "not TLS 1.x records (garbage, or SSL 2)"
        : e == BR_ERR_BAD_VERSION || e == BR_ERR_BAD_LENGTH || e == BR_ERR_UNKNOWN_TYPE || e == BR_ERR_TOO_LARGE
            ? "the client's bytes are not TLS"
        : e == BR_ERR_UNEXPECTED ? "the client sent an unexpected message"
                                 : "an engine error";
    if (tc->failed)
        return; /* told once */
    tls_count_failure(tc, alert == 70                                     ? TLS_FAIL_VERSION
                          : alert == 40 || e == BR_ERR_BAD_CIPHER_SUITE   ? TLS_FAIL_CIPHER
                          : e >= BR_ERR_RECV_FATAL_ALERT && e < BR_ERR_SEND_FATAL_ALERT && alert >= 42 && alert <= 49
                              ? TLS_FAIL_CERTIFICATE /* the client refuses the certificate: bad_certificate .. access_denied */
                              : TLS_FAIL_PROTOCOL);
    if (alert >= 0)
        cm_logf(CM_LOG_DEBUG, "TLS: handshake failed: %s alert %d (%s)%s%s", e >= BR_ERR_SEND_FATAL_ALERT ? "sent" : "got", alert,
                up_alert_name(alert), alert == 70 || alert == 40 ? ": " : "", alert == 70 || alert == 40 ? why : "");
    else if (e)
        cm_logf(CM_LOG_DEBUG, "TLS: handshake failed: %s (BearSSL error %d)", why, e);
}

static void tls_handshake_done(struct tls_conn *tc)
{
    br_ssl_session_parameters sp;
    int resumed;
    br_ssl_engine_get_session_parameters(&tc->sc.eng, &sp);
    resumed = tc->resume_len && sp.session_id_len == tc->resume_len && memcmp(sp.session_id, tc->resume_id, tc->resume_len) == 0;
    memset(&sp, 0, sizeof sp); /* the master secret */
    tc->ready = 1;
    if (resumed)
        tls.resumed++;
    else
        tls.full++;
    cm_logf(CM_LOG_DEBUG, "TLS: %s handshake in %lu ms (%lu full, %lu resumed, %lu failed so far)", resumed ? "resumed" : "full",
            (unsigned long)ms_since(cm_port_now_ms(), tc->started_ms), tls.full, tls.resumed, tls_failed_total());
}

/* The first bytes are a plain HTTP request: say so in plain HTTP. */
static void tls_refuse_plain_http(cm_sock_t s)
{
    static const char body[] = "{\"error\":\"this port speaks HTTPS: use https:// in the URL\"}";
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     "Content-Length: %u\r\n\r\n%s",
                     (unsigned)(sizeof body - 1), body);
    (void)cm_port_send(s, msg, (size_t)n); /* one small write: best effort, then close */
}

/*
 * Moves records between the socket and the engine until the socket would
 * block: outgoing records first; incoming ones only when want_input and no
 * decrypted input is waiting. 0 (still open), or -1: the connection is over
 * (closed, failed, the peer left).
 */
static int tls_pump(int t, cm_sock_t s, int want_input)
{
    struct tls_conn *tc = &tls.conns[t];
    br_ssl_engine_context *eng = &tc->sc.eng;
    for (;;) {
        unsigned st = br_ssl_engine_current_state(eng);
        unsigned char *buf;
        size_t len;
        long n;
        if (st & BR_SSL_SENDREC) {
            buf = br_ssl_engine_sendrec_buf(eng, &len);
            n = cm_port_send(s, buf, len);
            if (n == CM_PORT_AGAIN)
                return 0;
            if (n <= 0)
                return -1;
            br_ssl_engine_sendrec_ack(eng, (size_t)n);
            continue;
        }
        if (st == 0 || (st & BR_SSL_CLOSED)) {
            if (!tc->ready)
                tls_log_failure(tc);
            return -1;
        }
        if (!tc->ready && (st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP)))
            tls_handshake_done(tc);
        if (!want_input || (st & BR_SSL_RECVAPP) || !(st & BR_SSL_RECVREC))
            return 0;
        buf = br_ssl_engine_recvrec_buf(eng, &len);
        n = cm_port_recv(s, buf, len);
        if (n == CM_PORT_AGAIN)
            return 0;
        if (n <= 0)
            return -1;
        if (!tc->got_bytes) {
            tc->got_bytes = 1;
            if (buf[0] >= 'A' && buf[0] <= 'Z') { /* "GET ", "POST "...: no TLS record starts so */
                tls_refuse_plain_http(s);
                tls_count_failure(tc, TLS_FAIL_PLAIN_HTTP);
                cm_logf(CM_LOG_DEBUG, "TLS: a plain HTTP request came to the HTTPS port");
                return -1;
            }
        }
        br_ssl_engine_recvrec_ack(eng, (size_t)n);
    }
}

/* Like cm_port_recv, for the decrypted bytes. */
static long tls_recv(int t, cm_sock_t s, void *out, size_t cap)
{
    br_ssl_engine_context *eng = &tls.conns[t].sc.eng;
    unsigned char *buf;
    size_t len;
    if (tls_pump(t, s, 1) < 0)
        return br_ssl_engine_last_error(eng) ? -1 : 0;
    buf = br_ssl_engine_recvapp_buf(eng, &len);
    if (!buf)
        return CM_PORT_AGAIN;
    if (len > cap)
        len = cap;
    memcpy(out, buf, len);
    br_ssl_engine_recvapp_ack(eng, len);
    return (long)len;
}

/* Like cm_port_sendv: the bytes the engine took (it encrypts and sends them
 * as the socket allows), CM_PORT_AGAIN when it took none, or -1. */
static long tls_sendv(int t, cm_sock_t s, const struct cm_iovec *iov, unsigned n)
{
    br_ssl_engine_context *eng = &tls.conns[t].sc.eng;
    size_t done = 0;
    unsigned i;
    if (tls_pump(t, s, 0) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        size_t off = 0;
        while (off < iov[i].n) {
            size_t room, k;
            unsigned char *buf = br_ssl_engine_sendapp_buf(eng, &room);
            if (!buf)
                goto out; /* the engine's records must go out first */
            k = iov[i].n - off < room ? iov[i].n - off : room;
            memcpy(buf, (const unsigned char *)iov[i].p + off, k);
            br_ssl_engine_sendapp_ack(eng, k); /* a full buffer becomes a record */
            off += k;
            done += k;
            if (tls_pump(t, s, 0) < 0)
                return -1;
        }
    }
out:
    br_ssl_engine_flush(eng, 0);
    if (tls_pump(t, s, 0) < 0)
        return -1;
    return done ? (long)done : CM_PORT_AGAIN;
}

/* Every record of the answer has gone to the socket (or the connection is
 * over, which the next read finds). */
static int tls_flushed(int t, cm_sock_t s)
{
    br_ssl_engine_flush(&tls.conns[t].sc.eng, 0);
    return tls_pump(t, s, 0) < 0 || !(br_ssl_engine_current_state(&tls.conns[t].sc.eng) & BR_SSL_SENDREC);
}

/* The engine holds or awaits input before it can take more to send. */
static int tls_input_first(int t)
{
    unsigned st = br_ssl_engine_current_state(&tls.conns[t].sc.eng);
    return !(st & (BR_SSL_SENDREC | BR_SSL_SENDAPP | BR_SSL_CLOSED)) && (st & (BR_SSL_RECVAPP | BR_SSL_RECVREC));
}

/* What to poll for, given what the connection wants (CM_POLL_IN to read,
 * CM_POLL_OUT to write, 0 neither): what the engine needs first. */
static short tls_poll_events(int t, short wanted)
{
    unsigned st = br_ssl_engine_current_state(&tls.conns[t].sc.eng);
    if (!wanted)
        return 0;
    if (st & BR_SSL_SENDREC)
        return CM_POLL_OUT;
    if ((wanted & CM_POLL_OUT) && (st & BR_SSL_SENDAPP))
        return CM_POLL_OUT;
    return CM_POLL_IN;
}

/* The handshake of an open connection is past its time. */
static int tls_expired(int t, uint64_t now)
{
    const struct tls_conn *tc = &tls.conns[t];
    return tc->in_use && !tc->ready && ms_since(now, tc->started_ms) > CM_TLS_HANDSHAKE_MS;
}

/* The connection ends: close_notify if the socket takes it now; the slot is free. */
static void tls_detach(int t, cm_sock_t s)
{
    struct tls_conn *tc = &tls.conns[t];
    if (tc->ready && !(br_ssl_engine_current_state(&tc->sc.eng) & BR_SSL_CLOSED)) {
        br_ssl_engine_close(&tc->sc.eng);
        (void)tls_pump(t, s, 0);
    } else if (!tc->ready && br_ssl_engine_last_error(&tc->sc.eng) != 0) {
        tls_log_failure(tc); /* (once: tls_pump may have told it) */
    } else if (!tc->ready && tls_expired(t, cm_port_now_ms())) {
        tls_count_failure(tc, TLS_FAIL_TIMEOUT); /* past CM_TLS_HANDSHAKE_MS, said something or not */
    } else if (!tc->ready && tc->got_bytes) {
        tls_count_failure(tc, TLS_FAIL_CLOSED); /* the client left mid-handshake, or its stalled slot was needed */
    }
    tc->in_use = 0;
}

/* The listener's handshakes as /metrics lines (of calid_mcp_tls_handshakes_total):
 * every kind and reason, zeros included, once the listener speaks TLS. */
static void tls_metrics(struct textbuf *b)
{
    int i;
    if (!tls_on())
        return;
    tb_printf(b, "calid_mcp_tls_handshakes_total{side=\"server\",kind=\"full\"} %lu\n"
                 "calid_mcp_tls_handshakes_total{side=\"server\",kind=\"resumed\"} %lu\n",
              tls.full, tls.resumed);
    for (i = 0; i < N_TLS_FAILS; i++)
        tb_printf(b, "calid_mcp_tls_handshakes_total{side=\"server\",kind=\"failed\",reason=\"%s\"} %lu\n", tls_fail_names[i],
                  tls.failed[i]);
}

#else /* CM_TLS_CONNS == 0: built without TLS serving */

static size_t tls_static_bytes(void) { return 0; }
#define TLS_CONN_BYTES 0
static int tls_on(void) { return 0; }
static int tls_start(const char *cert, const char *key, char *err, size_t errlen)
{
    (void)cert;
    (void)key;
    snprintf(err, errlen, "this build serves no HTTPS (CM_TLS_CONNS=0): drop --tls-cert/--tls-key or rebuild");
    return -1;
}
static void tls_stop(void) {}
static void tls_metrics(struct textbuf *b) { (void)b; }

#endif /* CM_TLS_CONNS */

/* ---- the byte layer under the HTTP code: the socket itself, or TLS (11a) ---- */
#if CM_TLS_CONNS > 0
#define CONN_TLS(c) ((int)tls.of_conn[(c) - conns] - 1)
#else
#define CONN_TLS(c) ((void)(c), -1)
#define tls_recv(t, s, b, n) ((void)(t), (void)(s), (long)-1)
#define tls_sendv(t, s, v, n) ((void)(t), (void)(s), (long)-1)
#define tls_flushed(t, s) 1
#define tls_poll_events(t, ev) (ev)
#define tls_expired(t, now) ((void)(now), 0)
#endif

static long conn_recv(struct conn *c, void *buf, size_t len)
{
    int t = CONN_TLS(c);
    return t < 0 ? cm_port_recv(c->sock, buf, len) : tls_recv(t, c->sock, buf, len);
}

/* A half-duplex engine sends only once its input is taken: decrypted bytes
 * (pipelined requests) move to the free end of in[] (a pool buffer when the
 * connection's own is full). -1 when there is no room. */
static int conn_tls_take_input(struct conn *c, int t)
{
#if CM_TLS_CONNS > 0
    while (tls_input_first(t)) {
        long n;
        if (c->in_len == c->in_cap && (c->in_cap == IN_BYTES || pool_take(c) != 0))
            return -1;
        n = tls_recv(t, c->sock, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == CM_PORT_AGAIN)
            return 0;
        if (n <= 0)
            return -1;
        c->in_len += (size_t)n;
    }
#else
    (void)c;
    (void)t;
#endif
    return 0;
}

static long conn_sendv(struct conn *c, const struct cm_iovec *iov, unsigned n)
{
    int t = CONN_TLS(c);
    if (t < 0)
        return cm_port_sendv(c->sock, iov, n);
    if (conn_tls_take_input(c, t) < 0)
        return -1;
    return tls_sendv(t, c->sock, iov, n);
}

static long conn_send(struct conn *c, const void *buf, size_t len)
{
    struct cm_iovec one;
    one.p = buf;
    one.n = len;
    return conn_sendv(c, &one, 1);
}

/* The answer's last bytes have left (TLS: its last records are on the socket). */
static int conn_flushed(struct conn *c)
{
    int t = CONN_TLS(c);
    return t < 0 || tls_flushed(t, c->sock);
}

/* What to poll the socket for: what the connection wants, or with TLS, what
 * the engine needs first (a handshake both reads and writes). */
static short conn_poll_events(struct conn *c, short wanted)
{
    int t = CONN_TLS(c);
    return t < 0 ? wanted : tls_poll_events(t, wanted);
}

static int conn_handshake_expired(struct conn *c, uint64_t now)
{
    int t = CONN_TLS(c);
    return t >= 0 && tls_expired(t, now);
}

/* A new socket: with TLS it needs an engine slot. 0 ok, -1 none free. */
/* Whether one more connection can have a TLS engine slot (always, without TLS). */
static int conn_tls_slot_free(void)
{
#if CM_TLS_CONNS > 0
    int t;
    if (!tls_on())
        return 1;
    for (t = 0; t < CM_TLS_CONNS; t++)
        if (!tls.conns[t].in_use)
            return 1;
    return 0;
#else
    return 1;
#endif
}

static int conn_attach(struct conn *c)
{
#if CM_TLS_CONNS > 0
    int t = tls_on() ? tls_attach() : -1;
    if (tls_on() && t < 0)
        return -1;
    tls.of_conn[c - conns] = (unsigned short)(t + 1);
#else
    (void)c;
#endif
    return 0;
}

static void conn_sock_close(struct conn *c)
{
#if CM_TLS_CONNS > 0
    int t = CONN_TLS(c);
    if (t >= 0)
        tls_detach(t, c->sock);
    tls.of_conn[c - conns] = 0;
#endif
    cm_port_close(c->sock);
}

static int conns_in_use(void)
{
    int i, n = 0;
    for (i = 0; i < CM_MAX_CONNS; i++)
        n += conns[i].state != C_FREE;
    return n;
}

static unsigned conn_owner(const struct conn *c) { return (c->gen << 8) | (unsigned)(c - conns); }

static void conn_close(struct conn *c)
{
    if (c->state == C_WAIT_API && c->pc.handle >= 0)
        up_cancel(c->pc.handle);
    if (c->held_handle >= 0 && c->stream == STREAM_MORE)
        up_cancel(c->held_handle); /* the client left mid-answer: the rest is not read, the API connection closed */
    else if (c->held_handle >= 0)
        up_release(c->held_handle);
    c->stream = STREAM_NONE;
    conn_sock_close(c);
    c->state = C_FREE;
    c->sock = CM_SOCK_INVALID;
    c->in_len = 0;
    pool_give_back(c, 1);
    c->held_handle = -1;
    c->parse_pending = 0;
    c->pc.active = 0;
    c->gen++;
    c->memo.gen = 0; /* the next client in this slot proves its own session */
}

static void conn_reset_request(struct conn *c)
{
    c->head_done = 0;
    c->sent_continue = 0;
    c->scanned = 0;
    c->req_total = 0;
    c->body = NULL;
    c->body_len = 0;
    c->pc.active = 0;
    c->pc.handle = -1;
    c->batch_len = 0;
    c->batch_pos = 0;
    c->batch_replies = 0;
    c->origin_ok[0] = 0;
    c->held_handle = -1;
    c->stream = STREAM_NONE;
    c->close_after = 0;
    c->head_only = 0;
    c->oauth_wait = 0;
    memset(c->oauth_key, 0, sizeof c->oauth_key); /* a Cal ID key: kept no longer than one request */
    note_reset(&c->note);
}

/* A client address (16 bytes, IPv4 as ::ffff:a.b.c.d) as text: "192.0.2.7",
 * "2001:db8:0:0:0:0:0:1", or "-" when the platform could not tell. */
static void peer_text(const unsigned char a[16], char *out, size_t cap)
{
    static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[16];
    if (memcmp(a, zero, 16) == 0)
        snprintf(out, cap, "-");
    else if (memcmp(a, v4_prefix, 12) == 0)
        snprintf(out, cap, "%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
    else
        snprintf(out, cap, "%x:%x:%x:%x:%x:%x:%x:%x", a[0] << 8 | a[1], a[2] << 8 | a[3], a[4] << 8 | a[5],
                 a[6] << 8 | a[7], a[8] << 8 | a[9], a[10] << 8 | a[11], a[12] << 8 | a[13], a[14] << 8 | a[15]);
}

/* The access log line and the request counter, once per answer: never a
 * token, a key, a query string or a body. */
static void access_log(struct conn *c, int status)
{
    const struct req_note *n = &c->note;
    char t[24], peer[64], http[24], tool[96], api[16], api_ms[24], text[400], json[480];
    uint64_t ms = ms_since(cm_port_now_ms(), c->req_start_ms);
    metrics.requests[n->method][metric_status(status)]++;
    if (cfg.log_level < CM_LOG_INFO)
        return;
    utc_text(cm_port_unix_time(), t);
    peer_text(c->peer, peer, sizeof peer);
    {
        size_t i, n = c->req.method.n < 16 ? c->req.method.n : 16;
        for (i = 0; i < n && is_tchar((unsigned char)c->req.method.p[i]); i++)
            http[i] = c->req.method.p[i];
        http[i] = 0;
        if (i == 0 || i < n) /* no method parsed (yet): a refusal before the request line */
            snprintf(http, sizeof http, "-");
    } /* tchars only: nothing to quote in either format */
    snprintf(tool, sizeof tool, "%s", n->tool >= 0 ? tools[n->tool].name : "-");
    if (n->api_status >= 0)
        snprintf(api, sizeof api, "%d", n->api_status);
    else
        snprintf(api, sizeof api, "-");
    if (n->api_status >= 0)
        snprintf(api_ms, sizeof api_ms, "%lu", (unsigned long)n->api_ms);
    else
        snprintf(api_ms, sizeof api_ms, "%s", cfg.log_json ? "null" : "-");
    if (cfg.log_json) {
        snprintf(json, sizeof json,
                 "\"client\":\"%s\",\"http\":\"%s\",\"path\":\"%s\",\"mcp\":\"%s\",\"tool\":%s%s%s,\"status\":%d,\"ms\":%lu,"
                 "\"api_status\":%s,\"api_ms\":%s",
                 peer, http, n->endpoint, metric_methods[n->method], n->tool >= 0 ? "\"" : "", n->tool >= 0 ? tool : "null",
                 n->tool >= 0 ? "\"" : "", status, (unsigned long)ms, n->api_status >= 0 ? api : "null", api_ms);
        log_write(CM_LOG_INFO, "access", NULL, json);
        return;
    }
    snprintf(text, sizeof text, "time=%s client=%s http=%s path=%s mcp=%s tool=%s status=%d ms=%lu api_status=%s api_ms=%s",
             t, peer, http, n->endpoint, metric_methods[n->method], tool, status, (unsigned long)ms, api, api_ms);
    log_write(CM_LOG_INFO, "access", text, NULL);
}

static int conn_write(struct conn *c);

/* One part of a streamed answer in resp framed as an HTTP/1.1 chunk: its
 * size line after what h holds, its CRLF (and after the last part the empty
 * chunk) at the end of resp. HTTP/1.0 gets the bytes bare: the close ends them. */
static void conn_chunk_frame(struct conn *c, struct textbuf *h, size_t len)
{
    if (c->req.minor < 1)
        return;
    if (len) {
        tb_printf(h, "%lx\r\n", (unsigned long)len);
        rs_str(&c->resp, "\r\n");
    }
    if (c->stream == STREAM_LAST)
        rs_str(&c->resp, "0\r\n\r\n");
}

/* Writes hdr, then resp: the segments from the start, escaped ones staged
 * in the part of out[] the text left free (usually most of it), so that a
 * large answer takes few writes. */
static void conn_start_body(struct conn *c)
{
    c->hdr_sent = 0;
    if (c->head_only)
        c->resp.nseg = 0;
    c->seg_i = 0;
    c->seg_off = 0;
    c->stage_len = c->stage_sent = 0;
    c->stage_p = c->resp.tb.p == c->out ? c->out + c->resp.tb.len + 1 : c->stage;
    c->stage_cap = c->resp.tb.p == c->out ? sizeof c->out - c->resp.tb.len - 1 : 0;
    if (c->stage_cap < sizeof c->stage) {
        c->stage_p = c->stage;
        c->stage_cap = sizeof c->stage;
    }
    c->state = C_WRITE;
    c->last_ms = cm_port_now_ms();
    conn_write(c);
}

/* Starts sending an answer: status line and headers into hdr, body = resp. */
static void conn_answer(struct conn *c, int status, const char *content_type, const char *extra_headers)
{
    struct textbuf h;
    size_t body_len = rs_length(&c->resp);
    h.p = c->hdr;
    h.cap = sizeof c->hdr;
    h.len = 0;
    h.overflow = 0;
    if (!c->keep_alive || c->close_after || (c->stream && c->req.minor < 1))
        c->close_after = 1;
    tb_printf(&h, "HTTP/1.1 %d %s\r\nServer: calid-mcp/" CM_VERSION "\r\n", status, status_reason(status));
    if (body_len || (status != 202 && status != 204))
        tb_printf(&h, "Content-Type: %s\r\n", content_type ? content_type : "application/json");
    if (c->stream && c->req.minor >= 1) /* the length is not known yet */
        tb_str(&h, "Transfer-Encoding: chunked\r\n");
    else if (status != 204 && !c->stream) /* a 204 carries no Content-Length (RFC 9110) */
        tb_printf(&h, "Content-Length: %lu\r\n", (unsigned long)body_len);
    if (content_type && strcmp(content_type, "text/event-stream") == 0)
        tb_str(&h, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (c->origin_ok[0])
        tb_printf(&h, "Access-Control-Allow-Origin: %s\r\nAccess-Control-Expose-Headers: Mcp-Session-Id, WWW-Authenticate\r\nVary: Origin\r\n",
                  c->origin_ok);
    if (extra_headers)
        tb_str(&h, extra_headers);
    if (c->close_after)
        tb_str(&h, "Connection: close\r\n");
    tb_str(&h, "\r\n");
    if (c->stream)
        conn_chunk_frame(c, &h, body_len);
    c->hdr_len = h.len;
    cm_logf(CM_LOG_DEBUG, "answer %d, %lu body bytes%s", status, (unsigned long)body_len, c->stream ? " so far (streamed)" : "");
    access_log(c, status);
    conn_start_body(c);
}

/* Sends the next part of a streamed answer (resp holds it). */
static void conn_send_part(struct conn *c)
{
    struct textbuf h;
    h.p = c->hdr;
    h.cap = sizeof c->hdr;
    h.len = 0;
    h.overflow = 0;
    conn_chunk_frame(c, &h, rs_length(&c->resp));
    c->hdr_len = h.len;
    conn_start_body(c);
}

/* A plain JSON answer with a fixed text body (HTTP-level errors, healthz). */
static void conn_simple(struct conn *c, int status, const char *json, const char *extra_headers)
{
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_str(&c->resp, json);
    conn_answer(c, status, "application/json", extra_headers);
}

/* An HTTP-level refusal with a JSON-RPC error body (id null), then close. */
static void conn_reject(struct conn *c, int status, int code, const char *message, const char *extra_headers)
{
    struct view nullid = {"null", 4};
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rpc_error(&c->resp, nullid, code, message, NULL);
    conn_answer(c, status, "application/json", extra_headers);
}

/* When the answer references an API answer, the slot is held until it is sent. */
static void conn_finish_answer(struct conn *c)
{
    size_t rest;
    if (c->stream == STREAM_MORE) { /* a window is out: the API slot reads on, the next one comes back here */
        int h = c->held_handle;
        c->held_handle = -1;
        c->pc.handle = h;
        c->state = C_WAIT_API;
        c->last_ms = cm_port_now_ms();
        up_release(h);
        return;
    }
    if (c->held_handle >= 0) {
        up_release(c->held_handle);
        c->held_handle = -1;
    }
    if (c->close_after) {
        conn_close(c);
        return;
    }
    /* keep-alive: move any pipelined bytes to the front and go on reading */
    rest = c->in_len > c->req_total ? c->in_len - c->req_total : 0;
    if (rest && c->req_total)
        memmove(c->in, c->in + c->req_total, rest);
    c->in_len = rest;
    pool_give_back(c, 0);
    conn_reset_request(c);
    c->state = C_READ;
    c->served++;
    c->parse_pending = rest > 0; /* parsed by the loop, so answers never recurse */
    c->last_ms = c->req_start_ms = cm_port_now_ms();
}

/* Sends as much of the answer as the socket takes: the head, staged escaped
 * bytes and the plain segments that follow go out in one gathered write, so
 * a whole tools/list answer is one system call. 1 done, 0 more to send,
 * -1 closed. */
#define WRITE_IOVS 16
static int conn_write(struct conn *c)
{
    for (;;) {
        struct cm_iovec iov[WRITE_IOVS];
        int k = 0, j = c->seg_i, q;
        size_t off = c->seg_off, total = 0, left;
        long w;
        if (c->hdr_sent < c->hdr_len) {
            iov[k].p = c->hdr + c->hdr_sent;
            iov[k++].n = c->hdr_len - c->hdr_sent;
        }
        if (c->stage_sent < c->stage_len) {
            iov[k].p = c->stage_p + c->stage_sent;
            iov[k++].n = c->stage_len - c->stage_sent;
        }
        while (j < c->resp.nseg && k < WRITE_IOVS) {
            struct seg *s = &c->resp.seg[j];
            if (off >= s->n) {
                j++;
                off = 0;
                continue;
            }
            if (s->escape)
                break;
            iov[k].p = s->p + off;
            iov[k++].n = s->n - off;
            j++;
            off = 0;
        }
        if (k == 0) {
            while (c->seg_i < c->resp.nseg && c->seg_off >= c->resp.seg[c->seg_i].n) {
                c->seg_i++;
                c->seg_off = 0;
            }
            if (c->seg_i < c->resp.nseg) { /* an escaped segment: stage the next piece */
                struct seg *s = &c->resp.seg[c->seg_i];
                size_t used = json_escape_some(s->p + c->seg_off, s->n - c->seg_off, c->stage_p, c->stage_cap, &c->stage_len);
                c->seg_off += used;
                c->stage_sent = 0;
                continue;
            }
            if (!conn_flushed(c))
                return 0; /* the last TLS records wait for the socket */
            conn_finish_answer(c);
            return 1;
        }
        for (q = 0; q < k; q++)
            total += iov[q].n;
        w = conn_sendv(c, iov, (unsigned)k);
        if (w == CM_PORT_AGAIN)
            return 0;
        if (w <= 0) {
            conn_close(c);
            return -1;
        }
        c->last_ms = cm_port_now_ms();
        left = (size_t)w;
        {
            size_t t = c->hdr_len - c->hdr_sent < left ? c->hdr_len - c->hdr_sent : left;
            c->hdr_sent += t;
            left -= t;
            t = c->stage_len - c->stage_sent < left ? c->stage_len - c->stage_sent : left;
            c->stage_sent += t;
            left -= t;
        }
        while (left) {
            struct seg *s = &c->resp.seg[c->seg_i];
            size_t t;
            if (c->seg_off >= s->n) {
                c->seg_i++;
                c->seg_off = 0;
                continue;
            }
            t = s->n - c->seg_off < left ? s->n - c->seg_off : left;
            c->seg_off += t;
            left -= t;
        }
        if ((size_t)w < total)
            return 0; /* the socket is full: wait for POLLOUT */
    }
}

/* section 11b: the public URL, access tokens, and the key check of the sign-in page */
static int oauth_is_public_host(struct view host);
static int oauth_is_public_origin(struct view origin);
static int oauth_is_access_token(struct view bearer);
static int oauth_open_access(struct view bearer, char *key, size_t cap, const char **why);
static const char *oauth_challenge(int had_token);
struct up_result;
static void oauth_key_checked(struct conn *c, int handle, const struct up_result *u);

static int host_is_loopback_name(struct view host)
{
    /* strip a :port suffix (not inside [::1]) */
    size_t n = host.n;
    size_t i;
    for (i = n; i > 0; i--) {
        if (host.p[i - 1] == ']')
            break;
        if (host.p[i - 1] == ':') {
            n = i - 1;
            break;
        }
    }
    host.n = n;
    return view_ieq(host, "localhost") || view_eq(host, "127.0.0.1") || view_eq(host, "[::1]");
}

static int origin_allowed(struct view origin)
{
    int i;
    for (i = 0; i < cfg.n_allow_origins; i++)
        if (view_ieq(origin, cfg.allow_origins[i]) || strcmp(cfg.allow_origins[i], "*") == 0)
            return 1;
    if (oauth_is_public_origin(origin))
        return 1; /* this server's own pages (the sign-in form) */
    if (listener_on_loopback) {
        struct view rest = origin;
        if (rest.n > 7 && memcmp(rest.p, "http://", 7) == 0) {
            rest.p += 7;
            rest.n -= 7;
        } else if (rest.n > 8 && memcmp(rest.p, "https://", 8) == 0) {
            rest.p += 8;
            rest.n -= 8;
        } else {
            return 0;
        }
        return host_is_loopback_name(rest);
    }
    return 0;
}

/* Host of an allowed origin equals the Host header? (for proxies on loopback) */
static int host_allowed_by_origin_list(struct view host)
{
    int i;
    for (i = 0; i < cfg.n_allow_origins; i++) {
        const char *o = cfg.allow_origins[i], *s = strstr(o, "://");
        s = s ? s + 3 : o;
        if (view_ieq(host, s))
            return 1;
    }
    return 0;
}

/* Which token the API gets for this request. 0 ok, or an HTTP status with why. */
static int resolve_token(const struct http_req *q, const char **tok, size_t *n, const char **presented,
                         size_t *presented_n, const char **why, char *opened, size_t opened_cap)
{
    const struct view *auth = http_header(q, "authorization");
    struct view bearer = {NULL, 0};
    if (auth) {
        if (auth->n < 7 || !view_ieq((struct view){auth->p, 7}, "bearer ")) {
            *why = "Unauthorized: the Authorization header must be 'Bearer <token>'";
            return 401;
        }
        bearer.p = auth->p + 7;
        bearer.n = auth->n - 7;
        while (bearer.n && *bearer.p == ' ') {
            bearer.p++;
            bearer.n--;
        }
        if (bearer.n == 0) {
            *why = "Unauthorized: the bearer token is empty";
            return 401;
        }
    }
    *presented = bearer.p;
    *presented_n = bearer.n;
    if (bearer.p && oauth_is_access_token(bearer)) {
        /* signed in with OAuth: the token carries the user's key, and so does
           their session binding, which then survives a refresh */
        int r = oauth_open_access(bearer, opened, opened_cap, why);
        if (r)
            return r;
        *tok = *presented = opened;
        *n = *presented_n = strlen(opened);
        return 0;
    }
    if (cfg.access_token && cfg.api_key) {
        if (!bearer.p || !const_time_eq(bearer.p, bearer.n, cfg.access_token, strlen(cfg.access_token))) {
            *why = bearer.p ? "Unauthorized: the access token is not valid for this server"
                            : "Unauthorized: this server needs its access token: send Authorization: Bearer <access token>";
            return 401;
        }
        *tok = cfg.api_key;
        *n = strlen(cfg.api_key);
        return 0;
    }
    if (bearer.p) {
        *tok = bearer.p;
        *n = bearer.n;
        return 0;
    }
    if (cfg.api_key) {
        *tok = cfg.api_key;
        *n = strlen(cfg.api_key);
        *presented = "";
        return 0;
    }
    *why = cfg.oauth ? "Unauthorized: sign in (OAuth, see WWW-Authenticate), or send Authorization: Bearer calid_..."
                     : "Unauthorized: a Cal ID token is needed: send Authorization: Bearer calid_... (create an API key in Cal ID under Settings > Developer > API keys)";
    return 401;
}

/* Decodes an Mcp-Name style header value (=?base64?...?= or plain).
 * Returns its length (it may hold a NUL), or -1. */
static long header_value_decode(struct view v, char *out, size_t cap)
{
    if (v.n >= 12 && memcmp(v.p, "=?base64?", 9) == 0 && memcmp(v.p + v.n - 2, "?=", 2) == 0) {
        long n = base64_decode(v.p + 9, v.n - 11, (unsigned char *)out, cap - 1);
        if (n < 0)
            return -1;
        out[n] = 0;
        return n;
    }
    if (v.n >= cap)
        return -1;
    memcpy(out, v.p, v.n);
    out[v.n] = 0;
    return (long)v.n;
}

static void conn_process(struct conn *c);
static void conn_continue_batch(struct conn *c, const struct jdoc *d);

/* Parses the current body into the shared token array (again, if needed:
 * bodies stay in the connection's buffer while it waits on the API). */
static int conn_parse_body(struct conn *c, struct jdoc *d, const char **why, size_t *at)
{
    return jdoc_parse(d, c->body, c->body_len, toks, CM_JSON_TOKENS, why, at);
}

/* pc.handle of a tool call that waits in line for a free API slot */
#define PC_IN_LINE (-2)

/* Puts c's tool call in line the first time it asks for an API slot, and
 * tells whether another call has waited longer: first come, first served. */
static int conn_in_line_behind(struct conn *c)
{
    int i;
    if (c->pc.handle != PC_IN_LINE) {
        c->pc.handle = PC_IN_LINE;
        c->queued_ms = cm_port_now_ms();
    }
    for (i = 0; i < CM_MAX_CONNS; i++) {
        const struct conn *o = &conns[i];
        if (o != c && o->state == C_WAIT_API && o->pc.active && o->pc.handle == PC_IN_LINE &&
            (o->queued_ms < c->queued_ms || (o->queued_ms == c->queued_ms && o < c)))
            return 1;
    }
    return 0;
}

/* Whether c's call has waited CM_UPSTREAM_WAIT_MS for a slot; msg says so. */
static int conn_wait_expired(const struct conn *c, char *msg, size_t cap)
{
    if (ms_since(cm_port_now_ms(), c->queued_ms) < CM_UPSTREAM_WAIT_MS)
        return 0;
    snprintf(msg, cap,
             "The Cal ID API is busy: all %d connections to it stayed in use while this call waited %lu ms "
             "(CM_UPSTREAM_WAIT_MS), so it was not sent. Try again in a moment.",
             CM_MAX_UPSTREAMS, (unsigned long)CM_UPSTREAM_WAIT_MS);
    return 1;
}

/* Submits (or resubmits) the pending tool call of a connection; it waits
 * its turn behind older calls (retry_waiting_calls) up to a deadline. */
static void conn_submit(struct conn *c, const struct jdoc *d)
{
    char msg[300];
    int h, busy;
    if (conn_in_line_behind(c))
        return;
    msg[0] = 0;
    h = submit_pending(conn_owner(c), &c->pc, d, c->ctx.token, c->ctx.token_len, msg, sizeof msg);
    if (h >= 0) {
        c->pc.handle = h;
        c->note.api_start_ms = cm_port_now_ms();
        if (!c->batch_len && (c->pc.kind == PC_TOOL || c->pc.kind == PC_RESOURCE))
            up_allow_stream(h); /* a batch answer is copied whole; the others can stream */
        return;
    }
    busy = h == -1 && conn_wait_expired(c, msg, sizeof msg);
    if (h == -1 && !busy)
        return; /* every upstream slot is busy: retried from the loop */
    /* could not even build the request, or waited too long: answer with the reason */
    {
        if (c->pc.kind == PC_TOOL)
            metrics.tool_calls[c->pc.tool][busy ? OUTCOME_BUSY : OUTCOME_REFUSED]++;
        c->pc.active = 0;
        if (c->batch_len) {
            if (c->batch_replies++)
                rs_str(&c->resp, ",");
            render_pending_failure(&c->resp, &c->pc, msg);
            c->batch_pos++;
            conn_continue_batch(c, d);
            return;
        }
        render_pending_failure(&c->resp, &c->pc, msg);
        conn_answer(c, 200, c->want_sse ? "text/event-stream" : "application/json", NULL);
    }
}

/* The batch element number k (an index into the token array). */
static int batch_element(const struct jdoc *d, int k)
{
    int i = 1, j;
    for (j = 0; j < k; j++)
        i = tok_next(d, i);
    return i;
}

/* Serves batch elements from batch_pos on, until one waits on the API. */
static void conn_continue_batch(struct conn *c, const struct jdoc *d)
{
    while (c->batch_pos < c->batch_len) {
        int el = batch_element(d, c->batch_pos), r;
        size_t mark = c->resp.tb.len;
        int nseg = c->resp.nseg;
        if (c->batch_replies)
            rs_str(&c->resp, ",");
        if (d->t[el].type != JSMN_OBJECT) {
            struct view nullid = {"null", 4};
            rpc_error(&c->resp, nullid, E_INVALID_REQUEST, "Invalid Request: a batch element must be an object", NULL);
            r = D_REPLIED;
        } else if (tok_is_str(d, obj_get(d, el, "method"), "initialize")) {
            rpc_error(&c->resp, rpc_id(d, el), E_INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch", NULL);
            r = D_REPLIED;
        } else {
            r = dispatch(&c->ctx, d, el, &c->resp, &c->pc);
        }
        if (r == D_REPLIED) {
            c->batch_replies++;
            note_tool_refused(d, el);
        } else {
            rs_rewind(&c->resp, mark, nseg); /* no reply yet: drop the separator */
        }
        if (r == D_PENDING) {
            c->state = C_WAIT_API;
            conn_submit(c, d);
            return;
        }
        c->batch_pos++;
    }
    if (c->batch_replies == 0) {
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 202, NULL, NULL);
        return;
    }
    if (c->want_sse)
        rs_str(&c->resp, "]\n\n");
    else
        rs_str(&c->resp, "]");
    if (c->resp.overflow) {
        struct view nullid = {"null", 4};
        char m[160];
        rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);
        snprintf(m, sizeof m, "Internal error: the batch answer exceeds %u bytes (CM_OUT_BYTES); send the requests one at a time",
                 (unsigned)CM_OUT_BYTES);
        rpc_error(&c->resp, nullid, E_INTERNAL, m, NULL);
    }
    conn_answer(c, 200, c->want_sse ? "text/event-stream" : "application/json", NULL);
}

/* The answer to a finished API request arrives here, for either transport. */
static struct {
    int done;
    int handle;
    const struct up_result *u;    /* the slot's result: valid until up_release(handle) */
    unsigned char streamed;       /* the answer was streamed to stdout and its end rendered into r */
    const struct pending_call *pc; /* the call waited on, and its answer (for streaming) */
    struct resp *r;
} stdio_wait;
static void stdio_stream_part(int handle, const struct up_result *u);

/* A window of an API answer larger than its slot's buffer (up_result.partial),
 * or the last one: the answer streams as a chunked (or, for HTTP/1.0,
 * close-delimited) body, held to what the client takes (conn_finish_answer
 * gives the window back). A resources/read error status is answered whole
 * as a JSON-RPC error instead, and the rest of its answer dropped. */
static void conn_stream_part(struct conn *c, int handle, const struct up_result *u)
{
    int first = !c->stream;
    const char *ctype = c->want_sse ? "text/event-stream" : "application/json";
    rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);
    if (first && c->pc.kind == PC_RESOURCE && u->status >= 300) {
        note_api_done(&c->note, &c->pc, u->status, render_pending_result(&c->resp, &c->pc, u, 1));
        up_cancel(handle);
        conn_answer(c, 200, ctype, NULL);
        return;
    }
    if (first)
        render_stream_begin(&c->resp, &c->pc, u);
    rs_ext(&c->resp, u->body, u->body_len, 1);
    c->held_handle = handle;
    c->stream = u->partial ? STREAM_MORE : STREAM_LAST;
    if (!u->partial && render_stream_end(&c->resp, &c->pc, u) && c->pc.kind == PC_TOOL && c->note.api_status > 0 &&
        c->note.api_status < 300) { /* counted as ok when it began: it failed after all */
        metrics.tool_calls[c->pc.tool][OUTCOME_OK]--;
        metrics.tool_calls[c->pc.tool][u->status == 0 ? OUTCOME_TRANSPORT_ERROR : OUTCOME_API_ERROR]++;
    }
    if (!first) {
        conn_send_part(c);
        return;
    }
    note_api_done(&c->note, &c->pc, u->status, u->status >= 300);
    conn_answer(c, 200, ctype, NULL);
}

static void on_upstream_done(unsigned owner, int handle, const struct up_result *u)
{
    struct conn *c;
#ifdef CM_TEST_SEAMS
    if (test_upstream_hook) {
        test_upstream_hook(owner, handle, u);
        return;
    }
#endif
    if (owner == STDIO_OWNER) {
        if (u->partial || stdio_wait.streamed) {
            stdio_stream_part(handle, u);
            return;
        }
        stdio_wait.done = 1;
        stdio_wait.handle = handle;
        stdio_wait.u = u;
        return;
    }
    c = &conns[owner & 0xff];
    if ((owner & 0xff) >= CM_MAX_CONNS || c->gen != owner >> 8 || c->state != C_WAIT_API || c->pc.handle != handle) {
        up_release(handle); /* its client went away meanwhile */
        return;
    }
    if (c->oauth_wait) {
        oauth_key_checked(c, handle, u);
        return;
    }
    c->pc.active = 0;
    c->pc.handle = -1;
    if (c->batch_len) {
        struct jdoc d;
        const char *why;
        size_t at;
        if (c->batch_replies++)
            rs_str(&c->resp, ",");
        note_api_done(&c->note, &c->pc, u->status, render_pending_result(&c->resp, &c->pc, u, 1));
        up_release(handle);
        c->batch_pos++;
        if (conn_parse_body(c, &d, &why, &at) == 0)
            conn_continue_batch(c, &d);
        else
            conn_close(c);
        return;
    }
    if (u->partial || c->stream) {
        conn_stream_part(c, handle, u);
        return;
    }
    note_api_done(&c->note, &c->pc, u->status, render_pending_result(&c->resp, &c->pc, u, 0));
    c->held_handle = handle;
    if (c->resp.overflow) {
        struct view id = c->pc.id;
        rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);
        rpc_error(&c->resp, id, E_INTERNAL, "Internal error: the answer did not fit the output buffer", NULL);
    }
    conn_answer(c, 200, c->want_sse ? "text/event-stream" : "application/json", NULL);
}

/* 2026-07-28: Mcp-Name mirrors params.name (tools/call, prompts/get) or
 * params.uri (resources/read). 0 ok, or -1 with the -32020 error rendered. */
static int check_mcp_name(const struct jdoc *d, int method, const struct view *hn, struct resp *r)
{
    int by_uri = tok_is_str(d, method, "resources/read");
    int nm = obj_get(d, obj_get(d, 0, "params"), by_uri ? "uri" : "name");
    char hv[256], bv[256], m[160];
    long hl, bl;
    if (!by_uri && !tok_is_str(d, method, "tools/call") && !tok_is_str(d, method, "prompts/get"))
        return 0;
    /* lengths compared too: a NUL in the decoded header must not end the comparison early */
    hl = hn ? header_value_decode(*hn, hv, sizeof hv) : -1;
    bl = nm >= 0 ? tok_unescape(d, nm, bv, sizeof bv) : -1;
    if (hl >= 0 && hl == bl && memcmp(hv, bv, (size_t)hl) == 0)
        return 0;
    if (!hn)
        snprintf(m, sizeof m, "Bad Request: the Mcp-Name header is required for %.*s", (int)tok_view(d, method).n,
                 tok_view(d, method).p);
    else
        snprintf(m, sizeof m, "Bad Request: the request headers and body disagree: Mcp-Name differs from params.%s",
                 by_uri ? "uri" : "name");
    rpc_error(r, rpc_id(d, 0), E_HEADER_MISMATCH, m, NULL);
    return -1;
}

/*
 * 2026-07-28: each path id present in a tools/call's arguments must come in
 * its Mcp-Param-{Name} header too (the schema asks for it with x-mcp-header),
 * equal after decoding; integers are compared as numbers. 0, or -1 with the
 * -32020 error rendered.
 */
static int check_mcp_params(const struct jdoc *d, const struct http_req *q, struct resp *r)
{
    int params = obj_get(d, 0, "params"), args = obj_get(d, params, "arguments"), nm = obj_get(d, params, "name");
    char name[128];
    int t = nm >= 0 && tok_unescape(d, nm, name, sizeof name) >= 0 ? find_tool(name) : -1;
    const char *p = t >= 0 ? tools[t].path : ""; /* an unknown tool is dispatch's -32602 */
    while ((p = strchr(p, '{')) != NULL) {
        const char *end = strchr(p, '}');
        char key[40], hname[56], hv[256], bv[256], m[200];
        const struct view *h;
        long hl, bl;
        int v;
        snprintf(key, sizeof key, "%.*s", (int)(end - p - 1), p + 1);
        p = end;
        v = obj_get(d, args, key);
        if (v < 0 || (d->t[v].type != JSMN_STRING && d->t[v].type != JSMN_PRIMITIVE) ||
            (d->t[v].type == JSMN_PRIMITIVE && !strchr("-0123456789", d->js[d->t[v].start])))
            continue; /* absent, or not a string or number: the argument check explains it */
        snprintf(hname, sizeof hname, "mcp-param-%s", key);
        h = http_header(q, hname);
        hl = h ? header_value_decode(*h, hv, sizeof hv - 1) : -1;
        if (d->t[v].type == JSMN_PRIMITIVE) /* a number: its text as written */
            bl = snprintf(bv, sizeof bv, "%.*s", (int)tok_view(d, v).n, tok_view(d, v).p);
        else
            bl = tok_unescape(d, v, bv, sizeof bv - 1);
        if (hl >= 0)
            hv[hl] = 0;
        if (bl >= 0)
            bv[bl] = 0;
        if (hl >= 0 && bl >= 0 &&
            (d->t[v].type == JSMN_PRIMITIVE ? hl > 0 && strtod(hv, NULL) == strtod(bv, NULL) && strspn(hv, "-0123456789") == (size_t)hl
                                             : hl == bl && memcmp(hv, bv, (size_t)hl) == 0))
            continue;
        if (h)
            snprintf(m, sizeof m, "Bad Request: the request headers and body disagree: Mcp-Param-%c%s differs from arguments.%s",
                     key[0] & ~0x20, key + 1, key);
        else
            snprintf(m, sizeof m, "Bad Request: the Mcp-Param-%c%s header is required (x-mcp-header on arguments.%s)",
                     key[0] & ~0x20, key + 1, key);
        rpc_error(r, rpc_id(d, 0), E_HEADER_MISMATCH, m, NULL);
        return -1;
    }
    return 0;
}

/* ?toolsets=a,b narrows the server's selection for this request (never
 * widens it). 0, or -1 with the refusal sent. */
static int request_toolsets(struct conn *c, const struct http_req *q)
{
    struct view v = query_param(q->query, "toolsets");
    char m[300], err[200];
    unsigned mask;
    c->ctx.toolsets = served_toolsets;
    if (!v.p)
        return 0;
    if (parse_toolsets(v.p, v.n, &mask, err, sizeof err) < 0) {
        snprintf(m, sizeof m, "Bad Request: ?toolsets=: %s", err);
        conn_reject(c, 400, E_SERVER, m, NULL);
        return -1;
    }
    if (!(mask & served_toolsets)) {
        conn_reject(c, 400, E_SERVER, "Bad Request: ?toolsets= names none of the toolsets this server offers (see --toolsets)", NULL);
        return -1;
    }
    c->ctx.toolsets = mask & served_toolsets;
    return 0;
}

static void serve_healthz(struct conn *c)
{
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp,
              "{\"status\":\"ok\",\"version\":\"" CM_VERSION "\",\"tools\":%u,\"sessionsOpened\":%lu,\"endedSessions\":%d,\"connections\":%d,"
              "\"requests\":%lu,\"refusedBusy\":%lu,\"refusedPerAddress\":%lu,\"evictedStalled\":%lu,\"apiFullHandshakes\":%u}",
              (unsigned)N_TOOLS, sessions_opened, ended_in_use(cm_port_unix_time()), conns_in_use(), stat_requests, stat_refused_busy,
              stat_refused_addr, stat_evicted, up_full_handshakes);
    conn_answer(c, 200, "application/json", NULL);
}

/*
 * GET /metrics: the Prometheus text format (version 0.0.4). Series that are
 * still zero are left out, except the gauges. The page is written into the
 * free tail of the connection's input buffer (a GET has no body, so that is
 * at least CM_MAX_BODY_BYTES unless the client pipelined that much behind
 * it); the answer references it, and nothing is read into in[] until the
 * answer is out.
 */
static void metrics_page(struct textbuf *b)
{
    size_t i, j;
    unsigned long cum = 0;
    int64_t now_s = cm_port_unix_time();
    tb_str(b, "# HELP calid_mcp_requests_total HTTP answers by MCP method and status.\n# TYPE calid_mcp_requests_total counter\n");
    for (i = 0; i < N_METRIC_METHODS; i++)
        for (j = 0; j < N_METRIC_STATUSES; j++)
            if (metrics.requests[i][j]) {
                char st[8];
                snprintf(st, sizeof st, metric_statuses[j] ? "%d" : "other", metric_statuses[j]);
                tb_printf(b, "calid_mcp_requests_total{method=\"%s\",status=\"%s\"} %lu\n", metric_methods[i], st,
                          metrics.requests[i][j]);
            }
    tb_str(b, "# HELP calid_mcp_tool_calls_total Tool calls by tool and outcome (refused, busy: no API request was sent).\n"
              "# TYPE calid_mcp_tool_calls_total counter\n");
    for (i = 0; i <= TOOL_UNKNOWN; i++)
        for (j = 0; j < N_OUTCOMES; j++)
            if (metrics.tool_calls[i][j])
                tb_printf(b, "calid_mcp_tool_calls_total{tool=\"%s\",outcome=\"%s\"} %lu\n", i < N_TOOLS ? tools[i].name : "unknown",
                          outcome_names[j], metrics.tool_calls[i][j]);
    tb_str(b, "# HELP calid_mcp_api_request_duration_seconds Cal ID API requests, from sent to answered.\n"
              "# TYPE calid_mcp_api_request_duration_seconds histogram\n");
    for (i = 0; i <= N_API_BOUNDS; i++) {
        cum += metrics.api_ms_buckets[i];
        if (i < N_API_BOUNDS)
            tb_printf(b, "calid_mcp_api_request_duration_seconds_bucket{le=\"%u.%03u\"} %lu\n", api_ms_bounds[i] / 1000,
                      api_ms_bounds[i] % 1000, cum);
        else
            tb_printf(b, "calid_mcp_api_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n", cum);
    }
    tb_printf(b, "calid_mcp_api_request_duration_seconds_sum %lu.%03u\ncalid_mcp_api_request_duration_seconds_count %lu\n",
              (unsigned long)(metrics.api_ms_sum / 1000), (unsigned)(metrics.api_ms_sum % 1000), cum);
    tb_printf(b, "# HELP calid_mcp_connections Open client connections.\n# TYPE calid_mcp_connections gauge\n"
                 "calid_mcp_connections %d\n"
                 "# HELP calid_mcp_connections_limit CM_MAX_CONNS.\n# TYPE calid_mcp_connections_limit gauge\n"
                 "calid_mcp_connections_limit %d\n"
                 "# HELP calid_mcp_refused_busy_total Connections refused with 503 because every slot was busy.\n"
                 "# TYPE calid_mcp_refused_busy_total counter\ncalid_mcp_refused_busy_total %lu\n",
              conns_in_use(), CM_MAX_CONNS, stat_refused_busy);
    tb_printf(b, "# HELP calid_mcp_sessions_opened_total Session-era sessions opened here.\n"
                 "# TYPE calid_mcp_sessions_opened_total counter\ncalid_mcp_sessions_opened_total %lu\n"
                 "# HELP calid_mcp_ended_sessions Ended session ids remembered here.\n# TYPE calid_mcp_ended_sessions gauge\n"
                 "calid_mcp_ended_sessions %d\n"
                 "# HELP calid_mcp_ended_sessions_limit CM_MAX_ENDED_SESSIONS.\n# TYPE calid_mcp_ended_sessions_limit gauge\n"
                 "calid_mcp_ended_sessions_limit %d\n"
                 "# HELP calid_mcp_ended_session_refusals_total DELETEs refused (503) because the ended table was full of recent entries.\n"
                 "# TYPE calid_mcp_ended_session_refusals_total counter\ncalid_mcp_ended_session_refusals_total %lu\n",
              sessions_opened, ended_in_use(now_s), CM_MAX_ENDED_SESSIONS, ended_refused);
    tb_printf(b, "# HELP calid_mcp_tls_handshakes_total TLS handshakes, by side and kind (and why, when failed).\n"
                 "# TYPE calid_mcp_tls_handshakes_total counter\n"
                 "calid_mcp_tls_handshakes_total{side=\"upstream\",kind=\"full\"} %u\n"
                 "calid_mcp_tls_handshakes_total{side=\"upstream\",kind=\"resumed\"} %u\n",
              up_full_handshakes, up_resumed_handshakes);
    tls_metrics(b);
}

static void serve_metrics(struct conn *c)
{
    struct textbuf b;
    int tries;
    for (tries = 0; tries < 2; tries++) { /* in the free end of the request buffer; a pool buffer if that is short */
        b.p = c->in + c->in_len;
        b.cap = c->in_cap - c->in_len;
        b.len = 0;
        b.overflow = 0;
        metrics_page(&b);
        if (!b.overflow || c->pool_buf >= 0 || pool_take(c) != 0)
            break;
    }
    if (b.overflow) {
        conn_simple(c, 500, "{\"error\":\"the metrics page did not fit: send GET /metrics on a connection of its own\"}", NULL);
        return;
    }
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_ext(&c->resp, b.p, b.len, 0);
    conn_answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

/* DNS rebinding protection: a page in a browser must not reach a loopback
 * server under another name, nor any server from an origin not allowed.
 * 0 to go on; else the answer is already started. */
static int conn_check_host(struct conn *c)
{
    const struct http_req *q = &c->req;
    const struct view *origin = http_header(q, "origin");
    const struct view *host = http_header(q, "host");
    if (!host && q->minor >= 1) {
        conn_reject(c, 400, E_SERVER, "Bad Request: the Host header is required", NULL);
        return -1;
    }
    if (listener_on_loopback && host && !host_is_loopback_name(*host) && !host_allowed_by_origin_list(*host) &&
        !oauth_is_public_host(*host)) {
        conn_reject(c, 403, E_SERVER, "Forbidden: Host is not localhost, 127.0.0.1 or [::1] (DNS rebinding protection; see --allow-origin)", NULL);
        return -1;
    }
    if (origin) {
        if (!origin_allowed(*origin)) {
            conn_reject(c, 403, E_SERVER, "Forbidden: Origin not allowed (see --allow-origin)", NULL);
            return -1;
        }
        snprintf(c->origin_ok, sizeof c->origin_ok, "%.*s", (int)(origin->n < 150 ? origin->n : 0), origin->p);
    }
    return 0;
}

static void serve_mcp(struct conn *c);
/* section 11b */
static void serve_home(struct conn *c);
static void serve_style(struct conn *c);
static void serve_resource_metadata(struct conn *c);
static void serve_as_metadata(struct conn *c);
static void serve_authorize(struct conn *c);
static void serve_token(struct conn *c);
static void serve_register(struct conn *c);

/*
 * The HTTP endpoints, one row each: the path, the methods it takes (NULL: the
 * handler answers every method itself, with the reason), and whether the DNS
 * rebinding check applies. HEAD is allowed wherever GET is.
 */
struct endpoint {
    const char *path;
    const char *allow;
    int host_check;
    void (*serve)(struct conn *c);
};

static const struct endpoint endpoints[] = {
    {"/mcp", NULL, 1, serve_mcp},
    {"/healthz", "GET, HEAD", 1, serve_healthz},
    {"/metrics", "GET, HEAD", 1, serve_metrics},
    {"/", NULL, 1, serve_home},
    {"/style.css", "GET, HEAD", 0, serve_style},
    {"/.well-known/oauth-protected-resource/mcp", NULL, 0, serve_resource_metadata},
    {"/.well-known/oauth-protected-resource", NULL, 0, serve_resource_metadata},
    {"/.well-known/oauth-authorization-server", NULL, 0, serve_as_metadata},
    {"/authorize", "GET, HEAD, POST", 1, serve_authorize},
    {"/token", NULL, 0, serve_token},
    {"/register", NULL, 0, serve_register},
};
#define N_ENDPOINTS (sizeof endpoints / sizeof endpoints[0])

static int method_allowed(const char *allow, struct view method)
{
    size_t n = strlen(allow), i = 0;
    if (view_eq(method, "HEAD")) {
        method.p = "GET";
        method.n = 3;
    }
    while (i < n) {
        size_t j = i;
        while (j < n && allow[j] != ',')
            j++;
        if (j - i == method.n && memcmp(allow + i, method.p, method.n) == 0)
            return 1;
        i = j + (j < n ? 2 : 0); /* ", " */
    }
    return 0;
}

/* A full request is in c->in: route it to its endpoint. */
static void conn_process(struct conn *c)
{
    struct http_req *q = &c->req;
    size_t i;
    stat_requests++;
    c->head_only = view_eq(q->method, "HEAD");
    c->ctx.http_status = 200;
    c->ctx.batch = 0;
    c->ctx.new_session = -1;
    c->ctx.log_level = NULL;
    cm_logf(CM_LOG_DEBUG, "%.*s %.*s", (int)q->method.n, q->method.p, (int)(q->path.n > 100 ? 100 : q->path.n), q->path.p);
    for (i = 0; i < N_ENDPOINTS; i++) {
        const struct endpoint *e = &endpoints[i];
        char allow[80];
        if (!view_eq(q->path, e->path))
            continue;
        if (e->allow && !method_allowed(e->allow, q->method)) {
            char m[120];
            snprintf(m, sizeof m, "{\"error\":\"%s takes %s\"}", e->path, e->allow);
            snprintf(allow, sizeof allow, "Allow: %s\r\n", e->allow);
            conn_simple(c, 405, m, allow);
            return;
        }
        c->note.endpoint = e->path;
        if (e->host_check && conn_check_host(c) < 0)
            return;
        e->serve(c);
        return;
    }
    conn_simple(c, 404, "{\"error\":\"not found: the MCP endpoint is /mcp\"}", NULL);
}

/*
 * /mcp, as stages in the order a request meets them. Each stage either lets
 * the request go on (returns 0) or has started the answer, an error most of
 * the time, and returns -1. mcp_answer() sends what the stages rendered.
 */
static const char *answer_type(const struct conn *c) { return c->want_sse ? "text/event-stream" : "application/json"; }

static void mcp_answer(struct conn *c, int status) { conn_answer(c, status, answer_type(c), NULL); }

static void mcp_options(struct conn *c)
{
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    conn_answer(c, 204, NULL,
                "Access-Control-Allow-Methods: POST, GET, DELETE, OPTIONS\r\n"
                "Access-Control-Allow-Headers: Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID\r\n"
                "Access-Control-Max-Age: 86400\r\n");
}

/* Who calls: the token for the API (c->ctx) and the one presented (bound to sessions). */
struct mcp_caller {
    const char *presented;
    size_t presented_n;
    uint64_t now;
    int64_t now_s; /* session ids carry wall-clock times: instances share them */
};

static int mcp_auth(struct conn *c, struct mcp_caller *who)
{
    const char *tok = NULL, *why = NULL;
    size_t tok_n = 0;
    int r = resolve_token(&c->req, &tok, &tok_n, &who->presented, &who->presented_n, &why, c->oauth_key, sizeof c->oauth_key);
    if (r) {
        conn_reject(c, r, E_SERVER - 1, why, oauth_challenge(http_header(&c->req, "authorization") != NULL));
        return -1;
    }
    if (!who->presented) {
        who->presented = "";
        who->presented_n = 0;
    }
    c->ctx.token = tok;
    c->ctx.token_len = tok_n;
    return request_toolsets(c, &c->req);
}

/* DELETE: the session ends here (the ended-id table remembers it). */
static void mcp_delete(struct conn *c, const struct mcp_caller *who)
{
    const struct view *sid = http_header(&c->req, "mcp-session-id");
    struct session s;
    if (!sid) {
        conn_reject(c, 405, E_SERVER, "Method Not Allowed: DELETE ends a session and needs Mcp-Session-Id", "Allow: POST, OPTIONS\r\n");
        return;
    }
    if (session_open(*sid, who->presented, who->presented_n, who->now, who->now_s, &s) < 0) {
        conn_reject(c, 404, -32001, "Session not found", NULL);
        return;
    }
    if (ended_add(&s, who->now, who->now_s) < 0) {
        conn_reject(c, 503, E_SERVER,
                    "Service Unavailable: too many sessions were ended here recently to remember another; the session stays open, retry later",
                    "Retry-After: 60\r\n");
        return;
    }
    conn_simple(c, 200, "{}", NULL);
}

/* Content-Type and Accept; sets c->want_sse when only a stream is accepted. */
static int mcp_check_media(struct conn *c)
{
    const struct view *h = http_header(&c->req, "content-type");
    if (!h || !view_icontains(*h, "application/json")) {
        conn_reject(c, 415, E_SERVER, "Unsupported Media Type: Content-Type must be application/json", NULL);
        return -1;
    }
    h = http_header(&c->req, "accept");
    c->want_sse = 0;
    if (h && !view_icontains(*h, "application/json") && !view_icontains(*h, "*/*")) {
        if (!view_icontains(*h, "text/event-stream")) {
            conn_reject(c, 406, E_SERVER, "Not Acceptable: Accept must include application/json or text/event-stream", NULL);
            return -1;
        }
        c->want_sse = 1;
    }
    return 0;
}

/* The body: JSON, within the token limit, and by the message rules. */
static int mcp_read_body(struct conn *c, struct jdoc *d)
{
    const char *why = NULL;
    size_t at = 0;
    char m[200], rule[150];
    int r = conn_parse_body(c, d, &why, &at);
    if (r == -2) {
        snprintf(m, sizeof m, "Invalid Request: the message has more than %d JSON tokens (CM_JSON_TOKENS)", CM_JSON_TOKENS);
        conn_reject(c, 400, E_INVALID_REQUEST, m, NULL);
        return -1;
    }
    if (r < 0) {
        snprintf(m, sizeof m, "Parse error: %s at byte %lu", why ? why : "invalid JSON", (unsigned long)at);
        conn_reject(c, 400, E_PARSE, m, NULL);
        return -1;
    }
    if (json_message_rules(d, c->body, rule, sizeof rule) < 0) {
        snprintf(m, sizeof m, "Invalid Request: %s", rule);
        conn_reject(c, 400, E_INVALID_REQUEST, m, NULL);
        return -1;
    }
    rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);
    c->note.method = note_method(d);
    return 0;
}

/* Which era? A message whose params._meta names a protocol version is
 * modern (1); else the session era (0); -1 when refused. */
static int mcp_era(struct conn *c, const struct jdoc *d)
{
    int k, el;
    if (d->t[0].type == JSMN_OBJECT)
        return obj_get(d, obj_get(d, obj_get(d, 0, "params"), "_meta"), "io.modelcontextprotocol/protocolVersion") >= 0;
    if (d->t[0].type != JSMN_ARRAY) {
        conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: expected a JSON-RPC message object", NULL);
        return -1;
    }
    for (k = 0, el = 1; k < d->t[0].size; k++, el = tok_next(d, el))
        if (obj_get(d, obj_get(d, obj_get(d, el, "params"), "_meta"), "io.modelcontextprotocol/protocolVersion") >= 0) {
            conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: batches are not allowed in protocol 2026-07-28", NULL);
            return -1;
        }
    return 0;
}

/* The header names 2026-07-28 but the body has no envelope. -1 (answered) or 0. */
static int mcp_modern_without_envelope(struct conn *c, const struct jdoc *d, const struct view *pver)
{
    if (!pver || pver->n != strlen(MODERN_VERSION) || memcmp(pver->p, MODERN_VERSION, pver->n) < 0 ||
        d->t[0].type != JSMN_OBJECT)
        return 0;
    if (obj_get(d, 0, "id") < 0) { /* a modern notification: the header alone says so */
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 202, NULL, NULL);
        return -1;
    }
    if (tok_is_str(d, obj_get(d, 0, "method"), "initialize")) {
        c->ctx.http_status = 400;
        rpc_error(&c->resp, rpc_id(d, 0), E_HEADER_MISMATCH,
                  "Bad Request: initialize belongs to the session era, but MCP-Protocol-Version names 2026-07-28", NULL);
    } else {
        rpc_error(&c->resp, rpc_id(d, 0), E_INVALID_PARAMS,
                  "Invalid params: protocol 2026-07-28 requires params._meta with io.modelcontextprotocol/protocolVersion and clientCapabilities",
                  "{\"envelope\":{\"key\":\"io.modelcontextprotocol/protocolVersion\",\"problem\":\"missing\"}}");
    }
    note_tool_refused(d, 0);
    mcp_answer(c, 400);
    return -1;
}

/* 2026-07-28: the envelope, and the headers that must repeat the body. */
static int mcp_modern_checks(struct conn *c, const struct jdoc *d, const struct view *pver)
{
    const struct view *hm = http_header(&c->req, "mcp-method"), *hn = http_header(&c->req, "mcp-name");
    int method = obj_get(d, 0, "method");
    struct view empty = {"", 0};
    c->ctx.era = ERA_MODERN;
    c->ctx.version = MODERN_VERSION;
    if (check_envelope(d, 0, &c->resp, &c->ctx, pver ? *pver : empty) < 0) {
        note_tool_refused(d, 0);
        mcp_answer(c, c->ctx.http_status);
        return -1;
    }
    if (!pver || !hm || method < 0 || d->t[method].type != JSMN_STRING || tok_view(d, method).n != hm->n ||
        memcmp(tok_view(d, method).p, hm->p, hm->n) != 0) {
        rpc_error(&c->resp, rpc_id(d, 0), E_HEADER_MISMATCH,
                  !pver ? "Bad Request: the MCP-Protocol-Version header is required"
                        : !hm ? "Bad Request: the Mcp-Method header is required"
                              : "Bad Request: the request headers and body disagree: Mcp-Method differs from method",
                  NULL);
        note_tool_refused(d, 0);
        mcp_answer(c, 400);
        return -1;
    }
    if (check_mcp_name(d, method, hn, &c->resp) < 0 ||
        (tok_is_str(d, method, "tools/call") && check_mcp_params(d, &c->req, &c->resp) < 0)) {
        note_tool_refused(d, 0);
        mcp_answer(c, 400);
        return -1;
    }
    return 0;
}

/* initialize opens a session bound to the token the client presented. */
static void mcp_initialize(struct conn *c, const struct jdoc *d, const struct mcp_caller *who)
{
    char extra[200];
    c->ctx.token = who->presented;
    c->ctx.token_len = who->presented_n;
    handle_initialize(&c->ctx, d, 0, &c->resp, who->now_s);
    extra[0] = 0;
    if (c->ctx.new_session > 0)
        snprintf(extra, sizeof extra, "Mcp-Session-Id: %s\r\n", c->ctx.new_session_id);
    conn_answer(c, c->ctx.http_status, answer_type(c), extra);
}

/* The session era: the protocol version header, then initialize or a
 * session the id proves. -1 when answered (initialize included). */
static int mcp_session_checks(struct conn *c, const struct jdoc *d, const struct view *pver, const struct mcp_caller *who)
{
    const struct view *sid = http_header(&c->req, "mcp-session-id");
    struct session s;
    c->ctx.era = ERA_SESSION;
    c->ctx.version = LATEST_SESSION_VERSION;
    if (pver && !is_session_version(pver->p, pver->n)) {
        char m[320], supported[160];
        supported_versions_json(supported, sizeof supported);
        snprintf(m, sizeof m, "Bad Request: unsupported MCP-Protocol-Version %.*s (supported: %s)",
                 (int)(pver->n > 40 ? 40 : pver->n), pver->p, supported);
        conn_reject(c, 400, E_SERVER, m, NULL);
        return -1;
    }
    if (d->t[0].type == JSMN_OBJECT && tok_is_str(d, obj_get(d, 0, "method"), "initialize")) {
        mcp_initialize(c, d, who);
        return -1;
    }
    if (!sid) {
        conn_reject(c, 400, E_SERVER, "Bad Request: Mcp-Session-Id header is required (send initialize first)", NULL);
        return -1;
    }
    if (session_memo_use(&c->memo, *sid, who->presented, who->presented_n, who->now_s, &s) < 0) {
        if (session_open(*sid, who->presented, who->presented_n, who->now, who->now_s, &s) < 0) {
            conn_reject(c, 404, -32001, "Session not found: it is unknown, expired, ended, or was opened with another token; send initialize again", NULL);
            return -1;
        }
        session_memo_keep(&c->memo, *sid, &s);
    }
    c->ctx.version = s.version; /* the version travels in the id */
    /* only a request that can set the level makes an entry for it */
    c->ctx.log_level = session_level(&s, c->note.method == METHOD_BATCH ||
                                             strcmp(metric_methods[c->note.method], "logging/setLevel") == 0,
                                     who->now, who->now_s);
    return 0;
}

/* A 2025-03-26 (or 2024-11-05) batch: its messages are served one by one. */
static void mcp_batch(struct conn *c, struct jdoc *d)
{
    if (strcmp(c->ctx.version, "2025-03-26") != 0 && strcmp(c->ctx.version, "2024-11-05") != 0) {
        char m[160];
        snprintf(m, sizeof m, "Invalid Request: JSON-RPC batches are not part of protocol %s", c->ctx.version);
        conn_reject(c, 400, E_INVALID_REQUEST, m, NULL);
        return;
    }
    if (d->t[0].size == 0 || d->t[0].size > MAX_BATCH) {
        conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: a batch holds 1 to 16 messages", NULL);
        return;
    }
    c->ctx.batch = 1;
    c->batch_len = d->t[0].size;
    c->batch_pos = 0;
    c->batch_replies = 0;
    c->resp.sse = 0; /* one SSE event for the whole batch */
    rs_str(&c->resp, c->want_sse ? "event: message\ndata: [" : "[");
    conn_continue_batch(c, d);
}

/* One message: answered now, or after the API call it started. */
static void mcp_one(struct conn *c, struct jdoc *d, uint64_t now)
{
    int r = dispatch(&c->ctx, d, 0, &c->resp, &c->pc);
    if (r == D_NO_REPLY) {
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 202, NULL, NULL);
        return;
    }
    if (r == D_PENDING) {
        const struct view *accept = http_header(&c->req, "accept");
        if (c->pc.log_level && accept && view_icontains(*accept, "text/event-stream"))
            c->want_sse = c->resp.sse = 1; /* log messages need a stream: nothing is written yet */
        c->state = C_WAIT_API;
        c->last_ms = now;
        conn_submit(c, d);
        return;
    }
    note_tool_refused(d, 0);
    mcp_answer(c, c->ctx.http_status);
}

/* POST, DELETE and OPTIONS on /mcp. */
static void serve_mcp(struct conn *c)
{
    const struct http_req *q = &c->req;
    const struct view *pver = http_header(q, "mcp-protocol-version");
    struct mcp_caller who;
    struct jdoc d;
    int modern;
    memset(&who, 0, sizeof who);
    who.now = cm_port_now_ms();
    who.now_s = cm_port_unix_time();
    if (view_eq(q->method, "OPTIONS")) {
        mcp_options(c);
        return;
    }
    if (mcp_auth(c, &who) < 0)
        return;
    if (view_eq(q->method, "GET")) {
        conn_reject(c, 405, E_SERVER, "Method Not Allowed: this server sends no server-initiated messages; POST to /mcp",
                    "Allow: POST, DELETE, OPTIONS\r\n");
        return;
    }
    if (view_eq(q->method, "DELETE")) {
        mcp_delete(c, &who);
        return;
    }
    if (!view_eq(q->method, "POST")) {
        conn_reject(c, 405, E_SERVER, "Method Not Allowed: POST JSON-RPC messages to /mcp", "Allow: POST, GET, DELETE, OPTIONS\r\n");
        return;
    }
    if (mcp_check_media(c) < 0 || mcp_read_body(c, &d) < 0 || (modern = mcp_era(c, &d)) < 0)
        return;
    if (modern ? mcp_modern_checks(c, &d, pver) < 0
               : mcp_modern_without_envelope(c, &d, pver) < 0 || mcp_session_checks(c, &d, pver, &who) < 0)
        return;
    if (d.t[0].type == JSMN_ARRAY)
        mcp_batch(c, &d);
    else
        mcp_one(c, &d, who.now);
}

static void conn_try_request(struct conn *c);

/* Reads what arrived and, once a whole request is in, serves it. */
static void conn_read(struct conn *c)
{
    for (;;) {
        long n;
        if (c->in_len == c->in_cap) {
            size_t cap = c->in_cap;
            if (c->state != C_READ)
                break;
            conn_try_request(c); /* serves a whole request; one that filled its own buffer borrows a pool buffer */
            if (c->state != C_READ || c->in_cap == cap)
                return;
            continue; /* (a TLS engine may hold the rest: no poll would tell) */
        }
        n = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == CM_PORT_AGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        if (c->in_len == 0)
            c->req_start_ms = cm_port_now_ms();
        c->in_len += (size_t)n;
        c->last_ms = cm_port_now_ms();
        if ((size_t)n < c->in_cap - (c->in_len - (size_t)n)) {
            if (c->state != C_READ)
                return;
            break; /* a short read emptied the socket: poll tells when more comes */
        }
        if (c->state != C_READ)
            return; /* pipelined bytes wait until the current answer is out */
    }
    conn_try_request(c);
}

/* Parses what is in in[] and serves the request once it is whole. */
static void conn_try_request(struct conn *c)
{
    if (c->state != C_READ || c->in_len == 0)
        return;
    if (!c->head_done) {
        int r = http_parse_head(c->in, c->in_len, c->scanned, CM_MAX_HEADER_BYTES, &c->req);
        c->scanned = c->in_len;
        if (r == 0) {
            conn_need_room(c);
            return;
        }
        if (r < 0) {
            char m[160];
            snprintf(m, sizeof m, "%s: %s", status_reason(-r), c->req.error ? c->req.error : "bad request");
            c->keep_alive = 0;
            c->req_total = c->in_len;
            conn_reject(c, -r, E_SERVER, m, NULL);
            return;
        }
        c->head_done = 1;
        c->keep_alive = c->req.keep_alive;
        if (c->req.content_length > (long)CM_MAX_BODY_BYTES) {
            char m[160];
            snprintf(m, sizeof m, "Payload Too Large: the body is limited to %u bytes (CM_MAX_BODY_BYTES)", (unsigned)CM_MAX_BODY_BYTES);
            c->keep_alive = 0;
            conn_reject(c, 413, E_SERVER, m, NULL);
            return;
        }
    }
    if (c->req.chunked) {
        size_t enc = 0, dec = 0;
        int r = chunked_scan(c->in + c->req.head_len, c->in_len - c->req.head_len, CM_MAX_BODY_BYTES, &enc, &dec);
        if (r == -1) {
            c->keep_alive = 0;
            conn_reject(c, 400, E_SERVER, "Bad Request: malformed chunked body", NULL);
            return;
        }
        if (r == -2 || (r == 0 && c->in_len == IN_BYTES)) {
            c->keep_alive = 0;
            conn_reject(c, 413, E_SERVER, "Payload Too Large: the body is limited by CM_MAX_BODY_BYTES", NULL);
            return;
        }
        if (r == 0)
            goto need_more;
        chunked_decode(c->in + c->req.head_len, enc);
        c->body = c->in + c->req.head_len;
        c->body_len = dec;
        c->req_total = c->req.head_len + enc;
    } else {
        size_t cl = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
        if (c->in_len - c->req.head_len < cl)
            goto need_more;
        c->body = c->in + c->req.head_len;
        c->body_len = cl;
        c->req_total = c->req.head_len + cl;
    }
    conn_process(c);
    return;
need_more:
    conn_need_room(c);
    if (c->req.expect_continue && !c->sent_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->sent_continue = 1;
        (void)conn_send(c, cont, sizeof cont - 1); /* tiny: fits any socket buffer */
    }
}

/*
 * Admission. One client address holds at most cfg.max_conns_per_addr
 * connections (--max-conns-per-addr, default CM_MAX_CONNS_PER_ADDR); a
 * newcomer from an address at that limit can only replace one of its own. Otherwise, when the table is full, a connection that is
 * stalled (CM_SLOW_GRACE_MS into a request still incomplete, connected
 * without a word, or not taking its answer) makes room, and only when none
 * is, a kept-alive one idle CM_EVICT_IDLE_MS. Either must belong to an
 * address that holds more connections than the newcomer's would, unless the
 * newcomer's holds none yet: room goes from the heavy to the light, and slow
 * sockets from a few addresses, however fast they reconnect, neither lock
 * the others out nor push a healthy client off.
 */

/* One client: the same IPv4 address, or the same IPv6 /64. */
static int same_client(const unsigned char *a, const unsigned char *b)
{
    static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    int a4 = memcmp(a, v4_prefix, 12) == 0, b4 = memcmp(b, v4_prefix, 12) == 0;
    return a4 == b4 && memcmp(a, b, a4 ? 16 : 8) == 0;
}

static int conns_from(const unsigned char *peer)
{
    int k, n = 0;
    for (k = 0; k < CM_MAX_CONNS; k++)
        n += conns[k].state != C_FREE && same_client(conns[k].peer, peer);
    return n;
}

/* 1 when c is stalled, with *since the moment it stopped making progress. */
static int conn_stalled(const struct conn *c, uint64_t now, uint64_t *since)
{
    if (c->state == C_READ && !c->parse_pending && (c->in_len > 0 || c->served == 0))
        *since = c->req_start_ms; /* a request incomplete, or none yet */
    else if (c->state == C_WRITE)
        *since = c->last_ms;      /* its answer is not being read */
    else
        return 0;
    return ms_since(now, *since) >= CM_SLOW_GRACE_MS;
}

/* The connection to close so a newcomer from peer fits, or -1: the stalled
 * first (from the address holding the most, then stalled the longest), then
 * idle kept-alive ones, as above. own_only: the newcomer's address is full,
 * so only its own connections are considered. */
static int pick_victim(const unsigned char *peer, int own_only, uint64_t now)
{
    int k, best = -1, best_class = 0, best_count = 0, held = conns_from(peer);
    uint64_t best_since = 0;
    for (k = 0; k < CM_MAX_CONNS; k++) {
        const struct conn *c = &conns[k];
        int cls, count;
        uint64_t since;
        if (c->state == C_FREE || (own_only && !same_client(c->peer, peer)))
            continue;
        count = conns_from(c->peer);
        if (!own_only && held > 0 && count <= held + 1)
            continue; /* not heavier than the newcomer's address would be */
        if (conn_stalled(c, now, &since))
            cls = 0;
        else if (c->state == C_READ && c->in_len == 0 && !c->parse_pending && ms_since(now, c->last_ms) >= CM_EVICT_IDLE_MS)
            cls = 1, since = c->last_ms;
        else
            continue;
        if (best < 0 || cls < best_class ||
            (cls == best_class && (count > best_count || (count == best_count && since < best_since)))) {
            best = k;
            best_class = cls;
            best_count = count;
            best_since = since;
        }
    }
    return best;
}

/* A refusal in one small write (best effort), for sockets about to close. */
static void send_refusal(cm_sock_t s, int status, const char *message)
{
    char body[300], head[600];
    int bn = snprintf(body, sizeof body, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"%s\"}}", message);
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%sConnection: close\r\nContent-Length: %d\r\n\r\n%s",
                      status, status_reason(status), status == 503 ? "Retry-After: 1\r\n" : "", bn, body);
    if (bn > 0 && hn > 0 && (size_t)hn < sizeof head)
        (void)cm_port_send(s, head, (size_t)hn);
}

/* Closes a stalled or idle connection to make room; one caught inside a
 * request is told why. */
static void conn_evict(struct conn *c)
{
    if (c->state == C_READ && c->in_len > 0 && !tls_on()) /* (not in the clear inside TLS) */
        send_refusal(c->sock, 408, "Request Timeout: the request was still incomplete when its connection was needed for another client");
    stat_evicted++;
    conn_close(c);
}

static void accept_all(void)
{
    for (;;) {
        unsigned char peer[16];
        cm_sock_t s = cm_port_accept(listener, peer);
        int i = -1, k, own_full;
        if (s == CM_SOCK_INVALID)
            return;
        own_full = conns_from(peer) >= cfg.max_conns_per_addr;
        for (k = 0; k < CM_MAX_CONNS && !own_full && i < 0; k++)
            if (conns[k].state == C_FREE)
                i = k;
        if (i >= 0 && !conn_tls_slot_free())
            i = -1; /* every TLS engine slot is taken: one is made free as a connection would be */
        if (i < 0 && (i = pick_victim(peer, own_full, cm_port_now_ms())) >= 0)
            conn_evict(&conns[i]);
        if (i < 0) {
            char m[200];
            if (own_full) {
                stat_refused_addr++;
                snprintf(m, sizeof m, "Service Unavailable: this client address already holds %d connections (--max-conns-per-addr), none of them idle or stalled; retry",
                         cfg.max_conns_per_addr);
            } else {
                stat_refused_busy++;
                snprintf(m, sizeof m, "Service Unavailable: all connections are busy, retry");
            }
            if (!tls_on()) /* (a TLS client would need a handshake, which needs a slot: just closed) */
                send_refusal(s, 503, m);
            cm_port_close(s);
            continue;
        }
        conns[i].sock = s;
        memcpy(conns[i].peer, peer, sizeof peer);
        conns[i].served = 0;
        if (conn_attach(&conns[i]) < 0) { /* no TLS engine slot free (CM_TLS_CONNS) */
            stat_refused_busy++;
            cm_port_close(s);
            continue;
        }
        conns[i].state = C_READ;
        conns[i].in_len = 0;
        conn_use_own_buffer(&conns[i]);
        conns[i].held_handle = -1;
        conns[i].pc.handle = -1;
        conn_reset_request(&conns[i]);
        conns[i].last_ms = conns[i].req_start_ms = cm_port_now_ms();
    }
}

/* Closes connections that idle or trickle past their time. */
static void conn_timeouts(uint64_t now)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        uint64_t age = ms_since(now, c->req_start_ms);
        if (c->state != C_FREE && conn_handshake_expired(c, now)) {
            conn_close(c);
        } else if (c->state == C_READ && c->in_len > 0 && age > CM_HEADER_TIMEOUT_MS) {
            c->keep_alive = 0;
            c->req_total = c->in_len;
            conn_reject(c, 408, E_SERVER, "Request Timeout: the request did not arrive in time", NULL);
        } else if (c->state == C_READ && c->in_len > 0 && !c->parse_pending && !c->pool_wait && !c->pool_wake &&
                   CM_MIN_RECV_BYTES_PER_S > 0 &&
                   age > CM_MIN_RECV_AFTER_MS && c->in_len < age * CM_MIN_RECV_BYTES_PER_S / 1000) {
            char m[160];
            snprintf(m, sizeof m, "Request Timeout: the request arrived slower than %d bytes a second (CM_MIN_RECV_BYTES_PER_S)",
                     CM_MIN_RECV_BYTES_PER_S);
            c->keep_alive = 0;
            c->req_total = c->in_len;
            conn_reject(c, 408, E_SERVER, m, NULL);
        } else if ((c->state == C_READ || c->state == C_WRITE) && (c->in_len == 0 || c->state == C_WRITE) &&
                   ms_since(now, c->last_ms) > CM_IDLE_TIMEOUT_MS) {
            conn_close(c);
        }
    }
}

/* The tool call that has waited longest for an API slot, or NULL. */
static struct conn *oldest_waiting_call(void)
{
    struct conn *best = NULL;
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_WAIT_API && c->pc.active && c->pc.handle == PC_IN_LINE &&
            (!best || c->queued_ms < best->queued_ms))
            best = c;
    }
    return best;
}

/* Milliseconds until the oldest waiting call's deadline, or -1 when none waits. */
static int waiting_call_timeout_ms(uint64_t now)
{
    const struct conn *c = oldest_waiting_call();
    uint64_t waited;
    if (!c)
        return -1;
    waited = ms_since(now, c->queued_ms);
    return waited >= CM_UPSTREAM_WAIT_MS ? 0 : (int)(CM_UPSTREAM_WAIT_MS - waited);
}

/* Waiting tool calls get free API slots in the order they came (one that
 * waited CM_UPSTREAM_WAIT_MS ends in a tool error instead). Each turn serves
 * or ends the oldest call; the turns stop when it still finds no slot. */
static void retry_waiting_calls(void)
{
    struct conn *c;
    int turns;
    for (turns = 0; turns < 2 * CM_MAX_CONNS && (c = oldest_waiting_call()) != NULL; turns++) {
        struct jdoc d;
        const char *why;
        size_t at;
        if (conn_parse_body(c, &d, &why, &at) != 0) { /* it parsed before: cannot happen */
            conn_close(c);
            continue;
        }
        if (c->batch_len)
            c->pc.jdoc_args = obj_get(&d, obj_get(&d, batch_element(&d, c->batch_pos), "params"), "arguments");
        else
            c->pc.jdoc_args = obj_get(&d, obj_get(&d, 0, "params"), "arguments");
        if (c->pc.jdoc_args >= 0 && tok_is_null(&d, c->pc.jdoc_args))
            c->pc.jdoc_args = -1;
        conn_submit(c, &d);
        if (c->state == C_WAIT_API && c->pc.active && c->pc.handle == PC_IN_LINE)
            return; /* still no slot: the others wait behind it */
    }
}

static int loop_step(int timeout_ms)
{
    struct cm_pollfd fds[1 + CM_MAX_CONNS + CM_MAX_UPSTREAMS];
    int owner[1 + CM_MAX_CONNS + CM_MAX_UPSTREAMS]; /* conn index, -1 listener, -2-h upstream handle h */
    int up_handle[CM_MAX_UPSTREAMS];
    unsigned n = 0, i, nu;
    uint64_t now = cm_port_now_ms();
    int t;
    if (listener != CM_SOCK_INVALID) {
        fds[n].sock = listener;
        fds[n].events = CM_POLL_IN;
        owner[n++] = -1;
    }
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        short ev = 0;
        if ((c->state == C_READ && !c->pool_wait) || (c->state == C_WAIT_API && c->in_len < c->in_cap))
            ev = CM_POLL_IN;
        else if (c->state == C_WRITE)
            ev = CM_POLL_OUT;
        if (!ev)
            continue;
        fds[n].sock = c->sock;
        fds[n].events = conn_poll_events(c, ev);
        owner[n++] = (int)i;
    }
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].parse_pending || conns[i].pool_wake)
            timeout_ms = 0; /* pipelined requests, or a request that got its pool buffer, are waiting */
    nu = up_pollfds(fds + n, CM_MAX_UPSTREAMS, up_handle);
    for (i = 0; i < nu; i++)
        owner[n + i] = -2 - up_handle[i];
    n += nu;
    t = up_next_timeout_ms(now);
    if (t >= 0 && (timeout_ms < 0 || t < timeout_ms))
        timeout_ms = t;
    t = waiting_call_timeout_ms(now);
    if (t >= 0 && (timeout_ms < 0 || t < timeout_ms))
        timeout_ms = t;
    if (timeout_ms < 0 || timeout_ms > 1000)
        timeout_ms = 1000; /* timeouts are checked at least once a second */
    if (cm_port_poll(fds, n, timeout_ms) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (!fds[i].revents)
            continue;
        if (owner[i] == -1) {
            accept_all();
        } else if (owner[i] <= -2) {
            up_on_ready(-2 - owner[i], fds[i].revents);
        } else {
            struct conn *c = &conns[owner[i]];
            if (c->state == C_WRITE)
                conn_write(c);
            else if (c->state == C_READ || c->state == C_WAIT_API)
                conn_read(c);
        }
    }
    for (i = 0; i < CM_MAX_CONNS; i++) {
        if (conns[i].parse_pending) {
            conns[i].parse_pending = 0;
            conn_try_request(&conns[i]);
        }
        if (conns[i].pool_wake) {
            conns[i].pool_wake = 0;
            if (conns[i].state == C_READ)
                conn_read(&conns[i]);
        }
    }
    now = cm_port_now_ms();
    up_tick(now);
    retry_waiting_calls();
    conn_timeouts(now);
    return 0;
}

/*
 * Graceful stop: cm_shutdown() closes the listener (a balancer sends new
 * clients elsewhere), closes kept-alive connections that sit between
 * requests, and lets every request already in (tool calls waiting on the
 * API or for a slot included) finish and be answered with Connection:
 * close. cm_poll() returns 1 once none is left, or when CM_DRAIN_MS passed.
 */
static int draining;
static uint64_t drain_deadline_ms;

void cm_shutdown(void)
{
    if (!server_started || draining)
        return;
    draining = 1;
    drain_deadline_ms = cm_port_now_ms() + CM_DRAIN_MS;
    cm_port_close(listener);
    listener = CM_SOCK_INVALID;
    cm_logf(CM_LOG_INFO, "stopping: no new connections; finishing %d open ones (up to %d ms)", conns_in_use(), CM_DRAIN_MS);
}

/* 1 when the drain is over. */
static int drain_step(uint64_t now)
{
    int i, left = 0;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_FREE)
            continue;
        if (c->state == C_READ && c->in_len == 0 && !c->parse_pending) {
            conn_close(c); /* between requests: nothing is lost */
            continue;
        }
        c->close_after = 1;
        left++;
    }
    if (left && now < drain_deadline_ms)
        return 0;
    if (left)
        cm_logf(CM_LOG_WARN, "stopping: CM_DRAIN_MS (%d ms) passed with %d connections unanswered", CM_DRAIN_MS, left);
    else
        cm_logf(CM_LOG_INFO, "stopping: every request was answered");
    return 1;
}

int cm_poll(int timeout_ms)
{
    if (!server_started)
        return -1;
    if (loop_step(draining ? (timeout_ms < 0 || timeout_ms > 100 ? 100 : timeout_ms) : timeout_ms) < 0)
        return -1;
    return draining ? drain_step(cm_port_now_ms()) : 0;
}

/* ===================================================================== */
/* 11b. OAuth sign-in and pages                                          */
/* ===================================================================== */
/*
 * With --oauth and --public-url the server is a small OAuth 2.1
 * authorization server for its own /mcp (the MCP authorization spec: RFC
 * 9728 resource metadata, RFC 8414 server metadata, RFC 7591 registration,
 * RFC 7636 PKCE) and keeps no store. Everything it hands out is sealed:
 *
 *   client id      (/register) the client's name and redirect URIs
 *   code           (/authorize) the user's Cal ID key, the PKCE challenge,
 *                  the client and the redirect URI; CM_OAUTH_CODE_TTL_S
 *   access token   (/token) the key, the client, the audience; an hour
 *   refresh token  the same for 30 days; every refresh hands out a new one
 *
 * A sealed value is PREFIX + base64url(nonce | ChaCha20-Poly1305(fields) |
 * tag) under a key derived from the server secret, the prefix being the
 * associated data, so one kind never passes for another and any instance
 * with the same secret opens it. What must not be accepted twice (a code, a
 * rotated refresh token) is remembered in small fixed tables until it
 * expires.
 *
 * The consent page checks the key with one GET /users/me through the
 * upstream client before anything is issued. The key is never logged, never
 * put in a URL or a page, and leaves this server only sealed, or in the
 * Authorization header of API requests.
 */
#if CM_OAUTH
#ifndef CM_OAUTH_ACCESS_TTL_S
#define CM_OAUTH_ACCESS_TTL_S 3600L              /* access token lifetime */
#endif
#ifndef CM_OAUTH_REFRESH_TTL_S
#define CM_OAUTH_REFRESH_TTL_S (30L * 24 * 3600) /* refresh token lifetime */
#endif
#ifndef CM_OAUTH_CODE_TTL_S
#define CM_OAUTH_CODE_TTL_S 120L                 /* an authorization code is exchanged within this */
#endif
#ifndef CM_OAUTH_FORM_TTL_S
#define CM_OAUTH_FORM_TTL_S 3600L                /* a consent form may be sent this long after it was shown */
#endif
#ifndef CM_OAUTH_USED_CODES
#define CM_OAUTH_USED_CODES 128   /* codes remembered as used until they expire: exchanges per code lifetime */
#endif
#ifndef CM_OAUTH_USED_REFRESH
#define CM_OAUTH_USED_REFRESH 256 /* rotated refresh tokens remembered; when full the soonest to expire is forgotten */
#endif
#ifndef CM_OAUTH_RATE_SLOTS
#define CM_OAUTH_RATE_SLOTS 32    /* client addresses whose key checks are counted at once */
#endif
#ifndef CM_OAUTH_KEY_CHECKS
#define CM_OAUTH_KEY_CHECKS 10    /* key checks one address may make per window */
#endif
#ifndef CM_OAUTH_RATE_WINDOW_MS
#define CM_OAUTH_RATE_WINDOW_MS 60000
#endif
#define OA_URI_MAX 512            /* one redirect URI */
#define OA_REDIRECTS_MAX 4        /* redirect URIs per client */
#define OA_NAME_MAX 100           /* client_name bytes */
#define OA_STATE_MAX 256          /* state bytes */
#define OA_BASE_MAX 200           /* the public URL */
#define OA_PLAIN_MAX 2400         /* the fields of one sealed value */
#define OA_SEALED_MAX (8 + (OA_PLAIN_MAX + 28 + 2) / 3 * 4) /* its text */
#define OA_LOCATION_MAX 1700      /* a redirect back to the client (fits the connection's header buffer) */

#define CLIENT_PREFIX "cmcl_"
enum { G_CODE, G_ACCESS, G_REFRESH };
static const char *const grant_prefix[] = {"cmco_", "cmat_", "cmrt_"};

static char public_host[OA_BASE_MAX + 1];  /* "host[:port]" as a Host header names it */
static char public_base[OA_BASE_MAX + 16]; /* "https://" + public_host: the issuer */
static char audience[OA_BASE_MAX + 24];    /* public_base + "/mcp": the protected resource */
static unsigned char seal_key[32], csrf_key[32];
static unsigned char plain_buf[OA_PLAIN_MAX];        /* fields being sealed */
static unsigned char seal_buf[OA_PLAIN_MAX + 28];    /* nonce | ciphertext | tag */
static unsigned char open_buf[OA_PLAIN_MAX + 28 + 3];/* an opened value: fields at +12 */
static char oa_location[OA_LOCATION_MAX + 64];
static char oa_extra[OA_LOCATION_MAX + 160];         /* headers of a redirect */

/* ---- base64url, hashes ---- */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        out[o++] = a[in[i] >> 2];
        out[o++] = a[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 8 | in[i + 1];
        out[o++] = a[v >> 10];
        out[o++] = a[(v >> 4) & 63];
        out[o++] = a[(v & 15) << 2];
    }
    out[o] = 0;
    return o;
}

static void sha256_of(const void *p, size_t n, unsigned char out[32])
{
    br_sha256_context h;
    br_sha256_init(&h);
    br_sha256_update(&h, p, n);
    br_sha256_out(&h, out);
}

/* The first 16 bytes of SHA-256: binds a value without carrying it. */
static void hash16(const void *p, size_t n, unsigned char out[16])
{
    unsigned char full[32];
    sha256_of(p, n, full);
    memcpy(out, full, 16);
}

/* ---- sealing ---- */
struct pack {
    unsigned char *p;
    size_t cap, len;
    int bad;
};

static void pk_raw(struct pack *k, const void *s, size_t n)
{
    if (k->bad || n > k->cap - k->len) {
        k->bad = 1;
        return;
    }
    memcpy(k->p + k->len, s, n);
    k->len += n;
}

static void pk_u64(struct pack *k, uint64_t v)
{
    unsigned char b[8];
    int i;
    for (i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    pk_raw(k, b, 8);
}

static void pk_str(struct pack *k, const char *s, size_t n)
{
    unsigned char len[2];
    len[0] = (unsigned char)(n >> 8);
    len[1] = (unsigned char)n;
    if (n > 0xffff)
        k->bad = 1;
    pk_raw(k, len, 2);
    pk_raw(k, s, n);
}

struct unpack {
    const unsigned char *p;
    size_t n, i;
    int bad;
};

static const unsigned char *uk_raw(struct unpack *u, size_t n)
{
    const unsigned char *at = u->p + u->i;
    if (u->bad || n > u->n - u->i) {
        u->bad = 1;
        return NULL;
    }
    u->i += n;
    return at;
}

static uint64_t uk_u64(struct unpack *u)
{
    const unsigned char *b = uk_raw(u, 8);
    uint64_t v = 0;
    int i;
    for (i = 0; b && i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static struct view uk_str(struct unpack *u)
{
    struct view v = {"", 0};
    const unsigned char *len = uk_raw(u, 2), *s;
    if (!len)
        return v;
    s = uk_raw(u, (size_t)len[0] << 8 | len[1]);
    if (s) {
        v.p = (const char *)s;
        v.n = (size_t)len[0] << 8 | len[1];
    }
    return v;
}

/* Seals n bytes of plain_buf as PREFIX + base64url text into out. 0 or -1. */
static int seal(const char *prefix, size_t n, char *out, size_t cap)
{
    size_t plen = strlen(prefix);
    if (n > OA_PLAIN_MAX || plen + (n + 28 + 2) / 3 * 4 + 1 > cap || cm_port_random(seal_buf, 12) < 0)
        return -1;
    memcpy(seal_buf + 12, plain_buf, n);
    br_poly1305_ctmul_run(seal_key, seal_buf, seal_buf + 12, n, prefix, plen, seal_buf + 12 + n, br_chacha20_ct_run, 1);
    memcpy(out, prefix, plen);
    b64url_encode(seal_buf, n + 28, out + plen);
    return 0;
}

/* Opens text sealed under prefix: the fields land at open_buf + 12 and their
 * length is returned, or -1 when text is not one (tampered, another kind,
 * another server's secret). */
static long unseal(const char *prefix, struct view text)
{
    size_t plen = strlen(prefix);
    unsigned char tag[16];
    long n;
    if (text.n <= plen || text.n > OA_SEALED_MAX || memcmp(text.p, prefix, plen) != 0)
        return -1;
    n = base64_decode(text.p + plen, text.n - plen, open_buf, sizeof open_buf);
    if (n < 28)
        return -1;
    br_poly1305_ctmul_run(seal_key, open_buf, open_buf + 12, (size_t)n - 28, prefix, plen, tag, br_chacha20_ct_run, 0);
    if (!const_time_eq(tag, 16, open_buf + n - 16, 16))
        return -1;
    return n - 28;
}

/* ---- what the sealed values carry ---- */
struct oa_client {
    struct view name;
    int n_uris;
    struct view uri[OA_REDIRECTS_MAX];
};

/* Opens a client id from /register. 0, or -1 when it is not one of ours. Its
 * views live in open_buf until the next unseal. */
static int client_open(struct view id, struct oa_client *cl)
{
    long n = unseal(CLIENT_PREFIX, id);
    struct unpack u;
    const unsigned char *count;
    int i;
    if (n < 0)
        return -1;
    u.p = open_buf + 12;
    u.n = (size_t)n;
    u.i = 0;
    u.bad = 0;
    (void)uk_u64(&u); /* issued at */
    cl->name = uk_str(&u);
    count = uk_raw(&u, 1);
    cl->n_uris = count && *count <= OA_REDIRECTS_MAX ? *count : 0;
    for (i = 0; i < cl->n_uris; i++)
        cl->uri[i] = uk_str(&u);
    return u.bad || cl->n_uris == 0 ? -1 : 0;
}

struct grant {
    int64_t exp;                 /* unix seconds */
    unsigned char id[16];        /* names a code or refresh token in the used tables */
    unsigned char client[16];    /* hash16 of the client id */
    unsigned char challenge[32]; /* code: the PKCE S256 challenge, decoded */
    unsigned char redirect[16];  /* code: hash16 of the redirect URI sent, zero when none was */
    struct view audience, key;
};

static int grant_seal(int kind, const struct grant *g, char *out, size_t cap)
{
    struct pack k;
    k.p = plain_buf;
    k.cap = sizeof plain_buf;
    k.len = 0;
    k.bad = 0;
    pk_u64(&k, (uint64_t)g->exp);
    pk_raw(&k, g->id, 16);
    pk_raw(&k, g->client, 16);
    if (kind == G_CODE) {
        pk_raw(&k, g->challenge, 32);
        pk_raw(&k, g->redirect, 16);
    }
    pk_str(&k, g->audience.p, g->audience.n);
    pk_str(&k, g->key.p, g->key.n);
    return k.bad ? -1 : seal(grant_prefix[kind], k.len, out, cap);
}

enum { OPEN_OK = 0, OPEN_BAD = -1, OPEN_EXPIRED = -2, OPEN_AUDIENCE = -3 };

/* Opens a code or token of this kind and checks its expiry and audience. */
static int grant_open(int kind, struct view text, struct grant *g, int64_t now)
{
    long n = unseal(grant_prefix[kind], text);
    struct unpack u;
    const unsigned char *b;
    if (n < 0)
        return OPEN_BAD;
    memset(g, 0, sizeof *g);
    u.p = open_buf + 12;
    u.n = (size_t)n;
    u.i = 0;
    u.bad = 0;
    g->exp = (int64_t)uk_u64(&u);
    if ((b = uk_raw(&u, 16)) != NULL)
        memcpy(g->id, b, 16);
    if ((b = uk_raw(&u, 16)) != NULL)
        memcpy(g->client, b, 16);
    if (kind == G_CODE) {
        if ((b = uk_raw(&u, 32)) != NULL)
            memcpy(g->challenge, b, 32);
        if ((b = uk_raw(&u, 16)) != NULL)
            memcpy(g->redirect, b, 16);
    }
    g->audience = uk_str(&u);
    g->key = uk_str(&u);
    if (u.bad || u.i != u.n)
        return OPEN_BAD;
    if (g->exp <= now)
        return OPEN_EXPIRED;
    if (!view_eq(g->audience, audience))
        return OPEN_AUDIENCE;
    return OPEN_OK;
}

/* ---- what is remembered: used codes, rotated refresh tokens, key checks ---- */
struct used_id {
    unsigned char id[16];
    int64_t exp;
};
static struct used_id used_codes[CM_OAUTH_USED_CODES], used_refresh[CM_OAUTH_USED_REFRESH];

/* Marks id used until exp: 1 marked now, 0 it was used before, -1 no room
 * (every entry still live and evict not set). */
static int used_mark(struct used_id *t, int n, const unsigned char id[16], int64_t exp, int64_t now, int evict)
{
    int i, pick = -1, soonest = 0;
    for (i = 0; i < n; i++) {
        if (t[i].exp > now && memcmp(t[i].id, id, 16) == 0)
            return 0;
        if (t[i].exp <= now && pick < 0)
            pick = i;
        if (t[i].exp < t[soonest].exp)
            soonest = i;
    }
    if (pick < 0) {
        if (!evict)
            return -1;
        pick = soonest;
    }
    memcpy(t[pick].id, id, 16);
    t[pick].exp = exp;
    return 1;
}

struct rate_slot {
    char host[48];
    uint64_t since_ms;
    unsigned count;
};
static struct rate_slot rate_slots[CM_OAUTH_RATE_SLOTS];

/* Counts one key check from host: 0 allowed, -1 over CM_OAUTH_KEY_CHECKS. */
static int rate_take(const char *host, uint64_t now)
{
    int i, pick = -1, oldest = 0;
    for (i = 0; i < CM_OAUTH_RATE_SLOTS; i++) {
        struct rate_slot *s = &rate_slots[i];
        if (s->count && ms_since(now, s->since_ms) >= CM_OAUTH_RATE_WINDOW_MS)
            s->count = 0; /* its window is over */
        if (s->count && strcmp(s->host, host) == 0) {
            if (s->count >= CM_OAUTH_KEY_CHECKS)
                return -1;
            s->count++;
            return 0;
        }
        if (!s->count && pick < 0)
            pick = i;
        if (rate_slots[i].since_ms < rate_slots[oldest].since_ms)
            oldest = i;
    }
    if (pick < 0)
        pick = oldest; /* every slot counting: the longest-counting address starts over */
    snprintf(rate_slots[pick].host, sizeof rate_slots[pick].host, "%s", host);
    rate_slots[pick].since_ms = now;
    rate_slots[pick].count = 1;
    return 0;
}

/* ---- form and query parameters ---- */
struct oa_form {
    char response_type[16], client_id[OA_SEALED_MAX + 1], redirect_uri[OA_URI_MAX + 1],
        state[OA_STATE_MAX + 1], code_challenge[64], code_challenge_method[16], resource[OA_URI_MAX + 1],
        csrf[64], action[16], api_key[OA_KEY_MAX + 1], grant_type[32], code[OA_SEALED_MAX + 1],
        code_verifier[160], refresh_token[OA_SEALED_MAX + 1];
};
static struct oa_form form;
static size_t form_key_at, form_key_len; /* where api_key's raw value was in what form_parse read */

#define FORM_FIELD(f) {#f, offsetof(struct oa_form, f), sizeof form.f}
static const struct form_field {
    const char *name;
    size_t off, cap;
} form_fields[] = {
    FORM_FIELD(response_type), FORM_FIELD(client_id), FORM_FIELD(redirect_uri), FORM_FIELD(state),
    FORM_FIELD(code_challenge), FORM_FIELD(code_challenge_method), FORM_FIELD(resource), FORM_FIELD(csrf),
    FORM_FIELD(action), FORM_FIELD(api_key), FORM_FIELD(grant_type), FORM_FIELD(code),
    FORM_FIELD(code_verifier), FORM_FIELD(refresh_token),
};
#define N_FORM_FIELDS (sizeof form_fields / sizeof form_fields[0])

/* Decodes one application/x-www-form-urlencoded value ('+', %XX). -1 on a
 * bad escape, a NUL, or more than cap - 1 bytes. */
static int form_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 || hexval((unsigned char)s[i + 2]) < 0)
                return -1;
            c = hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2]);
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return 0;
}

/* Fills form from a query string or form body. Unknown names are ignored, as
 * OAuth asks; a known one given twice or too long is refused (*bad names it). */
static int form_parse(const char *p, size_t n, const char **bad)
{
    size_t i = 0;
    unsigned seen = 0;
    memset(&form, 0, sizeof form);
    form_key_at = form_key_len = 0;
    while (i < n) {
        size_t e = i, eq;
        unsigned k;
        while (e < n && p[e] != '&')
            e++;
        for (eq = i; eq < e && p[eq] != '='; eq++)
            ;
        for (k = 0; k < N_FORM_FIELDS; k++) {
            const struct form_field *f = &form_fields[k];
            if (eq - i != strlen(f->name) || memcmp(p + i, f->name, eq - i) != 0)
                continue;
            *bad = f->name;
            if ((seen & (1u << k)) || eq == e || form_decode(p + eq + 1, e - eq - 1, (char *)&form + f->off, f->cap) < 0)
                return -1;
            seen |= 1u << k;
            if (f->off == offsetof(struct oa_form, api_key)) {
                form_key_at = eq + 1;
                form_key_len = e - eq - 1;
            }
        }
        i = e + 1;
    }
    return 0;
}

/* ---- the public URL ---- */
static void secret_derive(const char *label, unsigned char out[32]); /* in "Start, stop, sizes" */

static int isalnum_ascii(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

static int strncasecmp_ascii(const char *a, const char *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 1;
    return 0;
}

static int is_host_char(int c) { return isalnum_ascii(c) || c == '.' || c == '-'; }

/* Length of "host[:port]" at s ("[v6]" hosts too), or 0 when it is not one. */
static size_t authority_len(const char *s)
{
    size_t i = 0;
    if (s[0] == '[') {
        while (s[i] && s[i] != ']' && (hexval((unsigned char)s[i]) >= 0 || s[i] == ':' || s[i] == '[' || s[i] == '.'))
            i++;
        if (s[i] != ']' || i < 3)
            return 0;
        i++;
    } else {
        while (is_host_char((unsigned char)s[i]))
            i++;
        if (i == 0)
            return 0;
    }
    if (s[i] == ':') {
        size_t d = ++i;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d || i - d > 5)
            return 0;
    }
    return i;
}

/* Is the host of an authority ("localhost:3000") a loopback name or address? */
static int authority_is_loopback(const char *s, size_t n)
{
    struct view host = {s, n};
    if (n > 4 && memcmp(s, "127.", 4) == 0) { /* any of 127/8, with or without a port */
        size_t i = 4;
        while (i < n && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')))
            i++;
        return i == n || s[i] == ':';
    }
    return host_is_loopback_name(host);
}

/* Checks --oauth and --public-url, and derives the sealing keys. 0, or -1 with err. */
static int oauth_start(char *err, size_t errlen)
{
    const char *u = cfg.public_url, *auth;
    size_t n;
    int https;
    public_base[0] = public_host[0] = audience[0] = 0;
    secret_derive("calid-mcp oauth seal", seal_key);
    secret_derive("calid-mcp oauth form", csrf_key);
    if (cfg.oauth && cfg.api_key) {
        snprintf(err, errlen, "--oauth gives every user their own key: it cannot be used with --api-key");
        return -1;
    }
    if (!u || !u[0]) {
        if (!cfg.oauth)
            return 0;
        snprintf(err, errlen, "--oauth needs --public-url https://HOST[:PORT], the address clients reach this server at");
        return -1;
    }
    https = strncmp(u, "https://", 8) == 0;
    auth = u + (https ? 8 : 7);
    n = (https || strncmp(u, "http://", 7) == 0) ? authority_len(auth) : 0;
    if (n == 0 || (auth[n] && strcmp(auth + n, "/") != 0) || n > OA_BASE_MAX) {
        snprintf(err, errlen, "--public-url must be https://HOST[:PORT] with no path (got '%s')", u);
        return -1;
    }
    if (!https && !authority_is_loopback(auth, n)) {
        snprintf(err, errlen, "--public-url must be https:// (http:// only for a loopback address): sign-in sends keys through it");
        return -1;
    }
    /* the default port: browsers leave it out of Host and Origin */
    if (https && n > 4 && memcmp(auth + n - 4, ":443", 4) == 0)
        n -= 4;
    else if (!https && n > 3 && memcmp(auth + n - 3, ":80", 3) == 0)
        n -= 3;
    snprintf(public_host, sizeof public_host, "%.*s", (int)n, auth);
    snprintf(public_base, sizeof public_base, "%s://%s", https ? "https" : "http", public_host);
    snprintf(audience, sizeof audience, "%s/mcp", public_base);
    if (!https)
        cm_logf(CM_LOG_WARN, "--public-url %s is plain http: use it only for tests on this machine", public_base);
    if (cfg.oauth && !cfg.secret_file)
        cm_logf(CM_LOG_WARN, "--oauth without --secret-file: every sign-in ends when the server restarts");
    return 0;
}

/* Requests naming the public URL pass the DNS rebinding check (section 11). */
static int oauth_is_public_host(struct view host) { return public_host[0] && view_ieq(host, public_host); }
static int oauth_is_public_origin(struct view origin) { return public_base[0] && view_ieq(origin, public_base); }

/* Why u cannot be a redirect URI, or NULL when it can: https, http to a
 * loopback host (RFC 8252 native apps), or a private-use scheme such as
 * cursor:// or com.example.app:/ ; no fragment, no user info, visible ASCII. */
static const char *redirect_uri_problem(const char *u)
{
    static const char *const refused[] = {"javascript", "data", "file", "vbscript", "blob", "about", "ftp", "ws", "wss"};
    size_t i, s = 0, n = strlen(u);
    if (n == 0 || n > OA_URI_MAX)
        return "a redirect URI must hold 1 to 512 bytes";
    for (i = 0; i < n; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f || u[i] == '#' || u[i] == '"' || u[i] == '<' || u[i] == '>')
            return "a redirect URI must be visible ASCII without spaces, quotes, angle brackets or a #fragment";
    while (s < n && (isalnum_ascii(u[s]) || (s > 0 && (u[s] == '+' || u[s] == '.' || u[s] == '-'))))
        s++;
    if (s > 0 && (u[0] < 'A' || (u[0] > 'Z' && u[0] < 'a') || u[0] > 'z'))
        s = 0; /* a scheme starts with a letter */
    if (s == 0 || u[s] != ':' || s + 1 == n)
        return "a redirect URI must be an absolute URI (scheme:...)";
    if (s == 5 && strncmp(u, "https", 5) == 0) {
        size_t a = strncmp(u + 5, "://", 3) == 0 ? authority_len(u + 8) : 0;
        if (a == 0 || (u[8 + a] && u[8 + a] != '/' && u[8 + a] != '?'))
            return "an https redirect URI needs a host (https://host[:port]/path), without user info";
        return NULL;
    }
    if (s == 4 && strncmp(u, "http", 4) == 0) {
        size_t a = strncmp(u + 4, "://", 3) == 0 ? authority_len(u + 7) : 0;
        if (a == 0 || (u[7 + a] && u[7 + a] != '/' && u[7 + a] != '?') || !authority_is_loopback(u + 7, a))
            return "an http redirect URI must point at this device's loopback (http://127.0.0.1:PORT/..., http://localhost:PORT/...); use https otherwise";
        return NULL;
    }
    for (i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strlen(refused[i]) == s && strncasecmp_ascii(u, refused[i], s) == 0)
            return "this URI scheme cannot receive a sign-in (use https, loopback http or the app's own scheme)";
    return NULL;
}

/* ---- the consent form's CSRF token: the time it was made and a MAC over
 * it and the request it belongs to ---- */
static void csrf_mac(int64_t ts, unsigned char out[16])
{
    const char *parts[5];
    unsigned char t[8], full[32];
    br_hmac_key_context kc;
    br_hmac_context hc;
    int i;
    parts[0] = form.client_id, parts[1] = form.redirect_uri, parts[2] = form.state;
    parts[3] = form.code_challenge, parts[4] = form.resource;
    for (i = 7; i >= 0; i--, ts >>= 8)
        t[i] = (unsigned char)ts;
    br_hmac_key_init(&kc, &br_sha256_vtable, csrf_key, sizeof csrf_key);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, t, 8);
    for (i = 0; i < 5; i++)
        br_hmac_update(&hc, parts[i], strlen(parts[i]) + 1); /* the NUL separates them */
    br_hmac_out(&hc, full);
    memcpy(out, full, 16);
}

static void csrf_make(char out[64])
{
    unsigned char raw[24];
    int64_t now = cm_port_unix_time();
    int i;
    for (i = 7; i >= 0; i--)
        raw[i] = (unsigned char)((uint64_t)now >> (8 * (7 - i)));
    csrf_mac(now, raw + 8);
    b64url_encode(raw, sizeof raw, out);
}

static int csrf_ok(void)
{
    unsigned char raw[32], want[16];
    int64_t ts = 0, now = cm_port_unix_time();
    int i;
    if (base64_decode(form.csrf, strlen(form.csrf), raw, sizeof raw) != 24)
        return 0;
    for (i = 0; i < 8; i++)
        ts = (int64_t)((uint64_t)ts << 8 | raw[i]);
    if (ts > now + 60 || now - ts > CM_OAUTH_FORM_TTL_S)
        return 0;
    csrf_mac(ts, want);
    return const_time_eq(want, 16, raw + 8, 16);
}

/* ---- pages: one stylesheet, const templates, escaped substitutions ---- */
static const char page_css[] =
    ":root{color-scheme:light dark;--fg:#17202e;--bg:#f3f5f8;--card:#fff;--line:#d5dae3;--muted:#566074;"
    "--accent:#1f5bd8;--accent-fg:#fff;--bad:#b42318;--bad-bg:#fdecea;--code:#eef1f6}\n"
    "@media (prefers-color-scheme:dark){:root{--fg:#e7ebf2;--bg:#10141b;--card:#19202b;--line:#2e3846;"
    "--muted:#a3adbd;--accent:#6f9cff;--accent-fg:#0b1020;--bad:#ff8a80;--bad-bg:#3a1d1d;--code:#0d1117}}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.55 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif}\n"
    "main{max-width:46rem;margin:0 auto;padding:1rem}\n"
    ".brand{font-weight:600;color:var(--muted);margin:.5rem 0 1rem;letter-spacing:.02em}\n"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:1.25rem;margin:0 0 1rem}\n"
    ".card>:first-child{margin-top:0}\n"
    "h1{font-size:1.45rem;line-height:1.25;margin:0 0 .75rem}h2{font-size:1.1rem;margin:1.25rem 0 .5rem}"
    "h3{font-size:1rem;margin:1rem 0 .35rem}\n"
    "p,ul{margin:.5rem 0}li{margin:.2rem 0}.muted,.hint,footer{color:var(--muted)}.hint{font-size:.9rem}\n"
    "a{color:var(--accent)}code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}\n"
    "pre{background:var(--code);border:1px solid var(--line);border-radius:10px;padding:.75rem;overflow-x:auto;"
    "font-size:.85rem;line-height:1.45}pre code{overflow-wrap:normal}\n"
    ".url code{display:block;padding:.6rem .75rem;background:var(--code);border-radius:8px;font-size:1rem}\n"
    "label{display:block;font-weight:600;margin:1rem 0 .35rem}\n"
    "input[type=password]{width:100%;font:inherit;padding:.75rem;border:1px solid var(--line);border-radius:10px;"
    "background:var(--bg);color:var(--fg)}\n"
    ".actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}\n"
    "button{flex:1 1 10rem;font:inherit;font-weight:600;padding:.8rem 1rem;border-radius:10px;border:1px solid var(--accent);"
    "background:var(--accent);color:var(--accent-fg);cursor:pointer}\n"
    "button.secondary{background:transparent;color:var(--fg);border-color:var(--line)}\n"
    ".error{background:var(--bad-bg);color:var(--bad);border-left:4px solid var(--bad);padding:.6rem .8rem;border-radius:6px}\n"
    ".ok{color:#1a7f37}footer{font-size:.85rem;text-align:center;margin:1rem 0 2rem}\n";

#define PAGE_HEAD                                                                                          \
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"                                      \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"                               \
    "<link rel=\"stylesheet\" href=\"/style.css\">"
#define PAGE_FOOT "<footer>calid-mcp " CM_VERSION " &middot; <a href=\"/\">about this server</a></footer>\n</main></body></html>\n"

/* Headers of every page: never cached, never framed (clickjacking), no
 * script at all, the address (with its query) never sent to another site.
 * same-origin rather than no-referrer: under no-referrer a browser sends the
 * sign-in form with "Origin: null", which the origin check must refuse. */
#define PAGE_HEADERS                                                                                       \
    "Cache-Control: no-store\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"              \
    "Referrer-Policy: same-origin\r\n"                                                                     \
    "Content-Security-Policy: default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'\r\n"

static const char consent_page[] =
    PAGE_HEAD "<title>Sign in to Cal ID: {{client}}</title></head>\n<body><main>\n"
    "<div class=\"brand\">Cal ID &middot; MCP server</div>\n<section class=\"card\">\n"
    "<h1>Allow <b>{{client}}</b> to use your Cal ID account?</h1>\n"
    "<p class=\"muted\">{{client}} asks to sign in to the Cal ID MCP server at <code>{{issuer}}</code>. "
    "Afterwards you go back to <code>{{return_to}}</code>.</p>\n"
    "{{error_open}}{{error}}{{error_close}}"
    "<h2>It will be able to</h2>\n<ul>\n"
    "<li>read your profile, event types, schedules, availability, bookings, contacts and teams</li>\n"
    "<li>book, reschedule and cancel meetings, and change event types, schedules, contacts and webhooks</li>\n"
    "<li>keep doing so while it is used (a sign-in lapses after 30 days unused); deleting the key in Cal ID ends it</li>\n</ul>\n"
    "<form method=\"post\" action=\"/authorize\">\n"
    "<label for=\"api_key\">Your Cal ID API key</label>\n"
    "<input id=\"api_key\" name=\"api_key\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" "
    "placeholder=\"calid_...\" required autofocus>\n"
    "<p class=\"hint\">Make one in Cal ID under <a href=\"https://cal.id/settings/developer/api-keys\" "
    "target=\"_blank\" rel=\"noopener\">Settings &rsaquo; Developer &rsaquo; API keys</a>. This server checks it "
    "with Cal ID and stores nothing: the key travels only sealed inside the tokens {{client}} receives.</p>\n"
    "<input type=\"hidden\" name=\"response_type\" value=\"code\">\n"
    "<input type=\"hidden\" name=\"client_id\" value=\"{{client_id}}\">\n"
    "<input type=\"hidden\" name=\"redirect_uri\" value=\"{{redirect_uri}}\">\n"
    "<input type=\"hidden\" name=\"state\" value=\"{{state}}\">\n"
    "<input type=\"hidden\" name=\"code_challenge\" value=\"{{code_challenge}}\">\n"
    "<input type=\"hidden\" name=\"code_challenge_method\" value=\"S256\">\n"
    "<input type=\"hidden\" name=\"resource\" value=\"{{resource}}\">\n"
    "<input type=\"hidden\" name=\"csrf\" value=\"{{csrf}}\">\n"
    "<div class=\"actions\"><button type=\"submit\" name=\"action\" value=\"allow\">Allow</button>\n"
    "<button type=\"submit\" name=\"action\" value=\"deny\" class=\"secondary\" formnovalidate>Deny</button></div>\n"
    "</form>\n</section>\n" PAGE_FOOT;

static const char problem_page[] =
    PAGE_HEAD "<title>Sign-in cannot continue</title></head>\n<body><main>\n"
    "<div class=\"brand\">Cal ID &middot; MCP server</div>\n<section class=\"card\">\n"
    "<h1>Sign-in cannot continue</h1>\n<p class=\"error\" role=\"alert\">{{error}}</p>\n"
    "<p>Go back to the app and start signing in again. If it keeps happening, the app may need to be "
    "connected to this server anew.</p>\n</section>\n" PAGE_FOOT;

static const char home_page[] =
    PAGE_HEAD "<title>Cal ID MCP server</title></head>\n<body><main>\n"
    "<div class=\"brand\">Cal ID &middot; MCP server</div>\n<section class=\"card\">\n"
    "<h1>Cal ID MCP server</h1>\n"
    "<p>This is <b>calid-mcp</b> " CM_VERSION ". It lets AI assistants (Claude, ChatGPT, Cursor and any MCP "
    "client) work with a Cal ID scheduling account through {{tools}} tools: bookings, event types, "
    "availability and schedules, free slots, contacts, teams and webhooks.</p>\n"
    "<h2>MCP URL</h2>\n<p class=\"url\"><code>{{mcp_url}}</code></p>\n"
    "<h2>Health</h2>\n<ul>\n<li><span class=\"ok\">&#9679;</span> serving; open now: {{connections}} "
    "connections, {{sessions}} sessions opened; {{requests}} requests since start</li>\n"
    "<li>Cal ID API: <code>{{upstream}}</code></li>\n<li>Machine-readable: <a href=\"/healthz\">/healthz</a></li>\n</ul>\n"
    "</section>\n<section class=\"card\">\n<h2>Sign in</h2>\n{{signin}}</section>\n"
    "<section class=\"card\">\n<h2>Connect your app</h2>\n"
    "<p>Replace <code>calid_xxx</code> with your Cal ID API key (Cal ID: Settings &rsaquo; Developer &rsaquo; "
    "<a href=\"https://cal.id/settings/developer/api-keys\">API keys</a>).</p>\n"
    "<h3>Claude Desktop</h3>\n<pre><code>{\n  \"mcpServers\": {\n    \"calid\": {\n      \"type\": \"http\",\n"
    "      \"url\": \"{{mcp_url}}\",\n      \"headers\": { \"Authorization\": \"Bearer calid_xxx\" }\n    }\n  }\n}</code></pre>\n"
    "<h3>Cursor</h3>\n<p class=\"hint\"><code>.cursor/mcp.json</code></p>\n"
    "<pre><code>{\n  \"mcpServers\": {\n    \"calid\": {\n      \"url\": \"{{mcp_url}}\",\n"
    "      \"headers\": { \"Authorization\": \"Bearer calid_xxx\" }\n    }\n  }\n}</code></pre>\n"
    "<h3>ChatGPT</h3>\n<p class=\"hint\">A custom connector; with sign-in on, choose OAuth as its authentication "
    "instead of a bearer token.</p>\n"
    "<pre><code>{\n  \"name\": \"Cal ID\",\n  \"mcp_url\": \"{{mcp_url}}\",\n"
    "  \"authentication\": { \"type\": \"bearer\", \"token\": \"LONG_RANDOM_TOKEN\" }\n}</code></pre>\n"
    "<h3>Any other MCP client</h3>\n"
    "<pre><code>{\n  \"mcpServers\": {\n    \"calid\": {\n      \"type\": \"http\",\n      \"url\": \"{{mcp_url}}\",\n"
    "      \"headers\": {\n        \"Authorization\": \"Bearer calid_xxx\",\n"
    "        \"Accept\": \"application/json, text/event-stream\"\n      }\n    }\n  }\n}</code></pre>\n"
    "<h3>Through the mcp-remote bridge</h3>\n<p class=\"hint\">For a client that only starts commands.</p>\n"
    "<pre><code>{\n  \"mcpServers\": {\n    \"calid\": {\n      \"command\": \"npx\",\n"
    "      \"args\": [\"-y\", \"mcp-remote\", \"{{mcp_url}}\", \"--transport\", \"http-first\",\n"
    "               \"--header\", \"Authorization:${CALID_AUTH_HEADER}\"],\n"
    "      \"env\": { \"CALID_AUTH_HEADER\": \"Bearer calid_xxx\" }\n    }\n  }\n}</code></pre>\n"
    "</section>\n" PAGE_FOOT;

static const char signin_on[] =
    "<p>OAuth sign-in is <b>on</b>. Apps that sign in with OAuth (Claude and ChatGPT connectors, Cursor, the "
    "MCP SDKs) need only the MCP URL above: they open a page of this server where you paste your Cal ID API "
    "key once. The key is checked with Cal ID and then travels only sealed inside the app's tokens; nothing is "
    "stored here.</p>\n<p class=\"hint\">Apps that send an <code>Authorization</code> header can still use a key "
    "directly, as below.</p>\n";
static const char signin_off[] =
    "<p>OAuth sign-in is <b>off</b>: each app sends your Cal ID API key in an <code>Authorization</code> header, "
    "as in the configs below. To let OAuth-only connectors sign in, start the server with "
    "<code>--oauth --public-url https://HOST[:PORT]</code>.</p>\n";

/* Text with & < > " ' escaped, for HTML text and attribute values. */
static void rs_html(struct resp *r, const char *s, size_t n)
{
    size_t i, from = 0;
    for (i = 0; i < n; i++) {
        const char *ent;
        switch (s[i]) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: continue;
        }
        rs_put(r, s + from, i - from);
        rs_str(r, ent);
        from = i + 1;
    }
    rs_put(r, s + from, n - from);
}

/* A {{name}} in a template and what replaces it: escaped text, or (raw) one
 * of the constant fragments above. */
struct sub {
    const char *name, *val;
    int raw;
};

static void render_page(struct resp *r, const char *tpl, const struct sub *subs, size_t nsubs)
{
    const char *p = tpl, *open, *close;
    size_t k;
    while ((open = strstr(p, "{{")) != NULL && (close = strstr(open, "}}")) != NULL) {
        rs_ext(r, p, (size_t)(open - p), 0); /* the template is static: referenced, not copied */
        for (k = 0; k < nsubs; k++) {
            const struct sub *s = &subs[k];
            if (strlen(s->name) != (size_t)(close - open - 2) || memcmp(s->name, open + 2, strlen(s->name)) != 0)
                continue;
            if (s->raw)
                rs_ext(r, s->val, strlen(s->val), 0);
            else
                rs_html(r, s->val, strlen(s->val));
        }
        p = close + 2;
    }
    rs_ext(r, p, strlen(p), 0);
}

static void conn_page(struct conn *c, int status)
{
    if (c->resp.overflow) {
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        rs_str(&c->resp, "<!doctype html><title>Error</title><p>The page did not fit the output buffer (CM_OUT_BYTES).</p>");
        status = 500;
    }
    conn_answer(c, status, "text/html; charset=utf-8", PAGE_HEADERS);
}

static void serve_style(struct conn *c)
{
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_ext(&c->resp, page_css, sizeof page_css - 1, 0);
    conn_answer(c, 200, "text/css; charset=utf-8", "Cache-Control: public, max-age=3600\r\nX-Content-Type-Options: nosniff\r\n");
}

/* Where people reach this server: --public-url, else the Host they used
 * (when it is a plain host[:port]), else the listen address. */
static void page_base_url(struct conn *c, char *out, size_t cap)
{
    const struct view *host = http_header(&c->req, "host");
    if (public_base[0]) {
        snprintf(out, cap, "%s", public_base);
        return;
    }
    if (host && host->n < 100) {
        char h[104];
        snprintf(h, sizeof h, "%.*s", (int)host->n, host->p);
        if (authority_len(h) == host->n) {
            snprintf(out, cap, "%s://%s", tls_on() ? "https" : "http", h);
            return;
        }
    }
    snprintf(out, cap, "%s://%s", tls_on() ? "https" : "http", cfg.listen);
}

/* GET / : a page for people (Accept: text/html); other callers get the 404 they always got. */
static void serve_home(struct conn *c)
{
    const struct view *accept = http_header(&c->req, "accept");
    char base[OA_BASE_MAX + 16], mcp_url[OA_BASE_MAX + 24], tools_n[16], sessions_n[16], conns_n[16], requests_n[24];
    struct sub subs[8];
    if (!(view_eq(c->req.method, "GET") || view_eq(c->req.method, "HEAD")) || !accept ||
        !view_icontains(*accept, "text/html")) {
        conn_simple(c, 404, "{\"error\":\"not found: the MCP endpoint is /mcp\"}", NULL);
        return;
    }
    page_base_url(c, base, sizeof base);
    snprintf(mcp_url, sizeof mcp_url, "%s/mcp", base);
    snprintf(tools_n, sizeof tools_n, "%u", (unsigned)N_TOOLS);
    snprintf(sessions_n, sizeof sessions_n, "%lu", sessions_opened);
    snprintf(conns_n, sizeof conns_n, "%d", conns_in_use());
    snprintf(requests_n, sizeof requests_n, "%lu", stat_requests);
    subs[0] = (struct sub){"mcp_url", mcp_url, 0};
    subs[1] = (struct sub){"tools", tools_n, 0};
    subs[2] = (struct sub){"sessions", sessions_n, 0};
    subs[3] = (struct sub){"connections", conns_n, 0};
    subs[4] = (struct sub){"requests", requests_n, 0};
    subs[5] = (struct sub){"upstream", cfg.upstream, 0};
    subs[6] = (struct sub){"signin", cfg.oauth ? signin_on : signin_off, 1};
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    render_page(&c->resp, home_page, subs, 7);
    conn_page(c, 200);
}

/* ---- the OAuth endpoints ---- */
#define CORS_ANY "Access-Control-Allow-Origin: *\r\n" /* they need no cookie and change no state a page could abuse */

/* 1 (answered 404) when sign-in is off. */
static int oauth_off(struct conn *c)
{
    if (cfg.oauth)
        return 0;
    conn_simple(c, 404, "{\"error\":\"not found: OAuth sign-in is off (start the server with --oauth --public-url https://HOST[:PORT])\"}", NULL);
    return 1;
}

/* Answers a CORS preflight or a method the endpoint does not take. 1 when answered. */
static int oauth_methods(struct conn *c, const char *allow)
{
    char h[300];
    if (view_eq(c->req.method, "OPTIONS")) {
        snprintf(h, sizeof h,
                 CORS_ANY "Access-Control-Allow-Methods: %s, OPTIONS\r\n"
                 "Access-Control-Allow-Headers: Content-Type, Authorization, MCP-Protocol-Version\r\n"
                 "Access-Control-Max-Age: 86400\r\n",
                 allow);
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 204, NULL, h);
        return 1;
    }
    if (!method_allowed(allow, c->req.method)) {
        char m[120];
        snprintf(m, sizeof m, "{\"error\":\"%.*s takes %s\"}", (int)(c->req.path.n > 60 ? 60 : c->req.path.n), c->req.path.p, allow);
        snprintf(h, sizeof h, "Allow: %s, OPTIONS\r\n" CORS_ANY, allow);
        conn_simple(c, 405, m, h);
        return 1;
    }
    return 0;
}

/* RFC 9728, at /.well-known/oauth-protected-resource[/mcp]. */
static void serve_resource_metadata(struct conn *c)
{
    if (oauth_off(c) || oauth_methods(c, "GET, HEAD"))
        return;
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp,
              "{\"resource\":\"%s\",\"authorization_servers\":[\"%s\"],\"bearer_methods_supported\":[\"header\"],"
              "\"resource_name\":\"Cal ID (calid-mcp)\",\"resource_documentation\":\"%s/\"}",
              audience, public_base, public_base);
    conn_answer(c, 200, "application/json", CORS_ANY "Cache-Control: max-age=3600\r\n");
}

/* RFC 8414, at /.well-known/oauth-authorization-server. */
static void serve_as_metadata(struct conn *c)
{
    const char *b = public_base;
    if (oauth_off(c) || oauth_methods(c, "GET, HEAD"))
        return;
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp,
              "{\"issuer\":\"%s\",\"authorization_endpoint\":\"%s/authorize\",\"token_endpoint\":\"%s/token\","
              "\"registration_endpoint\":\"%s/register\",\"response_types_supported\":[\"code\"],"
              "\"response_modes_supported\":[\"query\"],\"grant_types_supported\":[\"authorization_code\",\"refresh_token\"],"
              "\"token_endpoint_auth_methods_supported\":[\"none\"],\"code_challenge_methods_supported\":[\"S256\"],"
              "\"authorization_response_iss_parameter_supported\":true,\"service_documentation\":\"%s/\"}",
              b, b, b, b, b);
    conn_answer(c, 200, "application/json", CORS_ANY "Cache-Control: max-age=3600\r\n");
}

/* An OAuth error answer (RFC 6749 5.2, RFC 7591 3.2.2). */
static void oauth_error(struct conn *c, int status, const char *error, const char *why)
{
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp, "{\"error\":\"%s\",\"error_description\":", error);
    rs_json_string(&c->resp, why, strlen(why));
    rs_str(&c->resp, "}");
    conn_answer(c, status, "application/json", CORS_ANY "Cache-Control: no-store\r\n");
}

static int has_content_type(struct conn *c, const char *type)
{
    const struct view *h = http_header(&c->req, "content-type");
    return h && view_icontains(*h, type);
}

/* Checks one redirect_uris element of a registration and packs it. 0, or -1 answered. */
static int register_uri(struct conn *c, const struct jdoc *d, int t, struct pack *k)
{
    char uri[OA_URI_MAX + 1];
    const char *why;
    if (tok_unescape(d, t, uri, sizeof uri) < 0) {
        oauth_error(c, 400, "invalid_redirect_uri", "every redirect_uris element must be a string of at most 512 bytes");
        return -1;
    }
    if ((why = redirect_uri_problem(uri)) != NULL) {
        char m[300];
        snprintf(m, sizeof m, "%s: %.120s", why, uri);
        oauth_error(c, 400, "invalid_redirect_uri", m);
        return -1;
    }
    pk_str(k, uri, strlen(uri));
    return 0;
}

/* Checks the optional list fields of a registration against what is served. NULL when fine. */
static const char *register_lists_problem(const struct jdoc *d)
{
    static const struct { const char *field, *ok1, *ok2, *why; } lists[] = {
        {"grant_types", "authorization_code", "refresh_token", "grant_types may hold only authorization_code and refresh_token"},
        {"response_types", "code", "code", "response_types may hold only code"},
    };
    size_t l;
    int m = obj_get(d, 0, "token_endpoint_auth_method");
    if (m >= 0 && !tok_is_str(d, m, "none"))
        return "only public clients are served: token_endpoint_auth_method must be none (PKCE protects the code)";
    for (l = 0; l < sizeof lists / sizeof lists[0]; l++) {
        int a = obj_get(d, 0, lists[l].field), i, k;
        if (a < 0)
            continue;
        if (d->t[a].type != JSMN_ARRAY)
            return lists[l].why;
        for (i = a + 1, k = 0; k < d->t[a].size; k++, i = tok_next(d, i))
            if (!tok_is_str(d, i, lists[l].ok1) && !tok_is_str(d, i, lists[l].ok2))
                return lists[l].why;
    }
    return NULL;
}

static void register_answer(struct conn *c, const struct jdoc *d, int uris, const char *name);

/* POST /register (RFC 7591): the client id is the sealed registration itself. */
static void serve_register(struct conn *c)
{
    struct jdoc d;
    struct pack k;
    const char *why = NULL;
    char name[OA_NAME_MAX + 1] = "";
    size_t at;
    int uris, nm, i, n;
    unsigned char count;
    if (oauth_off(c) || oauth_methods(c, "POST"))
        return;
    if (!has_content_type(c, "application/json") || jdoc_parse(&d, c->body, c->body_len, toks, CM_JSON_TOKENS, &why, &at) != 0 ||
        d.t[0].type != JSMN_OBJECT) {
        oauth_error(c, 400, "invalid_client_metadata", "the registration must be a JSON object (Content-Type: application/json)");
        return;
    }
    uris = obj_get(&d, 0, "redirect_uris");
    if (uris < 0 || d.t[uris].type != JSMN_ARRAY || d.t[uris].size < 1 || d.t[uris].size > OA_REDIRECTS_MAX) {
        oauth_error(c, 400, "invalid_redirect_uri", "redirect_uris must be an array of 1 to 4 URIs");
        return;
    }
    nm = obj_get(&d, 0, "client_name");
    if (nm >= 0 && !tok_is_null(&d, nm) && tok_unescape(&d, nm, name, sizeof name) < 0) {
        oauth_error(c, 400, "invalid_client_metadata", "client_name must be a string of at most 100 bytes");
        return;
    }
    if ((why = register_lists_problem(&d)) != NULL) {
        oauth_error(c, 400, "invalid_client_metadata", why);
        return;
    }
    k.p = plain_buf;
    k.cap = sizeof plain_buf;
    k.len = 0;
    k.bad = 0;
    pk_u64(&k, (uint64_t)cm_port_unix_time());
    pk_str(&k, name, strlen(name));
    count = (unsigned char)d.t[uris].size;
    pk_raw(&k, &count, 1);
    for (i = uris + 1, n = 0; n < d.t[uris].size; n++, i = tok_next(&d, i))
        if (register_uri(c, &d, i, &k) < 0)
            return;
    if (k.bad || seal(CLIENT_PREFIX, k.len, form.client_id, sizeof form.client_id) < 0) {
        oauth_error(c, 500, "server_error", "could not seal the client id (no random source?)");
        return;
    }
    register_answer(c, &d, uris, name);
}

/* The registration's answer (RFC 7591 3.2.1): the client id and what it holds. */
static void register_answer(struct conn *c, const struct jdoc *d, int uris, const char *name)
{
    int i, n;
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp, "{\"client_id\":\"%s\",\"client_id_issued_at\":%lld", form.client_id,
              (long long)cm_port_unix_time());
    if (name[0]) {
        rs_str(&c->resp, ",\"client_name\":");
        rs_json_string(&c->resp, name, strlen(name));
    }
    rs_str(&c->resp, ",\"redirect_uris\":[");
    for (i = uris + 1, n = 0; n < d->t[uris].size; n++, i = tok_next(d, i)) {
        char uri[OA_URI_MAX + 1];
        tok_unescape(d, i, uri, sizeof uri);
        rs_str(&c->resp, n ? "," : "");
        rs_json_string(&c->resp, uri, strlen(uri));
    }
    rs_str(&c->resp, "],\"grant_types\":[\"authorization_code\",\"refresh_token\"],\"response_types\":[\"code\"],"
                     "\"token_endpoint_auth_method\":\"none\"}");
    conn_answer(c, 201, "application/json", CORS_ANY "Cache-Control: no-store\r\n");
}

/* ---- /authorize: the consent page, the key check, the code ---- */
static char oa_redirect[OA_URI_MAX + 1]; /* the checked redirect URI of the request being served */
static char oa_client_name[OA_NAME_MAX + 40];

static void authorize_problem_page(struct conn *c, int status, const char *why)
{
    struct sub s = {"error", why, 0};
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    render_page(&c->resp, problem_page, &s, 1);
    conn_page(c, status);
}

/* The consent page for the request in form, with an error paragraph when why is set. */
static void consent_page_show(struct conn *c, int status, const char *why)
{
    char csrf[64], return_to[OA_URI_MAX + 1];
    struct sub subs[14];
    size_t n = 0, cut = strcspn(oa_redirect, "?");
    csrf_make(csrf);
    snprintf(return_to, sizeof return_to, "%.*s", (int)cut, oa_redirect); /* the query may carry the app's own data */
    subs[n++] = (struct sub){"client", oa_client_name, 0};
    subs[n++] = (struct sub){"issuer", public_base, 0};
    subs[n++] = (struct sub){"return_to", return_to, 0};
    subs[n++] = (struct sub){"error_open", why ? "<p class=\"error\" role=\"alert\">" : "", 1};
    subs[n++] = (struct sub){"error", why ? why : "", 0};
    subs[n++] = (struct sub){"error_close", why ? "</p>\n" : "", 1};
    subs[n++] = (struct sub){"client_id", form.client_id, 0};
    subs[n++] = (struct sub){"redirect_uri", form.redirect_uri, 0};
    subs[n++] = (struct sub){"state", form.state, 0};
    subs[n++] = (struct sub){"code_challenge", form.code_challenge, 0};
    subs[n++] = (struct sub){"resource", form.resource, 0};
    subs[n++] = (struct sub){"csrf", csrf, 0};
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    render_page(&c->resp, consent_page, subs, n);
    conn_page(c, status);
}

/* Sends the browser back to the app: 303 to oa_redirect with these
 * parameters (values percent-encoded) and state and iss added. */
static void authorize_redirect(struct conn *c, const char *k1, const char *v1, const char *k2, const char *v2)
{
    const char *keys[4], *vals[4];
    size_t len = strlen(oa_redirect), i;
    char sep = strchr(oa_redirect, '?') ? '&' : '?';
    keys[0] = k1, vals[0] = v1, keys[1] = k2, vals[1] = v2;
    keys[2] = "state", vals[2] = form.state[0] ? form.state : NULL;
    keys[3] = "iss", vals[3] = public_base;
    memcpy(oa_location, oa_redirect, len + 1);
    for (i = 0; i < 4; i++) {
        if (!keys[i] || !vals[i])
            continue;
        if (len + strlen(keys[i]) + 3 >= OA_LOCATION_MAX)
            goto too_long;
        len += (size_t)snprintf(oa_location + len, sizeof oa_location - len, "%c%s=", sep, keys[i]);
        sep = '&';
        if (percent_encode(vals[i], strlen(vals[i]), oa_location, OA_LOCATION_MAX, &len) < 0)
            goto too_long;
    }
    snprintf(oa_extra, sizeof oa_extra, "Location: %s\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n", oa_location);
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    conn_answer(c, 303, "text/plain", oa_extra);
    return;
too_long:
    authorize_problem_page(c, 400, "The way back to the app (redirect URI and state) is too long.");
}

/* Checks the authorization request in form. 0 when it may go on; otherwise
 * the answer is started: a page while the redirect URI is not trusted yet,
 * an error sent back to the app after. */
static int authorize_check(struct conn *c)
{
    struct oa_client cl;
    struct view want = {form.redirect_uri, strlen(form.redirect_uri)};
    unsigned char challenge[40];
    int i;
    if (!form.client_id[0] || client_open((struct view){form.client_id, strlen(form.client_id)}, &cl) < 0) {
        authorize_problem_page(c, 400, form.client_id[0] ? "This app's registration was not made by this server, or the server's secret has changed since: the app must register again."
                                                         : "The sign-in link has no client_id.");
        return -1;
    }
    oa_redirect[0] = 0;
    for (i = 0; i < cl.n_uris; i++)
        if ((want.n && view_eq(cl.uri[i], form.redirect_uri)) || (!want.n && cl.n_uris == 1))
            snprintf(oa_redirect, sizeof oa_redirect, "%.*s", (int)cl.uri[i].n, cl.uri[i].p);
    if (!oa_redirect[0]) {
        authorize_problem_page(c, 400, want.n ? "The redirect URI is not one the app registered." : "The app registered several redirect URIs and named none.");
        return -1;
    }
    if (cl.name.n)
        snprintf(oa_client_name, sizeof oa_client_name, "%.*s", (int)cl.name.n, cl.name.p);
    else
        snprintf(oa_client_name, sizeof oa_client_name, "An app that gave no name");
    if (strcmp(form.response_type, "code") != 0)
        authorize_redirect(c, "error", "unsupported_response_type", "error_description", "response_type must be code");
    else if (!form.code_challenge[0] || strcmp(form.code_challenge_method, "S256") != 0)
        authorize_redirect(c, "error", "invalid_request", "error_description", "PKCE is required: code_challenge with code_challenge_method S256");
    else if (strlen(form.code_challenge) != 43 || base64_decode(form.code_challenge, 43, challenge, sizeof challenge) != 32 ||
             strpbrk(form.code_challenge, "+/="))
        authorize_redirect(c, "error", "invalid_request", "error_description", "code_challenge must be the base64url SHA-256 of the verifier (43 characters)");
    else if (form.resource[0] && strcmp(form.resource, audience) != 0)
        authorize_redirect(c, "error", "invalid_target", "error_description", "resource must be this server's MCP URL");
    else
        return 0;
    return -1;
}

/* The key was good: seal the code and send the browser back with it. */
static void authorize_issue(struct conn *c)
{
    struct grant g;
    memset(&g, 0, sizeof g);
    g.exp = cm_port_unix_time() + CM_OAUTH_CODE_TTL_S;
    hash16(form.client_id, strlen(form.client_id), g.client);
    base64_decode(form.code_challenge, 43, g.challenge, sizeof g.challenge);
    if (form.redirect_uri[0])
        hash16(form.redirect_uri, strlen(form.redirect_uri), g.redirect);
    g.audience.p = audience;
    g.audience.n = strlen(audience);
    g.key.p = form.api_key;
    g.key.n = strlen(form.api_key);
    if (cm_port_random(g.id, sizeof g.id) < 0 || grant_seal(G_CODE, &g, form.code, sizeof form.code) < 0) {
        authorize_problem_page(c, 500, "The server has no random source to make a code.");
        return;
    }
    cm_logf(CM_LOG_INFO, "oauth: a code for %s", oa_client_name);
    authorize_redirect(c, "code", form.code, NULL, NULL);
}

/* POST /authorize: the form is checked, then the key, by one API call. */
static void authorize_post(struct conn *c)
{
    char peer[48];
    size_t k;
    int h;
    if (!csrf_ok()) {
        authorize_problem_page(c, 403, "The form has expired or did not come from this page: start signing in again from the app.");
        return;
    }
    if (strcmp(form.action, "deny") == 0) {
        authorize_redirect(c, "error", "access_denied", "error_description", "the user did not allow access");
        return;
    }
    for (k = 0; form.api_key[k]; k++)
        if ((unsigned char)form.api_key[k] <= 0x20 || (unsigned char)form.api_key[k] >= 0x7f)
            break;
    if (!form.api_key[0] || form.api_key[k]) {
        consent_page_show(c, 400, form.api_key[0] ? "That is not a Cal ID API key: keys are one word of letters, digits and _ (calid_...)."
                                                  : "Enter your Cal ID API key.");
        return;
    }
    peer_text(c->peer, peer, sizeof peer);
    if (rate_take(peer, cm_port_now_ms()) < 0) {
        consent_page_show(c, 429, "Too many keys were tried from your address: wait a minute, then try again.");
        return;
    }
    h = up_submit(conn_owner(c), "GET", "/users/me", form.api_key, NULL, NULL, 0);
    if (h < 0) {
        consent_page_show(c, 503, "The server is busy: try again in a moment.");
        return;
    }
    c->state = C_WAIT_API;
    c->pc.active = 0;
    c->pc.handle = h;
    c->oauth_wait = 1;
    c->last_ms = cm_port_now_ms();
}

static void serve_authorize(struct conn *c)
{
    const char *bad = NULL;
    int post = view_eq(c->req.method, "POST");
    if (oauth_off(c))
        return;
    if (post && !has_content_type(c, "application/x-www-form-urlencoded")) {
        authorize_problem_page(c, 415, "The sign-in form must be sent as application/x-www-form-urlencoded.");
        return;
    }
    if (post ? form_parse(c->body, c->body_len, &bad) : form_parse(c->req.query.p, c->req.query.n, &bad)) {
        char m[160];
        snprintf(m, sizeof m, "The parameter %s is repeated, badly encoded or too long.", bad);
        authorize_problem_page(c, 400, m);
        return;
    }
    if (post) {
        /* the key moves to the connection; the body that waits for the
           key check keeps every field but it */
        snprintf(c->oauth_key, sizeof c->oauth_key, "%s", form.api_key);
        memset(c->body + form_key_at, '_', form_key_len);
    }
    if (authorize_check(c) == 0) {
        if (post)
            authorize_post(c);
        else
            consent_page_show(c, 200, NULL);
    }
    memset(form.api_key, 0, sizeof form.api_key);
    if (!c->oauth_wait)
        memset(c->oauth_key, 0, sizeof c->oauth_key);
}

/* The answer to the key check of a POST /authorize (from on_upstream_done). */
static void oauth_key_checked(struct conn *c, int handle, const struct up_result *u)
{
    char reason[300], m[420];
    const char *bad;
    int status = u->status;
    reason[0] = 0;
    if (status >= 300)
        api_message(u->body, u->body_len, reason, sizeof reason);
    else if (status == 0)
        snprintf(reason, sizeof reason, "%.290s", u->error);
    up_release(handle);
    c->oauth_wait = 0;
    c->pc.handle = -1;
    /* the shared form may hold another request's fields by now: read ours again */
    if (form_parse(c->body, c->body_len, &bad) < 0 || authorize_check(c) < 0) {
        memset(c->oauth_key, 0, sizeof c->oauth_key);
        return;
    }
    snprintf(form.api_key, sizeof form.api_key, "%s", c->oauth_key);
    memset(c->oauth_key, 0, sizeof c->oauth_key);
    if (status >= 200 && status < 300) {
        authorize_issue(c);
    } else {
        if (status == 401 || status == 403)
            snprintf(m, sizeof m, "Cal ID did not accept this key: %s", reason[0] ? reason : status_reason(status));
        else if (status)
            snprintf(m, sizeof m, "Could not check the key: the Cal ID API answered %d %s%s%s. Try again.", status,
                     status_reason(status), reason[0] ? ": " : "", reason);
        else
            snprintf(m, sizeof m, "Could not check the key: %s. Try again.", reason);
        consent_page_show(c, status == 401 || status == 403 ? 401 : 502, m);
    }
    memset(form.api_key, 0, sizeof form.api_key);
}

/* ---- /token ---- */
static char oa_access[OA_SEALED_MAX + 1], oa_refresh[OA_SEALED_MAX + 1];

/* Seals a new access and refresh token for this client and key and answers with them. */
static void token_issue(struct conn *c, const unsigned char client[16], struct view key)
{
    struct grant g;
    int64_t now = cm_port_unix_time();
    memset(&g, 0, sizeof g);
    memcpy(g.client, client, 16);
    g.audience.p = audience;
    g.audience.n = strlen(audience);
    g.key = key;
    g.exp = now + CM_OAUTH_ACCESS_TTL_S;
    if (cm_port_random(g.id, 16) < 0 || grant_seal(G_ACCESS, &g, oa_access, sizeof oa_access) < 0)
        goto fail;
    g.exp = now + CM_OAUTH_REFRESH_TTL_S;
    if (cm_port_random(g.id, 16) < 0 || grant_seal(G_REFRESH, &g, oa_refresh, sizeof oa_refresh) < 0)
        goto fail;
    rs_init(&c->resp, c->out, sizeof c->out, 0);
    rs_printf(&c->resp, "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%ld,\"refresh_token\":\"%s\"}",
              oa_access, (long)CM_OAUTH_ACCESS_TTL_S, oa_refresh);
    conn_answer(c, 200, "application/json", CORS_ANY "Cache-Control: no-store\r\nPragma: no-cache\r\n");
    return;
fail:
    oauth_error(c, 500, "server_error", "could not seal a token (no random source?)");
}

/* The client of a token request: its id must be one of ours. 0 with its hash, or -1 answered. */
static int token_client(struct conn *c, unsigned char hash[16])
{
    struct oa_client cl;
    if (!form.client_id[0] || client_open((struct view){form.client_id, strlen(form.client_id)}, &cl) < 0) {
        oauth_error(c, 401, "invalid_client", form.client_id[0] ? "client_id was not issued by this server (register again)" : "client_id is required");
        return -1;
    }
    hash16(form.client_id, strlen(form.client_id), hash);
    return 0;
}

static const unsigned char zero16[16];
static const char *const open_problem[] = {"", "is not valid", "has expired", "was issued for another server"};

/* Opens the code or refresh token a /token request presents (what names it in
 * the errors) and checks that it was issued to this client. 0, or -1 with
 * the invalid_grant answer sent. */
static int token_grant_open(struct conn *c, int kind, const char *text, const char *what, const unsigned char client[16],
                            struct grant *g)
{
    char m[120];
    int r = grant_open(kind, (struct view){text, strlen(text)}, g, cm_port_unix_time());
    if (r != OPEN_OK) {
        snprintf(m, sizeof m, "the %s %s", what, open_problem[-r]);
        oauth_error(c, 400, "invalid_grant", m);
        return -1;
    }
    if (memcmp(g->client, client, 16) != 0) {
        snprintf(m, sizeof m, "the %s was issued to another client", what);
        oauth_error(c, 400, "invalid_grant", m);
        return -1;
    }
    return 0;
}

static void token_from_code(struct conn *c, const unsigned char client[16])
{
    struct grant g;
    unsigned char digest[32], rhash[16];
    size_t k, vn = strlen(form.code_verifier);
    int r;
    if (token_grant_open(c, G_CODE, form.code, "authorization code", client, &g) < 0)
        return;
    memset(rhash, 0, sizeof rhash);
    if (form.redirect_uri[0])
        hash16(form.redirect_uri, strlen(form.redirect_uri), rhash);
    if (memcmp(g.redirect, zero16, 16) != 0 && memcmp(rhash, g.redirect, 16) != 0) {
        oauth_error(c, 400, "invalid_grant", "redirect_uri differs from the one of the authorization request");
        return;
    }
    for (k = 0; k < vn && (isalnum_ascii(form.code_verifier[k]) || strchr("-._~", form.code_verifier[k])); k++)
        ;
    if (vn < 43 || vn > 128 || k != vn) {
        oauth_error(c, 400, "invalid_request", "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~");
        return;
    }
    sha256_of(form.code_verifier, vn, digest);
    if (!const_time_eq(digest, 32, g.challenge, 32)) {
        oauth_error(c, 400, "invalid_grant", "code_verifier does not match the code_challenge (PKCE)");
        return;
    }
    if (form.resource[0] && strcmp(form.resource, audience) != 0) {
        oauth_error(c, 400, "invalid_target", "resource must be this server's MCP URL");
        return;
    }
    r = used_mark(used_codes, CM_OAUTH_USED_CODES, g.id, g.exp, cm_port_unix_time(), 0);
    if (r <= 0) {
        if (r == 0)
            oauth_error(c, 400, "invalid_grant", "the authorization code was already used");
        else
            oauth_error(c, 503, "temporarily_unavailable", "too many sign-ins at once: try again in a minute");
        return;
    }
    token_issue(c, client, g.key);
}

static void token_from_refresh(struct conn *c, const unsigned char client[16])
{
    struct grant g;
    if (token_grant_open(c, G_REFRESH, form.refresh_token, "refresh token", client, &g) < 0)
        return;
    if (form.resource[0] && strcmp(form.resource, audience) != 0) {
        oauth_error(c, 400, "invalid_target", "resource must be this server's MCP URL");
        return;
    }
    if (used_mark(used_refresh, CM_OAUTH_USED_REFRESH, g.id, g.exp, cm_port_unix_time(), 1) == 0) {
        oauth_error(c, 400, "invalid_grant", "the refresh token was already used: refresh tokens rotate, use the newest one");
        return;
    }
    token_issue(c, client, g.key);
}

/* POST /token (RFC 6749 3.2 with PKCE): authorization_code and refresh_token grants. */
static void serve_token(struct conn *c)
{
    const char *bad = NULL;
    unsigned char client[16];
    char m[160];
    if (oauth_off(c) || oauth_methods(c, "POST"))
        return;
    if (!has_content_type(c, "application/x-www-form-urlencoded")) {
        oauth_error(c, 400, "invalid_request", "the token request must be application/x-www-form-urlencoded");
        return;
    }
    if (form_parse(c->body, c->body_len, &bad) < 0) {
        snprintf(m, sizeof m, "the parameter %s is repeated, badly encoded or too long", bad);
        oauth_error(c, 400, "invalid_request", m);
        return;
    }
    if (strcmp(form.grant_type, "authorization_code") != 0 && strcmp(form.grant_type, "refresh_token") != 0) {
        oauth_error(c, 400, form.grant_type[0] ? "unsupported_grant_type" : "invalid_request",
                    "grant_type must be authorization_code or refresh_token");
        return;
    }
    if (token_client(c, client) < 0)
        return;
    if (form.grant_type[0] == 'a')
        token_from_code(c, client);
    else
        token_from_refresh(c, client);
}

/* ---- /mcp: what resolve_token asks ---- */
/* Is this bearer one of ours (an access token, or a code or refresh token
 * sent where an access token belongs)? Anything else is a Cal ID key. */
static int oauth_is_access_token(struct view bearer)
{
    size_t i;
    if (!cfg.oauth)
        return 0;
    for (i = 0; i < sizeof grant_prefix / sizeof grant_prefix[0]; i++)
        if (bearer.n >= strlen(grant_prefix[i]) && memcmp(bearer.p, grant_prefix[i], strlen(grant_prefix[i])) == 0)
            return 1;
    return 0;
}

/* Opens an access token: 0 with the Cal ID key copied to key, else 401 with why. */
static int oauth_open_access(struct view bearer, char *key, size_t cap, const char **why)
{
    static const char *const whys[] = {"", "Unauthorized: the access token is not valid (tampered with, or from another server's secret)",
                                       "Unauthorized: the access token has expired: refresh it",
                                       "Unauthorized: the access token was issued for another server"};
    struct grant g;
    int r = grant_open(G_ACCESS, bearer, &g, cm_port_unix_time());
    if (r == OPEN_OK && g.key.n < cap) {
        memcpy(key, g.key.p, g.key.n);
        key[g.key.n] = 0;
        memset(open_buf, 0, sizeof open_buf);
        return 0;
    }
    *why = whys[r == OPEN_OK ? 1 : -r];
    return 401;
}

/* The WWW-Authenticate header of a 401 on /mcp: with sign-in on it names the
 * resource metadata (MCP authorization, RFC 9728 5.1). */
static const char *oauth_challenge(int had_token)
{
    static char h[OA_BASE_MAX + 160];
    if (!cfg.oauth)
        return "WWW-Authenticate: Bearer realm=\"calid-mcp\"\r\n";
    snprintf(h, sizeof h, "WWW-Authenticate: Bearer resource_metadata=\"%s/.well-known/oauth-protected-resource/mcp\"%s\r\n",
             public_base, had_token ? ", error=\"invalid_token\"" : "");
    return h;
}

static size_t oauth_static_bytes(void)
{
    return sizeof public_base + sizeof public_host + sizeof audience + sizeof plain_buf + sizeof seal_buf +
           sizeof open_buf + sizeof oa_location + sizeof oa_extra + sizeof used_codes + sizeof used_refresh +
           sizeof rate_slots + sizeof form + sizeof oa_redirect + sizeof oa_client_name + sizeof oa_access +
           sizeof oa_refresh + sizeof seal_key + sizeof csrf_key;
}

#else /* CM_OAUTH == 0: --oauth is refused at start; its paths are not found */
static int oauth_start(char *err, size_t errlen)
{
    if (!cfg.oauth)
        return 0;
    snprintf(err, errlen, "--oauth: OAuth sign-in is not built in (CM_OAUTH=0)");
    return -1;
}
static int oauth_is_public_host(struct view host) { (void)host; return 0; }
static int oauth_is_public_origin(struct view origin) { (void)origin; return 0; }
static int oauth_is_access_token(struct view bearer) { (void)bearer; return 0; }
static int oauth_open_access(struct view bearer, char *key, size_t cap, const char **why)
{
    (void)bearer, (void)key, (void)cap;
    *why = "Unauthorized: OAuth sign-in is not built in";
    return 401;
}
static const char *oauth_challenge(int had_token) { (void)had_token; return "WWW-Authenticate: Bearer realm=\"calid-mcp\"\r\n"; }
static void oauth_key_checked(struct conn *c, int handle, const struct up_result *u) { (void)c, (void)u; up_release(handle); }
static void oauth_not_built(struct conn *c)
{
    conn_simple(c, 404, "{\"error\":\"not found: this build has no OAuth sign-in or pages (CM_OAUTH=0); the MCP endpoint is /mcp\"}", NULL);
}
static void serve_home(struct conn *c) { oauth_not_built(c); }
static void serve_style(struct conn *c) { oauth_not_built(c); }
static void serve_resource_metadata(struct conn *c) { oauth_not_built(c); }
static void serve_as_metadata(struct conn *c) { oauth_not_built(c); }
static void serve_register(struct conn *c) { oauth_not_built(c); }
static void serve_authorize(struct conn *c) { oauth_not_built(c); }
static void serve_token(struct conn *c) { oauth_not_built(c); }
static size_t oauth_static_bytes(void) { return 0; }
#endif /* CM_OAUTH */

/* ===================================================================== */
/* 12. stdio transport                                                   */
/* ===================================================================== */
/*
 * One JSON-RPC message per line on stdin, one answer per line on stdout,
 * logs on stderr. Tool calls run the same event loop until the API answers.
 * There are no sessions: initialize negotiates a version for the process.
 */
#define stdio_line (big.stdio.line) /* in the request pool's memory: no HTTP connections here */
#define stdio_out (big.stdio.out)
static char stdio_version[11] = LATEST_SESSION_VERSION;
static unsigned char stdio_log_level; /* logging/setLevel on stdio: for the process */
static char stdio_log_line[512];       /* one log message: a path is at most 95 bytes */

static void stdio_write_escaped(const char *p, size_t n)
{
    char stage[STAGE_BYTES];
    size_t off = 0, w;
    while (off < n) {
        off += json_escape_some(p + off, n - off, stage, sizeof stage, &w);
        fwrite(stage, 1, w, stdout);
    }
}

static void stdio_write(const struct resp *r)
{
    int i;
    for (i = 0; i < r->nseg; i++) {
        const struct seg *s = &r->seg[i];
        if (!s->escape)
            fwrite(s->p, 1, s->n, stdout);
        else
            stdio_write_escaped(s->p, s->n);
    }
}

static void stdio_emit(const struct resp *r)
{
    stdio_write(r);
    fputc('\n', stdout);
    fflush(stdout);
}

/* A window of an API answer larger than its slot's buffer, or its last one
 * (see conn_stream_part): the line is written as the answer arrives, each
 * window straight to stdout (which holds the API back while it blocks); the
 * end of the line is rendered into the answer that cm_stdio_run writes. */
static void stdio_stream_part(int handle, const struct up_result *u)
{
    struct resp *r = stdio_wait.r;
    const struct pending_call *pc = stdio_wait.pc;
    if (!stdio_wait.streamed && pc->kind == PC_RESOURCE && u->status >= 300) {
        render_pending_result(r, pc, u, 1); /* an error status: the usual JSON-RPC error, the rest not read */
        up_cancel(handle);
        stdio_wait.streamed = 1;
        stdio_wait.handle = -1;
        stdio_wait.done = 1;
        return;
    }
    if (!stdio_wait.streamed) {
        if (pc->log_level) { /* its own line, before the answer */
            struct resp lr;
            rs_init(&lr, stdio_log_line, sizeof stdio_log_line, 0);
            render_api_log(&lr, pc, u);
            if (lr.nseg && !lr.overflow)
                stdio_emit(&lr);
        }
        render_stream_begin(r, pc, u);
        stdio_write(r);
        rs_init(r, r->tb.p, r->tb.cap, r->sse);
        stdio_wait.streamed = 1;
    }
    stdio_write_escaped(u->body, u->body_len);
    if (u->partial) {
        up_release(handle);
        return;
    }
    render_stream_end(r, pc, u);
    stdio_wait.handle = handle;
    stdio_wait.done = 1;
}

/* Runs a tool call to its end. Returns the upstream handle to release once
 * the answer is written (-1 when none). */
static int stdio_run_call(struct pending_call *pc, const struct jdoc *d, struct resp *r, int copy)
{
    char msg[300];
    int h;
    msg[0] = 0;
    stdio_wait.done = 0;
    stdio_wait.streamed = 0;
    stdio_wait.pc = pc;
    stdio_wait.r = r;
    while ((h = submit_pending(STDIO_OWNER, pc, d, cfg.api_key, cfg.api_key ? strlen(cfg.api_key) : 0, msg, sizeof msg)) == -1)
        loop_step(10);
    if (h == -2) {
        render_pending_failure(r, pc, msg);
        return -1;
    }
    if (!copy && (pc->kind == PC_TOOL || pc->kind == PC_RESOURCE))
        up_allow_stream(h); /* a batch line is built whole; a single answer can stream */
    while (!stdio_wait.done)
        loop_step(100);
    if (stdio_wait.streamed)
        return stdio_wait.handle;
    if (pc->log_level && !copy) { /* its own line, before the answer */
        struct resp lr;
        rs_init(&lr, stdio_log_line, sizeof stdio_log_line, 0);
        render_api_log(&lr, pc, stdio_wait.u);
        if (lr.nseg && !lr.overflow)
            stdio_emit(&lr);
    }
    render_pending_result(r, pc, stdio_wait.u, copy);
    if (copy) {
        up_release(stdio_wait.handle);
        return -1;
    }
    return stdio_wait.handle;
}

/* Serves one message (or a batch) from a line; returns the handle to release. */
static int stdio_message(struct resp *r, const struct jdoc *d, int msg, int copy)
{
    struct rpc_ctx ctx;
    struct pending_call pc;
    int meta = obj_get(d, obj_get(d, msg, "params"), "_meta"), res;
    struct view nohdr = {NULL, 0};
    memset(&ctx, 0, sizeof ctx);
    memset(&pc, 0, sizeof pc);
    ctx.token = cfg.api_key;
    ctx.token_len = cfg.api_key ? strlen(cfg.api_key) : 0;
    ctx.new_session = -2; /* no sessions on stdio */
    ctx.toolsets = served_toolsets;
    ctx.log_level = &stdio_log_level;
    ctx.batch = copy;
    if (d->t[msg].type != JSMN_OBJECT) {
        struct view nullid = {"null", 4};
        rpc_error(r, nullid, E_INVALID_REQUEST, "Invalid Request: expected a JSON-RPC message object", NULL);
        return -1;
    }
    if (obj_get(d, meta, "io.modelcontextprotocol/protocolVersion") >= 0) {
        ctx.era = ERA_MODERN;
        ctx.version = MODERN_VERSION;
        if (check_envelope(d, msg, r, &ctx, nohdr) < 0)
            return -1;
    } else {
        ctx.era = ERA_SESSION;
        ctx.version = stdio_version;
        if (tok_is_str(d, obj_get(d, msg, "method"), "initialize")) {
            int pv = obj_get(d, obj_get(d, msg, "params"), "protocolVersion");
            handle_initialize(&ctx, d, msg, r, cm_port_unix_time());
            if (pv >= 0 && is_session_version(tok_view(d, pv).p, tok_view(d, pv).n))
                snprintf(stdio_version, sizeof stdio_version, "%.*s", (int)tok_view(d, pv).n, tok_view(d, pv).p);
            return -1;
        }
    }
    res = dispatch(&ctx, d, msg, r, &pc);
    if (res == D_PENDING)
        return stdio_run_call(&pc, d, r, copy);
    return res == D_NO_REPLY ? -2 : -1;
}

int cm_stdio_run(void)
{
    struct resp r;
    struct jdoc d;
    struct view nullid = {"null", 4};
    while (fgets(stdio_line, sizeof stdio_line, stdin)) {
        size_t n = strlen(stdio_line), at;
        char *nl = memchr(stdio_line, '\n', sizeof stdio_line - 1), rule[150];
        const char *why;
        int pr, h = -1;
        rs_init(&r, stdio_out, sizeof stdio_out, 0);
        if (nl && (size_t)(nl - stdio_line) >= n) { /* a NUL byte before the end of the line */
            char m[120];
            *nl = 0; /* (each line's newline is cleared, so none is left from an earlier line) */
            snprintf(m, sizeof m, "Parse error: a NUL byte at byte %lu", (unsigned long)n);
            rpc_error(&r, nullid, E_PARSE, m, NULL);
            stdio_emit(&r);
            continue;
        }
        if (n == sizeof stdio_line - 1 && stdio_line[n - 1] != '\n') {
            int ch;
            while ((ch = getchar()) != EOF && ch != '\n')
                ;
            rpc_error(&r, nullid, E_INVALID_REQUEST, "Invalid Request: a message is limited to CM_MAX_BODY_BYTES", NULL);
            stdio_emit(&r);
            continue;
        }
        while (n && (stdio_line[n - 1] == '\n' || stdio_line[n - 1] == '\r'))
            stdio_line[--n] = 0;
        if (n == 0)
            continue;
        pr = jdoc_parse(&d, stdio_line, n, toks, CM_JSON_TOKENS, &why, &at);
        if (pr == -2) {
            rpc_error(&r, nullid, E_INVALID_REQUEST, "Invalid Request: too many JSON tokens (CM_JSON_TOKENS)", NULL);
        } else if (pr < 0) {
            char m[160];
            snprintf(m, sizeof m, "Parse error: %s at byte %lu", why ? why : "invalid JSON", (unsigned long)at);
            rpc_error(&r, nullid, E_PARSE, m, NULL);
        } else if (json_message_rules(&d, stdio_line, rule, sizeof rule) < 0) {
            char m[200];
            snprintf(m, sizeof m, "Invalid Request: %s", rule);
            rpc_error(&r, nullid, E_INVALID_REQUEST, m, NULL);
        } else if (d.t[0].type == JSMN_ARRAY) {
            int k, el, replies = 0;
            if (d.t[0].size == 0 || d.t[0].size > MAX_BATCH) {
                rpc_error(&r, nullid, E_INVALID_REQUEST, "Invalid Request: a batch holds 1 to 16 messages", NULL);
            } else {
                rs_str(&r, "[");
                for (k = 0, el = 1; k < d.t[0].size; k++, el = tok_next(&d, el)) {
                    size_t mark = r.tb.len;
                    int nseg = r.nseg;
                    if (replies)
                        rs_str(&r, ",");
                    if (stdio_message(&r, &d, el, 1) == -2) /* no reply: drop the separator */
                        rs_rewind(&r, mark, nseg);
                    else
                        replies++;
                }
                rs_str(&r, "]");
                if (!replies)
                    continue;
            }
        } else {
            h = stdio_message(&r, &d, 0, 0);
            if (h == -2)
                continue;
        }
        if (r.overflow) {
            rs_init(&r, stdio_out, sizeof stdio_out, 0);
            rpc_error(&r, nullid, E_INTERNAL, "Internal error: the answer did not fit the output buffer", NULL);
        }
        stdio_emit(&r);
        if (h >= 0)
            up_release(h);
    }
    return 0;
}

/* ===================================================================== */
/* Start, stop, sizes                                                    */
/* ===================================================================== */

void cm_config_defaults(struct cm_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:8080";
    c->upstream = "https://api.cal.id";
    c->log_level = CM_LOG_INFO;
    c->max_conns_per_addr = CM_MAX_CONNS_PER_ADDR;
}

size_t cm_static_bytes(void)
{
    return sizeof conns + sizeof toks + sizeof ended + sizeof session_levels + sizeof metrics + sizeof schema_toks +
           sizeof req_path + sizeof bearer_buf + sizeof arg_buf + sizeof big + sizeof pool_lent + sizeof stdio_wait +
           sizeof stdio_log_line + sizeof slug_cache + up_static_bytes() + tls_static_bytes() + oauth_static_bytes();
}

/*
 * The server secret keys everything that must hold across a restart or
 * between instances (token fingerprints, and what is derived from it). With
 * --secret-file it is the file's 32 bytes, made from the random source (mode
 * 0600) when the file does not exist yet; without, it is random per process.
 */
static int load_server_secret(const char *path, char *err, size_t errlen)
{
    FILE *f;
    size_t n;
    int extra;
    if (!path) {
        if (cm_port_random(server_secret, sizeof server_secret) == 0)
            return 0;
        snprintf(err, errlen, "no secure random source (needed for the server secret)");
        return -1;
    }
    f = fopen(path, "rb");
    if (!f) {
        if (cm_port_random(server_secret, sizeof server_secret) != 0) {
            snprintf(err, errlen, "no secure random source to make the secret file %s", path);
            return -1;
        }
        if (cm_port_create_private_file(path, server_secret, sizeof server_secret) != 0) {
            snprintf(err, errlen, "cannot read or create the secret file %s", path);
            return -1;
        }
        cm_logf(CM_LOG_INFO, "created the secret file %s (32 random bytes; give the same file to every instance)", path);
        return 0;
    }
    n = fread(server_secret, 1, sizeof server_secret, f);
    extra = fgetc(f);
    fclose(f);
    if (n != sizeof server_secret || extra != EOF) {
        snprintf(err, errlen, "the secret file %s must hold exactly 32 bytes (delete it to have a new one made)", path);
        return -1;
    }
    return 0;
}

/* A 32-byte key for one purpose, derived from the server secret:
 * HMAC-SHA256(secret, label), so that keys for different uses never meet. */
static void secret_derive(const char *label, unsigned char out[32])
{
    br_hmac_key_context kc;
    br_hmac_context hc;
    br_hmac_key_init(&kc, &br_sha256_vtable, server_secret, sizeof server_secret);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, label, strlen(label));
    br_hmac_out(&hc, out);
}

static int is_loopback_addr(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

int cm_start(const struct cm_config *config, int stdio_only, char *err, size_t errlen)
{
    char host[64];
    const char *colon;
    unsigned long port;
    char *end;
    int i;
    cfg = *config;
    if (!cfg.listen)
        cfg.listen = "127.0.0.1:8080";
    if (!cfg.upstream)
        cfg.upstream = "https://api.cal.id";
    if (cfg.api_key && !cfg.api_key[0])
        cfg.api_key = NULL;
    if (cfg.access_token && !cfg.access_token[0])
        cfg.access_token = NULL;
    if (cfg.max_conns_per_addr < 1 || cfg.max_conns_per_addr > CM_MAX_CONNS) {
        snprintf(err, errlen, "--max-conns-per-addr (CALID_MCP_MAX_CONNS_PER_ADDR) must be 1 to %d (CM_MAX_CONNS, the whole table), not %d",
                 CM_MAX_CONNS, cfg.max_conns_per_addr);
        return -1;
    }
    if (cm_port_init() != 0) {
        snprintf(err, errlen, "the platform layer did not start");
        return -1;
    }
    if (load_server_secret(cfg.secret_file, err, errlen) < 0)
        return -1;
    {
        unsigned char k[32];
        secret_derive("calid-mcp token fingerprint", k);
        br_hmac_key_init(&fp_key, &br_sha256_vtable, k, sizeof k);
        secret_derive("calid-mcp session id", k);
        br_hmac_key_init(&sid_key, &br_sha256_vtable, k, sizeof k);
        session_memo_forget_all(); /* new keys, and a fresh ended table below */
    }
    if (oauth_start(err, errlen) < 0)
        return -1;
    served_read_only = cfg.read_only;
    served_toolsets = TS_ALL;
    if (cfg.toolsets && parse_toolsets(cfg.toolsets, strlen(cfg.toolsets), &served_toolsets, err, errlen) < 0)
        return -1;
    if (tool_list_check(err, errlen) < 0 || prompts_check(err, errlen) < 0)
        return -1;
    if (up_init(cfg.upstream, cfg.ca_file, err, errlen) < 0)
        return -1;
    snprintf(upstream_host_for_log, sizeof upstream_host_for_log, "%s", cfg.upstream);
    for (i = 0; i < CM_MAX_CONNS; i++) {
        conns[i].state = C_FREE;
        conns[i].sock = CM_SOCK_INVALID;
        conns[i].held_handle = -1;
        conns[i].pc.handle = -1;
    }
    memset(ended, 0, sizeof ended);
    memset(session_levels, 0, sizeof session_levels);
    listener = CM_SOCK_INVALID;
    if (!stdio_only) {
        /* ADDR:PORT, with [v6]:PORT for IPv6 */
        if (cfg.listen[0] == '[') {
            const char *rb = strchr(cfg.listen, ']');
            if (!rb || rb[1] != ':' || (size_t)(rb - cfg.listen - 1) >= sizeof host)
                goto bad_listen;
            snprintf(host, sizeof host, "%.*s", (int)(rb - cfg.listen - 1), cfg.listen + 1);
            colon = rb + 1;
        } else {
            colon = strrchr(cfg.listen, ':');
            if (!colon || (size_t)(colon - cfg.listen) >= sizeof host)
                goto bad_listen;
            snprintf(host, sizeof host, "%.*s", (int)(colon - cfg.listen), cfg.listen);
        }
        port = strtoul(colon + 1, &end, 10);
        if (*end || port > 65535 || colon[1] == 0)
            goto bad_listen;
        listener_on_loopback = is_loopback_addr(host);
        if ((cfg.tls_cert || cfg.tls_key) && tls_start(cfg.tls_cert, cfg.tls_key, err, errlen) < 0)
            return -1;
        if (!listener_on_loopback && !tls_on())
            cm_logf(CM_LOG_WARN, "listening on %s without TLS: tokens and keys travel in clear on the network; "
                    "give --tls-cert and --tls-key (or put an HTTPS proxy in front)", cfg.listen);
        if (cfg.api_key && !cfg.access_token && !listener_on_loopback) {
            snprintf(err, errlen,
                     "refusing to start: --api-key on a non-loopback address (%s) would let anyone on the network use the key; "
                     "set --access-token (or CALID_MCP_ACCESS_TOKEN) too",
                     host);
            return -1;
        }
        listener = cm_port_listen(host, (unsigned short)port, err, errlen);
        if (listener == CM_SOCK_INVALID)
            return -1;
    }
    server_started = 1;
    return 0;
bad_listen:
    snprintf(err, errlen, "listen address '%s' must be ADDR:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)", cfg.listen);
    return -1;
}

void cm_stop(void)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].state != C_FREE)
            conn_close(&conns[i]);
    up_close_all();
    tls_stop();
    cm_port_close(listener);
    listener = CM_SOCK_INVALID;
    server_started = 0;
    draining = 0;
    cm_port_cleanup();
}

/* ===================================================================== */
/* 13. main (left out when vendoring)                                    */
/* ===================================================================== */
#ifdef CALID_MCP_MAIN
#include <signal.h>

static volatile sig_atomic_t stop_requested; /* 1: drain, then stop; 2: stop now */
static void on_signal(int sig)
{
    signal(sig, on_signal); /* where signal() has one-shot semantics, stay installed for the second */
    stop_requested = stop_requested ? 2 : 1;
}

/*
 * The command line, as data: one row per option with its environment
 * variable, what it sets and its help line. A flag wins over its variable.
 */
struct cli {
    struct cm_config c;
    int stdio;
};

enum opt_kind {
    OPT_TEXT,   /* takes a value: a string field */
    OPT_ORIGIN, /* takes a value, repeatable: appended to allow_origins */
    OPT_LEVEL,  /* takes a value: error, warn, info, debug */
    OPT_LOG_FORMAT, /* takes a value: text or json */
    OPT_SWITCH, /* no value: an int field set to 1 (its variable: 1 or 0) */
    OPT_COUNT,  /* takes a value: a whole number into an int field (cm_start checks its range) */
    OPT_HELP,
    OPT_VERSION
};

struct cli_option {
    const char *flag;
    const char *arg;    /* the value's name in --help, NULL for a switch */
    const char *env;    /* environment variable, or NULL */
    enum opt_kind kind;
    size_t field;       /* offset in struct cli */
    const char *help;
};

#define CLI_FIELD(member) offsetof(struct cli, member)
#define CM_XSTR(x) #x
#define CM_STR(x) CM_XSTR(x) /* a limit's value inside a help string */

/* The limits --version prints, for people and for the test suites. */
#define LIMIT_ROW(x) {#x, (unsigned long)(x)}
static const struct {
    const char *name;
    unsigned long value;
} limit_rows[] = {
    LIMIT_ROW(CM_MAX_CONNS),         LIMIT_ROW(CM_CONN_IN_BYTES),       LIMIT_ROW(CM_BODY_POOL),
    LIMIT_ROW(CM_MAX_CONNS_PER_ADDR),
    LIMIT_ROW(CM_MAX_HEADER_BYTES),  LIMIT_ROW(CM_MAX_HEADERS),         LIMIT_ROW(CM_MAX_BODY_BYTES),
    LIMIT_ROW(CM_OUT_BYTES),         LIMIT_ROW(CM_JSON_TOKENS),         LIMIT_ROW(CM_MAX_ENDED_SESSIONS),
    LIMIT_ROW(CM_MAX_UPSTREAMS),     LIMIT_ROW(CM_UPSTREAM_REQ_BYTES),  LIMIT_ROW(CM_UPSTREAM_BODY_BYTES),
    LIMIT_ROW(CM_TRUST_ARENA_BYTES), LIMIT_ROW(CM_MAX_TRUST_ANCHORS),   LIMIT_ROW(MAX_BATCH),
    LIMIT_ROW(CM_STAGE_BYTES),       LIMIT_ROW(CM_URL_BYTES),           LIMIT_ROW(CM_ARG_BYTES),
    LIMIT_ROW(CM_STDIO_OUT_BYTES),   LIMIT_ROW(CM_SLUG_CACHE_ENTRIES),  LIMIT_ROW(CM_SLUG_CACHE_BYTES),
    LIMIT_ROW(CM_TLS_CONNS),         LIMIT_ROW(CM_UPSTREAM_ANSWER_MAX_BYTES),
};

/* The profile's memory goal, whether it is met, and the limits behind it. */
static void print_profile(FILE *f)
{
    size_t i, used = cm_static_bytes();
    fprintf(f, "profile %s: static memory goal %lu bytes (CM_STATIC_BUDGET): %s\n", CM_PROFILE,
            (unsigned long)CM_STATIC_BUDGET, used <= (size_t)CM_STATIC_BUDGET ? "met" : "NOT met");
#ifdef CM_BUILTIN_ANCHORS
    fprintf(f, "trust anchors: %lu compiled in (used without --ca-file)\n", (unsigned long)CM_BUILTIN_ANCHORS);
#endif
    fprintf(f, "limits:");
    for (i = 0; i < sizeof limit_rows / sizeof limit_rows[0]; i++)
        fprintf(f, " %s=%lu", limit_rows[i].name, limit_rows[i].value);
    fputc('\n', f);
}

static const struct cli_option cli_options[] = {
    {"--listen", "ADDR:PORT", "CALID_MCP_LISTEN", OPT_TEXT, CLI_FIELD(c.listen),
     "where to serve MCP over HTTP at /mcp (default 127.0.0.1:8080)"},
    {"--tls-cert", "PEM", "CALID_MCP_TLS_CERT", OPT_TEXT, CLI_FIELD(c.tls_cert),
     "serve HTTPS with this certificate chain, leaf first (with --tls-key)"},
    {"--tls-key", "PEM", "CALID_MCP_TLS_KEY", OPT_TEXT, CLI_FIELD(c.tls_key),
     "the certificate's private key, RSA or EC, unencrypted"},
    {"--upstream", "URL", "CALID_API_BASE", OPT_TEXT, CLI_FIELD(c.upstream),
     "the Cal ID API base URL (default https://api.cal.id)"},
    {"--ca-file", "PEM", "CALID_CA_FILE", OPT_TEXT, CLI_FIELD(c.ca_file),
     "CA certificates to trust for the API (default the system bundle)"},
    {"--api-key", "KEY", "CALID_API_KEY", OPT_TEXT, CLI_FIELD(c.api_key),
     "a Cal ID key held by the server (default none: clients send their own)"},
    {"--access-token", "TOKEN", "CALID_MCP_ACCESS_TOKEN", OPT_TEXT, CLI_FIELD(c.access_token),
     "token clients must present when --api-key is used off loopback"},
    {"--secret-file", "PATH", "CALID_MCP_SECRET_FILE", OPT_TEXT, CLI_FIELD(c.secret_file),
     "32-byte server secret, made (mode 0600) if absent; instances sharing it trust each other"},
    {"--oauth", NULL, "CALID_MCP_OAUTH", OPT_SWITCH, CLI_FIELD(c.oauth),
     "OAuth 2.1 sign-in for /mcp: users paste their Cal ID key once on a page of this server"},
    {"--public-url", "URL", "CALID_MCP_PUBLIC_URL", OPT_TEXT, CLI_FIELD(c.public_url),
     "https://HOST[:PORT], the address clients reach (needed by --oauth; fills in the home page)"},
    {"--allow-origin", "ORIGIN", NULL, OPT_ORIGIN, 0,
     "allow this browser Origin (repeatable, up to " CM_STR(CM_MAX_ORIGINS) "; default loopback origins)"},
    {"--stdio", NULL, NULL, OPT_SWITCH, CLI_FIELD(stdio),
     "speak MCP over stdin/stdout instead of HTTP (key from CALID_API_KEY)"},
    {"--read-only", NULL, "CALID_MCP_READ_ONLY", OPT_SWITCH, CLI_FIELD(c.read_only),
     "list and run only the tools that change nothing (readOnlyHint)"},
    {"--toolsets", "LIST", "CALID_MCP_TOOLSETS", OPT_TEXT, CLI_FIELD(c.toolsets),
     "availability,bookings,contacts,event-types,slots,teams,users,webhooks (default all)"},
    {"--max-conns-per-addr", "N", "CALID_MCP_MAX_CONNS_PER_ADDR", OPT_COUNT, CLI_FIELD(c.max_conns_per_addr),
     "connections one client address may hold, 1 to " CM_STR(CM_MAX_CONNS) " (default in --version; behind a proxy or NAT: "
     CM_STR(CM_MAX_CONNS) ")"},
    {"--log-level", "LEVEL", NULL, OPT_LEVEL, CLI_FIELD(c.log_level),
     "error, warn, info or debug (default info)"},
    {"--log-format", "FORMAT", "CALID_MCP_LOG_FORMAT", OPT_LOG_FORMAT, CLI_FIELD(c.log_json),
     "text, or json: one JSON object per line, for log shippers (default text)"},
    {"--help", NULL, NULL, OPT_HELP, 0, "this text"},
    {"--version", NULL, NULL, OPT_VERSION, 0, "version and the static memory reserved at the compiled limits"},
};
#define N_CLI_OPTIONS (sizeof cli_options / sizeof cli_options[0])

static void usage(FILE *f)
{
    size_t i;
    fprintf(f, "calid-mcp " CM_VERSION " - an MCP server for the Cal ID scheduling API\n\nusage: calid_mcp [options]\n");
    for (i = 0; i < N_CLI_OPTIONS; i++) {
        const struct cli_option *o = &cli_options[i];
        char left[40];
        snprintf(left, sizeof left, "%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-24s %s", left, o->help);
        if (o->env)
            fprintf(f, " [%s]", o->env);
        fputc('\n', f);
    }
#ifdef CM_BUILTIN_ANCHORS
    fprintf(f, "\nWithout --ca-file: the %lu CA certificates compiled in\n", (unsigned long)CM_BUILTIN_ANCHORS);
#else
    fprintf(f, "\nThe system CA bundle here: %s\n", cm_port_default_ca_file() ? cm_port_default_ca_file() : "none");
#endif
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && v[0] ? v : fallback;
}

static int parse_level(const char *v)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    int l;
    for (l = 0; l < 4; l++)
        if (strcmp(v, levels[l]) == 0)
            return l;
    return -1;
}

/* Applies one option's value to *cl. 0 ok, 2 (the exit code) with a message. */
static int cli_apply(struct cli *cl, const struct cli_option *o, const char *v)
{
    char *field = (char *)cl + o->field;
    switch (o->kind) {
    case OPT_TEXT:
        memcpy(field, &v, sizeof v);
        return 0;
    case OPT_ORIGIN:
        if (cl->c.n_allow_origins == CM_MAX_ORIGINS) {
            fprintf(stderr, "calid-mcp: at most %d --allow-origin values (CM_MAX_ORIGINS)\n", CM_MAX_ORIGINS);
            return 2;
        }
        cl->c.allow_origins[cl->c.n_allow_origins++] = v;
        return 0;
    case OPT_LEVEL: {
        int l = parse_level(v);
        if (l < 0) {
            fprintf(stderr, "calid-mcp: unknown log level '%s' (error, warn, info, debug)\n", v);
            return 2;
        }
        memcpy(field, &l, sizeof l);
        return 0;
    }
    case OPT_LOG_FORMAT: {
        int json = strcmp(v, "json") == 0;
        if (!json && strcmp(v, "text") != 0) {
            fprintf(stderr, "calid-mcp: unknown log format '%s' (text, json)\n", v);
            return 2;
        }
        memcpy(field, &json, sizeof json);
        return 0;
    }
    case OPT_COUNT: {
        int n = 0;
        size_t k, len = strlen(v);
        if (len == 0 || len > 9 || strspn(v, "0123456789") != len) {
            fprintf(stderr, "calid-mcp: %s (%s) takes a whole number, not '%s'\n", o->flag, o->env, v);
            return 2;
        }
        for (k = 0; k < len; k++)
            n = n * 10 + (v[k] - '0');
        memcpy(field, &n, sizeof n);
        return 0;
    }
    default: { /* a switch: on from the flag; from its variable, 1 or 0 */
        int on = !v || strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
        if (v && !on && strcmp(v, "0") != 0 && strcmp(v, "false") != 0) {
            fprintf(stderr, "calid-mcp: %s must be 1 or 0 (true or false), not '%s'\n", o->env, v);
            return 2;
        }
        memcpy(field, &on, sizeof on);
        return 0;
    }
    }
}

/* --version: the build, its memory and limits, and the settings that size admission. */
static void print_version(const struct cm_config *c)
{
    int cap = c->max_conns_per_addr;
    printf("calid-mcp %s\nstatic memory: %lu bytes at the compiled limits (%d connections, %u-byte bodies, %d ended sessions, %d API connections)\n",
           CM_VERSION, (unsigned long)cm_static_bytes(), CM_MAX_CONNS, (unsigned)CM_MAX_BODY_BYTES,
           CM_MAX_ENDED_SESSIONS, CM_MAX_UPSTREAMS);
    if (CM_TLS_CONNS > 0)
        printf("HTTPS: %d connections may be TLS at once, %lu bytes each (BearSSL server context + I/O buffer)\n",
               CM_TLS_CONNS, (unsigned long)TLS_CONN_BYTES);
    else
        printf("HTTPS: not built in (CM_TLS_CONNS=0)\n");
    printf("per client address: at most %d of the %d connections (--max-conns-per-addr; compiled default %d)%s\n", cap,
           CM_MAX_CONNS, CM_MAX_CONNS_PER_ADDR, cap < 1 || cap > CM_MAX_CONNS ? ": out of range, the server refuses to start" : "");
    print_profile(stdout);
}

/* Fills *cl from the environment, then argv. -1 to go on; else the exit code. */
static int cli_parse(struct cli *cl, int argc, char **argv)
{
    size_t k;
    int i, version = 0;
    memset(cl, 0, sizeof *cl);
    cm_config_defaults(&cl->c);
    for (k = 0; k < N_CLI_OPTIONS; k++)
        if (cli_options[k].env && env_or(cli_options[k].env, NULL) && cli_apply(cl, &cli_options[k], getenv(cli_options[k].env)))
            return 2;
    for (i = 1; i < argc; i++) {
        const struct cli_option *o = NULL;
        for (k = 0; k < N_CLI_OPTIONS && !o; k++)
            if (strcmp(argv[i], cli_options[k].flag) == 0 || (cli_options[k].kind == OPT_HELP && strcmp(argv[i], "-h") == 0))
                o = &cli_options[k];
        if (!o) {
            fprintf(stderr, "calid-mcp: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
        if (o->kind == OPT_HELP) {
            usage(stdout);
            return 0;
        }
        if (o->kind == OPT_VERSION) {
            version = 1; /* printed once every option is read: it shows the values in use */
            continue;
        }
        if (o->arg && i + 1 >= argc) {
            fprintf(stderr, "calid-mcp: %s needs a value (see --help)\n", o->flag);
            return 2;
        }
        if (cli_apply(cl, o, o->arg ? argv[++i] : NULL))
            return 2;
    }
    if (version) {
        print_version(&cl->c);
        return 0;
    }
    return -1;
}

int cm_main(int argc, char **argv)
{
    struct cli cl;
    struct cm_config c;
    char err[400];
    int stdio_mode, rc = cli_parse(&cl, argc, argv);
    if (rc >= 0)
        return rc;
    c = cl.c;
    stdio_mode = cl.stdio;
    if (cm_start(&c, stdio_mode, err, sizeof err) != 0) {
        fprintf(stderr, "calid-mcp: %s\n", err);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (stdio_mode) {
        if (!c.api_key)
            cm_logf(CM_LOG_WARN, "no Cal ID key: set CALID_API_KEY (or --api-key) or every tool call fails");
        cm_stdio_run();
        cm_stop();
        return 0;
    }
    cm_logf(CM_LOG_INFO, "serving MCP on %s://%s/mcp (API %s, %s)", c.tls_cert ? "https" : "http", c.listen, c.upstream,
            c.api_key ? (c.access_token ? "server-held key, access token required" : "server-held key")
                      : "callers' own tokens");
    while (!stop_requested)
        cm_poll(1000);
    cm_shutdown(); /* SIGTERM: finish what is in flight; a second signal stops at once */
    while (stop_requested < 2 && cm_poll(1000) == 0)
        ;
    cm_stop();
    return 0;
}
#ifndef CM_OWN_MAIN /* a firmware's main() brings its board up, then calls cm_main() */
int main(int argc, char **argv)
{
    return cm_main(argc, argv);
}
#endif
#endif
