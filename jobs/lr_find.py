"""Find the peak learning rate the PolyLM way: ramp the LR during warmup, watch the gradient norm.

PolyLM (arXiv 2307.06018, section 3.3) chose its peak LR by ramping the LR up during warmup
and recording the gradient norm: the norm first settles, then *surges* once the LR is too
large (the onset of the instability that later shows as loss spikes), and the peak LR is set
below that point. This job runs the normal trainer (``training.train.train``) for ``--steps``
optimizer steps with the LR ramped from ``--min-lr`` to ``--max-lr`` (``--ramp linear``, the
paper's warmup shape, or ``exp`` = geometric, which resolves small LRs better), no checkpoints,
no validation and no spike guard (NaN/inf updates are still skipped), on ONE curriculum stage's
data mix (``--stage``, default the first): the trainer's stage starts are relative to
``training.steps``, which the ramp shortens, so a multi-stage curriculum would switch the mix
inside the ramp and mix a data change into the gradient-norm curve. Then it finds the surge:

* smooth the gradient norm with a bias-corrected EMA (``--smooth``, default 0.9);
* after the first ``--skip`` fraction of steps (the norm falls from its value at init),
  track the running minimum of the smoothed norm;
* the surge is the first step whose smoothed norm exceeds ``--surge-factor`` (default 2) times
  that minimum for ``--patience`` consecutive steps (a non-finite norm counts as above);
* the suggested peak LR is ``--safety`` (default 0.5, this project's choice; the paper only
  says "below the surge") times the LR at the surge.

Writes ``<out>/lr_find.json`` (LRs, gradient norms, losses, surge step/LR, suggestion) and
``<out>/lr_find.png`` (gradient norm and loss against LR, surge marked).

Usage::

    python -m jobs.lr_find --config configs/train/sample-small.yaml --steps 200 --max-lr 1e-2
    torchrun --nproc-per-node 8 -m jobs.lr_find --config configs/train/polylm-13b.yaml ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["find_surge", "single_stage", "main"]


def single_stage(stage):
    """Copy of ``stage`` (a ``StageConfig``) starting at step 0, for a one-stage curriculum."""
    import dataclasses

    return dataclasses.replace(stage, start_step=0, start_tokens=None, start_fraction=None)


def _ema(xs: Sequence[float], beta: float) -> list[float]:
    out, avg = [], 0.0
    for i, x in enumerate(xs, 1):
        if not math.isfinite(x):
            out.append(math.inf)
            continue
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta**i))
    return out


def find_surge(grad_norms: Sequence[float], *, smooth: float = 0.9, skip: float = 0.1,
               factor: float = 2.0, patience: int = 3) -> tuple[int | None, list[float]]:
    """Index of the first gradient-norm surge (see module docstring) or ``None``, and the
    smoothed norms. ``grad_norms``: one float per step (inf/nan allowed)."""
    s = _ema(grad_norms, smooth)
    n = len(s)
    start = max(int(skip * n), 1)
    best = math.inf
    for i in range(start, n):
        if math.isfinite(s[i]):
            best = min(best, s[i])
        if best == math.inf:
            continue
        window = s[i:i + patience]
        if len(window) == patience and all(v > factor * best for v in window):
            return i, s
    return None, s


def _plot(path: Path, lrs, norms, smooth, losses, surge, suggested, log_x: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    fin = [(l, g) for l, g in zip(lrs, norms) if math.isfinite(g)]
    a.plot([l for l, _ in fin], [g for _, g in fin], ".", ms=3, alpha=0.5, label="grad norm")
    fs = [(l, g) for l, g in zip(lrs, smooth) if math.isfinite(g)]
    a.plot([l for l, _ in fs], [g for _, g in fs], "-", label="EMA")
    a.set_ylabel("gradient L2 norm (before clipping)")
    a.set_yscale("log")
    fl = [(l, x) for l, x in zip(lrs, losses) if math.isfinite(x)]
    b.plot([l for l, _ in fl], [x for _, x in fl], "-", color="tab:red")
    b.set_ylabel("training loss")
    if fl and min(x for _, x in fl) > 0:
        b.set_yscale("log")
    b.set_xlabel("learning rate")
    for ax in (a, b):
        if log_x:
            ax.set_xscale("log")
        if surge is not None:
            ax.axvline(lrs[surge], color="k", ls="--", lw=1)
        if suggested is not None:
            ax.axvline(suggested, color="tab:green", ls=":", lw=1)
    title = "LR finder (PolyLM sec. 3.3): grad norm during an LR ramp"
    if surge is not None:
        title += f"\nsurge at lr={lrs[surge]:.3g} (dashed), suggested peak lr={suggested:.3g} (dotted)"
    else:
        title += "\nno surge found in the ramp range"
    a.set_title(title, fontsize=9)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.lr_find", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training YAML (configs/train/*.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra config override (repeatable)")
    ap.add_argument("--out", default="build/lr_find", help="output directory (default build/lr_find)")
    ap.add_argument("--steps", type=int, default=200, help="ramp length in optimizer steps (default 200)")
    ap.add_argument("--min-lr", type=float, default=1e-6, help="start LR for --ramp exp (default 1e-6)")
    ap.add_argument("--max-lr", type=float, default=1e-2, help="LR at the end of the ramp (default 1e-2)")
    ap.add_argument("--ramp", choices=["linear", "exp"], default="linear",
                    help="linear (the paper's warmup shape, from max_lr/steps) or exp (geometric)")
    ap.add_argument("--surge-factor", type=float, default=2.0)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--smooth", type=float, default=0.9)
    ap.add_argument("--skip", type=float, default=0.1, help="fraction of initial steps ignored")
    ap.add_argument("--safety", type=float, default=0.5, help="suggested peak = safety x surge LR")
    ap.add_argument("--stage", type=int, default=0,
                    help="curriculum stage whose data mix is used for the whole ramp (default 0, the first)")
    args = ap.parse_args(argv)
    if not (0 < args.min_lr < args.max_lr):
        ap.error("need 0 < --min-lr < --max-lr")

    import torch.distributed as dist

    from training.train import train
    from training.train_config import load_config

    out = Path(args.out)
    sched = "linear_ramp" if args.ramp == "linear" else "exp_ramp"
    over = list(args.set) + [
        f"out_dir={out / 'run'}", f"optim.lr={args.max_lr}", f"optim.warmup_steps={args.steps}",
        f"optim.schedule={sched}", f"optim.min_lr_ratio={args.min_lr / args.max_lr}",
        f"training.steps={args.steps}", "training.spike_mad_k=0", "checkpoint.enabled=false",
        "metrics.validate=false",
    ]
    try:
        cfg = load_config(args.config, over)
    except (FileNotFoundError, ValueError) as e:  # a bad config / --set: message, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    stages = cfg.curriculum.stages
    if not 0 <= args.stage < len(stages):
        ap.error(f"--stage {args.stage}: the config has {len(stages)} curriculum stage(s) (0..{len(stages) - 1})")
    cfg.curriculum.stages = [single_stage(stages[args.stage])]
    print(f"[lr_find] {args.ramp} LR ramp to {args.max_lr:g} over {args.steps} steps "
          f"({cfg.model.name}, global batch {cfg.training.global_batch_size}x{cfg.data.seq_len})", flush=True)
    try:
        train(cfg)
        rank = dist.get_rank() if dist.is_initialized() else 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank != 0:
        return 0
    rows = {}
    for line in (out / "run" / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "train":
            rows[r["step"]] = r
    steps = sorted(rows)
    lrs = [rows[s]["lr"] for s in steps]
    norms = [float(rows[s]["grad_norm"]) for s in steps]
    losses = [float(rows[s]["loss"]) for s in steps]
    surge, smooth = find_surge(norms, smooth=args.smooth, skip=args.skip, factor=args.surge_factor,
                               patience=args.patience)
    surge_lr = lrs[surge] if surge is not None else None
    suggested = args.safety * surge_lr if surge_lr is not None else None
    res = {
        "method": "PolyLM sec. 3.3: LR ramped during warmup; first surge of the EMA-smoothed "
                  f"gradient norm above {args.surge_factor}x its running minimum for "
                  f"{args.patience} steps; suggested peak = {args.safety} x surge LR",
        "ramp": args.ramp, "steps": steps, "lr": lrs, "grad_norm": norms, "grad_norm_ema": smooth,
        "loss": losses, "surge_step": steps[surge] if surge is not None else None,
        "surge_lr": surge_lr, "suggested_peak_lr": suggested,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_find.json").write_text(json.dumps(res, indent=1, allow_nan=True))
    _plot(out / "lr_find.png", lrs, norms, smooth, losses, surge, suggested, log_x=args.ramp == "exp")
    if surge is None:
        print(f"[lr_find] no gradient-norm surge up to lr={lrs[-1]:.3g}: raise --max-lr", flush=True)
    else:
        print(f"[lr_find] gradient norm surges at step {steps[surge]}, lr={surge_lr:.4g}; "
              f"suggested peak lr = {suggested:.4g}", flush=True)
    print(f"[lr_find] wrote {out / 'lr_find.json'} and {out / 'lr_find.png'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
