"""Stage ``ingest``: raw sources -> ``docs`` parquet (``id, source, tier, url, text, meta,
lang_declared, source_id``), bad records -> ``quarantine/stage=ingest/reason=.../``.

The driver lists the files of every source in ``sources_file`` (:func:`pipeline.readers.list_source_files`)
and distributes them; executors read each file with :func:`pipeline.readers.read_source_file`,
which yields one record per document (or a quarantine record with a reason). ``data_root`` may
be a local path or a URI (``s3a://``, ``gs://``, ``hdfs://``, ``abfs://``): the driver lists each
source once (:func:`pipeline.fs.list_files`) and the executors open the files through
:mod:`pyarrow.fs` (:func:`pipeline.fs.open_input`); the driver's S3 endpoint/region/credential
environment (:func:`pipeline.fs.input_options`) travels with the task. Records whose ``id`` repeats an
earlier record's are quarantined as ``duplicate_id``, so ids are unique downstream.
"""
from __future__ import annotations

import json

import pyarrow as pa

from pipeline import fs
from pipeline.stage import QUARANTINE, KEPT, Stage, StageContext, log, map_arrow

DOC_FIELDS = ["id", "source", "tier", "url", "text", "meta", "lang_declared", "source_id"]


def source_id_of(rec: dict) -> str | None:
    """The document's id in its source: the JSONL / parquet id column, else the WARC-Record-ID,
    else ``<path relative to the data root>#<record key>`` (e.g. ``leipzig/de.txt#L41``)."""
    if rec.get("source_id") is not None:
        return str(rec["source_id"])
    meta = rec.get("meta")
    if not isinstance(meta, dict):
        return None
    for k in ("source_id", "json_id"):
        if meta.get(k) is not None:
            return str(meta[k])
    rid = (meta.get("warc") or {}).get("WARC-Record-ID") if isinstance(meta.get("warc"), dict) else None
    if rid:
        return str(rid)
    if meta.get("path") is not None and meta.get("key") is not None:
        return f"{meta['path']}#{meta['key']}"
    return None
#: Arrow batches are flushed after this many records or characters of text.
FLUSH_RECORDS = 512
FLUSH_CHARS = 32 << 20


def ingest_schema():
    """Spark schema of the ingest stage's output (before the runner's bookkeeping)."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    return StructType([StructField(n, StringType()) for n in DOC_FIELDS]
                      + [StructField("_order", LongType()), StructField("reason", StringType()),
                         StructField("detail", StringType()), StructField("_disposition", StringType())])


class ReadFiles:
    """Picklable batch function: rows ``(source_json, path, file_index)`` -> document records."""

    def __init__(self, data_root: str, defaults: dict, input_options: dict | None = None):
        self.data_root = data_root
        self.defaults = defaults
        self.input_options = input_options or {}

    def __call__(self, batch: pa.RecordBatch):
        from pipeline import fs
        from pipeline.readers import read_source_file

        fs.configure_input(self.input_options)

        cols = {n: [] for n in DOC_FIELDS + ["_order", "reason", "detail", "_disposition"]}
        n_chars = 0
        for src_json, path, file_index in zip(batch.column("source_json").to_pylist(),
                                              batch.column("path").to_pylist(),
                                              batch.column("file_index").to_pylist()):
            source = {**self.defaults, **json.loads(src_json)}
            for k, rec in enumerate(read_source_file(path, source, self.data_root)):
                for n in DOC_FIELDS:
                    v = source_id_of(rec) if n == "source_id" else rec.get(n)
                    if n == "meta" and not isinstance(v, str):
                        v = json.dumps(v or {}, ensure_ascii=False, sort_keys=True)
                    cols[n].append(v)
                cols["_order"].append((int(file_index) << 32) + k)
                reason = rec.get("reason")
                cols["reason"].append(reason)
                cols["detail"].append(rec.get("detail"))
                cols["_disposition"].append(QUARANTINE if reason else KEPT)
                n_chars += len(rec.get("text") or "")
                if len(cols["id"]) >= FLUSH_RECORDS or n_chars >= FLUSH_CHARS:
                    yield _to_batch(cols)
                    cols = {n: [] for n in cols}
                    n_chars = 0
        if cols["id"]:
            yield _to_batch(cols)


def _to_batch(cols: dict) -> pa.RecordBatch:
    arrays = [pa.array(cols[n], pa.int64() if n == "_order" else pa.string()) for n in cols]
    return pa.RecordBatch.from_arrays(arrays, names=list(cols))


class IngestStage(Stage):
    """Read every configured source (see module docstring)."""

    name = "ingest"
    reads_input = False

    def listing(self, ctx: StageContext) -> list[tuple[dict, dict]]:
        """``[(source, {file: (size, mtime_ns)})]`` of the configured sources, listed once per
        run on the driver (:func:`pipeline.readers.list_source_files_details`) and cached."""
        from pipeline.readers import list_source_files_details

        key = (id(ctx), ctx.config["data_root"])
        if getattr(self, "_listing", (None,))[0] != key:
            cfg = ctx.stage_config("ingest")
            sources = ctx.config.get("sources") or []
            if not sources:
                raise ValueError(f"no sources configured (sources_file in {ctx.config.get('_path')})")
            only = cfg.get("only_sources")
            self._listing = (key, [(s, list_source_files_details(s, ctx.config["data_root"]))
                                   for s in sources if not only or s["name"] in only])
        return self._listing[1]

    def input_fingerprint(self, ctx: StageContext) -> str:
        """sha256 of the data root, the selected sources and every input file's path, size
        and modification time."""
        import hashlib

        doc = {"data_root": ctx.config["data_root"],
               "sources": [[s, sorted([p, *v] for p, v in files.items())] for s, files in self.listing(ctx)]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def transform(self, df, ctx: StageContext):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        cfg = ctx.stage_config("ingest")
        rows = []
        for s, details in self.listing(ctx):
            files = sorted(details)
            log(f"[ingest] source {s['name']}: {len(files)} file(s), format {s['format']}, tier {s['tier']}", detail=True)
            rows += [(json.dumps(s), f) for f in files]
        rows = [(sj, p, i) for i, (sj, p) in enumerate(rows)]
        spark = ctx.spark
        n_slices = max(1, min(len(rows), spark.sparkContext.defaultParallelism * 4))
        files_df = spark.createDataFrame(rows, "source_json string, path string, file_index long")
        files_df = files_df.repartition(n_slices, "file_index")
        defaults = {"max_doc_bytes": int(cfg.get("max_doc_bytes", 8 << 20))}

        def run(batches, fn=ReadFiles(ctx.config["data_root"], defaults, fs.input_options())):
            for b in batches:
                yield from fn(b)

        recs = files_df.mapInArrow(run, ingest_schema())
        # Ids must be unique downstream: a repeated id (the same record twice in the input)
        # is quarantined, keeping the first occurrence in input order.
        w = Window.partitionBy("id").orderBy("_order")
        recs = recs.withColumn("_rank", F.row_number().over(w))
        dup = (F.col("_rank") > 1) & (F.col("_disposition") == KEPT)
        recs = (recs.withColumn("reason", F.when(dup, F.lit("duplicate_id")).otherwise(F.col("reason")))
                .withColumn("detail", F.when(dup, F.lit('{"duplicate_id": true}')).otherwise(F.col("detail")))
                .withColumn("_disposition", F.when(dup, F.lit(QUARANTINE)).otherwise(F.col("_disposition"))))
        return recs.drop("_rank", "_order")
