"""Training-run configuration: dataclasses plus one YAML loader.

A run is described by one YAML file (``configs/train/*.yaml``) whose top-level sections map to
the dataclasses below (torchtitan style: config as dataclasses, one loader)::

    run_name: sample-small
    model:      {name: tiny, overrides: {n_layers: 2}}
    data:       {tokens_dir: build/sample/tokens, seq_len: 128, ...}
    curriculum: {stages: [{name: stage1, start_step: 0, lang_weights: {...}}, ...]}
    optim:      {lr: 1.0e-4, warmup_steps: 2000, ...}
    training:   {steps: 300, global_batch_size: 16, micro_batch_size: 4, ...}
    checkpoint: {dir: ..., interval: 100, keep_last: 3}
    metrics:    {log_every: 1, tensorboard: true, val_every: 100, ...}

Unknown keys raise ``ValueError`` naming the key (a typo never silently falls back to a
default). ``load_config(path, overrides=["optim.lr=3e-4", ...])`` applies dotted overrides whose
values are parsed as YAML scalars.

Defaults follow the PolyLM paper (arXiv 2307.06018, section 3.2 "Training" and the released
scripts, summarised in ``shared/DESIGN.md``): AdamW beta1 0.9, beta2 0.95, eps 1e-8, weight decay
0.1, gradient clipping 1.0, 2000 warmup steps then cosine decay to 10% of the peak LR; and the
two-stage curriculum of section 3.3 (see :func:`paper_curriculum`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Stage-2 start of the paper's curriculum: "about the last 100B tokens" of 640B, i.e. the
#: second stage begins at 540B / 640B of training (PolyLM paper section 3.3).
PAPER_STAGE2_START_FRACTION = 540.0 / 640.0


@dataclass
class StageConfig:
    """One curriculum stage.

    Exactly one of ``start_step`` (optimizer steps), ``start_tokens`` (training tokens consumed,
    i.e. steps x global_batch_size x seq_len) or ``start_fraction`` (of ``training.steps``)
    gives where the stage begins; the first stage must begin at 0.

    ``lang_weights``: target share of training tokens per language (ISO 639-1 keys). The value
    ``"natural"`` (or ``None``) means every language in proportion to its tokens in the
    manifest. A dict may contain the key ``"*"``: the share for all languages not named,
    split among them in proportion to their tokens (``rest_split: tokens``, the default) or
    equally (``rest_split: equal``). Weights are normalised over the languages present in
    the data.

    ``source_weights``: multipliers applied within a language to the natural (token-count)
    share of each stream; a key is a source name, a tier (web|reference|parallel|book) or
    ``"*"``; the lookup order is source, tier, ``"*"``, then 1.0.
    """

    name: str = "stage"
    start_step: int | None = None
    start_tokens: float | None = None
    start_fraction: float | None = None
    lang_weights: Any = "natural"
    rest_split: str = "tokens"
    source_weights: dict[str, float] = field(default_factory=dict)

    def resolve_start(self, *, total_steps: int, tokens_per_step: int) -> int:
        """Return the optimizer step at which this stage starts.

        Raises ``ValueError`` unless exactly one start field is set.
        """
        given = [x is not None for x in (self.start_step, self.start_tokens, self.start_fraction)]
        if sum(given) != 1:
            raise ValueError(
                f"curriculum stage {self.name!r}: set exactly one of start_step, start_tokens, "
                f"start_fraction (got start_step={self.start_step}, "
                f"start_tokens={self.start_tokens}, start_fraction={self.start_fraction})"
            )
        if self.start_step is not None:
            return int(self.start_step)
        if self.start_tokens is not None:
            return int(math.ceil(float(self.start_tokens) / tokens_per_step))
        return int(round(float(self.start_fraction) * total_steps))


def paper_curriculum() -> list[StageConfig]:
    """The PolyLM two-stage curriculum (paper section 3.3; numbers from ``shared/DESIGN.md``).

    Stage 1: the full natural mix of the PolyLM corpus, English about 70% and Chinese about 22%
    of tokens (the other 16 languages share the remaining 8% by their token counts).
    Stage 2 (the last ~100B of 640B tokens): non-English raised to 60% (English 40%, Chinese
    and the rest scaled up in the stage-1 ratio 22:8), and high-quality sources favoured:
    reference (Wikipedia/news), book and parallel (OPUS-style) streams get 3x their natural
    within-language share. The factor 3 is this project's choice; the paper gives no number.
    """
    return [
        StageConfig(
            name="stage1", start_step=0, lang_weights={"en": 0.70, "zh": 0.22, "*": 0.08}
        ),
        StageConfig(
            name="stage2",
            start_fraction=PAPER_STAGE2_START_FRACTION,
            lang_weights={"en": 0.40, "zh": 0.44, "*": 0.16},
            source_weights={"reference": 3.0, "book": 3.0, "parallel": 3.0, "web": 1.0},
        ),
    ]


@dataclass
class ModelSection:
    """Which model: a ``training.config.ModelConfig.from_name`` name plus field overrides.

    ``vocab_size: auto`` (default) takes the vocabulary size from the token manifest.
    """

    name: str = "tiny"
    vocab_size: Any = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Token data: ``tokens_dir`` holds ``manifest.json`` and the token shards.

    ``seq_len``: tokens per training sample (windows of ``seq_len + 1`` are packed).
    Validation: in the first ``val_files_per_stream`` shard files of every stream, the
    ``ceil(val_fraction * rows)`` documents with the smallest CRC32 of their ``id`` (at least
    one per file with two or more rows) are held out of training; up to
    ``val_max_windows_per_lang`` windows per language are evaluated.
    """

    tokens_dir: str = "build/sample/tokens"
    seq_len: int = 2048
    seed: int = 1234
    val_fraction: float = 0.01
    val_files_per_stream: int = 1
    val_max_windows_per_lang: int = 16


@dataclass
class CurriculumSection:
    """Curriculum stages, in order (defaults to :func:`paper_curriculum`)."""

    stages: list[StageConfig] = field(default_factory=paper_curriculum)


@dataclass
class OptimSection:
    """AdamW and LR schedule (PolyLM paper section 3.2; ``shared/DESIGN.md``).

    ``schedule``: ``cosine`` = linear warmup from ~0 over ``warmup_steps`` then cosine to
    ``min_lr_ratio * lr`` at ``training.steps``; ``linear_ramp`` = linear warmup only, then
    constant; ``exp_ramp`` = geometric warmup from ``min_lr_ratio * lr`` to ``lr``, then
    constant (both used by ``jobs/lr_find.py``).
    ``embedding_weight_decay``: decay the token/position embeddings (the token embedding is
    also the tied output layer) with ``weight_decay``. Default ``true``: Megatron-LM, which
    PolyLM trained with, exempts only biases and 1-D parameters (LayerNorm) from weight decay
    (``megatron/core/optimizer/__init__.py``, ``_get_param_groups``: ``no_wd =
    name.endswith(".bias") or len(param.shape) == 1``), so embeddings are decayed.
    """

    lr: float = 1.0e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1.0e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    embedding_weight_decay: bool = True


@dataclass
class TrainingSection:
    """Loop settings.

    ``global_batch_size`` (sequences per optimizer step, over all data-parallel ranks) must be
    a multiple of ``micro_batch_size * world_size``; the quotient is the number of gradient
    accumulation micro-steps. ``device``: ``auto`` (CUDA if available, else CPU), ``cpu`` or
    ``cuda``. ``mixed_precision`` is ignored on CPU (fp32 there).
    ``spike_guard``: ``skip`` (default) drops the update of a step whose loss or gradient
    norm is NaN/inf or whose loss is a spike: above ``median + spike_mad_k * 1.4826 * MAD`` of
    the last ``spike_window`` accepted losses (``training.train.LossGuard``; k = 6 and 128 steps
    after OLMo-core's skip-step optimizer); ``rollback`` instead reloads model and optimizer
    from the newest checkpoint (data and LR schedule go on, skipping the batches in between;
    PaLM sec. 5.1), falling back to ``skip`` when there is none (it reads the guard's verdict
    on the host every step, ``skip`` decides and skips on the device); ``off`` disables the
    guard. ``spike_mad_k <= 0``: NaN/inf only.
    ``accumulate_unsharded_grads``: ``false`` (default) reduce-scatters gradients after every
    micro-batch (only sharded gradients are held); ``true`` syncs once per step but holds an
    unsharded fp32 gradient copy of the whole model per GPU (1.0 x parameters x 4 bytes).
    """

    steps: int = 1000
    global_batch_size: int = 512
    micro_batch_size: int = 1
    seed: int = 42
    device: str = "auto"
    mixed_precision: bool = True
    activation_checkpointing: bool = False
    compile: bool = False
    spike_guard: str = "skip"
    spike_mad_k: float = 6.0
    spike_window: int = 128
    accumulate_unsharded_grads: bool = False
    num_threads: int | None = None

    def __post_init__(self):
        if self.spike_guard is False:  # YAML 1.1 reads a bare `off` as false
            self.spike_guard = "off"


@dataclass
class CheckpointSection:
    """DCP checkpoints under ``dir`` every ``interval`` steps (0 = only at the end); the last
    ``keep_last`` complete ones are kept. ``resume``: ``auto`` loads the newest complete,
    valid checkpoint if any; ``never`` starts fresh; a path loads that checkpoint.
    ``checksum``: record and verify a CRC32 per file (sizes are always checked).
    ``enabled: false`` writes no checkpoints at all (``jobs/lr_find.py``)."""

    enabled: bool = True
    dir: str = "build/train/checkpoints"
    interval: int = 1000
    keep_last: int = 3
    resume: str = "auto"
    checksum: bool = True


@dataclass
class MetricsSection:
    """Logging: console every ``log_every`` steps, a JSONL row every step
    (``<out_dir>/metrics.jsonl``), TensorBoard under ``<out_dir>/tb``; validation every
    ``val_every`` steps (0 = only before the first and after the last step; ``validate: false``
    = never) with ``val_micro_batch_size`` windows per forward.
    ``peak_flops_per_device``: for MFU; ``null`` = a table lookup on CUDA, a measured fp32
    GEMM rate on CPU."""

    log_every: int = 10
    tensorboard: bool = True
    validate: bool = True
    val_every: int = 0
    val_micro_batch_size: int = 4
    peak_flops_per_device: float | None = None


@dataclass
class TrainConfig:
    """A full training run. ``out_dir`` receives metrics.jsonl, tb/, summary.json."""

    run_name: str = "run"
    out_dir: str = "build/train"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    optim: OptimSection = field(default_factory=OptimSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "curriculum": CurriculumSection,
    "optim": OptimSection,
    "training": TrainingSection,
    "checkpoint": CheckpointSection,
    "metrics": MetricsSection,
}


def build_section(cls, raw: Any, where: str):
    """One config section (a dataclass ``cls``) from its YAML mapping ``raw``, strictly.

    Args:
        cls: the section's dataclass (``ModelSection``, ``StageConfig``, ...).
        raw: the mapping read from YAML, or ``None`` for the section's defaults.
        where: the section's dotted path, named in errors (``"optim"``, ``"curriculum.stages[0]"``).

    Returns:
        an instance of ``cls``; numbers and strings are checked against the field types.

    Raises:
        ValueError: ``raw`` is not a mapping, has unknown keys (named, with the known ones), or a
            value of the wrong type (named with its key).
    """
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section {where!r}; known: {sorted(names)}")
    kwargs = dict(raw)
    if cls is CurriculumSection and "stages" in kwargs:
        stages = kwargs["stages"]
        if stages == "paper":
            kwargs["stages"] = paper_curriculum()
        else:
            if not isinstance(stages, list) or not stages:
                raise ValueError("curriculum.stages must be a non-empty list or 'paper'")
            kwargs["stages"] = [build_section(StageConfig, s, f"{where}.stages[{i}]") for i, s in enumerate(stages)]
    if cls is OptimSection and "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            kwargs[f.name] = _typed(f"{where}.{f.name}", f.type, kwargs[f.name])
    return cls(**kwargs)


_SCALAR_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _typed(key: str, ftype: str, value: Any) -> Any:
    """``value`` checked against the scalar field type ``ftype`` (``"int"``, ``"float | None"``,
    ...; other types pass through). Floats also accept numeric strings (YAML reads ``1e-4`` as a
    string; a string field given a YAML 1.1 boolean gets ``"on"``/``"off"``, so ``spike_guard: off``
    works). Raises ``ValueError`` naming the key, the expected type and the value given, e.g.
    ``training.steps: expected an integer, got 'abc'``."""
    base, optional = ftype, False
    if ftype.endswith(" | None"):
        base, optional = ftype[: -len(" | None")], True
    if base not in _SCALAR_TYPES or (optional and value is None):
        return value
    if base == "str" and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1 reads a bare on/off (yes/no) as a boolean
    if base == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    ok = isinstance(value, _SCALAR_TYPES[base]) and not (base != "bool" and isinstance(value, bool))
    if not ok:
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[base]
        raise ValueError(f"{key}: expected {what}{' or null' if optional else ''}, got {value!r}")
    return float(value) if base == "float" else value


def set_dotted(raw: dict, dotted: str) -> None:
    """Apply one ``--set section.key=value`` override to the raw config mapping, in place.

    ``value`` is parsed as YAML (``3e-4`` a float, ``[a, b]`` a list, ``off`` a boolean that
    string fields read back as ``"off"``); missing sections are created.

    Raises:
        ValueError: no ``=``, or a part of the dotted path names a value that is not a section.
    """
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r} must look like section.key=value")
    key, value = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain dict (the parsed YAML); raises ``ValueError``
    on unknown keys or malformed sections."""
    raw = dict(raw or {})
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(f"unknown top-level config key(s) {unknown}; known: {sorted(top)}")
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        kwargs[k] = build_section(_SECTIONS[k], v, k) if k in _SECTIONS else v
    cfg = TrainConfig(**kwargs)
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML run config and apply ``section.key=value`` overrides.

    Raises ``FileNotFoundError`` if ``path`` is missing and ``ValueError`` for unknown keys or
    invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    for o in overrides or []:
        set_dotted(raw, o)
    return config_from_dict(raw)


def validate(cfg: TrainConfig) -> None:
    """Check value ranges; raises ``ValueError`` with the offending field."""
    t, o, d = cfg.training, cfg.optim, cfg.data
    if t.steps <= 0:
        raise ValueError("training.steps must be > 0")
    if t.global_batch_size <= 0 or t.micro_batch_size <= 0:
        raise ValueError("training.global_batch_size and micro_batch_size must be > 0")
    if t.global_batch_size % t.micro_batch_size:
        raise ValueError("training.global_batch_size must be a multiple of micro_batch_size")
    if t.spike_guard not in ("skip", "rollback", "off"):
        raise ValueError("training.spike_guard must be skip, rollback or off")
    if t.spike_window < 1:
        raise ValueError("training.spike_window must be >= 1")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ValueError("training.device must be auto, cpu or cuda")
    if o.schedule not in ("cosine", "linear_ramp", "exp_ramp"):
        raise ValueError("optim.schedule must be cosine, linear_ramp or exp_ramp")
    if o.schedule == "exp_ramp" and not (0 < o.min_lr_ratio <= 1):
        raise ValueError("optim.schedule=exp_ramp needs 0 < min_lr_ratio <= 1 (the start factor)")
    if o.lr <= 0 or o.warmup_steps < 0 or not (0 <= o.min_lr_ratio <= 1):
        raise ValueError("optim: need lr > 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1")
    if d.seq_len <= 0:
        raise ValueError("data.seq_len must be > 0")
    if not (0 <= d.val_fraction < 1):
        raise ValueError("data.val_fraction must be in [0, 1)")
    if cfg.checkpoint.keep_last < 1:
        raise ValueError("checkpoint.keep_last must be >= 1")
    if not cfg.curriculum.stages:
        raise ValueError("curriculum.stages must not be empty")
