"""Export a PolyLM to a Hugging Face ``GPT2LMHeadModel`` checkpoint plus its tokenizer.

PolyLM is architecturally GPT-2 (learned positions, pre-LayerNorm, tanh GeLU, tied embeddings,
biases), so the export is a renaming plus transposition:

=========================================  =============================================  =========
PolyLM (``nn.Linear`` weight ``[out, in]``)  GPT-2 (``Conv1D`` weight ``[in, out]``)         op
=========================================  =============================================  =========
``tok_emb.weight[:vocab_size]``             ``transformer.wte.weight``                     slice
``pos_emb.weight``                          ``transformer.wpe.weight``
``layers.i.ln_1.*`` / ``ln_2.*``            ``transformer.h.i.ln_1.*`` / ``ln_2.*``
``layers.i.attn.qkv.weight``                ``transformer.h.i.attn.c_attn.weight``         ``.T``
``layers.i.attn.proj.weight``               ``transformer.h.i.attn.c_proj.weight``         ``.T``
``layers.i.mlp.fc.weight``                  ``transformer.h.i.mlp.c_fc.weight``            ``.T``
``layers.i.mlp.proj.weight``                ``transformer.h.i.mlp.c_proj.weight``          ``.T``
``ln_f.*``                                  ``transformer.ln_f.*``
=========================================  =============================================  =========

Biases map one to one. ``lm_head.weight`` is not stored: ``tie_word_embeddings=True`` re-ties it
to ``wte`` on load. Activation ``gelu_new`` is GPT-2's tanh GeLU, equal to PolyLM's
``F.gelu(approximate="tanh")``. The QKV packing ``[q | k | v]`` with head-major columns matches
GPT-2's ``c_attn`` split.

The tokenizer is the same SentencePiece ``.model`` the shards were tokenized with, copied as
``tokenizer.model`` and converted to a ``tokenizer.json`` (``PreTrainedTokenizerFast``) that gives
identical ids (see ``hf_tokenizer_from_spm``); ``tokenizer_config.json`` names the BOS/EOS/PAD/UNK
pieces of the SentencePiece model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from training.config import ModelConfig

__all__ = [
    "export_hf",
    "to_hf_state_dict",
    "hf_config",
    "hf_tokenizer_from_spm",
    "load_dcp_model_state",
    "clean_state_dict",
]

log = logging.getLogger(__name__)

_JUNK = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "module.")


def clean_state_dict(sd: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Plain ``{fqn: cpu tensor}``: strips wrapper infixes (compile, AC, DDP) and gathers DTensors.

    Raises:
        TypeError: a value is not a tensor.
    """
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in sd.items():
        name = k
        for junk in _JUNK:
            if name.startswith(junk):
                name = name[len(junk):]
            name = name.replace("." + junk, ".")
        if isinstance(v, DTensor):
            v = v.full_tensor()
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is {type(v).__name__}, expected a tensor")
        out[name] = v.detach().cpu()
    return out


def hf_config(cfg: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None,
              pad_id: int | None = None, dtype: torch.dtype = torch.float32):
    """``transformers.GPT2Config`` equivalent to ``cfg``.

    Raises:
        ValueError: ``cfg.bias`` is False or ``tie_embeddings`` False (GPT-2 has biases and ties).
    """
    from transformers import GPT2Config

    if not cfg.bias:
        raise ValueError("GPT2LMHeadModel always has biases; cannot export a bias-free model")
    if not cfg.tie_embeddings:
        raise ValueError("export supports tied embeddings only")
    c = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_ff,
        activation_function="gelu_new",
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_eps,
        initializer_range=cfg.init_std,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        architectures=["GPT2LMHeadModel"],
    )
    c.dtype = dtype
    return c


def to_hf_state_dict(sd: Mapping[str, Any], cfg: ModelConfig,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Map a PolyLM state dict (FQNs of ``training.model.PolyLM``) to GPT-2 names.

    Args:
        sd: PolyLM state dict (plain tensors or DTensors; wrapper prefixes tolerated).
        cfg: the model config; shapes are checked against it.
        dtype: cast floating tensors to this dtype (default: keep).

    Returns:
        ``{gpt2_name: contiguous cpu tensor}`` without ``lm_head.weight`` (tied).

    Raises:
        KeyError / ValueError: missing, unexpected or mis-shaped parameters (listed).
    """
    sd = clean_state_dict(sd)
    d, V, Vp = cfg.d_model, cfg.vocab_size, cfg.padded_vocab_size
    expected = {"tok_emb.weight": (Vp, d), "pos_emb.weight": (cfg.max_seq_len, d),
                "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        expected.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
            p + "mlp.fc.weight": (cfg.d_ff, d), p + "mlp.fc.bias": (cfg.d_ff,),
            p + "mlp.proj.weight": (d, cfg.d_ff), p + "mlp.proj.bias": (d,),
        })
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise KeyError(f"state dict does not match config {cfg.name!r}: missing {missing[:8]}"
                       f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                       f"{'...' if len(unexpected) > 8 else ''}")
    bad = [f"{k}: {tuple(sd[k].shape)} != {s}" for k, s in expected.items() if tuple(sd[k].shape) != s]
    if bad:
        raise ValueError("state dict shapes do not match config: " + "; ".join(bad[:8]))

    def cast(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.contiguous()

    out = {
        "transformer.wte.weight": cast(sd["tok_emb.weight"][:V]),
        "transformer.wpe.weight": cast(sd["pos_emb.weight"]),
        "transformer.ln_f.weight": cast(sd["ln_f.weight"]),
        "transformer.ln_f.bias": cast(sd["ln_f.bias"]),
    }
    for i in range(cfg.n_layers):
        p, q = f"layers.{i}.", f"transformer.h.{i}."
        for a, b in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            out[q + b + ".weight"] = cast(sd[p + a + ".weight"])
            out[q + b + ".bias"] = cast(sd[p + a + ".bias"])
        for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                     ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            out[q + b + ".weight"] = cast(sd[p + a + ".weight"].t())  # Linear [out,in] -> Conv1D [in,out]
            out[q + b + ".bias"] = cast(sd[p + a + ".bias"])
    return out


def spm_special_ids(spm_path: Path) -> dict[str, Any]:
    """The special tokens of a SentencePiece model: ``{"vocab_size": int, "bos_id", "bos_token",
    "eos_id", "eos_token", "pad_id", "pad_token", "unk_id", "unk_token"}``; an id the model does
    not define (SentencePiece returns -1) is ``None``, and so is its token. Raises ``OSError`` /
    ``RuntimeError`` (SentencePiece's) when ``spm_path`` is missing or not a model."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    ids = {"vocab_size": sp.get_piece_size()}
    for key, fn in (("bos", sp.bos_id), ("eos", sp.eos_id), ("pad", sp.pad_id), ("unk", sp.unk_id)):
        i = fn()
        ids[f"{key}_id"] = i if i >= 0 else None
        ids[f"{key}_token"] = sp.id_to_piece(i) if i >= 0 else None
    return ids


def hf_tokenizer_from_spm(spm_path: str | Path, model_max_length: int | None = None):
    """A ``transformers.PreTrainedTokenizerFast`` over a SentencePiece model, same ids.

    Conversion builds on ``transformers.convert_slow_tokenizer.SpmConverter`` (vocabulary,
    merges ordered by piece score, byte fallback, BPE/unigram) with the normalizer and word split
    re-derived from the model's own ``normalizer_spec`` / ``trainer_spec``: charsmap (NFKC or
    identity), ``remove_extra_whitespaces``, ``add_dummy_prefix`` (always, as SentencePiece),
    ``split_by_whitespace`` and ``allow_whitespace_only_pieces`` (runs of spaces kept as pieces).
    Verified id-for-id on NTREX in 18 languages and whitespace/emoji/rare-CJK edge cases
    (tests/test_export.py). No BOS/EOS are added on encode (the token shards append EOS
    themselves; pretraining data has no BOS). Control pieces (``<s>``, ``</s>``, ...) are
    registered as special tokens but ``split_special_tokens=True``: literal "<s>" in input text is
    tokenized as text, exactly as SentencePiece does (pass ids to insert a real EOS).
    ``tok(x)`` returns ``input_ids`` and ``attention_mask`` only, never ``token_type_ids``
    (GPT-2 would add them through its position table), so ``model(**tok(x))`` and
    ``model.generate(**tok(x))`` equal the calls on ``input_ids`` alone.

    Args:
        spm_path: SentencePiece ``.model`` file.
        model_max_length: context length recorded in the tokenizer config (model's
            ``max_seq_len``); default: unlimited.

    Raises:
        FileNotFoundError: ``spm_path`` missing.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    spm_path = Path(spm_path)
    if not spm_path.is_file():
        raise FileNotFoundError(f"SentencePiece model not found: {spm_path}")
    sp = spm_special_ids(spm_path)

    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    class _Slow:  # the minimal "slow tokenizer" interface SpmConverter reads
        vocab_file = str(spm_path)
        legacy = True

    class _Conv(SpmConverter):
        handle_byte_fallback = True

        def normalizer(self, proto):
            # SentencePiece's normalizer, step by step: charsmap (e.g. NFKC; none for
            # "identity"), optional whitespace clean-up, " " -> "▁", the dummy "▁" prefix
            # (always added, even before a leading space; tokenizers' Metaspace would skip it)
            ns = proto.normalizer_spec
            seq = []
            if ns.precompiled_charsmap:
                seq.append(normalizers.Precompiled(ns.precompiled_charsmap))
            if ns.remove_extra_whitespaces:
                seq += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
            if ns.escape_whitespaces:
                seq.append(normalizers.Replace(" ", "▁"))
            if ns.add_dummy_prefix:
                seq.append(normalizers.Prepend("▁"))
            return normalizers.Sequence(seq)

        def pre_tokenizer(self, replacement, add_prefix_space):
            # the word split of SentencePiece's trainer (SplitIntoWords): a word starts at "▁";
            # with allow_whitespace_only_pieces a run of "▁" stays with the word after it.
            # No piece crosses these boundaries, so BPE per word == SentencePiece on the text.
            ts = self.proto.trainer_spec
            if not ts.split_by_whitespace or ts.treat_whitespace_as_suffix:
                return None
            pattern = "▁+[^▁]*|[^▁]+" if ts.allow_whitespace_only_pieces else "▁[^▁]*|[^▁]+"
            return pre_tokenizers.Split(Regex(pattern), behavior="isolated")

        def decoder(self, replacement, add_prefix_space):
            return decoders.Sequence([
                decoders.Replace(replacement, " "), decoders.ByteFallback(), decoders.Fuse(),
                *([decoders.Strip(content=" ", left=1, right=0)]
                  if self.proto.normalizer_spec.add_dummy_prefix else [])])

        def post_processor(self):  # no BOS/EOS templates
            return None

    backend = _Conv(_Slow()).converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=sp["bos_token"], eos_token=sp["eos_token"],
        pad_token=sp["pad_token"], unk_token=sp["unk_token"],
        model_max_length=int(model_max_length or 1e30), clean_up_tokenization_spaces=False,
        split_special_tokens=True,
        # GPT2LMHeadModel adds a token-type embedding (its position table ``wte``) for any
        # ``token_type_ids`` it receives; PolyLM has none, so the tokenizer must not emit them
        # or ``model(**tok(x))`` / ``generate(**tok(x))`` silently shift every hidden state.
        model_input_names=["input_ids", "attention_mask"],
    )
    return tok


def export_hf(
    model_or_state_dict: torch.nn.Module | Mapping[str, Any],
    cfg: ModelConfig,
    tokenizer_model_path: str | Path | None,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str = "5GB",
) -> Path:
    """Write ``out_dir`` with a GPT2LMHeadModel checkpoint loadable offline by ``from_pretrained``.

    Files: ``config.json``, ``generation_config.json``, ``model.safetensors`` (or sharded
    ``model-0000x-of-0000n.safetensors`` + index above ``max_shard_size``), and with a tokenizer:
    ``tokenizer.model`` (the SentencePiece file), ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``. Written to a temporary sibling directory, then renamed into
    place (a failed export leaves no half-written ``out_dir``; an existing ``out_dir`` is replaced).

    Args:
        model_or_state_dict: a ``PolyLM`` (possibly FSDP-wrapped: DTensors are gathered -- call
            on every rank then) or its state dict.
        cfg: its ``ModelConfig``.
        tokenizer_model_path: SentencePiece ``.model``; ``None`` exports the model only. Its
            vocabulary size must not exceed ``cfg.vocab_size`` (equal in the usual case).
        out_dir: output directory.
        dtype: weight dtype in the files (``torch.float32`` or ``torch.bfloat16``).
        max_shard_size: shard threshold (huggingface_hub syntax, e.g. ``"5GB"``).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: tokenizer vocabulary larger than ``cfg.vocab_size``; shape mismatches.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) \
        else model_or_state_dict
    hf_sd = to_hf_state_dict(sd, cfg, dtype=dtype)
    is_main = not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
        or torch.distributed.get_rank() == 0
    out_dir = Path(out_dir)
    if not is_main:
        return out_dir

    special: dict[str, Any] = {}
    if tokenizer_model_path is not None:
        special = spm_special_ids(Path(tokenizer_model_path))
        if special["vocab_size"] > cfg.vocab_size:
            raise ValueError(f"tokenizer {tokenizer_model_path} has {special['vocab_size']} pieces but "
                             f"the model config has only vocab_size={cfg.vocab_size}")
        if special["vocab_size"] < cfg.vocab_size:
            log.warning("tokenizer has %d pieces, model vocab_size=%d: ids >= %d are never produced",
                        special["vocab_size"], cfg.vocab_size, special["vocab_size"])

    tmp = out_dir.with_name(out_dir.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        conf = hf_config(cfg, bos_id=special.get("bos_id"), eos_id=special.get("eos_id"),
                         pad_id=special.get("pad_id"), dtype=dtype)
        conf.save_pretrained(tmp)
        GenerationConfig.from_model_config(conf).save_pretrained(tmp)
        split = split_torch_state_dict_into_shards(hf_sd, filename_pattern="model{suffix}.safetensors",
                                                   max_shard_size=max_shard_size)
        for fname, names in split.filename_to_tensors.items():
            save_file({n: hf_sd[n] for n in names}, str(tmp / fname), metadata={"format": "pt"})
        if split.is_sharded:
            index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in hf_sd.values())},
                     "weight_map": split.tensor_to_filename}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        if tokenizer_model_path is not None:
            shutil.copyfile(tokenizer_model_path, tmp / "tokenizer.model")
            tok = hf_tokenizer_from_spm(tmp / "tokenizer.model", model_max_length=cfg.max_seq_len)
            tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported GPT2LMHeadModel (%d params) to %s", sum(t.numel() for t in hf_sd.values()), out_dir)
    return out_dir


def load_dcp_model_state(checkpoint_dir: str | Path, cfg: ModelConfig, key: str = "model") -> dict[str, torch.Tensor]:
    """Load the model weights of a ``torch.distributed.checkpoint`` directory in one process.

    The trainer saves ``{"model": <model state dict>, "optimizer": ..., ...}`` with DCP; DCP
    flattens it to keys ``model.<fqn>``. Only the model entries are read (any world size).

    Args:
        checkpoint_dir: directory holding ``.metadata`` and ``__*_*.distcp`` files.
        cfg: model config used to allocate the receiving tensors.
        key: top-level key of the model state (default ``"model"``).

    Returns:
        ``{fqn: fp32 cpu tensor}`` for ``training.model.PolyLM``.

    Raises:
        FileNotFoundError: no ``.metadata`` in the directory.
        ValueError: the checkpoint lacks model tensors or their shapes disagree with ``cfg``.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    from training.model import PolyLM

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / ".metadata").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a DCP checkpoint (no .metadata file)")
    meta = FileSystemReader(str(checkpoint_dir)).read_metadata().state_dict_metadata
    prefix = key + "."
    stored = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
    if not stored:
        raise ValueError(f"{checkpoint_dir}: no '{key}.*' entries; top-level keys: "
                         f"{sorted({k.split('.', 1)[0] for k in meta})}")
    with torch.device("meta"):
        model = PolyLM(cfg)
    want = {k: v for k, v in model.state_dict().items()}
    stored_clean = {}
    for k, v in stored.items():
        c = k
        for junk in _JUNK:
            c = c.replace(junk, "")
        stored_clean[c] = (k, v)
    missing = sorted(set(want) - set(stored_clean))
    if missing:
        raise ValueError(f"{checkpoint_dir}: model tensors missing for config {cfg.name!r} (wrong "
                         f"--config?): {missing[:8]}")
    bad = [f"{k}: checkpoint {tuple(stored_clean[k][1].size)} vs config {tuple(t.shape)}"
           for k, t in want.items() if tuple(stored_clean[k][1].size) != tuple(t.shape)]
    if bad:
        raise ValueError("checkpoint shapes disagree with the model config (wrong --config or "
                         "vocab size?): " + "; ".join(bad[:6]))
    state = {stored_clean[k][0]: torch.empty(t.shape, dtype=stored_clean[k][1].properties.dtype)
             for k, t in want.items()}
    import warnings

    with warnings.catch_warnings():  # single process: DCP warns that it "assumes" no_dist
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.load({key: state}, checkpoint_id=str(checkpoint_dir))
    return {c: state[orig].float() for c, (orig, _) in stored_clean.items() if c in want}
