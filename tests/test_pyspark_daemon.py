"""pipeline/pyspark_daemon.py: only the idle-worker BrokenPipeError of pyspark's daemon.py is hidden."""
from __future__ import annotations


def _raise_in(filename: str, exc: BaseException) -> BaseException:
    """``exc`` raised and caught in code compiled as ``filename`` (as daemon.py's manager()
    catches what its worker() raised)."""
    ns: dict = {}
    src = ("def worker(e):\n    raise e\n"
           "def manager(e):\n    try:\n        worker(e)\n    except BaseException as x:\n        return x\n")
    exec(compile(src, filename, "exec"), ns)
    return ns["manager"](exc)


def test_only_daemon_broken_pipe_is_hidden():
    from pipeline.pyspark_daemon import is_idle_worker_release

    daemon = "/x/site-packages/pyspark/python/lib/pyspark.zip/pyspark/daemon.py"
    assert is_idle_worker_release(_raise_in(daemon, BrokenPipeError(32, "Broken pipe")))
    assert not is_idle_worker_release(_raise_in("/x/pyspark/worker.py", BrokenPipeError(32, "Broken pipe")))
    assert not is_idle_worker_release(_raise_in(daemon, ConnectionResetError(104, "reset")))
    assert not is_idle_worker_release(_raise_in(daemon, ValueError("bad")))
    assert not is_idle_worker_release(None)


def test_sessions_use_the_daemon_and_python_tasks_run(spark):
    assert spark.conf.get("spark.python.daemon.module") == "pipeline.pyspark_daemon"
    df = spark.range(0, 100, numPartitions=2)
    assert df.mapInArrow(lambda it: (b for b in it), df.schema).count() == 100
