"""Benchmark of the self-instruct diversity filter: the Spark job's pruned, exact filter
(``pipeline.instruct.diversity_filter``) against the plain sequential Rouge-L filter.

Input (SYNTHETIC, said so in the output): ``--n`` generated-like instructions per language,
built by replicating the Self-Instruct seed instructions (English; the 138 kept seeds) and
NTREX-128 sentences (other languages, ``--langs``) and perturbing each copy: 30% with 0-2
word edits (near duplicates), 70% with about half of the words replaced by words of the other
bases (new-looking instructions), in a random order (:func:`generated_like`).
The initial pool is the unperturbed bases.

Figures:

* decisions: the job's keep/drop per instruction equals the plain filter's (English), at
  ``report_floor`` 0.5 (the default: ``rouge_max`` exact down to 0.5) and 0.7 (decisions only);
* plain filter (the Self-Instruct reference method): :func:`filters.rouge.sequential_filter`,
  each instruction in order scored with Rouge-L against every instruction of the pool as it
  stands (tokens computed once, the scan stops at the first F >= 0.7 -- Self-Instruct and
  Alpaca score the whole pool, so this baseline is faster than theirs), with the ``n x m``
  DP-table LCS of ``rouge_score`` (:func:`_lcs_dp`, a tighter transcription of its
  ``_lcs_table``; the package's own ``_score_lcs`` is timed once too, slower) or our
  bit-parallel LCS. It runs once on all ``--n`` (bit-parallel: the decisions, the pair
  count); in each round each LCS variant is timed on the first ``--plain-n`` and scaled by
  (pairs on all / pairs on the first ``--plain-n``): the same pairs at the measured cost per
  pair;
* job: ``diversity_filter`` on a ``local[1]`` Spark session (one core).

Times are CPU seconds (process + Spark JVM + Python workers, :func:`cpu_seconds`), i.e. core
time, so the comparison per core holds on a shared machine; wall time is printed too. The
job and the plain filters are timed in ``--rounds`` interleaved rounds; the ratios are medians.

Usage: ``python bench/bench_instruct.py [--n 20000] [--langs en] [--plain-n 2000] [--rounds 3]``.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import NTREX_FILES, data_root, tree_cpu_seconds  # noqa: E402
from filters.rouge import lcs_length, sequential_filter  # noqa: E402


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


def _time_plain(pt, ct, threshold, lcs) -> tuple[float, list[bool]]:
    """CPU seconds (this process) of the plain sequential filter with ``lcs``, and its decisions."""
    t0 = time.process_time()
    keep, _ = sequential_filter(pt, ct, threshold, lcs=lcs)
    return time.process_time() - t0, keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="instructions per language")
    ap.add_argument("--langs", default="en", help="comma-separated ISO codes (en is compared with the plain filter)")
    ap.add_argument("--plain-n", type=int, default=2000, help="instructions the plain filters are timed on per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (medians reported)")
    ap.add_argument("--threshold", type=float, default=0.7)
    args = ap.parse_args(argv)

    from filters.rouge import rouge_tokens
    from pipeline.instruct import diversity_filter
    from pipeline.session import build_spark

    root = data_root()
    langs = args.langs.split(",")
    print(f"[bench_instruct] SYNTHETIC input: {args.n} generated-like instructions per language "
          f"({','.join(langs)}) = replicated + perturbed (30% near duplicates, 70% half the words replaced) "
          f"Self-Instruct seeds (en) / NTREX sentences (others); pool = the unperturbed bases")
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
    n_all = len(cand_rows)
    diversity_filter(spark, P.limit(10), C.limit(100))  # JVM and Python worker warm-up, not timed
    en = "en" in data
    if en:
        b, c = data["en"]
        pt, ct = [rouge_tokens(s, "en") for s in b], [rouge_tokens(s, "en") for s in c]
        m = min(args.plain_n, len(ct))
        calls = [0]

        def counted(a, b_):
            calls[0] += 1
            return lcs_length(a, b_)

        # the plain filter on all n: the decisions the job must equal, and its pair count
        t_bp_full, keep_plain = _time_plain(pt, ct, args.threshold, counted)
        pairs_full = calls[0]
        calls[0] = 0
        sequential_filter(pt, ct[:m], args.threshold, lcs=counted)
        pairs_m = calls[0]
        scale = pairs_full / pairs_m
        # rouge_score's own per-pair function (tokens given), once: what the DP transcription replaces
        from rouge_score.rouge_scorer import _score_lcs
        k = min(500, m)
        t0 = time.process_time()
        sequential_filter(pt, ct[:k], args.threshold, lcs=lambda a, b_: _score_lcs(a, b_).fmeasure * (len(a) + len(b_)) / 2)
        t_rs = time.process_time() - t0
        t0 = time.process_time()
        sequential_filter(pt, ct[:k], args.threshold, lcs=_lcs_dp)
        t_dpk = time.process_time() - t0
        print(f"[bench_instruct] plain filter = filters.rouge.sequential_filter: each instruction in order, Rouge-L F "
              f"against every instruction of the pool as it stands (our tokens, pre-tokenized once), stop at the "
              f"first F >= {args.threshold}, add if kept. On all {len(ct)}: {pairs_full} Rouge-L pairs, "
              f"{sum(keep_plain)} kept; bit-parallel LCS {t_bp_full:.1f} CPU s")
        print(f"[bench_instruct] per pair, on the first {k}: rouge_score's own _score_lcs {t_rs:.2f} CPU s, "
              f"our transcription of its DP table (bench _lcs_dp) {t_dpk:.2f} CPU s: the DP baseline below uses "
              f"the faster one")
    res_by_floor = {}
    rows = []
    for r in range(args.rounds):
        row = {}
        for floor in (0.5, args.threshold):
            t0, c0 = time.perf_counter(), tree_cpu_seconds()
            res = diversity_filter(spark, P, C, threshold=args.threshold, report_floor=floor)
            row[f"job{floor}"] = tree_cpu_seconds() - c0
            row[f"wall{floor}"] = time.perf_counter() - t0
            res_by_floor[floor] = res
        if en:
            t, keep_dp = _time_plain(pt, ct[:m], args.threshold, _lcs_dp)
            assert keep_dp == keep_plain[:m], "DP and bit-parallel plain filters disagree"
            row["dp"] = t * scale
            row["bp"] = _time_plain(pt, ct[:m], args.threshold, lcs_length)[0] * scale
        rows.append(row)
        print(f"[bench_instruct] round {r}: " + ", ".join(f"{k_} {v:.1f}" for k_, v in row.items()) + " CPU s")
    med = {k_: statistics.median(rw[k_] for rw in rows) for k_ in rows[0]}
    for floor in (0.5, args.threshold):
        res = res_by_floor[floor]
        print(f"[bench_instruct] job (diversity_filter, Spark local[1], report_floor {floor}): {n_all} instructions "
              f"in {med[f'job{floor}']:.1f} CPU s median (driver + JVM + Python workers; {med[f'wall{floor}']:.1f} s "
              f"wall) = {n_all / med[f'job{floor}']:.0f} per CPU second; kept {int(res.keep.sum())}")
    if not en:
        spark.stop()
        return 0
    same = {floor: list(res_by_floor[floor][res_by_floor[floor].lang == "en"].sort_values("id").keep) == keep_plain
            for floor in res_by_floor}
    print(f"[bench_instruct] en decisions equal to the plain sequential filter's on all {len(ct)}: "
          + ", ".join(f"report_floor {f}: {v}" for f, v in same.items()))
    print(f"[bench_instruct] plain filter on all {len(ct)} (timed on the first {m} each round, x {scale:.1f} = "
          f"pairs on all / pairs on the first {m}): DP-table LCS (rouge_score's) {med['dp']:.0f} CPU s = "
          f"{len(ct) / med['dp']:.1f} per CPU second; bit-parallel LCS {med['bp']:.0f} CPU s")
    share = len(ct) / n_all
    for floor in (0.5, args.threshold):
        ratios = [rw["dp"] / (rw[f"job{floor}"] * share) for rw in rows]
        ratios_bp = [rw["bp"] / (rw[f"job{floor}"] * share) for rw in rows]
        print(f"[bench_instruct] speed-up per core of the job (report_floor {floor}), median of {len(rows)} "
              f"interleaved rounds: {statistics.median(ratios):.1f}x vs the plain DP-table filter "
              f"(required >= 20x), {statistics.median(ratios_bp):.1f}x vs the plain bit-parallel filter")
    spark.stop()
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
