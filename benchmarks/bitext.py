"""`mine bitext` in process against the same stage on a local process pool.

Builds ``--n`` scored candidates in parts of ``--part-rows`` (the scores layout, best
first) from real BUCC de-en sentences (random pairs plus the gold ones; about half
pass the threshold and reach the LID filter, the slowest one), then times
``write_bitext`` with the default filters, side by side in one run:

- executor None: every filter in this process, part after part (what `mine bitext`
  did before);
- ``LocalExecutor(w)``: the stateless filters (threshold ... LID) in a task per part
  on ``w`` spawned processes (each imports miner and loads the fastText model once),
  the stateful ones and the writing on the driver.

Checks that every run writes the same bytes, and prints wall seconds, candidates/s,
the ratio to the in-process run and the CPU seconds spent (driver and pool workers:
on a machine busy with other work the wall time says little, the CPU time shows the
pool's overhead), plus what starting a pool costs on its own.

    python benchmarks/bitext.py [--n 400000] [--part-rows 50000] [--workers 2,4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.config import Config  # noqa: E402
from miner.executor import LocalExecutor  # noqa: E402
from miner.outputs import SCORE_SCHEMA, bitext_dir, write_bitext  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bucc"


def sentences(data: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    def read(name):
        return dict(line.rstrip("\n").split("\t", 1)
                    for line in (data / name).read_text(encoding="utf-8").splitlines())

    de, en = read("de-en.training.de"), read("de-en.training.en")
    gold = [line.split("\t") for line in (data / "de-en.training.gold").read_text().splitlines()]
    return list(de.values()), list(en.values()), [(de[a], en[b]) for a, b in gold]


def make_scores(out: Path, n: int, part_rows: int, data: Path, seed: int = 0) -> None:
    de, en, gold = sentences(data)
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(de), n)
    tgt = rng.integers(0, len(en), n)
    src_text = [de[i] for i in src]
    tgt_text = [en[i] for i in tgt]
    is_gold = rng.random(n) < 0.3  # a third translations, the rest random pairs
    g = rng.integers(0, len(gold), n)
    for i in np.flatnonzero(is_gold):
        src_text[i], tgt_text[i] = gold[g[i]]
    ids = np.arange(n, dtype=np.uint64)
    table = pa.table({
        "src_id": pa.array(ids), "tgt_id": pa.array(ids + np.uint64(n)),
        "src_text": src_text, "tgt_text": tgt_text,
        "score": pa.array(np.linspace(1.6, 1.0, n)),  # best first; half above 1.30
        "direction": ["fwd"] * n,
        "src_doc_id": [f"d{i % 997}" for i in range(n)],
        "tgt_doc_id": [f"e{i % 991}" for i in range(n)],
        "src_title": ["Seite"] * n, "tgt_title": ["Page"] * n,
        "src_url": ["https://de.example.org/Seite"] * n, "tgt_url": ["https://en.example.org/Page"] * n,
        "src_revision": ["1"] * n, "tgt_revision": ["2"] * n,
        "src_position": pa.array(np.zeros(n, np.int32)), "tgt_position": pa.array(np.zeros(n, np.int32)),
        "src_source": ["bucc.de"] * n, "tgt_source": ["bucc.en"] * n,
        "src_lid_prob": pa.array(np.full(n, 0.9, np.float32)),
        "tgt_lid_prob": pa.array(np.full(n, 0.9, np.float32)),
    }, schema=SCORE_SCHEMA)
    d = out / "scores" / "de-en"
    d.mkdir(parents=True)
    for i in range(0, n, part_rows):
        pq.write_table(table.slice(i, part_rows), d / f"part-{i // part_rows:05d}.parquet",
                       compression="zstd")


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _load_lid(_):
    from miner.lid import cached_identifier

    cached_identifier()
    return os.getpid()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--part-rows", type=int, default=50_000)
    ap.add_argument("--workers", default=f"1,2,{len(os.sched_getaffinity(0))}")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no BUCC data at {args.data}", file=sys.stderr)
        return 2
    workers = sorted({int(w) for w in args.workers.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        make_scores(out, args.n, args.part_rows, args.data)
        parts = -(-args.n // args.part_rows)
        print(f"{args.n} candidates in {parts} part(s) of {args.part_rows}, "
              f"{len(os.sched_getaffinity(0))} usable core(s)")
        cfg = Config()
        runs = [("in process (executor None)", None)] + \
            [(f"LocalExecutor({w})", LocalExecutor(w)) for w in workers]
        ref, base = None, None
        for name, executor in runs:
            t, cpu = time.perf_counter(), _cpu()
            counts = write_bitext(cfg, out, "de", "en", executor)
            seconds, cpu = time.perf_counter() - t, _cpu() - cpu
            files = {p.name: p.read_bytes() for p in bitext_dir(out, "de", "en").iterdir()}
            if ref is None:
                ref, base = files, seconds
                print(f"kept {counts['kept']}; dropped {counts['dropped']}")
            same = files == ref
            print(f"{name:<28}{seconds:>8.2f} s {args.n / seconds:>10.0f} candidates/s "
                  f"ratio {base / seconds:>5.2f}x  CPU {cpu:>7.2f} s  same bytes: {same}")
            if not same:
                return 1
        for w in workers:
            if w > 1:
                t = time.perf_counter()
                LocalExecutor(w).map(_load_lid, list(range(w)))
                print(f"starting a pool of {w} and loading fastText in each: "
                      f"{time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
