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
 *                                      12. stdio transport
 *                                      13. main (only with CALID_MCP_MAIN)
 *
 * Vendoring: compile this file with calid_mcp.h and one port/ file, link
 * BearSSL, leave CALID_MCP_MAIN undefined and call cm_start()/cm_poll().
 */
#include "calid_mcp.h"

#include <bearssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* ===================================================================== */
/* 1. Limits, config and state                                           */
/* ===================================================================== */

#define MODERN_VERSION "2026-07-28"
#define LATEST_SESSION_VERSION "2025-11-25"
static const char *const session_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};
#define N_SESSION_VERSIONS (sizeof session_versions / sizeof session_versions[0])

#define SERVER_NAME "calid-mcp"
#define SERVER_TITLE "Cal ID"
#define SERVER_INSTRUCTIONS                                                                        \
    "Tools for the user's Cal ID scheduling account. Times are ISO 8601; pass timeZone as an "      \
    "IANA name (e.g. Europe/Berlin). Look ids up before using them: get_event_types for "          \
    "eventTypeId, get_booking for bookingId, list_contacts for contactId, get_teams for teamId. "  \
    "To book: get_slots for free times, then create_booking. Each tool returns the API's JSON "    \
    "answer; isError results carry the API's status and message."

#define MAX_BATCH 16            /* JSON-RPC messages in one 2025-03-26 batch */
#define MAX_SEGS (4 * MAX_BATCH + 4)
#define STAGE_BYTES 1024        /* escaped bytes staged per connection while writing */
#define SCRATCH_BYTES (CM_UPSTREAM_REQ_BYTES) /* one outgoing API request body, built in place */
#define SCHEMA_TOKENS 512

static struct cm_config cfg;
static int server_started;
static int listener_on_loopback;
static cm_sock_t listener = CM_SOCK_INVALID;
static unsigned char server_secret[32]; /* keys token fingerprints */
static char upstream_host_for_log[128];

/* ===================================================================== */
/* 2. Small utilities                                                    */
/* ===================================================================== */

static void cm_logf(int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    va_list ap;
    if (level > cfg.log_level)
        return;
    fprintf(stderr, "calid-mcp %s: ", names[level]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
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

static int view_ieq(struct view v, const char *s)
{
    size_t i, n = strlen(s);
    if (v.n != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)v.p[i]) != lower((unsigned char)s[i]))
            return 0;
    return 1;
}

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
static void token_fingerprint(const char *tok, size_t n, unsigned char out[16])
{
    br_hmac_key_context kc;
    br_hmac_context hc;
    unsigned char full[32];
    br_hmac_key_init(&kc, &br_sha256_vtable, server_secret, sizeof server_secret);
    br_hmac_init(&hc, &kc, 0);
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

/* Length of s once escaped as the inside of a JSON string. */
static size_t json_escaped_len(const char *s, size_t n)
{
    size_t i, total = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f')
            total += 2;
        else if (c < 0x20 || c == 0x7f)
            total += 6;
        else
            total += 1;
    }
    return total;
}

/* Escapes src into out as the inside of a JSON string; stops when out is
 * full. Returns source bytes consumed; *out_len gets the bytes written. */
static size_t json_escape_some(const char *src, size_t n, char *out, size_t cap, size_t *out_len)
{
    static const char digits[] = "0123456789abcdef";
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        char two = 0;
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
        } else {
            if (o + 1 > cap)
                break;
            out[o++] = (char)c;
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
 * It is recursive with a depth bound, allocates nothing, and names the byte
 * offset of the first problem.
 */
#define JSON_MAX_DEPTH 64

struct jcheck {
    const char *s;
    size_t n, i;
    const char *why;
};

static void jc_ws(struct jcheck *c)
{
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

/* One UTF-8 sequence at c->i (first byte >= 0x80); rejects overlongs and surrogates. */
static int jc_utf8(struct jcheck *c)
{
    const unsigned char *u = (const unsigned char *)c->s + c->i;
    size_t left = c->n - c->i, len, k;
    unsigned cp;
    if (u[0] >= 0xc2 && u[0] <= 0xdf) { len = 2; cp = u[0] & 0x1f; }
    else if (u[0] >= 0xe0 && u[0] <= 0xef) { len = 3; cp = u[0] & 0x0f; }
    else if (u[0] >= 0xf0 && u[0] <= 0xf4) { len = 4; cp = u[0] & 0x07; }
    else return -1;
    if (left < len)
        return -1;
    for (k = 1; k < len; k++) {
        if ((u[k] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (u[k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    c->i += len;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int jc_string(struct jcheck *c)
{
    c->i++; /* opening quote */
    while (c->i < c->n) {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') {
            c->i++;
            return 0;
        }
        if (ch < 0x20) {
            c->why = "control character inside a string";
            return -1;
        }
        if (ch == '\\') {
            int e;
            if (c->i + 1 >= c->n)
                break;
            e = c->s[c->i + 1];
            if (e == 'u') {
                int k;
                if (c->i + 6 > c->n) {
                    c->why = "short \\u escape";
                    return -1;
                }
                for (k = 2; k < 6; k++)
                    if (hexval(c->s[c->i + k]) < 0) {
                        c->why = "bad \\u escape";
                        return -1;
                    }
                c->i += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                c->i += 2;
            } else {
                c->why = "bad escape in a string";
                return -1;
            }
        } else if (ch >= 0x80) {
            if (jc_utf8(c) < 0) {
                c->why = "invalid UTF-8";
                return -1;
            }
        } else {
            c->i++;
        }
    }
    c->why = "unterminated string";
    return -1;
}

static int jc_number(struct jcheck *c)
{
    size_t start = c->i;
    if (c->i < c->n && c->s[c->i] == '-')
        c->i++;
    if (c->i < c->n && c->s[c->i] == '0')
        c->i++;
    else if (c->i < c->n && c->s[c->i] >= '1' && c->s[c->i] <= '9')
        while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
            c->i++;
    else
        goto bad;
    if (c->i < c->n && c->s[c->i] == '.') {
        c->i++;
        if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
            goto bad;
        while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
            c->i++;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
            goto bad;
        while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
            c->i++;
    }
    return 0;
bad:
    c->i = start;
    c->why = "invalid number";
    return -1;
}

static int jc_value(struct jcheck *c, int depth)
{
    jc_ws(c);
    if (c->i >= c->n) {
        c->why = "unexpected end of input";
        return -1;
    }
    if (depth > JSON_MAX_DEPTH) {
        c->why = "nesting deeper than 64 levels";
        return -1;
    }
    switch (c->s[c->i]) {
    case '{':
        c->i++;
        jc_ws(c);
        if (c->i < c->n && c->s[c->i] == '}') {
            c->i++;
            return 0;
        }
        for (;;) {
            jc_ws(c);
            if (c->i >= c->n || c->s[c->i] != '"') {
                c->why = "expected a string key";
                return -1;
            }
            if (jc_string(c) < 0)
                return -1;
            jc_ws(c);
            if (c->i >= c->n || c->s[c->i] != ':') {
                c->why = "expected ':'";
                return -1;
            }
            c->i++;
            if (jc_value(c, depth + 1) < 0)
                return -1;
            jc_ws(c);
            if (c->i < c->n && c->s[c->i] == ',') {
                c->i++;
                continue;
            }
            if (c->i < c->n && c->s[c->i] == '}') {
                c->i++;
                return 0;
            }
            c->why = "expected ',' or '}'";
            return -1;
        }
    case '[':
        c->i++;
        jc_ws(c);
        if (c->i < c->n && c->s[c->i] == ']') {
            c->i++;
            return 0;
        }
        for (;;) {
            if (jc_value(c, depth + 1) < 0)
                return -1;
            jc_ws(c);
            if (c->i < c->n && c->s[c->i] == ',') {
                c->i++;
                continue;
            }
            if (c->i < c->n && c->s[c->i] == ']') {
                c->i++;
                return 0;
            }
            c->why = "expected ',' or ']'";
            return -1;
        }
    case '"':
        return jc_string(c);
    case 't':
        if (c->n - c->i >= 4 && memcmp(c->s + c->i, "true", 4) == 0) {
            c->i += 4;
            return 0;
        }
        break;
    case 'f':
        if (c->n - c->i >= 5 && memcmp(c->s + c->i, "false", 5) == 0) {
            c->i += 5;
            return 0;
        }
        break;
    case 'n':
        if (c->n - c->i >= 4 && memcmp(c->s + c->i, "null", 4) == 0) {
            c->i += 4;
            return 0;
        }
        break;
    default:
        return jc_number(c);
    }
    c->why = "invalid literal";
    return -1;
}

/* 0 when s is exactly one valid JSON value (surrounded by optional white
 * space); otherwise -1 with *why and *at describing the first problem. */
static int json_check(const char *s, size_t n, const char **why, size_t *at)
{
    struct jcheck c;
    c.s = s;
    c.n = n;
    c.i = 0;
    c.why = NULL;
    if (jc_value(&c, 0) == 0) {
        jc_ws(&c);
        if (c.i == n)
            return 0;
        c.why = "extra data after the JSON value";
    }
    *why = c.why;
    *at = c.i;
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
 * the keys we look for have no escapes. */
static int obj_get(const struct jdoc *d, int obj, const char *key)
{
    int i, k, count;
    if (obj < 0 || d->t[obj].type != JSMN_OBJECT)
        return -1;
    count = d->t[obj].size;
    i = obj + 1;
    for (k = 0; k < count; k++) {
        if (tok_is_str(d, i, key))
            return i + 1;
        i = tok_next(d, i + 1);
    }
    return -1;
}

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

static int is_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const struct view *http_header(const struct http_req *r, const char *name)
{
    int i;
    for (i = 0; i < r->nh; i++)
        if (view_ieq(r->name[i], name))
            return &r->value[i];
    return NULL;
}

/* Finds the end of the head ("\r\n\r\n" or "\n\n"). Returns its length or 0. */
static size_t http_head_end(const char *b, size_t len, size_t scan_from)
{
    size_t i = scan_from > 3 ? scan_from - 3 : 0;
    for (; i < len; i++) {
        if (b[i] != '\n')
            continue;
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

static int http_parse_head(const char *b, size_t len, size_t scan_from, size_t max_head, struct http_req *r)
{
    size_t end = http_head_end(b, len, scan_from), i = 0, ls;
    int seen_cl = 0;
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    if (end == 0) {
        if (len >= max_head)
            return http_fail(r, 431, "request head larger than CM_MAX_HEADER_BYTES");
        return 0;
    }
    if (end > max_head)
        return http_fail(r, 431, "request head larger than CM_MAX_HEADER_BYTES");
    /* request line: METHOD SP target SP HTTP/1.x */
    ls = i;
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
    i++;
    r->path = r->target;
    {
        const char *q = memchr(r->target.p, '?', r->target.n);
        if (q) {
            r->path.n = (size_t)(q - r->target.p);
            r->query.p = q + 1;
            r->query.n = r->target.n - r->path.n - 1;
        }
    }
    r->keep_alive = r->minor >= 1;
    /* header fields */
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
        while (i < end && b[i] != '\r' && b[i] != '\n') {
            unsigned char c = (unsigned char)b[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return http_fail(r, 400, "control character in a header value");
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
    r->head_len = end;
    /* what the head says about the body and the connection */
    for (i = 0; i < (size_t)r->nh; i++) {
        struct view v = r->value[i];
        if (view_ieq(r->name[i], "content-length")) {
            long n = 0;
            size_t k;
            if (v.n == 0 || v.n > 10)
                return http_fail(r, 400, "invalid Content-Length");
            for (k = 0; k < v.n; k++) {
                if (v.p[k] < '0' || v.p[k] > '9')
                    return http_fail(r, 400, "invalid Content-Length");
                n = n * 10 + (v.p[k] - '0');
            }
            if (seen_cl && n != r->content_length)
                return http_fail(r, 400, "conflicting Content-Length headers");
            seen_cl = 1;
            r->content_length = n;
        } else if (view_ieq(r->name[i], "transfer-encoding")) {
            if (!view_ieq(v, "chunked"))
                return http_fail(r, 501, "only Transfer-Encoding: chunked is supported");
            if (r->chunked)
                return http_fail(r, 400, "repeated Transfer-Encoding");
            r->chunked = 1;
        } else if (view_ieq(r->name[i], "connection")) {
            if (view_icontains(v, "close"))
                r->keep_alive = 0;
            else if (view_icontains(v, "keep-alive"))
                r->keep_alive = 1;
        } else if (view_ieq(r->name[i], "expect")) {
            if (!view_ieq(v, "100-continue"))
                return http_fail(r, 417, "only Expect: 100-continue is understood");
            r->expect_continue = 1;
        }
    }
    if (r->chunked && seen_cl)
        return http_fail(r, 400, "both Content-Length and Transfer-Encoding (request smuggling)");
    if (r->chunked && r->minor == 0)
        return http_fail(r, 400, "chunked encoding in an HTTP/1.0 request");
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
        if (digits == 0)
            return -1;
        while (i < n && p[i] != '\n') { /* chunk extensions are skipped */
            if (p[i] != ';' && p[i] != '\r' && p[i] != ' ' && p[i] != '\t' && !is_tchar((unsigned char)p[i]) && p[i] != '=' && p[i] != '"')
                return -1;
            i++;
        }
        if (i >= n)
            return 0;
        i++;
        if (size == 0) {
            for (;;) { /* trailer fields until the blank line */
                size_t ls = i;
                while (i < n && p[i] != '\n')
                    i++;
                if (i >= n)
                    return 0;
                i++;
                if (i - ls <= 2) {
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
 * sent, so every answer carries a Content-Length.
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
 * (POST, PATCH), copied as the caller gave them.
 */
enum {
    T_READ = 1,        /* reads only: readOnlyHint */
    T_DESTRUCTIVE = 2, /* deletes, cancels or removes: destructiveHint */
    T_IDEMPOTENT = 4,  /* repeating it changes nothing more: idempotentHint */
    T_MULTIPART = 8,   /* sends multipart/form-data built from a base64 argument */
    T_ALWAYS_BODY = 16 /* the API refuses an empty body: send {} at least */
};

struct cm_tool {
    const char *name;
    const char *method;
    const char *path;
    unsigned flags;
    const char *title;
    const char *description;
    const char *input_schema;
};

static const struct cm_tool tools[] = {
#include "catalog.inc"
};
#define N_TOOLS (sizeof tools / sizeof tools[0])

#ifndef CM_TOOLS_JSON_BYTES
#define CM_TOOLS_JSON_BYTES 98304 /* the prebuilt tools/list array; checked at start */
#endif
static char tools_json[CM_TOOLS_JSON_BYTES];
static size_t tools_json_len;

static int find_tool(const char *name)
{
    size_t i;
    for (i = 0; i < N_TOOLS; i++)
        if (strcmp(tools[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Builds the tools array once: every tools/list answer points at it. */
static int build_tools_json(char *err, size_t errlen)
{
    struct textbuf b;
    size_t i;
    b.p = tools_json;
    b.cap = sizeof tools_json;
    b.len = 0;
    b.overflow = 0;
    tb_str(&b, "[");
    for (i = 0; i < N_TOOLS; i++) {
        const struct cm_tool *t = &tools[i];
        if (i)
            tb_str(&b, ",");
        tb_str(&b, "{\"name\":");
        tb_json_string(&b, t->name, strlen(t->name));
        tb_str(&b, ",\"title\":");
        tb_json_string(&b, t->title, strlen(t->title));
        tb_str(&b, ",\"description\":");
        tb_json_string(&b, t->description, strlen(t->description));
        tb_str(&b, ",\"inputSchema\":");
        tb_str(&b, t->input_schema);
        tb_str(&b, ",\"annotations\":{\"title\":");
        tb_json_string(&b, t->title, strlen(t->title));
        tb_printf(&b, ",\"readOnlyHint\":%s,\"destructiveHint\":%s,\"idempotentHint\":%s,\"openWorldHint\":true}}",
                  (t->flags & T_READ) ? "true" : "false", (t->flags & T_DESTRUCTIVE) ? "true" : "false",
                  (t->flags & T_IDEMPOTENT) ? "true" : "false");
    }
    tb_str(&b, "]");
    if (b.overflow) {
        snprintf(err, errlen, "the tool list does not fit CM_TOOLS_JSON_BYTES (%u)", (unsigned)sizeof tools_json);
        return -1;
    }
    tools_json_len = b.len;
    return 0;
}

/* ===================================================================== */
/* 7. Tool calls: arguments -> one API request                           */
/* ===================================================================== */

static jsmntok_t schema_toks[SCHEMA_TOKENS];
static char req_path[4096];          /* path + query of the API request being built */
static char req_body[SCRATCH_BYTES]; /* its body */
static char bearer_buf[1024];        /* NUL-terminated copy of the token for the API */
static char arg_buf[4096];           /* one decoded string argument */

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

static int parse_schema(const struct cm_tool *t, struct jdoc *sd)
{
    jsmn_parser p;
    int r;
    jsmn_init(&p);
    r = jsmn_parse(&p, t->input_schema, strlen(t->input_schema), schema_toks, SCHEMA_TOKENS);
    if (r < 1)
        return -1;
    sd->js = t->input_schema;
    sd->t = schema_toks;
    sd->n = r;
    return 0;
}

/* Checks arguments against the tool's schema: required present, declared
 * properties of the declared type, enums respected. 0 ok, or -1 with msg. */
static int validate_args(const struct cm_tool *t, const struct jdoc *d, int args, char *msg, size_t cap)
{
    struct jdoc sd;
    int props, req, i, k;
    if (parse_schema(t, &sd) < 0) {
        snprintf(msg, cap, "internal error: the schema of %s does not parse", t->name);
        return -1;
    }
    props = obj_get(&sd, 0, "properties");
    req = obj_get(&sd, 0, "required");
    if (req >= 0 && sd.t[req].type == JSMN_ARRAY) {
        for (i = req + 1, k = 0; k < sd.t[req].size; k++, i = tok_next(&sd, i)) {
            struct view name = tok_view(&sd, i);
            char key[64];
            int v;
            snprintf(key, sizeof key, "%.*s", (int)name.n, name.p);
            v = obj_get(d, args, key);
            if (v < 0 || tok_is_null(d, v)) {
                int pd = obj_get(&sd, obj_get(&sd, props, key), "description");
                struct view desc = pd >= 0 ? tok_view(&sd, pd) : name;
                snprintf(msg, cap, "Missing required argument '%s'%s%.*s", key, pd >= 0 ? ": " : "",
                         pd >= 0 ? (int)desc.n : 0, desc.p);
                return -1;
            }
        }
    }
    if (args < 0 || props < 0)
        return 0;
    for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
        struct view key = tok_view(d, i);
        int v = i + 1, prop = -1, j, m;
        const char *actual;
        /* find the property in the schema (keys compared raw) */
        for (j = props + 1, m = 0; m < sd.t[props].size; m++, j = tok_next(&sd, j + 1))
            if (tok_view(&sd, j).n == key.n && memcmp(tok_view(&sd, j).p, key.p, key.n) == 0) {
                prop = j + 1;
                break;
            }
        if (prop < 0 || tok_is_null(d, v))
            continue; /* extra arguments pass through; null means not given */
        actual = tok_type_name(d, v);
        if (!type_matches(&sd, obj_get(&sd, prop, "type"), actual)) {
            struct view want = tok_view(&sd, obj_get(&sd, prop, "type"));
            snprintf(msg, cap, "Argument '%.*s' must be %.*s, got %s", (int)key.n, key.p,
                     (int)want.n, want.p, actual);
            return -1;
        }
        {
            int en = obj_get(&sd, prop, "enum");
            if (en >= 0 && sd.t[en].type == JSMN_ARRAY) {
                int e, q, found = 0;
                struct view raw = tok_raw(d, v);
                for (e = en + 1, q = 0; q < sd.t[en].size; q++, e = tok_next(&sd, e)) {
                    struct view allowed = tok_raw(&sd, e);
                    if (allowed.n == raw.n && memcmp(allowed.p, raw.p, raw.n) == 0)
                        found = 1;
                }
                if (!found) {
                    struct view all = tok_view(&sd, en);
                    snprintf(msg, cap, "Argument '%.*s' must be one of [%.*s], got %.*s", (int)key.n,
                             key.p, (int)all.n, all.p, (int)raw.n, raw.p);
                    return -1;
                }
            }
        }
    }
    return 0;
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

/* Builds req_path (path with parameters filled in, then the query string). */
static int build_path(const struct cm_tool *t, const struct jdoc *d, int args, char *msg, size_t cap)
{
    size_t len = 0;
    const char *p = t->path;
    int with_query = strcmp(t->method, "GET") == 0 || strcmp(t->method, "DELETE") == 0;
    int i, k;
    char sep = '?';
    while (*p) {
        if (*p == '{') {
            const char *e = strchr(p, '}');
            char key[64];
            int v;
            snprintf(key, sizeof key, "%.*s", (int)(e - p - 1), p + 1);
            v = obj_get(d, args, key);
            if (v < 0 || (d->t[v].type != JSMN_STRING && d->t[v].type != JSMN_PRIMITIVE) ||
                tok_view(d, v).n == 0) {
                snprintf(msg, cap, "Argument '%s' must be a non-empty id", key);
                return -1;
            }
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
    if (!with_query || args < 0)
        return 0;
    for (i = args + 1, k = 0; k < d->t[args].size; k++, i = tok_next(d, i + 1)) {
        struct view key = tok_view(d, i);
        int v = i + 1;
        if (is_path_param(t->path, key) || tok_is_null(d, v))
            continue;
        if (d->t[v].type == JSMN_ARRAY) { /* key=a&key=b */
            int e, q;
            for (e = v + 1, q = 0; q < d->t[v].size; q++, e = tok_next(d, e)) {
                if (len + 2 >= sizeof req_path)
                    goto too_long;
                req_path[len++] = sep;
                sep = '&';
                if (percent_encode(key.p, key.n, req_path, sizeof req_path, &len) < 0 || len + 2 >= sizeof req_path)
                    goto too_long;
                req_path[len++] = '=';
                if (put_url_value(d, e, req_path, sizeof req_path, &len) < 0)
                    goto too_long;
            }
            continue;
        }
        if (len + 2 >= sizeof req_path)
            goto too_long;
        req_path[len++] = sep;
        sep = '&';
        if (percent_encode(key.p, key.n, req_path, sizeof req_path, &len) < 0 || len + 2 >= sizeof req_path)
            goto too_long;
        req_path[len++] = '=';
        if (put_url_value(d, v, req_path, sizeof req_path, &len) < 0)
            goto too_long;
    }
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
    b.cap = sizeof req_body;
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
    b.cap = sizeof req_body;
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

struct up_result;
static void on_upstream_done(unsigned owner, int handle, const struct up_result *r);
#include "upstream.inc"

/* ===================================================================== */
/* 9. Sessions (the 2025-11-25 era and before)                           */
/* ===================================================================== */
/*
 * A session remembers its negotiated version and a keyed fingerprint of the
 * token that opened it, so the same id with another token is refused. The
 * table is fixed; when it is full the least recently used session is
 * dropped, and its client, told 404, initializes again as the spec says.
 */
#define SESSION_ID_CHARS 32 /* 128 random bits, hex */

struct session {
    int used;
    char id[SESSION_ID_CHARS + 1];
    char version[11];
    unsigned char token_fp[16];
    uint64_t last_ms;
};
static struct session sessions[CM_MAX_SESSIONS];
static unsigned long sessions_evicted;

static int session_find(struct view id, uint64_t now)
{
    int i;
    if (id.n != SESSION_ID_CHARS)
        return -1;
    for (i = 0; i < CM_MAX_SESSIONS; i++) {
        struct session *s = &sessions[i];
        if (!s->used)
            continue;
        if (now > s->last_ms && now - s->last_ms > (uint64_t)CM_SESSION_TTL_MS) {
            s->used = 0; /* expired */
            continue;
        }
        if (memcmp(s->id, id.p, SESSION_ID_CHARS) == 0)
            return i;
    }
    return -1;
}

static int session_create(const char *version, const char *token, size_t token_len, uint64_t now)
{
    unsigned char rnd[SESSION_ID_CHARS / 2];
    int i, pick = -1;
    for (i = 0; i < CM_MAX_SESSIONS; i++)
        if (!sessions[i].used || (now > sessions[i].last_ms && now - sessions[i].last_ms > (uint64_t)CM_SESSION_TTL_MS)) {
            pick = i;
            break;
        }
    if (pick < 0) {
        pick = 0;
        for (i = 1; i < CM_MAX_SESSIONS; i++)
            if (sessions[i].last_ms < sessions[pick].last_ms)
                pick = i;
        sessions_evicted++;
        cm_logf(CM_LOG_WARN, "session table full (CM_MAX_SESSIONS=%d): dropped the least recently used",
                CM_MAX_SESSIONS);
    }
    if (cm_port_random(rnd, sizeof rnd) < 0)
        return -1;
    hex_encode(rnd, sizeof rnd, sessions[pick].id);
    snprintf(sessions[pick].version, sizeof sessions[pick].version, "%s", version);
    token_fingerprint(token, token_len, sessions[pick].token_fp);
    sessions[pick].last_ms = now;
    sessions[pick].used = 1;
    return pick;
}

static int sessions_in_use(void)
{
    int i, n = 0;
    for (i = 0; i < CM_MAX_SESSIONS; i++)
        n += sessions[i].used;
    return n;
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

/* What one request needs once the API has answered. */
struct pending_call {
    int active;
    int tool;
    char id[80];      /* the JSON-RPC id, raw JSON text */
    int modern;
    int handle;       /* upstream handle, -1 until submitted */
    int jdoc_args;    /* token index of the arguments, for resubmission */
};

/* Everything dispatch needs to know about where a message came from. */
struct rpc_ctx {
    int era;
    const char *version;      /* version in force for this message */
    const char *token;        /* token for the API (may be NULL: no token) */
    size_t token_len;
    int http_status;          /* out: the HTTP status dispatch wants (200 default) */
    int batch;                /* inside a 2025-03-26 batch */
    int new_session;          /* out: index of a session initialize created, or -1 */
};

static int is_session_version(const char *v, size_t n)
{
    size_t i;
    for (i = 0; i < N_SESSION_VERSIONS; i++)
        if (strlen(session_versions[i]) == n && memcmp(session_versions[i], v, n) == 0)
            return 1;
    return 0;
}

/* The id as raw JSON text ("null" when absent or not a string/number). */
static struct view rpc_id(const struct jdoc *d, int msg)
{
    struct view v;
    int id = obj_get(d, msg, "id");
    if (id >= 0 && (d->t[id].type == JSMN_STRING ||
                    (d->t[id].type == JSMN_PRIMITIVE && strcmp(tok_type_name(d, id), "integer") == 0) ||
                    (d->t[id].type == JSMN_PRIMITIVE && strcmp(tok_type_name(d, id), "number") == 0)))
        return tok_raw(d, id);
    v.p = "null";
    v.n = 4;
    return v;
}

static void rpc_error(struct resp *r, struct view id, int code, const char *message, const char *data_json)
{
    msg_begin(r);
    rs_printf(r, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":%d,\"message\":", (int)id.n, id.p, code);
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
    msg_begin(r);
    rs_printf(r, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":{", (int)id.n, id.p);
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
    ti = find_tool(tool_name);
    if (ti < 0) {
        char m[200];
        snprintf(m, sizeof m, "Unknown tool: %s (tools/list names the %u tools)", tool_name, (unsigned)N_TOOLS);
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
                         "No Cal ID token: send Authorization: Bearer calid_... or start the server with --api-key");
        return D_REPLIED;
    }
    if (c->token_len >= sizeof bearer_buf) {
        tool_text_result(r, id, c->era == ERA_MODERN, 1, "The bearer token is too long (1023 bytes at most)");
        return D_REPLIED;
    }
    pc->active = 1;
    pc->tool = ti;
    pc->modern = c->era == ERA_MODERN;
    pc->handle = -1;
    pc->jdoc_args = args;
    snprintf(pc->id, sizeof pc->id, "%.*s", (int)(id.n < sizeof pc->id ? id.n : 4), id.n < sizeof pc->id ? id.p : "null");
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
    if (strcmp(t->method, "POST") == 0 || strcmp(t->method, "PATCH") == 0 || (t->flags & T_ALWAYS_BODY)) {
        if (t->flags & T_MULTIPART) {
            body_len = build_multipart(d, pc->jdoc_args, ctype, sizeof ctype, msg, cap);
            content_type = ctype;
        } else {
            body_len = build_json_body(t, d, pc->jdoc_args);
            content_type = "application/json";
        }
        if (body_len < 0) {
            if (!msg[0])
                snprintf(msg, cap, "The arguments make a request body over %u bytes", (unsigned)sizeof req_body);
            return -2;
        }
    }
    memcpy(bearer_buf, token, token_len);
    bearer_buf[token_len] = 0;
    h = up_submit(owner, t->method, req_path, bearer_buf, content_type, req_body, (size_t)body_len);
    if (h == -2)
        snprintf(msg, cap, "The request for %s does not fit CM_UPSTREAM_REQ_BYTES (%u)", t->name,
                 (unsigned)CM_UPSTREAM_REQ_BYTES);
    cm_logf(CM_LOG_DEBUG, "tool %s -> %s %s%s", t->name, t->method, upstream_host_for_log, req_path);
    return h;
}

/* Pulls "message" out of an API error answer, if it has one. */
static void api_message(const char *body, size_t n, char *out, size_t cap)
{
    static jsmntok_t toks[256];
    struct jdoc d;
    const char *why;
    size_t at;
    int m, r;
    out[0] = 0;
    r = jdoc_parse(&d, body, n, toks, 256, &why, &at);
    if (r < 0 && r != -2)
        return;
    if (r == -2)
        return;
    m = obj_get(&d, 0, "message");
    if (m < 0)
        m = obj_get(&d, obj_get(&d, 0, "error"), "message");
    if (m >= 0 && d.t[m].type == JSMN_STRING)
        tok_unescape(&d, m, out, cap);
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

/* Renders the tool result for a finished API request. With copy set (batch
 * parts) the API answer is copied; otherwise the answer is referenced and the
 * caller must keep the upstream slot until the answer is written. */
static void render_tool_result(struct resp *r, const struct pending_call *pc, const struct up_result *u, int copy)
{
    struct view id;
    char head[600];
    int is_error = 0, show_body = 1;
    id.p = pc->id;
    id.n = strlen(pc->id);
    head[0] = 0;
    if (u->status == 0) {
        is_error = 1;
        show_body = 0;
        snprintf(head, sizeof head, "Could not complete the Cal ID API request: %s", u->error);
    } else if (u->status >= 300) {
        char m[300];
        is_error = 1;
        api_message(u->body, u->body_len, m, sizeof m);
        snprintf(head, sizeof head, "Cal ID API error %d %s%s%s%s%s%s\n", u->status, status_reason(u->status),
                 m[0] ? ": " : "", m, u->retry_after[0] ? ". Retry after " : "", u->retry_after,
                 u->retry_after[0] ? " seconds (Retry-After)." : "");
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
        snprintf(data, sizeof data, "{\"supported\":[\"" MODERN_VERSION "\"],\"requested\":%.*s}",
                 (int)tok_raw(d, ver).n, tok_raw(d, ver).p);
        snprintf(m, sizeof m, "Unsupported protocol version: %.*s", (int)(v.n > 60 ? 60 : v.n), v.p);
        c->http_status = 400;
        rpc_error(r, id, E_UNSUPPORTED_VERSION, m, tok_raw(d, ver).n < 300 ? data : NULL);
        return -1;
    }
    return 0;
}

static void render_initialize(struct resp *r, struct view id, const char *version)
{
    result_begin(r, id);
    rs_printf(r, "\"protocolVersion\":\"%s\",\"capabilities\":{\"tools\":{\"listChanged\":false}},"
                 "\"serverInfo\":{\"name\":\"" SERVER_NAME "\",\"title\":\"" SERVER_TITLE "\",\"version\":\"" CM_VERSION "\"},"
                 "\"instructions\":",
              version);
    rs_json_string(r, SERVER_INSTRUCTIONS, strlen(SERVER_INSTRUCTIONS));
    result_end(r, 0, 0);
}

static void render_discover(struct resp *r, struct view id)
{
    result_begin(r, id);
    rs_str(r, "\"supportedVersions\":[\"" MODERN_VERSION "\"],\"capabilities\":{\"tools\":{\"listChanged\":false}},"
              "\"instructions\":");
    rs_json_string(r, SERVER_INSTRUCTIONS, strlen(SERVER_INSTRUCTIONS));
    result_end(r, 1, 1);
}

static void render_tools_list(struct resp *r, struct view id, int modern)
{
    result_begin(r, id);
    rs_str(r, "\"tools\":");
    rs_ext(r, tools_json, tools_json_len, 0); /* static: safe to reference, even in a batch */
    result_end(r, modern, 1);
}

/*
 * Dispatches one JSON-RPC message (the object token msg). Session checks and
 * header checks are done by the transport before this is called.
 */
static int dispatch(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, struct pending_call *pc)
{
    int method = obj_get(d, msg, "method"), id_tok = obj_get(d, msg, "id");
    int modern = c->era == ERA_MODERN;
    struct view id = rpc_id(d, msg), m;
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
    m = tok_view(d, method);
    if (id_tok < 0) /* a notification: never answered */
        return D_NO_REPLY;
    if (view_eq(m, "tools/list")) {
        render_tools_list(r, id, modern);
        return D_REPLIED;
    }
    if (view_eq(m, "tools/call"))
        return start_tool_call(c, d, msg, r, pc);
    if (modern && view_eq(m, "server/discover")) {
        render_discover(r, id);
        return D_REPLIED;
    }
    if (!modern && view_eq(m, "ping")) {
        result_begin(r, id);
        result_end(r, 0, 0);
        return D_REPLIED;
    }
    if (!modern && view_eq(m, "initialize")) {
        /* reached only from transports that handle initialize themselves */
        rpc_error(r, id, E_INVALID_REQUEST, "Invalid Request: initialize must be the first message of a session", NULL);
        return D_REPLIED;
    }
    {
        char text[200];
        snprintf(text, sizeof text, "Method not found: %.*s%s", (int)(m.n > 80 ? 80 : m.n), m.p,
                 modern && (view_eq(m, "initialize") || view_eq(m, "ping") || view_eq(m, "logging/setLevel"))
                     ? " (not part of protocol 2026-07-28)" : "");
        if (modern)
            c->http_status = 404;
        rpc_error(r, id, E_METHOD_NOT_FOUND, text, NULL);
    }
    return D_REPLIED;
}

/* Handles initialize in the session era: negotiates the version and opens a
 * session bound to the caller's token. */
static int handle_initialize(struct rpc_ctx *c, const struct jdoc *d, int msg, struct resp *r, uint64_t now)
{
    struct view id = rpc_id(d, msg);
    int params = obj_get(d, msg, "params");
    int pv = obj_get(d, params, "protocolVersion"), caps = obj_get(d, params, "capabilities");
    int info = obj_get(d, params, "clientInfo");
    const char *version = LATEST_SESSION_VERSION;
    size_t i;
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
        int s = session_create(version, c->token ? c->token : "", c->token ? c->token_len : 0, now);
        if (s < 0) {
            c->http_status = 500;
            rpc_error(r, id, E_INTERNAL, "Internal error: no random source for a session id", NULL);
            return D_REPLIED;
        }
        c->new_session = s;
    }
    render_initialize(r, id, version);
    return D_REPLIED;
}

/* ===================================================================== */
/* 11. Connections and the event loop                                    */
/* ===================================================================== */

enum { C_FREE = 0, C_READ, C_WAIT_API, C_WRITE };

#define IN_BYTES (CM_MAX_HEADER_BYTES + CM_MAX_BODY_BYTES)
#define STDIO_OWNER 0xffffffffu

struct conn {
    int state;
    cm_sock_t sock;
    unsigned gen;                 /* bumps on reuse: stale API answers are recognised */
    uint64_t last_ms;             /* last progress */
    uint64_t req_start_ms;        /* first byte of the current request */
    char in[IN_BYTES];
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
    int batch_pos, batch_len, batch_replies; /* 2025-03-26 batches */
    int session;
    int want_sse;
    char origin_ok[160];          /* Origin to echo for CORS, "" for none */
    /* the answer */
    char hdr[768];
    size_t hdr_len, hdr_sent;
    struct resp resp;
    char out[CM_OUT_BYTES];
    int seg_i;
    size_t seg_off;
    char stage[STAGE_BYTES];
    size_t stage_len, stage_sent;
    int held_handle;              /* upstream answer referenced by the answer, or -1 */
};

static struct conn conns[CM_MAX_CONNS];
static jsmntok_t toks[CM_JSON_TOKENS];
static unsigned long stat_requests, stat_refused_busy;

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
    if (c->held_handle >= 0)
        up_release(c->held_handle);
    cm_port_close(c->sock);
    c->state = C_FREE;
    c->sock = CM_SOCK_INVALID;
    c->held_handle = -1;
    c->parse_pending = 0;
    c->pc.active = 0;
    c->gen++;
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
    c->session = -1;
    c->origin_ok[0] = 0;
    c->held_handle = -1;
    c->close_after = 0;
    c->head_only = 0;
}

static int conn_write(struct conn *c);

/* Starts sending an answer: status line and headers into hdr, body = resp. */
static void conn_answer(struct conn *c, int status, const char *content_type, const char *extra_headers)
{
    struct textbuf h;
    size_t body_len = rs_length(&c->resp);
    h.p = c->hdr;
    h.cap = sizeof c->hdr;
    h.len = 0;
    h.overflow = 0;
    if (!c->keep_alive || c->close_after)
        c->close_after = 1;
    tb_printf(&h, "HTTP/1.1 %d %s\r\nServer: calid-mcp/" CM_VERSION "\r\n", status, status_reason(status));
    if (body_len || status != 202)
        tb_printf(&h, "Content-Type: %s\r\n", content_type ? content_type : "application/json");
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
    c->hdr_len = h.len;
    c->hdr_sent = 0;
    if (c->head_only)
        c->resp.nseg = 0;
    c->seg_i = 0;
    c->seg_off = 0;
    c->stage_len = c->stage_sent = 0;
    c->state = C_WRITE;
    c->last_ms = cm_port_now_ms();
    cm_logf(CM_LOG_DEBUG, "answer %d, %lu body bytes", status, (unsigned long)body_len);
    conn_write(c);
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
    conn_reset_request(c);
    c->state = C_READ;
    c->parse_pending = rest > 0; /* parsed by the loop, so answers never recurse */
    c->last_ms = c->req_start_ms = cm_port_now_ms();
}

/* Sends as much of the answer as the socket takes. 1 done, 0 more to send, -1 closed. */
static int conn_write(struct conn *c)
{
    for (;;) {
        const char *p;
        size_t n;
        long w;
        if (c->hdr_sent < c->hdr_len) {
            p = c->hdr + c->hdr_sent;
            n = c->hdr_len - c->hdr_sent;
        } else if (c->stage_sent < c->stage_len) {
            p = c->stage + c->stage_sent;
            n = c->stage_len - c->stage_sent;
        } else if (c->seg_i < c->resp.nseg) {
            struct seg *s = &c->resp.seg[c->seg_i];
            if (c->seg_off >= s->n) {
                c->seg_i++;
                c->seg_off = 0;
                continue;
            }
            if (s->escape) {
                size_t used = json_escape_some(s->p + c->seg_off, s->n - c->seg_off, c->stage, sizeof c->stage, &c->stage_len);
                c->seg_off += used;
                c->stage_sent = 0;
                continue;
            }
            p = s->p + c->seg_off;
            n = s->n - c->seg_off;
        } else {
            conn_finish_answer(c);
            return 1;
        }
        w = cm_port_send(c->sock, p, n);
        if (w == CM_PORT_AGAIN)
            return 0;
        if (w <= 0) {
            conn_close(c);
            return -1;
        }
        c->last_ms = cm_port_now_ms();
        if (c->hdr_sent < c->hdr_len)
            c->hdr_sent += (size_t)w;
        else if (c->stage_sent < c->stage_len)
            c->stage_sent += (size_t)w;
        else
            c->seg_off += (size_t)w;
    }
}

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
                         size_t *presented_n, const char **why)
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
    *why = "Unauthorized: a Cal ID token is needed: send Authorization: Bearer calid_... (create an API key in Cal ID under Settings > Developer > API keys)";
    return 401;
}

/* Decodes an Mcp-Name style header value (=?base64?...?= or plain). */
static int header_value_decode(struct view v, char *out, size_t cap)
{
    if (v.n >= 12 && memcmp(v.p, "=?base64?", 9) == 0 && memcmp(v.p + v.n - 2, "?=", 2) == 0) {
        long n = base64_decode(v.p + 9, v.n - 11, (unsigned char *)out, cap - 1);
        if (n < 0)
            return -1;
        out[n] = 0;
        return 0;
    }
    if (v.n >= cap)
        return -1;
    memcpy(out, v.p, v.n);
    out[v.n] = 0;
    return 0;
}

static void conn_process(struct conn *c);
static void conn_continue_batch(struct conn *c, const struct jdoc *d);

/* Parses the current body into the shared token array (again, if needed:
 * bodies stay in the connection's buffer while it waits on the API). */
static int conn_parse_body(struct conn *c, struct jdoc *d, const char **why, size_t *at)
{
    return jdoc_parse(d, c->body, c->body_len, toks, CM_JSON_TOKENS, why, at);
}

/* Submits (or resubmits) the pending tool call of a connection. */
static void conn_submit(struct conn *c, const struct jdoc *d)
{
    char msg[300];
    int h;
    msg[0] = 0;
    h = submit_tool_call(conn_owner(c), &c->pc, d, c->ctx.token, c->ctx.token_len, msg, sizeof msg);
    if (h >= 0) {
        c->pc.handle = h;
        return;
    }
    if (h == -1)
        return; /* every upstream slot is busy: retried from the loop */
    /* could not even build the request: answer with a tool error */
    {
        struct view id;
        id.p = c->pc.id;
        id.n = strlen(c->pc.id);
        c->pc.active = 0;
        if (c->batch_len) {
            if (c->batch_replies++)
                rs_str(&c->resp, ",");
            tool_text_result(&c->resp, id, c->pc.modern, 1, msg);
            c->batch_pos++;
            conn_continue_batch(c, d);
            return;
        }
        tool_text_result(&c->resp, id, c->pc.modern, 1, msg);
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
        } else {
            /* undo the separator */
            c->resp.tb.len = mark;
            c->resp.nseg = nseg;
            if (nseg && c->resp.seg[nseg - 1].p + c->resp.seg[nseg - 1].n > c->resp.tb.p + mark &&
                !c->resp.seg[nseg - 1].escape && c->resp.seg[nseg - 1].p >= c->resp.tb.p &&
                c->resp.seg[nseg - 1].p < c->resp.tb.p + c->resp.tb.cap)
                c->resp.seg[nseg - 1].n = (size_t)(c->resp.tb.p + mark - c->resp.seg[nseg - 1].p);
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
    struct up_result copy;
} stdio_wait;

static void on_upstream_done(unsigned owner, int handle, const struct up_result *u)
{
    struct conn *c;
    if (owner == STDIO_OWNER) {
        stdio_wait.done = 1;
        stdio_wait.handle = handle;
        stdio_wait.copy = *u;
        return;
    }
    c = &conns[owner & 0xff];
    if ((owner & 0xff) >= CM_MAX_CONNS || c->gen != owner >> 8 || c->state != C_WAIT_API || c->pc.handle != handle) {
        up_release(handle); /* its client went away meanwhile */
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
        render_tool_result(&c->resp, &c->pc, u, 1);
        up_release(handle);
        c->batch_pos++;
        if (conn_parse_body(c, &d, &why, &at) == 0)
            conn_continue_batch(c, &d);
        else
            conn_close(c);
        return;
    }
    render_tool_result(&c->resp, &c->pc, u, 0);
    c->held_handle = handle;
    if (c->resp.overflow) {
        struct view id;
        id.p = c->pc.id;
        id.n = strlen(c->pc.id);
        rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);
        rpc_error(&c->resp, id, E_INTERNAL, "Internal error: the answer did not fit the output buffer", NULL);
    }
    conn_answer(c, 200, c->want_sse ? "text/event-stream" : "application/json", NULL);
}

/* A full request is in c->in: route it and start the answer. */
static void conn_process(struct conn *c)
{
    struct http_req *q = &c->req;
    const struct view *h;
    const char *tok = NULL, *presented = NULL, *why = NULL;
    size_t tok_n = 0, presented_n = 0, at = 0;
    struct jdoc d;
    int r, claims_modern = 0;
    const struct view *sid = http_header(q, "mcp-session-id");
    const struct view *pver = http_header(q, "mcp-protocol-version");
    const struct view *origin = http_header(q, "origin");
    const struct view *host = http_header(q, "host");
    uint64_t now = cm_port_now_ms();
    char extra[200];

    stat_requests++;
    c->head_only = view_eq(q->method, "HEAD");
    c->ctx.http_status = 200;
    c->ctx.batch = 0;
    c->ctx.new_session = -1;
    cm_logf(CM_LOG_DEBUG, "%.*s %.*s", (int)q->method.n, q->method.p, (int)(q->path.n > 100 ? 100 : q->path.n), q->path.p);

    if (view_eq(q->path, "/healthz")) {
        if (!view_eq(q->method, "GET") && !view_eq(q->method, "HEAD")) {
            conn_simple(c, 405, "{\"error\":\"GET /healthz\"}", "Allow: GET\r\n");
            return;
        }
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        rs_printf(&c->resp,
                  "{\"status\":\"ok\",\"version\":\"" CM_VERSION "\",\"tools\":%u,\"sessions\":%d,\"connections\":%d,"
                  "\"requests\":%lu,\"refusedBusy\":%lu,\"apiFullHandshakes\":%u}",
                  (unsigned)N_TOOLS, sessions_in_use(), conns_in_use(), stat_requests, stat_refused_busy,
                  up_full_handshakes);
        conn_answer(c, 200, "application/json", NULL);
        return;
    }
    if (!view_eq(q->path, "/mcp")) {
        conn_simple(c, 404, "{\"error\":\"not found: the MCP endpoint is /mcp\"}", NULL);
        return;
    }
    /* DNS rebinding protection */
    if (!host && q->minor >= 1) {
        conn_reject(c, 400, E_SERVER, "Bad Request: the Host header is required", NULL);
        return;
    }
    if (listener_on_loopback && host && !host_is_loopback_name(*host) && !host_allowed_by_origin_list(*host)) {
        conn_reject(c, 403, E_SERVER, "Forbidden: Host is not localhost, 127.0.0.1 or [::1] (DNS rebinding protection; see --allow-origin)", NULL);
        return;
    }
    if (origin) {
        if (!origin_allowed(*origin)) {
            conn_reject(c, 403, E_SERVER, "Forbidden: Origin not allowed (see --allow-origin)", NULL);
            return;
        }
        snprintf(c->origin_ok, sizeof c->origin_ok, "%.*s", (int)(origin->n < 150 ? origin->n : 0), origin->p);
    }
    if (view_eq(q->method, "OPTIONS")) {
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 204, NULL,
                    "Access-Control-Allow-Methods: POST, GET, DELETE, OPTIONS\r\n"
                    "Access-Control-Allow-Headers: Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID\r\n"
                    "Access-Control-Max-Age: 86400\r\n");
        return;
    }
    r = resolve_token(q, &tok, &tok_n, &presented, &presented_n, &why);
    if (r) {
        conn_reject(c, r, E_SERVER - 1, why, "WWW-Authenticate: Bearer realm=\"calid-mcp\"\r\n");
        return;
    }
    c->ctx.token = tok;
    c->ctx.token_len = tok_n;
    if (view_eq(q->method, "GET")) {
        conn_reject(c, 405, E_SERVER, "Method Not Allowed: this server sends no server-initiated messages; POST to /mcp",
                    "Allow: POST, DELETE, OPTIONS\r\n");
        return;
    }
    if (view_eq(q->method, "DELETE")) {
        int s;
        unsigned char fp[16];
        if (!sid) {
            conn_reject(c, 405, E_SERVER, "Method Not Allowed: DELETE ends a session and needs Mcp-Session-Id", "Allow: POST, OPTIONS\r\n");
            return;
        }
        s = session_find(*sid, now);
        token_fingerprint(presented ? presented : "", presented ? presented_n : 0, fp);
        if (s < 0 || !const_time_eq(fp, 16, sessions[s].token_fp, 16)) {
            conn_reject(c, 404, -32001, "Session not found", NULL);
            return;
        }
        sessions[s].used = 0;
        conn_simple(c, 200, "{}", NULL);
        return;
    }
    if (!view_eq(q->method, "POST")) {
        conn_reject(c, 405, E_SERVER, "Method Not Allowed: POST JSON-RPC messages to /mcp", "Allow: POST, GET, DELETE, OPTIONS\r\n");
        return;
    }
    h = http_header(q, "content-type");
    if (!h || !view_icontains(*h, "application/json")) {
        conn_reject(c, 415, E_SERVER, "Unsupported Media Type: Content-Type must be application/json", NULL);
        return;
    }
    h = http_header(q, "accept");
    c->want_sse = 0;
    if (h && !view_icontains(*h, "application/json") && !view_icontains(*h, "*/*")) {
        if (view_icontains(*h, "text/event-stream"))
            c->want_sse = 1;
        else {
            conn_reject(c, 406, E_SERVER, "Not Acceptable: Accept must include application/json or text/event-stream", NULL);
            return;
        }
    }
    r = conn_parse_body(c, &d, &why, &at);
    if (r == -2) {
        char m[120];
        snprintf(m, sizeof m, "Invalid Request: the message has more than %d JSON tokens (CM_JSON_TOKENS)", CM_JSON_TOKENS);
        conn_reject(c, 400, E_INVALID_REQUEST, m, NULL);
        return;
    }
    if (r < 0) {
        char m[160];
        snprintf(m, sizeof m, "Parse error: %s at byte %lu", why ? why : "invalid JSON", (unsigned long)at);
        conn_reject(c, 400, E_PARSE, m, NULL);
        return;
    }
    rs_init(&c->resp, c->out, sizeof c->out, c->want_sse);

    /* Which era? A message whose params._meta names a protocol version is modern. */
    if (d.t[0].type == JSMN_OBJECT) {
        int meta = obj_get(&d, obj_get(&d, 0, "params"), "_meta");
        claims_modern = obj_get(&d, meta, "io.modelcontextprotocol/protocolVersion") >= 0;
    } else if (d.t[0].type == JSMN_ARRAY) {
        int k, el;
        for (k = 0, el = 1; k < d.t[0].size; k++, el = tok_next(&d, el))
            if (obj_get(&d, obj_get(&d, obj_get(&d, el, "params"), "_meta"), "io.modelcontextprotocol/protocolVersion") >= 0) {
                conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: batches are not allowed in protocol 2026-07-28", NULL);
                return;
            }
    } else {
        conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: expected a JSON-RPC message object", NULL);
        return;
    }
    if (!claims_modern && pver && pver->n == strlen(MODERN_VERSION) && memcmp(pver->p, MODERN_VERSION, pver->n) >= 0 &&
        d.t[0].type == JSMN_OBJECT) {
        if (obj_get(&d, 0, "id") < 0) { /* a modern notification: the header alone says so */
            rs_init(&c->resp, c->out, sizeof c->out, 0);
            conn_answer(c, 202, NULL, NULL);
            return;
        }
        if (tok_is_str(&d, obj_get(&d, 0, "method"), "initialize")) {
            c->ctx.http_status = 400;
            rpc_error(&c->resp, rpc_id(&d, 0), E_HEADER_MISMATCH,
                      "Bad Request: initialize belongs to the session era, but MCP-Protocol-Version names 2026-07-28", NULL);
        } else {
            rpc_error(&c->resp, rpc_id(&d, 0), E_INVALID_PARAMS,
                      "Invalid params: protocol 2026-07-28 requires params._meta with io.modelcontextprotocol/protocolVersion and clientCapabilities",
                      "{\"envelope\":{\"key\":\"io.modelcontextprotocol/protocolVersion\",\"problem\":\"missing\"}}");
        }
        conn_answer(c, 400, c->want_sse ? "text/event-stream" : "application/json", NULL);
        return;
    }
    if (claims_modern) {
        const struct view *hm = http_header(q, "mcp-method"), *hn = http_header(q, "mcp-name");
        int method = obj_get(&d, 0, "method");
        struct view empty = {"", 0};
        c->ctx.era = ERA_MODERN;
        c->ctx.version = MODERN_VERSION;
        if (check_envelope(&d, 0, &c->resp, &c->ctx, pver ? *pver : empty) < 0) {
            conn_answer(c, c->ctx.http_status, c->want_sse ? "text/event-stream" : "application/json", NULL);
            return;
        }
        if (!pver || !hm || method < 0 || d.t[method].type != JSMN_STRING || tok_view(&d, method).n != hm->n ||
            memcmp(tok_view(&d, method).p, hm->p, hm->n) != 0) {
            rpc_error(&c->resp, rpc_id(&d, 0), E_HEADER_MISMATCH,
                      !pver ? "Bad Request: the MCP-Protocol-Version header is required"
                            : !hm ? "Bad Request: the Mcp-Method header is required"
                                  : "Bad Request: the request headers and body disagree: Mcp-Method differs from method",
                      NULL);
            conn_answer(c, 400, c->want_sse ? "text/event-stream" : "application/json", NULL);
            return;
        }
        if (tok_is_str(&d, method, "tools/call")) {
            int nm = obj_get(&d, obj_get(&d, 0, "params"), "name");
            char hv[256], bv[256];
            if (!hn || header_value_decode(*hn, hv, sizeof hv) < 0 || nm < 0 ||
                tok_unescape(&d, nm, bv, sizeof bv) < 0 || strcmp(hv, bv) != 0) {
                rpc_error(&c->resp, rpc_id(&d, 0), E_HEADER_MISMATCH,
                          !hn ? "Bad Request: the Mcp-Name header is required for tools/call"
                              : "Bad Request: the request headers and body disagree: Mcp-Name differs from params.name",
                          NULL);
                conn_answer(c, 400, c->want_sse ? "text/event-stream" : "application/json", NULL);
                return;
            }
        }
    } else {
        /* the session era */
        int is_init = d.t[0].type == JSMN_OBJECT && tok_is_str(&d, obj_get(&d, 0, "method"), "initialize");
        c->ctx.era = ERA_SESSION;
        c->ctx.version = LATEST_SESSION_VERSION;
        if (pver && !is_session_version(pver->p, pver->n)) {
            char m[320], supported[160];
            supported_versions_json(supported, sizeof supported);
            snprintf(m, sizeof m, "Bad Request: unsupported MCP-Protocol-Version %.*s (supported: %s)",
                     (int)(pver->n > 40 ? 40 : pver->n), pver->p, supported);
            conn_reject(c, 400, E_SERVER, m, NULL);
            return;
        }
        if (is_init) {
            /* the session is bound to the token the client presented */
            c->ctx.token = presented ? presented : "";
            c->ctx.token_len = presented ? presented_n : 0;
            handle_initialize(&c->ctx, &d, 0, &c->resp, now);
            extra[0] = 0;
            if (c->ctx.new_session >= 0)
                snprintf(extra, sizeof extra, "Mcp-Session-Id: %s\r\n", sessions[c->ctx.new_session].id);
            conn_answer(c, c->ctx.http_status, c->want_sse ? "text/event-stream" : "application/json", extra);
            return;
        }
        if (!sid) {
            conn_reject(c, 400, E_SERVER, "Bad Request: Mcp-Session-Id header is required (send initialize first)", NULL);
            return;
        }
        {
            unsigned char fp[16];
            int s = session_find(*sid, now);
            token_fingerprint(presented ? presented : "", presented ? presented_n : 0, fp);
            if (s < 0 || !const_time_eq(fp, 16, sessions[s].token_fp, 16)) {
                conn_reject(c, 404, -32001, "Session not found: it is unknown, expired, ended, or was opened with another token; send initialize again", NULL);
                return;
            }
            sessions[s].last_ms = now;
            c->session = s;
            c->ctx.version = sessions[s].version;
        }
        if (d.t[0].type == JSMN_ARRAY) {
            if (strcmp(c->ctx.version, "2025-03-26") != 0 && strcmp(c->ctx.version, "2024-11-05") != 0) {
                char m[160];
                snprintf(m, sizeof m, "Invalid Request: JSON-RPC batches are not part of protocol %s", c->ctx.version);
                conn_reject(c, 400, E_INVALID_REQUEST, m, NULL);
                return;
            }
            if (d.t[0].size == 0 || d.t[0].size > MAX_BATCH) {
                conn_reject(c, 400, E_INVALID_REQUEST, "Invalid Request: a batch holds 1 to 16 messages", NULL);
                return;
            }
            c->ctx.batch = 1;
            c->batch_len = d.t[0].size;
            c->batch_pos = 0;
            c->batch_replies = 0;
            c->resp.sse = 0; /* one SSE event for the whole batch */
            if (c->want_sse)
                rs_str(&c->resp, "event: message\ndata: [");
            else
                rs_str(&c->resp, "[");
            conn_continue_batch(c, &d);
            return;
        }
    }
    /* one message */
    r = dispatch(&c->ctx, &d, 0, &c->resp, &c->pc);
    if (r == D_NO_REPLY) {
        rs_init(&c->resp, c->out, sizeof c->out, 0);
        conn_answer(c, 202, NULL, NULL);
        return;
    }
    if (r == D_PENDING) {
        c->state = C_WAIT_API;
        c->last_ms = now;
        conn_submit(c, &d);
        return;
    }
    conn_answer(c, c->ctx.http_status, c->want_sse ? "text/event-stream" : "application/json", NULL);
}

static void conn_try_request(struct conn *c);

/* Reads what arrived and, once a whole request is in, serves it. */
static void conn_read(struct conn *c)
{
    for (;;) {
        long n;
        if (c->in_len == sizeof c->in)
            break;
        n = cm_port_recv(c->sock, c->in + c->in_len, sizeof c->in - c->in_len);
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
        if (r == 0)
            return;
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
        if (r == -2 || (r == 0 && c->in_len == sizeof c->in)) {
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
    if (c->req.expect_continue && !c->sent_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->sent_continue = 1;
        (void)cm_port_send(c->sock, cont, sizeof cont - 1); /* tiny: fits any socket buffer */
    }
}

static void accept_all(void)
{
    for (;;) {
        cm_sock_t s = cm_port_accept(listener);
        int i;
        if (s == CM_SOCK_INVALID)
            return;
        for (i = 0; i < CM_MAX_CONNS; i++)
            if (conns[i].state == C_FREE)
                break;
        if (i == CM_MAX_CONNS) {
            /* full: a kept-alive connection idle between requests makes room
             * (HTTP lets a server close those at any time) */
            int idle = -1, k;
            for (k = 0; k < CM_MAX_CONNS; k++)
                if (conns[k].state == C_READ && conns[k].in_len == 0 && !conns[k].parse_pending &&
                    (idle < 0 || conns[k].last_ms < conns[idle].last_ms))
                    idle = k;
            if (idle >= 0) {
                conn_close(&conns[idle]);
                i = idle;
            }
        }
        if (i == CM_MAX_CONNS) {
            static const char body[] =
                "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"Service Unavailable: all connections are busy, retry\"}}";
            char busy[400];
            int n = snprintf(busy, sizeof busy,
                             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                             "Connection: close\r\nContent-Length: %u\r\n\r\n%s",
                             (unsigned)(sizeof body - 1), body);
            stat_refused_busy++;
            (void)cm_port_send(s, busy, (size_t)n); /* one small write: best effort, then close */
            cm_port_close(s);
            continue;
        }
        conns[i].sock = s;
        conns[i].state = C_READ;
        conns[i].in_len = 0;
        conns[i].held_handle = -1;
        conns[i].pc.handle = -1;
        conn_reset_request(&conns[i]);
        conns[i].last_ms = conns[i].req_start_ms = cm_port_now_ms();
    }
}

/* Milliseconds from since to now; 0 if since is later (stamps taken after
 * now was read must not wrap around into a huge age). */
static uint64_t ms_since(uint64_t now, uint64_t since) { return now > since ? now - since : 0; }

/* Closes connections that idle or trickle past their time. */
static void conn_timeouts(uint64_t now)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        if (c->state == C_READ && c->in_len > 0 && ms_since(now, c->req_start_ms) > CM_HEADER_TIMEOUT_MS) {
            c->keep_alive = 0;
            c->req_total = c->in_len;
            conn_reject(c, 408, E_SERVER, "Request Timeout: the request did not arrive in time", NULL);
        } else if ((c->state == C_READ || c->state == C_WRITE) && (c->in_len == 0 || c->state == C_WRITE) &&
                   ms_since(now, c->last_ms) > CM_IDLE_TIMEOUT_MS) {
            conn_close(c);
        }
    }
}

/* Connections whose tool call waits for a free upstream slot try again. */
static void retry_waiting_calls(void)
{
    int i;
    for (i = 0; i < CM_MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        struct jdoc d;
        const char *why;
        size_t at;
        if (c->state != C_WAIT_API || !c->pc.active || c->pc.handle >= 0)
            continue;
        if (conn_parse_body(c, &d, &why, &at) == 0) {
            if (c->batch_len)
                c->pc.jdoc_args = obj_get(&d, obj_get(&d, batch_element(&d, c->batch_pos), "params"), "arguments");
            else
                c->pc.jdoc_args = obj_get(&d, obj_get(&d, 0, "params"), "arguments");
            if (c->pc.jdoc_args >= 0 && tok_is_null(&d, c->pc.jdoc_args))
                c->pc.jdoc_args = -1;
            conn_submit(c, &d);
        }
        if (c->state == C_WAIT_API && c->pc.handle < 0)
            return; /* still no slot: the others wait their turn too */
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
        if (c->state == C_READ || (c->state == C_WAIT_API && c->in_len < sizeof c->in))
            ev = CM_POLL_IN;
        else if (c->state == C_WRITE)
            ev = CM_POLL_OUT;
        if (!ev)
            continue;
        fds[n].sock = c->sock;
        fds[n].events = ev;
        owner[n++] = (int)i;
    }
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].parse_pending)
            timeout_ms = 0; /* pipelined requests are waiting */
    nu = up_pollfds(fds + n, CM_MAX_UPSTREAMS, up_handle);
    for (i = 0; i < nu; i++)
        owner[n + i] = -2 - up_handle[i];
    n += nu;
    t = up_next_timeout_ms(now);
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
    for (i = 0; i < CM_MAX_CONNS; i++)
        if (conns[i].parse_pending) {
            conns[i].parse_pending = 0;
            conn_try_request(&conns[i]);
        }
    now = cm_port_now_ms();
    up_tick(now);
    retry_waiting_calls();
    conn_timeouts(now);
    return 0;
}

int cm_poll(int timeout_ms)
{
    if (!server_started)
        return -1;
    return loop_step(timeout_ms);
}

/* ===================================================================== */
/* 12. stdio transport                                                   */
/* ===================================================================== */
/*
 * One JSON-RPC message per line on stdin, one answer per line on stdout,
 * logs on stderr. Tool calls run the same event loop until the API answers.
 * There are no sessions: initialize negotiates a version for the process.
 */
static char stdio_line[CM_MAX_BODY_BYTES + 2];
static char stdio_out[CM_OUT_BYTES * 4];
static char stdio_version[11] = LATEST_SESSION_VERSION;

static void stdio_emit(const struct resp *r)
{
    int i;
    for (i = 0; i < r->nseg; i++) {
        const struct seg *s = &r->seg[i];
        if (!s->escape) {
            fwrite(s->p, 1, s->n, stdout);
        } else {
            char stage[STAGE_BYTES];
            size_t off = 0, w;
            while (off < s->n) {
                off += json_escape_some(s->p + off, s->n - off, stage, sizeof stage, &w);
                fwrite(stage, 1, w, stdout);
            }
        }
    }
    fputc('\n', stdout);
    fflush(stdout);
}

/* Runs a tool call to its end. Returns the upstream handle to release once
 * the answer is written (-1 when none). */
static int stdio_run_call(struct pending_call *pc, const struct jdoc *d, struct resp *r, int copy)
{
    char msg[300];
    int h;
    msg[0] = 0;
    stdio_wait.done = 0;
    while ((h = submit_tool_call(STDIO_OWNER, pc, d, cfg.api_key, cfg.api_key ? strlen(cfg.api_key) : 0, msg, sizeof msg)) == -1)
        loop_step(10);
    if (h == -2) {
        struct view id;
        id.p = pc->id;
        id.n = strlen(pc->id);
        tool_text_result(r, id, pc->modern, 1, msg);
        return -1;
    }
    while (!stdio_wait.done)
        loop_step(100);
    render_tool_result(r, pc, &stdio_wait.copy, copy);
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
    ctx.new_session = -2; /* no session table on stdio */
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
            handle_initialize(&ctx, d, msg, r, cm_port_now_ms());
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
        const char *why;
        int pr, h = -1;
        rs_init(&r, stdio_out, sizeof stdio_out, 0);
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
                    if (stdio_message(&r, &d, el, 1) == -2) { /* no reply: drop the separator */
                        r.tb.len = mark;
                        r.nseg = nseg;
                        if (nseg && !r.seg[nseg - 1].escape && r.seg[nseg - 1].p + r.seg[nseg - 1].n > r.tb.p + mark)
                            r.seg[nseg - 1].n = (size_t)(r.tb.p + mark - r.seg[nseg - 1].p);
                    } else {
                        replies++;
                    }
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
}

size_t cm_static_bytes(void)
{
    return sizeof conns + sizeof toks + sizeof sessions + sizeof tools_json + sizeof schema_toks +
           sizeof req_path + sizeof req_body + sizeof bearer_buf + sizeof arg_buf + sizeof stdio_line +
           sizeof stdio_out + up_static_bytes();
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
    if (cm_port_init() != 0) {
        snprintf(err, errlen, "the platform layer did not start");
        return -1;
    }
    if (cm_port_random(server_secret, sizeof server_secret) != 0) {
        snprintf(err, errlen, "no secure random source (needed for session ids)");
        return -1;
    }
    if (build_tools_json(err, errlen) < 0)
        return -1;
    if (up_init(cfg.upstream, cfg.ca_file ? cfg.ca_file : cm_port_default_ca_file(), err, errlen) < 0)
        return -1;
    snprintf(upstream_host_for_log, sizeof upstream_host_for_log, "%s", cfg.upstream);
    for (i = 0; i < CM_MAX_CONNS; i++) {
        conns[i].state = C_FREE;
        conns[i].sock = CM_SOCK_INVALID;
        conns[i].held_handle = -1;
        conns[i].pc.handle = -1;
    }
    memset(sessions, 0, sizeof sessions);
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
    cm_port_close(listener);
    listener = CM_SOCK_INVALID;
    server_started = 0;
    cm_port_cleanup();
}

/* ===================================================================== */
/* 13. main (left out when vendoring)                                    */
/* ===================================================================== */
#ifdef CALID_MCP_MAIN
#include <signal.h>

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "calid-mcp " CM_VERSION " - an MCP server for the Cal ID scheduling API\n"
            "\n"
            "usage: calid_mcp [options]\n"
            "  --listen ADDR:PORT     where to serve MCP over HTTP at /mcp     (CALID_MCP_LISTEN; default 127.0.0.1:8080)\n"
            "  --upstream URL         the Cal ID API base URL                  (CALID_API_BASE; default https://api.cal.id)\n"
            "  --ca-file PEM          CA certificates to trust for the API     (CALID_CA_FILE; default the system bundle, %s)\n"
            "  --api-key KEY          a Cal ID key held by the server          (CALID_API_KEY; default none: clients send their own)\n"
            "  --access-token TOKEN   token clients must present when --api-key is used off loopback (CALID_MCP_ACCESS_TOKEN)\n"
            "  --allow-origin ORIGIN  allow this browser Origin (repeatable, up to %d; default loopback origins only)\n"
            "  --stdio                speak MCP over stdin/stdout instead of HTTP (key from CALID_API_KEY)\n"
            "  --log-level LEVEL      error, warn, info or debug               (default info)\n"
            "  --help                 this text\n"
            "  --version              version and the static memory reserved at the compiled limits\n",
            cm_port_default_ca_file() ? cm_port_default_ca_file() : "none", CM_MAX_ORIGINS);
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && v[0] ? v : fallback;
}

int main(int argc, char **argv)
{
    struct cm_config c;
    char err[400];
    int i, stdio_mode = 0;
    cm_config_defaults(&c);
    c.listen = env_or("CALID_MCP_LISTEN", c.listen);
    c.upstream = env_or("CALID_API_BASE", c.upstream);
    c.ca_file = env_or("CALID_CA_FILE", NULL);
    c.api_key = env_or("CALID_API_KEY", NULL);
    c.access_token = env_or("CALID_MCP_ACCESS_TOKEN", NULL);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(flag, field)                                                     \
    if (strcmp(a, flag) == 0) {                                               \
        if (!v) {                                                             \
            fprintf(stderr, "calid-mcp: %s needs a value (see --help)\n", a); \
            return 2;                                                         \
        }                                                                     \
        field = v;                                                            \
        i++;                                                                  \
        continue;                                                             \
    }
        TAKE("--listen", c.listen)
        TAKE("--upstream", c.upstream)
        TAKE("--ca-file", c.ca_file)
        TAKE("--api-key", c.api_key)
        TAKE("--access-token", c.access_token)
#undef TAKE
        if (strcmp(a, "--allow-origin") == 0) {
            if (!v) {
                fprintf(stderr, "calid-mcp: --allow-origin needs a value (see --help)\n");
                return 2;
            }
            if (c.n_allow_origins == CM_MAX_ORIGINS) {
                fprintf(stderr, "calid-mcp: at most %d --allow-origin values (CM_MAX_ORIGINS)\n", CM_MAX_ORIGINS);
                return 2;
            }
            c.allow_origins[c.n_allow_origins++] = v;
            i++;
        } else if (strcmp(a, "--log-level") == 0) {
            static const char *const levels[] = {"error", "warn", "info", "debug"};
            int l;
            if (!v) {
                fprintf(stderr, "calid-mcp: --log-level needs a value (error, warn, info, debug)\n");
                return 2;
            }
            for (l = 0; l < 4 && strcmp(v, levels[l]) != 0; l++)
                ;
            if (l == 4) {
                fprintf(stderr, "calid-mcp: unknown log level '%s' (error, warn, info, debug)\n", v);
                return 2;
            }
            c.log_level = l;
            i++;
        } else if (strcmp(a, "--stdio") == 0) {
            stdio_mode = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("calid-mcp %s\nstatic memory: %lu bytes at the compiled limits (%d connections, %u-byte bodies, %d sessions, %d API connections)\n",
                   CM_VERSION, (unsigned long)cm_static_bytes(), CM_MAX_CONNS, (unsigned)CM_MAX_BODY_BYTES,
                   CM_MAX_SESSIONS, CM_MAX_UPSTREAMS);
            return 0;
        } else {
            fprintf(stderr, "calid-mcp: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (cm_start(&c, stdio_mode, err, sizeof err) != 0) {
        fprintf(stderr, "calid-mcp: %s\n", err);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (stdio_mode) {
        cm_stdio_run();
        cm_stop();
        return 0;
    }
    cm_logf(CM_LOG_INFO, "serving MCP on http://%s/mcp (API %s, %s)", c.listen, c.upstream,
            c.api_key ? (c.access_token ? "server-held key, access token required" : "server-held key")
                      : "callers' own tokens");
    while (!stop_requested)
        cm_poll(1000);
    cm_stop();
    return 0;
}
#endif
