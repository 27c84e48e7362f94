"""Scale benchmark: the whole configured corpus build on N documents in ``local[2]``.

The input is SYNTHETIC and crawl-like (:mod:`bench.crawl`): distinct documents mixed from each
language's own real sentences in the sample data (NTREX-128, Leipzig, UD, UDHR), words
perturbed, web-page lengths and furniture, with near-duplicates PLANTED at PolyLM's share
(23.1% of English, 18.6% of other languages' documents; PolyLM sec. 2.1) and hard
non-duplicates (rewrites). It is written as gzipped JSON lines, streamed, and read by the
ingest stage like any other source; the planted truth goes to ``truth.parquet``.

The build runs twice in one Spark session: on the first ``N / --growth`` documents (a prefix:
every copy's original comes before it, so the prefix is self-contained) and on all ``N``.
Prints, per size and stage: wall time, documents in, documents/s and documents/s per core;
the dedup sub-steps (seconds and Spark jobs), candidate pairs and connected-components rounds;
the planted near-duplicate share next to the share dedup removed, and the pairwise precision
and recall of dedup's clusters against the planted ones; the peak resident memory (RSS,
sampled every 0.5 s with psutil) of the driver (this Python process plus the Spark JVM) and of
the Python workers, and whether it fits the budget (24 GiB by default); then the growth ratio
of every stage between the two sizes (linear = the size ratio).
``make bench-scale`` (``BENCH_SCALE_N=...`` to change N).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.crawl import CrawlGenerator, describe  # noqa: E402

GIB = 1 << 30


def write_input(gen: CrawlGenerator, dest: Path, lo: int, hi: int, files: int, first_file: int) -> int:
    """Write documents ``[lo, hi)`` of ``gen`` as ``files`` ``.jsonl.gz`` files numbered from
    ``first_file`` in ``dest`` (streamed).

    Returns:
        bytes of text written (UTF-8).
    """
    tmp = dest / f"_w{first_file}"
    nbytes = gen.write_jsonl(tmp, files, lo, hi)
    for f in sorted(tmp.iterdir()):
        f.rename(dest / f"part-{first_file + int(f.name[5:10]):05d}.jsonl.gz")
    tmp.rmdir()
    return nbytes


def evaluate_dedup(spark, out: Path, truth: Path) -> dict | None:
    """Dedup's clusters against the planted ones, over the documents that reached dedup.

    Returns:
        ``{"documents", "removed", "removed_share", "planted_removable", "planted_share",
        "pairs_planted", "pairs_found", "pairs_both", "precision", "recall", "per_group":
        {"en"|"other": {"documents", "removed_share", "planted_share"}}}``; ``None`` when the
        dedup output is missing. Pairs are unordered document pairs in one cluster; planted
        clusters are an original and its copies, found clusters are ``dup_cluster``.
    """
    from pyspark.sql import functions as F

    kept_dir, rej_dir = out / "dedup", out / "rejected" / "stage=dedup"
    if not kept_dir.is_dir():
        return None
    cols = [F.get_json_object("meta", "$.json_id").alias("json_id"),
            F.coalesce("dup_cluster", "id").alias("found")]
    docs = spark.read.parquet(str(kept_dir)).select(*cols, F.lit(0).alias("rm"))
    if rej_dir.is_dir():
        docs = docs.unionByName(spark.read.parquet(str(rej_dir)).select(*cols, F.lit(1).alias("rm")))
    t = spark.read.parquet(str(truth))
    d = docs.join(t, "json_id").select(F.when(F.col("lang") == "en", "en").otherwise("other").alias("g"),
                                       "family", "found", "rm").cache()
    pairs = lambda k: F.sum(F.col("n") * (F.col("n") - 1) / 2)  # noqa: E731
    n_pl = d.groupBy("family").agg(F.count("*").alias("n")).agg(pairs(0)).first()[0] or 0
    n_fd = d.groupBy("found").agg(F.count("*").alias("n")).agg(pairs(0)).first()[0] or 0
    n_both = d.groupBy("family", "found").agg(F.count("*").alias("n")).agg(pairs(0)).first()[0] or 0
    per = {}
    for r in (d.groupBy("g").agg(F.count("*").alias("docs"), F.sum("rm").alias("removed"),
                                 F.countDistinct("family").alias("families")).collect()):
        per[r["g"]] = {"documents": r["docs"], "removed_share": round(r["removed"] / r["docs"], 4),
                       "planted_share": round((r["docs"] - r["families"]) / r["docs"], 4)}
    n = sum(v["documents"] for v in per.values())
    removed = d.where(F.col("rm") == 1).count()
    removable = n - d.select("family").distinct().count()
    d.unpersist()
    return {"documents": n, "removed": removed, "removed_share": round(removed / n, 4) if n else 0.0,
            "planted_removable": removable, "planted_share": round(removable / n, 4) if n else 0.0,
            "pairs_planted": int(n_pl), "pairs_found": int(n_fd), "pairs_both": int(n_both),
            "precision": round(n_both / n_fd, 4) if n_fd else 1.0,
            "recall": round(n_both / n_pl, 4) if n_pl else 1.0, "per_group": per}


class MemorySampler(threading.Thread):
    """Samples RSS of this process, its Spark JVM child and the Python workers under it."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.peak = {"driver_python": 0, "driver_jvm": 0, "workers": 0, "total": 0}
        self.stop_flag = threading.Event()

    def sample(self) -> None:
        ps = self.psutil
        drv_py = self.me.memory_info().rss
        jvm = workers = 0
        try:
            children = self.me.children(recursive=True)
        except ps.Error:
            children = []
        for c in children:
            try:
                rss = c.memory_info().rss
                name = c.name()
            except ps.Error:
                continue
            if "java" in name:
                jvm += rss
            else:
                workers += rss
        cur = {"driver_python": drv_py, "driver_jvm": jvm, "workers": workers, "total": drv_py + jvm + workers}
        for k, v in cur.items():
            self.peak[k] = max(self.peak[k], v)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.sample()
            self.stop_flag.wait(self.interval)


MODELS_DIR = REPO / "build" / "bench_scale_models"


def prepare_models(spark, models_dir: Path) -> str:
    """Quality models trained on the REAL sample (its reference tier, as ``make quality-models``:
    ingest + langid of ``../shared/data``, then :mod:`jobs.train_quality_models`), once, into
    ``models_dir``, before any timed run (the crawl-like input is all web tier: nothing to train
    the reference side on). Reused when ``models_dir/manifest.json`` exists.

    Returns:
        a line saying where the models come from and how long they took.
    """
    if (models_dir / "manifest.json").exists():
        return f"quality models: trained on the real sample earlier, reused from {models_dir}"
    from bench.common import data_root
    from jobs.train_quality_models import main as train_main
    from pipeline.cli import run_stages
    from pipeline.config import load_config

    t0 = time.time()
    sample_out = models_dir.parent / "bench_scale_models_sample"
    config = load_config(None, str(data_root()))
    run_stages(spark, str(sample_out), config, ["ingest", "langid"], force=True)
    rc = train_main(["--out", str(sample_out), "--models-dir", str(models_dir)])
    shutil.rmtree(sample_out, ignore_errors=True)
    if rc != 0 or not (models_dir / "manifest.json").exists():
        raise SystemExit(f"bench_scale: training the quality models on the sample failed (exit {rc}); pass "
                         f"--quality-models DIR (e.g. from `make quality-models`)")
    return (f"quality models: trained on the real sample in {time.time() - t0:.0f}s before the timed runs "
            f"(not timed), in {models_dir}")


def run_size(spark, work: Path, inp: Path, n: int, a, cores: int, quality_models: str | None,
             truth: Path) -> dict:
    """Run the configured chain on the documents in ``inp`` (``n`` of them), output in
    ``work/out``; returns ``{"rows": [(stage, wall_s, docs_in, kept)], "dedup": stats extra,
    "eval": evaluate_dedup(...), "peak": {...}, "resumed": [...], "models_note": str,
    "models_trained_s": float}``."""
    import yaml

    from pipeline.cli import run_stages
    from pipeline.config import load_config, read_config_file
    from pipeline.quality_models import default_models_dir

    out = work / "out"
    work.mkdir(parents=True, exist_ok=True)
    (work / "sources.yaml").write_text(
        "sources:\n  - name: bench-crawl\n    format: jsonl\n    glob: '*.jsonl.gz'\n    tier: web\n"
        "    options: {lang_field: lang}\n")
    cfg_yaml = read_config_file(REPO / "configs" / "pipeline.yaml")  # paths absolute: the copy lives in `work`
    cfg_yaml["sources_file"] = str(work / "sources.yaml")
    if quality_models:
        cfg_yaml.setdefault("quality", {})["models_dir"] = str(Path(quality_models).resolve())
    (work / "pipeline.yaml").write_text(yaml.safe_dump(cfg_yaml, sort_keys=False))
    config = load_config(work / "pipeline.yaml", str(inp))
    chain = list(config["stages"])
    qdir = Path(str((config.get("quality") or {}).get("models_dir")
                    or default_models_dir(str(out))).removeprefix("file:"))
    pretrained = (qdir / "manifest.json").exists()
    models_note = (f"quality models: pre-trained, read from {qdir}" if pretrained
                   else f"quality models: none in {qdir}, so the quality stage trains them from this run's "
                        f"langid output first (training time included in its wall time)")
    print(f"--- {n} documents: chain {' -> '.join(chain)}; {models_note if 'quality' in chain else ''}", flush=True)
    sampler = MemorySampler()
    sampler.start()
    rows, resumed, dedup_extra = [], [], None
    sc = spark.sparkContext
    try:
        rerun = not a.resume
        for stage in chain:
            if not rerun and (out / stage / "_SUCCESS").exists():
                st = json.loads((out / "stats" / f"{stage}.json").read_text())
                n_in = st.get("documents_in") or st["totals"]["in"]
                rows.append((stage, float(st["seconds"]), n_in, st["totals"]["kept"], None))
                print(f"stage {stage}: published by the earlier run ({st['seconds']:.1f}s wall then), not rerun",
                      flush=True)
                resumed.append(stage)
                if stage == "dedup":
                    dedup_extra = st.get("extra")
                continue
            rerun = True
            group = f"bench-scale-{n}-{stage}"
            sc.setJobGroup(group, f"bench_scale {stage} on {n} documents")
            t = time.time()
            stats = run_stages(spark, str(out), config, [stage], force=True)[stage]  # measured: never a fingerprint skip
            dt = time.time() - t
            ids = sc.statusTracker().getJobIdsForGroup(group)
            jobs = max(ids) - min(ids) + 1 if ids else 0
            n_in = stats.get("documents_in") or stats["totals"]["in"]
            rows.append((stage, dt, n_in, stats["totals"]["kept"], jobs))
            if stage == "dedup":
                dedup_extra = stats.get("extra")
            print(f"stage {stage}: {dt:.1f}s wall, {n_in} documents in, {stats['totals']['kept']} kept, "
                  f"{n_in / dt:.0f} documents/s, {n_in / dt / cores:.0f} documents/s per core, {jobs} Spark jobs",
                  flush=True)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sampler.stop_flag.set()
        sampler.join()
        sampler.sample()
    trained_s = 0.0
    if "quality" in chain and not pretrained and (qdir / "manifest.json").exists():
        trained_s = float(json.loads((qdir / "manifest.json").read_text()).get("seconds") or 0.0)
    ev = evaluate_dedup(spark, out, truth) if "dedup" in chain else None
    return {"rows": rows, "dedup": dedup_extra, "eval": ev, "peak": dict(sampler.peak), "resumed": resumed,
            "models_note": models_note, "models_trained_s": trained_s, "models_dir": str(qdir)}


def _config_models_dir() -> str | None:
    from pipeline.config import read_config_file

    return (read_config_file(REPO / "configs" / "pipeline.yaml").get("quality") or {}).get("models_dir")


def report(n: int, nbytes: int, res: dict, a, cores: int) -> None:
    """Print the figures of one size."""
    print(f"=== bench_scale results: {n} documents, {nbytes / 1e9:.2f} GB of text (SYNTHETIC crawl-like input, "
          f"planted near-duplicates), master {a.master}, {cores} cores")
    print(res["models_note"])
    for stage, dt, n_in, kept, jobs in res["rows"]:
        print(f"{stage:8s} wall_s={dt:9.1f}  docs_in={n_in:9d}  kept={kept:9d}  docs_per_s={n_in / dt:9.0f}  "
              f"docs_per_s_per_core={n_in / dt / cores:9.0f}  spark_jobs={'-' if jobs is None else jobs}")
    total = sum(r[1] for r in res["rows"])
    print(f"total    wall_s={total:9.1f}  docs_per_s={n / total:9.0f}  docs_per_s_per_core={n / total / cores:9.0f}")
    if res["models_trained_s"]:
        t2 = total - res["models_trained_s"]
        print(f"         (quality models trained in this run: {res['models_trained_s']:.1f}s of the quality stage; "
              f"without them total wall_s={t2:.1f}, docs_per_s_per_core={n / t2 / cores:.0f})")
    ex = res["dedup"]
    if ex:
        steps = ex.get("steps") or {}
        print(f"dedup: candidate_pairs={ex['candidate_pairs']}  verified_pairs={ex['verified_pairs']}  "
              f"components_rounds={ex['components_rounds']}  exact={ex['exact_duplicates']}  "
              f"near={ex['near_duplicates']}")
        print("dedup steps: " + "  ".join(f"{k}={v['seconds']:.1f}s/{v['spark_jobs']}jobs" for k, v in steps.items()))
    ev = res["eval"]
    if ev:
        g = ev["per_group"]
        print(f"dedup vs planted: planted near-duplicate share {100 * ev['planted_share']:.1f}% of the "
              f"{ev['documents']} documents that reached dedup, removed {100 * ev['removed_share']:.1f}% "
              + " ".join(f"({k}: planted {100 * v['planted_share']:.1f}%, removed {100 * v['removed_share']:.1f}%)"
                         for k, v in sorted(g.items())))
        print(f"dedup pairwise precision={ev['precision']:.4f} recall={ev['recall']:.4f}  (planted pairs "
              f"{ev['pairs_planted']}, found {ev['pairs_found']}, both {ev['pairs_both']})")
    if res["resumed"]:
        print(f"resumed: {', '.join(res['resumed'])} ran in an earlier process (wall times from their stats); the "
              f"peak memory below covers only the stages run by this process")
    pk = res["peak"]
    print(f"peak_rss_driver_python_gib={pk['driver_python'] / GIB:.2f}")
    print(f"peak_rss_driver_jvm_gib={pk['driver_jvm'] / GIB:.2f}  (local mode: the JVM also hosts the executor)")
    print(f"peak_rss_python_workers_gib={pk['workers'] / GIB:.2f}")
    print(f"peak_rss_total_gib={pk['total'] / GIB:.2f}  budget_gib={a.budget_gib:.0f}  "
          f"{'FITS' if pk['total'] < a.budget_gib * GIB else 'EXCEEDS BUDGET'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000, help="number of documents (synthetic) of the larger run")
    p.add_argument("--growth", type=int, default=4,
                   help="also build on the first docs/GROWTH documents first and print the growth ratio "
                        "(1: one size only)")
    p.add_argument("--files", type=int, default=0, help="input files (default: about 15k docs per file, >= 4)")
    p.add_argument("--mix", choices=("crawl", "uniform"), default="crawl",
                   help="documents per language: crawl-like (en 30%%, zh 10%%, ...) or 1/18 each")
    p.add_argument("--out", default=str(REPO / "build" / "bench_scale"), help="work directory (input + output)")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--budget-gib", type=float, default=24.0, help="memory budget of the whole run")
    p.add_argument("--quality-models", default=None,
                   help="quality.models_dir to use (default: the config's; when it has none, models trained "
                        "once on the real sample into build/bench_scale_models, not timed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the input and output directories")
    p.add_argument("--resume", action="store_true",
                   help="reuse the input and the published stages of an earlier run in --out (kept with "
                        "--keep, or killed): stages with _SUCCESS are not rerun and report the wall time "
                        "recorded in their stats; from the first unpublished stage on, every stage runs")
    a = p.parse_args(argv)
    if a.docs < 1:
        p.error("--docs must be >= 1")
    if a.growth < 1 or (a.growth > 1 and a.docs // a.growth < 1):
        p.error("--growth must be >= 1 and leave at least one document in the smaller run")
    sizes = [a.docs] if a.growth == 1 else [a.docs // a.growth, a.docs]

    from pipeline.session import build_spark

    work = Path(a.out).resolve()
    info_path = work / "input.json"
    want = {"docs": a.docs, "growth": a.growth, "seed": a.seed, "mix": a.mix, "generator": "bench.crawl"}
    t0 = time.time()
    gen = CrawlGenerator(a.docs, seed=a.seed, mix=a.mix)
    print(f"bench_scale: {describe(gen)}", flush=True)
    inputs = {s: work / f"input_{s}" for s in sizes}
    truth = work / "truth.parquet"
    if a.resume and info_path.exists() and {k: json.loads(info_path.read_text()).get(k) for k in want} == want:
        nbytes = json.loads(info_path.read_text())["text_bytes"]
        print(f"--resume: reusing the input in {work}", flush=True)
    else:
        if a.resume:
            print(f"--resume: no matching earlier input in {work}, starting from scratch", flush=True)
        if work.exists():
            shutil.rmtree(work)
        nbytes, lo, nfile = {}, 0, 0
        for s in sizes:  # the smaller input is a prefix of the larger: its files are hard-linked
            d = inputs[s]
            d.mkdir(parents=True)
            for prev in sizes[:sizes.index(s)]:
                for f in sorted(inputs[prev].iterdir()):
                    os.link(f, d / f.name)
            files = a.files or max(4 if s == sizes[0] else 1, (s - lo) // 15000)
            nb = write_input(gen, d, lo, s, files, nfile)
            nbytes[s] = nb + (nbytes[sizes[sizes.index(s) - 1]] if s != sizes[0] else 0)
            lo, nfile = s, nfile + files
        gen.write_truth(truth)
        info_path.write_text(json.dumps({**want, "text_bytes": nbytes}))
        print(f"input written in {time.time() - t0:.1f}s: " + ", ".join(
            f"{s} documents = {nbytes[s] / 1e9:.2f} GB of text" for s in sizes), flush=True)
        nbytes = {str(k): v for k, v in nbytes.items()}
    master = a.master
    cores = int(master[len("local["):-1]) if master.startswith("local[") and master[6:-1].isdigit() \
        else os.cpu_count()
    spark = build_spark("polycorpus-bench-scale", master=master,
                        conf={"spark.driver.memory": a.driver_memory,
                              "spark.sql.shuffle.partitions": str(max(8, 4 * cores)),
                              "spark.sql.files.maxPartitionBytes": str(64 << 20)})
    results = {}
    qm = a.quality_models
    try:
        if qm is None and not (load_config_quality_dir := _config_models_dir()):
            print(prepare_models(spark, MODELS_DIR), flush=True)
            qm = str(MODELS_DIR)
        elif qm is None:
            print(f"quality models: the config's quality.models_dir {load_config_quality_dir}", flush=True)
        for s in sizes:
            results[s] = run_size(spark, work / f"n{s}", inputs[s], s, a, cores, qm, truth)
            if qm is None and Path(results[s]["models_dir"], "manifest.json").exists():
                qm = results[s]["models_dir"]  # the larger run reuses the models the first one trained
    finally:
        spark.stop()
    print(f"input: {describe(gen)}")
    for s in sizes:
        report(s, nbytes[str(s)], results[s], a, cores)
    if len(sizes) == 2:
        small, big = (results[s] for s in sizes)
        ratio = sizes[1] / sizes[0]
        tb = {r[0]: r[1] for r in big["rows"]}
        ts = {r[0]: r[1] for r in small["rows"]}
        if small["models_trained_s"] and "quality" in ts:
            ts["quality"] -= small["models_trained_s"]  # compare scoring with scoring
        line = "  ".join(f"{k}={tb[k] / ts[k]:.2f}x" for k in tb if k in ts and ts[k] > 0)
        print(f"growth {sizes[0]} -> {sizes[1]} documents ({ratio:.0f}x input; linear = {ratio:.2f}x time, "
              f"same Spark session, the larger run second; quality without model training): {line}  "
              f"total={sum(tb.values()) / sum(ts.values()):.2f}x")
        db, ds = big["dedup"], small["dedup"]
        if db and ds:
            print(f"dedup growth: candidate_pairs {ds['candidate_pairs']} -> {db['candidate_pairs']} "
                  f"({db['candidate_pairs'] / max(1, ds['candidate_pairs']):.2f}x), components_rounds "
                  f"{ds['components_rounds']} -> {db['components_rounds']}; steps " + "  ".join(
                      f"{k}={db['steps'][k]['seconds'] / max(1e-9, ds['steps'][k]['seconds']):.2f}x"
                      for k in db.get("steps", {}) if k in ds.get("steps", {})))
    peak = max(r["peak"]["total"] for r in results.values())
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if peak < a.budget_gib * GIB else 1


if __name__ == "__main__":
    sys.exit(main())
