"""Connected components (large-star / small-star on Spark DataFrames) against networkx."""
from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.components import ComponentsDidNotConverge, connected_components


def _expected(edge_list, extra_nodes=()):
    g = nx.Graph()
    g.add_nodes_from(extra_nodes)
    g.add_edges_from(edge_list)
    out = {}
    for comp in nx.connected_components(g):
        m = min(comp)
        for n in comp:
            out[n] = m
    return out


def _run(spark, edge_list, **kw):
    df = spark.createDataFrame(edge_list, "u long, v long")
    comps, rounds = connected_components(df, verbose=False, **kw)
    got = {r["node"]: r["component"] for r in comps.collect()}
    return got, rounds


def _relabel(edges, rng, base):
    """Map the nodes of ``edges`` to random distinct ids >= base (so chains and stars are not
    numbered in an order that helps the algorithm)."""
    nodes = sorted({n for e in edges for n in e})
    ids = rng.sample(range(base, base + 50 * len(nodes)), len(nodes))
    m = dict(zip(nodes, ids))
    return [(m[a], m[b]) for a, b in edges]


def test_families_match_networkx(spark):
    """Long chains, a 10k-leaf star, many tiny components and one giant random component,
    all in one graph with shuffled labels."""
    rng = random.Random(7)
    edges = []
    base = 0
    # two long chains (one numbered monotonically, one shuffled)
    edges += [(base + i, base + i + 1) for i in range(1500)]
    base += 10_000
    edges += _relabel([(i, i + 1) for i in range(1500)], rng, base)
    base += 200_000
    # a star of 10,000 leaves whose centre is the LARGEST id, and one whose centre is random
    edges += [(base + 10_000, base + i) for i in range(10_000)]
    base += 20_000
    edges += _relabel([(0, i) for i in range(1, 10_001)], rng, base)
    base += 1_000_000
    # many tiny components: pairs and triangles, in both directions, with duplicates
    for k in range(1500):
        a, b, c = base + 3 * k, base + 3 * k + 1, base + 3 * k + 2
        edges += [(b, a), (a, b), (a, a)]
        if k % 2:
            edges += [(c, b), (a, c)]
    base += 10_000
    # one giant component: random graph on 3,000 nodes (a spanning path + random extra edges)
    giant = [(i, i + 1) for i in range(2999)] + [tuple(rng.sample(range(3000), 2)) for _ in range(3000)]
    edges += _relabel(giant, rng, base)
    rng.shuffle(edges)
    got, rounds = _run(spark, edges)
    assert got == _expected(edges)
    assert rounds < 40


def test_partitioning_does_not_change_the_answer(spark):
    rng = random.Random(3)
    edges = [tuple(rng.sample(range(400), 2)) for _ in range(300)]
    want = _expected(edges)
    for parts in (1, 7):
        df = spark.createDataFrame(edges, "u long, v long").repartition(parts)
        comps, _ = connected_components(df, verbose=False)
        assert {r["node"]: r["component"] for r in comps.collect()} == want


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=120))
def test_random_graphs_match_networkx(spark, edge_list):
    got, _ = _run(spark, edge_list)
    assert got == _expected(edge_list)


def test_empty_and_self_loops(spark):
    got, rounds = _run(spark, [])
    assert got == {} and rounds == 0
    got, _ = _run(spark, [(5, 5), (3, 3), (3, 9)])
    assert got == {5: 5, 3: 3, 9: 3}


def test_max_iter_raises(spark):
    with pytest.raises(ComponentsDidNotConverge):
        _run(spark, [(i, i + 1) for i in range(200)], max_iter=1)
