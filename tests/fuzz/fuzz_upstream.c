/*
 * fuzz_upstream.c - libFuzzer target for the parser of Cal ID API answers in
 * calid_mcp.c section 8 (up_parse_init / up_parse_feed / up_parse_eof): status line,
 * headers, interim 1xx answers, Content-Length, chunked and close-delimited
 * bodies, trailers.
 *
 * Input: one option byte, then the decrypted bytes of an answer.
 *   option bit 0     the request was HEAD (the answer has no body)
 *   option bits 1-2  body buffer capacity: CM_UPSTREAM_BODY_BYTES, 0, 16, 1000
 *   option bits 3-5  how the bytes are split into pieces for the split run
 *
 * The body buffer is a heap block of exactly capacity + 1 bytes (the +1 is the
 * NUL up_complete() writes), so AddressSanitizer reports any write past it.
 * Checked properties:
 *   - the same answer fed in one go, in pieces, and byte by byte ends in the
 *     same state with the same status, body, headers kept, keep-alive verdict
 *     and bytes consumed; a finished parser consumes nothing more;
 *   - state-wise limits hold (body_len <= capacity, line_len < UP_LINE_MAX,
 *     head_bytes <= UP_HEAD_MAX, status 200..599 once done);
 *   - an independent whole-buffer parser of the same grammar agrees on the
 *     verdict (complete / malformed / needs more) and on status and body,
 *     for answers whose lines are short enough not to be truncated.
 */
#include "../../calid_mcp.c"

#include <stdint.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond, ...)                                                          \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_upstream: invariant failed at %s:%d: %s\n", __FILE__,  \
                    __LINE__, #cond);                                                   \
            fprintf(stderr, "fuzz_upstream: " __VA_ARGS__);                             \
            fputc('\n', stderr);                                                        \
            abort();                                                                    \
        }                                                                               \
    } while (0)

struct run {
    struct up_parser p;
    unsigned char *body;
    size_t consumed;
    int eof_result; /* up_parse_eof() after all input: 0, -1, or 2 when not called */
};

static void check_state(const struct up_parser *p, size_t cap)
{
    FUZZ_ASSERT(p->state <= UP_P_ERROR, "state %d", p->state);
    FUZZ_ASSERT(p->body_len <= cap, "body_len %zu > capacity %zu", p->body_len, cap);
    FUZZ_ASSERT(p->line_len < UP_LINE_MAX, "line_len %zu", p->line_len);
    FUZZ_ASSERT(p->head_bytes <= UP_HEAD_MAX, "head_bytes %zu", p->head_bytes);
    FUZZ_ASSERT(memchr(p->error, 0, sizeof p->error) && memchr(p->retry_after, 0, sizeof p->retry_after) &&
                    memchr(p->content_type, 0, sizeof p->content_type),
                "unterminated text field");
    if (p->state == UP_P_DONE)
        FUZZ_ASSERT(p->status >= 200 && p->status <= 599, "done with status %d", p->status);
    if (p->state == UP_P_ERROR)
        FUZZ_ASSERT(p->error[0] != 0, "error state without a message");
    if (p->state == UP_P_BODY_LEN || p->state == UP_P_CHUNK_DATA)
        FUZZ_ASSERT(p->length > 0 && p->length <= cap - p->body_len, "%llu left with room %zu",
                    (unsigned long long)p->length, cap - p->body_len);
}

/* Feeds data in pieces of the sizes gen() picks (0 = everything at once). */
static void run_parser(struct run *r, const uint8_t *data, size_t len, size_t cap, int head, unsigned split,
                       uint32_t seed)
{
    static const size_t caps[8] = {1, 1, 2, 5, 17, 100, 1500, 20000};
    size_t off = 0;
    r->body = malloc(cap + 1);
    if (!r->body)
        abort();
    up_parse_init(&r->p, r->body, cap, head);
    r->consumed = 0;
    r->eof_result = 2;
    while (off < len) {
        size_t n = len - off, used;
        int was_final;
        if (split != 8) {
            seed = seed * 1103515245u + 12345u;
            n = split == 0 ? 1 : 1 + (seed >> 16) % caps[split];
            if (n > len - off)
                n = len - off;
        }
        was_final = r->p.state == UP_P_DONE || r->p.state == UP_P_ERROR;
        used = up_parse_feed(&r->p, data + off, n);
        FUZZ_ASSERT(used <= n, "consumed %zu of %zu", used, n);
        if (was_final)
            FUZZ_ASSERT(used == 0, "a finished parser consumed %zu bytes", used);
        if (r->p.state != UP_P_DONE && r->p.state != UP_P_ERROR)
            FUZZ_ASSERT(used == n, "stopped after %zu of %zu bytes without finishing", used, n);
        check_state(&r->p, cap);
        r->consumed += used;
        off += n;
        if (r->p.state == UP_P_DONE || r->p.state == UP_P_ERROR) {
            /* the rest belongs to no answer: feeding it must change nothing */
            if (off < len)
                FUZZ_ASSERT(up_parse_feed(&r->p, data + off, len - off) == 0, "fed after the end");
            break;
        }
    }
    if (r->p.state != UP_P_DONE && r->p.state != UP_P_ERROR) {
        r->eof_result = up_parse_eof(&r->p);
        check_state(&r->p, cap);
        FUZZ_ASSERT(r->p.state == UP_P_DONE || r->p.state == UP_P_ERROR, "EOF left state %d", r->p.state);
        FUZZ_ASSERT((r->eof_result == 0) == (r->p.state == UP_P_DONE), "EOF result %d, state %d",
                    r->eof_result, r->p.state);
    }
    if (r->p.state == UP_P_DONE)
        r->body[r->p.body_len] = 0; /* what up_complete() does */
}

static void same_run(const struct run *a, const struct run *b, const char *what)
{
    FUZZ_ASSERT(a->p.state == b->p.state, "%s: state %d vs %d (%s | %s)", what, a->p.state, b->p.state,
                a->p.error, b->p.error);
    FUZZ_ASSERT(a->eof_result == b->eof_result, "%s: EOF verdict %d vs %d", what, a->eof_result, b->eof_result);
    if (a->p.state == UP_P_ERROR) {
        FUZZ_ASSERT(strcmp(a->p.error, b->p.error) == 0, "%s: error '%s' vs '%s'", what, a->p.error, b->p.error);
        return;
    }
    FUZZ_ASSERT(a->p.status == b->p.status, "%s: status %d vs %d", what, a->p.status, b->p.status);
    FUZZ_ASSERT(a->p.body_len == b->p.body_len && memcmp(a->body, b->body, a->p.body_len) == 0,
                "%s: body %zu vs %zu bytes", what, a->p.body_len, b->p.body_len);
    FUZZ_ASSERT(a->p.keep_alive == b->p.keep_alive, "%s: keep_alive", what);
    FUZZ_ASSERT(strcmp(a->p.retry_after, b->p.retry_after) == 0 && strcmp(a->p.content_type, b->p.content_type) == 0,
                "%s: kept headers differ", what);
    if (a->eof_result == 2)
        FUZZ_ASSERT(a->consumed == b->consumed, "%s: consumed %zu vs %zu", what, a->consumed, b->consumed);
}

/* ---- an independent, whole-buffer parser of the same grammar ---- */
enum { REF_DECLINE, REF_MORE, REF_ERROR, REF_DONE, REF_DONE_AT_EOF };

struct ref {
    int status, keep_alive;
    size_t body_len, consumed;
    char content_type[64], retry_after[32];
};

static int ieq(const char *s, size_t n, const char *word)
{
    size_t i;
    if (strlen(word) != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != word[i])
            return 0;
    return 1;
}

/* The next line at *pos: sets *l and *n (CR before LF removed). 1 ok, 0 need
 * more, -1 too long for this reference, -2 stray CR or NUL. */
static int ref_line(const char *d, size_t len, size_t *pos, const char **l, size_t *n)
{
    const char *nl = memchr(d + *pos, '\n', len - *pos);
    size_t k;
    if (!nl)
        return len - *pos > 900 ? -1 : 0;
    *l = d + *pos;
    *n = (size_t)(nl - *l);
    if (*n > 900)
        return -1;
    *pos += *n + 1;
    if (*n && (*l)[*n - 1] == '\r')
        (*n)--;
    for (k = 0; k < *n; k++)
        if ((*l)[k] == '\r' || (*l)[k] == 0)
            return -2;
    return 1;
}

static int ref_parse(const char *d, size_t len, size_t cap, int head, char *body, struct ref *out)
{
    size_t pos = 0;
    int r;
    const char *l;
    size_t n;
    memset(out, 0, sizeof *out);
    if (len > 60000)
        return REF_DECLINE;
    for (;;) { /* one (interim or final) answer head */
        int status, minor, chunked = 0, have_len = 0, close = 0, keep = 0;
        unsigned long long clen = 0;
        out->content_type[0] = out->retry_after[0] = 0;
        r = ref_line(d, len, &pos, &l, &n);
        if (r <= 0)
            return r == 0 ? REF_MORE : r == -1 ? REF_DECLINE : REF_ERROR;
        if (n < 12 || memcmp(l, "HTTP/1.", 7) || (l[7] != '0' && l[7] != '1') || l[8] != ' ' || l[9] < '1' ||
            l[9] > '5' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9' || (n > 12 && l[12] != ' '))
            return REF_ERROR;
        status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
        minor = l[7] - '0';
        for (;;) {
            size_t c = 0, vs, ve;
            r = ref_line(d, len, &pos, &l, &n);
            if (r <= 0)
                return r == 0 ? REF_MORE : r == -1 ? REF_DECLINE : REF_ERROR;
            if (n == 0)
                break;
            if (l[0] == ' ' || l[0] == '\t')
                return REF_ERROR;
            while (c < n && l[c] != ':') {
                if (!is_tchar((unsigned char)l[c]))
                    return REF_ERROR;
                c++;
            }
            if (c == 0 || c == n)
                return REF_ERROR;
            vs = c + 1;
            ve = n;
            while (vs < ve && (l[vs] == ' ' || l[vs] == '\t'))
                vs++;
            while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
                ve--;
            if (ieq(l, c, "content-length")) {
                unsigned long long v = 0;
                size_t k;
                if (ve == vs || ve - vs > 19)
                    return ve == vs ? REF_ERROR : REF_DECLINE;
                for (k = vs; k < ve; k++) {
                    if (l[k] < '0' || l[k] > '9')
                        return REF_ERROR;
                    v = v * 10 + (unsigned long long)(l[k] - '0');
                }
                if (have_len && v != clen)
                    return REF_ERROR;
                have_len = 1;
                clen = v;
            } else if (ieq(l, c, "transfer-encoding")) {
                if (!ieq(l + vs, ve - vs, "chunked"))
                    return REF_ERROR;
                chunked = 1;
            } else if (ieq(l, c, "connection")) {
                size_t k = vs;
                while (k < ve) {
                    size_t s, e;
                    while (k < ve && (l[k] == ' ' || l[k] == '\t' || l[k] == ','))
                        k++;
                    s = k;
                    while (k < ve && l[k] != ',')
                        k++;
                    e = k;
                    while (e > s && (l[e - 1] == ' ' || l[e - 1] == '\t'))
                        e--;
                    if (ieq(l + s, e - s, "close"))
                        close = 1;
                    else if (ieq(l + s, e - s, "keep-alive"))
                        keep = 1;
                }
            } else if (ieq(l, c, "retry-after")) {
                snprintf(out->retry_after, sizeof out->retry_after, "%.*s", (int)(ve - vs), l + vs);
            } else if (ieq(l, c, "content-type")) {
                snprintf(out->content_type, sizeof out->content_type, "%.*s", (int)(ve - vs), l + vs);
            }
        }
        if (status == 101)
            return REF_ERROR;
        if (status < 200)
            continue; /* interim: the real answer follows */
        out->status = status;
        out->keep_alive = minor >= 1 ? !close : (keep && !close);
        if (head || status == 204 || status == 304) {
            out->consumed = pos;
            return REF_DONE;
        }
        if (chunked) {
            for (;;) {
                unsigned long long v = 0;
                size_t k = 0;
                r = ref_line(d, len, &pos, &l, &n);
                if (r <= 0)
                    return r == 0 ? REF_MORE : r == -1 ? REF_DECLINE : REF_ERROR;
                while (k < n && hexval((unsigned char)l[k]) >= 0) {
                    if (k == 8)
                        return REF_ERROR;
                    v = v * 16 + (unsigned long long)hexval((unsigned char)l[k]);
                    k++;
                }
                if (k == 0)
                    return REF_ERROR;
                while (k < n && (l[k] == ' ' || l[k] == '\t'))
                    k++;
                if (k < n && l[k] != ';')
                    return REF_ERROR;
                if (v == 0) {
                    for (;;) { /* trailers */
                        r = ref_line(d, len, &pos, &l, &n);
                        if (r <= 0)
                            return r == 0 ? REF_MORE : r == -1 ? REF_DECLINE : REF_ERROR;
                        if (n == 0) {
                            out->consumed = pos;
                            return REF_DONE;
                        }
                    }
                }
                if (v > cap - out->body_len)
                    return REF_ERROR;
                if (len - pos < v)
                    return REF_MORE;
                memcpy(body + out->body_len, d + pos, (size_t)v);
                out->body_len += (size_t)v;
                pos += (size_t)v;
                r = ref_line(d, len, &pos, &l, &n);
                if (r <= 0)
                    return r == 0 ? REF_MORE : r == -1 ? REF_DECLINE : REF_ERROR;
                if (n != 0)
                    return REF_ERROR;
            }
        }
        if (have_len) {
            if (clen > cap)
                return REF_ERROR;
            if (len - pos < clen)
                return REF_MORE;
            memcpy(body, d + pos, (size_t)clen);
            out->body_len = (size_t)clen;
            out->consumed = pos + (size_t)clen;
            return REF_DONE;
        }
        /* until the connection closes */
        out->keep_alive = 0;
        if (len - pos > cap)
            return REF_ERROR;
        memcpy(body, d + pos, len - pos);
        out->body_len = len - pos;
        out->consumed = len;
        return REF_DONE_AT_EOF;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[4] = {CM_UPSTREAM_BODY_BYTES, 0, 16, 1000};
    struct run whole, pieces, bytes;
    struct ref ref;
    unsigned opt;
    size_t cap;
    int head, verdict;
    char *refbody;
    if (size < 1)
        return 0;
    opt = data[0];
    data++;
    size--;
    head = opt & 1;
    cap = caps[(opt >> 1) & 3];

    run_parser(&whole, data, size, cap, head, 8, 0);
    run_parser(&pieces, data, size, cap, head, (opt >> 3) & 7, (uint32_t)size ^ opt);
    run_parser(&bytes, data, size, cap, head, 0, 0);
    same_run(&whole, &pieces, "one go vs pieces");
    same_run(&whole, &bytes, "one go vs bytewise");

    refbody = malloc(cap + 1);
    if (!refbody)
        abort();
    verdict = ref_parse((const char *)data, size, cap, head, refbody, &ref);
    switch (verdict) {
    case REF_DECLINE:
        break;
    case REF_ERROR:
        FUZZ_ASSERT(whole.p.state == UP_P_ERROR, "the reference finds the answer malformed; the parser ends in state %d",
                    whole.p.state);
        break;
    case REF_MORE:
        FUZZ_ASSERT(whole.eof_result == -1, "the reference needs more bytes; the parser %s",
                    whole.eof_result == 2 ? "finished before EOF" : "accepted the EOF");
        break;
    case REF_DONE:
    case REF_DONE_AT_EOF:
        FUZZ_ASSERT(whole.p.state == UP_P_DONE, "the reference parses a complete answer; the parser says: %s",
                    whole.p.error);
        FUZZ_ASSERT((verdict == REF_DONE_AT_EOF) == (whole.eof_result == 0), "EOF-delimited: ref %d, parser %d",
                    verdict, whole.eof_result);
        FUZZ_ASSERT(whole.p.status == ref.status, "status %d, reference %d", whole.p.status, ref.status);
        FUZZ_ASSERT(whole.p.body_len == ref.body_len && memcmp(whole.body, refbody, ref.body_len) == 0,
                    "body of %zu bytes, reference %zu", whole.p.body_len, ref.body_len);
        FUZZ_ASSERT(whole.p.keep_alive == ref.keep_alive, "keep_alive %d, reference %d", whole.p.keep_alive,
                    ref.keep_alive);
        FUZZ_ASSERT(strcmp(whole.p.content_type, ref.content_type) == 0 &&
                        strcmp(whole.p.retry_after, ref.retry_after) == 0,
                    "kept headers differ from the reference");
        if (verdict == REF_DONE)
            FUZZ_ASSERT(whole.consumed == ref.consumed, "consumed %zu, reference %zu", whole.consumed, ref.consumed);
        break;
    default:
        break;
    }
    free(refbody);
    free(whole.body);
    free(pieces.body);
    free(bytes.body);
    return 0;
}
