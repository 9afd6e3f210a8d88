#!/usr/bin/env python3
"""Picks a small corpus for one fuzz target: greedily, the inputs that add the
most coverage edges (hand-written seed_* files win ties), up to a file budget.

usage: trim_corpus.py [--keep NAME,NAME] BIN OUTDIR BUDGET DIR...
       (DIRs hold the candidates; --keep names files always kept, e.g. the
       seeds that document real client traffic)

libFuzzer's -merge=1 keeps every input that adds any feature, which is more
files than a repository corpus needs; this keeps the edges with fewer files.
OUTDIR is emptied first."""
import os, shutil, subprocess, sys, tempfile

def main():
    args = sys.argv[1:]
    keep = set()
    if args[0] == "--keep":
        keep = set(args[1].split(","))
        args = args[2:]
    binary, outdir, budget, dirs = args[0], args[1], int(args[2]), args[3:]
    work = tempfile.mkdtemp(prefix="trim-")
    ctl = os.path.join(work, "ctl")
    empty = os.path.join(work, "out")
    os.mkdir(empty)
    subprocess.run([binary, "-merge=1", "-use_counters=0", "-merge_control_file=" + ctl, empty] + dirs,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, CALID_FUZZ_KNOWN="utf8,dotseg"))
    lines = open(ctl).read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    cov = {}
    for l in lines[2 + n:]:
        p = l.split()
        if p and p[0] == "COV":
            cov[int(p[1])] = set(p[2:])
    chosen, covered = [], set()
    names = set()
    cand = []
    for i in sorted(cov):
        name = os.path.basename(files[i])
        if name not in names:  # the same file may sit in two directories
            names.add(name)
            cand.append(i)

    for i in list(cand):
        if os.path.basename(files[i]) in keep:
            chosen.append(i)
            covered |= cov[i]
            cand.remove(i)

    def better(i, j):  # prefer seeds, then smaller files
        si, sj = os.path.basename(files[i]).startswith("seed_"), os.path.basename(files[j]).startswith("seed_")
        if si != sj:
            return si
        return os.path.getsize(files[i]) < os.path.getsize(files[j])
    total_edges = set().union(*cov.values()) if cov else set()
    while len(chosen) < budget:
        best, gain = None, 0
        for i in cand:
            g = len(cov[i] - covered)
            if g > gain or (g == gain and g > 0 and better(i, best)):
                best, gain = i, g
        if best is None:
            break
        chosen.append(best)
        covered |= cov[best]
        cand.remove(best)
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        os.remove(os.path.join(outdir, f))
    for i in chosen:
        src = files[i]
        name = os.path.basename(src)
        shutil.copy(src, os.path.join(outdir, name))
    shutil.rmtree(work)
    print("%s: %d files, %d of %d edges" % (outdir, len(chosen), len(covered), len(total_edges)))

main()
