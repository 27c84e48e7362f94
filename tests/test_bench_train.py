"""bench/bench_train.py: interleaved rounds, medians of per-round ratios, >= 5 rounds, one real run."""

from __future__ import annotations

import pytest

from bench import bench_train


def test_rounds_interleave_one_step_at_a_time_and_flip_the_order():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    secs = bench_train.interleaved_rounds(fns, rounds=2, steps=3)
    assert calls == list("ab" "ba" "ab" "ba" "ab" "ba")
    assert {c: {k: len(v) for k, v in s.items()} for c, s in secs.items()} == {
        "wall": {"a": 2, "b": 2}, "cpu": {"a": 2, "b": 2}}
    with pytest.raises(ValueError, match="two"):
        bench_train.interleaved_rounds({"a": fns["a"]}, rounds=1, steps=1)


def test_ratio_is_the_median_of_same_round_ratios():
    """Outside load that slows one round down hits both models of that round alike: the
    per-round ratios stay 0.5 although tokens/s swing 10x between rounds."""
    now = [0.0]
    load = [1.0]

    def step(cost):
        def f():
            now[0] += cost * load[0]
        return f

    def on_round(r, _):  # sets the load of the next round: rounds 1 and 3 run 10x slower
        load[0] = 10.0 if r % 2 == 0 else 1.0

    secs = bench_train.interleaved_rounds({"ours": step(2.0), "peer": step(1.0)}, rounds=5, steps=2,
                                          clocks={"fake": lambda: now[0]}, on_round=on_round)
    res = bench_train.summarise(secs["fake"], tokens_per_round=100, ours="ours", peer="peer")
    assert res["ratios"] == pytest.approx([0.5] * 5)
    assert res["ratio"] == pytest.approx(0.5)
    assert res["tokens_per_sec"] == pytest.approx({"ours": 25.0, "peer": 50.0})  # 3 of 5 rounds unloaded


def test_cli_refuses_fewer_than_five_rounds(capsys):
    with pytest.raises(SystemExit) as e:
        bench_train.main(["--rounds", "3"])
    assert e.value.code == 2
    assert "--rounds must be >= 5" in capsys.readouterr().err


def test_small_real_run_prints_both_rates_and_the_ratio(capsys):
    pytest.importorskip("transformers")
    bench_train.main(["--batch", "1", "--seq", "16", "--vocab", "512", "--warmup", "1", "--steps", "1",
                      "--rounds", "5", "--threads", "1"])
    out = capsys.readouterr().out
    assert "5 interleaved rounds x 1 steps" in out and "1 threads (both)" in out
    assert "tokens_per_sec (median of 5 rounds): polylm" in out
    assert "target >= 1.0x" in out and "CPU seconds of this process" in out
    line = next(x for x in out.splitlines() if "first-step loss" in x)
    a, b = (float(line.split(k)[1].split()[0].rstrip(",")) for k in ("polylm ", "gpt2-hf "))
    assert a == pytest.approx(b, abs=1e-5)  # same weights, data and targets
