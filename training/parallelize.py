"""Apply activation checkpointing, ``torch.compile`` and FSDP2 to a ``PolyLM`` (torchtitan order).

``parallelize(model, mesh=..., mixed_precision=..., activation_checkpointing=..., compile=...)``:

1. activation checkpointing: each ``Block`` recomputes its forward in the backward pass
   (non-reentrant ``torch.utils.checkpoint``; parameter names unchanged);
2. ``torch.compile``: each ``Block`` is compiled in place (``nn.Module.compile``, names unchanged,
   so checkpoints written with and without compile are interchangeable);
3. FSDP2 ``fully_shard`` on every block, then on the root (token/position embeddings, tied output
   projection, final LayerNorm); the root is not resharded after forward (it is needed again at
   once by the loss backward; torchtitan does the same), blocks are (ZeRO-3) except the last.
   On CUDA with ``mixed_precision=True``:
   ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``, i.e. bf16 compute with fp32
   sharded master weights and fp32 gradient reduce-scatter (PolyLM trains in bf16, softmax in
   fp32, per the paper and its scripts).
   On CPU everything stays fp32 (``mixed_precision`` is ignored with a note).

Works on a CPU ``gloo`` process group (tests) and on CUDA/NCCL. Call on a model built on the
meta device, then ``model.to_empty(device=...)`` and ``model.init_weights()``.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["parallelize", "default_mesh"]

log = logging.getLogger(__name__)


def default_mesh(device_type: str | None = None):
    """1-D data-parallel ``DeviceMesh`` over all ranks of the default process group.

    Args:
        device_type: ``"cuda"`` or ``"cpu"``; default: ``"cuda"`` if the process group backend is
            NCCL, else ``"cpu"``.

    Raises:
        RuntimeError: if ``torch.distributed`` is not initialised.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("parallelize with FSDP needs an initialised process group "
                           "(torch.distributed.init_process_group, e.g. under torchrun)")
    if device_type is None:
        device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("dp",))


def parallelize(
    model: nn.Module,
    *,
    mesh=None,
    mixed_precision: bool = True,
    activation_checkpointing: bool = False,
    compile: bool = False,
    fsdp: bool | None = None,
    reshard_after_forward: bool = True,
    compile_backend: str = "inductor",
) -> nn.Module:
    """Activation checkpointing, then per-block ``torch.compile``, then FSDP2, in place.

    Args:
        model: a ``training.model.PolyLM`` (must have ``.layers`` of ``Block``), on any device
            including meta.
        mesh: 1-D ``DeviceMesh`` for data parallelism. ``None``: ``default_mesh()`` when a process
            group is initialised, otherwise FSDP is skipped (single process, plain module).
        mixed_precision: bf16 params / fp32 reduce on CUDA. On CPU ignored (fp32).
        activation_checkpointing: recompute each block in the backward pass.
        compile: ``torch.compile`` each block (inductor; needs a C++ compiler on CPU).
        fsdp: force FSDP on (True) or off (False); default: on iff a mesh is available.
        reshard_after_forward: FSDP2 option for the blocks (True = ZeRO-3; False keeps
            unsharded block params between forward and backward, ZeRO-2-like). The root is
            never resharded after forward (see step 3 above).
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces
            forward and backward graphs without code generation, for quick CPU tests).

    Returns:
        The same module object (``fully_shard`` converts it in place; its parameters become
        ``DTensor`` shards).

    Raises:
        RuntimeError: ``fsdp=True`` without an initialised process group.
        TypeError: the model has no ``layers`` ModuleList.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError("parallelize expects a PolyLM-like model with a `layers` nn.ModuleList")

    # 1. activation checkpointing (flag read by Block.forward; FQNs unchanged)
    for block in layers:
        block.activation_checkpointing = bool(activation_checkpointing)

    # 2. torch.compile per block, in place (FQNs unchanged)
    if compile:
        for block in layers:
            block.compile(backend=compile_backend)

    # 3. FSDP2
    if fsdp is None:
        fsdp = mesh is not None or (dist.is_available() and dist.is_initialized())
    if not fsdp:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mesh is None:
        mesh = default_mesh()
    if mesh.ndim != 1:
        raise ValueError(f"parallelize supports a 1-D data-parallel mesh, got ndim={mesh.ndim}")
    on_cuda = mesh.device_type == "cuda"
    if mixed_precision and on_cuda:
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        if mixed_precision and not on_cuda:
            log.info("parallelize: CPU mesh, keeping fp32 (mixed_precision ignored)")
        mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    n = len(layers)
    for i, block in enumerate(layers):
        # the last block is all-gathered again at the start of backward anyway: keep it
        fully_shard(block, mesh=mesh, mp_policy=mp,
                    reshard_after_forward=reshard_after_forward and i < n - 1)
    # the root (tied 256K-row embedding / output projection, final LayerNorm) is NOT resharded
    # after forward: the loss head needs it again at once in backward, so resharding would
    # all-gather the embedding twice per micro-batch (1.06 GB at 1.7B, 2.64 GB at 13B in bf16).
    # torchtitan does the same (parallelize_llama: fully_shard(model, reshard_after_forward=False)).
    # FSDP2 still reshards the root after backward.
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    return model
