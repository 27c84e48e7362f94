"""Bad input seen on unseen data (issue 14, cause 7), one test each; every one fails on the code
before the fix: a BOM in the middle of a JSONL file, a Japanese document over 2.5 MB (MeCab
segfault), ``LangID.predict`` on a bare string, zero-width characters with no cap, HTML nested
10k levels deep, an LID model with GlotLID-style labels."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from pipeline.readers import list_source_files, read_source_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(tmp_path, source: dict) -> list[dict]:
    return [r for p in list_source_files(source, str(tmp_path)) for r in read_source_file(p, source, str(tmp_path))]


def test_bom_in_the_middle_of_jsonl_is_not_a_bad_record(tmp_path):
    bom = b"\xef\xbb\xbf"
    lines = [bom + json.dumps({"id": "a", "text": "First file, first record."}).encode(),
             json.dumps({"id": "b", "text": "First file, second record."}).encode(),
             bom + json.dumps({"id": "c", "text": "Second file (cat a.jsonl b.jsonl), first record."}).encode()]
    (tmp_path / "cat.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    recs = _read(tmp_path, {"name": "j", "format": "jsonl", "glob": "cat.jsonl", "tier": "web"})
    assert [r.get("reason") for r in recs] == [None, None, None], recs
    assert [r["text"][:6] for r in recs] == ["First ", "First ", "Second"]


def test_huge_japanese_document_is_segmented_in_bounded_pieces(tmp_path):
    """fugashi/MeCab segfaults (the whole process dies) on ~2.5 MB of Japanese in one call."""
    code = ("from filters.words import words\n"
            "t = '吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\\n' * 40000\n"
            "assert len(t.encode()) > 3_000_000\n"
            "w = words(t, 'ja')\n"
            "one = words('吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。', 'ja')\n"
            "assert w == one * 40000, (len(w), len(one))\n"
            "u = words(t.replace('\\n', ''), 'ja')\n"      # no line end at all: cut at sentence ends
            "assert u == w, (len(u), len(w))\n"
            "print('ok', len(w))\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("ok"), (p.returncode, p.stderr[-2000:])


def test_bounded_pieces():
    from filters.words import bounded_pieces

    text = ("word " * 30 + "\n") * 50 + "x" * 700
    pieces = bounded_pieces(text, 200)
    assert "".join(pieces) == text and all(len(p) <= 200 for p in pieces)
    assert all(p.endswith("\n") for p in pieces[:-4])            # cut at line ends where there are some
    assert bounded_pieces("short", 200) == ["short"]
    with pytest.raises(ValueError):
        bounded_pieces("abc", 1)


def test_langid_predict_rejects_a_bare_string():
    from filters.langid import LangID

    lid = LangID()
    with pytest.raises(TypeError, match=r"pass \[text\]"):
        lid.predict("This is one English sentence.")
    langs, scores = lid.predict(["This is one English sentence."])
    assert langs == ["en"] and scores.shape == (1,)


def test_zero_width_characters_are_capped():
    from filters.rules import apply_rules, load_filter_config

    params = load_filter_config(os.path.join(REPO, "configs", "filters.yaml")).params("en")
    text = ("The committee met on Tuesday to discuss the new budget for the public library, and "
            "after a long debate the members agreed to extend the opening hours on weekends. "
            "Several residents spoke in favour of the plan, noting that students need a quiet "
            "place to work in the evening. The decision will be reviewed next spring.")
    assert apply_rules(text, "en", params).reason is None
    zwj_after_spaces = text.replace(" ", " \u200d")
    r = apply_rules(zwj_after_spaces, "en", params)
    assert r.reason == "invisible_char_ratio", (r.reason, r.metrics.get("invisible_ratio"))
    between_letters = "\u200b".join(text)                        # one between every two characters
    assert apply_rules(between_letters, "en", params).reason == "invisible_char_ratio"
    # legitimate uses stay exempt: emoji ZWJ sequences, ZWSP word breaks inside Thai text
    emoji = text + " Family: 👨\u200d👩\u200d👧."
    assert apply_rules(emoji, "en", params).reason is None
    th = ("ภาษาไทย\u200bเป็น\u200bภาษา\u200bที่\u200bมี\u200bระดับ\u200bเสียง\u200bของ\u200bคำ\u200bแน่นอน "
          "หรือ\u200bวรรณยุกต์\u200bเช่นเดียวกับ\u200bภาษาจีน และ\u200bออกเสียง\u200bแยก\u200bคำ\u200bต่อ\u200bคำ")
    from filters.rules import _char_counts

    assert _char_counts(th)[1] == 0


def test_html_nested_too_deep_is_extraction_failed_not_empty(tmp_path):
    para = "<p>" + "A real paragraph of text that a reader of this page came here to read. " * 4 + "</p>"
    deep = "<html><body>" + "<div>" * 10000 + para + "</div>" * 10000 + "</body></html>"
    shallow = "<html><body>" + "<div>" * 20 + para + "</div>" * 20 + "</body></html>"
    empty = "<html><body><div>   </div></body></html>"
    (tmp_path / "deep.html").write_text(deep)
    (tmp_path / "shallow.html").write_text(shallow)
    (tmp_path / "empty.html").write_text(empty)
    recs = _read(tmp_path, {"name": "h", "format": "html", "glob": "*.html", "tier": "web", "lang": "en"})
    got = [(r["id"], r.get("reason")) for r in recs]
    reasons = collections.Counter(r.get("reason") for r in recs)
    assert reasons == {None: 1, "extraction_failed": 1, "empty_text": 1}, got
    bad = next(r for r in recs if r.get("reason") == "extraction_failed")
    assert "nested" in bad["detail"] and "10" in bad["detail"]


def test_glotlid_style_labels_map_to_iso639_1(tmp_path, shared_data):
    """A user LID model labelled like GlotLID (``__label__eng_Latn``): its predictions come out
    as ISO 639-1 codes, not as labels that are never a target language."""
    from filters.langid import LangID, to_iso

    nt = shared_data / "ntrex-128"
    en = (nt / "newstest2019-src.eng.txt").read_text(encoding="utf-8").lower().splitlines()[:300]
    de = (nt / "newstest2019-ref.deu.txt").read_text(encoding="utf-8").lower().splitlines()[:300]
    train = tmp_path / "train.txt"
    train.write_text("".join(f"__label__eng_Latn {s}\n" for s in en)
                     + "".join(f"__label__deu_Latn {s}\n" for s in de), encoding="utf-8")
    path = str(tmp_path / "glot.bin")
    # in a fresh process: fastText 0.9.3 can report "Encountered NaN" in a process that ran
    # other native code first (see jobs/train_quality_models.py _train_fasttext_isolated)
    code = ("import fasttext, sys; fasttext.train_supervised(sys.argv[1], verbose=0, thread=1, seed=1)"
            ".save_model(sys.argv[2])")
    p = subprocess.run([sys.executable, "-c", code, str(train), path], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    langs, _ = LangID(path).predict(["the cat reads a good book", "die katze liest ein gutes buch"])
    assert langs == ["en", "de"]
    assert to_iso("__label__zho_Hans") == "zh" and to_iso("__label__iw") == "he"
    assert to_iso("__label__xyz_Latn") == "xyz_Latn"          # unknown: passes through (not a target)


def test_filter_constructors_reject_a_string_for_a_list():
    """Issue 14, cause 7: list options given as one string were iterated character by
    character (``tiers: web`` became {w, e, b} and the rules ran on nothing)."""
    from filters.rules import RuleParams, parse_filter_config
    from pipeline.rules import RulesBatch

    with pytest.raises(TypeError, match=r"single string 'the'.*\['the'\]"):
        RuleParams(stopwords="the")
    with pytest.raises(TypeError, match="boilerplate_patterns"):
        RuleParams(boilerplate_patterns="javascript")
    # in the YAML config one string is a list of one item (pipeline/config.py's rule), never its characters
    assert parse_filter_config({"defaults": {"stopwords": "the"}}).defaults.stopwords == ("the",)
    de = parse_filter_config({"languages": {"de": {"extend_boilerplate_patterns": "cookies"}}}).languages["de"]
    assert de.boilerplate_patterns[-1] == "cookies" and "c" not in de.boilerplate_patterns
    with pytest.raises(TypeError, match=r"rules.tiers.*\['web'\]"):
        RulesBatch("configs/filters.yaml", "web")
    assert RulesBatch("configs/filters.yaml", ["web"]).tiers == {"web"}
    assert RuleParams(stopwords=["the", "and"]).stopwords == ("the", "and")
