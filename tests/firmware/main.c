/*
 * main.c - calid-mcp as firmware for ARM's MPS2 AN386 board (Cortex-M4,
 * LAN9118 Ethernet), as QEMU's mps2-an386 emulates it. The board part of the
 * example: a millisecond tick, the network brought up, then the calid_mcp
 * command itself (cm_main: the same flags as the binary, parsed from the
 * command line the debugger hands over by semihosting).
 *
 * Semihosting stands in for what a real board has on chip:
 *   - the command line (SYS_GET_CMDLINE, read by picolibc's start code);
 *   - files: the CA bundle given with --ca-file is read from the host;
 *   - the wall clock (SYS_TIME), needed for certificate validity: a real
 *     board uses its RTC, set by NTP or at the factory;
 *   - random bytes from the host's /dev/urandom: a real board MUST use its
 *     hardware TRNG instead (STM32 RNG, ESP32 esp_fill_random); without a
 *     real entropy source TLS keys and session ids are predictable;
 *   - the console: logs go to the host's standard error.
 */
#include "calid_mcp.h"
#include "board.h"
#include "lan9118.h"

#include <stdio.h>
#include <time.h>

#include "lwip/init.h"
#include "lwip/ip4_addr.h"
#include "lwip/netif.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"

/* ---- time: SysTick at 1 kHz ---- */
#define SYST_CSR (*(volatile uint32_t *)0xe000e010u)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014u)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018u)
#define FW_CPU_HZ 25000000u /* the MPS2 FPGA images run the core at 25 MHz */

static volatile uint32_t ticks_lo, ticks_hi;

void arm_systick_isr(void)
{
    if (++ticks_lo == 0)
        ticks_hi++;
}

uint64_t fw_board_ms(void)
{
    uint32_t hi, lo;
    do {
        hi = ticks_hi;
        lo = ticks_lo;
    } while (hi != ticks_hi);
    return (uint64_t)hi << 32 | lo;
}

void fw_board_idle(void) { __asm volatile("wfi"); }

static void systick_start(void)
{
    SYST_RVR = FW_CPU_HZ / 1000 - 1;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt, enable */
}

/* The host's clock once at boot, then the tick: one semihosting call. */
int64_t fw_board_unix_time(void)
{
    static int64_t boot_unix;
    static uint64_t boot_ms;
    if (!boot_unix) {
        boot_unix = (int64_t)time(NULL);
        boot_ms = fw_board_ms();
    }
    return boot_unix + (int64_t)((fw_board_ms() - boot_ms) / 1000);
}

int fw_board_random(void *buf, size_t len)
{
    FILE *f = fopen("/dev/urandom", "rb"); /* the host's, by semihosting */
    size_t got;
    if (!f)
        return -1;
    got = fread(buf, 1, len, f);
    fclose(f);
    return got == len ? 0 : -1;
}

/* lwIP's LWIP_RAND (port numbers, initial sequence numbers): xorshift seeded
 * from the entropy source once. */
uint32_t fw_lwip_rand(void)
{
    static uint32_t x;
    if (!x && (fw_board_random(&x, sizeof x) != 0 || !x))
        x = 2463534242u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

uint32_t sys_now(void) { return (uint32_t)fw_board_ms(); }

/* ---- the network: QEMU user-mode networking's addresses ---- */
#ifndef FW_IP
#define FW_IP "10.0.2.15" /* the guest's address under -nic user */
#endif
#ifndef FW_GATEWAY
#define FW_GATEWAY "10.0.2.2" /* the host (its loopback, seen from the guest) */
#endif

static struct netif eth;
static uintptr_t eth_base = LAN9118_BASE_MPS2;

int fw_net_up(void)
{
    ip4_addr_t ip, mask, gw;
    lwip_init();
    ip4addr_aton(FW_IP, &ip);
    ip4addr_aton("255.255.255.0", &mask);
    ip4addr_aton(FW_GATEWAY, &gw);
    if (!netif_add(&eth, &ip, &mask, &gw, &eth_base, lan9118_netif_init, ethernet_input)) {
        fprintf(stderr, "calid-mcp firmware: no LAN9118 at 0x%08lx\n", (unsigned long)eth_base);
        return -1;
    }
    netif_set_default(&eth);
    netif_set_up(&eth);
    fprintf(stderr, "calid-mcp firmware: network up, %s, MAC %02x:%02x:%02x:%02x:%02x:%02x\n", ip4addr_ntoa(&ip),
            eth.hwaddr[0], eth.hwaddr[1], eth.hwaddr[2], eth.hwaddr[3], eth.hwaddr[4], eth.hwaddr[5]);
    return 0;
}

void fw_net_poll(void) { lan9118_poll(&eth); }

int main(int argc, char **argv)
{
    systick_start();
    /* picolibc's start code names the program "program-name" and passes the
     * whole semihosting command line after it; that line starts with the
     * program's own name (arg=calid_mcp,...), which is not an option. */
    if (argc > 1 && argv[1][0] != '-') {
        argv[1] = argv[0];
        argc--;
        argv++;
    }
    return cm_main(argc, argv);
}
