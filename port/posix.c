/*
 * port/posix.c - sockets (poll), clocks, random bytes and name resolution for
 * Linux, the BSDs, macOS and OpenWrt.
 *
 * Name resolution runs getaddrinfo() on one background thread so that a slow
 * DNS server never stalls the poll loop; the loop asks again until the answer
 * is there. Results are cached for CM_PORT_DNS_TTL_MS.
 */
#define _GNU_SOURCE
#include "../calid_mcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef CM_PORT_DNS_TTL_MS
#define CM_PORT_DNS_TTL_MS 60000
#endif

int cm_port_init(void)
{
    signal(SIGPIPE, SIG_IGN); /* a peer that hangs up must not kill the server */
    return 0;
}

void cm_port_cleanup(void) {}

uint64_t cm_port_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t cm_port_unix_time(void) { return (int64_t)time(NULL); }

int cm_port_random(void *buf, size_t len)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    unsigned char *p = buf;
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
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

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
}

cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1;
    memset(&ss, 0, sizeof ss);
    if (strchr(host, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            goto bad_addr;
        sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            goto bad_addr;
        sl = sizeof *s4;
    }
    fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return CM_SOCK_INVALID;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0 || set_nonblocking(fd) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(errno));
        close(fd);
        return CM_SOCK_INVALID;
    }
    return fd;
bad_addr:
    snprintf(err, errlen, "listen address '%s' is not a numeric IPv4 or IPv6 address", host);
    return CM_SOCK_INVALID;
}

/* The peer address of an accepted socket as 16 bytes (see calid_mcp.h). */
static void peer_bytes(const struct sockaddr_storage *ss, unsigned char peer[16])
{
    memset(peer, 0, 16);
    if (ss->ss_family == AF_INET) {
        peer[10] = peer[11] = 0xff;
        memcpy(peer + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        memcpy(peer, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
}

cm_sock_t cm_port_accept(cm_sock_t listener, unsigned char peer[16])
{
    int one = 1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept((int)listener, (struct sockaddr *)&ss, &sl);
    if (fd < 0)
        return CM_SOCK_INVALID;
    peer_bytes(&ss, peer);
    if (set_nonblocking(fd) < 0) {
        close(fd);
        return CM_SOCK_INVALID;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out)
{
    int one = 1;
    const struct sockaddr *sa = (const struct sockaddr *)addr->bytes;
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (set_nonblocking(fd) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, sa, addr->len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    *out = fd;
    return 0;
}

int cm_port_connect_result(cm_sock_t s)
{
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt((int)s, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e != 0)
        return -1;
    return 0;
}

long cm_port_send(cm_sock_t s, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = send((int)s, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? CM_PORT_AGAIN : -1;
    return (long)n;
}

long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned n)
{
    struct iovec v[64];
    struct msghdr mh;
    ssize_t w;
    unsigned i;
    if (n > 64)
        n = 64;
    for (i = 0; i < n; i++) {
        v[i].iov_base = (void *)(uintptr_t)iov[i].p; /* sendmsg does not write through it */
        v[i].iov_len = iov[i].n;
    }
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = v;
    mh.msg_iovlen = n;
    do
        w = sendmsg((int)s, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? CM_PORT_AGAIN : -1;
    return (long)w;
}

long cm_port_recv(cm_sock_t s, void *buf, size_t len)
{
    ssize_t n;
    do
        n = recv((int)s, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? CM_PORT_AGAIN : -1;
    return (long)n;
}

void cm_port_close(cm_sock_t s)
{
    if (s != CM_SOCK_INVALID)
        close((int)s);
}

int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    struct pollfd pfd[CM_MAX_CONNS + CM_MAX_UPSTREAMS + 4];
    unsigned i;
    int r;
    if (n > sizeof pfd / sizeof pfd[0])
        n = sizeof pfd / sizeof pfd[0];
    for (i = 0; i < n; i++) {
        pfd[i].fd = (int)fds[i].sock;
        pfd[i].events = (short)(((fds[i].events & CM_POLL_IN) ? POLLIN : 0) |
                                ((fds[i].events & CM_POLL_OUT) ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    r = poll(pfd, n, timeout_ms);
    if (r < 0 && errno == EINTR)
        r = 0; /* a signal: return at once so the caller sees a stop request */
    for (i = 0; i < n; i++) {
        short re = 0;
        if (pfd[i].revents & POLLIN)
            re |= CM_POLL_IN;
        if (pfd[i].revents & POLLOUT)
            re |= CM_POLL_OUT;
        if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL))
            re |= CM_POLL_ERR;
        fds[i].revents = re;
    }
    return r;
}

/* ---- Asynchronous name resolution: one lookup at a time on a worker thread ---- */
static struct {
    pthread_mutex_t lock;
    int busy;               /* a worker thread is running */
    char host[256];
    unsigned short port;
    int status;             /* 0 ok, -1 failed, CM_PORT_AGAIN running */
    struct cm_addr addr;
    uint64_t done_at;
} dns = { PTHREAD_MUTEX_INITIALIZER, 0, "", 0, -1, { {0}, 0 }, 0 };

static void *dns_worker(void *arg)
{
    struct addrinfo hints, *res = NULL, *ai, *pick = NULL;
    char host[256], portstr[8];
    struct cm_addr found;
    int status = -1;
    (void)arg;
    pthread_mutex_lock(&dns.lock);
    memcpy(host, dns.host, sizeof host);
    snprintf(portstr, sizeof portstr, "%u", dns.port);
    pthread_mutex_unlock(&dns.lock);

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    memset(&found, 0, sizeof found);
    if (getaddrinfo(host, portstr, &hints, &res) == 0) {
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
        freeaddrinfo(res);
    }
    pthread_mutex_lock(&dns.lock);
    dns.addr = found;
    dns.status = status;
    dns.done_at = cm_port_now_ms();
    dns.busy = 0;
    pthread_mutex_unlock(&dns.lock);
    return NULL;
}

static int numeric_addr(const char *host, unsigned short port, struct cm_addr *out)
{
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;
    memset(out, 0, sizeof *out);
    memset(&s4, 0, sizeof s4);
    memset(&s6, 0, sizeof s6);
    if (inet_pton(AF_INET, host, &s4.sin_addr) == 1) {
        s4.sin_family = AF_INET;
        s4.sin_port = htons(port);
        memcpy(out->bytes, &s4, sizeof s4);
        out->len = sizeof s4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6.sin6_addr) == 1) {
        s6.sin6_family = AF_INET6;
        s6.sin6_port = htons(port);
        memcpy(out->bytes, &s6, sizeof s6);
        out->len = sizeof s6;
        return 0;
    }
    return -1;
}

int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    int r;
    pthread_t th;
    pthread_attr_t attr;
    if (numeric_addr(host, port, out) == 0)
        return 0;
    if (strlen(host) >= sizeof dns.host)
        return -1;
    pthread_mutex_lock(&dns.lock);
    if (strcmp(dns.host, host) == 0 && dns.port == port) {
        if (dns.busy) {
            pthread_mutex_unlock(&dns.lock);
            return CM_PORT_AGAIN;
        }
        if (dns.status == 0 && cm_port_now_ms() - dns.done_at < CM_PORT_DNS_TTL_MS) {
            *out = dns.addr;
            pthread_mutex_unlock(&dns.lock);
            return 0;
        }
        if (dns.status == -1 && dns.done_at != 0 && cm_port_now_ms() - dns.done_at < 1000) {
            /* report a fresh failure once to every waiting caller, then retry */
            pthread_mutex_unlock(&dns.lock);
            return -1;
        }
    } else if (dns.busy) {
        pthread_mutex_unlock(&dns.lock);
        return CM_PORT_AGAIN; /* another name is being looked up; ask again */
    }
    snprintf(dns.host, sizeof dns.host, "%s", host);
    dns.port = port;
    dns.busy = 1;
    dns.status = CM_PORT_AGAIN;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&th, &attr, dns_worker, NULL);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        dns.busy = 0;
        dns.status = -1;
        pthread_mutex_unlock(&dns.lock);
        return -1;
    }
    pthread_mutex_unlock(&dns.lock);
    return CM_PORT_AGAIN;
}

int cm_port_create_private_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    long w;
    if (fd < 0)
        return -1;
    w = (long)write(fd, buf, len);
    if (close(fd) != 0 || w != (long)len) {
        unlink(path);
        return -1;
    }
    return 0;
}

const char *cm_port_default_ca_file(void)
{
    static const char *const candidates[] = {
        "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine, OpenWrt */
        "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
        "/etc/ssl/cert.pem",                  /* macOS, BSDs */
    };
    size_t i;
    for (i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0)
            return candidates[i];
    return candidates[0];
}
