"""Per-GPU memory budget of one FSDP2 training step, and its check by PyTorch's FSDP2 tracker.

Two independent figures for the same step (``training.parallelize`` FSDP2, bf16 params / fp32
reduce, AdamW, chunked fused loss):

* :func:`estimate_memory` -- a closed-form budget, line by line (bytes per GPU);
* :func:`track_memory` -- PyTorch's own ``FSDPMemTracker``
  (``torch.distributed._tools.fsdp2_mem_tracker``) around one real training step of the real
  model code and the real ``parallelize()``, run under ``FakeTensorMode`` on a ``"fake"``
  process group of ``n_gpus`` ranks on the CPU (no memory is allocated, no GPU needed; the
  approach of torchtitan's ``scripts/estimate.py``).

``python -m training.memory`` (``make model-summary``) prints both for polylm-1.7b on 8 GPUs and
polylm-13b on 64 GPUs at the paper's global batch (PolyLM arXiv 2307.06018 sec. 3: 512 and 2048
sequences of 2048 tokens; micro batch of ``configs/train/polylm-*.yaml``) with activation
checkpointing. Tests check that they agree within 10% (tests/test_memory.py).

What the budget counts (``P`` parameters, padded per FSDP shard; ``n`` GPUs; ``N = micro_batch x
seq_len`` tokens; ``V`` vocabulary, ``d`` width, ``L`` layers; the default step reduce-scatters
every micro-batch):

* sharded fp32 master params ``4P/n``, sharded fp32 grads ``4P/n``, AdamW ``exp_avg`` +
  ``exp_avg_sq`` ``8P/n`` (ZeRO-3 with 16 B/param, Rajbhandari et al. 2020 sec. 3);
* the root (token + position embeddings, final LayerNorm) unsharded in bf16 (``2 B`` each) for
  the whole forward and backward (``reshard_root_after_forward=False``, as torchtitan); with
  ``True`` the backward all-gathers it again (one more root-sized buffer while copying out);
* two block-sized bf16 buffers in flight: the unsharded current block and the all-gather
  output FSDP2 keeps alive until the next all-gather (prefetch);
* activations: with activation checkpointing only each block's input ``[N, d]`` bf16 (``L`` of
  them) plus the final LayerNorm's input and output and the loss input-gradient ``[N, d]``;
  without it the ``~34 N d`` bytes per block of a bf16 GPT block with flash attention
  (Korthikanti et al. 2022, "Reducing Activation Recomputation", sec. 4.1, ``sbh(34 + 5as/h)``
  without the attention-score term that flash attention removes);
* the loss head of ``training.model.fused_linear_cross_entropy`` (gradients computed chunk by
  chunk in the forward, chunk ``c = loss_chunk_tokens``): the fp32 weight-gradient accumulator
  ``4 V d`` (with one chunk there is none: the GEMM writes the bf16 gradient, ``2 V d``), and the
  largest of three moments: a chunk's bf16 logits and their fp32 copy ``6 c V`` (softmax and its
  gradient are computed in place in that copy), the bf16 logit gradient ``2 c V`` with the
  weight-gradient GEMM's bf16 output ``2 V d`` (added into the accumulator), or the final cast of
  the accumulator to bf16 ``2 V d``; at 13B the loss head, not the transformer, is the largest
  transient;
* backward: the tied embedding's bf16 gradient is held from the loss backward until the embedding
  backward (``2 V d``), then summed with it (two more ``2 V d``); the root's fp32 reduce-scatter
  input (``4 x root``) while its bf16 unsharded gradient still exists;
* ``training.accumulate_unsharded_grads=true`` (no gradient sync between micro-batches) adds an
  unsharded fp32 gradient of the whole model per GPU (``4 P``), reported as its own line.

Not counted by either figure, stated as margins on top: caching-allocator fragmentation (an
allowance of 10% of the peak; ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` lowers it) and
the CUDA context, cuBLAS workspace and NCCL buffers (an allowance of 2 GiB). These are
allowances, not measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from training.config import ModelConfig, model_names

__all__ = ["MemoryEstimate", "estimate_memory", "track_memory", "comparison_table",
           "FRAGMENTATION_MARGIN", "CONTEXT_ALLOWANCE_BYTES", "PAPER_RUNS"]

GIB = 1024 ** 3
#: allowance for caching-allocator fragmentation, as a fraction of the tracked peak (not measured)
FRAGMENTATION_MARGIN = 0.10
#: allowance for the CUDA context, cuBLAS workspace and NCCL buffers per GPU (not measured)
CONTEXT_ALLOWANCE_BYTES = 2 * GIB
#: (config, GPUs, micro batch, global batch) of the paper's runs (PolyLM sec. 3; micro batch from
#: configs/train/polylm-*.yaml), checked by ``make model-summary``
PAPER_RUNS = (("polylm-1.7b", 8, 8, 512), ("polylm-13b", 64, 2, 2048))


@dataclass
class MemoryEstimate:
    """Per-GPU memory budget of one training step.

    Attributes:
        lines: ``{name: bytes}`` of the components at the peak moment, in order.
        peak_bytes: sum of ``lines`` (what the tracker measures).
        phase: where the peak happens (``"forward: loss head"``, ``"backward: ..."``).
        no_sync_extra_bytes: extra bytes with ``accumulate_unsharded_grads`` (unsharded fp32
            gradients of the whole model); already included in ``lines``/``peak_bytes`` when the
            estimate was made with that option.
        budget_bytes: ``peak_bytes * (1 + FRAGMENTATION_MARGIN) + CONTEXT_ALLOWANCE_BYTES``.
        other_phases: ``{phase: bytes}`` of the other candidate peaks.
    """

    lines: dict[str, int]
    peak_bytes: int
    phase: str
    no_sync_extra_bytes: int
    budget_bytes: int
    other_phases: dict[str, int] = field(default_factory=dict)

    def gib(self) -> dict[str, float]:
        """``lines`` in GiB."""
        return {k: v / GIB for k, v in self.lines.items()}


def _shapes(cfg: ModelConfig) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(root parameter shapes, shapes of one block's parameters), from the module on meta."""
    from training.model import Block, PolyLM

    with torch.device("meta"):
        block = Block(cfg)
        model = PolyLM(cfg)
    block_shapes = [tuple(p.shape) for p in block.parameters()]
    root_shapes = [tuple(p.shape) for n, p in model.named_parameters() if not n.startswith("layers.")]
    return root_shapes, block_shapes


def _numel(shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def _shard_numel(shapes, n: int) -> int:
    # FSDP2 shards dim 0 and pads it to a multiple of the world size
    return sum(math.ceil(s[0] / n) * math.prod(s[1:]) for s in shapes)


def estimate_memory(
    cfg: ModelConfig,
    n_gpus: int,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    activation_checkpointing: bool = True,
    mixed_precision: bool = True,
    reshard_root_after_forward: bool = False,
    accumulate_unsharded_grads: bool = False,
    loss_chunk_tokens: int | None = None,
) -> MemoryEstimate:
    """Closed-form per-GPU peak memory of one FSDP2 training step (see the module docstring).

    Args:
        cfg: model config.
        n_gpus: FSDP world size (>= 1).
        micro_batch: sequences per GPU per forward/backward.
        seq_len: tokens per sequence (default ``cfg.max_seq_len``).
        activation_checkpointing: every block recomputed in the backward.
        mixed_precision: bf16 params in compute, fp32 master weights / reduce (False: all fp32).
        reshard_root_after_forward: FSDP2 flag of the root module (embeddings, final LN).
        accumulate_unsharded_grads: no gradient sync between micro-batches (the option
            ``training.accumulate_unsharded_grads``): unsharded fp32 gradients of the model.
        loss_chunk_tokens: override ``cfg.loss_chunk_tokens``.

    Returns:
        :class:`MemoryEstimate` (bytes).

    Raises:
        ValueError: non-positive ``n_gpus``, ``micro_batch`` or ``seq_len``.
    """
    T = seq_len or cfg.max_seq_len
    if n_gpus < 1 or micro_batch < 1 or T < 1:
        raise ValueError(f"n_gpus, micro_batch and seq_len must be >= 1, got {n_gpus}, {micro_batch}, {T}")
    p = 2 if mixed_precision else 4           # bytes of a compute-dtype element
    root_shapes, block_shapes = _shapes(cfg)
    L, d, V, Vp = cfg.n_layers, cfg.d_model, cfg.vocab_size, cfg.padded_vocab_size
    N = micro_batch * T
    c = min(loss_chunk_tokens or cfg.loss_chunk_tokens, N)
    shard = _shard_numel(root_shapes, n_gpus) + L * _shard_numel(block_shapes, n_gpus)
    root, block = _numel(root_shapes), _numel(block_shapes)
    total = root + L * block

    static = {
        "sharded fp32 params": 4 * shard,
        "sharded fp32 grads": 4 * shard,
        "AdamW exp_avg + exp_avg_sq (fp32)": 8 * shard,
    }
    no_sync = 4 * total
    if accumulate_unsharded_grads:
        static["unsharded fp32 grads (no-sync accumulation)"] = no_sync
    root_unsharded = p * root
    blocks_in_flight = 2 * p * block
    if activation_checkpointing:
        acts = (L + 3) * N * d * p          # block inputs, final LN input/output, loss dh
        per_block_recompute = 17 * N * d * p  # one block's activations (34 N d bytes in bf16)
    else:
        acts = L * 17 * N * d * p + 3 * N * d * p
        per_block_recompute = 0
    f32_copy = 4 if p != 4 else 0           # .float() of an fp32 tensor is the tensor itself
    multi = N > c                           # more than one chunk: an fp32 dW accumulator
    acc = 4 * Vp * d if multi else p * Vp * d
    head_lse = acc + p * c * V + f32_copy * c * V    # logits + fp32 copy (softmax, grad in place)
    head_wgrad = acc + p * c * V + (p * V * d if multi and p != 4 else 0)  # dlogits + dW GEMM out
    head_cast = acc + (p * Vp * d if multi and p != 4 else 0)  # fp32 dW -> compute dtype
    loss_head = max(head_lse, head_wgrad, head_cast)

    fwd = dict(static)
    if accumulate_unsharded_grads:  # sharded grads appear only in the last micro-batch's backward
        fwd["sharded fp32 grads"] = 0
    fwd["unsharded bf16 root (tied embedding, pos emb, final LN)" if p == 2 else
        "unsharded root (tied embedding, pos emb, final LN)"] = root_unsharded
    fwd["block params in flight (unsharded + all-gather buffer)"] = blocks_in_flight
    fwd["activations" + (" (checkpointed block inputs)" if activation_checkpointing else "")] = acts
    fwd[f"loss head (chunk {c} tokens: fp32 dW, logits, softmax temporaries)"] = loss_head

    # backward, first block after the loss: the tied embedding's gradient from the loss is held
    # until the embedding backward; one block recomputed with its gradients and fp32 reduce-scatter
    bwd_block = dict(static)
    bwd_block["unsharded root"] = root_unsharded * (2 if reshard_root_after_forward else 1)
    bwd_block["block params in flight"] = blocks_in_flight
    bwd_block["activations"] = acts - 2 * N * d * p + per_block_recompute
    bwd_block["tied embedding grad from the loss"] = p * Vp * d
    bwd_block["block grads (bf16 unsharded + fp32 reduce-scatter)"] = (p + 4) * block
    # backward, end: embedding grad + loss grad + their sum, then the root's fp32 reduce-scatter
    bwd_root = dict(static)
    bwd_root["unsharded root"] = root_unsharded
    bwd_root["root grads (3 x embedding-sized bf16 / fp32 reduce-scatter)"] = max(
        3 * p * Vp * d, p * root + 4 * root)
    bwd_root["previous block reduce-scatter"] = 4 * block
    phases = {"forward: loss head": fwd, "backward: last block": bwd_block,
              "backward: embeddings (root)": bwd_root}
    sums = {k: sum(v.values()) for k, v in phases.items()}
    phase = max(sums, key=sums.get)
    peak = sums[phase]
    return MemoryEstimate(
        lines=phases[phase], peak_bytes=peak, phase=phase, no_sync_extra_bytes=no_sync,
        budget_bytes=int(peak * (1 + FRAGMENTATION_MARGIN) + CONTEXT_ALLOWANCE_BYTES),
        other_phases={k: v for k, v in sums.items() if k != phase})


@contextlib.contextmanager
def _fake_world(n_gpus: int):
    """A ``"fake"`` process group of ``n_gpus`` ranks (this process is rank 0), torn down after."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers "fake"

    if dist.is_initialized():
        raise RuntimeError("track_memory needs a process without a process group "
                           "(run it in its own process, e.g. python -m training.memory)")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=n_gpus)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _tracker_patches(root_reshard: bool | None, mixed_precision: bool):
    """Two documented adjustments for running the GPU configuration under fake tensors on CPU.

    1. ``parallelize()`` applies bf16 ``MixedPrecisionPolicy`` only on a CUDA mesh; the fake
       run has a CPU mesh (a CPU-only torch cannot build a CUDA mesh), so ``fully_shard`` is
       given the CUDA policy (bf16 params, fp32 reduce). With ``root_reshard`` not None the
       root's ``reshard_after_forward`` is set to it (for ``parallelize()`` versions that do not
       expose it).
    2. DTensor sharding propagation builds global-shape fake tensors inside the *active* fake
       mode (``detect_fake_mode() or FakeTensorMode()`` in ``torch.distributed.tensor.
       _sharding_prop``); under an outer ``FakeTensorMode`` the tracker counts them as if they
       were allocated (e.g. three full fp32 copies of the embedding in the AdamW step). Giving
       propagation its own fake mode lets the tracker skip them, as it does in eager mode.
    """
    import torch.distributed.fsdp as tfsdp
    import torch.distributed.tensor._sharding_prop as sprop

    from training.model import PolyLM

    orig_fs, orig_detect = tfsdp.fully_shard, sprop.detect_fake_mode

    def fully_shard(module, **kw):
        if mixed_precision:
            kw["mp_policy"] = tfsdp.MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                         reduce_dtype=torch.float32)
        if root_reshard is not None and isinstance(module, PolyLM):
            kw["reshard_after_forward"] = root_reshard
        return orig_fs(module, **kw)

    import training.parallelize as par

    # parallelize() may import fully_shard inside the function or at module level
    had_module_level = hasattr(par, "fully_shard")
    tfsdp.fully_shard = fully_shard
    if had_module_level:
        orig_par = par.fully_shard
        par.fully_shard = fully_shard
    sprop.detect_fake_mode = lambda *a, **k: None
    try:
        yield
    finally:
        tfsdp.fully_shard, sprop.detect_fake_mode = orig_fs, orig_detect
        if had_module_level:
            par.fully_shard = orig_par


def track_memory(
    cfg: ModelConfig,
    n_gpus: int,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    activation_checkpointing: bool = True,
    mixed_precision: bool = True,
    reshard_root_after_forward: bool | None = False,
    accumulate_unsharded_grads: bool = False,
) -> dict:
    """Peak per-GPU memory of one training step measured by PyTorch's ``FSDPMemTracker``.

    Runs under ``FakeTensorMode`` on a ``"fake"`` process group of ``n_gpus`` ranks in this
    process (no memory allocated; CPU only). The model is built on meta, passed through the real
    ``training.parallelize.parallelize`` and ``training.optim.build_optimizer``; AdamW states and
    sharded gradients are created first (the state from the second step on), then the tracked
    step runs as the trainer's: micro-batch forward with the fused loss and backward (two
    micro-batches, the first without gradient sync, under ``accumulate_unsharded_grads``),
    gradient-norm clipping, ``optimizer.step()``, ``zero_grad``.

    Args:
        cfg, n_gpus, micro_batch, seq_len, activation_checkpointing, mixed_precision,
        accumulate_unsharded_grads: as :func:`estimate_memory`.
        reshard_root_after_forward: the root's FSDP2 flag; ``None`` keeps what ``parallelize()``
            sets.

    Returns:
        ``{"peak_bytes": int, "breakdown": {category: bytes}, "seconds": float}``.

    Raises:
        RuntimeError: a process group is already initialised in this process.
    """
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed.device_mesh import init_device_mesh

    from training.model import PolyLM
    from training.optim import build_optimizer
    from training.parallelize import parallelize

    T = seq_len or cfg.max_seq_len
    t0 = time.perf_counter()
    dev = torch.device("cpu")
    with _fake_world(n_gpus), _tracker_patches(reshard_root_after_forward, mixed_precision):
        mesh = init_device_mesh("cpu", (n_gpus,), mesh_dim_names=("dp",))
        with FakeTensorMode():
            with torch.device("meta"):
                model = PolyLM(cfg)
            parallelize(model, mesh=mesh, mixed_precision=mixed_precision,
                        activation_checkpointing=activation_checkpointing)
            model.to_empty(device=dev)
            optimizer = build_optimizer(model, lr=1e-4)
            # steady state: AdamW states exist; with reduce-scatter per micro-batch the sharded
            # fp32 grads exist from the first micro-batch on (zeros here)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=accumulate_unsharded_grads)
            x = torch.zeros((micro_batch, T), dtype=torch.long, device=dev)
            tracker = FSDPMemTracker(model, optimizer)
            with tracker:
                tracker.track_inputs((x, x))
                n_micro = 2 if accumulate_unsharded_grads else 1
                for m in range(n_micro):
                    tracker.reset_mod_stats()
                    model.set_requires_gradient_sync(m == n_micro - 1)
                    model(x, x, loss_reduction="sum").backward()
                params = [p for p in model.parameters() if p.grad is not None]
                norm = torch.nn.utils.get_total_norm([p.grad for p in params], 2.0, False, True)
                norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                torch.nn.utils.clip_grads_with_norm_(params, 1.0, norm, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            snap = tracker.get_tracker_snapshot("peak")[dev]
    assert not dist.is_initialized()
    breakdown = {str(getattr(k, "value", k)): int(v) for k, v in snap.items() if k != "Total"}
    return {"peak_bytes": int(snap["Total"]), "breakdown": breakdown,
            "seconds": time.perf_counter() - t0}


def comparison_table(runs=PAPER_RUNS, *, track: bool = True, activation_checkpointing: bool = True,
                     reshard_root_after_forward: bool = False) -> str:
    """Text: for each ``(config, gpus, micro_batch, global_batch)`` the estimate line by line,
    the tracker's peak beside it, the no-sync extra and the budget with margins."""
    out = []
    for name, gpus, mb, gb in runs:
        cfg = ModelConfig.from_name(name)
        est = estimate_memory(cfg, gpus, micro_batch=mb, activation_checkpointing=activation_checkpointing,
                              reshard_root_after_forward=reshard_root_after_forward)
        accum = gb // (mb * gpus)
        out.append(f"{name} on {gpus} GPUs: global batch {gb} x {cfg.max_seq_len}, micro batch {mb} "
                   f"({accum} micro-batches/step), activation checkpointing "
                   f"{'on' if activation_checkpointing else 'off'}, bf16 params / fp32 reduce, "
                   f"root resharded after forward: {reshard_root_after_forward}")
        out.append(f"  estimate, peak at {est.phase}:")
        for k, v in est.lines.items():
            out.append(f"    {k:<66s} {v / GIB:7.2f} GiB")
        line = f"  peak per GPU: estimate {est.peak_bytes / GIB:.2f} GiB"
        if track:
            tr = track_memory(cfg, gpus, micro_batch=mb, activation_checkpointing=activation_checkpointing,
                              reshard_root_after_forward=reshard_root_after_forward)
            rel = est.peak_bytes / tr["peak_bytes"] - 1
            line += (f" | FSDPMemTracker (fake tensors, {gpus} fake ranks) {tr['peak_bytes'] / GIB:.2f} GiB"
                     f" | difference {100 * rel:+.1f}% ({tr['seconds']:.0f} s)")
        out.append(line)
        out.append(f"  + fragmentation allowance {100 * FRAGMENTATION_MARGIN:.0f}% + CUDA context/NCCL "
                   f"{CONTEXT_ALLOWANCE_BYTES / GIB:.0f} GiB => budget {est.budget_bytes / GIB:.2f} GiB/GPU "
                   f"({'fits' if est.budget_bytes <= 60 * GIB else 'DOES NOT fit'} 60 GiB of an 80 GB GPU)")
        ns = estimate_memory(cfg, gpus, micro_batch=mb, activation_checkpointing=activation_checkpointing,
                             reshard_root_after_forward=reshard_root_after_forward,
                             accumulate_unsharded_grads=True)
        out.append(f"  option training.accumulate_unsharded_grads=true (no-sync): + "
                   f"{est.no_sync_extra_bytes / GIB:.2f} GiB unsharded fp32 grads => peak "
                   f"{ns.peak_bytes / GIB:.2f} GiB/GPU, budget {ns.budget_bytes / GIB:.2f} GiB "
                   f"({'fits' if ns.budget_bytes <= 60 * GIB else 'DOES NOT fit'} 60 GiB)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.memory",
        description="Per-GPU memory of one FSDP2 training step: closed-form estimate beside "
                    "PyTorch's FSDPMemTracker run under fake tensors on a fake process group "
                    "(CPU only). Default: polylm-1.7b on 8 GPUs (micro batch 8) and polylm-13b "
                    "on 64 GPUs (micro batch 2), paper global batches, activation checkpointing.")
    ap.add_argument("--config", choices=model_names(), help="one config instead of the paper runs")
    ap.add_argument("--gpus", type=int, help="FSDP world size (with --config)")
    ap.add_argument("--micro-batch", type=int, help="sequences per GPU per micro-batch (with --config)")
    ap.add_argument("--no-track", action="store_true", help="estimate only (skip the fake-tensor run)")
    ap.add_argument("--no-activation-checkpointing", action="store_true")
    ap.add_argument("--reshard-root", action="store_true",
                    help="reshard the root (embeddings) after forward (default: kept unsharded)")
    args = ap.parse_args(argv)
    runs = PAPER_RUNS
    if args.config:
        if not (args.gpus and args.micro_batch) or args.gpus < 1 or args.micro_batch < 1:
            ap.error("--config needs --gpus N and --micro-batch B (positive ints)")
        runs = ((args.config, args.gpus, args.micro_batch, args.gpus * args.micro_batch),)
    elif args.gpus or args.micro_batch:
        ap.error("--gpus / --micro-batch go with --config")
    print(comparison_table(runs, track=not args.no_track,
                           activation_checkpointing=not args.no_activation_checkpointing,
                           reshard_root_after_forward=args.reshard_root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
