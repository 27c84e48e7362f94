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

:func:`indexed_filter` is the plain sequential filter with these bounds in front of the LCS:
an inverted index over the prefix-filter keys of the pool as it stands (a kept candidate is
indexed before the next one is decided), so a candidate is compared exactly only with the
pool instructions that share a prefix key, pass the length filter and whose token-multiset
overlap bound ``2 |a ∩ b| / (n + m)`` reaches the floor. ``F <= 2 |a ∩ b| / (n + m)`` because
an LCS is a common sub-multiset, so no pair with ``F >= floor`` is skipped: the decisions are
the plain filter's, not an approximation.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence

from filters.words import words

__all__ = ["rouge_tokens", "lcs_length", "rouge_l", "rouge_l_text", "min_overlap",
           "prefix_length", "length_compatible", "occurrence_tokens", "prefix_tokens",
           "sequential_filter", "indexed_filter", "RougeTokenizer", "DEFAULT_THRESHOLD"]

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


def indexed_filter(pool: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
                   threshold: float = DEFAULT_THRESHOLD, report_floor: float | None = None,
                   grow: bool = True, lcs: Callable[[Sequence, Sequence], int] | None = None
                   ) -> tuple[list[bool], list[float], list[float]]:
    """:func:`sequential_filter`'s decisions with exact pruning (module docstring).

    Token keys are the :func:`occurrence_tokens` of every list, ranked rarest first over
    ``pool + candidates`` (ties by the token, so the order is a pure function of the input).
    The index holds each pool list's first :func:`prefix_length` keys at ``report_floor``; a
    candidate probes it with its own prefix; the pairs found pass the length filter and the
    overlap bound (both at ``report_floor``) before the exact bit-parallel LCS. With ``grow``
    a kept candidate is indexed before the next candidate is probed: "the pool as it stands".

    Args:
        pool: token lists already in the pool (e.g. :func:`rouge_tokens` output).
        candidates: token lists to decide, in generation order.
        threshold: Rouge-L F at which a candidate is a near duplicate (0.7, Self-Instruct sec.
            2.2). Must be in (0, 1].
        report_floor: every pair with F at or above it is scored exactly (default
            ``threshold``: decisions only). Must be in (0, threshold].
        grow: add kept candidates to the pool as the plain filter does; ``False`` compares
            every candidate with ``pool`` only (``new_max`` all 0.0, ``keep`` = ``pool_max <
            threshold``).
        lcs: LCS function on lists of int word ids (default :func:`lcs_length`; tests pass
            a counting one).

    Returns:
        ``(keep, pool_max, new_max)``, one entry per candidate: kept or not; the max F against
        ``pool``; the max F against the candidates kept before it. A max is exact when it is
        ``>= report_floor``; below the floor it is a lower bound (0.0 if no pair was scored).
        Empty lists score 0.0 against everything (kept, never indexed).

    Raises:
        ValueError: ``threshold`` or ``report_floor`` out of range.
    """
    floor = threshold if report_floor is None else report_floor
    if not 0.0 < threshold <= 1.0 or not 0.0 < floor <= threshold:
        raise ValueError(f"need 0 < report_floor <= threshold <= 1, got {floor}, {threshold}")
    import numpy as np

    lcs = lcs or lcs_length
    docs = [list(d) for d in pool] + [list(d) for d in candidates]
    n_pool = len(pool)
    occ = [occurrence_tokens(d) for d in docs]
    df = Counter()
    for o in occ:
        df.update(o)
    rank = {k: i for i, k in enumerate(sorted(df, key=lambda k: (df[k], k)))}
    keys = [sorted(rank[k] for k in o) for o in occ]     # each list's keys, rarest first
    sets = [frozenset(k) for k in keys]                  # |a ∩ b| as a set intersection
    word_id: dict[str, int] = {}
    ids = [[word_id.setdefault(t, len(word_id)) for t in d] for d in docs]  # ints: faster LCS
    lens = [len(d) for d in docs]
    lens_np = np.asarray(lens, dtype=np.int64)
    index: dict[int, list[int]] = {}

    def add(i: int) -> None:
        for r in keys[i][:prefix_length(lens[i], floor)]:
            lst = index.get(r)
            if lst is None:
                index[r] = [i]
            else:
                lst.append(i)

    for i in range(n_pool):
        if lens[i]:
            add(i)
    keep: list[bool] = []
    pool_max: list[float] = []
    new_max: list[float] = []
    for j in range(n_pool, len(docs)):
        m = lens[j]
        pm = nm = 0.0
        if m:
            probe = [index[r] for r in keys[j][:prefix_length(m, floor)] if r in index]
            found = set().union(*probe) if probe else ()
            if found:
                a = np.fromiter(found, np.int64, len(found))
                la = lens_np[a]
                # length filter 2 min(n, m) / (n + m) >= floor, in the JVM-free vector form
                ok = 2 * np.minimum(la, m) >= floor * (la + m) - _EPS
                sb, idb = sets[j], ids[j]
                for i in a[ok].tolist():
                    tot = lens[i] + m
                    if 2 * len(sets[i] & sb) < floor * tot - _EPS:   # overlap bound
                        continue
                    f = 2.0 * lcs(ids[i], idb) / tot
                    if i < n_pool:
                        if f > pm:
                            pm = f
                    elif f > nm:
                        nm = f
        ok_j = pm < threshold and nm < threshold
        keep.append(ok_j)
        pool_max.append(pm)
        new_max.append(nm)
        if ok_j and grow and m:
            add(j)
    return keep, pool_max, new_max
