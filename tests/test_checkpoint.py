"""Tests for training/checkpoint.py and training/optim.py: atomic DCP save, keep-last-k,
truncated/corrupt/incomplete checkpoints fall back to the previous one, exact state round trip,
AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.checkpoint import CheckpointError, CheckpointManager, list_checkpoints, verify_checkpoint
from training.config import ModelConfig
from training.model import PolyLM
from training.optim import WarmupCosine, build_optimizer, lr_factor, param_groups


def _model_opt(seed=0):
    torch.manual_seed(seed)
    model = PolyLM(ModelConfig.from_name("tiny", vocab_size=128, max_seq_len=16))
    model.init_weights(seed=seed)
    opt = build_optimizer(model, lr=1e-3)
    return model, opt


def _train_step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 128, (2, 16), generator=g)
    loss = model(x, torch.roll(x, -1, 1))
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss.detach())


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_save_load_round_trip_and_keep_last(tmp_path):
    model, opt = _model_opt()
    mgr = CheckpointManager(tmp_path / "ck", keep_last=2)
    saved = {}
    for step in range(1, 5):
        _train_step(model, opt, step)
        mgr.save(step, model, opt, {"loader": {"step": step}, "note": "x"})
        saved[step] = (_params(model), {k: {kk: vv.clone() for kk, vv in v.items()}
                                        for k, v in opt.state_dict()["state"].items()})
    steps = [s for s, _ in list_checkpoints(tmp_path / "ck")]
    assert steps == [4, 3]  # keep_last=2, newest first
    assert not list((tmp_path / "ck").glob("*.tmp"))
    m2, o2 = _model_opt(seed=99)  # different weights, empty optimizer state
    state = CheckpointManager(tmp_path / "ck").load(m2, o2)
    assert state["step"] == 4 and state["loader"] == {"step": 4} and state["world_size"] == 1
    for k, v in _params(m2).items():
        assert torch.equal(v, saved[4][0][k]), k
    for pid, st in o2.state_dict()["state"].items():
        for kk, vv in st.items():
            assert torch.equal(vv, saved[4][1][pid][kk])
    # training continues identically from the restored state
    a = _train_step(model, opt, 100)
    b = _train_step(m2, o2, 100)
    assert a == b


def _corrupt_setup(tmp_path):
    model, opt = _model_opt()
    mgr = CheckpointManager(tmp_path / "ck", keep_last=3)
    for step in (10, 20):
        _train_step(model, opt, step)
        mgr.save(step, model, opt, {"loader": {"step": step}})
    return mgr, tmp_path / "ck" / "step-00000020"


def test_truncated_latest_falls_back_with_message(tmp_path, capsys):
    mgr, latest = _corrupt_setup(tmp_path)
    shard = max(latest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert "truncated" in verify_checkpoint(latest)
    m, o = _model_opt(seed=5)
    state = mgr.load(m, o)
    assert state["step"] == 10
    out = capsys.readouterr().out
    assert "step-00000020 is not usable" in out and "falling back" in out


def test_bitflip_and_missing_marker_detected(tmp_path):
    mgr, latest = _corrupt_setup(tmp_path)
    shard = max(latest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    assert "CRC32" in verify_checkpoint(latest)
    (latest / "COMPLETE.json").unlink()
    assert "marker" in verify_checkpoint(latest)
    m, o = _model_opt(seed=5)
    assert mgr.load(m, o)["step"] == 10
    # an explicitly requested bad checkpoint is an error, not a silent fallback
    with pytest.raises(CheckpointError, match="not usable"):
        mgr.load(m, o, resume=str(latest))


def test_interrupted_save_is_ignored(tmp_path):
    mgr, latest = _corrupt_setup(tmp_path)
    tmp = tmp_path / "ck" / "step-00000030.tmp"
    tmp.mkdir()
    (tmp / "partial.distcp").write_bytes(b"\0" * 10)
    m, o = _model_opt(seed=5)
    assert mgr.load(m, o)["step"] == 20
    assert mgr.load(m, o, resume="never") is None
    assert CheckpointManager(tmp_path / "empty").load(m, o) is None


def test_param_groups_no_decay_on_bias_norm_embeddings():
    model, _ = _model_opt()
    decay, no_decay = param_groups(model, 0.1, embedding_weight_decay=False)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith(".weight") and ("qkv" in n or "proj" in n or "fc" in n) for n in decay["names"])
    for n in ("tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias", "layers.0.ln_1.weight",
              "layers.0.attn.qkv.bias", "layers.1.mlp.proj.bias"):
        assert n in no_decay["names"], n
    n_all = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == n_all
    opt = build_optimizer(model, lr=1e-4)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8


def test_param_groups_decay_embeddings_by_default_like_megatron():
    """Megatron-LM (PolyLM's trainer) exempts only biases and 1-D params: embeddings decay."""
    model, _ = _model_opt()
    decay, no_decay = param_groups(model, 0.1)
    assert "tok_emb.weight" in decay["names"] and "pos_emb.weight" in decay["names"]
    assert all(p.ndim == 1 for p in no_decay["params"])  # biases and LayerNorm only
    from training.train_config import OptimSection

    assert OptimSection().embedding_weight_decay is True
    opt = build_optimizer(model, lr=1e-4, embedding_weight_decay=False)
    emb = dict(model.named_parameters())["tok_emb.weight"]
    assert [g["weight_decay"] for g in opt.param_groups if any(p is emb for p in g["params"])] == [0.0]


def test_warmup_cosine_schedule():
    kw = dict(warmup_steps=2000, total_steps=10000, min_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(1 / 2000)  # starts near 0
    assert lr_factor(1999, **kw) == pytest.approx(1.0)
    assert lr_factor(2000, **kw) == pytest.approx(1.0)
    assert lr_factor(6000, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_factor(10000, **kw) == pytest.approx(0.1)
    assert lr_factor(20000, **kw) == pytest.approx(0.1)  # floor at 10% of peak
    assert lr_factor(50, warmup_steps=100, total_steps=1000, schedule="linear_ramp") == pytest.approx(0.51)
    assert lr_factor(500, warmup_steps=100, total_steps=1000, schedule="linear_ramp") == 1.0
    model, opt = _model_opt()
    s = WarmupCosine(opt, peak_lr=1e-4, **kw)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 / 2000)
    for _ in range(3000):
        s.step()
    s2 = WarmupCosine(build_optimizer(model, lr=1e-4), peak_lr=1e-4, **kw)
    s2.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert s2.current_lr() == s.current_lr() == pytest.approx(
        1e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 1000 / 8000))))
