"""Evaluate a checkpoint per language (``make eval``; PolyLM paper sec. 4).

Usage::

    python -m jobs.eval --config configs/train/sample-small.yaml --set data.tokens_dir=build/sample/tokens \\
        --tasks heldout,xcopa,ntrex --shots 0 --out build/sample/eval
    python -m jobs.eval --checkpoint build/sample/hf --tasks xcopa --shots 5
    python -m jobs.eval --checkpoint hf/ --tasks xnli,pawsx --task-file 'xnli=data/xnli/{lang}.jsonl' \\
        --task-file 'pawsx=data/pawsx/{lang}.tsv' --langs de,fr,zh

``--checkpoint`` is a Hugging Face export (a directory with ``config.json``), a DCP checkpoint
directory, or a root of ``step-N`` checkpoints (the newest complete one); default: the training
config's ``checkpoint.dir``. A DCP checkpoint needs ``--config`` (training config, model name
or model YAML) for the model shape and tokenizer, as ``jobs.export`` does.

Tasks (comma-separated; every file is local, nothing is downloaded):

* ``heldout``: bits per byte and perplexity per language on the documents the trainer held out
  (needs a training config: token manifest + ``data.val_fraction``) and any ``--heldout`` files.
* ``xcopa``: ``<data-root>/xcopa/val.{lang}.jsonl`` (or ``--task-file xcopa=PATTERN``).
* ``xstorycloze``, ``xwinograd``, ``xnli``, ``pawsx``, ``tydiqa``: ``--task-file TASK=PATTERN``
  with ``{lang}`` in the pattern; JSON lines, or TSV/CSV with a header row, in the published
  field names.
* ``ntrex``: en->xx translation on NTREX-128 (``<data-root>/ntrex-128``), chrF and BLEU;
  ``flores``: the same on FLORES-200 files (``--flores DIR`` with ``eng_Latn.devtest`` ...).

Writes ``<out>/results.json``, ``<out>/results.txt`` (a table per task and language) and
``<out>/results.png`` (per-language scores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

TASKS = ("heldout", "xcopa", "xstorycloze", "xwinograd", "xnli", "pawsx", "tydiqa", "ntrex", "flores")
MC_TASKS = ("xcopa", "xstorycloze", "xwinograd", "xnli", "pawsx")
CHANCE = {"xcopa": 0.5, "xstorycloze": 0.5, "xwinograd": 0.5, "xnli": 1 / 3, "pawsx": 0.5}
XCOPA_LANGS = ("id", "it", "th", "tr", "vi", "zh")


class UsageError(Exception):
    """Bad arguments or a missing input file: printed without a traceback, exit 2."""


def _read_records(path: Path) -> list[dict]:
    from training.evaluate import read_jsonl

    if path.suffix in (".tsv", ".csv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    return read_jsonl(path)


def load_model(args):
    """(model, tokenizer, info) from ``--checkpoint`` / ``--config`` / ``--tokenizer``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.export import resolve_checkpoint, resolve_model_config

    info: dict = {}
    cp = Path(args.checkpoint) if args.checkpoint else None
    tcfg = None
    if args.config and Path(args.config).suffix in (".yaml", ".yml") and Path(args.config).is_file():
        import yaml

        raw = yaml.safe_load(Path(args.config).read_text()) or {}
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
            from training.train_config import load_config

            tcfg = load_config(Path(args.config), args.set)
    info["train_config"] = tcfg
    if cp is not None and (cp / "config.json").is_file():  # a Hugging Face export
        model = AutoModelForCausalLM.from_pretrained(cp, local_files_only=True, torch_dtype="float32")
        tok = AutoTokenizer.from_pretrained(args.tokenizer_dir or cp, local_files_only=True)
        info.update(kind="hf", path=str(cp))
        return model, tok, info
    if not args.config:
        raise UsageError("--checkpoint is not a Hugging Face export (no config.json): pass --config "
                         "(the training config, or a model name with --tokenizer)")
    cfg, spm_path, cp_default = resolve_model_config(args.config, vocab_size=args.vocab_size,
                                                     tokenizer=args.tokenizer, overrides=args.set)
    if cp is None and cp_default is None:
        raise UsageError("--checkpoint is required unless --config is a training config")
    if spm_path is None:
        raise UsageError("no tokenizer: pass --tokenizer PATH (the SentencePiece .model)")
    dcp_dir = resolve_checkpoint(cp or cp_default)
    from transformers import GPT2LMHeadModel

    from training.export import hf_config, hf_tokenizer_from_spm, load_dcp_model_state, to_hf_state_dict

    sd = to_hf_state_dict(load_dcp_model_state(dcp_dir, cfg), cfg)
    from training.export import spm_special_ids

    special = spm_special_ids(Path(spm_path))
    model = GPT2LMHeadModel(hf_config(cfg, bos_id=special.get("bos_id"), eos_id=special.get("eos_id"),
                                      pad_id=special.get("pad_id")))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") and ".attn.bias" not in k
               and ".attn.masked_bias" not in k]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the GPT-2 layout: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    tok = hf_tokenizer_from_spm(spm_path, model_max_length=cfg.max_seq_len)
    info.update(kind="dcp", path=str(dcp_dir))
    name = dcp_dir.name
    if name.startswith("step-") and name[5:].isdigit():
        info["step"] = int(name[5:])
    return model, tok, info


def _langs(arg: str | None, default) -> list[str]:
    if not arg:
        return list(default)
    return [x.strip() for x in arg.split(",") if x.strip()]


def _task_path(args, task: str, lang: str) -> Path:
    pats = dict(kv.split("=", 1) for kv in args.task_file)
    if task in pats:
        return Path(pats[task].replace("{lang}", lang))
    if task == "xcopa":
        return Path(args.data_root) / "xcopa" / f"val.{lang}.jsonl"
    raise UsageError(f"task {task!r} needs its local files: pass --task-file '{task}=PATH/{{lang}}.jsonl' "
                     "(JSON lines, or .tsv/.csv with a header, in the published field names)")


def run(args) -> dict:
    import torch

    from training import evaluate as ev

    tasks = _langs(args.tasks, ())
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise UsageError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    for kv in args.task_file:
        if "=" not in kv or kv.split("=", 1)[0] not in TASKS:
            raise UsageError(f"--task-file {kv!r}: expected TASK=PATTERN with TASK in {', '.join(TASKS)}")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model, tok, info = load_model(args)
    scorer = ev.CausalLMScorer(model, tok, device=device, batch_size=args.batch_size)
    tcfg = info.pop("train_config")
    results: dict = {"checkpoint": info, "shots": args.shots, "seed": ev.FEWSHOT_SEED, "tasks": {},
                     "chance": CHANCE}
    if tcfg is not None and "step" in info:
        idx, name = ev.curriculum_stage(info["step"], tcfg.curriculum.stages, total_steps=tcfg.training.steps,
                                        tokens_per_step=tcfg.training.global_batch_size * tcfg.data.seq_len)
        results["checkpoint"]["curriculum_stage"] = {"index": idx, "name": name}
    print(f"[eval] {info['kind']} checkpoint {info['path']} on {device} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, window {scorer.max_length})")

    if "heldout" in tasks:
        docs = []
        if tcfg is not None and tcfg.data.val_fraction > 0:
            tokens = Path(tcfg.data.tokens_dir)
            corpus = Path(args.corpus) if args.corpus else tokens.parent / "corpus"
            docs += ev.heldout_documents(tokens, corpus, val_fraction=tcfg.data.val_fraction,
                                         val_files_per_stream=tcfg.data.val_files_per_stream,
                                         max_docs_per_lang=args.limit)
        for spec in args.heldout:
            lang, path = spec.split("=", 1) if "=" in spec and not Path(spec).exists() else (None, spec)
            docs += ev.read_heldout_file(path, lang)
        if not docs:
            raise UsageError("heldout: no held-out documents: pass a training --config whose data.val_fraction > 0, "
                             "or --heldout FILE.jsonl / --heldout LANG=FILE.txt")
        results["heldout"] = ev.bits_per_byte(scorer, docs)
        print(f"[eval] heldout: {len(docs)} documents, {len(results['heldout'])} languages")

    for task in (t for t in tasks if t in MC_TASKS):
        per = {}
        default = XCOPA_LANGS if task == "xcopa" else ()
        langs = _langs(args.langs, default)
        if not langs:
            raise UsageError(f"{task}: pass --langs (the languages of your --task-file files)")
        make = getattr(ev, f"{task}_items")
        for lang in langs:
            path = _task_path(args, task, lang)
            if not path.is_file():
                if args.langs:
                    raise UsageError(f"{task} {lang}: file {path} not found (pass --task-file '{task}=PATTERN')")
                continue
            items = make(_read_records(path), lang)
            r = ev.score_multiple_choice(scorer, items, shots=args.shots, limit=args.limit)
            per[lang] = {k: r[k] for k in ("acc", "acc_norm", "n", "shots")} | {"file": str(path)}
            print(f"[eval] {task} {lang}: acc {r['acc']:.3f} (n={r['n']}, {args.shots}-shot)")
        if not per:
            raise UsageError(f"{task}: no files found (looked for {_task_path(args, task, langs[0])})")
        results["tasks"][task] = per

    if "tydiqa" in tasks:
        per = {}
        for lang in _langs(args.langs, ()):
            path = _task_path(args, "tydiqa", lang)
            if not path.is_file():
                raise UsageError(f"tydiqa {lang}: file {path} not found")
            r = ev.tydiqa_scores(scorer, _read_records(path)[: args.limit or None], shots=args.shots)
            per[lang] = r | {"file": str(path)}
            print(f"[eval] tydiqa {lang}: F1 {r['f1']:.1f} EM {r['em']:.1f} (n={r['n']})")
        results["tasks"]["tydiqa"] = per

    for task in (t for t in ("ntrex", "flores") if t in tasks):
        per = {}
        n = args.limit or 50
        for lang in _langs(args.langs if task == "flores" or args.langs else None, ("de", "fr", "zh", "ja")):
            if lang == "en":
                continue
            if task == "ntrex":
                pairs = ev.ntrex_pairs(Path(args.data_root) / "ntrex-128", "en", lang, start=args.ntrex_start, n=n)
                shots = ev.ntrex_pairs(Path(args.data_root) / "ntrex-128", "en", lang, start=0, n=args.shots)
            else:
                if not args.flores:
                    raise UsageError("flores: pass --flores DIR (FLORES-200 files such as eng_Latn.devtest)")
                pairs = ev.flores_pairs(args.flores, "en", lang, split="devtest", n=n)
                shots = ev.flores_pairs(args.flores, "en", lang, split="dev", n=args.shots) if args.shots else []
            r = ev.translation_scores(scorer, pairs, "en", lang, shots=shots, max_new_tokens=args.max_new_tokens)
            per[f"en-{lang}"] = r
            print(f"[eval] {task} en->{lang}: chrF {r['chrf']:.1f} BLEU {r['bleu']:.1f} (n={r['n']})")
        results["tasks"][task] = per

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    table = ev.results_table(results)
    (out / "results.txt").write_text(table + "\n")
    png = ev.plot_results(results, out / "results.png")
    print(table)
    print(f"[eval] wrote {out / 'results.json'}, results.txt" + (", results.png" if png else ""))
    return results


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.eval", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Tasks: " + ", ".join(TASKS))
    ap.add_argument("--checkpoint", help="HF export dir, DCP checkpoint dir, or a root of step-N dirs "
                                         "(default: checkpoint.dir of the training config)")
    ap.add_argument("--config", help="training config YAML, or a model name/YAML (needed for DCP checkpoints)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training-config field (dotted), as in training.train")
    ap.add_argument("--tokenizer", help="SentencePiece .model (DCP checkpoints; default: the token manifest's)")
    ap.add_argument("--tokenizer-dir", help="HF tokenizer dir if not inside the HF checkpoint")
    ap.add_argument("--vocab-size", type=int, help="model vocabulary size override (DCP)")
    ap.add_argument("--tasks", default="heldout,xcopa", help="comma-separated tasks (default: heldout,xcopa)")
    ap.add_argument("--shots", type=int, default=0, help="few-shot examples per prompt (default 0)")
    ap.add_argument("--langs", help="comma-separated ISO 639-1 codes (default: every language with a file)")
    ap.add_argument("--limit", type=int, default=0, help="at most N items per task and language (0: all)")
    ap.add_argument("--task-file", action="append", default=[], metavar="TASK=PATTERN",
                    help="local task files, {lang} in the pattern, e.g. 'xnli=xnli/{lang}.jsonl'")
    ap.add_argument("--heldout", action="append", default=[], metavar="FILE|LANG=FILE",
                    help="more held-out text: JSONL with text+lang, or LANG=plain.txt")
    ap.add_argument("--corpus", help="corpus dir for the trainer's held-out documents (default: <tokens>/../corpus)")
    ap.add_argument("--data-root", default=os.environ.get("POLY_SHARED_DATA", "../shared/data"),
                    help="sample data root with xcopa/ and ntrex-128/ (default ../shared/data)")
    ap.add_argument("--ntrex-start", type=int, default=1900,
                    help="first NTREX line translated (default 1900: the last lines; shots come from line 0)")
    ap.add_argument("--flores", help="FLORES-200 directory (eng_Latn.devtest, deu_Latn.devtest, ...)")
    ap.add_argument("--max-new-tokens", type=int, default=128,
                    help="generation budget per translation (default 128; TyDiQA answers use 32)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    ap.add_argument("--batch-size", type=int, default=1,
                    help="requests per forward pass (1 matches lm-eval bit for bit; default 1)")
    ap.add_argument("--out", default="build/sample/eval", help="output directory (default build/sample/eval)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.shots < 0:
        ap.error("--shots must be >= 0")
    try:
        run(args)
    except (UsageError, FileNotFoundError, ValueError) as e:
        print(f"[eval] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
