"""Stage ``dedup``: exact and MinHashLSH near-duplicate removal, entirely as Spark jobs.

PolyLM (Wei et al. 2023, arXiv 2307.06018, sec. 2.1) removes near-duplicate documents with
MinHashLSH. Here the steps are, with no single-machine step anywhere:

1. **Signatures** (one pass over the documents, :class:`SignBatch` over Arrow batches): a hash of
   the normalised text (NFKC, lowercase, whitespace collapsed) for exact matching, the MinHash
   signature, its LSH band keys and (for ``verify: jaccard``) the sorted shingle-hash set; see
   :mod:`filters.minhash`.
2. **Ranking.** Documents are sorted by the survivor rule and numbered in that order
   (``_nid``); the smallest number in a cluster is its survivor. The rule: highest
   ``quality_score`` (when the column exists; null last), then tier preference
   ``reference > book > parallel > web`` (others after), then the smallest ``id``.
3. **Exact dedup**: documents with the same normalised-text hash in the same scope form a
   cluster (``_xroot``: its smallest ``_nid``, a window over the hash); all but its best-ranked
   document are ``dup_exact``. Steps 1-3 are one checkpoint: the text is read and hashed once.
4. **Candidates** from LSH buckets (scope, band, key) of the exact survivors: every pair of a
   bucket with at most ``max_bucket_pairs`` members; in larger buckets each member is paired
   with the bucket's best-ranked member only (a star spans the bucket without the quadratic
   number of pairs; the components are the same when every pair would be verified anyway), so
   the number of candidates is at most ``bands * max_bucket_pairs / 2`` per document: linear.
5. **Verification** (``verify``): ``jaccard`` keeps a candidate pair when the exact Jaccard
   similarity of the two shingle sets is >= ``threshold``; ``minhash`` uses the signature
   estimate; ``none`` keeps every candidate (pure LSH, datasketch-style). Candidates and their
   similarity are one checkpoint; both counts come from one aggregate.
6. **Connected components** of the verified pairs (:mod:`pipeline.components`, large-star /
   small-star until a fixed point). Every component keeps its best-ranked document; the others
   are ``dup_near``. Cluster size and survivor are one window over the cluster.

The stats (``extra``) give ``candidate_pairs``, ``verified_pairs``, ``components_rounds`` and,
under ``steps``, the wall seconds and Spark jobs of each sub-step (``signatures_and_exact``,
``candidates_and_verify``, ``components``, ``assign``).

Scope: documents are compared only within their scope. Parallel-tier documents form their own
scope (their text repeats reference text such as UD/NTREX by design) unless
``parallel_separate: false``; with ``cross_lang: false`` (default) the scope also includes the
language, with ``true`` the same text under different language labels is matched (shingles are
then made label-independent); ``scope: source`` restricts matching to one source, ``global``
(default) matches across sources.

Output: every input row plus ``dup_cluster`` (the survivor's ``id`` for every member of a
cluster of two or more documents, survivors included; null for unique documents); removed rows
have ``reason`` ``dup_exact`` / ``dup_near`` and ``detail`` JSON ``{"dup_cluster", "survivor",
"cluster_size"}``. Rows whose ``id`` is null or not unique cannot be told apart and are
quarantined (``missing_id`` / ``duplicate_id``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from filters.minhash import (MinHashConfig, MinHasher, band_keys, candidate_probability, optimal_param,
                             recall_param, s_curve)
from pipeline.stage import QUARANTINE, REJECTED, KEPT, Stage, StageContext, log, map_arrow

#: Survivor preference among tiers (lower is preferred); unknown tiers rank after these.
TIER_RANK = {"reference": 0, "book": 1, "parallel": 2, "web": 3}
VERIFY_MODES = ("jaccard", "minhash", "none")
SCOPES = ("global", "source")


class DedupConfigError(ValueError):
    """The ``dedup:`` section of the pipeline config has a bad value."""


@dataclass(frozen=True)
class DedupConfig:
    """The ``dedup:`` section of ``configs/pipeline.yaml``.

    Attributes:
        num_perm, seed, ngram, char_ngram, hash: see :class:`filters.minhash.MinHashConfig`.
        threshold: Jaccard similarity at and above which two documents are near duplicates
            (0.8; PolyLM does not publish its value, 0.8 is datasketch's and a common choice).
        bands, rows: LSH banding; ``None``/``"auto"`` = :func:`filters.minhash.recall_param`
            (candidate probability >= ``min_recall`` at ``threshold``, fewest false candidates:
            13 bands x 7 rows for 0.8 / 128), or with ``min_recall: null``
            :func:`filters.minhash.optimal_param` with weights ``fp_weight``/``fn_weight``
            (datasketch's, defaults 0.5/0.5: 9 x 13, only 0.40 at Jaccard 0.8).
        min_recall: wanted candidate probability of a pair at exactly ``threshold`` (0.95).
            Candidates are verified (``verify``), so a low LSH precision costs verification
            time only, while a missed candidate is a kept duplicate.
        verify: ``jaccard`` | ``minhash`` | ``none`` (see module docstring).
        max_bucket_pairs: buckets with at most this many members emit all their pairs,
            larger ones a star around their best-ranked member.
        cross_lang: match across language labels.
        scope: ``global`` (across sources) or ``source``.
        parallel_separate: parallel-tier documents are only compared among themselves.
        exact: run the exact-hash step (near dedup alone would also merge exact copies,
            at a higher cost).
        max_iter: limit of connected-components rounds.
    """

    num_perm: int = 128
    seed: int = 1
    threshold: float = 0.8
    ngram: int = 5
    char_ngram: int = 5
    hash: str = "poly64"
    bands: int | None = None
    rows: int | None = None
    min_recall: float | None = 0.95
    fp_weight: float = 0.5
    fn_weight: float = 0.5
    verify: str = "jaccard"
    max_bucket_pairs: int = 50
    cross_lang: bool = False
    scope: str = "global"
    parallel_separate: bool = True
    exact: bool = True
    max_iter: int = 100

    @classmethod
    def from_dict(cls, d: dict | None) -> "DedupConfig":
        """Build and validate from the config section.

        Raises:
            DedupConfigError: unknown keys or bad values.
        """
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DedupConfigError(f"unknown dedup config keys: {sorted(unknown)}")
        for k in ("bands", "rows"):
            if d.get(k) in ("auto", "", None):
                d[k] = None
        cfg = cls(**d)
        if not 0.0 < cfg.threshold <= 1.0:
            raise DedupConfigError(f"dedup.threshold must be in (0, 1], got {cfg.threshold}")
        if cfg.verify not in VERIFY_MODES:
            raise DedupConfigError(f"dedup.verify must be one of {VERIFY_MODES}, got {cfg.verify!r}")
        if cfg.scope not in SCOPES:
            raise DedupConfigError(f"dedup.scope must be one of {SCOPES}, got {cfg.scope!r}")
        if (cfg.bands is None) != (cfg.rows is None):
            raise DedupConfigError("dedup.bands and dedup.rows must both be set or both be auto")
        if cfg.bands is not None and (cfg.bands < 1 or cfg.rows < 1 or cfg.bands * cfg.rows > cfg.num_perm):
            raise DedupConfigError(f"dedup.bands * rows must be <= num_perm ({cfg.num_perm})")
        if cfg.min_recall is not None and not 0.0 < float(cfg.min_recall) < 1.0:
            raise DedupConfigError(f"dedup.min_recall must be in (0, 1) or null, got {cfg.min_recall}")
        if cfg.max_bucket_pairs < 2:
            raise DedupConfigError("dedup.max_bucket_pairs must be >= 2")
        try:
            cfg.minhash()
            cfg.lsh_params()
        except ValueError as e:
            raise DedupConfigError(f"dedup: {e}") from e
        return cfg

    def minhash(self) -> MinHashConfig:
        return MinHashConfig(num_perm=self.num_perm, seed=self.seed, ngram=self.ngram,
                             char_ngram=self.char_ngram, hash=self.hash)

    def lsh_params(self) -> tuple[int, int]:
        """``(bands, rows)``: configured; else recall-driven (:func:`recall_param`, default) or
        datasketch-optimal (``min_recall: null``) for ``threshold``/``num_perm``.

        Raises:
            ValueError: no banding within ``num_perm`` reaches ``min_recall``.
        """
        if self.bands is not None:
            return int(self.bands), int(self.rows)
        if self.min_recall is not None:
            return recall_param(float(self.threshold), int(self.num_perm), float(self.min_recall))
        return optimal_param(float(self.threshold), int(self.num_perm), float(self.fp_weight),
                             float(self.fn_weight))


def lsh_summary(cfg: DedupConfig) -> dict:
    """The banding and its S-curve for the stats: ``bands``, ``rows``, ``how`` they were chosen,
    ``recall_at_threshold`` (candidate probability of a pair at exactly ``threshold``) and
    ``s_curve`` (``{"0.50": p, ...}``, see :func:`filters.minhash.s_curve`)."""
    bands, rows = cfg.lsh_params()
    how = ("configured" if cfg.bands is not None else
           f"recall_param(min_recall={cfg.min_recall})" if cfg.min_recall is not None else
           f"optimal_param(fp_weight={cfg.fp_weight}, fn_weight={cfg.fn_weight})")
    return {"bands": bands, "rows": rows, "how": how, "threshold": cfg.threshold,
            "recall_at_threshold": round(float(candidate_probability(cfg.threshold, bands, rows)), 4),
            "s_curve": s_curve(bands, rows, cfg.threshold)}


# --------------------------------------------------------------------------- executor side
def exact_key(text: str | None) -> bytes:
    """16-byte key of the normalised text (NFKC, lowercase, whitespace runs -> one space,
    trimmed): equal keys = exact duplicates."""
    import hashlib
    import unicodedata

    s = " ".join(unicodedata.normalize("NFKC", text or "").lower().split())
    return hashlib.blake2b(s.encode("utf-8"), digest_size=16).digest()


SIG_SCHEMA = ("id string, _scope string, _q double, _trank int, _exact binary, _nsh int, "
              "_bands array<binary>, _sig binary, _sh binary")


class SignBatch:
    """Arrow batch function: ``id, text, _lang, _scope, _q, _trank`` -> :data:`SIG_SCHEMA`.

    ``_sig`` is the signature as little-endian uint32 (``num_perm * 4`` bytes, only kept for
    ``verify: minhash``), ``_sh`` the sorted unique uint64 shingle hashes (only for
    ``verify: jaccard``), ``_bands`` the ``bands`` keys (empty for a document without shingles).
    """

    def __init__(self, cfg: dict, bands: int, rows: int, keep_sig: bool, keep_shingles: bool,
                 use_lang: bool):
        self.cfg = cfg
        self.bands, self.rows = bands, rows
        self.keep_sig, self.keep_shingles, self.use_lang = keep_sig, keep_shingles, use_lang

    def __call__(self, batch):
        import pyarrow as pa

        hasher = MinHasher(MinHashConfig(**self.cfg))
        texts = batch.column("text").to_pylist()
        langs = batch.column("_lang").to_pylist() if self.use_lang else [None] * len(texts)
        h, off = hasher.shingle_hashes(texts, langs)
        sig = hasher.signatures(h, off)
        nsh = np.diff(off).astype(np.int32)
        keys = band_keys(sig, self.bands, self.rows)
        keys = [k if n > 0 else [] for k, n in zip(keys, nsh)]
        sigs = [s.astype("<u4").tobytes() for s in sig] if self.keep_sig else [None] * len(texts)
        if self.keep_shingles:
            shs = [np.unique(h[off[i]:off[i + 1]]).astype("<u8").tobytes() for i in range(len(texts))]
        else:
            shs = [None] * len(texts)
        return pa.RecordBatch.from_arrays(
            [batch.column("id"), batch.column("_scope"), batch.column("_q"), batch.column("_trank"),
             pa.array([exact_key(t) for t in texts], pa.binary()),
             pa.array(nsh, pa.int32()),
             pa.array(keys, pa.list_(pa.binary())),
             pa.array(sigs, pa.binary()), pa.array(shs, pa.binary())],
            names=["id", "_scope", "_q", "_trank", "_exact", "_nsh", "_bands", "_sig", "_sh"])


class VerifyBatch:
    """Arrow batch function: ``u, v, a, b`` (two ``_sh`` or two ``_sig`` binaries) ->
    ``u, v, sim`` with the exact Jaccard (``mode='jaccard'``) or the signature estimate."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, batch):
        import pyarrow as pa

        a_col = batch.column("a").to_pylist()
        b_col = batch.column("b").to_pylist()
        sims = np.empty(len(a_col), np.float64)
        for i, (a, b) in enumerate(zip(a_col, b_col)):
            if self.mode == "jaccard":
                x = np.frombuffer(a or b"", "<u8")
                y = np.frombuffer(b or b"", "<u8")
                if len(x) == 0 and len(y) == 0:
                    sims[i] = 0.0
                    continue
                inter = len(np.intersect1d(x, y, assume_unique=True))
                sims[i] = inter / (len(x) + len(y) - inter)
            else:
                x = np.frombuffer(a, "<u4")
                y = np.frombuffer(b, "<u4")
                sims[i] = float(np.count_nonzero(x == y)) / len(x)
        return pa.RecordBatch.from_arrays([batch.column("u"), batch.column("v"), pa.array(sims)],
                                          names=["u", "v", "sim"])


# --------------------------------------------------------------------------- driver side
class StepClock:
    """Wall seconds and Spark jobs of the dedup sub-steps, for the stats (``extra["steps"]``).

    Spark jobs are counted from the job ids of the current job group
    (``SparkContext.statusTracker``): ids grow by one per job, so the count of a step is the
    growth of the largest id (robust to ``spark.ui.retainedJobs`` dropping old jobs)."""

    def __init__(self, spark):
        import time

        self._time = time.perf_counter
        self.sc = spark.sparkContext
        self.steps: dict[str, dict] = {}
        self._t, self._j = self._time(), self._last_job()

    def _last_job(self) -> int:
        try:
            ids = self.sc.statusTracker().getJobIdsForGroup(self.sc.getLocalProperty("spark.jobGroup.id"))
            return max(ids) if ids else -1
        except Exception:  # a status tracker without jobs: counting is a nicety
            return -1

    def mark(self, step: str) -> None:
        """Close ``step``: the time and jobs since the previous mark."""
        t, j = self._time(), self._last_job()
        self.steps[step] = {"seconds": round(t - self._t, 3), "spark_jobs": max(0, j - self._j)}
        self._t, self._j = t, j


def _cut(df):
    """Materialise ``df`` and cut its lineage (reliable checkpoint when a checkpoint dir is
    set, else a local checkpoint)."""
    if df.sparkSession.sparkContext.getCheckpointDir() is not None:
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def prepare(df, cfg: DedupConfig):
    """The per-document keys the signature pass needs: ``id, text, _lang, _scope, _q, _trank``."""
    from pyspark.sql import functions as F

    cols = df.columns
    lang_parts = [F.col(c) for c in ("lang", "lang_declared") if c in cols]
    lang = F.coalesce(*lang_parts, F.lit("und")) if lang_parts else F.lit("und")
    tier = F.col("tier") if "tier" in cols else F.lit(None).cast("string")
    source = F.col("source") if "source" in cols else F.lit(None).cast("string")
    q = F.col("quality_score").cast("double") if "quality_score" in cols else F.lit(None).cast("double")
    trank = F.lit(len(TIER_RANK)).cast("int")
    for t, rnk in sorted(TIER_RANK.items(), key=lambda kv: -kv[1]):
        trank = F.when(tier == t, F.lit(rnk)).otherwise(trank)
    parts = [F.when((tier == "parallel") & F.lit(cfg.parallel_separate), F.lit("parallel"))
             .otherwise(F.lit("main"))]
    if not cfg.cross_lang:
        parts.append(lang)
    if cfg.scope == "source":
        parts.append(F.coalesce(source, F.lit("unknown")))
    return df.select(F.col("id"), F.col("text"), lang.alias("_lang"),
                     F.concat_ws("|", *parts).alias("_scope"), q.alias("_q"), trank.alias("_trank"))


def signature_frame(prepared, cfg: DedupConfig):
    """Run :class:`SignBatch` over the prepared documents (lazy)."""
    bands, rows = cfg.lsh_params()
    fn = SignBatch(cfg.minhash().to_dict(), bands, rows, keep_sig=cfg.verify == "minhash",
                   keep_shingles=cfg.verify == "jaccard", use_lang=not cfg.cross_lang)
    return map_arrow(prepared, fn, SIG_SCHEMA, count_docs=True)


def rank_nodes(sig):
    """Sort by the survivor rule and number the documents in that order (``_nid`` long,
    increasing along the order; its values depend on the partitioning, its order does not)."""
    from pyspark.sql import functions as F

    return (sig.orderBy(F.col("_q").desc_nulls_last(), F.col("_trank").asc(), F.col("id").asc())
            .withColumn("_nid", F.monotonically_increasing_id()))


def candidate_pairs(nodes, max_bucket_pairs: int | None):
    """Candidate pairs ``u < v`` (``_nid`` values) from the LSH buckets of ``nodes``
    (``_scope, _nid, _bands``). ``max_bucket_pairs=None`` emits every pair of every bucket
    (datasketch ``MinHashLSH`` semantics); otherwise buckets larger than that emit a star
    around their smallest ``_nid``."""
    from pyspark.sql import functions as F

    keys = ["_scope", "_band", "_key"]
    bk = nodes.select("_scope", "_nid", F.posexplode("_bands").alias("_band", "_key"))
    sizes = bk.groupBy(*keys).agg(F.count("*").alias("_n"), F.min("_nid").alias("_root"))
    sizes = sizes.where(F.col("_n") >= 2)
    member = bk.join(sizes, keys)
    small = member if max_bucket_pairs is None else member.where(F.col("_n") <= max_bucket_pairs)
    a = small.select(*keys, F.col("_nid").alias("u"))
    b = small.select(*keys, F.col("_nid").alias("v"))
    pairs = a.join(b, keys).where(F.col("u") < F.col("v")).select("u", "v")
    if max_bucket_pairs is not None:
        star = (member.where(F.col("_n") > max_bucket_pairs).where(F.col("_nid") != F.col("_root"))
                .select(F.col("_root").alias("u"), F.col("_nid").alias("v")))
        pairs = pairs.union(star)
    return pairs.distinct()


def verify_pairs(pairs, nodes, cfg: DedupConfig):
    """``u, v, sim`` for every candidate pair (``sim`` null when ``verify: none``)."""
    from pyspark.sql import functions as F

    if cfg.verify == "none":
        return pairs.withColumn("sim", F.lit(None).cast("double"))
    col = "_sh" if cfg.verify == "jaccard" else "_sig"
    side = nodes.select("_nid", col)
    joined = (pairs.join(side.select(F.col("_nid").alias("u"), F.col(col).alias("a")), "u")
              .join(side.select(F.col("_nid").alias("v"), F.col(col).alias("b")), "v")
              .select("u", "v", "a", "b"))
    return map_arrow(joined, VerifyBatch(cfg.verify), "u long, v long, sim double")


class DedupStage(Stage):
    """Exact + MinHashLSH near-duplicate removal (see the module docstring)."""

    name = "dedup"

    def transform(self, df, ctx: StageContext):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from pipeline.components import connected_components

        cfg = DedupConfig.from_dict(ctx.stage_config("dedup"))
        bands, rows = cfg.lsh_params()
        log(f"[dedup] num_perm={cfg.num_perm} threshold={cfg.threshold} bands={bands} rows={rows} "
            f"hash={cfg.hash} ngram={cfg.ngram}/{cfg.char_ngram} verify={cfg.verify} "
            f"cross_lang={cfg.cross_lang} scope={cfg.scope}")
        lsh = lsh_summary(cfg)
        log(f"[dedup] LSH S-curve (candidate probability by Jaccard): "
            + " ".join(f"{k}:{v:.3f}" for k, v in lsh["s_curve"].items())
            + f"; expected recall at the threshold {cfg.threshold}: {lsh['recall_at_threshold']:.3f}")
        # columns this stage writes; a previous stage's kept rows may still carry its own
        # (null) reason/detail columns
        df = df.drop(*[c for c in ("reason", "detail", "_disposition", "dup_cluster") if c in df.columns])
        clock = StepClock(df.sparkSession)
        # rows whose id is null or repeated cannot be matched back: quarantine them
        ids = df.groupBy("id").count()
        bad_ids = ids.where(F.col("id").isNull() | (F.col("count") > 1)).select("id")
        clean = df.join(bad_ids, "id", "left_anti") if "id" in df.columns else df
        clean = clean.where(F.col("id").isNotNull())

        # one pass: signatures, ranking, and the exact-duplicate root of every document (the
        # smallest _nid of its (scope, normalised-text hash) group, a window: no join)
        ranked = rank_nodes(signature_frame(prepare(clean, cfg), cfg))
        if cfg.exact:
            xroot = F.min("_nid").over(Window.partitionBy("_scope", "_exact"))
        else:
            xroot = F.col("_nid")
        nodes = _cut(ranked.withColumn("_xroot", xroot))
        self._cached = [nodes]
        clock.mark("signatures_and_exact")
        reps = nodes.where((F.col("_nid") == F.col("_xroot")) & (F.col("_nsh") > 0))
        # every candidate pair with its similarity, materialised once: both counts in one job
        scored = _cut(verify_pairs(candidate_pairs(reps, cfg.max_bucket_pairs), reps, cfg))
        keep = F.lit(True) if cfg.verify == "none" else F.col("sim") >= F.lit(float(cfg.threshold))
        agg = scored.agg(F.count("*").alias("c"), F.count(F.when(keep, 1)).alias("e")).first()
        n_cands, n_edges = int(agg["c"]), int(agg["e"])
        edges = scored.where(keep)
        clock.mark("candidates_and_verify")
        log(f"[dedup] {n_cands} candidate pairs, {n_edges} kept after verify={cfg.verify}")
        comps, rounds = connected_components(edges.select("u", "v"), max_iter=cfg.max_iter)
        clock.mark("components")
        near = comps.select(F.col("node").alias("_xroot"), F.col("component").alias("_root"))
        res = (nodes.select("id", "_nid", "_xroot").join(near, "_xroot", "left")
               .withColumn("_root", F.coalesce("_root", "_xroot")))
        # cluster size and survivor (the member with the smallest _nid, the root itself) in one
        # window over the cluster: no aggregate + joins
        w = Window.partitionBy("_root")
        res = (res.withColumn("_csize", F.count("*").over(w))
               .withColumn("_survivor", F.min(F.struct("_nid", "id")).over(w)["id"]))
        reason = (F.when(F.col("_nid") != F.col("_xroot"), F.lit("dup_exact"))
                  .when(F.col("_nid") != F.col("_root"), F.lit("dup_near")))
        cluster = F.when(F.col("_csize") > 1, F.col("_survivor"))
        detail = F.when(reason.isNotNull(), F.to_json(F.struct(
            cluster.alias("dup_cluster"), F.col("_survivor").alias("survivor"),
            F.col("_csize").alias("cluster_size"))))
        # the survivor of a cluster of two or more carries the cluster size: one aggregate gives
        # the counts by reason and the cluster-size distribution
        surv_size = F.when((F.col("_nid") == F.col("_root")) & (F.col("_csize") > 1), F.col("_csize"))
        res = _cut(res.select("id", reason.alias("reason"), detail.alias("detail"),
                              cluster.alias("dup_cluster"), surv_size.alias("_ssize")))
        counts: dict = {}
        self._cluster_sizes: dict[int, int] = {}
        for r in res.groupBy("reason", "_ssize").count().collect():
            counts[r["reason"]] = counts.get(r["reason"], 0) + r["count"]
            if r["_ssize"] is not None:
                self._cluster_sizes[int(r["_ssize"])] = int(r["count"])
        res = res.drop("_ssize")
        n_docs = sum(counts.values())
        log(f"[dedup] {n_docs} documents: {counts.get('dup_exact', 0)} exact and {counts.get('dup_near', 0)} "
            f"near duplicates")
        clock.mark("assign")
        ctx.extra.update({
            "params": {**{k: v for k, v in asdict(cfg).items()}, "bands": bands, "rows": rows},
            "lsh": lsh,
            "documents": n_docs, "exact_duplicates": counts.get("dup_exact", 0),
            "near_duplicates": counts.get("dup_near", 0), "candidate_pairs": n_cands,
            "verified_pairs": n_edges, "components_rounds": rounds, "steps": clock.steps})
        self._cached += [scored, res]
        out = (clean.join(res, "id", "left")
               .withColumn("_disposition", F.when(F.col("reason").isNull(), F.lit(KEPT))
                           .otherwise(F.lit(REJECTED))))
        bad = (df.join(bad_ids, "id", "left_semi").unionByName(df.where(F.col("id").isNull()))
               .withColumn("reason", F.when(F.col("id").isNull(), F.lit("missing_id"))
                           .otherwise(F.lit("duplicate_id")))
               .withColumn("detail", F.lit(None).cast("string"))
               .withColumn("dup_cluster", F.lit(None).cast("string"))
               .withColumn("_disposition", F.lit(QUARANTINE)))
        return out.unionByName(bad.select(*out.columns))

    def after_write(self, written, ctx: StageContext) -> None:
        """Duplicate rates per language and source, and the cluster-size distribution
        (``ctx.extra``), plus a cluster-size histogram plot."""
        from pyspark.sql import functions as F

        cols = written.columns
        lang_parts = [F.col(c) for c in ("lang", "lang_declared") if c in cols]
        lang = F.coalesce(*lang_parts, F.lit("und")) if lang_parts else F.lit("und")
        rows = (written.groupBy(lang.alias("l"), F.col("source").alias("s"), "reason").count().collect())
        rates: dict[str, dict] = {"per_lang": {}, "per_source": {}}
        for r in rows:
            for key, table in ((r["l"], rates["per_lang"]), (r["s"] or "unknown", rates["per_source"])):
                t = table.setdefault(key, {"documents": 0, "dup_exact": 0, "dup_near": 0})
                t["documents"] += r["count"]
                if r["reason"] in ("dup_exact", "dup_near"):
                    t[r["reason"]] += r["count"]
        for table in rates.values():
            for t in table.values():
                t["dup_rate"] = round((t["dup_exact"] + t["dup_near"]) / t["documents"], 4) if t["documents"] else 0.0
        # cluster sizes counted in transform (one aggregate with the counts by reason)
        sizes = [s for s, n in sorted(getattr(self, "_cluster_sizes", {}).items()) for _ in range(n)]
        edges = [2, 3, 4, 5, 10, 100, 1000, 10000]
        hist = {}
        for lo, hi in zip(edges, edges[1:] + [math.inf]):
            n = sum(1 for s in sizes if lo <= s < hi)
            hist[f"{lo}" if hi == lo + 1 else f"{lo}-{'' if hi == math.inf else hi - 1}"] = n
        ctx.extra["dup_rates"] = rates
        ctx.extra["clusters"] = {"count": len(sizes), "max_size": max(sizes) if sizes else 0,
                                 "documents_in_clusters": int(sum(sizes)), "size_histogram": hist}
        for lang_code, t in sorted(rates["per_lang"].items()):
            log(f"[dedup] {lang_code}: {t['dup_exact']} exact + {t['dup_near']} near of "
                f"{t['documents']} ({100 * t['dup_rate']:.1f}%)", detail=True)
        try:
            p = self._plot(sizes, ctx)
            if p:
                ctx.plots.append(p)
        except Exception as e:  # plots are a report nicety; never fail the stage for them
            log(f"[dedup] plot skipped: {type(e).__name__}: {e}")
        for d in getattr(self, "_cached", []):
            try:
                d.unpersist()
            except Exception:
                pass

    def _plot(self, sizes: list[int], ctx: StageContext) -> str | None:
        out_dir = ctx.path("stats", "plots")
        if "://" in out_dir and not out_dir.startswith("file:"):
            return None
        out_dir = out_dir[len("file:"):] if out_dir.startswith("file:") else out_dir
        from pipeline.plots import count_axis, pyplot

        plt = pyplot()  # Agg, fonts >= 9 pt
        os.makedirs(out_dir, exist_ok=True)
        # linear counts per cluster size: 2..10 one bar each, then ranges (a long tail of big clusters)
        edges = [(k, k, str(k)) for k in range(2, 11)] + [(11, 20, "11-20"), (21, 50, "21-50"),
                                                           (51, 100, "51-100"), (101, None, ">100")]
        labels, counts = [], []
        for lo, hi, lab in edges:
            n = sum(1 for v in sizes if v >= lo and (hi is None or v <= hi))
            if n or (hi is not None and hi <= 10):
                labels.append(lab)
                counts.append(n)
        fig, ax = plt.subplots(figsize=(8, 3.6))
        ax.bar(labels, counts, color="#1f77b4")
        for x, n in enumerate(counts):
            if n:
                ax.text(x, n, f"{n:,}", ha="center", va="bottom", fontsize=9)
        count_axis(ax.yaxis)
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters")
        ax.set_title(f"dedup: {len(sizes):,} duplicate clusters, "
                     f"{sum(sizes):,} documents in them")
        path = os.path.join(out_dir, "dedup_cluster_sizes.png")
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        return path
