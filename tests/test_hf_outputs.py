"""The bitext folder as a Hugging Face dataset: ``datasets.load_dataset(<folder>)``
through the data card's YAML front matter, the language-keyed ``translation`` column,
the ``miner`` schema metadata of ``bitext.parquet``, and a card that names sources by
file name or URL, never by a path of this machine."""

import re

import pyarrow.parquet as pq
import pytest
import yaml

import miner
from miner.config import Config
from miner.formats.scores import bitext_metadata
from miner.manifest import read_manifest
from miner.outputs import bitext_dir, data_card, size_category, write_bitext

from conftest import EXAMPLES
from test_outputs import BAD, GOOD, scores_table


def write_scores(work, src, tgt, rows, **sources):
    d = work / "scores" / f"{src}-{tgt}"
    d.mkdir(parents=True)
    pq.write_table(scores_table(rows, **sources), d / "part-00000.parquet")


def front_matter(card: str) -> dict:
    m = re.match(r"---\n(.*?\n)---\n", card, re.S)
    assert m, card[:200]
    return yaml.safe_load(m.group(1))


def load_folder(path, cache):
    """``datasets.load_dataset(<folder>)``, offline, split train."""
    from datasets import load_dataset

    return load_dataset(str(path), cache_dir=str(cache))["train"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_bitext_folder_loads_with_datasets(tmp_path, offline):
    from datasets import Translation

    work = tmp_path / "work"
    write_scores(work, "de", "en", GOOD + BAD)
    counts = write_bitext(Config(), work, "de", "en")
    out = bitext_dir(work, "de", "en")
    ds = load_folder(out, tmp_path / "hf-cache")
    src = (out / "train.de").read_text(encoding="utf-8").splitlines()
    tgt = (out / "train.en").read_text(encoding="utf-8").splitlines()
    assert ds.num_rows == counts["kept"] == len(src) > 0
    assert ds.features["translation"] == Translation(languages=["de", "en"])
    assert ds["translation"] == [{"de": a, "en": b} for a, b in zip(src, tgt)]
    assert ds["src_text"] == src and ds["score"] == sorted(ds["score"], reverse=True)


def test_translation_is_keyed_by_language_whichever_side_is_the_source(tmp_path, offline):
    """Pair en-de: English is the source; the keys are the codes, in code order (the
    order of ``datasets.Translation``), so de-en and en-de bitext concatenate."""
    work = tmp_path / "work"
    write_scores(work, "en", "de", [(b, a) for a, b in GOOD])
    write_bitext(Config(), work, "en", "de")
    out = bitext_dir(work, "en", "de")
    table = pq.read_table(out / "bitext.parquet")
    assert [f.name for f in table.schema.field("translation").type] == ["de", "en"]
    rows = table.select(["src_text", "tgt_text", "translation"]).to_pylist()
    assert rows and all(r["translation"] == {"en": r["src_text"], "de": r["tgt_text"]}
                        for r in rows)
    assert load_folder(out, tmp_path / "hf-cache")["translation"] == \
        [r["translation"] for r in rows]


def test_the_parquet_metadata_says_how_the_pairs_were_mined(tmp_path):
    work = tmp_path / "work"
    write_scores(work, "de", "en", GOOD + BAD)
    cfg = Config()
    cfg.knn.k = 6
    cfg.score.margin = "distance"
    cfg.score.threshold = 0.05
    cfg.filters.one_to_one = True
    write_bitext(cfg, work, "de", "en")
    schema = pq.read_schema(bitext_dir(work, "de", "en") / "bitext.parquet")
    meta = bitext_metadata(schema)
    recorded = read_manifest(work)["stages"]["bitext/de-en"]["finish"]["data"]
    assert meta["languages"] == ["de", "en"]
    assert (meta["source_language"], meta["target_language"]) == ("de", "en")
    assert (meta["encoder"], meta["model"]) == ("muse", None)
    assert (meta["margin"], meta["k"], meta["retrieval"]) == ("distance", 6, cfg.score.retrieval)
    assert meta["threshold"] == recorded["threshold"] == 0.05
    assert meta["filters"] == recorded["filters"] and "not_one_to_one" in meta["filters"]
    assert meta["length_ratio_bounds"] == recorded["length_ratio_bounds"]
    assert meta["scorer"] is None and meta["miner_version"] == miner.__version__
    assert "huggingface" in {k.decode() for k in schema.metadata}


def test_the_card_front_matter_is_hugging_face_metadata(tmp_path):
    work = tmp_path / "work"
    write_scores(work, "de", "en", GOOD + BAD)
    counts = write_bitext(Config(), work, "de", "en")
    card = (bitext_dir(work, "de", "en") / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["language"] == ["de", "en"]
    assert meta["license"] == "other"
    assert re.search(r"^#.*licen[cs]e.*sources", card, re.M | re.I)  # set it yourself
    assert meta["task_categories"] == ["translation"]
    assert meta["size_categories"] == [size_category(counts["kept"])] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "bitext.parquet"}]}]
    assert {"bitext", "parallel-corpus"} <= set(meta["tags"])
    assert "\ntags:\n- bitext\n" in card  # one tag a line
    assert card.split("---\n", 2)[2].lstrip().startswith("# Mined bitext de-en")


@pytest.mark.parametrize("n, bucket", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"),
                                       (99_999, "10K<n<100K"), (2_500_000, "1M<n<10M"),
                                       (10**12 - 1, "100B<n<1T"), (10**12, "n>1T")])
def test_size_categories_are_the_hub_buckets(n, bucket):
    assert size_category(n) == bucket


def test_a_language_code_yaml_reads_as_a_boolean_stays_a_string():
    """pyyaml (which ``datasets`` uses) reads a bare ``no`` (Norwegian) as false."""
    counts = {"kept": 0, "candidates": 0, "dropped": {}}
    card = data_card(Config(), "no", "en", counts, None, None, {})
    assert front_matter(card)["language"] == ["no", "en"]


def test_the_card_names_sources_by_file_name_or_url(tmp_path):
    work = tmp_path / "work"
    local = tmp_path / "inputs" / "dewiki-20240101.xml.bz2"
    url = "https://dumps.example.org/enwiki/enwiki-20240101.xml.bz2"
    write_scores(work, "de", "en", GOOD, src_source=str(local), tgt_source=url)
    write_bitext(Config(), work, "de", "en")
    out = bitext_dir(work, "de", "en")
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"de: {local.name}:" in card and f"en: {url}:" in card
    assert str(tmp_path) not in card and str(tmp_path.resolve()) not in card
    assert str(tmp_path) not in str(pq.read_schema(out / "bitext.parquet").metadata)


@pytest.mark.slow
def test_mine_run_writes_a_folder_datasets_loads(tmp_path, offline):
    """``mine run`` over the example corpora given by absolute path: the card names
    the input files only and the folder loads with ``datasets``."""
    from miner.pipeline import run_pipeline

    inputs = [str((EXAMPLES / f"corpus.{lang}.txt").resolve()) for lang in ("de", "en")]
    cfg = Config(out=str(tmp_path / "run"), pairs=["de-en"], inputs=inputs)
    cfg.prepare.workers = 1
    cfg.validate()
    counts = run_pipeline(cfg, progress=lambda m: None)["pairs"]["de-en"]
    out = bitext_dir(tmp_path / "run", "de", "en")
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "corpus.de.txt" in card and "corpus.en.txt" in card
    assert str(EXAMPLES.resolve()) not in card and str(tmp_path) not in card
    ds = load_folder(out, tmp_path / "hf-cache")
    assert ds.num_rows == counts["kept"] > 0
    assert ds["translation"] == [{"de": a, "en": b} for a, b in zip(ds["src_text"], ds["tgt_text"])]
