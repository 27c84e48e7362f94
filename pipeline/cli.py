"""Command-line plumbing shared by the ``jobs/`` entry points.

``python -m jobs.<stage>`` / ``spark-submit jobs/<stage>.py`` run one stage on the previous
stage's published output; ``jobs/build_corpus.py`` runs the configured chain and the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pipeline.config import DEFAULT_CONFIG, load_config, repo_path
from pipeline.stage import StageContext, log


def common_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every pipeline job accepts."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"),
                   help="output root (local path or hdfs://, s3a:// URI)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML config")
    p.add_argument("--data-root", default=None,
                   help="root of raw inputs (default: $POLY_DATA_ROOT, the config's data_root, ../shared/data)")
    p.add_argument("--master", default=None,
                   help="Spark master (default: $POLY_SPARK_MASTER, spark-submit's, or local[*])")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark conf, repeatable")
    p.add_argument("--force", action="store_true",
                   help="redo stages even when already published for the same input and config "
                        "(fingerprint in their _SUCCESS)")
    return p


def resolve_out(out: str) -> str:
    """Absolute output root: URIs are kept, local paths are made absolute."""
    if "://" in out:
        return out
    return os.path.abspath(out)


def input_stage_for(stage: str, stages: list[str]) -> str | None:
    """The stage whose output ``stage`` reads: the previous one in the configured chain.

    Raises:
        ValueError: ``stage`` is not in the configured chain.
    """
    if stage == "ingest":
        return None
    if stage not in stages:
        raise ValueError(f"stage {stage!r} is not in the configured chain {stages}; add it to `stages:`")
    i = stages.index(stage)
    return stages[i - 1] if i > 0 else None


def run_stages(spark, out: str, config: dict, stages: list[str], force: bool | list[str] = False) -> dict:
    """Run ``stages`` (names, in order) with the chain from ``config['stages']``.

    A stage already published for the same input and config (fingerprint in its ``_SUCCESS``)
    is skipped (its stats get ``"skipped": True``) unless ``force`` is True or names it.

    Returns:
        dict stage name -> stats dict.
    """
    from pipeline.registry import get_stage

    results = {}
    for name in stages:
        stage = get_stage(name)
        ctx = StageContext(spark=spark, out=out, config=config,
                           input_stage=input_stage_for(name, config["stages"]),
                           force=force is True or (isinstance(force, (list, tuple, set)) and name in force))
        results[name] = stage.run(ctx)
    return results


def _session(args, app: str):
    from pipeline.session import build_spark, parse_conf

    return build_spark(app_name=app, master=args.master, conf=parse_conf(args.conf))


def stage_main(stage: str, argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/<stage>.py``: run one stage."""
    p = common_parser(f"Run the `{stage}` stage of the corpus build on the previous stage's output.")
    args = p.parse_args(argv)
    config = load_config(args.config, args.data_root)
    out = resolve_out(args.out)
    spark = _session(args, f"polycorpus-{stage}")
    try:
        run_stages(spark, out, config, [stage], force=args.force)
    finally:
        spark.stop()
    return 0


def build_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/build_corpus.py``: the configured chain, then the report."""
    p = common_parser("Build the corpus: every configured stage in order, then report.json/html.")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of the configured stages to run (default: all)")
    p.add_argument("--from-stage", default=None,
                   help="start the chain at this stage and redo it and every later one (the earlier "
                        "ones must be published)")
    args = p.parse_args(argv)
    config = load_config(args.config, args.data_root)
    out = resolve_out(args.out)
    chain = list(config["stages"])
    if args.stages:
        want = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in want if s not in chain]
        if unknown:
            p.error(f"stages {unknown} are not in the configured chain {chain}")
        chain = [s for s in chain if s in want]
    force: bool | list[str] = args.force
    if args.from_stage:
        if args.from_stage not in chain:
            p.error(f"--from-stage {args.from_stage} not in {chain}")
        chain = chain[chain.index(args.from_stage):]
        force = True
    t0 = time.time()
    spark = _session(args, "polycorpus-build")
    try:
        run_stages(spark, out, config, chain, force=force)
        from pipeline.report import write_report

        paths = write_report(spark, out, config)
    finally:
        spark.stop()
    log(f"corpus build finished in {time.time() - t0:.1f}s")
    print(f"corpus:  {out}/corpus  (manifest: {out}/corpus/manifest.json)")
    print(f"report:  {paths['json']}")
    print(f"         {paths['html']}")
    return 0


def report_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/report.py``: rebuild report.json/html from the stats files."""
    p = common_parser("Write report.json and report.html from the stats of the stages that ran.")
    args = p.parse_args(argv)
    config = load_config(args.config, args.data_root)
    out = resolve_out(args.out)
    spark = _session(args, "polycorpus-report")
    try:
        from pipeline.report import write_report

        paths = write_report(spark, out, config)
    finally:
        spark.stop()
    print(f"report:  {paths['json']}\n         {paths['html']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(build_main())
