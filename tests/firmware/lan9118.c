/*
 * lan9118.c - SMSC LAN9118 Ethernet for lwIP, polled.
 *
 * The controller has FIFOs instead of descriptor rings, behind 32-bit
 * registers: a frame is sent by writing two command words and the data into
 * the TX data FIFO; a received frame is announced by a word in the RX status
 * FIFO (its length) and read from the RX data FIFO. MAC settings sit behind
 * an indirect window (MAC_CSR_CMD / MAC_CSR_DATA). Register names and bits
 * follow the LAN9118 data sheet.
 */
#include "lan9118.h"

#include <string.h>

#include "lwip/etharp.h"
#include "lwip/pbuf.h"
#include "netif/ethernet.h"

/* ---- registers (byte offsets) ---- */
#define RX_DATA_FIFO 0x00
#define TX_DATA_FIFO 0x20
#define RX_STATUS_FIFO 0x40
#define INT_EN 0x5c
#define BYTE_TEST 0x64
#define RX_CFG 0x6c
#define TX_CFG 0x70
#define HW_CFG 0x74
#define RX_FIFO_INF 0x7c
#define TX_FIFO_INF 0x80
#define PMT_CTRL 0x84
#define MAC_CSR_CMD 0xa4
#define MAC_CSR_DATA 0xa8

#define BYTE_TEST_VALUE 0x87654321u
#define HW_CFG_SRST (1u << 0)
#define PMT_CTRL_READY (1u << 0)
#define TX_CFG_TX_ON (1u << 1)
#define TX_CFG_TXSAO (1u << 2)         /* TX status may overrun: we do not need it */
#define CSR_BUSY (1u << 31)
#define CSR_READ (1u << 30)
#define MAC_CR 1
#define MAC_ADDRH 2
#define MAC_ADDRL 3
#define MAC_CR_RXEN (1u << 2)
#define MAC_CR_TXEN (1u << 3)
#define MAC_CR_FDPX (1u << 20)
#define TXA_FIRST (1u << 13)
#define TXA_LAST (1u << 12)
#define RXS_ERROR (1u << 15)
#define RXS_LENGTH(w) (((w) >> 16) & 0x3fff) /* frame + 4 bytes of CRC */
#define FIFO_INF_USED(w) (((w) >> 16) & 0xff) /* status words waiting */

#define FRAME_MAX 1518
#define SPIN_MAX 100000 /* polls of a busy bit before giving up */

static volatile uint32_t *reg(struct netif *n, unsigned off)
{
    return (volatile uint32_t *)(*(uintptr_t *)n->state + off);
}

static int csr_wait(struct netif *n)
{
    int i;
    for (i = 0; i < SPIN_MAX; i++)
        if (!(*reg(n, MAC_CSR_CMD) & CSR_BUSY))
            return 0;
    return -1;
}

static uint32_t mac_read(struct netif *n, unsigned r)
{
    *reg(n, MAC_CSR_CMD) = CSR_BUSY | CSR_READ | r;
    csr_wait(n);
    return *reg(n, MAC_CSR_DATA);
}

static void mac_write(struct netif *n, unsigned r, uint32_t v)
{
    *reg(n, MAC_CSR_DATA) = v;
    *reg(n, MAC_CSR_CMD) = CSR_BUSY | r;
    csr_wait(n);
}

/* One frame out: the chain is copied into a word-aligned buffer first, since
 * the FIFO takes whole 32-bit words. */
static err_t lan9118_output(struct netif *n, struct pbuf *p)
{
    static uint32_t frame[(FRAME_MAX + 3) / 4];
    uint16_t len = p->tot_len, i;
    if (len > FRAME_MAX)
        return ERR_BUF;
    if (((*reg(n, TX_FIFO_INF)) & 0xffff) < (uint32_t)len + 8)
        return ERR_MEM; /* no room in the TX FIFO right now */
    pbuf_copy_partial(p, frame, len, 0);
    *reg(n, TX_DATA_FIFO) = TXA_FIRST | TXA_LAST | len;
    *reg(n, TX_DATA_FIFO) = ((uint32_t)len << 16) | len; /* the tag is the length */
    for (i = 0; i < (len + 3) / 4; i++)
        *reg(n, TX_DATA_FIFO) = frame[i];
    return ERR_OK;
}

int lan9118_poll(struct netif *n)
{
    static uint32_t frame[(FRAME_MAX + 4 + 3) / 4];
    int delivered = 0;
    while (FIFO_INF_USED(*reg(n, RX_FIFO_INF))) {
        uint32_t status = *reg(n, RX_STATUS_FIFO);
        uint32_t len = RXS_LENGTH(status), words = (len + 3) / 4, i;
        struct pbuf *p;
        if (words > sizeof frame / 4) { /* cannot be: drain it word by word */
            for (i = 0; i < words; i++)
                (void)*reg(n, RX_DATA_FIFO);
            continue;
        }
        for (i = 0; i < words; i++)
            frame[i] = *reg(n, RX_DATA_FIFO);
        if ((status & RXS_ERROR) || len < 4 + 14)
            continue;
        p = pbuf_alloc(PBUF_RAW, (u16_t)(len - 4), PBUF_POOL);
        if (!p)
            continue; /* out of pbufs: the frame is dropped, TCP sends it again */
        pbuf_take(p, frame, (u16_t)(len - 4));
        if (n->input(p, n) != ERR_OK)
            pbuf_free(p);
        delivered++;
    }
    return delivered;
}

err_t lan9118_netif_init(struct netif *n)
{
    uint32_t lo, hi;
    int i;
    if (*reg(n, BYTE_TEST) != BYTE_TEST_VALUE)
        return ERR_IF; /* nothing (or something else) at that address */
    *reg(n, HW_CFG) = HW_CFG_SRST;
    for (i = 0; i < SPIN_MAX && ((*reg(n, HW_CFG) & HW_CFG_SRST) || !(*reg(n, PMT_CTRL) & PMT_CTRL_READY)); i++)
        ;
    if (i == SPIN_MAX)
        return ERR_IF;
    *reg(n, INT_EN) = 0; /* polled */
    *reg(n, RX_CFG) = 0; /* frames start at the first word */
    *reg(n, TX_CFG) = TX_CFG_TX_ON | TX_CFG_TXSAO;
    mac_write(n, MAC_CR, MAC_CR_RXEN | MAC_CR_TXEN | MAC_CR_FDPX);
    /* the address the board (or QEMU's -nic) gave the controller */
    lo = mac_read(n, MAC_ADDRL);
    hi = mac_read(n, MAC_ADDRH);
    n->hwaddr[0] = (u8_t)lo;
    n->hwaddr[1] = (u8_t)(lo >> 8);
    n->hwaddr[2] = (u8_t)(lo >> 16);
    n->hwaddr[3] = (u8_t)(lo >> 24);
    n->hwaddr[4] = (u8_t)hi;
    n->hwaddr[5] = (u8_t)(hi >> 8);
    n->hwaddr_len = ETH_HWADDR_LEN;
    n->mtu = 1500;
    n->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_LINK_UP;
    n->name[0] = 'e';
    n->name[1] = 'n';
    n->output = etharp_output;
    n->linkoutput = lan9118_output;
    return ERR_OK;
}
