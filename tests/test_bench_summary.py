"""bench/common.record_ratio + bench/summary.py: the table `make bench` ends with."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import summary
from bench.common import ratios_path, record_ratio

REPO = Path(__file__).resolve().parent.parent


def test_recorded_ratios_print_side_by_side_with_targets(tmp_path):
    assert ratios_path() == tmp_path / "bench-ratios.jsonl"  # the autouse fixture keeps tests out of build/
    record_ratio("bench_a", "tokenize job", "400,000 tokens/s", "raw SentencePiece 1,000,000", 0.40, 0.70,
                 unit="%", note="5 rounds, median")
    record_ratio("bench_b", "MinHash signatures", "12,000 docs/s per core", "datasketch 1,000", 12.0, 10.0)
    lines = [json.loads(x) for x in ratios_path().read_text().splitlines()]
    assert [r["bench"] for r in lines] == ["bench_a", "bench_b"]
    out = subprocess.run([sys.executable, str(REPO / "bench" / "summary.py"), str(ratios_path())],
                         capture_output=True, text=True, check=True).stdout
    row_a = next(l for l in out.splitlines() if l.startswith("bench_a"))
    row_b = next(l for l in out.splitlines() if l.startswith("bench_b"))
    assert "40%" in row_a and ">= 70%" in row_a and row_a.endswith("NOT MET")
    assert "12.00x" in row_b and ">= 10.00x" in row_b and row_b.endswith("met")
    assert "5 rounds, median" in out


def test_summary_without_a_run_says_what_to_do(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "bench" / "summary.py"), str(tmp_path / "none.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "make bench" in r.stderr and "Traceback" not in r.stderr


def test_bad_unit_is_refused():
    with pytest.raises(ValueError, match="unit"):
        record_ratio("b", "s", "1", "2", 0.5, 1.0, unit="percent")


def test_tree_cpu_seconds_counts_child_processes():
    """The benchmarks' per-CPU-second figures count the Spark JVM and its Python workers, which
    are this process's descendants: a child that burns CPU must show in the reading."""
    from bench.common import tree_cpu_seconds

    c0 = tree_cpu_seconds()
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\ntime.sleep(0.3)"
    child = subprocess.Popen([sys.executable, "-c", burn])
    import time

    time.sleep(0.1)
    while child.poll() is None and tree_cpu_seconds() - c0 < 0.4:  # live child counted
        time.sleep(0.05)
    live = tree_cpu_seconds() - c0
    child.wait()
    assert live >= 0.4, live
    assert tree_cpu_seconds() - c0 >= 0.45  # reaped child counted through children_user/system
