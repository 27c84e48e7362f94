"""Word segmentation for the rule filters and the dedup shingler: one function, :func:`words`.

Languages written without spaces between words are segmented with maintained libraries; the
others are split with one Unicode-aware regular expression:

========  ==============================================================================
``zh``    ``rjieba`` (Rust port of jieba, same dictionary and HMM; ~13x faster than
          ``jieba`` 0.42.1 here, 98.5% of NTREX sentences segmented identically)
``ja``    MeCab through ``fugashi`` with the ``unidic-lite`` dictionary (``-Owakati``)
``th``    ``nlpo3`` (Rust port of PyThaiNLP's ``newmm`` maximal matching) with PyThaiNLP's own
          word list (``pythainlp/corpus/words_th.txt``); ~6x faster than
          ``pythainlp.tokenize.word_tokenize(engine="newmm")``, same algorithm and dictionary
``ko``    space-separated units (eojeol), punctuation stripped
others    Unicode word runs: letters, combining marks and digits, with internal ``'``/``’``/``-``
          joiners (``don't``, ``e-mail``) and digit groups (``3.5``, ``1,000``, ``12:30``);
          French and Italian elisions are split after the apostrophe (``l'homme`` ->
          ``l'``, ``homme``) so the FineWeb-2 stopwords ``l'``/``d'`` match; Han, kana and
          Thai characters inside other languages' text become one-character tokens, so a
          Chinese phrase in an English page is not one giant "word"
========  ==============================================================================

Every returned token contains at least one letter, digit or mark: whitespace and
punctuation are never words. Segmenters are created once per process (module-level
caches), and the output depends only on ``(text, lang)``.
"""
from __future__ import annotations

import functools
import re
import sys
import unicodedata

__all__ = ["words", "segmenter_name", "SEGMENTED_LANGS", "is_word"]

#: Languages with a dictionary/statistical segmenter (see module docstring).
SEGMENTED_LANGS = ("zh", "ja", "th")

# Letters of scripts written without spaces: inside a space-separated language's text each of
# these characters becomes its own token (BERT's BasicTokenizer does the same for Han).
_NOSPACE_RANGES = (
    "\u3040-\u30ff"        # Hiragana, Katakana
    "\u31f0-\u31ff"        # Katakana phonetic extensions
    "\u3400-\u4dbf"        # CJK Extension A
    "\u4e00-\u9fff"        # CJK Unified Ideographs
    "\uf900-\ufaff"        # CJK Compatibility Ideographs
    "\uff66-\uff9f"        # half-width Katakana
    "\u0e00-\u0e7f"        # Thai
    "\u0e80-\u0eff"        # Lao
    "\u1780-\u17ff"        # Khmer
    "\u1000-\u109f"        # Myanmar
    "\U00020000-\U0003ffff"  # CJK Extensions B-H
)


def _mark_class() -> str:
    """Regex character-class body for every combining mark (Mn, Mc, Me) in the BMP.

    Python's ``\\w`` excludes combining marks (Thai vowels, Devanagari matras, Hebrew niqqud,
    Arabic harakat), which would split words in the middle.
    """
    ranges = []
    start = prev = None
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)) in ("Mn", "Mc", "Me"):
            if start is None:
                start = prev = cp
            elif cp == prev + 1:
                prev = cp
            else:
                ranges.append((start, prev))
                start = prev = cp
    if start is not None:
        ranges.append((start, prev))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


_MARKS = _mark_class()
_NOSPACE_RE_1 = re.compile(f"[{_NOSPACE_RANGES}]")


def _word_class() -> str:
    """Class body of the BMP word characters (``\\w`` or a combining mark) outside the no-space
    scripts: one explicit class is much faster than a per-character lookahead."""
    w1 = re.compile(rf"[\w{_MARKS}]")
    out, start, prev = [], None, None
    for cp in range(0x10000):
        ch = chr(cp)
        ok = w1.match(ch) is not None and _NOSPACE_RE_1.match(ch) is None and not (0xD800 <= cp <= 0xDFFF)
        if ok:
            if start is None:
                start = prev = cp
            elif cp == prev + 1:
                prev = cp
            else:
                out.append((start, prev))
                start = prev = cp
    if start is not None:
        out.append((start, prev))
    # astral-plane characters are not word characters here, except the CJK extension
    # ideographs, which are in _NOSPACE_RANGES (one token per character)
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in out)


# a word character: \w (letters, digits, underscore) or a combining mark, but not a letter of a
# no-space script (those are matched one by one).
_W = f"[{_word_class()}]"
_DIGIT_GROUP = r"\d+(?:[.,:/]\d+)+"
_JOINED = rf"{_W}+(?:['’\-]{_W}+)*"
_NOSPACE_CHAR = rf"[{_NOSPACE_RANGES}][{_MARKS}]*"
_GENERIC_RE = re.compile(rf"{_DIGIT_GROUP}|{_JOINED}|{_NOSPACE_CHAR}")
# French / Italian: elided article or preposition ("l'", "d'", "qu'", "dell'") is its own word.
_ELISION_RE = re.compile(rf"{_DIGIT_GROUP}|{_W}+['’](?={_W})|{_JOINED}|{_NOSPACE_CHAR}")
_ELISION_LANGS = frozenset({"fr", "it", "ca"})
# Korean: quotes around a noun are followed directly by a particle (‘것’을), so apostrophes are
# never word-internal there; only hyphens join.
_KO_RE = re.compile(rf"{_DIGIT_GROUP}|{_W}+(?:-{_W}+)*|{_NOSPACE_CHAR}")
# A segmenter token is a word iff it contains a letter, digit or mark.
_HAS_WORD_CHAR = re.compile(rf"[\w{_MARKS}]")
_TOKEN_WITH_WORD_CHAR = re.compile(rf"[^\x00]*[\w{_MARKS}][^\x00]*")


def is_word(token: str) -> bool:
    """True if ``token`` contains at least one letter, digit or combining mark."""
    return _HAS_WORD_CHAR.search(token) is not None


@functools.lru_cache(maxsize=None)
def _zh():
    try:
        import rjieba
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise ImportError("Chinese word segmentation needs `rjieba` (pinned in pyproject.toml)") from e
    return rjieba.cut


@functools.lru_cache(maxsize=None)
def _ja():
    try:
        import fugashi
        import unidic_lite  # noqa: F401  (the dictionary fugashi finds by default)
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise ImportError("Japanese word segmentation needs `fugashi` and `unidic-lite`") from e
    return fugashi.Tagger("-Owakati").parse


_TH_DICT_NAME = "polycorpus_pythainlp_words_th"


@functools.lru_cache(maxsize=None)
def _th():
    import importlib.util
    import os

    try:
        import nlpo3
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise ImportError("Thai word segmentation needs `nlpo3` (pinned in pyproject.toml)") from e
    # PyThaiNLP's word list, located without importing pythainlp.corpus (which takes seconds)
    spec = importlib.util.find_spec("pythainlp")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise ImportError("Thai word segmentation needs `pythainlp` (for its dictionary words_th.txt)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "corpus", "words_th.txt")
    if not os.path.exists(path):  # pragma: no cover - broken installation
        raise FileNotFoundError(f"PyThaiNLP dictionary not found: {path}")
    msg, ok = nlpo3.load_dict(path, _TH_DICT_NAME)
    if not ok:  # pragma: no cover - broken installation
        raise RuntimeError(f"nlpo3 could not load the PyThaiNLP dictionary {path}: {msg}")
    seg = nlpo3.segment
    return lambda text: seg(text, _TH_DICT_NAME)


def segmenter_name(lang: str | None) -> str:
    """Human-readable name of the segmenter :func:`words` uses for ``lang`` (for reports)."""
    return {"zh": "rjieba", "ja": "fugashi+unidic-lite", "th": "nlpo3-newmm"}.get(
        lang or "", "regex-elision" if lang in _ELISION_LANGS else "regex")


#: Longest piece (characters) handed to a segmenter in one call. MeCab (fugashi) crashes the
#: process with a segmentation fault on a Japanese string of about 2.5 MB (issue 14, cause 7);
#: 65,536 characters are at most 256 KiB of UTF-8, 10x below that, and longer than any
#: sentence, so pieces are cut at a line or sentence end.
MAX_SEGMENT_CHARS = 65536
_PIECE_ENDS = ("\n", "。", "．", "！", "？", "!", "?", ".", " ", "、", "，", ",")


def bounded_pieces(text: str, max_chars: int = MAX_SEGMENT_CHARS) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``max_chars`` characters whose
    concatenation is ``text``. Each cut is after the last line end in the piece's second half,
    else the last sentence end / space / comma there, else at ``max_chars`` (a word may then be
    split in two: only in a text with no line or sentence end for ``max_chars/2`` characters).

    Raises:
        ValueError: ``max_chars < 2``.
    """
    if max_chars < 2:
        raise ValueError("max_chars must be >= 2")
    out, i, n = [], 0, len(text)
    while n - i > max_chars:
        cut = -1
        for end in _PIECE_ENDS:
            j = text.rfind(end, i + max_chars // 2, i + max_chars)
            if j >= 0:
                cut = j + 1
                break
        if cut < 0:
            cut = i + max_chars
        out.append(text[i:cut])
        i = cut
    out.append(text[i:])
    return out


def _segment_one(text: str, lang: str) -> list[str]:
    if lang == "zh":
        return _zh()(text)
    if lang == "ja":
        return _ja()(text).split()
    return _th()(text)


def _segment(text: str, lang: str) -> list[str]:
    if len(text) <= MAX_SEGMENT_CHARS:
        return _segment_one(text, lang)
    return [t for piece in bounded_pieces(text) for t in _segment_one(piece, lang)]


def words(text: str, lang: str | None) -> list[str]:
    """Split ``text`` into words for language ``lang``.

    Args:
        text: any Unicode string (may be empty, contain newlines, mixed scripts).
        lang: ISO 639-1 code (``zh``, ``ja``, ``th`` use segmenters, fed pieces of at most
            :data:`MAX_SEGMENT_CHARS` characters; any other value,
            including ``None`` or an unknown code, uses the Unicode regex splitter).

    Returns:
        list[str] of words in text order; every token contains a letter, digit or mark
        (punctuation and whitespace are dropped). Deterministic for a given input.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ImportError: the segmenter library for ``lang`` is not installed.
    """
    if not isinstance(text, str):
        raise TypeError(f"words() expects str, got {type(text).__name__}")
    if not text:
        return []
    if lang in ("zh", "ja", "th"):
        try:
            toks = _segment(text, lang)
        except UnicodeEncodeError:
            # lone surrogates (not encodable as UTF-8) cannot pass to the C/Rust segmenters:
            # segment with each one replaced by "?" (never a word character)
            text = text.encode("utf-8", "replace").decode("utf-8")
            toks = _segment(text, lang)
    elif lang in _ELISION_LANGS:
        return _ELISION_RE.findall(text)
    elif lang == "ko":
        return _KO_RE.findall(text)
    else:
        return _GENERIC_RE.findall(text)
    if "\x00" in text:  # cannot use \x00 as a separator below
        has = _HAS_WORD_CHAR.search
        return [t for t in toks if has(t) is not None]
    # keep the tokens that contain a word character, in one C-level pass
    return _TOKEN_WITH_WORD_CHAR.findall("\x00".join(toks))


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    lang_arg = sys.argv[1] if len(sys.argv) > 1 else "en"
    for line in sys.stdin:
        print(" | ".join(words(line.rstrip("\n"), lang_arg)))
