"""A held-out set of clean paragraphs in the 18 languages, for checking the rule filters on
text they were never tuned on (issue 14, cause 2).

Source: Leipzig Wortschatz news/web sentences (``leipzig-sentences/<xx>.txt``, ~1000 per
language, ja 412, zh 729). ``configs/filters.yaml`` was checked on NTREX and UDHR only (see its
comments), so no rule threshold was fitted to these sentences; nothing here may be used to fit
one either (it is a check, not a training set).

Paragraphs are built Wikipedia-like from consecutive sentences (the order of the file, which is
Leipzig's), in these shapes (``kind``):

* ``para``: one paragraph on one line, 80-160 words (a Wikipedia paragraph) (:func:`filters.words.words`);
* ``para_paren`` / ``para_colon`` / ``para_digit``: the same paragraph ending in ``)``, ``:`` or
  a number instead of its final punctuation (a paragraph introducing a list, ending in a
  parenthesised year or on a figure);
* ``multi``: 3-5 such paragraphs, one per line, the second one ending in ``:``;
* ``numeric``: a paragraph of the language's sentences holding at least 3 digits and ending in
  terminal punctuation, in file order (census-, sport- and finance-like prose).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

LANGS = ("zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl", "ar", "tr", "he", "ja", "ko", "th", "vi", "id")
KINDS = ("para", "para_paren", "para_colon", "para_digit", "multi", "numeric")
_TERMINAL = re.compile(r"[.!?。！？]\W*$")
_END = re.compile(r"[\s.!?。！？…\"'”»」』)\]]+$")


def _paragraphs(sents: list[str], lang: str, rng: random.Random) -> list[str]:
    from filters.words import words

    out, cur, n, target = [], [], 0, rng.randint(80, 160)
    sep = "" if lang in ("zh", "ja") else " "
    for s in sents:
        cur.append(s)
        n += len(words(s, lang))
        if n >= target:
            out.append(sep.join(cur))
            cur, n, target = [], 0, rng.randint(80, 160)
    return out


def heldout_documents(root: str | Path, langs=LANGS, per_kind: int = 25, seed: int = 14) -> list[tuple[str, str, str]]:
    """Held-out clean documents.

    Args:
        root: the sample data root (holds ``leipzig-sentences/``).
        langs: ISO 639-1 codes.
        per_kind: at most this many documents per language and kind.

    Returns:
        list of ``(lang, kind, text)``.
    """
    rng = random.Random(seed)
    docs = []
    for lang in langs:
        sents = [s.strip() for s in (Path(root) / "leipzig-sentences" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
                 if s.strip()]
        paras = _paragraphs(sents, lang, rng)
        base = paras[:per_kind]
        docs += [(lang, "para", p) for p in base]
        for kind, tail in (("para_paren", lambda: f" ({rng.randint(1950, 2023)})"),
                           ("para_colon", lambda: ":"),
                           ("para_digit", lambda: f" {rng.randint(2, 9999)}")):
            docs += [(lang, kind, _END.sub("", p) + tail()) for p in paras[:per_kind]]
        multi = []
        for i in range(0, len(paras) - 4, 4):
            group = paras[i:i + rng.randint(3, 5)]
            group[1] = _END.sub("", group[1]) + ":"
            multi.append("\n".join(group))
        docs += [(lang, "multi", m) for m in multi[:per_kind]]
        digits = [s for s in sents if sum(c.isdigit() for c in s) >= 3 and _TERMINAL.search(s)]
        docs += [(lang, "numeric", p) for p in _paragraphs(digits, lang, rng)[:per_kind]]
    return docs


def rules_kept(docs, tier: str = "web") -> dict:
    """Run :func:`filters.rules.apply_rules` (the configured thresholds, ``tier``) on ``docs``.

    Returns:
        ``{lang: {"docs": n, "kept": k, "by_kind": {kind: [n, k]}, "reasons": {reason: count}}}``.
    """
    from filters.rules import apply_rules, load_filter_config

    cfg = load_filter_config()
    out: dict = {}
    for lang, kind, text in docs:
        r = apply_rules(text, lang, cfg.params(lang, tier))
        d = out.setdefault(lang, {"docs": 0, "kept": 0, "by_kind": {}, "reasons": {}})
        bk = d["by_kind"].setdefault(kind, [0, 0])
        d["docs"] += 1
        bk[0] += 1
        if r.reason is None:
            d["kept"] += 1
            bk[1] += 1
        else:
            d["reasons"][r.reason] = d["reasons"].get(r.reason, 0) + 1
    return out
