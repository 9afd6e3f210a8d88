#!/bin/sh
# Builds an OpenWrt package (.ipk: a gzipped tar of debian-binary,
# control.tar.gz and data.tar.gz, as opkg reads it) from a static binary.
#   sh mk/make-ipk.sh BINARY VERSION ARCH OUT.ipk
set -eu
bin=$1 version=$2 arch=$3 out=$4
work=$(dirname "$out")/ipk-$arch
rm -rf "$work"
mkdir -p "$work/data/usr/bin" "$work/data/etc/init.d" "$work/data/etc/config" "$work/data/etc/calid-mcp" "$work/control"
install -m 0755 "$bin" "$work/data/usr/bin/calid_mcp"
install -m 0755 pkg/openwrt/calid-mcp.init "$work/data/etc/init.d/calid-mcp"
install -m 0600 pkg/openwrt/calid-mcp.config "$work/data/etc/config/calid-mcp"
chmod 0700 "$work/data/etc/calid-mcp"
size=$(du -sb "$work/data" | cut -f1)
cat > "$work/control/control" <<CONTROL
Package: calid-mcp
Version: $version
Depends: libc
Source: calid-mcp
License: see README
Section: net
Architecture: $arch
Installed-Size: $size
Description: MCP server for the Cal ID scheduling API: lets an AI assistant
 use a Cal ID account (bookings, slots, event types, contacts, schedules).
CONTROL
echo /etc/config/calid-mcp > "$work/control/conffiles"
cat > "$work/control/postinst" <<'POSTINST'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] || { /etc/init.d/calid-mcp enable; /etc/init.d/calid-mcp restart; }
exit 0
POSTINST
cat > "$work/control/prerm" <<'PRERM'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] || { /etc/init.d/calid-mcp stop; /etc/init.d/calid-mcp disable; }
exit 0
PRERM
chmod 0755 "$work/control/postinst" "$work/control/prerm"
echo 2.0 > "$work/debian-binary"
tar_opts="--owner=0 --group=0 --numeric-owner --sort=name --mtime=@0"
(cd "$work/data" && tar $tar_opts -czf ../data.tar.gz .)
(cd "$work/control" && tar $tar_opts -czf ../control.tar.gz .)
(cd "$work" && tar $tar_opts -czf pkg.ipk ./debian-binary ./control.tar.gz ./data.tar.gz)
mv "$work/pkg.ipk" "$out"
echo "built $out ($(stat -c %s "$out") bytes)"
