"""pyspark's Python worker daemon, minus one harmless traceback.

Spark starts this module as its Python daemon (``spark.python.daemon.module``, set in
:mod:`pipeline.session`); it runs ``pyspark.daemon.manager()`` unchanged, except that a
``BrokenPipeError`` raised *inside pyspark's daemon.py itself* is not printed. That error comes
when the JVM releases a reused Python worker that sat idle for a minute (pyspark 4.3's worker
factory; not a setting): the worker finds its socket closed and the daemon's final
``outfile.flush()`` raises. No task is running then, so nothing is lost; a healthy sample build
printed 8 such tracebacks (measured: they come with adaptive execution off too, and in a script
that only sleeps between two jobs). Every other error, and a ``BrokenPipeError`` with any frame
outside ``daemon.py`` (a UDF, the worker's task loop), is printed as before.
"""
from __future__ import annotations

import os
import sys
import traceback

_print_exc = traceback.print_exc


def is_idle_worker_release(exc: BaseException | None) -> bool:
    """True for a ``BrokenPipeError`` whose traceback lies entirely in pyspark's ``daemon.py``
    (the flush after an idle worker's socket was closed by the JVM)."""
    if not isinstance(exc, BrokenPipeError):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if not fname.endswith("pyspark/daemon.py"):
            return False
        tb = tb.tb_next
    return True


def _filtered_print_exc(*args, **kwargs):
    if is_idle_worker_release(sys.exc_info()[1]):
        return None
    return _print_exc(*args, **kwargs)


def main() -> None:
    """Run pyspark's daemon manager with the filtered ``traceback.print_exc``."""
    traceback.print_exc = _filtered_print_exc
    from pyspark import daemon

    daemon.manager()


if __name__ == "__main__":
    main()
