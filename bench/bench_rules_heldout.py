"""Rules-only kept % on held-out clean paragraphs in the 18 languages (issue 14, cause 2).

The documents are built by :func:`bench.heldout.heldout_documents` from the Leipzig sentences
(never used to set a rule threshold): one-line paragraphs, paragraphs ending in ``)``, ``:`` or a
number, multi-paragraph documents and digit-rich paragraphs. Prints kept % per language and
kind, and the reasons of every removal. Target: >= 99% in every language (tier web).

Run: ``.venv/bin/python bench/bench_rules_heldout.py [--tier web]``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import data_root  # noqa: E402
from bench.heldout import KINDS, heldout_documents, rules_kept  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", default="web", help="tier whose thresholds apply (default web)")
    args = p.parse_args(argv)
    docs = heldout_documents(data_root())
    res = rules_kept(docs, args.tier)
    print(f"rules only, tier {args.tier}: held-out clean paragraphs from Leipzig sentences "
          f"({len(docs)} documents; kinds: {', '.join(KINDS)})")
    print(f"{'lang':5s} {'kept%':>7s} " + " ".join(f"{k:>10s}" for k in KINDS) + "  removed by")
    tot = [0, 0]
    for lang, d in res.items():
        tot[0] += d["docs"]
        tot[1] += d["kept"]
        kinds = " ".join(f"{100 * d['by_kind'][k][1] / d['by_kind'][k][0]:9.1f}%" if k in d["by_kind"] else " " * 10
                         for k in KINDS)
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(d["reasons"].items(), key=lambda x: -x[1]))
        print(f"{lang:5s} {100 * d['kept'] / d['docs']:6.1f}% {kinds}  {reasons}")
    print(f"all   {100 * tot[1] / tot[0]:6.1f}%  ({tot[1]}/{tot[0]}); lowest language "
          f"{min(100 * d['kept'] / d['docs'] for d in res.values()):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
