"""HTML decoding and main-content extraction (pure Python, no Spark).

Two steps, used by the ``warc`` and ``html`` readers in :mod:`pipeline.readers`:

1. :func:`decode_html` turns the raw bytes of a page into ``str``: valid non-ASCII UTF-8 is
   UTF-8; otherwise the charset declared by the HTTP ``Content-Type`` header, then the
   ``<meta charset>`` / ``http-equiv`` tag, then UTF-8, then the charset detected by
   resiliparse (uchardet, WHATWG names). Every candidate is tried *strictly*; a page no
   candidate decodes raises :class:`DecodeError` with reason ``invalid_utf8`` (the reader
   quarantines it), except that a page declared or detected as UTF-8 with a tiny share of bad
   bytes (``max_error_ratio``, default 0.1%, typical of pages cut mid-character) is decoded
   with U+FFFD replacements and the count is reported.
2. :func:`extract_main_text` runs a maintained main-content extractor on the decoded page and
   returns plain text (paragraphs separated by newlines).

Extractor choice (measured on ``web-html/evaldata.json``: 178 pages, 518 ``with`` snippets the
extraction must keep, 524 ``without`` snippets it must drop; see :func:`evaluate`,
``python -m pipeline.extract --all`` and ``bench/bench_extract.py``):

=====================================  ========  ===========  ========  =========
configuration                          with kept  without dropped  accuracy  pages/s
=====================================  ========  ===========  ========  =========
ours: trafilatura, comments off        489       467          0.918     10.2
trafilatura 2.0.0 library defaults     490       462          0.914     10.4
resiliparse ``main_content=True``      488       356          0.810     142.6
resiliparse library defaults           511        79          0.566     275.1
=====================================  ========  ===========  ========  =========

trafilatura is the default: on this set resiliparse's main-content mode lets twice as much
boilerplate through. Our configuration (:data:`DEFAULT_CONFIG`) turns comments off
(``include_comments=False``): user comments are the "without" boilerplate of many pages
("Comments", "Leave a comment", "Kommentare"...) and the most spam-prone part of a page. That
drops 5 more boilerplate snippets for 1 ``with`` snippet that lived in a comment (lemire.me), so
ours is better by accuracy, precision and F1 (trafilatura's own evaluation measures). The other
options were tried and rejected: ``favor_precision`` (476 / 482: loses content),
``favor_recall`` (490 / 460), ``include_tables=False`` (479 / 469), ``fast`` (486 / 467, 2x
faster), ``deduplicate`` (487 / 467). resiliparse stays available (``extractor: resiliparse``)
as the fast option (14x in main-content mode; re-measured 2026-12-04 on one process of the shared
2-core machine) for very large crawls, where trafilatura's ~0.1 s per page is about 9x what the
rest of the chain spends per document.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field, asdict

#: Extractor names accepted by :class:`ExtractConfig`.
EXTRACTORS = ("trafilatura", "resiliparse")

_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_HTML_LANG_RE = re.compile(
    r"""<html\b[^>]*?\blang\s*=\s*["']?\s*([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)""", re.IGNORECASE)
_CHARSET_PARAM_RE = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)


class DecodeError(ValueError):
    """Raised by :func:`decode_html` when no candidate charset decodes the bytes.

    Attributes:
        reason: quarantine reason name (``invalid_utf8``).
        detail: dict of what was tried (JSON-serialisable).
    """

    def __init__(self, reason: str, detail: dict):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ExtractConfig:
    """Options of the main-content extraction.

    Attributes:
        extractor: ``"trafilatura"`` (default) or ``"resiliparse"``.
        include_comments: keep user comments (trafilatura default True; ours False).
        include_tables: keep table text (trafilatura default True).
        favor_precision / favor_recall: trafilatura's precision / recall bias (both False by
            default: the balanced mode scored best on evaldata.json).
        fast: trafilatura without its fallback extractors (readability, jusText); faster, lower
            recall. Default False.
        deduplicate: trafilatura's in-document duplicate-segment removal. Default False (dedup is
            a separate pipeline stage).
        main_content: resiliparse ``main_content`` heuristics (only for ``extractor: resiliparse``).
    """

    extractor: str = "trafilatura"
    include_comments: bool = False
    include_tables: bool = True
    favor_precision: bool = False
    favor_recall: bool = False
    fast: bool = False
    deduplicate: bool = False
    main_content: bool = True

    @classmethod
    def from_options(cls, opts: dict | None) -> "ExtractConfig":
        """Build a config from a source's ``options.extract`` mapping.

        Raises:
            ValueError: unknown key or unknown extractor name.
        """
        opts = dict(opts or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(opts) - known
        if unknown:
            raise ValueError(f"unknown extract option(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(**opts)
        if cfg.extractor not in EXTRACTORS:
            raise ValueError(f"extractor must be one of {EXTRACTORS}, got {cfg.extractor!r}")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


#: Our tuned configuration (see the module docstring for the evaluation).
DEFAULT_CONFIG = ExtractConfig()

#: The libraries' own defaults, for the comparison the acceptance test asks for.
LIBRARY_DEFAULTS = {
    "trafilatura": ExtractConfig(extractor="trafilatura", include_comments=True, include_tables=True),
    "resiliparse": ExtractConfig(extractor="resiliparse", main_content=False),
}


@dataclass
class Decoded:
    """Result of :func:`decode_html`: ``text`` plus how it was decoded (for ``meta``)."""

    text: str
    encoding: str
    encoding_source: str  # http | meta | utf-8 | detected
    replaced: int = 0     # U+FFFD replacements (0 unless decoded leniently)
    tried: list = field(default_factory=list)


def _norm_codec(name: str | None) -> str | None:
    """Python codec name for a charset label, or None if Python does not know it."""
    if not name:
        return None
    import codecs

    label = name.strip().strip("\"'").lower()
    # WHATWG: ISO-8859-1 / ASCII labels mean windows-1252 on the web
    if label in ("iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
        label = "cp1252"
    if label in ("gb2312", "gbk", "x-gbk"):
        label = "gb18030"  # superset, as browsers do
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def charset_from_content_type(content_type: str | None) -> str | None:
    """The ``charset=`` parameter of an HTTP Content-Type value, or None."""
    if not content_type:
        return None
    m = _CHARSET_PARAM_RE.search(content_type)
    return m.group(1) if m else None


def meta_charset(data: bytes) -> str | None:
    """Charset declared by ``<meta charset>`` / ``http-equiv`` in the first 4 KiB, or None."""
    m = _META_CHARSET_RE.search(data[:4096])
    return m.group(1).decode("ascii", "ignore") if m else None


def decode_html(data: bytes, http_charset: str | None = None, max_error_ratio: float = 0.001) -> Decoded:
    """Decode an HTML page's bytes.

    Order: a UTF-8 byte-order mark; bytes that are valid UTF-8 and not pure ASCII are UTF-8
    whatever the declaration says (valid multi-byte UTF-8 is vanishingly unlikely in legacy
    encodings, while servers that default to ``ISO-8859-1`` for UTF-8 pages are common and would
    give mojibake); then, each tried strictly, ``http_charset`` (HTTP header), the HTML meta
    charset, UTF-8 and the resiliparse (uchardet) detection. If none decodes and the page was
    declared or detected as UTF-8 with at most ``max_error_ratio`` bad bytes, it is decoded with
    U+FFFD replacement (``Decoded.replaced`` counts them).

    Args:
        data: raw page bytes.
        http_charset: charset label from the HTTP Content-Type header, or None.
        max_error_ratio: tolerated share of undecodable bytes for the lenient UTF-8 path.

    Returns:
        :class:`Decoded` (``encoding`` is a Python codec name, ``encoding_source`` one of
        ``bom``, ``utf-8``, ``http``, ``meta``, ``detected``, ``utf-8-lenient``).

    Raises:
        DecodeError: reason ``invalid_utf8`` when nothing decodes.
    """
    tried: list[str] = []
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark overrides declarations
        data = data[3:]
        text = data.decode("utf-8", "replace")
        bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
        if bad <= max_error_ratio * max(len(data), 1):
            return Decoded(text, "utf-8", "bom", replaced=bad, tried=["utf-8"])
    if not data.isascii():
        tried.append("utf-8")
        try:
            return Decoded(data.decode("utf-8"), "utf-8", "utf-8", tried=tried)
        except UnicodeDecodeError:
            pass
    candidates: list[tuple[str, str]] = []
    for src, label in (("http", http_charset), ("meta", meta_charset(data)), ("utf-8", "utf-8")):
        codec = _norm_codec(label)
        if codec and codec not in [c for c, _ in candidates]:
            candidates.append((codec, src))
    for codec, src in candidates:
        if codec in tried:
            continue
        tried.append(codec)
        try:
            return Decoded(data.decode(codec), codec, src, tried=tried)
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        from resiliparse.parse.encoding import detect_encoding

        detected = _norm_codec(detect_encoding(data))
    except Exception:  # pragma: no cover - resiliparse is a pinned dependency
        detected = None
    if detected and detected not in tried:
        tried.append(detected)
        try:
            return Decoded(data.decode(detected), detected, "detected", tried=tried)
        except (UnicodeDecodeError, LookupError):
            pass
    if "utf-8" in (detected, candidates[0][0]):
        text = data.decode("utf-8", "replace")
        bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
        if bad <= max_error_ratio * max(len(data), 1):
            return Decoded(text, "utf-8", "utf-8-lenient", replaced=bad, tried=tried)
    err = None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        err = {"position": e.start, "error": e.reason}
    raise DecodeError("invalid_utf8", {"tried": tried, "detected": detected, "utf8_error": err})


def html_lang(html: str) -> str | None:
    """The ``<html lang="...">`` attribute value in the first 8 KiB of ``html`` (raw, e.g.
    ``"de-DE"``), or None."""
    m = _HTML_LANG_RE.search(html[:8192])
    return m.group(1) if m else None


def _normalize_ws(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def extract_main_text(html: str, url: str | None = None, config: ExtractConfig = DEFAULT_CONFIG) -> str:
    """Main-content text of an HTML page.

    Args:
        html: decoded page.
        url: page URL (helps trafilatura's heuristics), or None.
        config: :class:`ExtractConfig`.

    Returns:
        Plain text, paragraphs separated by ``"\\n"``; ``""`` when the extractor finds no main
        content (the reader turns that into ``empty_text``).

    Raises:
        ExtractionTooDeep: trafilatura found no text in a page nested at least
            :data:`LXML_MAX_DEPTH` elements deep (its parser dropped the text).
        Any exception of the underlying extractor (the reader turns it into
        ``extraction_failed``).
    """
    if config.extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(html, main_content=config.main_content, preserve_formatting=True,
                                  alt_texts=False, links=False, form_fields=False, noscript=False,
                                  comments=config.include_comments)
    else:
        import trafilatura

        text = trafilatura.extract(
            html, url=url, output_format="txt", include_comments=config.include_comments,
            include_tables=config.include_tables, include_images=False, include_links=False,
            include_formatting=False, favor_precision=config.favor_precision,
            favor_recall=config.favor_recall, fast=config.fast, deduplicate=config.deduplicate,
            with_metadata=False) or ""
    out = "\n".join(line.strip() for line in text.splitlines() if line.strip())
    if not out and config.extractor == "trafilatura":
        depth = html_depth(html)
        if depth >= LXML_MAX_DEPTH:
            raise ExtractionTooDeep(
                f"HTML nested {depth} levels deep: libxml2 (under trafilatura) loses the text from "
                f"depth {LXML_MAX_DEPTH} on; `extract: {{extractor: resiliparse}}` reads it")
    return out


#: Element depth (:func:`html_depth`) from which libxml2 (lxml, under trafilatura) loses the
#: text: its ``xmlParserMaxDepth`` is 256 without ``XML_PARSE_HUGE``; measured with trafilatura
#: 2.0: a paragraph at depth 256 is extracted, at 257 the page comes back empty.
LXML_MAX_DEPTH = 257
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
_VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())


class ExtractionTooDeep(ValueError):
    """The page nests elements deeper than the extractor's parser can (the reader quarantines
    it as ``extraction_failed`` instead of ``empty_text``)."""


def html_depth(html: str) -> int:
    """Largest element nesting depth of ``html`` (int), from its tags alone: void elements and
    self-closed tags do not nest, a closing tag closes one level, unmatched closes are ignored.
    Linear in ``len(html)``."""
    depth = best = 0
    for m in _TAG_RE.finditer(html):
        if m.group(1):
            depth = max(0, depth - 1)
        elif not m.group(3) and m.group(2).lower() not in _VOID_TAGS:
            depth += 1
            best = max(best, depth)
    return best


def evaluate(evaldata_path: str, html_dir: str, config: ExtractConfig, limit: int | None = None) -> dict:
    """Score an extraction config on trafilatura's ``evaldata.json``.

    A ``with`` snippet counts as kept when it occurs in the extracted text, a ``without`` snippet
    as dropped when it does not (both sides whitespace-normalised and NFC). Pages are decoded with
    :func:`decode_html`.

    Args:
        evaldata_path: path of ``evaldata.json`` (``{file: {"url", "with": [...], "without": [...]}}``).
        html_dir: folder holding the pages.
        config: extraction config to score.
        limit: score only the first ``limit`` pages (sorted by name), for quick tests.

    Returns:
        dict with ``pages``, ``with_total``, ``with_kept``, ``with_kept_frac``, ``without_total``,
        ``without_dropped``, ``without_dropped_frac``, ``accuracy`` (share of all snippets handled
        right), ``precision`` / ``recall`` / ``f1`` (trafilatura's own evaluation measures: a kept
        ``with`` snippet is a true positive, a kept ``without`` snippet a false positive),
        ``seconds`` (extraction time) and ``config``.
    """
    import os
    import time

    with open(evaldata_path, encoding="utf-8") as f:
        evaldata = json.load(f)
    names = sorted(evaldata)[:limit] if limit else sorted(evaldata)
    w_tot = w_ok = wo_tot = wo_ok = pages = 0
    secs = 0.0
    for name in names:
        path = os.path.join(html_dir, name)
        if not os.path.exists(path):
            continue
        item = evaldata[name]
        with open(path, "rb") as f:
            data = f.read()
        html = decode_html(data).text
        t0 = time.perf_counter()
        try:
            text = extract_main_text(html, url=item.get("url"), config=config)
        except Exception:
            text = ""
        secs += time.perf_counter() - t0
        norm = _normalize_ws(text)
        pages += 1
        for s in item.get("with", []):
            w_tot += 1
            w_ok += _normalize_ws(s) in norm
        for s in item.get("without", []):
            wo_tot += 1
            wo_ok += _normalize_ws(s) not in norm
    kept_without = wo_tot - wo_ok  # boilerplate that got through (false positives)
    precision = w_ok / max(w_ok + kept_without, 1)
    recall = w_ok / max(w_tot, 1)
    return {"pages": pages, "with_total": w_tot, "with_kept": w_ok,
            "with_kept_frac": recall, "without_total": wo_tot,
            "without_dropped": wo_ok, "without_dropped_frac": wo_ok / max(wo_tot, 1),
            "accuracy": (w_ok + wo_ok) / max(w_tot + wo_tot, 1),
            "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "seconds": round(secs, 3), "config": config.to_dict()}


def _main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m pipeline.extract --data-root ../shared/data`` prints the evaluation of
    our configuration next to the library defaults."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] +
                                " Evaluates extraction configs on web-html/evaldata.json.")
    p.add_argument("--data-root", default="../shared/data", help="sample data root (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N pages")
    p.add_argument("--all", action="store_true", help="also score the resiliparse configurations")
    a = p.parse_args(argv)
    import os

    ev = os.path.join(a.data_root, "web-html", "evaldata.json")
    hd = os.path.join(a.data_root, "web-html", "html")
    configs: list[tuple[str, ExtractConfig]] = [
        ("ours (" + DEFAULT_CONFIG.extractor + ")", DEFAULT_CONFIG),
        (DEFAULT_CONFIG.extractor + " library defaults", LIBRARY_DEFAULTS[DEFAULT_CONFIG.extractor])]
    if a.all:
        configs += [("resiliparse library defaults", LIBRARY_DEFAULTS["resiliparse"]),
                    ("resiliparse main_content", ExtractConfig(extractor="resiliparse", main_content=True))]
    for label, cfg in configs:
        r = evaluate(ev, hd, cfg, limit=a.limit)
        print(f"{label}: pages={r['pages']} with_kept={r['with_kept']}/{r['with_total']} "
              f"({r['with_kept_frac']:.3f}) without_dropped={r['without_dropped']}/{r['without_total']} "
              f"({r['without_dropped_frac']:.3f}) accuracy={r['accuracy']:.4f} f1={r['f1']:.4f} "
              f"extraction_seconds={r['seconds']:.2f} pages_per_sec={r['pages'] / max(r['seconds'], 1e-9):.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
