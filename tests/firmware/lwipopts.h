/* lwipopts.h - lwIP for the firmware example: no OS (NO_SYS), the raw TCP
 * API only, IPv4 over Ethernet with a static address. Sizes fit a few
 * MCP clients and one HTTPS connection to the API. */
#ifndef FW_LWIPOPTS_H
#define FW_LWIPOPTS_H

#define NO_SYS 1                 /* one loop, no threads */
#define SYS_LIGHTWEIGHT_PROT 0   /* nothing in lwIP runs from an interrupt */
#define LWIP_SOCKET 0
#define LWIP_NETCONN 0
#define LWIP_IPV4 1
#define LWIP_IPV6 0
#define LWIP_ARP 1
#define LWIP_ETHERNET 1
#define LWIP_ICMP 1              /* ping answers, for a person debugging */
#define LWIP_UDP 0
#define LWIP_DHCP 0
#define LWIP_DNS 0               /* the API base URL names an address */
#define LWIP_TCP 1
#define LWIP_STATS 0
#define LWIP_NETIF_LOOPBACK 0

#define MEM_ALIGNMENT 4
#define MEM_SIZE (24 * 1024)     /* heap for queued TCP data (TCP_WRITE_FLAG_COPY) */
#define MEMP_NUM_PBUF 16
#define MEMP_NUM_TCP_PCB 10      /* clients + API connections + closing ones */
#define MEMP_NUM_TCP_PCB_LISTEN 1
#define MEMP_NUM_TCP_SEG 48
#define PBUF_POOL_SIZE 24        /* received frames waiting to be read */
#define PBUF_POOL_BUFSIZE 1536

#define TCP_MSS 1460
#define TCP_WND (4 * TCP_MSS)
#define TCP_SND_BUF (4 * TCP_MSS)
#define TCP_SND_QUEUELEN (4 * TCP_SND_BUF / TCP_MSS)
#define TCP_LISTEN_BACKLOG 1
#define LWIP_TCP_KEEPALIVE 0

#define LWIP_CHECKSUM_ON_COPY 1
#define LWIP_NETIF_STATUS_CALLBACK 0
#define LWIP_NETIF_LINK_CALLBACK 0

#endif
