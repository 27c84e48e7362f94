"""Old crawl formats (issue 14, cause 5): 2008 Internet Archive ARC files (no newline between
records) and ClueWeb09 WARC/0.18 files (Content-Length off by a few bytes), plain, gzip per
record and one gzip stream. Every record is read or quarantined with a reason; warcio alone read
none of the ARC records and turned the single-stream files into one ``reader_error``."""
from __future__ import annotations

import collections
import gzip

import pytest

from pipeline.readers import list_source_files, read_source_file


def _page(i: int) -> bytes:
    return (f"<html><head><title>Page {i}</title></head><body><p>This is the text of page number {i}. "
            f"It has a paragraph of plain English prose long enough for an extractor to keep it as the "
            f"body of the page.</p><p>A second paragraph adds more words about page {i}.</p></body></html>").encode()


def _http(i: int) -> bytes:
    body = _page(i)
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def arc_records(n: int) -> list[bytes]:
    """ARC v1 records (filedesc first), each ``URL IP DATE MIME LENGTH\\n`` + LENGTH bytes."""
    desc = b"1 0 InternetArchive\nURL IP-address Archive-date Content-type Archive-length\n"
    recs = [b"filedesc://IA-2008.arc 0.0.0.0 20080101000000 text/plain %d\n" % len(desc) + desc]
    for i in range(n):
        body = _http(i)
        recs.append(b"http://old.example/%d 192.0.2.%d 2008010112%04d text/html %d\n" % (i, i + 1, i, len(body)) + body)
    return recs


def clueweb_record(i: int, delta: int) -> bytes:
    """A ClueWeb09-style WARC/0.18 response whose Content-Length is off by ``delta`` bytes."""
    body = _http(i)
    head = (f"WARC/0.18\r\nWARC-Type: response\r\nWARC-Target-URI: http://clue.example/{i}\r\n"
            f"WARC-Date: 2009-03-65T08:43:19-0800\r\nWARC-Record-ID: <urn:uuid:0000-{i}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nWARC-TREC-ID: clueweb09-en0000-00-{i:05d}\r\n"
            f"Content-Length: {len(body) + delta}\r\n\r\n").encode()
    return head + body + b"\r\n\r\n"


CLUE_INFO = (b"WARC/0.18\r\nWARC-Type: warcinfo\r\nWARC-Date: 2009-03-65T08:43:19-0800\r\n"
             b"WARC-Record-ID: <urn:uuid:info>\r\nContent-Type: application/warc-fields\r\nContent-Length: 0\r\n\r\n\r\n\r\n")
DELTAS = [0, -3, 0, 5, 0, -1, 0, 2]


@pytest.fixture(scope="module")
def old_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("old")
    arcs = arc_records(6)
    (d / "ia2008.arc").write_bytes(b"".join(arcs))                                    # no newline between records
    (d / "ia2008.arc.gz").write_bytes(b"".join(gzip.compress(r) for r in arcs))       # one gzip member per record
    (d / "ia2008-stream.arc.gz").write_bytes(gzip.compress(b"".join(arcs)))           # one gzip stream
    clue = CLUE_INFO + b"".join(clueweb_record(i, dl) for i, dl in enumerate(DELTAS))
    (d / "clueweb09.warc").write_bytes(clue)
    (d / "clueweb09.warc.gz").write_bytes(gzip.compress(CLUE_INFO) + b"".join(
        gzip.compress(clueweb_record(i, dl)) for i, dl in enumerate(DELTAS)))
    (d / "clueweb09-stream.warc.gz").write_bytes(gzip.compress(clue))
    # a broken header in the middle: quarantined, and the records after it are read
    broken = arcs[:3] + [arcs[3].replace(b" 192.0.2.3 ", b" not-an-ip ", 1)] + arcs[4:]
    (d / "broken.arc").write_bytes(b"".join(broken))
    return d


def _read(d, name: str) -> list[dict]:
    src = {"name": "old", "format": "warc", "glob": name, "tier": "web"}
    return [r for p in list_source_files(src, str(d)) for r in read_source_file(p, src, str(d))]


@pytest.mark.parametrize("name", ["ia2008.arc", "ia2008.arc.gz", "ia2008-stream.arc.gz"])
def test_2008_arc_every_record_read(old_files, name):
    recs = _read(old_files, name)
    assert collections.Counter(r.get("reason") for r in recs) == {None: 6}, [(r.get("reason"), r.get("detail")) for r in recs]
    assert [r["url"] for r in recs] == [f"http://old.example/{i}" for i in range(6)]
    assert all(r["text"].endswith(f"about page {i}.") for i, r in enumerate(recs))


@pytest.mark.parametrize("name", ["clueweb09.warc", "clueweb09.warc.gz", "clueweb09-stream.warc.gz"])
def test_clueweb09_lengths_off_every_record_read(old_files, name):
    recs = _read(old_files, name)
    assert collections.Counter(r.get("reason") for r in recs) == {None: len(DELTAS)}, \
        [(r.get("reason"), r.get("detail")) for r in recs]
    assert [r["url"] for r in recs] == [f"http://clue.example/{i}" for i in range(len(DELTAS))]
    assert all(r["text"].endswith(f"about page {i}.") for i, r in enumerate(recs))


def test_broken_header_quarantined_and_reading_resumes(old_files):
    recs = _read(old_files, "broken.arc")
    reasons = collections.Counter(r.get("reason") for r in recs)
    assert reasons == {None: 5, "warc_bad_header": 1}, [(r.get("reason"), r.get("detail")) for r in recs]
    assert [r["url"] for r in recs if not r.get("reason")] == [f"http://old.example/{i}" for i in (0, 1, 3, 4, 5)]
    bad = next(r for r in recs if r.get("reason"))
    assert "not a WARC or ARC record header" in bad["detail"]
