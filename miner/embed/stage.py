"""The ``embed`` stage: sentence shards -> embedding shards, resumable shard by shard.

``DIR/sentences/{lang}/part-NNNNN.parquet`` -> ``DIR/embeddings/{lang}/part-NNNNN.parquet``
(row-aligned: same ids in the same order). A shard whose embedding file exists, was
made by the same encoder and holds the same ids is skipped, so a rerun after a crash
only embeds what is missing; each file is written atomically.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import numpy as np

from miner.config import Config, EmbedConfig
from miner.embed.encoders import Encoder, MuseEncoder, encoder_id, load_encoder
from miner.embed.shards import EmbeddingMeta, read_embedding_meta, write_embedding_shard
from miner.errors import MinerError
from miner.executor import Executor, LocalExecutor
from miner.manifest import update_stage
from miner.storage import AnyPath, as_path, read_table

log = logging.getLogger(__name__)


def sentence_shards(out_dir: str | Path, lang: str) -> list[AnyPath]:
    """The sentence shards of a language, in order; an error when there are none."""
    shards = sorted((as_path(out_dir) / "sentences" / lang).glob("part-*.parquet"))
    if not shards:
        raise MinerError(f"{as_path(out_dir) / 'sentences' / lang}: no sentence shards "
                         f"(run `mine prepare ... --lang {lang} --out {out_dir}` first)")
    return shards


def embedding_path(out_dir: str | Path, lang: str, sentence_shard: AnyPath) -> AnyPath:
    return as_path(out_dir) / "embeddings" / lang / sentence_shard.name


def shard_is_done(emb_path: AnyPath, sent_path: AnyPath, meta: EmbeddingMeta) -> bool:
    """True when ``emb_path`` holds ``meta``'s embeddings of exactly ``sent_path``'s ids.

    Another encoder's shard is an error (mixing encoders), not something to redo silently.
    """
    if not emb_path.exists():
        return False
    have = read_embedding_meta(emb_path)
    if (have.encoder, have.dim) != (meta.encoder, meta.dim):
        raise MinerError(f"{emb_path}: made by {have.encoder} (dim {have.dim}), this run "
                         f"uses {meta.encoder} (dim {meta.dim}); use another --out or remove "
                         f"{emb_path.parent}")
    if have.dtype != meta.dtype:
        return False
    emb_ids = read_table(emb_path, columns=["id"]).column("id").to_numpy()
    sent_ids = read_table(sent_path, columns=["id"]).column("id").to_numpy()
    return np.array_equal(emb_ids, sent_ids)


def embed_shard(encoder: Encoder, sent_path: AnyPath, emb_path: AnyPath, meta: EmbeddingMeta) -> int:
    """Embed one sentence shard into one embedding shard; returns the rows written."""
    table = read_table(sent_path, columns=["id", "text"])
    texts = table.column("text").to_pylist()
    emb = encoder.encode(texts)
    write_embedding_shard(emb_path, table.column("id").to_numpy(), emb, meta)
    return len(texts)


class EmbedWorker:
    """An executor worker: loads the encoder once, then embeds one shard per call.

    ``EmbedWorker(cfg.embed)`` on a cluster (the model loads inside the worker, on its
    GPU when it has one); ``EmbedWorker(cfg.embed, encoder)`` reuses a loaded encoder.
    """

    def __init__(self, settings: EmbedConfig, encoder: Encoder | None = None):
        e = settings
        self.encoder = encoder or load_encoder(e.encoder, e.model, e.device, e.batch_size)

    def __call__(self, task: tuple[str, str, EmbeddingMeta]) -> int:
        sent_path, emb_path, meta = task
        if encoder_id(self.encoder) != meta.encoder or self.encoder.dim != meta.dim:
            raise MinerError(f"worker encoder {encoder_id(self.encoder)} is not {meta.encoder}")
        return embed_shard(self.encoder, as_path(sent_path), as_path(emb_path), meta)

    def meta(self, dtype: str) -> EmbeddingMeta:
        return EmbeddingMeta(encoder_id(self.encoder), self.encoder.dim, dtype)


def _worker_meta(settings: EmbedConfig, _item=None) -> EmbeddingMeta:
    """The embedding metadata of the encoder ``settings`` name (loads it)."""
    return EmbedWorker(settings).meta(settings.embed_dtype)


def encoder_meta(cfg: Config, encoder: Encoder | None, executor: Executor | None) -> EmbeddingMeta:
    """Metadata of the run's encoder without loading it on the driver when avoidable:
    from ``encoder`` if given, known for muse, else from one task on ``executor``."""
    e = cfg.embed
    if encoder is not None:
        return EmbeddingMeta(encoder_id(encoder), encoder.dim, e.embed_dtype)
    if e.encoder == "muse" and not e.model:
        return EmbeddingMeta(MuseEncoder.name, MuseEncoder.dim, e.embed_dtype)
    if executor is None:
        return _worker_meta(e)
    return executor.map(partial(_worker_meta, e), [None], num_gpus=_gpus_per_worker(cfg, executor))[0]


def _gpus_per_worker(cfg: Config, executor: Executor) -> int:
    """1 when the encoder can use a GPU, the device allows one and the executor has
    GPUs; muse runs on CPU only."""
    e = cfg.embed
    if e.encoder == "muse" or e.device == "cpu":
        return 0
    return 1 if executor.gpus() > 0 else 0


def run_embed(cfg: Config, out_dir: str | Path, lang: str,
              encoder: Encoder | None = None, executor: Executor | None = None) -> dict:
    """Embed every sentence shard of ``lang`` not embedded yet; returns counts.

    Shards are independent tasks: with an ``executor`` (``miner.executor``) each one
    runs on a worker that loaded the encoder once (a GPU actor on a Ray cluster with
    GPUs); without one, in this process with ``encoder`` (loaded if not given).
    """
    start = time.time()
    shards = sentence_shards(out_dir, lang)
    e = cfg.embed
    if e.embed_dtype not in ("float16", "float32"):
        raise MinerError(f"embed_dtype must be float16 or float32, not {e.embed_dtype!r}")
    local = executor is None or executor.name == "local"
    if local and encoder is None:
        encoder = load_encoder(e.encoder, e.model, e.device, e.batch_size)
    meta = encoder_meta(cfg, encoder, executor)
    todo = [s for s in shards if not shard_is_done(embedding_path(out_dir, lang, s), s, meta)]
    tasks = [(str(s), str(embedding_path(out_dir, lang, s)), meta) for s in todo]
    if local:  # one in-process worker around the loaded encoder
        make_worker = partial(EmbedWorker, e, encoder)
        executor = executor or LocalExecutor(1)
        num_gpus = 0
    else:
        make_worker = partial(EmbedWorker, e)
        num_gpus = _gpus_per_worker(cfg, executor)
    rows = executor.map_actors(make_worker, tasks, desc=f"embed {lang}", num_gpus=num_gpus)
    n_rows = sum(rows)
    skipped = len(shards) - len(todo)
    # shards left over from an earlier run with more shards would be mixed in: drop them
    wanted = {s.name for s in shards}
    for stale in (as_path(out_dir) / "embeddings" / lang).glob("part-*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    counts = {"shards": len(shards), "embedded_shards": len(todo), "skipped_shards": skipped,
              "sentences_embedded": n_rows}
    update_stage(out_dir, f"embed/{lang}", {
        "config_hash": cfg.stage_hash("embed"), "encoder": meta.encoder, "dim": meta.dim,
        "dtype": meta.dtype, "counts": counts, "seconds": round(time.time() - start, 3),
        "finished": True})
    log.info("embed %s: %d shards embedded, %d already done", lang, len(todo), skipped)
    return counts
