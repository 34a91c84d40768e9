"""IVF-Flat search on the CPU as bf16 GEMMs, one inverted list at a time.

faiss's IVF-Flat search scans, for each query, the vectors of each list it probes:
at 1M queries, 4,096 lists and nprobe 64, every list (about 244 vectors of 2 KB) is
read from memory about 15,000 times, and the scan runs at about 11 GFLOP/s here,
bound by memory. Turned around, each list is read once per block of queries and
multiplied with all the queries of the block that probe it, as a GPU IVF does: the
same work as dense bf16 GEMMs, at a few hundred GFLOP/s.

``IvfLists(index)`` takes the trained, filled faiss ``IndexIVFFlat`` (inner product)
as the stage builds and stores it (its centroids and inverted lists: the index file
stays the storage format, for the Ray tasks and faiss-gpu too). ``search(queries,
k)``:

1. probes: each query's ``nprobe`` best centroids by a bf16 GEMM score;
2. per list, the queries that probe it in chunks of ``CHUNK`` rows (the last one
   padded: a fixed GEMM shape, so a pair's bf16 score never depends on which other
   queries share the block) against the list's vectors; the best ``k + 8`` of each
   (CPU bf16 GEMMs round their output to bf16: near-ties need the room);
3. per query, the ``2k + 8`` best of those by bf16 score, rescored exactly
   (``miner.knn.cpu_bf16.exact_sims``: float32 products, float64 sums, a function of
   the pair alone), and the top k by exact similarity, ties to the lower row.

A query whose probed lists hold fewer than k vectors gets padded slots (row -1,
similarity -inf), as faiss pads them. Like every IVF search this is approximate (a
neighbour in a list not probed, or one that bf16 rounding pushes out of a list's
shortlist, is missed); the result depends on the query and the index only.
"""

from __future__ import annotations

import numpy as np

from miner.knn.cpu_bf16 import EXACT_NORM_PRODUCT, cpu_has_bf16, exact_sims
from miner.knn.topk import sort_topk

CHUNK = 512        # query rows per GEMM (fixed shape, see above)
SUB_BLOCK = 32768  # queries whose candidates are held at once (memory)
LIST_EXTRA = 8     # candidates kept per probed list: k + LIST_EXTRA
RESCORE_EXTRA = 8  # candidates rescored exactly per query: 2k + RESCORE_EXTRA


class IvfLists:
    """The centroids and inverted lists of a faiss IVF-Flat index, ready for GEMMs."""

    def __init__(self, index, nprobe: int | None = None):
        import faiss
        import torch
        from faiss.contrib.inspect_tools import get_invlist

        ivf = faiss.extract_index_ivf(index)
        self.nlist, self.d = ivf.nlist, ivf.d
        self.nprobe = min(self.nlist, nprobe or ivf.nprobe)
        self.tdtype = torch.bfloat16 if cpu_has_bf16() else torch.float32
        centroids = ivf.quantizer.reconstruct_n(0, self.nlist)
        self.centroids = torch.from_numpy(np.ascontiguousarray(centroids)).to(self.tdtype)
        # copied list by list into preallocated arrays: the float16 rows (embeddings
        # are stored as float16, so the exact rescore takes its fast path) and their
        # GEMM copy; no float32 copy of the whole database is made
        sizes = [ivf.invlists.list_size(lst) for lst in range(self.nlist)]
        self.offsets = np.cumsum([0] + sizes)
        total = int(self.offsets[-1])
        self.ids = np.empty(total, np.int64)  # global rows
        self.vectors = np.empty((total, self.d), np.float16)
        self.vt = torch.empty((total, self.d), dtype=self.tdtype)
        norm2 = 0.0
        for lst in range(self.nlist):
            lo, hi = self.offsets[lst], self.offsets[lst + 1]
            if hi == lo:
                continue
            list_ids, codes = get_invlist(ivf.invlists, lst)
            vecs = codes.view(np.float32).reshape(hi - lo, self.d)
            self.ids[lo:hi] = list_ids
            if self.vectors.dtype == np.float16 and not np.array_equal(
                    vecs.astype(np.float16).astype(np.float32), vecs):  # not float16 rows
                self.vectors = self.vectors.astype(np.float32)  # (the earlier lists: exact)
            self.vectors[lo:hi] = vecs
            self.vt[lo:hi] = torch.from_numpy(vecs)
            norm2 = max(norm2, float(np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64).max()))
        self.norm_max = float(np.sqrt(norm2))
        self.ntotal = len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """sims (n, k') float32 and global rows (n, k') int64 (-1: padding), k' =
        min(k, ntotal), sorted by similarity descending then row ascending."""
        k = min(k, self.ntotal)
        n = len(queries)
        sims = np.empty((n, k), np.float32)
        rows = np.empty((n, k), np.int64)
        for s0 in range(0, n, SUB_BLOCK):
            sims[s0:s0 + SUB_BLOCK], rows[s0:s0 + SUB_BLOCK] = self._search(
                queries[s0:s0 + SUB_BLOCK], k)
        return sims, rows

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = len(queries)
        if n == 0 or k == 0:
            return np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
        per_list = k + LIST_EXTRA
        shortlist = min(2 * k + RESCORE_EXTRA, self.nprobe * per_list)
        with torch.inference_mode():
            qt = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(self.tdtype)
            padded = torch.zeros((-(-n // CHUNK) * CHUNK, self.d), dtype=self.tdtype)
            padded[:n] = qt
            # 1. probes
            probes = torch.empty((n, self.nprobe), dtype=torch.int64)
            for c0 in range(0, n, CHUNK):
                scores = (padded[c0:c0 + CHUNK] @ self.centroids.T).float()
                probes[c0:c0 + CHUNK] = torch.topk(scores, self.nprobe, dim=1).indices[:n - c0]
            # 2. each list against the queries probing it
            flat = probes.reshape(-1).numpy()
            order = np.argsort(flat, kind="stable")
            bounds = np.searchsorted(flat[order], np.arange(self.nlist + 1))
            cand_s = torch.full((n, self.nprobe, per_list), -np.inf, dtype=torch.float32)
            cand_r = torch.full((n, self.nprobe, per_list), -1, dtype=torch.int64)
            chunk = torch.zeros((CHUNK, self.d), dtype=self.tdtype)
            for lst in np.flatnonzero(np.diff(bounds)):
                lo, hi = int(self.offsets[lst]), int(self.offsets[lst + 1])
                if hi == lo:
                    continue
                pairs = torch.from_numpy(order[bounds[lst]:bounds[lst + 1]])
                q_rows, slots = pairs // self.nprobe, pairs % self.nprobe
                vt = self.vt[lo:hi]
                kk = min(per_list, hi - lo)
                for c0 in range(0, len(pairs), CHUNK):
                    qr, sl = q_rows[c0:c0 + CHUNK], slots[c0:c0 + CHUNK]
                    chunk[:len(qr)] = qt[qr]
                    chunk[len(qr):] = 0
                    top = torch.topk((chunk @ vt.T)[:len(qr)].float(), kk, dim=1)
                    cand_s[qr, sl, :kk] = top.values
                    cand_r[qr, sl, :kk] = top.indices + lo
            # 3. the best by bf16 score, rescored exactly
            best = torch.topk(cand_s.reshape(n, -1), shortlist, dim=1)
            pos = torch.gather(cand_r.reshape(n, -1), 1, best.indices).numpy()
        q_idx = np.broadcast_to(np.arange(n)[:, None], pos.shape)
        exact = exact_sims(queries, self.vectors, q_idx, pos,
                           norm_product=self._norm_product(queries))
        global_rows = np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)
        exact, global_rows = sort_topk(exact, global_rows)
        return exact[:, :k], global_rows[:, :k]

    def _norm_product(self, queries: np.ndarray) -> float:
        q = np.asarray(queries, np.float32)
        qmax = float(np.sqrt(np.einsum("ij,ij->i", q, q).max())) if len(q) else 0.0
        # the fast exact path needs |q| |y| below its bound; otherwise float64 numpy
        return qmax * self.norm_max * 1.001 if qmax * self.norm_max < EXACT_NORM_PRODUCT else np.inf
