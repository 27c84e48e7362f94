"""`make gpu-check` without CUDA, and `make train` not re-tokenizing current token shards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_without_cuda_says_so_and_exits_0():
    from bench.gpu_check import NO_CUDA_LINE

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == [NO_CUDA_LINE]


def _dry_run_train(out: Path) -> str:
    p = subprocess.run(["make", "-n", "train", f"OUT={out}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_make_train_does_not_retokenize_current_shards(tmp_path):
    for d in ("corpus", "tokenizer", "tokens"):
        (tmp_path / d).mkdir()
    (tmp_path / "corpus" / "_SUCCESS").touch()
    (tmp_path / "tokenizer" / "_SUCCESS").touch()
    old = time.time() - 100
    for d in ("corpus", "tokenizer"):
        os.utime(tmp_path / d / "_SUCCESS", (old, old))
    (tmp_path / "tokens" / "_SUCCESS").touch()
    out = _dry_run_train(tmp_path)
    assert "are current" in out and "jobs.tokenize" not in out and "-m training.train" in out
    (tmp_path / "corpus" / "_SUCCESS").touch()  # a newer corpus: re-tokenize
    assert "jobs.tokenize" in _dry_run_train(tmp_path)
