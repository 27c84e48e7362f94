"""Shared pytest fixtures: the sample data root and one local Spark session per test run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _bench_ratios_in_tmp(tmp_path, monkeypatch):
    """Benchmarks called by tests record their ratios under the test's tmp dir, not build/bench."""
    monkeypatch.setenv("BENCH_RATIOS", str(tmp_path / "bench-ratios.jsonl"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data (../shared/data, or $POLY_SHARED_DATA)."""
    p = Path(os.environ.get("POLY_SHARED_DATA") or REPO.parent / "shared" / "data")
    assert p.exists(), f"sample data not found at {p} (set POLY_SHARED_DATA)"
    return p


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession shared by all tests (small shuffle width for speed)."""
    from pipeline.session import build_spark

    s = build_spark("polycorpus-tests", master="local[2]",
                    conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4",
                          "spark.driver.memory": "3g"})
    yield s
    s.stop()


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory, shared_data, spark):
    """The full configured corpus build on the real sample, run once per test session.

    Returns:
        (out_dir: str, config: dict, stats: dict stage -> stats)
    """
    from pipeline.cli import run_stages
    from pipeline.config import load_config
    from pipeline.report import write_report

    out = str(tmp_path_factory.mktemp("sample_build"))
    config = load_config(None, str(shared_data))
    stats = run_stages(spark, out, config, config["stages"])
    write_report(spark, out, config)
    return out, config, stats
