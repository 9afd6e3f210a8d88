#!/bin/sh
# mk/build-bearssl.sh SRCDIR OUTDIR CC [CFLAGS...] - BearSSL's library for one target.
#
# Compiles every src/**/*.c of BearSSL's source tree with CC (a cross compiler,
# possibly with -specs for musl) into OUTDIR/libbearssl.a, using all cores.
# BearSSL picks its random source and clock from the target's predefined
# macros (/dev/urandom on Linux, CryptGenRandom on Windows). AR and RANLIB
# come from the environment (default: CC's binutils by prefix).
set -eu
src=$1 out=$2 cc=$3
shift 3
cflags="$*"
case $cc in
    *-gcc*) prefix=${cc%%gcc*} ;;
    *) prefix="" ;;
esac
prefix=${prefix%% *}
ar=${AR:-${prefix}ar}
ranlib=${RANLIB:-${prefix}ranlib}
[ "$prefix" = "musl-" ] && { ar=${AR:-ar}; ranlib=${RANLIB:-ranlib}; }
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$out/obj"
rm -f "$out/obj"/*.o "$out/libbearssl.a"
export src out cc cflags
find "$src/src" -name '*.c' | sort | xargs -P "$jobs" -n 8 sh -c '
    for f in "$@"; do
        # shellcheck disable=SC2086
        $cc $cflags -I"$src/inc" -I"$src/src" -c "$f" -o "$out/obj/$(basename "$f" .c).o" || exit 255
    done' sh
"$ar" rcs "$out/libbearssl.a" "$out"/obj/*.o
"$ranlib" "$out/libbearssl.a"
rm -rf "$out/obj"
echo "built $out/libbearssl.a ($(find "$src/src" -name '*.c' | wc -l) files)"
