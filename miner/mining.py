"""Mining in memory: two lists of sentences (or their embeddings) to scored pairs.

The building block of the evaluations: unify duplicate
sentences, embed, search k nearest neighbours both ways, score with a margin and
retrieve candidates. Corpora larger than memory go through the sharded stages
(``mine run``), which call the same margin functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from miner.knn import knn_search
from miner.margin import Candidates, retrieve

log = logging.getLogger(__name__)


def unify(sentences: list[str]) -> tuple[list[str], np.ndarray]:
    """Unique sentences in first-seen order, and for each input its unique index.

    As LASER's ``--unify``: a sentence repeated in the corpus is embedded and searched
    once, so its copies neither crowd its neighbourhood nor count twice in the margin.
    """
    index: dict[str, int] = {}
    inverse = np.empty(len(sentences), dtype=np.int64)
    for i, s in enumerate(sentences):
        inverse[i] = index.setdefault(s, len(index))
    return list(index), inverse


@dataclass
class Neighbours:
    """kNN both ways between sources x (n, d) and targets y (m, d)."""

    fwd_sims: np.ndarray  # (n, k) similarities of each source to its nearest targets
    fwd_ids: np.ndarray  # (n, k) target row indices
    bwd_sims: np.ndarray  # (m, k)
    bwd_ids: np.ndarray  # (m, k) source row indices

    def truncate(self, k: int) -> "Neighbours":
        """The first k neighbours (exact search lists are nested: top-k of top-K)."""
        return Neighbours(self.fwd_sims[:, :k], self.fwd_ids[:, :k],
                          self.bwd_sims[:, :k], self.bwd_ids[:, :k])


def neighbours(x: np.ndarray, y: np.ndarray, k: int, backend: str = "auto") -> Neighbours:
    """k nearest neighbours of each row of x among y and of each row of y among x."""
    fs, fi = knn_search(x, y, k, backend=backend)
    bs, bi = knn_search(y, x, k, backend=backend)
    return Neighbours(fs, fi, bs, bi)


def mine_embeddings(x: np.ndarray, y: np.ndarray, k: int = 4, margin: str = "ratio",
                    retrieval: str = "max", backend: str = "auto",
                    nbrs: Neighbours | None = None) -> Candidates:
    """Candidate pairs (row indices into x and y), best first, with margin scores.

    x: (n, d), y: (m, d) L2-normalised float32. ``nbrs`` reuses a search done with a
    k at least as large.
    """
    if nbrs is None:
        nbrs = neighbours(x, y, k, backend=backend)
    nbrs = nbrs.truncate(k)
    return retrieve(nbrs.fwd_sims, nbrs.fwd_ids, nbrs.bwd_sims, nbrs.bwd_ids,
                    margin=margin, retrieval=retrieval)
