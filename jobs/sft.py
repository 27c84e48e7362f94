"""Instruction fine-tuning on the `make instruct` output (``make sft``; see ``training.sft``).

Usage::

    python -m jobs.sft --config configs/train/sft-tiny.yaml \\
        --set base.path=build/sample/hf --set data.instruct_dir=build/sample/instruct
    python -m jobs.sft --config configs/train/sft-tiny.yaml \\
        --set base.path=build/train/sample-small/checkpoints --set base.config=configs/train/sample-small.yaml
    torchrun --nproc-per-node 8 -m jobs.sft --config ...      # FSDP2

``base.path`` is an HF export directory (``make export``) or a DCP checkpoint (a ``step-N``
directory or a root of them: the newest complete one); a DCP base needs ``base.config`` (the
training config, or a model name). Prompt template: ``instruction[\\ninput]\\n\\n`` + response
+ EOS (PolyLM-MultiAlpaca, see ``training.sft``). Resuming: rerun the same command; the newest
complete checkpoint under ``checkpoint.dir`` is continued exactly. The HF export of the
fine-tuned model lands in ``export.dir`` (default ``<out_dir>/hf``).
Exit codes: 0 done, 2 bad usage/config/base (message names the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "resolve_base"]


def resolve_base(base, *, load: bool = True):
    """``(ModelConfig, full PolyLM state dict | None, tokenizer path)`` of ``base``
    (a ``training.sft.BaseSection``).

    Raises:
        FileNotFoundError / ValueError / KeyError: missing path, unusable checkpoint, no tokenizer.
    """
    from jobs.export import resolve_checkpoint, resolve_model_config
    from training.export import load_dcp_model_state
    from training.sft import polylm_state_from_hf

    if not base.path:
        raise ValueError("base.path is not set: pass --set base.path=HF_EXPORT_DIR (make export) "
                         "or a DCP checkpoint dir with --set base.config=TRAIN_CONFIG")
    p = Path(base.path)
    if (p / "config.json").is_file():
        mcfg, sd = polylm_state_from_hf(p)
        tok = base.tokenizer or (str(p / "tokenizer.model") if (p / "tokenizer.model").is_file() else None)
    else:
        if not base.config:
            raise ValueError(f"base.path={p} is not an HF export dir (no config.json); for a DCP checkpoint "
                             "also set base.config=TRAIN_CONFIG (or a model name)")
        mcfg, tok, _ = resolve_model_config(base.config, vocab_size=None, tokenizer=base.tokenizer)
        sd = load_dcp_model_state(resolve_checkpoint(p), mcfg) if load else None
    if tok is None or not Path(tok).is_file():
        raise FileNotFoundError(f"no tokenizer for the base ({tok}); set base.tokenizer=SPM_MODEL")
    return mcfg, sd, tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jobs.sft",
        description="Instruction fine-tuning (PolyLM-MultiAlpaca template, loss on responses only) "
                    "of a PolyLM checkpoint on `make instruct` output; HF export at the end.")
    ap.add_argument("--config", default=None, help="SFT config YAML (configs/train/sft-tiny.yaml); default: built-in defaults")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (repeatable), e.g. --set base.path=build/sample/hf")
    ap.add_argument("--stop-at-step", type=int, default=None,
                    help="stop after this step (checkpoint written; schedule unchanged; rerun to resume)")
    args = ap.parse_args(argv)

    import torch.distributed as dist

    from training.sft import load_sft_config, train_sft

    try:
        cfg = load_sft_config(args.config, args.set)
        mcfg, sd, tok = resolve_base(cfg.base)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_sft(cfg, mcfg, sd, tok, stop_at_step=args.stop_at_step)
    except (FileNotFoundError, ValueError) as e:  # no data / nothing usable: names the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
