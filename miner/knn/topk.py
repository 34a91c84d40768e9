"""Top-k ordering and merging shared by every kNN backend (numpy only, no miner imports).

A leaf module: ``miner.knn.exact`` (the backend dispatch) and the backends it
dispatches to (``miner.knn.cpu_bf16``) both import from here, so neither imports
the other at module level.
"""

from __future__ import annotations

import numpy as np


def sort_topk(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by similarity descending, then id ascending (deterministic ties).

    sims: (n, k) float32, ids: (n, k) int64. Entries with id -1 (padding) go last.
    """
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    key_sims = np.where(ids < 0, -np.inf, sims)
    order = np.lexsort((key_ids, -key_sims), axis=-1)
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def merge_topk(sims_a: np.ndarray, ids_a: np.ndarray, sims_b: np.ndarray,
               ids_b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two per-query top-k lists (n, ka) and (n, kb) into the top-k of their union.

    Exact whatever the split: the result depends only on the (sim, id) pairs, with
    ties broken by the lower id, so searching a database in any partition and
    merging gives the same answer as searching it whole.
    """
    sims = np.concatenate([sims_a, sims_b], axis=1)
    ids = np.concatenate([ids_a, ids_b], axis=1)
    sims, ids = sort_topk(sims, ids)
    return sims[:, :k], ids[:, :k]
