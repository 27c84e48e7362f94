"""``make instruct``: multilingual self-instruct rounds + the Spark Rouge-L diversity filter.

Usage::

    python -m jobs.instruct --out build/sample --config configs/instruct.yaml \
        [--set generator.base_url=http://127.0.0.1:8000/v1] [--canned-server]

Writes ``<out>/instruct/lang=xx/part-*.parquet`` and ``<out>/instruct/stats.json``; resumes
from ``<out>/instruct_work`` (raw responses, finished rounds). See ``pipeline/instruct.py``.
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml


def _parse_set(items: list[str], cfg: dict) -> dict:
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        node = cfg
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {k}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(v)
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.instruct", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("POLY_OUT", "build/sample"), help="output root")
    ap.add_argument("--config", default="configs/instruct.yaml", help="YAML with an `instruct:` section")
    ap.add_argument("--data-root", default=None,
                    help="root of the raw data, the seed tasks are under it (default: $POLY_DATA_ROOT, "
                         "$POLY_SHARED_DATA, ../shared/data)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the instruct section, e.g. --set generator.model=qwen")
    ap.add_argument("--canned-server", action="store_true",
                    help="start tools/canned_openai_server.py on 127.0.0.1 and use it (no real model: "
                         "NTREX sentences as tasks, for testing the job)")
    ap.add_argument("--master", default=None, help="Spark master (default local[*])")
    args = ap.parse_args(argv)
    from pipeline.config import DEFAULT_DATA_ROOT

    args.data_root = (args.data_root or os.environ.get("POLY_DATA_ROOT") or os.environ.get("POLY_SHARED_DATA")
                      or str(DEFAULT_DATA_ROOT))
    from pipeline.instruct import run_instruct, validate_config

    try:
        with open(args.config, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict) or set(doc) - {"instruct"}:
            raise ValueError(f"{args.config}: expected one top-level section `instruct:`")
        cfg = validate_config(_parse_set(args.set, dict(doc.get("instruct") or {})))
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server = None
    if args.canned_server:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        from canned_openai_server import CannedServer

        server = CannedServer(args.data_root)
        cfg["generator"] = {**cfg["generator"], "backend": "openai", "base_url": server.url}
        print(f"[instruct] using the canned test server at {server.url} (NTREX sentences, not a model)",
              file=sys.stderr)
    from pipeline.generator import GenerationError
    from pipeline.session import build_spark

    spark = build_spark("polycorpus-instruct", args.master)
    try:
        stats = run_instruct(spark, args.out, cfg, args.data_root,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as e:  # missing seeds, bad generator config
        print(f"error: {e}", file=sys.stderr)
        return 2
    except GenerationError as e:
        print(f"error: {e}\nthe responses received so far are kept in {args.out}/instruct_work/raw; "
              f"fix the generator (generator.base_url, model, key) and rerun to resume", file=sys.stderr)
        return 1
    finally:
        if server:
            server.close()
    for lg, s in stats["languages"].items():
        print(f"{lg}: generated {s['generated']} kept {s['kept']} dropped {s['dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
