"""The prepare stage and the ``mine prepare`` command: shards, dedup, resume, errors."""

import bz2
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import miner.prepare as prepare_mod
from miner.cli import main
from miner.config import Config
from miner.errors import MinerError
from miner.prepare import prepare
from miner.sentences import sentence_hash

EN = ["The weather in London is rainy today.", "My brother works at the central library.",
      "We will travel to the mountains next summer.", "She reads a book every evening."]
DE = ["Das Wetter in Berlin ist heute sehr schlecht.", "Mein Bruder arbeitet in der Bibliothek.",
      "Wir fahren im nächsten Sommer in die Berge.", "Sie liest jeden Abend ein Buch."]


@pytest.fixture
def inputs(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    # documents mix languages; b repeats two of a's sentences and adds a short one
    a.write_text(f"{EN[0]} {EN[1]}\n{DE[0]} {DE[1]}\n{EN[2]}\n", encoding="utf-8")
    b.write_text(f"{EN[0]} Short.\n{DE[1]} {DE[2]} {DE[3]}\n{EN[3]} {EN[1]}\n", encoding="utf-8")
    return [str(a), str(b)]


def read_lang(out: Path, lang: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / "sentences" / lang).glob("part-*.parquet")))


def config(**prepare_settings) -> Config:
    cfg = Config(shard_size=2)
    cfg.prepare.workers = 1
    for k, v in prepare_settings.items():
        setattr(cfg.prepare, k, v)
    return cfg


def test_shards_columns_dedup_and_counts(tmp_path, inputs):
    out = tmp_path / "out"
    counts = prepare(config(), inputs, ["eng", "deu"], out)
    en, de = read_lang(out, "en"), read_lang(out, "de")
    assert en.column("text").to_pylist() == [EN[0], EN[1], EN[2], EN[3]]
    assert de.column("text").to_pylist() == [DE[0], DE[1], DE[2], DE[3]]
    assert en.schema.field("id").type == pa.uint64()
    assert en.schema.names == ["id", "text", "lang", "lid_prob", "source", "doc_id", "title",
                               "url", "revision", "position"]
    assert en.column("id").to_pylist() == [sentence_hash(t) for t in EN]
    assert set(en.column("lang").to_pylist()) == {"en"}
    assert min(en.column("lid_prob").to_pylist()) >= 0.5
    # the file name, never the absolute path of the input
    assert en.column("source").to_pylist() == ["a.txt"] * 3 + ["b.txt"]
    assert set(en.column("title").to_pylist()) == set(en.column("url").to_pylist()) == {None}
    assert en.column("position").to_pylist() == [0, 1, 0, 0]
    assert sorted(p.name for p in (out / "sentences" / "en").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert counts["en"]["duplicate"] == 2 and counts["en"]["kept"] == 4  # EN[0] and EN[1] again
    assert counts["de"]["duplicate"] == 1 and counts["de"]["kept"] == 4
    assert counts["en"]["too_short"] + counts["de"]["too_short"] == 1
    total = counts["en"]["documents"] + counts["de"]["documents"]
    assert total == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["prepare"]["counts"] == counts
    assert manifest["stages"]["prepare"]["finished"]


def test_output_is_byte_identical_whatever_the_workers(tmp_path, inputs):
    prepare(config(workers=1), inputs, ["en", "de"], tmp_path / "one")
    prepare(config(workers=2), inputs, ["en", "de"], tmp_path / "two")
    for lang in ("en", "de"):
        one = sorted((tmp_path / "one" / "sentences" / lang).glob("*.parquet"))
        two = sorted((tmp_path / "two" / "sentences" / lang).glob("*.parquet"))
        assert [p.name for p in one] == [p.name for p in two]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))


def test_rerun_skips_completed_inputs(tmp_path, inputs, monkeypatch):
    out = tmp_path / "out"
    first = prepare(config(), inputs, ["en", "de"], out)
    before = {p: p.read_bytes() for p in (out / "sentences").rglob("*.parquet")}
    calls = []
    real = prepare_mod.prepare_file
    monkeypatch.setattr(prepare_mod, "prepare_file", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    assert prepare(config(), inputs, ["en", "de"], out) == first
    assert calls == []
    assert {p: p.read_bytes() for p in (out / "sentences").rglob("*.parquet")} == before
    Path(inputs[1]).write_text(EN[3] + "\n", encoding="utf-8")  # a changed input is redone
    prepare(config(), inputs, ["en", "de"], out)
    assert calls == [inputs[1]]


def test_no_lid_and_thresholds(tmp_path, inputs):
    counts = prepare(config(no_lid=True), inputs, ["en"], tmp_path / "nolid")
    assert counts["en"]["wrong_language"] == 0
    assert read_lang(tmp_path / "nolid", "en").column("lid_prob").null_count > 0
    strict = prepare(config(lid_thresholds={"deu": 0.99}), inputs, ["en", "de"], tmp_path / "strict")
    assert strict["de"]["kept"] == 3  # "Mein Bruder arbeitet in der Bibliothek." scores 0.96
    assert min(read_lang(tmp_path / "strict", "de").column("lid_prob").to_pylist()) >= 0.99
    with pytest.raises(MinerError, match="between 0 and 1"):
        prepare(config(lid_threshold=1.5), inputs, ["en"], tmp_path / "x")
    with pytest.raises(MinerError, match="exactly one --lang"):
        prepare(config(no_lid=True), inputs, ["en", "de"], tmp_path / "x")
    with pytest.raises(MinerError, match="not known to the LID model"):
        prepare(config(), inputs, ["tlh"], tmp_path / "x")


def test_real_wiki_page_end_to_end(tmp_path):
    page = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia" / "pages" / "dewiki-20130602-id1.xml"
    if not page.exists():
        pytest.skip(f"real Wikipedia page not found at {page}")
    counts = prepare(config(), [str(page)], ["de"], tmp_path / "out")
    table = read_lang(tmp_path / "out", "de")
    assert counts["de"]["kept"] == table.num_rows > 20
    assert set(table.column("title").to_pylist()) == {"Alan Smithee"}
    assert set(table.column("doc_id").to_pylist()) == {"1"}
    assert set(table.column("revision").to_pylist()) == {"115887164"}
    assert set(table.column("url").to_pylist()) == {None}  # a bare <page>: no <siteinfo><base>


# -- one sentence per line --------------------------------------------------------------

def test_bucc_sentence_lines_are_kept_whole(tmp_path):
    """A BUCC-style file (``de-000000001<TAB>sentence``) with --format sentences: no line
    is split (101 of its 1,152 lines are split by the sentence splitter, 28 of them gold
    sentences), ids and line numbers are the provenance."""
    from conftest import shared_data

    from miner.sentences import normalize_text, split_sentences

    path = shared_data("bucc", "de-en.training.de")
    rows = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]
    whole = {normalize_text(text): (bucc_id, n) for n, (bucc_id, text) in enumerate(rows, 1)}
    splittable = [normalize_text(t) for _, t in rows if len(list(split_sentences(t, "de"))) > 1]
    assert len(splittable) > 50  # the file has what we test

    counts = prepare(config(format="sentences"), [str(path)], ["deu_Latn"], tmp_path / "s")
    table = read_lang(tmp_path / "s", "de")
    texts = table.column("text").to_pylist()
    c = counts["de"]
    print(f"sentences: {c}")
    assert c["documents"] == c["sentences"] == len(rows)
    assert c["kept"] + c["duplicate"] + c["too_short"] + c["too_long"] + c["wrong_language"] \
        == len(rows)
    assert set(texts) <= set(whole)  # every row is a whole line
    kept = set(texts)
    assert sum(t in kept for t in splittable) >= 0.95 * len(splittable)
    for text, doc_id, position in zip(texts, table.column("doc_id").to_pylist(),
                                      table.column("position").to_pylist()):
        assert (doc_id, position) == whole[text]
    assert set(table.column("source").to_pylist()) == {"de-en.training.de"}

    # those lines read as plain text: the splitter cuts them into pieces
    plain = tmp_path / "splittable.txt"
    plain.write_text("\n".join(splittable) + "\n", encoding="utf-8")
    prepare(config(), [str(plain)], ["de"], tmp_path / "t")
    pieces = read_lang(tmp_path / "t", "de").column("text").to_pylist()
    assert len(pieces) > len(splittable) and not set(pieces) & set(splittable)


# -- the command ---------------------------------------------------------------------

def run_cli(*args):
    return CliRunner().invoke(main, ["prepare", *map(str, args)])


def test_cli_prepare_with_flags_and_config(tmp_path, inputs):
    result = run_cli(*inputs, "--lang", "en", "--lang", "de", "--out", tmp_path / "out",
                     "--shard-size", "3", "--workers", "1", "--lid-threshold", "0.4",
                     "--lid-threshold", "de=0.6", "--min-chars", "5")
    assert result.exit_code == 0, result.output
    assert "en: " in result.stdout and "de: " in result.stdout
    assert len(list((tmp_path / "out" / "sentences" / "en").glob("part-*.parquet"))) == 2
    toml = tmp_path / "run.toml"
    toml.write_text('shard_size = 10\n[prepare]\nmax_chars = 35\nlid_thresholds = {de = 0.6}\n')
    result = run_cli(*inputs, "--lang", "en", "--out", tmp_path / "out2", "--config", toml)
    assert result.exit_code == 0, result.output
    assert read_lang(tmp_path / "out2", "en").column("text").to_pylist() == [EN[3]]


def _corrupt_bz2(path):
    data = bz2.compress(("<mediawiki>" + "<page><title>x</title></page>" * 2000 + "</mediawiki>").encode())
    path.write_bytes(data[:40] + b"\x00" * 200 + data[240:])


def _truncated_zst(path):
    import zstandard

    data = zstandard.ZstdCompressor().compress(b"A sentence of a compressed file.\n" * 3000)
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name, make, message", [
    ("dump.xml.bz2", _corrupt_bz2, "corrupt"),
    ("cut.txt.zst", _truncated_zst, "truncated zstd"),
    ("broken.txt", lambda p: p.write_bytes(b"ok line\n\xc3\x28 broken\n"), "not valid UTF-8"),
    ("empty.txt", lambda p: p.write_bytes(b""), "file is empty"),
    ("long.txt", lambda p: p.write_bytes(b"a" * (10 << 20) + b"\n"), "line longer than"),
    ("missing.txt", lambda p: None, "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    result = run_cli(path, "--lang", "en", "--out", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("mine: error: ") and name in lines[0] and message in lines[0]


@pytest.mark.parametrize("name, content, fmt, message", [
    ("docs.jsonl", b'{"text": "A document of a JSON-lines file."}\n', "wet", "not a WARC/WET file"),
    ("ints.parquet", None, "auto", "column 'text' holds int64, not text"),
])
def test_cli_format_that_does_not_fit_is_one_line_and_exit_2(tmp_path, name, content, fmt, message):
    path = tmp_path / name
    if content is None:
        pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    else:
        path.write_bytes(content)
    result = run_cli(path, "--lang", "en", "--out", tmp_path / "out", "--workers", "1", "--format", fmt)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"mine: error: {path}: ") and message in lines[0]


def test_cli_sentence_lines_in_nllb_language_codes(tmp_path):
    path = tmp_path / "lines.de.gz"
    path.write_bytes(gzip.compress("Dr. Meier kam gestern an. Er blieb nur kurz.\n\n"
                                   "Heute regnet es in Berlin. Morgen nicht mehr.\n".encode()))
    result = run_cli(path, "--lang", "deu_Latn", "--out", tmp_path / "out", "--format",
                     "sentences", "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = read_lang(tmp_path / "out", "de").to_pylist()
    assert [(r["text"], r["doc_id"], r["position"], r["source"]) for r in rows] == [
        ("Dr. Meier kam gestern an. Er blieb nur kurz.", "1", 1, "lines.de.gz"),
        ("Heute regnet es in Berlin. Morgen nicht mehr.", "3", 3, "lines.de.gz")]


def test_cli_unknown_language_has_no_traceback(tmp_path, inputs):
    # in process; the exit status of a real process: tests/test_cli.py
    result = run_cli(inputs[0], "--lang", "tlh", "--out", tmp_path / "o")
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.exc_info
    assert result.stderr.count("\n") == 1 and "not known to the LID model" in result.stderr
    assert result.stderr.startswith("mine: error: ") and "Traceback" not in result.stderr


# -- big inputs in pieces ---------------------------------------------------------------

def test_pieces_of_a_text_file_read_as_the_whole_file(tmp_path):
    """Byte ranges cut anywhere (mid-line, on a newline, past the end) give every line
    once, numbered as in the whole file; the line counts of the pieces add up."""
    import random

    from miner.readers.text import _lines, count_line_starts

    path = tmp_path / "t.txt"
    path.write_bytes("".join(f"line {i} {'ü' * (i % 7)}\n" if i % 5 else "\n"
                             for i in range(300)).encode() + b"no newline at the end")
    size = path.stat().st_size
    whole = list(_lines(path))
    rng = random.Random(0)
    for _ in range(20):
        cuts = sorted({0, size, *(rng.randrange(1, size) for _ in range(rng.randrange(1, 12)))})
        got, first = [], 1
        for s, e in zip(cuts, cuts[1:]):
            got.extend(_lines(path, (s, e, first)))
            first += count_line_starts(path, s, e)
        assert got == whole
        assert first - 1 == len(whole)


def test_prepare_in_pieces_writes_the_same_shards(tmp_path):
    """JSONL and text inputs cut into 1 KiB pieces and a Parquet input cut by row
    groups, each piece a task of a two-process pool, give the same shards and counts
    as one task per file; a rerun redoes no piece."""
    from conftest import EXAMPLES

    from miner.executor import LocalExecutor
    from miner.prepare import plan_parts

    rows = [json.loads(line) for line in (EXAMPLES / "articles" / "fr.jsonl").read_text().splitlines()]
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), tmp_path / "fr.parquet",
                   row_group_size=3)
    inputs = [str(EXAMPLES / "articles" / "de.jsonl"), str(EXAMPLES / "corpus.en.txt"),
              str(tmp_path / "fr.parquet")]
    langs = ["de", "en", "fr"]
    whole, pieces = Config(shard_size=50), Config(shard_size=50)
    pieces.prepare.chunk_size = "1K"
    parts = plan_parts(inputs, pieces)
    assert [sum(p.path == i for p in parts) for i in inputs] == [7, 7, 3]
    assert [p.span[2] for p in parts if p.path == inputs[1]][0] == 1
    a = prepare(whole, inputs, langs, tmp_path / "whole", LocalExecutor(1))
    b = prepare(pieces, inputs, langs, tmp_path / "pieces", LocalExecutor(2))
    assert a == b and a["fr"]["kept"] > 50
    for lang in langs:
        names = sorted(p.name for p in (tmp_path / "whole" / "sentences" / lang).iterdir())
        assert len(names) >= 2
        for name in names:
            assert (tmp_path / "whole" / "sentences" / lang / name).read_bytes() == \
                (tmp_path / "pieces" / "sentences" / lang / name).read_bytes(), (lang, name)
    assert len(list((tmp_path / "pieces" / ".prepare").iterdir())) == 17
    calls = []
    original = prepare_mod.prepare_file
    try:
        prepare_mod.prepare_file = lambda *x, **kw: calls.append(x) or original(*x, **kw)
        assert prepare(pieces, inputs, langs, tmp_path / "pieces", LocalExecutor(1)) == b
    finally:
        prepare_mod.prepare_file = original
    assert calls == []
