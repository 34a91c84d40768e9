"""MediaWiki XML dumps: pages in, plain-text articles out.

``read_wiki(path)`` streams ``<page>`` elements with an incremental XML parser (any
compression ``open_binary`` knows, bare ``<page>`` fragments without a
``<mediawiki>`` root too) and yields namespace-0 articles that are not redirects.
A dump cut in the middle of a page yields every complete page before the cut and
logs one warning.

``wikitext_to_text(wikitext)`` turns wikitext into plain text with mwparserfromhell:
templates, tables, references, files, categories, interlanguage links, comments and
most HTML tags are dropped, link text is kept, headings and list items become
paragraph breaks (paragraphs are separated by ``"\\n"``).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Iterator, Optional

import mwparserfromhell
from mwparserfromhell.nodes import (Argument, Comment, ExternalLink, Heading, HTMLEntity,
                                    Tag, Template, Text, Wikilink)

from miner.errors import MinerError
from miner.readers import DECOMPRESS_ERRORS, Document, decompress_error, open_binary, source_name
from miner.storage import as_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20

# Namespace names for files and categories in the wikis we see most; a dump's own
# <siteinfo> adds its localised names.
FILE_NAMESPACES = {
    "file", "image", "media", "datei", "bild", "fichier", "archivo", "imagen", "immagine",
    "file", "arquivo", "imagem", "plik", "grafika", "bestand", "afbeelding", "fitxer",
    "imatge", "ficheiro", "dosiero", "restr", "skeudenn", "файл", "изображение",
    "зображення", "αρχείο", "εικόνα", "文件", "檔案", "图像", "ファイル", "画像", "ಚಿತ್ರ",
    "ಕಡತ", "fil", "tiedosto", "kuva", "soubor", "dosya", "resim", "tập tin", "hình",
    "ملف", "پرونده", "קובץ", "चित्र", "संचिका", "ফাইল", "চিত্র", "պատկեր", "ֆայլ",
}
CATEGORY_NAMESPACES = {
    "category", "kategorie", "catégorie", "categoría", "categoria", "kategoria",
    "categorie", "kategorio", "rummad", "категория", "категорія", "κατηγορία", "分类",
    "分類", "カテゴリ", "ವರ್ಗ", "kategori", "luokka", "kategória", "thể loại", "تصنيف",
    "رده", "קטגוריה", "श्रेणी", "वर्ग", "বিষয়শ্রেণী", "կատեգորիա",
}
# MediaWiki's canonical (English) names of the other namespaces, valid on every wiki
# whatever its language, and common aliases; a dump's <siteinfo> adds its localised
# names (it does not list aliases, hence these). Links into them are not article text.
OTHER_NAMESPACES = {
    "special", "talk", "user", "user talk", "project", "project talk", "wikipedia",
    "wikipedia talk", "wp", "wt", "file talk", "image talk", "mediawiki", "mediawiki talk",
    "template", "template talk", "help", "help talk", "category talk", "portal",
    "portal talk", "module", "module talk", "draft", "draft talk", "timedtext",
    "timedtext talk", "book", "book talk", "gadget", "gadget talk", "gadget definition",
    "gadget definition talk", "education program", "education program talk", "topic",
    "user blog", "vp", "вп", "вікіпедія", "википедия", "benutzer", "hilfe", "vorlage",
    "spezial", "portail", "modèle", "aide", "utilisateur", "plantilla", "ayuda", "usuario",
}
# sister projects: an inline link to one keeps its label (or the page name)
SISTER_PREFIXES = {
    "w", "wikt", "wiktionary", "s", "wikisource", "q", "wikiquote", "b", "wikibooks", "n",
    "wikinews", "v", "wikiversity", "voy", "wikivoyage", "c", "commons", "species",
    "wikispecies", "d", "wikidata", "m", "meta", "mw", "mediawikiwiki", "foundation", "wmf",
    "incubator", "oldwikisource",
}
# A link into a non-article namespace inside running text ("see [[Portal:Music]]",
# "[[:Category:Births 1944]]", "[[Wikipedia:Index]]") would leave its sentence with a
# hole: the link becomes this mark, and a line holding it is dropped.
_DROP_LINE = "\ue000"
# tags whose content is not running text
DROP_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "score",
    "syntaxhighlight", "source", "pre", "code", "imagemap", "graph", "mapframe",
    "maplink", "templatedata", "templatestyles", "hiero", "poem", "inputbox", "categorytree",
    "noinclude", "includeonly", "onlyinclude", "style", "script", "div", "sup", "sub",
}
BREAK_TAGS = {"li", "dt", "dd", "br", "p", "tr", "hr", "ul", "ol", "dl", "blockquote"}
_INTERWIKI = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*$|^simple$")
_MAGIC_WORD = re.compile(r"__[A-ZÀ-ÿ_]+__")
# markup that must not survive; a line still holding any is dropped: wiki brackets,
# table and link pipes, tags, entities, bold quotes, heading equals signs, the mark of
# a link into another namespace
_RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<ref|'''|thumb\||^\s*[|!]|<[a-zA-Z/!][^>]*>"
                      r"|\||\ue000|&[a-zA-Z]+;|&#x?[0-9a-fA-F]+;|^=|=$")
# fragments that removed markup leaves behind, tidied in every line: brackets left
# empty or opening/closing on a separator ("Paris (; French: ...)", "Albedo ()"),
# separators at the start of a line or right after a sentence end ("* {{em|term}}:
# text"), spaces before a comma or full stop where a reference or template was
_OPEN_SEP = re.compile(r"([(（\[])\s*(?:[,;:、，；]\s*)+")
_CLOSE_SEP = re.compile(r"\s*(?:[,;:、，；]\s*)+([)）\]])")
_EMPTY_BRACKETS = re.compile(r"\s*(?:[(（]\s*[)）]|\[\s*\]|「\s*」|『\s*』|《\s*》|«\s*»|“\s*”)")
_LEAD_SEP = re.compile(r"^(?:[\s,;:、，；.)）\]]|'(?!\w))+")
_AFTER_END = re.compile(r"([.!?])\s+[,;:]+(?=\s)|([。！？])\s*[、，,;；:：]+\s*")
_SPACE_PUNCT = re.compile(r"[ \t\xa0]+(,|\.(?!\.)|、|。)")
_SPACES = re.compile(r"[ \t]{2,}")


def read_wiki(path: str | Path, span: Optional[tuple[int, int, int]] = None
              ) -> Iterator[Document]:
    """Yield namespace-0, non-redirect articles of a MediaWiki XML dump as Documents.

    ``doc_id`` is the page id, ``title`` the page title, ``revision`` the revision id,
    ``url`` the page's address built from the dump's ``<siteinfo><base>``
    (``page_url``; None for bare ``<page>`` fragments, which have no siteinfo);
    ``meta`` holds ``page_id``, ``rev_id`` and ``title``.
    ``span`` = (start byte, stop byte, _): only the pages of the bzip2 streams of a
    multistream dump that start in [start, stop) (see ``multistream_chunks``); pieces
    read in turn give exactly the articles of the whole file.
    """
    path = as_path(path)
    file_ns, cat_ns = set(FILE_NAMESPACES), set(CATEGORY_NAMESPACES)
    other_ns = set(OTHER_NAMESPACES)
    site: dict = {}
    source = source_name(path)
    chunks = None
    if span is not None:
        # the localised namespace names and the site's base URL are in the dump's first
        # stream, which only the first piece reads: every piece takes them from there first
        for _ in iter_pages(path, file_ns, cat_ns, chunks=_first_stream(path), piece=True,
                            other_ns=other_ns, site=site):
            pass
        chunks = multistream_chunks(path, span[0], span[1])
    for page in iter_pages(path, file_ns, cat_ns, chunks=chunks, piece=span is not None,
                           other_ns=other_ns, site=site):
        if page.get("ns", "0") != "0" or page.get("redirect"):
            continue
        wikitext = page.get("text") or ""
        if wikitext.lstrip()[:9].upper() == "#REDIRECT":
            continue
        text = wikitext_to_text(wikitext, file_ns, cat_ns, other_ns)
        if not text:
            continue
        title = page.get("title", "")
        yield Document(text=text, doc_id=page.get("id", ""), source=source, title=title or None,
                       url=page_url(site.get("base"), title), revision=page.get("rev_id") or None,
                       meta={"page_id": page.get("id", ""), "rev_id": page.get("rev_id", ""),
                             "title": title})


# MediaWiki's wfUrlencode: PHP urlencode, then these characters put back as they are
_TITLE_SAFE = ";@$!*(),/~:"


def page_url(base: Optional[str], title: str) -> Optional[str]:
    """The address of page ``title`` on the wiki whose ``<siteinfo><base>`` (its main
    page's address) is ``base``: ``https://de.wikipedia.org/wiki/Alan_Smithee``, spaces
    as underscores and URL-quoted as MediaWiki quotes titles. None without a base."""
    if not base or not title:
        return None
    if "/wiki/" in base:
        prefix = base[:base.rindex("/wiki/") + len("/wiki/")]
    else:  # another article path ($wgArticlePath): replace the main page's title
        prefix = base[:base.rindex("/") + 1]
    return prefix + urllib.parse.quote(title.replace(" ", "_"), safe=_TITLE_SAFE)


def _file_chunks(path) -> Iterator[bytes]:
    """The decompressed bytes of a whole file, a block at a time."""
    with open_binary(path) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


def iter_pages(path: Path, file_ns: Optional[set] = None,
               cat_ns: Optional[set] = None, chunks: Optional[Iterable[bytes]] = None,
               piece: bool = False, other_ns: Optional[set] = None,
               site: Optional[dict] = None) -> Iterator[dict]:
    """Yield each complete ``<page>`` as a dict (title, ns, id, rev_id, redirect, text).

    Localised namespace names from ``<siteinfo>`` are added to ``file_ns`` (files and
    media), ``cat_ns`` (categories) and ``other_ns`` (every other namespace but the
    articles'). ``site`` gets the ``<siteinfo>``'s ``base`` (the main page's address)
    and ``sitename``. Malformed XML is a MinerError; a file that ends
    inside a page logs one warning and stops. ``chunks``: the XML bytes to parse
    (default: the whole decompressed file); ``piece``: they are a piece of the file,
    which may be empty or hold the end of the dump alone.
    """
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    in_page = False
    started = False
    wrapped = False
    closed = False
    chunks = iter(_file_chunks(path) if chunks is None else chunks)
    try:
        while True:
            try:
                chunk = next(chunks, b"")
            except DECOMPRESS_ERRORS as e:  # a stream that ends early is an error too
                raise decompress_error(path, e) from None
            if not chunk:
                break
            if not started:
                stripped = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
                if not stripped:
                    continue
                started = True
                # a bare fragment (or a piece holding the dump's end alone): give it a root
                if stripped.startswith(b"<page") or (piece and stripped.startswith(b"</mediawiki")):
                    parser.feed(b"<mediawiki>")
                    wrapped = True
                chunk = stripped
            try:  # expat errors surface from read_events(), not feed()
                parser.feed(chunk)
                events = list(parser.read_events())
            except ET.ParseError as e:  # its line numbers count from the start of the file
                raise MinerError(f"{path}: malformed XML ({e})") from None
            for event, elem in events:
                tag = _local(elem.tag)
                if event == "start":
                    if root is None:
                        root = elem
                    if tag == "page":
                        in_page = True
                    continue
                if elem is root:
                    closed = True
                elif tag == "namespace" and file_ns is not None:
                    _add_namespace(elem, file_ns, cat_ns, other_ns)
                elif tag == "page":
                    in_page = False
                    yield _page_dict(elem)
                    root.clear()
                elif tag in ("base", "sitename") and site is not None and not in_page:
                    site[tag] = (elem.text or "").strip()
                elif tag == "siteinfo":
                    root.clear()
    except UnicodeDecodeError as e:  # pragma: no cover - expat reports these as ParseError
        raise MinerError(f"{path}: not valid UTF-8 ({e.reason})") from None
    if not started:
        if piece:
            return
        raise MinerError(f"{path}: file is empty")
    if wrapped and not closed:
        try:
            parser.feed(b"</mediawiki>")
        except ET.ParseError:
            pass
    try:
        parser.close()
    except ET.ParseError:
        if piece and not in_page:
            return  # pieces but the last end without </mediawiki>
        if in_page:
            log.warning("%s: ends in the middle of a page (truncated dump); "
                        "kept every complete page before the cut", path)
        elif root is None:
            raise MinerError(f"{path}: not a MediaWiki XML dump") from None
        else:
            log.warning("%s: ends before the closing </mediawiki> (truncated dump)", path)


# -- multistream bzip2 dumps in pieces -------------------------------------------------
#
# ``pages-articles-multistream.xml.bz2`` is many bzip2 streams end to end: the
# <mediawiki>/<siteinfo> header, then 100 pages per stream, then </mediawiki>. A
# stream starts with "BZh" + block size + the block magic 0x314159265359 ("1AY&SY"),
# byte-aligned (blocks inside a stream are not), so a piece of the file finds its
# first stream by searching for that magic and checking it decompresses.

_STREAM_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")


def _stream_start(f, start: int, stop: int) -> Optional[int]:
    """Offset of the first bzip2 stream beginning in [start, stop), or None."""
    import bz2

    pos = start
    while pos < stop:
        f.seek(pos)
        block = f.read(min(CHUNK, stop - pos) + 9)
        if not block:
            return None
        for m in _STREAM_MAGIC.finditer(block):
            if pos + m.start() >= stop:
                return None
            try:  # an accidental match in compressed data would not decompress
                f.seek(pos + m.start())
                bz2.BZ2Decompressor().decompress(f.read(1 << 16))
                return pos + m.start()
            except (OSError, ValueError, EOFError):
                continue
        pos += max(len(block) - 9, 1)
    return None


def multistream_chunks(path, start: int, stop: int) -> Iterator[bytes]:
    """Decompressed bytes of the bzip2 streams of ``path`` that begin in bytes
    [start, stop), stream after stream."""
    import bz2

    from miner.readers import open_raw

    with open_raw(path) as f:
        pos = _stream_start(f, start, stop)
        while pos is not None and pos < stop:
            f.seek(pos)
            d = bz2.BZ2Decompressor()
            while not d.eof:
                data = f.read(CHUNK)
                if not data:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                out = d.decompress(data)
                if out:
                    yield out
            end = f.tell() - len(d.unused_data)
            f.seek(end)
            pos = end if f.read(3).startswith(b"BZh") else None


def _first_stream(path) -> Iterator[bytes]:
    """The decompressed first stream of a multistream dump (its header)."""
    import bz2

    from miner.readers import open_raw

    with open_raw(path) as f:
        d = bz2.BZ2Decompressor()
        while not d.eof:
            data = f.read(1 << 16)
            if not data:
                return
            yield d.decompress(data)


def is_multistream(path) -> bool:
    """True for a bzip2 file of several streams whose second one starts right after the
    first (a Wikipedia ``-multistream`` dump: the first stream is the header)."""
    import bz2

    from miner.readers import open_raw

    with open_raw(path) as f:
        d = bz2.BZ2Decompressor()
        try:
            while not d.eof:
                data = f.read(1 << 16)
                if not data:
                    return False
                d.decompress(data)
                if not d.eof and f.tell() > (64 << 20):  # a single huge stream
                    return False
        except (OSError, ValueError, EOFError):
            return False
        return d.unused_data[:3] == b"BZh" or (not d.unused_data and f.read(3) == b"BZh")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns_key(name: str) -> str:
    """A namespace name as links spell it in any case, underscores or spaces."""
    return " ".join(name.replace("_", " ").split()).lower()


def _add_namespace(elem: ET.Element, file_ns: set, cat_ns: set,
                   other_ns: Optional[set] = None) -> None:
    key, name = elem.get("key"), _ns_key(elem.text or "")
    if not name or key == "0":
        return
    if key in ("6", "-2"):
        file_ns.add(name)
    elif key == "14":
        cat_ns.add(name)
    elif other_ns is not None:
        other_ns.add(name)


def _page_dict(page: ET.Element) -> dict:
    out: dict = {}
    for child in page:
        tag = _local(child.tag)
        if tag in ("title", "ns", "id"):
            out[tag] = (child.text or "").strip()
        elif tag == "redirect":
            out["redirect"] = True
        elif tag == "revision":
            for sub in child:
                stag = _local(sub.tag)
                if stag == "id":
                    out["rev_id"] = (sub.text or "").strip()
                elif stag == "text":
                    out["text"] = sub.text or ""
    return out


# -- wikitext -> text -----------------------------------------------------------------

def wikitext_to_text(wikitext: str, file_ns: Optional[set] = None,
                     cat_ns: Optional[set] = None, other_ns: Optional[set] = None) -> str:
    """Plain text of an article's wikitext: paragraphs joined by ``"\\n"``.

    ``file_ns``, ``cat_ns``, ``other_ns``: lower-case names of the file, category and
    other non-article namespaces (default: the built-in names; ``read_wiki`` adds the
    dump's own). File, category and language links vanish; a line holding a link into
    any other namespace (or an inline link to a file or category) is dropped, as is a
    line still holding markup; fragments left where markup was removed are tidied.
    """
    ns = (FILE_NAMESPACES if file_ns is None else file_ns,
          CATEGORY_NAMESPACES if cat_ns is None else cat_ns,
          OTHER_NAMESPACES if other_ns is None else other_ns)
    parts: list[str] = []
    _render(mwparserfromhell.parse(strip_bulk(wikitext, *ns), skip_style_tags=True).nodes, parts, ns)
    raw = "".join(parts)
    paragraphs = []
    for line in raw.split("\n"):
        line = _tidy(_MAGIC_WORD.sub("", line).replace("''", ""))
        if not line or _RESIDUE.search(line) or _is_namespace_line(line, ns):
            continue
        paragraphs.append(line)
    return "\n".join(paragraphs)


def _tidy(line: str) -> str:
    """``line`` without the fragments removed markup leaves: empty brackets, separators
    at a bracket's edge, at the line's start or after a sentence end, spaces before a
    comma or full stop."""
    for _ in range(3):
        before = line
        line = _CLOSE_SEP.sub(r"\1", _OPEN_SEP.sub(r"\1", line))
        line = _EMPTY_BRACKETS.sub("", line)
        if line == before:
            break
    line = _AFTER_END.sub(lambda m: m.group(1) or m.group(2), line)
    line = _SPACE_PUNCT.sub(r"\1", line)
    return _LEAD_SEP.sub("", _SPACES.sub(" ", line)).strip()


def _is_namespace_line(line: str, ns: tuple) -> bool:
    """A line that starts like a page of another namespace: ``File:...``, ``Category:
    ...``, ``Wikipedia:Index``."""
    head, sep, rest = line.partition(":")
    if not sep:
        return False
    head = _ns_key(head)
    return head in ns[0] or head in ns[1] or (head in ns[2] and rest[:1] not in (" ", ""))


def _link_text(target: str, label: Optional[str], ns: tuple) -> str:
    """What a wikilink to ``target`` with the rendered ``label`` (None: no label) leaves
    in the text: nothing for a file, category or language link; ``_DROP_LINE`` for a link
    into another namespace or an inline (``[[:...]]``) link to a file or category; the
    label or the page name (without the prefix of a sister project or another
    language's wiki) for the rest."""
    target = target.strip()
    colon = target.startswith(":")
    body = target.lstrip(":").strip()
    prefix, sep, rest = body.partition(":")
    page = body
    if sep:
        key = _ns_key(prefix)
        if key in ns[0] or key in ns[1]:
            return _DROP_LINE if colon else ""
        if key in ns[2]:
            return _DROP_LINE
        if key in SISTER_PREFIXES or _INTERWIKI.match(key):
            if not colon and key not in SISTER_PREFIXES:
                return ""  # interlanguage link
            page = rest.strip()
    if label is not None:
        return label
    if page.startswith("#"):
        return page[1:].replace("_", " ")
    return page.split("#", 1)[0]


def _render(nodes: Iterable, out: list[str], ns: tuple) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(str(node.value))
        elif isinstance(node, Wikilink):
            label = None
            if node.text is not None:
                sub: list[str] = []
                _render(node.text.nodes, sub, ns)
                label = "".join(sub)
            out.append(_link_text(str(node.title), label, ns))
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _render(node.title.nodes, out, ns)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, Tag):
            _render_tag(node, out, ns)
        elif isinstance(node, Heading):
            out.append("\n\n")
        elif isinstance(node, (Template, Comment, Argument)):
            continue
        # anything else (unknown node types) is markup: dropped


def _render_tag(node: Tag, out: list[str], ns: tuple) -> None:
    name = str(node.tag).strip().lower()
    markup = node.wiki_markup
    if markup == "{|" or name in DROP_TAGS:
        if name in ("div", "sup", "sub") and markup is None and not _is_ref_like(node):
            pass  # plain div/sup/sub: keep their text below
        else:
            out.append("\n") if markup == "{|" or name in ("table", "gallery", "pre") else None
            return
    if markup in ("*", "#", ";", ":") or name in BREAK_TAGS:
        out.append("\n")
    if node.contents is not None and not node.self_closing:
        _render(node.contents.nodes, out, ns)
    if name in ("p", "li", "dd", "dt", "blockquote"):
        out.append("\n")


def _is_ref_like(node: Tag) -> bool:
    """A ``<sup>`` or ``<div>`` that only holds references, notes or navigation."""
    attrs = " ".join(str(a) for a in node.attributes).lower()
    return any(k in attrs for k in ("reference", "noprint", "navbox", "thumb", "infobox", "display:none"))


# -- fast pre-pass: regexes drop the bulky markup before mwparserfromhell parses -------

_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_REF = re.compile(r"<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_INNER_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)
_INNER_LINK = re.compile(r"\[\[([^\[\]|\n]*)(?:\|([^\[\]]*))?\]\]")
# runs of two or more apostrophes are italic/bold markup; four between letters are an
# apostrophe and bold ("Smith''''s"); others, also what an empty ''{{template}}''
# leaves, are dropped whole
_APOSTROPHE_BOLD = re.compile(r"(?<=\w)'{4}(?=\w)")
_QUOTE_RUN = re.compile(r"'{2,}")
# templates whose argument is running text (a word in another language or script, an
# emphasis): the positional argument kept (1-based; -1: the last); all others vanish
TEXT_TEMPLATES = {"lang": -1, "transl": -1, "transliteration": -1, "em": 1, "nowrap": 1,
                  "nobr": 1, "small": 1, "smaller": 1, "big": 1, "visible anchor": 1,
                  "nihongo": 1, "script": -1}


def _template_text(body: str) -> str:
    name, _, args = body.partition("|")
    name = _ns_key(name)
    which = TEXT_TEMPLATES.get(name, 1 if re.match(r"lang-[a-z]{2,3}$", name) else None)
    if which is None or not args:
        return ""
    positional = [a for a in args.split("|") if "=" not in a]
    if not positional or (which > 0 and len(positional) < which):
        return ""
    text = positional[which - 1 if which > 0 else -1].strip()
    return "" if _RESIDUE.search(text) else text


def strip_bulk(wikitext: str, file_ns: Optional[set] = None, cat_ns: Optional[set] = None,
               other_ns: Optional[set] = None) -> str:
    """Remove comments and references, resolve simple wikilinks, remove templates (but
    keep the text of ``TEXT_TEMPLATES``) and tables, and drop bold/italic quotes with
    regexes, innermost first; mwparserfromhell then has little left to parse (it is
    the slow part).

    What the regexes miss (unbalanced brackets) is left for mwparserfromhell and the
    final residue check.
    """
    ns = (FILE_NAMESPACES if file_ns is None else file_ns,
          CATEGORY_NAMESPACES if cat_ns is None else cat_ns,
          OTHER_NAMESPACES if other_ns is None else other_ns)
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)

    def link(m: re.Match) -> str:
        return _link_text(m.group(1), m.group(2), ns)

    for _ in range(10):
        text, n = _INNER_LINK.subn(link, text)
        if not n:
            break
    for _ in range(30):
        text, n = _INNER_TEMPLATE.subn(lambda m: _template_text(m.group(1)), text)
        if not n:
            break
    for _ in range(30):
        text, n = _INNER_TABLE.subn("\n", text)
        if not n:
            break
    for _ in range(10):  # links whose label held a template
        text, n = _INNER_LINK.subn(link, text)
        if not n:
            break
    return _QUOTE_RUN.sub("", _APOSTROPHE_BOLD.sub("'", text))
