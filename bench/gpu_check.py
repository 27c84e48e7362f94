"""GPU check of the trainer (``make gpu-check``; issue 13): one prepared script, < 8 minutes on one GPU.

Without CUDA it prints one line saying so and exits 0. On CUDA:

1. **Loss parity, NCCL, bf16.** Synthetic, learnable token shards (5 languages, bands of token
   ids, documents are arithmetic progressions: no corpus build needed) are written to a
   temporary directory; the ``make train`` config (``configs/train/sample-small.yaml``, the
   ``small`` PolyLM) runs ``--steps`` (40) steps under ``torchrun`` on every visible GPU (FSDP2,
   NCCL, bf16 compute with fp32 master weights and reductions), and the same run on the CPU in
   fp32 (one process). Global batch ``8 x n_gpus`` sequences, so both see the same data. The
   loss curves must agree within ``--tol`` (default 3%) relative at every step: bf16 keeps 8
   mantissa bits (relative rounding 2^-9 = 0.2% per operation), and the difference grows over
   the steps of a short run at the config's LR; 3% is this project's bound for 40 steps.
   Prints tokens_per_sec, MFU against the device's dense bf16 peak
   (``training.metrics.GPU_PEAK_FLOPS``: A100 312, H100 SXM / H200 989 TFLOP/s), and the peak
   memory (``torch.cuda.max_memory_allocated``) next to the model-state estimate
   (``training.model.fsdp_memory_per_gpu``; activations are outside its scope for this size).
2. **1.7B-width MFU.** ``polylm-1.7b`` (d 2048, 16 heads, vocab 256,000, seq 2048) with as many of
   its 24 layers as the GPU's memory allows (said so when fewer), one GPU, the trainer's path
   (FSDP2 on a 1-rank NCCL group, bf16 compute, fp32 master weights), AdamW,
   ``torch.compile`` per block (``--no-compile`` to skip) and activation checkpointing when the
   activations would not fit otherwise; ``--timed-steps`` steps after ``--warmup-steps`` are
   timed (``torch.cuda.synchronize`` around them). MFU = tokens_per_sec x flops_per_token /
   peak with flops_per_token = 6N + 12 L d T (PaLM appendix B). Target (issue 13, not a test):
   >= 45% on one H100/H200.

    python bench/gpu_check.py [--steps 40] [--tol 0.03] [--timed-steps 10] [--no-compile]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NO_CUDA_LINE = "gpu-check: CUDA is not available on this machine; nothing to check (exit 0)"
SMALL_CONFIG = REPO / "configs" / "train" / "sample-small.yaml"
LANGS = ["en", "zh", "de", "ar", "ja"]


def synthetic_tokens(root: Path, vocab: int = 8000, docs_per_stream: int = 300, seed: int = 0) -> Path:
    """Learnable synthetic token shards: per language a band of ``vocab // 8`` ids; documents
    are arithmetic progressions inside the band (lengths 20-200). Returns the tokens dir."""
    import numpy as np

    from training.data import write_token_shards

    rng = np.random.default_rng(seed)
    band = vocab // 8
    docs = {}
    for li, lang in enumerate(LANGS):
        base = 10 + band * li
        for src in ("web", "wiki"):
            ds = []
            for _ in range(docs_per_stream):
                st, step, n = rng.integers(0, band), rng.integers(1, 7), rng.integers(20, 200)
                ds.append([base + int((st + step * k) % band) for k in range(n)])
            docs[(lang, src)] = ds
    return write_token_shards(root, docs, vocab_size=vocab, eos_id=2, docs_per_file=100,
                              tiers={"web": "web", "wiki": "reference"})


def _rows(out: Path) -> dict[int, dict]:
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "train":
            rows[r["step"]] = r
    return rows


def _run(cmd: list[str], env: dict, what: str, timeout: int) -> None:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-3000:], sep="\n")
        raise SystemExit(f"gpu-check: the {what} run failed (exit {p.returncode})")
    print(f"[gpu-check] {what} run: {time.perf_counter() - t0:.0f} s", flush=True)


def _estimate_gib(mcfg, n_gpus: int) -> float | None:
    """``fsdp_memory_per_gpu(...)["total"]`` (GiB) whatever the keyword options; None if absent."""
    try:
        from training.model import fsdp_memory_per_gpu

        est = fsdp_memory_per_gpu(mcfg, n_gpus)
        return float(est["total"]) if isinstance(est, dict) and "total" in est else None
    except Exception as e:  # noqa: BLE001 - the estimate is informative here, never fatal
        print(f"[gpu-check] memory estimate unavailable: {type(e).__name__}: {e}")
        return None


def loss_parity(args, n_gpus: int, work: Path) -> bool:
    """Part 1: small config, bf16 + NCCL on all GPUs vs fp32 on the CPU. True if within tol."""
    import torch

    from training.config import ModelConfig
    from training.metrics import peak_flops_per_device

    tokens = synthetic_tokens(work / "tokens")
    gb = 8 * n_gpus
    common = [f"data.tokens_dir={tokens}", f"training.steps={args.steps}", "optim.warmup_steps=10",
              f"training.global_batch_size={gb}", "training.micro_batch_size=4",
              "metrics.validate=false", "metrics.tensorboard=false", "checkpoint.enabled=false",
              "metrics.log_every=10"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    sets = lambda xs: [a for x in xs for a in ("--set", x)]  # noqa: E731
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    gpu_out, cpu_out = work / "gpu", work / "cpu"
    _run([torchrun, "--standalone", "--nproc-per-node", str(n_gpus), "-m", "training.train",
          "--config", str(SMALL_CONFIG)]
         + sets(common + [f"out_dir={gpu_out}", "training.device=cuda", "training.mixed_precision=true"]),
         env, f"GPU (bf16, NCCL, {n_gpus} GPU(s))", timeout=300)
    _run([sys.executable, "-m", "training.train", "--config", str(SMALL_CONFIG)]
         + sets(common + [f"out_dir={cpu_out}", "training.device=cpu",
                          f"training.num_threads={max(os.cpu_count() or 1, 1)}"]),
         env, "CPU (fp32, 1 process)", timeout=300)
    g, c = _rows(gpu_out), _rows(cpu_out)
    steps = sorted(set(g) & set(c))
    rel = [abs(g[s]["loss"] - c[s]["loss"]) / abs(c[s]["loss"]) for s in steps]
    worst = max(range(len(steps)), key=lambda i: rel[i])
    ok = len(steps) == args.steps and max(rel) <= args.tol
    print(f"[gpu-check] loss curve, {len(steps)} steps: GPU bf16 first {g[steps[0]]['loss']:.4f} "
          f"last {g[steps[-1]]['loss']:.4f} | CPU fp32 first {c[steps[0]]['loss']:.4f} last "
          f"{c[steps[-1]]['loss']:.4f} | max rel diff {max(rel):.4f} at step {steps[worst]} "
          f"(tolerance {args.tol}) -> {'OK' if ok else 'FAIL'}")
    late = [g[s] for s in steps[len(steps) // 2:]]
    tps = sum(r["tokens_per_sec"] for r in late) / len(late)
    peak_mem = max(r["peak_mem_gib"] for r in g.values())
    manifest = json.loads((tokens / "manifest.json").read_text())
    mcfg = ModelConfig.from_name("small", vocab_size=manifest["vocab_size"],
                                 **_yaml_overrides(SMALL_CONFIG))
    peak, src = peak_flops_per_device(torch.device("cuda", 0))
    fpt = mcfg.flops_per_token(64)
    print(f"[gpu-check] small: tokens_per_sec {tps:.0f} (global, 2nd half of the run), "
          f"mfu {tps * fpt / (n_gpus * peak):.4f} vs {peak / 1e12:.0f} TFLOP/s ({src}); this model is "
          f"far too small to load a GPU, the figure only proves the path")
    est = _estimate_gib(mcfg, n_gpus)
    print(f"[gpu-check] small: peak memory (max_memory_allocated) {peak_mem:.3f} GiB per GPU; "
          f"estimate (model state + all-gather, activations excluded) "
          f"{'n/a' if est is None else f'{est:.3f} GiB'}")
    return ok


def _yaml_overrides(path: Path) -> dict:
    import yaml

    return dict((yaml.safe_load(path.read_text()).get("model") or {}).get("overrides") or {})


def _time_17b(args, layers: int, ac: bool, dev, seq: int, mb: int):
    """Build the 1.7B-width model with ``layers`` blocks (trainer path) and time it; returns
    ``(ModelConfig, seconds per step, warm-up seconds, peak GiB)``. Raises CUDA OOM."""
    import torch

    from training.config import ModelConfig
    from training.optim import build_optimizer
    from training.train import build_model, forward_backward
    from training.train_config import load_config

    cfg = load_config(REPO / "configs" / "train" / "polylm-1.7b.yaml",
                      [f"training.activation_checkpointing={str(ac).lower()}",
                       f"training.compile={str(not args.no_compile).lower()}", "training.device=cuda"])
    mcfg = ModelConfig.from_name("polylm-1.7b", n_layers=layers)
    model = opt = None
    try:
        torch.cuda.reset_peak_memory_stats(dev)
        model = build_model(mcfg, cfg, dev, distributed=True)  # FSDP2 + bf16 policy (+ compile, AC)
        opt = build_optimizer(model, lr=1e-4)
        params = list(model.parameters())
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randint(0, mcfg.vocab_size, (1, mb, seq), device=dev, generator=g)
        y = torch.randint(0, mcfg.vocab_size, (1, mb, seq), device=dev, generator=g)
        lid = torch.zeros(1, mb, dtype=torch.long, device=dev)

        def step():
            forward_backward(model, x, y, lid, world=1, n_languages=1, distributed=True)
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)

        t0 = time.perf_counter()
        for _ in range(args.warmup_steps):
            step()
        torch.cuda.synchronize(dev)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.timed_steps):
            step()
        torch.cuda.synchronize(dev)
        dt = (time.perf_counter() - t0) / args.timed_steps
        return mcfg, dt, warm, torch.cuda.max_memory_allocated(dev) / 2**30
    finally:
        del model, opt


def mfu_17b(args) -> None:
    """Part 2: time a 1.7B-width model on GPU 0 through the trainer's own path: FSDP2 on a
    1-rank NCCL group (bf16 params for compute, fp32 master weights and reductions), the fused
    chunked loss, AdamW (foreach), global-norm clipping."""
    import socket

    import torch
    import torch.distributed as dist

    from training.config import ModelConfig
    from training.metrics import peak_flops_per_device

    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    total = torch.cuda.get_device_properties(dev).total_memory
    seq, mb = 2048, args.micro_batch
    full = ModelConfig.from_name("polylm-1.7b")
    d, V = full.d_model, full.padded_vocab_size

    def need(layers: int, ac: bool) -> float:
        """Bytes: 16 B/param model state (fp32 weights, grads, AdamW m, v) + 2 B/param bf16
        unsharded copies (world 1) + activations (Korthikanti et al. 2022, eq. 2, with flash
        attention: 34 s b d bytes per layer in bf16; about 2 s b d with checkpointing) + loss
        head (fp32 logits chunk, fp32 [V, d] gradient)."""
        n = full.num_params(padded=True) - (full.n_layers - layers) * 12 * d * d
        act = layers * (2 if ac else 34) * seq * mb * d
        head = 4 * full.loss_chunk_tokens * V + 4 * V * d
        return 18 * n + act + head

    layers, ac = full.n_layers, False
    budget = 0.85 * total
    if need(layers, False) > budget:
        ac = True
    while layers > 1 and need(layers, ac) > budget:
        layers -= 1
    # if the estimate was optimistic: activation checkpointing first, then fewer layers
    tries = [(layers, ac)] + ([(layers, True)] if not ac else []) + [(max(layers * k // 4, 1), True) for k in (3, 2, 1)]
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=dev)
    try:
        for layers, ac in tries:
            try:
                res = _time_17b(args, layers, ac, dev, seq, mb)
                break
            except torch.cuda.OutOfMemoryError:
                print(f"[gpu-check] 1.7B width: out of memory with {layers} layers, activation "
                      f"checkpointing={ac}; trying less", flush=True)
            gc.collect()  # the exception (and the frames holding the model) is gone here
            torch.cuda.empty_cache()
        else:
            print("[gpu-check] 1.7B width: out of memory even with one layer; no MFU figure")
            return
    finally:
        dist.destroy_process_group()
    mcfg, dt, warm, peak_mem = res
    note = "all 24 layers" if layers == full.n_layers else f"{layers} of 24 layers (memory)"
    peak, src = peak_flops_per_device(dev)
    tps = mb * seq / dt
    fpt = mcfg.flops_per_token(seq)
    est = _estimate_gib(mcfg, 1)
    print(f"[gpu-check] 1.7B width ({note}, {mcfg.num_params() / 1e9:.2f} B params, micro-batch "
          f"{mb}x{seq}, FSDP2 bf16, compile={not args.no_compile}, activation checkpointing={ac}): "
          f"{dt * 1e3:.0f} ms/step, tokens_per_sec {tps:.0f}, mfu {tps * fpt / peak:.3f} vs "
          f"{peak / 1e12:.0f} TFLOP/s ({src}); warm-up {warm:.0f} s; peak memory {peak_mem:.1f} GiB, "
          f"estimate {'n/a' if est is None else f'{est:.1f} GiB'} (model state), device "
          f"{total / 2**30:.0f} GiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="steps of the small bf16-vs-fp32 run (default 40)")
    ap.add_argument("--tol", type=float, default=0.03, help="max relative loss difference per step (default 0.03)")
    ap.add_argument("--micro-batch", type=int, default=8, help="1.7B micro-batch (sequences of 2048; default 8)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="1.7B untimed steps (compile; default 3)")
    ap.add_argument("--timed-steps", type=int, default=10, help="1.7B timed steps (default 10)")
    ap.add_argument("--no-compile", action="store_true", help="1.7B in eager mode")
    ap.add_argument("--skip-17b", action="store_true", help="only the small-config parity run")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA_LINE)
        return 0
    n_gpus = torch.cuda.device_count()
    print(f"[gpu-check] {n_gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        ok = loss_parity(args, n_gpus, work)
        if not args.skip_17b:
            mfu_17b(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"[gpu-check] done in {time.perf_counter() - t0:.0f} s: loss parity {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
