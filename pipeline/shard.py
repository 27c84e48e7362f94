"""Stage ``shard``: the last filtering stage's kept documents ->
``corpus/lang=xx/source=yy/part-*.parquet`` + ``corpus/manifest.json``.

Shards per (lang, source) are sized to about ``target_shard_bytes`` of UTF-8 text
(default 128 MiB, config ``shard.target_shard_bytes``); rows inside a shard are ordered by
``id``, so a rerun on the same input writes the same content. The manifest gives documents,
bytes, characters and a token estimate per language and source, and the list of files.
"""
from __future__ import annotations

import math
import time

from pipeline import fs
from pipeline.stage import Stage, StageContext, log, write_success

#: Characters per token used for the manifest's *estimate* only (the tokenize stage counts
#: exactly). Rough figures for a large multilingual BPE vocabulary: about 4 characters per
#: token for alphabetic scripts, fewer for scripts without spaces.
CHARS_PER_TOKEN = {"zh": 1.3, "ja": 1.5, "ko": 2.0, "th": 2.5}
DEFAULT_CHARS_PER_TOKEN = 4.0


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
        n_in = df.count()
        log(f"[shard] {n_in} documents in from {ctx.input_stage}")
        df = df.withColumn("_bytes", F.octet_length("text")).withColumn("_chars", F.length("text"))
        sizes = df.groupBy("lang", "source").agg(F.count("*").alias("documents"), F.sum("_bytes").alias("bytes"),
                                                 F.sum("_chars").alias("characters")).collect()
        nfiles = {(r["lang"], r["source"]): max(1, math.ceil((r["bytes"] or 0) / target)) for r in sizes}
        total_files = max(1, sum(nfiles.values()))
        nf = F.create_map(*[x for (l, s), n in nfiles.items() for x in (F.lit(f"{l}\u0001{s}"), F.lit(n))])
        df = df.withColumn("_file", F.pmod(F.xxhash64("id"), nf[F.concat_ws("\u0001", "lang", "source")]))
        tmp = self.tmp_path(ctx)
        (df.repartition(total_files, "lang", "source", "_file")
           .sortWithinPartitions("lang", "source", "id")
           .drop("_bytes", "_chars", "_file")
           .write.mode("overwrite").partitionBy("lang", "source").parquet(tmp))
        dest = ctx.path("corpus")
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "input_stage": ctx.input_stage,
                    "target_shard_bytes": target, "token_estimate": "characters / chars_per_token(lang), "
                    "4.0 for alphabetic scripts, zh 1.3, ja 1.5, ko 2.0, th 2.5; exact counts come from `make tokenize`",
                    "streams": []}
        tot = {"documents": 0, "bytes": 0, "characters": 0, "tokens_est": 0}
        per_lang: dict[str, dict] = {}
        for r in sorted(sizes, key=lambda r: (r["lang"], r["source"])):
            lang, src = r["lang"], r["source"]
            files = [f for f in fs.list_dir(spark, f"{tmp}/lang={lang}/source={src}") if f.endswith(".parquet")]
            tok = int((r["characters"] or 0) / CHARS_PER_TOKEN.get(lang, DEFAULT_CHARS_PER_TOKEN))
            manifest["streams"].append({"lang": lang, "source": src, "documents": r["documents"],
                                        "bytes": int(r["bytes"] or 0), "characters": int(r["characters"] or 0),
                                        "tokens_est": tok,
                                        "files": [f"lang={lang}/source={src}/{f}" for f in files]})
            for k, v in (("documents", r["documents"]), ("bytes", int(r["bytes"] or 0)),
                         ("characters", int(r["characters"] or 0)), ("tokens_est", tok)):
                tot[k] += v
                per_lang.setdefault(lang, {"documents": 0, "bytes": 0, "characters": 0, "tokens_est": 0})[k] += v
        manifest["per_lang"] = per_lang
        manifest["totals"] = tot
        if tot["documents"] != n_in:
            raise RuntimeError(f"shard: {n_in} documents in, {tot['documents']} in the manifest")
        fs.delete(spark, dest + "/_SUCCESS")
        fs.delete(spark, dest)
        fs.rename(spark, tmp, dest)
        fs.delete(spark, dest + "/_SUCCESS")
        fs.write_json(spark, dest + "/manifest.json", manifest)
        counts = {"in": n_in, "kept": n_in, "removed": {}, "quarantined": {}}
        stats = {"stage": "shard", "input": ctx.input_stage, "documents_in": n_in, "totals": counts,
                 "per_lang": {l: {"in": v["documents"], "kept": v["documents"], "removed": {}, "quarantined": {}}
                              for l, v in sorted(per_lang.items())},
                 "extra": {"manifest_totals": tot, "files": sum(len(s["files"]) for s in manifest["streams"])},
                 "plots": [], "seconds": round(time.time() - t0, 3)}
        fs.mkdirs(spark, ctx.path("stats"))
        fs.write_json(spark, ctx.path("stats", "shard.json"), stats)
        write_success(spark, dest, ctx.fingerprint, [f for st in manifest["streams"] for f in st["files"]])
        log(f"[shard] wrote {stats['extra']['files']} files, {tot['documents']} documents to {dest}")
        return stats
