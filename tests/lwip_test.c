/*
 * tests/lwip_test.c - calid-mcp on lwIP, all inside one process.
 *
 *   lwip_test CERTDIR      (CERTDIR from tests/make_certs.sh: ca.pem, server.pem, server.key)
 *
 * Brings lwIP (Debian's liblwip, the unix port) up with one loopback netif at
 * 127.0.0.1/8, then on that stack only:
 *   - an HTTPS responder thread (BearSSL server, blocking lwIP sockets) plays
 *     the Cal ID API on 127.0.0.1:8443;
 *   - the main thread runs calid-mcp (port/lwip.c) with cm_poll() on
 *     127.0.0.1:8080, its upstream https://127.0.0.1:8443 trusting ca.pem,
 *     compiled in with mk/pem2c.py (-DCM_TRUST_ANCHORS_H), no file read;
 *   - a client thread speaks HTTP to the server: initialize, tools/list and
 *     two tools/call whose API requests reach the responder over lwIP.
 * No byte leaves the process. Ends with "N passed, N failed".
 */
#include "calid_mcp.h"

#include <bearssl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lwip/opt.h"
#include "lwip/def.h"
#include "lwip/inet.h"
#include "lwip/ip_addr.h"
#include "lwip/netif.h"
#include "lwip/sockets.h"
#include "lwip/sys.h"
#include "lwip/tcpip.h"

#define SERVER_PORT 8080
#define API_PORT 8443
#define TOKEN "calid_test_token"
#define DEADLINE_MS 60000 /* the whole test; a hang fails instead of blocking CI */

static int passed, failed;

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    printf("%s - ", ok ? "ok" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (ok)
        passed++;
    else
        failed++;
}

/* ------------------------------------------------------------------ */
/* lwIP bring-up: one netif that loops every packet back into the stack */
/* ------------------------------------------------------------------ */
static struct netif loop_netif;

static err_t loop_output(struct netif *nif, struct pbuf *p, const ip4_addr_t *dst)
{
    (void)dst;
    return netif_loop_output(nif, p);
}

static err_t loop_init(struct netif *nif)
{
    nif->name[0] = 'l';
    nif->name[1] = 'o';
    nif->output = loop_output;
    nif->mtu = 1500;
    nif->flags = 0; /* no ARP, no broadcast: a point-to-self link */
    return ERR_OK;
}

static void stack_ready(void *arg)
{
    ip4_addr_t addr, mask, gw;
    IP4_ADDR(&addr, 127, 0, 0, 1);
    IP4_ADDR(&mask, 255, 0, 0, 0);
    IP4_ADDR(&gw, 0, 0, 0, 0);
    /* runs on the tcpip thread with the core lock held, as netif_add wants */
    netif_add(&loop_netif, &addr, &mask, &gw, NULL, loop_init, tcpip_input);
    netif_set_default(&loop_netif);
    netif_set_up(&loop_netif);
    netif_set_link_up(&loop_netif);
    sys_sem_signal((sys_sem_t *)arg);
}

static int lwip_up(void)
{
    sys_sem_t ready;
    if (sys_sem_new(&ready, 0) != ERR_OK)
        return -1;
    tcpip_init(stack_ready, &ready);
    if (sys_arch_sem_wait(&ready, 10000) == SYS_ARCH_TIMEOUT)
        return -1;
    sys_sem_free(&ready);
    return 0;
}

static void sockaddr_loopback(struct sockaddr_in *sa, unsigned short port)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = lwip_htons(port);
    sa->sin_addr.s_addr = lwip_htonl(0x7f000001UL);
}

/* ------------------------------------------------------------------ */
/* PEM files -> BearSSL server credentials                              */
/* ------------------------------------------------------------------ */
struct der_sink {
    unsigned char *buf;
    size_t len, cap;
    int overflow;
};

static void der_append(void *ctx, const void *data, size_t n)
{
    struct der_sink *s = ctx;
    if (s->len + n > s->cap) {
        s->overflow = 1;
        return;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

/* The first PEM object of a file whose name contains `want`, as DER. */
static long pem_first(const char *path, const char *want, unsigned char *out, size_t cap)
{
    static unsigned char text[16384];
    br_pem_decoder_context pem;
    struct der_sink sink = {out, 0, cap, 0};
    size_t n, off = 0;
    int inside = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n++] = '\n';
    br_pem_decoder_init(&pem);
    while (off < n) {
        off += br_pem_decoder_push(&pem, text + off, n - off);
        switch (br_pem_decoder_event(&pem)) {
        case BR_PEM_BEGIN_OBJ:
            inside = strstr(br_pem_decoder_name(&pem), want) != NULL;
            br_pem_decoder_setdest(&pem, inside ? der_append : NULL, &sink);
            break;
        case BR_PEM_END_OBJ:
            if (inside)
                return sink.overflow ? -1 : (long)sink.len;
            break;
        case BR_PEM_ERROR:
            return -1;
        default:
            break;
        }
    }
    return -1;
}

static unsigned char cert_der[8192], key_der[8192];
static br_x509_certificate chain[1];
static br_skey_decoder_context key_decoder; /* the decoded key points into this */

static int load_credentials(const char *dir, char *why, size_t cap)
{
    char path[512];
    long n;
    snprintf(path, sizeof path, "%s/server.pem", dir);
    n = pem_first(path, "CERTIFICATE", cert_der, sizeof cert_der);
    if (n <= 0) {
        snprintf(why, cap, "no certificate in %s", path);
        return -1;
    }
    chain[0].data = cert_der;
    chain[0].data_len = (size_t)n;
    snprintf(path, sizeof path, "%s/server.key", dir);
    n = pem_first(path, "PRIVATE KEY", key_der, sizeof key_der);
    if (n <= 0) {
        snprintf(why, cap, "no private key in %s", path);
        return -1;
    }
    br_skey_decoder_init(&key_decoder);
    br_skey_decoder_push(&key_decoder, key_der, (size_t)n);
    if (br_skey_decoder_last_error(&key_decoder) != 0) {
        snprintf(why, cap, "cannot decode %s (BearSSL error %d)", path, br_skey_decoder_last_error(&key_decoder));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The HTTPS responder: a tiny Cal ID API on lwIP                       */
/* ------------------------------------------------------------------ */
static sys_sem_t responder_ready;
static atomic_int responder_listening;
static atomic_int api_requests, api_connections, api_auth_ok;
static char api_last_line[256]; /* written by the responder, read after the client is done */

static int sock_read(void *ctx, unsigned char *buf, size_t len)
{
    ssize_t n = lwip_recv(*(int *)ctx, buf, len, 0);
    return n <= 0 ? -1 : (int)n;
}

static int sock_write(void *ctx, const unsigned char *buf, size_t len)
{
    ssize_t n = lwip_send(*(int *)ctx, buf, len, 0);
    return n <= 0 ? -1 : (int)n;
}

/* Reads one request (head + Content-Length body). 1 got one, 0 peer done. */
static int read_api_request(br_sslio_context *io, char *buf, size_t cap)
{
    size_t len = 0, body = 0;
    char *end = NULL, *cl;
    while (!end) {
        int n;
        if (len + 1 >= cap)
            return 0;
        n = br_sslio_read(io, buf + len, cap - 1 - len);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    cl = strstr(buf, "Content-Length:");
    if (!cl)
        cl = strstr(buf, "content-length:");
    if (cl && cl < end)
        body = strtoul(cl + 15, NULL, 10);
    while (len < (size_t)(end + 4 - buf) + body) {
        int n;
        if (len + 1 >= cap)
            return 0;
        n = br_sslio_read(io, buf + len, cap - 1 - len);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = 0;
    }
    return 1;
}

static void serve_api_connection(int fd)
{
    static br_ssl_server_context sc;
    static unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];
    static char req[16384];
    br_sslio_context io;
    int key_type = br_skey_decoder_key_type(&key_decoder);
    if (key_type == BR_KEYTYPE_EC)
        br_ssl_server_init_full_ec(&sc, chain, 1, BR_KEYTYPE_EC, br_skey_decoder_get_ec(&key_decoder));
    else
        br_ssl_server_init_full_rsa(&sc, chain, 1, br_skey_decoder_get_rsa(&key_decoder));
    br_ssl_engine_set_buffer(&sc.eng, iobuf, sizeof iobuf, 1);
    br_ssl_server_reset(&sc);
    br_sslio_init(&io, &sc.eng, sock_read, &fd, sock_write, &fd);
    while (read_api_request(&io, req, sizeof req)) {
        static const char body[] =
            "{\"status\":\"success\",\"data\":[{\"id\":4242,\"name\":\"lwip-responder schedule\","
            "\"timeZone\":\"Europe/Berlin\",\"isDefault\":true}]}";
        char head[256];
        char *eol = strstr(req, "\r\n");
        if (eol && (size_t)(eol - req) < sizeof api_last_line) {
            memcpy(api_last_line, req, (size_t)(eol - req));
            api_last_line[eol - req] = 0;
        }
        if (strstr(req, "\r\nAuthorization: Bearer " TOKEN "\r\n") ||
            strstr(req, "\r\nauthorization: Bearer " TOKEN "\r\n"))
            atomic_fetch_add(&api_auth_ok, 1);
        atomic_fetch_add(&api_requests, 1);
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %u\r\n\r\n",
                 (unsigned)(sizeof body - 1));
        if (br_sslio_write_all(&io, head, strlen(head)) < 0 || br_sslio_write_all(&io, body, sizeof body - 1) < 0 ||
            br_sslio_flush(&io) < 0)
            break;
    }
    br_sslio_close(&io);
}

static void responder_thread(void *arg)
{
    struct sockaddr_in sa;
    int one = 1;
    int ls = lwip_socket(AF_INET, SOCK_STREAM, 0);
    (void)arg;
    sockaddr_loopback(&sa, API_PORT);
    lwip_setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls >= 0 && lwip_bind(ls, (struct sockaddr *)&sa, sizeof sa) == 0 && lwip_listen(ls, 4) == 0)
        atomic_store(&responder_listening, 1);
    sys_sem_signal(&responder_ready);
    if (!atomic_load(&responder_listening))
        return;
    for (;;) {
        int fd = lwip_accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&api_connections, 1);
        serve_api_connection(fd); /* one at a time is all calid-mcp needs here */
        lwip_close(fd);
    }
}

/* ------------------------------------------------------------------ */
/* The MCP client: plain HTTP over lwIP sockets                        */
/* ------------------------------------------------------------------ */
static atomic_int client_done;
static char session_id[128];

struct answer {
    int status;
    char head[4096];
    char body[131072];
    size_t body_len;
};

static void dechunk(struct answer *a)
{
    char *in = a->body, *out = a->body, *end = a->body + a->body_len;
    while (in < end) {
        char *p;
        unsigned long n = strtoul(in, &p, 16);
        char *line_end = strstr(in, "\r\n");
        if (!line_end || n == 0)
            break;
        in = line_end + 2;
        if ((size_t)(end - in) < n)
            n = (unsigned long)(end - in);
        memmove(out, in, n);
        out += n;
        in += n + 2;
        (void)p;
    }
    a->body_len = (size_t)(out - a->body);
    a->body[a->body_len] = 0;
}

/* One request on a fresh connection (Connection: close); 0 with *a filled. */
static int http_post(const char *json, const char *extra_headers, struct answer *a)
{
    static char raw[sizeof a->head + sizeof a->body + 64];
    char req[8192];
    struct sockaddr_in sa;
    size_t got = 0;
    char *sep;
    int fd = lwip_socket(AF_INET, SOCK_STREAM, 0);
    int len;
    if (fd < 0)
        return -1;
    sockaddr_loopback(&sa, SERVER_PORT);
    if (lwip_connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        lwip_close(fd);
        return -1;
    }
    len = snprintf(req, sizeof req,
                   "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   "Accept: application/json, text/event-stream\r\nAuthorization: Bearer " TOKEN "\r\n"
                   "%sConnection: close\r\nContent-Length: %u\r\n\r\n%s",
                   SERVER_PORT, extra_headers, (unsigned)strlen(json), json);
    if (len <= 0 || (size_t)len >= sizeof req || lwip_send(fd, req, (size_t)len, 0) != len) {
        lwip_close(fd);
        return -1;
    }
    for (;;) {
        ssize_t n = lwip_recv(fd, raw + got, sizeof raw - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof raw - 1)
            break;
    }
    lwip_close(fd);
    raw[got] = 0;
    sep = strstr(raw, "\r\n\r\n");
    if (!sep || (size_t)(sep - raw) >= sizeof a->head || sscanf(raw, "HTTP/1.1 %d", &a->status) != 1)
        return -1;
    memcpy(a->head, raw, (size_t)(sep - raw) + 2);
    a->head[sep - raw + 2] = 0;
    a->body_len = got - (size_t)(sep + 4 - raw);
    memcpy(a->body, sep + 4, a->body_len);
    a->body[a->body_len] = 0;
    if (strstr(a->head, "Transfer-Encoding: chunked") || strstr(a->head, "transfer-encoding: chunked"))
        dechunk(a);
    return 0;
}

static int header_value(const char *head, const char *name, char *out, size_t cap)
{
    const char *p = head;
    size_t nl = strlen(name);
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e;
            while (*v == ' ')
                v++;
            e = strstr(v, "\r\n");
            if (!e || (size_t)(e - v) >= cap)
                return -1;
            memcpy(out, v, (size_t)(e - v));
            out[e - v] = 0;
            return 0;
        }
    }
    return -1;
}

static void client_thread(void *arg)
{
    static struct answer a;
    char sid_header[200];
    (void)arg;

    /* initialize (session era, 2025-03-26) */
    if (http_post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"
                  "\"2025-03-26\",\"capabilities\":{},\"clientInfo\":{\"name\":\"lwip_test\",\"version\":\"1\"}}}",
                  "", &a) != 0) {
        check(0, "initialize: no HTTP answer over lwIP");
        goto done;
    }
    check(a.status == 200, "initialize answered 200 (got %d)", a.status);
    check(strstr(a.body, "\"serverInfo\"") && strstr(a.body, "\"protocolVersion\":\"2025-03-26\""),
          "initialize result has serverInfo and protocolVersion 2025-03-26");
    check(header_value(a.head, "Mcp-Session-Id", session_id, sizeof session_id) == 0 && session_id[0],
          "initialize gave an Mcp-Session-Id");
    snprintf(sid_header, sizeof sid_header, "Mcp-Session-Id: %s\r\n", session_id);

    if (http_post("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", sid_header, &a) == 0)
        check(a.status == 202, "notifications/initialized answered 202 (got %d)", a.status);
    else
        check(0, "notifications/initialized: no answer");

    /* tools/list */
    if (http_post("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}", sid_header, &a) == 0) {
        check(a.status == 200, "tools/list answered 200 (got %d)", a.status);
        check(strstr(a.body, "\"name\":\"get_schedule\"") && strstr(a.body, "\"name\":\"create_booking\"") &&
                  strstr(a.body, "\"inputSchema\""),
              "tools/list lists get_schedule and create_booking with input schemas (%lu bytes)",
              (unsigned long)a.body_len);
    } else {
        check(0, "tools/list: no answer");
    }

    /* tools/call, twice: the API request goes out over lwIP to the responder */
    {
        int round;
        for (round = 1; round <= 2; round++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"tools/call\",\"params\":{\"name\":"
                     "\"get_schedule\",\"arguments\":{\"limit\":5}}}",
                     10 + round);
            if (http_post(body, sid_header, &a) != 0) {
                check(0, "tools/call #%d: no answer", round);
                continue;
            }
            check(a.status == 200, "tools/call #%d answered 200 (got %d)", round, a.status);
            check(strstr(a.body, "lwip-responder schedule") && strstr(a.body, "4242") &&
                      !strstr(a.body, "\"isError\":true"),
                  "tools/call #%d result carries the API answer: %.160s", round, a.body);
        }
    }
done:
    atomic_store(&client_done, 1);
}

/* ------------------------------------------------------------------ */
/* The port functions on their own, including their failure paths       */
/* ------------------------------------------------------------------ */
static void port_checks(void)
{
    struct cm_addr a;
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)a.bytes;
    unsigned char r1[16], r2[16];
    uint64_t t0 = cm_port_now_ms(), t1;
    cm_sock_t s;
    int r;

    r = cm_port_resolve("localhost", 443, &a);
    check(r == 0 && s4->sin_family == AF_INET && s4->sin_addr.s_addr == lwip_htonl(0x7f000001UL) &&
              s4->sin_port == lwip_htons(443),
          "cm_port_resolve(localhost) is 127.0.0.1:443 at once");
#if !LWIP_DNS
    check(cm_port_resolve("api.cal.id", 443, &a) == -1, "without LWIP_DNS a host name fails at once");
#endif
    check(cm_port_random(r1, sizeof r1) == 0 && cm_port_random(r2, sizeof r2) == 0 && memcmp(r1, r2, sizeof r1) != 0,
          "cm_port_random gives fresh bytes");

    /* a connect to a port nobody listens on must end in a clean failure */
    cm_port_resolve("127.0.0.1", 9, &a);
    r = cm_port_connect(&a, &s);
    if (r == 0) {
        struct cm_pollfd pf;
        int n;
        pf.sock = s;
        pf.events = CM_POLL_OUT;
        pf.revents = 0;
        n = cm_port_poll(&pf, 1, 5000);
        check(n == 1 && pf.revents != 0 && cm_port_connect_result(s) == -1,
              "a refused non-blocking connect is reported (revents %d)", pf.revents);
        cm_port_close(s);
    } else {
        check(1, "a refused connect failed at once");
    }
    t1 = cm_port_now_ms();
    check(t1 >= t0 && cm_port_unix_time() > 1600000000, "clocks: monotonic ms and a plausible wall clock");
}

/* ------------------------------------------------------------------ */
static long vm_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    struct cm_config cfg;
    char err[1024], api_url[64];
    uint64_t start;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s CERTDIR\n", argv[0]);
        printf("0 passed, 1 failed\n");
        return 2;
    }
    if (load_credentials(argv[1], err, sizeof err) != 0) {
        check(0, "test credentials: %s (run tests/make_certs.sh)", err);
        goto out;
    }
    check(lwip_up() == 0, "lwIP is up (tcpip thread, loopback netif 127.0.0.1/8)");

    sys_sem_new(&responder_ready, 0);
    sys_thread_new("api", responder_thread, NULL, 0, 0);
    sys_arch_sem_wait(&responder_ready, 10000);
    check(atomic_load(&responder_listening), "HTTPS responder listens on lwIP 127.0.0.1:%d", API_PORT);

    snprintf(api_url, sizeof api_url, "https://127.0.0.1:%d", API_PORT);
    cm_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:8080";
    cfg.upstream = api_url;
    cfg.ca_file = NULL; /* CERTDIR/ca.pem is compiled in (mk/pem2c.py), as on a board without files */
    cfg.log_level = getenv("LWIP_TEST_DEBUG") ? CM_LOG_DEBUG : CM_LOG_WARN;
    if (cm_start(&cfg, 0, err, sizeof err) != 0) {
        check(0, "cm_start on lwIP: %s", err);
        goto out;
    }
    check(1, "cm_start on lwIP: listening on 127.0.0.1:%d", SERVER_PORT);
    port_checks();

    sys_thread_new("client", client_thread, NULL, 0, 0);
    start = cm_port_now_ms();
    while (!atomic_load(&client_done)) {
        if (cm_port_now_ms() - start > DEADLINE_MS) {
            check(0, "the client finished within %d ms", DEADLINE_MS);
            break;
        }
        cm_poll(50);
    }
    check(atomic_load(&api_requests) == 2, "the responder served %d API requests (want 2), last: %s",
          atomic_load(&api_requests), api_last_line);
    check(strncmp(api_last_line, "GET /schedule?limit=5 HTTP/1.1", 30) == 0,
          "the API request line is GET /schedule?limit=5");
    check(atomic_load(&api_auth_ok) == atomic_load(&api_requests) && atomic_load(&api_requests) > 0,
          "every API request carried the client's bearer token");
    printf("info: %d API connection(s) for 2 requests (1 = kept alive), VmRSS %ld kB, static %lu bytes\n",
           atomic_load(&api_connections), vm_rss_kb(), (unsigned long)cm_static_bytes());
    cm_stop();
out:
    printf("%d passed, %d failed\n", passed, failed);
    fflush(stdout);
    /* lwIP's threads never end; leave without waiting for them */
    _Exit(failed ? 1 : 0);
}
