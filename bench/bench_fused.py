"""Per-document stages staged vs fused (pipeline/fused.py), side by side in one run.

The input is SYNTHETIC: the 2,214 NTREX-128 documents (123 x 18 languages) replicated and
perturbed by :func:`bench.common.enlarge` up to ``--docs`` documents (default 20,000); every
fifth document is tier ``web`` and cut to its first two sentences, so the rules stage removes a
share of them (Gopher's minimum length). They are written once as a published ``ingest``
output; each round then runs ``langid`` and ``rules`` on a copy of it, staged (``fuse: false``:
two passes, each reading the previous one's parquet) and fused (one pass), in alternating order,
in one Spark session (``local[2]`` by default). Prints per round and the median: seconds,
documents/s per core, and the staged / fused time ratio; and checks that both modes kept and
removed the same documents for the same reasons.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import data_root, enlarge, ntrex_documents, stage_input_rows  # noqa: E402

COLS = ("id", "source", "tier", "url", "text", "meta", "lang_declared", "source_id", "detail")


def write_ingest(spark, out: str, n: int, seed: int = 0, files: int = 8) -> int:
    """Publish ``n`` synthetic documents as ``<out>/ingest`` (parquet + ``_SUCCESS``). Returns n."""
    from pyspark.sql.types import StringType, StructField, StructType

    from pipeline.stage import write_success

    rows = stage_input_rows(n, seed)
    schema = StructType([StructField(c, StringType()) for c in COLS])
    spark.createDataFrame(rows, schema).repartition(files).write.mode("overwrite").parquet(out + "/ingest")
    write_success(spark, out + "/ingest", "bench-ingest",
                  [f for f in os.listdir(out + "/ingest") if f.endswith(".parquet")], rows=n)
    return n


def run_mode(spark, base: str, work: str, config: dict, fused: bool) -> tuple[float, dict]:
    """Run langid + rules on a fresh copy of ``base``'s ingest output; (seconds, stats)."""
    from pipeline.cli import run_stages

    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    shutil.copytree(base + "/ingest", work + "/ingest")
    cfg = dict(config, fuse=fused)
    t0 = time.perf_counter()
    stats = run_stages(spark, work, cfg, ["langid", "rules"])
    return time.perf_counter() - t0, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=20000, help="synthetic documents (replicated NTREX)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (staged, fused), order alternating")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    a = p.parse_args(argv)
    os.environ.setdefault("POLY_PROGRESS_SECONDS", "0")
    from pipeline.config import load_config
    from pipeline.session import build_spark

    cores = int(a.master[len("local["):-1]) if a.master.startswith("local[") and a.master[6:-1].isdigit() else os.cpu_count()
    spark = build_spark("bench-fused", master=a.master)
    work = a.work or tempfile.mkdtemp(prefix="bench-fused-")
    try:
        base = os.path.join(work, "base")
        n = write_ingest(spark, base, a.docs)
        config = load_config(None, str(data_root()))
        config["stages"] = ["ingest", "langid", "rules"]
        print(f"bench_fused: {n:,} SYNTHETIC documents (NTREX-128 replicated and perturbed; every 5th "
              f"a 2-sentence web page), langid + rules, {a.master}, {a.rounds} rounds + 1 warm-up")
        run_mode(spark, base, os.path.join(work, "warm"), config, True)  # Python workers, models loaded
        times = {"staged": [], "fused": []}
        totals = {}
        for r in range(a.rounds):
            order = ("staged", "fused") if r % 2 == 0 else ("fused", "staged")
            for mode in order:
                sec, stats = run_mode(spark, base, os.path.join(work, mode), config, mode == "fused")
                times[mode].append(sec)
                totals[mode] = {s: stats[s]["totals"] for s in ("langid", "rules")}
                print(f"  round {r + 1} {mode:6s} {sec:7.1f} s  {n / sec / cores:7.0f} docs/s per core")
        same = totals["staged"] == totals["fused"]
        med = {m: statistics.median(v) for m, v in times.items()}
        print(f"median: staged {med['staged']:.1f} s ({n / med['staged'] / cores:.0f} docs/s per core), "
              f"fused {med['fused']:.1f} s ({n / med['fused'] / cores:.0f} docs/s per core); "
              f"staged/fused time ratio {med['staged'] / med['fused']:.2f}x; "
              f"same kept/removed counts by reason: {same}")
        t = totals["fused"]
        print(f"langid: in {t['langid']['in']:,}, kept {t['langid']['kept']:,}; rules: kept {t['rules']['kept']:,}, "
              f"removed {sum(t['rules']['removed'].values()):,}")
        return 0 if same else 1
    finally:
        spark.stop()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
