"""Filesystem operations.

Outputs (driver side) go through Hadoop's FileSystem API, so publishing works the same on a
local disk, HDFS or an object store: exists, delete, rename, list, small text files. Those
functions take the active SparkSession's JVM; paths are strings (``/abs/path``,
``file:///...``, ``hdfs://...``, ``s3a://...`` when the hadoop-aws jars are on the classpath).

Raw inputs (executor side, pure Python) go through :mod:`pyarrow.fs`: :func:`list_files`
(driver, once per source), :func:`open_input`, :func:`exists_input`, :func:`relpath`; see the
section "raw input" below for why.
"""
from __future__ import annotations

import functools
import glob as _glob
import io
import json
import os
import re
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


# ============================================================================ raw input (Python side)
# The driver lists a source's files once (one recursive listing per glob prefix) and the
# executors' Python workers open each file themselves through pyarrow.fs: Spark's own Hadoop
# FileSystem cannot read s3a:// without the hadoop-aws jars (not in pyspark's wheel), while
# pyarrow's wheel carries S3, GCS, HDFS (libhdfs) and Azure filesystems. Plain paths and
# file:// stay on Python's own glob/open, exactly as before.

#: Buffer of the reader wrapped around a remote file: one ranged GET per this many bytes.
REMOTE_BUFFER_BYTES = 8 << 20
#: Environment variables the driver forwards to the executors' input filesystem
#: (:func:`input_options`); credentials are only forwarded when set on the driver.
INPUT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs"}
_INPUT_OPTIONS: dict = {}


class InputError(OSError):
    """A source's location cannot be listed (missing bucket or prefix, permission denied,
    unknown scheme); the message names the URI and the fix."""


def is_remote(path: str) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3a://``, ``gs://``, ``hdfs://``...)."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; plain paths unchanged (made absolute)."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    return os.path.abspath(path)


def join(root: str, rel: str) -> str:
    """``root`` + ``/`` + ``rel`` for URIs and local paths alike."""
    return root.rstrip("/") + "/" + rel.lstrip("/") if is_remote(root) else os.path.join(local_path(root), rel)


def relpath(path: str, root: str) -> str:
    """``path`` relative to ``root`` (``a/b.warc.gz``), the same string for a local root and
    for the same tree copied under a URI; ids and ``meta.path`` are built from it."""
    if is_remote(path) or is_remote(root):
        r = root.rstrip("/") + "/"
        if not path.startswith(r):
            raise ValueError(f"{path} is not under {root}")
        return path[len(r):]
    return os.path.relpath(local_path(path), local_path(root))


def input_options() -> dict:
    """The driver's settings for remote input (:data:`INPUT_ENV`, set ones only), to be passed
    to :func:`configure_input` on the executors (whose environment may differ from the
    driver's, e.g. in local mode the Python workers inherit the JVM's start-up environment)."""
    return {k: os.environ[k] for k in INPUT_ENV if os.environ.get(k)}


def configure_input(options: dict | None) -> None:
    """Set the remote-input settings of this process (see :func:`input_options`)."""
    global _INPUT_OPTIONS
    if options != _INPUT_OPTIONS:
        _INPUT_OPTIONS = dict(options or {})
        _filesystem.cache_clear()


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``s3a://bucket/key`` -> (``s3``, ``bucket``, ``key``)."""
    scheme, rest = uri.split("://", 1)
    scheme = _SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    netloc, _, key = rest.partition("/")
    return scheme, netloc, key


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str):
    """A pyarrow filesystem for ``scheme://netloc`` (S3: endpoint, region and credentials
    from :func:`configure_input`, else the AWS SDK's default chain)."""
    import pyarrow.fs as pafs

    opts = _INPUT_OPTIONS or {k: os.environ[k] for k in INPUT_ENV if os.environ.get(k)}
    if scheme == "s3":
        kw: dict = {}
        endpoint = opts.get("AWS_ENDPOINT_URL_S3") or opts.get("AWS_ENDPOINT_URL")
        if endpoint:
            kw["endpoint_override"] = endpoint
            if endpoint.startswith("http://"):
                kw["scheme"] = "http"
        region = opts.get("AWS_REGION") or opts.get("AWS_DEFAULT_REGION")
        if region:
            kw["region"] = region
        if opts.get("AWS_ACCESS_KEY_ID") and opts.get("AWS_SECRET_ACCESS_KEY"):
            kw.update(access_key=opts["AWS_ACCESS_KEY_ID"], secret_key=opts["AWS_SECRET_ACCESS_KEY"],
                      session_token=opts.get("AWS_SESSION_TOKEN"))
        return pafs.S3FileSystem(**kw)
    try:
        fs_, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")
    except (pa_errors() + (ValueError,)) as e:
        raise InputError(f"no filesystem for {scheme}://{netloc}/ ({e}); supported: s3/s3a, gs, hdfs, "
                         "abfs, file and plain paths") from e
    return fs_


def pa_errors() -> tuple:
    import pyarrow as pa

    return (pa.ArrowException,)


def _resolve(uri: str):
    scheme, netloc, key = _split_uri(uri)
    if scheme == "hdfs":  # pyarrow's HadoopFileSystem takes absolute paths
        return _filesystem(scheme, netloc), "/" + key
    return _filesystem(scheme, netloc), f"{netloc}/{key}"


def _glob_regex(pattern: str) -> "re.Pattern":
    """Compile a glob (``*``, ``?``, ``[...]`` within one path component, ``**`` for any
    number of components, as :func:`glob.glob` with ``recursive=True``) to a regex over
    ``/``-separated relative paths."""
    out = []
    parts = pattern.strip("/").split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        j, rx = 0, ""
        while j < len(part):
            c = part[j]
            if c == "*":
                rx += "[^/]*"
            elif c == "?":
                rx += "[^/]"
            elif c == "[":
                start = j + 1 + (part[j + 1:j + 2] == "!")
                k = part.find("]", start + 1)  # a ']' right after '[' or '[!' is literal
                if k < 0:
                    rx += re.escape(c)
                else:
                    body = part[start:k].replace("\\", "\\\\")
                    rx += "[" + ("^" if start > j + 1 else "") + body + "]"
                    j = k
            else:
                rx += re.escape(c)
            j += 1
        out.append(rx + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.S)


def _static_prefix(pattern: str) -> str:
    """The leading path components of ``pattern`` without wildcards (``a/b`` of ``a/b/*.gz``)."""
    keep = []
    for part in pattern.strip("/").split("/")[:-1]:
        if any(c in part for c in "*?["):
            break
        keep.append(part)
    return "/".join(keep)


def list_remote(root: str, pattern: str) -> list[str]:
    """Sorted URIs of :func:`list_remote_details`."""
    return sorted(list_remote_details(root, pattern))


def list_remote_details(root: str, pattern: str) -> dict[str, tuple[int, int | None]]:
    """Files under the URI ``root`` whose path relative to it matches the glob ``pattern``:
    one recursive listing of the pattern's static prefix (one paginated LIST on object stores),
    matched on the driver. Names with a component starting with ``.`` are skipped, as
    :func:`glob.glob` does.

    Returns:
        ``{uri: (size in bytes, modification time in ns or None)}``, URIs ``<root>/<relative path>``.

    Raises:
        InputError: the bucket / container / prefix cannot be listed (the message says which).
    """
    import pyarrow.fs as pafs

    fs_, base = _resolve(root.rstrip("/") + "/" + _static_prefix(pattern))
    base = base.rstrip("/")
    rx = _glob_regex(pattern)
    _, root_path = _resolve(root.rstrip("/") + "/")
    root_path = root_path.rstrip("/") + "/"
    try:
        infos = fs_.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except (OSError,) + pa_errors() as e:
        raise InputError(f"cannot list {root.rstrip('/')}/{_static_prefix(pattern)}: {type(e).__name__}: {e} "
                         "(check the bucket name, the endpoint (AWS_ENDPOINT_URL) and the credentials)") from e
    if not infos:  # an empty listing: say so when the bucket / container itself is missing
        bucket = root_path.split("/", 1)[0]
        try:
            missing = fs_.get_file_info(bucket).type == pafs.FileType.NotFound
        except (OSError,) + pa_errors() as e:
            raise InputError(f"cannot read bucket {bucket!r} of {root}: {type(e).__name__}: {e}") from e
        if missing:
            raise InputError(f"bucket {bucket!r} of {root} does not exist (or is not visible with these "
                             "credentials); check --data-root and AWS_ENDPOINT_URL")
    out = {}
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(root_path):
            continue
        rel = info.path[len(root_path):]
        if any(c.startswith(".") for c in rel.split("/")):
            continue
        if rx.match(rel):
            out[root.rstrip("/") + "/" + rel] = (int(info.size or 0), info.mtime_ns)
    return out


def list_files(root: str, globs: list[str], exclude: list[str] | None = None) -> list[str]:
    """Regular files matching any of ``globs`` minus ``exclude`` (both relative to ``root``),
    sorted. Local roots (plain path or ``file://``) use :func:`glob.glob` (absolute paths
    returned); URIs use :func:`list_remote_details` (URIs returned).

    Raises:
        InputError: a remote root cannot be listed.
    """
    return sorted(list_files_details(root, globs, exclude))


def list_files_details(root: str, globs: list[str],
                       exclude: list[str] | None = None) -> dict[str, tuple[int, int | None]]:
    """:func:`list_files` with ``(size in bytes, modification time in ns)`` per file (from the
    listing itself on object stores: no extra request per file)."""
    if is_remote(root):
        files: dict = {}
        for g in globs:
            files.update(list_remote_details(root, g))
        for g in exclude or []:
            for p in list_remote_details(root, g):
                files.pop(p, None)
        return files
    r = local_path(root)
    paths = {p for g in globs for p in _glob.glob(os.path.join(r, g), recursive=True) if os.path.isfile(p)}
    for g in exclude or []:
        paths.difference_update(_glob.glob(os.path.join(r, g), recursive=True))
    out = {}
    for p in paths:
        st = os.stat(p)
        out[p] = (st.st_size, st.st_mtime_ns)
    return out


class _Closing(io.BufferedReader):
    """A BufferedReader that also closes the remote file under it."""


def open_input(path: str, buffer_size: int = REMOTE_BUFFER_BYTES):
    """Open a raw input file for binary reading: :func:`open` for local paths, a seekable
    buffered reader over a pyarrow random-access file for URIs (reads of up to
    ``buffer_size`` bytes per request).

    Raises:
        OSError: missing file or object (FileNotFoundError), permission denied, unreachable store.
    """
    if not is_remote(path):
        return open(local_path(path), "rb")
    fs_, p = _resolve(path)
    try:
        raw = fs_.open_input_file(p)
    except pa_errors() as e:  # ArrowInvalid and friends: surface as OSError for the callers
        raise OSError(f"{path}: {e}") from e
    return _Closing(raw, buffer_size)


def exists_input(path: str) -> bool:
    """True if the raw input file ``path`` (local path or URI) exists."""
    if not is_remote(path):
        return os.path.exists(local_path(path))
    import pyarrow.fs as pafs

    fs_, p = _resolve(path)
    return fs_.get_file_info(p).type != pafs.FileType.NotFound


def size_input(path: str) -> int:
    """Size in bytes of the raw input file ``path`` (local path or URI)."""
    if not is_remote(path):
        return os.path.getsize(local_path(path))
    fs_, p = _resolve(path)
    return int(fs_.get_file_info(p).size)


def dirname(path: str) -> str:
    """Parent of ``path`` (URI or local path)."""
    if is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(local_path(path))


def open_text(path: str, encoding: str = "utf-8"):
    """:func:`open_input` decoded as text (small sidecar files: indexes, id lists)."""
    return io.TextIOWrapper(open_input(path), encoding=encoding)
