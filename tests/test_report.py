"""``build_report``: a summary first, per pair the plots, the drops with examples, the
candidates around the threshold and the kept pairs once each, numbers for people,
JSON and HTML that agree, byte-identical rebuilds dated by the run."""

import json
import logging
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES
from miner.config import Config
from miner.errors import MinerError
from miner.filters import length_bounds
from miner.formats.scores import SCORE_SCHEMA
from miner.manifest import read_manifest, update_stage
from miner.outputs import EXAMPLES_PER_REASON, write_bitext
from miner.report import (build_report, fmt_bounds, fmt_count, fmt_seconds, fmt_share,
                          fmt_threshold, sample_ranks)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JUNK = [(f"https://example.com/de/{i}", f"https://example.com/en/{i}") for i in range(4)]
NUMBERS = ("Sie wurde im Jahr 1950 in Hamburg geboren.", "She was born in Hamburg in 1960.")
SHORT = ("Ja.", "Yes, this is certainly the correct answer to that question.")
COPY = ("Berlin Hauptbahnhof ist groß.", "Berlin Hauptbahnhof ist groß.")


def gold_pairs() -> list[tuple[str, str]]:
    """The 35 translation pairs of the bundled comparable corpus (examples/)."""
    de = (EXAMPLES / "corpus.de.txt").read_text(encoding="utf-8").splitlines()
    en = (EXAMPLES / "corpus.en.txt").read_text(encoding="utf-8").splitlines()
    lines = (EXAMPLES / "gold.de-en.tsv").read_text(encoding="utf-8").splitlines()
    return [(de[int(a) - 1], en[int(b) - 1]) for a, b in (line.split("\t") for line in lines)]


def candidate_rows() -> list[tuple[str, str]]:
    """Candidates best first: the gold pairs, a wrong pairing after every third, pairs
    for the junk, number, length and copy filters, and a repeated gold pair."""
    gold = gold_pairs()
    rows = [JUNK[0], JUNK[1]]
    for i, pair in enumerate(gold):
        rows.append(pair)
        if i % 3 == 2:
            rows.append((pair[0], gold[(i + 5) % len(gold)][1]))
        if i == 4:
            rows += [NUMBERS, JUNK[2], SHORT, COPY, gold[0]]  # gold[0] again: a duplicate
        if i == 9:
            rows.append(JUNK[3])
    return rows


def scores_table(rows, start: int, scores) -> pa.Table:
    """Rows in the scores layout, with titles and URLs on the sides."""
    n = len(rows)
    given = {
        "src_id": pa.array(np.arange(start, start + n), pa.uint64()),
        "tgt_id": pa.array(np.arange(1000 + start, 1000 + start + n), pa.uint64()),
        "src_text": [r[0] for r in rows], "tgt_text": [r[1] for r in rows],
        "score": pa.array(scores, pa.float64()),
        "direction": ["both"] * n,
        "src_doc_id": [f"de-{(start + i) % 8}" for i in range(n)],
        "tgt_doc_id": [f"en-{(start + i) % 8}" for i in range(n)],
        "src_title": [f"Artikel {(start + i) % 8}" for i in range(n)],
        "tgt_url": [f"https://en.example.org/wiki/Topic_{(start + i) % 8}" for i in range(n)],
        "src_source": ["de.jsonl"] * n, "tgt_source": ["en.jsonl"] * n,
        "src_lid_prob": pa.array([0.9] * n, pa.float32()),
        "tgt_lid_prob": pa.array([0.95] * n, pa.float32()),
    }
    return pa.table({f.name: given.get(f.name, pa.nulls(n, f.type)) for f in SCORE_SCHEMA},
                    schema=SCORE_SCHEMA)


def write_scores(work: Path, cuts=()) -> list[float]:
    """The candidates as scores parts cut at ``cuts``; returns their scores."""
    rows = candidate_rows()
    scores = [round(1.65 - 0.01 * i, 2) for i in range(len(rows))]  # 1.65 .. ~1.10
    d = work / "scores" / "de-en"
    d.mkdir(parents=True)
    bounds = [0, *cuts, len(rows)]
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(scores_table(rows[lo:hi], lo, scores[lo:hi]), d / f"part-{k:05d}.parquet")
    return scores


def mine(work: Path, cuts=(), threshold=None) -> Path:
    write_scores(work, cuts)
    cfg = Config()
    cfg.score.threshold = threshold
    update_stage(work, "prepare", {"counts": {"de": {"kept": 120, "too_short": 7},
                                              "en": {"kept": 300}}, "seconds": 1.5,
                                   "finished": True})
    write_bitext(cfg, work, "de", "en")
    return work


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A mined run in three scores parts and its report (for tests that only read)."""
    run = mine(tmp_path_factory.mktemp("report") / "work", cuts=(20, 37))
    return run, build_report(run)


@pytest.fixture
def mined(reported, tmp_path):
    """A copy of that run folder, to change."""
    return Path(shutil.copytree(reported[0], tmp_path / "work"))


class _Text(HTMLParser):
    """The text of a page, one string per table row or block (what a reader sees)."""

    BLOCKS = {"tr", "p", "h1", "h2", "h3", "div", "li", "figcaption"}

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [""], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip += 1
        if tag in self.BLOCKS:
            self.parts.append("")
        elif tag in ("td", "th"):
            self.parts[-1] += " "

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip -= 1
        if tag in self.BLOCKS:
            self.parts.append("")

    def handle_data(self, data):
        if not self.skip:
            self.parts[-1] += data


def page_lines(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return [re.sub(r"\s+", " ", p).strip() for p in parser.parts if p.strip()]


def html_of(run: Path) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


# -- the page ---------------------------------------------------------------------------

def test_the_summary_comes_first_and_the_stage_counters_last(reported):
    mined, report = reported
    lines = page_lines(html_of(mined))
    heads = [line for line in lines if line in ("Summary", "Stages")
             or re.match(r"de-en \d+ of \d+ candidates kept", line)]
    assert heads[0] == "Summary" and heads[-1] == "Stages", heads
    summary = lines[lines.index("Summary"):lines.index(heads[1])]
    kept = report["pairs"]["de-en"]["counts"]["kept"]
    cands = report["pairs"]["de-en"]["counts"]["candidates"]
    assert "Encoder muse" in summary
    assert "Margin ratio, k = 4, retrieval max" in summary
    assert "Threshold 1.30" in summary
    assert "Length ratio 0.5–2.0 (characters, source / target)" in summary
    assert f"de-en {cands} {kept} {100 * kept / cands:.1f}%" in summary
    assert "Languages de, en (pairs de-en)" in summary
    # one compact row per stage at the end, zero counters left out
    stages = lines[lines.index("Stages"):]
    prepare = next(line for line in stages if line.startswith("prepare "))
    assert "1.5 s" in prepare and "too_short 7" in prepare and "kept 300" in prepare
    bitext = next(line for line in stages if line.startswith("bitext/de-en "))
    assert f"kept {kept}" in bitext and "lid_mismatch 0" not in bitext


def test_json_and_html_hold_the_same_drop_counts(reported):
    mined, report = reported
    assert json.loads((mined / "report.json").read_text(encoding="utf-8")) == \
        json.loads(json.dumps(report))
    counts = report["pairs"]["de-en"]["counts"]
    assert counts["dropped"]["junk"] == 4 and counts["dropped"]["duplicate_pair"] == 1
    lines = page_lines(html_of(mined))
    for reason, n in counts["dropped"].items():
        if n:
            share = fmt_share(n, counts["candidates"])
            assert any(line.startswith(f"{reason} {n} {share}") for line in lines), reason
    zero = [r for r, n in counts["dropped"].items() if not n]
    assert any(f"Dropped nothing: {', '.join(zero)}." in line for line in lines)
    assert report["stages"]["prepare"]["counts"]["de"]["too_short"] == 7


def test_each_filter_keeps_its_first_three_drops_best_first(tmp_path, reported):
    mined = reported[0]
    record = read_manifest(mined)["stages"]["bitext/de-en"]["finish"]["data"]
    examples = record["dropped_examples"]
    # four junk candidates: the three best-scoring are the examples, in score order
    assert [e["src_text"] for e in examples["junk"]] == [JUNK[0][0], JUNK[1][0], JUNK[2][0]]
    assert len(examples["junk"]) == EXAMPLES_PER_REASON
    scores = [e["score"] for e in examples["junk"]]
    assert scores == sorted(scores, reverse=True)
    assert examples["number_mismatch"][0]["tgt_text"] == NUMBERS[1]
    assert examples["length_ratio"][0]["src_text"] == SHORT[0]
    assert examples["duplicate_pair"][0]["src_text"] == gold_pairs()[0][0]  # the driver's pass
    assert examples["junk"][0]["src_title"] == "Artikel 0"
    assert set(examples) == {r for r, n in
                             read_manifest(mined)["stages"]["bitext/de-en"]["counts"]["dropped"].items()
                             if n}
    # the same examples whatever the scores parts
    one = mine(tmp_path / "one")
    assert read_manifest(one)["stages"]["bitext/de-en"]["finish"]["data"]["dropped_examples"] \
        == examples
    # and on the page, under their filter
    lines = page_lines(html_of(mined))
    start = next(i for i, line in enumerate(lines) if line.startswith("junk 4 "))
    end = next(i for i, line in enumerate(lines) if line.startswith("copy 1 "))
    rows = [line for line in lines[start:end] if line.startswith(("junk 4 ", "1."))]
    assert [row.split()[-1] for row in rows] == [src for src, _ in JUNK[:3]]
    assert not any(JUNK[3][0] in line for line in lines)


def test_ten_candidates_on_each_side_of_the_threshold(reported):
    mined, report = reported
    near = report["pairs"]["de-en"]["near_threshold"]
    above = [p for p in near if p["side"] == "above"]
    below = [p for p in near if p["side"] == "below"]
    scores = pq.read_table(mined / "scores" / "de-en").column("score").to_pylist()
    assert [p["score"] for p in above] == sorted(s for s in scores if s >= 1.30)[:10][::-1]
    assert [p["score"] for p in below] == sorted(s for s in scores if s < 1.30)[-10:][::-1]
    kept = pq.read_table(mined / "bitext" / "de-en" / "bitext.parquet")
    kept = set(zip(kept.column("src_text").to_pylist(), kept.column("tgt_text").to_pylist()))
    for p in above:
        assert (p["status"] == "kept") == ((p["src"], p["tgt"]) in kept), p
    assert {p["status"] for p in below} == {"below threshold"}
    lines = page_lines(html_of(mined))
    cut = lines.index("threshold 1.30: 10 candidates just above, 10 just below")
    rows = lambda part: [line for line in part if re.match(r"\d\.\d{3} ", line)]
    assert rows(lines[:cut])[-1].startswith(f"{above[-1]['score']:.3f} kept ")
    assert rows(lines[cut:])[0].startswith(f"{below[0]['score']:.3f} below threshold ")


def test_kept_samples_show_each_pair_once(tmp_path, reported):
    few = mine(tmp_path / "few", threshold=1.58)
    for run, report in (reported, (few, build_report(few))):
        groups = report["pairs"]["de-en"]["samples"]
        shown = [p["rank"] for rows in groups.values() for p in rows]
        kept = pq.read_table(run / "bitext" / "de-en" / "bitext.parquet")
        assert len(shown) == len(set(shown)) == min(kept.num_rows, 15)
        assert groups["best"][0]["rank"] == 1 and groups["worst"][-1]["rank"] == kept.num_rows
        texts = kept.column("src_text").to_pylist()
        for rows in groups.values():
            for p in rows:
                assert texts[p["rank"] - 1] == p["src"]
    few = report["pairs"]["de-en"]
    assert few["counts"]["kept"] < 10 and few["samples"]["median"] == []
    lines = page_lines(html_of(tmp_path / "few"))
    section = lines[lines.index("Kept pairs: best, median, worst"):
                    lines.index("Each kept pair shown once; ranks count from the best.")]
    rows = [line for line in section if re.match(r"(best |median |worst )?\d+ \d\.\d{3} ", line)]
    assert len(rows) == few["counts"]["kept"]


def test_sample_ranks_never_repeat_and_centre_the_median():
    for n in range(60):
        groups = sample_ranks(n)
        ranks = groups["best"] + groups["median"] + groups["worst"]
        assert len(ranks) == len(set(ranks)) == min(n, 15)
        assert all(0 <= r < n for r in ranks)
        if n >= 15:
            assert groups["best"] == [0, 1, 2, 3, 4] and groups["worst"][-1] == n - 1
            assert groups["median"][2] == (n - 1) // 2


def test_titles_and_urls_of_the_documents_are_shown(reported):
    mined, report = reported
    best = report["pairs"]["de-en"]["samples"]["best"][0]
    assert best["src_title"].startswith("Artikel ") and best["tgt_url"].startswith("https://")
    assert f'<a href="{best["tgt_url"]}">{best["tgt_url"]}</a>' in html_of(mined)


def test_numbers_are_rounded_for_people(reported):
    assert fmt_count(14177) == "14,177" and fmt_share(21, 14177) == "0.15%"
    assert fmt_share(35, 59) == "59.3%" and fmt_share(0, 5) == "0%" and fmt_share(5, 5) == "100%"
    assert fmt_threshold(1.3) == "1.30" and fmt_threshold(1.2629) == "1.2629"
    assert fmt_bounds(list(length_bounds("ja", "en"))) == "0.17–2.0"
    assert fmt_bounds(list(length_bounds("de", "en"))) == "0.5–2.0"
    assert fmt_seconds(0.42) == "0.4 s" and fmt_seconds(75) == "1m15s"
    text = "\n".join(page_lines(html_of(reported[0])))
    # no raw floats: nothing with more than four decimals, no Python lists
    assert not re.search(r"\d\.\d{5,}", text) and "[0." not in text


def test_plots_are_valid_pngs_and_embedded(mined):
    # one pair asked for: its plots only
    from matplotlib.image import imread

    report = build_report(mined, pair="de-en")
    plots = report["pairs"]["de-en"]["plots"]
    assert set(plots) == {"scores", "reasons", "length_ratio"}
    for rel in plots.values():
        assert (mined / rel).read_bytes().startswith(PNG_MAGIC)
        pixels = imread(mined / rel)
        assert pixels.ndim == 3 and pixels[..., :3].std() > 0.05  # not one colour
    assert html_of(mined).count("data:image/png;base64,") == 3
    hist = report["pairs"]["de-en"]["score_histogram"]
    assert sum(hist["candidates"]) == report["pairs"]["de-en"]["counts"]["candidates"]
    assert sum(hist["kept"]) == report["pairs"]["de-en"]["counts"]["kept"]


def test_rebuild_is_byte_identical_and_dated_by_the_run(mined):
    manifest = read_manifest(mined)
    record = manifest["stages"]["bitext/de-en"]
    update_stage(mined, "bitext/de-en", dict(record, ended="2020-01-02T03:04:05.678Z",
                                             versions={"miner": "9.9.9", "numpy": "1.0"}))
    names = ("report.json", "report.html", "report/de-en.scores.png", "report/de-en.reasons.png")
    report = build_report(mined)
    first = [(mined / n).read_bytes() for n in names]
    assert report["summary"]["date"] == "2020-01-02T03:04:05Z"
    lines = page_lines(html_of(mined))
    assert "Date 2020-01-02 03:04 UTC" in lines and "Versions miner 9.9.9, numpy 1.0" in lines
    build_report(mined)
    assert [(mined / n).read_bytes() for n in names] == first


def test_a_run_without_recorded_times_says_so(mined):
    manifest = read_manifest(mined)
    for name, record in manifest["stages"].items():
        update_stage(mined, name, {k: v for k, v in record.items() if k != "ended"})
    report = build_report(mined)
    assert report["summary"]["date"] is None
    assert "Date not recorded" in page_lines(html_of(mined))


def test_report_without_bitext_for_a_pair_is_a_user_error(reported):
    mined = reported[0]
    with pytest.raises(MinerError, match="mine bitext"):
        build_report(mined, pair="fr-en")
    with pytest.raises(MinerError):
        build_report(mined / "nope")


def test_bitext_progress_is_logged_off_a_terminal(tmp_path, monkeypatch, caplog):
    import miner.progress

    monkeypatch.setattr(miner.progress, "LOG_EVERY_S", 0.0)  # a line per part
    with caplog.at_level(logging.INFO, logger="miner.progress"):
        mine(tmp_path / "work", cuts=(20, 37))
    lines = [r.getMessage() for r in caplog.records if r.name == "miner.progress"]
    n = len(candidate_rows())
    assert lines and all(line.startswith("bitext de-en: candidates filtered (3 scores parts): ")
                         for line in lines), lines
    assert f"/{n} pair" in lines[-1]


def test_cli_bitext_and_report(mined):
    from click.testing import CliRunner

    from miner.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["bitext", str(mined), "--pair", "de-en", "--threshold", "1.0",
                             "--no-lid-agreement", "--max-pairs-per-doc", "1"])
    assert r.exit_code == 0, r.output
    assert "bitext de-en:" in r.output and "doc_pair_cap" in r.output
    data = json.loads((mined / "report.json").read_text(encoding="utf-8"))
    assert data["pairs"]["de-en"]["threshold"] == 1.0
    assert "lid_mismatch" not in data["pairs"]["de-en"]["counts"]["dropped"]
    assert data["pairs"]["de-en"]["dropped_examples"]["doc_pair_cap"]
    r = runner.invoke(main, ["report", str(mined)])
    assert r.exit_code == 0 and "report written" in r.output
    r = runner.invoke(main, ["bitext", str(mined), "--pair", "fr-en"])
    assert r.exit_code == 2 and "mine score" in r.output
