"""The ``embed`` stage: sentence shards -> embedding shards, one task per shard.

``sentences/{lang}/part-NNNNN.parquet`` -> ``embeddings/{lang}/part-NNNNN.parquet``
(row-aligned: same ids in the same order; ``miner.formats.embeddings``). A task is
current when its shard's record names the same encoder, precision, dtype and sentence
shard content (its digest) and the embedding file is intact, so a rerun after a crash
embeds only what is missing. Tasks run on workers that load the encoder once: in this
process locally, GPU actors on a Ray cluster with GPUs.

Inside a shard the worker embeds blocks of ``BLOCK_ROWS`` sentences and saves a
checkpoint every ``CHECKPOINT_ROWS`` (``.part-NNNNN.parquet.ckpt-KKK.npz`` beside the
shard, named by the task's fingerprint): a kill loses at most one checkpoint of work,
and because a sentence's embedding does not depend on its batch, the resumed shard is
byte-identical to an uninterrupted one. Locally, one ``Progress`` per language counts
sentences over all its shards.
"""

from __future__ import annotations

import io
import logging
from functools import partial
from pathlib import Path

import numpy as np

from miner.config import Config, EmbedConfig
from miner.embed.encoders import Encoder, MuseEncoder, encoder_for, encoder_id
from miner.errors import MinerError
from miner.executor import Executor
from miner.formats import num_rows
from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard
from miner.formats.sentences import read_sentences
from miner.langs import warn_uncovered
from miner.io import atomic_path
from miner.progress import Progress
from miner.rundir import RunDir
from miner.stage import Result, Stage, Task, fingerprint_hash
from miner.storage import as_path

log = logging.getLogger(__name__)


def sentence_shards(ctx, lang: str) -> list:
    """The sentence shards of a language, in order: those prepare recorded when it
    did (a missing one is an error naming it), else those in the folder."""
    return ctx.input_shards("prepare", ctx.run.sentences(lang), "no sentence shards "
                            f"(run `mine prepare ... --lang {lang} --out {ctx.run}` first)")


BLOCK_ROWS = 2_000  # sentences per encode call (a progress step)
CHECKPOINT_ROWS = 10_000  # sentences between checkpoints inside a shard


class ShardCheckpoint:
    """The embedded head of one shard, saved in pieces beside it:
    ``.{shard}.ckpt-KKK.npz`` holding ``key`` (the task's fingerprint hash), ``start``
    (its first row) and ``emb`` (rows in the storage dtype). A piece of another key
    (the sentences or settings changed) is never used."""

    def __init__(self, emb_path, key: str):
        self.path = as_path(emb_path)
        self.key = key

    def _piece(self, k: int):
        return self.path.parent / f".{self.path.name}.ckpt-{k:03d}.npz"

    def load(self) -> list[np.ndarray]:
        """The valid pieces, in order, up to the first missing or foreign one."""
        pieces: list[np.ndarray] = []
        start = 0
        while (piece := self._piece(len(pieces))).exists():
            try:
                with np.load(io.BytesIO(piece.read_bytes()), allow_pickle=False) as z:
                    if str(z["key"]) != self.key or int(z["start"]) != start:
                        break
                    emb = z["emb"]
            except (OSError, ValueError, KeyError, EOFError):  # a damaged piece: redo it
                break
            pieces.append(emb)
            start += len(emb)
        return pieces

    def save(self, k: int, start: int, emb: np.ndarray) -> None:
        with atomic_path(self._piece(k)) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=np.array(self.key), start=np.array(start), emb=emb)

    def clear(self) -> None:
        for piece in self.path.parent.glob(f".{self.path.name}.ckpt-*.npz"):
            piece.unlink(missing_ok=True)


class EmbedWorker:
    """A worker: holds the encoder (loaded once per process), embeds one shard per call.

    ``EmbedWorker(cfg.embed)`` on a cluster (the model loads inside the worker, on its
    GPU when it has one); ``EmbedWorker(cfg.embed, encoder)`` uses a loaded encoder.
    ``progress``: a ``Progress`` counting sentences (local runs).
    """

    def __init__(self, settings: EmbedConfig, encoder: Encoder | None = None,
                 progress: Progress | None = None):
        self.encoder = encoder or encoder_for(settings)
        self.progress = progress or Progress("embed", enabled=False)

    def __call__(self, task: tuple[str, str, EmbeddingMeta, str]) -> Result:
        sent_path, emb_path, meta, key = task
        if encoder_id(self.encoder) != meta.encoder or self.encoder.dim != meta.dim:
            raise MinerError(f"worker encoder {encoder_id(self.encoder)} is not {meta.encoder}")
        table = read_sentences(sent_path, columns=["id", "text"])
        texts = table.column("text").to_pylist()
        checkpoint = ShardCheckpoint(emb_path, key)
        done = checkpoint.load()  # pieces saved before a kill
        start = sum(map(len, done))
        if start:
            log.info("%s: resuming after %d checkpointed sentence(s)", emb_path, start)
            self.progress.update(start)
        fresh: list[np.ndarray] = []
        for a in range(start, len(texts), BLOCK_ROWS):
            block = texts[a:a + BLOCK_ROWS]
            fresh.append(self.encoder.encode(block).astype(meta.dtype))
            self.progress.update(len(block))
            n_fresh = sum(map(len, fresh))
            if n_fresh >= CHECKPOINT_ROWS and a + BLOCK_ROWS < len(texts):
                done.append(np.concatenate(fresh))
                checkpoint.save(len(done) - 1, a + BLOCK_ROWS - n_fresh, done[-1])
                fresh = []
        parts = done + fresh
        emb = np.concatenate(parts) if parts else np.zeros((0, meta.dim), meta.dtype)
        write_embedding_shard(emb_path, table.column("id").to_numpy(), emb, meta)
        checkpoint.clear()
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


def encoder_precision(cfg: Config, encoder: Encoder | None) -> str:
    """The arithmetic the run's encoder uses (``bf16`` or ``fp32``): the loaded
    encoder's, else what ``cfg.embed.precision`` resolves to on this machine (on a
    cluster, workers on other CPUs are assumed alike)."""
    if encoder is not None:
        return getattr(encoder, "precision", "fp32")
    e = cfg.embed
    if e.encoder != "muse" and e.device not in ("cpu",):
        return "fp32"  # may run on a GPU (fp16 there, as before: no new fingerprint)
    from miner.embed.muse_torch import resolve_precision

    return resolve_precision(e.precision)


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
        return dict(self.__dict__, encoder=None, _progress=None)

    def check(self, ctx) -> None:  # a language the encoder was not trained on: one warning
        warn_uncovered(self.cfg.embed.encoder, self.cfg.embed.model, [self.lang])

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
        settings = {"encoder": meta.encoder, "dim": meta.dim, "dtype": meta.dtype}
        precision = encoder_precision(self.cfg, self.encoder)
        if precision != "fp32":  # fp32 runs keep the fingerprints they always had
            settings["precision"] = precision
        if self.cfg.embed.encoder != "muse" and self.cfg.embed.st_backend != "torch":
            settings["st_backend"] = self.cfg.embed.st_backend  # int8: other vectors
        if precision == "bf16" and meta.encoder == "muse":
            from miner.embed.muse_torch import TorchMuse

            # the torch network's arithmetic changes the bits: older ones are not current
            settings["muse_torch"] = TorchMuse.VERSION
        tasks = []
        for s in shards:
            fingerprint = dict(settings, sentences=ctx.digest(s))
            tasks.append(Task(s.name, fingerprint, (str(s), str(out / s.name), meta,
                                                    fingerprint_hash(fingerprint))))
        return tasks

    def run_pending(self, ctx, pending, done) -> None:
        """The runner's plan, with one bar over the sentences of every pending shard
        when the worker runs here."""
        if ctx.cluster is not None:
            return super().run_pending(ctx, pending, done)
        total = sum(num_rows(t.item[0]) for t in pending)
        with Progress(f"embed {self.lang}", total=total, unit="sentence") as bar:
            self._progress = bar
            try:
                super().run_pending(ctx, pending, done)
            finally:
                self._progress = None

    def worker_factory(self, ctx):
        if ctx.cluster is not None:  # the same for every language: Ray keeps the actors
            return partial(EmbedWorker, self.cfg.embed)
        return partial(EmbedWorker, self.cfg.embed, self.encoder,
                       getattr(self, "_progress", None))

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
