"""What the stage contract costs: the runner's bookkeeping against the work itself.

The runner describes every file a task writes (size, Parquet row count, xxh64 of the
bytes) and checks recorded files on every rerun. This script runs `mine run` once on
real sentences (the BUCC de-en training split from ../shared/data, else the bundled
examples), then reruns it, and prints side by side in one run:

- the whole run, and the part of it spent describing outputs (the new cost);
- a rerun with everything current (what "up to date" costs), against the full run;
- a rerun after one sentence shard was deleted (prepare's finishing pass redone,
  everything after it skipped by digest), against the full run.

    .venv/bin/python benchmarks/runner.py [--shard-size 500]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def inputs(directory: Path) -> list[str]:
    bucc = REPO.parent / "shared" / "data" / "bucc"
    if not bucc.exists():
        return [str(REPO / "examples" / "articles" / f"{x}.jsonl") for x in ("de", "en")]
    out = []
    for lang in ("de", "en"):
        lines = (bucc / f"de-en.training.{lang}").read_text(encoding="utf-8").splitlines()
        path = directory / f"bucc.{lang}.txt"
        path.write_text("\n".join(x.split("\t", 1)[1] for x in lines) + "\n", encoding="utf-8")
        out.append(str(path))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args()

    import miner.stage as stage
    from miner.config import Config
    from miner.pipeline import run_pipeline

    spent = [0.0, 0]
    real_describe = stage.describe_file

    def timed_describe(path):
        t = time.perf_counter()
        try:
            return real_describe(path)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    stage.describe_file = timed_describe
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = Config(out=str(tmp / "run"), pairs=["de-en"], inputs=inputs(tmp),
                     shard_size=args.shard_size).validate()
        quiet = lambda m: None  # noqa: E731
        run_pipeline(cfg, quiet)  # warm: model load, imports, page cache
        shutil.rmtree(tmp / "run")
        spent[:] = [0.0, 0]
        t = time.perf_counter()
        run_pipeline(cfg, quiet)
        full = time.perf_counter() - t
        described, files = spent
        t = time.perf_counter()
        run_pipeline(cfg, quiet)
        noop = time.perf_counter() - t
        (tmp / "run" / "sentences" / "de" / "part-00001.parquet").unlink()
        t = time.perf_counter()
        run_pipeline(cfg, quiet)
        repair = time.perf_counter() - t
    print(f"inputs: {', '.join(Path(p).name for p in cfg.inputs)}, shard size {args.shard_size}")
    print(f"full run                   {full:8.2f} s")
    print(f"  describing {files:4d} outputs  {described:8.3f} s   {100 * described / full:5.2f}% of the run")
    print(f"rerun, all current         {noop:8.2f} s   {noop / full:5.3f}x the full run")
    print(f"rerun, one shard deleted   {repair:8.2f} s   {repair / full:5.3f}x the full run")


if __name__ == "__main__":
    main()
