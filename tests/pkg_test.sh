#!/bin/sh
# The packages: the .deb's fields and files, installed with dpkg and started;
# the unit checked by systemd-analyze; the .ipk's layout and control fields;
# the OpenWrt init script run under a stub procd that records the command
# line it would start. Ends with "N passed, N failed".
#   sh tests/pkg_test.sh DEB IPK...
set -u
deb=$1; shift
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- Debian package
field() { dpkg-deb -f "$deb" "$1"; }
check "deb: Package is calid-mcp" test "$(field Package)" = calid-mcp
check "deb: Version matches the binary" sh -c "build/calid_mcp --version 2>/dev/null | head -1 | grep -q \"$(field Version)\" || ./calid_mcp --version | head -1 | grep -q \"$(field Version)\""
check "deb: depends on libbearssl0" sh -c "dpkg-deb -f '$deb' Depends | grep -q libbearssl0"
dpkg-deb -c "$deb" > "$tmp/files"
for f in ./usr/bin/calid_mcp ./lib/systemd/system/calid-mcp.service ./etc/default/calid-mcp ./usr/share/man/man1/calid_mcp.1.gz; do
    check "deb: holds $f" grep -q " $f\$" "$tmp/files"
done
check "deb: /etc/default/calid-mcp is a conffile" sh -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/default/calid-mcp"
check "deb: files owned by root" sh -c "! awk '{print \$2}' '$tmp/files' | grep -v '^root/root$'"
dpkg-deb -x "$deb" "$tmp/deb"
unit="$tmp/deb/lib/systemd/system/calid-mcp.service"
for key in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" CapabilityBoundingSet= EnvironmentFile=/etc/default/calid-mcp; do
    check "unit: $key" grep -qx "$key" "$unit"
done
check "man page renders and lists every --help option" sh -c "
    zcat '$tmp/deb/usr/share/man/man1/calid_mcp.1.gz' > '$tmp/calid_mcp.1' &&
    for f in \$('$tmp/deb/usr/bin/calid_mcp' --help | grep -o '^  --[a-z-]*'); do
        grep -q \"^.B \$(echo \$f | sed 's/-/\\\\\\\\-/g')\" '$tmp/calid_mcp.1' || exit 1; done"

if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
    if dpkg -i "$deb" > "$tmp/dpkg.log" 2>&1; then ok "dpkg -i installs it"; else bad "dpkg -i installs it: $(tail -3 "$tmp/dpkg.log")"; fi
    check "installed: dpkg knows calid-mcp" dpkg -s calid-mcp
    check "installed: /usr/bin/calid_mcp --version" /usr/bin/calid_mcp --version
    if command -v systemd-analyze >/dev/null; then
        out=$(systemd-analyze verify /lib/systemd/system/calid-mcp.service 2>&1)
        if [ -z "$out" ]; then ok "systemd-analyze verify: clean"
        elif echo "$out" | grep -qiE "calid-mcp\.service:[0-9]+|Unknown (key|section)|Invalid"; then bad "systemd-analyze verify: $out"
        else ok "systemd-analyze verify: no unit error (environment said: $(echo "$out" | head -1))"; fi
    else
        echo "skip systemd-analyze (not installed)"
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # the service's own settings file, as systemd would pass it
    (set -a; . /etc/default/calid-mcp; CALID_MCP_LISTEN=127.0.0.1:$port; CALID_MCP_SECRET_FILE=$tmp/secret; \
        exec /usr/bin/calid_mcp $CALID_MCP_ARGS) > "$tmp/server.log" 2>&1 &
    pid=$!
    up=0
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        curl -sf "http://127.0.0.1:$port/healthz" > "$tmp/health" 2>/dev/null && { up=1; break; }
        sleep 0.2
    done
    if [ $up = 1 ] && grep -q '"status":"ok"' "$tmp/health"; then ok "installed binary serves /healthz with /etc/default/calid-mcp"; else bad "installed binary serves /healthz: $(cat "$tmp/server.log")"; fi
    check "installed binary made its secret file 0600" sh -c "[ \"\$(stat -c %a '$tmp/secret')\" = 600 ]"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    check "dpkg -r removes it" dpkg -r calid-mcp
    check "removed: /usr/bin/calid_mcp is gone" test ! -e /usr/bin/calid_mcp
else
    echo "skip dpkg install (not root)"
fi

# ---- OpenWrt packages
for ipk in "$@"; do
    name=$(basename "$ipk")
    d="$tmp/ipk-$name"
    mkdir -p "$d/control" "$d/data"
    tar -xzf "$ipk" -C "$d"
    check "$name: outer members in opkg's order" sh -c "[ \"\$(tar -tzf '$ipk' | tr '\n' ' ')\" = './debian-binary ./control.tar.gz ./data.tar.gz ' ]"
    check "$name: debian-binary is 2.0" grep -qx 2.0 "$d/debian-binary"
    tar -xzf "$d/control.tar.gz" -C "$d/control"
    tar -xzf "$d/data.tar.gz" -C "$d/data"
    arch=$(echo "$name" | sed 's/^calid-mcp_[^_]*_//; s/\.ipk$//')
    for f in "Package: calid-mcp" "Architecture: $arch" "Version: " "Description: "; do
        check "$name: control has '$f'" grep -q "^$f" "$d/control/control"
    done
    check "$name: /etc/config/calid-mcp is a conffile" grep -qx /etc/config/calid-mcp "$d/control/conffiles"
    check "$name: the binary is a static executable for its target" sh -c "file '$d/data/usr/bin/calid_mcp' 2>/dev/null | grep -q 'statically linked' || od -An -c -N4 '$d/data/usr/bin/calid_mcp' | grep -q 'E   L   F'"
    check "$name: init script is executable" test -x "$d/data/etc/init.d/calid-mcp"
done

# ---- the init script under a stub procd (the first package's files)
first=$(ls -d "$tmp"/ipk-*/data 2>/dev/null | head -1)
if [ -n "$first" ]; then
    stub="$tmp/procd-stub.sh"
    rec="$tmp/procd.rec"
    cat > "$stub" <<'STUB'
# A stand-in for OpenWrt's /lib/functions.sh and procd.sh: UCI read from the
# packaged config (option lines of section 'main'), procd calls recorded.
CONFIG_FILE=${CONFIG_FILE:?}
REC=${REC:?}
config_load() { :; }
config_get() {
    v=$(sed -n "s/^[[:space:]]*option $3 '\(.*\)'/\1/p" "$CONFIG_FILE" | tail -1)
    [ -n "$v" ] || v=${4:-}
    eval "$1=\$v"
}
config_get_bool() { config_get "$@"; eval "case \$$1 in 1|on|true|yes|enabled) $1=1;; *) $1=0;; esac"; }
procd_open_instance() { echo "open" >> "$REC"; }
procd_set_param() { k=$1; shift; printf '%s' "set $k" >> "$REC"; for a in "$@"; do printf ' <%s>' "$a" >> "$REC"; done; echo >> "$REC"; }
procd_append_param() { k=$1; shift; printf '%s' "append $k" >> "$REC"; for a in "$@"; do printf ' <%s>' "$a" >> "$REC"; done; echo >> "$REC"; }
procd_close_instance() { echo "close" >> "$REC"; }
procd_add_reload_trigger() { :; }
STUB
    run_init() {
        : > "$rec"
        # rc.common would source the script and call start_service
        CONFIG_FILE=$1 REC=$rec sh -c ". '$stub'; . '$first/etc/init.d/calid-mcp'; start_service"
    }
    cp "$first/etc/config/calid-mcp" "$tmp/uci-default"
    run_init "$tmp/uci-default"
    check "init: opens one instance of /usr/bin/calid_mcp" sh -c "grep -qx 'set command </usr/bin/calid_mcp>' '$rec' && [ \$(grep -c '^open' '$rec') = 1 ] && grep -qx close '$rec'"
    check "init: --listen from UCI" grep -qx "append command <--listen> <127.0.0.1:8080>" "$rec"
    check "init: --secret-file from UCI" grep -qx "append command <--secret-file> </etc/calid-mcp/secret>" "$rec"
    check "init: unset options give no flag" sh -c "! grep -q -- '--tls-cert\|--toolsets\|CALID_API_KEY' '$rec'"
    check "init: respawn" grep -qx "set respawn" "$rec"
    check "init: waits out the drain on stop" grep -qx "set term_timeout <35>" "$rec"
    echo calid_routerkey > "$tmp/key"
    sed -e "s|#option key_file '/etc/calid-mcp/key'|option key_file '$tmp/key'|" \
        -e "s|#option toolsets ''|option toolsets 'bookings,slots'|" \
        -e "s|option listen '127.0.0.1:8080'|option listen '0.0.0.0:8443'|" \
        -e "s|#option tls_cert '/etc/calid-mcp/cert.pem'|option tls_cert '/etc/calid-mcp/cert.pem'|" \
        -e "s|#option access_token ''|option access_token 'tok123'|" "$tmp/uci-default" > "$tmp/uci-set"
    run_init "$tmp/uci-set"
    check "init: key from key_file goes to the environment, not argv" sh -c "grep -qx 'set env <CALID_API_KEY=calid_routerkey> <CALID_MCP_ACCESS_TOKEN=tok123>' '$rec' && ! grep command '$rec' | grep -q calid_routerkey"
    check "init: --toolsets and --tls-cert when set" sh -c "grep -qx 'append command <--toolsets> <bookings,slots>' '$rec' && grep -qx 'append command <--tls-cert> </etc/calid-mcp/cert.pem>' '$rec'"
    check "init: --listen changed" grep -qx "append command <--listen> <0.0.0.0:8443>" "$rec"
    sed "s|option enabled '1'|option enabled '0'|" "$tmp/uci-default" > "$tmp/uci-off"
    run_init "$tmp/uci-off"
    check "init: enabled 0 starts nothing" test ! -s "$rec"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
