"""Scale benchmark: the whole configured corpus build on N documents in ``local[2]``.

The input is SYNTHETIC: the 2,214 NTREX-128 documents (123 x 18 languages) replicated and
perturbed by :func:`bench.common.enlarge` (each copy drops a sentence and swaps two) up to
``--docs`` documents (default 1,000,000), written as gzipped JSON lines and read by the
ingest stage like any other source. Near-duplicates are therefore the rule, not the
exception (dedup, when configured, removes most of them).

Prints, per stage: wall time, documents in, documents/s and documents/s per core; then the
peak resident memory (RSS, sampled every 0.5 s with psutil) of the driver (this Python process
plus the Spark JVM) and of the Python workers, and whether the peak of everything fits in the
budget (24 GiB by default). ``make bench-scale`` (``BENCH_SCALE_N=...`` to change N).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import enlarge, ntrex_documents  # noqa: E402

GIB = 1 << 30


def write_input(dest: Path, n: int, files: int, seed: int) -> int:
    """Write ``n`` replicated + perturbed NTREX documents as ``files`` ``.jsonl.gz`` files.

    Returns:
        bytes of text written (UTF-8).
    """
    docs = [(lang, text) for lang, _, text in ntrex_documents()]
    dest.mkdir(parents=True, exist_ok=True)
    per = [n // files + (1 if i < n % files else 0) for i in range(files)]
    total = 0
    k = 0
    for i, m in enumerate(per):
        if m == 0:
            continue
        # enlarge() returns the originals first; file 0 keeps them, the others only copies
        batch = enlarge(docs, m if i == 0 else m + len(docs), seed=seed + i)
        batch = batch if i == 0 else batch[len(docs):]
        with gzip.open(dest / f"part-{i:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as f:
            for lang, text in batch:
                f.write(json.dumps({"id": f"s{k}", "text": text, "lang": lang}, ensure_ascii=False) + "\n")
                total += len(text.encode("utf-8"))
                k += 1
    assert k == n, (k, n)
    return total


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


def resumed_input(inp: Path, info_path: Path, a) -> int:
    """Check that the input in ``inp`` (an earlier run's, described by ``input.json``) has
    ``a.docs`` documents and return its bytes of text.

    Raises:
        SystemExit: no ``input.json`` beside the input, or a different number of documents.
    """
    if not info_path.exists():
        raise SystemExit(f"--resume: {info_path} is missing, so the input in {inp} was not written by this "
                         f"bench; run without --resume")
    info = json.loads(info_path.read_text())
    if info["docs"] != a.docs:
        raise SystemExit(f"--resume: the input in {inp} has {info['docs']} documents, not --docs {a.docs}")
    print(f"--resume: reusing the input in {inp}: {info['docs']} documents, "
          f"{info['text_bytes'] / 1e9:.2f} GB of text", flush=True)
    return int(info["text_bytes"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000, help="number of documents (synthetic)")
    p.add_argument("--files", type=int, default=0, help="input files (default: about 15k docs per file, >= 4)")
    p.add_argument("--out", default=str(REPO / "build" / "bench_scale"), help="work directory (input + output)")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--budget-gib", type=float, default=24.0, help="memory budget of the whole run")
    p.add_argument("--quality-models", default=None,
                   help="quality.models_dir to use (default: the config's; trained from the bench's langid "
                        "output when missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the input and output directories")
    p.add_argument("--resume", action="store_true",
                   help="reuse the input and the published stages of an earlier run in --out (kept with "
                        "--keep, or killed): stages with _SUCCESS are not rerun and report the wall time "
                        "recorded in their stats; from the first unpublished stage on, every stage runs")
    a = p.parse_args(argv)
    if a.docs < 1:
        p.error("--docs must be >= 1")

    from pipeline.cli import run_stages
    from pipeline.config import load_config
    from pipeline.session import build_spark

    work = Path(a.out).resolve()
    inp, out = work / "input", work / "out"
    files = a.files or max(4, a.docs // 15000)
    print(f"bench_scale: {a.docs} documents, REPLICATED AND PERTURBED from the 2214 NTREX-128 documents "
          f"(synthetic scale input, near-duplicates by construction), {files} jsonl.gz files", flush=True)
    info_path = work / "input.json"
    if a.resume and inp.is_dir():
        nbytes = resumed_input(inp, info_path, a)
    else:
        if a.resume:
            print(f"--resume: no earlier input in {inp}, starting from scratch", flush=True)
        if work.exists():
            shutil.rmtree(work)
        t0 = time.time()
        nbytes = write_input(inp, a.docs, files, a.seed)
        info_path.write_text(json.dumps({"docs": a.docs, "files": files, "seed": a.seed, "text_bytes": nbytes}))
        print(f"input written in {time.time() - t0:.1f}s: {nbytes / 1e9:.2f} GB of text", flush=True)

    (work / "sources.yaml").write_text(
        "sources:\n  - name: bench-ntrex\n    format: jsonl\n    glob: '*.jsonl.gz'\n    tier: reference\n"
        "    options: {lang_field: lang}\n")
    import yaml

    from pipeline.config import read_config_file

    cfg_yaml = read_config_file(REPO / "configs" / "pipeline.yaml")  # paths absolute: the copy lives in `work`
    cfg_yaml["sources_file"] = str(work / "sources.yaml")
    if a.quality_models:
        cfg_yaml.setdefault("quality", {})["models_dir"] = str(Path(a.quality_models).resolve())
    (work / "pipeline.yaml").write_text(yaml.safe_dump(cfg_yaml, sort_keys=False))
    config = load_config(work / "pipeline.yaml", str(inp))
    chain = list(config["stages"])
    cores = int(a.master[len("local["):-1]) if a.master.startswith("local[") and a.master[6:-1].isdigit() \
        else os.cpu_count()
    print(f"chain: {' -> '.join(chain)}; master {a.master} ({cores} cores)", flush=True)
    from pipeline.quality_models import default_models_dir

    qdir = Path(str((config.get("quality") or {}).get("models_dir")
                    or default_models_dir(str(out))).removeprefix("file:"))
    models_note = (f"quality models: pre-trained, read from {qdir}" if (qdir / "manifest.json").exists()
                   else f"quality models: none in {qdir}, so the quality stage trains them from this run's "
                        f"langid output first (training time included in its wall time)")
    if "quality" in chain:
        print(models_note, flush=True)

    sampler = MemorySampler()
    sampler.start()
    spark = build_spark("polycorpus-bench-scale", master=a.master,
                        conf={"spark.driver.memory": a.driver_memory,
                              "spark.sql.shuffle.partitions": str(max(8, 4 * cores)),
                              "spark.sql.files.maxPartitionBytes": str(64 << 20)})
    rows = []
    resumed: list[str] = []
    try:
        rerun = not a.resume
        for stage in chain:
            if not rerun and (out / stage / "_SUCCESS").exists():
                st = json.loads((out / "stats" / f"{stage}.json").read_text())
                n_in = st.get("documents_in") or st["totals"]["in"]
                rows.append((stage, float(st["seconds"]), n_in, st["totals"]["kept"]))
                print(f"stage {stage}: published by the earlier run ({st['seconds']:.1f}s wall then, "
                      f"{n_in} documents in, {st['totals']['kept']} kept), not rerun", flush=True)
                resumed.append(stage)
                continue
            rerun = True
            t = time.time()
            stats = run_stages(spark, str(out), config, [stage], force=True)[stage]  # measured: never a fingerprint skip
            dt = time.time() - t
            n_in = stats.get("documents_in") or stats["totals"]["in"]
            rows.append((stage, dt, n_in, stats["totals"]["kept"]))
            print(f"stage {stage}: {dt:.1f}s wall, {n_in} documents in, {stats['totals']['kept']} kept, "
                  f"{n_in / dt:.0f} documents/s, {n_in / dt / cores:.0f} documents/s per core", flush=True)
    finally:
        spark.stop()
        sampler.stop_flag.set()
        sampler.join()
        sampler.sample()
    total = sum(r[1] for r in rows)
    pk = sampler.peak
    print("--- bench_scale results (SYNTHETIC input: replicated + perturbed NTREX-128) ---")
    print(f"documents: {a.docs}  text: {nbytes / 1e9:.2f} GB  master: {a.master}  cores: {cores}")
    if "quality" in chain:
        print(models_note)
    for stage, dt, n_in, kept in rows:
        print(f"{stage:8s} wall_s={dt:9.1f}  docs_in={n_in:9d}  kept={kept:9d}  docs_per_s={n_in / dt:9.0f}  "
              f"docs_per_s_per_core={n_in / dt / cores:9.0f}")
    print(f"total    wall_s={total:9.1f}  docs_per_s={a.docs / total:9.0f}  docs_per_s_per_core={a.docs / total / cores:9.0f}")
    if resumed:
        print(f"resumed: {', '.join(resumed)} ran in an earlier process (wall times from their stats); the "
              f"peak memory below covers only the stages run by this process")
    print(f"peak_rss_driver_python_gib={pk['driver_python'] / GIB:.2f}")
    print(f"peak_rss_driver_jvm_gib={pk['driver_jvm'] / GIB:.2f}  (local mode: the JVM also hosts the executor)")
    print(f"peak_rss_python_workers_gib={pk['workers'] / GIB:.2f}")
    print(f"peak_rss_total_gib={pk['total'] / GIB:.2f}  budget_gib={a.budget_gib:.0f}  "
          f"{'FITS' if pk['total'] < a.budget_gib * GIB else 'EXCEEDS BUDGET'}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if pk["total"] < a.budget_gib * GIB else 1


if __name__ == "__main__":
    sys.exit(main())
