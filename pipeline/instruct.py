"""Multilingual self-instruct (PolyLM sec. 3, MultiAlpaca) as a Spark job: seed selection and
translation, generation rounds through :mod:`pipeline.generator`, format checks
(:mod:`filters.selfinstruct`) and the Rouge-L diversity filter + pool update on Spark.

Diversity filter (:func:`diversity_filter`), with the sequential meaning of Self-Instruct kept
exactly: candidate ``c_i`` (in generation order) is kept iff its Rouge-L F against every
instruction of the pool *as it stands* -- the pool before the round plus the candidates kept
before ``c_i`` -- is below the threshold (0.7). The pool as it stands is split in two:

1. against the pool before the round (parallel: a language's candidates are cut into
   ``shards`` blocks, each cogrouped with the language's pool): a candidate with F >= the
   threshold against it is dropped (``similar_to_pool``) -- the pool only grows, so the plain
   filter drops it too, whatever was kept before it in the round;
2. in the round (one task per language): the other candidates in generation order, each
   compared with the candidates kept before it and then indexed if kept (``similar_in_round``).

Both steps are :func:`filters.rouge.indexed_filter`: an inverted index over rarest-first
prefix-filter keys, the length filter and the token-multiset overlap bound prune the pairs
exactly (no pair with F >= ``report_floor`` is skipped) before the bit-parallel LCS.

``rouge_max`` of a kept task is its max F against the pool as it stood (pool + earlier kept
candidates) when that is >= ``report_floor`` (0.5), else null (below the floor: not computed).
For a dropped task it is >= the threshold.

Outputs under ``<out>/``: ``instruct/lang=xx/part-*.parquet`` (``instruction, input, output,
lang, seed_ids, round, rouge_max``), ``instruct/stats.json`` (per language: generated, dropped
by reason, kept; seeds dropped by reason) and the work directory ``instruct_work/`` (raw
responses, seeds, per-round decisions) that makes the run resumable.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

from filters.rouge import DEFAULT_THRESHOLD

__all__ = ["DEFAULTS", "validate_config", "diversity_filter", "run_instruct",
           "CANDIDATE_REASONS"]

#: Config keys and defaults (``instruct:`` section). Unknown keys are rejected.
DEFAULTS = {
    "seeds": "self-instruct/seed_tasks.jsonl",   # relative to the data root
    # PolyLM sec. 3: MultiAlpaca's 11 languages
    "languages": ["ar", "de", "es", "fr", "id", "ja", "ko", "pt", "ru", "th", "vi"],
    "target_per_language": 100,
    "requests_per_round": 2,        # per language
    "max_rounds": 20,
    "threshold": DEFAULT_THRESHOLD,  # Self-Instruct sec. 2.2 / PolyLM sec. 3
    "report_floor": 0.5,            # rouge_max exact at or above this (module docstring)
    "seed": 0,
    "translate_seeds": True,        # PolyLM: seeds are translated into each language first
    "max_requests": 1000,
    "requests_per_minute": 0,
    "max_retries": 5,
    "backoff_s": 1.0,
    "generator": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "default",
                  "max_tokens": 3072, "temperature": 1.0, "top_p": 1.0},
}

#: Drop reasons of a generated candidate (format checks + diversity filter).
CANDIDATE_REASONS = ("cut_by_length_limit", "missing_part", "unparsable", "empty", "too_short",
                     "too_long", "wrong_language", "similar_to_pool", "similar_in_round")


def validate_config(cfg: dict | None) -> dict:
    """Merge ``cfg`` over :data:`DEFAULTS`, strictly.

    Raises:
        ValueError: unknown key, a bad type, an unknown language, or a threshold outside (0, 1].
    """
    from filters.selfinstruct import LANG_NAMES

    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown instruct config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    out["generator"] = dict(cfg.get("generator") or DEFAULTS["generator"])
    if isinstance(out["languages"], str):
        out["languages"] = [out["languages"]]
    if not isinstance(out["languages"], list) or not out["languages"]:
        raise ValueError("instruct.languages must be a non-empty list of ISO 639-1 codes")
    bad = [x for x in out["languages"] if x not in LANG_NAMES]
    if bad:
        raise ValueError(f"instruct.languages: unsupported {bad}; use ISO 639-1 codes of {sorted(LANG_NAMES)}")
    for k in ("target_per_language", "requests_per_round", "max_rounds", "max_requests", "max_retries", "seed"):
        if not isinstance(out[k], int) or isinstance(out[k], bool) or out[k] < 0:
            raise ValueError(f"instruct.{k} must be a non-negative integer, got {out[k]!r}")
    for k in ("threshold", "report_floor"):
        if not isinstance(out[k], (int, float)) or not 0 < out[k] <= 1:
            raise ValueError(f"instruct.{k} must be in (0, 1], got {out[k]!r}")
    if out["report_floor"] > out["threshold"]:
        raise ValueError("instruct.report_floor must be <= instruct.threshold")
    return out


# ------------------------------------------------------------------------------ Spark filter
_TOK_SCHEMA = "lang string, id long, ord long, toks array<string>"
_P1_SCHEMA = "lang string, id long, ord long, toks array<string>, pool_max double, keep1 boolean"
_OUT_SCHEMA = "lang string, id long, keep boolean, reason string, rouge_max double"


def _tokenize_batch(batch):
    """Arrow batch ``(lang, id, ord, text)`` -> ``(lang, id, ord, toks)`` (:func:`rouge_tokens`)."""
    import pyarrow as pa

    from filters.rouge import rouge_tokens

    toks = [rouge_tokens(t or "", lg) for t, lg in zip(batch.column("text").to_pylist(),
                                                        batch.column("lang").to_pylist())]
    return pa.RecordBatch.from_arrays(
        [batch.column("lang"), batch.column("id"), batch.column("ord"), pa.array(toks, pa.list_(pa.string()))],
        names=["lang", "id", "ord", "toks"])


def _against_pool(cand, pool, threshold: float, floor: float):
    """Step 1 (cogroup): one shard of a language's candidates against that language's pool
    before the round (:func:`filters.rouge.indexed_filter` with ``grow=False``)."""
    import pandas as pd

    from filters.rouge import indexed_filter

    if cand.empty:
        return pd.DataFrame({c: [] for c in ("lang", "id", "ord", "toks", "pool_max", "keep1")})
    ptoks = pool["toks"] if "toks" in pool else []
    keep, pm, _ = indexed_filter([list(t) for t in ptoks], [list(t) for t in cand["toks"]],
                                 threshold, floor, grow=False)
    return cand.assign(pool_max=pm, keep1=keep)[["lang", "id", "ord", "toks", "pool_max", "keep1"]]


def _in_round(df, threshold: float, floor: float):
    """Step 2 (group by language): the candidates that passed step 1, in generation order, each
    against the candidates kept before it (:func:`filters.rouge.indexed_filter` with an empty
    pool and ``grow=True``); the decision, the reason and ``rouge_max``."""
    import pandas as pd

    from filters.rouge import indexed_filter

    df = df.sort_values("ord", kind="stable")
    surv = df[df["keep1"]]
    _, _, nm = indexed_filter([], [list(t) for t in surv["toks"]], threshold, floor, grow=True)
    new_max = dict(zip(surv["id"].tolist(), nm))
    rows = []
    for id_, pm, k1 in zip(df["id"].tolist(), df["pool_max"].tolist(), df["keep1"].tolist()):
        if not k1:
            rows.append((id_, False, "similar_to_pool", pm))
            continue
        mx = max(pm, new_max[id_])
        if new_max[id_] >= threshold:
            rows.append((id_, False, "similar_in_round", mx))
        else:
            rows.append((id_, True, None, mx if mx >= floor - 1e-12 and mx > 0 else None))
    out = pd.DataFrame(rows, columns=["id", "keep", "reason", "rouge_max"])
    out.insert(0, "lang", df["lang"].iloc[0] if len(df) else None)
    return out


def diversity_filter(spark, pool, candidates, threshold: float = DEFAULT_THRESHOLD,
                     report_floor: float = 0.5, shards: int | None = None):
    """Exact sequential Rouge-L diversity filter on Spark (module docstring).

    Args:
        spark: SparkSession.
        pool: DataFrame ``(lang string, id long, text string)``: instructions in the pools.
        candidates: DataFrame ``(lang string, id long, ord long, text string)``; ``ord`` is
            the generation order within the language (unique per language).
        threshold: Rouge-L F at which a candidate is a near duplicate.
        report_floor: pairs are scored exactly down to this F (``rouge_max`` exact above it).
        shards: step-1 tasks per language (default: ``spark.default.parallelism``).

    Returns:
        pandas DataFrame ``(lang, id, keep bool, reason str|None, rouge_max float|None)``, one
        row per candidate, ``reason`` in (``similar_to_pool``, ``similar_in_round``);
        ``rouge_max`` None when below ``report_floor``.

    Spark work, one job: tokenize (``mapInArrow``); step 1 cogroups each ``(lang, shard)``
    block of candidates with the language's pool (the pool is replicated to the ``shards``
    blocks: the tasks of one language run in parallel); step 2 groups by language (one task
    per language) for the in-round pairs; only the decisions reach the driver.
    """
    from pyspark.sql import functions as F

    from pipeline.stage import map_arrow

    floor = float(report_floor)
    shards = max(1, int(shards or spark.sparkContext.defaultParallelism))
    ptok = map_arrow(pool.select("lang", F.col("id").cast("long"), F.lit(-1).cast("long").alias("ord"), "text"),
                     _tokenize_batch, _TOK_SCHEMA)
    ctok = map_arrow(candidates.select("lang", F.col("id").cast("long"), F.col("ord").cast("long"), "text"),
                     _tokenize_batch, _TOK_SCHEMA)
    cs = ctok.withColumn("shard", F.pmod(F.xxhash64("id"), F.lit(shards)))
    ps = ptok.crossJoin(F.broadcast(spark.range(shards).withColumnRenamed("id", "shard")))
    t = float(threshold)

    def step1_fn(cand, pool):
        return _against_pool(cand, pool, t, floor)

    def step2_fn(df):
        return _in_round(df, t, floor)

    step1 = cs.groupBy("lang", "shard").cogroup(ps.groupBy("lang", "shard")).applyInPandas(step1_fn, _P1_SCHEMA)
    out = step1.groupBy("lang").applyInPandas(step2_fn, _OUT_SCHEMA).toPandas()
    out["rouge_max"] = out["rouge_max"].astype(object).where(out["rouge_max"].notna(), None)
    return out


# ------------------------------------------------------------------------------------ driver
def _lid(texts: list[str]) -> list[str]:
    from filters.langid import LangID

    return LangID().predict(texts)[0] if texts else []


def _check_all(tasks, lang: str, counts: Counter) -> list:
    """Format checks incl. batched LID; returns the tasks that pass, counts the drops."""
    from filters.selfinstruct import check_task

    det = _lid([f"{t.instruction} {t.input} {t.output}" for t in tasks])
    ok = []
    for t, d in zip(tasks, det):
        r = check_task(t, lang, d)
        if r:
            counts[r] += 1
        else:
            ok.append(t)
    return ok


def _translate_seeds(gen, seeds: list[dict], lang: str, stats: dict) -> list[dict]:
    """Seeds in ``lang`` (translated with the generator; English as is). A seed whose
    translation fails to parse or check is dropped for ``lang`` with its reason."""
    from filters.selfinstruct import parse_response, translation_prompt

    if lang == "en":
        return [dict(s, seed_ids=[s["id"]]) for s in seeds]
    out = []
    drops = stats.setdefault("seed_translation_dropped", Counter())
    for s in seeds:
        c = gen.complete(f"lang={lang}/translate/{s['id']}", translation_prompt(lang, s))
        tasks, bad = parse_response(c.text, None)
        if not tasks:
            drops[bad[0][0] if bad else "unparsable"] += 1
            continue
        t = tasks[0]
        cnt: Counter = Counter()
        if not _check_all([t], lang, cnt):
            drops[next(iter(cnt))] += 1
            continue
        out.append({"id": s["id"], "instruction": t.instruction, "input": t.input, "output": t.output,
                    "seed_ids": [s["id"]]})
    return out


def _load_rounds(work: Path) -> tuple[dict, dict, int]:
    """Kept tasks per language and stats of the finished rounds (``round=R/_DONE``)."""
    import pandas as pd

    kept: dict[str, list[dict]] = defaultdict(list)
    stats: dict[str, Counter] = defaultdict(Counter)
    done = 0
    rdir = work / "rounds"
    for d in sorted(rdir.glob("round=*")) if rdir.is_dir() else []:
        if not (d / "_DONE").is_file():
            shutil.rmtree(d)  # a round cut by a kill: redone from the cached raw responses
            continue
        r = int(d.name.split("=")[1])
        st = json.loads((d / "_DONE").read_text())
        for lang, c in st.items():
            stats[lang].update(c)
        if (d / "kept.parquet").is_file():
            for rec in pd.read_parquet(d / "kept.parquet").to_dict("records"):
                rec["seed_ids"] = list(rec["seed_ids"])
                kept[rec["lang"]].append(rec)
        done = max(done, r + 1)
    return kept, stats, done


def run_instruct(spark, out: str, cfg: dict, data_root: str, backend=None, log=print) -> dict:
    """Run (or resume) the self-instruct rounds and write ``<out>/instruct`` (module docstring).

    Args:
        spark: SparkSession (the diversity filter runs on it).
        out: output root (local path).
        cfg: validated config (:func:`validate_config`).
        data_root: root of the raw data (``cfg["seeds"]`` is relative to it).
        backend: generator backend (default: built from ``cfg["generator"]``).
        log: progress printer.

    Returns:
        the stats dict also written to ``<out>/instruct/stats.json``.

    Raises:
        FileNotFoundError: the seed file is missing.
        pipeline.generator.GenerationError: a request failed for good (rerun to resume).
    """
    import pandas as pd

    from filters.selfinstruct import (NUM_NEW_TASKS, build_prompt, load_seeds, parse_response,
                                      sample_examples, select_seeds)
    from pipeline.generator import BudgetExhausted, Generator, make_backend

    t0 = time.time()
    outp = Path(out)
    work = outp / "instruct_work"
    work.mkdir(parents=True, exist_ok=True)
    seed_path = Path(data_root) / cfg["seeds"]
    if not seed_path.is_file():
        raise FileNotFoundError(f"seed tasks not found: {seed_path} (set instruct.seeds or --data-root)")
    seeds, bad = load_seeds(seed_path.read_text(encoding="utf-8").splitlines())
    kept_seeds, dropped_seeds = select_seeds(seeds)
    (work / "seeds.json").write_text(json.dumps({"kept": [s["id"] for s in kept_seeds],
                                                 "dropped": dropped_seeds, "bad_lines": bad},
                                                indent=1, ensure_ascii=False))
    log(f"[instruct] seeds: {len(seeds)} read, {len(dropped_seeds)} dropped "
        f"({dict(Counter(d['reason'] for d in dropped_seeds))}), {len(kept_seeds)} kept; "
        f"PolyLM dropped 13 and adapted 23")
    backend = backend or make_backend(cfg["generator"])
    gen = Generator(backend, work / "raw", max_requests=cfg["max_requests"],
                    requests_per_minute=cfg["requests_per_minute"] or None,
                    max_retries=cfg["max_retries"], backoff_s=cfg["backoff_s"], seed=cfg["seed"])
    langs = cfg["languages"]
    seed_stats: dict = {}
    lang_seeds = {}
    status = "complete"
    try:
        for lang in langs:
            st: dict = {}
            lang_seeds[lang] = (_translate_seeds(gen, kept_seeds, lang, st) if cfg["translate_seeds"]
                                else [dict(s, seed_ids=[s["id"]]) for s in kept_seeds])
            seed_stats[lang] = {"seeds": len(lang_seeds[lang]),
                                "seed_translation_dropped": dict(st.get("seed_translation_dropped", {}))}
        kept, stats, start_round = _load_rounds(work)
        if start_round:
            log(f"[instruct] resuming after {start_round} finished round(s)")
        for r in range(start_round, cfg["max_rounds"]):
            todo = [lg for lg in langs if len(kept[lg]) < cfg["target_per_language"] and lang_seeds[lg]]
            if not todo:
                break
            cand_rows, rstats = [], {lg: Counter() for lg in todo}
            for lg in todo:
                n_ord = 0
                for k in range(cfg["requests_per_round"]):
                    rng = random.Random(f"{cfg['seed']}:{lg}:{r}:{k}")
                    ex = sample_examples(rng, lang_seeds[lg], kept[lg])
                    c = gen.complete(f"lang={lg}/round={r:04d}/req-{k:04d}",
                                     build_prompt(lg, ex, NUM_NEW_TASKS))
                    tasks, drops = parse_response(c.text, c.finish_reason, first_number=len(ex) + 1)
                    rstats[lg]["requests"] += 1
                    rstats[lg]["generated"] += len(tasks) + len(drops)
                    for reason, _ in drops:
                        rstats[lg][reason] += 1
                    sids = sorted({i for e in ex for i in e.get("seed_ids", [])})
                    for t in _check_all(tasks, lg, rstats[lg]):
                        cand_rows.append({"lang": lg, "id": (r * 10_000 + k) * 1_000 + n_ord + 10**12,
                                          "ord": k * 1_000 + n_ord, "instruction": t.instruction,
                                          "input": t.input, "output": t.output, "seed_ids": sids,
                                          "round": r})
                        n_ord += 1
            pool_rows = [{"lang": lg, "id": i, "text": e["instruction"]}
                         for lg in todo for i, e in enumerate(lang_seeds[lg] + kept[lg])]
            new_kept = []
            if cand_rows:
                cdf = pd.DataFrame(cand_rows)
                P = spark.createDataFrame(pd.DataFrame(pool_rows, columns=["lang", "id", "text"]),
                                          "lang string, id long, text string")
                C = spark.createDataFrame(cdf[["lang", "id", "ord", "instruction"]].rename(
                    columns={"instruction": "text"}), "lang string, id long, ord long, text string")
                dec = diversity_filter(spark, P, C, cfg["threshold"], cfg["report_floor"])
                m = cdf.merge(dec, on=["lang", "id"], how="left", validate="one_to_one")
                assert m["keep"].notna().all(), "a candidate lost its decision"
                for rec in m.to_dict("records"):
                    if rec["keep"]:
                        new = {k_: rec[k_] for k_ in ("instruction", "input", "output", "lang", "seed_ids", "round", "rouge_max")}
                        new_kept.append(new)
                        rstats[rec["lang"]]["kept"] += 1
                    else:
                        rstats[rec["lang"]][rec["reason"]] += 1
            rd = work / "rounds" / f"round={r:04d}"
            rd.mkdir(parents=True, exist_ok=True)
            if new_kept:
                pd.DataFrame(new_kept).to_parquet(rd / "kept.parquet", index=False)
            (rd / "_DONE").write_text(json.dumps({lg: dict(c) for lg, c in rstats.items()}))
            for rec in new_kept:
                kept[rec["lang"]].append(rec)
            for lg, c in rstats.items():
                stats[lg].update(c)
            log(f"[instruct] round {r}: " + ", ".join(
                f"{lg} +{rstats[lg]['kept']} ({len(kept[lg])})" for lg in todo))
    except BudgetExhausted as e:
        status = f"budget_exhausted: {e}"
        log(f"[instruct] {e}")
        kept, stats, _ = _load_rounds(work)
    return _write_output(spark, outp, cfg, kept, stats, seed_stats, dropped_seeds, bad, gen, status, t0, log)


def _write_output(spark, outp: Path, cfg, kept, stats, seed_stats, dropped_seeds, bad, gen, status, t0, log) -> dict:
    import pandas as pd

    final = outp / "instruct"
    tmp = outp / "instruct.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rows = [r for lg in kept for r in kept[lg]]
    schema = ("instruction string, input string, output string, lang string, seed_ids array<string>, "
              "round int, rouge_max double")
    cols = ["instruction", "input", "output", "lang", "seed_ids", "round", "rouge_max"]
    pdf = pd.DataFrame(rows, columns=cols)
    pdf["rouge_max"] = pdf["rouge_max"].astype(object).where(pdf["rouge_max"].notna(), None)  # NaN -> null
    df = spark.createDataFrame(pdf if rows else [], schema)
    df.repartition("lang").write.partitionBy("lang").parquet(str(tmp))
    per_lang = {}
    for lg in cfg["languages"]:
        c = stats.get(lg, Counter())
        dropped = {k: int(c.get(k, 0)) for k in CANDIDATE_REASONS if c.get(k, 0)}
        gen_n = int(c.get("generated", 0))
        kept_n = int(c.get("kept", 0))
        if kept_n + sum(dropped.values()) != gen_n:
            raise RuntimeError(f"{lg}: candidates not accounted: generated {gen_n} != kept {kept_n} "
                               f"+ dropped {sum(dropped.values())}")
        per_lang[lg] = {"generated": gen_n, "kept": kept_n, "dropped": dropped,
                        "requests": int(c.get("requests", 0)), **seed_stats.get(lg, {})}
    stats_out = {"status": status, "languages": per_lang,
                 "seeds": {"dropped": len(dropped_seeds),
                           "dropped_by_reason": dict(Counter(d["reason"] for d in dropped_seeds)),
                           "bad_lines": len(bad), "records": dropped_seeds},
                 "generator": dict(gen.stats), "threshold": cfg["threshold"],
                 "report_floor": cfg["report_floor"], "seconds": round(time.time() - t0, 1)}
    (tmp / "stats.json").write_text(json.dumps(stats_out, indent=1, ensure_ascii=False))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    log(f"[instruct] wrote {len(rows)} tasks in {sum(1 for v in per_lang.values() if v['kept'])} "
        f"languages to {final}")
    return stats_out
