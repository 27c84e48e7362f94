"""The fused pass (pipeline/fused.py): langid + rules in one Spark pass give exactly the staged
build's outputs (kept documents with every field, rejected documents with reasons and details,
stats, _SUCCESS fingerprints and row counts), and its accounting check still catches a lost row."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from bench.common import ntrex_documents
from pipeline import fs
from pipeline.config import load_config
from pipeline.stage import AccountingError, Stage, StageContext, write_success

INGEST_COLS = ("id", "source", "tier", "url", "text", "meta", "lang_declared", "source_id", "detail")


def _ingest_rows(shared_data) -> list[tuple]:
    rows = []
    for k, (lang, did, text) in enumerate(ntrex_documents(shared_data)[::23]):  # ~100 real documents
        tier = "reference" if k % 3 else "web"
        first = text.split("\n")[0]  # a one-line web page: too short for Gopher, rejected by rules
        rows.append((f"ntrex-{lang}-{did}", "ntrex", tier, None, first if k % 5 == 0 else text,
                     json.dumps({"path": "ntrex", "key": did}, sort_keys=True), lang, did, None))
    spam = "\n".join(["BUY CHEAP WATCHES NOW click here"] * 30)
    rows += [("spam-1", "web", "web", "http://x.example/1", spam, "{}", None, "s1", None),
             ("empty-1", "web", "web", "http://x.example/2", " \n ", "{}", None, "s2", None),
             ("sw-1", "web", "web", "http://x.example/3", "Hej, jag heter Anna och jag bor i Stockholm. " * 20,
              "not json", None, "s3", None),
             ("nometa-1", "web", "web", None, "x", None, "en", "s4", None)]
    return rows


def _publish_ingest(spark, out: str, rows, rows_in_marker: bool) -> None:
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(c, StringType()) for c in INGEST_COLS])
    spark.createDataFrame(rows, schema).repartition(3).write.parquet(out + "/ingest")
    files = [f for f in os.listdir(out + "/ingest") if f.endswith(".parquet")]
    write_success(spark, out + "/ingest", "fp-ingest", files, rows=len(rows) if rows_in_marker else None)


def _table(spark, path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = [r.asDict() for r in spark.read.parquet(path).collect()]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _stats(out: str, stage: str) -> dict:
    st = json.loads(open(f"{out}/stats/{stage}.json").read())
    for k in ("seconds", "fused"):
        st.pop(k, None)
    st["plots"] = [os.path.relpath(p, out) for p in st["plots"]]
    return st


@pytest.fixture(scope="module")
def builds(spark, shared_data, tmp_path_factory):
    from pipeline.cli import run_stages

    rows = _ingest_rows(shared_data)
    res = {}
    for mode in ("staged", "fused"):
        out = str(tmp_path_factory.mktemp(mode))
        _publish_ingest(spark, out, rows, rows_in_marker=mode == "fused")
        config = load_config(None, str(shared_data))
        config["stages"] = ["ingest", "langid", "rules"]
        config["fuse"] = mode == "fused"
        res[mode] = (out, run_stages(spark, out, config, ["langid", "rules"]))
    return res, rows


def test_fused_equals_staged(spark, builds):
    res, rows = builds
    (a, st_a), (b, st_b) = res["staged"], res["fused"]
    assert "fused" not in st_a["rules"] and st_b["langid"]["fused"] == st_b["rules"]["fused"] == ["langid", "rules"]
    for stage in ("langid", "rules"):
        kept_a, kept_b = _table(spark, f"{a}/{stage}"), _table(spark, f"{b}/{stage}")
        assert kept_a == kept_b and kept_a, stage
        assert spark.read.parquet(f"{a}/{stage}").schema == spark.read.parquet(f"{b}/{stage}").schema
        rej_a, rej_b = _table(spark, f"{a}/rejected/stage={stage}"), _table(spark, f"{b}/rejected/stage={stage}")
        assert rej_a == rej_b and rej_a, stage
        assert _stats(a, stage) == _stats(b, stage)
        ma, mb = (json.loads(open(f"{o}/{stage}/_SUCCESS").read()) for o in (a, b))
        assert (ma["fingerprint"], ma["rows"]) == (mb["fingerprint"], mb["rows"])
        assert sorted(os.listdir(f"{a}/stats/plots")) == sorted(os.listdir(f"{b}/stats/plots"))
    # the input had documents of every kind: kept, removed by langid and by rules
    assert st_b["langid"]["totals"]["in"] == len(rows)
    assert st_b["langid"]["totals"]["removed"] and st_b["rules"]["totals"]["removed"]
    assert st_b["rules"]["totals"]["in"] == st_b["langid"]["totals"]["kept"]
    assert not os.path.exists(f"{b}/_tmp")


def test_fused_rerun_is_skipped_and_staged_rerun_of_one_stage_works(spark, builds, shared_data):
    from pipeline.cli import run_stages

    res, _ = builds
    out, first = res["fused"]
    config = load_config(None, str(shared_data))
    config["stages"] = ["ingest", "langid", "rules"]
    again = run_stages(spark, out, config, ["langid", "rules"])
    assert again["langid"].get("skipped") and again["rules"].get("skipped")
    one = run_stages(spark, out, config, ["rules"], force=True)["rules"]  # debugging one stage
    assert "fused" not in one and one["totals"] == first["rules"]["totals"]


# --- the accounting check inside a fused pass ---------------------------------------------
def _mark_odd(batch: pa.RecordBatch) -> pa.RecordBatch:
    ids = batch.column("id").to_pylist()
    reasons = ["odd" if int(i[1:]) % 2 else None for i in ids]
    keep = [c for c in batch.schema.names if c not in ("reason", "detail")]
    return pa.RecordBatch.from_arrays([batch.column(c) for c in keep] + [pa.array(reasons, pa.string()),
                                                                       pa.array([None] * len(ids), pa.string())],
                                      names=keep + ["reason", "detail"])


def _lose_half(batch: pa.RecordBatch) -> pa.RecordBatch:
    return _mark_odd(batch.slice(0, batch.num_rows // 2))


class _Fusable(Stage):
    fn = None

    def batch_plan(self, ctx, schema):
        from pyspark.sql.types import StringType, StructField, StructType

        keep = [f for f in schema.fields if f.name not in ("reason", "detail")]
        return type(self).fn, StructType(keep + [StructField("reason", StringType()), StructField("detail", StringType())])

    def transform(self, df, ctx):
        from pipeline.stage import map_arrow

        fn, schema = self.batch_plan(ctx, df.schema)
        return map_arrow(df, fn, schema)


class MarkOdd(_Fusable):
    name = "markodd"
    fn = staticmethod(_mark_odd)


class LoseHalf(_Fusable):
    name = "losehalf"
    fn = staticmethod(_lose_half)


def test_fused_pass_detects_lost_documents(spark, tmp_path):
    from pipeline.fused import run_group

    out = str(tmp_path)
    spark.createDataFrame([(f"d{i:03d}", "s", f"text {i}") for i in range(40)],
                          "id string, source string, text string").write.parquet(out + "/prev")
    fs.write_text(spark, out + "/prev/_SUCCESS", "")
    ctxs = [StageContext(spark=spark, out=out, config={}, input_stage="prev"),
            StageContext(spark=spark, out=out, config={}, input_stage="markodd")]
    with pytest.raises(AccountingError, match="losehalf"):
        run_group([MarkOdd(), LoseHalf()], ctxs)
    assert os.path.exists(out + "/markodd/_SUCCESS")  # the first stage accounted and published
    assert not os.path.exists(out + "/losehalf/_SUCCESS")
    left = os.listdir(out + "/_tmp")
    assert len(left) == 1 and left[0].startswith("fused-markodd-losehalf-")
    # the next run removes the failed run's temporary output (and leaves only its own)
    for c in ctxs:
        c.fingerprint = None
    with pytest.raises(AccountingError):
        run_group([MarkOdd(), LoseHalf()], ctxs)
    again = os.listdir(out + "/_tmp")
    assert len(again) == 1 and again != left


# --- stage runner overheads: the input count comes from the input's _SUCCESS ------------------
def test_input_count_comes_from_the_marker_and_is_checked(spark, tmp_path):
    """A published output's ``_SUCCESS`` records its documents (``rows``); the next stage takes
    that as its documents in instead of a count job, so a marker that disagrees with the files
    it lists is an AccountingError, not a silent difference."""
    out = str(tmp_path)
    spark.createDataFrame([(f"d{i:03d}", "s", f"text {i}") for i in range(40)],
                          "id string, source string, text string").write.parquet(out + "/prev")
    files = [f for f in os.listdir(out + "/prev") if f.endswith(".parquet")]
    write_success(spark, out + "/prev", "fp", files, rows=40)
    ctx = StageContext(spark=spark, out=out, config={}, input_stage="prev")
    stats = MarkOdd().run(ctx)
    assert stats["documents_in"] == 40 and stats["totals"]["kept"] == 20
    marker = json.loads(open(out + "/markodd/_SUCCESS").read())
    assert marker["rows"] == 20  # for the next stage
    # and the schema, which the next stage reads the files with (no schema-inference job)
    from pyspark.sql.types import StructType

    assert StructType.fromJson(marker["schema"]) == spark.read.parquet(out + "/markodd").schema
    nxt = StageContext(spark=spark, out=out, config={}, input_stage="markodd")
    sc = spark.sparkContext
    sc.setJobGroup("read-input-test", "read_input")
    df = MarkOdd().read_input(nxt)
    assert sc.statusTracker().getJobIdsForGroup("read-input-test") == []
    sc.setLocalProperty("spark.jobGroup.id", None)
    assert sorted(r["id"] for r in df.collect()) == [f"d{i:03d}" for i in range(0, 40, 2)]
    write_success(spark, out + "/prev", "fp2", files, rows=41)
    with pytest.raises(AccountingError, match="41 documents in"):
        MarkOdd().run(StageContext(spark=spark, out=out, config={}, input_stage="prev", force=True))


def test_groups_fuse_consecutive_per_document_stages_only():
    from pipeline.fused import groups

    chain = ["ingest", "langid", "rules", "quality", "dedup", "shard"]
    assert groups(chain, chain) == [["ingest"], ["langid", "rules"], ["quality"], ["dedup"], ["shard"]]
    assert groups(chain, chain, fuse=False) == [[s] for s in chain]
    assert groups(["rules"], chain) == [["rules"]]  # one stage at a time (debugging) stays staged
    assert groups(["langid", "quality"], ["ingest", "langid", "quality"]) == [["langid"], ["quality"]]


def test_fuse_setting_is_strict(shared_data):
    from pipeline.config import ConfigError

    assert load_config(None, str(shared_data))["fuse"] is True  # the default build is fused
    assert load_config(None, str(shared_data), overrides=["fuse=false"])["fuse"] is False
    with pytest.raises(ConfigError, match="fuse must be true or false"):
        load_config(None, str(shared_data), overrides=["fuse=sometimes"])
