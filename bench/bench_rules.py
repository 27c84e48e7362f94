"""Benchmark of the `rules` stage's filters (filters.rules.apply_rules), one core.

Prints, as plain lines:
  * documents/s per core of apply_rules over an enlarged input (the 2,214 real NTREX documents
    replicated and perturbed to --docs documents: SYNTHETIC, said so in the output);
  * word segmentation time per language (filters.words.words alone), ms per document;
  * kept % per language on the real NTREX documents, and documents/s per core on them (best
    of 3 passes: the figure compared with datatrove's);
  * the same NTREX documents through datatrove's GopherQualityFilter + GopherRepetitionFilter +
    FineWebQualityFilter in a separate virtualenv (build/bench-venv, created here if missing;
    never the project's .venv), in two settings: English defaults for every language, and
    ``language=<ISO 639-1>`` per document (datatrove's own per-language word tokenizers);
    documents/s per core, kept % per language, and the speed ratio of each. Skipped with a
    message when the venv cannot be built (no network to the package index);
  * the Spark ``rules`` stage against ``apply_rules`` alone (issue 19: stage >= 80% of
    ``apply_rules`` per core), :func:`bench_stage`: interleaved rounds (median), the staged
    stage (``--no-fuse``: ``rules`` on a published ``langid`` output) and the fused
    ``langid`` + ``rules`` pass, each next to its raw primitives in one process on the same
    documents, per core by wall time and by CPU seconds, with the Spark jobs each run starts.

Usage: python bench/bench_rules.py [--docs 20000] [--no-datatrove] [--stage-docs 20000] [--rounds 5] [--no-stage]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import data_root, enlarge, ntrex_documents, record_ratio, stage_input_rows, tree_cpu_seconds  # noqa: E402
from filters.rules import apply_rules, load_filter_config  # noqa: E402
from filters.words import segmenter_name, words  # noqa: E402

DT_VENV = REPO / "build" / "bench-venv"
# datatrove's filters import `regex`; spaCy is its English word tokenizer (spacy.blank("en"))
# and its per-language tokenizers (datatrove/assets/tokenizer_assignment.csv): jieba (zh),
# SudachiPy + its core dictionary (ja, through spaCy), Kiwi (ko; 0.21: datatrove asks for its
# "sbg" model, which kiwipiepy_model dropped in 0.22), PyThaiNLP (th), pyvi (vi)
DT_PINS = ["datatrove==0.10.1", "spacy==3.8.18", "regex==2026.11.19", "jieba==0.42.1", "SudachiPy==0.7.0",
           "sudachidict-core==20261015", "kiwipiepy==0.21.0", "kiwipiepy_model==0.21.0", "pythainlp==5.4.0",
           "pyvi==0.1.1"]
DT_CHECK = ("import spacy, datatrove.pipeline.filters, jieba, sudachipy, pythainlp, pyvi; "
            "from kiwipiepy import Kiwi; Kiwi(model_type='sbg')")

# Runs inside the datatrove venv: reads [[lang, text], ...] from argv[1], prints JSON. Two
# settings: "english" = every filter with its defaults (language="en": spaCy's English word
# tokenizer for every language, as datatrove does when nothing is said), "per_language" = every
# filter built with language=<the document's ISO 639-1 code>, which selects datatrove's own word
# tokenizer for it (datatrove/assets/tokenizer_assignment.csv: spaCy per language, jieba for zh,
# SudachiPy for ja, Kiwi for ko, PyThaiNLP for th, pyvi for vi). A language whose tokenizer
# cannot load falls back to English and is listed. Thresholds and Gopher's English stop words stay
# datatrove's defaults in both (datatrove ships no per-language values for them).
DT_SCRIPT = r'''
import json, sys, time, collections
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, FineWebQualityFilter
docs = json.load(open(sys.argv[1], encoding="utf-8"))
def make(lang):
    return [GopherRepetitionFilter(language=lang), GopherQualityFilter(language=lang),
            FineWebQualityFilter(language=lang)]
def keep(filters, d):
    for f in filters:
        r = f.filter(d)
        ok = r[0] if isinstance(r, tuple) else r
        if not ok:
            return False
    return True
langs = sorted({l for l, _ in docs})
english = make("en")
per, fallback = {}, {}
for lang in langs:  # load every tokenizer once, outside the timing (as a worker would)
    fs = make(lang)
    try:
        keep(fs, Document(text=next(t for l, t in docs if l == lang), id="w"))
        per[lang] = fs
    except Exception as e:
        fallback[lang] = f"{type(e).__name__}: {e}"[:200]
        per[lang] = english
for d in docs[:20]:
    keep(english, Document(text=d[1], id="w"))
res = {}
for setting in ("english", "per_language"):
    kept = collections.Counter(); tot = collections.Counter()
    cpu = float("inf")
    for rep in range(3):  # best of 3: robust to other work on the machine
        t0 = time.process_time()
        for i, (lang, text) in enumerate(docs):
            ok = keep(english if setting == "english" else per[lang], Document(text=text, id=str(i)))
            if rep == 0:
                tot[lang] += 1
                kept[lang] += ok
        cpu = min(cpu, time.process_time() - t0)
    res[setting] = {"cpu_s": cpu, "kept": kept, "total": tot}
from importlib.metadata import version
print(json.dumps({"version": version("datatrove"), "docs": len(docs), "settings": res, "fallback": fallback}))
'''


def ensure_dt_venv() -> Path | None:
    """Create build/bench-venv with datatrove and what its filters import, if missing."""
    py = DT_VENV / "bin" / "python"
    if py.exists():
        ok = subprocess.run([str(py), "-c", DT_CHECK],
                            capture_output=True).returncode == 0
        if ok:
            return py
    log = DT_VENV.parent / "logs" / "bench-venv.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"datatrove: creating {DT_VENV} ({', '.join(DT_PINS)}; pip's output in {log}) ...", flush=True)
    try:
        with open(log, "w") as f:
            if not py.exists():
                subprocess.run([sys.executable, "-m", "venv", str(DT_VENV)], check=True, stdout=f, stderr=f)
            subprocess.run([str(py), "-m", "pip", "install", "-q", *DT_PINS], check=True, timeout=1800,
                           stdout=f, stderr=f)
    except Exception as e:  # no index reachable, build failure...
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        print(f"datatrove: comparison skipped, could not build the venv: {e}\n{tail}")
        return None
    return py


def bench_ours(n_docs: int, seed: int) -> tuple[float, float]:
    cfg = load_filter_config()
    real = ntrex_documents()
    print(f"input: {len(real)} real NTREX-128 documents (123 x 18 languages)")
    big = enlarge([(l, t) for l, _, t in real], n_docs, seed)
    print(f"enlarged input: {len(big)} documents = real NTREX replicated and perturbed "
          f"(SYNTHETIC, seed {seed})")
    # warm up every segmenter and the config once (dictionary loads are per process, not per doc)
    for lang in sorted({l for l, _ in big}):
        apply_rules(next(t for l, t in big if l == lang), lang, cfg.params(lang))

    params = {lang: cfg.params(lang) for lang in {l for l, _ in big}}
    cpu = float("inf")
    for _ in range(3):  # best of 3 passes: robust to other work on the machine
        t0 = time.process_time()
        for lang, text in big:
            apply_rules(text, lang, params[lang])
        cpu = min(cpu, time.process_time() - t0)
    print(f"rules docs_per_sec_per_core: {len(big) / cpu:.0f}  ({len(big)} docs, {cpu:.2f} s CPU, best of 3, "
          f"all rules + line fixes, 18 languages)")

    by_lang = collections.defaultdict(list)
    for lang, text in big:
        by_lang[lang].append(text)
    print("word segmentation per language (filters.words.words alone):")
    seg_total = 0.0
    for lang in sorted(by_lang):
        texts = by_lang[lang]
        t0 = time.process_time()
        for t in texts:
            words(t, lang)
        c = time.process_time() - t0
        seg_total += c
        print(f"  segment {lang} {segmenter_name(lang):20s} {1000 * c / len(texts):7.3f} ms/doc  "
              f"{len(texts) / c:8.0f} docs/s")
    print(f"segmentation share of rules CPU: {100 * seg_total / cpu:.0f}%")

    kept, tot = collections.Counter(), collections.Counter()
    for lang, _, text in real:
        tot[lang] += 1
        kept[lang] += apply_rules(text, lang, cfg.params(lang)).reason is None
    real_cpu = float("inf")
    for _ in range(3):  # best of 3, as the datatrove figure
        t0 = time.process_time()
        for lang, _, text in real:
            apply_rules(text, lang, params[lang])
        real_cpu = min(real_cpu, time.process_time() - t0)
    real_dps = len(real) / real_cpu
    print(f"rules docs_per_sec_per_core on the {len(real)} real NTREX documents (best of 3): {real_dps:.0f}")
    line = " ".join(f"{l}={100 * kept[l] / tot[l]:.1f}" for l in sorted(tot))
    print(f"rules kept % on real NTREX: {line}")
    print(f"rules min kept % over languages: {min(100 * kept[l] / tot[l] for l in tot):.1f} (target >= 98)")
    return real_dps, len(big) / cpu


def bench_datatrove(ours_dps: tuple[float, float]) -> None:
    py = ensure_dt_venv()
    if py is None:
        return
    real = ntrex_documents()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump([[l, t] for l, _, t in real], f, ensure_ascii=False)
        data = f.name
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DT_SCRIPT)
        script = f.name
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        res = subprocess.run([str(py), script, data], capture_output=True, text=True, env=env, timeout=3600)
        if res.returncode != 0:
            print("datatrove: run failed:\n" + res.stderr[-2000:])
            return
        out = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(data)
        os.unlink(script)
    if out["fallback"]:
        print("datatrove per-language tokenizers that could not load (English used): "
              + "; ".join(f"{k}: {v}" for k, v in sorted(out["fallback"].items())))
    ratios = {}
    for setting, what in (("english", "English defaults for all 18 languages (spaCy English word tokenizer)"),
                          ("per_language", "language=<ISO 639-1> per document: datatrove's per-language word "
                                           "tokenizers (spaCy per language, jieba, SudachiPy, Kiwi, PyThaiNLP, pyvi)")):
        r = out["settings"][setting]
        dps = out["docs"] / r["cpu_s"]
        ratios[setting] = ours_dps[0] / dps
        print(f"datatrove {out['version']} Gopher quality + Gopher repetition + FineWeb quality, {what}, "
              f"on the same {out['docs']} real NTREX documents (best of 3):")
        print(f"datatrove[{setting}] docs_per_sec_per_core: {dps:.0f}")
        kept, tot = r["kept"], r["total"]
        print(f"datatrove[{setting}] kept % on real NTREX: " + " ".join(
            f"{l}={100 * kept.get(l, 0) / tot[l]:.1f}" for l in sorted(tot)))
        print(f"speedup rules vs datatrove[{setting}] (docs/s per core, same real NTREX documents, best of 3 "
              f"each): {ratios[setting]:.1f}x (target >= 15x)")
        record_ratio("bench_rules", f"rules vs datatrove ({'English defaults' if setting == 'english' else 'per-language tokenizers'})",
                     f"{ours_dps[0]:,.0f} docs/s per core", f"datatrove {out['version']} {dps:,.0f}",
                     ratios[setting], 15.0, note=f"{out['docs']} real NTREX docs, best of 3")
    print(f"speedup summary: vs datatrove with English defaults {ratios['english']:.1f}x, vs datatrove with its "
          f"per-language tokenizers {ratios['per_language']:.1f}x")


STAGE_COLS = ("id", "source", "tier", "url", "text", "meta", "lang_declared", "source_id", "detail")


def _stage_input(n: int, seed: int) -> list[tuple]:
    """The stage comparison's input: :func:`bench.common.stage_input_rows`."""
    return stage_input_rows(n, seed)


def _timed_run(spark, work: str, copy_from: str, stage_in: str, config: dict, stages: list[str],
               group: str) -> tuple[float, float | None, int, dict]:
    """Run ``stages`` on a fresh copy of ``copy_from/stage_in``: (wall s, CPU s of the process
    tree, Spark jobs started, stats)."""
    from pipeline.cli import run_stages

    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    shutil.copytree(os.path.join(copy_from, stage_in), os.path.join(work, stage_in))
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    c0, t0 = tree_cpu_seconds(), time.perf_counter()
    stats = run_stages(spark, work, config, stages)
    wall, c1 = time.perf_counter() - t0, tree_cpu_seconds()
    jobs = len(sc.statusTracker().getJobIdsForGroup(group))
    sc.setLocalProperty("spark.jobGroup.id", None)
    return wall, c1 - c0, jobs, stats


def bench_stage(n_docs: int, rounds: int, seed: int, master: str = "local[2]") -> dict:
    """The Spark ``rules`` stage vs ``apply_rules`` alone, and the fused ``langid`` + ``rules``
    pass vs ``LangID.predict`` + ``apply_rules`` alone, on the same SYNTHETIC documents.

    Each round (order alternating) times: ``apply_rules`` over the rules stage's input in this
    process (one core); the staged ``rules`` stage in ``master`` on the published ``langid``
    output; ``LangID.predict`` over every document + ``apply_rules`` over the ones langid keeps
    (the fused pass's primitives) in this process; the fused pass. Per core = documents /
    (wall seconds x cores) for Spark, documents / wall seconds for the one-process primitive;
    "per CPU s" = documents / CPU seconds of the whole process tree (JVM and Python workers
    included), which the load of other work on the machine does not change. Prints every
    round, the medians, the ratios and the target (stage >= 80% of ``apply_rules``).

    Returns:
        ``{"staged": ratio, "fused": ratio, "staged_cpu": ratio, "fused_cpu": ratio,
        "jobs": {mode: Spark jobs}}`` (median ratios of per-core throughput, stage / raw).
    """
    import pyarrow.parquet as pq
    from pyspark.sql.types import StringType, StructField, StructType

    from filters.langid import LangID, default_model_path
    from pipeline.config import load_config
    from pipeline.session import build_spark
    from pipeline.stage import write_success

    os.environ.setdefault("POLY_PROGRESS_SECONDS", "0")
    cores = int(master[6:-1]) if master.startswith("local[") and master[6:-1].isdigit() else os.cpu_count()
    spark = build_spark("bench-rules-stage", master=master)
    work = tempfile.mkdtemp(prefix="bench-rules-stage-")
    try:
        rows = _stage_input(n_docs, seed)
        base = os.path.join(work, "base")
        schema = StructType([StructField(c, StringType()) for c in STAGE_COLS])
        spark.createDataFrame(rows, schema).repartition(8).write.parquet(base + "/ingest")
        import inspect

        extra = {"schema": schema} if "schema" in inspect.signature(write_success).parameters else {}  # older runners
        write_success(spark, base + "/ingest", "bench-ingest",
                      [f for f in os.listdir(base + "/ingest") if f.endswith(".parquet")], rows=n_docs, **extra)
        config = load_config(None, str(data_root()))
        config["stages"] = ["ingest", "langid", "rules"]
        staged, fused = dict(config, fuse=False), dict(config, fuse=True)
        from pipeline.cli import run_stages

        run_stages(spark, base, staged, ["langid"])  # the rules stage's published input
        rules_in = pq.read_table(base + "/langid", columns=["text", "lang", "tier"]).to_pylist()
        n_rules = len(rules_in)
        cfg = load_filter_config()
        params = {(r["lang"], r["tier"]): cfg.params(r["lang"], r["tier"]) for r in rules_in}
        lcfg = config.get("langid") or {}
        lid = LangID(lcfg.get("model") or default_model_path(), int(lcfg.get("max_chars", 20000)))
        all_texts = [r[4] for r in rows]
        kept_ids = set(pq.read_table(base + "/langid", columns=["id"]).column("id").to_pylist())
        print(f"rules stage vs apply_rules: {n_docs:,} SYNTHETIC documents (NTREX-128 replicated and perturbed, "
              f"every 5th a 2-line web page), {n_rules:,} after langid; {master}, {rounds} interleaved rounds + "
              f"1 warm-up; Spark per core = docs / (wall s x {cores}), raw = one process")

        def raw_rules() -> tuple[float, float]:
            c0, t0 = time.process_time(), time.perf_counter()
            for r in rules_in:
                apply_rules(r["text"], r["lang"], params[(r["lang"], r["tier"])])
            return time.perf_counter() - t0, time.process_time() - c0

        def raw_fused() -> tuple[float, float]:
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(0, len(all_texts), 2000):  # the batch size of the Spark pass
                lid.predict(all_texts[i:i + 2000])
            for r in rules_in:  # the documents langid kept
                apply_rules(r["text"], r["lang"], params[(r["lang"], r["tier"])])
            return time.perf_counter() - t0, time.process_time() - c0

        def stage_staged(tag):
            return _timed_run(spark, os.path.join(work, "staged"), base, "langid", staged, ["rules"], tag)

        def stage_fused(tag):
            return _timed_run(spark, os.path.join(work, "fused"), base, "ingest", fused, ["langid", "rules"], tag)

        raw_rules(), raw_fused(), stage_staged("warm-s"), stage_fused("warm-f")  # workers, models, JIT
        res: dict[str, list] = collections.defaultdict(list)
        kinds = [("raw_rules", raw_rules), ("staged", stage_staged), ("raw_fused", raw_fused), ("fused", stage_fused)]
        jobs: dict[str, int] = {}
        check: dict[str, dict] = {}
        for r in range(rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            line = []
            for name, fn in order:
                if name.startswith("raw"):
                    wall, cpu = fn()
                    n = n_rules if name == "raw_rules" else n_docs
                    res[name].append((n / wall, n / cpu))
                else:
                    wall, cpu, nj, stats = fn(f"{name}-{r}")
                    n = n_rules if name == "staged" else n_docs
                    res[name].append((n / wall / cores, n / cpu if cpu else float("nan")))
                    jobs[name] = nj
                    check[name] = stats["rules"]["totals"]
                line.append(f"{name} {res[name][-1][0]:,.0f}")
            print(f"  round {r + 1}: docs/s per core " + ", ".join(line) + f"; staged/raw "
                  f"{res['staged'][-1][0] / res['raw_rules'][-1][0]:.2f}, fused/raw "
                  f"{res['fused'][-1][0] / res['raw_fused'][-1][0]:.2f}", flush=True)
        med = {k: (statistics.median(x for x, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
        ratio = {m: statistics.median(s[0] / r[0] for s, r in zip(res[m], res[raw]))
                 for m, raw in (("staged", "raw_rules"), ("fused", "raw_fused"))}
        ratio_cpu = {m: statistics.median(s[1] / r[1] for s, r in zip(res[m], res[raw]))
                     for m, raw in (("staged", "raw_rules"), ("fused", "raw_fused"))}
        print(f"apply_rules alone (1 process): {med['raw_rules'][0]:,.0f} docs/s per core "
              f"({med['raw_rules'][1]:,.0f} per CPU s)")
        print(f"rules stage, staged (--no-fuse), {master}: {med['staged'][0]:,.0f} docs/s per core "
              f"({med['staged'][1]:,.0f} per CPU s of JVM + Python workers + driver); {jobs['staged']} Spark jobs")
        print(f"LangID.predict + apply_rules alone (1 process): {med['raw_fused'][0]:,.0f} docs/s per core "
              f"({med['raw_fused'][1]:,.0f} per CPU s)")
        print(f"langid + rules fused pass, {master}: {med['fused'][0]:,.0f} docs/s per core "
              f"({med['fused'][1]:,.0f} per CPU s); {jobs['fused']} Spark jobs (both stages)")
        print(f"rules stage / apply_rules per core (median of {rounds} rounds' ratios): staged {ratio['staged']:.0%} "
              f"(by CPU s {ratio_cpu['staged']:.0%}), fused pass / its primitives {ratio['fused']:.0%} "
              f"(by CPU s {ratio_cpu['fused']:.0%}); target >= 80%")
        print(f"same rules totals staged and fused: {check['staged'] == check['fused']}")
        record_ratio("bench_rules", f"rules stage per core ({master}, staged) vs apply_rules alone",
                     f"{med['staged'][0]:,.0f} docs/s per core", f"apply_rules {med['raw_rules'][0]:,.0f}",
                     ratio["staged"], 0.80, unit="%",
                     note=f"{n_docs} synthetic docs, median of {rounds} rounds' ratios; per CPU-second "
                          f"{ratio_cpu['staged']:.0%}; fused pass vs its primitives {ratio['fused']:.0%}")
        return {"staged": ratio["staged"], "fused": ratio["fused"], "staged_cpu": ratio_cpu["staged"],
                "fused_cpu": ratio_cpu["fused"], "jobs": jobs}
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000, help="documents in the enlarged input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-datatrove", action="store_true", help="skip the datatrove comparison")
    ap.add_argument("--stage-docs", type=int, default=20000, help="documents of the Spark stage comparison")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the Spark stage comparison")
    ap.add_argument("--master", default="local[2]", help="Spark master of the stage comparison")
    ap.add_argument("--no-stage", action="store_true", help="skip the Spark stage comparison")
    ap.add_argument("--only-stage", action="store_true", help="only the Spark stage comparison")
    args = ap.parse_args(argv)
    if not args.only_stage:
        ours = bench_ours(args.docs, args.seed)
        if not args.no_datatrove:
            bench_datatrove(ours)
    if not args.no_stage:
        bench_stage(args.stage_docs, args.rounds, args.seed, args.master)
    return 0


if __name__ == "__main__":
    sys.exit(main())
