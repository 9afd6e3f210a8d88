/*
 * port/lwip.c - sockets, clocks, random bytes and name resolution over lwIP's
 * BSD-style socket API (the lwip_* functions), for firmware and for lwIP's
 * unix port (Debian's liblwip-dev).
 *
 * What the host must do first
 *   Bring the stack up before cm_start(): tcpip_init(), at least one netif,
 *   a default route. This file never starts or configures lwIP; it only opens
 *   sockets on it. cm_poll() may run on any thread that may use lwIP sockets
 *   (NO_SYS=0 is required: the socket API needs an OS).
 *
 * What lwipopts.h must provide
 *   LWIP_SOCKET=1, LWIP_TCP=1, and LWIP_SOCKET_POLL=1 (lwip_poll) or else
 *   LWIP_SOCKET_SELECT=1 (then cm_port_poll() uses lwip_select). Enough
 *   sockets for CM_MAX_CONNS + CM_MAX_UPSTREAMS + 1 (MEMP_NUM_NETCONN, unless
 *   the port has LWIP_SOCKET_OPEN_COUNT). LWIP_DNS=1 for host names (below).
 *
 * What the integrator supplies outside a unix-like host
 *   On a unix host (the lwIP unix port) random bytes come from /dev/urandom
 *   and wall-clock time from time(). Elsewhere - or with
 *   -DCM_LWIP_EXTERNAL_HOOKS - define these two functions yourself:
 *       int cm_lwip_random(void *buf, size_t len);   0 ok, -1 no secure source
 *                                                    (a hardware TRNG, seeded DRBG)
 *       int64_t cm_lwip_unix_time(void);             seconds since 1970 (RTC/SNTP),
 *                                                    or 0 if unknown (TLS then fails
 *                                                    certificate validity checks)
 *   The CA bundle is read with fopen() by the core; define CM_LWIP_CA_FILE
 *   to the path on your file system (default: Debian's bundle on unix hosts,
 *   none elsewhere, so cm_config.ca_file must then be set). Without a file
 *   system, compile the anchors in: mk/pem2c.py and -DCM_TRUST_ANCHORS_H.
 *
 * Name resolution
 *   Numeric IPv4/IPv6 addresses and "localhost" are answered at once. With
 *   LWIP_DNS=1 other names go to lwip_getaddrinfo(), which blocks, on one
 *   resolver thread started with sys_thread_new() on first use, so the poll
 *   loop never waits; results are cached for CM_PORT_DNS_TTL_MS. Without
 *   LWIP_DNS (Debian's liblwip is built that way) a name fails at once:
 *   configure the upstream by address then (TLS still checks the host name
 *   in the certificate against that address).
 */
#include "../calid_mcp.h"

#include <stdio.h>
#include <string.h>

#include "lwip/opt.h"
#include "lwip/def.h"
#include "lwip/sockets.h"
#include "lwip/sys.h"
#include "lwip/inet.h"
#if LWIP_DNS
#include "lwip/netdb.h"
#endif

#if !LWIP_SOCKET
#error "port/lwip.c needs LWIP_SOCKET=1 in lwipopts.h"
#endif
#if NO_SYS
#error "port/lwip.c needs NO_SYS=0 (lwIP's socket API needs an OS)"
#endif
#if !LWIP_SOCKET_POLL && !LWIP_SOCKET_SELECT
#error "port/lwip.c needs LWIP_SOCKET_POLL=1 or LWIP_SOCKET_SELECT=1"
#endif

#ifndef CM_PORT_DNS_TTL_MS
#define CM_PORT_DNS_TTL_MS 60000   /* how long a resolved name is reused */
#endif
#ifndef CM_LWIP_LISTEN_BACKLOG
#define CM_LWIP_LISTEN_BACKLOG 8   /* small: every pending connection holds a pcb */
#endif
#ifndef CM_LWIP_DNS_STACK
#define CM_LWIP_DNS_STACK 4096     /* resolver thread stack, where the port honours it */
#endif
#ifndef CM_LWIP_DNS_PRIO
#define CM_LWIP_DNS_PRIO 1         /* resolver thread priority, port specific */
#endif

#if (defined(__unix__) || defined(__APPLE__)) && !defined(CM_LWIP_EXTERNAL_HOOKS)
#define CM_LWIP_UNIX_HOST 1
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#else
int cm_lwip_random(void *buf, size_t len);
int64_t cm_lwip_unix_time(void);
#endif

#ifndef CM_LWIP_CA_FILE
#ifdef CM_LWIP_UNIX_HOST
#define CM_LWIP_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#else
#define CM_LWIP_CA_FILE NULL
#endif
#endif

/* lwIP's own sockaddr types carry a length byte; external (libc) ones may not. */
#if !LWIP_SOCKET_EXTERNAL_HEADERS
#define SET_SIN_LEN(sa, n) ((sa)->sin_len = (u8_t)(n))
#define SET_SIN6_LEN(sa, n) ((sa)->sin6_len = (u8_t)(n))
#else
#define SET_SIN_LEN(sa, n) ((void)(sa), (void)(n))
#define SET_SIN6_LEN(sa, n) ((void)(sa), (void)(n))
#endif

int cm_port_init(void) { return 0; } /* the host has brought lwIP up */

void cm_port_cleanup(void) {}

/* sys_now() is a 32-bit millisecond counter that wraps after ~49 days; widen
   it. Only the server thread calls this, so plain statics suffice. */
uint64_t cm_port_now_ms(void)
{
    static uint32_t last;
    static uint64_t high;
    uint32_t now = (uint32_t)sys_now();
    if (now < last)
        high += (uint64_t)1 << 32;
    last = now;
    return high | now;
}

#ifdef CM_LWIP_UNIX_HOST
int64_t cm_port_unix_time(void) { return (int64_t)time(NULL); }

int cm_port_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    return 0;
}
#else
int64_t cm_port_unix_time(void) { return cm_lwip_unix_time(); }
int cm_port_random(void *buf, size_t len) { return cm_lwip_random(buf, len); }
#endif

static int set_nonblocking(int fd)
{
    /* lwip_ioctl(FIONBIO) is the one switch every lwIP build has; lwip_fcntl
       depends on which O_NONBLOCK value the stack was compiled with. */
    u32_t on = 1;
    return lwip_ioctl(fd, (long)FIONBIO, &on);
}

static void set_nodelay(int fd)
{
    int one = 1;
    lwip_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Numeric address -> sockaddr in out. 0 ok, -1 not numeric. */
static int numeric_addr(const char *host, unsigned short port, struct cm_addr *out)
{
    struct sockaddr_in s4;
    memset(out, 0, sizeof *out);
    memset(&s4, 0, sizeof s4);
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1"; /* no resolver needed for the one name every host knows */
    if (lwip_inet_pton(AF_INET, host, &s4.sin_addr) == 1) {
        SET_SIN_LEN(&s4, sizeof s4);
        s4.sin_family = AF_INET;
        s4.sin_port = lwip_htons(port);
        memcpy(out->bytes, &s4, sizeof s4);
        out->len = sizeof s4;
        return 0;
    }
#if LWIP_IPV6
    {
        struct sockaddr_in6 s6;
        memset(&s6, 0, sizeof s6);
        if (lwip_inet_pton(AF_INET6, host, &s6.sin6_addr) == 1) {
            SET_SIN6_LEN(&s6, sizeof s6);
            s6.sin6_family = AF_INET6;
            s6.sin6_port = lwip_htons(port);
            memcpy(out->bytes, &s6, sizeof s6);
            out->len = sizeof s6;
            return 0;
        }
    }
#endif
    return -1;
}

cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen)
{
    struct cm_addr a;
    const struct sockaddr *sa = (const struct sockaddr *)a.bytes;
    int fd;
    if (strcmp(host, "localhost") == 0 || numeric_addr(host, port, &a) != 0) {
        snprintf(err, errlen, "listen address '%s' is not a numeric IPv4%s address", host,
                 LWIP_IPV6 ? " or IPv6" : "");
        return CM_SOCK_INVALID;
    }
    fd = lwip_socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "lwip_socket failed (errno %d)", errno);
        return CM_SOCK_INVALID;
    }
#if SO_REUSE
    {
        int one = 1;
        lwip_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
#endif
    if (lwip_bind(fd, sa, (socklen_t)a.len) < 0 || lwip_listen(fd, CM_LWIP_LISTEN_BACKLOG) < 0 ||
        set_nonblocking(fd) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u (lwIP errno %d%s)", host, port, errno,
                 errno == EADDRINUSE ? ": address in use" : "");
        lwip_close(fd);
        return CM_SOCK_INVALID;
    }
    return fd;
}

/* The peer address of an accepted socket as 16 bytes (see calid_mcp.h). */
static void peer_bytes(const struct sockaddr_storage *ss, unsigned char peer[16])
{
    memset(peer, 0, 16);
    if (ss->ss_family == AF_INET) {
        peer[10] = peer[11] = 0xff;
        memcpy(peer + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
#if LWIP_IPV6
    else if (ss->ss_family == AF_INET6) {
        memcpy(peer, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
#endif
}

cm_sock_t cm_port_accept(cm_sock_t listener, unsigned char peer[16])
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = lwip_accept((int)listener, (struct sockaddr *)&ss, &sl);
    if (fd < 0)
        return CM_SOCK_INVALID;
    peer_bytes(&ss, peer);
    if (set_nonblocking(fd) < 0) {
        lwip_close(fd);
        return CM_SOCK_INVALID;
    }
    set_nodelay(fd);
    return fd;
}

int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out)
{
    const struct sockaddr *sa = (const struct sockaddr *)addr->bytes;
    int fd = lwip_socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (set_nonblocking(fd) < 0) {
        lwip_close(fd);
        return -1;
    }
    set_nodelay(fd);
    if (lwip_connect(fd, sa, (socklen_t)addr->len) < 0 && errno != EINPROGRESS) {
        lwip_close(fd);
        return -1;
    }
    *out = fd;
    return 0;
}

int cm_port_connect_result(cm_sock_t s)
{
    int e = 0;
    socklen_t l = sizeof e;
    if (lwip_getsockopt((int)s, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e != 0)
        return -1;
    return 0;
}

static int would_block(void) { return errno == EAGAIN || errno == EWOULDBLOCK; }

long cm_port_send(cm_sock_t s, const void *buf, size_t len)
{
    ssize_t n = lwip_send((int)s, buf, len, 0); /* lwIP raises no SIGPIPE */
    if (n < 0)
        return would_block() ? CM_PORT_AGAIN : -1;
    return (long)n;
}

long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned n)
{
    struct iovec v[16];
    ssize_t w;
    unsigned i;
    if (n > 16)
        n = 16;
    for (i = 0; i < n; i++) {
        v[i].iov_base = (void *)(uintptr_t)iov[i].p; /* writev does not write through it */
        v[i].iov_len = iov[i].n;
    }
    w = lwip_writev((int)s, v, (int)n);
    if (w < 0)
        return would_block() ? CM_PORT_AGAIN : -1;
    return (long)w;
}

long cm_port_recv(cm_sock_t s, void *buf, size_t len)
{
    ssize_t n = lwip_recv((int)s, buf, len, 0);
    if (n < 0)
        return would_block() ? CM_PORT_AGAIN : -1;
    return (long)n;
}

void cm_port_close(cm_sock_t s)
{
    if (s != CM_SOCK_INVALID)
        lwip_close((int)s);
}

#if LWIP_SOCKET_POLL
int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    struct pollfd pfd[CM_MAX_CONNS + CM_MAX_UPSTREAMS + 4];
    unsigned i;
    int r;
    if (n > sizeof pfd / sizeof pfd[0])
        n = sizeof pfd / sizeof pfd[0];
    if (n == 0) { /* nothing to watch (stdio mode): just wait */
        if (timeout_ms > 0)
            sys_msleep((u32_t)timeout_ms);
        return 0;
    }
    for (i = 0; i < n; i++) {
        pfd[i].fd = (int)fds[i].sock;
        pfd[i].events = (short)(((fds[i].events & CM_POLL_IN) ? POLLIN : 0) |
                                ((fds[i].events & CM_POLL_OUT) ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    r = lwip_poll(pfd, (nfds_t)n, timeout_ms);
    for (i = 0; i < n; i++) {
        short re = 0;
        if (r > 0) {
            if (pfd[i].revents & POLLIN)
                re |= CM_POLL_IN;
            if (pfd[i].revents & POLLOUT)
                re |= CM_POLL_OUT;
            if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL))
                re |= CM_POLL_ERR;
        }
        fds[i].revents = re;
    }
    return r;
}
#else /* LWIP_SOCKET_SELECT */
int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    fd_set rd, wr, ex;
    struct timeval tv;
    unsigned i;
    int r, maxfd = -1, ready = 0;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    for (i = 0; i < n; i++) {
        int fd = (int)fds[i].sock;
        if (fds[i].events & CM_POLL_IN)
            FD_SET(fd, &rd);
        if (fds[i].events & CM_POLL_OUT)
            FD_SET(fd, &wr);
        FD_SET(fd, &ex);
        if (fd > maxfd)
            maxfd = fd;
    }
    if (maxfd < 0) {
        if (timeout_ms > 0)
            sys_msleep((u32_t)timeout_ms);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    r = lwip_select(maxfd + 1, &rd, &wr, &ex, timeout_ms < 0 ? NULL : &tv);
    for (i = 0; i < n; i++) {
        int fd = (int)fds[i].sock;
        short re = 0;
        if (r > 0) {
            if (FD_ISSET(fd, &rd))
                re |= CM_POLL_IN;
            if (FD_ISSET(fd, &wr))
                re |= CM_POLL_OUT;
            if (FD_ISSET(fd, &ex))
                re |= CM_POLL_ERR;
        }
        fds[i].revents = re;
        ready += re != 0;
    }
    return r < 0 ? -1 : ready;
}
#endif

#if LWIP_DNS
/* ---- Name resolution: one resolver thread, one lookup at a time ---- */
static struct {
    sys_mutex_t lock;
    sys_sem_t wake;          /* signalled when a lookup is queued */
    int started;             /* the thread and the two objects exist */
    int busy;                /* a lookup is queued or running */
    char host[256];
    unsigned short port;
    int status;              /* 0 ok, -1 failed, CM_PORT_AGAIN running */
    struct cm_addr addr;
    uint64_t done_at;
} dns;

static void dns_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct addrinfo hints, *res = NULL, *ai, *pick = NULL;
        char host[256], portstr[8];
        struct cm_addr found;
        int status = -1;
        sys_arch_sem_wait(&dns.wake, 0);
        sys_mutex_lock(&dns.lock);
        memcpy(host, dns.host, sizeof host);
        snprintf(portstr, sizeof portstr, "%u", dns.port);
        sys_mutex_unlock(&dns.lock);

        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        memset(&found, 0, sizeof found);
        if (lwip_getaddrinfo(host, portstr, &hints, &res) == 0) {
            for (ai = res; ai; ai = ai->ai_next)
                if (ai->ai_family == AF_INET) {
                    pick = ai;
                    break;
                }
            if (!pick)
                pick = res;
            if (pick && pick->ai_addrlen <= sizeof found.bytes) {
                memcpy(found.bytes, pick->ai_addr, pick->ai_addrlen);
                found.len = (unsigned)pick->ai_addrlen;
                status = 0;
            }
            lwip_freeaddrinfo(res);
        }
        sys_mutex_lock(&dns.lock);
        dns.addr = found;
        dns.status = status;
        dns.done_at = 0; /* stamped by the loop thread, the only caller of cm_port_now_ms() */
        dns.busy = 0;
        sys_mutex_unlock(&dns.lock);
    }
}

static int dns_start(void)
{
    if (dns.started)
        return 0;
    if (sys_mutex_new(&dns.lock) != ERR_OK)
        return -1;
    if (sys_sem_new(&dns.wake, 0) != ERR_OK) {
        sys_mutex_free(&dns.lock);
        return -1;
    }
    sys_thread_new("calid_dns", dns_thread, NULL, CM_LWIP_DNS_STACK, CM_LWIP_DNS_PRIO);
    dns.started = 1;
    return 0;
}

int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    uint64_t now = cm_port_now_ms();
    int r = CM_PORT_AGAIN;
    if (numeric_addr(host, port, out) == 0)
        return 0;
    if (strlen(host) >= sizeof dns.host || dns_start() != 0)
        return -1;
    sys_mutex_lock(&dns.lock);
    if (strcmp(dns.host, host) == 0 && dns.port == port) {
        if (dns.busy)
            goto out;
        if (dns.done_at == 0)
            dns.done_at = now ? now : 1; /* first look at a fresh answer */
        if (dns.status == 0 && now - dns.done_at < CM_PORT_DNS_TTL_MS) {
            *out = dns.addr;
            r = 0;
            goto out;
        }
        if (dns.status == -1 && now - dns.done_at < 1000) {
            r = -1; /* report a fresh failure to every waiting caller, then retry */
            goto out;
        }
    } else if (dns.busy) {
        goto out; /* another name is being looked up; ask again */
    }
    snprintf(dns.host, sizeof dns.host, "%s", host);
    dns.port = port;
    dns.busy = 1;
    dns.status = CM_PORT_AGAIN;
    sys_sem_signal(&dns.wake);
out:
    sys_mutex_unlock(&dns.lock);
    return r;
}
#else
int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    return numeric_addr(host, port, out); /* no LWIP_DNS: addresses and "localhost" only */
}
#endif

const char *cm_port_default_ca_file(void) { return CM_LWIP_CA_FILE; }

/* The host's file system, as for the CA bundle ("x": fails if it exists).
 * A firmware build without one keeps its secret in its own storage and
 * passes no --secret-file. */
int cm_port_create_private_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wbx");
    size_t w;
    if (!f)
        return -1;
#ifdef CM_LWIP_UNIX_HOST
    chmod(path, 0600);
#endif
    w = fwrite(buf, 1, len, f);
    if (fclose(f) != 0 || w != len) {
        remove(path);
        return -1;
    }
    return 0;
}
