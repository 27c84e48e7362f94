"""Instruction fine-tuning (SFT) of a PolyLM on the self-instruct output (PolyLM sec. 3, MultiAlpaca).

Prompt template (``format_prompt``): the released PolyLM-MultiAlpaca models use no fixed
template. The query is the instruction, followed by ``"\\n"`` and the input when there is one,
then ``"\\n\\n"``; the response follows directly and ends with EOS::

    <instruction>[\\n<input>]\\n\\n<output></s>

Source: the maintainers' answer in HF discussion #2 on ``DAMO-NLP-MT/polylm-multialpaca-13b``,
citing ``polylm_cli_demo.py`` line 73 (``query + "\\n\\n"`` fed to ``generate``). Prompt and
response are tokenized separately (prompt ids = exactly what ``tok(prompt)`` gives at inference;
no BOS, as in pretraining) and concatenated.

Loss on response tokens only: ``labels`` (next-token targets aligned with ``input_ids``, the
convention of ``PolyLM.forward``) are -100 at every position whose target is a prompt token,
and at padding. Attention stays inside each example, in one of two layouts (``data.packing``):

* packed (``make sft``'s config): several examples per row of ``data.seq_len`` tokens, filled
  in data order (next fit: an example that does not fit starts the next row), with per-token
  ``segment_ids`` (1, 2, ... per example, 0 = padding). The model gets them
  (``PolyLM.forward(segment_ids=...)``): positions restart at 0 for each example and the
  attention mask is block-diagonal causal (``training.model.segment_attention_mask``), so each
  example computes exactly what it computes alone. ``training.global_batch_size`` counts rows;
  an epoch's rows are a pure function of ``(data.seed, epoch)``, so step ``s`` takes rows
  ``[s*G, (s+1)*G)`` of the concatenated epochs and resuming needs only the step;
* padded (``data.packing: false``): one example per row, right-padded to the longest example of
  the step's global batch (rounded up to 8); ``global_batch_size`` counts examples.

Either way the padding positions are computed and thrown away; their fraction is logged per
step as ``pad_frac`` (``tokens_per_sec`` counts real tokens only).

Examples longer than ``data.seq_len`` tokens (prompt + response + EOS) are dropped and counted
(``too_long``), never cut silently; so are examples with an empty instruction or output.

Training reuses the pretraining machinery: ``training.train.build_model``/``forward_backward``
(FSDP2 under torchrun, loss over the global batch's label tokens), ``training.optim``
(AdamW, warmup + cosine), ``training.checkpoint.CheckpointManager`` (atomic DCP, exact resume:
the data order is a pure function of ``(data.seed, step)``) and ``training.metrics.MetricsLogger``
(``<out_dir>/metrics.jsonl``). At the end the model is exported with ``training.export.export_hf``
to ``export.dir`` (default ``<out_dir>/hf``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml

from training.config import ModelConfig
from training.data import IGNORE_INDEX
from training.train_config import (CheckpointSection, MetricsSection, OptimSection, TrainingSection,
                                   build_section, set_dotted)

log = logging.getLogger("training.sft")

__all__ = ["format_prompt", "encode_example", "SFTDataset", "forward_backward_packed", "SFTConfig", "load_sft_config",
           "polylm_state_from_hf", "train_sft"]

PAD_MULTIPLE = 8


# ------------------------------------------------------------------------------- template
def format_prompt(instruction: str, input: str | None = None) -> str:
    """The PolyLM-MultiAlpaca query: ``instruction`` (+ ``"\\n" + input`` when the input is
    non-empty after stripping) + ``"\\n\\n"`` (HF discussion #2 on
    DAMO-NLP-MT/polylm-multialpaca-13b, polylm_cli_demo.py line 73). The response follows it."""
    q = instruction.strip()
    if input is not None and str(input).strip():
        q += "\n" + str(input).strip()
    return q + "\n\n"


def encode_example(encode: Callable[[str], list[int]], eos_id: int, instruction: str, input: str | None,
                   output: str) -> tuple[list[int], list[int]]:
    """Token ids and next-token labels of one example.

    ``full = encode(format_prompt(instruction, input)) + encode(output) + [eos_id]``; returns
    ``(input_ids = full[:-1], labels = full[1:])`` with ``labels[t] = -100`` where ``full[t+1]``
    is a prompt token, so exactly the response tokens and the EOS carry loss. Lists of ints of
    equal length ``len(full) - 1``.
    """
    p = list(encode(format_prompt(instruction, input)))
    r = list(encode(output.strip())) + [int(eos_id)]
    full = p + r
    labels = [IGNORE_INDEX] * (len(p) - 1) + r
    return full[:-1], labels


# ----------------------------------------------------------------------------------- data
class SFTDataset:
    """The self-instruct output tokenized in memory, served as padded global batches.

    Args:
        instruct_dir: ``instruct/`` of ``make instruct`` (``lang=xx/part-*.parquet`` with columns
            ``instruction, input, output, lang``), or a list of row dicts (tests).
        encode: text -> token ids (SentencePiece ``encode``).
        eos_id, pad_id: special ids (pad only fills positions whose label is -100).
        seq_len: maximum tokens per example (``input_ids`` length); longer ones are dropped.
        languages: keep only these ISO 639-1 codes (``None``: all found).
        seed: shuffle seed; epoch ``e`` uses permutation ``default_rng([seed, e])``.
        packing: also serve packed rows (:meth:`packed_batch`, module docstring).

    Attributes: ``input_ids``/``labels`` (lists of int64 arrays), ``lang_ids`` (int64 array),
    ``languages`` (sorted codes), ``counts`` (``{"rows", "kept", "too_long", "empty"}``,
    rows = kept + too_long + empty).

    Raises:
        FileNotFoundError: no parquet under ``instruct_dir``.
        ValueError: nothing left to train on.
    """

    def __init__(self, instruct_dir: str | Path | Sequence[dict], encode: Callable[[str], list[int]], *,
                 eos_id: int, pad_id: int, seq_len: int, languages: Sequence[str] | None = None,
                 seed: int = 1234, packing: bool = False):
        self.packing = bool(packing)
        self._epoch_rows: list[list[list[int]]] = []  # packed rows of each epoch, computed lazily
        rows = self._read(instruct_dir) if isinstance(instruct_dir, (str, Path)) else list(instruct_dir)
        if languages:
            rows = [r for r in rows if r.get("lang") in set(languages)]
        self.languages = sorted({str(r.get("lang") or "und") for r in rows})
        li = {l: i for i, l in enumerate(self.languages)}
        self.pad_id, self.seq_len, self.seed = int(pad_id), int(seq_len), int(seed)
        self.input_ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        lang_ids = []
        self.counts = {"rows": len(rows), "kept": 0, "too_long": 0, "empty": 0}
        for r in rows:
            ins, out = str(r.get("instruction") or ""), str(r.get("output") or "")
            if not ins.strip() or not out.strip():
                self.counts["empty"] += 1
                continue
            x, y = encode_example(encode, eos_id, ins, r.get("input"), out)
            if len(x) > seq_len:
                self.counts["too_long"] += 1
                continue
            self.input_ids.append(np.asarray(x, dtype=np.int64))
            self.labels.append(np.asarray(y, dtype=np.int64))
            lang_ids.append(li[str(r.get("lang") or "und")])
            self.counts["kept"] += 1
        self.lang_ids = np.asarray(lang_ids, dtype=np.int64)
        if not self.input_ids:
            raise ValueError(f"no usable SFT examples (counts {self.counts}); check data.instruct_dir, "
                             "data.languages and data.seq_len")

    @staticmethod
    def _read(root: str | Path) -> list[dict]:
        import pyarrow.parquet as pq

        root = Path(root)
        files = sorted(root.glob("lang=*/*.parquet")) or sorted(root.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no instruct parquet under {root} (expected lang=xx/part-*.parquet "
                                    "from `make instruct`); set data.instruct_dir")
        rows = []
        for f in files:
            t = pq.ParquetFile(f).read()  # the file alone (no hive partition inference)
            cols = set(t.column_names)
            d = t.to_pydict()
            n = t.num_rows
            lang = f.parent.name.split("=", 1)[1] if f.parent.name.startswith("lang=") else None
            for i in range(n):
                rows.append({"instruction": d["instruction"][i], "input": d["input"][i] if "input" in cols else "",
                             "output": d["output"][i],
                             "lang": (d["lang"][i] if "lang" in cols else None) or lang})
        return rows

    def __len__(self) -> int:
        return len(self.input_ids)

    def indices(self, step: int, global_batch: int) -> np.ndarray:
        """Example indices of optimizer step ``step`` (0-based): positions
        ``[step * G, (step + 1) * G)`` of the concatenated per-epoch permutations (a pure
        function of ``(seed, step)``: resuming needs only the step)."""
        n = len(self)
        out = []
        pos = step * global_batch
        while len(out) < global_batch:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            take = min(global_batch - len(out), n - off)
            out.extend(perm[off:off + take].tolist())
            pos += take
        return np.asarray(out, dtype=np.int64)

    def batch(self, step: int, *, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """This rank's share of step ``step``: ``(input_ids, labels)`` int64
        ``[grad_accum, micro_batch, T]``, ``lang_ids`` int64 ``[grad_accum, micro_batch]`` and the
        padding fraction of the global batch. ``T`` = longest example of the global batch rounded
        up to a multiple of 8 (same on every rank). Rank ``r`` takes rows ``r*micro_batch...`` of
        each ``world*micro_batch`` chunk."""
        idx = self.indices(step, global_batch)
        lens = [len(self.input_ids[i]) for i in idx]
        T = int(math.ceil(max(lens) / PAD_MULTIPLE) * PAD_MULTIPLE)
        pad_frac = 1.0 - sum(lens) / (T * len(idx))
        ga = global_batch // (micro_batch * world)
        x = torch.full((ga, micro_batch, T), self.pad_id, dtype=torch.int64)
        y = torch.full((ga, micro_batch, T), IGNORE_INDEX, dtype=torch.int64)
        lid = torch.zeros((ga, micro_batch), dtype=torch.int64)
        for m in range(ga):
            for b in range(micro_batch):
                i = idx[m * micro_batch * world + rank * micro_batch + b]
                k = len(self.input_ids[i])
                x[m, b, :k] = torch.from_numpy(self.input_ids[i])
                y[m, b, :k] = torch.from_numpy(self.labels[i])
                lid[m, b] = int(self.lang_ids[i])
        return x, y, lid, pad_frac


    def epoch_rows(self, epoch: int) -> list[list[int]]:
        """Packed rows of epoch ``epoch``: example indices in the epoch's permutation order,
        cut into rows of at most ``seq_len`` tokens (next fit). Cached; a pure function of
        ``(seed, epoch)``."""
        while len(self._epoch_rows) <= epoch:
            e = len(self._epoch_rows)
            rows: list[list[int]] = []
            cur: list[int] = []
            fill = 0
            for i in np.random.default_rng([self.seed, e]).permutation(len(self)).tolist():
                k = len(self.input_ids[i])
                if cur and fill + k > self.seq_len:
                    rows.append(cur)
                    cur, fill = [], 0
                cur.append(i)
                fill += k
            rows.append(cur)
            self._epoch_rows.append(rows)
        return self._epoch_rows[epoch]

    def packed_rows(self, step: int, global_batch: int) -> list[list[int]]:
        """Rows ``[step * G, (step + 1) * G)`` of the concatenated epochs' packed rows."""
        out: list[list[int]] = []
        pos, epoch = step * global_batch, 0
        while len(self.epoch_rows(epoch)) <= pos:
            pos -= len(self.epoch_rows(epoch))
            epoch += 1
        while len(out) < global_batch:
            rows = self.epoch_rows(epoch)
            take = min(global_batch - len(out), len(rows) - pos)
            out.extend(rows[pos:pos + take])
            pos, epoch = 0, epoch + 1
        return out

    def packed_batch(self, step: int, *, global_batch: int, micro_batch: int, rank: int = 0, world: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int]:
        """This rank's share of step ``step`` in packed rows: ``(input_ids, labels,
        segment_ids, lang_ids)`` int64 ``[grad_accum, micro_batch, T]`` (``segment_ids`` 1, 2,
        ... per example in the row, 0 on padding; ``lang_ids`` per token), the padding fraction
        of the global batch and its number of examples. ``T`` = fullest row of the global batch
        rounded up to 8 (at most ``seq_len``). Rows are assigned to ranks as in :meth:`batch`."""
        rows = self.packed_rows(step, global_batch)
        fills = [sum(len(self.input_ids[i]) for i in r) for r in rows]
        T = min(int(math.ceil(max(fills) / PAD_MULTIPLE) * PAD_MULTIPLE), self.seq_len)
        pad_frac = 1.0 - sum(fills) / (T * len(rows))
        ga = global_batch // (micro_batch * world)
        x = torch.full((ga, micro_batch, T), self.pad_id, dtype=torch.int64)
        y = torch.full((ga, micro_batch, T), IGNORE_INDEX, dtype=torch.int64)
        seg = torch.zeros((ga, micro_batch, T), dtype=torch.int64)
        lid = torch.zeros((ga, micro_batch, T), dtype=torch.int64)
        for m in range(ga):
            for b in range(micro_batch):
                at = 0
                for s_, i in enumerate(rows[m * micro_batch * world + rank * micro_batch + b], start=1):
                    k = len(self.input_ids[i])
                    x[m, b, at:at + k] = torch.from_numpy(self.input_ids[i])
                    y[m, b, at:at + k] = torch.from_numpy(self.labels[i])
                    seg[m, b, at:at + k] = s_
                    lid[m, b, at:at + k] = int(self.lang_ids[i])
                    at += k
        return x, y, seg, lid, pad_frac, sum(len(r) for r in rows)


def forward_backward_packed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seg: torch.Tensor,
                            lang_ids: torch.Tensor, *, world: int, n_languages: int, distributed: bool,
                            accumulate_unsharded_grads: bool = False) -> torch.Tensor:
    """``training.train.forward_backward`` for packed rows: ``x, y, seg, lang_ids`` int64
    ``[grad_accum, micro_batch, T]`` (``seg``/``lang_ids`` per token, :meth:`SFTDataset.packed_batch`).
    Same loss scaling (mean over the global batch's label tokens at any world size) and the
    same float64 ``[2 + 2L]`` all-reduced statistics, per-language sums taken per token."""
    from training.train import all_reduce_sum_

    device = x.device
    L = n_languages
    n_valid = (y != IGNORE_INDEX).sum(dtype=torch.float64).reshape(1)
    all_reduce_sum_(n_valid, device)
    scale = (world / n_valid[0]).to(torch.float32)
    stats = torch.zeros(2 + 2 * L, dtype=torch.float64, device=device)
    for m in range(x.shape[0]):
        if distributed and accumulate_unsharded_grads:
            model.set_requires_gradient_sync(m == x.shape[0] - 1)
        total, tok = model(x[m], y[m], loss_reduction="sum_and_none", segment_ids=seg[m])
        (total * scale).backward()
        with torch.no_grad():
            valid = (y[m] != IGNORE_INDEX).to(torch.float64).flatten()
            lt = tok.double().flatten() * valid
            stats[0] += lt.sum()
            stats[1] += valid.sum()
            stats[2:2 + L].index_add_(0, lang_ids[m].flatten(), lt)
            stats[2 + L:].index_add_(0, lang_ids[m].flatten(), valid)
    return all_reduce_sum_(stats, device)


# --------------------------------------------------------------------------------- config
@dataclass
class BaseSection:
    """The checkpoint to fine-tune. ``path``: an HF export directory (``config.json`` +
    safetensors of ``make export``) or a DCP checkpoint (one ``step-N`` directory, or a root of
    them: the newest complete one); ``config``: for DCP, the training config YAML (or model
    name) it was trained with. ``tokenizer``: SentencePiece ``.model`` (default: the HF dir's
    ``tokenizer.model`` or the token manifest's)."""

    path: str | None = None
    config: str | None = None
    tokenizer: str | None = None


@dataclass
class SFTDataSection:
    """``instruct_dir``: output of ``make instruct``; ``seq_len``: max tokens per example
    (longer ones dropped and counted) and, when packing, per row; ``languages``: ISO 639-1
    codes to keep (null = all); ``seed``: data order; ``packing``: several examples per row
    with attention kept inside each (module docstring; ``training.global_batch_size`` then
    counts rows of ``seq_len`` tokens), false = one padded example per row."""

    instruct_dir: str = "build/sample/instruct"
    seq_len: int = 512
    languages: list[str] | None = None
    seed: int = 1234
    packing: bool = False


@dataclass
class ExportSection:
    """HF export at the end: ``dir`` (null = ``<out_dir>/hf``), ``dtype`` float32|bfloat16,
    ``enabled``."""

    enabled: bool = True
    dir: str | None = None
    dtype: str = "float32"


@dataclass
class SFTConfig:
    """A fine-tuning run (``configs/train/sft-*.yaml``). ``optim``/``training``/``checkpoint``/
    ``metrics`` are the pretraining sections (``training.train_config``); ``metrics.validate``
    and ``training.spike_guard`` are not used by SFT."""

    run_name: str = "sft"
    out_dir: str = "build/sft"
    base: BaseSection = field(default_factory=BaseSection)
    data: SFTDataSection = field(default_factory=SFTDataSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=2e-5, warmup_steps=10, weight_decay=0.0))
    training: TrainingSection = field(default_factory=lambda: TrainingSection(steps=100, global_batch_size=8))
    checkpoint: CheckpointSection = field(default_factory=lambda: CheckpointSection(dir="build/sft/checkpoints"))
    metrics: MetricsSection = field(default_factory=lambda: MetricsSection(validate=False, tensorboard=False))
    export: ExportSection = field(default_factory=ExportSection)


_SFT_SECTIONS = {"base": BaseSection, "data": SFTDataSection, "optim": OptimSection,
                 "training": TrainingSection, "checkpoint": CheckpointSection, "metrics": MetricsSection,
                 "export": ExportSection}


def load_sft_config(path: str | Path | None, overrides: list[str] | None = None) -> SFTConfig:
    """Load an SFT YAML (``None``: defaults) and apply ``section.key=value`` overrides.
    Sections omitted keep the defaults of :class:`SFTConfig`; given keys replace single fields.

    Raises:
        FileNotFoundError: ``path`` missing. ValueError: unknown keys or bad values (a string
        given for ``data.languages`` is taken as one code).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SFT config not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: top level must be a mapping")
    for o in overrides or []:
        set_dotted(raw, o)
    top = {f.name for f in dataclasses.fields(SFTConfig)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(f"unknown top-level SFT config key(s) {unknown}; known: {sorted(top)}")
    default = SFTConfig()
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _SFT_SECTIONS:
            if v is not None and not isinstance(v, dict):
                raise ValueError(f"config section {k!r} must be a mapping")
            merged = {**dataclasses.asdict(getattr(default, k)), **(v or {})}
            kwargs[k] = build_section(_SFT_SECTIONS[k], merged, k)
        else:
            kwargs[k] = v
    cfg = SFTConfig(**kwargs)
    if isinstance(cfg.data.languages, str):
        cfg.data.languages = [cfg.data.languages]
    t = cfg.training
    if t.steps <= 0 or t.global_batch_size <= 0 or t.micro_batch_size <= 0 \
            or t.global_batch_size % t.micro_batch_size:
        raise ValueError("training: need steps > 0 and global_batch_size a positive multiple of micro_batch_size")
    if cfg.data.seq_len <= 1:
        raise ValueError("data.seq_len must be > 1")
    if cfg.export.dtype not in ("float32", "bfloat16"):
        raise ValueError("export.dtype must be float32 or bfloat16")
    if cfg.optim.schedule not in ("cosine", "linear_ramp", "exp_ramp"):
        raise ValueError("optim.schedule must be cosine, linear_ramp or exp_ramp")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ValueError("training.device must be auto, cpu or cuda")
    return cfg


# ---------------------------------------------------------------------------- base model
def polylm_state_from_hf(hf_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Inverse of ``training.export.to_hf_state_dict``: a GPT2LMHeadModel directory written by
    ``export_hf`` -> ``(ModelConfig, PolyLM state dict)`` (fp32 CPU tensors; Conv1D weights
    transposed back; ``tok_emb`` zero-padded to ``padded_vocab_size`` rows).

    Raises:
        FileNotFoundError: no ``config.json``/safetensors. ValueError: not a GPT-2 export.
    """
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{hf_dir} is not an HF export (no config.json)")
    c = json.loads((hf_dir / "config.json").read_text())
    if c.get("model_type") != "gpt2":
        raise ValueError(f"{hf_dir}: model_type {c.get('model_type')!r}, expected gpt2 (a `make export` dir)")
    cfg = ModelConfig.from_name("tiny", n_layers=c["n_layer"], d_model=c["n_embd"], n_heads=c["n_head"],
                                d_ff=c.get("n_inner") or 4 * c["n_embd"], vocab_size=c["vocab_size"],
                                max_seq_len=c["n_positions"], layer_norm_eps=c["layer_norm_epsilon"],
                                init_std=c.get("initializer_range", 0.02))
    cfg = dataclasses.replace(cfg, name=f"hf:{hf_dir.name}")
    files = sorted(hf_dir.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{hf_dir}: no model*.safetensors")
    hf: dict[str, torch.Tensor] = {}
    for f in files:
        hf.update(load_file(str(f)))
    hf = {k[len("transformer."):] if k.startswith("transformer.") else k: v.float() for k, v in hf.items()}
    V, Vp, d = cfg.vocab_size, cfg.padded_vocab_size, cfg.d_model
    emb = torch.zeros(Vp, d)
    emb[:V] = hf["wte.weight"]
    sd = {"tok_emb.weight": emb, "pos_emb.weight": hf["wpe.weight"],
          "ln_f.weight": hf["ln_f.weight"], "ln_f.bias": hf["ln_f.bias"]}
    for i in range(cfg.n_layers):
        p, q = f"layers.{i}.", f"h.{i}."
        for a in ("ln_1", "ln_2"):
            sd[p + a + ".weight"] = hf[q + a + ".weight"]
            sd[p + a + ".bias"] = hf[q + a + ".bias"]
        for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                     ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            sd[p + a + ".weight"] = hf[q + b + ".weight"].t().contiguous()
            sd[p + a + ".bias"] = hf[q + b + ".bias"]
    return cfg, sd


def _load_full_state(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Copy a full (unsharded) state dict into a possibly FSDP2-sharded model (every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=True))


# ---------------------------------------------------------------------------------- train
def train_sft(cfg: SFTConfig, mcfg: ModelConfig, base_state: dict[str, torch.Tensor] | None,
              tokenizer_path: str | Path, *, stop_at_step: int | None = None,
              rows: Sequence[dict] | None = None) -> dict[str, Any]:
    """Fine-tune (or resume fine-tuning) as configured; returns a summary dict
    (``steps``, ``first_loss``, ``last_loss``, ``counts``, ``export_dir``, ``seconds``).

    Args:
        cfg: the run config. mcfg: model config of the base. base_state: its full PolyLM state
            dict (ignored when a checkpoint under ``cfg.checkpoint.dir`` is resumed).
        tokenizer_path: SentencePiece model the base was trained with.
        stop_at_step: stop after this step (checkpoint written there), schedule unchanged.
        rows: examples as dicts instead of ``cfg.data.instruct_dir`` (tests).

    The HF export happens only when the last step (``training.steps``) is reached.
    """
    import sentencepiece as spm

    from training.checkpoint import CheckpointManager
    from training.export import export_hf
    from training.metrics import MetricsLogger, mfu, peak_flops_per_device
    from training.optim import WarmupCosine, build_optimizer
    from training.train import grad_norm, build_model, forward_backward, init_distributed, to_device

    t0 = time.perf_counter()
    tcfg = cfg.training
    if tcfg.num_threads:
        torch.set_num_threads(int(tcfg.num_threads))
    rank, world, device = init_distributed(tcfg.device)
    distributed = dist.is_initialized()
    torch.manual_seed(tcfg.seed)
    if tcfg.global_batch_size % (tcfg.micro_batch_size * world):
        raise ValueError(f"training.global_batch_size={tcfg.global_batch_size} is not a multiple of "
                         f"micro_batch_size*world_size={tcfg.micro_batch_size}*{world}")
    if mcfg.max_seq_len < cfg.data.seq_len:
        raise ValueError(f"data.seq_len={cfg.data.seq_len} exceeds the base model's max_seq_len={mcfg.max_seq_len}")
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    eos = sp.eos_id()
    if eos < 0:
        raise ValueError(f"tokenizer {tokenizer_path} has no EOS piece; SFT ends every response with EOS")
    pad = sp.pad_id() if sp.pad_id() >= 0 else eos
    ds = SFTDataset(rows if rows is not None else cfg.data.instruct_dir, sp.encode, eos_id=eos, pad_id=pad,
                    seq_len=cfg.data.seq_len, languages=cfg.data.languages, seed=cfg.data.seed,
                    packing=cfg.data.packing)
    languages = ds.languages

    model = build_model(mcfg, cfg, device, distributed)  # reads cfg.training only
    o = cfg.optim
    optimizer = build_optimizer(model, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                embedding_weight_decay=o.embedding_weight_decay)
    scheduler = WarmupCosine(optimizer, peak_lr=o.lr, warmup_steps=o.warmup_steps, total_steps=tcfg.steps,
                             min_ratio=o.min_lr_ratio, schedule=o.schedule)
    ckpt = CheckpointManager(cfg.checkpoint.dir, keep_last=cfg.checkpoint.keep_last,
                             checksum=cfg.checkpoint.checksum) if cfg.checkpoint.enabled else None
    start = 0
    state = ckpt.load(model, optimizer, resume=cfg.checkpoint.resume) if ckpt is not None else None
    if state is not None:
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
    else:
        if base_state is None:
            raise ValueError("no base weights and no SFT checkpoint to resume; set base.path")
        _load_full_state(model, {k: v.to(device) for k, v in base_state.items()})

    out_dir = Path(cfg.out_dir)
    metrics = MetricsLogger(out_dir, rank=rank, tensorboard=cfg.metrics.tensorboard,
                            log_every=cfg.metrics.log_every, fresh=start == 0)
    peak, _ = peak_flops_per_device(device, cfg.metrics.peak_flops_per_device)
    end = tcfg.steps if stop_at_step is None else min(int(stop_at_step), tcfg.steps)
    if rank == 0:
        print(f"[sft] run {cfg.run_name}: base {mcfg.name} L={mcfg.n_layers} d={mcfg.d_model} V={mcfg.vocab_size} | "
              f"examples {ds.counts} languages {languages} | global_batch={tcfg.global_batch_size} "
              f"micro={tcfg.micro_batch_size} world={world} | steps {start}->{end} of {tcfg.steps}", flush=True)
    L = len(languages)

    def save(step: int) -> None:
        ckpt.save(step, model, optimizer, {"scheduler": scheduler.state_dict(), "run_name": cfg.run_name,
                                           "languages": languages, "data_seed": cfg.data.seed,
                                           "kind": "sft"})

    model.train()
    first = last = None
    for step in range(start, end):
        ts = time.perf_counter()
        lr = scheduler.current_lr()
        if ds.packing:
            x, y, seg, lid, pad_frac, n_ex = ds.packed_batch(step, global_batch=tcfg.global_batch_size,
                                                             micro_batch=tcfg.micro_batch_size, rank=rank,
                                                             world=world)
            stats = forward_backward_packed(model, to_device(x, device), to_device(y, device),
                                            to_device(seg, device), to_device(lid, device), world=world,
                                            n_languages=L, distributed=distributed,
                                            accumulate_unsharded_grads=tcfg.accumulate_unsharded_grads)
        else:
            x, y, lid, pad_frac = ds.batch(step, global_batch=tcfg.global_batch_size,
                                           micro_batch=tcfg.micro_batch_size, rank=rank, world=world)
            n_ex = tcfg.global_batch_size
            stats = forward_backward(model, to_device(x, device), to_device(y, device), to_device(lid, device),
                                     world=world, n_languages=L, distributed=distributed,
                                     accumulate_unsharded_grads=tcfg.accumulate_unsharded_grads)
        norm, params = grad_norm(model)
        torch.nn.utils.clip_grads_with_norm_(params, o.grad_clip, norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        v = stats.tolist()  # one host read per step (SFT steps are few)
        dt = time.perf_counter() - ts
        T = x.shape[-1]
        tps = tcfg.global_batch_size * T * (1.0 - pad_frac) / dt
        loss = v[0] / v[1]
        first = loss if first is None else first
        last = loss
        metrics.log(step + 1, {
            "loss": loss, "lang_loss": {languages[i]: v[2 + i] / v[2 + L + i] for i in range(L) if v[2 + L + i] > 0},
            "grad_norm": float(norm), "lr": lr, "label_tokens": int(v[1]), "seq_len": T, "pad_frac": pad_frac,
            "examples": n_ex,
            "tokens_per_sec": tps, "mfu": mfu(tps, mcfg.flops_per_token(T), world, peak), "step_time_s": dt})
        done = step + 1
        if ckpt is not None and cfg.checkpoint.interval > 0 and done % cfg.checkpoint.interval == 0:
            save(done)
    if ckpt is not None and end > start and not (cfg.checkpoint.interval > 0 and end % cfg.checkpoint.interval == 0):
        save(end)
    metrics.close()
    export_dir = None
    if cfg.export.enabled and end == tcfg.steps:
        export_dir = Path(cfg.export.dir or out_dir / "hf")
        export_hf(model, mcfg, tokenizer_path, export_dir, dtype=getattr(torch, cfg.export.dtype))
    summary = {"run_name": cfg.run_name, "steps": end, "start_step": start, "first_loss": first, "last_loss": last,
               "counts": ds.counts, "languages": languages, "seconds": time.perf_counter() - t0,
               "export_dir": str(export_dir) if export_dir else None}
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"[sft] done: steps {start}->{end}, loss {first} -> {last}, export {export_dir}", flush=True)
    if distributed:
        dist.barrier()
    return summary
