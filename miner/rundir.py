"""The run folder (``--out``): every path a run reads or writes, named once.

Stages ask a ``RunDir`` where things go; no stage spells another stage's path::

    run = RunDir("work")                     # or RunDir("s3://bucket/run")
    run.sentences("de")                      # work/sentences/de
    run.shard(run.embeddings("de"), 3)       # work/embeddings/de/part-00003.parquet
    run.knn("de", "en", "fwd")               # work/knn/de-en/fwd

Layout::

    manifest.json                         what each stage recorded (miner.manifest)
    .lock                                 the run lock (miner.runlock)
    .prepare/{input}-{key}/{lang}.parquet prepare's per-input staging (kept for resume)
    sentences/{lang}/part-NNNNN.parquet   miner.formats.sentences
    embeddings/{lang}/part-NNNNN.parquet  miner.formats.embeddings
    knn/{src}-{tgt}/{fwd,bwd}/part-NNNNN.parquet   miner.formats.neighbours
    knn/{src}-{tgt}/{fwd,bwd}/.index/{hash}.faiss  a trained IVF index while in use
    scores/{src}-{tgt}/part-NNNNN.parquet miner.formats.scores
    scores/{src}-{tgt}/.shuffle/          score's temporary join files
    bitext/{src}-{tgt}/                   bitext.tsv.gz, train.*, bitext.parquet, README.md
    bitext/.{src}-{tgt}.new/ .old/ .parts/  bitext's staging while it publishes
    report.json, report.html, report/*.png

Temporary files of atomic writes are ``.{name}.XXXX.tmp`` beside their target
(``miner.io.atomic_path``); ``temp_paths`` finds what an interrupted run left.
Works the same for local paths and object-store URLs (``miner.storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Union

from miner.storage import AnyPath, as_path

SHARD_GLOB = "part-*.parquet"
DIRECTIONS = ("fwd", "bwd")
KNN_PARTIAL = ".partial"  # in a knn direction folder: cluster search partials
KNN_INDEX = ".index"  # in a knn direction folder: a trained IVF index while in use

Pair = Union[str, tuple]


def pair_name(pair: Pair, tgt: str | None = None) -> str:
    """``("de", "en")``, ``"de", "en"`` or ``"de-en"`` -> ``"de-en"``."""
    if tgt is not None:
        return f"{pair}-{tgt}"
    return pair if isinstance(pair, str) else f"{pair[0]}-{pair[1]}"


class RunDir:
    """The folder of one run, local or a URL."""

    def __init__(self, root: Union[str, Path, AnyPath, "RunDir"]):
        self.root: AnyPath = root.root if isinstance(root, RunDir) else as_path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    def __reduce__(self):
        return (RunDir, (str(self.root),))

    # -- bookkeeping ---------------------------------------------------------------
    @property
    def manifest(self) -> AnyPath:
        return self.root / "manifest.json"

    @property
    def lock(self) -> AnyPath:
        return self.root / ".lock"

    # -- prepare -------------------------------------------------------------------
    @property
    def prepare_staging(self) -> AnyPath:
        return self.root / ".prepare"

    def staging(self, name: str) -> AnyPath:
        """One input's (or piece's) staging folder."""
        return self.prepare_staging / name

    def sentences(self, lang: str) -> AnyPath:
        return self.root / "sentences" / lang

    def sentence_langs(self) -> list[str]:
        """Languages with sentence shards (``sentences/{lang}/part-*.parquet``), sorted."""
        d = self.root / "sentences"
        return sorted(p.name for p in d.iterdir() if self.shards(p)) if d.is_dir() else []

    # -- embed, knn ----------------------------------------------------------------
    def embeddings(self, lang: str) -> AnyPath:
        return self.root / "embeddings" / lang

    def knn(self, src: str, tgt: str, direction: str | None = None) -> AnyPath:
        d = self.root / "knn" / pair_name(src, tgt)
        return d if direction is None else d / direction

    def knn_index_dir(self, src: str, tgt: str, direction: str) -> AnyPath:
        return self.knn(src, tgt, direction) / KNN_INDEX

    # -- score, bitext, report -----------------------------------------------------
    def scores(self, src: str, tgt: str) -> AnyPath:
        return self.root / "scores" / pair_name(src, tgt)

    def score_shuffle(self, src: str, tgt: str) -> AnyPath:
        return self.scores(src, tgt) / ".shuffle"

    @property
    def bitext_root(self) -> AnyPath:
        return self.root / "bitext"

    def bitext(self, src: str, tgt: str) -> AnyPath:
        return self.bitext_root / pair_name(src, tgt)

    def bitext_tsv(self, src: str, tgt: str) -> AnyPath:
        return self.bitext(src, tgt) / "bitext.tsv.gz"

    def bitext_parquet(self, src: str, tgt: str) -> AnyPath:
        return self.bitext(src, tgt) / "bitext.parquet"

    def _bitext_temp(self, src: str, tgt: str, kind: str) -> AnyPath:
        """``bitext/.{pair}.{kind}``: the bitext stage's folders while it runs."""
        return self.bitext_root / f".{pair_name(src, tgt)}.{kind}"

    def bitext_staging(self, src: str, tgt: str) -> AnyPath:
        """Where the bitext files are written before they are published together."""
        return self._bitext_temp(src, tgt, "new")

    def bitext_retired(self, src: str, tgt: str) -> AnyPath:
        """The previous bitext folder while the new one takes its place."""
        return self._bitext_temp(src, tgt, "old")

    def bitext_parts(self, src: str, tgt: str) -> AnyPath:
        """The filter tasks' survivors while the bitext is written."""
        return self._bitext_temp(src, tgt, "parts")

    def bitext_pairs(self) -> list[str]:
        """Pairs (``"de-en"``) that have a published ``bitext.parquet``."""
        d = self.bitext_root
        return sorted(p.parent.name for p in d.glob("*/bitext.parquet")) if d.is_dir() else []

    def retired_bitext(self) -> Iterator[tuple[AnyPath, AnyPath]]:
        """``(retired folder, the published folder it was)`` for each ``.{pair}.old``
        a publish that was interrupted left behind."""
        d = self.bitext_root
        if d.is_dir():
            for old in d.glob(".*.old"):
                yield old, d / old.name[1:-len(".old")]

    @property
    def report_json(self) -> AnyPath:
        return self.root / "report.json"

    @property
    def report_html(self) -> AnyPath:
        return self.root / "report.html"

    @property
    def report_plots(self) -> AnyPath:
        return self.root / "report"

    # -- shards and names ----------------------------------------------------------
    @staticmethod
    def shard(directory: AnyPath, index: int) -> AnyPath:
        """``directory/part-{index:05d}.parquet``."""
        return directory / f"part-{index:05d}.parquet"

    @staticmethod
    def shards(directory: AnyPath) -> list[AnyPath]:
        """The ``part-*.parquet`` files of a folder, in order ([] when there is none)."""
        directory = as_path(directory)
        return sorted(directory.glob(SHARD_GLOB)) if directory.is_dir() else []

    def relative(self, path) -> str:
        """``path`` relative to the root, with ``/`` (how the manifest names files)."""
        return str(as_path(path).relative_to(self.root)).replace("\\", "/")

    def resolve(self, relative: str) -> AnyPath:
        return self.root / relative

    # -- what an interrupted run leaves ----------------------------------------------
    def temp_dirs(self) -> Iterator[AnyPath]:
        """Folders that exist only while a stage runs (score's shuffle, bitext's
        staging and parts)."""
        scores = self.root / "scores"
        if scores.is_dir():
            for pair in scores.iterdir():
                if (pair / ".shuffle").is_dir():
                    yield pair / ".shuffle"
        bitext = self.bitext_root
        if bitext.is_dir():
            for d in bitext.iterdir():
                if d.name.startswith(".") and d.name.endswith((".new", ".parts")) and d.is_dir():
                    yield d
