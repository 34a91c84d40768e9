"""Prepare's dedup in bounded memory (miner/dedup.py) and parallel bzip2 reading.

The dedup is checked against a Python set on random ids with many duplicates, with
budgets that keep everything in memory and budgets that force spilling (and splitting
partitions again); `mine prepare` with a tiny ``max_memory`` must write the very bytes
of the default budget. indexed_bzip2 must read the enwiki excerpt as the standard
library does, and damaged files must stay one clear error.
"""

from __future__ import annotations

import bz2
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import miner.dedup as dedup_mod
import miner.prepare as prepare_mod
from conftest import shared_data
from miner.cli import main
from miner.dedup import MIN_ROWS, ROW_BYTES, FirstOccurrences, first_indices, keep_mask
from miner.errors import MinerError
from miner.readers import open_binary, open_reader, parallel_bz2_available

ENWIKI = ("wikipedia", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


def reference_mask(batches: list[np.ndarray]) -> np.ndarray:
    """First occurrences by a Python set, row by row: what prepare did before."""
    seen: set[int] = set()
    mask = []
    for batch in batches:
        for h in batch.tolist():
            mask.append(h not in seen)
            seen.add(h)
    return np.array(mask, dtype=bool)


def random_batches(seed: int, distinct: int, batches: int, max_rows: int) -> list[np.ndarray]:
    """Batches of ids drawn with replacement from ``distinct`` random uint64 (with
    the extremes 0 and 2**64-1), some batches empty."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**64 - 1, size=distinct, dtype=np.uint64, endpoint=True)
    pool[:2] = [0, 2**64 - 1]
    return [pool[rng.integers(0, distinct, size=rng.integers(0, max_rows + 1))]
            for _ in range(batches)]


def run_dedup(batches, budget, spill_parent, take_sizes=None):
    """(mask over all rows, kept, total, spilled) by FirstOccurrences; the masks are
    taken in ``take_sizes`` pieces (default: the batches')."""
    with FirstOccurrences(budget, spill_parent) as d:
        for b in batches:
            d.add(b)
        d.finish()
        sizes = take_sizes or [len(b) for b in batches]
        mask = np.concatenate([d.take(n) for n in sizes])
        result = mask, d.kept, d.total, d.spilled
    assert not any(Path(spill_parent).iterdir()), "the spill folder is left behind"
    return result


def test_in_memory_functions_match_a_set():
    ids = np.concatenate(random_batches(1, 500, 20, 300))
    assert np.array_equal(keep_mask(ids), reference_mask([ids]))
    first = first_indices(ids)
    assert np.all(np.diff(first) > 0) and len(first) == len(set(ids.tolist()))
    assert len(first_indices(np.zeros(0, dtype=np.uint64))) == 0


@pytest.mark.parametrize("budget, spills", [
    (1 << 30, False),            # everything in memory
    (1, True),                   # the smallest chunks (MIN_ROWS): many partitions split again
    (40 * 1024 * ROW_BYTES // 10, True),  # about 4k rows per chunk
])
def test_dedup_matches_a_set_whatever_the_budget(tmp_path, budget, spills):
    batches = random_batches(7, 60_000, 80, 4_000)  # ~160k rows, ~56k distinct
    expected = reference_mask(batches)
    mask, kept, total, spilled = run_dedup(batches, budget, tmp_path)
    assert spilled == spills
    assert np.array_equal(mask, expected)
    assert (kept, total) == (int(expected.sum()), len(expected))
    # masks taken in other pieces than the batches: the same rows
    rng = np.random.default_rng(3)
    sizes = []
    left = total
    while left:
        sizes.append(min(left, int(rng.integers(1, 9_000))))
        left -= sizes[-1]
    assert np.array_equal(run_dedup(batches, budget, tmp_path, sizes)[0], expected)


def test_partitions_are_split_until_they_fit(tmp_path, monkeypatch):
    """300k distinct ids spilled in chunks of MIN_ROWS: each of the 64 partitions holds
    ~4.7k records, more than a chunk, so each is split on the next bits."""
    splits = []
    resolve = FirstOccurrences._resolve

    def counting(self, path, shift):
        splits.append(shift)
        return resolve(self, path, shift)

    monkeypatch.setattr(FirstOccurrences, "_resolve", counting)
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 2**64 - 1, size=300_000, dtype=np.uint64, endpoint=True)
    batches = [ids[i:i + 7_000] for i in range(0, len(ids), 7_000)]
    batches.append(ids[::5].copy())  # duplicates after the spills
    expected = reference_mask(batches)
    mask, kept, total, spilled = run_dedup(batches, 1, tmp_path)
    assert spilled and np.array_equal(mask, expected) and kept == 300_000
    assert min(splits) < 64 - dedup_mod.FANOUT_BITS  # some partition was split again


def test_one_id_repeated_beyond_every_split(tmp_path):
    """One id in every chunk: its partition cannot be split by bits; the first row wins."""
    n = MIN_ROWS * (MIN_ROWS + 50)  # more chunks than a chunk's rows
    batches = [np.full(n, 12345, dtype=np.uint64), np.array([7, 12345, 7], dtype=np.uint64)]
    mask, kept, total, _ = run_dedup(batches, 1, tmp_path)
    assert kept == 2 and total == n + 3
    assert np.flatnonzero(mask).tolist() == [0, n]


def test_dedup_is_deterministic(tmp_path):
    batches = random_batches(5, 20_000, 40, 3_000)
    runs = [run_dedup(batches, budget, tmp_path)[0] for budget in (1, 1, 1 << 30)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_take_past_the_end_is_an_error(tmp_path):
    with FirstOccurrences(1 << 20, tmp_path) as d:
        d.add(np.array([1, 2, 1], dtype=np.uint64))
        d.finish()
        assert d.take(3).tolist() == [True, True, False]
        with pytest.raises(IndexError):
            d.take(1)


# -- mine prepare ------------------------------------------------------------------------

def _shards(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("sentences/*/part-*.parquet"))}


def test_tiny_max_memory_writes_the_same_shards(tmp_path, monkeypatch):
    """`mine prepare` on the enwiki excerpt and a copy of it (every row of the copy a
    duplicate) with the default budget, then the finishing pass again with
    ``max_memory = "1"`` (spilling in chunks of MIN_ROWS ids): the same bytes."""
    excerpt = shared_data(*ENWIKI)
    copy = tmp_path / "copy.xml.bz2"
    shutil.copy(excerpt, copy)
    spills = []

    class Recording(FirstOccurrences):
        def finish(self):
            super().finish()
            spills.append(self.spilled)

    monkeypatch.setattr(prepare_mod, "FirstOccurrences", Recording)
    out = tmp_path / "out"
    args = ["prepare", str(excerpt), str(copy), "--lang", "en", "--out", str(out),
            "--workers", "1", "--shard-size", "5000"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    default = _shards(out)
    assert len(default) == 5 and spills == [False]  # 21k rows: 5 shards
    shutil.rmtree(out / "sentences")  # the finishing pass runs again; staging is kept
    toml = tmp_path / "tiny.toml"
    toml.write_text('max_memory = "1"\n')
    result = CliRunner().invoke(main, [*args, "--config", str(toml)])
    assert result.exit_code == 0, result.output
    assert spills == [False, True]
    assert _shards(out) == default
    assert not list((out / ".prepare").glob(".dedup-*"))  # the spill folder is gone


# -- parallel bzip2 ----------------------------------------------------------------------

needs_indexed_bzip2 = pytest.mark.skipif(not parallel_bz2_available(),
                                         reason="indexed_bzip2 not installed")


@needs_indexed_bzip2
def test_indexed_bzip2_reads_the_excerpt_as_bz2_does():
    excerpt = shared_data(*ENWIKI)
    with open_binary(excerpt) as f:
        assert type(f.raw).__name__ == "_ParallelBz2Reader"
        parallel = f.read()
    assert parallel == bz2.decompress(excerpt.read_bytes())


@needs_indexed_bzip2
def test_builtin_switch_reads_with_bz2(monkeypatch):
    excerpt = shared_data(*ENWIKI)
    monkeypatch.setenv("MINER_BZ2", "builtin")
    with open_binary(excerpt) as f:
        assert isinstance(f, bz2.BZ2File)


@needs_indexed_bzip2
@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:len(d) // 2], "truncated bz2"),
    (lambda d: d[:-1], "truncated bz2"),
    (lambda d: d[:4], "truncated bz2"),  # the header alone: indexed_bzip2 reads it as empty
    (lambda d: d[:5000] + bytes([d[5000] ^ 4]) + d[5001:], "corrupt or unreadable bz2 (Calculated CRC"),
    (lambda d: d[:40] + b"\x00" * 200 + d[240:], "corrupt or unreadable bz2"),
])
def test_damaged_bz2_read_in_parallel_is_one_error_line(tmp_path, damage, message):
    data = shared_data("wikipedia", "enwiki-table-markup.xml.bz2").read_bytes()
    path = tmp_path / "damaged.xml.bz2"
    path.write_bytes(damage(data))
    with pytest.raises(MinerError) as e:
        list(open_reader(path, "wiki"))
    text = str(e.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text


@needs_indexed_bzip2
def test_bytes_after_the_last_stream_are_ignored_as_bz2_does(tmp_path):
    path = tmp_path / "trailing.txt.bz2"
    path.write_bytes(bz2.compress(b"first line\n") + bz2.compress(b"second line\n") + b"\0" * 9)
    with open_binary(path) as f:
        assert f.read() == b"first line\nsecond line\n"


@pytest.mark.parametrize("budget", [1, 1 << 20])
def test_no_ids_at_all(tmp_path, budget):
    """A language no input has a sentence of: nothing kept, no error, nothing left."""
    with FirstOccurrences(budget, tmp_path) as d:
        d.finish()
        assert d.kept == 0 and len(d.take(0)) == 0
    assert not any(tmp_path.iterdir())
