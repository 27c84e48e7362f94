"""Training throughput: PolyLM vs transformers' GPT2LMHeadModel of identical shape (CPU, fp32).

Both models get the same weights (PolyLM's init, mapped with ``training.export``), the same
batches, the same number of steps, AdamW, fp32 and the same thread count, and run interleaved
(A, B, A, B, ...) so load from other processes hits both alike. One step = forward with loss,
backward, AdamW step. tokens_per_sec = batch x seq_len x steps / seconds; the median over rounds
is reported. Input ids are uniformly random (throughput does not depend on content: synthetic).

GPU part (1.7B, bf16, FSDP2 on one GPU, MFU = tokens_per_sec x flops_per_token / peak FLOPs,
flops_per_token = 6N + 12 L d T, PaLM appendix B) runs only when CUDA is available; otherwise it
says so.

    python bench/bench_train.py [--steps 3] [--rounds 3] [--batch 4] [--seq 128] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.config import ModelConfig  # noqa: E402
from training.export import hf_config, to_hf_state_dict  # noqa: E402
from training.model import PolyLM  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0,
                    "L40S": 362.0, "B200": 2250.0}  # dense bf16 tensor-core peaks (vendor sheets)


def _models(cfg: ModelConfig):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    ours = PolyLM(cfg)
    conf = hf_config(cfg)
    conf.loss_type = "ForCausalLM"
    conf._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(conf)
    hf.loss_type = "ForCausalLM"  # GPT2 leaves it unset and warns on every loss
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    hf.tie_weights()
    return ours.train(), hf.train()


def _step_fn(model, kind: str, opt):
    def step(w: torch.Tensor) -> float:
        x = w[:, :-1]
        if kind == "ours":
            loss = model(x, w[:, 1:])
        else:  # the same T targets: pass HF the already-shifted labels
            y = w[:, 1:].contiguous()
            loss = model(input_ids=x, labels=y, shift_labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def cpu_bench(args) -> dict:
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.from_name("small", vocab_size=args.vocab, max_seq_len=max(args.seq, 512))
    ours, hf = _models(cfg)
    steps = {
        "polylm": _step_fn(ours, "ours", torch.optim.AdamW(ours.parameters(), lr=1e-4)),
        "gpt2-hf": _step_fn(hf, "hf", torch.optim.AdamW(hf.parameters(), lr=1e-4)),
    }
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
               for _ in range(args.steps)]
    first = {}
    for name, fn in steps.items():  # warm-up (allocator, oneDNN primitives)
        first[name] = fn(batches[0])
    n_tok = args.batch * args.seq * args.steps
    tps: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for name, fn in (steps.items() if r % 2 == 0 else reversed(list(steps.items()))):
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            tps[name].append(n_tok / (time.perf_counter() - t0))
        print(f"  round {r + 1}/{args.rounds}: " +
              ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in tps.items()), flush=True)
    med = {k: statistics.median(v) for k, v in tps.items()}
    print(f"config small: L={cfg.n_layers} d={cfg.d_model} heads={cfg.n_heads} d_ff={cfg.d_ff} "
          f"V={cfg.vocab_size} seq={args.seq} batch={args.batch}, fp32, {args.threads} threads, "
          f"AdamW, {args.steps} steps x {args.rounds} rounds (synthetic random ids)")
    print(f"  first-step loss: polylm {first['polylm']:.4f}, gpt2-hf {first['gpt2-hf']:.4f} "
          f"(same weights, same data, same targets: should agree to ~1e-6)")
    print(f"  tokens_per_sec (median): polylm {med['polylm']:,.0f} | transformers GPT2LMHeadModel "
          f"{med['gpt2-hf']:,.0f} | ratio {med['polylm'] / med['gpt2-hf']:.2f}x "
          f"({'not slower' if med['polylm'] >= 0.97 * med['gpt2-hf'] else 'SLOWER'}; target: not slower)")
    return med


def gpu_bench(args) -> None:
    if not torch.cuda.is_available():
        print("1.7B-on-GPU tokens/s and MFU: not run -- no GPU is lent to this task "
              "(no CUDA device visible).")
        return
    import os

    import torch.distributed as dist

    from training.parallelize import parallelize

    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    cfg = ModelConfig.from_name("polylm-1.7b")
    with torch.device("meta"):
        model = PolyLM(cfg)
    parallelize(model, mixed_precision=True, activation_checkpointing=args.gpu_ac, compile=args.gpu_compile)
    model.to_empty(device="cuda")
    model.init_weights(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    T, B = cfg.max_seq_len, args.gpu_batch
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), device="cuda")
    times = []
    for i in range(args.gpu_steps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    tps = B * T / statistics.median(times)
    fpt = cfg.flops_per_token(T)
    mfu = tps * fpt / (peak * 1e12) if peak else float("nan")
    print(f"1.7B on 1x {name}: batch {B}x{T}, bf16 params / fp32 reduce (FSDP2), AC={args.gpu_ac}, "
          f"compile={args.gpu_compile}: {tps:,.0f} tokens_per_sec, mfu {mfu:.1%} "
          f"(6N+12LdT = {fpt / 1e9:.2f} GFLOP/token, peak {peak} TFLOPS), "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-steps", type=int, default=10)
    ap.add_argument("--gpu-ac", action="store_true", help="activation checkpointing on GPU")
    ap.add_argument("--gpu-compile", action="store_true", help="torch.compile blocks on GPU")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 peak for MFU")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args(argv)
    print("=== bench_train: training throughput")
    if not args.skip_cpu:
        cpu_bench(args)
    gpu_bench(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
