"""``mine run``: the list of stages, handed to the runner.

inputs -> prepare -> embed (per language) -> knn, score, bitext (per pair) -> report.
Per-language stages are shared by all pairs that use the language. The runner
(``miner.stage.Runner``) skips what is current, so a rerun after a crash picks up
where it stopped, and records everything in ``manifest.json``.
"""

from __future__ import annotations

import logging

from miner.config import Config
from miner.errors import MinerError
from miner.stage import Runner, Stage

log = logging.getLogger(__name__)


def run_pairs(cfg: Config) -> list[tuple[str, str]]:
    """The run's pairs with normalised language codes, in order."""
    from miner.lid import normalize_lang

    return [(normalize_lang(s), normalize_lang(t)) for s, t in cfg.parsed_pairs()]


def pair_langs(cfg: Config) -> list[str]:
    """Languages of all pairs, normalised, in first-seen order."""
    return list(dict.fromkeys(lang for pair in run_pairs(cfg) for lang in pair))


def stages_for(cfg: Config) -> list[Stage]:
    """Every stage of a run, in the order they run."""
    from miner.embed.stage import EmbedStage
    from miner.knn.stage import KnnStage
    from miner.outputs import BitextStage
    from miner.prepare import PrepareStage
    from miner.report import ReportStage
    from miner.score import ScoreStage

    stages: list[Stage] = [PrepareStage(cfg, list(cfg.inputs), pair_langs(cfg))]
    stages += [EmbedStage(cfg, lang) for lang in pair_langs(cfg)]
    for src, tgt in run_pairs(cfg):
        stages += [KnnStage(cfg, src, tgt), ScoreStage(cfg, src, tgt), BitextStage(cfg, src, tgt)]
    stages.append(ReportStage([f"{s}-{t}" for s, t in run_pairs(cfg)], [s.name for s in stages]))
    return stages


def run_pipeline(cfg: Config, progress=print) -> dict:
    """Run every stage of ``cfg``; returns ``{"pairs": {pair: bitext counts},
    "stages": {stage: counts}, "timings": {stage: seconds}}``."""
    from miner.executor import executor_for

    if not cfg.pairs:
        raise MinerError("no language pairs given (--pair de-en or pairs = [...] in the config)")
    if not cfg.inputs:
        raise MinerError("no input files given")
    timings: dict = {}
    counts = run_stages(cfg, stages_for(cfg), progress, timings, record_run=True)
    return {"pairs": {f"{s}-{t}": counts[f"bitext/{s}-{t}"] for s, t in run_pairs(cfg)},
            "stages": counts, "timings": timings}


def run_stages(cfg: Config, stages: list[Stage], progress=print, timings: dict | None = None,
               record_run: bool = False) -> dict[str, dict]:
    """Run ``stages`` over ``cfg.out`` on the executor ``cfg`` names, under the run
    lock; returns each stage's counts. ``record_run``: also record the manifest's
    ``run`` entry: the config, versions, start and end of this run, the seconds each
    stage took this time and the stages it skipped (``miner.manifest``)."""
    import time

    from miner.executor import executor_for
    from miner.manifest import utc_now, versions

    start, started = time.time(), utc_now()
    with executor_for(cfg) as executor, Runner(cfg, executor, progress) as runner:
        counts = runner.run_all(stages)
        if timings is not None:
            timings.update(runner.timings)
        if record_run:
            runner.manifest.set("run", {"config": cfg.to_dict(), "versions": versions(),
                                        "started": started, "ended": utc_now(),
                                        "seconds": round(time.time() - start, 3),
                                        "timings": runner.timings, "skipped": runner.skipped})
            runner.manifest.flush()
    return counts
