"""Issue 7 fault tests on a real standalone cluster (started and stopped by the tests):

* kill -9 the executor JVM of one worker while the dedup stage runs (the slowest configured
  stage until dedup is in the chain): Spark retries its tasks, the job finishes and the
  output equals the unfaulted local run;
* kill -9 the driver mid-stage: no ``_SUCCESS`` for that stage (the next stage refuses to
  read it), and the next run of the stage redoes it with complete, equal output.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from jobs.cluster import build_pyfiles, free_port, spark_env, stage_command
from pipeline.stage import StageInputMissing
from tests.cluster_helpers import (DriverUI, assert_same_stage, executor_pid, get_cluster, kill_group,
                                   local_reference, seed_inputs, wait_for)

# JVM start-ups dominate; on a loaded 2-core machine a test can exceed the 30 min default timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]


def _target(config: dict, stats: dict) -> str:
    chain = config["stages"]
    if "dedup" in chain:
        return "dedup"
    return max(chain, key=lambda s: stats[s].get("seconds", 0))


def _published(out: Path, stage: str) -> Path:
    return out / ("corpus" if stage == "shard" else stage) / "_SUCCESS"


def _start(cluster, out: Path, config: dict, stage: str, log: Path, ui_port: int) -> subprocess.Popen:
    cmd = stage_command(cluster.master_url, str(out), config, stage,
                        conf={"spark.ui.enabled": "true", "spark.ui.port": str(ui_port)},
                        pyfiles=build_pyfiles(out.parent / "pyfiles.zip"))
    return subprocess.Popen(cmd, env=spark_env(Path(cluster.root)), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _busy_executor(ui: DriverUI, log: Path, stage: str):
    """(executor id) of an executor running a task of ``stage``, once the stage has started."""
    if not log.exists() or f"[{stage}] start" not in log.read_text():
        return None
    busy = [e for e in ui.executors() if e.get("activeTasks", 0) > 0]
    return busy[0]["id"] if busy else None


def test_executor_killed_during_stage_then_output_equals_unfaulted(spark, shared_data, tmp_path_factory, tmp_path):
    _, ref_out, config, stats = local_reference(spark, tmp_path_factory, shared_data)
    cluster = get_cluster(tmp_path_factory)
    stage = _target(config, stats)
    out = tmp_path / "out"
    seed_inputs(ref_out, out, config["stages"], stage)
    log, ui_port = tmp_path / "driver.log", free_port()
    proc = _start(cluster, out, config, stage, log, ui_port)
    ui = DriverUI(ui_port)
    try:
        eid = wait_for(lambda: _busy_executor(ui, log, stage), 900, f"a task of stage {stage}", proc, log)
        pid = executor_pid(ui.app_id, eid)
        assert pid is not None, f"no CoarseGrainedExecutorBackend process for executor {eid} of {ui.app_id}"
        worker = next(i for i in (1, 2) if pid in cluster.executor_pids(i))
        psutil.Process(pid).kill()  # kill -9 of that worker's executor JVM
        rc = proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    text = log.read_text()
    assert rc == 0, f"the job did not survive the lost executor (rc={rc}):\n{text[-6000:]}"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "Lost executor" in text or "ExecutorLostFailure" in text, \
        f"Spark never noticed executor {eid} of worker-{worker} dying:\n{text[-4000:]}"
    assert _published(out, stage).exists()
    assert_same_stage(ref_out, out, stage)


def test_driver_killed_mid_stage_then_rerun_redoes_it(spark, shared_data, tmp_path_factory, tmp_path):
    from pipeline.cli import run_stages

    _, ref_out, config, stats = local_reference(spark, tmp_path_factory, shared_data)
    cluster = get_cluster(tmp_path_factory)
    chain = config["stages"]
    stage = _target(config, stats)
    out = tmp_path / "out"
    seed_inputs(ref_out, out, chain, stage)
    log, ui_port = tmp_path / "killed.log", free_port()
    proc = _start(cluster, out, config, stage, log, ui_port)
    ui = DriverUI(ui_port)
    try:
        wait_for(lambda: _busy_executor(ui, log, stage), 900, f"a task of stage {stage}", proc, log)
    finally:
        kill_group(proc)  # SIGKILL spark-submit's JVM and the Python driver
    assert proc.returncode == -9, log.read_text()[-3000:]
    assert not _published(out, stage).exists(), "a killed stage must not be marked _SUCCESS"
    if stage != chain[-1]:
        with pytest.raises(StageInputMissing, match="no _SUCCESS"):
            run_stages(spark, str(out), config, [chain[chain.index(stage) + 1]])
    # the next run of the stage redoes it
    log2 = tmp_path / "rerun.log"
    proc = _start(cluster, out, config, stage, log2, free_port())
    try:
        rc = proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert rc == 0, log2.read_text()[-6000:]
    assert _published(out, stage).exists()
    assert_same_stage(ref_out, out, stage)
    import json

    got = json.loads((out / "stats" / f"{stage}.json").read_text())["totals"]
    assert got == json.loads((ref_out / "stats" / f"{stage}.json").read_text())["totals"]
