"""Distribution-free confidence bounds on quantiles (pure Python + NumPy), used to derive
filter thresholds from held-out scores only when there are enough documents.

A threshold set at an empirical quantile of ``n`` scores moves with the sample: the 20th
percentile of 20 documents is the 4th smallest score, and with 90% probability the true share
of documents below it lies anywhere between about 8% and 39%. These helpers choose an
ORDER STATISTIC instead, with the classical binomial bound (e.g. David & Nagaraja, "Order
Statistics", 3rd ed. 2003, sec. 7.1; Hahn & Meeker, "Statistical Intervals", 1991, sec. 5.3):
for i.i.d. scores and any continuous distribution F, the k-th smallest of n scores X_(k)
satisfies

    P( F(X_(k)) <= q ) = P( Binomial(n, q) >= k ).

So the largest k with ``P(Binomial(n, q) >= k) >= confidence`` gives a threshold that removes at
most a share ``q`` of new documents from the same distribution, with probability
``confidence``. Such a k exists only when ``1 - (1 - q) ** n >= confidence``, i.e. for
``n >= log(1 - confidence) / log(1 - q)`` (:func:`min_docs_for_bound`; e.g. 149 documents for
q = 0.02 at 95%, 598 for q = 0.005).
"""
from __future__ import annotations

import math

import numpy as np


def _binom_sf_ge(n: int, q: float) -> np.ndarray:
    """``P(Binomial(n, q) >= k)`` for k = 0..n (float64 array of n + 1), computed in log space."""
    k = np.arange(n + 1)
    if q <= 0.0:
        pmf = (k == 0).astype(np.float64)
    elif q >= 1.0:
        pmf = (k == n).astype(np.float64)
    else:
        lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
        logpmf = lg[n] - lg - lg[::-1] + k * math.log(q) + (n - k) * math.log1p(-q)
        pmf = np.exp(logpmf)
    return np.clip(np.cumsum(pmf[::-1])[::-1], 0.0, 1.0)


def min_docs_for_bound(q: float, confidence: float = 0.95) -> int:
    """Fewest documents for which :func:`lower_quantile_bound` exists: the smallest n with
    ``1 - (1 - q) ** n >= confidence`` (the sample minimum is then below the true q-quantile
    with that probability).

    Args:
        q: quantile in (0, 1).
        confidence: in (0, 1).

    Raises:
        ValueError: ``q`` or ``confidence`` outside (0, 1).
    """
    if not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"q and confidence must be in (0, 1), got {q}, {confidence}")
    n = math.ceil(math.log(1.0 - confidence) / math.log(1.0 - q))
    while 1.0 - (1.0 - q) ** n < confidence:  # guard against rounding of the logs
        n += 1
    while n > 1 and 1.0 - (1.0 - q) ** (n - 1) >= confidence:
        n -= 1
    return n


def lower_quantile_bound(values, q: float, confidence: float = 0.95) -> dict | None:
    """A score that, with probability ``confidence``, lies at or below the true ``q``-quantile
    of the distribution ``values`` were drawn from (so a filter "remove below it" removes at
    most a share ``q`` of new documents like them).

    Args:
        values: 1-D sequence of n finite scores (held-out documents, never training data).
        q: quantile in (0, 1), e.g. 0.02.
        confidence: in (0, 1), e.g. 0.95.

    Returns:
        None when ``n < min_docs_for_bound(q, confidence)``; else ``{"value": X_(k), "rank": k,
        "n_docs": n, "quantile": q, "confidence": confidence, "coverage": P(Binomial(n, q) >=
        k)}`` with k the largest rank whose coverage is at least ``confidence`` (1-based rank of
        the ascending scores).

    Raises:
        ValueError: ``q`` or ``confidence`` outside (0, 1).
    """
    xs = np.sort(np.asarray(list(values), dtype=np.float64))
    n = len(xs)
    if n < min_docs_for_bound(q, confidence):
        return None
    cover = _binom_sf_ge(n, q)
    ks = np.nonzero(cover[1:] >= confidence)[0] + 1
    k = int(ks.max())
    return {"value": float(xs[k - 1]), "rank": k, "n_docs": n, "quantile": q, "confidence": confidence,
            "coverage": round(float(cover[k]), 6)}


def upper_quantile_bound(values, q: float, confidence: float = 0.95) -> dict | None:
    """The mirror of :func:`lower_quantile_bound`: a score at or ABOVE the true ``q``-quantile
    with probability ``confidence`` (so "remove above it" removes at most ``1 - q`` of new
    documents like them). ``rank`` counts from the largest score (1 = the maximum).

    Returns:
        None when ``n < min_docs_for_bound(1 - q, confidence)``; else the same dict as
        :func:`lower_quantile_bound` with ``quantile`` = q.
    """
    xs = np.asarray(list(values), dtype=np.float64)
    r = lower_quantile_bound(-xs, 1.0 - q, confidence)
    if r is None:
        return None
    return {**r, "value": -r["value"], "quantile": q}
