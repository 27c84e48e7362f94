"""Benchmark: the langid stage in Spark vs raw fastText ``predict`` on the same texts.

Input: the 2,214 real NTREX documents (18 languages) replicated and perturbed up to
``--docs`` documents (synthetic enlargement, announced in the output). Prints documents/s and
MB/s per core for the stage (Spark local[N], end to end: parquet read, Arrow transfer,
predict, partitioned write and accounting) next to the raw single-core predict rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import enlarge, ntrex_documents  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()

    from filters.langid import LangID

    docs = enlarge([(l, t) for l, _, t in ntrex_documents()], args.docs, seed=1)
    texts = [t for _, t in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"input: {len(texts)} documents, {mb:.1f} MB — the 2,214 real NTREX documents replicated "
          f"and perturbed (synthetic enlargement)")

    lid = LangID()
    lid.predict(texts[:100])  # load the model
    t0 = time.perf_counter()
    for i in range(0, len(texts), 2000):
        lid.predict(texts[i:i + 2000])
    raw = time.perf_counter() - t0
    print(f"raw fastText predict (1 core, batches of 2000): {len(texts) / raw:,.0f} docs/s, {mb / raw:.1f} MB/s")

    from pipeline.cli import run_stages
    from pipeline.config import load_config
    from pipeline.session import build_spark

    spark = build_spark("bench-langid", master=f"local[{args.cores}]",
                        conf={"spark.sql.shuffle.partitions": str(args.cores * 2)})
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as out:
        def write(path: str, subset: list, n_files: int) -> None:
            os.makedirs(path)
            step = -(-len(subset) // n_files)
            for k in range(0, len(subset), step):
                part = subset[k:k + step]
                pq.write_table(pa.table({
                    "id": [f"b{k + i:08d}" for i in range(len(part))], "source": ["bench"] * len(part),
                    "tier": ["web"] * len(part), "url": pa.nulls(len(part), pa.string()),
                    "text": [t for _, t in part], "meta": ["{}"] * len(part),
                    "lang_declared": [l for l, _ in part]}), f"{path}/part-{k:08d}.parquet")
            open(f"{path}/_SUCCESS", "w").close()

        config = load_config()
        config["stages"] = ["ingest", "langid"]
        warm = f"{out}/warm"
        write(f"{warm}/ingest", docs[:4000], args.cores * 2)
        run_stages(spark, warm, config, ["langid"])  # warm-up: JVM, Python workers, model load
        write(f"{out}/ingest", docs, args.cores * 4)
        t0 = time.perf_counter()
        stats = run_stages(spark, out, config, ["langid"])["langid"]
        dt = time.perf_counter() - t0
        acc = stats["extra"]["declared_agreement"]
        agree = sum(v["agree"] for v in acc.values()) / sum(v["documents"] for v in acc.values())
    spark.stop()
    per_core = len(texts) / dt / args.cores
    print(f"langid stage (Spark local[{args.cores}]): {len(texts) / dt:,.0f} docs/s total, "
          f"{per_core:,.0f} docs/s per core, {mb / dt / args.cores:.1f} MB/s per core, {dt:.1f} s")
    print(f"stage per core / raw predict: {per_core / (len(texts) / raw):.0%} (target >= 50%)")
    print(f"declared-language agreement on the enlarged input: {agree:.4f}")


if __name__ == "__main__":
    main()
