"""Exact per-group metric quantiles collected during a stage's write pass (no second pass).

A per-document stage's batch callable counts every metric value it computes,
per group (the document's language) and metric, in a :class:`ValueCounts`; the per-batch counts
travel to the driver through a Spark accumulator (:class:`ValueCountsParam`), merged per task
and then per stage, so the quantiles need no read of the written output. The counts are exact:
a value is counted as it is written (``filters.rules.main_metrics`` rounds floats to 4 digits,
so a ratio in [0, 1] has at most 10,001 distinct values and the counts stay small; integer
metrics have as many distinct values as distinct lengths), and the quantiles are exact too:
:func:`quantile` returns the smallest value ``v`` such that at least a fraction ``q`` of the
values are ``<= v`` (numpy's ``method="inverted_cdf"``), which is the definition Spark's
``percentile_approx`` approximates (within a rank error of ``n / accuracy``; 1000 gave 0.1%
of the documents).

Accumulator semantics: Spark merges an accumulator update of a result-stage task once per
partition (a retried or speculative copy of a task is not counted twice), which is the case
for a ``mapInArrow`` that feeds a parquet write directly. A plan that recomputes the pass (a
failed job run again, a cached frame evicted and recomputed) could count twice, so the stage
checks the documents counted against its accounting (:meth:`ValueCounts.documents`) and
falls back to a Spark pass over its output when they differ.
"""
from __future__ import annotations

import math
from collections import Counter


class ValueCounts:
    """Mergeable exact counts: ``{group: {metric: Counter{value: documents}}}`` plus the
    documents seen per group (also those without metrics).

    Values are Python ints/floats (compared as numbers: ``3`` and ``3.0`` are one value); NaN
    sorts after every number, as in Spark.
    """

    __slots__ = ("counts", "docs")

    def __init__(self):
        self.counts: dict[str, dict[str, Counter]] = {}
        self.docs: Counter = Counter()

    def add_document(self, group: str, metrics: dict | None) -> None:
        """Count one document of ``group`` and, when given, each ``{metric: value}`` of it
        (``None`` values are skipped, as Spark's aggregates skip nulls)."""
        self.docs[group] += 1
        if metrics:
            g = self.counts.get(group)
            if g is None:
                g = self.counts[group] = {}
            for k, v in metrics.items():
                if v is None:
                    continue
                c = g.get(k)
                if c is None:
                    c = g[k] = Counter()
                c[v] += 1

    def merge(self, other: "ValueCounts") -> "ValueCounts":
        """Add ``other``'s counts into this one (in place); returns self."""
        self.docs.update(other.docs)
        for group, metrics in other.counts.items():
            g = self.counts.setdefault(group, {})
            for k, c in metrics.items():
                if k in g:
                    g[k].update(c)
                else:
                    g[k] = Counter(c)
        return self

    def documents(self) -> dict[str, int]:
        """Documents counted per group."""
        return dict(self.docs)

    def quantiles(self, qs) -> dict[str, dict[str, list[float]]]:
        """``{group: {metric: [quantile(q) for q in qs]}}`` for every metric with a value."""
        return {group: {k: quantiles(c, qs) for k, c in metrics.items() if c}
                for group, metrics in self.counts.items()}

    def __getstate__(self):
        return (self.counts, self.docs)

    def __setstate__(self, state):
        self.counts, self.docs = state


class ValueCountsParam:
    """pyspark ``AccumulatorParam`` for :class:`ValueCounts` (``sc.accumulator(ValueCounts(),
    ValueCountsParam())``); duck-typed, so this module does not import pyspark."""

    def zero(self, value: ValueCounts) -> ValueCounts:
        return ValueCounts()

    def addInPlace(self, a: ValueCounts, b: ValueCounts) -> ValueCounts:  # noqa: N802 (pyspark's name)
        return a.merge(b)


def _sort_key(v):
    return (v != v, v)  # NaN last


def quantiles(counts: Counter, qs) -> list[float]:
    """Exact quantiles of the values counted in ``counts`` (``{value: count}``, counts > 0).

    For each ``q`` in [0, 1]: the smallest value ``v`` such that at least ``ceil(q * n)`` of
    the ``n`` values are ``<= v`` (the first value for ``q = 0``); equal to
    ``numpy.percentile(values, 100 * q, method="inverted_cdf")``.

    Raises:
        ValueError: ``counts`` is empty or a ``q`` is outside [0, 1].
    """
    items = sorted(((v, c) for v, c in counts.items() if c > 0), key=lambda vc: _sort_key(vc[0]))
    n = sum(c for _, c in items)
    if not n:
        raise ValueError("no values counted")
    out = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} outside [0, 1]")
        # round first: 0.95 * 20 is 19.000000000000004 in binary floating point, not 19
        rank = max(1, math.ceil(round(q * n, 9)))
        cum = 0
        for v, c in items:
            cum += c
            if cum >= rank:
                out.append(float(v))
                break
    return out
