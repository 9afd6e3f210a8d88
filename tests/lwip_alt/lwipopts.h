/* Compile-only variants of Debian's lwIP configuration, so `make lwip-check`
 * builds the branches of port/lwip.c that Debian's liblwip does not take.
 * Never linked. Pick one with -D:
 *   CM_ALT_SELECT_DNS  lwip_select() instead of lwip_poll(), LWIP_DNS resolver thread
 *   CM_ALT_OWN_TYPES   lwIP's own sockaddr types (with sin_len), as in firmware */
#include "/usr/include/lwip/lwipopts.h"

#ifdef CM_ALT_SELECT_DNS
#undef LWIP_SOCKET_SELECT
#define LWIP_SOCKET_SELECT 1
#define LWIP_SOCKET_POLL 0
#define LWIP_DNS 1
#endif

#ifdef CM_ALT_OWN_TYPES
#undef LWIP_SOCKET_EXTERNAL_HEADERS
#define LWIP_SOCKET_EXTERNAL_HEADERS 0
#undef LWIP_SOCKET_OFFSET
#define LWIP_SOCKET_OFFSET 0
#endif
