"""filters.words: real segmentation for zh/ja/th, Unicode word splitting elsewhere."""
from __future__ import annotations

import pytest

from bench.common import NTREX_FILES
from filters.words import segmenter_name, words

LANGS = ("zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl",
         "ar", "tr", "he", "ja", "ko", "th", "vi", "id")


def test_chinese_is_segmented_not_one_token():
    ws = words("威尔士国民议会议员担心看起来像笨蛋", "zh")
    assert len(ws) >= 6
    assert "威尔士" in ws and "议员" in ws
    assert "".join(ws) == "威尔士国民议会议员担心看起来像笨蛋"  # nothing lost or invented


def test_japanese_is_segmented():
    ws = words("ウェールズ議会議員の呼称を変える。", "ja")
    assert ws[:3] == ["ウェールズ", "議会", "議員"] and "の" in ws and "。" not in ws


def test_thai_is_segmented():
    ws = words("สมาชิกสมัชชาของเวลล์มีความกังวล", "th")
    assert ws == ["สมาชิก", "สมัชชา", "ของ", "เวลล์", "มี", "ความกังวล"]


def test_korean_splits_on_spaces_and_drops_quotes():
    assert words("상원 의원들은 ‘멍청이처럼 보이는 것’을 걱정했다.", "ko") == [
        "상원", "의원들은", "멍청이처럼", "보이는", "것", "을", "걱정했다"]


def test_space_languages_keep_contractions_hyphens_and_numbers():
    assert words("Don't e-mail me at 12:30 — it costs 1,000.50 USD!", "en") == [
        "Don't", "e-mail", "me", "at", "12:30", "it", "costs", "1,000.50", "USD"]


def test_french_and_italian_elision_split():
    assert words("L'homme d’affaires qu'il a vu.", "fr") == ["L'", "homme", "d’", "affaires", "qu'", "il", "a", "vu"]
    assert words("dell'anno", "it") == ["dell'", "anno"]
    assert words("l'homme", "en") == ["l'homme"]  # no elision rule outside fr/it/ca


def test_rtl_words_keep_their_combining_marks():
    assert words("שָׁלוֹם עוֹלָם", "he") == ["שָׁלוֹם", "עוֹלָם"]
    assert words("مَرْحَبًا بالعالم، كيف حالك؟", "ar") == ["مَرْحَبًا", "بالعالم", "كيف", "حالك"]


def test_mixed_scripts():
    # Han inside a space-separated language becomes one token per character
    assert words("Beijing 北京欢迎你 welcomes you", "en") == ["Beijing", "北", "京", "欢", "迎", "你", "welcomes", "you"]
    # Latin inside Chinese stays whole
    zh = words("我在用Python写代码", "zh")
    assert "Python" in zh and "".join(zh) == "我在用Python写代码"
    assert "MWPs" in words("เปลี่ยนชื่อเป็น MWPs (สมาชิกรัฐสภา)", "th")


@pytest.mark.parametrize("lang", ["en", "zh", "ja", "th", "ko", "ar", "fr"])
def test_empty_whitespace_punctuation(lang):
    assert words("", lang) == []
    assert words(" \n\t\u3000 ", lang) == []
    assert words("!!! ... 。、「」—?!", lang) == []


def test_deterministic_and_type_checked():
    text = "有人提议应将 AM 的头衔改为MWP（威尔士议会议员)，这让有些 AM 惊愕不已。"
    assert words(text, "zh") == words(text, "zh")
    with pytest.raises(TypeError):
        words(None, "en")  # type: ignore[arg-type]
    assert words("plain text", None) == ["plain", "text"]
    assert words("plain text", "xx") == ["plain", "text"]
    assert segmenter_name("zh") == "rjieba" and segmenter_name("de") == "regex"


def test_very_long_input_is_handled():
    assert words("日本語の文です。" * 20000, "ja") == ["日本", "語", "の", "文", "です"] * 20000
    assert len(words("word " * 100000, "en")) == 100000


def test_words_per_sentence_within_1_5x_of_english(shared_data):
    """Mean words per NTREX sentence in every language is within x1.5 of English (the same
    1,997 line-aligned sentences); splitting zh/ja/th on spaces would give ~1 word."""
    root = shared_data / "ntrex-128"
    files = {"en": root / "newstest2019-src.eng.txt"}
    files.update({iso: root / f"newstest2019-ref.{code}.txt" for code, iso in NTREX_FILES.items()})
    assert set(files) == set(LANGS)
    mean = {}
    for lang, path in files.items():
        sents = path.read_text(encoding="utf-8").splitlines()
        mean[lang] = sum(len(words(s, lang)) for s in sents) / len(sents)
    en = mean["en"]
    assert 15 < en < 30
    for lang in LANGS:
        ratio = mean[lang] / en
        assert 1 / 1.5 <= ratio <= 1.5, f"{lang}: {mean[lang]:.1f} words/sentence vs en {en:.1f}"
    for lang in ("zh", "ja", "th"):  # the naive count really is broken for these
        sents = files[lang].read_text(encoding="utf-8").splitlines()
        naive = sum(len(s.split()) for s in sents) / len(sents)
        assert naive < en / 2


@pytest.mark.parametrize("lang", ["zh", "ja", "th", "en", "ar"])
def test_lone_surrogate_does_not_crash(lang):
    # a lone surrogate is not encodable as UTF-8; the C/Rust segmenters must still get a string
    assert words("abc \ud800 def", lang) == ["abc", "def"]
