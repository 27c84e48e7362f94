"""The stage runner: atomic publish, accounting, reruns replace only their own output."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from pipeline import fs
from pipeline.stage import AccountingError, Stage, StageContext, StageInputMissing, map_arrow


def _docs(spark, n=20):
    rows = [(f"d{i:03d}", "src_a" if i % 2 else "src_b", "web", None, f"text {i}", "{}", None,
             "en" if i % 3 else "de", 0.9) for i in range(n)]
    return spark.createDataFrame(rows, "id string, source string, tier string, url string, text string, "
                                       "meta string, lang_declared string, lang string, lang_score float")


def _publish_input(spark, out, name, df):
    df.write.mode("overwrite").parquet(f"{out}/{name}")
    fs.write_text(spark, f"{out}/{name}/_SUCCESS", "")


def _drop_odd(batch: pa.RecordBatch) -> pa.RecordBatch:
    ids = batch.column("id").to_pylist()
    reasons = ["odd_id" if int(i[1:]) % 2 else None for i in ids]
    details = [json.dumps({"n": int(i[1:])}) if r else None for i, r in zip(ids, reasons)]
    return pa.RecordBatch.from_arrays(list(batch.columns) + [pa.array(reasons, pa.string()),
                                                            pa.array(details, pa.string())],
                                      names=batch.schema.names + ["reason", "detail"])


class DropOdd(Stage):
    name = "dropodd"

    def transform(self, df, ctx):
        from pyspark.sql.types import StringType, StructField, StructType

        schema = StructType(df.schema.fields + [StructField("reason", StringType()),
                                                StructField("detail", StringType())])
        return map_arrow(df, _drop_odd, schema)


class LosesRows(Stage):
    name = "lossy"

    def transform(self, df, ctx):
        from pyspark.sql import functions as F

        return df.limit(3).withColumn("reason", F.lit(None).cast("string")).withColumn(
            "detail", F.lit(None).cast("string"))


def test_publish_and_accounting(spark, tmp_path):
    out = str(tmp_path)
    _publish_input(spark, out, "prev", _docs(spark))
    ctx = StageContext(spark=spark, out=out, config={"languages": ["en", "de"]}, input_stage="prev")
    stats = DropOdd().run(ctx)
    assert stats["totals"]["in"] == 20 and stats["totals"]["kept"] == 10
    assert stats["totals"]["removed"] == {"odd_id": 10}
    for lang, c in stats["per_lang"].items():
        assert c["in"] == c["kept"] + sum(c["removed"].values()) + sum(c["quarantined"].values())
    assert os.path.exists(f"{out}/dropodd/_SUCCESS")
    kept = spark.read.parquet(f"{out}/dropodd")
    assert kept.count() == 10 and "reason" not in kept.columns
    rej = spark.read.parquet(f"{out}/rejected")
    assert {(r.stage, r.reason) for r in rej.select("stage", "reason").distinct().collect()} == {("dropodd", "odd_id")}
    assert json.loads(rej.first().detail)["n"] % 2 == 1
    assert not os.path.exists(f"{out}/_tmp")  # temporary output cleaned up
    on_disk = json.loads(open(f"{out}/stats/dropodd.json").read())
    assert on_disk["totals"] == stats["totals"]


def test_rerun_replaces_only_own_output(spark, tmp_path):
    out = str(tmp_path)
    _publish_input(spark, out, "prev", _docs(spark))
    os.makedirs(f"{out}/rejected/stage=other/reason=x")
    open(f"{out}/rejected/stage=other/reason=x/keep.txt", "w").write("other stage's output")
    ctx = StageContext(spark=spark, out=out, config={}, input_stage="prev")
    DropOdd().run(ctx)
    first = sorted(r.id for r in spark.read.parquet(f"{out}/dropodd").collect())
    # A rerun on a smaller input must not leave the first run's files behind.
    _publish_input(spark, out, "prev", _docs(spark, 6))
    DropOdd().run(StageContext(spark=spark, out=out, config={}, input_stage="prev"))
    second = sorted(r.id for r in spark.read.parquet(f"{out}/dropodd").collect())
    assert len(first) == 10 and second == ["d000", "d002", "d004"]
    assert spark.read.parquet(f"{out}/rejected/stage=dropodd").count() == 3
    assert open(f"{out}/rejected/stage=other/reason=x/keep.txt").read() == "other stage's output"


def test_missing_input_is_a_clear_error(spark, tmp_path):
    out = str(tmp_path)
    _docs(spark).write.parquet(f"{out}/prev")
    os.remove(f"{out}/prev/_SUCCESS")  # an interrupted previous stage
    with pytest.raises(StageInputMissing, match="no _SUCCESS"):
        DropOdd().run(StageContext(spark=spark, out=out, config={}, input_stage="prev"))


def test_lost_documents_are_detected(spark, tmp_path):
    out = str(tmp_path)
    _publish_input(spark, out, "prev", _docs(spark))
    with pytest.raises(AccountingError):
        LosesRows().run(StageContext(spark=spark, out=out, config={}, input_stage="prev"))
    assert not os.path.exists(f"{out}/lossy/_SUCCESS")


def _slow(batches):
    import time

    for b in batches:
        time.sleep(0.5)
        yield b


def test_progress_is_logged_while_a_spark_job_runs(spark, capsys):
    from pipeline.stage import SparkProgress

    df = spark.range(0, 8, numPartitions=4)
    with SparkProgress(spark, "slowstage", interval=0.1) as prog:
        assert df.mapInArrow(_slow, df.schema).count() == 8
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "[slowstage] progress: spark stage" in ln]
    assert lines, err
    assert "/4 tasks (" in lines[-1] or "/1 tasks (" in lines[-1]
    assert prog._thread is not None and not prog._thread.is_alive()
    assert prog.line() is None  # nothing active any more


def test_progress_can_be_turned_off(spark, capsys, monkeypatch):
    from pipeline.stage import SparkProgress

    monkeypatch.setenv("POLY_PROGRESS_SECONDS", "0")
    with SparkProgress(spark, "quiet") as prog:
        spark.range(10).count()
    assert prog._thread is None
    assert "[quiet] progress" not in capsys.readouterr().err


def test_temporary_output_of_a_killed_run_is_removed(spark, tmp_path):
    out = str(tmp_path)
    _publish_input(spark, out, "ingest", _docs(spark))
    stale = tmp_path / "_tmp" / "dropodd-0123456789ab"      # left by a killed run of this stage
    other = tmp_path / "_tmp" / "otherstage-0123456789ab"   # another stage's: not ours to remove
    for d in (stale, other):
        (d / "_disposition=kept").mkdir(parents=True)
        (d / "_disposition=kept" / "part-0.parquet").write_bytes(b"x")
    DropOdd().run(StageContext(spark=spark, out=out, config={}, input_stage="ingest"))
    assert not stale.exists()
    assert other.exists()
    assert fs.exists(spark, f"{out}/dropodd/_SUCCESS")


def test_documents_progress_phrase():
    from pipeline.stage import format_documents_progress

    assert format_documents_progress(8000, 15691, 19.0) == "8,000/15,691 documents (51%), 421 docs/s, ETA 18s"
    assert format_documents_progress(15691, 15691, 30.0).endswith("(100%), 523 docs/s, ETA 0s")
    assert format_documents_progress(20000, 15691, 10.0).startswith("15,691/15,691 documents (100%)")  # retries
    assert format_documents_progress(1200, None, 4.0) == "1,200 documents, 300 docs/s"
    assert "ETA 2h04m" in format_documents_progress(1000, 1_000_000, 7.5)


def _slow_drop_odd(batch: pa.RecordBatch) -> pa.RecordBatch:
    import time

    time.sleep(0.4)
    return _drop_odd(batch)


class SlowDropOdd(Stage):
    name = "slowodd"

    def transform(self, df, ctx):
        from pyspark.sql.types import StringType, StructField, StructType

        schema = StructType(df.schema.fields + [StructField("reason", StringType()),
                                                StructField("detail", StringType())])
        return map_arrow(df.repartition(8), _slow_drop_odd, schema, count_docs=True)


def test_progress_shows_documents_rate_and_eta(spark, tmp_path, capsys, monkeypatch):
    """Issue 16 item 6: the progress line says how many documents are done, the rate and ETA."""
    import re

    monkeypatch.setenv("POLY_PROGRESS_SECONDS", "0.2")
    out = str(tmp_path)
    _publish_input(spark, out, "ingest", _docs(spark, 40))
    stats = SlowDropOdd().run(StageContext(spark, out, {}, input_stage="ingest"))
    assert stats["totals"]["kept"] == 20
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "[slowodd] progress:" in ln]
    docs = [re.search(r"(\d+)/40 documents \((\d+)%\), [\d,]+ docs/s, ETA \S+", ln) for ln in lines]
    assert any(docs), err
    done = [int(m.group(1)) for m in docs if m]
    assert all(0 < d <= 40 for d in done) and done == sorted(done)


class DetailedDropOdd(DropOdd):
    name = "detailed"

    def after_write(self, written_df, ctx):
        from pipeline.stage import log

        log("[detailed] en: 10 of 20 removed (per-language detail)", detail=True)


def test_stage_log_file_holds_details_stderr_stays_short(spark, tmp_path, capsys, monkeypatch):
    """Issue 16 item 6: quiet by default, details in <out>/logs/<stage>.log."""
    monkeypatch.delenv("POLY_VERBOSE", raising=False)
    out = str(tmp_path)
    _publish_input(spark, out, "ingest", _docs(spark))
    DetailedDropOdd().run(StageContext(spark, out, {}, input_stage="ingest"))
    err = capsys.readouterr().err
    logf = tmp_path / "logs" / "detailed.log"
    text = logf.read_text()
    assert "[detailed] start" in text and "[detailed] done in" in text and "per-language detail" in text
    assert "[detailed] done in" in err and f"details in {logf}" in err
    assert "per-language detail" not in err
    monkeypatch.setenv("POLY_VERBOSE", "1")
    DetailedDropOdd().run(StageContext(spark, out, {}, input_stage="ingest"))
    assert "per-language detail" in capsys.readouterr().err
