"""Training metrics: console, JSONL and TensorBoard logging; MFU and memory helpers.

MFU (model FLOPs utilisation, PaLM paper appendix B)::

    mfu = tokens_per_sec * flops_per_token / (n_devices * peak_flops_per_device)

with ``flops_per_token = 6 N + 12 L d T`` from ``ModelConfig.flops_per_token(seq_len)`` (training
FLOPs: forward + backward, no recomputation counted) and ``tokens_per_sec`` the global
throughput of the step (all ranks). ``peak_flops_per_device``: the dense bf16 tensor-core peak
from :data:`GPU_PEAK_FLOPS` on CUDA (vendor data sheets); on CPU there is no vendor number we
can trust, so the peak is *measured*: the best fp32 GEMM rate of this process
(:func:`measure_cpu_peak_flops`), i.e. CPU MFU is relative to achievable matmul throughput.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["GPU_PEAK_FLOPS", "peak_flops_per_device", "measure_cpu_peak_flops", "mfu",
           "peak_memory_bytes", "MetricsLogger"]

#: Dense bf16 peak FLOP/s per GPU (no sparsity), from NVIDIA/AMD data sheets. Matched by
#: substring of ``torch.cuda.get_device_name()``, first match wins.
GPU_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("V100", 125e12),
    ("MI300X", 1307e12),
]


def measure_cpu_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best observed fp32 FLOP/s of ``n x n`` matmuls on this process's CPU threads
    (``2 n^3`` FLOPs each). Used as the CPU "peak" for MFU."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops_per_device(device: torch.device, override: float | None = None) -> tuple[float, str]:
    """``(peak FLOP/s, how it was obtained)`` for ``device``; ``override`` wins if given."""
    if override:
        return float(override), "config metrics.peak_flops_per_device"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, val in GPU_PEAK_FLOPS:
            if key in name:
                return val, f"bf16 dense peak of {name} (data sheet)"
        return 312e12, f"unknown GPU {name!r}: assuming A100 bf16 312 TFLOP/s"
    return measure_cpu_peak_flops(), "measured fp32 GEMM rate on this CPU"


def mfu(tokens_per_sec: float, flops_per_token: float, n_devices: int, peak: float) -> float:
    """Model FLOPs utilisation in [0, 1] (formula in the module docstring)."""
    return tokens_per_sec * flops_per_token / (n_devices * peak)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS
    (``getrusage`` ``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class MetricsLogger:
    """Rank-0 metrics sink: one JSON object per line in ``<out_dir>/metrics.jsonl`` (every
    call), TensorBoard scalars under ``<out_dir>/tb`` (if enabled), and a console line every
    ``log_every`` steps (and for any row with ``"event"``). Other ranks log nothing.
    ``fresh=True`` truncates an existing metrics.jsonl (a new run), else rows are appended."""

    def __init__(self, out_dir: str | Path, *, rank: int = 0, tensorboard: bool = True,
                 log_every: int = 10, fresh: bool = False):
        self.rank = rank
        self.log_every = max(int(log_every), 1)
        self.out_dir = Path(out_dir)
        self._f = None
        self._tb = None
        if rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # a fresh run starts a new file; a resumed run appends (re-done steps appear twice,
            # readers keep the last occurrence)
            self._f = open(self.out_dir / "metrics.jsonl", "w" if fresh else "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def log(self, step: int, row: dict[str, Any], *, kind: str = "train") -> None:
        """Record ``row`` (flat; nested dicts such as per-language losses are flattened to
        ``key/sub`` for TensorBoard) for ``step``."""
        if self.rank != 0:
            return
        rec = {"kind": kind, "step": int(step), **row}
        self._f.write(json.dumps(rec, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)) and math.isfinite(vv):
                            self._tb.add_scalar(f"{kind}/{k}/{kk}", vv, step)
                elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        if kind != "train" or "event" in row or step % self.log_every == 0:
            print(self.format(step, row, kind), flush=True)

    @staticmethod
    def format(step: int, row: dict[str, Any], kind: str) -> str:
        parts = [f"[{kind}] step {step}"]
        for k, v in row.items():
            if isinstance(v, dict):
                inner = " ".join(f"{kk}={vv:.3f}" if isinstance(vv, float) else f"{kk}={vv}"
                                 for kk, vv in v.items())
                parts.append(f"{k}{{{inner}}}")
            elif isinstance(v, float):
                parts.append(f"{k}={v:.4g}")
            else:
                parts.append(f"{k}={v}")
        return " ".join(parts)

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None
        if self._tb:
            self._tb.close()
            self._tb = None
