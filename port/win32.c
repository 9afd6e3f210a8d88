/*
 * port/win32.c - sockets (Winsock 2, WSAPoll), clocks, random bytes and name
 * resolution for Windows Vista and later. Builds with mingw-w64 and MSVC;
 * link ws2_32 and bcrypt (and advapi32 for BearSSL's own seeding).
 *
 * Name resolution runs getaddrinfo() on one worker thread (CreateThread), so
 * a slow DNS server never stalls the poll loop; the loop asks again until the
 * answer is there. Results are cached for CM_PORT_DNS_TTL_MS.
 *
 * CA bundle: Windows keeps its roots in the certificate store, not in a PEM
 * file, so there is no system bundle to read. cm_port_default_ca_file()
 * returns "cacert.pem" beside the executable when that file exists, else
 * NULL; then the user must pass --ca-file (or CALID_CA_FILE) with a PEM
 * bundle, and calid_mcp says so at start.
 *
 * Known Winsock limits: WSAPoll on Windows before 10 2004 does not report a
 * refused connect; the upstream connect timeout (CM_UPSTREAM_CONNECT_MS)
 * still ends such an attempt.
 */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0600 /* Vista: WSAPoll, GetTickCount64, inet_pton, SRW locks */
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <bcrypt.h>
#include <fcntl.h>
#include <io.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../calid_mcp.h"

#ifndef CM_PORT_DNS_TTL_MS
#define CM_PORT_DNS_TTL_MS 60000
#endif

#ifdef _MSC_VER
#pragma comment(lib, "ws2_32.lib")
#pragma comment(lib, "bcrypt.lib")
#endif

static int wsa_started;

int cm_port_init(void)
{
    WSADATA wsa;
    if (!wsa_started) {
        if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
            return -1;
        wsa_started = 1;
    }
    /* MCP over stdio is one JSON message per line ending in "\n": keep the C
       runtime from turning it into "\r\n" (or eating "\r" on the way in). */
    _setmode(_fileno(stdin), _O_BINARY);
    _setmode(_fileno(stdout), _O_BINARY);
    return 0;
}

void cm_port_cleanup(void)
{
    if (wsa_started) {
        WSACleanup();
        wsa_started = 0;
    }
}

uint64_t cm_port_now_ms(void) { return (uint64_t)GetTickCount64(); }

int64_t cm_port_unix_time(void)
{
    FILETIME ft;
    ULARGE_INTEGER t;
    GetSystemTimeAsFileTime(&ft); /* 100 ns ticks since 1601-01-01 */
    t.LowPart = ft.dwLowDateTime;
    t.HighPart = ft.dwHighDateTime;
    return (int64_t)(t.QuadPart / 10000000u) - 11644473600LL;
}

int cm_port_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ULONG n = len > 0x10000000u ? 0x10000000u : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, p, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

static int set_nonblocking(SOCKET s)
{
    u_long on = 1;
    return ioctlsocket(s, FIONBIO, &on) == 0 ? 0 : -1;
}

static void set_nodelay(SOCKET s)
{
    BOOL one = TRUE;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
}

/* Numeric address -> sockaddr in out. 0 ok, -1 not numeric. */
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

static const char *wsa_text(int code, char *buf, size_t cap)
{
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, (DWORD)code, 0, buf,
                             (DWORD)cap, NULL);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '.'))
        buf[--n] = 0;
    if (n == 0)
        snprintf(buf, cap, "Winsock error %d", code);
    return buf;
}

cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen)
{
    struct cm_addr a;
    const struct sockaddr *sa = (const struct sockaddr *)a.bytes;
    char why[160];
    BOOL one = TRUE;
    SOCKET s;
    if (numeric_addr(host, port, &a) != 0) {
        snprintf(err, errlen, "listen address '%s' is not a numeric IPv4 or IPv6 address", host);
        return CM_SOCK_INVALID;
    }
    s = socket(sa->sa_family, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET) {
        snprintf(err, errlen, "socket: %s", wsa_text(WSAGetLastError(), why, sizeof why));
        return CM_SOCK_INVALID;
    }
    /* SO_REUSEADDR on Windows would let another program steal the port */
    setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&one, sizeof one);
    if (bind(s, sa, (int)a.len) != 0 || listen(s, SOMAXCONN) != 0 || set_nonblocking(s) != 0) {
        int e = WSAGetLastError();
        snprintf(err, errlen, "cannot listen on %s:%u: %s%s", host, port, wsa_text(e, why, sizeof why),
                 e == WSAEADDRINUSE ? " (address in use)" : "");
        closesocket(s);
        return CM_SOCK_INVALID;
    }
    return (cm_sock_t)s;
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
    struct sockaddr_storage ss;
    int sl = (int)sizeof ss;
    SOCKET s = accept((SOCKET)listener, (struct sockaddr *)&ss, &sl);
    if (s == INVALID_SOCKET)
        return CM_SOCK_INVALID;
    peer_bytes(&ss, peer);
    if (set_nonblocking(s) != 0) {
        closesocket(s);
        return CM_SOCK_INVALID;
    }
    set_nodelay(s);
    return (cm_sock_t)s;
}

int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out)
{
    const struct sockaddr *sa = (const struct sockaddr *)addr->bytes;
    SOCKET s = socket(sa->sa_family, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return -1;
    if (set_nonblocking(s) != 0) {
        closesocket(s);
        return -1;
    }
    set_nodelay(s);
    if (connect(s, sa, (int)addr->len) != 0 && WSAGetLastError() != WSAEWOULDBLOCK) {
        closesocket(s);
        return -1;
    }
    *out = (cm_sock_t)s;
    return 0;
}

int cm_port_connect_result(cm_sock_t s)
{
    int e = 0, l = sizeof e;
    if (getsockopt((SOCKET)s, SOL_SOCKET, SO_ERROR, (char *)&e, &l) != 0 || e != 0)
        return -1;
    return 0;
}

static int chunk(size_t len) { return len > 0x40000000u ? 0x40000000 : (int)len; } /* send/recv take int */

long cm_port_send(cm_sock_t s, const void *buf, size_t len)
{
    int n = send((SOCKET)s, (const char *)buf, chunk(len), 0); /* Winsock raises no SIGPIPE */
    if (n == SOCKET_ERROR)
        return WSAGetLastError() == WSAEWOULDBLOCK ? CM_PORT_AGAIN : -1;
    return (long)n;
}

long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned n)
{
    WSABUF b[16];
    DWORD sent = 0;
    unsigned i;
    if (n > 16)
        n = 16;
    for (i = 0; i < n; i++) {
        b[i].buf = (char *)(uintptr_t)iov[i].p; /* WSASend does not write through it */
        b[i].len = (ULONG)chunk(iov[i].n);
    }
    if (WSASend((SOCKET)s, b, n, &sent, 0, NULL, NULL) == SOCKET_ERROR)
        return WSAGetLastError() == WSAEWOULDBLOCK ? CM_PORT_AGAIN : -1;
    return (long)sent;
}

long cm_port_recv(cm_sock_t s, void *buf, size_t len)
{
    int n = recv((SOCKET)s, (char *)buf, chunk(len), 0);
    if (n == SOCKET_ERROR)
        return WSAGetLastError() == WSAEWOULDBLOCK ? CM_PORT_AGAIN : -1;
    return (long)n;
}

void cm_port_close(cm_sock_t s)
{
    if (s != CM_SOCK_INVALID)
        closesocket((SOCKET)s);
}

int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    WSAPOLLFD pfd[CM_MAX_CONNS + CM_MAX_UPSTREAMS + 4];
    unsigned i;
    int r;
    if (n > sizeof pfd / sizeof pfd[0])
        n = sizeof pfd / sizeof pfd[0];
    if (n == 0) { /* WSAPoll rejects an empty set */
        Sleep(timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
        return 0;
    }
    for (i = 0; i < n; i++) {
        pfd[i].fd = (SOCKET)fds[i].sock;
        /* WSAPoll rejects POLLIN/POLLOUT's priority bits on some versions:
           ask with the "normal data" flags only */
        pfd[i].events = (SHORT)(((fds[i].events & CM_POLL_IN) ? POLLRDNORM : 0) |
                                ((fds[i].events & CM_POLL_OUT) ? POLLWRNORM : 0));
        pfd[i].revents = 0;
    }
    r = WSAPoll(pfd, (ULONG)n, timeout_ms);
    if (r == SOCKET_ERROR)
        r = -1;
    for (i = 0; i < n; i++) {
        short re = 0;
        if (r > 0) {
            if (pfd[i].revents & (POLLRDNORM | POLLRDBAND))
                re |= CM_POLL_IN;
            if (pfd[i].revents & POLLWRNORM)
                re |= CM_POLL_OUT;
            if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL))
                re |= CM_POLL_ERR;
        }
        fds[i].revents = re;
    }
    return r;
}

/* ---- Asynchronous name resolution: one lookup at a time on a worker thread ---- */
static SRWLOCK dns_lock = SRWLOCK_INIT;
static struct {
    int busy;               /* a worker thread is running */
    char host[256];
    unsigned short port;
    int status;             /* 0 ok, -1 failed, CM_PORT_AGAIN running */
    struct cm_addr addr;
    uint64_t done_at;
} dns = { 0, "", 0, -1, { {0}, 0 }, 0 };

static DWORD WINAPI dns_worker(LPVOID arg)
{
    struct addrinfo hints, *res = NULL, *ai, *pick = NULL;
    char host[256], portstr[8];
    struct cm_addr found;
    int status = -1;
    (void)arg;
    AcquireSRWLockExclusive(&dns_lock);
    memcpy(host, dns.host, sizeof host);
    snprintf(portstr, sizeof portstr, "%u", dns.port);
    ReleaseSRWLockExclusive(&dns_lock);

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
    AcquireSRWLockExclusive(&dns_lock);
    dns.addr = found;
    dns.status = status;
    dns.done_at = cm_port_now_ms();
    dns.busy = 0;
    ReleaseSRWLockExclusive(&dns_lock);
    return 0;
}

int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    HANDLE th;
    int r = CM_PORT_AGAIN;
    if (numeric_addr(host, port, out) == 0)
        return 0;
    if (strlen(host) >= sizeof dns.host)
        return -1;
    AcquireSRWLockExclusive(&dns_lock);
    if (strcmp(dns.host, host) == 0 && dns.port == port) {
        if (dns.busy)
            goto out;
        if (dns.status == 0 && cm_port_now_ms() - dns.done_at < CM_PORT_DNS_TTL_MS) {
            *out = dns.addr;
            r = 0;
            goto out;
        }
        if (dns.status == -1 && dns.done_at != 0 && cm_port_now_ms() - dns.done_at < 1000) {
            r = -1; /* report a fresh failure once to every waiting caller, then retry */
            goto out;
        }
    } else if (dns.busy) {
        goto out; /* another name is being looked up; ask again */
    }
    snprintf(dns.host, sizeof dns.host, "%s", host);
    dns.port = port;
    dns.busy = 1;
    dns.status = CM_PORT_AGAIN;
    th = CreateThread(NULL, 64 * 1024, dns_worker, NULL, STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
    if (th == NULL) {
        dns.busy = 0;
        dns.status = -1;
        dns.done_at = cm_port_now_ms();
        r = -1;
    } else {
        CloseHandle(th); /* the thread runs on; nobody waits for it */
    }
out:
    ReleaseSRWLockExclusive(&dns_lock);
    return r;
}

/* The new file gets the default ACL of its folder (the user's profile is
 * private to the user); _S_IREAD | _S_IWRITE keeps it writable. */
int cm_port_create_private_file(const char *path, const void *buf, size_t len)
{
    int fd = _open(path, _O_WRONLY | _O_CREAT | _O_EXCL | _O_BINARY, _S_IREAD | _S_IWRITE);
    int w;
    if (fd < 0)
        return -1;
    w = _write(fd, buf, (unsigned)len);
    if (_close(fd) != 0 || w != (int)len) {
        _unlink(path);
        return -1;
    }
    return 0;
}

const char *cm_port_default_ca_file(void)
{
    static char path[MAX_PATH + 16];
    static int looked;
    if (!looked) {
        DWORD n = GetModuleFileNameA(NULL, path, MAX_PATH);
        char *slash;
        looked = 1;
        path[n < MAX_PATH ? n : 0] = 0;
        slash = strrchr(path, '\\');
        if (slash) {
            strcpy(slash + 1, "cacert.pem");
            if (GetFileAttributesA(path) == INVALID_FILE_ATTRIBUTES)
                path[0] = 0;
        } else {
            path[0] = 0;
        }
    }
    return path[0] ? path : NULL;
}
