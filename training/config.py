"""Model configuration for the PolyLM decoder (architecture only; training settings live elsewhere).

The two real sizes follow the PolyLM paper (Wei et al. 2023, arXiv 2307.06018, model-size table) and its
released Megatron-LM launch scripts (``DAMO-NLP-MT/PolyLM``: ``pretrain_gpt_alitranx_1b7.sh`` and
``pretrain_gpt_alitranx_13b.sh``):

=============  =========  ==========  =======
                1.7B       13B
=============  =========  ==========  =======
layers          24         40
d_model         2048       5120
heads           16         40
d_ff            4 x d      4 x d
vocab           256,000    256,000
context         2048       2048
LayerNorm eps   1e-5       1e-5        (``--layernorm-epsilon 1e-5``)
init std        0.006      0.006       (``--init-method-std 0.006``)
=============  =========  ==========  =======

``ModelConfig.from_name`` also knows two CPU sizes: ``"tiny"`` (unit tests) and ``"small"``
(``make train`` / ``make bench`` on a laptop CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelConfig", "MODEL_CONFIGS", "model_names"]


@dataclass
class ModelConfig:
    """Shape and numerics of a PolyLM (GPT-style, pre-LayerNorm) decoder.

    Attributes:
        n_layers: number of transformer blocks ``L``.
        d_model: hidden size ``d``.
        n_heads: attention heads; ``d_model % n_heads == 0`` (head dim ``d / n_heads``).
        d_ff: FFN inner size (``4 * d_model`` in PolyLM).
        vocab_size: tokenizer vocabulary size ``V`` (256,000 for PolyLM; for the CPU sizes pass
            the vocabulary of the SentencePiece model in use, e.g. the token manifest's ``vocab_size``).
        max_seq_len: context length = number of learned absolute position embeddings (2048).
        layer_norm_eps: LayerNorm epsilon (1e-5, PolyLM scripts ``--layernorm-epsilon``).
        init_std: std of the normal init of embeddings and input projections. 0.006 for the
            PolyLM sizes (released scripts ``--init-method-std 0.006``); 0.02 (GPT-2 / Megatron
            default) for the CPU sizes. Output projections of each block use
            ``init_std / sqrt(2 * n_layers)`` (GPT-2 sec. 2.3; Megatron ``scaled_init_method_normal``).
        tie_embeddings: output projection = input embedding matrix (PolyLM: tied). Only ``True``
            is supported.
        bias: biases in every Linear and LayerNorm (PolyLM: on).
        dropout: dropout on embeddings, attention probabilities and residual branches (PolyLM: 0.0).
        pad_vocab_multiple: the embedding matrix has ``padded_vocab_size`` rows, ``vocab_size``
            rounded up to this multiple (128, as Megatron ``--make-vocab-size-divisible-by``), so
            GEMMs hit tensor-core-friendly shapes. Padding rows are zero and never produce logits.
        loss_chunk_tokens: tokens per chunk of the fused output-projection + fp32 cross-entropy
            (see ``training.model.fused_linear_cross_entropy``); bounds the fp32 logits held at
            once to ``loss_chunk_tokens x vocab_size x 4`` bytes (2048 x 256000 x 4 B = 2.1 GB).
        attention: ``"sdpa"`` (``F.scaled_dot_product_attention``, causal) or ``"eager"``
            (explicit matmul + softmax computed in fp32; reference / debugging path).
        name: registry name, informational.

    Raises:
        ValueError: from ``validate()`` (called in ``__post_init__``) on inconsistent shapes.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    vocab_size: int
    max_seq_len: int = 2048
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    tie_embeddings: bool = True
    bias: bool = True
    dropout: float = 0.0
    pad_vocab_multiple: int = 128
    loss_chunk_tokens: int = 2048
    attention: str = "sdpa"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` with a precise message if the configuration is inconsistent."""
        for k in ("n_layers", "d_model", "n_heads", "d_ff", "vocab_size", "max_seq_len",
                  "pad_vocab_multiple", "loss_chunk_tokens"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig.{k} must be a positive int, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise ValueError(f"init_std must be a positive finite float, got {self.init_std}")
        if not (self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if not self.tie_embeddings:
            raise ValueError("only tie_embeddings=True is supported (PolyLM ties input/output "
                             "embeddings)")
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be 'sdpa' or 'eager', got {self.attention!r}")

    # ------------------------------------------------------------- properties
    @property
    def head_dim(self) -> int:
        """Per-head dimension ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``pad_vocab_multiple`` (rows of the embedding)."""
        m = self.pad_vocab_multiple
        return ((self.vocab_size + m - 1) // m) * m

    # ------------------------------------------------------------ accounting
    def num_params(self, *, include_embeddings: bool = True, padded: bool = False) -> int:
        """Exact number of trainable parameters of ``training.model.PolyLM`` built from this config.

        Per block: QKV ``3d^2 + 3d``, attention out ``d^2 + d``, FFN ``2*d*d_ff + d_ff + d``, two
        LayerNorms ``4d``. Plus token embedding ``V*d`` (tied with the output layer, counted once),
        position embedding ``max_seq_len * d`` and the final LayerNorm ``2d``.

        Args:
            include_embeddings: if False, leave out token and position embeddings (the "non-
                embedding" N of Kaplan et al. 2020).
            padded: count the padded vocabulary rows (what is allocated) instead of ``vocab_size``.
        """
        d, f, L = self.d_model, self.d_ff, self.n_layers
        per_block = (3 * d * d + 3 * d) + (d * d + d) + (2 * d * f + f + d) + 4 * d
        n = L * per_block + 2 * d
        if include_embeddings:
            v = self.padded_vocab_size if padded else self.vocab_size
            n += v * d + self.max_seq_len * d
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B formula.

        ``6 * N + 12 * L * d * seq_len`` where ``N`` = parameters excluding the position embedding
        (a lookup, no FLOPs) but including the tied token embedding, because it is also the output
        projection (a ``d x V`` matmul) -- as in PaLM (Chowdhery et al. 2022, appendix B) and
        Chinchilla (Hoffmann et al. 2022, appendix F). The second term is attention scores and
        attention-weighted values (causal masking not discounted, as in PaLM). Activation
        recomputation is not counted (this is "model FLOPs" for MFU, not hardware FLOPs).

        Args:
            seq_len: sequence length in tokens; defaults to ``max_seq_len``.

        Returns:
            FLOPs per trained token (int).
        """
        T = self.max_seq_len if seq_len is None else int(seq_len)
        if T <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        n = self.num_params() - self.max_seq_len * self.d_model
        return 6 * n + 12 * self.n_layers * self.d_model * T

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/YAML serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict; unknown keys raise ``ValueError`` (typos are not silently ignored).

        A dict with a ``"base"`` key starts from that registered config and overrides the rest.
        """
        d = dict(d)
        base = d.pop("base", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(known)}")
        if base is not None:
            return cls.from_name(base, **d)
        return cls(**d)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """Registered config by name, or a YAML/JSON file path, with field overrides.

        Args:
            name: one of ``model_names()`` (``"polylm-1.7b"``, ``"polylm-13b"``, ``"tiny"``,
                ``"small"``) or a path to a ``.yaml``/``.yml``/``.json`` file holding the fields
                (optionally ``base: <name>``).
            **overrides: field values replacing the registered ones (e.g. ``vocab_size=8000``).

        Raises:
            KeyError: unknown name (message lists the known ones).
            ValueError: unknown override keys or an invalid resulting config.
        """
        p = Path(str(name))
        if p.suffix in (".yaml", ".yml", ".json"):
            if not p.is_file():
                raise FileNotFoundError(f"model config file not found: {p}")
            if p.suffix == ".json":
                data = json.loads(p.read_text())
            else:
                import yaml

                data = yaml.safe_load(p.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{p}: expected a mapping of ModelConfig fields")
            data.update(overrides)
            return cls.from_dict(data)
        key = str(name).lower()
        if key not in MODEL_CONFIGS:
            raise KeyError(f"unknown model config {name!r}; known: {model_names()}")
        base = dict(MODEL_CONFIGS[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(known)}")
        base.update(overrides)
        base.setdefault("name", key)
        return cls(**base)


# Registry. PolyLM numbers: paper model-size table + released scripts (see module docstring).
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "polylm-1.7b": dict(n_layers=24, d_model=2048, n_heads=16, d_ff=4 * 2048, vocab_size=256_000,
                        max_seq_len=2048, layer_norm_eps=1e-5, init_std=0.006),
    "polylm-13b": dict(n_layers=40, d_model=5120, n_heads=40, d_ff=4 * 5120, vocab_size=256_000,
                       max_seq_len=2048, layer_norm_eps=1e-5, init_std=0.006),
    # CPU sizes; vocab_size is a placeholder: pass the tokenizer's (token manifest "vocab_size").
    "tiny": dict(n_layers=2, d_model=64, n_heads=4, d_ff=256, vocab_size=512, max_seq_len=256,
                 init_std=0.02, loss_chunk_tokens=512),
    "small": dict(n_layers=4, d_model=256, n_heads=4, d_ff=1024, vocab_size=8000,
                  max_seq_len=512, init_std=0.02, loss_chunk_tokens=1024),
}


def model_names() -> list[str]:
    """Names accepted by ``ModelConfig.from_name``."""
    return sorted(MODEL_CONFIGS)
