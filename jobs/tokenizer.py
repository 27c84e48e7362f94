"""Train the SentencePiece tokenizer on the corpus (`make tokenizer`).

``python -m jobs.tokenizer --help``. Reads ``<out>/corpus`` (the shard stage), writes
``<out>/tokenizer/`` (``spm.model``, the ``alpha = 1`` baseline, the compression report
``compression.{json,md,png}``, Hugging Face files ``hf/``, summary ``tokenizer.json``).
See :mod:`training.tokenizer` for what is done and why.
"""
import argparse
import json
import os
import sys

# Run as a script (spark-submit jobs/x.py), Python puts jobs/ first on sys.path, where
# jobs/tokenize.py would shadow the standard library's tokenize: use the repo root instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = _ROOT
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    from pipeline.cli import HelpFormatter
    from pipeline.stage import log
    from training.tokenizer import TokenizerConfig, load_config, train_tokenizer

    p = argparse.ArgumentParser(description="Train the multilingual SentencePiece BPE tokenizer (PolyLM sec. 2.2) "
                                            "on an alpha-smoothed sample of the corpus shards and report its "
                                            "compression on held-out NTREX sentences.",
                                formatter_class=HelpFormatter)
    p.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"),
                   help="output root: reads <out>/corpus, writes <out>/tokenizer (local path)")
    p.add_argument("--config", default=None, help="tokenizer YAML (default configs/tokenizer.yaml)")
    p.add_argument("--profile", default=None,
                   help="config profile: sample (small vocab) or full (256K); default: the file's `profile:`")
    p.add_argument("--data-root", default=os.environ.get("POLY_DATA_ROOT", "../shared/data"),
                   help="sample data root holding ntrex-128/ (held-out evaluation sentences)")
    p.add_argument("--vocab-size", type=int, default=None, help="override tokenizer.vocab_size")
    p.add_argument("--alpha", type=float, default=None, help="override tokenizer.alpha")
    p.add_argument("--no-compare", action="store_true", help="skip the compare_alpha baseline")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face export")
    # accepted so `make` can pass the common stage arguments
    p.add_argument("--master", default=None, help=argparse.SUPPRESS)
    p.add_argument("--conf", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from pipeline.config import fail

    try:
        cfg_all = load_config(args.config, args.profile)
    except (FileNotFoundError, KeyError, ValueError) as e:  # a bad tokenizer config: no traceback
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    tcfg = dict(cfg_all["tokenizer"])
    if args.vocab_size:
        tcfg["vocab_size"] = args.vocab_size
    if args.alpha:
        tcfg["alpha"] = args.alpha
    if args.no_compare:
        tcfg["compare_alpha"] = None
    try:
        cfg = TokenizerConfig.from_dict(tcfg)
    except (TypeError, ValueError) as e:
        return fail(f"tokenizer config: {e}")
    if "://" in args.out:
        p.error("--out must be a local path for the tokenizer (SentencePiece trains from local files)")
    out = os.path.abspath(args.out)
    corpus = os.path.join(out, "corpus")
    from pipeline.shard import SUCCESS

    if not os.path.exists(os.path.join(corpus, SUCCESS)):
        log(f"[tokenizer] {corpus} has no {SUCCESS} marker: build the corpus first (`make corpus`)")
        return 2
    log(f"[tokenizer] profile={cfg_all['profile']} vocab_size={cfg.vocab_size} alpha={cfg.alpha} "
        f"compare_alpha={cfg.compare_alpha}")
    summary = train_tokenizer(corpus, os.path.join(out, "tokenizer"), cfg, args.data_root,
                              hf=not args.no_hf, log=log)
    print(json.dumps({"model": os.path.join(out, "tokenizer", "spm.model"), "vocab_size": summary["vocab_size"],
                      "seconds": summary["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
