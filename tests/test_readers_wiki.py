"""MediaWiki readers on every real excerpt in ../shared/data/wikipedia."""

import bz2
import lzma
import logging
import re
from pathlib import Path

import pytest

from miner.errors import MinerError
from miner.readers import detect_format, open_reader, sniff
from miner.readers.wiki import iter_pages, read_wiki, wikitext_to_text
from miner.sentences import split_sentences

WIKI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikipedia"
needs_data = pytest.mark.skipif(not WIKI.exists(), reason=f"real Wikipedia excerpts not found at {WIKI}")

TRUNCATED = sorted(WIKI.glob("*wiki-truncated-100k.xml.xz")) if WIKI.exists() else []
ENWIKI = sorted(WIKI.glob("enwiki-*.bz2")) if WIKI.exists() else []
PAGES = sorted((WIKI / "pages").glob("*.xml")) if WIKI.exists() else []
MARKUP = ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "'''", "thumb|")
FILE_LINE = re.compile(r"^\s*(File|Datei|Fichier|Image|Bild):", re.M)
SPLIT_LANG = {"zh": "zh", "ja": "ja", "simple": "en"}
# every article of every excerpt is checked for markup (about 25 s in all); sentence
# splitting is checked on the first articles of each
MAX_SPLIT_ARTICLES = 80


def wiki_lang(path: Path) -> str:
    code = path.name.split("wiki")[0]
    return SPLIT_LANG.get(code, code)


def assert_clean(text: str, where: str) -> None:
    for token in MARKUP:
        assert token not in text, f"{where}: {token!r} survived"
    assert not FILE_LINE.search(text), f"{where}: a file line survived"


@needs_data
def test_data_is_all_there():
    assert len(TRUNCATED) == 7 and len(ENWIKI) == 2 and len(PAGES) == 28


@needs_data
@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow)  # 100k of XML: ~2 s each
                                  for p in TRUNCATED] + ENWIKI + PAGES, ids=lambda p: p.name)
def test_every_excerpt_yields_clean_articles_and_sentences(path):
    assert detect_format(path) == "wiki"
    docs = list(read_wiki(path))
    assert docs, f"{path.name}: no articles"
    has_base = b"<base>" in sniff(path, 8192)
    for doc in docs:
        assert doc.doc_id and doc.title and doc.revision == doc.meta["rev_id"]
        # a dump with <siteinfo><base> gives page URLs; bare <page> fragments and
        # dumps without siteinfo (enwiki-table-markup) cannot
        assert (doc.url or "").startswith(("https://", "http://")) == has_base, doc.url
        assert_clean(doc.text, f"{path.name} page {doc.doc_id}")
    split = docs[:MAX_SPLIT_ARTICLES]
    n_sentences = sum(sum(1 for _ in split_sentences(d.text, wiki_lang(path))) for d in split)
    assert n_sentences > len(split)


def _raw_xml(path: Path) -> str:
    opener = lzma.open if path.suffix == ".xz" else bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8")


@needs_data
@pytest.mark.parametrize("path", TRUNCATED, ids=lambda p: p.name)
def test_truncated_dump_yields_every_complete_page_and_one_warning(path, caplog):
    raw = _raw_xml(path)
    complete = raw.count("</page>")
    last_id = re.findall(r"<page>\s*<title>[^<]*</title>\s*<ns>\d+</ns>\s*<id>(\d+)</id>",
                         raw[: raw.rindex("</page>")])[-1]
    with caplog.at_level(logging.WARNING):
        pages = list(iter_pages(path))
    assert len(pages) == complete
    assert pages[-1]["id"] == last_id
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage()


@needs_data
def test_only_namespace_zero_articles_without_redirects(monkeypatch):
    monkeypatch.setattr("miner.readers.wiki.wikitext_to_text", lambda text, *a: "x")
    path = next(p for p in TRUNCATED if p.name.startswith("ja"))
    pages = list(iter_pages(path))
    articles = {d.doc_id for d in read_wiki(path)}
    assert any(p.get("ns") != "0" for p in pages)
    for p in pages:
        if p.get("ns") != "0" or p.get("redirect"):
            assert p["id"] not in articles


def test_wikitext_rules():
    wikitext = (
        "{{Infobox person|name=X}}'''Ada''' was a [[mathematician|maths person]] from "
        "[[London]].<ref>Source</ref> She wrote [http://example.org notes].<!-- hidden -->\n"
        "== Life ==\n* First item here.\n* Second item.\n"
        "[[File:Ada.jpg|thumb|A portrait of [[Ada]]]]\n"
        "{| class=\"wikitable\"\n| cell || cell\n|}\n"
        "She used &nbsp;entities &amp; <small>small text</small>.\n"
        "[[Category:Mathematicians]]\n[[de:Ada Lovelace]]"
    )
    text = wikitext_to_text(wikitext)
    assert text.split("\n") == [
        "Ada was a maths person from London. She wrote notes.",
        "First item here.", "Second item.",
        "She used \xa0entities & small text.",
    ]


def test_bare_page_fragments_and_all_compressions(tmp_path):
    page = ("<page><title>T{i}</title><ns>0</ns><id>{i}</id><revision><id>9{i}</id>"
            "<text>Sentence number {i} is here. Another one follows.</text></revision></page>\n")
    xml = "".join(page.format(i=i) for i in range(3)).encode()
    import gzip

    for name, data in [("a.xml", xml), ("a.xml.gz", gzip.compress(xml)),
                       ("a.xml.bz2", bz2.compress(xml[:100]) + bz2.compress(xml[100:])),  # multistream
                       ("a.xml.xz", lzma.compress(xml)), ("noext", bz2.compress(xml))]:
        (tmp_path / name).write_bytes(data)
        docs = list(open_reader(tmp_path / name, "auto"))
        assert [d.doc_id for d in docs] == ["0", "1", "2"], name
        assert docs[1].meta == {"page_id": "1", "rev_id": "91", "title": "T1"}


def test_corrupt_bz2_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.xml.bz2"
    good = bz2.compress(b"<mediawiki><page><title>x</title></page></mediawiki>" * 100)
    path.write_bytes(good[:20] + b"\x00" * 50 + good[70:])
    with pytest.raises(MinerError, match="bad.xml.bz2"):
        list(open_reader(path))


def test_malformed_xml_is_an_error(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<mediawiki><page><title>x</title><ns>0</ns><<<</page>" + "x" * 10 + "</mediawiki>")
    with pytest.raises(MinerError, match="malformed XML"):
        list(read_wiki(path))


# -- multistream dumps in pieces ---------------------------------------------------------

def make_multistream(target: Path, pages_per_stream: int = 20, max_pages: int = 1000) -> Path:
    """A ``pages-articles-multistream.xml.bz2`` the way Wikipedia builds one, from the
    real enwiki excerpt: the header in the first bzip2 stream, then a stream per
    ``pages_per_stream`` pages, then ``</mediawiki>`` in a stream of its own."""
    xml = bz2.decompress(ENWIKI[0].read_bytes()).decode("utf-8")
    head, rest = xml.split("  <page>", 1)
    pages = ["  <page>" + p for p in rest.split("  <page>")][:max_pages]
    pages[-1] = pages[-1].split("</mediawiki>")[0]
    streams = [head] + ["".join(pages[i:i + pages_per_stream])
                        for i in range(0, len(pages), pages_per_stream)] + ["</mediawiki>\n"]
    target.write_bytes(b"".join(bz2.compress(s.encode("utf-8")) for s in streams))
    return target


@pytest.mark.slow  # a real dump read twice: ~3 s
@needs_data
def test_pieces_of_a_multistream_dump_read_as_the_whole_dump(tmp_path):
    """Byte ranges cut anywhere give, piece after piece, exactly the whole dump's
    articles; cuts inside a stream belong to the piece where the stream starts."""
    import random

    from miner.readers.wiki import is_multistream

    path = make_multistream(tmp_path / "enwiki-multistream.xml.bz2")
    assert is_multistream(path) and not is_multistream(ENWIKI[0])
    whole = [(d.doc_id, d.text, d.url_or_title) for d in read_wiki(path)]
    assert len(whole) > 20
    size = path.stat().st_size
    rng = random.Random(1)
    for cuts in ([0, 1, 2, size], sorted({0, size, *rng.sample(range(1, size), 9)})):
        got = []
        for start, stop in zip(cuts, cuts[1:]):
            got.extend((d.doc_id, d.text, d.url_or_title) for d in read_wiki(path, (start, stop, 0)))
        assert got == whole


@pytest.mark.slow  # prepare twice on a real dump: ~6 s
@needs_data
def test_prepare_cuts_a_multistream_dump_into_tasks_with_the_same_shards(tmp_path):
    from miner.config import Config
    from miner.executor import LocalExecutor
    from miner.prepare import plan_parts, prepare

    path = str(make_multistream(tmp_path / "enwiki-multistream.xml.bz2"))
    whole, pieces = Config(shard_size=500), Config(shard_size=500)
    pieces.prepare.chunk_size = "64K"
    parts = plan_parts([path], pieces)
    assert len(parts) > 3 and all(p.span is not None for p in parts)
    assert [p.span is None for p in plan_parts([str(ENWIKI[0])], pieces)] == [True]  # one stream
    a = prepare(whole, [path], ["en"], tmp_path / "whole", LocalExecutor(1))
    b = prepare(pieces, [path], ["en"], tmp_path / "pieces", LocalExecutor(2))
    assert a == b and a["en"]["kept"] > 500
    names = sorted(p.name for p in (tmp_path / "whole" / "sentences" / "en").iterdir())
    for name in names:
        assert (tmp_path / "whole" / "sentences" / "en" / name).read_bytes() == \
            (tmp_path / "pieces" / "sentences" / "en" / name).read_bytes(), name


# -- issue 16: no namespace links, markup remnants or fragments --------------------------

SITEINFO_JA = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="ja">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <namespaces>
      <namespace key="-2" case="first-letter">メディア</namespace>
      <namespace key="-1" case="first-letter">特別</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="2" case="first-letter">利用者</namespace>
      <namespace key="4" case="first-letter">Wikipedia</namespace>
      <namespace key="6" case="first-letter">ファイル</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
      <namespace key="100" case="first-letter">Portal</namespace>
      <namespace key="102" case="first-letter">プロジェクト</namespace>
    </namespaces>
  </siteinfo>
"""
SITEINFO_DE = SITEINFO_JA.replace('xml:lang="ja"', 'xml:lang="de"').replace(
    "利用者", "Benutzer").replace("ファイル", "Datei").replace(">Category<", ">Kategorie<").replace(
    "プロジェクト", "Projektseite").replace(">Portal<", ">Portal<")


def _dump(tmp_path, siteinfo: str, pages: list[str], name="dump.xml") -> Path:
    from xml.sax.saxutils import escape

    body = "".join(
        f"  <page>\n    <title>P{i}</title>\n    <ns>0</ns>\n    <id>{i + 1}</id>\n"
        f"    <revision>\n      <id>{100 + i}</id>\n      <text xml:space=\"preserve\">{escape(t)}</text>\n"
        f"    </revision>\n  </page>\n" for i, t in enumerate(pages))
    path = tmp_path / name
    path.write_text(siteinfo + body + "</mediawiki>\n", encoding="utf-8")
    return path


def _prepared(path: Path, lang: str) -> list[str]:
    """Sentences as prepare keeps them (its reader, splitter and length/fragment rules)."""
    from miner.sentences import length_reason, normalize_text

    out = []
    for doc in open_reader(path, "auto"):
        for raw in split_sentences(doc.text, lang):
            text = normalize_text(raw)
            if not length_reason(text, 10, 500):
                out.append(text)
    return out


def test_namespace_links_from_the_dumps_siteinfo_and_aliases(tmp_path):
    path = _dump(tmp_path, SITEINFO_JA, [
        "サンバはブラジルの音楽である。\n"
        "* [[Wikipedia:索引 さん#さんは]]\n"
        "* [[プロジェクト:音楽/記事一覧]]\n"
        "詳しくは[[Portal:音楽]]を参照。\n"
        "[[ファイル:Samba.jpg|thumb|サンバの写真]][[画像:Old.png|thumb|古い写真]]"
        "[[File:X.jpg|thumb|写真]][[Image:Y.jpg]]\n"
        "[[Category:音楽]][[カテゴリ:ブラジル]]\n[[en:Samba]][[pt:Samba]]\n"
        "ボサノヴァは[[:en:Bossa nova|ボサノヴァ]]とも呼ばれる新しい音楽である。",
    ])
    text = next(iter(read_wiki(path))).text
    assert text.split("\n") == ["サンバはブラジルの音楽である。",
                                "ボサノヴァはボサノヴァとも呼ばれる新しい音楽である。"]
    assert "Wikipedia:索引 さん" not in " ".join(_prepared(path, "ja"))


def test_localised_namespaces_in_german(tmp_path):
    path = _dump(tmp_path, SITEINFO_DE, [
        "Alan Smithee ist ein Pseudonym für einen fiktiven Regisseur.\n"
        "''Siehe auch [[:Kategorie:Pseudonym]]''\n"
        "[[Datei:Smithee.jpg|mini|Ein Bild]]\n[[Bild:Alt.jpg|mini|Ein altes Bild]]\n"
        "Mehr dazu unter [[WP:Pseudonyme|Pseudonyme]] und [[Benutzer:Jemand|Jemand]].\n"
        "[[Kategorie:Pseudonym]]\n[[Category:Pseudonym]]\n[[en:Alan Smithee]]",
    ])
    assert next(iter(read_wiki(path))).text == \
        "Alan Smithee ist ein Pseudonym für einen fiktiven Regisseur."
    # a namespace only the dump names
    path = _dump(tmp_path, SITEINFO_DE, ["Ein Satz steht hier.\n[[Projektseite:Hilfe]] hier."], "b.xml")
    assert next(iter(read_wiki(path))).text == "Ein Satz steht hier."


def test_the_examples_of_issue_16_are_not_kept(tmp_path):
    ja = _dump(tmp_path, SITEINFO_JA, [
        "一人称を示す「ぼく」や三人称を示す「彼女」などを、「ぼく、何歳？」「彼女、どこ行くの？」"
        "のように二人称に転用することが可能である。\n* [[Wikipedia:索引 さん]]\n"
        "アンパサンド（{{lang|en|&amp;}}, {{IPA|ampersand}}）は記号である。",
    ], "ja.xml")
    kept = _prepared(ja, "ja")
    assert kept == ["一人称を示す「ぼく」や三人称を示す「彼女」などを、「ぼく、何歳？」「彼女、どこ行くの？」"
                    "のように二人称に転用することが可能である。", "アンパサンドは記号である。"]
    en = _dump(tmp_path, SITEINFO_JA.replace('xml:lang="ja"', 'xml:lang="en"'), [
        "Perhaps the clearest example is [[John Brunner (novelist)|John Brunner's]] 1968 novel "
        "''[[Into the Slave Nebula]]'', where the slaves are human.\n''{{lang-xx}}'', where the\n"
        "''{{transl|ar|ALA|Allāh}}'' in other languages is spelled the same way.\n"
        "Paris ({{IPA-fr|paʁi}}; {{lang-fr|Paris}}) is a city. Albedo ({{IPAc-en|æ}}) is a ratio.\n"
        "{| class=\"wikitable\"\n|-\n| cell one || cell two\n|}\n"
        "<gallery>\nFile:A.jpg|A caption here\n</gallery>\n"
        "{{Infobox city\n| name = Paris\n| population = 2,000,000\n}}\n"
        "== History ==\nThe city grew.<ref>{{cite web|url=x}}</ref> It grew&nbsp;more.\n"
        "* {{em|Reduction}}: here one unit is reduced.\n"
        "1) Cognitive function\n76.875 (2004)\n",
    ], "en.xml")
    kept = _prepared(en, "en")
    assert kept == [
        "Perhaps the clearest example is John Brunner's 1968 novel Into the Slave Nebula, "
        "where the slaves are human.",
        "Allāh in other languages is spelled the same way.",
        "Paris (Paris) is a city.", "Albedo is a ratio.",
        "The city grew.", "It grew more.",
        "Reduction: here one unit is reduced.",
    ]
    for s in kept:
        assert not re.search(r"^['\",]|\(\s*[,;)]|\[\[|\{\{|\||&nbsp;|Wikipedia:", s), s
