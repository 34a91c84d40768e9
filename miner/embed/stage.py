"""The ``embed`` stage: sentence shards -> embedding shards, one task per shard.

``sentences/{lang}/part-NNNNN.parquet`` -> ``embeddings/{lang}/part-NNNNN.parquet``
(row-aligned: same ids in the same order; ``miner.formats.embeddings``). A task is
current when its shard's record names the same encoder, dtype and sentence shard
content (its digest) and the embedding file is intact, so a rerun after a crash
embeds only what is missing. Tasks run on workers that load the encoder once: in this
process locally, GPU actors on a Ray cluster with GPUs.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from miner.config import Config, EmbedConfig
from miner.embed.encoders import Encoder, MuseEncoder, encoder_for, encoder_id
from miner.errors import MinerError
from miner.executor import Executor
from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard
from miner.formats.sentences import read_sentences
from miner.rundir import RunDir
from miner.stage import Result, Stage, Task

log = logging.getLogger(__name__)


def sentence_shards(ctx, lang: str) -> list:
    """The sentence shards of a language, in order: those prepare recorded when it
    did (a missing one is an error naming it), else those in the folder."""
    return ctx.input_shards("prepare", ctx.run.sentences(lang), "no sentence shards "
                            f"(run `mine prepare ... --lang {lang} --out {ctx.run}` first)")


class EmbedWorker:
    """A worker: holds the encoder (loaded once per process), embeds one shard per call.

    ``EmbedWorker(cfg.embed)`` on a cluster (the model loads inside the worker, on its
    GPU when it has one); ``EmbedWorker(cfg.embed, encoder)`` uses a loaded encoder.
    """

    def __init__(self, settings: EmbedConfig, encoder: Encoder | None = None):
        self.encoder = encoder or encoder_for(settings)

    def __call__(self, task: tuple[str, str, EmbeddingMeta]) -> Result:
        sent_path, emb_path, meta = task
        if encoder_id(self.encoder) != meta.encoder or self.encoder.dim != meta.dim:
            raise MinerError(f"worker encoder {encoder_id(self.encoder)} is not {meta.encoder}")
        table = read_sentences(sent_path, columns=["id", "text"])
        texts = table.column("text").to_pylist()
        write_embedding_shard(emb_path, table.column("id").to_numpy(),
                              self.encoder.encode(texts), meta)
        return Result(outputs=[emb_path], counts={"sentences": len(texts)})

    def meta(self, dtype: str) -> EmbeddingMeta:
        return EmbeddingMeta(encoder_id(self.encoder), self.encoder.dim, dtype)


def _worker_meta(settings: EmbedConfig, _item=None) -> EmbeddingMeta:
    """The embedding metadata of the encoder ``settings`` name (loads it)."""
    return EmbedWorker(settings).meta(settings.embed_dtype)


def encoder_meta(cfg: Config, encoder: Encoder | None, cluster: Executor | None) -> EmbeddingMeta:
    """Metadata of the run's encoder without loading it on the driver when avoidable:
    from ``encoder`` if given, known for muse, else from one task on ``cluster``."""
    e = cfg.embed
    if encoder is not None:
        return EmbeddingMeta(encoder_id(encoder), encoder.dim, e.embed_dtype)
    if e.encoder == "muse" and not e.model:
        return EmbeddingMeta(MuseEncoder.name, MuseEncoder.dim, e.embed_dtype)
    if cluster is None:
        return _worker_meta(e)
    return cluster.map(partial(_worker_meta, e), [None], num_gpus=gpus_per_worker(cfg, cluster))[0]


def gpus_per_worker(cfg: Config, executor: Executor) -> int:
    """1 when the encoder can use a GPU, the device allows one and the executor has
    GPUs; muse runs on CPU only."""
    e = cfg.embed
    if e.encoder == "muse" or e.device == "cpu":
        return 0
    return 1 if executor.gpus() > 0 else 0


class EmbedStage(Stage):
    """``sentences/{lang}`` -> ``embeddings/{lang}``."""

    placement = "actors"

    def __init__(self, cfg: Config, lang: str, encoder: Encoder | None = None):
        self.cfg, self.lang, self.encoder = cfg, lang, encoder
        self.name = f"embed/{lang}"

    def __getstate__(self):  # a loaded encoder never travels to cluster workers
        return dict(self.__dict__, encoder=None)

    def tasks(self, ctx) -> list[Task]:
        shards = sentence_shards(ctx, self.lang)
        if self.encoder is None and ctx.cluster is None:
            self.encoder = encoder_for(self.cfg.embed)
        meta = encoder_meta(self.cfg, self.encoder, ctx.cluster)
        out = ctx.run.embeddings(self.lang)
        # shards of an earlier run with more shards would be mixed in: drop them
        wanted = {s.name for s in shards}
        for stale in RunDir.shards(out):
            if stale.name not in wanted:
                stale.unlink()
        return [Task(s.name, {"encoder": meta.encoder, "dim": meta.dim, "dtype": meta.dtype,
                              "sentences": ctx.digest(s)},
                     (str(s), str(out / s.name), meta)) for s in shards]

    def worker_factory(self, ctx):
        if ctx.cluster is not None:  # the same for every language: Ray keeps the actors
            return partial(EmbedWorker, self.cfg.embed)
        return partial(EmbedWorker, self.cfg.embed, self.encoder)

    def num_gpus(self, ctx) -> float:
        return gpus_per_worker(self.cfg, ctx.cluster) if ctx.cluster is not None else 0

    def report(self, c: dict) -> dict:
        return {"shards": c["tasks"], "embedded_shards": c["tasks_run"],
                "skipped_shards": c["tasks_skipped"],
                "sentences": c.get("sentences", 0),
                "sentences_embedded": c["this_run"].get("sentences", 0)}

    def summary(self, c: dict) -> str:
        return (f"{c['embedded_shards']} shard(s) embedded ({c['sentences_embedded']} "
                f"sentences), {c['skipped_shards']} already done")


def run_embed(cfg: Config, out_dir: str | Path, lang: str,
              encoder: Encoder | None = None, executor: Executor | None = None) -> dict:
    """Run the stage on its own for ``lang``; returns counts (``shards``,
    ``embedded_shards``, ``skipped_shards``, ``sentences_embedded`` this time)."""
    from miner.stage import run_stage

    return run_stage(EmbedStage(cfg, lang, encoder), cfg, out_dir, executor)
