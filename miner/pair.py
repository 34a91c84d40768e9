"""``mine pair``: mine two one-sentence-per-line files into ``score<TAB>src<TAB>tgt``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from miner.config import Config
from miner.embed import load_encoder
from miner.errors import MinerError
from miner.io import atomic_open, read_lines
from miner.margin import Candidates
from miner.mining import mine_embeddings, unify

log = logging.getLogger(__name__)


def mine_files(src_path: str | Path, tgt_path: str | Path, cfg: Config
               ) -> tuple[list[str], list[str], Candidates]:
    """Read, unify, embed and mine two sentence files; candidates index the unique lists."""
    src_u, _ = unify([s.strip() for s in read_lines(src_path) if s.strip()])
    tgt_u, _ = unify([s.strip() for s in read_lines(tgt_path) if s.strip()])
    for path, sents in ((src_path, src_u), (tgt_path, tgt_u)):
        if not sents:
            raise MinerError(f"{path}: holds only blank lines")
    encoder = load_encoder(cfg.embed.encoder, cfg.embed.model, cfg.embed.device,
                           cfg.embed.batch_size)
    log.info("embedding %d + %d unique sentences with %s", len(src_u), len(tgt_u), encoder.name)
    x = encoder.encode(src_u)
    y = encoder.encode(tgt_u)
    cands = mine_embeddings(x, y, k=cfg.knn.k, margin=cfg.score.margin,
                            retrieval=cfg.score.retrieval, backend=cfg.knn.knn_backend)
    if cfg.score.threshold is not None:
        cands = cands.take(cands.score >= cfg.score.threshold)
    return src_u, tgt_u, cands


def write_tsv(path: str | Path, src: list[str], tgt: list[str], cands: Candidates) -> int:
    """Write ``score<TAB>src<TAB>tgt`` lines, best first, atomically (``.gz`` compresses)."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        for s, t, score in zip(cands.src.tolist(), cands.tgt.tolist(), cands.score.tolist()):
            f.write(f"{score:.6f}\t{src[s]}\t{tgt[t]}\n")
    return len(cands)


def format_pairs(src: list[str], tgt: list[str], cands: Candidates, n: int) -> list[str]:
    """The best n pairs as printable lines."""
    lines = []
    for s, t, score in zip(cands.src[:n].tolist(), cands.tgt[:n].tolist(),
                           cands.score[:n].tolist()):
        lines.append(f"{score:.4f}  {src[s]}\n        {tgt[t]}")
    return lines


def check_langs(src_lang: str, tgt_lang: str) -> None:
    for code in (src_lang, tgt_lang):
        if not (code.isascii() and code.isalpha() and code.islower() and 2 <= len(code) <= 3):
            raise MinerError(f"unknown language code {code!r}: expected an ISO 639 code like de")
    if src_lang == tgt_lang:
        raise MinerError(f"language pair {src_lang}-{tgt_lang}: source and target are the same")


__all__ = ["mine_files", "write_tsv", "format_pairs", "check_langs", "np"]
