"""Rouge-L F-measure on the project's own word segmentation, and the exact pruning bounds the
self-instruct diversity filter uses.

Self-Instruct (Wang et al. 2023, sec. 2.2) and PolyLM's MultiAlpaca (Wei et al. 2023, sec. 3)
keep a generated task only if the Rouge-L of its instruction against every instruction already
in the pool is below 0.7. The ``rouge_score`` package's default tokenizer keeps only
``[a-z0-9]`` runs, so Chinese, Japanese, Thai, Arabic or Russian text becomes an empty token
list and scores 0 against everything (huggingface/evaluate #465, #256). Here text is split with
:func:`filters.words.words` (rjieba / MeCab / newmm segmenters for zh / ja / th, the Unicode
word regex elsewhere) and lower-cased, so 0.7 means "70% of the words in common order" in every
language.

Rouge-L (Lin 2004, sec. 3.1) with ``beta = 1``: for token lists ``a`` (length ``n``) and ``b``
(length ``m``) and ``L = LCS(a, b)``, precision ``L/m``, recall ``L/n`` and
``F = 2PR/(P+R) = 2L/(n+m)``; 0.0 when either list is empty (as ``rouge_score``).

The LCS is computed bit-parallel (Allison & Dix 1986; Hyyrö 2004): one Python big-int
add/or/and per token of the shorter list, instead of the ``n x m`` table of ``rouge_score``.

Exact pruning (no false negatives), from ``F >= t``:

* length filter: ``m >= n * t / (2 - t)`` and ``m <= n * (2 - t) / t``;
* overlap bound: ``L <= |a ∩ b|`` (multiset intersection), so a pair reaching ``t`` shares at
  least ``ceil(t * n / (2 - t))`` tokens; with tokens made unique by their occurrence number
  (``("the", 0), ("the", 1)``) and ordered globally (rarest first), two lists sharing that many
  tokens share one within their first ``n - ceil(t*n/(2-t)) + 1`` tokens (the prefix filter
  of Chaudhuri et al. 2006 / Bayardo et al. 2007, "all-pairs" similarity joins).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence

from filters.words import words

__all__ = ["rouge_tokens", "lcs_length", "rouge_l", "rouge_l_text", "min_overlap",
           "prefix_length", "length_compatible", "occurrence_tokens", "prefix_tokens",
           "sequential_filter", "RougeTokenizer", "DEFAULT_THRESHOLD"]

#: Self-Instruct / MultiAlpaca diversity threshold: keep a task iff its Rouge-L F against every
#: pool instruction is < 0.7 (Wang et al. 2023 sec. 2.2; PolyLM sec. 3).
DEFAULT_THRESHOLD = 0.7

_EPS = 1e-9


def rouge_tokens(text: str, lang: str | None) -> list[str]:
    """Lower-cased words of ``text`` (:func:`filters.words.words` for ``lang``, an ISO 639-1
    code; ``None`` or unknown codes use the Unicode word regex). Raises ``TypeError`` if
    ``text`` is not a ``str``."""
    return [w.lower() for w in words(text, lang)]


class RougeTokenizer:
    """Adapter with the ``tokenize(text) -> list[str]`` method ``rouge_score.RougeScorer``
    accepts as ``tokenizer=``, so the package can score with our segmentation (tests, checks)."""

    def __init__(self, lang: str | None):
        self.lang = lang

    def tokenize(self, text: str) -> list[str]:
        """:func:`rouge_tokens` of ``text`` in this tokenizer's language."""
        return rouge_tokens(text, self.lang)


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of two token sequences (bit-parallel).

    Cost: ``O(min(n, m))`` big-integer operations on ``max(n, m)``-bit integers.
    """
    if len(a) < len(b):
        a, b = b, a
    n = len(a)
    if n == 0 or not b:
        return 0
    pm: dict = {}
    for i, t in enumerate(a):
        pm[t] = pm.get(t, 0) | (1 << i)
    mask = (1 << n) - 1
    v = mask
    get = pm.get
    for t in b:
        m = get(t)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & mask
    return n - v.bit_count()


def rouge_l(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Rouge-L F-measure (``beta = 1``) of two token lists: ``2 LCS / (n + m)``, in [0, 1];
    0.0 if either is empty. Symmetric."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 0.0
    return 2.0 * lcs_length(a, b) / (n + m)


def rouge_l_text(a: str, b: str, lang: str | None) -> float:
    """Rouge-L F-measure of two texts in language ``lang`` (see :func:`rouge_tokens`)."""
    return rouge_l(rouge_tokens(a, lang), rouge_tokens(b, lang))


def min_overlap(n: int, threshold: float) -> int:
    """Smallest LCS (hence multiset overlap) a list of ``n`` tokens needs with *any* other list
    to reach Rouge-L F ``>= threshold``: ``ceil(t * n / (2 - t))`` (at least 1 for n > 0).
    Raises ``ValueError`` unless ``0 < threshold <= 1``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if n <= 0:
        return 0
    return max(1, math.ceil(threshold * n / (2.0 - threshold) - _EPS))


def prefix_length(n: int, threshold: float) -> int:
    """Number of leading tokens (in the global order) of an ``n``-token list to index so that
    every pair with Rouge-L F ``>= threshold`` shares an indexed token: ``n - min_overlap + 1``."""
    if n <= 0:
        return 0
    return n - min_overlap(n, threshold) + 1


def length_compatible(n: int, m: int, threshold: float) -> bool:
    """False when lists of ``n`` and ``m`` tokens cannot reach Rouge-L F ``>= threshold``
    whatever their content (``2 min(n, m) / (n + m) < threshold``)."""
    if n <= 0 or m <= 0:
        return False
    return 2.0 * min(n, m) / (n + m) >= threshold - _EPS


def occurrence_tokens(tokens: Iterable[str]) -> list[tuple[str, int]]:
    """Tokens made unique by occurrence number: ``a b a`` -> ``(a,0) (b,0) (a,1)``, so that set
    intersection equals multiset intersection."""
    seen: dict[str, int] = {}
    out = []
    for t in tokens:
        k = seen.get(t, 0)
        seen[t] = k + 1
        out.append((t, k))
    return out


def prefix_tokens(tokens: Sequence[str], threshold: float,
                  rank: Callable[[tuple[str, int]], object]) -> list[tuple[str, int]]:
    """The prefix-filter keys of a token list: its :func:`occurrence_tokens` sorted by ``rank``
    (a global total order, rarest first is fastest) and cut to :func:`prefix_length`."""
    occ = sorted(set(occurrence_tokens(tokens)), key=rank)
    return occ[:prefix_length(len(tokens), threshold)]


def sequential_filter(pool: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
                      threshold: float = DEFAULT_THRESHOLD,
                      lcs: Callable[[Sequence, Sequence], int] | None = None
                      ) -> tuple[list[bool], list[float]]:
    """The plain Self-Instruct diversity filter: candidates in order, each compared with every
    instruction of the pool as it stands (the initial ``pool`` plus the candidates kept before
    it); kept iff its max Rouge-L F is ``< threshold``, and then added to the pool.

    Args:
        pool: token lists already in the pool.
        candidates: token lists to decide, in order.
        threshold: Rouge-L F at which a candidate is a near duplicate (0.7, module docstring).
        lcs: LCS function (default :func:`lcs_length`; the benchmark passes the DP table one).

    Returns:
        (keep, rouge_max): one bool and one float per candidate: for a kept candidate its max
        F against the pool as it stood (0.0 for an empty pool); for a dropped one the first F
        ``>= threshold`` found (the scan stops there).
    """
    lcs = lcs or lcs_length
    cur = [list(p) for p in pool]
    keep, best = [], []
    for c in candidates:
        mx = 0.0
        m = len(c)
        for p in cur:
            n = len(p)
            if n and m:
                f = 2.0 * lcs(p, c) / (n + m)
                if f > mx:
                    mx = f
                    if mx >= threshold:
                        break
        ok = mx < threshold
        keep.append(ok)
        best.append(mx)
        if ok:
            cur.append(list(c))
    return keep, best
