"""Export a trained PolyLM checkpoint to a Hugging Face GPT2LMHeadModel directory (``make export``).

Usage::

    python -m jobs.export --config configs/train/sample-small.yaml --out build/sample/hf
    python -m jobs.export --checkpoint build/train/sample-small/checkpoints/step-00000300 \\
        --config small --vocab-size 8000 --tokenizer build/sample/tokenizer/spm.model --out hf/

``--checkpoint`` is either one DCP checkpoint directory (holding ``.metadata``) or a checkpoint
root with ``step-N`` directories; then the newest complete one (``COMPLETE.json`` marker and
file sizes verified, see ``training.checkpoint``) is used. Default: the training config's
``checkpoint.dir``. ``--config`` is a training config
YAML (its ``model`` section; ``vocab_size: auto`` is read from the token manifest), a model
config name (``tiny``, ``small``, ``polylm-1.7b``, ``polylm-13b``) or a model config YAML.
The tokenizer defaults to the ``tokenizer`` path in the token manifest.

The result loads offline::

    GPT2LMHeadModel.from_pretrained(out, local_files_only=True)
    AutoTokenizer.from_pretrained(out, local_files_only=True)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "resolve_checkpoint", "resolve_model_config"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A DCP checkpoint directory: ``path`` itself, or its newest verified ``step-N`` child.

    Raises:
        FileNotFoundError: nothing usable (the reasons of rejected checkpoints are listed).
    """
    p = Path(path)
    if (p / ".metadata").is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    from training.checkpoint import list_checkpoints, verify_checkpoint

    reasons = []
    for step, cp in list_checkpoints(p):
        why = verify_checkpoint(cp)
        if why is None:
            return cp
        reasons.append(f"{cp.name}: {why}")
        print(f"[export] skipping {cp}: {why}", file=sys.stderr)
    raise FileNotFoundError(f"no complete checkpoint under {p}" + (": " + "; ".join(reasons) if reasons else
                                                                   " (no step-N directories)"))


def _manifest(tokens_dir: str | Path) -> dict | None:
    from training.data import manifest_path

    m = manifest_path(tokens_dir)
    return json.loads(m.read_text()) if m.is_file() else None


def resolve_model_config(config: str, *, vocab_size: int | None, tokenizer: str | None,
                         overrides: list[str] | None = None):
    """``(ModelConfig, tokenizer_path | None, checkpoint_dir | None)`` from a training config,
    a model name or a model YAML (the checkpoint dir only comes from a training config).

    Vocabulary size: ``--vocab-size``, else the train config's explicit one, else the token
    manifest's ``vocab_size``, else the SentencePiece model's piece count.

    Raises:
        ValueError: the vocabulary size cannot be determined.
    """
    from training.config import ModelConfig

    tok = tokenizer
    p = Path(config)
    raw = None
    if p.suffix in (".yaml", ".yml") and p.is_file():
        import yaml

        raw = yaml.safe_load(p.read_text()) or {}
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):  # a training config
        from training.train_config import load_config

        tcfg = load_config(p, overrides or [])
        man = _manifest(tcfg.data.tokens_dir)
        if tok is None and man is not None and man.get("tokenizer"):
            tok = _find_tokenizer(man["tokenizer"], Path(tcfg.data.tokens_dir))
        v = vocab_size
        if v is None and tcfg.model.vocab_size not in (None, "auto"):
            v = int(tcfg.model.vocab_size)
        if v is None and man is not None:
            v = int(man["vocab_size"])
        if v is None and tok is not None:
            v = _spm_size(tok)
        if v is None:
            raise ValueError(f"cannot determine vocab_size: no token manifest under "
                             f"{tcfg.data.tokens_dir} and no --vocab-size/--tokenizer")
        ov = dict(tcfg.model.overrides or {})
        ov["vocab_size"] = v
        seq = tcfg.data.seq_len
        cfg = ModelConfig.from_name(tcfg.model.name, **ov)
        if cfg.max_seq_len < seq:  # the trainer raises in this case, so it cannot have trained it
            raise ValueError(f"model max_seq_len {cfg.max_seq_len} < data.seq_len {seq}")
        return cfg, tok, tcfg.checkpoint.dir
    v = vocab_size if vocab_size is not None else (_spm_size(tok) if tok else None)
    kw = {"vocab_size": v} if v is not None else {}
    return ModelConfig.from_name(config, **kw), tok, None


def _find_tokenizer(recorded: str, tokens_dir: Path) -> str:
    """The manifest's tokenizer path as recorded (absolute or relative to the working directory),
    else relative to the token directory or the build output above it."""
    for cand in (Path(recorded), tokens_dir / recorded, tokens_dir.parent / recorded,
                 tokens_dir.parent / "tokenizer" / Path(recorded).name):
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(f"tokenizer {recorded!r} from {tokens_dir}/manifest.json not found; "
                            "pass --tokenizer")


def _spm_size(path: str | Path) -> int:
    import sentencepiece as spm

    if not Path(path).is_file():
        raise FileNotFoundError(f"tokenizer model not found: {path}")
    return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jobs.export",
        description="Export a PolyLM DCP checkpoint to a Hugging Face GPT2LMHeadModel + tokenizer.")
    ap.add_argument("--checkpoint", default=None,
                    help="DCP checkpoint dir (with .metadata) or a root of step-N dirs (newest complete "
                         "used); default: checkpoint.dir of the training config")
    ap.add_argument("--config", required=True,
                    help="training config YAML, model config name (tiny/small/polylm-1.7b/polylm-13b) or model YAML")
    ap.add_argument("--out", required=True, help="output directory (replaced atomically)")
    ap.add_argument("--tokenizer", default=None,
                    help="SentencePiece .model (default: 'tokenizer' of the token manifest)")
    ap.add_argument("--vocab-size", type=int, default=None, help="model vocabulary size override")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="weight dtype in the exported files (default float32)")
    ap.add_argument("--no-tokenizer", action="store_true", help="export the model only")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training-config field (dotted), as in training.train")
    args = ap.parse_args(argv)

    import torch

    from training.export import export_hf, load_dcp_model_state

    t0 = time.perf_counter()
    try:
        cfg, tok, cp_default = resolve_model_config(args.config, vocab_size=args.vocab_size,
                                                    tokenizer=args.tokenizer, overrides=args.set)
    except (FileNotFoundError, KeyError, ValueError) as e:  # a bad config / --set: message, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.checkpoint is None and cp_default is None:
        ap.error("--checkpoint is required unless --config is a training config")
    cp = resolve_checkpoint(args.checkpoint or cp_default)
    if args.no_tokenizer:
        tok = None
    elif tok is None:
        ap.error("no tokenizer: pass --tokenizer PATH (or --no-tokenizer)")
    print(f"[export] checkpoint {cp}")
    print(f"[export] model {cfg.name}: L={cfg.n_layers} d={cfg.d_model} heads={cfg.n_heads} "
          f"V={cfg.vocab_size} seq={cfg.max_seq_len} ({cfg.num_params() / 1e6:.2f}M params)")
    sd = load_dcp_model_state(cp, cfg)
    print(f"[export] loaded {len(sd)} tensors in {time.perf_counter() - t0:.1f}s; writing {args.out}")
    out = export_hf(sd, cfg, tok, args.out, dtype=getattr(torch, args.dtype))
    files = sorted(f.name for f in Path(out).iterdir())
    print(f"[export] wrote {out}: {', '.join(files)} ({time.perf_counter() - t0:.1f}s)")
    print(f"[export] load with GPT2LMHeadModel.from_pretrained({str(out)!r}, local_files_only=True)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
