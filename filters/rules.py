"""Rule filters of the ``rules`` stage: pure Python, no Spark.

PolyLM (Wei et al. 2023, arXiv 2307.06018, sec. 3.1 "Rule-based filtering") removes documents
with repeated words and sentences, documents too long or too short, abnormal symbol-to-word
ratios, too many ellipses, invisible characters, digits or dates, many URLs and over-long
words. This module implements those rules next to the public rule families they build on:

* **Gopher quality** (Rae et al. 2021, arXiv 2112.11446, App. A.1.1 "Quality filters"),
  :func:`gopher_quality`;
* **Gopher repetition** (same paper, App. A.1.1 "Repetition removal", Table A1),
  :func:`gopher_repetition`;
* **FineWeb quality** (Penedo et al. 2024, arXiv 2406.17557, sec. 3.4; datatrove
  ``FineWebQualityFilter``) and **C4** (Raffel et al. 2020, JMLR 21, sec. 2.2),
  :func:`fineweb_quality`, :func:`c4_rules`, :func:`remove_boilerplate_lines`;
* the seed's own (PolyLM sec. 3.1): :func:`seed_rules` (invisible/control characters,
  digits, dates, URLs, longest word) and :func:`normalize_whitespace`.

Words come from :func:`filters.words.words` (real segmentation for zh/ja/th), so the same
thresholds mean the same thing in every language; per-language values live in
``configs/filters.yaml`` (see :func:`load_filter_config`).

Line-level fixes (:func:`normalize_whitespace`, :func:`remove_boilerplate_lines`) change the
text; document-level rules never change it and only reject, with a reason name
(``gopher_short_doc``, ``gopher_rep_dup_line_frac``, ``url_ratio``...). :func:`apply_rules`
evaluates **every** rule (no early exit) so a rejection records all the metrics that fired.

Units used everywhere below:

* *words*: ``filters.words.words(text, lang)`` tokens (never punctuation or whitespace);
* *word characters*: the summed length of the words (the denominator of the repetition
  fractions; it does not depend on how a script uses spaces);
* *lines*: ``text.split("\\n")`` stripped; blank lines are ignored by every line rule;
* *non-space characters*: characters that are not Unicode whitespace (the denominator of the
  character-ratio rules).
"""
from __future__ import annotations

import collections
import difflib
import functools
import json
import re
import unicodedata
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from filters.words import words as segment_words

__all__ = [
    "RuleParams", "RuleResult", "FilterConfig", "load_filter_config", "REASONS",
    "normalize_whitespace", "remove_boilerplate_lines", "gopher_quality", "gopher_repetition",
    "fineweb_quality", "c4_rules", "seed_rules", "apply_rules", "main_metrics",
]

#: Every document-level reason name, in priority order: the first that fires becomes the
#: document's ``reason``; all that fired go to ``detail``.
REASONS = (
    "empty_doc", "boilerplate_only", "invisible_char_ratio",
    "gopher_short_doc", "gopher_long_doc", "long_word",
    "gopher_rep_dup_line_frac", "gopher_rep_dup_para_frac", "gopher_rep_dup_line_char_frac",
    "gopher_rep_dup_para_char_frac",
    "gopher_rep_top_2_gram", "gopher_rep_top_3_gram", "gopher_rep_top_4_gram",
    "gopher_rep_dup_5_gram", "gopher_rep_dup_6_gram", "gopher_rep_dup_7_gram",
    "gopher_rep_dup_8_gram", "gopher_rep_dup_9_gram", "gopher_rep_dup_10_gram",
    "c4_lorem_ipsum", "c4_curly_bracket",
    "url_ratio", "digit_ratio", "date_ratio", "symbol_word_ratio",
    "gopher_too_many_hashes", "gopher_too_many_ellipsis", "gopher_too_many_bullets",
    "gopher_too_many_end_ellipsis", "gopher_below_avg_threshold", "gopher_above_avg_threshold",
    "gopher_below_alpha_threshold", "gopher_few_stop_words",
    "fineweb_line_punct_ratio", "fineweb_short_line_ratio", "fineweb_list_ratio",
)
_REASON_RANK = {r: i for i, r in enumerate(REASONS)}


def _reason_rank(reason: str) -> tuple[int, str]:
    """Priority of a reason; n-gram reasons for an n outside :data:`REASONS` (any n >= 1 may
    be configured) rank with their family (``gopher_rep_top_*`` / ``gopher_rep_dup_*_gram``)."""
    r = _REASON_RANK.get(reason)
    if r is None:
        family = "gopher_rep_top_2_gram" if reason.startswith("gopher_rep_top_") else "gopher_rep_dup_5_gram"
        r = _REASON_RANK[family]
    return r, reason


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class RuleParams:
    """Thresholds of every rule for one language. ``None`` disables a rule.

    Defaults are the published English values; ``configs/filters.yaml`` overrides them per
    language and says where each override comes from.

    Attributes (source of the default in brackets):
        min_doc_words, max_doc_words: word-count bounds, inclusive [Gopher App. A.1.1: 50,
            100,000].
        min_avg_word_length, max_avg_word_length: mean word length in characters
            [Gopher: 3, 10].
        max_hash_word_ratio, max_ellipsis_word_ratio: ``#`` resp. ``...``/``…`` occurrences
            per word [Gopher: 0.1 each].
        max_bullet_lines_ratio: fraction of lines starting with a bullet [Gopher: 0.9].
        max_ellipsis_lines_ratio: fraction of lines ending with an ellipsis [Gopher: 0.3].
        min_lines: the line-ratio rules (Gopher's bullet / end-ellipsis lines, FineWeb's
            ``line_punct_ratio`` and ``short_line_ratio``) judge only documents with at least
            this many non-blank lines [ours: 2. Gopher (Rae et al. 2021, App. A.1.1) and
            FineWeb (Penedo et al. 2024, sec. 3.3; datatrove ``FineWebQualityFilter``) apply
            them to every document, but they describe a page's lines; on one line the ratio
            can only be 0 or 1 and judges the last character of a paragraph, so one clean
            paragraph ending in ``)``, ``:`` or a number was removed (issue 14, cause 2).
            From 2 lines on, one such line leaves 1/2, above every language's threshold,
            while pages none of whose lines ends a sentence are still removed].
        min_alpha_words_ratio: fraction of words with an alphabetic character [Gopher: 0.8],
            numbers (digit groups such as ``2010``, ``1,847``, ``94.6``), up to a quarter of
            the words, left out of the count [ours: Gopher counts them as non-alphabetic
            words, which removes clean census and statistics paragraphs (a number every 3-5
            words); beyond a quarter the text is a table and is judged as in Gopher].
        stopwords, min_stop_words: at least ``min_stop_words`` occurrences of ``stopwords``
            (compared lower-cased, ``’`` read as ``'``) [Gopher: 2 of the, be, to, of, and,
            that, have, with].
        dup_line_frac, dup_para_frac: fraction of (non-blank) lines / paragraphs that repeat
            an earlier one [Gopher Table A1: 0.3, 0.3].
        dup_line_char_frac, dup_para_char_frac: characters in those repeats over all line /
            paragraph characters [Gopher Table A1: 0.2, 0.2].
        top_n_grams: ``((n, max_frac), ...)``: word characters covered by the most frequent
            n-gram [Gopher Table A1: 2: 0.20, 3: 0.18, 4: 0.16].
        top_n_min_count: the top n-gram rule only counts an n-gram occurring at least this
            often [ours: 3; in a 60-word document a single repeated 4-gram already covers
            2 x 4 / 60 = 0.13 of the words, more than Table A1 allows, although one repetition
            is ordinary prose; Gopher's fractions target n-grams repeated many times].
        dup_n_grams: ``((n, max_frac), ...)``: word characters covered by repeated
            occurrences of n-grams (after the first), overlaps counted once [Gopher Table A1:
            5: 0.15 ... 10: 0.10].
        line_punct_thr: reject if the fraction of lines ending in terminal punctuation is
            ``<=`` this [FineWeb: 0.12].
        short_line_thr, short_line_length: reject if the fraction of lines of at most
            ``short_line_length`` characters is ``>=`` this [FineWeb: 0.67, 30].
        new_line_ratio: reject if newlines per word exceed this [FineWeb: 0.3].
        lorem_ipsum: reject documents containing "lorem ipsum" [C4].
        max_curly_bracket_ratio: ``{``/``}`` per word [C4 rejects any ``{``; we allow 0.1
            so that prose quoting a brace and math set notation (~0.04) survive; code, JSON
            and CSS dumps (0.2-0.7) do not].
        boilerplate_patterns: regexes (case-insensitive) of boilerplate lines removed as a
            line-level fix: javascript notices and cookie/privacy/terms lines [C4: any line
            with "javascript", "terms of use", "privacy policy", "cookie policy",
            "uses cookies", "use of cookies", "use cookies"; other languages' equivalents in
            ``configs/filters.yaml``].
        boilerplate_max_words: only lines of at most this many words count as boilerplate
            [ours: 60; notices are short, content paragraphs mentioning a keyword are not].
        max_boilerplate_frac: reject as ``boilerplate_only`` when the removed boilerplate
            lines held more than this fraction of the non-space characters [ours: 0.5].
        max_invisible_ratio: invisible/control characters (Cc except tab/newline/CR, Cf except
            ZWSP/ZWNJ/ZWJ/LRM/RLM/ALM, Co, Cn, U+FFFD) per non-space character; a ZWSP/ZWNJ/ZWJ
            next to whitespace, a text end or another one, or all of them when they are over
            :data:`MAX_ZERO_WIDTH_SHARE` of the characters, count as invisible
            [PolyLM sec. 3.1 names the rule, no value; ours: 0.01].
        max_digit_ratio: decimal digits per non-space character [PolyLM names it; ours 0.25].
        max_date_ratio: characters inside date/time patterns per non-space character
            [PolyLM names it; ours 0.1].
        max_url_ratio: characters inside URLs, e-mail addresses and bare domain names per
            non-space character [PolyLM names it; ours 0.2].
        max_word_length: longest allowed word in characters [PolyLM names it; C4 drops lines
            with a word over 1000 characters; ours 100].
        max_symbol_word_ratio: punctuation and symbol characters (Unicode P* and S*) per word
            [PolyLM's "abnormal symbol-to-word ratio" generalised from Gopher's ``#``/``...``;
            ours 1.0: clean text of the 18 languages stays below 0.3 on NTREX and UDHR, math
            prose (operators, brackets) reaches ~0.8, while pages that wrap every character in
            brackets or are mostly separators reach 1-3].
    """

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3.0
    max_avg_word_length: float | None = 10.0
    max_hash_word_ratio: float | None = 0.1
    max_ellipsis_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_lines: int = 2
    min_alpha_words_ratio: float | None = 0.8
    stopwords: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")
    min_stop_words: int | None = 2
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    top_n_min_count: int = 3
    line_punct_thr: float | None = 0.12
    short_line_thr: float | None = 0.67
    short_line_length: int = 30
    new_line_ratio: float | None = 0.3
    lorem_ipsum: bool = True
    max_curly_bracket_ratio: float | None = 0.1
    boilerplate_patterns: tuple[str, ...] = (
        r"javascript", r"terms of use", r"privacy policy", r"cookie policy", r"uses cookies",
        r"use of cookies", r"use cookies")
    boilerplate_max_words: int = 60
    max_boilerplate_frac: float | None = 0.5
    max_invisible_ratio: float | None = 0.01
    max_digit_ratio: float | None = 0.25
    max_date_ratio: float | None = 0.1
    max_url_ratio: float | None = 0.2
    max_word_length: int | None = 100
    max_symbol_word_ratio: float | None = 1.0

    def __post_init__(self):
        for name in ("top_n_grams", "dup_n_grams"):
            val = tuple((int(n), float(t)) for n, t in getattr(self, name))
            if any(n < 1 for n, _ in val):
                raise ValueError(f"{name}: n must be >= 1, got {val}")
            object.__setattr__(self, name, val)
        for name in ("stopwords", "boilerplate_patterns"):
            val = getattr(self, name)
            if isinstance(val, (str, bytes)):  # tuple("the") would be ('t', 'h', 'e')
                raise TypeError(f"{name} must be a list of strings, got the single string {val!r}: "
                                f"write [{val!r}]")
            if any(not isinstance(x, str) for x in val):
                raise TypeError(f"{name} must be a list of strings, got {list(val)!r}")
            object.__setattr__(self, name, tuple(val))
        for p in self.boilerplate_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad boilerplate pattern {p!r}: {e}") from e

    @functools.cached_property
    def _stopword_set(self) -> frozenset:
        return frozenset(_fold(w) for w in self.stopwords)

    @functools.cached_property
    def _stopword_forms(self) -> tuple[str, ...]:
        """Surface forms counted as stopwords: lower, Capitalised and UPPER case, with ``'``
        or ``’`` (looked up in the document's word counts instead of folding every word)."""
        forms = set()
        for w in self._stopword_set:
            for v in (w, w.replace("'", "’")):
                forms.update((v, v.capitalize(), v.upper()))
        return tuple(sorted(forms))

    @functools.cached_property
    def _ngram_plan(self) -> tuple[dict, dict, list]:
        top, dup = dict(self.top_n_grams), dict(self.dup_n_grams)
        return top, dup, sorted(set(top) | set(dup))

    @functools.cached_property
    def _boilerplate_re(self) -> re.Pattern | None:
        if not self.boilerplate_patterns:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.boilerplate_patterns), re.IGNORECASE)

    @functools.cached_property
    def _boilerplate_triggers(self) -> tuple[str, ...] | None:
        """Lower-cased literals of which every pattern needs one (a fast pre-check before the
        regex); None when some pattern has no required literal."""
        lits = [_required_literal(p) for p in self.boilerplate_patterns]
        return None if any(not x for x in lits) else tuple(x.lower() for x in lits)


_PARAM_NAMES = {f.name for f in fields(RuleParams)}


_META = set("\\.^$*+?{}[]|()")


def _required_literal(pattern: str) -> str:
    """Longest run of literal characters at nesting depth 0 that every match of ``pattern``
    must contain ("" when there is none, e.g. a top-level alternation or escapes)."""
    if "|" in _strip_groups(pattern):
        return ""
    best, cur, depth, i = "", "", 0, 0
    while i < len(pattern):
        c = pattern[i]
        nxt = pattern[i + 1] if i + 1 < len(pattern) else ""
        if c == "\\":
            cur, i = "", i + 2
            continue
        if c in "([":
            depth += 1
            if c == "[":  # skip the whole class
                j = pattern.find("]", i + 1)
                i, depth = (j + 1 if j > 0 else len(pattern)), depth - 1
                cur = ""
                continue
            cur = ""
        elif c == ")":
            depth -= 1
            cur = ""
        elif depth == 0 and c not in _META:
            if nxt in ("?", "*", "{"):  # optional character: ends the run
                cur = ""
            else:
                cur += c
                if len(cur) > len(best):
                    best = cur
        else:
            cur = ""
        i += 1
    return best


def _strip_groups(pattern: str) -> str:
    """``pattern`` without its parenthesised groups and classes (to find top-level ``|``)."""
    out, depth, i = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if depth == 0:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0:
            out.append(c)
        i += 1
    return "".join(out)


def _fold(w: str) -> str:
    return w.lower().replace("’", "'")


@dataclass
class RuleResult:
    """Outcome of :func:`apply_rules` for one document.

    Attributes:
        text: the text after the line-level fixes (what a kept document becomes).
        reason: ``None`` if kept, else the first fired reason in :data:`REASONS` order.
        fired: reason -> ``{"value": float, "threshold": float}`` for every rule that fired.
        metrics: the main metrics (floats/ints), for reports and auditing kept documents.
        fixes: what the line-level fixes changed (counts).
    """

    text: str
    reason: str | None
    fired: dict[str, dict]
    metrics: dict[str, float]
    fixes: dict[str, int] = field(default_factory=dict)

    def detail_json(self) -> str | None:
        """``fired`` as compact JSON (floats rounded to 6 digits), or None when kept."""
        if not self.fired:
            return None
        return json.dumps({r: {k: _round(v) for k, v in d.items()} for r, d in self.fired.items()},
                          ensure_ascii=False, sort_keys=True)


def _round(v):
    return round(v, 6) if isinstance(v, float) else v


# --------------------------------------------------------------------------- line-level fixes
# Horizontal whitespace other than the plain space (tab, NBSP, en/em spaces, ideographic space...)
_HSPACE_RE = re.compile(r"[^\S\n]+")
_VSPACE_RE = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_BLANKS_RE = re.compile(r"\n{3,}")
_OTHER_WS_RE = re.compile(r"[^\S \n]")  # whitespace other than space and newline


def normalize_whitespace(text: str) -> tuple[str, int]:
    """Line-level fix: normalise whitespace without touching words.

    ``\\r\\n``, ``\\r``, vertical tab, form feed, NEL, LS and PS become ``\\n``; every run of
    other whitespace (tabs, NBSP, U+2000-U+200A, U+3000...) becomes one space; lines are
    stripped; more than one blank line in a row becomes one blank line; the text is stripped.

    Returns:
        (fixed text, number of characters removed).
    """
    if not ("  " in text or " \n" in text or "\n " in text or "\n\n\n" in text
            or text[:1].isspace() or text[-1:].isspace() or _OTHER_WS_RE.search(text)):
        return text, 0  # already normal (the common case for clean text)
    t = _VSPACE_RE.sub("\n", text)
    t = _HSPACE_RE.sub(" ", t)
    t = "\n".join(line.strip() for line in t.split("\n"))
    t = _BLANKS_RE.sub("\n\n", t).strip()
    return t, len(text) - len(t)


def remove_boilerplate_lines(text: str, params: RuleParams, lang: str | None = None
                             ) -> tuple[str, int, int]:
    """Line-level fix (C4 javascript/policy rules): drop short lines matching
    ``params.boilerplate_patterns``.

    A line is dropped if a pattern matches it and it has at most
    ``params.boilerplate_max_words`` words.

    Returns:
        (text without those lines, number of lines removed, non-space characters removed).
    """
    rx = params._boilerplate_re
    if rx is None or not text:
        return text, 0, 0
    triggers = params._boilerplate_triggers
    if triggers is not None:
        low = text.lower()
        if not any(t in low for t in triggers):
            return text, 0, 0
    if rx.search(text) is None:
        return text, 0, 0
    kept, n, chars = [], 0, 0
    for line in text.split("\n"):
        if line and rx.search(line) and len(segment_words(line, lang)) <= params.boilerplate_max_words:
            n += 1
            chars += len(line) - line.count(" ")
            continue
        kept.append(line)
    out = _BLANKS_RE.sub("\n\n", "\n".join(kept)).strip()
    return out, n, chars


# --------------------------------------------------------------------------- helpers
def _lines(text: str) -> list[str]:
    """Non-blank, stripped lines."""
    return [s for s in (x.strip() for x in text.split("\n")) if s]


_PARA_SPLIT = re.compile(r"\n\s*\n")


def _dup_stats(items: list[str]) -> tuple[int, int, int]:
    """(number of items repeating an earlier one, their characters, all characters)."""
    seen: set[str] = set()
    dup = dup_chars = total = 0
    for x in items:
        total += len(x)
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup, dup_chars, total


_COUNTS_CACHE: list = [None, None]


def _word_counts(words: list[str]) -> dict[str, int]:
    """``Counter(words)``, memoised for the last list seen (the rule families of one
    document share the same list object)."""
    if _COUNTS_CACHE[0] is not words:
        _COUNTS_CACHE[0] = words
        _COUNTS_CACHE[1] = collections.Counter(words)
    return _COUNTS_CACHE[1]


def _fire(fired: dict, reason: str, value: float, threshold: float) -> None:
    fired[reason] = {"value": value, "threshold": threshold}


# --------------------------------------------------------------------------- Gopher quality
_BULLETS = ("•", "●", "○", "◦", "▪", "▫", "■", "□", "‣", "⁃", "∙", "◆", "◇", "►", "▶", "➢",
            "✓", "✔", "-", "*")
_ELLIPSES = ("...", "…")
_ALPHA_RE = re.compile(r"[^\W\d_]")
_NUMBER_WORD_RE = re.compile(r"\d+(?:[.,:/]\d+)*")
# a \x00-separated item without any letter (digits, underscores, marks, joiners only)
_NONALPHA_WORD_RE = re.compile(r"(?<![^\x00])(?:[\d_]|[^\w\x00])+(?![^\x00])")


def gopher_quality(text: str, words: list[str], params: RuleParams) -> tuple[dict, dict]:
    """Gopher quality filters (Rae et al. 2021, App. A.1.1) on language-aware words.

    Args:
        text: the (fixed) document text.
        words: ``filters.words.words(text, lang)``.
        params: thresholds (see :class:`RuleParams`).

    Returns:
        (metrics, fired): metrics ``words``, ``avg_word_len``, ``hash_ratio``,
        ``ellipsis_ratio``, ``bullet_lines``, ``ellipsis_lines``, ``alpha_words``,
        ``stop_words``; fired maps reason -> {"value", "threshold"} for
        ``gopher_short_doc``, ``gopher_long_doc``, ``gopher_below_avg_threshold``,
        ``gopher_above_avg_threshold``, ``gopher_too_many_hashes``,
        ``gopher_too_many_ellipsis``, ``gopher_too_many_bullets``,
        ``gopher_too_many_end_ellipsis``, ``gopher_below_alpha_threshold``,
        ``gopher_few_stop_words``. Ratios over zero words are 0 (the word-count rule fires).
    """
    p = params
    fired: dict = {}
    n = len(words)
    wchars = sum(map(len, words))
    avg = wchars / n if n else 0.0
    hashes = text.count("#") / n if n else 0.0
    ell = (text.count("...") + text.count("…")) / n if n else 0.0
    lines = _lines(text)
    nl = len(lines)
    bullets = sum(1 for s in lines if s.startswith(_BULLETS)) / nl if nl else 0.0
    ell_lines = sum(1 for s in lines if s.endswith(_ELLIPSES)) / nl if nl else 0.0
    counts = _word_counts(words)
    if n:
        nonalpha = _NONALPHA_WORD_RE.findall("\x00".join(counts))
        n_nonalpha = sum(counts.get(w, 0) for w in nonalpha)
        # numbers ("2010", "1,847", "94.6") are words of the prose, not symbols: they leave the
        # denominator (issue 14, cause 2: census paragraphs), ...
        # at most a quarter of the words: beyond that it is a table, judged as Gopher does
        n_num = min(n / 4, sum(counts.get(w, 0) for w in nonalpha if _NUMBER_WORD_RE.fullmatch(w)))
        alpha = (n - n_nonalpha) / (n - n_num)
    else:
        alpha = 0.0
    sw = p._stopword_set
    get = counts.get
    stops = sum(get(w, 0) for w in p._stopword_forms) if sw else 0
    m = {"words": n, "avg_word_len": avg, "hash_ratio": hashes, "ellipsis_ratio": ell,
         "bullet_lines": bullets, "ellipsis_lines": ell_lines, "alpha_words": alpha,
         "stop_words": stops}
    if p.min_doc_words is not None and n < p.min_doc_words:
        _fire(fired, "gopher_short_doc", n, p.min_doc_words)
    if p.max_doc_words is not None and n > p.max_doc_words:
        _fire(fired, "gopher_long_doc", n, p.max_doc_words)
    if n:
        if p.min_avg_word_length is not None and avg < p.min_avg_word_length:
            _fire(fired, "gopher_below_avg_threshold", avg, p.min_avg_word_length)
        if p.max_avg_word_length is not None and avg > p.max_avg_word_length:
            _fire(fired, "gopher_above_avg_threshold", avg, p.max_avg_word_length)
        if p.max_hash_word_ratio is not None and hashes > p.max_hash_word_ratio:
            _fire(fired, "gopher_too_many_hashes", hashes, p.max_hash_word_ratio)
        if p.max_ellipsis_word_ratio is not None and ell > p.max_ellipsis_word_ratio:
            _fire(fired, "gopher_too_many_ellipsis", ell, p.max_ellipsis_word_ratio)
        if p.min_alpha_words_ratio is not None and alpha < p.min_alpha_words_ratio:
            _fire(fired, "gopher_below_alpha_threshold", alpha, p.min_alpha_words_ratio)
        if sw and p.min_stop_words is not None and stops < p.min_stop_words:
            _fire(fired, "gopher_few_stop_words", stops, p.min_stop_words)
    if nl >= max(1, p.min_lines):
        if p.max_bullet_lines_ratio is not None and bullets > p.max_bullet_lines_ratio:
            _fire(fired, "gopher_too_many_bullets", bullets, p.max_bullet_lines_ratio)
        if p.max_ellipsis_lines_ratio is not None and ell_lines > p.max_ellipsis_lines_ratio:
            _fire(fired, "gopher_too_many_end_ellipsis", ell_lines, p.max_ellipsis_lines_ratio)
    return m, fired


# --------------------------------------------------------------------------- Gopher repetition
_MULT = np.uint64(0x9E3779B97F4A7C15)  # 64-bit golden-ratio multiplier (Fibonacci hashing)


def gopher_repetition(text: str, words: list[str], params: RuleParams) -> tuple[dict, dict]:
    """Gopher repetition removal (Rae et al. 2021, App. A.1.1, Table A1).

    Line and paragraph duplicates ignore blank lines (a blank line is never a duplicate).
    n-gram fractions are over word characters: ``top_n`` = characters of the most frequent
    n-gram times its count (only when it occurs at least ``top_n_min_count`` times), ``dup_n`` = characters of
    the words covered by the repeated occurrences of n-grams (every occurrence after the
    first; overlapping n-grams are counted once, as the paper prescribes; the first
    occurrence is not counted, as in datatrove's ``find_all_duplicate``).

    Returns:
        (metrics, fired): metrics ``dup_line_frac``, ``dup_para_frac``,
        ``dup_line_char_frac``, ``dup_para_char_frac``, ``top_<n>_gram``, ``dup_<n>_gram``;
        fired reasons ``gopher_rep_<metric>``.
    """
    p = params
    fired: dict = {}
    m: dict = {}
    lines = _lines(text)
    d, dc, tot = _dup_stats(lines)
    m["dup_line_frac"] = d / len(lines) if lines else 0.0
    m["dup_line_char_frac"] = dc / tot if tot else 0.0
    paras = [q for q in (x.strip() for x in _PARA_SPLIT.split(text)) if q]
    d, dc, tot = _dup_stats(paras)
    m["dup_para_frac"] = d / len(paras) if paras else 0.0
    m["dup_para_char_frac"] = dc / tot if tot else 0.0
    for key, thr in (("dup_line_frac", p.dup_line_frac), ("dup_para_frac", p.dup_para_frac),
                     ("dup_line_char_frac", p.dup_line_char_frac),
                     ("dup_para_char_frac", p.dup_para_char_frac)):
        if thr is not None and m[key] > thr:
            _fire(fired, "gopher_rep_" + key, m[key], thr)

    nw = len(words)
    top, dup, ns = p._ngram_plan
    for n in ns:
        m[f"top_{n}_gram" if n in top else f"dup_{n}_gram"] = 0.0
    if nw < 2 or not ns:
        return m, fired
    counts = _word_counts(words)
    if len(counts) == nw:  # every word distinct: no repeated n-gram of any length
        return m, fired
    index = dict(zip(counts, range(len(counts))))
    small = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=nw)
    ids = small.astype(np.uint64) * _MULT + np.uint64(1)  # spread the small ids over 64 bits
    lens = np.fromiter(map(len, words), dtype=np.int64, count=nw)
    total = float(lens.sum())
    csum = np.zeros(nw + 1, dtype=np.int64)
    np.cumsum(lens, out=csum[1:])
    top_max, dup_max = max(top, default=0), max(dup, default=0)
    # Only a position starting a repeated (n-1)-gram can start a repeated n-gram, so each n
    # hashes and sorts just those candidates (``cand``, ascending) instead of every position.
    # The hashes roll: h_n[i] = h_(n-1)[i] * _MULT + ids[i + n - 1] (64-bit, wrapping;
    # collisions are astronomically unlikely at document sizes and could only make a fraction
    # larger).
    cand = np.flatnonzero(np.bincount(small)[small] > 1)  # words that occur twice or more
    hc = ids[cand]
    top_done = dup_done = False  # no repeat at n means none at any larger n
    for n in range(1, ns[-1] + 1):
        if n > 1:
            keep = cand <= nw - n  # room for n words
            cand = cand[keep]
            hc = hc[keep] * _MULT + ids[cand + (n - 1)]
        if len(cand) < 2:
            break
        want_top = n in top and not top_done
        want_dup = n in dup and not dup_done
        if not (want_top or want_dup):
            if (top_done or n >= top_max) and (dup_done or n >= dup_max):
                break
            continue  # candidates stay a superset; refine them at the next wanted n
        # One stable sort groups equal n-grams; inside a group the occurrences stay in text
        # order, so a group's first element is the n-gram's first occurrence.
        order = np.argsort(hc, kind="stable")
        hs = hc[order]
        is_first = np.empty(len(hc), dtype=bool)
        is_first[0] = True
        np.not_equal(hs[1:], hs[:-1], out=is_first[1:])
        group_start = np.flatnonzero(is_first)
        if len(group_start) == len(hc):  # no repeated n-gram: larger n cannot repeat either
            break
        size = np.empty(len(group_start), dtype=np.int64)
        np.subtract(group_start[1:], group_start[:-1], out=size[:-1])
        size[-1] = len(hc) - group_start[-1]
        if want_top:
            best = int(size.max())
            if best >= p.top_n_min_count:
                # ties: the n-gram that occurs first (as Counter.most_common in datatrove);
                # every occurrence of an n-gram has the same characters, take the first one.
                i0 = int(cand[order[group_start[size == best]]].min())
                m[f"top_{n}_gram"] = float(csum[i0 + n] - csum[i0]) * best / total
            else:
                top_done = True  # counts only fall as n grows
        if want_dup:
            # occurrences repeating an earlier occurrence of the same n-gram cover [s, s + n);
            # a running maximum of the covered ends marks every covered word once.
            starts = cand[order[~is_first]]
            ends = np.full(nw, -1, dtype=np.int64)
            ends[starts] = starts + n
            covered = np.maximum.accumulate(ends) > np.arange(nw)
            m[f"dup_{n}_gram"] = float(lens[covered].sum()) / total
        # next candidates: the members of repeated groups, back in text order
        sel = order[np.repeat(size > 1, size)]
        sel.sort()
        cand, hc = cand[sel], hc[sel]
    for n, thr in p.top_n_grams:
        v = m.get(f"top_{n}_gram", 0.0)
        if v > thr:
            _fire(fired, f"gopher_rep_top_{n}_gram", v, thr)
    for n, thr in p.dup_n_grams:
        v = m.get(f"dup_{n}_gram", 0.0)
        if v > thr:
            _fire(fired, f"gopher_rep_dup_{n}_gram", v, thr)
    return m, fired


# --------------------------------------------------------------------------- FineWeb / C4
#: Sentence-final punctuation of the 18 languages (FineWeb's ``. ' " ! ?`` plus closing quotes,
#: CJK full stops/brackets, Arabic question mark, Devanagari danda, ellipsis).
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", "»", "…", "。", "！", "？", "．", "」", "』",
                  "）", "؟", "۔", "।", "॥", "።", "။", "։")


def fineweb_quality(text: str, words: list[str], params: RuleParams) -> tuple[dict, dict]:
    """FineWeb quality filters (Penedo et al. 2024, sec. 3.4; datatrove FineWebQualityFilter).

    The duplicated-line-characters rule of FineWeb is Gopher's ``dup_line_char_frac`` and
    lives in :func:`gopher_repetition`.

    Returns:
        (metrics, fired): metrics ``line_punct_ratio`` (fraction of non-blank lines ending in
        :data:`TERMINAL_PUNCT`), ``short_line_ratio`` (fraction of non-blank lines of at most
        ``short_line_length`` characters), ``new_line_ratio`` (newlines per word); fired
        reasons ``fineweb_line_punct_ratio`` (ratio <= thr), ``fineweb_short_line_ratio``
        (ratio >= thr), ``fineweb_list_ratio`` (ratio > thr).
    """
    p = params
    fired: dict = {}
    lines = _lines(text)
    nl = len(lines)
    punct = sum(1 for s in lines if s.endswith(TERMINAL_PUNCT)) / nl if nl else 0.0
    short = sum(1 for s in lines if len(s) <= p.short_line_length) / nl if nl else 0.0
    nwords = len(words)
    newl = text.count("\n") / nwords if nwords else 0.0
    m = {"line_punct_ratio": punct, "short_line_ratio": short, "new_line_ratio": newl}
    if nl >= max(1, p.min_lines):
        if p.line_punct_thr is not None and punct <= p.line_punct_thr:
            _fire(fired, "fineweb_line_punct_ratio", punct, p.line_punct_thr)
        if p.short_line_thr is not None and short >= p.short_line_thr:
            _fire(fired, "fineweb_short_line_ratio", short, p.short_line_thr)
    if nwords and p.new_line_ratio is not None and newl > p.new_line_ratio:
        _fire(fired, "fineweb_list_ratio", newl, p.new_line_ratio)
    return m, fired


_LOREM_RE = re.compile(r"lorem\s+ipsum", re.IGNORECASE)


def c4_rules(text: str, words: list[str], params: RuleParams) -> tuple[dict, dict]:
    """C4 document rules (Raffel et al. 2020, sec. 2.2): "lorem ipsum" and curly brackets.

    C4's line rules (javascript, policy lines) are the line-level fix
    :func:`remove_boilerplate_lines`. C4's "keep only lines ending in terminal punctuation",
    "at least 3 words per line" and "at least 5 sentences" are not applied: FineWeb's
    ablations (Penedo et al. 2024, sec. 3.3) found the line-punctuation rule removes ~30% of
    tokens, and here it would cut headings from clean text; the document-level
    ``fineweb_line_punct_ratio`` plays its role.

    Returns:
        (metrics, fired): metrics ``curly_bracket_ratio`` (braces per word); fired reasons
        ``c4_lorem_ipsum``, ``c4_curly_bracket``.
    """
    fired: dict = {}
    n = len(words)
    braces = text.count("{") + text.count("}")
    ratio = braces / n if n else float(braces > 0)
    m = {"curly_bracket_ratio": ratio}
    if params.lorem_ipsum and _LOREM_RE.search(text):
        _fire(fired, "c4_lorem_ipsum", 1, 0)
    if params.max_curly_bracket_ratio is not None and ratio > params.max_curly_bracket_ratio:
        _fire(fired, "c4_curly_bracket", ratio, params.max_curly_bracket_ratio)
    return m, fired


# --------------------------------------------------------------------------- the seed's own
# Legitimate format characters: ZWSP (Thai/Khmer word breaks), ZWNJ/ZWJ (Indic, Persian,
# emoji), LRM/RLM/ALM (bidirectional text in Arabic/Hebrew), soft hyphen.
_ALLOWED_FORMAT = {0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x061C, 0x00AD}


def _is_invisible(cp: int) -> bool:
    if cp in (9, 10, 13) or cp in _ALLOWED_FORMAT:
        return False
    if 0xD800 <= cp <= 0xDFFF:
        return True
    return cp == 0xFFFD or unicodedata.category(chr(cp)) in ("Cc", "Cf", "Co", "Cn")


# Character classes of the character-ratio rules, one bit each, looked up for every code point
# of a document in one numpy pass (:func:`_char_counts`) instead of one regex scan per class.
_SPACE_BIT, _INVISIBLE_BIT, _DIGIT_BIT, _SYMBOL_BIT, _ZW_BIT = 1, 2, 4, 8, 16
# _BIT_SUMS @ bincount(codes, minlength=32) -> characters having each bit (rows in bit order)
_BIT_SUMS = np.array([[(code >> b) & 1 for code in range(32)] for b in range(5)], dtype=np.int64)
#: Zero-width characters exempt from the invisible-character rule where they do something:
#: ZWSP (a word break in Thai/Khmer/Lao text), ZWNJ / ZWJ (joining of the characters on both
#: sides: Indic, Arabic-script, emoji sequences).
_ZERO_WIDTH = (0x200B, 0x200C, 0x200D)
#: Above this share of the non-space characters, exempt zero-width characters all count as
#: invisible (issue 14, cause 7): one between every two letters is text hidden from a reader,
#: not word breaks (Thai words average ~5 characters: one ZWSP per word is ~0.2).
MAX_ZERO_WIDTH_SHARE = 0.3


@functools.lru_cache(maxsize=1)
def _char_table() -> np.ndarray:
    """Class bits of every code point, ``uint8[0x110000]`` (built once per process, ~0.2 s).

    * space: ``str.isspace`` (what ``\\s`` matches);
    * invisible: :func:`_is_invisible` in the BMP, plus the tag characters U+E0000-U+E007F
      and the supplementary private use planes U+F0000-U+10FFFF;
    * digit: ``str.isdecimal`` (what ``\\d`` matches: Unicode category Nd);
    * symbol: Unicode categories P* and S* in the BMP.
    """
    table = np.zeros(0x110000, dtype=np.uint8)
    for cp in range(0x10000):
        ch = chr(cp)
        bits = _SPACE_BIT if ch.isspace() else 0
        if _is_invisible(cp):
            bits |= _INVISIBLE_BIT
        if ch.isdecimal():
            bits |= _DIGIT_BIT
        if unicodedata.category(ch)[0] in "PS":
            bits |= _SYMBOL_BIT
        table[cp] = bits
    for cp in range(0x10000, 0x110000):
        if chr(cp).isdecimal():
            table[cp] |= _DIGIT_BIT
    table[0xE0000:0xE0080] |= _INVISIBLE_BIT
    table[0xF0000:] |= _INVISIBLE_BIT
    table[list(_ZERO_WIDTH)] |= _ZW_BIT
    return table


def _char_counts(text: str) -> tuple[int, int, int, int]:
    """Character counts of ``text`` for the character-ratio rules.

    Returns:
        ``(non_space, invisible, digit, symbol)`` numbers of characters (ints); classes as in
        :func:`_char_table` (a lone surrogate counts as invisible).
    """
    if not text:
        return 0, 0, 0, 0
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    codes = _char_table()[cps]
    space, invisible, digit, symbol, zw = (_BIT_SUMS @ np.bincount(codes, minlength=32)).tolist()
    if zw:
        invisible += _idle_zero_width(codes, zw, len(text) - space)
    return len(text) - space, invisible, digit, symbol


def _idle_zero_width(codes: np.ndarray, n_zw: int, nonspace: int) -> int:
    """How many of the ``n_zw`` exempt zero-width characters (:data:`_ZERO_WIDTH`) count as
    invisible after all: every one when they are more than :data:`MAX_ZERO_WIDTH_SHARE` of the
    ``nonspace`` characters, else those with nothing to break or join: next to whitespace, at
    either end of the text or next to another zero-width character (issue 14, cause 7: a
    zero-width joiner after every space hid nothing from the rule before)."""
    if nonspace and n_zw / nonspace > MAX_ZERO_WIDTH_SHARE:
        return n_zw
    zw = (codes & _ZW_BIT) != 0
    idle = (codes & _SPACE_BIT) != 0
    idle |= zw
    prev_idle = np.concatenate(([True], idle[:-1]))
    next_idle = np.concatenate((idle[1:], [True]))
    return int(np.count_nonzero(zw & (prev_idle | next_idle)))


# Every alternative starts with a digit, taken out in front so that the regex engine can skip
# to the next digit instead of trying the alternation at every position.
_DATE_RE = re.compile(
    r"\d(?:\d{3}\s?[-/.年년]\s?\d{1,2}\s?[-/.月월]\s?\d{1,2}\s?[日일]?"      # 2020-06-16, 2020年6月16日
    r"|\d?\s?[-/.]\s?\d{1,2}\s?[-/.]\s?\d{2,4}"                     # 16/06/2020, 16.06.20
    r"|\d{3}\s?[年년]\s?\d{1,2}\s?[月월]"                               # 2020年6月
    r"|\d?\s?[月월]\s?\d{1,2}\s?[日일]"                                 # 6月16日
    r"|(?<!\w\d)\d?:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b)")            # 02:31, 2:31 PM (no word char before)
_TLDS = ("com|net|org|info|biz|edu|gov|io|co|me|tv|cc|xyz|top|vip|club|online|site|shop|app|"
         "cn|ru|de|nl|uk|fr|es|it|pl|br|pt|jp|kr|tw|hk|vn|id|th|tr|il|ar|eu|us|ca|au|in|ch|at|be")
# Bounded repetitions keep matching linear on pathological input (a 50,000-letter "word").
_URL_RE = re.compile(
    r"(?:https?|ftp)://\S+"
    r"|www\.\S+"
    r"|\b[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"
    rf"|\b[a-zA-Z0-9][a-zA-Z0-9-]{{0,62}}(?:\.[a-zA-Z0-9-]{{1,63}}){{0,8}}\.(?:{_TLDS})\b(?:/\S*)?",
    re.ASCII)


# cheap test whether _URL_RE can match at all (most prose has none of these): substring tests,
# then a regex with a literal first character (the engine jumps from "." to ".")
_DOMAIN_HINT_RE = re.compile(rf"\.(?:{_TLDS})\b", re.ASCII)


def _may_have_url(text: str) -> bool:
    return ("://" in text or "www." in text or "@" in text
            or _DOMAIN_HINT_RE.search(text) is not None)


def _span_chars(rx: re.Pattern, text: str) -> int:
    return sum(len(x) - x.count(" ") for x in rx.findall(text))


def seed_rules(text: str, words: list[str], params: RuleParams,
               char_counts: tuple[int, int, int, int] | None = None) -> tuple[dict, dict]:
    """The seed's rules (PolyLM sec. 3.1): invisible characters, digits, dates, URLs and
    over-long words. Character ratios are over non-space characters.

    ``char_counts`` is :func:`_char_counts` of ``text`` when the caller has it already.

    Returns:
        (metrics, fired): metrics ``invisible_ratio``, ``digit_ratio``, ``date_ratio``,
        ``url_ratio``, ``max_word_len``, ``symbol_word_ratio``; fired reasons
        ``invisible_char_ratio``, ``digit_ratio``, ``date_ratio``, ``url_ratio``,
        ``long_word``, ``symbol_word_ratio``.
    """
    p = params
    fired: dict = {}
    nonspace, n_inv, n_dig, n_sym = char_counts if char_counts is not None else _char_counts(text)
    if nonspace <= 0:
        m = {"invisible_ratio": 0.0, "digit_ratio": 0.0, "date_ratio": 0.0, "url_ratio": 0.0,
             "max_word_len": 0, "symbol_word_ratio": 0.0}
        return m, fired
    inv = n_inv / nonspace
    dig = n_dig / nonspace
    date = _span_chars(_DATE_RE, text) / nonspace if dig else 0.0
    url = _span_chars(_URL_RE, text) / nonspace if _may_have_url(text) else 0.0
    maxw = max(map(len, words)) if words else 0
    sym = n_sym / len(words) if words else 0.0
    m = {"invisible_ratio": inv, "digit_ratio": dig, "date_ratio": date, "url_ratio": url,
         "max_word_len": maxw, "symbol_word_ratio": sym}
    for reason, val, thr in (("invisible_char_ratio", inv, p.max_invisible_ratio),
                             ("digit_ratio", dig, p.max_digit_ratio),
                             ("date_ratio", date, p.max_date_ratio),
                             ("url_ratio", url, p.max_url_ratio),
                             ("long_word", maxw, p.max_word_length),
                             ("symbol_word_ratio", sym, p.max_symbol_word_ratio)):
        if thr is not None and val > thr:
            _fire(fired, reason, val, thr)
    return m, fired


# --------------------------------------------------------------------------- all together
#: Metrics stored for every document (kept ones too) and plotted per language by the stage.
MAIN_METRICS = ("words", "avg_word_len", "alpha_words", "stop_words", "dup_line_frac",
                "dup_line_char_frac", "top_2_gram", "dup_5_gram", "line_punct_ratio",
                "short_line_ratio", "digit_ratio", "url_ratio", "symbol_word_ratio", "invisible_ratio", "date_ratio",
                "max_word_len")


def main_metrics(metrics: dict) -> dict:
    """The :data:`MAIN_METRICS` subset of a full metrics dict (floats rounded to 4 digits)."""
    return {k: (round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k])
            for k in MAIN_METRICS if k in metrics}


def apply_rules(text: str | None, lang: str | None, params: RuleParams) -> RuleResult:
    """Run the line-level fixes, then every document rule, on one document.

    Args:
        text: document text (``None`` is treated as empty).
        lang: ISO 639-1 code of the document (selects the word segmenter).
        params: thresholds for that language (``FilterConfig.params(lang)``).

    Returns:
        :class:`RuleResult`; ``reason`` is None when the document is kept. An empty document
        (no words after the fixes) is rejected as ``empty_doc`` and reports no other rule.
    """
    raw = text or ""
    # invisible characters are measured on the raw text (whitespace fixing could hide none of
    # them, but boilerplate removal could drop lines that hold them)
    raw_counts = _char_counts(raw)
    raw_nonspace = raw_counts[0]
    raw_invisible = raw_counts[1] / raw_nonspace if raw_nonspace else 0.0
    fixed, ws_changed = normalize_whitespace(raw)
    fixed, bp_lines, bp_chars = remove_boilerplate_lines(fixed, params, lang)
    fixes = {"whitespace_chars": ws_changed, "boilerplate_lines": bp_lines,
             "boilerplate_chars": bp_chars}
    ws = segment_words(fixed, lang) if fixed else []
    fired: dict = {}
    metrics: dict = {}
    if not ws:
        if bp_lines and params.max_boilerplate_frac is not None:
            _fire(fired, "boilerplate_only", 1.0, params.max_boilerplate_frac)
            reason = "boilerplate_only"
        else:
            _fire(fired, "empty_doc", 0, 1)
            reason = "empty_doc"
        metrics = {"words": 0, "invisible_ratio": raw_invisible}
        return RuleResult(fixed, reason, fired, metrics, fixes)
    # the fixes usually change nothing (then ``fixed is raw``): reuse the character counts
    m, f = seed_rules(fixed, ws, params, raw_counts if fixed is raw else None)
    metrics.update(m)
    fired.update(f)
    for fn in (gopher_quality, gopher_repetition, fineweb_quality, c4_rules):
        m, f = fn(fixed, ws, params)
        metrics.update(m)
        fired.update(f)
    # invisible characters: judged on the raw text
    metrics["invisible_ratio"] = raw_invisible
    fired.pop("invisible_char_ratio", None)
    if params.max_invisible_ratio is not None and raw_invisible > params.max_invisible_ratio:
        _fire(fired, "invisible_char_ratio", raw_invisible, params.max_invisible_ratio)
    bp_frac = bp_chars / raw_nonspace if raw_nonspace else 0.0
    metrics["boilerplate_frac"] = bp_frac
    if params.max_boilerplate_frac is not None and bp_frac > params.max_boilerplate_frac:
        _fire(fired, "boilerplate_only", bp_frac, params.max_boilerplate_frac)
    reason = min(fired, key=_reason_rank) if fired else None
    return RuleResult(fixed, reason, fired, metrics, fixes)


# --------------------------------------------------------------------------- configuration
class FilterConfigError(ValueError):
    """``configs/filters.yaml`` has an unknown key or a bad value."""


@dataclass(frozen=True)
class FilterConfig:
    """Per-language :class:`RuleParams` loaded from ``configs/filters.yaml``.

    Attributes:
        defaults: parameters for any language without its own section.
        languages: ISO 639-1 code -> parameters (defaults merged with the language section).
        path: the YAML file it came from (or None).
    """

    defaults: RuleParams
    languages: dict[str, RuleParams]
    path: str | None = None
    tiers: dict[str, dict] = field(default_factory=dict)

    def params(self, lang: str | None, tier: str | None = None) -> RuleParams:
        """Parameters for ``lang`` (the defaults for unknown or missing languages), with the
        overrides of ``tier`` (``tiers:`` section) applied on top when given."""
        base = self.languages.get(lang or "", self.defaults)
        over = self.tiers.get(tier or "")
        if not over:
            return base
        key = (lang or "", tier)
        cache = self.__dict__.setdefault("_tier_cache", {})
        if key not in cache:
            cache[key] = replace(base, **over)
        return cache[key]


#: List-valued rule parameters: a single string in the YAML is taken as a list of one item.
_LIST_PARAMS = ("stopwords", "boilerplate_patterns")


def _to_params(base: RuleParams, section: dict, where: str) -> RuleParams:
    unknown = set(section) - _PARAM_NAMES
    if unknown:
        k = sorted(unknown)[0]
        close = difflib.get_close_matches(k, sorted(_PARAM_NAMES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FilterConfigError(f"{where}: unknown rule parameter(s) {sorted(unknown)}{hint}; "
                                f"known: {sorted(_PARAM_NAMES)}")
    clean = {}
    for k, v in section.items():
        if k in _LIST_PARAMS and isinstance(v, str):
            v = (v,)  # one string is a list of one item, never a list of its characters
        if k in ("top_n_grams", "dup_n_grams") and v is not None:
            if isinstance(v, dict):
                v = sorted((int(n), float(t)) for n, t in v.items())
            v = tuple(tuple(x) for x in v)
        if k in ("stopwords", "boilerplate_patterns") and v is None:
            v = ()
        clean[k] = v
    try:
        return replace(base, **clean)
    except (TypeError, ValueError) as e:
        raise FilterConfigError(f"{where}: {e}") from e


def parse_filter_config(cfg: dict, path: str | None = None) -> FilterConfig:
    """Build a :class:`FilterConfig` from the YAML structure
    ``{defaults: {...}, languages: {xx: {...}}, tiers: {tier: {...}}}``; tier sections hold
    overrides applied on top of any language's values for documents of that tier; list-valued
    keys named ``extend_<key>``
    in a language section are appended to the defaults' list (e.g. extra boilerplate
    patterns).

    Raises:
        FilterConfigError: unknown keys or invalid values.
    """
    if not isinstance(cfg, dict):
        raise FilterConfigError(f"{path}: expected a mapping at the top level")
    unknown_top = set(cfg) - {"defaults", "languages", "tiers"}
    if unknown_top:
        k = sorted(unknown_top)[0]
        close = difflib.get_close_matches(k, ["defaults", "languages", "tiers"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FilterConfigError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}{hint}")
    defaults = _to_params(RuleParams(), dict(cfg.get("defaults") or {}), f"{path}: defaults")
    langs = {}
    for lang, sec in (cfg.get("languages") or {}).items():
        sec = dict(sec or {})
        for k in [k for k in sec if k.startswith("extend_")]:
            base_key = k[len("extend_"):]
            if base_key not in ("stopwords", "boilerplate_patterns"):
                raise FilterConfigError(f"{path}: languages.{lang}: {k} is not extendable")
            ext = sec.pop(k) or ()
            sec[base_key] = tuple(getattr(defaults, base_key)) + ((ext,) if isinstance(ext, str) else tuple(ext))
        langs[str(lang)] = _to_params(defaults, sec, f"{path}: languages.{lang}")
    tiers = {}
    for tier, sec in (cfg.get("tiers") or {}).items():
        sec = dict(sec or {})
        _to_params(defaults, sec, f"{path}: tiers.{tier}")  # validates keys and values
        tiers[str(tier)] = {k: ((v,) if k in _LIST_PARAMS and isinstance(v, str) else v) for k, v in sec.items()}
    return FilterConfig(defaults, langs, path, tiers)


@functools.lru_cache(maxsize=8)
def load_filter_config(path: str | None = None) -> FilterConfig:
    """Load (once per process) the per-language thresholds.

    Args:
        path: YAML file; default ``configs/filters.yaml`` of this repository.

    Raises:
        FileNotFoundError: the file does not exist.
        FilterConfigError: invalid content.
    """
    import yaml

    p = Path(path) if path else Path(__file__).resolve().parent.parent / "configs" / "filters.yaml"
    if not p.exists():
        raise FileNotFoundError(f"filter config not found: {p}")
    return parse_filter_config(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, str(p))


def filter_documents(docs: Iterable[tuple[str, str | None]], config: FilterConfig,
                     tier: str | None = None) -> list[RuleResult]:
    """Convenience: :func:`apply_rules` over ``(text, lang)`` pairs of one tier."""
    return [apply_rules(t, l, config.params(l, tier)) for t, l in docs]
