"""Stage ``rules``: rule-based filtering between ``langid`` and ``quality``.

Every document goes through :func:`filters.rules.apply_rules` with its language's thresholds
from ``configs/filters.yaml``: line-level fixes (whitespace normalisation, javascript/cookie/
policy boilerplate lines) rewrite ``text``; document-level rules (Gopher quality and
repetition, FineWeb, C4, PolyLM's own) reject with a reason name. Rejected documents keep
every metric that fired in ``detail`` (JSON ``{reason: {"value": v, "threshold": t}}``); every
document (kept or not) gets its main metrics and the fixes applied in ``meta`` under
``"rules"`` (``{"m": {...metrics}, "fix": {...counts}}``), so a kept document can be audited
too and the report can plot the metric distributions per language.

Config (``rules:`` in configs/pipeline.yaml):
    filters: path of the per-language thresholds (default ``configs/filters.yaml``).
    tiers:   tiers the document rules apply to (default: all); documents of other tiers are
             kept unchanged.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa

from filters.rules import MAIN_METRICS, apply_rules, load_filter_config, main_metrics
from pipeline.config import repo_path
from pipeline.quantiles import ValueCounts, ValueCountsParam
from pipeline.ship import resolve, ship
from pipeline.stage import Stage, StageContext, log, map_arrow

#: metrics plotted per language in the report (a subset of filters.rules.MAIN_METRICS)
#: quantiles reported per language and metric (p5, p25, p50, p75, p95; the plots' boxes)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PLOT_METRICS = ("words", "avg_word_len", "dup_5_gram", "line_punct_ratio", "digit_ratio",
                "symbol_word_ratio")


def _merge_meta(meta: str | None, rules: dict) -> str:
    """``meta`` JSON with ``"rules": rules`` added; a non-object or unparsable meta is kept
    verbatim under ``"_meta"`` instead of being lost."""
    obj: dict
    if meta:
        try:
            parsed = json.loads(meta)
        except (TypeError, ValueError):
            parsed = None
            obj = {"_meta": meta}
        else:
            obj = parsed if isinstance(parsed, dict) else {"_meta": parsed}
    else:
        obj = {}
    obj["rules"] = rules
    return json.dumps(obj, ensure_ascii=False)


class RulesBatch:
    """Picklable batch function: Arrow batch -> same columns with fixed ``text``, ``meta``
    with the rule metrics, plus ``reason`` and ``detail``.

    Args:
        config_path: ``configs/filters.yaml`` (shipped to executors; resolved there).
        tiers: tiers the rules apply to, or None for all.
        metric_counts: a pyspark accumulator of :class:`pipeline.quantiles.ValueCounts`
            (:class:`~pipeline.quantiles.ValueCountsParam`), or None: each batch adds its
            documents per language (``lang``, ``und`` when null) and the values of their main
            metrics (as written in ``meta``), so the stage's metric quantiles need no second
            pass over its output.

    Raises:
        TypeError: ``tiers`` is a single string.
    """

    def __init__(self, config_path: str, tiers: list[str] | None = None, metric_counts=None):
        if isinstance(tiers, (str, bytes)):  # set("web") would be {"w", "e", "b"}: rules on nothing
            raise TypeError(f"rules.tiers must be a list of tier names or null, got the single string "
                            f"{tiers!r}: write [{tiers!r}]")
        self.config_path = config_path
        self.tiers = set(tiers) if tiers else None
        self.metric_counts = metric_counts

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        cfg = load_filter_config(resolve(self.config_path))  # lru_cached: once per worker
        names = batch.schema.names
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist() if "lang" in names else [None] * len(texts)
        tiers = batch.column("tier").to_pylist() if "tier" in names else [None] * len(texts)
        metas = batch.column("meta").to_pylist() if "meta" in names else [None] * len(texts)
        out_text, out_meta, reasons, details = [], [], [], []
        counts = ValueCounts() if self.metric_counts is not None else None
        for text, lang, tier, meta in zip(texts, langs, tiers, metas):
            if self.tiers is not None and tier not in self.tiers:
                out_text.append(text)
                out_meta.append(meta)
                reasons.append(None)
                details.append(None)
                if counts is not None:
                    counts.add_document("und" if lang is None else lang, None)
                continue
            try:
                res = apply_rules(text, lang, cfg.params(lang, tier))
            except Exception as e:  # never crash the job on one document: reject with the error
                out_text.append(text)
                out_meta.append(meta)
                reasons.append("rules_error")
                details.append(json.dumps({"error": f"{type(e).__name__}: {e}"[:500]}))
                if counts is not None:
                    counts.add_document("und" if lang is None else lang, None)
                continue
            m = main_metrics(res.metrics)
            out_text.append(res.text if res.reason is None else (text or ""))
            out_meta.append(_merge_meta(meta, {"m": m, "fix": res.fixes}))
            reasons.append(res.reason)
            details.append(res.detail_json())
            if counts is not None:
                counts.add_document("und" if lang is None else lang, m)
        if counts is not None:
            self.metric_counts.add(counts)
        cols = [c for c in names if c not in ("reason", "detail")]
        if "meta" not in cols:  # the stage's output always has meta (the rule metrics)
            cols.append("meta")
        arrays = []
        for c in cols:
            if c == "text":
                arrays.append(pa.array(out_text, pa.string()))
            elif c == "meta":
                arrays.append(pa.array(out_meta, pa.string()))
            else:
                arrays.append(batch.column(c))
        arrays += [pa.array(reasons, pa.string()), pa.array(details, pa.string())]
        return pa.RecordBatch.from_arrays(arrays, names=cols + ["reason", "detail"])


class RulesStage(Stage):
    """Gopher / C4 / FineWeb / PolyLM rule filters with per-language thresholds."""

    name = "rules"

    def batch_plan(self, ctx: StageContext, schema):
        """``(fn, out_schema)``: the per-batch callable (:class:`RulesBatch`) for Arrow batches of
        ``schema`` (a pyspark StructType with ``text``; ``reason``/``detail`` of the input are
        dropped, a missing ``meta`` is added as the last column) and the StructType of its output
        (+ ``reason``, ``detail``). Validates and ships ``rules.filters``.

        Raises:
            ValueError: no ``text`` column, or a bad filters config.
        """
        from pyspark.sql.types import StringType, StructField, StructType

        cfg = ctx.stage_config("rules")
        path = repo_path(cfg.get("filters") or "configs/filters.yaml")
        load_filter_config(path)  # validate on the driver: a bad config fails before any work
        ship(ctx.spark, path)
        if "text" not in schema.names:
            raise ValueError("rules stage input has no `text` column")
        keep = [f for f in schema.fields if f.name not in ("reason", "detail")]
        if "meta" not in schema.names:
            keep.append(StructField("meta", StringType()))
        # the metric values every batch computes, counted for after_write's quantiles
        self._metric_counts = ctx.spark.sparkContext.accumulator(ValueCounts(), ValueCountsParam())
        return RulesBatch(path, cfg.get("tiers"), self._metric_counts), StructType(
            keep + [StructField("reason", StringType()), StructField("detail", StringType())])

    def transform(self, df, ctx: StageContext):
        fn, schema = self.batch_plan(ctx, df.schema)
        return map_arrow(df.select([n for n in df.columns if n not in ("reason", "detail")]), fn, schema,
                         count_docs=True)

    def account_keys(self, cols: list[str]) -> dict:
        """The language as :meth:`after_write` groups removals (``und`` when null)."""
        from pyspark.sql import functions as F

        return {"_rl": F.coalesce(F.col("lang"), F.lit("und")) if "lang" in cols else F.lit("und")}

    def after_write(self, written, ctx: StageContext) -> None:
        """Per-language metric quantiles (all documents, kept and removed) into
        ``ctx.extra["metrics_per_lang"]`` and two plots: removals per language and reason, and
        the distribution of the main metrics per language.

        The quantiles are exact (:mod:`pipeline.quantiles`) and come from the metric values the
        write pass counted (:class:`RulesBatch` ``metric_counts``), the documents per language
        from the accounting job's groups: no pass over the output. Only when the counted
        documents disagree with the accounting (a recomputed pass counted twice) are they taken
        from a Spark pass over ``written`` instead (``percentile_approx``, accuracy 1000)."""
        docs: dict = {}
        for r in getattr(self, "_account_rows", None) or ():
            docs[r["_rl"]] = docs.get(r["_rl"], 0) + r["count"]
        acc = getattr(self, "_metric_counts", None)
        counts = acc.value if acc is not None else None
        if counts is not None and counts.documents() == docs:
            qs_by_lang = counts.quantiles(QUANTILES)
        else:
            log(f"[rules] metric quantiles from a pass over the output: the write pass counted "
                f"{sum(counts.documents().values()) if counts is not None else 'no'} documents, the accounting "
                f"{sum(docs.values())}")
            docs, qs_by_lang = self._quantiles_from_output(written)
        per_lang = {}
        for lang in sorted(docs):
            q = qs_by_lang.get(lang, {})
            per_lang[lang] = {"documents": docs[lang], **{
                m: dict(zip(("p5", "p25", "p50", "p75", "p95"), [round(x, 4) for x in q[m]]))
                for m in MAIN_METRICS if q.get(m)}}
        ctx.extra["metrics_per_lang"] = per_lang
        rem: dict = {}  # from the accounting job's groups (account_keys), not another pass
        for r in getattr(self, "_account_rows", None) or ():
            if r["reason"] is not None:
                d = rem.setdefault(r["_rl"], {})
                d[r["reason"]] = d.get(r["reason"], 0) + r["count"]
        ctx.extra["removed_per_lang"] = {k: dict(sorted(v.items())) for k, v in sorted(rem.items())}
        try:
            self._plots(ctx, per_lang, rem)
        except Exception as e:  # plots are a convenience: never fail the stage for them
            log(f"[rules] plots skipped: {type(e).__name__}: {e}")

    @staticmethod
    def _quantiles_from_output(written) -> tuple[dict, dict]:
        """``({lang: documents}, {lang: {metric: [p5, p25, p50, p75, p95]}})`` from one Spark
        pass over the written output's ``meta`` (``percentile_approx``, accuracy 1000: rank
        error <= 0.1% of the documents)."""
        from pyspark.sql import functions as F

        lang_col = F.coalesce(F.col("lang"), F.lit("und")) if "lang" in written.columns else F.lit("und")
        # one JSON parse per document (get_json_object per metric would parse it 16 times)
        m_schema = "struct<rules: struct<m: struct<" + ", ".join(f"{m}: double" for m in MAIN_METRICS) + ">>>"
        parsed = written.select(lang_col.alias("l"), F.from_json("meta", m_schema).alias("_j"))
        aggs = [F.percentile_approx(F.col(f"_j.rules.m.{m}"), list(QUANTILES), 1000).alias(m) for m in MAIN_METRICS]
        docs, qs = {}, {}
        for r in parsed.groupBy("l").agg(F.count("*").alias("n"), *aggs).collect():
            docs[r["l"]] = r["n"]
            qs[r["l"]] = {m: list(r[m]) for m in MAIN_METRICS if r[m]}
        return docs, qs

    def _plots(self, ctx: StageContext, per_lang: dict, removed: dict) -> None:
        out = ctx.out[len("file:"):] if ctx.out.startswith("file:") else ctx.out
        if "://" in out:
            log("[rules] plots are written only for a local output root")
            return
        from pipeline.plots import OTHER_COLOUR, PALETTE, pyplot

        plt = pyplot()  # Agg, fonts >= 9 pt
        d = os.path.join(out, "stats", "plots")
        os.makedirs(d, exist_ok=True)
        langs = sorted(per_lang)
        # 1) removal rate per language, stacked by reason
        reasons = sorted({r for v in removed.values() for r in v},
                         key=lambda r: -sum(v.get(r, 0) for v in removed.values()))
        top = reasons[:9]  # + "other": ten colours of the default cycle, none reused
        fig, ax = plt.subplots(figsize=(12, 4.5))
        bottom = [0.0] * len(langs)
        for reason in top + (["other"] if len(reasons) > len(top) else []):
            vals = []
            for l in langs:
                n = per_lang[l]["documents"] or 1
                c = (removed.get(l, {}).get(reason, 0) if reason != "other"
                     else sum(v for k, v in removed.get(l, {}).items() if k not in top))
                vals.append(100.0 * c / n)
            ax.bar(langs, vals, bottom=bottom, label=reason,
                   color=OTHER_COLOUR if reason == "other" else PALETTE[top.index(reason)])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("% of documents removed")
        ax.set_title("rules: removals per language and reason")
        if top:
            ax.legend(ncol=2, frameon=False)
        p1 = os.path.join(d, "rules_removed_per_lang.png")
        fig.tight_layout()
        fig.savefig(p1, dpi=90)
        plt.close(fig)
        # 2) metric distributions per language (boxes from the p5/p25/p50/p75/p95 quantiles)
        fig, axes = plt.subplots(len(PLOT_METRICS), 1, figsize=(12, 2.2 * len(PLOT_METRICS)))
        for ax, m in zip(axes, PLOT_METRICS):
            stats, labels = [], []
            for l in langs:
                q = per_lang[l].get(m)
                if q:
                    stats.append({"whislo": q["p5"], "q1": q["p25"], "med": q["p50"],
                                  "q3": q["p75"], "whishi": q["p95"], "label": l})
                    labels.append(l)
            if stats:
                ax.bxp(stats, showfliers=False)
            ax.set_ylabel(m)
        axes[0].set_title("rules: metric distributions per language (whiskers p5/p95)")
        fig.tight_layout()
        p2 = os.path.join(d, "rules_metrics_per_lang.png")
        fig.savefig(p2, dpi=90)
        plt.close(fig)
        ctx.plots.extend([p1, p2])
