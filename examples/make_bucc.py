#!/usr/bin/env python3
"""Write the example corpus in BUCC 2018 format under examples/bucc_format/.

Reads corpus.{de,fr,en}.txt and gold.{de,fr}-en.tsv (1-based line numbers) from
this directory and writes, for each pair XX-en:

    bucc_format/XX-en.sample.XX    XX-000000001<TAB>sentence   (line N -> id N)
    bucc_format/XX-en.sample.en    en-000000001<TAB>sentence
    bucc_format/XX-en.sample.gold  XX-id<TAB>en-id

Deterministic; run it again after editing the corpus or gold files.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = ("de", "fr")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def bucc_id(lang, n):
    return f"{lang}-{n:09d}"


def write_sentences(path, lang, sentences):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for n, s in enumerate(sentences, 1):
            f.write(f"{bucc_id(lang, n)}\t{s}\n")


def main():
    out = os.path.join(HERE, "bucc_format")
    os.makedirs(out, exist_ok=True)
    en = read_lines(os.path.join(HERE, "corpus.en.txt"))
    for src in PAIRS:
        sents = read_lines(os.path.join(HERE, f"corpus.{src}.txt"))
        prefix = os.path.join(out, f"{src}-en.sample")
        write_sentences(f"{prefix}.{src}", src, sents)
        write_sentences(f"{prefix}.en", "en", en)
        gold = [tuple(int(x) for x in line.split("\t"))
                for line in read_lines(os.path.join(HERE, f"gold.{src}-en.tsv")) if line]
        with open(f"{prefix}.gold", "w", encoding="utf-8", newline="\n") as f:
            for a, b in gold:
                f.write(f"{bucc_id(src, a)}\t{bucc_id('en', b)}\n")
        print(f"{src}-en: {len(sents)} {src}, {len(en)} en, {len(gold)} gold pairs")


if __name__ == "__main__":
    main()
