"""Stage ``shard``: the last filtering stage's kept documents ->
``corpus/<lang>/<source>/part-NNNNN.parquet`` + ``corpus/.manifest.json`` + ``corpus/.SUCCESS``.

Layout chosen so the usual one-liners open ``corpus/`` as one table with ``lang`` and
``source`` as columns: ``pyarrow.dataset.dataset(path, partitioning="hive")``,
``pandas.read_parquet(path)``, ``datasets.load_dataset("parquet", data_dir=path)`` and any
``**/*.parquet`` glob. So ``lang`` and ``source`` are columns *inside* every file (not only in
folder names), the folders are plain ``<lang>/<source>`` (``lang=xx`` folders would add a hive
partition column that clashes with the file column: pandas infers it as a dictionary type), and
the manifest and the completion marker start with ``.`` (pyarrow and Spark skip ``_`` and ``.``
files, ``datasets`` only ``.`` files).

Shards per (lang, source) are sized to about ``target_shard_bytes`` of UTF-8 text
(default 128 MiB, config ``shard.target_shard_bytes``); a document goes to shard
``xxhash64(id) mod n_files(lang, source)``, each shard is written by one executor task with
pyarrow (rows ordered by ``id``), so a rerun on the same input writes the same files. The
manifest gives documents, bytes, characters and a token estimate per language and source, and
the list of files (relative to ``corpus/``).
"""
from __future__ import annotations

import math
import time

import pyarrow as pa

from pipeline import fs
from pipeline.stage import Stage, StageContext, log, write_success

#: Manifest and completion marker of ``corpus/`` (and ``tokens/``): hidden names, which every
#: parquet loader skips.
MANIFEST = ".manifest.json"
SUCCESS = ".SUCCESS"

#: Characters per token used for the manifest's *estimate* only (the tokenize stage counts
#: exactly). Rough figures for a large multilingual BPE vocabulary: about 4 characters per
#: token for alphabetic scripts, fewer for scripts without spaces.
CHARS_PER_TOKEN = {"zh": 1.3, "ja": 1.5, "ko": 2.0, "th": 2.5}
DEFAULT_CHARS_PER_TOKEN = 4.0
SHARD_RESULT_DDL = "lang string, source string, file string, documents bigint"


def shard_rel_path(lang: str, source: str, n: int) -> str:
    """``<lang>/<source>/part-<n:05d>.parquet``: a shard's path relative to ``corpus/``."""
    return f"{lang}/{source}/part-{int(n):05d}.parquet"


class WriteShard:
    """``applyInArrow`` function: writes all rows of one (lang, source, file number) group with
    pyarrow to ``<root>/<lang>/<source>/part-<n>.parquet`` (rows sorted by ``id``; ``_file``
    dropped; every other column kept, ``lang`` and ``source`` included) and returns one row
    ``(lang, source, file, documents)``. ``root`` must be reachable from the executors."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, key, table: pa.Table) -> pa.Table:
        import pyarrow.compute as pc
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        lang, source, n = (k.as_py() for k in key)
        table = table.drop_columns(["_file"])
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
        rel = shard_rel_path(lang, source, n)
        root = self.root[len("file:"):] if self.root.startswith("file:") and "://" not in self.root else self.root
        filesystem, base = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
        path = f"{base.rstrip('/')}/{rel}"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as f:
            pq.write_table(table, f, compression="snappy")
        return pa.table({"lang": [lang], "source": [source], "file": [rel],
                         "documents": pa.array([table.num_rows], pa.int64())})


class ShardStage(Stage):
    """Write the corpus shards and manifest (see module docstring)."""

    name = "shard"
    output_name = "corpus"

    def _run(self, ctx: StageContext, t0: float) -> dict:
        from pyspark.sql import functions as F

        spark = ctx.spark
        cfg = ctx.stage_config("shard")
        target = int(cfg.get("target_shard_bytes", 128 << 20))
        if target <= 0:
            raise ValueError("shard.target_shard_bytes must be > 0")
        df = self.read_input(ctx)
        n_in = self.input_count(df)
        log(f"[shard] {n_in} documents in from {ctx.input_stage}")
        df = df.withColumn("_bytes", F.octet_length("text")).withColumn("_chars", F.length("text"))
        sizes = df.groupBy("lang", "source").agg(F.count("*").alias("documents"), F.sum("_bytes").alias("bytes"),
                                                 F.sum("_chars").alias("characters")).collect()
        nfiles = {(r["lang"], r["source"]): max(1, math.ceil((r["bytes"] or 0) / target)) for r in sizes}
        total_files = max(1, sum(nfiles.values()))
        tmp = self.tmp_path(ctx)
        if nfiles:
            nf = F.create_map(*[x for (l, s), n in nfiles.items() for x in (F.lit(f"{l}\u0001{s}"), F.lit(n))])
            df = df.withColumn("_file", F.pmod(F.xxhash64("id"), nf[F.concat_ws("\u0001", "lang", "source")]))
        else:  # 0 documents (issue 14, cause 6): nothing to write, an empty corpus is published
            df = df.withColumn("_file", F.lit(0))
        writer = WriteShard(tmp)

        def write_shard(key, table):  # a plain function: Spark infers the eval type from its signature
            return writer(key, table)

        df = df.drop("_bytes", "_chars").withColumn("_file", F.col("_file").cast("int"))
        written = df.groupBy("lang", "source", "_file").applyInArrow(write_shard, SHARD_RESULT_DDL).collect()
        files_of: dict[tuple, list] = {}
        docs_of: dict[tuple, int] = {}
        for w in written:
            k = (w["lang"], w["source"])
            files_of.setdefault(k, []).append(w["file"])
            docs_of[k] = docs_of.get(k, 0) + int(w["documents"])
        dest = ctx.path("corpus")
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "input_stage": ctx.input_stage,
                    "layout": "<lang>/<source>/part-NNNNN.parquet; lang and source are columns of every file",
                    "target_shard_bytes": target, "token_estimate": "characters / chars_per_token(lang), "
                    "4.0 for alphabetic scripts, zh 1.3, ja 1.5, ko 2.0, th 2.5; exact counts come from `make tokenize`",
                    "streams": []}
        tot = {"documents": 0, "bytes": 0, "characters": 0, "tokens_est": 0}
        per_lang: dict[str, dict] = {}
        for r in sorted(sizes, key=lambda r: (r["lang"], r["source"])):
            lang, src = r["lang"], r["source"]
            if docs_of.get((lang, src), 0) != r["documents"]:
                raise RuntimeError(f"shard: stream {lang}/{src} has {r['documents']} documents but its files "
                                   f"hold {docs_of.get((lang, src), 0)}")
            tok = int((r["characters"] or 0) / CHARS_PER_TOKEN.get(lang, DEFAULT_CHARS_PER_TOKEN))
            manifest["streams"].append({"lang": lang, "source": src, "documents": r["documents"],
                                        "bytes": int(r["bytes"] or 0), "characters": int(r["characters"] or 0),
                                        "tokens_est": tok, "files": sorted(files_of.get((lang, src), []))})
            for k, v in (("documents", r["documents"]), ("bytes", int(r["bytes"] or 0)),
                         ("characters", int(r["characters"] or 0)), ("tokens_est", tok)):
                tot[k] += v
                per_lang.setdefault(lang, {"documents": 0, "bytes": 0, "characters": 0, "tokens_est": 0})[k] += v
        manifest["per_lang"] = per_lang
        manifest["totals"] = tot
        if tot["documents"] != n_in:
            raise RuntimeError(f"shard: {n_in} documents in, {tot['documents']} in the manifest")
        fs.delete(spark, dest + "/" + SUCCESS)
        fs.delete(spark, dest)
        if written:
            fs.rename(spark, tmp, dest)
        else:
            fs.mkdirs(spark, dest)
            fs.delete(spark, tmp)
        fs.write_json(spark, dest + "/" + MANIFEST, manifest)
        counts = {"in": n_in, "kept": n_in, "removed": {}, "quarantined": {}}
        stats = {"stage": "shard", "input": ctx.input_stage, "documents_in": n_in, "totals": counts,
                 "per_lang": {l: {"in": v["documents"], "kept": v["documents"], "removed": {}, "quarantined": {}}
                              for l, v in sorted(per_lang.items())},
                 "extra": {"manifest_totals": tot, "files": sum(len(s["files"]) for s in manifest["streams"])},
                 "plots": [], "seconds": round(time.time() - t0, 3)}
        fs.mkdirs(spark, ctx.path("stats"))
        fs.write_json(spark, ctx.path("stats", "shard.json"), stats)
        write_success(spark, dest, ctx.fingerprint, [f for st in manifest["streams"] for f in st["files"]],
                      marker=SUCCESS, rows=tot["documents"])
        log(f"[shard] wrote {stats['extra']['files']} files, {tot['documents']} documents to {dest}")
        return stats
