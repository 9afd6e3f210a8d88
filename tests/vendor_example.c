/*
 * tests/vendor_example.c - how firmware embeds calid-mcp, and a test of it.
 *
 * A product vendors three files - calid_mcp.c, calid_mcp.h and one port
 * (here port/posix.c) - compiles them without CALID_MCP_MAIN, links BearSSL,
 * and keeps its own main loop, giving the server one bounded step per turn:
 *
 *     cc -I. tests/vendor_example.c calid_mcp.c port/posix.c -lbearssl -lpthread
 *
 * The "rest of the firmware" here is a small non-blocking HTTP client, run in
 * the same loop, that plays an MCP client against the server: initialize,
 * tools/list and (when CALID_API_BASE and CALID_CA_FILE name an API to talk
 * to, as tests/ports_check.py arranges with the fake API) a tools/call. Then
 * the server is stopped and started again, as firmware does when its network
 * comes back. Ends with "N passed, N failed".
 */
#include "calid_mcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "calid_vendor_token"
#define STEP_MS 10          /* the loop's tick: cm_poll never waits longer */
#define EXCHANGE_MS 20000   /* one request/answer may take this long */

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

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A free TCP port on 127.0.0.1 (the OS picks; we let it go again at once). */
static unsigned short free_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- The rest of the firmware: one HTTP exchange at a time, never blocking ---- */
enum { X_IDLE, X_CONNECTING, X_SENDING, X_RECEIVING, X_DONE, X_FAILED };

static struct exchange {
    int state;
    int fd;
    char req[4096];
    size_t req_len, sent;
    char resp[262144];
    size_t resp_len;
    uint64_t started;
} x;

static void x_begin(unsigned short port, const char *extra_headers, const char *json)
{
    struct sockaddr_in sa;
    int n;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    n = snprintf(x.req, sizeof x.req,
                 "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: application/json\r\n"
                 "Accept: application/json, text/event-stream\r\nAuthorization: Bearer " TOKEN "\r\n"
                 "%sConnection: close\r\nContent-Length: %u\r\n\r\n%s",
                 port, extra_headers, (unsigned)strlen(json), json);
    x.req_len = n > 0 && (size_t)n < sizeof x.req ? (size_t)n : 0;
    x.sent = x.resp_len = 0;
    x.started = now_ms();
    x.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (x.fd < 0 || x.req_len == 0 || fcntl(x.fd, F_SETFL, O_NONBLOCK) < 0 ||
        (connect(x.fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)) {
        x.state = X_FAILED;
        return;
    }
    x.state = X_CONNECTING;
}

/* One non-blocking step; the server gets its turn in between. */
static void x_step(void)
{
    ssize_t n;
    if (x.state == X_DONE || x.state == X_FAILED || x.state == X_IDLE)
        return;
    if (now_ms() - x.started > EXCHANGE_MS) {
        x.state = X_FAILED;
        close(x.fd);
        return;
    }
    switch (x.state) {
    case X_CONNECTING:
    case X_SENDING:
        n = send(x.fd, x.req + x.sent, x.req_len - x.sent, MSG_NOSIGNAL);
        if (n > 0) {
            x.sent += (size_t)n;
            x.state = x.sent == x.req_len ? X_RECEIVING : X_SENDING;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
            x.state = X_FAILED;
            close(x.fd);
        }
        break;
    case X_RECEIVING:
        n = recv(x.fd, x.resp + x.resp_len, sizeof x.resp - 1 - x.resp_len, 0);
        if (n > 0) {
            x.resp_len += (size_t)n;
            x.resp[x.resp_len] = 0;
            if (x.resp_len == sizeof x.resp - 1) {
                x.state = X_DONE;
                close(x.fd);
            }
        } else if (n == 0) {
            x.state = X_DONE; /* Connection: close - the whole answer is in */
            close(x.fd);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            x.state = X_FAILED;
            close(x.fd);
        }
        break;
    default:
        break;
    }
}

static unsigned long polls; /* cm_poll() calls made by the main loop */

/* The main loop of the firmware, until the current exchange ends. */
static int run_exchange(unsigned short port, const char *extra_headers, const char *json)
{
    x_begin(port, extra_headers, json);
    while (x.state != X_DONE && x.state != X_FAILED) {
        uint64_t t0 = now_ms();
        if (cm_poll(STEP_MS) != 0)
            return -1;
        polls++;
        if (now_ms() - t0 > 1000 + STEP_MS) /* bounded step, with room for a slow CI machine */
            check(0, "cm_poll(%d) returned after %lu ms", STEP_MS, (unsigned long)(now_ms() - t0));
        x_step(); /* ... and the rest of the firmware's work */
    }
    return x.state == X_DONE ? 0 : -1;
}

static int status_of(void)
{
    int st = 0;
    return sscanf(x.resp, "HTTP/1.1 %d", &st) == 1 ? st : 0;
}

static const char *body_of(void)
{
    const char *b = strstr(x.resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static int session_header(char *out, size_t cap)
{
    const char *p = x.resp, *end = strstr(x.resp, "\r\n\r\n");
    while ((p = strstr(p, "\r\n")) != NULL && p < end) {
        p += 2;
        if (strncmp(p, "Mcp-Session-Id:", 15) == 0 || strncmp(p, "mcp-session-id:", 15) == 0) {
            const char *v = p + 15, *e;
            while (*v == ' ')
                v++;
            e = strstr(v, "\r\n");
            if (!e || (size_t)(e - v) + 20 >= cap)
                return -1;
            snprintf(out, cap, "Mcp-Session-Id: %.*s\r\n", (int)(e - v), v);
            return 0;
        }
    }
    return -1;
}

static const char init_json[] =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-03-26\","
    "\"capabilities\":{},\"clientInfo\":{\"name\":\"vendor_example\",\"version\":\"1\"}}}";

int main(void)
{
    struct cm_config cfg;
    char err[512], listen[32], sid[200];
    const char *api = getenv("CALID_API_BASE");
    const char *ca = getenv("CALID_CA_FILE");
    unsigned short port = free_port();
    int round;

    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    cm_config_defaults(&cfg); /* every field has a working default */
    cfg.listen = listen;
    if (api && ca) {
        cfg.upstream = api;
        cfg.ca_file = ca;
    }
    cfg.log_level = CM_LOG_WARN;
    printf("info: the server reserves %lu bytes of static memory\n", (unsigned long)cm_static_bytes());

    for (round = 1; round <= 2; round++) {
        if (cm_start(&cfg, 0, err, sizeof err) != 0) {
            check(0, "cm_start (round %d): %s", round, err);
            break;
        }
        check(1, "cm_start (round %d) on %s", round, listen);

        if (run_exchange(port, "", init_json) != 0) {
            check(0, "initialize: no answer");
            cm_stop();
            break;
        }
        check(status_of() == 200 && strstr(body_of(), "\"serverInfo\""), "initialize answered 200 with serverInfo");
        check(session_header(sid, sizeof sid) == 0, "initialize gave a session id");

        if (round == 1) {
            if (run_exchange(port, sid, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}") == 0)
                check(status_of() == 200 && strstr(body_of(), "\"name\":\"get_schedule\""),
                      "tools/list answered 200 and lists get_schedule");
            else
                check(0, "tools/list: no answer");

            if (api && ca) {
                if (run_exchange(port, sid,
                                 "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":"
                                 "\"get_schedule\",\"arguments\":{\"limit\":1}}}") == 0)
                    check(status_of() == 200 && strstr(body_of(), "\"content\"") && !strstr(body_of(), "\"isError\":true"),
                          "tools/call get_schedule reached the API: %.120s", body_of());
                else
                    check(0, "tools/call: no answer");
            } else {
                printf("info: CALID_API_BASE/CALID_CA_FILE not set: tools/call skipped\n");
            }
        }
        cm_stop(); /* e.g. the network went down; everything is closed */
        check(cm_poll(0) == -1, "cm_poll after cm_stop reports the server is not started");
    }
    printf("info: %lu cm_poll() steps in the firmware's loop\n", polls);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
