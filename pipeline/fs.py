"""Filesystem operations through Hadoop's FileSystem API, so publishing works the same on a
local disk, HDFS or an object store: exists, delete, rename, list, small text files.

All functions take the active SparkSession's JVM; paths are strings (``/abs/path``,
``file:///...``, ``hdfs://...``).
"""
from __future__ import annotations

import json
from typing import Any


def _jvm_path(spark, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    fs = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, p


def exists(spark, path: str) -> bool:
    """True if ``path`` exists."""
    fs, p = _jvm_path(spark, path)
    return bool(fs.exists(p))


def delete(spark, path: str) -> None:
    """Recursively delete ``path`` if it exists."""
    fs, p = _jvm_path(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def mkdirs(spark, path: str) -> None:
    """Create ``path`` and its parents."""
    fs, p = _jvm_path(spark, path)
    fs.mkdirs(p)


def rename(spark, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (parents of ``dst`` are created).

    Raises:
        IOError: if the filesystem refuses the rename.
    """
    fs, ps = _jvm_path(spark, src)
    _, pd = _jvm_path(spark, dst)
    fs.mkdirs(pd.getParent())
    if not fs.rename(ps, pd):
        raise IOError(f"rename failed: {src} -> {dst}")


def list_dir(spark, path: str) -> list[str]:
    """Names (not paths) of the entries directly under ``path``; [] if it does not exist."""
    fs, p = _jvm_path(spark, path)
    if not fs.exists(p):
        return []
    return sorted(str(st.getPath().getName()) for st in fs.listStatus(p))


def write_text(spark, path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, replacing it."""
    fs, p = _jvm_path(spark, path)
    out = fs.create(p, True)
    try:
        data = text.encode("utf-8")
        out.write(bytearray(data))
    finally:
        out.close()


def read_text(spark, path: str) -> str:
    """Read a small UTF-8 text file."""
    fs, p = _jvm_path(spark, path)
    jvm = spark.sparkContext._jvm
    stream = fs.open(p)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        while True:
            line = reader.readLine()
            if line is None:
                break
            lines.append(line)
        return "\n".join(lines)
    finally:
        stream.close()


def write_json(spark, path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    write_text(spark, path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(spark, path: str) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(read_text(spark, path))
