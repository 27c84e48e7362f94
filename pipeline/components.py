"""Connected components of a large undirected graph with Spark DataFrames (no GraphFrames).

Algorithm: alternating *large-star* and *small-star* rounds (Kiveris, Lattanzi, Mirrokni,
Rastogi, Vassilvitskii, "Connected Components in MapReduce and Beyond", SoCC 2014, sec. 3).
Nodes are ``long`` ids; every round is a couple of shuffles, the number of rounds grows like
``O(log^2 n)`` in the worst case and is small in practice (a 2,000-node path needs about a
dozen). The graph shrinks towards stars centred on each component's smallest node:

* large-star(u): with ``m(u) = min(N(u) + {u})``, connect every neighbour ``v > u`` to ``m(u)``
  (and drop u's other edges);
* small-star(u): with ``N'(u) = {v in N(u): v <= u}`` and ``m(u) = min(N'(u) + {u})``, connect
  every node of ``N'(u) + {u}`` to ``m(u)``.

Both steps keep the connectivity of every component; rounds repeat until the graph is a
forest of stars centred on their minimum node (checked exactly: no edge's smaller end is the
larger end of another edge), which is the algorithm's fixed point. The lineage is cut after every round with a checkpoint
(``SparkContext.setCheckpointDir`` set: reliable checkpoint; else a local checkpoint).
"""
from __future__ import annotations

from pipeline.stage import log


class ComponentsDidNotConverge(RuntimeError):
    """Large-star / small-star did not reach a fixed point within ``max_iter`` rounds."""


def _canonical(edges):
    """Undirected edges as distinct ``(u, v)`` with ``u > v``; self-loops dropped."""
    from pyspark.sql import functions as F

    return (edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
            .where(F.col("u") != F.col("v")).distinct())


def _large_star(edges):
    """Large-star on canonical edges; one shuffle (a window over ``u``). The output edges
    ``(v, m(u))`` have ``v > m(u)`` (already oriented) but may repeat."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    both = edges.select("u", "v").union(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    m = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    return (both.withColumn("m", m).where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")))


def _small_star(edges):
    """Small-star on edges with ``u > v`` (so ``v`` ranges over N'(u)); one shuffle."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    m = F.min("v").over(Window.partitionBy("u"))
    pairs = F.array(F.struct(F.col("v").alias("a"), F.col("m").alias("b")),
                    F.struct(F.col("u").alias("a"), F.col("m").alias("b")))
    return (edges.withColumn("m", m).select(F.explode(pairs).alias("p"))
            .select(F.col("p.a").alias("u"), F.col("p.b").alias("v")))


def _is_star_forest(edges) -> bool:
    """True if every node has at most one edge to a smaller node and no edge's smaller end has
    an edge to a smaller node: then every component is a star centred on its smallest node.
    One shuffle: per node, the number of edges where it is the larger end and whether it is
    ever the smaller end."""
    from pyspark.sql import functions as F

    ends = (edges.select(F.col("u").alias("x"), F.lit(1).alias("src"), F.lit(0).alias("dst"))
            .union(edges.select(F.col("v").alias("x"), F.lit(0).alias("src"), F.lit(1).alias("dst"))))
    per = ends.groupBy("x").agg(F.sum("src").alias("s"), F.max("dst").alias("d"))
    return per.where((F.col("s") > 1) | ((F.col("s") >= 1) & (F.col("d") == 1))).isEmpty()


def _cut(df, reliable: bool):
    return df.checkpoint(eager=True) if reliable else df.localCheckpoint(eager=True)


def connected_components(edges, max_iter: int = 100, verbose: bool = True):
    """Connected components of the undirected graph given by ``edges``.

    Args:
        edges: DataFrame with long (or int) columns ``u`` and ``v``; duplicates, both
            directions and self-loops are allowed.
        max_iter: maximum number of (large-star, small-star) rounds.
        verbose: log the edge count of every round.

    Returns:
        ``(components, rounds)``: a DataFrame ``node long, component long`` with one row per
        node that appears in ``edges`` (self-loop-only nodes included), ``component`` being
        the smallest node id of its component; and the number of (large-star, small-star)
        rounds run (0 when the input already is a star forest).

    Raises:
        ComponentsDidNotConverge: no fixed point after ``max_iter`` rounds.
    """
    from pyspark.sql import functions as F

    spark = edges.sparkSession
    reliable = spark.sparkContext.getCheckpointDir() is not None
    e = edges.select(F.col("u").cast("long").alias("u"), F.col("v").cast("long").alias("v"))
    nodes = e.select(F.col("u").alias("node")).union(e.select(F.col("v").alias("node"))).distinct()
    cur = _cut(_canonical(e), reliable)
    rounds = 0
    done = _is_star_forest(cur)
    while not done:
        if rounds >= max_iter:
            raise ComponentsDidNotConverge(
                f"connected components: no fixed point after {max_iter} rounds")
        rounds += 1
        prev = cur
        cur = _cut(_canonical(_small_star(_large_star(cur))), reliable)
        done = _is_star_forest(cur)
        if verbose:
            log(f"[components] round {rounds}{': stars, done' if done else ''}")
        prev.unpersist()
    # at the fixed point every edge is (node, root) with root < node and root a star centre
    parent = cur.groupBy("u").agg(F.min("v").alias("component"))
    comps = (nodes.join(parent, nodes["node"] == parent["u"], "left")
             .select("node", F.coalesce("component", "node").alias("component")))
    return comps, rounds
