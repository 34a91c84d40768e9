"""``mine report DIR``: ``report.json`` and a self-contained ``report.html``.

What is in it: the counts of every stage from ``DIR/manifest.json``; per language pair
the pairs dropped by each filter, the score histogram of all candidates and of the
kept pairs with the threshold marked, the distribution of the character length ratio
(log2 src/tgt) with the filter's bounds marked, and sample pairs at score quantiles.
The plots are PNG files under ``DIR/report/`` and are embedded in the HTML too.
Rebuilding from the same files gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.compute as pc

from miner.errors import MinerError
from miner.formats import read_parquet
from miner.formats.scores import read_score_batches
from miner.io import atomic_open, atomic_path, write_json
from miner.manifest import read_manifest
from miner.rundir import RunDir
from miner.stage import Result, Stage
from miner.storage import as_path

log = logging.getLogger(__name__)

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)  # of the kept pairs, best first
SAMPLES_PER_QUANTILE = 3
HIST_BINS = 50


def report_pairs(out_dir: str | Path) -> list[str]:
    """Pairs (``"de-en"``) with a ``bitext.parquet`` under ``DIR/bitext``."""
    return RunDir(out_dir).bitext_pairs()


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(values, bins=edges)[0].astype(int).tolist()


def _candidate_arrays(out_dir: Path, src: str, tgt: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores and log2 length ratios of every candidate (empty if no scores folder)."""
    parts = RunDir.shards(RunDir(out_dir).scores(src, tgt))
    scores, ratios = [], []
    for batch in read_score_batches(parts, ["score", "src_text", "tgt_text"]):
        scores.append(batch.column("score").to_numpy(zero_copy_only=False))
        ratios.append(_log_ratio(batch.column("src_text"), batch.column("tgt_text")))
    if not scores:
        return np.zeros(0), np.zeros(0)
    return _finite(np.concatenate(scores)), np.concatenate(ratios)


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def _number(value) -> Optional[float]:
    """``value`` as a finite float, or None (not a number, NaN, infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _log_ratio(src, tgt) -> np.ndarray:
    s = pc.utf8_length(src).to_numpy(zero_copy_only=False).astype(np.float64)
    t = pc.utf8_length(tgt).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log2(s / t)
    return r[np.isfinite(r)]


def _plot(path: Path, title: str, xlabel: str, edges: np.ndarray, series: dict,
          lines: dict) -> None:
    """A step histogram of each series (name -> counts over edges), vertical lines marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, counts in series.items():
        ax.stairs(counts, edges, label=name, fill=name == "kept", alpha=0.6 if name == "kept" else 1)
    for (name, x), style in zip(lines.items(), ("--", ":")):
        ax.axvline(x, color="red", linestyle=style, linewidth=1, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def _edges(values: list[np.ndarray], marks: list[float]) -> np.ndarray:
    allv = np.concatenate([v for v in values if len(v)] or [np.zeros(1)])
    lo = min([float(allv.min())] + marks)
    hi = max([float(allv.max())] + marks)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, HIST_BINS + 1)


def pair_report(out_dir: str | Path, pair: str, manifest: dict) -> dict:
    """The report of one pair; writes its PNGs under ``DIR/report/``."""
    out_dir = as_path(out_dir)
    src, tgt = pair.split("-")
    path = RunDir(out_dir).bitext_parquet(src, tgt)
    if not path.exists():
        raise MinerError(f"{path}: no such file; run `mine bitext {out_dir} --pair {pair}` first")
    kept = read_parquet(path, columns=["score", "src_text", "tgt_text"])
    kept_scores = _finite(kept.column("score").to_numpy())
    kept_ratio = _log_ratio(kept.column("src_text"), kept.column("tgt_text"))
    cand_scores, cand_ratio = _candidate_arrays(out_dir, src, tgt)
    stage = manifest["stages"].get(f"bitext/{pair}", {})
    details = stage.get("finish", {}).get("data") or {}
    details = details if isinstance(details, dict) else {}
    # marks only for values a plot can draw (a hand-edited or odd record has none)
    threshold = _number(details.get("threshold"))
    bounds = details.get("length_ratio_bounds")
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(_number(b) is not None and b > 0 for b in bounds)):
        bounds = None

    plots = {}
    score_marks = {f"threshold {threshold:g}": threshold} if threshold is not None else {}
    edges = _edges([cand_scores, kept_scores], list(score_marks.values()))
    score_series = {"candidates": _histogram(cand_scores, edges)} if len(cand_scores) else {}
    score_series["kept"] = _histogram(kept_scores, edges)
    plots_dir = RunDir(out_dir).relative(RunDir(out_dir).report_plots)
    plots["scores"] = f"{plots_dir}/{pair}.scores.png"
    _plot(out_dir / plots["scores"], f"{pair}: margin scores", "score", edges, score_series,
          score_marks)

    ratio_marks = ({f"min ratio {bounds[0]:g}": float(np.log2(bounds[0])),
                    f"max ratio {bounds[1]:g}": float(np.log2(bounds[1]))} if bounds else {})
    r_edges = _edges([cand_ratio, kept_ratio], list(ratio_marks.values()))
    ratio_series = {"candidates": _histogram(cand_ratio, r_edges)} if len(cand_ratio) else {}
    ratio_series["kept"] = _histogram(kept_ratio, r_edges)
    plots["length_ratio"] = f"{plots_dir}/{pair}.length_ratio.png"
    _plot(out_dir / plots["length_ratio"], f"{pair}: character length ratio",
          f"log2(len {src} / len {tgt})", r_edges, ratio_series, ratio_marks)

    return {
        "pair": pair,
        "threshold": threshold,
        "scorer": details.get("scorer") if isinstance(details.get("scorer"), str) else None,
        "length_ratio_bounds": bounds,
        "counts": stage.get("counts", {"candidates": len(cand_scores), "kept": len(kept_scores),
                                       "dropped": {}}),
        "score_histogram": {"edges": edges.tolist(), **score_series},
        "length_ratio_histogram": {"edges": r_edges.tolist(), **ratio_series},
        "samples": samples(kept.column("score").to_pylist(), kept.column("src_text").to_pylist(),
                           kept.column("tgt_text").to_pylist()),
        "plots": plots,
    }


def samples(scores: list[float], src: list[str], tgt: list[str]) -> list[dict]:
    """A few kept pairs (best first) at each quantile of their rank in ``QUANTILES``."""
    n = len(scores)
    out = []
    for q in QUANTILES:
        if not n:
            break
        start = min(int(round(q * (n - 1))), max(0, n - SAMPLES_PER_QUANTILE))
        out.append({"quantile": q, "pairs": [
            {"rank": i + 1, "score": scores[i], "src": src[i], "tgt": tgt[i]}
            for i in range(start, min(n, start + SAMPLES_PER_QUANTILE))]})
    return out


def build_report(out_dir: str | Path, pair: Optional[str] = None,
                 pairs: Optional[list[str]] = None, stages: Optional[list[str]] = None) -> dict:
    """Write ``DIR/report.json``, ``DIR/report.html`` and the PNGs; return the report.

    ``pair`` (or ``pairs``) limits it to those pairs, ``stages`` the manifest records
    shown; by default every pair with a bitext folder and every stage recorded.
    """
    run = RunDir(out_dir)
    out_dir = run.root
    if not out_dir.is_dir():
        raise MinerError(f"{out_dir}: no such directory")
    manifest = read_manifest(out_dir)
    pairs = [pair] if pair else (pairs if pairs is not None else report_pairs(out_dir))
    if not pairs and not manifest["stages"]:
        raise MinerError(f"{out_dir}: nothing to report (no manifest.json and no bitext)")
    names = [n for n in manifest["stages"] if n != ReportStage.name
             and (stages is None or n in stages)]
    report = {
        "directory": str(out_dir),
        "stages": {name: {"counts": manifest["stages"][name].get("counts", {}),
                          "seconds": manifest["stages"][name].get("seconds"),
                          "finished": manifest["stages"][name].get("finished")}
                   for name in names},  # in the order run
        "pairs": {p: pair_report(out_dir, p, manifest) for p in pairs},
    }
    write_json(run.report_json, report)
    with atomic_open(run.report_html, "w", encoding="utf-8", newline="\n") as f:
        f.write(render_html(report, out_dir))
    return report


class ReportStage(Stage):
    """The run's report over the stages of ``stage_names`` and the bitext of ``pairs``."""

    name = "report"

    def __init__(self, pairs: list[str], stage_names: Optional[list[str]] = None):
        self.pairs, self.stage_names = pairs, stage_names

    def _stage_names(self, ctx) -> list[str]:
        return self.stage_names if self.stage_names is not None else \
            [n for n in ctx.manifest.data["stages"] if n != self.name]

    def finish_fingerprint(self, ctx):
        recs = {n: ctx.manifest.stage(n) or {} for n in self._stage_names(ctx)}
        files = []
        for p in self.pairs:
            src, tgt = p.split("-")
            files.append(ctx.run.bitext_parquet(src, tgt))
            files += RunDir.shards(ctx.run.scores(src, tgt))
        # what each stage's outputs came from (not this run's counts of work done)
        return {"pairs": self.pairs,
                "stages": {n: [r.get("finish", {}).get("fingerprint"),
                               sorted((k, t.get("fingerprint")) for k, t in r.get("tasks", {}).items())]
                           for n, r in recs.items()},
                "files": [ctx.digest(f) for f in files]}

    def finish(self, ctx, records) -> Result:
        report = build_report(ctx.run.root, pairs=self.pairs, stages=self._stage_names(ctx))
        plots = [ctx.run.root / rel for p in report["pairs"].values() for rel in p["plots"].values()]
        return Result(outputs=[ctx.run.report_json, ctx.run.report_html, *plots])

    def summary(self, counts: dict) -> str:
        return "report.json, report.html"


# --- HTML --------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4;text-align:left}
td.t{max-width:440px}img{max-width:100%}"""


def _flatten(counts: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in counts.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _img(out_dir: Path, rel: str) -> str:
    data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'


def render_html(report: dict, out_dir: Path) -> str:
    """The report as one HTML page with the PNGs inlined."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
             f"<title>miner report: {e(report['directory'])}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>miner report</h1><p>{e(report['directory'])}</p>", "<h2>Stages</h2>",
             "<table><tr><th>stage</th><th>count</th><th>value</th></tr>"]
    for name, stage in report["stages"].items():
        rows = _flatten(stage["counts"]) or [("", "")]
        for key, value in rows:
            parts.append(f"<tr><td>{e(name)}</td><td>{e(key)}</td>"
                         f'<td class="n">{e(str(value))}</td></tr>')
        if stage.get("seconds") is not None:
            parts.append(f"<tr><td>{e(name)}</td><td>seconds</td>"
                         f'<td class="n">{stage["seconds"]}</td></tr>')
    parts.append("</table>")
    for pair, r in report["pairs"].items():
        c = r["counts"]
        th = "none" if r["threshold"] is None else f"{r['threshold']:g}"
        parts += [f'<h2 id="{e(pair)}">{e(pair)}</h2>',
                  f"<p>threshold: {e(th)}; "
                  + (f"scorer: {e(r['scorer'])}; " if r.get("scorer") else "")
                  + "length ratio bounds: "
                  f"{e(str(r['length_ratio_bounds']) if r['length_ratio_bounds'] else 'off')}</p>",
                  "<table><tr><th>step</th><th>pairs</th></tr>",
                  f'<tr><td>candidates</td><td class="n">{c.get("candidates", 0)}</td></tr>']
        for name, n in c.get("dropped", {}).items():
            parts.append(f'<tr><td>dropped: {e(name)}</td><td class="n">{n}</td></tr>')
        parts.append(f'<tr><th>kept</th><th class="n">{c.get("kept", 0)}</th></tr></table>')
        parts += [_img(out_dir, r["plots"]["scores"]), _img(out_dir, r["plots"]["length_ratio"]),
                  "<h3>Sample pairs by score quantile (kept pairs, best first)</h3>",
                  "<table><tr><th>quantile</th><th>rank</th><th>score</th>"
                  "<th>source</th><th>target</th></tr>"]
        for group in r["samples"]:
            for p in group["pairs"]:
                parts.append(f'<tr><td class="n">{group["quantile"]:g}</td>'
                             f'<td class="n">{p["rank"]}</td><td class="n">{p["score"]:.4f}</td>'
                             f'<td class="t">{e(p["src"])}</td><td class="t">{e(p["tgt"])}</td></tr>')
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
