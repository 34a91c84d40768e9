"""Shared test fixtures: where the real evaluation data lives."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real evaluation data not found at {path} (../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def muse():
    from miner.embed import load_encoder

    # the numpy network: the reference numbers of the tests (LASER's F1 on BUCC...) were
    # measured with it; the bf16 default has tests of its own (tests/test_muse_torch.py)
    return load_encoder("muse", precision="fp32")


@pytest.fixture(scope="session")
def bucc_fp32(muse):
    """``result(lang)``: the BUCC training-split result of the numpy mUSE for
    ``lang``-en through the stages of `mine run`, computed once a session:
    tests/test_evaluate.py checks it against LASER's F1, tests/test_muse_torch.py
    compares the bf16 encoder with it."""
    from miner.evaluate.bucc import evaluate_bucc

    cache = {}

    def result(lang: str):
        if lang not in cache:
            cache[lang] = evaluate_bucc(shared_data("bucc"), f"{lang}-en", muse, "training",
                                        "training")
        return cache[lang]

    return result
