"""Issue 7: the corpus build on a real Spark standalone cluster (master + 2 workers on
127.0.0.1, started and stopped by the tests) equals the local[2] build, and the code and
models reach the executors through --py-files / --files, not through the driver's paths.
Issue 15: the executors run the virtualenv shipped with --archives (the workers cannot see the
driver's venv), and cluster deploy mode is refused on standalone, as Spark itself does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from jobs.cluster import (PYFILES_PACKAGES, REPO, build_pyfiles, env_key, pack_env, python_exe, spark_env,
                          spark_home, submit_command, submit_stages, venv_prefix)
from tests.cluster_helpers import assert_same_stage, get_cluster, local_reference


def test_pyfiles_archive_has_the_sources_and_wins_over_the_editable_install(tmp_path):
    z = build_pyfiles(tmp_path / "pyfiles.zip")
    names = zipfile.ZipFile(z).namelist()
    assert {n.split("/")[0] for n in names} == set(PYFILES_PACKAGES)
    for must in ("pipeline/stage.py", "pipeline/ship.py", "filters/langid.py", "training/train.py",
                 "jobs/build_corpus.py"):
        assert must in names
    assert not [n for n in names if n.endswith((".parquet", ".ftz", ".bin", ".arpa", ".model", ".pyc"))]
    assert build_pyfiles(tmp_path / "again.zip") and \
        (tmp_path / "again.zip").read_bytes() == (tmp_path / "pyfiles.zip").read_bytes(), "archive not reproducible"
    # PySpark's worker puts --py-files archives on sys.path; they must shadow the editable
    # install of this repository (which the venv has), so executors run the shipped code.
    probe = ("import sys; sys.path.insert(1, %r); import pipeline.stage, filters.langid, training, jobs; "
             "print(pipeline.stage.__file__, filters.langid.__file__, training.__file__, jobs.__file__)" % z)
    p = subprocess.run([python_exe(), "-c", probe], capture_output=True, text=True, cwd="/", timeout=120)
    assert p.returncode == 0, p.stderr
    assert all(f.startswith(z + "/") for f in p.stdout.split()), p.stdout


def test_strict_resolve_refuses_driver_paths(tmp_path, monkeypatch):
    from pipeline.ship import resolve

    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    assert resolve(str(f)) == str(f)
    monkeypatch.setenv("POLY_SHIP_STRICT", "1")
    with pytest.raises(FileNotFoundError, match="not shipped"):
        resolve(str(f))


@pytest.mark.slow
@pytest.mark.timeout(5400)  # JVM start-ups dominate; on a loaded 2-core machine this exceeds the 30 min default
def test_cluster_build_equals_local(spark, shared_data, tmp_path_factory, tmp_path):
    cfg_path, ref_out, config, _ = local_reference(spark, tmp_path_factory, shared_data)
    cluster = get_cluster(tmp_path_factory)
    out = tmp_path / "cluster"
    log = tmp_path / "submit.log"
    with open(log, "w") as fh:
        try:
            # ship_env=False: six applications x two executors would each unpack the 400 MB venv
            # archive; test_executors_run_the_shipped_environment proves the shipped path
            submit_stages(cluster.master_url, str(out), str(cfg_path), str(shared_data), log=fh,
                          root=cluster.root, report=False, ship_env=False)
        except subprocess.CalledProcessError as e:
            pytest.fail(f"cluster build failed: {e}\n{log.read_text()[-6000:]}")
    text = log.read_text()
    chain = config["stages"]
    for stage in chain:
        assert f"[{stage}] " in text  # ran through spark-submit, one application per stage
        marker = out / "corpus" / ".SUCCESS" if stage == "shard" else out / stage / "_SUCCESS"
        assert marker.exists(), f"no {marker}"
        assert_same_stage(ref_out, out, stage)
    # every worker ran executors, and each executor received the archive and the model files
    # in its own work directory (SparkFiles), which is where POLY_SHIP_STRICT made it read them
    for i in (1, 2):
        work = cluster.worker_dir(i) / "work"
        assert list(work.rglob("pyfiles.zip")), f"worker-{i} executors never got --py-files"
        if "langid" in chain:
            assert list(work.rglob("lid.176.ftz")), f"worker-{i} executors never got lid.176.ftz"
    assert "not shipped" not in text


@pytest.mark.slow
def test_executors_run_the_shipped_environment(tmp_path_factory, tmp_path):
    """spark-submit with --archives env-<key>.tar.gz#env and spark.pyspark.python=./env/bin/python
    on workers started without PYTHONPATH or the venv on PATH: every task runs the unpacked
    archive in its executor's work directory, imports pyarrow from it and our code from the
    --py-files archive; nothing comes from the driver's venv or checkout."""
    archive = pack_env()  # cached under build/env by the installed packages' hash
    assert Path(archive).name == f"env-{env_key()}.tar.gz" and pack_env() == archive  # reused, not rebuilt
    with tarfile.open(archive) as t:
        names = set(t.getnames())
    assert "bin/python" in names and "pyvenv.cfg" in names
    assert any(n.startswith("lib/python3.11/site-packages/pyarrow/") for n in names)
    sp = "lib/python3.11/site-packages/"
    assert not [n for n in names if n.startswith((sp + "__editable__", sp + "torch/", sp + "pyspark/"))]
    cluster = get_cluster(tmp_path_factory)
    out = tmp_path / "probe.json"
    cmd = submit_command(cluster.master_url, "env_probe", ["--out", str(out), "--tasks", "4"],
                         build_pyfiles(tmp_path / "pyfiles.zip"), [], env_archive=archive)
    p = subprocess.run(cmd, env=spark_env(Path(cluster.root)), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    res = json.loads(out.read_text())
    venv, root = str(venv_prefix()), str(Path(cluster.root).resolve())
    assert len(res["executors"]) == 4
    for e in res["executors"]:
        assert e["executable"].endswith("/env/bin/python") or e["executable"] == "./env/bin/python", e
        prefix = os.path.realpath(os.path.join(e["cwd"], e["prefix"]))
        assert prefix.startswith(root + "/worker-") and prefix.endswith("/env"), e  # the unpacked archive
        assert e["pyarrow"].startswith(prefix + "/lib/") or os.path.realpath(e["pyarrow"]).startswith(prefix), e
        assert "pyfiles.zip" in e["pipeline"], e
        assert not [d for d in e["PATH"].split(":") if d.startswith(venv)], e["PATH"]
        # PYTHONPATH: Spark's own pyspark.zip / py4j / jars (SPARK_HOME is the pip-installed pyspark,
        # which here lives inside the venv) and the executor's work dir; no site-packages, no checkout
        sh = str(spark_home())
        assert not [d for d in e["PYTHONPATH"].split(":") if d and not d.startswith((sh, e["cwd"]))], e["PYTHONPATH"]
    assert res["driver"]["prefix"] != res["executors"][0]["prefix"]


def test_cluster_deploy_mode_on_standalone_is_refused_as_spark_does(tmp_path):
    """Spark refuses --deploy-mode cluster for Python applications on a standalone master; our
    CLI says so up front (exit 2) instead of failing inside spark-submit."""
    p = subprocess.run([python_exe(), "-m", "jobs.cluster", "submit", "--master", "spark://127.0.0.1:9",
                        "--deploy-mode", "cluster"], capture_output=True, text=True, timeout=120, cwd=str(REPO),
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2 and "not supported by Spark for Python applications" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    cmd = submit_command("spark://127.0.0.1:9", "env_probe", ["--out", str(tmp_path / "x.json")],
                         build_pyfiles(tmp_path / "pyfiles.zip"), [], deploy_mode="client")
    i = cmd.index("--deploy-mode")
    cmd[i + 1] = "cluster"  # what a user would type, straight to spark-submit
    p = subprocess.run(cmd, env=spark_env(tmp_path / "conf"), capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "Cluster deploy mode is currently not supported for python applications on standalone clusters" \
        in p.stdout + p.stderr


def test_submit_refuses_a_local_master():
    """`jobs.cluster submit --master local[2]` used to pack the venv, then fail inside
    spark-submit ("Cannot run program ./env/bin/python") with Java and Python tracebacks; it now
    exits 2 at once, naming the in-process command."""
    p = subprocess.run([python_exe(), "-m", "jobs.cluster", "submit", "--master", "local[2]"],
                       capture_output=True, text=True, timeout=120, cwd=str(REPO),
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2 and "jobs.build_corpus --master local[2]" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
