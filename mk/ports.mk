# mk/ports.mk - the lwIP, Windows and static (musl) ports, the vendoring
# example, and their tests. Included by the top Makefile.
#
#   make lwip            build/…/lwip_test: calid-mcp on lwIP sockets, in-process
#   make vendor-example  build/…/vendor_example: calid_mcp.c + port/posix.c, no main of ours
#   make windows         build/windows/calid_mcp.exe (mingw-w64, BearSSL from Debian's source)
#   make static-x86_64   build/static/calid_mcp-x86_64   (musl, static, stripped)
#   make static-mipsel   build/static/calid_mcp-mipsel   (OpenWrt-class routers)
#   make static-aarch64  build/static/calid_mcp-aarch64  (Raspberry Pi-class boards)
#   make static-sizes    where the static x86-64 binary's bytes go (parts, largest symbols)
#   make ports-test      every port's test; each suite ends "N passed, N failed", then the total
#   make ports-test-lwip | ports-test-vendor | ports-test-windows | ports-test-static-{x86_64,mipsel,aarch64}
#
# Cross builds need BearSSL for each target: Debian's source package is
# fetched once with apt-get under a private state directory (mk/fetch-debian.sh),
# and built per target with the cross compiler into build/ports/TARGET/libbearssl.a
# (mk/build-bearssl.sh). musl for mipsel/aarch64 comes from Debian's musl-dev
# packages of those architectures, extracted into build/ports/sysroot-ARCH.
# Everything is cached in build/ports; `make ports-clean` forgets it.
# Host packages: see tests/setup.sh (liblwip-dev, musl-tools, gcc-mingw-w64-x86-64,
# wine, gcc-mipsel-linux-gnu, gcc-aarch64-linux-gnu, qemu-user-static).

XB        := build
XW        := $(XB)/ports
# No unwind tables (C without exceptions: only debuggers read them, and
# they were 7% of the binary). Code and constants stay in separate pages
# (-z separate-code, the linker's default on x86-64): constants are not
# executable; -Wl,-z,noseparate-code in PORTS_LD would save about 8 KB.
PORTS_OPT  = -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables
PORTS_LD   = -Wl,--gc-sections
WIN_LD     = -Wl,--gc-sections # PE's linker takes no -z options
# No -fdata-sections for PE: ld then files zero-filled .bss.* as initialised
# data and the .exe grows by the whole static reservation (~2.9 MB).
WIN_OPT    = -Os -ffunction-sections
BEARSSL    = $(XW)/src/bearssl
XINC       = $(XW)/inc
FETCH      = sh mk/fetch-debian.sh $(XW)/apt
LWIP_CFLAGS := $(shell pkg-config --cflags lwip 2>/dev/null || echo -I/usr/include/lwip)
LWIP_LIBS   := $(shell pkg-config --libs lwip 2>/dev/null || echo -llwip)
MINGW      = x86_64-w64-mingw32-
WINE      ?= wine

.PHONY: FORCE lwip lwip-check vendor-example windows static-x86_64 static-mipsel static-aarch64 static-all \
        ports-test ports-test-lwip ports-test-vendor ports-test-windows ports-test-static-x86_64 \
        ports-test-static-mipsel ports-test-static-aarch64 ports-sizes static-sizes ports-clean

# ---------------------------------------------------------------- lwIP
lwip: $(BUILD)/lwip_test lwip-check

# The test's CA is compiled in (mk/pem2c.py), as a board without a file
# system would have it: the test gives no ca_file.
LWIP_TEST_CERTS = $(or $(CALID_TEST_CERTS),$(XB)/certs)

$(BUILD)/anchors-lwip.h: mk/pem2c.py tests/make_certs.sh $(wildcard $(LWIP_TEST_CERTS)/ca.pem)
	@mkdir -p $(BUILD)
	bash tests/make_certs.sh $(LWIP_TEST_CERTS)
	python3 mk/pem2c.py $(LWIP_TEST_CERTS)/ca.pem $@

$(BUILD)/lwip_test: tests/lwip_test.c port/lwip.c $(SRC) $(BUILD)/anchors-lwip.h
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -I. $(LWIP_CFLAGS) -DCM_TRUST_ANCHORS_H='"$(abspath $(BUILD))/anchors-lwip.h"' \
		-o $@ calid_mcp.c port/lwip.c tests/lwip_test.c $(LWIP_LIBS) -lbearssl -lpthread

# The branches Debian's liblwip does not take (lwip_select, the LWIP_DNS
# resolver thread, lwIP's own sockaddr types, the integrator's hooks for
# random bytes and time): compiled, never linked.
lwip-check: port/lwip.c tests/lwip_alt/lwipopts.h
	$(CC) $(WARN) $(DEFS) -Itests/lwip_alt $(LWIP_CFLAGS) -DCM_ALT_SELECT_DNS -fsyntax-only port/lwip.c
	$(CC) $(WARN) $(DEFS) -Itests/lwip_alt $(LWIP_CFLAGS) -DCM_ALT_OWN_TYPES -DCM_LWIP_EXTERNAL_HOOKS \
		-fsyntax-only port/lwip.c

# ---------------------------------------------------------------- vendoring
vendor-example: $(BUILD)/vendor_example

$(BUILD)/vendor_example: tests/vendor_example.c port/posix.c $(SRC)
	@mkdir -p $(BUILD)
	$(CC) $(WARN) $(DEFS) $(CFLAGS) -I. -o $@ tests/vendor_example.c calid_mcp.c port/posix.c -lbearssl -lpthread

# ---------------------------------------------------------------- sources for cross builds
$(XW)/apt/lists/.done:
	$(FETCH) update

$(BEARSSL)/inc/bearssl.h: | $(XW)/apt/lists/.done
	$(FETCH) source bearssl $(BEARSSL)
	@touch $@

# Only jsmn.h and BearSSL's headers: a cross compiler must not see /usr/include.
$(XINC)/jsmn.h: $(BEARSSL)/inc/bearssl.h
	@mkdir -p $(XINC)
	cp $(BEARSSL)/inc/*.h $(XINC)/
	cp /usr/include/jsmn.h $(XINC)/jsmn.h

$(XW)/sysroot-%/.done: | $(XW)/apt/lists/.done
	$(FETCH) deb musl-dev:$* $(XW)/sysroot-$*
	@touch $@

# Debian's musl-gcc.specs of that architecture, pointed at the extracted sysroot.
MUSL_SPECS = sed -e 's|/usr/include/|$(abspath $(XW))/sysroot-$(2)/usr/include/|g' \
	-e 's|/usr/lib/|$(abspath $(XW))/sysroot-$(2)/usr/lib/|g' \
	$(XW)/sysroot-$(2)/usr/lib/$(1)-linux-musl/musl-gcc.specs
$(XW)/mipsel-musl/musl.specs: $(XW)/sysroot-mipsel/.done
	@mkdir -p $(@D)
	$(call MUSL_SPECS,mipsel,mipsel) >$@
$(XW)/aarch64-musl/musl.specs: $(XW)/sysroot-arm64/.done
	@mkdir -p $(@D)
	$(call MUSL_SPECS,aarch64,arm64) >$@

XCC_mipsel      = mipsel-linux-gnu-gcc -specs=$(XW)/mipsel-musl/musl.specs
XCC_aarch64     = aarch64-linux-gnu-gcc -specs=$(XW)/aarch64-musl/musl.specs
XCC_x86_64      = musl-gcc
XSTRIP_mipsel   = mipsel-linux-gnu-strip
XSTRIP_aarch64  = aarch64-linux-gnu-strip
XSTRIP_x86_64   = strip
XAR_mipsel      = mipsel-linux-gnu-ar
XAR_aarch64     = aarch64-linux-gnu-ar
XAR_x86_64      = ar
QEMU_mipsel     = qemu-mipsel-static
QEMU_aarch64    = qemu-aarch64-static

# ---------------------------------------------------------------- BearSSL per target
# BearSSL is rebuilt when its flags change: the stamp holds them, rewritten only then.
$(XW)/%-musl/bearssl.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(PORTS_OPT)' | cmp -s - $@ || echo '$(PORTS_OPT)' >$@
FORCE:

$(XW)/x86_64-musl/libbearssl.a: $(BEARSSL)/inc/bearssl.h mk/build-bearssl.sh $(XW)/x86_64-musl/bearssl.flags
	AR=ar RANLIB=ranlib sh mk/build-bearssl.sh $(BEARSSL) $(@D) "musl-gcc" $(PORTS_OPT)

$(XW)/mipsel-musl/libbearssl.a $(XW)/aarch64-musl/libbearssl.a: $(XW)/%-musl/libbearssl.a: \
		$(BEARSSL)/inc/bearssl.h $(XW)/%-musl/musl.specs mk/build-bearssl.sh $(XW)/%-musl/bearssl.flags
	AR=$(XAR_$*) RANLIB=$*-linux-gnu-ranlib sh mk/build-bearssl.sh $(BEARSSL) $(@D) "$(XCC_$*)" $(PORTS_OPT)

$(XW)/mingw64/libbearssl.a: $(BEARSSL)/inc/bearssl.h
	AR=$(MINGW)ar RANLIB=$(MINGW)ranlib sh mk/build-bearssl.sh $(BEARSSL) $(@D) "$(MINGW)gcc" $(WIN_OPT)

# ---------------------------------------------------------------- static binaries (musl)
static-x86_64: $(XB)/static/calid_mcp-x86_64
static-mipsel: $(XB)/static/calid_mcp-mipsel
static-aarch64: $(XB)/static/calid_mcp-aarch64
static-all: static-x86_64 static-mipsel static-aarch64

$(XB)/static/calid_mcp-%: $(SRC) port/posix.c $(XW)/%-musl/libbearssl.a $(XINC)/jsmn.h
	@mkdir -p $(@D)
	$(XCC_$*) $(WARN) $(DEFS) $(PORTS_OPT) -static -I$(XINC) -DCALID_MCP_MAIN -o $@ calid_mcp.c port/posix.c \
		$(PORTS_LD) -L$(XW)/$*-musl -lbearssl
	$(XSTRIP_$*) $@
	@echo "$@: $$(wc -c <$@) bytes"

# Where the static x86-64 binary's bytes go: an unstripped twin of it, linked
# from one object per source with a map, its parts and largest symbols.
SIZES_DIR = $(XB)/static/sizes
static-sizes: $(SRC) port/posix.c $(XW)/x86_64-musl/libbearssl.a $(XINC)/jsmn.h mk/size-parts.py
	@mkdir -p $(SIZES_DIR)
	$(XCC_x86_64) $(WARN) $(DEFS) $(PORTS_OPT) -I$(XINC) -DCALID_MCP_MAIN -c -o $(SIZES_DIR)/calid_mcp.o calid_mcp.c
	$(XCC_x86_64) $(WARN) $(DEFS) $(PORTS_OPT) -I$(XINC) -c -o $(SIZES_DIR)/posix.o port/posix.c
	$(XCC_x86_64) -static -o $(SIZES_DIR)/calid_mcp-x86_64 $(SIZES_DIR)/calid_mcp.o $(SIZES_DIR)/posix.o \
		$(PORTS_LD) -L$(XW)/x86_64-musl -lbearssl -Wl,-Map,$(SIZES_DIR)/calid_mcp-x86_64.map
	@python3 mk/size-parts.py $(SIZES_DIR)/calid_mcp-x86_64.map $(SIZES_DIR)/calid_mcp-x86_64
	@echo "stripped: $$(strip -o $(SIZES_DIR)/stripped $(SIZES_DIR)/calid_mcp-x86_64 && wc -c <$(SIZES_DIR)/stripped) bytes (goal $(STATIC_SIZE_GOAL))"

# ---------------------------------------------------------------- Windows (mingw-w64)
windows: $(XB)/windows/calid_mcp.exe

$(XB)/windows/calid_mcp.exe: $(SRC) port/win32.c $(XW)/mingw64/libbearssl.a $(XINC)/jsmn.h
	@mkdir -p $(@D)
	$(MINGW)gcc $(WARN) $(WIN_OPT) -D__USE_MINGW_ANSI_STDIO=1 -static -I$(XINC) -DCALID_MCP_MAIN -o $@ calid_mcp.c port/win32.c \
		$(WIN_LD) -L$(XW)/mingw64 -lbearssl -lws2_32 -lbcrypt -ladvapi32
	$(MINGW)strip $@
	@echo "$@: $$(wc -c <$@) bytes"

# ---------------------------------------------------------------- tests
# Wrappers that make an emulated binary look like a native one to tests/harness.py.
$(XW)/run-windows.sh: mk/ports.mk
	@mkdir -p $(@D)
	printf '#!/bin/sh\nexport WINEPREFIX="%s" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="\nexec %s "%s" "$$@"\n' \
		"$(abspath $(XW))/wineprefix" "$(WINE)" "$(abspath $(XB))/windows/calid_mcp.exe" >$@
	chmod +x $@

$(XW)/run-%.sh: mk/ports.mk
	@mkdir -p $(@D)
	printf '#!/bin/sh\nexec %s "%s" "$$@"\n' "$(QEMU_$*)" "$(abspath $(XB))/static/calid_mcp-$*" >$@
	chmod +x $@

# A fresh wine prefix takes a while to create: do it once, before any test waits on it.
$(XW)/wineprefix/.done:
	@mkdir -p $(@D)
	WINEPREFIX=$(abspath $(XW))/wineprefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" \
		$(WINE) wineboot -i >/dev/null 2>&1 || true
	@touch $@

ports-test-lwip: $(BUILD)/lwip_test lwip-check
	@certs=$${CALID_TEST_CERTS:-$(XB)/certs}; bash tests/make_certs.sh $$certs && $(BUILD)/lwip_test $$certs

# What a vendoring firmware links: the core and each port, as objects.
VENDOR_OBJS = $(XW)/sym/calid_mcp.o $(XW)/sym/posix.o $(XW)/sym/lwip.o $(XW)/sym/win32.o
$(XW)/sym/calid_mcp.o: $(SRC)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(DEFS) -Os -c -o $@ calid_mcp.c
$(XW)/sym/posix.o: port/posix.c calid_mcp.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(DEFS) -Os -c -o $@ port/posix.c
$(XW)/sym/lwip.o: port/lwip.c calid_mcp.h
	@mkdir -p $(@D)
	$(CC) $(WARN) $(DEFS) $(LWIP_CFLAGS) -Os -c -o $@ port/lwip.c
$(XW)/sym/win32.o: port/win32.c calid_mcp.h
	@mkdir -p $(@D)
	$(MINGW)gcc $(WARN) -Os -c -o $@ port/win32.c

ports-test-vendor: $(BUILD)/vendor_example $(VENDOR_OBJS)
	@python3 tests/ports_check.py vendor $(BUILD)/vendor_example $(VENDOR_OBJS)

ports-test-windows: $(XB)/windows/calid_mcp.exe $(XW)/run-windows.sh $(XW)/wineprefix/.done
	@CALID_MCP_BIN=$(abspath $(XW))/run-windows.sh CALID_PORT_NAME=windows CALID_PORT_EXE_DIR=$(abspath $(XB))/windows \
		CALID_PORT_BINARY=$(abspath $<) \
		python3 tests/ports_check.py server; \
	rc=$$?; WINEPREFIX=$(abspath $(XW))/wineprefix wineserver -k 2>/dev/null; exit $$rc

# The stripped static x86-64 binary with every feature built in: the goal is
# 320 KiB (printed: met or NOT met); the ceiling is the size it has reached,
# and its suite fails when it grows past it. The other ports print their size.
STATIC_SIZE_GOAL    ?= 327680
STATIC_SIZE_CEILING ?= 409600

ports-test-static-x86_64: $(XB)/static/calid_mcp-x86_64
	@CALID_MCP_BIN=$(abspath $<) CALID_PORT_NAME=x86_64 CALID_PORT_BINARY=$(abspath $<) \
		CALID_PORT_SIZE_GOAL=$(STATIC_SIZE_GOAL) CALID_PORT_SIZE_CEILING=$(STATIC_SIZE_CEILING) \
		python3 tests/ports_check.py server

ports-test-static-mipsel ports-test-static-aarch64: ports-test-static-%: $(XB)/static/calid_mcp-% $(XW)/run-%.sh
	@CALID_MCP_BIN=$(abspath $(XW))/run-$*.sh CALID_PORT_NAME=$* CALID_PORT_BINARY=$(abspath $<) \
		python3 tests/ports_check.py server

# All of them, each suite's log in build/, one total line at the end.
ports-test:
	@bash tests/ports_test.sh

ports-sizes: static-all windows
	@for f in $(XB)/static/calid_mcp-x86_64 $(XB)/static/calid_mcp-mipsel $(XB)/static/calid_mcp-aarch64 \
		$(XB)/windows/calid_mcp.exe; do printf '%-36s %8d bytes\n' $$f $$(wc -c <$$f); done

ports-clean:
	rm -rf $(XW) $(XB)/static $(XB)/windows $(BUILD)/lwip_test $(BUILD)/vendor_example
