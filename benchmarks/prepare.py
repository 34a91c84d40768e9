"""Benchmark ``mine prepare`` on the real enwiki excerpt: throughput and peak memory.

Runs the stage in a fresh subprocess on the excerpt (1x) and on the same pages
repeated ten times inside one dump (10x, the "concatenated" input: ten copies of
the <page> elements between one header and footer, bzip2-compressed), prints
documents/s, sentences/s and peak RSS of each, and the RSS ratio 10x / 1x (the
readers stream, so it should stay within 1.2).

    .venv/bin/python benchmarks/prepare.py [--copies 10] [--workers 1]
"""

from __future__ import annotations

import argparse
import bz2
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENWIKI = REPO.parent / "shared" / "data" / "wikipedia" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# runs one command and prints the peak RSS (KiB) of it alone
_MEASURE = ("import resource, subprocess, sys, time; t = time.time(); "
            "rc = subprocess.run(sys.argv[1:]).returncode; dt = time.time() - t; "
            "print(rc, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def repeat_dump(src: Path, dst: Path, copies: int) -> None:
    """Write ``dst`` (.xml.bz2): ``src``'s header, its pages ``copies`` times, its footer."""
    xml = bz2.open(src, "rb").read()
    first, last = xml.index(b"<page>"), xml.rindex(b"</page>") + len(b"</page>")
    with bz2.open(dst, "wb") as f:
        f.write(xml[:first])
        for _ in range(copies):
            f.write(xml[first:last])
        f.write(xml[last:])


def run(input_path: Path, out: Path, workers: int) -> dict:
    """Prepare ``input_path`` in a fresh process; seconds, peak RSS and counts."""
    cmd = [sys.executable, "-c", "from miner.cli import main; main()", "prepare", str(input_path),
           "--lang", "en", "--out", str(out), "--workers", str(workers)]
    res = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, cwd=REPO)
    rc, seconds, rss_kib = res.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise SystemExit(f"prepare failed on {input_path}:\n{res.stderr}")
    counts = json.loads((out / "manifest.json").read_text())["stages"]["prepare"]["counts"]["en"]
    return {"seconds": float(seconds), "rss_mib": int(rss_kib) / 1024, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not ENWIKI.exists():
        raise SystemExit(f"enwiki excerpt not found at {ENWIKI}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / f"enwiki-x{args.copies}.xml.bz2"
        repeat_dump(ENWIKI, big, args.copies)
        rows = {"1x": run(ENWIKI, tmp / "out1", args.workers),
                f"{args.copies}x": run(big, tmp / "out10", args.workers)}
    print(f"{'input':<6}{'docs':>8}{'sents':>9}{'kept':>8}{'seconds':>9}{'docs/s':>9}{'sents/s':>10}{'peak RSS':>11}")
    for name, r in rows.items():
        print(f"{name:<6}{r['documents']:>8}{r['sentences']:>9}{r['kept']:>8}{r['seconds']:>9.1f}"
              f"{r['documents'] / r['seconds']:>9.1f}{r['sentences'] / r['seconds']:>10.0f}"
              f"{r['rss_mib']:>8.0f} MiB")
    one, many = rows["1x"], rows[f"{args.copies}x"]
    ratio = many["rss_mib"] / one["rss_mib"]
    print(f"peak RSS {args.copies}x / 1x = {ratio:.2f} ({'within' if ratio <= 1.2 else 'OVER'} 1.2)")
    print("(seconds include interpreter start and model load: about 1-2 s per run)")


if __name__ == "__main__":
    main()
