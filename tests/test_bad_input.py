"""Bad input at the reader level: every record of a file set full of broken input is accounted
for, as a document or as a quarantine record with the right reason, and nothing raises.

:func:`build_bad_inputs` is reusable (the end-to-end ingest test feeds the same files through
the Spark stage): it writes the files and returns the source entries plus the expected counts.
"""
from __future__ import annotations

import collections
import gzip
import io
import json
import os
import random

import pytest

from pipeline.readers import REASONS, SNIPPET_BYTES, list_source_files, read_source_file

BIG = 20 * 1024 * 1024  # "a single 20 MB document"


def _warc_member(url: str, body: bytes, ctype: str = "text/html; charset=utf-8") -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=False)
    http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
    w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return buf.getvalue()


def _page(i: int) -> bytes:
    return (f"<html><head><title>Page {i}</title></head><body><nav>Home | About | Contact</nav>"
            f"<article><h1>Article {i}</h1><p>This is document number {i}. It has a paragraph of plain "
            f"English prose that is long enough for a main-content extractor to keep it as the body of "
            f"the page, with several sentences about nothing in particular.</p><p>A second paragraph "
            f"adds more words so that the article clearly dominates the page boilerplate.</p></article>"
            f"</body></html>").encode()


def build_bad_inputs(root: str, seed: int = 0) -> tuple[list[dict], dict]:
    """Write the bad-input file set under ``root/bad/`` and return ``(sources, expected)``.

    ``expected`` maps source name -> {"ok": n_documents, "<reason>": n_quarantined, ...}.
    Covers: malformed JSON line, invalid UTF-8, a truncated gzip member, empty and
    whitespace-only text, binary garbage (a JSON text of control characters, a raw binary
    line, a binary file), a single 20 MB document (JSONL line, text file and line file), a WARC
    record with a broken header (gzip and plain WARC), missing fields.
    """
    rng = random.Random(seed)
    d = os.path.join(root, "bad")
    os.makedirs(d, exist_ok=True)
    garbage = bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(4000))

    # 1. JSONL with one bad record of each kind between good ones
    lines = [
        json.dumps({"id": "good-1", "text": "A perfectly good first document.", "url": "http://a.example/1"}).encode(),
        b'{"id": "bad-json", "text": "unterminated string}',
        b'{"id": "bad-utf8", "text": "caf\xe9 cr\xe8me \xff\xfe"}',
        json.dumps({"id": "empty", "text": ""}).encode(),
        json.dumps({"id": "blank", "text": "   \n\t  \n"}).encode(),
        json.dumps({"id": "ctrl", "text": "".join(chr(rng.randrange(1, 9)) for _ in range(500))}).encode(),
        garbage,
        json.dumps({"id": "huge", "text": "word " * (BIG // 5)}).encode(),
        json.dumps({"id": "no-text", "title": "no text field here"}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        b'{"id": "lone-surrogate", "text": "half a pair \\ud800 here"}',
        json.dumps({"id": "good-2", "text": "A perfectly good second document."}).encode(),
    ]
    with open(os.path.join(d, "records.jsonl"), "wb") as f:
        f.write(b"\n".join(lines) + b"\n")

    # 2. gzip JSONL: member 1 complete (2 records), member 2 (one record of incompressible
    #    text, so no complete line survives the cut) truncated in the middle
    m1 = gzip.compress(b"".join(json.dumps({"id": f"gz-{i}", "text": f"gzip document {i}"}).encode() + b"\n"
                                for i in range(2)))
    words = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(20000))
    m2 = gzip.compress(json.dumps({"id": "gz-late", "text": words}).encode() + b"\n")
    with open(os.path.join(d, "truncated.jsonl.gz"), "wb") as f:
        f.write(m1 + m2[: len(m2) // 2])

    # 3. WARC (gzip per record): good, broken header, good, empty page, image
    members = [_warc_member("http://w.example/0", _page(0)),
               _warc_member("http://w.example/1", _page(1)).replace(b"WARC/1.1", b"WARX/9.9", 1)
               .replace(b"WARC/1.0", b"WARX/9.9", 1),
               _warc_member("http://w.example/2", _page(2)),
               _warc_member("http://w.example/3", b"<html><body>   </body></html>"),
               _warc_member("http://w.example/4", b"\x89PNG\r\n\x1a\n" + garbage, ctype="image/png")]
    with open(os.path.join(d, "broken.warc.gz"), "wb") as f:
        f.write(b"".join(gzip.compress(m) for m in members))
    # 3b. the same as a plain (uncompressed) WARC, with a non-numeric Content-Length instead
    plain = [_warc_member("http://p.example/0", _page(0)),
             _warc_member("http://p.example/1", _page(1)).replace(b"Content-Length: ", b"Content-Length: x", 1),
             _warc_member("http://p.example/2", _page(2))]
    with open(os.path.join(d, "broken_plain.warc"), "wb") as f:
        f.write(b"".join(plain))

    # 4. text: a single 20 MB document
    with open(os.path.join(d, "huge.txt"), "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write((("x" * 99 + "\n") * ((1 << 20) // 100)).encode())
        f.write(b"tail\n")

    # 5. lines: good lines, one invalid UTF-8 line, one 20 MB line, then good lines
    with open(os.path.join(d, "sentences.txt"), "wb") as f:
        for i in range(5):
            f.write(f"Sentence number {i} of the line file.\n".encode())
        f.write(b"Stra\xdfe ohne Kodierung\n")
        f.write(b"y" * BIG + b"\n")
        for i in range(5, 8):
            f.write(f"Sentence number {i} of the line file.\n".encode())

    # 6. a binary file declared as line text
    with open(os.path.join(d, "blob.txt"), "wb") as f:
        f.write(garbage * 4)

    sources = [
        {"name": "bad-jsonl", "format": "jsonl", "glob": "bad/records.jsonl", "tier": "web"},
        {"name": "bad-gzip", "format": "jsonl", "glob": "bad/truncated.jsonl.gz", "tier": "web"},
        {"name": "bad-warc", "format": "warc", "glob": "bad/broken*.warc*", "tier": "web"},
        {"name": "bad-text", "format": "text", "glob": "bad/huge.txt", "tier": "book"},
        {"name": "bad-lines", "format": "lines", "glob": "bad/sentences.txt", "tier": "reference", "lang": "en",
         "options": {"lines_per_doc": 4}},
        {"name": "bad-blob", "format": "lines", "glob": "bad/blob.txt", "tier": "reference"},
    ]
    expected = {
        "bad-jsonl": {"ok": 2, "bad_json": 1, "invalid_utf8": 2, "empty_text": 2, "binary_garbage": 2,
                      "doc_too_large": 1, "missing_field": 2},
        "bad-gzip": {"ok": 2, "truncated_gzip": 1},
        # gzip: 0, 2 ok; 1 bad header; 3 empty page; 4 image. plain: 0, 2 ok; 1 bad header
        "bad-warc": {"ok": 4, "warc_bad_header": 2, "empty_text": 1, "unsupported_content_type": 1},
        "bad-text": {"doc_too_large": 1},
        # 5 good + 3 good lines in groups of 4 -> 2 docs; one invalid line; one huge line
        "bad-lines": {"ok": 2, "invalid_utf8": 1, "doc_too_large": 1},
        "bad-blob": {"binary_garbage": 1},
    }
    return sources, expected


def _read_all(sources: list[dict], root: str) -> dict[str, list[dict]]:
    out = {}
    for s in sources:
        out[s["name"]] = [r for p in list_source_files(s, root) for r in read_source_file(p, s, root)]
    return out


@pytest.fixture(scope="module")
def bad_records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("badinput"))
    sources, expected = build_bad_inputs(root)
    return root, sources, expected, _read_all(sources, root)


def test_every_record_accounted_with_reason(bad_records):
    _, _, expected, recs = bad_records
    for name, exp in expected.items():
        got = collections.Counter(r.get("reason") or "ok" for r in recs[name])
        assert dict(got) == exp, (name, dict(got),
                                  [(r.get("reason"), r.get("detail", "")[:100]) for r in recs[name]])


def test_quarantine_records_are_well_formed(bad_records):
    _, _, _, recs = bad_records
    ids = set()
    for name, rs in recs.items():
        for r in rs:
            assert set(r) >= {"id", "source", "tier", "url", "text", "meta", "lang_declared"}
            assert r["source"] == name and len(r["id"]) == 20
            assert r["id"] not in ids
            ids.add(r["id"])
            json.dumps(r["meta"])
            r["text"].encode("utf-8")  # valid UTF-8 for Arrow/parquet
            if r.get("reason"):
                assert r["reason"] in REASONS
                assert len(r["text"].encode("utf-8")) <= SNIPPET_BYTES
                assert isinstance(json.loads(r["detail"]), dict)
            else:
                assert r["text"].strip()


def test_bad_records_carry_useful_detail(bad_records):
    _, _, _, recs = bad_records
    by = {(r.get("reason"), r["meta"].get("line")): r for r in recs["bad-jsonl"]}
    assert json.loads(by[("doc_too_large", 8)]["detail"])["bytes"] > BIG - 100
    assert json.loads(by[("bad_json", 2)]["detail"])["line"] == 2
    assert "unterminated" in by[("bad_json", 2)]["text"]
    trunc = [r for r in recs["bad-gzip"] if r.get("reason") == "truncated_gzip"][0]
    assert json.loads(trunc["detail"])["lines_read"] == 2
    good = [r for r in recs["bad-warc"] if not r.get("reason")]
    assert sorted(r["url"] for r in good) == ["http://p.example/0", "http://p.example/2",
                                              "http://w.example/0", "http://w.example/2"]
    assert all("document number" in r["text"] and "Home | About" not in r["text"] for r in good)
    lines = [r for r in recs["bad-lines"] if not r.get("reason")]
    assert [r["text"].count("\n") + 1 for r in lines] == [4, 4]  # the bad lines left out, rest grouped


def test_unreadable_file_gives_one_record(tmp_path):
    src = {"name": "gone", "format": "jsonl", "glob": "x", "tier": "web"}
    recs = list(read_source_file(str(tmp_path / "missing.jsonl"), src, str(tmp_path)))
    assert [r["reason"] for r in recs] == ["unreadable_file"]
    recs = list(read_source_file(str(tmp_path), src, str(tmp_path)))  # a directory
    assert [r["reason"] for r in recs] == ["unreadable_file"]


def test_reader_ids_are_stable(bad_records):
    root, sources, _, recs = bad_records
    again = _read_all(sources, root)
    assert {n: [r["id"] for r in rs] for n, rs in recs.items()} == \
           {n: [r["id"] for r in rs] for n, rs in again.items()}


def test_max_doc_bytes_is_configurable(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"text": "x" * 2000}) + "\n" + json.dumps({"text": "short"}) + "\n")
    src = {"name": "s", "format": "jsonl", "glob": "a.jsonl", "tier": "web", "max_doc_bytes": 1000}
    assert [r.get("reason") for r in read_source_file(str(p), src, str(tmp_path))] == ["doc_too_large", None]
    src = {**src, "max_doc_bytes": 10**6, "options": {"max_doc_bytes": 1500}}  # options win
    assert [r.get("reason") for r in read_source_file(str(p), src, str(tmp_path))] == ["doc_too_large", None]


def test_truncated_member_keeps_complete_lines_before_the_cut(tmp_path):
    """Lines that decompress completely before the cut are real records: kept, never partial."""
    recs = [{"id": f"r{i}", "text": f"record {i} " + "filler " * 30} for i in range(200)]
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in recs))
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    src = {"name": "t", "format": "jsonl", "glob": "t.jsonl.gz", "tier": "web"}
    out = list(read_source_file(str(tmp_path / "t.jsonl.gz"), src, str(tmp_path)))
    ok = [r for r in out if not r.get("reason")]
    assert [r.get("reason") for r in out[len(ok):]] == ["truncated_gzip"]
    assert [r["text"] for r in ok] == [r["text"] for r in recs[: len(ok)]]
    assert json.loads(out[-1]["detail"])["lines_read"] == len(ok)


def test_extraction_failure_is_quarantined(tmp_path, monkeypatch):
    import pipeline.extract as ex

    def boom(*a, **k):
        raise RuntimeError("extractor crashed")

    (tmp_path / "p.html").write_bytes(_page(7))
    monkeypatch.setattr(ex, "extract_main_text", boom)
    src = {"name": "h", "format": "html", "glob": "p.html", "tier": "web"}
    recs = list(read_source_file(str(tmp_path / "p.html"), src, str(tmp_path)))
    assert [r["reason"] for r in recs] == ["extraction_failed"]
    assert "extractor crashed" in recs[0]["detail"] and "document number 7" in recs[0]["text"]


def test_unexpected_reader_error_is_accounted(tmp_path, monkeypatch):
    """A reader bug mid-file never escapes: the records read so far stay, one reader_error
    record stands for the rest."""
    import pipeline.readers as rd

    def flaky(f):
        yield f.doc("a", "first document")
        raise KeyError("bug")

    monkeypatch.setitem(rd.FORMATS, "lines", flaky)
    (tmp_path / "x.txt").write_text("x\n")
    src = {"name": "x", "format": "lines", "glob": "x.txt", "tier": "web"}
    recs = list(read_source_file(str(tmp_path / "x.txt"), src, str(tmp_path)))
    assert [r.get("reason") for r in recs] == [None, "reader_error"]
    assert json.loads(recs[1]["detail"])["records_read"] == 1
