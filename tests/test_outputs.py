"""``write_bitext``: outputs read back by pandas, pyarrow and datasets, equal row counts,
byte-identical reruns, data card and manifest counts."""

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.manifest import read_manifest
from miner.formats.scores import BITEXT_SCHEMA
from miner.outputs import SCORE_SCHEMA, bitext_dir, write_bitext

GOOD = [
    ("Das Haus steht am Ende der langen Straße.", "The house stands at the end of the long street."),
    ("Der Zug nach Berlin hatte heute Verspätung.", "The train to Berlin was late today."),
    ("Sie wurde im Jahr 1950 in Hamburg geboren.", "She was born in Hamburg in 1950."),
    ("Die Kinder spielen im Garten Fußball.", "The children are playing football in the garden."),
    ("Wir haben gestern einen neuen Kühlschrank gekauft.", "We bought a new fridge yesterday."),
    ("Das Museum ist montags geschlossen.", "The museum is closed on Mondays."),
    ("Der Fluss ist im Frühling oft über die Ufer getreten.",
     "In spring the river often burst its banks."),
    ("Er trinkt jeden Morgen zwei Tassen Kaffee.", "He drinks two cups of coffee every morning."),
]
BAD = [
    ("https://example.com/de", "https://example.com/en"),  # junk
    ("Sie wurde im Jahr 1950 in Hamburg geboren.", "She was born in Hamburg in 1960."),  # numbers
    ("Das Haus steht am Ende der langen Straße.", "The house stands at the end of the long street!"),
    ("Ja.", "Yes, this is certainly the correct answer to that question."),  # length
]


def scores_table(rows, start=0, score0=1.6, src_source="dewiki.xml.bz2",
                 tgt_source="enwiki.xml.bz2"):
    """Scored candidates of the scores layout; provenance columns not set here are
    null."""
    n = len(rows)
    given = {
        "src_id": pa.array(np.arange(start, start + n), pa.uint64()),
        "tgt_id": pa.array(np.arange(1000 + start, 1000 + start + n), pa.uint64()),
        "src_text": [r[0] for r in rows], "tgt_text": [r[1] for r in rows],
        "score": pa.array([score0 - 0.01 * i for i in range(n)], pa.float64()),
        "direction": ["both" if i % 2 else "fwd" for i in range(n)],
        "src_doc_id": [f"de-doc-{i % 3}" for i in range(n)],
        "tgt_doc_id": [f"en-doc-{i % 3}" for i in range(n)],
        "src_source": [src_source] * n, "tgt_source": [tgt_source] * n,
        "src_lid_prob": pa.array([0.9] * n, pa.float32()),
        "tgt_lid_prob": pa.array([0.95] * n, pa.float32()),
    }
    return pa.table({f.name: given.get(f.name, pa.nulls(n, f.type)) for f in SCORE_SCHEMA},
                    schema=SCORE_SCHEMA)


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "work" / "scores" / "de-en"
    d.mkdir(parents=True)
    rows = GOOD[:4] + BAD[:2]
    pq.write_table(scores_table(rows), d / "part-00000.parquet")
    rest = GOOD[4:] + BAD[2:]
    pq.write_table(scores_table(rest, start=len(rows), score0=1.5), d / "part-00001.parquet")
    # a candidate below the default threshold (1.30 for mUSE ratio)
    pq.write_table(scores_table([("Ein Satz.", "A sentence.")], start=100, score0=1.1),
                   d / "part-00002.parquet")
    return tmp_path / "work"


def test_outputs_hold_the_same_rows_in_every_format(workdir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counts = write_bitext(Config(), workdir, "de", "en")
    out = bitext_dir(workdir, "de", "en")
    assert counts["candidates"] == 13
    assert counts["kept"] == len(GOOD)
    assert counts["dropped"]["below_threshold"] == 1
    assert counts["dropped"]["junk"] == 1
    assert counts["dropped"]["number_mismatch"] == 1
    assert counts["dropped"]["length_ratio"] == 1
    assert counts["dropped"]["duplicate_pair"] == 1

    tsv = pd.read_csv(out / "bitext.tsv.gz", sep="\t", header=None, quoting=3,
                      names=["score", "src", "tgt"])
    table = pq.read_table(out / "bitext.parquet")
    frame = pd.read_parquet(out / "bitext.parquet")
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "bitext.parquet"), split="train",
                      cache_dir=str(workdir / "hf-cache"))
    src_lines = (out / "train.de").read_text(encoding="utf-8").splitlines()
    tgt_lines = (out / "train.en").read_text(encoding="utf-8").splitlines()
    n = counts["kept"]
    assert len(tsv) == table.num_rows == len(frame) == ds.num_rows == len(src_lines) \
        == len(tgt_lines) == n
    assert tsv["src"].tolist() == src_lines == frame["src_text"].tolist() == ds["src_text"]
    assert tsv["tgt"].tolist() == tgt_lines == frame["tgt_text"].tolist()
    assert frame["score"].is_monotonic_decreasing  # best first
    assert np.allclose(tsv["score"], frame["score"], atol=1e-6)
    assert ds.column_names == [*BITEXT_SCHEMA.names, "translation"]
    assert ds["translation"] == [{"de": a, "en": b} for a, b in zip(src_lines, tgt_lines)]
    assert table.schema.field("src_id").type == pa.uint64()
    assert set(frame["direction"]) <= {"fwd", "bwd", "both"}


def test_rerun_is_byte_identical(workdir):
    write_bitext(Config(), workdir, "de", "en")
    out = bitext_dir(workdir, "de", "en")
    names = ["bitext.tsv.gz", "bitext.parquet", "train.de", "train.en", "README.md"]
    first = {n: (out / n).read_bytes() for n in names}
    write_bitext(Config(), workdir, "de", "en")
    assert {n: (out / n).read_bytes() for n in names} == first
    assert gzip.decompress(first["bitext.tsv.gz"]).decode().count("\n") == len(GOOD)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_manifest_and_data_card_record_the_counts(workdir):
    cfg = Config()
    cfg.score.threshold = 1.0
    cfg.filters.max_pairs_per_doc = 2
    counts = write_bitext(cfg, workdir, "de", "en")
    stage = read_manifest(workdir)["stages"]["bitext/de-en"]
    assert stage["counts"] == counts and stage["finished"]
    assert stage["finish"]["data"]["threshold"] == 1.0
    assert stage["finish"]["data"]["length_ratio_bounds"] == [0.5, 2.0]
    assert counts["dropped"]["doc_pair_cap"] > 0
    card = (bitext_dir(workdir, "de", "en") / "README.md").read_text(encoding="utf-8")
    assert f"{counts['kept']} kept of {counts['candidates']}" in card
    assert "Score threshold: 1" in card and "muse" in card and "dewiki.xml.bz2" in card
    assert "Licence" in card


def test_filters_switched_off_keep_more(workdir):
    cfg = Config()
    for name in ("lid_agreement", "drop_copies", "number_mismatch", "drop_junk", "pair_dedup",
                 "length_ratio", "drop_boilerplate", "script_agreement"):
        setattr(cfg.filters, name, False)
    cfg.score.threshold = 0.0
    counts = write_bitext(cfg, workdir, "de", "en")
    assert counts["kept"] == counts["candidates"] == 13
    assert list(counts["dropped"]) == ["below_threshold"]


def test_missing_scores_is_a_user_error(tmp_path):
    with pytest.raises(MinerError, match="mine score"):
        write_bitext(Config(), tmp_path, "de", "en")


def test_scores_missing_a_column_is_a_user_error(workdir):
    part = workdir / "scores" / "de-en" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop(["tgt_doc_id"]), part)
    with pytest.raises(MinerError, match="tgt_doc_id"):
        write_bitext(Config(), workdir, "de", "en")
