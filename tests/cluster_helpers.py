"""Helpers shared by tests/test_cluster.py and tests/test_faults.py: a reduced but real sample
config, one standalone cluster and one local[2] reference build per test session, readers
for stage outputs, and a driver-UI poller used to time fault injection."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as ds
import yaml

REPO = Path(__file__).resolve().parent.parent
#: A subset of the sample sources (real files, several formats, web spam and exact/near
#: duplicates: udhr vs udhr-html) so a cluster build stays fast on 2 cores.
SUBSET = ["cc-warc", "dolma-jsonl", "udhr", "udhr-html", "book-botchan"]

_STATE: dict = {}


def write_config(dest: Path, sources=SUBSET, **sections) -> Path:
    """``configs/pipeline.yaml`` restricted to ``sources`` (``ingest.only_sources``), with
    extra top-level ``sections`` merged in; written to ``dest``."""
    from pipeline.config import read_config_file

    cfg = read_config_file(REPO / "configs" / "pipeline.yaml")  # its paths made absolute: the copy lives elsewhere
    cfg.setdefault("ingest", {})["only_sources"] = list(sources)
    for k, v in sections.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def get_cluster(tmp_path_factory):
    """The session's standalone cluster (master + 2 workers x 1 core / 1 GiB, free ports,
    daemons started with :func:`jobs.cluster.isolated_env`), started on first use and stopped
    at interpreter exit."""
    from jobs.cluster import Cluster, free_port

    c = _STATE.get("cluster")
    if c is None:
        root = tmp_path_factory.mktemp("cluster")
        # isolate_python: the daemons (hence executors) see no PYTHONPATH and no venv on PATH, like
        # the nodes of a real cluster; jobs bring their Python (--archives) or name one explicitly
        c = Cluster(root=str(root), port=free_port(), webui_port=free_port(), workers=2, worker_cores=1,
                    worker_memory="1g", isolate_python=True).start(timeout=600)
        _STATE["cluster"] = c
        atexit.register(c.stop)
    assert c.alive_workers() == 2, "a worker of the test cluster died"
    return c


def local_reference(spark, tmp_path_factory, shared_data):
    """The configured chain on the reduced sample in local[2] (the session ``spark`` fixture),
    built once per session. Returns ``(config_path, out_dir, config_dict, stats)``."""
    if "local" not in _STATE:
        from pipeline.cli import run_stages
        from pipeline.config import load_config
        from pipeline.report import write_report

        base = tmp_path_factory.mktemp("cluster_ref")
        cfg_path = write_config(base / "pipeline.yaml")
        out = base / "local"
        config = load_config(cfg_path, str(shared_data))
        stats = run_stages(spark, str(out), config, config["stages"])
        write_report(spark, str(out), config)
        qdir = out / "models" / "quality"
        if qdir.exists():  # the cluster run scores with the very same quality models
            write_config(cfg_path, quality={"models_dir": str(qdir)})
            config = load_config(cfg_path, str(shared_data))
        _STATE["local"] = (cfg_path, out, config, stats)
    return _STATE["local"]


# ----------------------------------------------------------------------------- outputs
def read_docs(path: Path) -> dict[str, dict]:
    """id -> row of a parquet dataset directory (Hive partitions become columns)."""
    if not path.exists():
        return {}
    t = ds.dataset(str(path), format="parquet", partitioning="hive",
                   exclude_invalid_files=True, ignore_prefixes=["_", "."]).to_table()
    return {r["id"]: r for r in t.to_pylist()}


def dispositions(out: Path, stage: str) -> dict[str, str | None]:
    """id -> None (kept) or ``rejected:<reason>`` / ``quarantine:<reason>`` for one stage."""
    res = {i: None for i in read_docs(out / stage)}
    for kind in ("rejected", "quarantine"):
        root = out / kind / f"stage={stage}"
        if root.exists():
            for rdir in sorted(root.iterdir()):
                if rdir.name.startswith("reason="):
                    for i in read_docs(rdir):
                        assert i not in res, f"{i} appears twice in stage {stage}"
                        res[i] = f"{kind}:{rdir.name[len('reason='):]}"
    return res


def assert_same_stage(a: Path, b: Path, stage: str) -> None:
    """Same documents kept with the same content, same removal/quarantine reason for every
    id, for ``stage`` in output roots ``a`` and ``b`` (shard: same corpus rows and files per
    lang/source)."""
    if stage == "shard":
        ca, cb = read_docs(a / "corpus"), read_docs(b / "corpus")
        assert ca.keys() == cb.keys() and ca, f"corpus ids differ: {len(ca)} vs {len(cb)}"
        for i in ca:
            assert ca[i] == cb[i], f"corpus row {i} differs"
        ma = json.loads((a / "corpus" / ".manifest.json").read_text())
        mb = json.loads((b / "corpus" / ".manifest.json").read_text())
        assert ma["totals"] == mb["totals"]
        assert [(s["lang"], s["source"], s["documents"], len(s["files"])) for s in ma["streams"]] == \
               [(s["lang"], s["source"], s["documents"], len(s["files"])) for s in mb["streams"]]
        return
    da, db = dispositions(a, stage), dispositions(b, stage)
    assert da, f"stage {stage} produced nothing in {a}"
    assert da.keys() == db.keys(), f"{stage}: ids differ ({len(da)} vs {len(db)})"
    diff = {i: (da[i], db[i]) for i in da if da[i] != db[i]}
    assert not diff, f"{stage}: {len(diff)} documents disposed differently, e.g. {list(diff.items())[:5]}"
    ka, kb = read_docs(a / stage), read_docs(b / stage)
    for i in ka:
        ra, rb = ka[i], kb[i]
        assert ra.keys() == rb.keys(), f"{stage}: columns differ"
        for col in ra:
            va, vb = ra[col], rb[col]
            if isinstance(va, float) and isinstance(vb, float):
                assert abs(va - vb) <= 1e-6 * max(1.0, abs(va)), (stage, i, col, va, vb)
            else:
                assert va == vb, (stage, i, col, va, vb)


def seed_inputs(ref_out: Path, dest: Path, chain: list[str], stage: str) -> None:
    """Copy the published outputs of the stages before ``stage`` from ``ref_out`` to ``dest``."""
    for s in chain[:chain.index(stage)]:
        shutil.copytree(ref_out / s, dest / s)


# ----------------------------------------------------------------------------- driver UI
class DriverUI:
    """Polls a driver's REST API (``spark.ui.port``) for its application and executors."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.app_id = None

    def _get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=3) as r:
            return json.loads(r.read().decode())

    def executors(self) -> list[dict]:
        """Live executors (without the driver) of the application, [] when unreachable."""
        try:
            if self.app_id is None:
                apps = self._get("/applications")
                if not apps:
                    return []
                self.app_id = apps[0]["id"]
            return [e for e in self._get(f"/applications/{self.app_id}/executors") if e["id"] != "driver"]
        except (OSError, ValueError, KeyError, IndexError):
            return []


def executor_pid(app_id: str, executor_id: str) -> int | None:
    """PID of the ``CoarseGrainedExecutorBackend`` JVM running executor ``executor_id`` of ``app_id``."""
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd and app_id in cmd:
            try:
                if cmd[cmd.index("--executor-id") + 1] == executor_id:
                    return p.info["pid"]
            except (ValueError, IndexError):
                continue
    return None


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
             interval: float = 0.1):
    """Poll ``pred()`` until it returns a truthy value (returned); fail after ``timeout`` s or
    when ``proc`` exits first (with the tail of ``log``)."""
    t_end = time.time() + timeout
    while time.time() < t_end:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise AssertionError(f"process exited (rc={proc.returncode}) before {what}:\n{tail}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``proc`` (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
