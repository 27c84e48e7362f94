"""AdamW with PolyLM's parameter groups, and the warmup + cosine LR schedule.

Numbers (PolyLM paper arXiv 2307.06018 section 3.2 and its released scripts; ``shared/DESIGN.md``):
AdamW beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1 on matrix weights and, by default, the
token/position embeddings (not on biases or LayerNorm parameters: Megatron-LM's rule, which
PolyLM trained with -- ``megatron/core/optimizer/__init__.py`` ``_get_param_groups``: no decay
iff ``name.endswith(".bias") or len(param.shape) == 1``; ``embedding_weight_decay=False``
exempts the embeddings), gradient clipping at global norm 1.0, linear warmup over 2000 steps
from ~0, then cosine decay to 10% of the peak LR.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["param_groups", "build_optimizer", "lr_factor", "WarmupCosine"]


def _no_decay(name: str, p: torch.Tensor, embedding_weight_decay: bool = True) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return (
        p.ndim < 2
        or leaf == "bias"
        # tok_emb / pos_emb (the token embedding is also the tied output layer)
        or (not embedding_weight_decay and "emb" in name)
        or ".ln_" in f".{name}"
        or "norm" in name
    )


def param_groups(model: nn.Module, weight_decay: float, *, embedding_weight_decay: bool = True) -> list[dict]:
    """Two AdamW groups: ``decay`` (matrix weights of attention/MLP and, when
    ``embedding_weight_decay`` (default, Megatron-LM's rule), the token/position embeddings;
    ``weight_decay``) and ``no_decay`` (biases, LayerNorm weights/biases, and the embeddings
    when not decayed; 0). Each group carries its FQNs in ``"names"`` (for logging; ignored by
    the optimizer). Raises ``ValueError`` if the model has no trainable parameter."""
    decay, no_decay, dn, nn_ = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if _no_decay(name, p, embedding_weight_decay):
            no_decay.append(p); nn_.append(name)
        else:
            decay.append(p); dn.append(name)
    if not decay and not no_decay:
        raise ValueError("model has no trainable parameters")
    return [
        {"params": decay, "weight_decay": float(weight_decay), "names": dn},
        {"params": no_decay, "weight_decay": 0.0, "names": nn_},
    ]


def build_optimizer(model: nn.Module, *, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
                    weight_decay: float = 0.1, embedding_weight_decay: bool = True) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups`, fused implementation (one kernel per
    device and dtype group, on CPU and CUDA; works on FSDP2 DTensor parameters, as in
    torchtitan). Fused AdamW honours ``optimizer.found_inf`` (a 0-dim tensor; non-zero skips
    the whole update, moments and step count included, on the device -- the mechanism of
    ``torch.amp.GradScaler``), which the trainer's spike guard uses without a host sync."""
    groups = param_groups(model, weight_decay, embedding_weight_decay=embedding_weight_decay)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.1,
              schedule: str = "cosine") -> float:
    """Multiplier of the peak LR for optimizer step ``step`` (0-based).

    Warmup: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (starts near 0, reaches
    1.0 at the last warmup step); with ``schedule="exp_ramp"`` warmup is geometric instead,
    from ``min_ratio`` at step 0 to 1.0 at the last warmup step (``jobs/lr_find.py``).
    ``cosine``: then ``min_ratio + (1 - min_ratio) * 0.5 * (1 +
    cos(pi * p))`` with ``p = (step - warmup) / (total - warmup)`` clamped to [0, 1], i.e. the
    peak decays to ``min_ratio`` (0.1) of it at ``total_steps``. ``linear_ramp``: warmup, then 1.0.
    """
    if schedule == "exp_ramp" and warmup_steps > 0 and step < warmup_steps:
        if warmup_steps == 1:
            return 1.0
        return min_ratio ** (1.0 - step / (warmup_steps - 1))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule in ("linear_ramp", "exp_ramp"):
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    span = max(total_steps - warmup_steps, 1)
    p = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


class WarmupCosine:
    """LR scheduler setting ``group["lr"] = peak_lr * lr_factor(step)`` on every group.

    ``step()`` advances by one optimizer step; ``state_dict()``/``load_state_dict()`` hold the
    step (the schedule itself comes from config). Call :meth:`apply` once after construction
    or loading so the optimizer holds the LR of the current step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, peak_lr: float, warmup_steps: int,
                 total_steps: int, min_ratio: float = 0.1, schedule: str = "cosine"):
        self.optimizer = optimizer
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)
        self.schedule = schedule
        self.last_step = 0
        self.apply()

    def current_lr(self) -> float:
        """LR (float) for the next optimizer step."""
        return self.peak_lr * lr_factor(self.last_step, warmup_steps=self.warmup_steps,
                                        total_steps=self.total_steps, min_ratio=self.min_ratio,
                                        schedule=self.schedule)

    def apply(self) -> float:
        lr = self.current_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def step(self) -> float:
        self.last_step += 1
        return self.apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "peak_lr": self.peak_lr,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_ratio": self.min_ratio, "schedule": self.schedule}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step. The schedule parameters of the current config win (a resumed run
        may deliberately change them); the step is what must carry over."""
        self.last_step = int(state["last_step"])
        self.apply()
