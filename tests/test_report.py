"""``build_report``: JSON and HTML with the same counts, valid PNGs, samples, rebuilds."""

import json
import re

import pyarrow.parquet as pq
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.manifest import update_stage
from miner.outputs import write_bitext
from miner.report import build_report

from test_outputs import GOOD, BAD, scores_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mined(tmp_path):
    work = tmp_path / "work"
    d = work / "scores" / "de-en"
    d.mkdir(parents=True)
    rows = GOOD + BAD + [("Ein Satz.", "A sentence.")]
    pq.write_table(scores_table(rows, score0=1.45), d / "part-00000.parquet")
    update_stage(work, "prepare", {"counts": {"de": {"kept": 120, "too_short": 7},
                                              "en": {"kept": 300}}, "seconds": 1.5,
                                   "finished": True})
    write_bitext(Config(), work, "de", "en")
    return work


def test_report_json_and_html_hold_the_same_counts(mined):
    report = build_report(mined)
    data = json.loads((mined / "report.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report))
    html = (mined / "report.html").read_text(encoding="utf-8")
    pair = data["pairs"]["de-en"]
    counts = pair["counts"]
    assert counts["kept"] > 0
    cell = lambda label, n: re.search(rf"<t[dh]>{re.escape(label)}</t[dh]><t[dh] class=\"n\">{n}<", html)
    assert cell("candidates", counts["candidates"])
    assert cell("kept", counts["kept"])
    for name, n in counts["dropped"].items():
        assert cell(f"dropped: {name}", n), name
    # stage counts from the manifest
    assert data["stages"]["prepare"]["counts"]["de"]["too_short"] == 7
    assert re.search(r"<td>prepare</td><td>de.too_short</td><td class=\"n\">7</td>", html)
    assert re.search(rf"<td>bitext/de-en</td><td>kept</td><td class=\"n\">{counts['kept']}</td>",
                     html)


def test_plots_are_valid_pngs_and_embedded(mined):
    report = build_report(mined, pair="de-en")
    html = (mined / "report.html").read_text(encoding="utf-8")
    plots = report["pairs"]["de-en"]["plots"]
    for rel in plots.values():
        data = (mined / rel).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        from matplotlib.image import imread

        assert imread(mined / rel).ndim == 3
    assert html.count("data:image/png;base64,") == 2
    hist = report["pairs"]["de-en"]["score_histogram"]
    assert sum(hist["candidates"]) == 13 and sum(hist["kept"]) == report["pairs"]["de-en"]["counts"]["kept"]
    assert report["pairs"]["de-en"]["threshold"] == 1.30


def test_samples_at_score_quantiles_are_kept_pairs(mined):
    report = build_report(mined)
    groups = report["pairs"]["de-en"]["samples"]
    assert [g["quantile"] for g in groups][0] == 0.0 and groups[-1]["quantile"] == 1.0
    kept_src = pq.read_table(mined / "bitext" / "de-en" / "bitext.parquet")["src_text"].to_pylist()
    for g in groups:
        assert 1 <= len(g["pairs"]) <= 3
        for p in g["pairs"]:
            assert kept_src[p["rank"] - 1] == p["src"]
    html = (mined / "report.html").read_text(encoding="utf-8")
    assert "Straße" in html


def test_rebuild_is_byte_identical(mined):
    build_report(mined)
    first = [(mined / n).read_bytes() for n in ("report.json", "report.html",
                                                 "report/de-en.scores.png")]
    build_report(mined)
    assert [(mined / n).read_bytes() for n in ("report.json", "report.html",
                                                "report/de-en.scores.png")] == first


def test_report_without_bitext_for_a_pair_is_a_user_error(mined):
    with pytest.raises(MinerError, match="mine bitext"):
        build_report(mined, pair="fr-en")
    with pytest.raises(MinerError):
        build_report(mined / "nope")


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
    r = runner.invoke(main, ["report", str(mined)])
    assert r.exit_code == 0 and "report written" in r.output
    r = runner.invoke(main, ["bitext", str(mined), "--pair", "fr-en"])
    assert r.exit_code == 2 and "mine score" in r.output
