"""``mine run``: inputs -> prepare -> embed -> knn -> score -> bitext, resumable.

Per-language stages (prepare, embed) are shared by all pairs that use the language.
Each stage is skipped when its outputs are complete, so a rerun after a crash picks
up where it stopped: prepare keeps per-input staging and a manifest record, embed and
knn skip finished shards, score checks its manifest record against its inputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from miner.config import Config
from miner.errors import MinerError
from miner.manifest import read_manifest, update_stage
from miner.storage import as_path

log = logging.getLogger(__name__)


def pair_langs(cfg: Config) -> list[str]:
    """Languages of all pairs, in first-seen order."""
    langs: list[str] = []
    for src, tgt in cfg.parsed_pairs():
        for lang in (src, tgt):
            if lang not in langs:
                langs.append(lang)
    return langs


def input_fingerprint(paths: list[str]) -> list[list]:
    """Path, size and modification time of each input: a changed input redoes prepare."""
    out = []
    for p in paths:
        path = as_path(p)
        st = path.stat() if path.exists() else None
        out.append([str(p), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def prepare_is_current(cfg: Config, out_dir: Path, langs: list[str]) -> bool:
    """True when the manifest records a finished prepare of these inputs and settings."""
    from miner.lid import normalize_lang

    rec = read_manifest(out_dir)["stages"].get("prepare")
    return bool(rec and rec.get("finished")
                and rec.get("config_hash") == cfg.stage_hash("prepare")
                and rec.get("langs") == [normalize_lang(x) for x in langs]
                and rec.get("shard_size") == cfg.shard_size
                and rec.get("fingerprint") == input_fingerprint(cfg.inputs))


def run_pipeline(cfg: Config, progress=print) -> dict:
    """Run every stage for every pair of ``cfg``; returns a summary dict."""
    from miner.executor import executor_for
    from miner.lid import normalize_lang

    if not cfg.pairs:
        raise MinerError("no language pairs given (--pair de-en or pairs = [...] in the config)")
    if not cfg.inputs:
        raise MinerError("no input files given")
    out_dir = as_path(cfg.out)  # a local directory or a URL (miner.storage)
    pairs = [(normalize_lang(s), normalize_lang(t)) for s, t in cfg.parsed_pairs()]
    langs = [normalize_lang(x) for x in pair_langs(cfg)]
    timings: dict[str, float] = {}

    def stage(name: str, fn, *args):
        t = time.time()
        result = fn(*args)
        timings[name] = round(time.time() - t, 3)
        return result

    executor = executor_for(cfg)  # local (default) or a Ray cluster: miner.executor
    try:
        executor.check_shared(out_dir)
        return _run_stages(cfg, out_dir, pairs, langs, executor, stage, timings, progress)
    finally:
        executor.close()


def _run_stages(cfg: Config, out_dir: Path, pairs, langs, executor, stage, timings,
                progress) -> dict:
    from miner.embed.stage import run_embed
    from miner.knn.stage import run_knn
    from miner.outputs import write_bitext
    from miner.prepare import prepare
    from miner.report import build_report
    from miner.score import run_score, score_is_current

    if prepare_is_current(cfg, out_dir, langs):
        progress("prepare: up to date, skipped")
    else:
        progress(f"prepare: {len(cfg.inputs)} input(s) -> {', '.join(langs)}")
        stage("prepare", prepare, cfg, list(cfg.inputs), langs, out_dir, executor)
        rec = read_manifest(out_dir)["stages"]["prepare"]
        rec["fingerprint"] = input_fingerprint(cfg.inputs)
        update_stage(out_dir, "prepare", rec)

    encoder = None
    for lang in langs:
        if encoder is None and executor.name == "local":  # cluster workers load their own
            from miner.embed.encoders import load_encoder

            e = cfg.embed
            encoder = load_encoder(e.encoder, e.model, e.device, e.batch_size)
        counts = stage(f"embed/{lang}", run_embed, cfg, out_dir, lang, encoder, executor)
        progress(f"embed {lang}: {counts['embedded_shards']} shard(s) embedded, "
                 f"{counts['skipped_shards']} already done")

    summary = {"pairs": {}, "timings": timings}
    for src, tgt in pairs:
        pair = f"{src}-{tgt}"
        counts = stage(f"knn/{pair}", run_knn, cfg, out_dir, src, tgt, executor)
        progress(f"knn {pair}: done")
        if score_is_current(cfg, out_dir, src, tgt):
            progress(f"score {pair}: up to date, skipped")
        else:
            counts = stage(f"score/{pair}", run_score, cfg, out_dir, src, tgt,  # local: in
                           None if executor.name == "local" else executor)  # process, see docs/mining.md
            progress(f"score {pair}: {counts['candidates']} candidates")
        counts = stage(f"bitext/{pair}", write_bitext, cfg, out_dir, src, tgt,  # local: in
                       None if executor.name == "local" else executor)  # process, benchmarks/bitext.py
        summary["pairs"][pair] = counts
        progress(f"bitext {pair}: {counts.get('kept', counts)} pairs kept")
    build_report(out_dir)
    update_stage(out_dir, "run", {"config": cfg.to_dict(), "timings": timings,
                                  "finished": True})
    return summary
