# make bench: calid-mcp against the official TypeScript SDK server (issue #7).
# make bench-profile: callgrind profiles of the tools/list and tools/call paths.
#
# Knobs: BENCH_SECONDS (per cell, default 5), BENCH_ROUNDS (default 3),
# BENCH_SOAK (seconds of the RSS soak per server, default 20; 0 skips it),
# BENCH_CALID (another calid_mcp binary to measure, for before/after).
# The benchmark prints numbers and never fails on time.

BENCH_SECONDS ?= 5
BENCH_ROUNDS  ?= 3
BENCH_SOAK    ?= 20
# The bench binary is the normal build with room for the 64-client cells
# (the default CM_MAX_CONNS of 16 answers the 17th connection with 503), all
# from one loopback address (by default an address holds half the table).
# -g only adds symbols for the profiler; the size row strips a copy.
BENCH_CFLAGS  ?= -O2 -g -DCM_MAX_CONNS=72 -DCM_MAX_CONNS_PER_ADDR=72
BENCH_WARN     = -std=c11 -Wall -Wextra -Wpedantic
BENCH_DIR      = $(BUILD)/bench
BENCH_CALID   ?= $(BENCH_DIR)/calid_mcp

.PHONY: bench bench-tools bench-profile

$(BENCH_DIR)/calid_mcp: $(SRC) port/posix.c mk/bench.mk
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_WARN) $(DEFS) $(BENCH_CFLAGS) -DCALID_MCP_MAIN -o $@ calid_mcp.c port/posix.c $(LIBS)

$(BENCH_DIR)/loadgen: tests/bench/loadgen.c
	@mkdir -p $(BENCH_DIR)
	$(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -D_GNU_SOURCE -O2 -o $@ tests/bench/loadgen.c -lbearssl

tests/bench/node_modules/.package-lock.json: tests/bench/package.json tests/bench/package-lock.json
	cd tests/bench && npm ci --no-audit --no-fund

bench-tools: $(BENCH_DIR)/calid_mcp $(BENCH_DIR)/loadgen tests/bench/node_modules/.package-lock.json

bench: bench-tools
	python3 tests/bench/bench.py --calid $(BENCH_CALID) --loadgen $(BENCH_DIR)/loadgen \
		--out $(BENCH_DIR) --seconds $(BENCH_SECONDS) --rounds $(BENCH_ROUNDS) --soak $(BENCH_SOAK) \
		--cflags "$(BENCH_CFLAGS)"

bench-profile: $(BENCH_DIR)/calid_mcp $(BENCH_DIR)/loadgen
	bash tests/bench/profile.sh $(BENCH_DIR)
