"""The ``embed`` stage: sentence shards -> embedding shards, resumable shard by shard.

``DIR/sentences/{lang}/part-NNNNN.parquet`` -> ``DIR/embeddings/{lang}/part-NNNNN.parquet``
(row-aligned: same ids in the same order). A shard whose embedding file exists, was
made by the same encoder and holds the same ids is skipped, so a rerun after a crash
only embeds what is missing; each file is written atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from miner.config import Config
from miner.embed.encoders import Encoder, encoder_id, load_encoder
from miner.embed.shards import EmbeddingMeta, read_embedding_meta, write_embedding_shard
from miner.errors import MinerError
from miner.manifest import update_stage

log = logging.getLogger(__name__)


def sentence_shards(out_dir: str | Path, lang: str) -> list[Path]:
    """The sentence shards of a language, in order; an error when there are none."""
    shards = sorted((Path(out_dir) / "sentences" / lang).glob("part-*.parquet"))
    if not shards:
        raise MinerError(f"{Path(out_dir) / 'sentences' / lang}: no sentence shards "
                         f"(run `mine prepare ... --lang {lang} --out {out_dir}` first)")
    return shards


def embedding_path(out_dir: str | Path, lang: str, sentence_shard: Path) -> Path:
    return Path(out_dir) / "embeddings" / lang / sentence_shard.name


def shard_is_done(emb_path: Path, sent_path: Path, meta: EmbeddingMeta) -> bool:
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
    emb_ids = pq.read_table(emb_path, columns=["id"]).column("id").to_numpy()
    sent_ids = pq.read_table(sent_path, columns=["id"]).column("id").to_numpy()
    return np.array_equal(emb_ids, sent_ids)


def embed_shard(encoder: Encoder, sent_path: Path, emb_path: Path, meta: EmbeddingMeta) -> int:
    """Embed one sentence shard into one embedding shard; returns the rows written."""
    table = pq.read_table(sent_path, columns=["id", "text"])
    texts = table.column("text").to_pylist()
    emb = encoder.encode(texts)
    write_embedding_shard(emb_path, table.column("id").to_numpy(), emb, meta)
    return len(texts)


def run_embed(cfg: Config, out_dir: str | Path, lang: str,
              encoder: Encoder | None = None) -> dict:
    """Embed every sentence shard of ``lang`` not embedded yet; returns counts."""
    start = time.time()
    shards = sentence_shards(out_dir, lang)
    e = cfg.embed
    if e.embed_dtype not in ("float16", "float32"):
        raise MinerError(f"embed_dtype must be float16 or float32, not {e.embed_dtype!r}")
    encoder = encoder or load_encoder(e.encoder, e.model, e.device, e.batch_size)
    meta = EmbeddingMeta(encoder_id(encoder), encoder.dim, e.embed_dtype)
    todo = [s for s in shards if not shard_is_done(embedding_path(out_dir, lang, s), s, meta)]
    n_rows = skipped = 0
    bar = tqdm(total=len(todo), unit="shard", desc=f"embed {lang}", disable=None)
    for s in todo:
        t = time.time()
        rows = embed_shard(encoder, s, embedding_path(out_dir, lang, s), meta)
        n_rows += rows
        bar.set_postfix(sent_per_s=f"{rows / max(time.time() - t, 1e-9):.0f}")
        bar.update()
    bar.close()
    skipped = len(shards) - len(todo)
    # shards left over from an earlier run with more shards would be mixed in: drop them
    wanted = {s.name for s in shards}
    for stale in (Path(out_dir) / "embeddings" / lang).glob("part-*.parquet"):
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
