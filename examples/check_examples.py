#!/usr/bin/env python3
"""Sanity checks for the bundled example corpus; exits 1 if anything is wrong.

Checks: one sentence per line (25-200 characters, no tabs, no duplicates within a
file); gold line numbers exist and each sentence occurs at most once per gold file;
de-en and fr-en gold cover the same English sentences (translation triples); digit
sequences agree within each gold pair; articles/*.jsonl are exactly the corpus
sentences (each once, 8-12 per article, joined by single spaces); bucc_format/ matches
what make_bucc.py would write.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LANGS = ("en", "de", "fr")
PAIRS = ("de", "fr")
errors = []


def err(msg):
    errors.append(msg)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main():
    corpus = {}
    for lang in LANGS:
        lines = read_lines(os.path.join(HERE, f"corpus.{lang}.txt"))
        corpus[lang] = lines
        seen = {}
        for n, s in enumerate(lines, 1):
            if not 25 <= len(s) <= 200:
                err(f"corpus.{lang}.txt:{n}: length {len(s)} outside 25-200")
            if "\t" in s or s != s.strip() or "  " in s:
                err(f"corpus.{lang}.txt:{n}: tab or stray whitespace")
            if s in seen:
                err(f"corpus.{lang}.txt:{n}: duplicate of line {seen[s]}")
            seen.setdefault(s, n)

    gold = {}
    for src in PAIRS:
        name = f"gold.{src}-en.tsv"
        pairs = []
        for n, line in enumerate(read_lines(os.path.join(HERE, name)), 1):
            try:
                a, b = (int(x) for x in line.split("\t"))
            except ValueError:
                err(f"{name}:{n}: expected two tab-separated integers, got {line!r}")
                continue
            if not 1 <= a <= len(corpus[src]):
                err(f"{name}:{n}: {src} line {a} does not exist")
                continue
            if not 1 <= b <= len(corpus["en"]):
                err(f"{name}:{n}: en line {b} does not exist")
                continue
            pairs.append((a, b))
            da = re.findall(r"\d+", corpus[src][a - 1])
            db = re.findall(r"\d+", corpus["en"][b - 1])
            if sorted(da) != sorted(db):
                err(f"{name}:{n}: numbers disagree {da} vs {db}")
        for col, lang in ((0, src), (1, "en")):
            vals = [p[col] for p in pairs]
            for v in sorted({v for v in vals if vals.count(v) > 1}):
                err(f"{name}: {lang} line {v} appears more than once")
        gold[src] = pairs
    en_sets = [{b for _, b in gold[src]} for src in PAIRS]
    if en_sets[0] != en_sets[1]:
        err("de-en and fr-en gold cover different English sentences: "
            f"{sorted(en_sets[0] ^ en_sets[1])}")

    for lang in LANGS:
        name = f"articles/{lang}.jsonl"
        remaining = {s: 0 for s in corpus[lang]}
        ids = set()
        for n, line in enumerate(read_lines(os.path.join(HERE, name)), 1):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"{name}:{n}: bad JSON ({e})")
                continue
            if set(doc) != {"id", "title", "text"} or not all(isinstance(v, str) and v for v in doc.values()):
                err(f"{name}:{n}: expected non-empty string fields id, title, text")
                continue
            if not doc["id"].endswith(f"-{lang}") or doc["id"] in ids:
                err(f"{name}:{n}: bad or duplicate id {doc['id']!r}")
            ids.add(doc["id"])
            # Consume the text sentence by sentence (longest corpus sentence first).
            text, count = doc["text"], 0
            while text:
                match = max((s for s in remaining if text.startswith(s)
                             and (len(text) == len(s) or text[len(s)] == " ")), key=len, default=None)
                if match is None:
                    err(f"{name}:{n}: text not made of corpus sentences near {text[:60]!r}")
                    break
                remaining[match] += 1
                count += 1
                text = text[len(match) + 1:]
            if not 8 <= count <= 12:
                err(f"{name}:{n}: {doc['id']} has {count} sentences, expected 8-12")
        for s, k in remaining.items():
            if k != 1:
                err(f"{name}: sentence occurs {k} times in the articles: {s[:60]!r}")

    for src in PAIRS:
        prefix = os.path.join(HERE, "bucc_format", f"{src}-en.sample")
        for lang in (src, "en"):
            want = [f"{lang}-{n:09d}\t{s}" for n, s in enumerate(corpus[lang], 1)]
            if read_lines(f"{prefix}.{lang}") != want:
                err(f"bucc_format/{src}-en.sample.{lang} out of date: run make_bucc.py")
        want = [f"{src}-{a:09d}\ten-{b:09d}" for a, b in gold[src]]
        if read_lines(f"{prefix}.gold") != want:
            err(f"bucc_format/{src}-en.sample.gold out of date: run make_bucc.py")

    for e in errors:
        print("ERROR:", e, file=sys.stderr)
    if errors:
        return 1
    print("sentences: " + ", ".join(f"{l} {len(corpus[l])}" for l in LANGS))
    print("gold pairs: " + ", ".join(f"{s}-en {len(gold[s])}" for s in PAIRS))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
