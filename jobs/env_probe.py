"""Which Python runs the executors' tasks: ``python -m jobs.env_probe --out probe.json`` (or
through ``spark-submit scripts/spark_job.py env_probe ...``) runs ``--tasks`` one-row tasks and
writes, on the driver, JSON ``{"driver": {...}, "executors": [{...} per task]}`` with
``executable`` (``sys.executable``), ``prefix`` (``sys.prefix``), the files ``pyarrow`` and
``pipeline`` were imported from, the task's working directory and its ``PATH``/``PYTHONPATH``.
Used to prove that executors run the environment shipped with ``--archives``."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _where() -> dict:
    import pyarrow

    import pipeline

    return {"executable": sys.executable, "prefix": sys.prefix, "pyarrow": pyarrow.__file__,
            "pipeline": pipeline.__file__, "cwd": os.getcwd(), "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def _probe(_rows):
    yield json.dumps(_where())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file written by the driver")
    p.add_argument("--tasks", type=int, default=4, help="number of one-row tasks")
    p.add_argument("--master", default=None, help="Spark master (default: spark-submit's, or local[*])")
    a = p.parse_args(argv)
    from pipeline.session import build_spark

    spark = build_spark("polycorpus-env-probe", master=a.master)
    try:
        rows = spark.sparkContext.parallelize(range(a.tasks), a.tasks).mapPartitions(_probe).collect()
    finally:
        spark.stop()
    res = {"driver": _where(), "executors": [json.loads(r) for r in rows]}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["executors"][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
