"""The one text normalisation shared by quality-model training and scoring (CCNet style).

CCNet (Wenzek et al. 2020, "CCNet: Extracting High Quality Monolingual Datasets from Web
Crawl Data", sec. 3.3 and ``cc_net/text_normalizer.py``) normalises every line before
SentencePiece tokenisation and KenLM scoring: lowercase, strip accents, replace digits by
``0``, map unicode punctuation to ASCII and drop non-printing characters. Training and scoring
must use exactly the same function, otherwise perplexities are meaningless; both
``pipeline/quality_models.py`` and ``filters/quality.py`` call :func:`normalize`.

Differences from CCNet, on purpose:

* NFKC first, so full-width Latin letters/digits and half-width katakana fold to their
  canonical forms before the rest.
* Accent stripping removes only *optional* marks: the Latin/Greek/Cyrillic combining
  diacritics (U+0300-U+036F, what "accents" means in CCNet), Arabic tashkeel
  (U+064B-U+065F, U+0670) and Hebrew points/cantillation (U+0591-U+05C7 marks). CCNet drops
  every nonspacing mark, which also deletes Thai vowels and tone marks and the Japanese voicing
  marks (が -> か); those are kept here. Text is recomposed to NFC afterwards (CCNet leaves NFD,
  which splits Hangul syllables into jamo).
* Paragraph breaks (``\\n``) are preserved so callers can score per paragraph; other runs of
  whitespace collapse to one space.
"""
from __future__ import annotations

import re
import unicodedata

# CCNet's ``UNICODE_PUNCT`` table (cc_net/text_normalizer.py), minus its "１" -> '"' typo
# (NFKC already maps full-width digits), plus a few common quote/dash/bullet forms.
UNICODE_PUNCT: dict[str, str] = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"',
    "」": '"', "「": '"', "『": '"', "』": '"', "《": '"', "》": '"', "´": "'", "∶": ":",
    "：": ":", "？": "?", "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ",
    "．": ". ", "～": "~", "’": "'", "‘": "'", "‚": "'", "‛": "'", "‟": '"', "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-", "‹": "'", "›": "'",
    "‐": "-", "‑": "-", "‒": "-", "―": " - ", "•": "-", "·": "-", "・": "-", "〜": "~",
    "\u00a0": " ", "\u3000": " ",
}

# Optional marks removed by accent stripping (applied to NFD text, see module docstring):
# combining diacritics (+ extended, supplement), Arabic tashkeel and superscript alef, Hebrew
# points and cantillation marks (U+0591-U+05C7 minus the punctuation maqaf, paseq, sof pasuq,
# nun hafukha).
_MARK_RE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u064b-\u065f\u0670"
                      "\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7]")
_DIGIT_RE = re.compile(r"\d")            # every unicode decimal digit (category Nd)
_PUNCT_RE = re.compile("|".join(re.escape(k) for k in sorted(UNICODE_PUNCT, key=len, reverse=True)))
# Non-printing code points: C0/C1 controls except line breaks, format characters (soft
# hyphen, Arabic number signs, zero-width and bidi controls, BOM, interlinear annotation,
# tags), private use areas and lone surrogates.
_CTRL_RE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u0600-\u0605\u061c"
                      "\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                      "\u2066-\u206f\ufeff\ufff9-\ufffb\ue000-\uf8ff\ud800-\udfff"
                      "\U000e0001\U000e0020-\U000e007f\U000f0000-\U0010ffff]")


def _punct(m: re.Match) -> str:
    return UNICODE_PUNCT[m.group()]


def normalize(text: str, *, lower: bool = True, accents: bool = True, digits: bool = True,
              punct: bool = True) -> str:
    """Normalise ``text`` for perplexity scoring and classifier features (CCNet style).

    Steps, in order: NFKC; lowercase; strip optional accents (see module docstring) and
    recompose to NFC; unicode punctuation -> ASCII (:data:`UNICODE_PUNCT`); every unicode
    decimal digit (category Nd) -> ``"0"``; drop non-printing characters (controls, zero-width
    and bidi format characters, private use, lone surrogates); collapse whitespace runs inside
    a line to one space and keep one ``"\n"`` between non-empty lines (any unicode line break
    counts as one).

    Args:
        text: any string (``None`` is treated as ``""``).
        lower, accents, digits, punct: switch single steps off (all on for the quality models;
            the flags exist for experiments and must match between training and scoring).

    Returns:
        The normalised string; ``""`` for empty, whitespace-only or non-printing-only input.
        Never raises on arbitrary unicode.
    """
    if not text:
        return ""
    if text.isascii():
        s = text.lower() if lower else text
    else:
        s = _CTRL_RE.sub("", text)  # before NFKC, which would choke on nothing but keeps them
        s = unicodedata.normalize("NFKC", s)
        if lower:
            s = s.lower()
        if accents:
            s = unicodedata.normalize("NFC", _MARK_RE.sub("", unicodedata.normalize("NFD", s)))
        if punct:
            s = _PUNCT_RE.sub(_punct, s)
    if digits:
        s = _DIGIT_RE.sub("0", s)
    s = _CTRL_RE.sub("", s)
    lines = (" ".join(line.split()) for line in s.splitlines())
    return "\n".join(line for line in lines if line)


def paragraphs(text: str) -> list[str]:
    """Split normalised text into its non-empty paragraphs (lines)."""
    return [p for p in text.split("\n") if p]
