"""Exact quantiles from merged value counts (pipeline/quantiles.py), the rules stage's metric
percentiles without a pass over its output: checked against numpy's percentiles."""
from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest

from pipeline.quantiles import ValueCounts, ValueCountsParam, quantiles

QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 21, 100, 1000, 4567])
def test_quantiles_equal_numpy_inverted_cdf(n):
    rng = random.Random(n)
    for values in ([rng.randint(0, 50) for _ in range(n)],                  # many ties
                   [round(rng.random(), 4) for _ in range(n)],              # 4-digit ratios, as in meta
                   [round(rng.lognormvariate(3, 2), 4) for _ in range(n)]):  # long tail
        got = quantiles(Counter(values), QS)
        want = [float(np.percentile(values, 100 * q, method="inverted_cdf")) for q in QS]
        assert got == want, (n, values[:10])


def test_counts_merge_like_one_pass_and_pickle():
    rng = random.Random(0)
    docs = [(rng.choice("ab"), {"x": rng.randint(0, 9), "y": round(rng.random(), 4)} if rng.random() < 0.9 else None)
            for _ in range(3000)]
    whole = ValueCounts()
    for g, m in docs:
        whole.add_document(g, m)
    param = ValueCountsParam()
    merged = param.zero(ValueCounts())
    for i in range(0, len(docs), 250):  # per batch, as the accumulator merges them
        part = ValueCounts()
        for g, m in docs[i:i + 250]:
            part.add_document(g, m)
        merged = param.addInPlace(merged, pickle.loads(pickle.dumps(part)))
    assert merged.documents() == whole.documents() == dict(Counter(g for g, _ in docs))
    assert merged.quantiles(QS) == whole.quantiles(QS)
    for g in "ab":
        xs = [m["x"] for gg, m in docs if gg == g and m]
        assert merged.quantiles(QS)[g]["x"] == [float(np.percentile(xs, 100 * q, method="inverted_cdf")) for q in QS]


def test_int_and_float_of_one_value_are_one_value_and_none_is_skipped():
    c = ValueCounts()
    c.add_document("en", {"w": 3})
    c.add_document("en", {"w": 3.0, "z": None})
    c.add_document("en", None)
    assert c.documents() == {"en": 3} and c.counts["en"]["w"] == Counter({3: 2}) and "z" not in c.counts["en"]
    with pytest.raises(ValueError):
        quantiles(Counter(), [0.5])
    with pytest.raises(ValueError):
        quantiles(Counter({1: 1}), [1.5])
