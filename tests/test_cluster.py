"""Issue 7: the corpus build on a real Spark standalone cluster (master + 2 workers on
127.0.0.1, started and stopped by the tests) equals the local[2] build, and the code and
models reach the executors through --py-files / --files, not through the driver's paths."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from jobs.cluster import PYFILES_PACKAGES, build_pyfiles, python_exe, submit_stages
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
            submit_stages(cluster.master_url, str(out), str(cfg_path), str(shared_data), log=fh,
                          root=cluster.root, report=False)
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
