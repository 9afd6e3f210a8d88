#!/usr/bin/env python3
"""Where a static binary's bytes go (make static-sizes).

    python3 mk/size-parts.py MAP BINARY [N]

MAP is the GNU ld map of BINARY (unstripped, linked with -Wl,-Map). Prints
the code (.text), constants (.rodata, .data.rel.ro, ...) and data of each
part: calid_mcp.o, the port (posix.o), BearSSL (libbearssl.a), the C library
and start files (the rest); then BINARY's N largest symbols (default 15)
that are in the file (no bss).
"""
import re
import subprocess
import sys

PARTS = [("calid_mcp.c", r"calid_mcp\.o$"), ("port/posix.c", r"posix\.o$"), ("BearSSL", r"libbearssl\.a\("),
         ("C library + start", r".")]
KINDS = [("code", r"^\.(text|init|fini)"), ("constants", r"^\.(rodata|data\.rel\.ro|init_array|fini_array|got)"),
         ("data", r"^\.(data|tdata)"), ("unwind", r"^\.(eh_frame|gcc_except_table)")]


def part_of(obj):
    return next(name for name, pat in PARTS if re.search(pat, obj))


def kind_of(section):
    return next((name for name, pat in KINDS if re.match(pat, section)), None)


def parts(path):
    sizes = {name: dict.fromkeys([k for k, _ in KINDS], 0) for name, _ in PARTS}
    pending = None
    text = open(path, encoding="utf-8", errors="replace").read()
    text = text.split("Linker script and memory map", 1)[-1].split("/DISCARD/", 1)[0]
    for line in text.splitlines():
        m = re.match(r"^ (\.[\w.$-]+)\s*$", line)
        if m:  # a long section name: address, size and object on the next line
            pending = m.group(1)
            continue
        m = re.match(r"^ (\.[\w.$-]+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+\.(?:o|lo|a\(.*\)))\s*$", line)
        section = (m.group(1) or pending) if m else None
        pending = None
        if not m or not section or int(m.group(2), 16) == 0:
            continue
        kind = kind_of(section)
        if kind:
            sizes[part_of(m.group(4))][kind] += int(m.group(3), 16)
    return sizes


def main(map_path, binary, n):
    sizes = parts(map_path)
    kinds = [k for k, _ in KINDS]
    print(f"{'part':20}" + "".join(f"{k:>11}" for k in kinds) + f"{'all':>11}")
    for name, row in sizes.items():
        print(f"{name:20}" + "".join(f"{row[k]:>11,}" for k in kinds) + f"{sum(row.values()):>11,}")
    total = sum(sum(r.values()) for r in sizes.values())
    print(f"{'in all':20}" + "".join(f"{sum(r[k] for r in sizes.values()):>11,}" for k in kinds) + f"{total:>11,}")
    out = subprocess.run(["nm", "--size-sort", "-S", binary], capture_output=True, text=True, check=True).stdout
    syms = [(int(f[1], 16), f[2], f[3]) for f in (line.split() for line in out.splitlines())
            if len(f) == 4 and f[2] not in "bB"]
    print(f"the {n} largest symbols in the file:")
    for size, kind, name in sorted(syms, reverse=True)[:n]:
        print(f"  {size:>8,}  {'code' if kind in 'tT' else 'constants/data'}  {name}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 15)
