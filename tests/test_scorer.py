"""The learned scorer (miner.scorer): file round trip, encoder check, vectorised
features, and `mine eval bucc --learn` / `--scorer` on the repo's example files."""

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from miner.cli import main
from miner.config import Config
from miner.errors import MinerError
from miner.scorer import (DEFAULT_PATH, FEATURES, fit_scorer, features, load_scorer,
                          text_features)

from conftest import EXAMPLES


def _scorer(**kw):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 5] + rng.normal(scale=0.5, size=400) > 0).astype(float)
    return x, fit_scorer(x, y, **{"encoder": "muse", "model": None, "margin": "ratio", "k": 4,
                                  **kw})


def test_scorer_file_round_trips(tmp_path):
    x, s = _scorer()
    s.threshold = 0.25
    s.save(tmp_path / "s.json")
    back = load_scorer(str(tmp_path / "s.json"))
    assert back == s
    assert np.array_equal(back.logits(x), s.logits(x))
    assert back.weights[0] > 0 and len(back.digest) == 16
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["encoder"] == "muse" and d["k"] == 4 and d["features"] == list(FEATURES)


def test_bad_scorer_files_are_one_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{}")
    with pytest.raises(MinerError, match="not a scorer file"):
        load_scorer(str(p))
    with pytest.raises(MinerError, match="no such scorer file"):
        load_scorer(str(tmp_path / "missing.json"))


def test_scorer_of_another_encoder_is_refused(tmp_path):
    _, s = _scorer(encoder="sentence-transformers", model="sentence-transformers/LaBSE")
    s.save(tmp_path / "labse.json")
    cfg = Config()
    cfg.score.scorer = str(tmp_path / "labse.json")
    with pytest.raises(MinerError) as e:
        cfg.validate()
    assert "fitted with encoder sentence-transformers" in str(e.value)
    assert "\n" not in str(e.value)
    # and another k is refused too, naming the flags to pass
    _, s = _scorer(k=8)
    s.save(tmp_path / "k8.json")
    cfg.score.scorer = str(tmp_path / "k8.json")
    with pytest.raises(MinerError, match="-k 8"):
        cfg.validate()


def test_default_scorer_ships_for_muse():
    assert DEFAULT_PATH.exists()
    s = load_scorer("default")
    assert (s.encoder, s.model, s.margin, s.k) == ("muse", None, "ratio", 4)
    cfg = Config()
    cfg.score.scorer = "default"
    cfg.validate()


def test_text_features_on_hand_built_pairs():
    f = text_features(["Born in 1950 in Berlin (Germany).", "Он родился в 1950 году в Berlin",
                       "Plain text here"],
                      ["He was born in 1950 in Berlin, Germany.", "Born 1960 in Paris?",
                       "Nothing alike http://x.com"])
    assert f["numbers_agree"].tolist() == [1, 0, 1]
    assert f["numbers_unmatched"].tolist() == [0, 2, 0]
    assert f["anchor_overlap"][0] > 0.5 and f["anchor_overlap"][1] == 0
    assert f["punct_diff"].tolist() == [2, 1, 1]  # the URL's colon
    assert f["url_agree"].tolist() == [1, 1, 0]


def test_features_are_vectorised_over_a_million_candidates():
    n = 1_000_000
    rng = np.random.default_rng(0)
    words = pa.array(["the", "Berlin", "Haus", "2019", "über", "Москва", "北京", "12", "a?"])
    cols = [words.take(pa.array(rng.integers(0, len(words), n))) for _ in range(5)]
    src = pc.binary_join_element_wise(*cols, " ")
    tgt = pc.binary_join_element_wise(*cols[::-1], " ")
    t0 = time.perf_counter()
    x = features(rng.random(n), rng.random(n), rng.random(n), rng.random(n) > 0.5, src, tgt,
                 rng.random(n), rng.random(n))
    took = time.perf_counter() - t0
    assert x.shape == (n, len(FEATURES)) and np.isfinite(x).all()
    assert took < 30, f"{took:.1f}s for 1M candidates"  # ~5 s on a quiet 2-core machine


def test_eval_bucc_learn_on_the_examples(tmp_path):
    out = tmp_path / "scorer.json"
    r = CliRunner().invoke(main, ["eval", "bucc", str(EXAMPLES / "bucc_format"), "--pair",
                                  "de-en", "--tune-split", "sample", "--test-split", "sample",
                                  "--learn", str(out)])
    assert r.exit_code == 0, r.output
    assert "F1=" in r.output and f"scorer written to {out}" in r.output
    s = load_scorer(str(out))
    assert s.encoder == "muse" and s.notes["positives"] > 0
    # the file is what --scorer loads: the same stages score the split with it
    r = CliRunner().invoke(main, ["eval", "bucc", str(EXAMPLES / "bucc_format"), "--pair",
                                  "de-en", "--tune-split", "sample", "--test-split", "sample",
                                  "--scorer", str(out)])
    assert r.exit_code == 0, r.output
    assert f"scorer={out}" in r.output


def test_neighbour_features_from_each_sides_best_two():
    cos = np.array([0.9, 0.7, 0.8])
    top_s = np.array([[0.9, 0.6], [0.8, 0.7], [0.8, 0.8]])  # best, not best, a tie
    top_t = np.array([[0.9, 0.5], [0.7, 0.7], [0.9, 0.8]])
    x = features(cos, np.full(3, 0.5), np.full(3, 0.5), np.zeros(3), ["a"] * 3, ["b"] * 3,
                 np.ones(3), np.ones(3), top_src=top_s, top_tgt=top_t)
    col = {n: x[:, i] for i, n in enumerate(FEATURES)}
    assert np.allclose(col["gap_src"], [0.3, -0.1, 0.0])
    assert np.allclose(col["gap_tgt"], [0.4, 0.0, -0.1])
    assert np.allclose(col["ratio_2"], cos / ((top_s.mean(1) + top_t.mean(1)) / 2))
    # without neighbour similarities: no gap, ratio 1
    x = features(cos, np.full(3, 0.5), np.full(3, 0.5), np.zeros(3), ["a"] * 3, ["b"] * 3,
                 np.ones(3), np.ones(3))
    assert np.allclose(x[:, FEATURES.index("gap_src")], 0)
    assert np.allclose(x[:, FEATURES.index("ratio_2")], 1)
