/*
 * port_lwip_raw.c - calid-mcp's port interface over lwIP's raw TCP API, for
 * bare-metal firmware (NO_SYS=1: no threads, no sockets layer, no OS).
 *
 * Conventions
 *   - One loop owns everything. cm_port_poll() is where the network moves: it
 *     polls the Ethernet driver (frames in), runs lwIP's timers, and then
 *     reports which of our sockets are ready. It returns as soon as one is,
 *     or when the timeout ends; between polls it sleeps with WFI until the
 *     next millisecond tick, so an idle board does not spin.
 *   - A "socket" is a slot of a static table: a tcp_pcb plus what lwIP's
 *     callbacks have delivered (received pbufs, a FIN, an error). cm_sock_t is
 *     the slot's index. No memory is allocated here; lwIP's own pools
 *     (lwipopts.h) hold the pbufs and pcbs.
 *   - A connection the listener accepts gets its slot at once, inside lwIP's
 *     accept callback, so data that arrives before cm_port_accept() is kept.
 *     With no free slot, lwIP aborts the connection (RST): the client sees a
 *     refused connection, the server goes on.
 *   - Data is copied into lwIP's send buffer (TCP_WRITE_FLAG_COPY): the
 *     server's buffers are free again as soon as send returns.
 *
 * What the board provides (tests/firmware/board.h): fw_board_ms() (a
 * monotonic millisecond counter), fw_board_idle() (sleep until the next
 * interrupt), fw_net_poll() (move received frames into lwIP), and the wall
 * clock and random bytes.
 */
#include "calid_mcp.h"
#include "board.h"

#include <stdio.h>
#include <string.h>

#include "lwip/init.h"
#include "lwip/ip_addr.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"

#ifndef FW_SOCKS
#define FW_SOCKS (CM_MAX_CONNS + CM_MAX_UPSTREAMS + 2) /* the listener, clients, API connections, spare */
#endif
#ifndef FW_LISTEN_BACKLOG
#define FW_LISTEN_BACKLOG 4 /* accepted by lwIP, not yet taken by the server */
#endif

struct fw_sock {
    unsigned char used;
    unsigned char listening;
    unsigned char connected;   /* connect finished, or accepted */
    unsigned char peer_closed; /* FIN received */
    unsigned char failed;      /* lwIP reported an error; the pcb is gone */
    unsigned char accepted;    /* taken by cm_port_accept (or a client socket) */
    struct tcp_pcb *pcb;
    struct pbuf *rx;           /* received, not yet read */
    int parent;                /* the listener of a not yet accepted connection */
};

static struct fw_sock socks[FW_SOCKS];

static int sock_alloc(void)
{
    int i;
    for (i = 0; i < FW_SOCKS; i++)
        if (!socks[i].used) {
            memset(&socks[i], 0, sizeof socks[i]);
            socks[i].used = 1;
            socks[i].parent = -1;
            return i;
        }
    return -1;
}

static struct fw_sock *sock_of(cm_sock_t s)
{
    return s >= 0 && s < FW_SOCKS && socks[s].used ? &socks[s] : NULL;
}

/* ---- lwIP callbacks: they only record what happened ---- */

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct fw_sock *k = arg;
    (void)pcb;
    if (!k) { /* closed by us meanwhile */
        if (p)
            pbuf_free(p);
        return ERR_OK;
    }
    if (!p || err != ERR_OK) {
        k->peer_closed = 1;
        if (p)
            pbuf_free(p);
        return ERR_OK;
    }
    if (k->rx)
        pbuf_cat(k->rx, p);
    else
        k->rx = p;
    return ERR_OK;
}

static void on_err(void *arg, err_t err)
{
    struct fw_sock *k = arg;
    (void)err;
    if (k) {
        k->pcb = NULL; /* lwIP has freed it */
        k->failed = 1;
    }
}

static err_t on_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
    struct fw_sock *k = arg;
    (void)pcb;
    if (k)
        k->connected = err == ERR_OK;
    return ERR_OK;
}

static void attach(int i, struct tcp_pcb *pcb)
{
    socks[i].pcb = pcb;
    tcp_arg(pcb, &socks[i]);
    tcp_recv(pcb, on_recv);
    tcp_err(pcb, on_err);
    tcp_nagle_disable(pcb); /* answers go out whole, at once */
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    struct fw_sock *l = arg;
    int i, waiting = 0;
    if (err != ERR_OK || !pcb || !l)
        return ERR_VAL;
    for (i = 0; i < FW_SOCKS; i++)
        waiting += socks[i].used && !socks[i].accepted && socks[i].parent == (int)(l - socks);
    if (waiting >= FW_LISTEN_BACKLOG || (i = sock_alloc()) < 0)
        return ERR_MEM; /* lwIP aborts the connection */
    socks[i].parent = (int)(l - socks);
    socks[i].connected = 1;
    attach(i, pcb);
    return ERR_OK;
}

/* ---- the port interface ---- */

int cm_port_init(void) { return fw_net_up() == 0 ? 0 : -1; }
void cm_port_cleanup(void) {}
uint64_t cm_port_now_ms(void) { return fw_board_ms(); }
int64_t cm_port_unix_time(void) { return fw_board_unix_time(); }
int cm_port_random(void *buf, size_t len) { return fw_board_random(buf, len); }
const char *cm_port_default_ca_file(void) { return NULL; /* give --ca-file */ }

/* No file system of ours to make it in: a board keeps its secret in its own
 * storage (flash) and passes an existing file, or no --secret-file. */
int cm_port_create_private_file(const char *path, const void *buf, size_t len)
{
    (void)path;
    (void)buf;
    (void)len;
    return -1;
}

static int parse_ipv4(const char *host, ip_addr_t *out)
{
    if (strcmp(host, "0.0.0.0") == 0) {
        ip_addr_set_any(0, out);
        return 0;
    }
    return ipaddr_aton(host, out) ? 0 : -1;
}

/* An address is the IPv4 address (4 bytes, network order) and the port. */
int cm_port_resolve(const char *host, unsigned short port, struct cm_addr *out)
{
    ip_addr_t a;
    if (parse_ipv4(host, &a) != 0)
        return -1; /* no DNS on this board: the upstream URL names an address */
    memcpy(out->bytes, &ip_2_ip4(&a)->addr, 4);
    out->bytes[4] = (unsigned char)(port >> 8);
    out->bytes[5] = (unsigned char)port;
    out->len = 6;
    return 0;
}

cm_sock_t cm_port_listen(const char *host, unsigned short port, char *err, size_t errlen)
{
    ip_addr_t a;
    struct tcp_pcb *pcb, *lpcb;
    int i;
    if (parse_ipv4(host, &a) != 0) {
        snprintf(err, errlen, "listen address '%s' is not a numeric IPv4 address", host);
        return CM_SOCK_INVALID;
    }
    i = sock_alloc();
    pcb = i < 0 ? NULL : tcp_new_ip_type(IPADDR_TYPE_V4);
    if (!pcb || tcp_bind(pcb, &a, port) != ERR_OK) {
        snprintf(err, errlen, "cannot listen on %s:%u", host, port);
        if (pcb)
            tcp_close(pcb);
        if (i >= 0)
            socks[i].used = 0;
        return CM_SOCK_INVALID;
    }
    lpcb = tcp_listen_with_backlog(pcb, FW_LISTEN_BACKLOG);
    if (!lpcb) {
        snprintf(err, errlen, "cannot listen on %s:%u (no memory for a listening pcb)", host, port);
        tcp_close(pcb);
        socks[i].used = 0;
        return CM_SOCK_INVALID;
    }
    socks[i].listening = 1;
    socks[i].accepted = 1;
    socks[i].pcb = lpcb;
    tcp_arg(lpcb, &socks[i]);
    tcp_accept(lpcb, on_accept);
    return i;
}

cm_sock_t cm_port_accept(cm_sock_t listener, unsigned char peer[16])
{
    int i;
    for (i = 0; i < FW_SOCKS; i++)
        if (socks[i].used && !socks[i].accepted && socks[i].parent == (int)listener) {
            socks[i].accepted = 1;
            memset(peer, 0, 16);
            if (socks[i].pcb && IP_IS_V4(&socks[i].pcb->remote_ip)) { /* as ::ffff:a.b.c.d */
                u32_t a = ip4_addr_get_u32(ip_2_ip4(&socks[i].pcb->remote_ip)); /* network order */
                peer[10] = peer[11] = 0xff;
                memcpy(peer + 12, &a, 4);
            }
            return i;
        }
    return CM_SOCK_INVALID;
}

int cm_port_connect(const struct cm_addr *addr, cm_sock_t *out)
{
    ip_addr_t a;
    struct tcp_pcb *pcb;
    int i;
    if (addr->len != 6)
        return -1;
    IP_ADDR4(&a, addr->bytes[0], addr->bytes[1], addr->bytes[2], addr->bytes[3]);
    i = sock_alloc();
    if (i < 0)
        return -1;
    pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
    if (!pcb) {
        socks[i].used = 0;
        return -1;
    }
    socks[i].accepted = 1;
    attach(i, pcb);
    if (tcp_connect(pcb, &a, (u16_t)(addr->bytes[4] << 8 | addr->bytes[5]), on_connected) != ERR_OK) {
        cm_port_close(i);
        return -1;
    }
    *out = i;
    return 0;
}

int cm_port_connect_result(cm_sock_t s)
{
    struct fw_sock *k = sock_of(s);
    return k && k->connected && !k->failed ? 0 : -1;
}

/* Queues up to len bytes; the caller sends the rest later. */
static long queue_bytes(struct fw_sock *k, const void *buf, size_t len, int more)
{
    u16_t room;
    if (!k->pcb)
        return -1;
    room = tcp_sndbuf(k->pcb);
    if (tcp_sndqueuelen(k->pcb) >= TCP_SND_QUEUELEN)
        room = 0;
    if (len > room) {
        len = room;
        more = 0;
    }
    if (len == 0)
        return CM_PORT_AGAIN;
    if (tcp_write(k->pcb, buf, (u16_t)len, TCP_WRITE_FLAG_COPY | (more ? TCP_WRITE_FLAG_MORE : 0)) != ERR_OK)
        return CM_PORT_AGAIN; /* out of segments for now */
    return (long)len;
}

long cm_port_sendv(cm_sock_t s, const struct cm_iovec *iov, unsigned n)
{
    struct fw_sock *k = sock_of(s);
    long total = 0;
    unsigned i;
    if (!k || k->failed || !k->connected)
        return -1;
    for (i = 0; i < n; i++) {
        long r = iov[i].n ? queue_bytes(k, iov[i].p, iov[i].n, i + 1 < n) : 0;
        if (r < 0) {
            if (total == 0)
                return r;
            break;
        }
        total += r;
        if ((size_t)r < iov[i].n)
            break;
    }
    if (total > 0)
        tcp_output(k->pcb);
    return total > 0 ? total : (n ? CM_PORT_AGAIN : 0);
}

long cm_port_send(cm_sock_t s, const void *buf, size_t len)
{
    struct cm_iovec one;
    one.p = buf;
    one.n = len;
    return cm_port_sendv(s, &one, 1);
}

long cm_port_recv(cm_sock_t s, void *buf, size_t len)
{
    struct fw_sock *k = sock_of(s);
    u16_t n;
    if (!k)
        return -1;
    if (!k->rx) {
        if (k->peer_closed)
            return 0;
        return k->failed ? -1 : CM_PORT_AGAIN;
    }
    if (len > 0xffff)
        len = 0xffff;
    n = pbuf_copy_partial(k->rx, buf, (u16_t)len, 0);
    k->rx = pbuf_free_header(k->rx, n);
    if (k->pcb)
        tcp_recved(k->pcb, n); /* open the window again */
    return n;
}

void cm_port_close(cm_sock_t s)
{
    struct fw_sock *k = sock_of(s);
    int i;
    if (!k)
        return;
    if (k->listening) /* connections it accepted but nobody took */
        for (i = 0; i < FW_SOCKS; i++)
            if (socks[i].used && !socks[i].accepted && socks[i].parent == (int)s)
                cm_port_close(i);
    if (k->pcb) {
        tcp_arg(k->pcb, NULL);
        if (!k->listening) {
            tcp_recv(k->pcb, NULL);
            tcp_err(k->pcb, NULL);
        }
        if (tcp_close(k->pcb) != ERR_OK)
            tcp_abort(k->pcb);
    }
    if (k->rx)
        pbuf_free(k->rx);
    memset(k, 0, sizeof *k);
}

static short ready_events(const struct fw_sock *k)
{
    short re = 0;
    int i;
    if (k->listening) {
        for (i = 0; i < FW_SOCKS; i++)
            if (socks[i].used && !socks[i].accepted && socks[i].parent == (int)(k - socks))
                return CM_POLL_IN;
        return 0;
    }
    if (k->rx || k->peer_closed || k->failed)
        re |= CM_POLL_IN;
    if (k->failed)
        re |= CM_POLL_OUT | CM_POLL_ERR; /* a failed connect is reported as writable */
    else if (k->connected && k->pcb && tcp_sndbuf(k->pcb) > 0 && tcp_sndqueuelen(k->pcb) < TCP_SND_QUEUELEN)
        re |= CM_POLL_OUT;
    return re;
}

int cm_port_poll(struct cm_pollfd *fds, unsigned n, int timeout_ms)
{
    uint64_t deadline = fw_board_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        unsigned i;
        int ready = 0;
        fw_net_poll();
        sys_check_timeouts();
        for (i = 0; i < n; i++) {
            struct fw_sock *k = sock_of(fds[i].sock);
            short re = k ? ready_events(k) : CM_POLL_ERR;
            fds[i].revents = (short)(re & (fds[i].events | CM_POLL_ERR));
            if (k && (re & CM_POLL_IN) && k->failed)
                fds[i].revents |= CM_POLL_IN; /* read it to see the error */
            ready += fds[i].revents != 0;
        }
        if (ready || fw_board_ms() >= deadline)
            return ready;
        fw_board_idle();
    }
}
