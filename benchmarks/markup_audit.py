"""Audit: how many sentences that ``mine prepare`` keeps from the real Wikipedia
excerpts still hold wiki markup or are fragments left where markup was removed.

For every excerpt in ``../shared/data/wikipedia`` (the truncated dumps, the enwiki
excerpts and the bare ``pages/*.xml``), the sentences go through prepare's own path
(``miner.readers.open_reader`` -> ``miner.sentences.split_sentences`` ->
``normalize_text`` -> ``length_reason`` with the default settings; no LID, so the
audit sees everything the length rules keep). Each kept sentence is then checked by
the small, independent checker below: regexes only, nothing imported from the reader
it audits. Namespace names come from each dump's own ``<siteinfo>`` (read here with a
regex) plus MediaWiki's canonical English names and common aliases.

Prints per excerpt: kept sentences, flagged sentences and their share, counts per rule
and a few examples; then the overall share. Exit status 1 when the overall share is
above ``--max-share`` (default 0.2%).

    .venv/bin/python benchmarks/markup_audit.py [--examples 3] [--max-share 0.002]
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WIKI = REPO.parent / "shared" / "data" / "wikipedia"

# MediaWiki's canonical namespace names and the usual aliases: valid on every wiki
CANONICAL = [
    "Media", "Special", "Talk", "User", "User talk", "Project", "Project talk", "File",
    "File talk", "Image", "Image talk", "MediaWiki", "MediaWiki talk", "Template",
    "Template talk", "Help", "Help talk", "Category", "Category talk", "Portal",
    "Portal talk", "Wikipedia", "Wikipedia talk", "WP", "WT", "Module", "Module talk",
    "Draft", "Draft talk", "TimedText", "TimedText talk", "Gadget", "Gadget definition",
    "Book", "Book talk", "Education Program", "Topic",
]
# languages of the bare pages, by file-name prefix (sentencex codes)
LANG = {"simple": "en", "zh": "zh"}

RULES = {
    "[[ or ]]": re.compile(r"\[\[|\]\]"),
    "{{ or }}": re.compile(r"\{\{|\}\}"),
    # "!!" separates table cells only with spaces around it ("PARADISE GO!!" is a name)
    "table": re.compile(r"\{\||\|\}|\|\||\s!!\s|\|-|^\s*[|!]|\|"),
    "<ref / html tag": re.compile(r"<ref|</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>|<!--"),
    "entity": re.compile(r"&(nbsp|amp|lt|gt|quot|ndash|mdash|#\d+|#x[0-9a-fA-F]+);"),
    "heading": re.compile(r"^=+[^=]|[^=]=+$|==+"),
    "bold/italic quotes": re.compile(r"''"),
    "attribute": re.compile(r"\b(style|class|align|width|height|colspan|rowspan|bgcolor|border|"
                            r"cellpadding|cellspacing|valign)\s*=\s*[\"'\w]", re.I),
    "image options": re.compile(r"\bthumb(nail)?\b\s*\||\b\d+px\b|\bupright\b\s*[|=]"),
    "magic word": re.compile(r"__[A-Z]{3,}__"),
    "leading punctuation": re.compile(r"^(?:[,.;:!?)\]}»、。，．：；！？）」』】》〉]|['\"][,.;:)]|'\s|\*)"),
    "empty or open brackets": re.compile(r"\(\s*[,;:.]|[,;:]\s*\)|\(\s*\)|\[\s*\]|（\s*[、，,;；]|[、，,;；]\s*）|（\s*）"),
    "interwiki prefix": re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:(?!//)\S"),
}
# (opening, closing) kinds; half- and full-width round brackets are one kind (mixed
# pairs like "(白浜温泉）" are common and balanced)
PAIRS = [("(（", ")）"), ("[", "]"), ("{", "}"), ("「", "」"), ("『", "』"), ("《", "》"),
         ("【", "】"), ("«", "»"), ("‹", "›")]
MIN_LETTERS = 4
_LETTER = re.compile(r"[^\W\d_]")


def namespace_names(path: Path) -> list[str]:
    """Names of the non-article namespaces in the dump's <siteinfo>, plus the canonical ones."""
    opener = lzma.open if path.suffix == ".xz" else bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", "replace")
    names = re.findall(r'<namespace key="(-?\d+)"[^>]*>([^<]+)</namespace>', head)
    return sorted({n.strip() for k, n in names if k != "0"} | set(CANONICAL), key=len, reverse=True)


def namespace_rule(names: list[str]) -> re.Pattern:
    alt = "|".join(re.escape(n).replace(r"\ ", "[ _]") for n in names)
    return re.compile(rf"(?:^|(?<=[\s\[(\"'「]))(?:{alt})\s*:(?!//)\S|^(?:{alt})\s*:", re.I)


def problems(text: str, ns_rule: re.Pattern) -> list[str]:
    """The rules ``text`` breaks (empty: clean)."""
    found = [name for name, rx in RULES.items() if rx.search(text)]
    if ns_rule.search(text):
        found.append("namespace prefix")
    for a, b in PAIRS:
        if sum(map(text.count, a)) != sum(map(text.count, b)):
            found.append("unbalanced brackets")
            break
    if text.count('"') % 2:
        found.append("unbalanced quotes")
    if len(_LETTER.findall(text)) < MIN_LETTERS:
        found.append("few letters")
    return found


def excerpt_lang(path: Path) -> str:
    code = path.name.split("wiki")[0]
    return LANG.get(code, code)


def audit(path: Path, examples: int, dump=None) -> tuple[int, int, Counter, list]:
    from miner.config import Config
    from miner.readers import open_reader
    from miner.sentences import length_reason, normalize_text, split_sentences

    cfg = Config()
    p = cfg.prepare
    lang = excerpt_lang(path)
    ns_rule = namespace_rule(namespace_names(path))
    kept = flagged = 0
    rules: Counter = Counter()
    shown: list = []
    for doc in open_reader(path, "auto", cfg):
        for raw in split_sentences(doc.text, lang):
            text = normalize_text(raw, p.normalize_punctuation)
            if length_reason(text, p.min_chars, p.max_chars):
                continue
            kept += 1
            bad = problems(text, ns_rule)
            if bad:
                flagged += 1
                rules.update(bad)
                if dump is not None:
                    dump.write(f"{path.name}\t{doc.url_or_title}\t{','.join(bad)}\t{text}\n")
                if len(shown) < examples:
                    shown.append((doc.url_or_title, bad, text))
    return kept, flagged, rules, shown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=3, help="examples shown per excerpt")
    ap.add_argument("--max-share", type=float, default=0.002)
    ap.add_argument("--data", type=Path, default=WIKI)
    ap.add_argument("--dump", type=Path, help="write every flagged sentence to this TSV")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)  # the truncated dumps warn once each
    paths = sorted(p for p in args.data.iterdir() if p.is_file() and "wiki" in p.name)
    paths += sorted((args.data / "pages").glob("*.xml"))
    total_kept = total_flagged = 0
    total_rules: Counter = Counter()
    pages_kept = pages_flagged = 0
    dump = open(args.dump, "w", encoding="utf-8") if args.dump else None
    for path in paths:
        kept, flagged, rules, shown = audit(path, args.examples, dump)
        total_kept += kept
        total_flagged += flagged
        total_rules.update(rules)
        share = flagged / max(kept, 1)
        if path.parent.name == "pages":
            pages_kept += kept
            pages_flagged += flagged
        print(f"{path.name}: kept {kept}, flagged {flagged} ({share:.2%})"
              + (f"  {dict(rules.most_common())}" if rules else ""))
        for title, bad, text in shown:
            print(f"    [{title}] {','.join(bad)}: {text[:160]!r}")
    print(f"pages/*.xml together: kept {pages_kept}, flagged {pages_flagged} "
          f"({pages_flagged / max(pages_kept, 1):.2%})")
    if dump is not None:
        dump.close()
    share = total_flagged / max(total_kept, 1)
    print(f"OVERALL: kept {total_kept}, flagged {total_flagged} ({share:.3%}); "
          f"by rule {dict(total_rules.most_common())}")
    return 0 if share <= args.max_share else 1


if __name__ == "__main__":
    sys.exit(main())
