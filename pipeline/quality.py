"""Stage ``quality``: add ``ppl`` (KenLM perplexity), ``ppl_bucket`` (head/middle/tail) and
``quality_score`` (fastText reference-vs-web probability); remove documents above the
language's ``max_ppl`` (``ppl_too_high``) or below its ``min_quality_score`` (``quality_low``).

Models come from ``<out>/models/quality/manifest.json`` (``make quality-models``; trained
automatically from ``<out>/langid`` when missing and ``train_if_missing`` is on) or from the
user's files (``quality.models``, ``quality.classifier``). Model files are shipped to the
executors with SparkFiles and loaded once per Python worker.

Config (``quality:`` in configs/pipeline.yaml)::

    models_dir: null          # default <out>/models/quality
    train_if_missing: true    # train from <out>/langid when there is no manifest
    web_fallback: false       # input without reference-tier docs: false = pass unscored (stats say why);
                              # true = train each language's KenLM on its own web docs (pipeline/quality_models.py)
    models: {}                # {lang: {sp_model: path, kenlm: path}} user models (override)
    classifier: null          # path of a user fastText classifier (labels __label__ref/__label__web)
    bucket_percentiles: [30, 60]   # CCNet head/middle/tail cut-offs (Wenzek et al. 2020, sec. 3.3)
    cutoffs: {}               # {lang: [c_head, c_tail]} fixed ppl cut-offs instead of run percentiles
    min_cutoff_docs: 50       # fewer unseen docs of a language in the run: held-out reference percentiles
    default_thresholds: {max_ppl: auto, min_quality_score: auto}
    thresholds: {}            # {lang: {max_ppl: x|null|auto, min_quality_score: y|null|auto}}
    web_drop: 0.05            # training: auto min_quality_score drops <= this share of web docs (95% bound)
    ppl_web_drop: 0.1         # training: auto max_ppl drops ~this share of web docs by ppl
    train_max_docs: 20000     # training: documents read per language and label (bottom-k sample)
    missing_model: keep       # keep | reject (reason quality_no_model) docs of languages without models
    max_paragraph_chars: 20000
    classifier_max_tokens: 4096
    summary_max_rows: 5000000 # more documents in: the run's figures come from Spark aggregates (below)

``ppl_bucket`` cut-offs, per language, first that applies (the source is logged and recorded in
the stage stats, ``extra.cutoffs_source``):

1. ``config``: ``quality.cutoffs`` gives them;
2. ``run_unseen``: the ``bucket_percentiles`` of ``ppl`` over the run's documents the
   language's KenLM was NOT trained on, when there are at least ``min_cutoff_docs`` of them.
   Documents the LM trained on have artificially low (memorised) perplexity; on the sample they
   are most of the reference tier, and percentiles over them would put the cut-offs inside that
   cluster and say little about unseen text. A document counts as LM training data when its
   text hash is in the manifest's ``lm_train_hashes`` file (exact copies, also from other
   sources and tiers, e.g. the parallel tier's copies of PUD sentences), or when it is
   reference/book tier and its group key falls in the training split (the same
   ``split_key`` / ``is_heldout`` as the training job; catches training documents whose text
   the rules stage edited). For models the user supplied (``quality.models``) there is no
   record of their training data and every document counts (source ``run_all``);
3. ``heldout_reference``: the manifest's ``heldout_ref_ppl_percentiles`` (percentiles of
   held-out reference documents, which the LM never saw);
4. otherwise no buckets (``ppl_bucket`` null) for that language (source ``none``).

``auto`` takes the calibrated value from the manifest; ``null`` disables the rule. The auto
values (:mod:`filters.quality_calibration`) remove only extreme outliers (PolyLM, arXiv
2307.06018 sec. 2.1: "extremely low quality"): ``max_ppl`` is Tukey's far-out fence on held-out
reference ppl, ``min_quality_score`` the 95% lower bound of the ``web_drop`` (0.05) quantile of
out-of-fold web scores; each needs a stated number of documents and falls back to a more
conservative rule (or none) below it. Their derivation (source, quantile, documents, bound rank)
is logged and recorded in the stage stats (``extra.per_lang.<lang>.thresholds_source``) and
``extra.models`` says which model set was used and what it was trained on.

Reasons: ``ppl_too_high``, ``quality_low``, ``quality_no_text`` (nothing left after
normalisation), ``quality_no_model`` (only with ``missing_model: reject``); a document whose
scoring raised goes to ``quarantine/stage=quality/reason=quality_error/`` with the error.
"""
from __future__ import annotations

import json
import math
import os

import pyarrow as pa

from filters import quality as Q
from pipeline.ship import resolve, ship
from pipeline.stage import QUARANTINE, Stage, StageContext, log, map_arrow

HELPER_COLS = ("ppl", "ppl_bucket", "quality_score", "_n_tokens", "_q_error", "_lm_seen", "reason", "detail")


class QualityScoreBatch:
    """Picklable batch function: adds ``ppl`` (float64), ``quality_score`` (float64),
    ``_n_tokens`` (int64, -1 = no model), ``_q_error`` (string) and ``_lm_seen`` (bool: the
    document was training data of its language's KenLM, see module docstring) to an Arrow batch.

    Args:
        models: ``{lang: (sp_model_path, kenlm_path)}`` as shipped on the driver.
        classifier: shipped classifier path or None.
        max_paragraph_chars, classifier_max_tokens: see :mod:`filters.quality`.
        lm_train: None (nothing known about the LMs' training data) or
            ``{"hashes": shipped path of the manifest's lm_train_hashes file or None,
            "heldout_fraction": float or None, "langs": [languages whose LM the manifest
            trained]}``.
    """

    def __init__(self, models: dict, classifier: str | None, max_paragraph_chars: int,
                 classifier_max_tokens: int, lm_train: dict | None = None):
        self.models = dict(models)
        self.classifier = classifier
        self.max_paragraph_chars = int(max_paragraph_chars)
        self.classifier_max_tokens = int(classifier_max_tokens)
        self.lm_train = dict(lm_train) if lm_train else None
        self.num_threads = None  # resolved on the worker (threads())

    def lm_seen(self, batch: pa.RecordBatch) -> list:
        """Per row: was the document training data of its language's KenLM (bool)?"""
        n = batch.num_rows
        lt = self.lm_train
        if not lt or not lt.get("langs"):
            return [False] * n
        names = batch.schema.names
        col = {c: (batch.column(c).to_pylist() if c in names else [None] * n)
               for c in ("id", "source", "tier", "lang", "text", "meta")}
        langs = set(lt["langs"])
        seen = [False] * n
        if lt.get("hashes"):
            rows = [i for i in range(n) if col["lang"][i] in langs]
            hs = Q.load_text_hashes(resolve(lt["hashes"]))
            hit = Q.hashes_contain(hs, [Q.text_hash(col["lang"][i], col["text"][i]) for i in rows])
            for i, h in zip(rows, hit):
                seen[i] = bool(h)
        frac = lt.get("heldout_fraction")
        if frac is not None:
            for i in range(n):
                if not seen[i] and col["lang"][i] in langs and col["tier"][i] in Q.POSITIVE_TIERS:
                    key = Q.split_key(col["id"][i] or "", col["source"][i] or "", col["lang"][i], col["meta"][i])
                    seen[i] = not Q.is_heldout(key, float(frac))
        return seen

    def threads(self) -> int:
        """SentencePiece threads for this worker's batch calls: the CPUs Spark reserves per task
        (``spark.task.cpus``, ``TaskContext.cpus()``; 1 by default, one task per executor core,
        so the executor's cores are matched without oversubscription); 1 outside a Spark task.
        """
        if self.num_threads is None:
            n = 1
            try:
                from pyspark import TaskContext

                tc = TaskContext.get()
                if tc is not None:
                    n = int(tc.cpus())
            except Exception:  # not in a Spark task, or an old PySpark: one thread
                n = 1
            self.num_threads = max(1, n)
        return self.num_threads

    def score(self, langs: list, texts: list) -> tuple[list, list, list, list]:
        """Score parallel lists of languages and texts -> (ppl, quality_score, n_tokens, error).

        The documents of one language are scored together (:meth:`filters.quality.PerplexityModel.score_texts`:
        one SentencePiece batch call, KenLM per paragraph string, classifier lines without a loop
        over tokens); the classifier predicts on all lines of the batch at once. If a language's
        batch raises, its documents are scored one by one so only the failing ones are
        quarantined (``_q_error``)."""
        n = len(texts)
        ppl: list = [None] * n
        qs: list = [None] * n
        ntok: list = [-1] * n
        err: list = [None] * n
        rows_by_lang: dict = {}
        for i, lang in enumerate(langs):
            if lang in self.models:
                rows_by_lang.setdefault(lang, []).append(i)
        lines, line_rows = [], []
        threads = self.threads()
        for lang, rows in rows_by_lang.items():
            paths = self.models[lang]
            try:
                lm = Q.load_lm(resolve(paths[0]), resolve(paths[1]), self.max_paragraph_chars)
                groups = [rows]
                try:
                    res = [lm.score_texts([texts[i] for i in rows], self.classifier_max_tokens, threads)]
                except Exception:  # find the bad record(s): one document at a time
                    groups, res = [], []
                    for i in rows:
                        try:
                            res.append(lm.score_texts([texts[i]], self.classifier_max_tokens, threads))
                            groups.append([i])
                        except Exception as e:
                            ntok[i] = 0
                            err[i] = f"{type(e).__name__}: {e}"[:500]
            except Exception as e:  # model failed to load: every document of the language
                for i in rows:
                    ntok[i] = 0
                    err[i] = f"{type(e).__name__}: {e}"[:500]
                continue
            for g, r in zip(groups, res):
                for j, i in enumerate(g):
                    ppl[i] = r.ppl[j]
                    ntok[i] = r.n_tokens[j]
                    if r.n_tokens[j] > 0 and self.classifier:
                        lines.append(r.lines[j])
                        line_rows.append(i)
        if lines:
            clf = Q.load_classifier(resolve(self.classifier))
            for i, p in zip(line_rows, clf.predict_proba(lines)):
                qs[i] = float(p)
        return ppl, qs, ntok, err

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ppl, qs, ntok, err = self.score(batch.column("lang").to_pylist(), batch.column("text").to_pylist())
        seen = self.lm_seen(batch)
        cols = [c for c in batch.schema.names if c not in HELPER_COLS]
        arrays = [batch.column(c) for c in cols] + [
            pa.array(ppl, pa.float64()), pa.array(qs, pa.float64()),
            pa.array(ntok, pa.int64()), pa.array(err, pa.string()), pa.array(seen, pa.bool_())]
        return pa.RecordBatch.from_arrays(
            arrays, names=cols + ["ppl", "quality_score", "_n_tokens", "_q_error", "_lm_seen"])


def decide_rows(langs: list, ppls: list, qss: list, ntoks: list, errs: list, thresholds: dict,
                missing_model: str, cutoffs: dict | None = None) -> tuple[list | None, list, list, list]:
    """Removal decision (and, given ``cutoffs``, the ``ppl_bucket``) of scored rows.

    Args:
        langs, ppls, qss, ntoks, errs: parallel lists (one entry per document) of language,
            ``ppl`` (float or None), ``quality_score`` (float or None), ``_n_tokens`` (int; -1 or
            None: no model for the language) and ``_q_error`` (str or None) as
            :class:`QualityScoreBatch` returns them.
        thresholds: ``{lang: (max_ppl or None, min_quality_score or None)}``.
        missing_model: ``keep`` or ``reject`` (documents of languages without models).
        cutoffs: ``{lang: (c_head, c_tail)}``, or None to skip the buckets.

    Returns:
        (buckets: list[str | None] or None without ``cutoffs``, reasons: list[str | None],
        details: list[str | None] (JSON), dispositions: list[str]: ``kept`` / ``rejected`` /
        ``quarantine``). A scoring error is quarantined (``quality_error``).
    """
    buckets: list | None = [] if cutoffs is not None else None
    reasons, details, disp = [], [], []
    for lang, ppl, qs, nt, er in zip(langs, ppls, qss, ntoks, errs):
        if er is not None:
            bucket, r, d, dp = None, "quality_error", json.dumps({"error": er}, ensure_ascii=False), QUARANTINE
        elif nt is None or nt < 0:  # no model for this language
            bucket = None
            if missing_model == "reject":
                r, d, dp = Q.REASON_NO_MODEL, json.dumps({"lang": lang}), "rejected"
            else:
                r, d, dp = None, None, "kept"
        else:
            bucket = Q.ppl_bucket(ppl, cutoffs.get(lang)) if cutoffs is not None else None
            max_ppl, min_q = thresholds.get(lang, (None, None))
            r, d = Q.decide(ppl, nt, qs, max_ppl, min_q)
            dp = "kept" if r is None else "rejected"
        if buckets is not None:
            buckets.append(bucket)
        reasons.append(r)
        details.append(d)
        disp.append(dp)
    return buckets, reasons, details, disp


class QualityScoreDecideBatch(QualityScoreBatch):
    """:class:`QualityScoreBatch` plus the removal decision in the same pass: the thresholds
    (``max_ppl``, ``min_quality_score``) are known before scoring, only the ``ppl_bucket``
    cut-offs need the run's scores (:func:`bucket_column` adds them in the JVM afterwards).

    Output columns: the input's, then ``ppl``, ``quality_score`` (float64), ``reason``,
    ``detail``, ``_disposition`` (string, :func:`decide_rows`), ``_n_tokens`` (int64),
    ``_q_error`` (string), ``_lm_seen`` (bool).

    Args:
        models, classifier, max_paragraph_chars, classifier_max_tokens, lm_train: see
            :class:`QualityScoreBatch`.
        thresholds: ``{lang: (max_ppl or None, min_quality_score or None)}``.
        missing_model: ``keep`` or ``reject``.
    """

    OUT_COLS = ("ppl", "quality_score", "reason", "detail", "_disposition", "_n_tokens", "_q_error", "_lm_seen")

    def __init__(self, models: dict, classifier: str | None, max_paragraph_chars: int,
                 classifier_max_tokens: int, lm_train: dict | None = None, thresholds: dict | None = None,
                 missing_model: str = "keep"):
        super().__init__(models, classifier, max_paragraph_chars, classifier_max_tokens, lm_train)
        self.thresholds = dict(thresholds or {})
        self.missing_model = missing_model

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        langs = batch.column("lang").to_pylist()
        ppl, qs, ntok, err = self.score(langs, batch.column("text").to_pylist())
        seen = self.lm_seen(batch)
        _, reasons, details, disp = decide_rows(langs, ppl, qs, ntok, err, self.thresholds, self.missing_model)
        cols = [c for c in batch.schema.names if c not in HELPER_COLS]
        arrays = [batch.column(c) for c in cols] + [
            pa.array(ppl, pa.float64()), pa.array(qs, pa.float64()), pa.array(reasons, pa.string()),
            pa.array(details, pa.string()), pa.array(disp, pa.string()), pa.array(ntok, pa.int64()),
            pa.array(err, pa.string()), pa.array(seen, pa.bool_())]
        return pa.RecordBatch.from_arrays(arrays, names=cols + list(self.OUT_COLS))


class QualityDecideBatch:
    """Picklable batch function: bucket and removal decision from the scores
    (:func:`decide_rows`) of :class:`QualityScoreBatch`'s output. The stage itself decides in
    its scoring pass (:class:`QualityScoreDecideBatch`, :func:`bucket_column`); this is the
    same decision for callers that score first and pick cut-offs later.

    Args:
        cutoffs: ``{lang: (c_head, c_tail)}``.
        thresholds: ``{lang: (max_ppl or None, min_quality_score or None)}``.
        missing_model: ``keep`` or ``reject``.
    """

    def __init__(self, cutoffs: dict, thresholds: dict, missing_model: str):
        self.cutoffs = {k: tuple(v) for k, v in cutoffs.items()}
        self.thresholds = dict(thresholds)
        self.missing_model = missing_model

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        buckets, reasons, details, disp = decide_rows(
            batch.column("lang").to_pylist(), batch.column("ppl").to_pylist(),
            batch.column("quality_score").to_pylist(), batch.column("_n_tokens").to_pylist(),
            batch.column("_q_error").to_pylist(), self.thresholds, self.missing_model, self.cutoffs)
        cols = [c for c in batch.schema.names if c not in HELPER_COLS]
        arrays = [batch.column(c) for c in cols] + [
            batch.column("ppl"), pa.array(buckets, pa.string()), batch.column("quality_score"),
            pa.array(reasons, pa.string()), pa.array(details, pa.string()), pa.array(disp, pa.string())]
        return pa.RecordBatch.from_arrays(
            arrays, names=cols + ["ppl", "ppl_bucket", "quality_score", "reason", "detail", "_disposition"])


#: ``percentile_approx``'s relative error as the stage used it (accuracy 100,000), kept for the
#: end points of :func:`run_percentiles`.
_PCT_RELATIVE_ERROR = 1.0 / 100000


def run_percentiles(values, pcts) -> tuple[float, ...]:
    """Exact ``pcts`` percentiles of ``values``: for each fraction ``q`` the ``ceil(q * n)``-th
    smallest value (1-based; the smallest for ``q <= 1e-5``, the largest for ``q >= 1 - 1e-5``).

    This is what Spark's ``percentile_approx(col, q, 100000)`` (Greenwald-Khanna summary,
    ``QuantileSummaries.query``) returns while its summary is exact, i.e. while every task
    saw fewer than 50,000 values and a group has at most 100,000: a sample value, never an
    interpolation, so a cut-off is some document's ppl. Past that the sketch merges samples
    and may be off by a rank or so; this stays exact (``tests/test_quality_stage.py`` checks
    both agree on random data with ties).

    Args:
        values: 1-d float64 array (or sequence) of ppl, no nulls, at least one value.
        pcts: increasing fractions in (0, 1), e.g. ``[0.3, 0.6]``.

    Returns:
        tuple of floats, one per fraction.

    Raises:
        ValueError: ``values`` is empty.
    """
    import numpy as np

    v = np.sort(np.asarray(values, dtype=np.float64))
    n = int(v.size)
    if n == 0:
        raise ValueError("run_percentiles needs at least one value")
    out = []
    for q in pcts:
        q = float(q)
        if q <= _PCT_RELATIVE_ERROR:
            out.append(float(v[0]))
        elif q >= 1 - _PCT_RELATIVE_ERROR:
            out.append(float(v[-1]))
        else:
            out.append(float(v[min(n, max(1, math.ceil(q * n))) - 1]))
    return tuple(out)


def bucket_column(cutoffs: dict):
    """pyspark Column ``ppl_bucket`` (string) from the scored columns ``lang``, ``ppl``,
    ``_n_tokens`` and ``_q_error``: the same value as :func:`filters.quality.ppl_bucket` in
    :func:`decide_rows` (null for a scoring error, a language without model or cut-offs, or a
    null ppl; ``head`` below the first cut-off, ``middle`` below the second, else ``tail``),
    computed in the JVM, so the pass that writes the scored rows needs no Python.

    Args:
        cutoffs: ``{lang: (c_head, c_tail)}`` (floats, compared as float64 literals).
    """
    from pyspark.sql import functions as F

    if not cutoffs:
        return F.lit(None).cast("string")
    ppl, lang = F.col("ppl"), F.col("lang")
    expr = None
    for l in sorted(cutoffs):
        head, tail = (float(x) for x in cutoffs[l])
        b = F.when(ppl < F.lit(head), F.lit("head")).when(ppl < F.lit(tail), F.lit("middle")).otherwise(F.lit("tail"))
        expr = F.when(lang == F.lit(l), b) if expr is None else expr.when(lang == F.lit(l), b)
    ok = F.col("_q_error").isNull() & (F.col("_n_tokens") >= 0) & ppl.isNotNull()
    return F.when(ok, expr).cast("string")


#: Columns of the scored frame the stage collects to the driver (one small Arrow table): the
#: run's ppl percentiles and the per-language, per-tier report come from it.
SUMMARY_COLS = ("lang", "tier", "_lm_seen", "ppl", "quality_score", "_n_tokens", "_disposition", "reason")


def tier_stats(table: pa.Table) -> dict:
    """Per language and tier figures of the stage's rows, for the stats and plots.

    Args:
        table: Arrow table with ``lang``, ``tier`` (string; null or empty -> ``und`` /
            ``unknown``), ``ppl``, ``quality_score`` (float64), ``_disposition`` and ``reason``
            (string), one row per document.

    Returns:
        ``{lang: {tier: {"docs": int, "removed": int (disposition not kept), "reasons":
        {reason: count} (removed rows, keys sorted), "ppl": float64 array, "q": float64 array
        (non-null values)}}}``.
    """
    import numpy as np
    import pyarrow.compute as pc

    def labels(name: str, default: str):
        col = pc.fill_null(table.column(name), default)
        col = pc.if_else(pc.equal(col, ""), default, col)  # "" counts as missing (``x or default``)
        enc = pc.dictionary_encode(col).combine_chunks()
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()

    per: dict = {}
    if table.num_rows == 0:
        return per
    lc, ll = labels("lang", "und")
    tc, tl = labels("tier", "unknown")
    code = lc * len(tl) + tc
    removed = pc.fill_null(pc.not_equal(table.column("_disposition"), "kept"), True).to_numpy(zero_copy_only=False)
    ppl_ok = pc.is_valid(table.column("ppl")).to_numpy(zero_copy_only=False)
    q_ok = pc.is_valid(table.column("quality_score")).to_numpy(zero_copy_only=False)
    ppl = table.column("ppl").to_numpy(zero_copy_only=False).astype(np.float64)
    q = table.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64)
    reason = table.column("reason")
    order = np.argsort(code, kind="stable")
    bounds = np.flatnonzero(np.diff(code[order])) + 1
    for idx in np.split(order, bounds):
        c = int(code[idx[0]])
        rem = idx[removed[idx]]
        counts: dict = {}
        for r in reason.take(pa.array(rem)).to_pylist():
            counts[r] = counts.get(r, 0) + 1
        per.setdefault(ll[c // len(tl)], {})[tl[c % len(tl)]] = {
            "docs": int(idx.size), "removed": int(rem.size),
            "reasons": {k: counts[k] for k in sorted(counts, key=lambda x: (x is None, x or ""))},
            "ppl": ppl[idx[ppl_ok[idx]]], "q": q[idx[q_ok[idx]]]}
    return per


#: Documents in above which the quality stage brings nothing per document back to the driver
#: (``quality.summary_max_rows``): at about 60 bytes per row of :data:`SUMMARY_COLS` in Arrow,
#: 5M rows are about 300 MB, well inside Spark's default ``spark.driver.maxResultSize`` (1 GiB).
DEFAULT_SUMMARY_MAX_ROWS = 5_000_000


def run_summary(summary: pa.Table, pcts) -> tuple[dict, dict]:
    """LM-seen / unseen document counts and the run's ppl percentiles per language, from the
    scored rows' small columns.

    Args:
        summary: Arrow table with :data:`SUMMARY_COLS`, one row per document.
        pcts: increasing fractions in (0, 1) (``bucket_percentiles`` / 100).

    Returns:
        ``(counts, run)``: ``counts[(lang, seen)]`` = documents with a ppl and at least one
        token (only non-zero entries); ``run[lang]`` = :func:`run_percentiles` of the unseen
        documents' ppl (languages with any).
    """
    import numpy as np
    import pyarrow.compute as pc

    valid = summary.filter(pc.and_(pc.is_valid(summary.column("ppl")),
                                   pc.fill_null(pc.greater(summary.column("_n_tokens"), 0), False)))
    v_lang = np.asarray(valid.column("lang").to_pylist(), dtype=object)
    v_seen = valid.column("_lm_seen").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    v_ppl = valid.column("ppl").to_numpy(zero_copy_only=False).astype(np.float64)
    counts: dict = {}
    run: dict = {}
    for lang in sorted({l for l in v_lang.tolist()}, key=lambda x: (x is None, x or "")):
        mine = v_lang == lang
        n_seen = int(np.count_nonzero(mine & v_seen))
        n_unseen = int(np.count_nonzero(mine & ~v_seen))
        if n_seen:
            counts[(lang, True)] = n_seen
        if n_unseen:
            counts[(lang, False)] = n_unseen
            run[lang] = run_percentiles(v_ppl[mine & ~v_seen], pcts)
    return counts, run


def large_run_summary(scored, pcts) -> tuple[dict, dict]:
    """:func:`run_summary` from a Spark aggregate (one job over the cached scored rows, one
    small row per language back), for runs too large to collect: the percentiles are
    ``percentile_approx(ppl, pcts, 100000)`` (a document's ppl; rank error <= n / 100000, exact
    while a language has at most 100,000 unseen documents).

    Args:
        scored: DataFrame with ``lang``, ``ppl``, ``_n_tokens``, ``_lm_seen``.
        pcts: increasing fractions in (0, 1).

    Returns:
        ``(counts, run)`` as :func:`run_summary`.
    """
    from pyspark.sql import functions as F

    valid = F.col("ppl").isNotNull() & F.coalesce(F.col("_n_tokens") > 0, F.lit(False))
    seen = F.coalesce(F.col("_lm_seen"), F.lit(False))
    rows = scored.groupBy("lang").agg(
        F.count(F.when(valid & seen, 1)).alias("n_seen"),
        F.count(F.when(valid & ~seen, 1)).alias("n_unseen"),
        F.percentile_approx(F.when(valid & ~seen, F.col("ppl")), list(pcts), 100000).alias("p")).collect()
    counts: dict = {}
    run: dict = {}
    for r in rows:
        if r["n_seen"]:
            counts[(r["lang"], True)] = int(r["n_seen"])
        if r["n_unseen"]:
            counts[(r["lang"], False)] = int(r["n_unseen"])
            run[r["lang"]] = tuple(float(x) for x in r["p"])
    return counts, run


def large_run_tier_stats(written, sample_rows: int, seed: int = 0) -> dict:
    """:func:`tier_stats` for runs too large to collect, from the written output with two small
    aggregates and a sample: documents, removals and reasons per language and tier are exact
    (``groupBy``); ``median_ppl`` / ``median_q`` are ``percentile_approx(.., 0.5, 100000)``; the
    ``ppl`` / ``q`` arrays (the histograms) come from a Bernoulli sample of about
    ``sample_rows`` documents (seeded).

    Args:
        written: DataFrame with ``lang``, ``tier``, ``ppl``, ``quality_score``, ``_disposition``,
            ``reason`` (the stage's written output).
        sample_rows: documents to sample for the histograms (>= 1).
        seed: the sample's seed.

    Returns:
        ``{lang: {tier: {"docs", "removed", "reasons", "ppl", "q", "median_ppl", "median_q"}}}``
        (``median_*`` None where a group has no value).
    """
    import numpy as np
    from pyspark.sql import functions as F

    def label(name: str, default: str):
        c = F.col(name)
        return F.when(c.isNull() | (c == ""), F.lit(default)).otherwise(c)

    lab = written.select(label("lang", "und").alias("l"), label("tier", "unknown").alias("t"), "ppl",
                         "quality_score", "_disposition", "reason")
    per: dict = {}
    for r in lab.groupBy("l", "t").agg(
            F.count(F.lit(1)).alias("docs"),
            F.percentile_approx("ppl", 0.5, 100000).alias("mp"),
            F.percentile_approx("quality_score", 0.5, 100000).alias("mq")).collect():
        per.setdefault(r["l"], {})[r["t"]] = {
            "docs": int(r["docs"]), "removed": 0, "reasons": {},
            "median_ppl": None if r["mp"] is None else float(r["mp"]),
            "median_q": None if r["mq"] is None else float(r["mq"]),
            "ppl": np.zeros(0), "q": np.zeros(0)}
    removed = F.coalesce(F.col("_disposition") != "kept", F.lit(True))
    for r in lab.where(removed).groupBy("l", "t", "reason").count().collect():
        t = per[r["l"]][r["t"]]
        t["removed"] += int(r["count"])
        t["reasons"][r["reason"]] = int(r["count"])
    total = sum(t["docs"] for tiers in per.values() for t in tiers.values())
    if total:
        frac = min(1.0, max(1, sample_rows) / total)
        sample = lab.select("l", "t", "ppl", "quality_score").sample(fraction=frac, seed=seed).toArrow()
        ls, ts = sample.column("l").to_pylist(), sample.column("t").to_pylist()
        ppl = sample.column("ppl").to_pylist()
        q = sample.column("quality_score").to_pylist()
        groups: dict = {}
        for i, key in enumerate(zip(ls, ts)):
            g = groups.setdefault(key, ([], []))
            if ppl[i] is not None:
                g[0].append(ppl[i])
            if q[i] is not None:
                g[1].append(q[i])
        for (l, t), (pv, qv) in groups.items():
            per[l][t]["ppl"] = np.asarray(pv, dtype=np.float64)
            per[l][t]["q"] = np.asarray(qv, dtype=np.float64)
    for tiers in per.values():
        for t in tiers.values():
            t["reasons"] = {k: t["reasons"][k] for k in sorted(t["reasons"], key=lambda x: (x is None, x or ""))}
    return per


def _threshold_value(v, auto):
    """Config value -> float or None: ``auto`` takes ``auto`` (the manifest's), null disables."""
    if isinstance(v, str):
        if v.strip().lower() != "auto":
            raise ValueError(f"quality threshold must be a number, null or 'auto', got {v!r}")
        v = auto
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        raise ValueError("quality threshold is NaN")
    return v


def resolve_thresholds(cfg: dict, manifest: dict, langs) -> dict[str, tuple]:
    """Per-language ``(max_ppl, min_quality_score)`` from config and manifest calibration.

    Raises:
        ValueError: a threshold is neither a number, null nor ``auto``.
    """
    default = {"max_ppl": "auto", "min_quality_score": "auto", **(cfg.get("default_thresholds") or {})}
    per = cfg.get("thresholds") or {}
    out = {}
    for lang in langs:
        cal = (manifest.get("languages") or {}).get(lang) or {}
        t = {**default, **(per.get(lang) or {})}
        out[lang] = (_threshold_value(t.get("max_ppl"), cal.get("max_ppl")),
                     _threshold_value(t.get("min_quality_score"), cal.get("min_quality_score")))
    return out


def threshold_sources(cfg: dict, manifest: dict, langs) -> dict[str, dict]:
    """Where each language's ``(max_ppl, min_quality_score)`` of :func:`resolve_thresholds`
    comes from: ``config`` (a number), ``disabled`` (null), or for ``auto`` the manifest's
    derivation (``thresholds_derivation``: source, quantile, documents), e.g.
    ``{"max_ppl": {"from": "auto", "source": "web_ppl", "quantile": 0.9, "n_docs": 83}}``."""
    default = {"max_ppl": "auto", "min_quality_score": "auto", **(cfg.get("default_thresholds") or {})}
    per = cfg.get("thresholds") or {}
    out = {}
    for lang in langs:
        cal = (manifest.get("languages") or {}).get(lang) or {}
        der = cal.get("thresholds_derivation") or {}
        t = {**default, **(per.get(lang) or {})}
        out[lang] = {}
        for key in ("max_ppl", "min_quality_score"):
            v = t.get(key)
            if isinstance(v, str) and v.strip().lower() == "auto":
                d = der.get(key) or {}
                out[lang][key] = {"from": "auto", "source": d.get("source") if cal.get(key) is not None else "none",
                                  "quantile": d.get("quantile"), "n_docs": d.get("n_docs")}
                chosen = [c for c in d.get("candidates") or () if c.get("source") == d.get("source")]
                for k in ("rank", "confidence", "k"):
                    if chosen and chosen[0].get(k) is not None:
                        out[lang][key][k] = chosen[0][k]
            else:
                out[lang][key] = {"from": "disabled" if v is None else "config"}
    return out


def choose_cutoffs(langs, *, fixed: dict, run: dict, unseen: dict, recorded: set, manifest: dict,
                   pcts: list[float], min_docs: int) -> tuple[dict, dict, dict]:
    """Per-language ``ppl_bucket`` cut-offs and where they came from (module docstring).

    Args:
        langs: languages to decide for.
        fixed: ``{lang: (c_head, c_tail)}`` from config.
        run: ``{lang: (c_head, c_tail)}`` percentiles over the run's documents not flagged as
            LM training data.
        unseen: ``{lang: number of those documents}``.
        recorded: languages whose LM is the manifest's (training data known, and its
            held-out percentiles describe that LM; a user's LM gets neither).
        manifest: the model manifest (``heldout_ref_ppl_percentiles`` per language).
        pcts: the two bucket percentiles as fractions (e.g. [0.3, 0.6]).
        min_docs: fewest unseen documents for run percentiles.

    Returns:
        (``{lang: (c_head, c_tail)}``, ``{lang: source}`` with source one of ``config``,
        ``run_unseen``, ``run_all`` (LM training data unknown), ``heldout_reference``, ``none``;
        ``{lang: documents behind the cut-offs}``).
    """
    cutoffs, sources, ndocs = {}, {}, {}
    for lang in langs:
        n = int(unseen.get(lang, 0))
        held = ((manifest.get("languages") or {}).get(lang) or {}).get("heldout_ref_ppl_percentiles") or {}
        hv = [held.get(str(int(round(p * 100)))) for p in pcts]
        if lang in fixed:
            cutoffs[lang], sources[lang], ndocs[lang] = fixed[lang], "config", 0
        elif lang in run and n >= min_docs:
            cutoffs[lang], sources[lang], ndocs[lang] = run[lang], ("run_unseen" if lang in recorded else "run_all"), n
        elif lang in recorded and all(v is not None for v in hv):  # only for the manifest's own LM
            cutoffs[lang], sources[lang] = (float(hv[0]), float(hv[1])), "heldout_reference"
            ndocs[lang] = int(((manifest.get("languages") or {}).get(lang) or {}).get("heldout_ref_docs") or 0)
        elif lang in run:
            # no held-out figures (user models): a few run documents beat no buckets at all
            cutoffs[lang], sources[lang], ndocs[lang] = run[lang], ("run_unseen" if lang in recorded else "run_all"), n
        else:
            sources[lang], ndocs[lang] = "none", 0
    return cutoffs, sources, ndocs


class QualityStage(Stage):
    """KenLM perplexity + fastText quality classifier (see module docstring).

    Not fused with ``langid``/``rules`` (:mod:`pipeline.fused`): missing models are trained from
    the published ``langid/`` output (all of it), and ``ppl_bucket`` cut-offs are percentiles of
    this run's scores, so the decision needs the scored rows of the whole run first.

    One pass over the documents (issue 19, item 3b): a single Python pass scores every document
    and decides its removal (:class:`QualityScoreDecideBatch`: the thresholds are known before
    scoring); its rows are cached and, in the same Spark job, its small columns
    (:data:`SUMMARY_COLS`) come back to the driver as one Arrow table, from which the run's exact
    ppl percentiles (:func:`run_percentiles`) and the per-tier report (:func:`tier_stats`) are
    computed. The runner's write then reads the cached rows and adds ``ppl_bucket`` in the JVM
    (:func:`bucket_column`): no second Python pass, no extra percentile / count jobs, no collect
    of the written rows.

    That table costs the driver about 60 bytes per document (and counts against
    ``spark.driver.maxResultSize``, 1 GiB by default), so above ``summary_max_rows`` documents in
    (default 5,000,000: about 300 MB) nothing per document comes back: the cut-offs come from
    ``percentile_approx(ppl, pcts, 100000)`` per language over the cached rows (relative rank
    error 1e-5; exact while a language has <= 100,000 unseen documents), the per-tier counts and
    removals from a ``groupBy`` of the written output, the medians from ``percentile_approx``
    (a sample value, not numpy's midpoint of two), and the histograms from a sample of about
    ``summary_max_rows`` rows (:func:`large_run_summary`, :func:`large_run_tier_stats`).
    """

    name = "quality"

    def empty_output(self, df, ctx: StageContext):
        """0 documents in: nothing to score and nothing to train models from (issue 14, cause
        6); the input plus null ``ppl``/``ppl_bucket``/``quality_score``/``reason``/``detail``."""
        from pyspark.sql import functions as F

        keep = [c for c in df.columns if c not in HELPER_COLS]
        return df.select(*keep, F.lit(None).cast("double").alias("ppl"),
                         F.lit(None).cast("string").alias("ppl_bucket"),
                         F.lit(None).cast("double").alias("quality_score"),
                         F.lit(None).cast("string").alias("reason"), F.lit(None).cast("string").alias("detail"))

    def _models(self, ctx: StageContext, cfg: dict):
        self._no_models = None
        models_dir = cfg.get("models_dir") or ctx.path("models", "quality")
        if models_dir.startswith("file:"):
            models_dir = models_dir[len("file:"):]
        have_manifest = os.path.exists(os.path.join(models_dir, Q.MANIFEST))
        if not have_manifest and not cfg.get("models") and cfg.get("train_if_missing", True):
            from pipeline.quality_models import load_docs, train_quality_models, training_options

            src = ctx.path("langid")
            src = src[len("file:"):] if src.startswith("file:") else src
            opts = training_options(cfg)
            log(f"[quality] no models in {models_dir}: training them from {src} "
                f"(`make quality-models` does this ahead of time; at most {opts['max_docs'] or 'all'} "
                f"documents per language and label)")
            docs = load_docs(src, list(ctx.config["languages"]), max_docs=opts["max_docs"])
            web_fallback = bool(cfg.get("web_fallback", False))
            if not any(d.get("tier") in Q.POSITIVE_TIERS for d in docs) and not web_fallback:
                # web-only input (issue 16): nothing to learn what clean text looks like from
                self._no_models = (
                    f"no reference-tier documents in {src}: quality models cannot be trained, documents pass "
                    f"unscored (quality.missing_model: {cfg.get('missing_model', 'keep')}). To score them, train "
                    f"models on text with reference-tier sources (`make quality-models`) and set "
                    f"quality.models_dir, or set quality.web_fallback: true to train each language's KenLM on "
                    f"its own web documents (removes only extreme ppl outliers of the held-out part)")
                log(f"[quality] WARNING: {self._no_models}")
                return {}, None, {}
            train_quality_models(docs, models_dir, languages=list(ctx.config["languages"]),
                                 web_drop=opts["web_drop"], ppl_web_drop=opts["ppl_web_drop"],
                                 input_desc=src, input_counts=docs.counts, max_docs=docs.max_docs,
                                 web_fallback=web_fallback)
        langs, clf, manifest = Q.model_paths(models_dir, cfg.get("models") or {}, cfg.get("classifier"))
        cal = manifest.get("calibration") or {}
        for key in ("web_drop", "ppl_web_drop"):
            if key in cfg and cfg[key] is not None and cal.get(key) is not None \
                    and abs(float(cfg[key]) - float(cal[key])) > 1e-12:
                log(f"[quality] WARNING: quality.{key} is {cfg[key]} but the models in {models_dir} were "
                    f"calibrated with {cal[key]}: the auto thresholds follow the manifest; retrain "
                    f"(`make quality-models FORCE=1`) to apply it")
        man_clf = manifest.get("classifier") or {}
        if clf and not cfg.get("classifier") and man_clf.get("features_version") != Q.CLASSIFIER_FEATURES:
            raise ValueError(
                f"the classifier in {models_dir} was trained on features "
                f"{man_clf.get('features_version') or 'of an older version'}, this code scores with "
                f"{Q.CLASSIFIER_FEATURES}: retrain the models (`make quality-models FORCE=1`)")
        self._models_dir = models_dir
        return langs, clf, manifest

    def _lm_train(self, ctx: StageContext, cfg: dict, models: dict, manifest: dict) -> dict | None:
        """What the stage knows about the LMs' training data (see :class:`QualityScoreBatch`):
        languages whose LM is the manifest's (not a user override), shipped hash file, split."""
        overridden = set(cfg.get("models") or {})
        langs = sorted(l for l in models if l in (manifest.get("languages") or {}) and l not in overridden)
        if not langs:
            return None
        info = manifest.get("lm_train_hashes") or {}
        hashes = None
        if info.get("path"):
            path = os.path.join(self._models_dir, info["path"])
            if os.path.exists(path):
                hashes = ship(ctx.spark, _stage_copy(ctx, path))
            else:
                log(f"[quality] {path} missing: LM training documents recognised by split key only")
        frac = (manifest.get("split") or {}).get("heldout_fraction")
        return {"hashes": hashes, "heldout_fraction": frac, "langs": langs}

    def transform(self, df, ctx: StageContext):
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

        cfg = ctx.stage_config("quality")
        missing = cfg.get("missing_model", "keep")
        if missing not in ("keep", "reject"):
            raise ValueError(f"quality.missing_model must be keep or reject, got {missing!r}")
        models, clf, manifest = self._models(ctx, cfg)
        if not models and not getattr(self, "_no_models", None):
            raise FileNotFoundError("no quality models: run `make quality-models` or set quality.models")
        shipped = {lang: (ship(ctx.spark, _stage_copy(ctx, a)), ship(ctx.spark, _stage_copy(ctx, b)))
                   for lang, (a, b) in sorted(models.items())}
        names = [os.path.basename(p) for pair in shipped.values() for p in pair] + (
            [os.path.basename(clf)] if clf else [])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"quality model files must have distinct base names (SparkFiles ships by "
                             f"name); duplicated: {dup}")
        clf = ship(ctx.spark, _stage_copy(ctx, clf)) if clf else None
        log(f"[quality] models for {len(shipped)} languages: {', '.join(shipped)}; classifier: "
            f"{os.path.basename(clf) if clf else 'none'}")
        # per-language bucket cut-offs (module docstring): config, else percentiles over the run's
        # documents the LM did not train on, else the manifest's held-out reference percentiles
        pcts = [float(p) / 100.0 for p in cfg.get("bucket_percentiles", [30, 60])]
        if len(pcts) != 2 or not 0 < pcts[0] < pcts[1] < 1:
            raise ValueError(f"quality.bucket_percentiles must be two increasing percentiles, got {pcts}")
        min_docs = int(cfg.get("min_cutoff_docs", 50))
        fixed = {k: tuple(float(x) for x in v) for k, v in (cfg.get("cutoffs") or {}).items()}
        # the removal thresholds do not depend on the run's scores: decided in the scoring pass
        # (every language with cut-offs has a model or fixed cut-offs, so these are the languages
        # the decision can meet)
        thresholds = resolve_thresholds(cfg, manifest, sorted(set(shipped) | set(fixed)))
        thr_src = threshold_sources(cfg, manifest, sorted(thresholds))

        # one pass over the documents: score + decide in Python, cached; its small columns come
        # back to the driver in the same job (percentiles, report); the write then only adds
        # ppl_bucket in the JVM from the cached rows
        keep = [f for f in df.schema.fields if f.name not in HELPER_COLS]
        scored_schema = StructType(keep + [
            StructField("ppl", DoubleType()), StructField("quality_score", DoubleType()),
            StructField("reason", StringType()), StructField("detail", StringType()),
            StructField("_disposition", StringType()), StructField("_n_tokens", LongType()),
            StructField("_q_error", StringType()), StructField("_lm_seen", BooleanType())])
        lm_train = self._lm_train(ctx, cfg, models, manifest)
        fn = QualityScoreDecideBatch(shipped, clf, int(cfg.get("max_paragraph_chars", Q.DEFAULT_MAX_PARAGRAPH_CHARS)),
                                     int(cfg.get("classifier_max_tokens", Q.DEFAULT_CLASSIFIER_MAX_TOKENS)), lm_train,
                                     thresholds, missing)
        scored = map_arrow(df.select([f.name for f in keep]), fn, scored_schema, count_docs=True).persist(StorageLevel.MEMORY_AND_DISK)
        self._scored = scored
        limit = int(cfg.get("summary_max_rows", DEFAULT_SUMMARY_MAX_ROWS))
        n_in = getattr(self, "n_in", None)
        self._large = n_in is None or n_in > limit
        if self._large:
            # bounded driver memory: Spark aggregates instead of a table of every document
            log(f"[quality] {n_in} documents in > summary_max_rows {limit}: cut-offs from percentile_approx, "
                f"report figures from aggregates", detail=True)
            self._summary = None
            counts, run = large_run_summary(scored, pcts)
        else:
            summary = scored.select(*SUMMARY_COLS).toArrow()
            self._summary = summary
            counts, run = run_summary(summary, pcts)
        recorded = set((lm_train or {}).get("langs") or ())
        cutoffs, sources, cut_docs = choose_cutoffs(
            sorted(set(shipped) | {l for l, _ in counts} | set(fixed)), fixed=fixed, run=run,
            unseen={l: counts.get((l, False), 0) for l in set(shipped) | {l for l, _ in counts}},
            recorded=recorded, manifest=manifest, pcts=pcts, min_docs=min_docs)
        self._info = {"cutoffs": cutoffs, "cutoffs_source": sources, "cutoff_docs": cut_docs,
                      "thresholds_source": thr_src,
                      "lm_seen_docs": {l: counts.get((l, True), 0) for l in sorted({l for l, _ in counts})},
                      "thresholds": thresholds, "bucket_percentiles": pcts,
                      "fixed_cutoffs": sorted(fixed), "manifest": manifest}
        for lang in sorted(set(cutoffs) | set(sources)):
            mp, mq = thresholds.get(lang, (None, None))
            c = cutoffs.get(lang)
            log(f"[quality] {lang}: ppl cut-offs "
                f"{'none' if c is None else f'{c[0]:.1f}/{c[1]:.1f}'} from {sources.get(lang)} "
                f"({cut_docs.get(lang, 0)} docs; {counts.get((lang, True), 0)} LM training docs left out), "
                f"max_ppl {mp} ({_src_text(thr_src.get(lang, {}).get('max_ppl'))}), "
                f"min_quality_score {mq} ({_src_text(thr_src.get(lang, {}).get('min_quality_score'))})", detail=True)
        return scored.select(*[f.name for f in keep], "ppl", bucket_column(cutoffs).alias("ppl_bucket"),
                             "quality_score", "reason", "detail", "_disposition")

    def after_write(self, written, ctx: StageContext) -> None:
        """Per-language figures (medians per tier, removal share per tier, cut-offs, thresholds)
        into ``ctx.extra`` and ppl / classifier-score histograms into ``ctx.plots``."""
        scored = getattr(self, "_scored", None)
        if scored is not None:
            scored.unpersist()
        info = getattr(self, "_info", {})
        # the scoring pass's summary (same rows as written); without one (0 documents in) the
        # written output's columns
        table = getattr(self, "_summary", None)
        if getattr(self, "_large", False):
            per = large_run_tier_stats(written, int(ctx.stage_config("quality").get(
                "summary_max_rows", DEFAULT_SUMMARY_MAX_ROWS)))
        else:
            if table is None:
                table = written.select("lang", "tier", "ppl", "quality_score", "_disposition", "reason").toArrow()
            per = tier_stats(table)
        self._summary = None
        import numpy as np

        summary = {}
        man_langs = (info.get("manifest") or {}).get("languages") or {}
        for lang, tiers in sorted(per.items()):
            c = info.get("cutoffs", {}).get(lang)
            # unrounded: a run cut-off is some document's ppl, and its bucket depends on equality
            s = {"cutoffs": [float(x) for x in c] if c is not None else None,
                 "cutoffs_source": info.get("cutoffs_source", {}).get(lang),
                 "cutoff_docs": info.get("cutoff_docs", {}).get(lang),
                 "lm_training_docs": info.get("lm_seen_docs", {}).get(lang, 0),
                 "max_ppl": _round((info.get("thresholds", {}).get(lang) or (None, None))[0]),
                 "min_quality_score": _round((info.get("thresholds", {}).get(lang) or (None, None))[1], 6),
                 "thresholds_source": (info.get("thresholds_source") or {}).get(lang),
                 "lm_trained_on": ((man_langs.get(lang) or {}).get("lm_trained_on", "reference")
                                   if lang in man_langs else None),
                 "tiers": {}}
            for tier, t in sorted(tiers.items()):
                s["tiers"][tier] = {
                    "documents": t["docs"], "removed": t["removed"],
                    "removed_share": round(t["removed"] / t["docs"], 4) if t["docs"] else 0.0,
                    "reasons": t["reasons"],
                    "median_ppl": _round(t["median_ppl"] if "median_ppl" in t else
                                         float(np.median(t["ppl"])) if len(t["ppl"]) else None),
                    "median_quality_score": _round(t["median_q"] if "median_q" in t else
                                                   float(np.median(t["q"])) if len(t["q"]) else None)}
            summary[lang] = s
            parts = [f"{tier} {v['removed']}/{v['documents']}" for tier, v in s["tiers"].items()]
            log(f"[quality] {lang}: removed " + ", ".join(parts), detail=True)
        ctx.extra["per_lang"] = summary
        # how the run's figures were made: "collected" (exact, per-document table on the driver)
        # or "aggregates" (above summary_max_rows: percentile_approx, sampled histograms)
        ctx.extra["summary"] = "aggregates" if getattr(self, "_large", False) else "collected"
        ctx.extra["bucket_percentiles"] = info.get("bucket_percentiles")
        ctx.extra["cutoffs_source"] = info.get("cutoffs_source")
        man = info.get("manifest") or {}
        if getattr(self, "_no_models", None):
            ctx.extra["models"] = {"status": "none", "reason": self._no_models}
        if man:
            ctx.extra["models"] = {"created": man.get("created"), "models_dir": getattr(self, "_models_dir", None),
                                   "input": man.get("input"), "calibration": man.get("calibration"),
                                   "lm_trained_on": {l: v.get("lm_trained_on", "reference")
                                                     for l, v in (man.get("languages") or {}).items()},
                                   "classifier": {k: (man.get("classifier") or {}).get(k)
                                                  for k in ("kind", "features_version", "auc", "train_pos",
                                                            "train_neg")}}
        try:
            ctx.plots.extend(self._plots(per, info, ctx))
        except Exception as e:  # plots are a report nicety; never fail the stage for them
            log(f"[quality] plots skipped: {type(e).__name__}: {e}")

    def _plots(self, per: dict, info: dict, ctx: StageContext) -> list[str]:
        import numpy as np

        from pipeline.plots import count_axis, pyplot

        if not per:  # no documents reached this stage: nothing to plot
            return []
        plt = pyplot()  # Agg, fonts >= 9 pt
        out_dir = ctx.path("stats", "plots")
        if "://" in out_dir and not out_dir.startswith("file:"):
            log("[quality] plots are written only for local output roots")
            return []
        out_dir = out_dir[len("file:"):] if out_dir.startswith("file:") else out_dir
        os.makedirs(out_dir, exist_ok=True)
        langs = sorted(per)
        colors = {"reference": "tab:green", "book": "tab:olive", "web": "tab:red", "parallel": "tab:blue"}
        paths = []
        for kind in ("ppl", "q"):
            ncol = 4  # 18 languages: 5 rows of 4 panels, about 1,100 px wide at 90 dpi (not scaled down)
            nrow = max(1, math.ceil(len(langs) / ncol))
            fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.5 * nrow), squeeze=False)
            for ax in axes.flat[len(langs):]:
                ax.axis("off")
            for ax, lang in zip(axes.flat, langs):
                vals_all = np.concatenate([np.asarray(t["ppl"] if kind == "ppl" else t["q"], dtype=np.float64)
                                           for t in per[lang].values()])
                if not vals_all.size:
                    ax.set_title(f"{lang} (no scores)", y=1.0)
                    continue
                if kind == "ppl":
                    lv = np.log10(np.maximum(np.asarray(vals_all), 1.0))
                    bins = np.linspace(lv.min(), lv.max() + 1e-9, 30)
                else:
                    bins = np.linspace(0, 1, 26)
                for tier, t in sorted(per[lang].items()):
                    v = t["ppl"] if kind == "ppl" else t["q"]
                    if not len(v):
                        continue
                    v = np.log10(np.maximum(np.asarray(v), 1.0)) if kind == "ppl" else np.asarray(v)
                    # one filled step outline per tier (np.histogram's counts, the bars ax.hist
                    # would draw) instead of a Rectangle per bin: the same picture, far fewer artists
                    counts, _ = np.histogram(v, bins=bins)
                    ax.stairs(counts, bins, fill=True, alpha=0.55, label=tier, color=colors.get(tier, "gray"))
                thr = info.get("thresholds", {}).get(lang) or (None, None)
                if kind == "ppl":
                    for c, ls in zip(info.get("cutoffs", {}).get(lang) or (), (":", "--")):
                        ax.axvline(math.log10(max(c, 1.0)), color="k", ls=ls, lw=1)
                    if thr[0] is not None:
                        ax.axvline(math.log10(max(thr[0], 1.0)), color="purple", lw=1.5)
                    ax.set_xlabel("log10 ppl")
                else:
                    if thr[1] is not None:
                        ax.axvline(thr[1], color="purple", lw=1.5)
                    ax.set_xlabel("quality_score")
                ax.set_title(lang, fontweight="bold", y=1.0)  # y given: no auto-placement pass over the tick boxes
                count_axis(ax.yaxis)  # documents: integer ticks
            title = ("KenLM perplexity per language (dotted/dashed: head/middle and middle/tail cut-offs; "
                     "purple: max_ppl)" if kind == "ppl" else
                     "Classifier quality_score per language (purple: min_quality_score)")
            from matplotlib.patches import Patch

            tiers = sorted({t for l in langs for t in per[l]})
            fig.legend(handles=[Patch(color=colors.get(t, "gray"), alpha=0.55, label=t) for t in tiers],
                       loc="upper right", ncol=len(tiers), frameon=False, title="tier (y: documents)")
            fig.suptitle(title, x=0.02, ha="left")
            # fixed margins in inches (what tight_layout chose for this grid), without the two
            # extra renders of every tick label tight_layout needs to measure them
            w_in, h_in = fig.get_size_inches()
            fig.subplots_adjust(left=0.45 / w_in, right=1 - 0.1 / w_in, bottom=0.5 / h_in,
                                top=1 - 0.95 / h_in, wspace=0.28, hspace=0.62)
            p = os.path.join(out_dir, "quality_ppl.png" if kind == "ppl" else "quality_score.png")
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
        return paths


def _stage_copy(ctx: StageContext, path: str) -> str:
    """A link (or copy) of a model file whose base name is unique to its path and version.

    SparkFiles ships files by base name and refuses a second file of the same name with a
    different path in one application (e.g. two model sets, or retrained models), so every
    model file is shipped as ``<sha1(path, size, mtime)[:12]>-<name>`` from a staging folder
    under the driver's temp directory.
    """
    import hashlib
    import shutil
    import tempfile

    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    d = os.path.join(tempfile.gettempdir(), "polycorpus-quality-ship")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, f"{key}-{os.path.basename(path)}")
    if not os.path.exists(dst):
        tmp = dst + f".{os.getpid()}.tmp"
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, dst)
    return dst


def _src_text(d: dict | None) -> str:
    """``auto: web_ppl q0.9 n=83`` / ``config`` / ``disabled`` for the log."""
    if not d:
        return "-"
    if d.get("from") != "auto":
        return d.get("from", "-")
    q = d.get("quantile")
    return f"auto: {d.get('source')}" + ("" if q is None else f" q{q:g}") + f" n={d.get('n_docs')}"


def _round(x, nd: int = 4):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return [round(float(v), nd) for v in x]
    return round(float(x), nd)
