# mk/tiny.mk - the tiny profile: calid-mcp in an ESP32-class budget.
#
#   make tiny        calid_mcp-tiny: the tiny limits, the system CA bundle compiled in
#   make tiny-test   the protocol, tool and lwIP suites at the tiny profile
#
# The limits (README, "Memory"): 4 connections with 1 KiB of their own and
# one shared 16 KiB buffer for larger requests, 12 KiB bodies, 2 KiB answer
# text, 1 API connection with 12 KiB requests and answers, no HTTPS listener,
# no OAuth sign-in, no per-address share (a board behind NAT sees one
# address), trust anchors compiled in (const: flash on a
# microcontroller). --version prints the total and the goal: at most 128 KiB
# of static memory. The firmware (mk/firmware.mk) uses the same limits.

TINY_SIZES  = -DCM_MAX_CONNS=4 -DCM_MAX_CONNS_PER_ADDR=4 -DCM_OAUTH=0 -DCM_CONN_IN_BYTES=1024 -DCM_BODY_POOL=1 -DCM_MAX_HEADER_BYTES=4096 \
              -DCM_MAX_HEADERS=24 -DCM_MAX_BODY_BYTES=12288 -DCM_OUT_BYTES=2048 -DCM_STAGE_BYTES=256 \
              -DCM_JSON_TOKENS=224 -DCM_MAX_ENDED_SESSIONS=8 -DCM_MAX_SESSION_LEVELS=8 -DCM_MAX_UPSTREAMS=1 -DCM_UPSTREAM_REQ_BYTES=12288 \
              -DCM_UPSTREAM_BODY_BYTES=12288 -DCM_TRUST_ARENA_BYTES=2048 -DCM_MAX_TRUST_ANCHORS=4 \
              -DCM_URL_BYTES=2048 -DCM_ARG_BYTES=2048 -DCM_STDIO_OUT_BYTES=4096 \
              -DCM_SLUG_CACHE_ENTRIES=2 -DCM_SLUG_CACHE_BYTES=512
TINY_LIMITS = -DCM_PROFILE='"tiny"' -DCM_STATIC_BUDGET=131072 $(TINY_SIZES) -DCM_TLS_CONNS=0
# The CAs calid_mcp-tiny trusts without --ca-file (a small --ca-file still fits the arena)
TINY_ANCHORS_PEM ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: tiny tiny-test tiny-test-lwip tiny-flags

tiny: calid_mcp-tiny

$(BUILD)/anchors-tiny.h: mk/pem2c.py $(TINY_ANCHORS_PEM)
	@mkdir -p $(BUILD)
	python3 mk/pem2c.py $(TINY_ANCHORS_PEM) $@

calid_mcp-tiny $(BUILD)/calid_mcp-tiny: $(SRC) port/posix.c $(BUILD)/anchors-tiny.h mk/tiny.mk
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) $(TINY_LIMITS) -DCM_TRUST_ANCHORS_H='"$(abspath $(BUILD))/anchors-tiny.h"' \
		-DCALID_MCP_MAIN -o $@ calid_mcp.c port/posix.c $(LIBS)
	@./$@ --version | sed -n '2,3p'

# The lwIP test at the tiny limits, its CA compiled in as in mk/ports.mk
$(BUILD)/lwip_test-tiny: tests/lwip_test.c port/lwip.c $(SRC) $(BUILD)/anchors-lwip.h mk/tiny.mk
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -I. $(LWIP_CFLAGS) $(TINY_LIMITS) \
		-DCM_TRUST_ANCHORS_H='"$(abspath $(BUILD))/anchors-lwip.h"' \
		-o $@ calid_mcp.c port/lwip.c tests/lwip_test.c $(LWIP_LIBS) -lbearssl -lpthread

tiny-test-lwip: $(BUILD)/lwip_test-tiny
	@certs=$${CALID_TEST_CERTS:-$(XB)/certs}; bash tests/make_certs.sh $$certs && $(BUILD)/lwip_test-tiny $$certs

# The suites tests/run.sh runs at the tiny profile, one after the other
tiny-test: $(BUILD)/calid_mcp-tiny $(BUILD)/lwip_test-tiny
	CALID_MCP_BIN=$(abspath $(BUILD))/calid_mcp-tiny python3 tests/test_server.py
	CALID_MCP_BIN=$(abspath $(BUILD))/calid_mcp-tiny CALID_TEST_CFLAGS="$(TINY_SIZES) -DCM_TLS_CONNS=0" python3 tests/test_tools.py
	$(MAKE) -s tiny-test-lwip

# The limits alone, for test builds of the profile (tests/run.sh)
tiny-flags:
	@echo '$(TINY_SIZES) -DCM_TLS_CONNS=0'
