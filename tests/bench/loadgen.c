/*
 * loadgen.c - a small closed-loop HTTP/1.1 load generator for make bench.
 *
 * N keep-alive connections, one poll loop, one request in flight per
 * connection. Every connection sends fixed request bytes (read from a file),
 * waits for the whole answer, records the latency (first byte written to
 * last byte read) and sends the next one. Plain HTTP or HTTPS (BearSSL, the
 * same library calid-mcp uses), so a "direct request to the fake API" is made
 * by the same client the same way as a request through an MCP server.
 *
 *   loadgen --host 127.0.0.1 --port P [--tls --ca ca.pem --sni localhost]
 *           --req FILE [--init FILE] [--conns N] [--seconds S | --count K]
 *           [--expect TEXT]
 *
 * --init FILE  sent once per connection before the timed part; the answer's
 *              Mcp-Session-Id replaces "{SID}" in the --req bytes. Without
 *              it, one --req request per connection is sent as a warm-up
 *              (this also completes the TLS handshake before timing starts).
 * --seconds S  timed part: requests that finish within S seconds count
 *              (default 5). --count K: every connection sends exactly K.
 * --expect T   an answer counts only if its status is 2xx and its body
 *              contains T; anything else is an error and ends that connection.
 * --reconnect  (plain HTTP) when the server closes a kept-alive connection
 *              before any byte of the answer, open a new one and send the
 *              request again; its latency includes the reconnect. Counted in
 *              dropped=. Without it, that is an error.
 *
 * Prints one line of key=value pairs:
 *   requests= errors= dropped= seconds= rps= p50_us= p99_us= max_us= init_n= init_p50_us= init_p99_us=
 * Latencies are percentiles by nearest rank over every timed request.
 * Benchmarks never fail on time: the exit status is 0 unless nothing worked.
 */
#include <bearssl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p;
    long n;
    if (!f) {
        fprintf(stderr, "loadgen: cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n)
        die("read failed");
    p[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* ---- latency samples ---- */
struct samples {
    uint64_t *v;
    size_t n, cap;
};

static void sample_add(struct samples *s, uint64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            die("out of memory");
    }
    s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest rank: the smallest sample with at least q of all samples at or below it */
static double pct_us(struct samples *s, double q)
{
    size_t k;
    if (!s->n)
        return 0;
    k = (size_t)(q * (double)s->n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > s->n)
        k = s->n;
    return (double)s->v[k - 1] / 1000.0;
}

/* ---- trust anchors from a PEM file (for --tls) ---- */
struct blob {
    unsigned char *p;
    size_t n, cap;
};

static void blob_append(void *ctx, const void *data, size_t len)
{
    struct blob *b = ctx;
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory");
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static br_x509_trust_anchor anchors[16];
static size_t n_anchors;

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (!q)
        die("out of memory");
    memcpy(q, p, n);
    return q;
}

static void add_anchor(const unsigned char *der, size_t len)
{
    br_x509_decoder_context dc;
    struct blob dn = {0};
    br_x509_pkey *pk;
    br_x509_trust_anchor *ta;
    if (n_anchors == sizeof anchors / sizeof anchors[0])
        return;
    br_x509_decoder_init(&dc, blob_append, &dn);
    br_x509_decoder_push(&dc, der, len);
    pk = br_x509_decoder_get_pkey(&dc);
    if (!pk)
        die("CA file: a certificate does not decode");
    ta = &anchors[n_anchors++];
    ta->dn.data = dn.p;
    ta->dn.len = dn.n;
    ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
    ta->pkey = *pk;
    if (pk->key_type == BR_KEYTYPE_RSA) {
        ta->pkey.key.rsa.n = dup_bytes(pk->key.rsa.n, pk->key.rsa.nlen);
        ta->pkey.key.rsa.e = dup_bytes(pk->key.rsa.e, pk->key.rsa.elen);
    } else {
        ta->pkey.key.ec.q = dup_bytes(pk->key.ec.q, pk->key.ec.qlen);
    }
}

static void load_anchors(const char *path)
{
    size_t len, off = 0;
    char *pem = read_file(path, &len);
    br_pem_decoder_context pc;
    struct blob der = {0};
    int in_cert = 0;
    br_pem_decoder_init(&pc);
    while (off < len) {
        off += br_pem_decoder_push(&pc, pem + off, len - off);
        switch (br_pem_decoder_event(&pc)) {
        case BR_PEM_BEGIN_OBJ:
            in_cert = strcmp(br_pem_decoder_name(&pc), "CERTIFICATE") == 0;
            der.n = 0;
            br_pem_decoder_setdest(&pc, in_cert ? blob_append : NULL, &der);
            break;
        case BR_PEM_END_OBJ:
            if (in_cert)
                add_anchor(der.p, der.n);
            in_cert = 0;
            break;
        case BR_PEM_ERROR:
            die("CA file: bad PEM");
        default:
            break;
        }
    }
    if (!n_anchors)
        die("CA file: no certificate");
    free(pem);
}

/* ---- connections ---- */
struct conn {
    int fd;
    int dead;
    int phase;                 /* 0 init/warm-up, 1 timed, 2 finished */
    br_ssl_client_context *cc; /* NULL for plain HTTP */
    br_x509_minimal_context *xc;
    unsigned char *iobuf;
    const char *req;
    size_t req_len, req_off;
    char *mine;                /* this connection's request bytes (after {SID}) */
    char *r;                   /* the answer so far */
    size_t rlen, rcap;
    size_t head_len;           /* 0 until the headers are complete */
    long clen;                 /* -1: chunked */
    size_t chunk_pos;          /* chunked: offset (in r) of the next chunk-size line */
    int status, close_after;
    char sid[160];
    uint64_t t0;
    long done;
};

static struct conn conns[MAX_CONNS];
static int n_conns = 1;
static const char *opt_host = "127.0.0.1", *opt_sni = "localhost", *opt_expect;
static int opt_port, opt_tls, opt_reconnect;
static long opt_count;
static double opt_seconds = 5;
static char *req_tpl, *init_req;
static size_t req_tpl_len, init_len;
static struct samples lat, init_lat;
static long errors, dropped, timed_done;
static uint64_t t_start, t_deadline;
static int started;

static void conn_error(struct conn *c, const char *why)
{
    if (errors < 5) {
        int show = c->rlen > 300 ? 300 : (int)c->rlen;
        fprintf(stderr, "loadgen: connection %d: %s%s%.*s\n", (int)(c - conns), why,
                show ? "; answer: " : "", show, c->r ? c->r : "");
    }
    errors++;
    c->dead = 1;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_open(struct conn *c)
{
    struct sockaddr_in sa;
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die("socket failed");
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)opt_port);
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1)
        die("--host must be a numeric IPv4 address");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("loadgen: connect");
        exit(2);
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    if (opt_tls) {
        c->cc = calloc(1, sizeof *c->cc);
        c->xc = calloc(1, sizeof *c->xc);
        c->iobuf = malloc(BR_SSL_BUFSIZE_BIDI);
        if (!c->cc || !c->xc || !c->iobuf)
            die("out of memory");
        br_ssl_client_init_full(c->cc, c->xc, anchors, n_anchors);
        br_ssl_engine_set_buffer(&c->cc->eng, c->iobuf, BR_SSL_BUFSIZE_BIDI, 1);
        if (!br_ssl_client_reset(c->cc, opt_sni, 0))
            die("TLS reset failed");
    }
}

static void start_request(struct conn *c, const char *req, size_t len)
{
    c->req = req;
    c->req_len = len;
    c->req_off = 0;
    c->rlen = 0;
    c->head_len = 0;
    c->clen = 0;
    c->status = 0;
    c->close_after = 0;
    c->t0 = now_ns();
}

/* Builds this connection's request bytes: the template with {SID} replaced. */
static void make_mine(struct conn *c)
{
    const char *p = strstr(req_tpl, "{SID}");
    size_t sl = strlen(c->sid);
    if (!p) {
        c->mine = req_tpl;
        return;
    }
    c->mine = malloc(req_tpl_len + sl + 1);
    if (!c->mine)
        die("out of memory");
    memcpy(c->mine, req_tpl, (size_t)(p - req_tpl));
    memcpy(c->mine + (p - req_tpl), c->sid, sl);
    strcpy(c->mine + (p - req_tpl) + sl, p + 5);
}

static size_t mine_len(const struct conn *c) { return strlen(c->mine); }

static int hdr_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && strncasecmp(line, name, k) == 0 && line[k] == ':';
}

static void hdr_value(const char *line, size_t n, const char *name, const char **v, size_t *vn)
{
    size_t k = strlen(name) + 1;
    while (k < n && (line[k] == ' ' || line[k] == '\t'))
        k++;
    *v = line + k;
    *vn = n - k;
    while (*vn && ((*v)[*vn - 1] == ' ' || (*v)[*vn - 1] == '\t'))
        (*vn)--;
}

/* 1: the whole answer is in; 0: more to read; -1: malformed. */
static int answer_complete(struct conn *c)
{
    if (!c->head_len) {
        char *e = memmem(c->r, c->rlen, "\r\n\r\n", 4);
        char *line, *end;
        if (!e)
            return 0;
        c->head_len = (size_t)(e - c->r) + 4;
        if (c->rlen < 12 || memcmp(c->r, "HTTP/1.", 7) != 0)
            return -1;
        c->status = atoi(c->r + 9);
        c->clen = -2; /* unknown: until close (not supported) */
        line = (char *)memchr(c->r, '\n', c->head_len) + 1;
        while (line < c->r + c->head_len - 2) {
            const char *v;
            size_t vn, n;
            end = memchr(line, '\r', (size_t)(c->r + c->head_len - line));
            n = (size_t)(end - line);
            if (hdr_is(line, n, "content-length")) {
                hdr_value(line, n, "content-length", &v, &vn);
                c->clen = strtol(v, NULL, 10);
            } else if (hdr_is(line, n, "transfer-encoding")) {
                hdr_value(line, n, "transfer-encoding", &v, &vn);
                if (vn >= 7 && strncasecmp(v + vn - 7, "chunked", 7) == 0) {
                    c->clen = -1;
                    c->chunk_pos = c->head_len;
                }
            } else if (hdr_is(line, n, "connection")) {
                hdr_value(line, n, "connection", &v, &vn);
                if (vn == 5 && strncasecmp(v, "close", 5) == 0)
                    c->close_after = 1;
            } else if (hdr_is(line, n, "mcp-session-id")) {
                hdr_value(line, n, "mcp-session-id", &v, &vn);
                if (vn < sizeof c->sid) {
                    memcpy(c->sid, v, vn);
                    c->sid[vn] = 0;
                }
            }
            line = end + 2;
        }
        if (c->status == 100 || c->status == 103) { /* interim: drop it, read on */
            memmove(c->r, c->r + c->head_len, c->rlen - c->head_len);
            c->rlen -= c->head_len;
            c->head_len = 0;
            return answer_complete(c);
        }
        if (c->status == 204 || c->status == 304)
            c->clen = 0;
        if (c->clen == -2)
            return -1;
    }
    if (c->clen >= 0)
        return c->rlen >= c->head_len + (size_t)c->clen ? 1 : 0;
    /* chunked: walk the chunk-size lines that have arrived */
    for (;;) {
        char *nl = memmem(c->r + c->chunk_pos, c->rlen - c->chunk_pos, "\r\n", 2);
        unsigned long size;
        if (!nl)
            return 0;
        size = strtoul(c->r + c->chunk_pos, NULL, 16);
        if (size == 0) {
            /* trailer section: lines until an empty one */
            size_t p = (size_t)(nl - c->r) + 2;
            for (;;) {
                char *t = memmem(c->r + p, c->rlen - p, "\r\n", 2);
                if (!t)
                    return 0;
                if (t == c->r + p)
                    return 1;
                p = (size_t)(t - c->r) + 2;
            }
        }
        if ((size_t)(nl - c->r) + 2 + size + 2 > c->rlen)
            return 0;
        c->chunk_pos = (size_t)(nl - c->r) + 2 + size + 2;
    }
}

static void rbuf_reserve(struct conn *c, size_t more)
{
    if (c->rlen + more > c->rcap) {
        c->rcap = (c->rlen + more) * 2;
        c->r = realloc(c->r, c->rcap + 1);
        if (!c->r)
            die("out of memory");
    }
}

/* Everything after an answer is whole: checks it, records it, sends the next. */
static void answer_done(struct conn *c)
{
    uint64_t t = now_ns();
    int ok = c->status >= 200 && c->status < 300;
    int is_init = c->phase == 0 && init_req;
    if (ok && opt_expect && !is_init) {
        size_t bl = c->rlen - c->head_len;
        ok = memmem(c->r + c->head_len, bl, opt_expect, strlen(opt_expect)) != NULL;
    }
    if (!ok) {
        conn_error(c, "unexpected answer");
        return;
    }
    if (c->phase == 0) {
        if (init_req) {
            sample_add(&init_lat, t - c->t0);
            if (strstr(req_tpl, "{SID}") && !c->sid[0]) {
                conn_error(c, "the init answer has no Mcp-Session-Id");
                return;
            }
        }
        make_mine(c);
        c->phase = 1;
        if (!started) { /* wait for the others: the timed part starts together */
            c->req_len = 0;
            c->req = NULL;
            return;
        }
    } else {
        if (opt_count ? 1 : t <= t_deadline) {
            sample_add(&lat, t - c->t0);
            timed_done++;
        }
        c->done++;
        if ((opt_count && c->done >= opt_count) || (!opt_count && t > t_deadline)) {
            c->phase = 2;
            return;
        }
    }
    if (c->close_after) {
        conn_error(c, "the server closed the connection (Connection: close)");
        return;
    }
    start_request(c, c->mine, mine_len(c));
}

/* The server dropped a kept-alive connection under a request (--reconnect):
 * a new connection, the same request again, the clock still running. */
static void reconnect(struct conn *c)
{
    dropped++;
    if (dropped <= 3)
        fprintf(stderr, "loadgen: connection %d: closed by the server before an answer; reconnecting\n", (int)(c - conns));
    close(c->fd);
    conn_open(c);
    c->req_off = 0;
}

/* Moves bytes for a plain connection; returns the poll events it waits for. */
static short plain_io(struct conn *c)
{
    for (;;) {
        long n;
        if (c->dead || c->phase == 2 || !c->req)
            return 0;
        if (c->req_off < c->req_len) {
            n = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return POLLOUT;
            if (n <= 0 && opt_reconnect && c->rlen == 0) {
                reconnect(c);
                continue;
            }
            if (n <= 0) {
                conn_error(c, "send failed");
                return 0;
            }
            c->req_off += (size_t)n;
            continue;
        }
        rbuf_reserve(c, 65536);
        n = recv(c->fd, c->r + c->rlen, c->rcap - c->rlen, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return POLLIN;
        if (n <= 0 && opt_reconnect && c->rlen == 0) {
            reconnect(c);
            continue;
        }
        if (n <= 0) {
            conn_error(c, n == 0 ? "the server closed the connection" : "recv failed");
            return 0;
        }
        c->rlen += (size_t)n;
        {
            int r = answer_complete(c);
            if (r < 0) {
                conn_error(c, "malformed answer");
                return 0;
            }
            if (r == 1)
                answer_done(c);
        }
    }
}

/* The same over BearSSL: the engine tells what it needs (SENDREC first). */
static short tls_io(struct conn *c)
{
    br_ssl_engine_context *eng = &c->cc->eng;
    for (;;) {
        unsigned st;
        unsigned char *buf;
        size_t len;
        long n;
        if (c->dead || c->phase == 2)
            return 0;
        st = br_ssl_engine_current_state(eng);
        if (st & BR_SSL_CLOSED) {
            char m[80];
            snprintf(m, sizeof m, "TLS closed (BearSSL error %d)", br_ssl_engine_last_error(eng));
            conn_error(c, m);
            return 0;
        }
        if (st & BR_SSL_SENDREC) {
            buf = br_ssl_engine_sendrec_buf(eng, &len);
            n = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return POLLOUT;
            if (n <= 0) {
                conn_error(c, "send failed");
                return 0;
            }
            br_ssl_engine_sendrec_ack(eng, (size_t)n);
            continue;
        }
        if (st & BR_SSL_RECVAPP) {
            int r;
            buf = br_ssl_engine_recvapp_buf(eng, &len);
            rbuf_reserve(c, len);
            memcpy(c->r + c->rlen, buf, len);
            c->rlen += len;
            br_ssl_engine_recvapp_ack(eng, len);
            r = answer_complete(c);
            if (r < 0) {
                conn_error(c, "malformed answer");
                return 0;
            }
            if (r == 1)
                answer_done(c);
            continue;
        }
        if ((st & BR_SSL_SENDAPP) && c->req && c->req_off < c->req_len) {
            buf = br_ssl_engine_sendapp_buf(eng, &len);
            if (len > c->req_len - c->req_off)
                len = c->req_len - c->req_off;
            memcpy(buf, c->req + c->req_off, len);
            br_ssl_engine_sendapp_ack(eng, len);
            c->req_off += len;
            if (c->req_off == c->req_len)
                br_ssl_engine_flush(eng, 0);
            continue;
        }
        if (!c->req)
            return 0; /* idle, waiting for the timed part to start */
        if (st & BR_SSL_RECVREC) {
            buf = br_ssl_engine_recvrec_buf(eng, &len);
            n = recv(c->fd, buf, len, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return POLLIN;
            if (n <= 0) {
                conn_error(c, n == 0 ? "the server closed the connection" : "recv failed");
                return 0;
            }
            br_ssl_engine_recvrec_ack(eng, (size_t)n);
            continue;
        }
        return 0;
    }
}

static short conn_io(struct conn *c) { return c->cc ? tls_io(c) : plain_io(c); }

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --port P --req FILE [--host IP] [--tls --ca PEM [--sni NAME]]\n"
                    "               [--init FILE] [--conns N] [--seconds S | --count K] [--expect TEXT] [--reconnect]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int i;
    const char *ca = NULL;
    struct pollfd pfd[MAX_CONNS];
    short want[MAX_CONNS];
    uint64_t t_end;
    double secs;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--tls") == 0) {
            opt_tls = 1;
            continue;
        }
        if (strcmp(a, "--reconnect") == 0) {
            opt_reconnect = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (strcmp(a, "--host") == 0)
            opt_host = v;
        else if (strcmp(a, "--port") == 0)
            opt_port = atoi(v);
        else if (strcmp(a, "--ca") == 0)
            ca = v;
        else if (strcmp(a, "--sni") == 0)
            opt_sni = v;
        else if (strcmp(a, "--req") == 0)
            req_tpl = read_file(v, &req_tpl_len);
        else if (strcmp(a, "--init") == 0)
            init_req = read_file(v, &init_len);
        else if (strcmp(a, "--conns") == 0)
            n_conns = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            opt_seconds = atof(v);
        else if (strcmp(a, "--count") == 0)
            opt_count = atol(v);
        else if (strcmp(a, "--expect") == 0)
            opt_expect = v;
        else
            usage();
    }
    if (!opt_port || !req_tpl || n_conns < 1 || n_conns > MAX_CONNS)
        usage();
    if (opt_tls) {
        if (!ca)
            die("--tls needs --ca");
        load_anchors(ca);
    }
    for (i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        conn_open(c);
        c->sid[0] = 0;
        if (init_req)
            start_request(c, init_req, init_len);
        else
            start_request(c, req_tpl, req_tpl_len); /* warm-up: not timed */
    }
    for (i = 0; i < n_conns; i++)
        want[i] = conn_io(&conns[i]);
    for (;;) {
        int n = 0, live = 0, waiting = 0;
        uint64_t t = now_ns();
        for (i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            if (c->dead || c->phase == 2)
                continue;
            live++;
            if (c->phase == 1 && !c->req)
                waiting++;
        }
        if (!started && waiting == live) {
            /* every connection is warm: start the clock */
            if (!live)
                break;
            started = 1;
            t_start = now_ns();
            t_deadline = t_start + (uint64_t)(opt_seconds * 1e9);
            for (i = 0; i < n_conns; i++) {
                struct conn *c = &conns[i];
                if (!c->dead && c->phase == 1) {
                    start_request(c, c->mine, mine_len(c));
                    want[i] = conn_io(c);
                }
            }
            continue;
        }
        if (!live)
            break;
        for (i = 0; i < n_conns; i++) {
            struct conn *c = &conns[i];
            if (c->dead || c->phase == 2 || !want[i])
                continue;
            pfd[n].fd = c->fd;
            pfd[n].events = want[i];
            pfd[n].revents = (short)i; /* remembered below */
            n++;
        }
        {
            int idx[MAX_CONNS], k;
            for (k = 0; k < n; k++) {
                idx[k] = pfd[k].revents;
                pfd[k].revents = 0;
            }
            if (n == 0) {
                fprintf(stderr, "loadgen: stalled: no connection waits for anything\n");
                break;
            }
            if (poll(pfd, (nfds_t)n, 1000) < 0 && errno != EINTR)
                die("poll failed");
            for (k = 0; k < n; k++)
                if (pfd[k].revents)
                    want[idx[k]] = conn_io(&conns[idx[k]]);
        }
        if (!opt_count && started && t > t_deadline + 30000000000ull) {
            fprintf(stderr, "loadgen: answers still missing 30 s after the deadline\n");
            break;
        }
    }
    t_end = now_ns();
    if (!started)
        t_start = t_end;
    secs = opt_count ? (double)(t_end - t_start) / 1e9 : opt_seconds;
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_u64);
    qsort(init_lat.v, init_lat.n, sizeof *init_lat.v, cmp_u64);
    printf("requests=%ld errors=%ld dropped=%ld seconds=%.3f rps=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "init_n=%lu init_p50_us=%.1f init_p99_us=%.1f\n",
           timed_done, errors, dropped, secs, secs > 0 ? (double)timed_done / secs : 0.0, pct_us(&lat, 0.50),
           pct_us(&lat, 0.99), pct_us(&lat, 1.0), (unsigned long)init_lat.n, pct_us(&init_lat, 0.50),
           pct_us(&init_lat, 0.99));
    return timed_done > 0 ? 0 : 1;
}
