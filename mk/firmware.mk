# mk/firmware.mk - calid-mcp as Cortex-M4 firmware (ARM MPS2 AN386, as
# QEMU's mps2-an386 emulates it), from tests/firmware/: calid_mcp.c and
# calid_mcp.h as they are, a bare-metal lwIP port, a LAN9118 driver, a board
# file; BearSSL and lwIP built for the target from Debian's source packages.
#
#   make firmware        build/firmware/calid_mcp-mps2.elf (and its size table)
#   make firmware-test   boots it under qemu-system-arm and runs the client tests
#
# Needs gcc-arm-none-eabi, picolibc-arm-none-eabi and qemu-system-arm (see
# tests/setup.sh); the sources come through mk/fetch-debian.sh into build/.

FW          = build/firmware
FW_CC       = arm-none-eabi-gcc
FW_ARCH     = -mcpu=cortex-m4 -mthumb -mfloat-abi=soft --specs=picolibc.specs
FW_OPT      = -Os -ffunction-sections -fdata-sections
FW_LWIP     = $(FW)/src/lwip
FW_INC      = -Itests/firmware -I$(FW_LWIP)/src/include -I$(FW)/inc
# The memory of the board: code in SSRAM1, data in SSRAM2/3 (4 MiB each).
FW_MEMORY   = -Wl,--defsym=__flash=0x00000000 -Wl,--defsym=__flash_size=0x00400000 \
              -Wl,--defsym=__ram=0x20000000 -Wl,--defsym=__ram_size=0x00400000
# The server's limits on this board: the tiny profile (mk/tiny.mk), whose
# static memory with lwIP's and the driver's fits 128 KiB of RAM.
FW_LIMITS  ?= $(TINY_LIMITS)
FW_SRC      = tests/firmware/main.c tests/firmware/port_lwip_raw.c tests/firmware/lan9118.c
FW_HDR      = tests/firmware/board.h tests/firmware/lan9118.h tests/firmware/lwipopts.h tests/firmware/arch/cc.h
# lwIP's core, IPv4 and Ethernet: what a NO_SYS raw-API build links.
FW_LWIP_SRC = $(wildcard $(FW_LWIP)/src/core/*.c) $(wildcard $(FW_LWIP)/src/core/ipv4/*.c) $(FW_LWIP)/src/netif/ethernet.c

.PHONY: firmware firmware-test

firmware: $(FW)/calid_mcp-mps2.elf

$(FW_LWIP)/src/include/lwip/init.h: | build/ports/apt/lists/.done
	@command -v $(FW_CC) >/dev/null || { echo "make firmware needs $(FW_CC): apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi"; exit 1; }
	sh mk/fetch-debian.sh build/ports/apt source lwip $(FW_LWIP)
	@touch $@

$(FW)/inc/jsmn.h: build/ports/src/bearssl/inc/bearssl.h
	@mkdir -p $(@D)
	cp build/ports/src/bearssl/inc/*.h $(@D)/
	cp /usr/include/jsmn.h $@

$(FW)/libbearssl.a: build/ports/src/bearssl/inc/bearssl.h
	@command -v $(FW_CC) >/dev/null || { echo "make firmware needs $(FW_CC): apt-get install gcc-arm-none-eabi picolibc-arm-none-eabi"; exit 1; }
	AR=arm-none-eabi-ar RANLIB=arm-none-eabi-ranlib sh mk/build-bearssl.sh build/ports/src/bearssl $(FW)/bearssl-build \
		"$(FW_CC) $(FW_ARCH)" $(FW_OPT)
	mv $(FW)/bearssl-build/libbearssl.a $@

$(FW)/liblwip.a: $(FW_LWIP)/src/include/lwip/init.h $(FW_HDR)
	@mkdir -p $(FW)/lwip-obj
	rm -f $(FW)/lwip-obj/*.o
	for f in $(FW_LWIP_SRC); do \
		$(FW_CC) $(FW_ARCH) $(FW_OPT) $(FW_INC) -c $$f -o $(FW)/lwip-obj/$$(basename $$f .c).o || exit 1; done
	arm-none-eabi-ar rcs $@ $(FW)/lwip-obj/*.o

# One object per source, so that the map (and tests/firmware/sizes.py) can
# tell the parts apart. Two images: the tiny profile (plain HTTP; its data +
# bss, lwIP's and BearSSL's included, fit 128 KiB), and the same with an
# HTTPS listener for all four connections (what serving TLS costs a board).
FW_HTTPS_LIMITS ?= -DCM_PROFILE='"tiny, HTTPS"' -DCM_STATIC_BUDGET=262144 $(TINY_SIZES) -DCM_TLS_CONNS=4 \
                   -DCM_TLS_SESSIONS=4 -DCM_TLS_CHAIN_BYTES=4096 -DCM_TLS_CHAIN_CERTS=4
define FW_IMAGE
$$(FW)/$(1).elf: $$(SRC) $$(FW_SRC) $$(FW_HDR) mk/tiny.mk mk/firmware.mk $$(FW)/libbearssl.a $$(FW)/liblwip.a $$(FW)/inc/jsmn.h
	@mkdir -p $$(FW)/obj-$(1)
	for f in calid_mcp.c $$(FW_SRC); do \
		$$(FW_CC) $$(FW_ARCH) $$(FW_OPT) $$(WARN) $(2) -DCALID_MCP_MAIN -DCM_OWN_MAIN -I. $$(FW_INC) \
			-c $$$$f -o $$(FW)/obj-$(1)/$$$$(basename $$$$f .c).o || exit 1; done
	$$(FW_CC) $$(FW_ARCH) -o $$@ $$(addprefix $$(FW)/obj-$(1)/,$$(notdir $$(patsubst %.c,%.o,calid_mcp.c $$(FW_SRC)))) \
		-L$$(FW) -lbearssl -llwip --oslib=semihost --crt0=semihost $$(FW_MEMORY) -Wl,--gc-sections \
		-Wl,-Map,$$(FW)/$(1).map
	@arm-none-eabi-size $$@
	@python3 tests/firmware/sizes.py $$(FW)/$(1).map
endef
$(eval $(call FW_IMAGE,calid_mcp-mps2,$$(FW_LIMITS)))
$(eval $(call FW_IMAGE,calid_mcp-mps2-https,$$(FW_HTTPS_LIMITS)))

# CALID_TEST_TRANSPORT=https boots the image with the HTTPS listener
FW_TEST_IMAGE = $(FW)/calid_mcp-mps2$(if $(filter https,$(CALID_TEST_TRANSPORT)),-https).elf

firmware-test: $(FW_TEST_IMAGE)
	python3 tests/firmware/test_firmware.py $(FW_TEST_IMAGE)
