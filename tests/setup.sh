#!/usr/bin/env bash
# Installs what the build and the tests need on Debian 12 (run as root).
set -eu
cd "$(dirname "$0")/.."
pkgs="build-essential libbearssl-dev libjsmn-dev openssl curl python3 ca-certificates clang libclang-rt-14-dev valgrind wrk liblwip-dev musl-tools gcc-mingw-w64-x86-64 wine wine64 gcc-mipsel-linux-gnu gcc-aarch64-linux-gnu qemu-user-static dpkg-dev xz-utils"
# firmware (tests/firmware): the Cortex-M4 toolchain, its C library and the board emulator
pkgs="$pkgs gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm"
# scale-out (tests/test_scaleout.py): a balancer, and a Prometheus text parser for /metrics
pkgs="$pkgs nginx python3-prometheus-client"
# the OAuth tests: pages rendered in Chromium, tokens sealed by the test itself
pkgs="$pkgs chromium python3-cryptography"
missing=""
for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
if [ -f tests/node/package.json ] && command -v npm >/dev/null; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
