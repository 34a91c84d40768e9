"""``write_bitext`` per scores part through the executor: the stateless filters in a
task per part, the stateful ones in one global pass on the driver. Files (bytes) and
counts equal the former single pass of ``FilterPipeline.filter`` (kept below as
``reference_bitext``) for executor None, ``LocalExecutor(1)`` and ``LocalExecutor(2)``,
on the mined examples split into several score parts."""

import contextlib
import subprocess
import sys
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES, REPO

from miner import outputs
from miner.config import Config
from miner.executor import LocalExecutor
from miner.filters import FilterPipeline, LengthRatio, PairDedup, StatefulStep
from miner.io import atomic_open, atomic_path
from miner.outputs import (BITEXT_SCHEMA, SCORE_SCHEMA, _clean, _to_arrow, bitext_dir, data_card,
                           read_score_batches, score_parts, write_bitext)

NAMES = ("bitext.tsv.gz", "bitext.parquet", "README.md")


def reference_bitext(cfg, out_dir, src, tgt, dest, batch_rows, identifier=None) -> dict:
    """The single-pass ``write_bitext`` this change replaced (outputs into ``dest``)."""
    parts = score_parts(out_dir, src, tgt)
    pipeline = FilterPipeline.from_config(cfg, src, tgt, identifier=identifier)
    paths = {"tsv": dest / "bitext.tsv.gz", "src": dest / f"train.{src}",
             "tgt": dest / f"train.{tgt}", "parquet": dest / "bitext.parquet"}
    sources: Counter = Counter()
    with contextlib.ExitStack() as stack:
        tsv = stack.enter_context(atomic_open(paths["tsv"], "w", encoding="utf-8", newline="\n"))
        src_f = stack.enter_context(atomic_open(paths["src"], "w", encoding="utf-8", newline="\n"))
        tgt_f = stack.enter_context(atomic_open(paths["tgt"], "w", encoding="utf-8", newline="\n"))
        pq_tmp = stack.enter_context(atomic_path(paths["parquet"]))
        writer = stack.enter_context(pq.ParquetWriter(pq_tmp, BITEXT_SCHEMA, compression="zstd"))
        for batch in read_score_batches(parts, batch_rows=batch_rows):
            kept, _ = pipeline.filter(batch.to_pandas())
            if not len(kept):
                continue
            src_t, tgt_t = _clean(kept["src_text"]), _clean(kept["tgt_text"])
            tsv.writelines(f"{s:.6f}\t{a}\t{b}\n"
                           for s, a, b in zip(kept["score"].tolist(), src_t, tgt_t))
            src_f.writelines(f"{a}\n" for a in src_t)
            tgt_f.writelines(f"{b}\n" for b in tgt_t)
            writer.write_table(_to_arrow(kept))
            sources.update(f"{src}: {s}" for s in kept["src_source"].fillna("unknown"))
            sources.update(f"{tgt}: {s}" for s in kept["tgt_source"].fillna("unknown"))
        if pipeline.counts["kept"] == 0:
            writer.write_table(_to_arrow(pd.DataFrame()))
    step = pipeline.step(LengthRatio.name)
    bounds = [step.lo, step.hi] if step else None
    (dest / "README.md").write_text(data_card(cfg, src, tgt, pipeline.counts, pipeline.threshold,
                                              bounds, sources), encoding="utf-8")
    return pipeline.counts


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """`mine run` on the examples (de-en, fr-en) with score parts of 20 candidates."""
    out = tmp_path_factory.mktemp("parts") / "out"
    p = subprocess.run([sys.executable, "-m", "miner", "run",
                        *sorted((EXAMPLES / "articles").glob("*.jsonl")), "--pair", "de-en",
                        "--pair", "fr-en", "--out", str(out), "--shard-size", "20"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr
    for pair in ("de-en", "fr-en"):
        assert len(list((out / "scores" / pair).glob("part-*.parquet"))) >= 3
    # the same de-en candidates with every third one repeated (as when two documents
    # hold the same sentences) and every fifth one repeated with another target, in
    # parts of 25: pair dedup and one-to-one across parts
    df = pq.read_table(sorted((out / "scores" / "de-en").glob("part-*.parquet"))).to_pandas()
    rows = []
    for i, row in enumerate(df.to_dict("records")):
        rows.append(row)
        if i % 3 == 0:
            rows.append(dict(row))
        if i % 5 == 0:
            rows.append({**row, "tgt_text": row["tgt_text"] + " Really.", "tgt_id": i})
    table = pa.Table.from_pandas(pd.DataFrame(rows), schema=SCORE_SCHEMA, preserve_index=False)
    dups = out.parent / "dups"
    (dups / "scores" / "de-en").mkdir(parents=True)
    for i in range(0, table.num_rows, 25):
        pq.write_table(table.slice(i, 25), dups / "scores" / "de-en" / f"part-{i // 25:05d}.parquet")
    return {"de-en": out, "fr-en": out, "de-en repeated": dups}


def configs():
    default = Config()  # threshold 1.30, dedup on: the `mine run` defaults
    loose = Config()  # every candidate through to the stateful filters, all of them on
    loose.score.threshold = 0.0
    loose.filters.one_to_one = True
    loose.filters.max_pairs_per_doc = 2
    return {"default": default, "stateful": loose}


def bitext_files(out, src, tgt) -> dict:
    d = bitext_dir(out, src, tgt)
    return {n: (d / n).read_bytes() for n in (*NAMES, f"train.{src}", f"train.{tgt}")}


@pytest.mark.parametrize("batch_rows", [outputs.BATCH_ROWS, 7])
def test_every_executor_writes_the_single_pass_bytes_and_counts(mined, tmp_path, monkeypatch,
                                                                 batch_rows):
    monkeypatch.setattr(outputs, "BATCH_ROWS", batch_rows)
    for name, cfg in configs().items():
        for pair, out in mined.items():
            src, tgt = pair[:5].split("-")
            ref = tmp_path / "ref" / name / pair
            ref_counts = reference_bitext(cfg, out, src, tgt, ref, batch_rows)
            expected = {n: (ref / n).read_bytes() for n in
                        (*NAMES, f"train.{src}", f"train.{tgt}")}
            if name == "stateful" and pair == "de-en repeated":  # every stateful filter drops
                assert all(ref_counts["dropped"][s] > 0 for s in
                           ("duplicate_pair", "not_one_to_one", "doc_pair_cap")), ref_counts
            executors = [None, LocalExecutor(1)]
            if batch_rows == 7 and pair == "de-en repeated":  # spawn pools are slow to start: once per config
                executors.append(LocalExecutor(2))
            for executor in executors:
                counts = write_bitext(cfg, out, src, tgt, executor)
                assert counts == ref_counts, (name, pair, executor)
                assert list(counts["dropped"]) == list(ref_counts["dropped"])
                got = bitext_files(out, src, tgt)
                for n in expected:
                    assert got[n] == expected[n], (name, pair, executor, n)
                assert not [p for p in bitext_dir(out, src, tgt).iterdir()
                            if p.name.startswith(".")]  # no .parts, no temp files


class PickledLid:
    """A picklable stand-in for fastText: only German is German, all else is English."""

    def predict_top(self, text, k=5):
        return [("de", 0.99)] if any(w in text for w in ("der", "die", "das", "Der", "Die", "Das")) \
            else [("en", 0.99)]


@pytest.mark.parametrize("workers", [None, 1])
def test_identifier_replaces_lid_in_process(mined, tmp_path, workers):
    mined = mined["de-en"]
    cfg = Config()
    executor = None if workers is None else LocalExecutor(workers)
    ref = reference_bitext(cfg, mined, "de", "en", tmp_path / "ref", outputs.BATCH_ROWS,
                           identifier=PickledLid())
    counts = write_bitext(cfg, mined, "de", "en", executor, identifier=PickledLid())
    assert counts == ref
    assert (tmp_path / "ref" / "bitext.tsv.gz").read_bytes() == \
        (bitext_dir(mined, "de", "en") / "bitext.tsv.gz").read_bytes()


def test_a_failing_task_leaves_no_parts_and_no_outputs(mined, monkeypatch):
    mined = mined["de-en"]
    d = bitext_dir(mined, "de", "en")
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def boom(self, df):
        raise RuntimeError("keys failed")

    monkeypatch.setattr(PairDedup, "keys", boom)
    with pytest.raises(RuntimeError, match="keys failed"):
        write_bitext(Config(), mined, "de", "en", LocalExecutor(1))
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # old outputs intact


def test_stateful_steps_run_on_keys_as_on_frames():
    df = pd.DataFrame({"src_text": ["A b.", "a B", "c", "c"], "tgt_text": ["x", "X!", "y", "y"],
                       "src_id": [1, 2, 3, 3], "tgt_id": [7, 8, 9, 9],
                       "src_doc_id": ["d", "d", None, None], "tgt_doc_id": ["e", "e", None, None]})
    cfg = Config()
    cfg.filters.one_to_one = True
    cfg.filters.max_pairs_per_doc = 1
    for f in ("drop_junk", "drop_copies", "length_ratio", "number_mismatch", "lid_agreement"):
        setattr(cfg.filters, f, False)
    pipe = FilterPipeline.from_config(cfg, "de", "en", use_threshold=False)
    stateless, stateful = pipe.split()
    assert stateless == [] and all(isinstance(s, StatefulStep) for s in stateful)
    keep, counts = pipe.run_stateful(pipe.stateful_keys(df), len(df))
    frames = FilterPipeline.from_config(cfg, "de", "en", use_threshold=False)
    kept, expected = frames.filter(df)
    assert keep.tolist() == [True, False, True, False]
    assert df[keep].index.tolist() == kept.index.tolist()
    assert counts["dropped"] == expected["dropped"]


def test_benchmark_runs_small_and_every_executor_writes_the_same_bytes():
    from conftest import shared_data

    data = shared_data("bucc")
    p = subprocess.run([sys.executable, "benchmarks/bitext.py", "--n", "3000", "--part-rows",
                        "1000", "--workers", "1", "--data", str(data)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("same bytes: True") == 2, p.stdout
