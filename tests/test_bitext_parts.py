"""``write_bitext`` per scores part through the executor: the stateless filters in a
task per part, the stateful ones in one global pass on the driver. The files are
byte-identical for every executor (in process, tasks writing their survivors to files,
a spawned process pool) and every input batch size (``bitext.parquet`` too: its row
groups have a fixed size); the counts and the rows of every file equal one
pass of the public ``FilterPipeline.filter`` over all candidates of the pair at once;
the data card is ``data_card`` of those counts. On the mined examples split into
several score parts."""

import re
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
from miner.formats.scores import BATCH_ROWS, BITEXT_SCHEMA, SCORE_SCHEMA
from miner.outputs import bitext_dir, data_card, write_bitext, write_bitext_files
from miner.rundir import RunDir

NAMES = ("bitext.tsv.gz", "bitext.parquet", "README.md")


def score_parts(out, src, tgt) -> list:
    return RunDir.shards(RunDir(out).scores(src, tgt))


def one_pass(cfg, out, src, tgt, identifier=None):
    """``FilterPipeline.filter`` over every candidate of the pair at once: the pipeline
    (its totals, threshold, steps) and the kept rows."""
    candidates = pa.concat_tables(pq.read_table(p) for p in score_parts(out, src, tgt))
    pipeline = FilterPipeline.from_config(cfg, src, tgt, identifier=identifier)
    kept, _ = pipeline.filter(candidates.to_pandas())
    return pipeline, kept.reset_index(drop=True)


def one_line(texts: pd.Series) -> list:
    """Texts as the TSV and Moses files hold them: tabs and line breaks become spaces."""
    return [re.sub(r"[\t\r\n]", " ", t or "") for t in texts.tolist()]


def check_against_one_pass(cfg, out, src, tgt, counts, files, identifier=None) -> None:
    """The counts and every file of the bitext folder are those of ``one_pass``."""
    import gzip

    pipeline, kept = one_pass(cfg, out, src, tgt, identifier)
    assert counts == pipeline.counts
    assert list(counts["dropped"]) == [s.name for s in pipeline.steps]  # in the order applied
    expected = pa.Table.from_pandas(kept[BITEXT_SCHEMA.names], schema=BITEXT_SCHEMA,
                                    preserve_index=False)
    got = pq.read_table(bitext_dir(out, src, tgt) / "bitext.parquet")
    flat = got.select(BITEXT_SCHEMA.names)
    assert flat.schema == BITEXT_SCHEMA and flat.equals(expected)
    assert got.column("translation").to_pylist() == \
        [{src: a, tgt: b} for a, b in zip(kept["src_text"], kept["tgt_text"])]
    src_t, tgt_t = one_line(kept["src_text"]), one_line(kept["tgt_text"])
    assert gzip.decompress(files["bitext.tsv.gz"]).decode("utf-8").splitlines() == \
        [f"{s:.6f}\t{a}\t{b}" for s, a, b in zip(kept["score"].tolist(), src_t, tgt_t)]
    assert files[f"train.{src}"].decode("utf-8").split("\n") == [*src_t, ""]
    assert files[f"train.{tgt}"].decode("utf-8").split("\n") == [*tgt_t, ""]
    sources = Counter([f"{src}: {s}" for s in kept["src_source"].fillna("unknown")] +
                      [f"{tgt}: {s}" for s in kept["tgt_source"].fillna("unknown")])
    step = pipeline.step(LengthRatio.name)
    card = data_card(cfg, src, tgt, pipeline.counts, pipeline.threshold,
                     [step.lo, step.hi] if step else None, sources)
    assert files["README.md"].decode("utf-8") == card


@pytest.fixture(scope="module")
def mined(tmp_path_factory, muse):
    """The stages of `mine run` on the examples (de-en, fr-en), in this process (the
    encoder loaded once per session), with score parts of 20 candidates."""
    from miner.embed.stage import run_embed
    from miner.knn.stage import run_knn
    from miner.prepare import prepare
    from miner.score import run_score

    out = tmp_path_factory.mktemp("parts") / "out"
    cfg = Config(shard_size=20)
    langs = ["de", "en", "fr"]
    prepare(cfg, [str(EXAMPLES / "articles" / f"{lang}.jsonl") for lang in langs], langs, out,
            LocalExecutor(1))  # in process: a pool costs more than these inputs
    for lang in langs:
        run_embed(cfg, out, lang, muse)
    for src in ("de", "fr"):
        run_knn(cfg, out, src, "en")
        run_score(cfg, out, src, "en")
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
    files = {n: (d / n).read_bytes() for n in (*NAMES, f"train.{src}", f"train.{tgt}")}
    assert sorted(p.name for p in d.iterdir()) == sorted(files)  # no .parts, no temp files
    assert not [p for p in d.parent.iterdir() if p.name.startswith(f".{src}-{tgt}.")]
    return files


def stage(cfg, out, src, tgt, identifier=None) -> dict:
    """``write_bitext`` as `mine bitext` runs it (a local run filters in process)."""
    import shutil

    shutil.rmtree(bitext_dir(out, src, tgt), ignore_errors=True)  # not current: run it
    return write_bitext(cfg, out, src, tgt, identifier=identifier)


def on(executor, cfg, out, src, tgt, identifier=None) -> dict:
    """The stage's work with its part tasks on ``executor`` (their survivors go through
    files; a pool of two runs them in spawned processes)."""
    return write_bitext_files(cfg, RunDir(out), src, tgt, score_parts(out, src, tgt), executor,
                              identifier=identifier)[0]


@pytest.mark.parametrize("name", ["default", "stateful"])
def test_every_executor_and_batch_size_writes_the_one_pass_bytes_and_counts(
        mined, monkeypatch, name):
    cfg = configs()[name]
    for pair, out in mined.items():
        src, tgt = pair[:5].split("-")
        by_batch = {}
        for batch_rows in (BATCH_ROWS, 7):
            monkeypatch.setattr(outputs, "BATCH_ROWS", batch_rows)
            counts = stage(cfg, out, src, tgt)
            files = bitext_files(out, src, tgt)
            check_against_one_pass(cfg, out, src, tgt, counts, files)
            if name == "stateful" and pair == "de-en repeated":  # every stateful filter drops
                assert all(counts["dropped"][s] > 0 for s in
                           ("duplicate_pair", "not_one_to_one", "doc_pair_cap")), counts
            assert on(LocalExecutor(1), cfg, out, src, tgt) == counts, (name, pair, batch_rows)
            assert bitext_files(out, src, tgt) == files, (name, pair, batch_rows)
            by_batch[batch_rows] = files
        # the batches shape no file, bitext.parquet included (fixed row groups)
        a, b = by_batch.values()
        assert a == b, (name, pair, [n for n in a if a[n] != b[n]])


@pytest.mark.slow  # spawn pools are slow to start: once per config
def test_tasks_in_spawned_processes_write_the_same_bytes(mined, monkeypatch):
    monkeypatch.setattr(outputs, "BATCH_ROWS", 7)
    out = mined["de-en repeated"]
    for name, cfg in configs().items():
        counts = stage(cfg, out, "de", "en")
        files = bitext_files(out, "de", "en")
        assert on(LocalExecutor(2), cfg, out, "de", "en") == counts, name
        assert bitext_files(out, "de", "en") == files, name


class PickledLid:
    """A picklable stand-in for fastText: only German is German, all else is English."""

    def predict_top(self, text, k=5):
        return [("de", 0.99)] if any(w in text for w in ("der", "die", "das", "Der", "Die", "Das")) \
            else [("en", 0.99)]


@pytest.mark.parametrize("workers", [None, 1])
def test_identifier_replaces_lid_in_process(mined, workers):
    mined = mined["de-en"]
    cfg = Config()
    if workers is None:
        counts = stage(cfg, mined, "de", "en", identifier=PickledLid())
    else:
        counts = on(LocalExecutor(workers), cfg, mined, "de", "en", identifier=PickledLid())
    check_against_one_pass(cfg, mined, "de", "en", counts, bitext_files(mined, "de", "en"),
                           identifier=PickledLid())
    _, fasttext = one_pass(cfg, mined, "de", "en")
    _, stand_in = one_pass(cfg, mined, "de", "en", identifier=PickledLid())
    assert len(fasttext) != len(stand_in)  # the identifier made a difference


def test_a_failing_task_leaves_no_parts_and_no_outputs(mined, monkeypatch):
    mined = mined["de-en"]
    stage(Config(), mined, "de", "en")
    d = bitext_dir(mined, "de", "en")
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def boom(self, df):
        raise RuntimeError("keys failed")

    monkeypatch.setattr(PairDedup, "keys", boom)
    with pytest.raises(RuntimeError, match="keys failed"):
        on(LocalExecutor(1), Config(), mined, "de", "en")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # old outputs intact
    assert not RunDir(mined).bitext_parts("de", "en").exists()


def test_stateful_steps_run_on_keys_as_on_frames():
    df = pd.DataFrame({"src_text": ["A b.", "a B", "c", "c"], "tgt_text": ["x", "X!", "y", "y"],
                       "src_id": [1, 2, 3, 3], "tgt_id": [7, 8, 9, 9],
                       "src_doc_id": ["d", "d", None, None], "tgt_doc_id": ["e", "e", None, None]})
    cfg = Config()
    cfg.filters.one_to_one = True
    cfg.filters.max_pairs_per_doc = 1
    for f in ("drop_junk", "drop_copies", "length_ratio", "number_mismatch", "lid_agreement",
              "drop_boilerplate", "script_agreement"):
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
