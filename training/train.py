"""PolyLM pretraining loop (FSDP2 under torchrun, or a single process).

Usage::

    torchrun --nproc-per-node 8 -m training.train --config configs/train/polylm-13b.yaml
    python -m training.train --config configs/train/sample-small.yaml
    python -m training.train --config ... --set optim.lr=3e-4 --set training.steps=50

Components (each in its own module, torchtitan style): ``training.data`` (curriculum loader),
``training.model`` + ``training.parallelize`` (PolyLM, FSDP2), ``training.optim`` (AdamW groups,
warmup + cosine), ``training.checkpoint`` (atomic DCP), ``training.metrics`` (console, JSONL,
TensorBoard, MFU).

One optimizer step:

1. the loader returns this rank's ``grad_accum x micro_batch`` windows of the global batch; they
   are copied to the device from pinned host memory (CUDA) without waiting;
2. each micro-batch's per-token fp32 loss is summed and divided by the number of label tokens
   in the *global* batch times the world size (FSDP averages gradients over ranks), so the
   gradient is that of the mean loss over the global batch at any world size / accumulation;
   FSDP2 reduce-scatters the gradients after every micro-batch (``training.
   accumulate_unsharded_grads: true`` defers that to the last one, holding unsharded fp32
   gradients of the whole model, 4 bytes x parameters per GPU, in between);
3. loss, per-language loss (each sample carries its language; the per-token losses come from
   the same fused chunked loss pass as the gradient) and token counts stay on the device and
   are all-reduced there; they reach the host once every ``metrics.log_every`` steps;
4. the global gradient L2 norm is computed; the **guard** (``training.spike_guard``) skips the
   update on the device (fused AdamW ``found_inf``: gradients dropped, the step still counts,
   LR schedule and data advance) or rolls model and optimizer back to the last checkpoint when
   the loss or the norm is NaN/inf or the loss exceeds ``median + k * 1.4826 * MAD`` of the last
   ``spike_window`` accepted losses (:class:`LossGuard`);
5. otherwise gradients are clipped to ``grad_clip`` (1.0) and AdamW steps; the LR schedule steps.

Backend: NCCL on CUDA, gloo on CPU, initialised from the torchrun environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); no environment = one process without
FSDP. CPU runs are fp32; CUDA uses bf16 compute with fp32 master weights and reductions
(``MixedPrecisionPolicy``) when ``training.mixed_precision``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.checkpoint import CheckpointManager
from training.config import ModelConfig
from training.data import CurriculumLoader, IGNORE_INDEX
from training.metrics import MetricsLogger, mfu, peak_flops_per_device, peak_memory_bytes
from training.optim import WarmupCosine, build_optimizer
from training.train_config import TrainConfig, load_config

log = logging.getLogger("training.train")

__all__ = ["train", "main", "LossGuard", "forward_backward", "all_reduce_sum_", "evaluate"]


# ------------------------------------------------------------------------------- distributed
def init_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """Initialise ``torch.distributed`` from torchrun's environment if present.

    Returns ``(rank, world_size, device)``. Uses NCCL when the device is CUDA, else gloo. The
    group has one backend only (NCCL serves CUDA tensors only): every collective of the trainer
    runs on tensors on the training device, through :func:`all_reduce_sum_`, which checks it.
    Raises ``RuntimeError`` if ``device_pref == "cuda"`` and CUDA is unavailable.
    """
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("training.device=cuda but CUDA is not available")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if not dist.is_initialized():
            if use_cuda:
                dist.init_process_group(backend="nccl", device_id=device)
            else:
                dist.init_process_group(backend="gloo")
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, torch.device("cuda", 0) if use_cuda else torch.device("cpu")


def served_device_types(group=None) -> list[str]:
    """Device types (``"cpu"``, ``"cuda"``, ...) the process group has a backend for
    (NCCL: ``["cuda"]``; gloo: ``["cpu"]`` or ``["cpu", "cuda"]``; ``"cpu:gloo,cuda:nccl"``:
    both). Empty if torch does not say (the check below is then skipped)."""
    pg = group if group is not None else dist.group.WORLD
    try:
        return sorted({torch.device(d).type for d in pg._device_types})
    except (AttributeError, RuntimeError):
        return []


def all_reduce_sum_(t: torch.Tensor, device: torch.device, group=None) -> torch.Tensor:
    """In-place SUM all-reduce of ``t`` over ``group`` (default: world); identity without a
    process group. Every collective of the trainer's own (token counts, loss statistics,
    validation sums) goes through here.

    Raises:
        RuntimeError: ``t`` is not on the training ``device``, or the group has no backend for
            ``t``'s device type (the case that stops an NCCL job at step 1: "No backend type
            associated with device type cpu"). Checked from tensor metadata (no host sync).
    """
    if not dist.is_initialized():
        return t
    if t.device != device:
        raise RuntimeError(f"collective on a tensor on {t.device}, but the training device is {device}: "
                           "keep statistics on the training device (NCCL serves CUDA tensors only)")
    served = served_device_types(group)
    if served and t.device.type not in served:
        raise RuntimeError(f"collective on a {t.device.type} tensor, but the process group "
                           f"({dist.get_backend(group)}) serves only {served}")
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch tensor -> ``device``. On CUDA the copy is made from pinned (page-locked)
    host memory with ``non_blocking=True``, so it overlaps compute and never waits on the GPU
    (pinned blocks come from PyTorch's caching host allocator, which keeps a block until the
    copy reading it is done); on CPU ``t`` is returned as is (pinning needs an accelerator)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


# ---------------------------------------------------------------------------------- guard
#: Consistency constant: 1.4826 x MAD estimates the standard deviation of normally distributed
#: data (Hampel 1974; Rousseeuw & Croux 1993, JASA 88(424)), so ``k`` is in "sigmas".
MAD_TO_SIGMA = 1.4826


class LossGuard:
    """Detects non-finite loss/grad norm and loss spikes with a robust statistic, on the device.

    A spike is ``loss > median + k * max(1.4826 * MAD, rel_floor * median)`` over the last
    ``window`` accepted losses (checked once ``window`` losses were accepted; ``k <= 0``
    disables spike detection; NaN/inf always triggers). Median and MAD (median absolute
    deviation) are not moved by earlier spikes or a few outliers, unlike the mean.

    Constants: ``k = 6`` and ``window = 128`` follow OLMo-core's skip-step optimizer
    (``SkipStepOptimizer``: skip when the loss is more than 6 standard deviations above the
    rolling statistics of the last 128 steps), with median / 1.4826 x MAD in place of mean /
    std; ``rel_floor = 0.01`` (a spike must exceed the median by at least 1% x k) is this
    project's choice, so a window of near-identical losses (MAD ~ 0) does not flag noise.

    The window lives in a ring buffer on ``device`` and :meth:`decide` works on device tensors
    only, so the trainer decides without a host sync (the update is then skipped on the device,
    see ``train``). :meth:`check` is the same decision for host floats.
    """

    REASONS = (None, "nonfinite_loss", "nonfinite_grad_norm", "loss_spike")

    def __init__(self, k: float, window: int, rel_floor: float = 0.01, device: torch.device | str = "cpu"):
        self.k = float(k)
        self.window = max(int(window), 1)
        self.rel_floor = float(rel_floor)
        self.buf = torch.zeros(self.window, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)  # losses accepted so far
        self.skipped_t = torch.zeros((), dtype=torch.int64, device=device)

    def _threshold_t(self) -> torch.Tensor:
        med = torch.quantile(self.buf, 0.5)  # the mean of the two middle values for even sizes
        mad = torch.quantile((self.buf - med).abs(), 0.5)
        return med + self.k * torch.maximum(MAD_TO_SIGMA * mad, self.rel_floor * med.abs())

    @torch.no_grad()
    def decide(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """0-dim int64 tensor on the guard's device: 0 accept (the loss joins the window),
        1 non-finite loss, 2 non-finite gradient norm, 3 loss spike (index into
        :attr:`REASONS`). ``loss``/``grad_norm``: 0-dim tensors on the same device. No sync."""
        loss = loss.to(torch.float64)
        grad_norm = grad_norm.to(torch.float64)
        if self.k > 0:
            spike = (self.count >= self.window) & (loss > self._threshold_t())
        else:
            spike = torch.zeros((), dtype=torch.bool, device=loss.device)
        zero = torch.zeros((), dtype=torch.int64, device=loss.device)
        code = torch.where(~torch.isfinite(loss), zero + 1,
                           torch.where(~torch.isfinite(grad_norm), zero + 2,
                                       torch.where(spike, zero + 3, zero)))
        accept = code == 0
        pos = (self.count % self.window).reshape(1)
        self.buf.index_copy_(0, pos, torch.where(accept, loss, self.buf.index_select(0, pos)[0]).reshape(1))
        self.count += accept.long()
        self.skipped_t += (~accept).long()
        return code

    def check(self, loss: float, grad_norm: float) -> str | None:
        """Host version of :meth:`decide`: the reason to skip (``"nonfinite_loss"``,
        ``"nonfinite_grad_norm"``, ``"loss_spike"``) or ``None`` to accept."""
        dev = self.buf.device
        code = self.decide(torch.tensor(float(loss), device=dev), torch.tensor(float(grad_norm), device=dev))
        return self.REASONS[int(code)]

    def threshold(self) -> float:
        """Loss above which the next step is a spike (``inf`` until the window is full or when
        ``k <= 0``). Host read."""
        if self.k <= 0 or int(self.count) < self.window:
            return math.inf
        return float(self._threshold_t())

    @property
    def recent(self) -> list[float]:
        """Accepted losses in the window, oldest first (host read)."""
        n = min(int(self.count), self.window)
        vals = self.buf.tolist()
        start = int(self.count) - n
        return [vals[(start + i) % self.window] for i in range(n)]

    @property
    def skipped(self) -> int:
        """Updates skipped so far (host read)."""
        return int(self.skipped_t)

    def state_dict(self) -> dict:
        return {"recent": self.recent, "skipped": self.skipped}

    def load_state_dict(self, s: dict) -> None:
        recent = [float(x) for x in s.get("recent", [])][-self.window:]
        self.buf.zero_()
        if recent:
            self.buf[:len(recent)] = torch.tensor(recent, dtype=torch.float64)
        self.count.fill_(len(recent))
        self.skipped_t.fill_(int(s.get("skipped", 0)))


# ------------------------------------------------------------------------------------ model
def build_model_config(cfg: TrainConfig, manifest_vocab: int) -> ModelConfig:
    """``ModelConfig`` from ``cfg.model`` with the vocabulary from the token manifest
    (``vocab_size: auto``) and ``max_seq_len >= data.seq_len``. Raises ``ValueError`` if an
    explicit vocab is smaller than the tokenizer's or the context is too short."""
    overrides = dict(cfg.model.overrides or {})
    vocab = manifest_vocab if cfg.model.vocab_size in (None, "auto") else int(cfg.model.vocab_size)
    if vocab < manifest_vocab:
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's {manifest_vocab}")
    overrides["vocab_size"] = vocab
    mcfg = ModelConfig.from_name(cfg.model.name, **overrides)
    if mcfg.max_seq_len < cfg.data.seq_len:
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds the model's max_seq_len="
                         f"{mcfg.max_seq_len}; set model.overrides.max_seq_len")
    return mcfg


def build_model(mcfg: ModelConfig, cfg: TrainConfig, device: torch.device, distributed: bool):
    """PolyLM built on the meta device, parallelised (FSDP2 when ``distributed``),
    materialised on ``device`` and initialised with ``training.seed`` (same weights at any
    world size, see ``PolyLM.init_weights``)."""
    from training.model import PolyLM
    from training.parallelize import parallelize

    with torch.device("meta"):
        model = PolyLM(mcfg)
    model = parallelize(
        model,
        mixed_precision=cfg.training.mixed_precision and device.type == "cuda",
        activation_checkpointing=cfg.training.activation_checkpointing,
        compile=cfg.training.compile,
        fsdp=distributed,
    )
    model.to_empty(device=device)
    model.init_weights(seed=cfg.training.seed)
    return model


def grad_norm(model: torch.nn.Module) -> tuple[torch.Tensor, list]:
    """Global L2 norm of all gradients (over every FSDP shard) as a 0-dim tensor on the
    training device (no host sync), plus the parameters for ``clip_grads_with_norm_``."""
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False, foreach=True)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    return total, params


def forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lang_ids: torch.Tensor,
                     *, world: int, n_languages: int, distributed: bool,
                     accumulate_unsharded_grads: bool = False) -> torch.Tensor:
    """Forward and backward of one optimizer step's micro-batches on this rank.

    Args:
        x, y: int64 ``[grad_accum, micro_batch, seq_len]`` inputs / labels on the training device.
        lang_ids: int64 ``[grad_accum, micro_batch]`` language index of each sample, same device.
        world: data-parallel world size.
        n_languages: ``L``, the number of languages.
        accumulate_unsharded_grads: ``False`` (default): FSDP2 reduce-scatters the gradients
            after every micro-batch, so only sharded fp32 gradients (1/world of the model) are
            held between micro-batches (torchtitan). ``True``: no gradient sync until the last
            micro-batch (one reduce-scatter per step, less communication), at the cost of an
            unsharded fp32 gradient copy of the whole model per GPU (4 bytes x parameters).

    Each micro-batch's per-token fp32 loss sum is scaled by ``world / (label tokens of the
    global batch)`` (FSDP averages gradients over ranks), so the gradient is that of the mean
    loss of the global batch at any world size and accumulation. The per-token losses for the
    statistics come from the same fused chunked loss pass (``loss_reduction="sum_and_none"``),
    i.e. the output projection runs once per micro-batch.

    Returns:
        float64 ``[2 + 2L]`` statistics on the training device, all-reduced over ranks:
        ``[loss sum, label tokens, loss sum per language (L), label tokens per language (L)]``.
        No host synchronisation happens here.
    """
    device = x.device
    L = n_languages
    n_valid = (y != IGNORE_INDEX).sum(dtype=torch.float64).reshape(1)
    all_reduce_sum_(n_valid, device)
    scale = (world / n_valid[0]).to(torch.float32)
    stats = torch.zeros(2 + 2 * L, dtype=torch.float64, device=device)
    grad_accum = x.shape[0]
    for m in range(grad_accum):
        if distributed and accumulate_unsharded_grads:
            model.set_requires_gradient_sync(m == grad_accum - 1)
        total, tok = model(x[m], y[m], loss_reduction="sum_and_none")  # scalar, [B, T] fp32
        (total * scale).backward()
        with torch.no_grad():
            valid = (y[m] != IGNORE_INDEX).to(torch.float64)
            per_sample = (tok.double() * valid).sum(1)
            cnt = valid.sum(1)
            stats[0] += per_sample.sum()
            stats[1] += cnt.sum()
            stats[2:2 + L].index_add_(0, lang_ids[m], per_sample)
            stats[2 + L:].index_add_(0, lang_ids[m], cnt)
    return all_reduce_sum_(stats, device)


# --------------------------------------------------------------------------------- validate
@torch.no_grad()
def token_bytes_table(tokenizer_path: str | Path, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes each token id stands for in decoded text: ``float64 [vocab_size]``.

    A normal piece counts the bytes of its text (``▁`` -> one space), a byte-fallback piece
    (``<0xNN>``) one byte, control and unknown pieces (``<s>``, ``</s>``, ``<pad>``, ``<unk>``)
    zero, ids past the tokenizer's vocabulary zero. Summed over the labels of held-out windows it
    gives their text's byte count (plus one byte per word-initial ``▁`` of a document start), the
    denominator of bits per byte (Gao et al. 2020, The Pile, sec. 4).

    Raises:
        OSError: the SentencePiece model cannot be read.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    out = torch.zeros(vocab_size, dtype=torch.float64)
    for i in range(min(vocab_size, sp.get_piece_size())):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        out[i] = 1.0 if sp.is_byte(i) else len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out


def _manifest_tokenizer(manifest) -> Path | None:
    """The token manifest's SentencePiece model (recorded relative to the token directory, or
    absolute), or None when it is not there."""
    rec = getattr(manifest, "tokenizer", "") or ""
    if not rec:
        return None
    for cand in (Path(manifest.root) / rec, Path(rec)):
        if cand.is_file():
            return cand
    return None


def evaluate(model, val, *, micro_batch: int, device, rank: int, world: int,
             languages: list[str], token_bytes: torch.Tensor | None = None,
             bpb_out: dict[str, float] | None = None) -> dict[str, float]:
    """Per-language mean validation loss (nats/token) on ``val`` (a ``ValidationSet``).

    Rows are padded with ignored labels to a multiple of ``world * micro_batch`` so every rank
    runs the same number of forwards (required by FSDP collectives). Sums stay on ``device``;
    one all-reduce and one host read at the end. With ``token_bytes`` (see
    :func:`token_bytes_table`), ``bpb_out`` is filled with each language's bits per byte:
    sum of NLL / ln 2 / sum of the label tokens' bytes."""
    n = val.input_ids.shape[0]
    if n == 0:
        return {}
    chunk = world * micro_batch
    pad = (-n) % chunk
    x, y, lid = val.input_ids, val.labels, val.lang_ids
    if pad:
        x = torch.cat([x, x[:1].expand(pad, -1)])
        y = torch.cat([y, torch.full((pad, y.shape[1]), IGNORE_INDEX, dtype=y.dtype)])
        lid = torch.cat([lid, lid[:1].expand(pad)])
    L = len(languages)
    sums = torch.zeros(3 * L, dtype=torch.float64, device=device)
    tb = token_bytes.to(device) if token_bytes is not None else None
    was_training = model.training
    model.eval()
    for start in range(0, x.shape[0], chunk):
        lo = start + rank * micro_batch
        xb = to_device(x[lo:lo + micro_batch].contiguous(), device)
        yb = to_device(y[lo:lo + micro_batch].contiguous(), device)
        lb = to_device(lid[lo:lo + micro_batch].contiguous(), device)
        tok = model(xb, yb, loss_reduction="none").float()
        valid = (yb != IGNORE_INDEX).to(torch.float64)
        sums[:L].index_add_(0, lb, (tok.double() * valid).sum(1))
        sums[L:2 * L].index_add_(0, lb, valid.sum(1))
        if tb is not None:
            ids = yb.clamp(min=0, max=tb.shape[0] - 1)
            sums[2 * L:].index_add_(0, lb, (tb[ids] * valid).sum(1))
    model.train(was_training)
    host = all_reduce_sum_(sums, device).tolist()
    if bpb_out is not None and tb is not None:
        bpb_out.update({languages[i]: host[i] / math.log(2) / host[2 * L + i]
                        for i in range(L) if host[2 * L + i] > 0})
    return {languages[i]: host[i] / host[L + i] for i in range(L) if host[L + i] > 0}


# ------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig, *, stop_at_step: int | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the run summary (the full one on rank 0,
    run name/steps/seconds/skipped updates elsewhere). ``stop_at_step``: stop after this global
    step (a checkpoint is written there when checkpointing is enabled), leaving the schedule
    unchanged.

    Host synchronisation: the loop keeps loss/token statistics, gradient norms and the spike
    guard's decisions on the training device and reads them to the host once every
    ``metrics.log_every`` steps (and before validation, checkpoints and the end), writing the
    buffered per-step rows then; ``step_time_s`` / ``tokens_per_sec`` of a row are the mean
    over its flush window. The guard's ``skip`` happens on the device (fused AdamW's
    ``found_inf``); only ``spike_guard: rollback`` (a host decision to load a checkpoint)
    reads the guard's verdict every step.
    """
    t_start = time.perf_counter()
    if cfg.training.num_threads:
        torch.set_num_threads(int(cfg.training.num_threads))
    rank, world, device = init_distributed(cfg.training.device)
    distributed = dist.is_initialized()
    torch.manual_seed(cfg.training.seed)
    out_dir = Path(cfg.out_dir)

    tcfg = cfg.training
    if tcfg.global_batch_size % (tcfg.micro_batch_size * world):
        raise ValueError(f"training.global_batch_size={tcfg.global_batch_size} is not a multiple of "
                         f"micro_batch_size*world_size={tcfg.micro_batch_size}*{world}")
    loader = CurriculumLoader(
        cfg.data.tokens_dir, seq_len=cfg.data.seq_len, global_batch_size=tcfg.global_batch_size,
        micro_batch_size=tcfg.micro_batch_size, stages=cfg.curriculum.stages,
        total_steps=tcfg.steps, dp_rank=rank, dp_world=world, seed=cfg.data.seed,
        # the hold-out does not depend on metrics.validate: switching validation off must not
        # change the training data
        val_fraction=cfg.data.val_fraction,
        val_files_per_stream=cfg.data.val_files_per_stream,
        val_max_windows_per_lang=cfg.data.val_max_windows_per_lang,
    )
    languages = loader.languages
    mcfg = build_model_config(cfg, loader.manifest.vocab_size)
    model = build_model(mcfg, cfg, device, distributed)
    o = cfg.optim
    optimizer = build_optimizer(model, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                embedding_weight_decay=o.embedding_weight_decay)
    scheduler = WarmupCosine(optimizer, peak_lr=o.lr, warmup_steps=o.warmup_steps,
                             total_steps=tcfg.steps, min_ratio=o.min_lr_ratio, schedule=o.schedule)
    guard = LossGuard(tcfg.spike_mad_k, tcfg.spike_window, device=device)
    guard_on = tcfg.spike_guard != "off"
    ckpt = CheckpointManager(cfg.checkpoint.dir, keep_last=cfg.checkpoint.keep_last,
                             checksum=cfg.checkpoint.checksum) if cfg.checkpoint.enabled else None

    start_step = 0
    if ckpt is not None:
        state = ckpt.load(model, optimizer, resume=cfg.checkpoint.resume)
        if state is not None:
            loader.load_state_dict(state["loader"])
            scheduler.load_state_dict(state["scheduler"])
            guard.load_state_dict(state.get("guard", {}))
            start_step = int(state["step"])
            if loader.step != start_step:
                raise RuntimeError(f"checkpoint inconsistent: step {start_step}, loader at {loader.step}")

    metrics = MetricsLogger(out_dir, rank=rank, tensorboard=cfg.metrics.tensorboard,
                            log_every=cfg.metrics.log_every, fresh=start_step == 0)
    peak, peak_src = peak_flops_per_device(device, cfg.metrics.peak_flops_per_device)
    fpt = mcfg.flops_per_token(cfg.data.seq_len)
    n_params = sum(p.numel() for p in model.parameters())  # local shard sizes under FSDP
    if distributed:
        n_params = mcfg.num_params(padded=True)
    end_step = tcfg.steps if stop_at_step is None else min(int(stop_at_step), tcfg.steps)
    if rank == 0:
        print(f"[train] run {cfg.run_name}: model {mcfg.name} L={mcfg.n_layers} d={mcfg.d_model} "
              f"V={mcfg.vocab_size} params={n_params / 1e6:.2f}M flops/token={fpt / 1e6:.2f}M | "
              f"world={world} device={device} backend={dist.get_backend() if distributed else 'none'} "
              f"fsdp={distributed} | global_batch={tcfg.global_batch_size}x{cfg.data.seq_len} "
              f"micro={tcfg.micro_batch_size} grad_accum={loader.grad_accum} | steps {start_step}->{end_step} "
              f"of {tcfg.steps}", flush=True)
        for i, (st, start) in enumerate(zip(loader.stages, loader.stage_starts)):
            shares = loader.target_language_shares(i)
            top = ", ".join(f"{k}={v:.3f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:6])
            print(f"[train] curriculum stage {i} '{st.name}' from step {start}: {top}, ...", flush=True)
        print(f"[train] MFU = tokens_per_sec * flops_per_token / (n_devices * peak); "
              f"flops_per_token = 6N + 12*L*d*T = {fpt:.4g}; peak = {peak:.4g} FLOP/s ({peak_src})",
              flush=True)

    val_set = loader.validation_set() if cfg.metrics.validate else None
    token_bytes = None
    if val_set is not None:
        spm_path = _manifest_tokenizer(loader.manifest)
        if spm_path is not None:
            token_bytes = token_bytes_table(spm_path, mcfg.vocab_size)
        elif rank == 0:
            print("[train] validation: no tokenizer in the token manifest, so no bits per byte "
                  "(val_loss only)", flush=True)
    L = len(languages)
    seq = cfg.data.seq_len
    # rows of the current flush window: (step, host fields, device tensor [2 + 2L + 2]:
    # statistics, gradient norm, guard code)
    pending: list[tuple[int, dict, torch.Tensor]] = []
    window_t0 = time.perf_counter()

    def flush() -> None:
        """Read the buffered statistics to the host (one sync) and write their rows."""
        nonlocal window_t0
        if not pending:
            return
        host = torch.stack([t for _, _, t in pending]).tolist()
        dt = (time.perf_counter() - window_t0) / len(pending)
        tps = tcfg.global_batch_size * seq / dt
        mem = peak_memory_bytes(device) / 2**30
        for (step_no, extra, _), v in zip(pending, host):
            row = {
                "loss": v[0] / v[1],
                "lang_loss": {languages[i]: v[2 + i] / v[2 + L + i] for i in range(L) if v[2 + L + i] > 0},
                "grad_norm": v[2 + 2 * L],
                "lr": extra["lr"],
                "stage": extra["stage"],
                "tokens_per_sec": tps,
                "mfu": mfu(tps, fpt, world, peak),
                "peak_mem_gib": mem,
                "step_time_s": dt,
            }
            if "event" in extra:
                row["event"] = extra["event"]
            elif v[3 + 2 * L]:
                row["event"] = f"skipped_update:{LossGuard.REASONS[int(v[3 + 2 * L])]}"
                log.warning("step %d: update skipped (%s), loss=%.4g grad_norm=%.4g", step_no,
                            LossGuard.REASONS[int(v[3 + 2 * L])], row["loss"], row["grad_norm"])
            metrics.log(step_no, row)
        pending.clear()
        window_t0 = time.perf_counter()

    def run_validation(step: int) -> dict[str, float]:
        nonlocal window_t0
        flush()
        bpb: dict[str, float] = {}
        res = evaluate(model, val_set, micro_batch=cfg.metrics.val_micro_batch_size, device=device,
                       rank=rank, world=world, languages=languages, token_bytes=token_bytes, bpb_out=bpb)
        if res:
            mean = sum(res.values()) / len(res)
            row = {"val_loss_mean": mean, "val_loss": res}
            if bpb:  # held-out bits per byte per language (comparable with `make eval`'s heldout)
                row["val_bpb"] = bpb
            metrics.log(step, row, kind="val")
        window_t0 = time.perf_counter()  # validation time is not training time
        return res

    first_val = None
    if val_set is not None and start_step == 0 and end_step > 0:
        first_val = run_validation(0)

    def save(step: int) -> None:
        nonlocal window_t0
        flush()
        ckpt.save(step, model, optimizer, {
            "loader": loader.state_dict(), "scheduler": scheduler.state_dict(),
            "guard": guard.state_dict(), "run_name": cfg.run_name, "languages": languages,
        })
        window_t0 = time.perf_counter()

    model.train()
    step = start_step
    for step in range(start_step, end_step):
        batch = loader.next_batch()
        lr = scheduler.current_lr()
        stats = forward_backward(
            model, to_device(batch.input_ids, device), to_device(batch.labels, device),
            to_device(batch.lang_ids, device), world=world, n_languages=L, distributed=distributed,
            accumulate_unsharded_grads=tcfg.accumulate_unsharded_grads)
        total_norm, params = grad_norm(model)
        extra: dict[str, Any] = {"lr": lr, "stage": batch.stage}
        code = guard.decide(stats[0] / stats[1], total_norm) if guard_on else None
        if code is not None and tcfg.spike_guard == "rollback" and ckpt is not None and int(code):
            # rolling back is a host decision: one read per step in this mode
            reason = LossGuard.REASONS[int(code)]
            restored = ckpt.load(model, optimizer, resume="auto")
            event = f"skipped_update:{reason}"
            if restored is not None:
                # model and optimizer go back; the data and the LR schedule go on, so the
                # batches around the spike are skipped (PaLM, arXiv 2204.02311 sec. 5.1)
                event = f"rolled_back:{reason}:to_step_{restored['step']}"
            extra["event"] = event
            log.warning("step %d: %s", step + 1, event)
            code = None  # nothing left to skip on the device
        else:
            torch.nn.utils.clip_grads_with_norm_(params, o.grad_clip, total_norm, foreach=True)
            # fused AdamW skips the whole update (moments, step count) on the device when
            # found_inf != 0 -- the mechanism torch.amp.GradScaler uses; no host sync
            optimizer.found_inf = (code != 0).float() if code is not None else None
            optimizer.grad_scale = None
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        code_t = (code if code is not None else torch.zeros((), dtype=torch.int64, device=device))
        pending.append((step + 1, extra, torch.cat([stats, total_norm.detach().double().reshape(1),
                                                    code_t.double().reshape(1)])))
        done = step + 1
        if "event" in extra or done % cfg.metrics.log_every == 0:
            flush()
        if val_set is not None and cfg.metrics.val_every > 0 and done % cfg.metrics.val_every == 0 \
                and done != end_step:
            run_validation(done)
        if ckpt is not None and cfg.checkpoint.interval > 0 and done % cfg.checkpoint.interval == 0:
            save(done)
    flush()

    last_val = run_validation(end_step) if (val_set is not None and end_step > start_step) else {}
    if ckpt is not None and end_step > start_step and not (
            cfg.checkpoint.interval > 0 and end_step % cfg.checkpoint.interval == 0):
        save(end_step)

    summary = _summarise(cfg, out_dir, rank, first_val, last_val, start_step, end_step,
                         time.perf_counter() - t_start, guard.skipped)
    metrics.close()
    if distributed:
        dist.barrier()
    return summary


def _summarise(cfg, out_dir: Path, rank: int, first_val, last_val, start_step, end_step,
               seconds, skipped) -> dict[str, Any]:
    """Loss-curve summary from metrics.jsonl (covers resumed runs), printed and written to
    ``<out_dir>/summary.json`` on rank 0."""
    summary: dict[str, Any] = {"run_name": cfg.run_name, "steps": end_step, "seconds": seconds,
                               "skipped_updates": skipped}
    if rank != 0:
        return summary
    rows: dict[int, dict] = {}
    vals: dict[int, dict] = {}
    mpath = out_dir / "metrics.jsonl"
    if mpath.is_file():
        for line in mpath.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if r.get("kind") == "train" and r["step"] <= end_step:
                rows[r["step"]] = r  # the latest run wins for a re-done step
            elif r.get("kind") == "val" and r["step"] <= end_step:
                vals[r["step"]] = r
    curve = [rows[s]["loss"] for s in sorted(rows)]
    k = min(50, len(curve))
    if curve:
        summary["first_50_mean_loss"] = sum(curve[:k]) / k
        summary["last_50_mean_loss"] = sum(curve[-k:]) / k
        tps = [rows[s]["tokens_per_sec"] for s in sorted(rows)][1:] or [rows[min(rows)]["tokens_per_sec"]]
        summary["tokens_per_sec_mean"] = sum(tps) / len(tps)
        summary["mfu_mean"] = sum(rows[s]["mfu"] for s in sorted(rows)) / len(rows)
    if vals:
        summary["val_loss_first"] = vals[min(vals)]["val_loss"]
        summary["val_loss_last"] = vals[max(vals)]["val_loss"]
        summary["val_first_step"], summary["val_last_step"] = min(vals), max(vals)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(f"[train] done: steps {start_step}->{end_step} in {seconds:.1f} s, skipped updates: {skipped}")
    if curve:
        print(f"[train] loss curve: first {k}-step mean {summary['first_50_mean_loss']:.4f}, "
              f"last {k}-step mean {summary['last_50_mean_loss']:.4f} ({len(curve)} steps logged)")
        print(f"[train] mean tokens_per_sec {summary['tokens_per_sec_mean']:.1f}, mean mfu {summary['mfu_mean']:.4f}")
    if vals:
        a, b = summary["val_loss_first"], summary["val_loss_last"]
        print(f"[train] validation loss per language (step {min(vals)} -> {max(vals)}):")
        for lang in b:
            before = a.get(lang, float("nan"))
            print(f"    {lang}: {before:.4f} -> {b[lang]:.4f}  ({b[lang] - before:+.4f})")
    sys.stdout.flush()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.train",
        description="PolyLM pretraining with a language curriculum (FSDP2 under torchrun).")
    ap.add_argument("--config", required=True, help="YAML run config (configs/train/*.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (repeatable), e.g. --set optim.lr=3e-4")
    ap.add_argument("--stop-at-step", type=int, default=None,
                    help="stop after this global step (schedule unchanged; checkpoint written)")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config, args.set)
    except (FileNotFoundError, ValueError, TypeError) as e:  # bad config / --set: exit 2, no traceback
        print(f"[train] error: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, stop_at_step=args.stop_at_step)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
