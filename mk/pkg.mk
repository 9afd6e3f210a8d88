# mk/pkg.mk - packages. Included by the top Makefile.
#
#   make deb        build/pkg/calid-mcp_VERSION_ARCH.deb: the binary, a hardened
#                   systemd unit, /etc/default/calid-mcp, a man page from --help
#                   (needs dpkg-dev: apt-get install dpkg-dev)
#   make ipk        build/pkg/calid-mcp_VERSION_{mipsel_24kc,aarch64_generic}.ipk for
#                   OpenWrt: the static binaries, a procd init script, a UCI config
#                   (needs the cross builds of mk/ports.mk)
#   make pkg-test   builds both, checks their contents, installs the .deb with dpkg,
#                   runs the init script under a stub procd (tests/pkg_test.sh)

PKG_VERSION := $(shell sed -n 's/^\#define CM_VERSION "\(.*\)"/\1/p' calid_mcp.h)
PKG_DIR      = build/pkg
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB          = $(PKG_DIR)/calid-mcp_$(PKG_VERSION)_$(DEB_ARCH).deb
IPK_MIPSEL   = $(PKG_DIR)/calid-mcp_$(PKG_VERSION)_mipsel_24kc.ipk
IPK_AARCH64  = $(PKG_DIR)/calid-mcp_$(PKG_VERSION)_aarch64_generic.ipk

.PHONY: deb ipk pkg-test

deb: $(DEB)
ipk: $(IPK_MIPSEL) $(IPK_AARCH64)

$(DEB): calid_mcp pkg/debian/calid-mcp.service pkg/debian/default mk/manpage.sh mk/make-deb.sh
	@command -v dpkg-deb >/dev/null || { echo "make deb needs dpkg-deb: apt-get install dpkg-dev"; exit 1; }
	sh mk/make-deb.sh calid_mcp $(PKG_VERSION) $(DEB_ARCH) $@

$(IPK_MIPSEL): build/static/calid_mcp-mipsel pkg/openwrt/calid-mcp.init pkg/openwrt/calid-mcp.config mk/make-ipk.sh
	sh mk/make-ipk.sh $< $(PKG_VERSION) mipsel_24kc $@

$(IPK_AARCH64): build/static/calid_mcp-aarch64 pkg/openwrt/calid-mcp.init pkg/openwrt/calid-mcp.config mk/make-ipk.sh
	sh mk/make-ipk.sh $< $(PKG_VERSION) aarch64_generic $@

pkg-test: deb ipk
	sh tests/pkg_test.sh $(DEB) $(IPK_MIPSEL) $(IPK_AARCH64)
