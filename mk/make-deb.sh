#!/bin/sh
# Builds the Debian package from a built binary, with dpkg-deb alone.
#   sh mk/make-deb.sh BINARY VERSION ARCH OUT.deb
set -eu
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") version=$2 arch=$3 out=$4
root=$(dirname "$out")/deb-root
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/default" \
         "$root/usr/share/man/man1" "$root/usr/share/doc/calid-mcp"
install -m 0755 -s "$bin" "$root/usr/bin/calid_mcp"
install -m 0644 pkg/debian/calid-mcp.service "$root/lib/systemd/system/calid-mcp.service"
install -m 0644 pkg/debian/default "$root/etc/default/calid-mcp"
sh mk/manpage.sh "$bin" > "$root/usr/share/man/man1/calid_mcp.1"
gzip -9n "$root/usr/share/man/man1/calid_mcp.1"
gzip -9nc README.md > "$root/usr/share/doc/calid-mcp/README.md.gz"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: calid-mcp
Version: $version
Architecture: $arch
Maintainer: calid-mcp developers <calid-mcp@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libbearssl0, ca-certificates
Section: net
Priority: optional
Homepage: https://cal.id
Description: MCP server for the Cal ID scheduling API
 Lets an AI assistant (any Model Context Protocol client) list bookings,
 find free slots and manage event types, contacts, schedules, teams and
 webhooks on a Cal ID account. One small binary, static memory, one poll
 loop; runs as a hardened systemd service.
CONTROL
echo /etc/default/calid-mcp > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl enable calid-mcp.service >/dev/null 2>&1 || true
    systemctl restart calid-mcp.service >/dev/null 2>&1 || true
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop calid-mcp.service >/dev/null 2>&1 || true
    [ "$1" = remove ] && systemctl disable calid-mcp.service >/dev/null 2>&1 || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "built $out ($(stat -c %s "$out") bytes)"
