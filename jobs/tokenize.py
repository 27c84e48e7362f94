"""The ``tokenize`` job (`make tokenize`): corpus shards -> token shards + manifest for the trainer.

``python -m jobs.tokenize --help`` or ``spark-submit jobs/tokenize.py ...``.

Input: ``<out>/corpus/<lang>/<source>/part-*.parquet`` (the shard stage) and the SentencePiece
model ``<out>/tokenizer/spm.model`` (`make tokenizer`), shipped to executors with
:func:`pipeline.ship.ship`.

Output (format fixed by the project conventions; the trainer's curriculum reads it):

* ``<out>/tokens/<lang>/<source>/part-NNNNN.parquet``: one document per row, columns
  ``id string``, ``input_ids list<int32>`` (``</s>`` appended, no ``<s>``), ``lang`` and
  ``source`` (the corpus layout: every parquet loader opens ``tokens/`` as one table).
  Parallel-tier documents are rendered as bilingual documents (:mod:`training.bilingual`) and
  filed under source ``parallel``.
* ``<out>/tokens/.manifest.json``: tokenizer path (relative to ``tokens/``), vocab size, bos/eos/pad ids, one *stream* per
  (lang, source) with documents, tokens and files, and ``total_tokens``; ``.SUCCESS`` last.
* ``<out>/rejected/stage=tokenize/reason=<r>/``: documents that could not be tokenized
  (``empty_text``, ``parallel_meta_invalid``), with ``detail``.
* ``<out>/stats/tokenize.json``: accounting (corpus documents = tokenized + rejected), per
  stream tokens and characters, seconds, tokens_per_sec.

Determinism: a stream with ``T`` tokens gets ``ceil(T / shard_tokens)`` files; a document goes
to file ``pmod(xxhash64(id), files)``; each file is written by one task with pyarrow, its rows
sorted by ``id``, under a fixed name. So tokenizing the same corpus with the same model twice
gives byte-identical shards and the same manifest.

Passes (issue 19 item 3): the corpus is read once, exactly the files the shard stage listed in
``.SUCCESS``, whose document count (``rows``, else ``.manifest.json`` totals) replaces a
``count()`` pass; one Spark job encodes (SentencePiece batch API, threads = executor cores)
and does all the accounting in one ``groupBy``, keeping the tokenized rows on executor disk
(``persist(DISK_ONLY)``; blocks lost with an executor are recomputed from the corpus); a second
job shuffles the kept rows to their shards. Shards and rejections are written under ``_tmp/``
and moved into place only after both jobs succeeded: old ``.SUCCESS`` removed first, manifest
and ``.SUCCESS`` last, so a killed run never leaves output that looks complete.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import uuid

# Run as a script (spark-submit jobs/x.py), Python puts jobs/ first on sys.path, where
# jobs/tokenize.py would shadow the standard library's tokenize: use the repo root instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = _ROOT
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pyarrow as pa  # noqa: E402

from pipeline import fs  # noqa: E402
from pipeline.stage import log, map_arrow  # noqa: E402

from pipeline.shard import MANIFEST, SUCCESS, shard_rel_path  # noqa: E402

TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("lang", pa.string()),
                          ("source", pa.string()), ("n_tokens", pa.int32())])
#: Tokens per Parquet row group of a token shard (about 4 MiB of int32 ids): small enough that a
#: data-parallel rank decodes little besides its own rows (training/data.py reads whole row
#: groups), large enough for efficient scans. Rows per group = this / mean row length, 64..8192.
ROW_GROUP_TOKENS = 1 << 20
SHARD_RESULT_DDL = "lang string, source string, bucket int, file string, documents bigint, tokens bigint"


class ShardWriter:
    """``applyInArrow`` function: writes one token shard (all rows of one (lang, source, bucket)
    group) with pyarrow to ``<root>/<lang>/<source>/part-<bucket>.parquet`` (columns ``id,
    input_ids, lang, source, n_tokens``: the corpus layout, see :mod:`pipeline.shard`; ``n_tokens``
    lets each trainer rank index row lengths without decoding ``input_ids``; row groups of about
    :data:`ROW_GROUP_TOKENS` tokens), rows sorted by
    ``id`` (ties by the token bytes), and returns one row ``(lang, source, bucket, file,
    documents, tokens)``. ``root`` must be reachable from executors (shared disk, HDFS, S3)."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, key, table: pa.Table) -> pa.Table:
        import pyarrow.compute as pc
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        lang, source, bucket = (k.as_py() for k in key)
        toks = table.column("input_ids")
        order = _id_order(table.column("id"), toks)
        ids_sorted = toks.take(order).cast(pa.list_(pa.int32()))
        n_tokens = pc.list_value_length(ids_sorted).cast(pa.int32())
        out = pa.table({"id": table.column("id").take(order),
                        "input_ids": ids_sorted,
                        "lang": pa.array([lang] * len(order), pa.string()),
                        "source": pa.array([source] * len(order), pa.string()),
                        "n_tokens": n_tokens},
                       schema=TOKEN_SCHEMA)
        mean = (int(pc.sum(n_tokens).as_py() or 0) / max(len(order), 1)) or 1.0
        rows_per_group = int(min(8192, max(64, ROW_GROUP_TOKENS // mean)))
        rel = shard_rel_path(lang, source, bucket)
        filesystem, base = pafs.FileSystem.from_uri(self.root) if "://" in self.root else (pafs.LocalFileSystem(), self.root)
        path = f"{base.rstrip('/')}/{rel}"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as f:
            pq.write_table(out, f, compression="zstd", row_group_size=rows_per_group, write_statistics=False)
        n_tok = int(pc.sum(pc.list_value_length(out.column("input_ids"))).as_py() or 0)
        return pa.table({"lang": [lang], "source": [source], "bucket": pa.array([bucket], pa.int32()),
                         "file": [rel], "documents": pa.array([out.num_rows], pa.int64()),
                         "tokens": pa.array([n_tok], pa.int64())})


def _id_order(ids, toks) -> pa.Array:
    """Row order of a token shard: by ``id`` (a string column), ties by the blake2b digest of
    the row's token bytes. Returns int64 indices.

    Unique, non-null ids (the normal case) are sorted by Arrow (UTF-8 byte order = code point
    order = Python's ``str`` order) without Python objects per row; duplicates or nulls take
    the per-row Python sort with digests (nulls raise ``TypeError`` there, as before).
    """
    import pyarrow.compute as pc

    if ids.null_count == 0:
        idx = pc.sort_indices(ids)
        srt = ids.take(idx)
        if len(srt) < 2 or not pc.any(pc.equal(srt[1:], srt[:-1])).as_py():
            return idx.cast(pa.int64())
    py_ids = ids.to_pylist()
    digests = [hashlib.blake2b(x.values.to_numpy(zero_copy_only=False).tobytes(), digest_size=8).digest()
               if x.is_valid else b"" for x in toks]
    return pa.array(sorted(range(len(py_ids)), key=lambda i: (py_ids[i], digests[i])), pa.int64())


def corpus_input(spark, corpus_dir: str) -> tuple[int | None, list[str] | None]:
    """What the shard stage recorded about a published corpus: ``(documents, files)``.

    ``files`` (relative to ``corpus_dir``) come from the ``.SUCCESS`` record
    (:func:`pipeline.stage.write_success`); ``documents`` from its ``rows``, else, for a record
    written before the shard stage recorded rows, from ``.manifest.json`` ``totals.documents``
    (written in the same publish, before ``.SUCCESS``). ``(None, None)`` for an empty or
    foreign marker (hand-made corpora): the caller lists the folder and counts.
    """
    from pipeline.stage import published

    rec = published(spark, corpus_dir) or {}
    files = rec.get("files") if isinstance(rec.get("files"), list) else None
    if not files:
        return None, None
    rows = rec.get("rows")
    if not (isinstance(rows, int) and not isinstance(rows, bool)):
        rows = None
        if fs.exists(spark, f"{corpus_dir}/{MANIFEST}"):
            try:
                docs = (fs.read_json(spark, f"{corpus_dir}/{MANIFEST}").get("totals") or {}).get("documents")
            except (ValueError, AttributeError):
                docs = None
            rows = docs if isinstance(docs, int) and not isinstance(docs, bool) else None
    return rows, [str(f) for f in files]


def executor_cores(spark) -> int:
    """Cores of one executor: ``spark.executor.cores`` when set, else ``N`` of a ``local[N]``
    master (``local[*]``: the machine's CPUs; ``local``: 1), else 1. The tokenize job gives
    SentencePiece's batch encode this many threads per Python worker (issue 19 item 3)."""
    import re

    sc = spark.sparkContext
    conf = sc.getConf().get("spark.executor.cores")
    if conf:
        return max(1, int(conf))
    m = re.match(r"local\[(\d+|\*)", sc.master or "")
    if m:
        return max(1, os.cpu_count() or 1) if m.group(1) == "*" else max(1, int(m.group(1)))
    return 1


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def run_tokenize(spark, out: str, cfg: dict | None = None, model_path: str | None = None,
                 corpus_dir: str | None = None) -> dict:
    """Tokenize the corpus into token shards (see module docstring).

    Args:
        spark: SparkSession.
        out: output root (``build/sample``): reads ``<out>/corpus``, writes ``<out>/tokens``.
        cfg: loaded ``configs/tokenizer.yaml`` (:func:`training.tokenizer.load_config`); uses its
            ``bilingual`` and ``tokenize`` sections. ``None`` = the default file and profile.
        model_path: SentencePiece model; default ``<out>/tokenizer/spm.model``.
        corpus_dir: default ``<out>/corpus``.

    Returns:
        the manifest dict (also ``<out>/tokens/.manifest.json``).

    Raises:
        FileNotFoundError: no corpus (``.SUCCESS`` of the shard stage) or no model.
        RuntimeError: the shards do not account for every corpus document / token.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from pipeline.ship import ship
    from training.tokenizer import TOKENIZED_DDL, TokenizeBatch, load_config, model_info

    t0 = time.time()
    cfg = cfg if cfg is not None else load_config()
    tcfg = dict(cfg.get("tokenize") or {})
    unknown = set(tcfg) - {"shard_tokens", "parallel_source"}
    if unknown:
        raise ValueError(f"unknown keys in tokenize config: {sorted(unknown)}")
    shard_tokens = int(tcfg.get("shard_tokens", 1 << 28))
    if shard_tokens <= 0:
        raise ValueError("tokenize.shard_tokens must be > 0")
    parallel_source = str(tcfg.get("parallel_source", "parallel"))
    out = out.rstrip("/")
    corpus_dir = (corpus_dir or f"{out}/corpus").rstrip("/")
    model_path = model_path or f"{_local(out)}/tokenizer/spm.model"
    if not fs.exists(spark, f"{corpus_dir}/{SUCCESS}"):
        raise FileNotFoundError(f"{corpus_dir} has no {SUCCESS} marker: build the corpus first (`make corpus`)")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"tokenizer model {model_path} not found: train it first (`make tokenizer`)")
    info = model_info(model_path)
    shipped = ship(spark, model_path)
    log(f"[tokenize] corpus {corpus_dir}, model {model_path} (vocab {info['vocab_size']})")

    # lang and source are columns of the corpus files (pipeline.shard); no partition discovery.
    # A corpus published by the shard stage lists its files and documents in .SUCCESS /
    # .manifest.json: read exactly those files and take the count from there (no count() pass).
    n_in, files = corpus_input(spark, corpus_dir)
    reader = spark.read.option("pathGlobFilter", "*.parquet")
    df = (reader.parquet(*[f"{corpus_dir}/{f}" for f in files]) if files
          else reader.option("recursiveFileLookup", "true").parquet(corpus_dir))
    for c in ("lang", "source"):
        df = df.withColumn(c, F.col(c).cast("string"))
    cols = [F.col(c).cast("string").alias(c) if c in df.columns else F.lit(None).cast("string").alias(c)
            for c in ("id", "lang", "source", "tier", "text", "meta")]
    df = df.select(*cols)
    if n_in is None:  # a corpus marker without counts (hand-made corpora, older runs)
        n_in = df.count()
    log(f"[tokenize] {n_in} corpus documents")
    threads = executor_cores(spark)
    enc_acc = spark.sparkContext.accumulator(0.0)
    fn = TokenizeBatch(shipped, cfg.get("bilingual") or {}, parallel_source, num_threads=threads,
                       encode_seconds=enc_acc)
    # The tokenized rows are kept by Spark (executor disk, not the output tree) between the
    # accounting job and the shard writer: one encode, no parquet write-then-read in _tmp.
    # Nothing is published from them until both jobs succeeded; lost blocks are recomputed.
    allt = map_arrow(df, fn, TOKENIZED_DDL, count_docs=True).persist(StorageLevel.DISK_ONLY)
    tmp = f"{out}/_tmp/tokenize-{uuid.uuid4().hex[:12]}"
    try:
        # accounting, in the job that encodes: every corpus document is tokenized or rejected
        t1 = time.time()
        groups = (allt.groupBy("lang", "source", "reason")
                  .agg(F.sum("input_docs").alias("input_docs"), F.count("*").alias("documents"),
                       F.sum("n_tokens").alias("tokens"), F.sum("n_chars").alias("chars"),
                       F.mode("tier").alias("tier")).collect())
        t_tok = time.time() - t1
        streams = sorted((r for r in groups if r["reason"] is None), key=lambda r: (r["lang"], r["source"]))
        rej: dict[str, int] = {}
        for r in groups:
            if r["reason"] is not None:
                rej[r["reason"]] = rej.get(r["reason"], 0) + int(r["input_docs"] or 0)
        kept_in = sum(int(r["input_docs"] or 0) for r in streams)
        kept_rows = sum(int(r["documents"]) for r in streams)
        tokens = sum(int(r["tokens"] or 0) for r in streams)
        chars = sum(int(r["chars"] or 0) for r in streams)
        docs_in = sum(int(r["input_docs"] or 0) for r in groups)
        if docs_in != n_in or kept_in + sum(rej.values()) != n_in:
            raise RuntimeError(f"tokenize: {n_in} corpus documents but output accounts for {docs_in} "
                               f"(tokenized {kept_in}, rejected {rej})")
        nfiles = {(r["lang"], r["source"]): max(1, math.ceil(int(r["tokens"]) / shard_tokens)) for r in streams}
        log(f"[tokenize] {kept_rows} documents, {tokens} tokens in {len(streams)} streams "
            f"-> at most {sum(nfiles.values())} shards; rejected {rej or 'none'}")

        t2 = time.time()
        shards_root = f"{tmp}/tokens"
        kept = allt.where(F.col("reason").isNull())
        if nfiles:
            nf = F.create_map(*[x for (l, s), n in sorted(nfiles.items())
                                for x in (F.lit(f"{l}\u0001{s}"), F.lit(n))])
            keyed = kept.withColumn("bucket", F.pmod(F.xxhash64("id"), nf[F.concat_ws("\u0001", "lang", "source")])
                                    .cast("int"))
            writer = ShardWriter(shards_root)

            def write_shard(key, table):  # a plain function: Spark infers the eval type from its signature
                return writer(key, table)

            written = (keyed.select("lang", "source", "bucket", "id", "input_ids")
                       .groupBy("lang", "source", "bucket").applyInArrow(write_shard, SHARD_RESULT_DDL)
                       .collect())
        else:
            written = []
        if rej:
            (allt.where(F.col("reason").isNotNull()).drop("input_ids")
             .write.mode("overwrite").partitionBy("reason").parquet(f"{tmp}/rejected"))
        t_write = time.time() - t2
    finally:
        allt.unpersist()

    manifest_streams = []
    by_stream: dict[tuple, list] = {}
    for w in written:
        by_stream.setdefault((w["lang"], w["source"]), []).append(w)
    for r in streams:
        ws = sorted(by_stream.get((r["lang"], r["source"]), []), key=lambda w: w["bucket"])
        docs, toks = sum(w["documents"] for w in ws), sum(w["tokens"] for w in ws)
        if docs != r["documents"] or toks != r["tokens"]:
            raise RuntimeError(f"tokenize: stream {r['lang']}/{r['source']} has {r['documents']} documents, "
                               f"{r['tokens']} tokens but its shards hold {docs}, {toks}")
        manifest_streams.append({"lang": r["lang"], "source": r["source"], "tier": r["tier"],
                                 "documents": int(docs), "tokens": int(toks), "files": [w["file"] for w in ws]})
    total = sum(s["tokens"] for s in manifest_streams)
    dest = f"{out}/tokens"
    # the tokenizer path relative to tokens/ (the folder can move with its tokenizer)
    model_rel = os.path.relpath(os.path.abspath(model_path), os.path.abspath(_local(dest))) \
        if "://" not in dest else os.path.abspath(model_path)
    manifest = {"tokenizer": model_rel, "vocab_size": info["vocab_size"], "bos_id": info["bos_id"],
                "eos_id": info["eos_id"], "pad_id": info["pad_id"], "streams": manifest_streams,
                "total_tokens": int(total)}

    # publish: old _SUCCESS first, then swap directories, manifest and _SUCCESS last
    fs.delete(spark, f"{dest}/{SUCCESS}")
    fs.delete(spark, dest)
    if written:
        fs.rename(spark, shards_root, dest)
    else:
        fs.mkdirs(spark, dest)
    fs.delete(spark, f"{out}/rejected/stage=tokenize")
    if rej:
        for part in fs.list_dir(spark, f"{tmp}/rejected"):
            if part.startswith("reason="):
                fs.rename(spark, f"{tmp}/rejected/{part}", f"{out}/rejected/stage=tokenize/{part}")
    fs.delete(spark, tmp)
    fs.write_json(spark, f"{dest}/{MANIFEST}", manifest)
    seconds = time.time() - t0
    stats = {"stage": "tokenize", "input": "corpus", "documents_in": n_in,
             "totals": {"in": n_in, "kept": kept_in, "removed": rej, "quarantined": {}},
             "extra": {"documents_out": kept_rows, "tokens": int(total),
                       "characters": chars,
                       "chars_per_token": (chars / total) if total else None,
                       "tokenize_seconds": round(t_tok, 3),
                       "tokens_per_sec": round(total / t_tok, 1) if t_tok > 0 else None,
                       "shard_write_seconds": round(t_write, 3),
                       "encode_cpu_seconds": round(float(enc_acc.value), 3), "encode_threads": threads,
                       "per_stream": [{"lang": r["lang"], "source": r["source"], "documents": int(r["documents"]),
                                       "tokens": int(r["tokens"]), "characters": int(r["chars"])}
                                      for r in streams]},
             "plots": [], "seconds": round(seconds, 3)}
    fs.mkdirs(spark, f"{out}/stats")
    fs.write_json(spark, f"{out}/stats/tokenize.json", stats)
    fs.write_text(spark, f"{dest}/{SUCCESS}", "")
    log(f"[tokenize] wrote {sum(len(s['files']) for s in manifest_streams)} shards, {total} tokens to {dest} "
        f"in {seconds:.1f}s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI: tokenize ``<out>/corpus`` with ``<out>/tokenizer/spm.model`` into ``<out>/tokens``."""
    from pipeline.cli import HelpFormatter, resolve_out
    from pipeline.config import fail
    from pipeline.session import build_spark, parse_conf
    from training.tokenizer import load_config

    p = argparse.ArgumentParser(description="Tokenize the corpus shards into token shards + manifest "
                                            "(input of the trainer).",
                                formatter_class=HelpFormatter)
    p.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"), help="output root")
    p.add_argument("--config", default=None, help="tokenizer YAML (default configs/tokenizer.yaml)")
    p.add_argument("--profile", default=None, help="config profile (default: the file's `profile:`)")
    p.add_argument("--model", default=None, help="SentencePiece model (default <out>/tokenizer/spm.model)")
    p.add_argument("--master", default=None, help="Spark master (default local[*] / spark-submit's)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf")
    p.add_argument("--data-root", default=None, help="accepted for symmetry with other jobs; unused")
    args = p.parse_args(argv)
    out = resolve_out(args.out)
    try:
        cfg = load_config(args.config, args.profile)
    except (FileNotFoundError, KeyError, ValueError) as e:  # a bad tokenizer config: no traceback
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    spark = build_spark("polycorpus-tokenize", master=args.master, conf=parse_conf(args.conf))
    try:
        m = run_tokenize(spark, out, cfg, model_path=args.model)
    finally:
        spark.stop()
    print(json.dumps({"total_tokens": m["total_tokens"], "streams": len(m["streams"]),
                      "manifest": f"{out}/tokens/{MANIFEST}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
