"""Source readers: raw files -> document records (pure Python; no Spark import at module level).

The ingest stage (:mod:`pipeline.ingest`) lists a source's files on the driver with
:func:`list_source_files` and calls :func:`read_source_file` for each file inside the executors.
Every reader streams its file (no whole-file reads except single-document ``html`` pages, which
are bounded by ``max_doc_bytes``) and yields one ``dict`` per record::

    {"id": str,             # sha1(f"{source}|{path relative to data_root}|{record key}")[:20]
     "source": str, "tier": str, "url": str | None, "text": str,
     "meta": dict,          # JSON-serialisable: path, record key / offset, format details
     "lang_declared": str | None}   # ISO 639-1 declared by the source or the file, else None

A record that cannot be used carries two more keys, ``reason`` (one of :data:`REASONS`) and
``detail`` (a JSON string), and its ``text`` is a snippet of at most :data:`SNIPPET_BYTES`; the
ingest stage sends it to ``quarantine/``. :func:`read_source_file` never raises for bad
content: every record of a file is either a document or a quarantine record, and a failure that
stops the reading of a file (truncated gzip, unreadable file, reader bug) becomes one
quarantine record standing for the unread rest of the file.

WARC ``warcinfo``, ``request``, ``metadata`` and ``revisit`` records, and ``resource`` records
whose target URI is crawl metadata (``metadata://``, ``dns:``, ``filedesc:``, e.g. wget's log),
are not documents and are not emitted.

Formats (the ``format:`` key of a source, see ``configs/sources/sample.yaml``):

==============  ==========================================================================
warc            WARC / ARC (warcio, ``.gz`` or not); HTTP responses with HTML get
                main-content extraction (:mod:`pipeline.extract`); text/plain kept as is
wet             WARC ``conversion`` records (plain text); ``options.parser: lenient`` uses a
                cc_net-style line parser for WET files with LF line ends or wrong lengths
html            one raw HTML page per file; ``INDEX.tsv`` (file, path, html lang) if present
jsonl           JSON lines (``.jsonl``/``.json``, gzip or not), CCNet / dolma form; columns
                by name with ``fields: {text: ..., id: ..., url: ..., lang: ...}``
parquet         one document per row (pyarrow, read on the executors); same ``fields``
ntrex           NTREX line files grouped into documents by ``DOCUMENT_IDS.tsv``
ntrex_parallel  NTREX reference aligned line by line with the English source: parallel docs
ud              UD ``sent_id<TAB>text`` files grouped by the document part of ``sent_id``
lines           one sentence per line (Leipzig): ``lines_per_doc`` lines per document
text            whole file one document, or (books) split at ``split_pattern`` lines and at
                ``max_chunk_bytes``
parallel_tsv    ``sent_id, lang, en, xx`` TSV (PUD pairs) grouped into parallel documents
==============  ==========================================================================
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import traceback
import zlib
from typing import Any, Iterable, Iterator

from pipeline import fs as _fs

#: Default largest document (UTF-8 bytes of its text); larger ones are quarantined as
#: ``doc_too_large``. Configurable per source (``max_doc_bytes`` or ``options.max_doc_bytes``).
DEFAULT_MAX_DOC_BYTES = 8 * 1024 * 1024
#: Largest text kept in a quarantine record.
SNIPPET_BYTES = 64 * 1024
#: Share of control / private-use / replacement characters above which text is
#: ``binary_garbage`` (plain text has none; random bytes have about 11% C0 controls).
DEFAULT_MAX_GARBAGE_RATIO = 0.05
#: Default sentences per document for ``lines`` and for UD treebanks without document ids.
DEFAULT_LINES_PER_DOC = 20

#: Quarantine reasons a reader can emit.
REASONS = (
    "bad_json",            # a JSON line that does not parse
    "invalid_utf8",        # bytes that do not decode (declared charset first for HTML/WARC)
    "truncated_gzip",      # gzip stream ends early / is corrupt: stands for the unread rest
    "empty_text",          # empty or whitespace-only text (after extraction)
    "binary_garbage",      # mostly control / non-text characters
    "doc_too_large",       # text over max_doc_bytes (HTML pages, WARC payloads: raw bytes over it)
    "warc_bad_header",     # a WARC/ARC record whose header (or HTTP payload framing) does not parse
    "extraction_failed",   # the HTML extractor raised
    "missing_field",       # a record without its text field / a TSV line without its columns
    "unsupported_content_type",  # a WARC response that is not text (image, PDF, ...)
    "unreadable_file",     # the file cannot be opened at all
    "reader_error",        # unexpected error inside a reader: stands for the unread rest
)
TIERS = ("web", "reference", "parallel", "book")

# ----------------------------------------------------------------------------- languages
# The ISO 639 mapping lives in filters/iso639.py (pure Python, shared with filters/langid.py,
# which maps GlotLID-style model labels with it).
from filters.iso639 import ISO3_TO_1 as _ISO3_TO_1, OLD_ISO1 as _OLD_ISO1, to_iso639_1  # noqa: E402,F401


# ----------------------------------------------------------------------------- config
def source_options(source: dict) -> dict:
    """The ``options`` mapping of a source ({} if absent)."""
    return dict(source.get("options") or {})


def validate_source(source: dict) -> None:
    """Check one source entry.

    Raises:
        ValueError: missing ``name``/``format``/``glob``/``tier``, unknown format or tier, or an
            invalid ``lang_from`` regex (it needs a named group ``lang``).
    """
    for key in ("name", "format", "glob", "tier"):
        if not source.get(key):
            raise ValueError(f"source {source.get('name', source)!r}: missing required key {key!r}")
    if source["format"] not in FORMATS:
        raise ValueError(f"source {source['name']!r}: unknown format {source['format']!r}; "
                         f"known: {sorted(FORMATS)}")
    if source["tier"] not in TIERS:
        raise ValueError(f"source {source['name']!r}: tier must be one of {TIERS}, got {source['tier']!r}")
    if source.get("lang_from"):
        if "(?P<lang>" not in source["lang_from"]:
            raise ValueError(f"source {source['name']!r}: lang_from needs a named group (?P<lang>...)")
        re.compile(source["lang_from"])
    if source.get("lang") and to_iso639_1(source["lang"]) is None:
        raise ValueError(f"source {source['name']!r}: lang {source['lang']!r} is not a language code")


def load_sources(paths: Iterable[str]) -> list[dict]:
    """Load and validate source entries from YAML files (``sources:`` list each).

    Top-level ``defaults:`` of a file (e.g. ``max_doc_bytes``) are merged under every entry of
    that file; entries with ``enabled: false`` are left out.

    Raises:
        ValueError: invalid entry (see :func:`validate_source`) or duplicate source name.
    """
    import yaml

    out: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        defaults = doc.get("defaults") or {}
        for entry in doc.get("sources") or []:
            src = {**defaults, **entry}
            if src.get("enabled", True) is False:
                continue
            validate_source(src)
            if src["name"] in seen:
                raise ValueError(f"duplicate source name {src['name']!r} (in {path})")
            seen.add(src["name"])
            out.append(src)
    return out


def list_source_files(source: dict, data_root: str) -> list[str]:
    """The files of a source entry, sorted.

    ``source["glob"]`` (a string or a list of strings) is matched relative to ``data_root``
    (``**`` allowed); ``source["exclude"]`` globs (same form, relative to ``data_root``) are
    removed. Only regular files are returned: absolute paths for a local ``data_root``, URIs
    for a URI one (``s3a://``, ``gs://``, ``hdfs://``...: listed once through
    :func:`pipeline.fs.list_files`).

    Raises:
        ValueError: no file matches (the message names the source, globs and data root).
        pipeline.fs.InputError: a remote data root cannot be listed (missing bucket, no access).
    """
    return sorted(list_source_files_details(source, data_root))


def list_source_files_details(source: dict, data_root: str) -> dict[str, tuple[int, int | None]]:
    """:func:`list_source_files` with ``(size, mtime_ns)`` per file (fingerprints of the input).

    Raises:
        ValueError, pipeline.fs.InputError: as :func:`list_source_files`.
    """
    root = data_root if _fs.is_remote(data_root) else _fs.local_path(data_root)
    globs = source["glob"] if isinstance(source["glob"], list) else [source["glob"]]
    excl = source.get("exclude") or []
    excl = excl if isinstance(excl, list) else [excl]
    files = _fs.list_files_details(root, globs, excl)
    if not files:
        raise ValueError(f"source {source.get('name')!r}: no files match {globs} "
                         f"(exclude {excl}) under data root {root}")
    return files


# ----------------------------------------------------------------------------- helpers
_GARBAGE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff]")
_CONTROL_BYTES = bytes(list(range(0, 9)) + [11, 12] + list(range(14, 32)) + [127])


def garbage_ratio(text: str) -> float:
    """Share of characters of ``text`` that are C0/C1 controls (except tab, LF, CR), U+FFFD,
    private-use or surrogate code points. 0.0 for empty text."""
    if not text:
        return 0.0
    return (len(text) - len(_GARBAGE_RE.sub("", text))) / len(text)


def control_byte_ratio(data: bytes) -> float:
    """Share of bytes of ``data`` that are ASCII control bytes other than tab, LF, CR."""
    if not data:
        return 0.0
    return (len(data) - len(data.translate(None, _CONTROL_BYTES))) / len(data)


def snippet(text: str, limit: int = SNIPPET_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (lone surrogates replaced)."""
    b = text.encode("utf-8", "replace")
    if len(b) <= limit:
        return b.decode("utf-8")
    return b[:limit].decode("utf-8", "ignore")


def _bytes_snippet(data: bytes, limit: int = SNIPPET_BYTES) -> str:
    return data[:limit].decode("utf-8", "replace")


def _clean(obj: Any) -> Any:
    """Make ``obj`` JSON- and UTF-8-safe (replace lone surrogates in strings, bytes -> str)."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, dict):
        return {str(_clean(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return str(obj)


def make_id(source_name: str, rel_path: str, key: str) -> str:
    """Stable document id: ``sha1(f"{source}|{rel_path}|{key}")`` as 20 hex characters."""
    return hashlib.sha1(f"{source_name}|{rel_path}|{key}".encode("utf-8", "replace")).hexdigest()[:20]


_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _open_binary(path: str):
    """Open ``path`` for binary reading, transparently gunzipping (detected by magic bytes)."""
    fh = _fs.open_input(path)
    try:
        magic = fh.read(2)
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    if magic == b"\x1f\x8b":
        return _GzipClosing(fh)
    return fh


class _GzipClosing(gzip.GzipFile):
    """A GzipFile over an open file object that closes that file too."""

    def __init__(self, fh):
        super().__init__(fileobj=fh, mode="rb")
        self._raw = fh

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


class _File:
    """Per-file reading context: builds records with ids, language and quality checks."""

    def __init__(self, path: str, source: dict, data_root: str):
        self.path = path
        self.source = source
        self.name = source["name"]
        self.tier = source["tier"]
        self.opts = source_options(source)
        self.rel = _fs.relpath(path, data_root)
        self.data_root = data_root
        self.max_doc_bytes = int(self.opts.get("max_doc_bytes", source.get("max_doc_bytes", DEFAULT_MAX_DOC_BYTES)))
        self.max_garbage = float(self.opts.get("max_garbage_ratio", DEFAULT_MAX_GARBAGE_RATIO))
        self._seen: dict[str, int] = {}
        self.lang_variant = None
        self.lang = None
        if source.get("lang"):
            self.lang_variant = source["lang"]
        elif source.get("lang_from"):
            m = re.search(source["lang_from"], self.rel)
            if m:
                self.lang_variant = m.group("lang")
        if self.lang_variant:
            self.lang = to_iso639_1(self.lang_variant)

    def unique(self, key: str) -> str:
        """``key``, or ``key#n`` if the file already produced ``key`` (duplicate WARC-Record-IDs
        or JSON ids), so ids stay unique and deterministic."""
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        return key if n == 0 else f"{key}#{n + 1}"

    def _meta(self, key: str, meta: dict | None) -> dict:
        m = {"path": self.rel, "key": key, "format": self.source["format"]}
        if self.lang_variant and self.lang_variant != self.lang:
            m["lang_variant"] = self.lang_variant
        if meta:
            m.update(meta)
        return m

    def doc(self, key: str, text: str, url: str | None = None, meta: dict | None = None,
            lang: str | None = None) -> dict:
        """A document record; the checks (lone surrogates -> ``invalid_utf8``, size ->
        ``doc_too_large``, blank -> ``empty_text``, control characters -> ``binary_garbage``)
        may turn it into a quarantine record."""
        reason = detail = None
        try:
            nbytes = len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            reason, detail = "invalid_utf8", {"error": "lone surrogate", "position": e.start}
        else:
            if nbytes > self.max_doc_bytes:
                reason, detail = "doc_too_large", {"bytes": nbytes, "max_doc_bytes": self.max_doc_bytes}
            elif not text.strip():
                reason, detail = "empty_text", {"chars": len(text)}
            else:
                g = garbage_ratio(text)
                if g > self.max_garbage:
                    reason, detail = "binary_garbage", {"garbage_ratio": round(g, 4),
                                                        "max_garbage_ratio": self.max_garbage}
        if reason:
            return self.bad(key, reason, detail, text=text, url=url, meta=meta, lang=lang)
        key = self.unique(key)
        return {"id": make_id(self.name, self.rel, key), "source": self.name, "tier": self.tier,
                "url": _clean(url) if url else None, "text": text, "meta": _clean(self._meta(key, meta)),
                "lang_declared": lang if lang is not None else self.lang}

    def bad(self, key: str, reason: str, detail: dict | str | None, text: str = "",
            url: str | None = None, meta: dict | None = None, lang: str | None = None) -> dict:
        """A quarantine record (``text`` cut to a snippet)."""
        assert reason in REASONS, reason
        key = self.unique(key)
        return {"id": make_id(self.name, self.rel, key), "source": self.name, "tier": self.tier,
                "url": _clean(url) if url else None, "text": snippet(text or ""),
                "meta": _clean(self._meta(key, meta)),
                "lang_declared": lang if lang is not None else self.lang,
                "reason": reason,
                "detail": detail if isinstance(detail, str) else json.dumps(_clean(detail or {}), ensure_ascii=False,
                                                                             sort_keys=True)}

    # -------------------------------------------------------------- line streaming
    def sniff_binary(self) -> bool:
        """True if the (decompressed) file looks binary as a whole: its first 8 KiB hold a NUL
        byte (never found in UTF-8 text; git's and grep's test) and more than
        ``max_garbage_ratio`` control bytes. Such a file gives one ``binary_garbage`` record
        instead of one per pseudo-line."""
        try:
            with _open_binary(self.path) as fh:
                head = fh.read(8192)
        except _GZIP_ERRORS:
            return False
        return b"\x00" in head and control_byte_ratio(head) > self.max_garbage

    def lines(self, strip_bom: bool = True) -> Iterator[tuple[int, str] | dict]:
        """Stream the decoded lines of the file: ``(lineno, line)`` (1-based, without the line
        end) for good lines; a quarantine ``dict`` for a line that is binary, not UTF-8 or longer
        than ``max_doc_bytes``; a final ``truncated_gzip`` ``dict`` if the stream breaks.
        With ``strip_bom`` a UTF-8 byte-order mark at the start of any line is dropped."""
        limit = self.max_doc_bytes
        lineno = 0
        with _open_binary(self.path) as fh:
            while True:
                try:
                    raw = fh.readline(limit + 1)
                except _GZIP_ERRORS as e:
                    yield self.bad(f"truncated@L{lineno + 1}", "truncated_gzip",
                                   {"error": f"{type(e).__name__}: {e}", "lines_read": lineno,
                                    "note": "the rest of the file could not be read"})
                    return
                if not raw:
                    return
                lineno += 1
                if len(raw) > limit and not raw.endswith(b"\n"):
                    total, head = len(raw), raw[:SNIPPET_BYTES]
                    try:
                        while True:
                            more = fh.readline(1 << 20)
                            total += len(more)
                            if not more or more.endswith(b"\n"):
                                break
                    except _GZIP_ERRORS as e:
                        yield self.bad(f"L{lineno}", "doc_too_large", {"bytes_at_least": total,
                                                                       "max_doc_bytes": limit},
                                       text=_bytes_snippet(head), meta={"line": lineno})
                        yield self.bad(f"truncated@L{lineno + 1}", "truncated_gzip",
                                       {"error": f"{type(e).__name__}: {e}", "lines_read": lineno})
                        return
                    yield self.bad(f"L{lineno}", "doc_too_large", {"bytes": total, "max_doc_bytes": limit},
                                   text=_bytes_snippet(head), meta={"line": lineno})
                    continue
                line = raw.rstrip(b"\r\n")
                if strip_bom and line.startswith(b"\xef\xbb\xbf"):
                    # a byte-order mark opens the file, or a file concatenated into this one
                    # (`cat a.jsonl b.jsonl`): never part of the record (issue 14, cause 7)
                    line = line[3:]
                cr = control_byte_ratio(line)
                if cr > self.max_garbage:
                    yield self.bad(f"L{lineno}", "binary_garbage",
                                   {"control_byte_ratio": round(cr, 4), "line": lineno},
                                   text=_bytes_snippet(line), meta={"line": lineno})
                    continue
                try:
                    yield lineno, line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield self.bad(f"L{lineno}", "invalid_utf8",
                                   {"line": lineno, "position": e.start, "error": e.reason},
                                   text=_bytes_snippet(line), meta={"line": lineno})


def _is_truncation(rec: Any) -> bool:
    return isinstance(rec, dict) and rec.get("reason") == "truncated_gzip"


# ----------------------------------------------------------------------------- grouping
class _Group:
    """Accumulates lines of one document: key, line numbers, texts, size."""

    __slots__ = ("gkey", "first", "last", "items", "nbytes", "extra")

    def __init__(self, gkey: str, lineno: int):
        self.gkey, self.first, self.last = gkey, lineno, lineno
        self.items: list = []
        self.nbytes = 0
        self.extra: dict = {}

    def add(self, lineno: int, item, nbytes: int) -> None:
        self.items.append(item)
        self.last = lineno
        self.nbytes += nbytes


# ----------------------------------------------------------------------------- formats
def _read_jsonl(f: _File) -> Iterator[dict]:
    """JSON lines in CCNet / dolma form: text under ``text_field`` (default ``text``, then
    ``raw_content``), id under ``id``, URL under ``url`` or ``metadata.url``; other fields go to
    ``meta.fields`` (values longer than 2 KiB when serialised are dropped from meta)."""
    text_fields = f.opts.get("text_field", ["text", "raw_content"])
    text_fields = text_fields if isinstance(text_fields, list) else [text_fields]
    lang_field = f.opts.get("lang_field")  # a field holding a *declared* language, if any
    for item in f.lines():
        if isinstance(item, dict):
            yield item
            continue
        lineno, line = item
        if not line.strip():
            continue  # blank separator line: not a record
        key = f"L{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            yield f.bad(key, "bad_json", {"line": lineno, "error": str(e)}, text=line, meta={"line": lineno})
            continue
        if not isinstance(obj, dict):
            yield f.bad(key, "missing_field", {"line": lineno, "error": f"JSON {type(obj).__name__}, not an object"},
                        text=line, meta={"line": lineno})
            continue
        text = next((obj[k] for k in text_fields if isinstance(obj.get(k), str)), None)
        rid = obj.get(f.opts.get("id_field", "id"))
        key = f"id:{rid}" if rid is not None else key
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        url = obj.get(f.opts["url_field"]) if f.opts.get("url_field") else (obj.get("url") or md.get("url"))
        url = url if isinstance(url, str) else None
        fields = {}
        for k, v in obj.items():
            if k in text_fields:
                continue
            try:
                if len(json.dumps(v, ensure_ascii=False)) <= 2048:
                    fields[k] = v
            except (TypeError, ValueError):
                pass
        meta = {"line": lineno, "json_id": None if rid is None else str(rid), "fields": fields}
        lang = to_iso639_1(obj.get(lang_field)) if lang_field and isinstance(obj.get(lang_field), str) else None
        if text is None:
            yield f.bad(key, "missing_field", {"line": lineno, "error": f"no string field among {text_fields}",
                                               "fields": sorted(obj)[:50]},
                        text=line, url=url, meta=meta, lang=lang)
            continue
        yield f.doc(key, text, url=url, meta=meta, lang=lang)


def _read_lines(f: _File) -> Iterator[dict]:
    """One sentence per line; every ``lines_per_doc`` non-blank lines form a document (text =
    the lines joined by ``\\n``)."""
    n = int(f.opts.get("lines_per_doc", DEFAULT_LINES_PER_DOC))
    if f.sniff_binary():
        yield f.bad("file", "binary_garbage", {"note": "file is binary (first 8 KiB)"})
        return

    def flush(grp: _Group, incomplete: bool = False):
        meta = {"lines": [grp.first, grp.last], "n_lines": len(grp.items)}
        if incomplete:
            meta["incomplete"] = True
        return f.doc(f"L{grp.first}", "\n".join(grp.items), meta=meta)

    yield from _group_lines(f, lambda lineno, line: "" if line.strip() else None,
                            lambda lineno, line: line.strip(), flush,
                            full=lambda g: len(g.items) >= n or g.nbytes > f.max_doc_bytes // 2)


def _find_upwards(f: _File, name: str, option: str) -> str | None:
    """``options[option]`` (relative to data_root) or the first ``name`` found in the file's
    folder or its parents up to data_root."""
    if f.opts.get(option):
        p = _fs.join(f.data_root, f.opts[option])
        return p if _fs.exists_input(p) else None
    d = _fs.dirname(f.path)
    root = f.data_root.rstrip("/") if _fs.is_remote(f.data_root) else _fs.local_path(f.data_root)
    while True:
        p = _fs.join(d, name)
        if _fs.exists_input(p):
            return p
        if d == root or _fs.dirname(d) == d or len(d) < len(root):
            return None
        d = _fs.dirname(d)


_DOC_IDS_CACHE: dict[str, list[str]] = {}


def _group_lines(f: "_File", key_of, item_of, flush, full=None) -> Iterator[dict]:
    """Group consecutive lines of ``f`` into records.

    ``key_of(lineno, line)`` gives a line's group key (``None`` skips the line); a new group
    starts when the key changes, and after a line that makes ``full(group)`` true.
    ``item_of(lineno, line)`` gives what a group stores per line; ``flush(group,
    incomplete=False)`` turns a finished group into a record. Reader records (quarantine) pass
    through; a truncation flushes the open group marked incomplete.
    """
    g: _Group | None = None
    for item in f.lines():
        if isinstance(item, dict):
            if _is_truncation(item) and g is not None:
                yield flush(g, incomplete=True)
                g = None
            yield item
            continue
        lineno, line = item
        key = key_of(lineno, line)
        if key is None:
            continue
        if g is not None and g.gkey != key:
            yield flush(g)
            g = None
        if g is None:
            g = _Group(key, lineno)
        g.add(lineno, item_of(lineno, line), len(line))
        if full is not None and full(g):
            yield flush(g)
            g = None
    if g is not None:
        yield flush(g)


def _doc_id_of(ids: list[str]):
    """Group key for :func:`_group_lines`: ``ids[lineno - 1]`` (``""`` past the end of ``ids``)."""
    return lambda lineno, line: ids[lineno - 1] if lineno <= len(ids) else ""


def _ntrex_doc_ids(path: str) -> list[str]:
    if path not in _DOC_IDS_CACHE:
        with _fs.open_text(path) as fh:
            _DOC_IDS_CACHE[path] = [ln.strip() for ln in fh]
    return _DOC_IDS_CACHE[path]


def _read_ntrex(f: _File) -> Iterator[dict]:
    """NTREX line files: consecutive lines with the same id in ``DOCUMENT_IDS.tsv`` (found next
    to the file or in a parent folder; ``options.doc_ids`` overrides) form one document. Lines
    beyond the id list are grouped as ``missing_field`` records."""
    ids_path = _find_upwards(f, "DOCUMENT_IDS.tsv", "doc_ids")
    if ids_path is None:
        yield f.bad("file", "missing_field", {"error": "DOCUMENT_IDS.tsv not found (set options.doc_ids)"})
        return
    ids = _ntrex_doc_ids(ids_path)

    def flush(grp: _Group, incomplete: bool = False):
        meta = {"doc_id": grp.gkey, "lines": [grp.first, grp.last], "n_lines": len(grp.items)}
        if incomplete:
            meta["incomplete"] = True
        if grp.gkey == "":
            return f.bad(f"L{grp.first}", "missing_field",
                         {"error": f"lines {grp.first}-{grp.last} have no entry in DOCUMENT_IDS.tsv "
                                   f"({len(ids)} ids)"}, text="\n".join(grp.items), meta=meta)
        return f.doc(f"{grp.gkey}@L{grp.first}", "\n".join(grp.items), meta=meta)

    yield from _group_lines(f, _doc_id_of(ids), lambda lineno, line: line.strip(), flush)


def _read_ntrex_parallel(f: _File) -> Iterator[dict]:
    """NTREX reference file aligned by line with the English source (``options.src``, relative
    to data_root, default ``newstest2019-src.eng.txt`` next to DOCUMENT_IDS.tsv), grouped by
    document into parallel docs (meta ``src_lang``, ``tgt_lang``, ``pairs``)."""
    ids_path = _find_upwards(f, "DOCUMENT_IDS.tsv", "doc_ids")
    src_path = (_fs.join(f.data_root, f.opts["src"]) if f.opts.get("src")
                else _fs.join(_fs.dirname(ids_path or f.path), "newstest2019-src.eng.txt"))
    if ids_path is None or not _fs.exists_input(src_path):
        yield f.bad("file", "missing_field", {"error": "DOCUMENT_IDS.tsv or the English source file not found",
                                              "src": src_path})
        return
    ids = _ntrex_doc_ids(ids_path)
    src_file = _File(src_path, {**f.source, "lang": "en"}, f.data_root)
    src_lines = {}
    for item in src_file.lines():
        if not isinstance(item, dict):
            src_lines[item[0]] = item[1].strip()

    def flush(grp: _Group, incomplete: bool = False):
        meta = {"doc_id": grp.gkey, "lines": [grp.first, grp.last], "src_lang": "en",
                "tgt_lang": f.lang, "pairs": grp.items, "src_path": _fs.relpath(src_path, f.data_root)}
        if incomplete:
            meta["incomplete"] = True
        text = "\n".join(p[1] for p in grp.items)
        if grp.gkey == "" or any(p[0] is None for p in grp.items):
            return f.bad(f"L{grp.first}", "missing_field", {"error": "lines without a document id or "
                                                                     "without an English source line"},
                         text=text, meta=meta)
        return f.doc(f"{grp.gkey}@L{grp.first}", text, meta=meta)

    yield from _group_lines(f, _doc_id_of(ids), lambda lineno, line: [src_lines.get(lineno), line.strip()],
                            flush)


#: How UD ``sent_id`` values encode documents (first match wins; group ``doc``):
#: PUD ``n01001011`` = domain (n news / w wikipedia) + 2 digits original language + 3 digits
#: document + 3 digits sentence (UD_*-PUD README); LassySmall ``wiki-1181.p.10.s.1`` =
#: document.paragraph.sentence; IAHLTwiki ``iahltwiki_<article>-<n>``. GSD / VTB ids
#: (``dev-s12``, ``train-s3``) carry no document: those sentences are chunked by
#: ``sents_per_doc``.
UD_DOC_PATTERNS = (
    r"^(?P<doc>[nw]\d{5})\d{3}$",
    r"^(?P<doc>.+?)\.p\.\d+\.s\.\d+$",
    r"^(?P<doc>iahltwiki_.+)-\d+$",
)


def _read_ud(f: _File) -> Iterator[dict]:
    """UD ``sent_id<TAB>text`` files: consecutive sentences of one document (see
    :data:`UD_DOC_PATTERNS`, override with ``options.doc_patterns``) form one document (text
    = sentences joined by ``\\n``); sentences without a document id are chunked by
    ``options.sents_per_doc`` (default 20)."""
    pats = [re.compile(p) for p in f.opts.get("doc_patterns", UD_DOC_PATTERNS)]
    n = int(f.opts.get("sents_per_doc", DEFAULT_LINES_PER_DOC))
    treebank = os.path.basename(f.path).split(".")[0]
    g: _Group | None = None

    def flush(grp: _Group, incomplete: bool = False):
        meta = {"treebank": treebank, "doc_key": grp.gkey, "sent_ids": [s for s, _ in grp.items],
                "lines": [grp.first, grp.last]}
        if incomplete:
            meta["incomplete"] = True
        return f.doc(f"{grp.gkey}@L{grp.first}", "\n".join(t for _, t in grp.items), meta=meta)

    for item in f.lines():
        if isinstance(item, dict):
            if _is_truncation(item) and g is not None:
                yield flush(g, incomplete=True)
                g = None
            yield item
            continue
        lineno, line = item
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2 or not parts[1].strip():
            yield f.bad(f"L{lineno}", "missing_field", {"line": lineno, "error": "expected sent_id<TAB>text"},
                        text=line, meta={"line": lineno})
            continue
        sid, text = parts[0].strip(), parts[1].strip()
        doc = next((m.group("doc") for p in pats for m in [p.match(sid)] if m), None)
        if doc is None:
            # no document in the id: chunk consecutive sentences
            if g is not None and g.gkey.startswith("chunk@") and len(g.items) < n:
                doc = g.gkey
            else:
                doc = f"chunk@{lineno}"
        if g is not None and g.gkey != doc:
            yield flush(g)
            g = None
        if g is None:
            g = _Group(doc, lineno)
        g.add(lineno, (sid, text), len(text))
    if g is not None:
        yield flush(g)


def _pud_doc(sid: str) -> str:
    m = re.match(UD_DOC_PATTERNS[0], sid)
    return m.group("doc") if m else sid


def _read_parallel_tsv(f: _File) -> Iterator[dict]:
    """Parallel TSV (PUD pairs): columns ``sent_id, lang, en, xx`` (a header line naming them
    is detected; ``options.columns`` overrides). Consecutive pairs of one language and one
    document (document part of ``sent_id``, as in :data:`UD_DOC_PATTERNS`) form one parallel
    document: text = the xx side joined by ``\\n``, meta ``src_lang``/``tgt_lang``/``pairs``,
    ``lang_declared`` = xx."""
    cols = f.opts.get("columns", ["sent_id", "lang", "en", "xx"])
    g: _Group | None = None

    def flush(grp: _Group, incomplete: bool = False):
        lang = grp.extra["lang"]
        meta = {"doc_key": grp.gkey, "src_lang": "en", "tgt_lang": lang,
                "pairs": [[e, x] for _, e, x in grp.items], "sent_ids": [s for s, _, _ in grp.items],
                "lines": [grp.first, grp.last]}
        if incomplete:
            meta["incomplete"] = True
        return f.doc(f"{grp.gkey}@L{grp.first}", "\n".join(x for _, _, x in grp.items), meta=meta,
                     lang=to_iso639_1(lang))

    for item in f.lines():
        if isinstance(item, dict):
            if _is_truncation(item) and g is not None:
                yield flush(g, incomplete=True)
                g = None
            yield item
            continue
        lineno, line = item
        if not line.strip():
            continue
        parts = line.split("\t")
        if lineno == 1 and [p.strip() for p in parts] == list(cols):
            continue  # header
        if len(parts) != len(cols) or not all(p.strip() for p in parts):
            yield f.bad(f"L{lineno}", "missing_field",
                        {"line": lineno, "error": f"expected {len(cols)} non-empty columns {cols}, got {len(parts)}"},
                        text=line, meta={"line": lineno})
            continue
        row = dict(zip(cols, (p.strip() for p in parts)))
        lang, sid = row.get("lang") or f.lang or "", row.get("sent_id", f"L{lineno}")
        gkey = f"{lang}:{_pud_doc(sid)}"
        if g is not None and g.gkey != gkey:
            yield flush(g)
            g = None
        if g is None:
            g = _Group(gkey, lineno)
            g.extra["lang"] = lang
        g.add(lineno, (sid, row["en"], row["xx"]), len(line))
    if g is not None:
        yield flush(g)


def _read_text(f: _File) -> Iterator[dict]:
    """Plain text. Without options the whole file is one document. Books: a line matching
    ``options.split_pattern`` (regex) starts a new document, and a document is also cut at a
    line boundary once it reaches ``options.max_chunk_bytes``."""
    split = re.compile(f.opts["split_pattern"]) if f.opts.get("split_pattern") else None
    max_chunk = int(f.opts.get("max_chunk_bytes", 0)) or None
    if f.sniff_binary():
        yield f.bad("file", "binary_garbage", {"note": "file is binary (first 8 KiB)"})
        return
    g: _Group | None = None
    too_large = False
    chunk_no = 0

    def flush(grp: _Group, incomplete: bool = False):
        nonlocal chunk_no
        chunk_no += 1
        text = "\n".join(grp.items).strip("\n")
        meta = {"lines": [grp.first, grp.last], "chunk": chunk_no}
        if incomplete:
            meta["incomplete"] = True
        if grp.extra.get("too_large"):
            return f.bad(f"L{grp.first}", "doc_too_large", {"bytes": grp.nbytes, "max_doc_bytes": f.max_doc_bytes},
                         text=text, meta=meta)
        if split is None and max_chunk is None:
            return f.doc("file", text, meta=meta)
        return f.doc(f"L{grp.first}", text, meta=meta)

    for item in f.lines():
        if isinstance(item, dict):
            if _is_truncation(item) and g is not None:
                yield flush(g, incomplete=True)
                g = None
            yield item
            continue
        lineno, line = item
        starts = split is not None and split.search(line) is not None
        full = max_chunk is not None and g is not None and g.nbytes >= max_chunk
        if g is not None and (starts or full) and any(s.strip() for s in g.items):
            yield flush(g)
            g = None
        if g is None:
            g = _Group("", lineno)
        nb = len(line.encode("utf-8")) + 1
        if g.nbytes + nb > f.max_doc_bytes:
            g.extra["too_large"] = True
            g.nbytes += nb
            g.last = lineno
            continue  # keep counting, keep only the snippet already held
        g.add(lineno, line.rstrip(), nb)
    if g is not None:
        yield flush(g)


def _read_html(f: _File) -> Iterator[dict]:
    """One raw HTML page per file: decoded (:func:`pipeline.extract.decode_html`) and
    main-content extracted. ``INDEX.tsv`` next to the file (``local_file``, ``original_path``,
    ``html_lang_attr``) gives the declared language, else the page's ``<html lang>``;
    ``options.url_index`` (JSON ``{file: {"url": ...}}``, relative to data_root) gives URLs."""
    from pipeline import extract as ex

    cfg = ex.ExtractConfig.from_options(f.opts.get("extract"))
    base = os.path.basename(f.path)
    index = _html_index(_find_upwards(f, "INDEX.tsv", "index"))
    row = index.get(base, {})
    url = None
    if f.opts.get("url_index"):
        url = (_json_index(_fs.join(f.data_root, f.opts["url_index"])).get(base) or {}).get("url")
    size = _fs.size_input(f.path)
    meta = {"original_path": row.get("original_path")} if row else {}
    if size > f.max_doc_bytes:
        with _fs.open_input(f.path) as fh:
            head = fh.read(SNIPPET_BYTES)
        yield f.bad("file", "doc_too_large", {"bytes": size, "max_doc_bytes": f.max_doc_bytes},
                    text=_bytes_snippet(head), url=url, meta=meta)
        return
    with _fs.open_input(f.path) as fh:
        data = fh.read()
    yield _html_record(f, "file", data, None, url, meta, cfg, declared_lang=row.get("html_lang_attr"))


_HTML_INDEX_CACHE: dict[str, dict] = {}


def _html_index(path: str | None) -> dict:
    if not path:
        return {}
    if path not in _HTML_INDEX_CACHE:
        rows = {}
        with _fs.open_text(path) as fh:
            header = fh.readline().rstrip("\n").split("\t")
            for ln in fh:
                vals = ln.rstrip("\n").split("\t")
                r = dict(zip(header, vals))
                if r.get("local_file"):
                    rows[r["local_file"]] = r
        _HTML_INDEX_CACHE[path] = rows
    return _HTML_INDEX_CACHE[path]


def _json_index(path: str) -> dict:
    if path not in _HTML_INDEX_CACHE:
        with _fs.open_text(path) as fh:
            _HTML_INDEX_CACHE[path] = json.load(fh)
    return _HTML_INDEX_CACHE[path]


def _html_record(f: _File, key: str, data: bytes, http_charset: str | None, url: str | None,
                 meta: dict, cfg, declared_lang: str | None = None) -> dict:
    """Decode + extract one HTML payload into a document or quarantine record."""
    from pipeline import extract as ex

    meta = dict(meta)
    cr = control_byte_ratio(data[:65536])
    if cr > f.max_garbage:
        return f.bad(key, "binary_garbage", {"control_byte_ratio": round(cr, 4)}, text=_bytes_snippet(data),
                     url=url, meta=meta)
    try:
        dec = ex.decode_html(data, http_charset)
    except ex.DecodeError as e:
        return f.bad(key, e.reason, e.detail, text=_bytes_snippet(data), url=url, meta=meta)
    meta.update({"charset": dec.encoding, "charset_source": dec.encoding_source})
    if dec.replaced:
        meta["charset_replaced"] = dec.replaced
    attr = declared_lang if declared_lang not in (None, "", "?") else ex.html_lang(dec.text)
    if attr:
        meta["html_lang"] = attr
    lang = f.lang or to_iso639_1(attr)
    meta["extractor"] = cfg.extractor
    try:
        text = ex.extract_main_text(dec.text, url=url, config=cfg)
    except Exception as e:  # the extractor's own failure: quarantine, keep going
        return f.bad(key, "extraction_failed", {"error": f"{type(e).__name__}: {e}"}, text=dec.text, url=url,
                     meta=meta, lang=lang)
    meta["html_bytes"] = len(data)
    return f.doc(key, text, url=url, meta=meta, lang=lang)


# ----------------------------------------------------------------------------- WARC
_NON_DOC_TYPES = {"warcinfo", "request", "metadata", "revisit", "continuation"}
_DEFAULT_SKIP_SCHEMES = ("metadata", "dns", "filedesc")
_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
_WARC_HEADERS_KEPT = ("WARC-Date", "WARC-Type", "WARC-Record-ID", "WARC-Refers-To", "WARC-TREC-ID",
                      "WARC-Identified-Content-Language", "WARC-Identified-Payload-Type", "WARC-Payload-Digest")


def _read_warc(f: _File) -> Iterator[dict]:
    """WARC / ARC records through warcio (see the module docstring for which records are
    documents). A record whose header does not parse yields ``warc_bad_header`` and the reader
    resynchronises on the next record (next gzip member, or next ``WARC/`` line when the file
    is not compressed). A gzip file is first checked member by member
    (:func:`gzip_first_bad_member`, warcio itself silently drops or cuts records of a truncated
    member): records from the first truncated / corrupt member on become one ``truncated_gzip``
    record."""
    if f.opts.get("parser") == "lenient":
        yield from _read_wet_lenient(f)
        return
    from pipeline import extract as ex
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    cfg = ex.ExtractConfig.from_options(f.opts.get("extract"))
    skip_schemes = tuple(f.opts.get("skip_uri_schemes", _DEFAULT_SKIP_SCHEMES))
    if _needs_tolerant_parser(f.path):
        yield from _read_archive_tolerant(f, cfg, skip_schemes)
        return
    with _fs.open_input(f.path) as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        bad = gzip_first_bad_member(f.path) if gz else None
        limit = bad[0] if bad else None
        start: int | None = 0
        resyncs = 0
        while start is not None and (limit is None or start < limit):
            raw.seek(start)
            it = ArchiveIterator(raw, arc2warc=True)
            next_start = None
            try:
                for rec in it:
                    if limit is not None and it.offset >= limit:
                        break
                    out = _warc_record(f, rec, it, cfg, skip_schemes)
                    if out is not None:
                        yield out
            except Exception as e:
                off = it.offset
                if limit is not None and off >= limit:
                    pass  # inside the truncated member: reported below
                elif isinstance(e, (ArchiveLoadFailed, _BadRecord, ValueError, KeyError, IndexError)):
                    resyncs += 1
                    yield f.bad(f"offset:{off}", "warc_bad_header",
                                {"offset": off, "error": f"{type(e).__name__}: {e}"}, meta={"offset": off})
                    # warcio reports offsets inside a gzip stream it cannot seek as negative
                    # numbers: never seek there, resync after where this pass started
                    pos = off + 1 if off is not None and off >= (start or 0) else (start or 0) + 1
                    next_start = _resync(raw, pos, gz) if resyncs <= 100000 else None
                elif isinstance(e, _GZIP_ERRORS):
                    limit = off
                    bad = (off, f"{type(e).__name__}: {e}")
                else:
                    raise
            start = next_start
    if bad:
        yield f.bad(f"truncated@{bad[0]}", "truncated_gzip",
                    {"offset": bad[0], "error": bad[1],
                     "note": "gzip member truncated or corrupt: the records from this offset on are not read"},
                    meta={"offset": bad[0]})


_ARC_HEADER = re.compile(rb"(\S+) (\d{1,3}(?:\.\d{1,3}){3}) (\d{14}) (\S*) (\d+)\r?\n")
_ARC_HEADER_ANYWHERE = re.compile(rb"(?:filedesc|https?|ftp|dns)://\S+ \d{1,3}(?:\.\d{1,3}){3} \d{14} \S* \d+\r?\n")
_WARC_START = re.compile(rb"(?:^|\n)(WARC/\d+\.\d+\r?\n)")
#: How far (bytes) after the declared end of a record its real end is looked for (before it:
#: down to the record's header).
_LENGTH_SLACK = 1 << 20
#: A line that starts like a record header (a broken one included).
_HEADERISH = re.compile(rb"(?:^|\n)(?:WARC/|[a-z]+://\S+ )")


def _needs_tolerant_parser(path: str) -> bool:
    """Whether :func:`_read_archive_tolerant` reads ``path`` instead of warcio: an ARC file
    (warcio expects a newline after every ARC record; 2008 Internet Archive ARCs have none), a
    WARC/0.x file (ClueWeb09 WARC/0.18, whose Content-Length values can be off), or a gzip file
    that is one stream rather than one member per record (warcio cannot resynchronise in it:
    its error offsets are negative). Reads at most the first gzip member's first 2 MiB."""
    with _fs.open_input(path) as fh:
        head = fh.read(2)
        fh.seek(0)
        if head != b"\x1f\x8b":
            first = fh.read(16)
            return not first.startswith(b"WARC/1.") and not first.startswith(b"WARC/2.")
        d = zlib.decompressobj(31)
        out = b""
        try:
            while not d.eof and len(out) < (2 << 20):
                buf = fh.read(1 << 16)
                if not buf:
                    break
                out += d.decompress(buf, (2 << 20) - len(out))
        except zlib.error:
            return False  # corrupt first member: the warcio path reports truncated_gzip
        if not (out.startswith(b"WARC/1.") or out.startswith(b"WARC/2.")):
            return True
        if not d.eof:
            return True  # > 2 MiB in the first member: one stream, not one member per record
        return _WARC_START.search(out, 1) is not None  # several records in the first member


class _Buffer:
    """Forward-only reader over a binary stream with an absolute offset and a look-ahead buffer
    (for :func:`_read_archive_tolerant`)."""

    def __init__(self, fh):
        self.fh, self.buf, self.base, self.eof = fh, b"", 0, False

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available from the current position; False when the stream ends
        first."""
        while len(self.buf) < n and not self.eof:
            chunk = self.fh.read(max(1 << 16, n - len(self.buf)))
            if not chunk:
                self.eof = True
            self.buf += chunk
        return len(self.buf) >= n

    def skip(self, n: int) -> None:
        """Move the current position ``n`` bytes on (the buffer holds at most 64 KiB beyond
        what was asked for, so this copy stays small)."""
        self.buf = self.buf[n:]
        self.base += n

    def find(self, pattern: re.Pattern, start: int = 0, limit: int | None = None):
        """First match of ``pattern`` at or after relative ``start`` (within ``limit`` bytes
        when given), reading ahead as needed; None if there is none."""
        pos = start
        while True:
            end = len(self.buf) if limit is None else min(len(self.buf), start + limit)
            m = pattern.search(self.buf, pos, end)
            if m:
                return m
            if self.eof or (limit is not None and len(self.buf) >= start + limit):
                return None
            pos = max(start, len(self.buf) - 256)
            self.fill(len(self.buf) + (1 << 16))


class _Offset:
    """Stands for warcio's iterator in :func:`_warc_record` (only ``offset`` is read)."""

    def __init__(self, offset: int):
        self.offset = offset


def _read_archive_tolerant(f: _File, cfg, skip_schemes: tuple) -> Iterator[dict]:
    """WARC / ARC records read without trusting the archive's framing (issue 14, cause 5).

    Each record is framed by its declared length (WARC ``Content-Length``, the ARC header's
    last field); its real end is where the next record header (``WARC/x.y`` line, ARC header
    line) starts: at the declared end after any blank lines, else the header nearest to it
    (before it, or up to :data:`_LENGTH_SLACK` bytes after it: ClueWeb09 lengths are off),
    unless the bytes in between start like a broken header; else the declared length. Records need no newline between them (2008 IA
    ARCs). A header that does not parse yields ``warc_bad_header`` and reading resumes at the
    next record header. Each record is then handed to warcio alone (its length corrected) and
    becomes a document or quarantine record exactly as in :func:`_read_warc`. Offsets are in
    the decompressed stream (``meta.offset``, ``meta.tolerant_parser: true``)."""
    from warcio.archiveiterator import ArchiveIterator

    with _open_binary(f.path) as fh:
        b = _Buffer(fh)
        filedesc = None
        try:
            while True:
                # blank lines between records
                while b.fill(1) and b.buf[:1] in (b"\r", b"\n"):
                    n = len(b.buf) - len(b.buf.lstrip(b"\r\n"))
                    b.skip(n)
                if not b.fill(1):
                    return
                off = b.base
                b.fill(64 * 1024)
                nl = b.buf.find(b"\n")
                line = b.buf[:nl + 1] if nl >= 0 else b.buf
                is_warc = line.startswith(b"WARC/")
                arc = None if is_warc else _ARC_HEADER.match(line)
                hdr_len = declared = None
                if is_warc:
                    end = b.find(re.compile(rb"\r?\n\r?\n"), 0, 1 << 20)
                    if end is not None:
                        hdr_len = end.end()
                        m = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", b.buf[:hdr_len])
                        declared = int(m.group(1)) if m else None
                elif arc is not None:
                    hdr_len, declared = len(line), int(arc.group(5))
                if hdr_len is None or declared is None:
                    err = ("no blank line after the WARC header" if is_warc and hdr_len is None else
                           "no Content-Length in the WARC header" if is_warc else
                           f"not a WARC or ARC record header: {line[:80]!r}")
                    yield f.bad(f"offset:{off}", "warc_bad_header", {"offset": off, "error": err,
                                                                      "tolerant_parser": True},
                                text=_bytes_snippet(line), meta={"offset": off})
                    nxt = _next_header(b, 1)
                    if nxt is None:
                        return
                    b.skip(nxt)
                    continue
                # the record's real end: the next header at the declared end, or near it
                want = hdr_len + declared
                real = want if _header_at(b, want) else None
                if real is None:
                    b.fill(want + _LENGTH_SLACK + 256)  # only for a record whose length is off
                    cands = _header_positions(b, hdr_len, want + _LENGTH_SLACK)
                    real = min(cands, key=lambda p: abs(p - want)) if cands else None
                    if real is not None and real > want and _HEADERISH.search(b.buf[want:real]):
                        real = None  # the gap holds a broken header: not this record's bytes
                    if real is None:
                        real = min(want, len(b.buf))
                body = b.buf[hdr_len:real]
                if is_warc:
                    body = body[:declared] if real == want else body.rstrip(b"\r\n")
                    head = re.sub(rb"(?im)^(content-length:[ \t]*)\d+", lambda m: m.group(1) + str(len(body)).encode(),
                                  b.buf[:hdr_len], count=1)
                    one = head + body + b"\r\n\r\n"
                else:
                    body = body if real != want else body[:declared]
                    head = b" ".join(arc.groups()[:4]) + b" " + str(len(body)).encode() + b"\n"
                    if filedesc is None:
                        filedesc = head + body if head.startswith(b"filedesc:") else b""
                    one = (filedesc + b"\n" if filedesc and not head.startswith(b"filedesc:") else b"") + head + body + b"\n"
                length_note = None if real == want else {"declared_length": declared, "actual_length": len(body)}
                b.skip(real)
                outs = []
                try:
                    # warcio streams each record's payload: use it before the iterator moves on
                    for k, rec in enumerate(ArchiveIterator(io.BytesIO(one), arc2warc=True)):
                        if k == 0 and not is_warc and filedesc and not head.startswith(b"filedesc:"):
                            continue  # the file's filedesc record, repeated for warcio's ARC parser
                        try:
                            outs.append(_warc_record(f, rec, _Offset(off), cfg, skip_schemes))
                        except (_BadRecord, ValueError, KeyError, IndexError) as e:
                            outs.append(f.bad(f"offset:{off}", "warc_bad_header",
                                              {"offset": off, "error": f"{type(e).__name__}: {e}",
                                               "tolerant_parser": True}, meta={"offset": off}))
                except Exception as e:
                    outs.append(f.bad(f"offset:{off}", "warc_bad_header",
                                      {"offset": off, "error": f"{type(e).__name__}: {e}", "tolerant_parser": True},
                                      text=_bytes_snippet(one[:2048]), meta={"offset": off}))
                for out in outs:
                    if out is not None:
                        if "reason" not in out:
                            meta = json.loads(out["meta"]) if isinstance(out["meta"], str) else out["meta"]
                            meta["tolerant_parser"] = True
                            if length_note:
                                meta["length_fixed"] = length_note
                            out["meta"] = json.dumps(meta, ensure_ascii=False, sort_keys=True) \
                                if isinstance(out["meta"], str) else meta
                        yield out
        except _GZIP_ERRORS as e:
            yield f.bad(f"truncated@{b.base}", "truncated_gzip",
                        {"offset": b.base, "error": f"{type(e).__name__}: {e}", "tolerant_parser": True,
                         "note": "the stream ends inside a record: the rest of the file is not read"},
                        meta={"offset": b.base})


def _header_at(b: _Buffer, pos: int) -> bool:
    """A record header (after optional blank lines) starts at relative ``pos``, or the stream
    ends there."""
    b.fill(pos + 512)
    rest = b.buf[pos:pos + 512].lstrip(b"\r\n")
    if not rest and b.eof and len(b.buf) <= pos + 512:
        return True
    return rest.startswith(b"WARC/") or _ARC_HEADER.match(rest) is not None


def _header_positions(b: _Buffer, lo: int, hi: int) -> list[int]:
    """Relative positions in ``[lo, hi]`` where a record header starts (a ``WARC/x.y`` line
    start, or an ARC header line anywhere: 2008 ARCs put no newline before it); the stream end
    counts when it falls inside."""
    seg = b.buf[lo:hi + 64]
    out = [lo + m.start(1) for m in _WARC_START.finditer(seg)]
    out += [lo + m.start() for m in _ARC_HEADER_ANYWHERE.finditer(seg)]
    if b.eof and lo <= len(b.buf) <= hi:
        out.append(len(b.buf))
    return [p for p in out if lo <= p <= hi]


def _next_header(b: _Buffer, start: int) -> int | None:
    """Relative position of the next record header at or after ``start``, or None."""
    m1 = b.find(_WARC_START, start)
    m2 = b.find(_ARC_HEADER_ANYWHERE, start)
    pos = [m1.start(1) if m1 else None, m2.start() if m2 else None]
    pos = [p for p in pos if p is not None]
    return min(pos) if pos else None


def gzip_first_bad_member(path: str, chunk: int = 1 << 20) -> tuple[int, str] | None:
    """Check a (multi-member) gzip file without keeping its output.

    Returns:
        None if every member decompresses to its end, else ``(offset, error)``: the compressed
        byte offset where the first truncated or corrupt member starts, and what went wrong.
    """
    with _fs.open_input(path) as fh:
        d = zlib.decompressobj(31)
        consumed = member_start = 0
        fed = False
        while True:
            buf = fh.read(chunk)
            if not buf:
                return (member_start, "EOFError: file ends inside a gzip member") if fed else None
            while buf:
                try:
                    d.decompress(buf, 1 << 22)
                except zlib.error as e:
                    return member_start, f"zlib.error: {e}"
                if d.eof:
                    consumed += len(buf) - len(d.unused_data)
                    buf = d.unused_data
                    member_start = consumed
                    d = zlib.decompressobj(31)
                    fed = False
                else:
                    tail = d.unconsumed_tail
                    consumed += len(buf) - len(tail)
                    buf = tail
                    fed = True


class _BadRecord(Exception):
    """Internal: a WARC record whose header warcio accepted but is not usable."""


def _check_header(rec) -> None:
    """Raise :class:`_BadRecord` for a WARC header warcio parses leniently but that cannot be
    trusted: no ``WARC-Type``, a non-numeric ``Content-Length``, or an ``application/http``
    response without parsable HTTP headers (its payload would be read as the next record)."""
    if getattr(rec, "format", "warc") != "warc":
        return  # ARC records: warcio synthesises the WARC header
    h = rec.rec_headers
    if not h.get_header("WARC-Type"):
        raise _BadRecord("no WARC-Type header")
    cl = h.get_header("Content-Length")
    if cl is None or not cl.strip().isdigit():
        raise _BadRecord(f"Content-Length is {cl!r}")
    ct = (h.get_header("Content-Type") or "").lower()
    if rec.rec_type == "response" and ct.startswith("application/http") and rec.http_headers is None \
            and int(cl.strip()) > 0:
        raise _BadRecord("response without HTTP headers")


def _resync(raw, pos: int, gz: bool) -> int | None:
    """Offset of the next record start at or after ``pos`` (gzip magic, or ``WARC/``/ARC line
    start for uncompressed files), or None."""
    pat = re.compile(rb"\x1f\x8b\x08" if gz else rb"(?:^|\n)(WARC/\d|\S+ \d+\.\d+\.\d+\.\d+ \d{14} )")
    carry = b""
    raw.seek(pos)
    base = pos
    while True:
        block = raw.read(1 << 20)
        if not block:
            return None
        buf = carry + block
        m = pat.search(buf)
        if m:
            s = m.start(1) if not gz else m.start()
            return base - len(carry) + s
        carry = buf[-64:]
        base += len(block)


def _warc_record(f: _File, rec, it, cfg, skip_schemes: tuple) -> dict | None:
    """One warcio record -> document / quarantine record / None (not a document)."""
    _check_header(rec)
    rtype = rec.rec_type
    if rtype in _NON_DOC_TYPES:
        return None
    h = rec.rec_headers
    url = (h.get_header("WARC-Target-URI") or "").strip().strip("<>") or None
    if rtype == "resource" and url and url.split(":", 1)[0].lower() in skip_schemes:
        return None
    rid = h.get_header("WARC-Record-ID") or ""
    off = it.offset
    key = rid or f"offset:{off}"
    meta: dict = {"offset": off, "warc": {k: h.get_header(k) for k in _WARC_HEADERS_KEPT if h.get_header(k)}}
    http = rec.http_headers
    ctype = None
    if http is not None and rtype == "response":
        try:
            meta["http_status"] = int(http.get_statuscode() or 0)
        except ValueError:
            meta["http_status"] = None
        ctype = http.get_header("Content-Type")
    else:
        ctype = h.get_header("Content-Type")
    meta["content_type"] = ctype
    length = rec.length or 0
    if length > f.max_doc_bytes:
        return f.bad(key, "doc_too_large", {"bytes": length, "max_doc_bytes": f.max_doc_bytes}, url=url, meta=meta)
    try:
        data = rec.content_stream().read(f.max_doc_bytes + 1)
    except _GZIP_ERRORS:
        raise
    except Exception as e:  # e.g. broken chunked / content encoding of the HTTP payload
        return f.bad(key, "warc_bad_header", {"error": f"payload: {type(e).__name__}: {e}"}, url=url, meta=meta)
    if len(data) > f.max_doc_bytes:
        return f.bad(key, "doc_too_large", {"bytes_at_least": len(data), "max_doc_bytes": f.max_doc_bytes},
                     text=_bytes_snippet(data), url=url, meta=meta)
    mime = (ctype or "").split(";")[0].strip().lower()
    if rtype == "conversion" or mime == "text/plain":
        cr = control_byte_ratio(data[:65536])
        if cr > f.max_garbage:
            return f.bad(key, "binary_garbage", {"control_byte_ratio": round(cr, 4)}, text=_bytes_snippet(data),
                         url=url, meta=meta)
        charset = _charset_of(ctype) or "utf-8"
        try:
            text = data.decode(charset)
        except (UnicodeDecodeError, LookupError) as e:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return f.bad(key, "invalid_utf8", {"charset": charset, "error": str(e)}, text=_bytes_snippet(data),
                             url=url, meta=meta)
        return f.doc(key, text.strip(), url=url, meta=meta)
    sniff = data[:1024].lstrip().lower()
    if mime in _HTML_TYPES or (not mime and (sniff.startswith(b"<!doctype html") or sniff.startswith(b"<html"))):
        return _html_record(f, key, data, _charset_of(ctype), url, meta, cfg)
    return f.bad(key, "unsupported_content_type", {"content_type": ctype}, text="", url=url, meta=meta)


def _charset_of(ctype: str | None) -> str | None:
    """``charset=`` of a Content-Type header value (see :func:`pipeline.extract.charset_from_content_type`)."""
    from pipeline.extract import charset_from_content_type

    return charset_from_content_type(ctype)


_WARC_VERSION_LINE = re.compile(r"^WARC/1\.\d\s*$")


def _read_wet_lenient(f: _File) -> Iterator[dict]:
    """cc_net-style WET parser: records start at a ``WARC/1.x`` line, the header ends at the
    first blank line, the body runs to the next ``WARC/1.x`` line (Content-Length ignored).
    Only ``conversion`` records are documents."""
    cur: dict | None = None

    def finish(r: dict):
        hdr = r["headers"]
        key = hdr.get("WARC-Record-ID") or f"L{r['line']}"
        if "WARC-Type" not in hdr or r["bad_header"]:
            return f.bad(key, "warc_bad_header", {"line": r["line"], "error": "header without WARC-Type or "
                                                  "with lines that are not 'Name: value'"},
                         text="\n".join(r["body"]), meta={"line": r["line"]})
        if hdr["WARC-Type"] != "conversion":
            return None
        meta = {"line": r["line"], "warc": {k: hdr[k] for k in _WARC_HEADERS_KEPT if k in hdr},
                "content_type": hdr.get("Content-Type")}
        url = hdr.get("WARC-Target-URI")
        return f.doc(key, "\n".join(r["body"]).strip(), url=url, meta=meta)

    for item in f.lines():
        if isinstance(item, dict):
            if cur is not None and _is_truncation(item):
                out = finish(cur)
                cur = None
                if out is not None:
                    out["meta"]["incomplete"] = True
                    yield out
            yield item
            continue
        lineno, line = item
        if _WARC_VERSION_LINE.match(line):
            if cur is not None:
                out = finish(cur)
                if out is not None:
                    yield out
            cur = {"line": lineno, "headers": {}, "body": [], "in_header": True, "bad_header": False}
            continue
        if cur is None:
            continue  # bytes before the first record: not part of any record
        if cur["in_header"]:
            if not line.strip():
                cur["in_header"] = False
            elif ":" in line:
                k, v = line.split(":", 1)
                cur["headers"][k.strip()] = v.strip()
            else:
                cur["bad_header"] = True
        else:
            cur["body"].append(line)
    if cur is not None:
        out = finish(cur)
        if out is not None:
            yield out


def _read_parquet(f: _File) -> Iterator[dict]:
    """Parquet files (pyarrow, read in batches of ``batch_rows`` rows, default 1024): one
    document per row. Columns by name, as for ``jsonl``: text under ``text_field`` (default
    ``text``, then ``raw_content``), id under ``id_field`` (``id``), URL under ``url_field``
    (``url``), declared language under ``lang_field`` (none by default); a source's
    ``fields: {text: content, id: doc_id, url: link, lang: language}`` sets them. Other columns
    go to ``meta.fields`` (values over 2 KiB serialised are dropped). A row whose text is null or
    not a string is quarantined as ``missing_field``; a file that is not parquet as
    ``unreadable_file``."""
    import pyarrow.parquet as pq

    text_fields = f.opts.get("text_field", ["text", "raw_content"])
    text_fields = text_fields if isinstance(text_fields, list) else [text_fields]
    id_field = f.opts.get("id_field", "id")
    url_field = f.opts.get("url_field", "url")
    lang_field = f.opts.get("lang_field")
    try:
        pf = pq.ParquetFile(f.path)
    except Exception as e:  # noqa: BLE001 - not parquet / corrupt footer: the whole file
        yield f.bad("file", "unreadable_file", {"error": f"{type(e).__name__}: {e}", "note": "not a parquet file"})
        return
    names = pf.schema_arrow.names
    text_col = next((c for c in text_fields if c in names), None)
    row = 0
    for batch in pf.iter_batches(batch_size=int(f.opts.get("batch_rows", 1024))):
        cols = batch.to_pydict()
        for i in range(batch.num_rows):
            row += 1
            obj = {n: cols[n][i] for n in names}
            rid = obj.get(id_field)
            key = f"id:{rid}" if rid is not None else f"R{row}"
            url = obj.get(url_field)
            url = url if isinstance(url, str) else None
            lang = obj.get(lang_field) if lang_field else None
            lang = to_iso639_1(lang) if isinstance(lang, str) else None
            fields = {}
            for k, v in obj.items():
                if k == text_col:
                    continue
                try:
                    if len(json.dumps(_clean(v), ensure_ascii=False, default=str)) <= 2048:
                        fields[k] = v
                except (TypeError, ValueError):
                    pass
            meta = {"row": row, "source_id": None if rid is None else str(rid), "fields": fields}
            text = obj.get(text_col) if text_col else None
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield f.bad(key, "invalid_utf8", {"row": row, "position": e.start, "error": e.reason},
                                text=_bytes_snippet(text), url=url, meta=meta, lang=lang)
                    continue
            if not isinstance(text, str):
                why = (f"no column among {text_fields} (columns: {names[:50]})" if text_col is None
                       else f"column {text_col!r} is {'null' if text is None else type(text).__name__}")
                yield f.bad(key, "missing_field", {"row": row, "error": why}, url=url, meta=meta, lang=lang,
                            text=json.dumps(_clean(fields), ensure_ascii=False, default=str))
                continue
            yield f.doc(key, text, url=url, meta=meta, lang=lang)


FORMATS = {
    "warc": _read_warc,
    "parquet": _read_parquet,
    "wet": _read_warc,
    "html": _read_html,
    "jsonl": _read_jsonl,
    "ntrex": _read_ntrex,
    "ntrex_parallel": _read_ntrex_parallel,
    "ud": _read_ud,
    "lines": _read_lines,
    "text": _read_text,
    "parallel_tsv": _read_parallel_tsv,
}


def read_source_file(path: str, source: dict, data_root: str) -> Iterator[dict]:
    """Stream the records of one file of a source (see the module docstring for the record
    layout and formats).

    Args:
        path: the file (as returned by :func:`list_source_files`).
        source: the source entry (``name``, ``format``, ``tier``, ``lang``/``lang_from``,
            ``options``, ``max_doc_bytes``).
        data_root: root the ids and ``meta.path`` are relative to.

    Yields:
        One dict per record: a document, or a quarantine record with ``reason``/``detail``.
        Never raises for bad content: an unreadable file gives one ``unreadable_file`` record,
        an unexpected reader error one ``reader_error`` record standing for the rest of the file.

    Raises:
        ValueError: unknown ``format`` (a configuration error, not bad content).
    """
    if source.get("format") not in FORMATS:
        raise ValueError(f"source {source.get('name')!r}: unknown format {source.get('format')!r}")
    f = _File(path, source, data_root)
    try:
        with _fs.open_input(path):
            pass
    except OSError as e:
        yield f.bad("file", "unreadable_file", {"error": f"{type(e).__name__}: {e}"})
        return
    n = 0
    try:
        for rec in FORMATS[source["format"]](f):
            n += 1
            yield rec
    except _GZIP_ERRORS as e:
        yield f.bad(f"truncated@{n}", "truncated_gzip", {"error": f"{type(e).__name__}: {e}", "records_read": n,
                                                         "note": "the rest of the file could not be read"})
    except Exception as e:  # a reader bug or an unforeseen format problem: account, never crash
        yield f.bad(f"error@{n}", "reader_error", {"error": f"{type(e).__name__}: {e}", "records_read": n,
                                                   "traceback": traceback.format_exc(limit=5)[-2000:]})
