"""The report of a real run as a reader sees it: rendered by headless Chromium
(``scripts/report_screenshot``), the screenshot is a page with plots, not a blank or
broken one, and the page's text holds the run's summary."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import EXAMPLES, REPO
from miner.config import Config
from miner.pipeline import run_pipeline
from miner.report import fmt_count, fmt_threshold

from test_report import page_lines

SCRIPT = REPO / "scripts" / "report_screenshot"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
               None)
pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium): "
                                               "the report is not checked in a browser"),
    pytest.mark.slow,  # a real run (mUSE) and two browser starts: 10-30 s
]

KEPT_FILL = np.array([109, 164, 112])  # the kept bars of the histograms, #2e7d32 at 70%
KEPT_BAR = np.array([46, 125, 50])  # the kept bar of the drop-reasons chart, #2e7d32


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``scripts/demo``: the bundled articles, de-en and fr-en, through every stage."""
    out = tmp_path_factory.mktemp("demo") / "run"
    cfg = Config(out=str(out), pairs=["de-en", "fr-en"],
                 inputs=[str(EXAMPLES / "articles" / f"{lang}.jsonl") for lang in ("de", "en", "fr")])
    cfg.prepare.workers = 1
    run_pipeline(cfg.validate(), progress=lambda m: None)
    return out


@pytest.fixture(scope="module")
def rendered(demo_run, tmp_path_factory):
    """(screenshot pixels, page text lines) of the demo run's report.html in Chromium."""
    from matplotlib.image import imread

    d = tmp_path_factory.mktemp("browser")
    png, dom = d / "report.png", d / "report.dom.html"
    r = subprocess.run([str(SCRIPT), str(demo_run / "report.html"), str(png), str(dom)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    pixels = (imread(png)[..., :3] * 255).round().astype(np.int16)
    return pixels, page_lines(dom.read_text(encoding="utf-8"))


def test_the_screenshot_is_a_page_with_its_plots(rendered):
    pixels, _ = rendered
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 20  # not one colour: a blank or failed page is (near) uniform
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200  # text, tables and plots, not a flat error page
    # the plots of the first pair are loaded and drawn in the first screen
    near = lambda colour: (np.abs(pixels - colour).max(axis=2) <= 12).sum()
    assert near(KEPT_FILL) > 2000 and near(KEPT_BAR) > 2000


def test_the_page_text_opens_with_the_run_summary(demo_run, rendered):
    _, lines = rendered
    report = json.loads((demo_run / "report.json").read_text(encoding="utf-8"))
    summary = lines[lines.index("Summary"):lines.index("Stages")]
    head = summary[:summary.index("pair candidates kept share kept")]
    assert "Encoder muse" in head
    assert f"Threshold {fmt_threshold(report['summary']['settings']['threshold'])}" in head
    assert "Margin ratio, k = 4, retrieval max" in head
    inputs = " ".join(head[head.index("Inputs"):])  # a line per file
    for lang in ("de", "en", "fr"):
        assert f"{lang}.jsonl (8 documents; 70 {lang} sentences)" in inputs
    meta = next(line for line in lines if " · miner " in line)  # the line under the title
    for pair, p in report["pairs"].items():
        kept, cands = p["counts"]["kept"], p["counts"]["candidates"]
        assert kept > 0
        assert f"{pair}: {fmt_count(kept)} pairs kept" in meta
        assert any(line.startswith(f"{pair} {fmt_count(kept)} of {fmt_count(cands)} candidates kept")
                   for line in lines)
    date = report["summary"]["date"]
    assert date and f"Date {date[:10]} {date[11:16]} UTC" in head
