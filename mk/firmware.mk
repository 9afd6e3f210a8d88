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
# The server's limits on this board: few clients, one API connection.
FW_LIMITS  ?= -DCM_MAX_CONNS=4 -DCM_MAX_UPSTREAMS=1 -DCM_MAX_BODY_BYTES=16384 -DCM_UPSTREAM_REQ_BYTES=20480 \
              -DCM_UPSTREAM_BODY_BYTES=32768 -DCM_MAX_ENDED_SESSIONS=8 -DCM_MAX_SESSION_LEVELS=8 -DCM_TRUST_ARENA_BYTES=16384 \
              -DCM_MAX_TRUST_ANCHORS=16
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
# tell the parts apart.
$(FW)/calid_mcp-mps2.elf: $(SRC) $(FW_SRC) $(FW_HDR) $(FW)/libbearssl.a $(FW)/liblwip.a $(FW)/inc/jsmn.h
	@mkdir -p $(FW)/obj
	for f in calid_mcp.c $(FW_SRC); do \
		$(FW_CC) $(FW_ARCH) $(FW_OPT) $(WARN) $(FW_LIMITS) -DCALID_MCP_MAIN -DCM_OWN_MAIN -I. $(FW_INC) \
			-c $$f -o $(FW)/obj/$$(basename $$f .c).o || exit 1; done
	$(FW_CC) $(FW_ARCH) -o $@ $(addprefix $(FW)/obj/,$(notdir $(patsubst %.c,%.o,calid_mcp.c $(FW_SRC)))) \
		-L$(FW) -lbearssl -llwip --oslib=semihost --crt0=semihost $(FW_MEMORY) -Wl,--gc-sections \
		-Wl,-Map,$(FW)/calid_mcp-mps2.map
	@arm-none-eabi-size $@
	@python3 tests/firmware/sizes.py $(FW)/calid_mcp-mps2.map

firmware-test: firmware
	python3 tests/firmware/test_firmware.py $(FW)/calid_mcp-mps2.elf
