"""Shipping model and config files to executors through ``SparkFiles``.

On the driver call :func:`ship` for every file a stage's executors need; inside an executor
call :func:`resolve` with the same path. ``resolve`` prefers the copy Spark distributed
(``SparkFiles.get``), so executors never read from the driver's working directory on a
cluster; it falls back to the original path only when nothing was shipped (plain unit tests
without Spark).
"""
from __future__ import annotations

import os

_SHIPPED: set[str] = set()


def ship(spark, path: str) -> str:
    """Add ``path`` (a file) to the SparkContext so every executor receives a copy.

    Returns:
        The original path, to pass to executors (they call :func:`resolve` on it).

    Raises:
        FileNotFoundError: if ``path`` does not exist on the driver.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model/config file to ship does not exist: {path}")
    path = os.path.abspath(path)
    key = f"{id(spark.sparkContext)}:{path}"
    if key not in _SHIPPED:
        try:
            spark.sparkContext.addFile(path)
        except Exception as e:  # same name already added by an earlier stage of this app
            if "already" not in str(e).lower() and "overwrite" not in str(e).lower():
                raise
        _SHIPPED.add(key)
    return path


def resolve(path: str) -> str:
    """Return the local path of a file shipped with :func:`ship` (executor side).

    With ``POLY_SHIP_STRICT=1`` in the environment (cluster executors) only the shipped copy
    is accepted.

    Raises:
        FileNotFoundError: if neither a shipped copy nor the original path exists (strict:
            if no shipped copy exists).
    """
    try:
        from pyspark import SparkFiles

        root = SparkFiles.getRootDirectory()
        cand = os.path.join(root, os.path.basename(path))
        if os.path.exists(cand):
            return cand
    except Exception:
        pass
    if os.environ.get("POLY_SHIP_STRICT") == "1":
        # set on cluster executors by jobs/cluster.py: a driver path must never be read there
        raise FileNotFoundError(f"{path} was not shipped to this executor through SparkFiles "
                                "(ship() it on the driver or pass it with spark-submit --files)")
    if os.path.exists(path):
        return path
    raise FileNotFoundError(f"{path} was not shipped to this executor (ship() it on the driver)")
