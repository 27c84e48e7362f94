"""Command-line plumbing shared by the ``jobs/`` entry points.

``python -m jobs.<stage>`` / ``spark-submit jobs/<stage>.py`` run one stage on the previous
stage's published output; ``jobs/build_corpus.py`` runs the configured chain and the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pipeline.config import DEFAULT_CONFIG, ConfigError, cli_path, fail, input_source, load_config
from pipeline.fs import InputError
from pipeline.stage import StageContext, log

#: ``--input`` file name endings -> ``--format`` when it is not given.
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                    ".warc": "warc", ".arc": "warc", ".wet": "wet", ".html": "html", ".htm": "html",
                    ".txt": "text"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to an option's help only when the help does not already name its
    default and the default is a value (not None / False / an empty list)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" in h or action.default in (None, False, [], argparse.SUPPRESS):
            return h
        return super()._get_help_string(action)


def common_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every pipeline job accepts (paths relative to the current directory)."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"),
                   help="output root: local path (relative to the current directory) or hdfs://, s3a:// URI")
    p.add_argument("--config", default=None,
                   help="pipeline YAML config (default: configs/pipeline.yaml); paths inside a YAML file "
                        "are relative to its folder")
    p.add_argument("--data-root", default=None,
                   help="root the sources' globs are relative to (default: $POLY_DATA_ROOT, the config's "
                        "data_root, ../shared/data)")
    p.add_argument("--input", action="append", default=[], metavar="GLOB",
                   help="your own files (glob relative to the current directory, or a URI; repeatable): "
                        "replaces the config's sources")
    p.add_argument("--format", default=None,
                   help="format of --input: jsonl, parquet, warc, wet, html, text, ... "
                        "(default: from the file name ending)")
    p.add_argument("--tier", default="web", help="tier of --input: web, reference, parallel or book")
    p.add_argument("--lang", default=None, help="declared ISO 639-1 language of every --input document "
                                                "(default: none; the langid stage decides)")
    p.add_argument("--field", action="append", default=[], metavar="NAME=COLUMN",
                   help="column of --input holding text, id, url or lang (repeatable), e.g. --field text=content")
    p.add_argument("--sources", action="append", default=[], metavar="FILE",
                   help="sources YAML file (repeatable): replaces the config's sources_file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set dedup.threshold=0.7 --set stages=[ingest,langid,shard] "
                        "(value parsed as YAML; repeatable)")
    p.add_argument("--master", default=None,
                   help="Spark master (default: $POLY_SPARK_MASTER, spark-submit's, or local[*])")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark conf, repeatable")
    p.add_argument("--force", action="store_true",
                   help="redo stages even when already published for the same input and config "
                        "(fingerprint in their _SUCCESS)")
    return p


def config_from_args(args) -> dict:
    """Load the config the common arguments describe (see :func:`common_parser`).

    Raises:
        ConfigError: bad config, bad ``--input``/``--field``/``--format``.
    """
    inputs = []
    data_root = args.data_root and cli_path(args.data_root)
    if args.input:
        fields = {}
        for f in args.field:
            if "=" not in f:
                raise ConfigError(f"--field {f!r}: expected NAME=COLUMN, e.g. --field text=content")
            k, v = f.split("=", 1)
            fields[k.strip()] = v.strip()
        # --format: one source of every --input glob; without it, one source per --input, its
        # format from the file name ending (so JSONL and parquet files go in one command)
        groups = [(args.format, list(args.input))] if args.format else [(None, [g]) for g in args.input]
        seen: dict[str, int] = {}
        for fmt, globs in groups:
            if not fmt:
                name = globs[0].lower()
                name = name[:-3] if name.endswith(".gz") else name
                fmt = next((f for suf, f in FORMAT_BY_SUFFIX.items() if name.endswith(suf)), None)
                if not fmt:
                    raise ConfigError(f"--input {globs[0]!r}: cannot tell the format from the name; "
                                      f"give --format (jsonl, parquet, warc, ...)")
            seen[fmt] = seen.get(fmt, 0) + 1
            name = f"input-{fmt}" + (f"-{seen[fmt]}" if seen[fmt] > 1 else "")
            inputs.append(input_source(globs, fmt, tier=args.tier, name=name, lang=args.lang,
                                       fields=fields or None))
        if not data_root and "://" not in args.input[0]:
            # ids and meta.path are relative to the folder of the first input glob
            head = args.input[0].split("*")[0].split("?")[0].split("[")[0]
            data_root = cli_path(head if head.endswith(os.sep) else (os.path.dirname(head) or "."))
    elif args.format or args.field:
        raise ConfigError("--format / --field describe --input files: give --input GLOB too")
    return load_config(args.config or DEFAULT_CONFIG, data_root, overrides=args.overrides,
                       sources_files=args.sources, inputs=inputs,
                       use_config_sources=not (args.input or args.sources))


def check_inputs(config: dict) -> None:
    """Every source matches at least one file (local data roots; URIs are left to the stage).

    Raises:
        ConfigError: a source without files (the message names the source, globs and root).
    """
    from pipeline.readers import list_source_files

    root = config["data_root"]
    only = (config.get("ingest") or {}).get("only_sources")
    for s in config.get("sources") or []:
        if (only and s["name"] not in only) or "://" in root or any("://" in g for g in s["glob"]):
            continue
        try:
            list_source_files(s, root)
        except ValueError as e:
            raise ConfigError(str(e)) from e


def resolve_out(out: str) -> str:
    """Absolute output root: URIs are kept, local paths are made absolute (current directory)."""
    return cli_path(out)


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
    Consecutive per-document stages (``langid``, ``rules``) run as one fused pass when
    ``config["fuse"]`` is true (the default; :mod:`pipeline.fused`), with the same outputs.

    Returns:
        dict stage name -> stats dict.
    """
    from pipeline.fused import groups, run_group
    from pipeline.registry import get_stage

    results = {}
    for group in groups(list(stages), list(config["stages"]), fuse=bool(config.get("fuse", True))):
        ctxs = [StageContext(spark=spark, out=out, config=config,
                             input_stage=input_stage_for(name, config["stages"]),
                             force=force is True or (isinstance(force, (list, tuple, set)) and name in force))
                for name in group]
        results.update(run_group([get_stage(n) for n in group], ctxs))
    return results


def _session(args, app: str):
    from pipeline.session import build_spark, parse_conf

    return build_spark(app_name=app, master=args.master, conf=parse_conf(args.conf))


def stage_main(stage: str, argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/<stage>.py``: run one stage. Exit 2 on a configuration error."""
    p = common_parser(f"Run the `{stage}` stage of the corpus build on the previous stage's output.")
    args = p.parse_args(argv)
    try:
        config = config_from_args(args)
        input_stage_for(stage, config["stages"])
        if stage == "ingest":
            check_inputs(config)
    except (ConfigError, ValueError) as e:
        return fail(str(e))
    out = resolve_out(args.out)
    spark = _session(args, f"polycorpus-{stage}")
    try:
        run_stages(spark, out, config, [stage], force=args.force)
    except InputError as e:  # a URI data root that cannot be listed (no bucket, no server): its message
        return fail(str(e))
    finally:
        spark.stop()
    return 0


def build_corpus(spark, out: str, config: dict, stages: list[str] | None = None,
                 force: bool | list[str] = False) -> dict:
    """The configured chain (or ``stages``) then the report: what ``python -m jobs.build_corpus``
    runs after loading the config (``force``: redo stages already published with the same
    fingerprint; True = all, or a list of stage names). Returns ``{"stats": {stage: stats},
    "report": {json, html}}``."""
    from pipeline.report import write_report

    stats = run_stages(spark, out, config, list(stages or config["stages"]), force=force)
    return {"stats": stats, "report": write_report(spark, out, config)}


def build_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/build_corpus.py``: the configured chain, then the report.
    Exit 2 on a configuration error (before Spark starts)."""
    p = common_parser("Build the corpus: every configured stage in order, then report.json/html. "
                      "Your own files: --input 'data/*.jsonl.gz' --format jsonl (no YAML needed).")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of the configured stages to run (default: all)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run langid and rules as separate passes (each reads the previous one's parquet) "
                        "instead of one fused pass; the outputs are the same (same as --set fuse=false)")
    p.add_argument("--from-stage", default=None,
                   help="start the chain at this stage and redo it and every later one (the earlier "
                        "ones must be published)")
    args = p.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.no_fuse:
            config["fuse"] = False
        chain = list(config["stages"])
        if args.stages:
            want = [s.strip() for s in args.stages.split(",") if s.strip()]
            unknown = [s for s in want if s not in chain]
            if unknown:
                raise ConfigError(f"--stages: {unknown} are not in the configured chain {chain}")
            chain = [s for s in chain if s in want]
        if args.from_stage:
            if args.from_stage not in chain:
                raise ConfigError(f"--from-stage {args.from_stage} not in {chain}")
            chain = chain[chain.index(args.from_stage):]
        if chain and chain[0] == "ingest":
            check_inputs(config)
    except ConfigError as e:
        return fail(str(e))
    out = resolve_out(args.out)
    force: bool | list[str] = args.force or bool(args.from_stage)
    t0 = time.time()
    spark = _session(args, "polycorpus-build")
    try:
        built = build_corpus(spark, out, config, chain, force=force)
        paths = built["report"]
    except InputError as e:  # a URI data root that cannot be listed (no bucket, no server): its message
        return fail(str(e))
    finally:
        spark.stop()
    from pipeline.shard import MANIFEST

    log(f"corpus build finished in {time.time() - t0:.1f}s")
    print(f"corpus:  {out}/corpus  (manifest: {out}/corpus/{MANIFEST})")
    print(f"report:  {paths['json']}")
    print(f"         {paths['html']}")
    warning = empty_corpus_warning(built["stats"])
    if warning:
        print(warning, file=sys.stderr)
    return 0


def empty_corpus_warning(stats: dict[str, dict]) -> str | None:
    """A warning when the chain's last stage kept no document although documents came in:
    names the reasons that removed the most (over every stage) and where thresholds live, so an
    empty corpus is never taken for a success. None when something was kept or nothing came in.

    Args:
        stats: ``{stage: stats dict}`` as :func:`run_stages` returns (``totals``: ``in``,
            ``kept``, ``removed`` and ``quarantined`` by reason).
    """
    if not stats:
        return None
    first, last = next(iter(stats.values())), list(stats.values())[-1]
    n_in = int((first.get("totals") or {}).get("in", 0))
    if n_in == 0 or int((last.get("totals") or {}).get("kept", 0)) > 0:
        return None
    reasons: dict[str, int] = {}
    for st in stats.values():
        tot = st.get("totals") or {}
        for kind in ("removed", "quarantined"):
            for r, c in (tot.get(kind) or {}).items():
                reasons[r] = reasons.get(r, 0) + int(c)
    top = ", ".join(f"{r} ({c})" for r, c in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    hint = ""
    if any(r in ("gopher_short_doc", "gopher_few_stop_words") for r in reasons):
        hint = (" Short texts (sentences, short paragraphs) are below Gopher's minimum length for web "
                "pages: ingest curated text with --tier reference (no minimum length), or change "
                "min_doc_words in your own copy of configs/filters.yaml (--set rules.filters=FILE).")
    return (f"WARNING: the corpus is empty: all {n_in} input documents were removed or quarantined; "
            f"most by {top}. See the report's examples per reason.{hint}")


def report_main(argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/report.py``: rebuild report.json/html from the stats files."""
    p = common_parser("Write report.json and report.html from the stats of the stages that ran.")
    args = p.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as e:
        return fail(str(e))
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
