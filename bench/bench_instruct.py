"""Benchmark of the self-instruct diversity filter: the Spark job's pruned, exact filter
(``pipeline.instruct.diversity_filter``) against the plain sequential Rouge-L filter.

Input (SYNTHETIC, said so in the output): ``--n`` generated-like instructions per language,
built by replicating the Self-Instruct seed instructions (English; the 138 kept seeds) and
NTREX-128 sentences (other languages, ``--langs``) and perturbing each copy: 30% with 0-2
word edits (near duplicates), 70% with about half of the words replaced by words of the other
bases (new-looking instructions), in a random order (:func:`generated_like`).
The initial pool is the unperturbed bases.

Figures:

* decisions: the job's keep/drop per instruction equals the plain filter's (English);
* plain filter: :func:`filters.rouge.sequential_filter` with the bit-parallel LCS on all
  ``--n`` (timed; the decisions the job is checked against; it counts the Rouge-L pairs the
  plain filter scores), and with the ``rouge_score``-style ``n x m`` DP-table LCS timed on the
  first ``--plain-n`` instructions, its time on all ``--n`` = that time x (pairs on all / pairs
  on the first ``--plain-n``) (the same pairs at the measured cost per pair);
* job: ``diversity_filter`` on a ``local[1]`` Spark session.

Times are CPU seconds (process + Spark JVM + Python workers, :func:`cpu_seconds`), i.e. core
time, so the comparison per core holds on a shared machine; wall time is printed too.

Usage: ``python bench/bench_instruct.py [--n 20000] [--langs en] [--plain-n 2000]``.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import NTREX_FILES, data_root  # noqa: E402


def _lcs_dp(a, b):
    """rouge_score's ``_lcs_table`` LCS (the plain filter's)."""
    rows, cols = len(a), len(b)
    t = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        ai, ti, tp = a[i - 1], t[i], t[i - 1]
        for j in range(1, cols + 1):
            ti[j] = tp[j - 1] + 1 if ai == b[j - 1] else (tp[j] if tp[j] > ti[j - 1] else ti[j - 1])
    return t[-1][-1]


def bases(lang: str, root: Path, k: int = 138) -> list[str]:
    """Base instructions: kept English seeds, or the first ``k`` NTREX sentences of 5-40 words."""
    from filters.selfinstruct import load_seeds, select_seeds
    from filters.words import words

    if lang == "en":
        s, _ = load_seeds((root / "self-instruct" / "seed_tasks.jsonl").read_text().splitlines())
        return [x["instruction"] for x in select_seeds(s)[0]]
    code = {v: c for c, v in NTREX_FILES.items()}[lang]
    out = []
    for line in (root / "ntrex-128" / f"newstest2019-ref.{code}.txt").read_text(encoding="utf-8").splitlines():
        if 5 <= len(words(line, lang)) <= 40:
            out.append(line)
        if len(out) == k:
            break
    return out


def generated_like(base: list[str], lang: str, n: int, seed: int = 0, near_share: float = 0.3) -> list[str]:
    """``n`` perturbed copies of ``base``, shuffled. SYNTHETIC. A ``near_share`` of them gets
    0-2 word edits (near duplicates, mostly dropped); the rest gets about half of its words
    replaced and 0-3 inserted from the vocabulary of all bases (new-looking instructions,
    mostly kept, so the pool grows as in a real run)."""
    from filters.words import words

    rng = random.Random(seed)
    sep = "" if lang in ("zh", "ja", "th") else " "
    toks = [words(b, lang) for b in base]
    vocab = sorted({w for t in toks for w in t})
    out = []
    for _ in range(n):
        w = list(toks[rng.randrange(len(toks))])
        if rng.random() < near_share:
            edits = rng.randint(0, 2)
        else:
            edits = max(1, len(w) // 2)
            for _ in range(rng.randint(0, 3)):
                w.insert(rng.randint(0, len(w)), rng.choice(vocab))
        for _ in range(edits):
            op = rng.random()
            if op < 0.2 and len(w) > 2:
                w.pop(rng.randrange(len(w)))
            elif op < 0.4:
                w.insert(rng.randint(0, len(w)), rng.choice(vocab))
            else:
                w[rng.randrange(len(w))] = rng.choice(vocab)
        out.append(sep.join(w))
    return out


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, its live descendants (the Spark JVM and its
    Python workers) and its reaped children: the core time, meaningful on a shared machine."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in me.children(recursive=True):
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="instructions per language")
    ap.add_argument("--langs", default="en", help="comma-separated ISO codes (en is compared with the plain filter)")
    ap.add_argument("--plain-n", type=int, default=2000, help="instructions the DP-table plain filter is timed on")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--report-floor", type=float, default=0.5,
                    help="the job's report_floor (pairs scored exactly down to it; 0.7 = decisions only)")
    args = ap.parse_args(argv)

    from filters.rouge import lcs_length, rouge_tokens, sequential_filter
    from pipeline.instruct import diversity_filter
    from pipeline.session import build_spark

    root = data_root()
    langs = args.langs.split(",")
    print(f"[bench_instruct] SYNTHETIC input: {args.n} generated-like instructions per language "
          f"({','.join(langs)}) = replicated + perturbed (30% near duplicates, 70% half the words replaced) Self-Instruct seeds (en) / "
          f"NTREX sentences (others); pool = the unperturbed bases")
    data = {}
    for lang in langs:
        b = bases(lang, root)
        data[lang] = (b, generated_like(b, lang, args.n))
    spark = build_spark("bench-instruct", "local[1]", {"spark.sql.shuffle.partitions": "4"})
    pool_rows, cand_rows = [], []
    for lang, (b, c) in data.items():
        pool_rows += [(lang, i, s) for i, s in enumerate(b)]
        cand_rows += [(lang, 10**9 + i, i, s) for i, s in enumerate(c)]
    P = spark.createDataFrame(pool_rows, "lang string, id long, text string")
    C = spark.createDataFrame(cand_rows, "lang string, id long, ord long, text string")
    spark.range(10).count()  # JVM warm
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = diversity_filter(spark, P, C, threshold=args.threshold, report_floor=args.report_floor)
    t_wall, t_job = time.perf_counter() - t0, cpu_seconds() - c0
    n_all = len(cand_rows)
    print(f"[bench_instruct] job (Spark local[1], report_floor {args.report_floor}): {n_all} instructions in {t_job:.1f} CPU s (driver + JVM + "
          f"Python workers; {t_wall:.1f} s wall) = {n_all / t_job:.0f} instructions per CPU second; "
          f"kept {int(res.keep.sum())}")
    if "en" in data:
        b, c = data["en"]
        pt, ct = [rouge_tokens(s, "en") for s in b], [rouge_tokens(s, "en") for s in c]
        calls = [0]

        def counted(a, b_):
            calls[0] += 1
            return lcs_length(a, b_)

        t0 = time.process_time()
        keep_bp, _ = sequential_filter(pt, ct, args.threshold, lcs=counted)
        t_bp = time.process_time() - t0
        n_cmp_full = calls[0]
        job = res[res.lang == "en"].sort_values("id")
        same = list(job.keep) == keep_bp
        print(f"[bench_instruct] en decisions equal to the plain sequential filter: {same} "
              f"({sum(keep_bp)} kept of {len(ct)})")
        m = min(args.plain_n, len(ct))
        calls[0] = 0
        sequential_filter(pt, ct[:m], args.threshold, lcs=counted)
        n_cmp_m = calls[0]
        t0 = time.process_time()
        keep_dp, _ = sequential_filter(pt, ct[:m], args.threshold, lcs=_lcs_dp)
        t_dp = time.process_time() - t0
        assert keep_dp == keep_bp[:m], "DP and bit-parallel plain filters disagree"
        t_dp_full = t_dp * n_cmp_full / n_cmp_m  # same pairs, DP cost per pair measured on m
        en_job = t_job * len(ct) / n_all
        print(f"[bench_instruct] plain filter, DP-table LCS (rouge_score's): {m} instructions ({n_cmp_m} "
              f"Rouge-L pairs) in {t_dp:.1f} CPU s; on all {len(ct)} it scores {n_cmp_full} pairs: "
              f"{t_dp_full:.0f} CPU s at the measured cost per pair = {len(ct) / t_dp_full:.1f} per CPU second")
        print(f"[bench_instruct] plain filter, bit-parallel LCS: {len(ct)} in {t_bp:.1f} CPU s = "
              f"{len(ct) / t_bp:.0f} per CPU second")
        print(f"[bench_instruct] speed-up per core (CPU seconds) of the job (en share {en_job:.1f} CPU s): "
              f"{t_dp_full / en_job:.1f}x vs the DP plain filter, {t_bp / en_job:.1f}x vs the "
              f"bit-parallel plain filter")
        if not same:
            return 1
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
