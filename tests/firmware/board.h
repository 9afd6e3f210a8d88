/*
 * board.h - what the firmware example's board file (main.c) gives the port
 * (port_lwip_raw.c) and the Ethernet driver (lan9118.c). On a real board each
 * of these becomes that board's own: a timer, the TRNG, the RTC, its MAC.
 */
#ifndef FW_BOARD_H
#define FW_BOARD_H

#include <stddef.h>
#include <stdint.h>

uint64_t fw_board_ms(void);        /* milliseconds since boot, from SysTick */
void fw_board_idle(void);          /* sleep until the next interrupt (at most 1 ms) */
int64_t fw_board_unix_time(void);  /* wall clock, seconds since 1970 */
int fw_board_random(void *buf, size_t len); /* 0 ok, -1 no entropy */

int fw_net_up(void);               /* driver, lwIP and the address: 0 ok */
void fw_net_poll(void);            /* received frames into lwIP */

#endif
