# libFuzzer targets (clang + Debian's libclang-rt-14-dev), issue #6.
#   make fuzz         builds build/fuzz/fuzz_http, fuzz_mcp, fuzz_upstream
#   make fuzz-smoke   replays tests/fuzz/corpus/* and tests/fuzz/regressions/*,
#                     then fuzzes each target for FUZZ_SECONDS (default 30);
#                     the last line is "N passed, N failed"
# Long runs: see tests/fuzz/README.md.

FUZZ_CC      ?= clang
FUZZ_CFLAGS  ?= -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_BUILD   ?= build/fuzz
FUZZ_SECONDS ?= 30
FUZZ_TARGETS  = fuzz_http fuzz_mcp fuzz_upstream
FUZZ_BINS     = $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-smoke

fuzz: $(FUZZ_BINS)

# fuzz_mcp brings its own port layer (a fake one); the others link the real one.
# Its API answer window is small, so that answers of a few KiB stream to the
# client (chunked, close-delimited, stdio in pieces); requests keep the
# default buffer.
FUZZ_MCP_DEFS ?= -DCM_UPSTREAM_BODY_BYTES=2048
$(FUZZ_BUILD)/fuzz_mcp: tests/fuzz/fuzz_mcp.c $(SRC) mk/fuzz.mk
	@mkdir -p $(FUZZ_BUILD)
	$(FUZZ_CC) $(WARN) $(DEFS) $(FUZZ_MCP_DEFS) $(FUZZ_CFLAGS) -I. -o $@ tests/fuzz/fuzz_mcp.c $(LIBS)

$(FUZZ_BUILD)/fuzz_http: tests/fuzz/fuzz_http.c $(SRC) port/posix.c
	@mkdir -p $(FUZZ_BUILD)
	$(FUZZ_CC) $(WARN) $(DEFS) $(FUZZ_CFLAGS) -I. -o $@ tests/fuzz/fuzz_http.c port/posix.c $(LIBS)

$(FUZZ_BUILD)/fuzz_upstream: tests/fuzz/fuzz_upstream.c $(SRC) port/posix.c
	@mkdir -p $(FUZZ_BUILD)
	$(FUZZ_CC) $(WARN) $(DEFS) $(FUZZ_CFLAGS) -I. -o $@ tests/fuzz/fuzz_upstream.c port/posix.c $(LIBS)

fuzz-smoke: $(FUZZ_BINS)
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/smoke.sh $(FUZZ_TARGETS)
