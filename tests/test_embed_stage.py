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
