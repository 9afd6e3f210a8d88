/* arch/cc.h - lwIP's compiler and platform glue for the firmware example
 * (GCC, picolibc, little-endian Cortex-M). */
#ifndef FW_ARCH_CC_H
#define FW_ARCH_CC_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LWIP_PLATFORM_DIAG(x) do { printf x; } while (0)
#define LWIP_PLATFORM_ASSERT(x) do { fprintf(stderr, "lwIP assertion: %s (%s:%d)\n", x, __FILE__, __LINE__); abort(); } while (0)

uint32_t fw_lwip_rand(void);
#define LWIP_RAND() fw_lwip_rand()

#endif
