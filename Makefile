# calid-mcp: make / make test / make static / make clean
# SANITIZE=1 builds everything with AddressSanitizer + UndefinedBehaviorSanitizer.

CC      ?= cc
CFLAGS  ?= -O2
WARN     = -std=c11 -Wall -Wextra -Wpedantic -Werror
DEFS     = -D_POSIX_C_SOURCE=200809L
LIBS     = -lbearssl -lpthread
BUILD   ?= build

ifeq ($(SANITIZE),1)
CC      = clang
CFLAGS  = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
BUILD   = build/asan
endif

SRC = calid_mcp.c calid_mcp.h

.PHONY: all test unit clean static install

all: calid_mcp

calid_mcp: $(SRC) port/posix.c
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -DCALID_MCP_MAIN -o $@ calid_mcp.c port/posix.c $(LIBS)

$(BUILD)/calid_mcp: $(SRC) port/posix.c
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -DCALID_MCP_MAIN -o $@ calid_mcp.c port/posix.c $(LIBS)

# The unit tests compile the system bundle in (mk/pem2c.py) and check the
# table against the loader reading the same file.
UNIT_ANCHORS_PEM ?= /etc/ssl/certs/ca-certificates.crt

$(BUILD)/anchors-unit.h: mk/pem2c.py $(UNIT_ANCHORS_PEM)
	@mkdir -p $(BUILD)
	python3 mk/pem2c.py $(UNIT_ANCHORS_PEM) $@

$(BUILD)/unit_tests: tests/unit_tests.c $(SRC) port/posix.c $(BUILD)/anchors-unit.h
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -I. -DCM_TRUST_ANCHORS_H='"$(abspath $(BUILD))/anchors-unit.h"' \
		-o $@ tests/unit_tests.c port/posix.c $(LIBS)

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

# Every test suite; the last line is "N passed, N failed".
test: $(BUILD)/calid_mcp $(BUILD)/unit_tests
	BUILD=$(BUILD) SANITIZE=$(SANITIZE) bash tests/run.sh

# One fully static, stripped binary (musl); cross builds in mk/ports.mk.
static: static-x86_64
	cp build/static/calid_mcp-x86_64 calid_mcp-static

PREFIX ?= /usr/local
install: calid_mcp
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 -s calid_mcp $(DESTDIR)$(PREFIX)/bin/calid_mcp

clean:
	rm -rf build calid_mcp calid_mcp-static

# Further targets (ports, fuzzing, benchmarks) live in mk/*.mk.
-include mk/*.mk
