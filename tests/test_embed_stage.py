"""The embed stage: shard-aligned outputs, resume, and no silent mixing of encoders."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.config import Config
from miner.formats.embeddings import EmbeddingMeta, read_embedding_meta, read_embedding_shard, \
    write_embedding_shard
from miner.embed.stage import run_embed
from miner.errors import MinerError
from miner.prepare import prepare

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("w")
    cfg = Config(shard_size=25)
    prepare(cfg, [str(EXAMPLES / "articles" / "de.jsonl")], ["de"], out)
    return cfg, out


@pytest.mark.slow  # embeds the examples twice: ~2 s
def test_embed_is_row_aligned_and_resumes(prepared, muse):
    cfg, out = prepared
    c = run_embed(cfg, out, "de", muse)
    assert c == {"shards": 3, "embedded_shards": 3, "skipped_shards": 0,
                 "sentences": 70, "sentences_embedded": 70}
    for sent in sorted((out / "sentences" / "de").glob("part-*.parquet")):
        ids, emb = read_embedding_shard(out / "embeddings" / "de" / sent.name)
        table = pq.read_table(sent)
        assert np.array_equal(ids, table.column("id").to_numpy())
        ref = muse.encode(table.column("text").to_pylist())
        np.testing.assert_allclose(emb, ref, atol=2e-3)  # stored as float16
        assert read_embedding_meta(out / "embeddings" / "de" / sent.name).dim == 512
    # one shard lost: only that one is redone
    (out / "embeddings" / "de" / "part-00001.parquet").unlink()
    c = run_embed(cfg, out, "de", muse)
    assert c["embedded_shards"] == 1 and c["skipped_shards"] == 2
    assert c["sentences_embedded"] == 25 and c["sentences"] == 70


def test_a_shard_of_another_encoder_is_redone_never_mixed(prepared, muse):
    """The encoder is part of every task's fingerprint: a shard written by another
    encoder is not current, so the run's encoder embeds it again."""
    cfg, out = prepared
    run_embed(cfg, out, "de", muse)
    shard = out / "embeddings" / "de" / "part-00002.parquet"
    before = shard.read_bytes()
    ids, _ = read_embedding_shard(shard)
    write_embedding_shard(shard, ids, np.zeros((len(ids), 384), np.float32),
                          EmbeddingMeta("sentence-transformers:other", 384))
    c = run_embed(cfg, out, "de", muse)
    assert c["embedded_shards"] == 1
    assert read_embedding_meta(shard).encoder == "muse" and shard.read_bytes() == before


def test_missing_sentences_is_an_error(tmp_path, muse):
    with pytest.raises(MinerError, match="no sentence shards"):
        run_embed(Config(), tmp_path, "de", muse)


def write_sentence_shard(path, texts):
    from miner.formats.sentences import RowWriter
    from miner.sentences import sentence_hash

    w = RowWriter(path)
    for i, text in enumerate(texts):
        w.add(id=sentence_hash(text), text=text, lang="en", source="bucc", position=i)
    w.close()


def bucc_english(n: int) -> list[str]:
    from conftest import shared_data

    seen, out = set(), []
    for pair in ("de", "fr", "ru", "zh"):
        path = shared_data("bucc") / f"{pair}-en.training.en"
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.split("\t", 1)[1]
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out[:n]


class CrashAfter:
    """The real encoder, failing on its ``calls + 1``-th encode (a kill mid-shard:
    what a SIGKILL leaves is the same, the checkpoint pieces are written atomically);
    counts the sentences it embedded."""

    def __init__(self, encoder, calls=None):
        self.encoder, self.calls, self.embedded = encoder, calls, 0
        self.name, self.dim = encoder.name, encoder.dim
        self.precision = getattr(encoder, "precision", "fp32")

    def encode(self, sentences):
        if self.calls is not None:
            if self.calls == 0:
                raise RuntimeError("killed")
            self.calls -= 1
        self.embedded += len(sentences)
        return self.encoder.encode(sentences)


@pytest.mark.slow  # 2,600 real sentences embedded three times: ~10 s
def test_a_killed_shard_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    """Blocks of 500, a checkpoint every 1,000: killed in block 5, the rerun embeds
    only the last 600 sentences and writes the uninterrupted run's bytes (the default
    encoder: bf16 on a CPU with bf16 instructions)."""
    import miner.embed.stage as stage
    from miner.embed.encoders import encoder_for

    muse = encoder_for(Config().embed)

    monkeypatch.setattr(stage, "BLOCK_ROWS", 500)
    monkeypatch.setattr(stage, "CHECKPOINT_ROWS", 1000)
    texts = bucc_english(2600)
    cfg = Config()
    for run in ("ref", "killed"):
        write_sentence_shard(tmp_path / run / "sentences" / "en" / "part-00000.parquet", texts)
    run_embed(cfg, tmp_path / "ref", "en", muse)
    shard = tmp_path / "killed" / "embeddings" / "en" / "part-00000.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        run_embed(cfg, tmp_path / "killed", "en", CrashAfter(muse, calls=4))
    pieces = sorted(p.name for p in shard.parent.glob(".*.ckpt-*.npz"))
    assert pieces == [".part-00000.parquet.ckpt-000.npz", ".part-00000.parquet.ckpt-001.npz"]
    assert not shard.exists()
    resumed = CrashAfter(muse)
    c = run_embed(cfg, tmp_path / "killed", "en", resumed)
    assert c["embedded_shards"] == 1 and resumed.embedded == 600
    assert shard.read_bytes() == (tmp_path / "ref" / "embeddings" / "en" / shard.name).read_bytes()
    assert not list(shard.parent.glob(".*.ckpt-*"))  # cleared once the shard is written


@pytest.mark.slow  # 2,000 sentences embedded: ~5 s
def test_checkpoints_of_other_sentences_or_settings_are_not_used(tmp_path, muse, monkeypatch):
    import miner.embed.stage as stage

    monkeypatch.setattr(stage, "BLOCK_ROWS", 500)
    monkeypatch.setattr(stage, "CHECKPOINT_ROWS", 500)
    texts = bucc_english(2000)
    sent = tmp_path / "sentences" / "en" / "part-00000.parquet"
    write_sentence_shard(sent, texts[:1000])
    with pytest.raises(RuntimeError, match="killed"):
        run_embed(Config(), tmp_path, "en", CrashAfter(muse, calls=1))
    write_sentence_shard(sent, texts[1000:])  # another shard content: another fingerprint
    again = CrashAfter(muse)
    run_embed(Config(), tmp_path, "en", again)
    assert again.embedded == 1000
    _, emb = read_embedding_shard(tmp_path / "embeddings" / "en" / "part-00000.parquet")
    np.testing.assert_allclose(emb, muse.encode(texts[1000:]), atol=2e-3)


def test_a_run_in_another_precision_is_not_current(prepared):
    """The precision is in the fingerprint: fp32 embeddings are redone for bf16 and
    the other way round; the same precision again skips everything."""
    from miner.embed.encoders import MuseEncoder
    from miner.embed.muse_torch import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    cfg, out = prepared
    fp32, bf16 = MuseEncoder(precision="fp32"), MuseEncoder(precision="bf16")
    run_embed(cfg, out, "de", fp32)
    assert run_embed(cfg, out, "de", fp32)["embedded_shards"] == 0
    assert run_embed(cfg, out, "de", bf16)["embedded_shards"] == 3
    assert run_embed(cfg, out, "de", bf16)["embedded_shards"] == 0
    assert run_embed(cfg, out, "de", fp32)["embedded_shards"] == 3


def test_bf16_muse_of_an_older_arithmetic_is_not_current(prepared, monkeypatch):
    """The torch network's version is in the bf16 fingerprint: embeddings written by
    an arrangement with other bits (an older VERSION) are redone, not kept."""
    from miner.embed.encoders import MuseEncoder
    from miner.embed.muse_torch import TorchMuse, cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    cfg, out = prepared
    bf16 = MuseEncoder(precision="bf16")
    monkeypatch.setattr(TorchMuse, "VERSION", TorchMuse.VERSION - 1)
    run_embed(cfg, out, "de", bf16)
    monkeypatch.undo()
    assert run_embed(cfg, out, "de", bf16)["embedded_shards"] == 3
    assert run_embed(cfg, out, "de", bf16)["embedded_shards"] == 0


def test_progress_counts_sentences_over_all_shards_of_a_language(prepared, muse, monkeypatch,
                                                               caplog):
    """Not a terminal: a log line with count, total, rate (and ETA while running)."""
    import logging

    import miner.progress

    cfg, out = prepared
    monkeypatch.setattr(miner.progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(miner.progress, "is_terminal", lambda: False)
    for shard in (out / "embeddings" / "de").glob("part-*.parquet"):
        shard.unlink()
    with caplog.at_level(logging.INFO, logger="miner.progress"):
        run_embed(cfg, out, "de", muse)
    lines = [r.getMessage() for r in caplog.records if r.name == "miner.progress"
             and r.getMessage().startswith("embed de: ")]  # (the executor counts tasks)
    assert lines[0].startswith("embed de: 25/70 sentence (36%), ") and "ETA" in lines[0]
    assert lines[-1].startswith("embed de: 70/70 sentence (100%), ") and "sentence/s" in lines[-1]


EMBED_EN = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
            "from miner.config import Config; from miner.embed.stage import run_embed; "
            "run_embed(Config(), sys.argv[1], 'en')")


@pytest.mark.slow  # 50k sentences embedded twice, in subprocesses: minutes
def test_sigkill_in_a_50k_shard_resumes_from_its_checkpoint(tmp_path):
    """The real thing: a 50,000-sentence shard, default block and checkpoint sizes,
    the process SIGKILLed once its first checkpoint is on disk; the rerun starts
    after it and writes the bytes of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, shared_data

    tat = shared_data("tatoeba")
    seen, texts = set(), []
    for path in sorted(tat.glob("tatoeba.*-eng.*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and line not in seen:
                seen.add(line)
                texts.append(line)
    assert len(texts) >= 50_000
    texts = texts[:50_000]
    for run in ("ref", "killed"):
        write_sentence_shard(tmp_path / run / "sentences" / "en" / "part-00000.parquet", texts)

    def embed(run, **kw):
        return subprocess.Popen([sys.executable, "-c", EMBED_EN, str(tmp_path / run)], cwd=REPO,
                                stderr=subprocess.PIPE, text=True, **kw)

    ckpt = tmp_path / "killed" / "embeddings" / "en" / ".part-00000.parquet.ckpt-000.npz"
    proc = embed("killed")
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    shard = tmp_path / "killed" / "embeddings" / "en" / "part-00000.parquet"
    assert not shard.exists()
    resumed = embed("killed")
    assert resumed.wait(timeout=1800) == 0
    assert "resuming after 10000 checkpointed sentence(s)" in resumed.stderr.read()
    ref = embed("ref")
    assert ref.wait(timeout=1800) == 0
    assert shard.read_bytes() == (tmp_path / "ref" / "embeddings" / "en" / shard.name).read_bytes()
    assert not list(shard.parent.glob(".*.ckpt-*"))
