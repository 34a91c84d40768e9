"""k-nearest-neighbour search by inner product over L2-normalised embeddings.

``knn_search(queries, database, k)`` is the one entry point the stages call; it
picks a backend (``backend="auto"`` is resolved by ``miner.knn.exact.auto_backend``;
the dispatch is in ``miner.knn.exact.knn_search``). Every backend returns
``(sims, ids)``: float32 and int64 arrays of shape (n_queries, k), best first,
ties broken by the lower database id.
"""

from miner.knn.exact import knn_faiss, knn_numpy, knn_search, merge_topk

__all__ = ["knn_search", "knn_faiss", "knn_numpy", "merge_topk"]
