/*
 * fuzz_http.c - libFuzzer target for the HTTP/1.1 request parser
 * (http_parse_head) and the chunked body scanner/decoder (chunked_scan,
 * chunked_decode) of calid_mcp.c.
 *
 * Input: one option byte, then the bytes of a request as they would arrive.
 *   option bit 0     small max_head (64..1084 bytes) instead of CM_MAX_HEADER_BYTES
 *   option bits 1-3  how the bytes are split into "recv" pieces (0: bytewise ... 7: 512)
 *   option bit 4     small body limit for chunked_scan (0..255) instead of CM_MAX_BODY_BYTES
 *   option bit 5     also scan the whole input as a chunked body (not only after the head)
 *
 * Every parse gets a heap copy of exactly the bytes it may look at, so that
 * AddressSanitizer reports any read past them. Checked properties:
 *   - the result is 0, a head length, or one of -400 -417 -431 -501 -505 with
 *     a reason; every view lies inside the head; header values carry no CR/LF
 *     and no leading or trailing blanks; names are tokens; limits hold; an
 *     accepted Content-Length fits a 32-bit long (as on the win32/lwIP ports);
 *   - parsing incrementally (scan_from = bytes already searched, as conn_read
 *     does) gives the same answer as parsing the same bytes in one go;
 *   - chunked_scan gives 0 (incomplete) for every proper prefix of a complete
 *     encoding and the same lengths for every longer buffer; chunked_decode
 *     reads nothing past the encoding and produces exactly what an
 *     independent decoder produces.
 */
#include "../../calid_mcp.c"

#include <stdint.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond, ...)                                                          \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_http: invariant failed at %s:%d: %s\n", __FILE__,      \
                    __LINE__, #cond);                                                   \
            fprintf(stderr, "fuzz_http: " __VA_ARGS__);                                 \
            fputc('\n', stderr);                                                        \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static char *dup_exact(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, p, n);
    return c;
}

static int in_head(const char *base, size_t head_len, struct view v)
{
    if (v.n == 0)
        return v.p == NULL || (v.p >= base && v.p <= base + head_len);
    return v.p >= base && v.p + v.n <= base + head_len;
}

static int is_token(struct view v)
{
    size_t i;
    if (v.n == 0)
        return 0;
    for (i = 0; i < v.n; i++)
        if (!is_tchar((unsigned char)v.p[i]))
            return 0;
    return 1;
}

static void check_head(const char *b, size_t len, size_t max_head, int r, const struct http_req *q)
{
    int i;
    if (r == 0) {
        FUZZ_ASSERT(len < max_head, "0 (need more) with %zu bytes and max_head %zu", len, max_head);
        return;
    }
    if (r < 0) {
        FUZZ_ASSERT(r == -400 || r == -417 || r == -431 || r == -501 || r == -505, "status %d", -r);
        FUZZ_ASSERT(q->error != NULL, "negative result %d without a reason", r);
        return;
    }
    FUZZ_ASSERT((size_t)r == q->head_len, "returned %d but head_len %zu", r, q->head_len);
    FUZZ_ASSERT(q->head_len <= len && q->head_len <= max_head, "head_len %zu, len %zu, max %zu",
                q->head_len, len, max_head);
    FUZZ_ASSERT(b[q->head_len - 1] == '\n', "head does not end with LF");
    FUZZ_ASSERT(is_token(q->method) && in_head(b, q->head_len, q->method), "method view");
    FUZZ_ASSERT(q->target.n > 0 && in_head(b, q->head_len, q->target), "target view");
    for (i = 0; i < (int)q->target.n; i++)
        FUZZ_ASSERT((unsigned char)q->target.p[i] > 0x20 && (unsigned char)q->target.p[i] != 0x7f,
                    "target byte 0x%02x", (unsigned char)q->target.p[i]);
    FUZZ_ASSERT(in_head(b, q->head_len, q->path) && q->path.p == q->target.p && q->path.n <= q->target.n,
                "path view");
    FUZZ_ASSERT(in_head(b, q->head_len, q->query), "query view");
    if (q->query.p)
        FUZZ_ASSERT(q->query.p == q->path.p + q->path.n + 1 && q->query.p[-1] == '?' &&
                        q->path.n + 1 + q->query.n == q->target.n,
                    "query split");
    FUZZ_ASSERT(!memchr(q->path.p, '?', q->path.n), "'?' inside the path");
    FUZZ_ASSERT(q->minor >= 0 && q->minor <= 9, "minor %d", q->minor);
    FUZZ_ASSERT(q->nh >= 0 && q->nh <= CM_MAX_HEADERS, "nh %d", q->nh);
    FUZZ_ASSERT(q->keep_alive == 0 || q->keep_alive == 1, "keep_alive %d", q->keep_alive);
    FUZZ_ASSERT(q->content_length >= -1 && q->content_length <= 9999999999L, "content_length %ld",
                q->content_length);
    /* long is 32 bits on Windows and 32-bit targets (port/win32.c, lwIP):
       a value past INT32_MAX overflows there (4294967296 wraps to 0) */
    FUZZ_ASSERT(q->content_length <= 2147483647L,
                "Content-Length %ld accepted: does not fit a 32-bit long (win32/lwIP builds overflow)",
                q->content_length);
    FUZZ_ASSERT(!(q->chunked && q->content_length >= 0), "chunked and Content-Length both accepted");
    FUZZ_ASSERT(!(q->chunked && q->minor == 0), "chunked HTTP/1.0 accepted");
    for (i = 0; i < q->nh; i++) {
        struct view n = q->name[i], v = q->value[i];
        size_t k;
        FUZZ_ASSERT(is_token(n) && in_head(b, q->head_len, n), "header name %d", i);
        FUZZ_ASSERT(in_head(b, q->head_len, v), "header value %d outside the head", i);
        FUZZ_ASSERT(v.p > n.p + n.n && v.p[-1] != '\r' && v.p[-1] != '\n', "value %d before its name", i);
        for (k = 0; k < v.n; k++) {
            unsigned char c = (unsigned char)v.p[k];
            FUZZ_ASSERT(c != '\r' && c != '\n' && c != 0 && c != 0x7f && (c >= 0x20 || c == '\t'),
                        "header %d value byte 0x%02x", i, c);
        }
        if (v.n)
            FUZZ_ASSERT(v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.n - 1] != ' ' && v.p[v.n - 1] != '\t',
                        "header %d value not trimmed", i);
    }
    {
        const struct view *cl = http_header(q, "content-length");
        FUZZ_ASSERT((cl != NULL) == (q->content_length >= 0), "Content-Length header vs value");
    }
}

static int same_head(const struct http_req *a, const struct http_req *b)
{
    int i;
    if (a->head_len != b->head_len || a->nh != b->nh || a->minor != b->minor ||
        a->content_length != b->content_length || a->chunked != b->chunked ||
        a->keep_alive != b->keep_alive || a->expect_continue != b->expect_continue)
        return 0;
    if (a->method.n != b->method.n || a->target.n != b->target.n || a->query.n != b->query.n)
        return 0;
    for (i = 0; i < a->nh; i++)
        if (a->name[i].n != b->name[i].n || a->value[i].n != b->value[i].n ||
            a->name[i].p - a->method.p != b->name[i].p - b->method.p ||
            a->value[i].p - a->method.p != b->value[i].p - b->method.p)
            return 0;
    return 1;
}

/* The sizes of the recv pieces: a tiny deterministic generator. */
static size_t piece_size(unsigned cls, uint32_t *st)
{
    static const size_t caps[8] = {1, 2, 3, 7, 16, 64, 200, 512};
    *st = *st * 1103515245u + 12345u;
    if (cls == 0)
        return 1;
    return 1 + (size_t)((*st >> 16) % caps[cls]);
}

/* An independent decoder for the grammar chunked_scan accepts:
 *   chunk = 1*8HEXDIG [(";" / SP / HTAB / CR) *(ext-byte)] LF data [CR] LF
 *   last  = 1*8HEXDIG(=0) [...as above] LF *(line LF)
 * where no CR in a size, extension or trailer line stands anywhere but just
 * before its LF ("0x5" is not a size; a bare CR is not a line end).
 * Returns the decoded length, or -1 when it disagrees on the shape. */
static int ref_bare_cr(const char *p, size_t from, size_t lf)
{
    size_t k;
    for (k = from; k < lf; k++)
        if (p[k] == '\r' && k + 1 != lf)
            return 1;
    return 0;
}

static long ref_chunked_decode(const char *p, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < n && hexval((unsigned char)p[i]) >= 0) {
            size = size * 16 + (size_t)hexval((unsigned char)p[i++]);
            digits++;
        }
        if (digits == 0 || digits > 8 || i >= n || p[i] == 0 || !strchr(";\r\n \t", p[i]))
            return -1;
        {
            size_t from = i;
            while (i < n && p[i] != '\n')
                i++;
            if (i >= n || ref_bare_cr(p, from, i))
                return -1;
        }
        i++;
        if (size == 0) {
            for (;;) { /* trailer lines up to the blank one */
                size_t from = i;
                while (i < n && p[i] != '\n')
                    i++;
                if (i >= n || ref_bare_cr(p, from, i))
                    return -1;
                i++;
                if (i - from <= 2 && (i - from == 1 || p[from] == '\r'))
                    return (long)o;
            }
        }
        if (n - i < size)
            return -1;
        memcpy(out + o, p + i, size);
        o += size;
        i += size;
        if (i < n && p[i] == '\r')
            i++;
        if (i >= n || p[i] != '\n')
            return -1;
        i++;
    }
}

static void fuzz_chunked(const uint8_t *p, size_t n, size_t max)
{
    size_t enc = 0, dec = 0, k;
    char *copy = dup_exact(p, n);
    int r = chunked_scan(copy, n, max, &enc, &dec);
    free(copy);
    FUZZ_ASSERT(r >= -2 && r <= 1, "chunked_scan returned %d", r);
    if (r == 1) {
        char *e, *ref;
        long rn;
        FUZZ_ASSERT(enc <= n && enc > 0, "enc_len %zu of %zu", enc, n);
        FUZZ_ASSERT(dec <= max && dec <= enc, "dec_len %zu (enc %zu, max %zu)", dec, enc, max);
        /* every proper prefix is incomplete; every longer buffer gives the same lengths */
        for (k = 0; k < enc; k += (enc > 600 ? 1 + enc / 300 : 1)) {
            size_t e2 = 0, d2 = 0;
            char *c2 = dup_exact(p, k);
            int r2 = chunked_scan(c2, k, max, &e2, &d2);
            free(c2);
            FUZZ_ASSERT(r2 == 0, "prefix of %zu bytes (complete at %zu) gives %d", k, enc, r2);
        }
        if (n > enc) {
            size_t e2 = 0, d2 = 0;
            char *c2 = dup_exact(p, enc);
            int r2 = chunked_scan(c2, enc, max, &e2, &d2);
            free(c2);
            FUZZ_ASSERT(r2 == 1 && e2 == enc && d2 == dec, "exact encoding gives %d (%zu, %zu)", r2, e2, d2);
        }
        /* decode a copy holding exactly the encoding: any read past it is an ASan report */
        e = dup_exact(p, enc);
        chunked_decode(e, enc);
        ref = malloc(enc + 1);
        if (!ref)
            abort();
        rn = ref_chunked_decode((const char *)p, enc, ref);
        FUZZ_ASSERT(rn >= 0 && (size_t)rn == dec, "reference decoder says %ld, chunked_scan %zu", rn, dec);
        FUZZ_ASSERT(memcmp(e, ref, dec) == 0, "chunked_decode output differs from the reference");
        free(ref);
        free(e);
    } else if (r == 0) {
        /* incomplete now: no prefix may be judged malformed */
        for (k = 0; k < n; k += (n > 600 ? 1 + n / 300 : 1)) {
            size_t e2 = 0, d2 = 0;
            char *c2 = dup_exact(p, k);
            int r2 = chunked_scan(c2, k, max, &e2, &d2);
            free(c2);
            FUZZ_ASSERT(r2 == 0, "prefix of %zu bytes of an incomplete body gives %d", k, r2);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_req one, inc;
    unsigned opt;
    size_t max_head, body_max, len, have = 0, scanned = 0;
    uint32_t st;
    int r1, ri = 0;
    char *buf;
    if (size < 1)
        return 0;
    opt = data[0];
    data++;
    size--;
    len = size;
    st = (uint32_t)len * 2654435761u + opt;
    max_head = (opt & 1) ? 64 + (size_t)((len * 7) % 1021) : CM_MAX_HEADER_BYTES;
    body_max = (opt & 16) ? (size_t)(len % 256) : CM_MAX_BODY_BYTES;

    /* one go */
    buf = dup_exact(data, len);
    r1 = http_parse_head(buf, len, 0, max_head, &one);
    check_head(buf, len, max_head, r1, &one);

    /* incrementally, the way conn_read calls it: stop at the first verdict */
    while (have < len) {
        char *part;
        have += piece_size((opt >> 1) & 7, &st);
        if (have > len)
            have = len;
        part = dup_exact(data, have);
        ri = http_parse_head(part, have, scanned, max_head, &inc);
        scanned = have;
        check_head(part, have, max_head, ri, &inc);
        if (ri != 0) {
            struct http_req ref;
            int rr = http_parse_head(part, have, 0, max_head, &ref);
            FUZZ_ASSERT(rr == ri && (ri < 0 || same_head(&ref, &inc)),
                        "incremental parse of %zu bytes gives %d, one go %d", have, ri, rr);
            free(part);
            break;
        }
        free(part);
    }
    if (len > 0) {
        /* the verdict on a prefix must be the verdict on the whole, once one is reached */
        if (ri != 0)
            FUZZ_ASSERT(r1 == ri && (ri < 0 || same_head(&one, &inc)), "prefix verdict %d, whole %d", ri, r1);
        else
            FUZZ_ASSERT(r1 == 0, "no verdict on prefixes but %d on the whole", r1);
    }

    if (r1 > 0)
        fuzz_chunked(data + one.head_len, len - one.head_len, body_max);
    if (opt & 32)
        fuzz_chunked(data, len, body_max);
    free(buf);
    return 0;
}
