"""Benchmark ``mine prepare`` on the real enwiki excerpt: throughput and peak memory.

Runs the stage in a fresh subprocess, one worker, on three inputs:

- ``1x``: the excerpt (a single-stream bzip2 dump of 206 pages);
- ``10x same``: its pages ten times inside one dump (one header and footer,
  bzip2-compressed): ten times the rows, the same distinct sentences (the dedup drops
  nine copies of each);
- ``10x distinct``: the same, but in copy k each sentence end (``.``, ``!``, ``?``
  before white space, markup, a quote or a bracket) gets the number k before it
  (``... in 1998 3.``): about ten times the distinct sentences too (9.1x kept: the
  rest end otherwise), so the dedup's memory has to stay bounded as they grow.

It prints documents/s, sentences/s and peak RSS of each, the RSS ratios 10x / 1x (the
readers stream and the dedup is bounded by ``max_memory``, so both should stay within
1.2), and the same 1x and 10x-same runs with the standard library's ``bz2``
(``MINER_BZ2=builtin``) beside the default parallel ``indexed_bzip2`` reader.

    .venv/bin/python benchmarks/prepare.py [--copies 10] [--workers 1] [--max-memory 4M]
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
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
# a sentence end: . ! ? before white space, markup (&lt;ref..., escaped in the XML), a
# quote or a closing bracket
_SENTENCE_END = re.compile(rb"([.!?])([\s&'\")\]])")


def repeat_dump(src: Path, dst: Path, copies: int, distinct: bool = False) -> None:
    """Write ``dst`` (.xml.bz2): ``src``'s header, its pages ``copies`` times, its
    footer; ``distinct``: copy k with `` k`` before each sentence end."""
    xml = bz2.open(src, "rb").read()
    first, last = xml.index(b"<page>"), xml.rindex(b"</page>") + len(b"</page>")
    pages = xml[first:last]
    with bz2.open(dst, "wb") as f:
        f.write(xml[:first])
        for k in range(1, copies + 1):
            f.write(_SENTENCE_END.sub(rb" %d\1\2" % k, pages) if distinct else pages)
        f.write(xml[last:])


def run(input_path: Path, out: Path, workers: int, config: Path | None, bz2_reader: str = "") -> dict:
    """Prepare ``input_path`` in a fresh process; seconds, peak RSS and counts."""
    cmd = [sys.executable, "-c", "from miner.cli import main; main()", "prepare", str(input_path),
           "--lang", "en", "--out", str(out), "--workers", str(workers)]
    if config is not None:
        cmd += ["--config", str(config)]
    env = dict(os.environ)
    env.pop("MINER_BZ2", None)
    if bz2_reader:
        env["MINER_BZ2"] = bz2_reader
    res = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True,
                         cwd=REPO, env=env)
    rc, seconds, rss_kib = res.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise SystemExit(f"prepare failed on {input_path}:\n{res.stderr}")
    counts = json.loads((out / "manifest.json").read_text())["stages"]["prepare"]["counts"]["en"]
    return {"seconds": float(seconds), "rss_mib": int(rss_kib) / 1024, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-memory", default=None,
                        help="max_memory of the runs (default: the run default, 8G)")
    args = parser.parse_args()
    if not ENWIKI.exists():
        raise SystemExit(f"enwiki excerpt not found at {ENWIKI}")
    from miner.readers import parallel_bz2_available

    parallel = parallel_bz2_available()
    n = args.copies
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = None
        if args.max_memory:
            config = tmp / "run.toml"
            config.write_text(f"max_memory = {json.dumps(args.max_memory)}\n")
        same, distinct = tmp / f"enwiki-x{n}.xml.bz2", tmp / f"enwiki-x{n}-distinct.xml.bz2"
        repeat_dump(ENWIKI, same, n)
        repeat_dump(ENWIKI, distinct, n, distinct=True)
        rows = {"1x": run(ENWIKI, tmp / "out1", args.workers, config),
                f"{n}x same": run(same, tmp / "out2", args.workers, config),
                f"{n}x distinct": run(distinct, tmp / "out3", args.workers, config)}
        if parallel:
            rows["1x bz2"] = run(ENWIKI, tmp / "out4", args.workers, config, "builtin")
            rows[f"{n}x same bz2"] = run(same, tmp / "out5", args.workers, config, "builtin")
    reader = "indexed_bzip2" if parallel else "bz2 (indexed_bzip2 not installed)"
    print(f"bzip2 reader: {reader}; rows ending in 'bz2': the standard library's bz2; "
          f"max_memory: {args.max_memory or 'default (8G)'}")
    print(f"{'input':<15}{'docs':>7}{'sents':>9}{'kept':>8}{'seconds':>9}{'docs/s':>8}"
          f"{'sents/s':>9}{'peak RSS':>12}")
    for name, r in rows.items():
        print(f"{name:<15}{r['documents']:>7}{r['sentences']:>9}{r['kept']:>8}{r['seconds']:>9.1f}"
              f"{r['documents'] / r['seconds']:>8.1f}{r['sentences'] / r['seconds']:>9.0f}"
              f"{r['rss_mib']:>8.0f} MiB")
    one = rows["1x"]
    for name in (f"{n}x same", f"{n}x distinct"):
        ratio = rows[name]["rss_mib"] / one["rss_mib"]
        print(f"peak RSS {name} / 1x = {ratio:.2f} ({'within' if ratio <= 1.2 else 'OVER'} 1.2); "
              f"kept {rows[name]['kept'] / one['kept']:.2f}x")
    if parallel:
        for name in ("1x", f"{n}x same"):
            a, b = rows[name], rows[f"{name} bz2"]
            print(f"{name}: {a['documents'] / a['seconds']:.1f} docs/s with indexed_bzip2, "
                  f"{b['documents'] / b['seconds']:.1f} with bz2 "
                  f"({b['seconds'] / a['seconds']:.2f}x); peak RSS {a['rss_mib']:.0f} vs "
                  f"{b['rss_mib']:.0f} MiB")
    print("(seconds include interpreter start and model load: about 1-2 s per run)")


if __name__ == "__main__":
    main()
