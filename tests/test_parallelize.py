"""training.parallelize: FSDP2 on a 2-process CPU gloo mesh, activation checkpointing, compile.

(The 2-process vs 1-process 20-step loss parity of the whole trainer is in tests/test_train.py.)
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.config import ModelConfig
from training.model import PolyLM
from training.parallelize import parallelize

V = 300


def _cfg() -> ModelConfig:
    return ModelConfig.from_name("tiny", vocab_size=V, max_seq_len=32)


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (4, 24), generator=g)
    y = torch.randint(0, V, (4, 24), generator=g)
    return x, y


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.tensor import DTensor

        cfg = _cfg()
        with torch.device("meta"):
            model = PolyLM(cfg)
        parallelize(model, mixed_precision=True, activation_checkpointing=True, compile=False)
        model.to_empty(device="cpu")
        model.init_weights(seed=0)
        ref = PolyLM(cfg)
        ref.init_weights(seed=0)  # same weights as the sharded model, by construction

        res: dict = {"fsdp_params": all(isinstance(p, DTensor) for p in model.parameters()),
                     "ac": all(b.activation_checkpointing for b in model.layers),
                     "fqns": list(model.state_dict())}
        # weights: the shards assemble to the single-process init
        res["init_diff"] = max((p.full_tensor() - q).abs().max().item()
                               for p, q in zip(model.parameters(), ref.parameters()))
        # SGD: linear in the gradients, so the 2nd step compares like for like (AdamW's first
        # step is ~lr*sign(g) and turns round-off in near-zero gradients into O(lr) differences)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        opt_ref = torch.optim.SGD(ref.parameters(), lr=0.5)
        losses, ref_losses, grad_diffs = [], [], []
        for step in range(2):
            x, y = _batch(step)
            xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
            loss = model(xs, ys)  # local mean; FSDP averages gradients over ranks
            loss.backward()
            lt = loss.detach().clone()
            dist.all_reduce(lt)
            losses.append(lt.item() / world)
            lr_ = ref(x, y)
            lr_.backward()
            ref_losses.append(lr_.item())
            # per parameter: max abs difference relative to the largest reference gradient
            grad_diffs.append(max(((p.grad.full_tensor() - q.grad).abs().max()
                                   / q.grad.abs().max().clamp(min=1e-12)).item()
                                  for p, q in zip(model.parameters(), ref.parameters())))
            opt.step()
            opt.zero_grad()
            opt_ref.step()
            opt_ref.zero_grad()
        res.update(losses=losses, ref_losses=ref_losses, grad_diffs=grad_diffs)
        with torch.no_grad():
            x, y = _batch(9)
            pt = model.per_token_loss(x, y)
            res["per_token_diff"] = (pt - ref.per_token_loss(x, y)).abs().max().item()
            res["logits_shape"] = tuple(model(x).shape)
        # export from the sharded model (collective: DTensors are gathered on every rank)
        from training.export import to_hf_state_dict

        hf_sharded = to_hf_state_dict(model.state_dict(), cfg)
        hf_ref = to_hf_state_dict(ref.state_dict(), cfg)
        res["export_diff"] = max((hf_sharded[k] - hf_ref[k]).abs().max().item() for k in hf_ref)
        res["export_keys_equal"] = set(hf_sharded) == set(hf_ref)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_fsdp2_two_process_gloo_forward_backward(tmp_path):
    world = 2
    mp.spawn(_fsdp_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    for r in range(world):
        res = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert res["fsdp_params"] and res["ac"]
        # FSDP2 and AC keep parameter names (checkpoints/export rely on them)
        assert res["fqns"] == list(PolyLM(_cfg()).state_dict())
        assert res["init_diff"] == 0.0  # init is independent of the world size
        for a, b in zip(res["losses"], res["ref_losses"]):
            assert abs(a - b) / b < 1e-5, (res["losses"], res["ref_losses"])
        assert max(res["grad_diffs"]) < 1e-4, res["grad_diffs"]
        assert res["losses"][1] != res["losses"][0]  # the optimizer step happened
        assert res["per_token_diff"] < 1e-5
        assert res["logits_shape"] == (4, 24, V)
        assert res["export_keys_equal"] and res["export_diff"] < 1e-5


def test_single_process_without_process_group_is_plain_module():
    assert not dist.is_initialized()
    m = PolyLM(_cfg())
    out = parallelize(m, mixed_precision=True, activation_checkpointing=False, compile=False)
    assert out is m and type(m) is PolyLM
    with pytest.raises(RuntimeError, match="process group"):
        parallelize(PolyLM(_cfg()), mixed_precision=False, activation_checkpointing=False,
                    compile=False, fsdp=True)
    with pytest.raises(TypeError, match="layers"):
        parallelize(torch.nn.Linear(2, 2), mixed_precision=False, activation_checkpointing=False,
                    compile=False)


def test_activation_checkpointing_and_compile_keep_numerics_and_names():
    """AC recomputes blocks (same loss/grads); compile per block keeps FQNs and numerics.

    Uses the ``aot_eager`` backend: dynamo + AOTAutograd trace forward and backward (with the
    checkpointed region) without inductor's C++ code generation, which takes minutes on 2 cores.
    """
    cfg = _cfg()
    ref = PolyLM(cfg)
    m = PolyLM(cfg)
    m.load_state_dict(ref.state_dict())
    parallelize(m, mixed_precision=False, activation_checkpointing=True, compile=True,
                compile_backend="aot_eager")
    assert list(m.state_dict()) == list(ref.state_dict())
    x, y = _batch(3)
    for _ in range(2):  # second call runs the cached compiled graphs
        m.zero_grad()
        ref.zero_grad()
        loss = m(x, y)
        loss.backward()
        lr_ = ref(x, y)
        lr_.backward()
        torch.testing.assert_close(loss, lr_, rtol=1e-6, atol=1e-6)
        for (n, p), q in zip(m.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=n)
    # AC without compile, too
    m2 = PolyLM(cfg)
    m2.load_state_dict(ref.state_dict())
    parallelize(m2, mixed_precision=False, activation_checkpointing=True, compile=False)
    ref.zero_grad()
    m2(x, y).backward()
    ref(x, y).backward()
    for p, q in zip(m2.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
