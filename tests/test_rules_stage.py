"""The `rules` stage end to end on Spark: accounting, rejected partitions with the metrics that
fired, fixed text for kept documents, metrics in meta, report figures and plots."""
from __future__ import annotations

import json
import os

import pytest

from bench.common import ntrex_documents
from pipeline.config import load_config
from pipeline.stage import write_success


def _docs(shared_data):
    rows = []
    ntrex = [d for d in ntrex_documents(shared_data) if d[0] in ("en", "zh", "th", "ja", "ar")]
    for lang, did, text in ntrex[::41]:  # a few real documents per language
        rows.append((f"ntrex-{lang}-{did}", "ntrex", "reference", None, text,
                     json.dumps({"path": "ntrex"}), lang, lang, 0.99))
    spam = "\n".join(["BUY CHEAP WATCHES NOW click here"] * 30)
    rows.append(("spam-1", "web", "web", "http://x.example/1", spam, "{}", None, "en", 0.9))
    rows.append(("cookie-1", "web", "web", "http://x.example/2",
                 "We use cookies to improve your experience. Accept all cookies\n"
                 "Please enable JavaScript in your browser to view this page.", None, None, "en", 0.9))
    rows.append(("empty-1", "web", "web", "http://x.example/3", "  \n\t ", "{}", None, "en", 0.9))
    en_text = next(t for l, _, t in ntrex_documents(shared_data) if l == "en")
    noisy = "  " + en_text.replace(" the ", " the\u00a0", 3).replace("\n", " \t\r\n\r\n\r\n", 2) + "  "
    rows.append(("ws-1", "web", "web", "http://x.example/4", noisy, "not json", None, "en", 0.9))
    return rows


@pytest.fixture(scope="module")
def rules_run(spark, shared_data, tmp_path_factory):
    from pyspark.sql.types import FloatType, StringType, StructField, StructType

    from pipeline.cli import run_stages

    out = str(tmp_path_factory.mktemp("rules_stage"))
    schema = StructType([StructField(n, StringType()) for n in
                         ("id", "source", "tier", "url", "text", "meta", "lang_declared", "lang")]
                        + [StructField("lang_score", FloatType())])
    rows = _docs(shared_data)
    spark.createDataFrame(rows, schema).repartition(2).write.parquet(out + "/langid")
    # published as the runner publishes: the marker records the rows and the schema
    write_success(spark, out + "/langid", "fp-langid", [f for f in os.listdir(out + "/langid") if f.endswith(".parquet")],
                  rows=len(rows), schema=schema)
    config = load_config(None, str(shared_data))
    config["stages"] = ["ingest", "langid", "rules"]
    sc = spark.sparkContext
    sc.setJobGroup("rules-stage-test", "the rules stage")
    stats = run_stages(spark, out, config, ["rules"])["rules"]
    stats["_spark_jobs"] = len(sc.statusTracker().getJobIdsForGroup("rules-stage-test"))
    sc.setLocalProperty("spark.jobGroup.id", None)
    return out, stats, rows


def test_accounting_and_reasons(rules_run, spark):
    out, stats, rows = rules_run
    tot = stats["totals"]
    assert tot["in"] == len(rows) == tot["kept"] + sum(tot["removed"].values())
    assert os.path.exists(out + "/rules/_SUCCESS")
    rejected = spark.read.parquet(out + "/rejected/stage=rules").collect()
    by_id = {r["id"]: r for r in rejected}
    assert by_id["spam-1"]["reason"] == "gopher_rep_dup_line_frac"
    assert by_id["cookie-1"]["reason"] == "boilerplate_only"
    assert by_id["empty-1"]["reason"] == "empty_doc"
    for r in rejected:  # every rejection says which metrics fired, with values and thresholds
        d = json.loads(r["detail"])
        assert r["reason"] in d and {"value", "threshold"} <= set(d[r["reason"]])
    spam_detail = json.loads(by_id["spam-1"]["detail"])
    assert spam_detail["gopher_rep_dup_line_frac"]["value"] > 0.9
    assert "gopher_rep_dup_5_gram" in spam_detail  # all metrics that fired, not just the first


def test_kept_documents_fixed_and_audited(rules_run, spark):
    out, stats, rows = rules_run
    kept = {r["id"]: r for r in spark.read.parquet(out + "/rules").collect()}
    assert "ws-1" in kept
    t = kept["ws-1"]["text"]
    assert "\u00a0" not in t and "\r" not in t and "\n\n\n" not in t and t == t.strip()
    meta = json.loads(kept["ws-1"]["meta"])
    assert meta["_meta"] == "not json"  # unparsable meta kept verbatim, not lost
    assert meta["rules"]["m"]["words"] > 50 and meta["rules"]["fix"]["whitespace_chars"] > 0
    ntrex_kept = [k for k in kept if k.startswith("ntrex-")]
    assert len(ntrex_kept) == sum(1 for r in rows if r[0].startswith("ntrex-"))
    for k in ntrex_kept:
        m = json.loads(kept[k]["meta"])
        assert m["path"] == "ntrex" and m["rules"]["m"]["words"] > 0


def test_stats_extra_and_plots(rules_run):
    out, stats, rows = rules_run
    extra = stats["extra"]
    assert set(extra["metrics_per_lang"]) >= {"en", "zh", "th", "ja", "ar"}
    assert extra["metrics_per_lang"]["zh"]["words"]["p50"] > 40
    assert extra["removed_per_lang"]["en"]["empty_doc"] == 1
    assert stats["per_lang"]["en"]["removed"]["boilerplate_only"] == 1
    assert len(stats["plots"]) == 2
    for p in stats["plots"]:
        assert os.path.getsize(p) > 1000
    with open(out + "/stats/rules.json") as f:
        assert json.load(f)["stage"] == "rules"


def _written(spark, out):
    """Every document the stage wrote (kept and rejected): lang and meta."""
    kept = spark.read.parquet(out + "/rules").select("lang", "meta")
    return kept.unionByName(spark.read.parquet(out + "/rejected/stage=rules").select("lang", "meta"))


def test_metric_quantiles_exact_without_a_pass_over_the_output(rules_run, spark):
    """metrics_per_lang are numpy's exact percentiles (inverted_cdf, percentile_approx's
    definition) of the metrics written in meta, counted in the write pass: the stage runs its
    write and its accounting aggregate only (the percentile pass and the schema-inference jobs
    are gone: 7 Spark jobs before)."""
    import numpy as np

    from filters.rules import MAIN_METRICS

    out, stats, rows = rules_run
    assert stats["_spark_jobs"] <= 3, stats["_spark_jobs"]  # write + accounting (AQE: 1 or 2 jobs)
    values: dict = {}
    docs: dict = {}
    for r in _written(spark, out).collect():
        lang = r["lang"] or "und"
        docs[lang] = docs.get(lang, 0) + 1
        m = json.loads(r["meta"]).get("rules", {}).get("m", {}) if r["meta"] else {}
        for k, v in m.items():
            values.setdefault(lang, {}).setdefault(k, []).append(v)
    per_lang = stats["extra"]["metrics_per_lang"]
    assert {k: v["documents"] for k, v in per_lang.items()} == docs
    for lang, ms in values.items():
        for k in MAIN_METRICS:
            want = [round(float(np.percentile(ms[k], q, method="inverted_cdf")), 4) for q in (5, 25, 50, 75, 95)]
            assert list(per_lang[lang][k].values()) == want, (lang, k)


def test_quantiles_fall_back_to_a_pass_when_the_counts_disagree(rules_run, spark, tmp_path):
    """Counts that do not match the accounting (a recomputed pass counted twice) are not used:
    the quantiles then come from a Spark pass over the output (percentile_approx), which on
    groups this small gives the exact values too."""
    from types import SimpleNamespace

    from pipeline.quantiles import ValueCounts
    from pipeline.rules import RulesStage
    from pipeline.stage import StageContext

    out, stats, _ = rules_run
    st = RulesStage()
    st._account_rows = [{"_rl": lang, "reason": None, "count": v["documents"]}
                        for lang, v in stats["extra"]["metrics_per_lang"].items()]
    twice = ValueCounts()
    twice.add_document("en", {"words": 1})  # disagrees with the accounting
    st._metric_counts = SimpleNamespace(value=twice)
    ctx = StageContext(spark=spark, out=str(tmp_path), config={})
    st.after_write(_written(spark, out), ctx)
    assert ctx.extra["metrics_per_lang"] == stats["extra"]["metrics_per_lang"]
