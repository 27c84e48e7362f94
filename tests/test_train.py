"""Acceptance tests for the trainer (training/train.py) on CPU with a tiny model.

* one process vs two FSDP processes (gloo, fp32), same global batch: losses agree < 1e-5 rel.;
* SIGKILL mid-stage, resume: the next 20 losses equal an uninterrupted run's exactly;
* a 2-process checkpoint resumes at world size 1;
* loss and per-language validation loss fall; per-step metrics are complete;
* the NaN/spike guard skips updates.

The uninterrupted single-process reference runs in-process (one thread, like the subprocesses)
to save interpreter start-ups; everything else runs in subprocesses (torchrun for 2 ranks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import write_token_shards
from training.train import LossGuard, train
from training.train_config import load_config

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "train" / "tiny-test.yaml"
LANGS = ["en", "zh", "de", "ar", "ja"]


def make_tokens(root: Path, seed: int = 0) -> Path:
    """Synthetic, learnable token shards: per language a band of 40 token ids, documents are
    arithmetic progressions (mod 40) inside the band; sources web/wiki(/opus), 3 files each."""
    rng = np.random.default_rng(seed)
    docs = {}
    for li, lang in enumerate(LANGS):
        for src in ["web", "wiki"] + (["opus"] if lang != "en" else []):
            base = 10 + 40 * li
            ds = []
            for _ in range(40):
                st, step, n = rng.integers(0, 40), rng.integers(1, 4), rng.integers(10, 60)
                ds.append([base + int((st + step * k) % 40) for k in range(n)])
            docs[(lang, src)] = ds
    return write_token_shards(root, docs, vocab_size=256, eos_id=2, docs_per_file=15,
                              tiers={"web": "web", "wiki": "reference", "opus": "parallel"})


def overrides(tokens: Path, out: Path, **extra) -> list[str]:
    o = [f"data.tokens_dir={tokens}", f"out_dir={out}", f"checkpoint.dir={out / 'ckpt'}"]
    o += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return o


def read_metrics(out: Path, kind: str = "train") -> dict[int, dict]:
    """step -> row; a step logged twice (re-done after a resume) keeps the last row."""
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:  # a line being written (or cut by SIGKILL)
            continue
        if r.get("kind") == kind:
            rows[r["step"]] = r
    return rows


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def run_cli(args: list[str], nproc: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "training.train"]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--nproc-per-node", str(nproc), "--master-port", str(_free_port()),
               "-m", "training.train"]
    p = subprocess.run(cmd + ["--config", str(CONFIG)] + args, cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"trainer failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(lst: list[str]) -> list[str]:
    out = []
    for x in lst:
        out += ["--set", x]
    return out


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return make_tokens(tmp_path_factory.mktemp("tok") / "tokens")


@pytest.fixture(scope="module")
def reference(tokens, tmp_path_factory):
    """Uninterrupted single-process run to step 60 (schedule of 200 steps), in-process."""
    out = tmp_path_factory.mktemp("ref")
    cfg = load_config(CONFIG, overrides(tokens, out))
    threads = torch.get_num_threads()
    try:
        summary = train(cfg, stop_at_step=60)
    finally:
        torch.set_num_threads(threads)
    return out, summary


@pytest.fixture(scope="module")
def two_proc(tokens, tmp_path_factory):
    """The same run with 2 FSDP ranks (gloo), to step 20, checkpoints every 10 steps."""
    out = tmp_path_factory.mktemp("fsdp2")
    p = run_cli(_sets(overrides(tokens, out)) + ["--stop-at-step", "20"], nproc=2)
    return out, p


def test_loss_falls_and_metrics_complete(reference):
    out, summary = reference
    rows = read_metrics(out)
    assert sorted(rows) == list(range(1, 61))
    first = np.mean([rows[s]["loss"] for s in range(1, 11)])
    last = np.mean([rows[s]["loss"] for s in range(51, 61)])
    assert last < first - 0.5, (first, last)
    r = rows[30]
    for key in ("loss", "lang_loss", "grad_norm", "lr", "tokens_per_sec", "mfu", "peak_mem_gib", "stage"):
        assert key in r, key
    assert r["tokens_per_sec"] > 0 and 0 < r["mfu"] < 1 and r["peak_mem_gib"] > 0
    assert rows[10]["stage"] == 0 and rows[20]["stage"] == 1  # stage 2 starts at step 15
    # warmup 5 steps from ~0, then cosine decay
    assert rows[1]["lr"] == pytest.approx(3e-3 / 5) and rows[5]["lr"] == pytest.approx(3e-3)
    assert rows[60]["lr"] < rows[10]["lr"]
    # per-language validation loss falls in every language
    vals = read_metrics(out, "val")
    v0, v1 = vals[0]["val_loss"], vals[60]["val_loss"]
    assert set(v0) == set(LANGS) == set(v1)
    for lang in LANGS:
        assert v1[lang] < v0[lang], (lang, v0[lang], v1[lang])
    assert summary["first_50_mean_loss"] > summary["last_50_mean_loss"]
    assert (out / "summary.json").is_file()


def test_two_fsdp_processes_match_one_process(reference, two_proc):
    ref = read_metrics(reference[0])
    out, p = two_proc
    rows = read_metrics(out)
    assert "world=2" in p.stdout and "fsdp=True" in p.stdout
    assert sorted(rows) == list(range(1, 21))
    for s in range(1, 21):
        a, b = ref[s]["loss"], rows[s]["loss"]
        assert abs(a - b) / abs(a) < 1e-5, (s, a, b)
        assert abs(ref[s]["grad_norm"] - rows[s]["grad_norm"]) / ref[s]["grad_norm"] < 1e-4
        for lang, v in ref[s]["lang_loss"].items():
            assert abs(v - rows[s]["lang_loss"][lang]) / v < 1e-5


def test_resume_at_world_size_1_from_2_process_checkpoint(reference, two_proc, tokens, tmp_path):
    src, _ = two_proc
    ck = src / "ckpt" / "step-00000010"
    meta = json.loads((ck / "COMPLETE.json").read_text())
    assert meta["world_size"] == 2
    out = tmp_path / "ws1"
    cfg = load_config(CONFIG, overrides(tokens, out, checkpoint__resume=str(ck)))
    threads = torch.get_num_threads()
    try:
        train(cfg, stop_at_step=20)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(out)
    two = read_metrics(src)
    assert sorted(rows) == list(range(11, 21))
    for s in range(11, 21):
        assert abs(rows[s]["loss"] - two[s]["loss"]) / two[s]["loss"] < 1e-5, s
    assert rows[20]["stage"] == 1


def test_sigkill_mid_stage_then_resume_is_exact(reference, tokens, tmp_path):
    ref = read_metrics(reference[0])
    out = tmp_path / "killed"
    args = _sets(overrides(tokens, out))
    cmd = [sys.executable, "-m", "training.train", "--config", str(CONFIG)] + args
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 500
    try:
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and max(read_metrics(out), default=0) >= 25:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    complete = sorted(int(p.name.split("-")[1]) for p in (out / "ckpt").glob("step-*")
                      if (p / "COMPLETE.json").is_file())
    resume_step = complete[-1]
    assert 20 <= resume_step <= 40, complete
    state = json.loads((out / "ckpt" / f"step-{resume_step:08d}" / "train_state.json").read_text())
    assert state["loader"]["stage"] == 1 and state["loader"]["step"] == resume_step  # mid stage 2
    p = run_cli(args + ["--stop-at-step", str(resume_step + 20)])
    assert f"resumed from {out / 'ckpt'}" in p.stdout
    rows = read_metrics(out)
    for s in range(resume_step + 1, resume_step + 21):
        assert rows[s]["loss"] == ref[s]["loss"], (s, rows[s]["loss"], ref[s]["loss"])
        assert rows[s]["grad_norm"] == ref[s]["grad_norm"]
        assert rows[s]["stage"] == ref[s]["stage"] and rows[s]["lr"] == ref[s]["lr"]
        assert rows[s]["lang_loss"] == ref[s]["lang_loss"]


def test_guard_skips_nan_and_spikes(tokens, tmp_path):
    g = LossGuard(k=2.0, window=3)
    assert g.check(float("nan"), 1.0) == "nonfinite_loss"
    assert g.check(1.0, float("inf")) == "nonfinite_grad_norm"
    assert [g.check(x, 1.0) for x in (5.0, 4.0, 3.0)] == [None, None, None]
    assert g.check(9.0, 1.0) == "loss_spike"  # > median 4 + 2 x 1.4826 x MAD 1
    assert g.check(6.0, 1.0) is None
    assert g.skipped == 3
    g2 = LossGuard(2.0, 3)
    g2.load_state_dict(json.loads(json.dumps(g.state_dict())))
    assert list(g2.recent) == list(g.recent) and g2.skipped == 3
    # end to end: an absurd LR makes the loss explode; the guard skips those updates
    out = tmp_path / "spike"
    cfg = load_config(CONFIG, overrides(tokens, out, optim__lr=30.0, optim__warmup_steps=0,
                                        training__spike_window=2, training__spike_mad_k=1.5,
                                        metrics__validate="false", checkpoint__enabled="false"))
    threads = torch.get_num_threads()
    try:
        summary = train(cfg, stop_at_step=8)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(out)
    events = [r["event"] for r in rows.values() if "event" in r]
    assert summary["skipped_updates"] == len(events) > 0
    assert all(e.startswith("skipped_update:") for e in events)


def test_config_loader(tmp_path):
    cfg = load_config(REPO / "configs" / "train" / "polylm-13b.yaml")
    assert cfg.optim.lr == 6e-5 and cfg.optim.betas == (0.9, 0.95) and cfg.optim.eps == 1e-8
    assert cfg.optim.weight_decay == 0.1 and cfg.optim.grad_clip == 1.0 and cfg.optim.warmup_steps == 2000
    assert cfg.optim.min_lr_ratio == 0.1 and cfg.training.global_batch_size == 2048
    assert cfg.curriculum.stages[1].start_tokens == 540e9
    one = load_config(REPO / "configs" / "train" / "polylm-1.7b.yaml", ["optim.lr=3e-4", "training.steps=7"])
    assert one.optim.lr == 3e-4 and one.training.steps == 7 and one.model.name == "polylm-1.7b"
    load_config(REPO / "configs" / "train" / "sample-small.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1.0e-4, lr_typo: 3}\n")
    with pytest.raises(ValueError, match="lr_typo"):
        load_config(bad)
    bad.write_text("trainnig: {steps: 3}\n")
    with pytest.raises(ValueError, match="trainnig"):
        load_config(bad)
    with pytest.raises(ValueError, match="global_batch_size"):
        load_config(CONFIG, ["training.global_batch_size=7", "training.micro_batch_size=2"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    help_out = subprocess.run([sys.executable, "-m", "training.train", "--help"], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert help_out.returncode == 0 and "--stop-at-step" in help_out.stdout
