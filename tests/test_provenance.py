"""Provenance from the readers to the bitext: title, URL, revision, position, source."""

import bz2
import lzma
import re
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_data
from warcio.warcwriter import WARCWriter

from miner.config import Config
from miner.prepare import prepare
from miner.readers import open_reader
from miner.readers.wiki import page_url, read_wiki

ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
JAWIKI = "jawiki-truncated-100k.xml.xz"
REVISION = re.compile(r"^[0-9]+$")


def cut_dump(src: Path, dst: Path, pages: int) -> Path:
    """The first ``pages`` <page> elements of a real dump, with its <siteinfo>, closed
    with </mediawiki>: a small well-formed dump (written under the test's tmp_path)."""
    opener = lzma.open if src.name.endswith(".xz") else bz2.open
    out, n = [], 0
    with opener(src, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line)
            if line.strip() == "</page>":
                n += 1
                if n == pages:
                    break
    dst.write_text("".join(out) + "</mediawiki>\n", encoding="utf-8")
    return dst


def read_shards(out: Path, lang: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in
                            sorted((out / "sentences" / lang).glob("part-*.parquet")))


def test_page_urls_are_quoted_as_mediawiki_quotes_titles():
    base = "https://de.wikipedia.org/wiki/Wikipedia:Hauptseite"
    assert page_url(base, "Alan Smithee") == "https://de.wikipedia.org/wiki/Alan_Smithee"
    assert page_url(base, "C++ (Programmiersprache)") == \
        "https://de.wikipedia.org/wiki/C%2B%2B_(Programmiersprache)"
    assert page_url(base, "AC/DC: Live?") == "https://de.wikipedia.org/wiki/AC/DC:_Live%3F"
    assert page_url(base, "Köln & 100 %") == "https://de.wikipedia.org/wiki/K%C3%B6ln_%26_100_%25"
    # a wiki whose main page is under another article path; no base: no URL
    assert page_url("https://wiki.example.org/index.php/Main_Page", "A B") == \
        "https://wiki.example.org/index.php/A_B"
    assert page_url(None, "A") is None


@pytest.mark.parametrize("name, host", [(ENWIKI, "en"), ("ukwiki-truncated-100k.xml.xz", "uk"),
                                        (JAWIKI, "ja")])
def test_wikipedia_pages_carry_url_title_and_revision(name, host, tmp_path):
    dump = cut_dump(shared_data("wikipedia", name), tmp_path / "dump.xml", 12)
    docs = list(read_wiki(dump))
    assert docs
    for d in docs:
        assert d.url.startswith(f"https://{host}.wikipedia.org/wiki/"), d.url
        assert d.url == page_url(f"https://{host}.wikipedia.org/wiki/Main", d.title)
        assert REVISION.match(d.revision) and d.revision == d.meta["rev_id"]
        assert d.title == d.meta["title"] and d.source == "dump.xml"


def test_wet_records_carry_target_uri_and_record_id(tmp_path):
    pages = [("https://example.de/wetter", "Heute regnet es in Berlin den ganzen Tag lang. "
              "Morgen scheint in Berlin endlich wieder die Sonne."),
             ("https://example.de/bahn?id=7", "Der Zug nach Hamburg fährt heute später ab.")]
    path = tmp_path / "CC-MAIN-test.warc.wet.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, text in pages:
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=BytesIO(text.encode()),
                warc_headers_dict={"Content-Type": "text/plain"}))
    docs = list(open_reader(path))
    assert [d.url for d in docs] == [u for u, _ in pages]
    assert all(d.revision.startswith("<urn:uuid:") and d.doc_id == d.revision for d in docs)
    assert len({d.revision for d in docs}) == 2

    cfg = Config(shard_size=10)
    cfg.prepare.workers = 1
    prepare(cfg, [str(path)], ["de"], tmp_path / "out")
    table = read_shards(tmp_path / "out", "de").to_pylist()
    assert [(r["url"], r["position"]) for r in table] == [
        (pages[0][0], 0), (pages[0][0], 1), (pages[1][0], 0)]
    assert [r["revision"] for r in table] == [docs[0].revision] * 2 + [docs[1].revision]
    assert {r["source"] for r in table} == {path.name} and {r["title"] for r in table} == {None}


@pytest.mark.slow
def test_wikipedia_provenance_reaches_bitext_parquet(tmp_path):
    """A small real run (two real dump excerpts, ja and en) with the pair given in NLLB
    codes: the bitext folder is ja-en, and every pair names its two pages."""
    from miner.pipeline import run_pipeline

    ja = cut_dump(shared_data("wikipedia", JAWIKI), tmp_path / "jawiki.xml", 5)
    en = cut_dump(shared_data("wikipedia", ENWIKI), tmp_path / "enwiki.xml", 4)
    pages = {d.url: d for path in (ja, en) for d in read_wiki(path)}
    cfg = Config(out=str(tmp_path / "run"), pairs=["jpn_Jpan-eng_Latn"], inputs=[str(ja), str(en)])
    cfg.prepare.workers = 1
    cfg.score.threshold = 0.0  # provenance is the point here, not the pairs' quality
    cfg.validate()
    result = run_pipeline(cfg, progress=lambda *a, **k: None)
    assert list(result["pairs"]) == ["ja-en"]
    table = pq.read_table(tmp_path / "run" / "bitext" / "ja-en" / "bitext.parquet")
    rows = table.to_pylist()
    assert len(rows) > 10
    hosts = {"jawiki.xml": "ja", "enwiki.xml": "en"}
    for side in ("src", "tgt"):
        for r in rows:
            # a side's sentence may come from either dump (English lines of a Japanese
            # article go to en): the URL names the page of the dump it came from
            page = pages[r[f"{side}_url"]]
            host = hosts[r[f"{side}_source"]]
            assert r[f"{side}_url"].startswith(f"https://{host}.wikipedia.org/wiki/")
            assert r[f"{side}_title"] == page.title and r[f"{side}_doc_id"] == page.doc_id
            assert r[f"{side}_revision"] == page.revision and REVISION.match(page.revision)
            assert r[f"{side}_position"] >= 0
    assert {r["src_source"] for r in rows} == {"jawiki.xml"}
    assert "enwiki.xml" in {r["tgt_source"] for r in rows}
    # the scored candidates carry the same columns
    scores = pq.read_table(sorted((tmp_path / "run" / "scores" / "ja-en").glob("part-*.parquet"))[0])
    assert {"src_url", "tgt_url", "src_title", "tgt_revision", "src_position"} <= set(scores.schema.names)
