#!/bin/sh
# mk/fetch-debian.sh - Debian packages for the cross builds, fetched with
# apt-get under a private state directory: the system's apt configuration,
# package lists and installed packages are left alone. The archive is the one
# this system already uses (read from /etc/apt), the suite its own codename.
#
#   fetch-debian.sh STATE update               fetch the package lists (once)
#   fetch-debian.sh STATE source PKG DEST      unpack source package PKG as DEST
#   fetch-debian.sh STATE deb PKG:ARCH DEST    extract binary package PKG:ARCH into DEST
#
# Needs apt-get, dpkg-source (dpkg-dev) and dpkg-deb; no root for the lists.
set -eu
state=$1
cmd=$2
mkdir -p "$state"
state=$(cd "$state" && pwd)

codename() {
    . /etc/os-release
    echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
}

# The first enabled archive whose suite is exactly this release's codename.
archive_uri() {
    suite=$(codename)
    uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        uri=$(awk -v suite="$suite" '
            function flush() { if (uris != "" && on && hit && found == "") { split(uris, u, " "); found = u[1] } uris = ""; hit = 0; on = 1 }
            BEGIN { on = 1 }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
            tolower($1) == "enabled:" && tolower($2) == "no" { on = 0 }
            END { flush(); print found }' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk -v suite="$suite" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                      if ($(i + 1) == suite) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { echo "$0: no Debian archive for '$suite' in /etc/apt" >&2; exit 1; }
    echo "$uri"
}

apt_opts() {
    echo "-q -o Dir::Etc::SourceList=$state/sources.list -o Dir::Etc::SourceParts=$state/parts.d" \
         "-o Dir::State::Lists=$state/lists -o Dir::Cache=$state/cache -o Debug::NoLocking=1" \
         "-o APT::Sandbox::User=root -o APT::Architectures::=amd64 -o APT::Architectures::=mipsel" \
         "-o APT::Architectures::=arm64 -o APT::Get::Only-Source=true"
}

case $cmd in
update)
    if [ -f "$state/lists/.done" ]; then exit 0; fi
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/parts.d"
    uri=$(archive_uri)
    suite=$(codename)
    {
        echo "deb [arch=mipsel,arm64] $uri $suite main"
        echo "deb-src $uri $suite main"
    } >"$state/sources.list"
    # shellcheck disable=SC2046
    apt-get $(apt_opts) update >"$state/update.log" 2>&1 || { cat "$state/update.log" >&2; exit 1; }
    touch "$state/lists/.done"
    ;;
source)
    pkg=$3 dest=$4
    work=$(mktemp -d "$state/src.XXXXXX")
    # shellcheck disable=SC2046
    (cd "$work" && apt-get $(apt_opts) source "$pkg") >"$work.log" 2>&1 || { cat "$work.log" >&2; rm -rf "$work"; exit 1; }
    dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    [ -n "$dir" ] || { echo "$0: apt-get source $pkg unpacked nothing" >&2; exit 1; }
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    mv "$dir" "$dest"
    rm -rf "$work" "$work.log"
    ;;
deb)
    pkg=$3 dest=$4
    work=$(mktemp -d "$state/deb.XXXXXX")
    # shellcheck disable=SC2046
    (cd "$work" && apt-get $(apt_opts) download "$pkg") >"$work.log" 2>&1 || { cat "$work.log" >&2; rm -rf "$work"; exit 1; }
    rm -rf "$dest"
    mkdir -p "$dest"
    for d in "$work"/*.deb; do dpkg-deb -x "$d" "$dest"; done
    rm -rf "$work" "$work.log"
    ;;
*)
    echo "usage: $0 STATE update | source PKG DEST | deb PKG:ARCH DEST" >&2
    exit 2
    ;;
esac
