"""Train the quality models (``make quality-models``): per language a SentencePiece model and a
5-gram KenLM, and one multilingual fastText reference-vs-web classifier, from the ``langid``
stage output; write them with ``manifest.json`` to ``<out>/models/quality/``.

Thin CLI: the recipe is in :mod:`pipeline.quality_models` (training) and
:mod:`filters.quality_calibration` (thresholds).
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.quality_models import (DEFAULT_MAX_DOCS, DEFAULT_PPL_WEB_DROP, DEFAULT_WEB_DROP, MANIFEST,
                                     default_models_dir, load_docs, log, print_table, train_quality_models,
                                     training_options)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m jobs.train_quality_models [--out build/sample] ...``."""
    from pipeline.cli import HelpFormatter, resolve_out
    from pipeline.config import DEFAULT_CONFIG, load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"), help="pipeline output root")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML config")
    p.add_argument("--data-root", default=None, help="(accepted for symmetry with the stage jobs; unused)")
    p.add_argument("--input", default=None, help="docs parquet to train on (default <out>/langid)")
    p.add_argument("--models-dir", default=None, help="output directory (default <out>/models/quality)")
    p.add_argument("--languages", default=None, help="comma-separated subset (default: config languages)")
    p.add_argument("--heldout-fraction", type=float, default=0.2)
    p.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece vocabulary upper bound")
    p.add_argument("--order", type=int, default=5, help="KenLM n-gram order")
    p.add_argument("--reference-keep", type=float, default=0.98,
                   help="calibration quantile: thresholds keep at least this share of held-out reference docs")
    p.add_argument("--web-drop", type=float, default=argparse.SUPPRESS,
                   help="auto min_quality_score drops about this share of web docs (quantile of out-of-fold web "
                        f"scores; default: config quality.web_drop, else {DEFAULT_WEB_DROP})")
    p.add_argument("--ppl-web-drop", type=float, default=argparse.SUPPRESS,
                   help="auto max_ppl drops about this share of web docs by ppl (default: config "
                        f"quality.ppl_web_drop, else {DEFAULT_PPL_WEB_DROP})")
    p.add_argument("--max-docs", type=int, default=argparse.SUPPRESS,
                   help="documents read per language and label (reference/web/other; deterministic bottom-k "
                        f"sample; default: config quality.train_max_docs, else {DEFAULT_MAX_DOCS}; 0: all)")
    p.add_argument("--epoch", type=int, default=10, help="fastText epochs")
    p.add_argument("--cv-folds", type=int, default=5,
                   help="k of the cross-fitted classifier ROC AUC (held-out reference vs out-of-fold web); "
                        "0 disables the evaluation")
    p.add_argument("--max-positives", type=int, default=3000,
                   help="classifier positives (reference docs), spread evenly over languages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lmplz", default=None, help="path of lmplz (default: .venv/bin, then PATH)")
    p.add_argument("--build-binary", default=None, help="path of build_binary")
    p.add_argument("--force", action="store_true", help="retrain even if a manifest exists")
    p.add_argument("--web-fallback", action="store_true", default=argparse.SUPPRESS,
                   help="languages without reference-tier documents: train their KenLM on their own web documents "
                        "(default: config quality.web_fallback, else off)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes training the languages (and the classifier folds) in parallel "
                        "(default: the CPUs available; 1: one after the other in this process)")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    from pipeline.config import ConfigError, fail

    try:
        config = load_config(args.config, args.data_root)
    except ConfigError as e:
        return fail(str(e))
    out = resolve_out(args.out)
    models_dir = args.models_dir or default_models_dir(out)
    if os.path.exists(os.path.join(models_dir, MANIFEST)) and not args.force:
        log(f"{models_dir}/{MANIFEST} exists; skipping (use --force to retrain)")
        return 0
    src = args.input or os.path.join(out, "langid")
    langs = [s.strip() for s in args.languages.split(",")] if args.languages else list(config["languages"])
    qcfg = config.get("quality") or {}
    opts = training_options(qcfg, **{k: getattr(args, k, None) for k in ("web_drop", "ppl_web_drop", "max_docs")})
    log(f"reading {src} (at most {opts['max_docs'] or 'all'} documents per language and label)")
    docs = load_docs(src, langs, max_docs=opts["max_docs"])
    log(f"{len(docs)} documents in {len({d['lang'] for d in docs})} languages")
    m = train_quality_models(docs, models_dir, languages=langs, heldout_fraction=args.heldout_fraction,
                             vocab_size=args.vocab_size, order=args.order,
                             reference_keep=args.reference_keep, epoch=args.epoch, seed=args.seed,
                             max_positives=args.max_positives, cv_folds=args.cv_folds,
                             web_drop=opts["web_drop"], ppl_web_drop=opts["ppl_web_drop"],
                             lmplz=args.lmplz, build_binary=args.build_binary, input_desc=src,
                             input_counts=docs.counts, max_docs=docs.max_docs,
                             web_fallback=bool(getattr(args, "web_fallback", qcfg.get("web_fallback", False))),
                             workers=args.workers)
    print_table(m)
    print(f"models: {models_dir}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
