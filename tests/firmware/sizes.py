#!/usr/bin/env python3
"""text, data and bss of each part of the firmware image, from the linker map.

    python3 tests/firmware/sizes.py build/firmware/calid_mcp-mps2.map
"""
import re
import sys

PARTS = [("calid-mcp", r"calid_mcp"), ("BearSSL", r"libbearssl\.a"), ("lwIP", r"liblwip\.a"),
         ("LAN9118 driver", r"lan9118"), ("port + board", r"port_lwip_raw|main"), ("picolibc + libgcc", r".")]


def part_of(obj):
    for name, pat in PARTS:
        if re.search(pat, obj):
            return name
    return "other"


def main(path):
    sizes = {name: {"text": 0, "data": 0, "bss": 0} for name, _ in PARTS}
    section = None
    pending = None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^ (\.[\w.$]+)\s*$", line)
        if m:  # a long section name: address, size and object on the next line
            pending = m.group(1)
            continue
        m = re.match(r"^ (\.[\w.$]+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+\.(?:o|a\(.*\)))\s*$", line)
        if not m:
            pending = None
            continue
        name = m.group(1) or pending
        pending = None
        addr, size, obj = int(m.group(2), 16), int(m.group(3), 16), m.group(4)
        if not name or addr == 0 or size == 0:
            continue
        if name.startswith((".text", ".rodata")):
            section = "text"
        elif name.startswith(".data"):
            section = "data"
        elif name.startswith((".bss", "COMMON")) or name.startswith(".noinit"):
            section = "bss"
        else:
            continue
        sizes[part_of(obj)][section] += size
    print(f"{'part':20} {'text':>8} {'data':>8} {'bss':>8}")
    for name, _ in PARTS:
        s = sizes[name]
        print(f"{name:20} {s['text']:8} {s['data']:8} {s['bss']:8}")


if __name__ == "__main__":
    main(sys.argv[1])
