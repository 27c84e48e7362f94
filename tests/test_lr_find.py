"""Tests for jobs/lr_find.py: surge detection and an end-to-end LR ramp on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from jobs.lr_find import find_surge, main
from tests.test_train import CONFIG, make_tokens


def test_find_surge_synthetic():
    rng = np.random.default_rng(0)
    # high at init, settles near 1.0, surges from step 70 on
    norms = [3.0 - 2.0 * min(i, 20) / 20 for i in range(70)] + [1.0 + 0.4 * k for k in range(1, 31)]
    norms = [n * (1 + 0.05 * rng.standard_normal()) for n in norms]
    idx, smooth = find_surge(norms, factor=2.0, patience=3)
    assert idx is not None and 70 <= idx <= 85, idx
    assert len(smooth) == len(norms)
    # a flat curve has no surge; a NaN counts as a surge
    assert find_surge([1.0] * 50)[0] is None
    idx, _ = find_surge([1.0] * 30 + [float("nan")] * 5)
    assert idx == 30
    # the initial decrease from init is not a surge (skip + running minimum)
    assert find_surge([10.0, 5.0, 2.0] + [1.0] * 40)[0] is None


def test_lr_find_end_to_end(tmp_path):
    tokens = make_tokens(tmp_path / "tokens")
    out = tmp_path / "lrf"
    threads = torch.get_num_threads()
    try:
        rc = main(["--config", str(CONFIG), "--set", f"data.tokens_dir={tokens}", "--out", str(out),
                   "--steps", "50", "--ramp", "exp", "--min-lr", "1e-4", "--max-lr", "10"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads((out / "lr_find.json").read_text())
    assert len(res["lr"]) == len(res["grad_norm"]) == 50
    assert math.isclose(res["lr"][0], 1e-4)
    assert math.isclose(res["lr"][-1], 10.0)
    assert all(b > a for a, b in zip(res["lr"], res["lr"][1:]))  # the LR ramps up
    # an LR of 10 blows up a tiny transformer: the surge must be found inside the ramp
    assert res["surge_lr"] is not None and 1e-4 < res["surge_lr"] < 10
    assert math.isclose(res["suggested_peak_lr"], 0.5 * res["surge_lr"])
    assert (out / "lr_find.png").stat().st_size > 10_000
