"""``mine report DIR``: ``report.json`` and a self-contained ``report.html``.

The page (``miner/templates/report.html.j2``, rendered with jinja2) opens with a
summary of the run: inputs, languages, encoder, margin, k, retrieval, threshold,
pairs kept, the recorded date and the miner version. Then per language pair: the
score histogram of every candidate and of the kept pairs on a log count axis with the
kept region shaded, the drops per filter as a bar chart with the first three pairs
each filter dropped (kept by the bitext stage, ``miner.outputs``), the ten candidates
just above and just below the threshold, and the best, median and worst kept pairs,
each pair shown once, with the title or URL of its documents. Stage counters and
timings close it. The plots are PNG files under ``DIR/report/``, embedded in the HTML
too. Everything comes from the run folder (the manifest, the scores parts, the
bitext), so rebuilding from the same files gives the same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miner.errors import MinerError
from miner.formats import open_parquet, read_parquet
from miner.formats.scores import read_score_batches
from miner.io import atomic_open, atomic_path, write_json
from miner.manifest import read_manifest
from miner.rundir import RunDir
from miner.stage import Result, Stage
from miner.storage import as_path

log = logging.getLogger(__name__)

HIST_BINS = 50
NEAR_THRESHOLD = 10  # candidates shown just above and just below the threshold
SAMPLES_PER_GROUP = 5  # kept pairs shown as best, median and worst
TEMPLATE = "report.html.j2"
# the columns of a pair the page shows, and those of run folders made before the
# provenance columns were split (read when they are what the file has)
PAIR_COLUMNS = ["score", "src_text", "tgt_text", "src_id", "tgt_id", "src_title", "tgt_title",
                "src_url", "tgt_url"]
OLD_COLUMNS = ["src_url_or_title", "tgt_url_or_title"]


def _pair_columns(path) -> list[str]:
    """``PAIR_COLUMNS`` (or their older names) that the Parquet file ``path`` has; the
    texts, scores and ids are required (their absence is the usual error)."""
    names = set(open_parquet(path).schema_arrow.names)
    return [c for c in PAIR_COLUMNS + OLD_COLUMNS
            if c in names or c in ("score", "src_text", "tgt_text", "src_id", "tgt_id")]


def report_pairs(out_dir: str | Path) -> list[str]:
    """Pairs (``"de-en"``) with a ``bitext.parquet`` under ``DIR/bitext``."""
    return RunDir(out_dir).bitext_pairs()


# -- numbers for people -------------------------------------------------------------

def fmt_count(n) -> str:
    """1234 -> '1,234'."""
    return "–" if n is None else f"{int(n):,}"


def fmt_share(part, whole) -> str:
    """Share in percent: 12.3%, 0.15% (two significant digits below 1%), 0%."""
    if not whole:
        return "–"
    p = 100.0 * part / whole
    if p == 0 or part == whole:
        return f"{p:.0f}%"
    return f"{p:.2g}%" if p < 1 else f"{p:.1f}%"


def fmt_threshold(x) -> str:
    """1.3 -> '1.30'; a tuned 1.2629 keeps its digits."""
    if x is None:
        return "none"
    return f"{x:.2f}" if round(x, 2) == x else f"{x:g}"


def fmt_score(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def fmt_bound(x: float) -> str:
    """Two significant digits with at least one decimal: 0.1666 -> '0.17', 2 -> '2.0'."""
    s = f"{x:.2g}"
    return s if ("." in s or "e" in s) else f"{s}.0"


def fmt_bounds(bounds) -> str:
    return "off" if not bounds else f"{fmt_bound(bounds[0])}–{fmt_bound(bounds[1])}"


def fmt_seconds(s) -> str:
    """0.42 -> '0.4 s', 12.34 -> '12.3 s', 75 -> '1m15s'."""
    if s is None:
        return "–"
    from miner.progress import human_seconds

    return f"{s:.1f} s" if s < 60 else human_seconds(s)


def fmt_value(v) -> str:
    """A counter's value: counts with separators, floats rounded, other values as text."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or float(v).is_integer():
        return fmt_count(v)
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


# -- reading the run ----------------------------------------------------------------

def _number(value) -> Optional[float]:
    """``value`` as a finite float, or None (not a number, NaN, infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def _log_ratio(src, tgt) -> np.ndarray:
    s = pc.utf8_length(src).to_numpy(zero_copy_only=False).astype(np.float64)
    t = pc.utf8_length(tgt).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log2(s / t)
    return r[np.isfinite(r)]


def _pair_row(row: dict, rank: Optional[int] = None) -> dict:
    """A pair as the report shows it: score, texts, the title and URL of each side's
    document (None where unknown; ``url_or_title`` of older run folders as the title)."""
    out = {"score": _number(row.get("score")), "src": row.get("src_text") or "",
           "tgt": row.get("tgt_text") or ""}
    for side in ("src", "tgt"):
        out[f"{side}_title"] = row.get(f"{side}_title") or row.get(f"{side}_url_or_title")
        out[f"{side}_url"] = row.get(f"{side}_url")
    return out if rank is None else {"rank": rank, **out}


class _Nearest:
    """The ``n`` candidates nearest to the threshold on one side, over a stream of
    batches: ``above`` keeps the lowest scores >= threshold, else the highest scores
    below it; ties go to the earlier candidate, so the choice is deterministic."""

    def __init__(self, n: int, above: bool):
        self.n, self.above = n, above
        self.items: list[tuple[float, int, dict]] = []  # (distance, position, row)

    def add(self, scores: np.ndarray, offset: int, batch: pa.RecordBatch,
            threshold: float) -> None:
        with np.errstate(invalid="ignore"):  # NaN scores are on neither side
            idx = np.flatnonzero(scores >= threshold if self.above else scores < threshold)
        if not len(idx):
            return
        dist = np.abs(scores[idx] - threshold)
        order = np.lexsort((idx, dist))[:self.n]
        idx, dist = idx[order], dist[order]
        rows = batch.take(pa.array(idx)).to_pylist()
        self.items += [(float(d), offset + int(i), r) for d, i, r in zip(dist, idx, rows)]
        self.items.sort(key=lambda t: t[:2])
        del self.items[self.n:]

    def rows(self) -> list[dict]:
        """The rows kept, best score first."""
        return [r for _, _, r in sorted(self.items, key=lambda t: (-t[2]["score"], t[1]))]


def _scan_candidates(out_dir: Path, src: str, tgt: str, threshold: Optional[float]) -> dict:
    """One pass over the scores parts: every finite score, every log2 length ratio, and
    the candidates nearest to the threshold on each side (empty without scores)."""
    parts = RunDir.shards(RunDir(out_dir).scores(src, tgt))
    scores, ratios = [], []
    above, below = _Nearest(NEAR_THRESHOLD, True), _Nearest(NEAR_THRESHOLD, False)
    offset = 0
    columns = _pair_columns(parts[0]) if parts else []
    for batch in read_score_batches(parts, columns):
        s = batch.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
        scores.append(s)
        ratios.append(_log_ratio(batch.column("src_text"), batch.column("tgt_text")))
        if threshold is not None:
            above.add(s, offset, batch, threshold)
            below.add(s, offset, batch, threshold)
        offset += batch.num_rows
    return {"scores": _finite(np.concatenate(scores)) if scores else np.zeros(0),
            "ratios": np.concatenate(ratios) if ratios else np.zeros(0),
            "above": above.rows(), "below": below.rows()}


def sample_ranks(n: int, per_group: int = SAMPLES_PER_GROUP) -> dict[str, list[int]]:
    """Ranks (0 = best) of the kept pairs shown as best, median and worst.

    Each rank is in one group only: with few kept pairs every pair is shown once (the
    median group shrinks or goes), never twice.
    """
    best = list(range(min(per_group, n)))
    worst_start = max(len(best), n - per_group)
    worst = list(range(worst_start, n))
    start = max(len(best), min((n - 1) // 2 - per_group // 2, worst_start - per_group))
    median = list(range(start, min(start + per_group, worst_start)))
    return {"best": best, "median": median, "worst": worst}


def samples(kept: pa.Table) -> dict[str, list[dict]]:
    """The kept pairs at ``sample_ranks`` (best first in each group), with ranks from 1."""
    rows = {}
    for group, ranks in sample_ranks(kept.num_rows).items():
        picked = kept.take(pa.array(ranks, pa.int64())).to_pylist() if ranks else []
        rows[group] = [_pair_row(r, rank + 1) for rank, r in zip(ranks, picked)]
    return rows


# -- plots --------------------------------------------------------------------------

def _figure(height: float = 3.3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: Path, left: float = 0.12, bottom: float = 0.3) -> None:
    """Write ``fig`` as PNG. Fixed margins (room for the labels, the legend below):
    ``tight_layout`` would draw every figure twice, half the report's time."""
    fig.subplots_adjust(left=left, right=0.97, top=0.9, bottom=bottom)
    with atomic_path(path) as tmp:  # no Software/date metadata: same bytes on a rebuild
        fig.savefig(tmp, format="png", metadata={"Software": None})


def _tick(value: float, _pos=None) -> str:
    """A count on a log axis, short: 1, 20, 500, 1k, 20k, 1M."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def _legend_below(ax) -> None:
    """The legend under the axes, where it hides no bar."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.26), ncol=4, fontsize=7,
              frameon=False)


def _log_counts(ax, series: list) -> None:
    """A log count axis when there is something to count (bins of 0 stay empty)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    top = max((max(c) for c in series if len(c)), default=0)
    if top > 0:
        ax.set_yscale("log")
        ax.set_ylim(0.7, top * 2)
        # 1, 2, 5, 10, ... while that is a few ticks; decades only above
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if top < 100 else (1,)))
        ax.yaxis.set_major_formatter(FuncFormatter(_tick))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _edges(values: list[np.ndarray], marks: list[float], anchor: Optional[float] = None
           ) -> np.ndarray:
    """About ``HIST_BINS`` equal bins over the values and marks; ``anchor`` (the
    threshold) is one of the edges, so no bin holds pairs from both sides of it."""
    allv = np.concatenate([v for v in values if len(v)] or [np.zeros(1)])
    lo = min([float(allv.min())] + marks)
    hi = max([float(allv.max())] + marks)
    if hi <= lo:
        hi = lo + 1.0
    if anchor is None:
        return np.linspace(lo, hi, HIST_BINS + 1)
    width = (hi - lo) / HIST_BINS
    below = int(np.ceil((anchor - lo) / width - 1e-9))
    above = max(1, int(np.ceil((hi - anchor) / width - 1e-9)))
    # the top edge a hair above the maximum: np.histogram's last bin is closed
    return anchor + width * np.arange(-below, above + 1, dtype=np.float64)


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(values, bins=edges)[0].astype(int).tolist()


def plot_scores(path: Path, pair: str, edges: np.ndarray, candidates: Optional[list],
                kept: list, threshold: Optional[float]) -> None:
    """Score histogram: every candidate (line) and the kept pairs (filled) on a log
    count axis, the region at or above the threshold shaded and the threshold marked."""
    fig, ax = _figure()
    if threshold is not None:
        ax.axvspan(threshold, edges[-1], color="#2e7d32", alpha=0.08,
                   label=f"kept region (score ≥ {fmt_threshold(threshold)})")
        ax.axvline(threshold, color="#c62828", linestyle="--", linewidth=1,
                   label=f"threshold {fmt_threshold(threshold)}")
    if candidates is not None:
        ax.stairs(candidates, edges, color="#555555", label="candidates")
    ax.stairs(kept, edges, fill=True, color="#2e7d32", alpha=0.7, label="kept")
    _log_counts(ax, [c for c in (candidates, kept) if c is not None])
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(f"{pair}: margin scores")
    ax.set_xlabel("score")
    ax.set_ylabel("pairs (log scale)")
    _legend_below(ax)
    _save(fig, path)


def plot_reasons(path: Path, pair: str, dropped: dict, kept: int) -> None:
    """Horizontal bars, on a log axis: pairs dropped by each filter (in the order the
    filters run), then the pairs kept; every bar labelled with its count."""
    from matplotlib.ticker import FuncFormatter

    names = list(dropped) + ["kept"]
    values = [int(dropped[n]) for n in dropped] + [int(kept)]
    fig, ax = _figure(max(3.3, 0.9 + 0.22 * len(names)))
    y = np.arange(len(names))
    ax.barh(y, values, color=["#9e9e9e"] * len(dropped) + ["#2e7d32"], height=0.7)
    top = max(values + [1])
    ax.set_xscale("log")
    ax.set_xlim(0.7, top * 8)
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))
    for yi, v in zip(y, values):
        ax.text(max(v, 0.75) * 1.15, yi, f"{v:,}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"{pair}: candidates dropped by each filter, and kept")
    ax.set_xlabel("pairs (log scale)")
    _save(fig, path, left=0.2, bottom=0.15)


def plot_length_ratio(path: Path, pair: str, xlabel: str, edges: np.ndarray,
                      candidates: Optional[list], kept: list, bounds) -> None:
    """log2 character length ratio of candidates and kept pairs, the bounds marked."""
    fig, ax = _figure()
    if candidates is not None:
        ax.stairs(candidates, edges, color="#555555", label="candidates")
    ax.stairs(kept, edges, fill=True, color="#2e7d32", alpha=0.7, label="kept")
    if bounds:
        for b, style in zip(bounds, ("--", ":")):
            ax.axvline(float(np.log2(b)), color="#c62828", linestyle=style, linewidth=1,
                       label=f"ratio bound {fmt_bound(b)}")
    _log_counts(ax, [c for c in (candidates, kept) if c is not None])
    ax.set_title(f"{pair}: character length ratio")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs (log scale)")
    _legend_below(ax)
    _save(fig, path)


# -- one pair -----------------------------------------------------------------------

def _settings(details: dict, manifest: dict) -> dict:
    """Encoder, model, margin, k, retrieval of a pair: as its bitext stage recorded
    them, else from the config of the last ``mine run`` (older run folders)."""
    recorded = details.get("settings")
    if isinstance(recorded, dict):
        return {k: recorded.get(k) for k in ("encoder", "model", "margin", "k", "retrieval")}
    cfg = (manifest.get("run") or {}).get("config") or {}
    embed, score, knn = (cfg.get(k) or {} for k in ("embed", "score", "knn"))
    return {"encoder": embed.get("encoder"), "model": embed.get("model"),
            "margin": score.get("margin"), "k": knn.get("k"), "retrieval": score.get("retrieval")}


def _near_threshold(scan: dict, kept: pa.Table, examples: dict) -> list[dict]:
    """The candidates just above and just below the threshold, best first, each with
    what became of it: kept, the filter that dropped it (when it is one of that
    filter's examples), or below the threshold."""
    near = scan["above"] + scan["below"]
    if not near:
        return []
    ids = pa.array([r["src_id"] for r in near], pa.uint64())
    hit = kept.filter(pc.is_in(kept.column("src_id"), value_set=ids))
    kept_ids = set(zip(hit.column("src_id").to_pylist(), hit.column("tgt_id").to_pylist()))
    reason_of = {(e.get("src_text"), e.get("tgt_text")): reason
                 for reason, rows in examples.items() for e in rows}
    out = []
    for side, rows in (("above", scan["above"]), ("below", scan["below"])):
        for r in rows:
            if (r["src_id"], r["tgt_id"]) in kept_ids:
                status = "kept"
            elif side == "below":
                status = "below threshold"
            else:
                status = "dropped: " + reason_of.get((r["src_text"], r["tgt_text"]), "a filter")
            out.append({"side": side, "status": status, **_pair_row(r)})
    return out


def pair_report(out_dir: str | Path, pair: str, manifest: dict) -> dict:
    """The report of one pair; writes its PNGs under ``DIR/report/``."""
    out_dir = as_path(out_dir)
    src, tgt = pair.split("-")
    run = RunDir(out_dir)
    path = run.bitext_parquet(src, tgt)
    if not path.exists():
        raise MinerError(f"{path}: no such file; run `mine bitext {out_dir} --pair {pair}` first")
    kept = read_parquet(path, columns=_pair_columns(path))
    kept_scores = _finite(kept.column("score").to_numpy())
    kept_ratio = _log_ratio(kept.column("src_text"), kept.column("tgt_text"))
    stage = manifest["stages"].get(f"bitext/{pair}", {})
    details = stage.get("finish", {}).get("data") or {}
    details = details if isinstance(details, dict) else {}
    # marks only for values a plot can draw (a hand-edited or odd record has none)
    threshold = _number(details.get("threshold"))
    bounds = details.get("length_ratio_bounds")
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(_number(b) is not None and b > 0 for b in bounds)):
        bounds = None
    examples = details.get("dropped_examples")  # reason -> pair dicts; odd entries left out
    examples = {str(reason): [e for e in rows if isinstance(e, dict)]
                for reason, rows in (examples if isinstance(examples, dict) else {}).items()
                if isinstance(rows, list)}
    scan = _scan_candidates(out_dir, src, tgt, threshold)
    cand_scores, cand_ratio = scan["scores"], scan["ratios"]
    counts = stage.get("counts") or {"candidates": len(cand_scores), "kept": len(kept_scores),
                                     "dropped": {}}
    dropped = {k: v for k, v in (counts.get("dropped") or {}).items() if _number(v) is not None}

    plots_dir = run.relative(run.report_plots)
    plots = {"scores": f"{plots_dir}/{pair}.scores.png",
             "reasons": f"{plots_dir}/{pair}.reasons.png",
             "length_ratio": f"{plots_dir}/{pair}.length_ratio.png"}
    edges = _edges([cand_scores, kept_scores], [threshold] if threshold is not None else [],
                   anchor=threshold)
    score_hist = {"candidates": _histogram(cand_scores, edges)} if len(cand_scores) else {}
    score_hist["kept"] = _histogram(kept_scores, edges)
    plot_scores(out_dir / plots["scores"], pair, edges, score_hist.get("candidates"),
                score_hist["kept"], threshold)
    plot_reasons(out_dir / plots["reasons"], pair, dropped, counts.get("kept", kept.num_rows))
    marks = [float(np.log2(b)) for b in bounds] if bounds else []
    r_edges = _edges([cand_ratio, kept_ratio], marks)
    ratio_hist = {"candidates": _histogram(cand_ratio, r_edges)} if len(cand_ratio) else {}
    ratio_hist["kept"] = _histogram(kept_ratio, r_edges)
    plot_length_ratio(out_dir / plots["length_ratio"], pair, f"log2(len {src} / len {tgt})",
                      r_edges, ratio_hist.get("candidates"), ratio_hist["kept"], bounds)

    return {
        "pair": pair,
        "threshold": threshold,
        "scorer": details.get("scorer") if isinstance(details.get("scorer"), str) else None,
        "length_ratio_bounds": bounds,
        "settings": _settings(details, manifest),
        "counts": counts,
        "dropped_examples": {reason: [_pair_row(e) for e in rows] for reason, rows in examples.items()},
        "near_threshold": _near_threshold(scan, kept, examples),
        "samples": samples(kept),
        "score_histogram": {"edges": edges.tolist(), **score_hist},
        "length_ratio_histogram": {"edges": r_edges.tolist(), **ratio_hist},
        "plots": plots,
    }


# -- the run ------------------------------------------------------------------------

_PREPARE_KEY = re.compile(r"^(?P<name>.+)-[0-9a-f]{16}(?:\.\d+-\d+)?$")
_END_KEYS = ("ended", "end", "ended_at", "finished_at", "end_time")


def inputs_of(manifest: dict) -> list[dict]:
    """The input files by name, in input order, with the documents and sentences
    prepare read from each (its task records; pieces of a big file added up), or
    the inputs of the last ``mine run`` config without counts."""
    files: dict[str, dict] = {}
    tasks = (manifest["stages"].get("prepare") or {}).get("tasks") or {}
    for key, rec in tasks.items():
        m = _PREPARE_KEY.match(key)
        entry = files.setdefault(m.group("name") if m else key,
                                 {"file": m.group("name") if m else key, "documents": 0,
                                  "sentences": {}})
        for lang, c in (rec.get("counts") or {}).items():
            if isinstance(c, dict):
                entry["documents"] += int(c.get("documents") or 0)
                if c.get("sentences"):
                    entry["sentences"][lang] = entry["sentences"].get(lang, 0) + int(c["sentences"])
    if files:
        return list(files.values())
    inputs = ((manifest.get("run") or {}).get("config") or {}).get("inputs") or []
    return [{"file": Path(str(p)).name, "documents": None, "sentences": {}} for p in inputs]


def _as_time(value) -> Optional[dt.datetime]:
    """A recorded time (ISO text or seconds since the epoch) as an aware UTC datetime."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
        if isinstance(value, str):
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _latest_stage(manifest: dict, names: list[str]) -> Optional[tuple[dt.datetime, dict]]:
    """The end time and record of the stage among ``names`` that ended last, or None
    in a run folder without recorded times."""
    latest = None
    for name in names:
        rec = manifest["stages"].get(name) or {}
        t = next((_as_time(rec[k]) for k in _END_KEYS if k in rec), None)
        if t is not None and (latest is None or t > latest[0]):
            latest = (t, rec)
    return latest


def recorded_time(manifest: dict, names: list[str]) -> Optional[str]:
    """When the data of the report was made: the latest end time the stages ``names``
    recorded, ISO 8601 UTC to the second (never the time of the report, so a rebuild
    shows the same date); None in a run folder without recorded times."""
    latest = _latest_stage(manifest, names)
    if latest is None:
        return None
    return latest[0].isoformat(timespec="seconds").replace("+00:00", "Z")


def recorded_versions(manifest: dict, names: list[str]) -> dict[str, str]:
    """Versions of miner and its dependencies as recorded by the stage that ended last
    (its outputs are the newest in the report), else by the last ``mine run``, else
    the installed miner's version alone."""
    from miner import __version__

    latest = _latest_stage(manifest, names)
    for where in (latest[1] if latest else None, manifest.get("run")):
        v = (where or {}).get("versions")
        if isinstance(v, dict) and v:
            out = {str(k): str(x) for k, x in v.items()}
            out.setdefault("miner", __version__)
            return out
    return {"miner": __version__}


def _agreed(values: dict[str, Any]) -> Any:
    """One value when every pair has it, else ``{pair: value}``."""
    distinct = {repr(v) for v in values.values()}
    return next(iter(values.values())) if len(distinct) <= 1 and values else (values or None)


def summary(out_dir: Path, manifest: dict, pairs: dict, names: list[str]) -> dict:
    """What a reader wants first: inputs, languages, settings, pairs kept, date, version."""
    stage_names = [n for n in names if n != ReportStage.name]
    versions = recorded_versions(manifest, stage_names)
    settings = {key: _agreed({p: r["settings"].get(key) for p, r in pairs.items()})
                for key in ("encoder", "model", "margin", "k", "retrieval")}
    settings["threshold"] = _agreed({p: r["threshold"] for p, r in pairs.items()})
    settings["scorer"] = _agreed({p: r["scorer"] for p, r in pairs.items()})
    settings["length_ratio_bounds"] = _agreed({p: r["length_ratio_bounds"]
                                               for p, r in pairs.items()})
    langs = list(dict.fromkeys(lang for p in pairs for lang in p.split("-")))
    return {
        "run": out_dir.name,
        "date": recorded_time(manifest, stage_names),
        "miner_version": versions["miner"],
        "versions": versions,
        "inputs": inputs_of(manifest),
        "languages": langs,
        "settings": settings,
        "kept": {p: {"candidates": r["counts"].get("candidates"), "kept": r["counts"].get("kept")}
                 for p, r in pairs.items()},
    }


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
    per_pair = {p: pair_report(out_dir, p, manifest) for p in pairs}
    report = {
        "directory": str(out_dir),
        "summary": summary(out_dir, manifest, per_pair, names),
        "pairs": per_pair,
        "stages": {name: {"counts": manifest["stages"][name].get("counts", {}),
                          "seconds": manifest["stages"][name].get("seconds"),
                          "finished": manifest["stages"][name].get("finished")}
                   for name in names},  # in the order run
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
        return {"pairs": self.pairs, "template": _template_digest(),
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


# -- HTML ---------------------------------------------------------------------------

def _template_dir() -> Path:
    return Path(__file__).resolve().parent / "templates"


def _template_digest() -> str:
    """The template's content digest: a new template rebuilds the report of a run."""
    import xxhash

    return xxhash.xxh64_hexdigest((_template_dir() / TEMPLATE).read_bytes())


def _flat_counters(counts: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested counters as (dotted name, value), zeros left out (the table stays short)."""
    rows = []
    for key, value in counts.items():
        if isinstance(value, dict):
            rows += _flat_counters(value, f"{prefix}{key}.")
        elif not (value is None or value == "" or value == 0):
            rows.append((f"{prefix}{key}", value))
    return rows


def _grouped_counters(counts: dict) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Counters grouped by their first level when it is a dict (a language, a
    direction, the drops): [("de", [("documents", 8), ...]), ("", [("kept", 35)])]."""
    plain = [(k, v) for k, v in _flat_counters({k: v for k, v in counts.items()
                                               if not isinstance(v, dict)})]
    groups = [("", plain)] if plain else []
    for key, value in counts.items():
        if isinstance(value, dict):
            rows = _flat_counters(value)
            if rows:
                groups.append((key, rows))
    return groups


def _is_url(text) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def render_html(report: dict, out_dir: Path) -> str:
    """The report as one HTML page (``templates/report.html.j2``), PNGs inlined."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_template_dir())),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(count=fmt_count, share=fmt_share, threshold=fmt_threshold,
                       score=fmt_score, bounds=fmt_bounds, seconds=fmt_seconds,
                       value=fmt_value, counters=_grouped_counters, is_url=_is_url)

    def img(rel: str) -> str:
        return "data:image/png;base64," + base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")

    date = report["summary"]["date"]
    shown = _as_time(date).strftime("%Y-%m-%d %H:%M UTC") if date else None
    fmt = {"text": lambda v: "–" if v is None else str(v), "threshold": fmt_threshold,
           "bounds": fmt_bounds}
    return env.get_template(TEMPLATE).render(report=report, s=report["summary"], img=img,
                                             date=shown, fmt=fmt)
