/*
 * lan9118.h - an lwIP driver for the SMSC LAN9118 Ethernet controller (the
 * one ARM's MPS2 boards carry, and QEMU's mps2-an386 emulates), in polled
 * mode: no interrupt is needed, the main loop calls lan9118_poll().
 */
#ifndef FW_LAN9118_H
#define FW_LAN9118_H

#include "lwip/err.h"
#include "lwip/netif.h"

#define LAN9118_BASE_MPS2 0x40200000u /* where MPS2 boards map it */

/* netif_add() init function; netif->state must point at the base address
 * (a uintptr_t holding it). */
err_t lan9118_netif_init(struct netif *netif);

/* Moves every frame the controller has received into netif->input. Returns
 * the number of frames delivered. */
int lan9118_poll(struct netif *netif);

#endif
