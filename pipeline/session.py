"""Spark session construction shared by every job.

``local[*]`` by default; the master and extra ``--conf`` pairs come from the command line or
the environment (``POLY_SPARK_MASTER``, ``POLY_SPARK_CONF`` as ``k=v,k=v``). Under
``spark-submit`` the master chosen by spark-submit wins unless one is passed explicitly.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

DEFAULT_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.sources.partitionOverwriteMode": "static",
    # Deterministic, modest shuffle width for the sample; clusters override with --conf.
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.python.worker.reuse": "true",
    # JVM <-> Python worker traffic over Unix domain sockets instead of TCP on 127.0.0.1. Over
    # TCP, a 1M-document build stalled for good in the quality stage (pyspark 4.3.0, Linux
    # 6.x): the JVM had pushed 33 MB of input into the worker's receive buffer while the worker
    # was blocked writing 4 MB of output; segments were dropped on both sides and each socket sat
    # in retransmission backoff at the 120 s maximum (`ss -ti`: rto:120000 backoff:10), both
    # processes idle. Unix stream sockets have no loss or retransmission timers.
    "spark.python.unix.domain.socket.enabled": "true",
}

LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # pyspark's daemon, minus the BrokenPipeError traceback it prints when the JVM releases an
    # idle reused worker (harmless; see pipeline/pyspark_daemon.py). Every other error prints.
    # Local masters only: there the workers run the driver's Python environment, which has this
    # package; a cluster's executors start the daemon before --py-files reach sys.path.
    "spark.python.daemon.module": "pipeline.pyspark_daemon",
}


def parse_conf(pairs: Iterable[str] | None) -> dict[str, str]:
    """Parse ``key=value`` strings into a dict.

    Raises:
        ValueError: if a pair has no ``=``.
    """
    out: dict[str, str] = {}
    for item in pairs or []:
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--conf expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_spark(app_name: str = "polycorpus", master: str | None = None,
                conf: dict[str, str] | None = None, log_level: str = "WARN"):
    """Create (or reuse) a SparkSession.

    Args:
        app_name: Spark application name.
        master: ``local[*]``, ``spark://host:7077``, ``yarn``...; ``None`` means
            ``$POLY_SPARK_MASTER``, else whatever spark-submit set, else ``local[*]``.
        conf: extra Spark confs; they override :data:`DEFAULT_CONF`.
        log_level: Spark log level.

    Returns:
        pyspark.sql.SparkSession
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    env_conf = parse_conf(os.environ["POLY_SPARK_CONF"].split(",")) if os.environ.get("POLY_SPARK_CONF") else {}
    master = master or os.environ.get("POLY_SPARK_MASTER")
    submitted = "spark.master" in os.environ.get("PYSPARK_SUBMIT_ARGS", "") or os.environ.get("SPARK_ENV_LOADED")
    if not master and not submitted:
        master = "local[*]"
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    merged = dict(DEFAULT_CONF)
    if master and master.startswith("local"):
        merged.update(LOCAL_CONF)
    merged.update(env_conf)
    merged.update(conf or {})
    for k, v in merged.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    return spark
