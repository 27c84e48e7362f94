"""The PolyLM decoder: a GPT-style pre-LayerNorm transformer (PolyLM paper, arXiv 2307.06018).

Architecture (the paper's model section and the released Megatron-LM scripts of DAMO-NLP-MT/PolyLM):

* learned absolute position embeddings (``max_seq_len`` = 2048 rows), added to token embeddings;
* ``L`` blocks ``x = x + Attn(LN(x)); x = x + MLP(LN(x))`` (pre-LayerNorm, eps 1e-5, biases on);
* causal multi-head attention through ``F.scaled_dot_product_attention(is_causal=True)``;
  the optional ``"eager"`` path computes its softmax explicitly in fp32;
* MLP ``d -> 4d -> d`` with GeLU in its tanh form (``gelu_new`` / ``gelu_fast``);
* final LayerNorm, output projection tied to the token embedding (no separate LM head);
* loss: cross-entropy computed in fp32, fused with the output projection and evaluated in chunks
  of ``cfg.loss_chunk_tokens`` tokens, so fp32 logits of the whole batch are never materialised.
  The paper (pre-training section) traced loss spikes with the 256K vocabulary to low-precision softmax and
  computes softmax in attention and in the loss in fp32 (``--attention-softmax-in-fp32``).

Initialisation (``PolyLM.init_weights``): normal(0, ``init_std``) for token/position embeddings,
QKV and FFN-in weights; normal(0, ``init_std / sqrt(2 * n_layers)``) for the attention output and
FFN-out weights (GPT-2 sec. 2.3, Megatron ``scaled_init_method_normal``); biases 0, LayerNorm
weight 1 / bias 0. ``init_std`` = 0.006 for polylm-1.7b/13b (released scripts
``--init-method-std 0.006``), 0.02 for the CPU sizes. Init draws one full tensor per parameter from
a generator seeded by (seed, parameter name), then keeps this rank's shard, so the weights are the
same at any FSDP world size.

Run ``python -m training.model --summary`` for parameter counts, FLOPs per token and per-GPU
FSDP memory of the registered configs (built on the meta device).
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from training.config import ModelConfig, model_names

__all__ = [
    "PolyLM",
    "Block",
    "Attention",
    "MLP",
    "IGNORE_INDEX",
    "fused_linear_cross_entropy",
    "cross_entropy_fp32",
    "fsdp_memory_per_gpu",
    "summary_table",
]

IGNORE_INDEX = -100


# ============================================================================ loss
def cross_entropy_fp32(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy with the softmax evaluated in fp32 (no autograd graph needed).

    Args:
        logits: ``[N, V]`` any float dtype (bf16 logits from a bf16 GEMM are upcast first).
        labels: ``[N]`` int64 targets; ``IGNORE_INDEX`` (-100) positions give loss 0.

    Returns:
        ``(loss [N] fp32, lse [N] fp32)`` where ``lse = logsumexp(logits)``.
    """
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    tgt = x.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    loss = torch.where(valid, lse - tgt, torch.zeros_like(lse))
    return loss, lse


def _check_ids(ok: torch.Tensor, msg: str) -> bool:
    """True if all ``ok``. On accelerators an asynchronous device assert (no host sync per
    step; the message appears with the device-side assertion), on CPU a plain check. Fake
    tensors (``FakeTensorMode``, used by ``training.memory``'s tracker run) hold no values: the
    asynchronous assert is used for them too."""
    if ok.device.type != "cpu" or _is_fake(ok):
        torch._assert_async(ok.all(), msg)
        return True
    return bool(ok.all())


def _is_fake(t: torch.Tensor) -> bool:
    fake = sys.modules.get("torch._subclasses.fake_tensor")
    return fake is not None and isinstance(t, fake.FakeTensor)


def _check_labels(labels: torch.Tensor, vocab_size: int) -> None:
    ok = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < vocab_size))
    if not _check_ids(ok, f"labels must be in [0, {vocab_size}) or {IGNORE_INDEX}"):
        bad = labels[~ok]
        raise ValueError(
            f"labels must be in [0, {vocab_size}) or {IGNORE_INDEX}; got e.g. {bad[:5].tolist()}")


def _ce_chunk(x: torch.Tensor, labels: torch.Tensor,
              want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token fp32 cross-entropy of one chunk of fp32 logits ``x``, consumed (used in place).

    The softmax is evaluated once, in place: ``m = max``, ``e = exp(x - m)``, ``s = sum e``,
    ``lse = log s + m`` (the steps of ``torch.logsumexp``, so the loss is the same), and the
    gradient reuses ``e``: ``d loss / d logits = e / s - onehot``, zero on ignored rows. No
    other ``[n, V]`` temporary is allocated (each fresh ``[n, V]`` buffer costs page faults on
    CPU and memory on GPU). Callers pass ``F.linear(...).float()``: fp32 logits are used as
    they are; bf16 logits are freed as soon as their fp32 copy exists.

    Args:
        x: ``[n, V]`` fp32 logits; overwritten.
        labels: ``[n]`` int64, ``IGNORE_INDEX`` to skip a position.
        want_grad: also return the gradient.

    Returns:
        ``(loss [n] fp32 (0 at ignored rows), lse [n] fp32, grad [n, V] fp32 (``x`` itself)
        or None)``.
    """
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(-1)
    tgt = x.gather(-1, safe).squeeze(-1)
    m = x.amax(-1, keepdim=True)
    m = m.masked_fill(m.abs() == math.inf, 0.0)  # as torch.logsumexp: no inf - inf
    e = x.sub_(m).exp_()
    s = e.sum(-1, keepdim=True)
    lse = (s.log() + m).squeeze(-1)
    loss = torch.where(valid, lse - tgt, torch.zeros_like(lse))
    if not want_grad:
        return loss, lse, None
    validf = valid.unsqueeze(-1).to(e.dtype)
    e.mul_(validf / s)  # softmax on valid rows, 0 on ignored ones
    e.scatter_add_(-1, safe, validf.neg())
    return loss, lse, e


class _FusedLinearCESum(torch.autograd.Function):
    """sum_t CE(h_t @ W[:V]^T, y_t) with gradients computed chunk by chunk during the forward.

    Memory: one chunk of logits at a time (fp32: the logits buffer itself holds the softmax and
    its gradient; bf16: plus one fp32 copy), plus grad buffers ``[N, d]`` and ``[V_pad, d]``
    (kept in the dtype of ``h``/``W``; accumulated in fp32 when there is more than one chunk,
    written straight from the GEMM when there is one). No recomputation: same FLOPs as the
    unfused head (logits GEMM + two gradient GEMMs). Valid because the upstream gradient of a
    scalar sum is a scalar, which only scales the precomputed gradients (in place: the
    backward runs once; ``retain_graph`` double backward is refused by autograd's saved-tensor
    version check).

    ``weight`` may have more rows than ``n_classes`` (the padded tied embedding): only the first
    ``n_classes`` rows give logits; the gradient has ``weight``'s full shape with zero padding
    rows, so autograd needs no slice backward (a zero-filled ``[V_pad, d]`` plus a copy).

    Outputs ``(total fp32 scalar, per_token fp32 [N])``; ``per_token`` holds each token's loss
    from the same logits (0 at ignored positions), is not differentiable and is empty (shape
    ``[0]``) unless ``keep_tokens`` -- the trainer's per-language statistics come from it, so the
    output projection runs once per micro-batch.
    """

    @staticmethod
    def forward(ctx, h, weight, labels, chunk, keep_tokens=False, n_classes=None):  # type: ignore[override]
        N = h.shape[0]
        V = weight.shape[0] if n_classes is None else n_classes
        w = weight if V == weight.shape[0] else weight[:V]
        need_h = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        per_token = torch.empty(N if keep_tokens else 0, dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        one_chunk = N <= chunk
        gw = None
        if need_w:  # one chunk: the GEMM writes the gradient; more: an fp32 accumulator
            gw = torch.empty(weight.shape, dtype=weight.dtype if one_chunk else torch.float32,
                             device=weight.device)
            gw[V:].zero_()
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            hc, yc = h[s:e], labels[s:e]
            loss, _, g = _ce_chunk(F.linear(hc, w).float(), yc, need_h or need_w)
            total += loss.sum()
            if keep_tokens:
                per_token[s:e] = loss
            if need_h or need_w:
                g = g.to(h.dtype)
                if need_h:
                    torch.mm(g, w, out=gh[s:e])
                if need_w:
                    acc = gw[:V]
                    if g.dtype == acc.dtype:
                        if s == 0:
                            torch.mm(g.t(), hc, out=acc)
                        else:
                            acc.addmm_(g.t(), hc)
                    elif s == 0:
                        acc.copy_(g.t() @ hc)
                    else:
                        acc.add_(g.t() @ hc)
                del g  # not alive while the next chunk's logits are made
        ctx.save_for_backward(gh if need_h else None, gw.to(weight.dtype) if need_w else None)
        ctx.mark_non_differentiable(per_token)
        return total, per_token

    @staticmethod
    def backward(ctx, grad_out, _grad_tokens=None):  # type: ignore[override]
        gh, gw = ctx.saved_tensors
        # in place: these buffers exist only for this backward (no second [V_pad, d] copy)
        dh = gh.mul_(grad_out.to(gh.dtype)) if gh is not None else None
        dw = gw.mul_(grad_out.to(gw.dtype)) if gw is not None else None
        return dh, dw, None, None, None, None


class _ChunkedLinearCENone(torch.autograd.Function):
    """Per-token CE(h_t @ W[:V]^T, y_t) -> ``[N]`` fp32, chunked; the backward recomputes each
    chunk's logits (one extra logits GEMM) because per-token upstream gradients are arbitrary.
    ``n_classes`` as in :class:`_FusedLinearCESum`."""

    @staticmethod
    def forward(ctx, h, weight, labels, chunk, n_classes=None):  # type: ignore[override]
        N = h.shape[0]
        V = weight.shape[0] if n_classes is None else n_classes
        w = weight if V == weight.shape[0] else weight[:V]
        out = torch.empty(N, dtype=torch.float32, device=h.device)
        lses = torch.empty(N, dtype=torch.float32, device=h.device)
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            out[s:e], lses[s:e], _ = _ce_chunk(F.linear(h[s:e], w).float(), labels[s:e], False)
        ctx.chunk = chunk
        ctx.n_classes = V
        ctx.save_for_backward(h, weight, labels, lses)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        h, weight, labels, lses = ctx.saved_tensors
        chunk, V = ctx.chunk, ctx.n_classes
        w = weight if V == weight.shape[0] else weight[:V]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for s in range(0, h.shape[0], chunk):
            e = min(h.shape[0], s + chunk)
            hc, yc = h[s:e], labels[s:e]
            valid = yc != IGNORE_INDEX
            safe = torch.where(valid, yc, torch.zeros_like(yc))
            g = F.linear(hc, w).float().sub_(lses[s:e].unsqueeze(-1)).exp_()
            g.scatter_add_(-1, safe.unsqueeze(-1), torch.full_like(lses[s:e], -1.0).unsqueeze(-1))
            g.mul_((grad_out[s:e].float() * valid).unsqueeze(-1))
            g = g.to(h.dtype)
            if need_h:
                torch.mm(g, w, out=gh[s:e])
            if need_w:
                if g.dtype == gw.dtype:
                    gw[:V].addmm_(g.t(), hc)
                else:
                    gw[:V].add_(g.t() @ hc)
        return gh, (gw.to(weight.dtype) if need_w else None), None, None, None


def fused_linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_tokens: int = 2048,
    reduction: str = "mean",
    n_classes: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``h @ weight[:n_classes].T`` against ``labels``, fp32 softmax, chunked over tokens.

    The logits GEMM runs in the dtype of ``h``/``weight`` (bf16 under mixed precision); each chunk
    of logits is upcast to fp32 before log-sum-exp, so at most ``chunk_tokens x V`` fp32 logits
    exist at any time (never ``[B, T, V]``).

    Args:
        h: ``[..., d]`` final hidden states (after the final LayerNorm).
        weight: ``[V_pad, d]`` output projection (the tied token embedding; rows from
            ``n_classes`` on are padding and give no logits).
        labels: ``[...]`` int64 targets (already shifted: ``labels[t]`` is the token after
            position ``t``), ``IGNORE_INDEX`` (-100) to skip a position.
        chunk_tokens: tokens per chunk (>= 1).
        reduction: ``"mean"`` (over non-ignored tokens; 0.0 if there are none), ``"sum"``,
            ``"none"`` (fp32 tensor shaped like ``labels``, 0 at ignored positions; its backward
            recomputes the logits, one extra GEMM per chunk), or ``"sum_and_none"``: the
            differentiable sum (as ``"sum"``, gradients computed in the forward) together with
            the detached per-token losses shaped like ``labels`` from the same logits -- one
            output-projection GEMM per chunk in all (the trainer's per-language loss).
        n_classes: ``V``, the number of classes (default: all rows of ``weight``). Passing the
            padded weight with ``n_classes`` (rather than ``weight[:V]``) lets the loss write
            the full-shape gradient itself, zero on padding rows.

    Returns:
        fp32 scalar; fp32 ``labels.shape`` tensor for ``reduction="none"``; a tuple
        ``(sum scalar, per-token tensor)`` for ``"sum_and_none"``.

    Raises:
        ValueError: bad reduction / chunk size / ``n_classes``, shape mismatch, or labels
            outside ``[0, V)``.
    """
    if reduction not in ("mean", "sum", "none", "sum_and_none"):
        raise ValueError(f"reduction must be 'mean', 'sum', 'none' or 'sum_and_none', got {reduction!r}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if h.shape[:-1] != labels.shape:
        raise ValueError(f"h {tuple(h.shape)} and labels {tuple(labels.shape)} disagree")
    V = weight.shape[0] if n_classes is None else int(n_classes)
    if not 1 <= V <= weight.shape[0]:
        raise ValueError(f"n_classes must be in [1, {weight.shape[0]}] (rows of weight), got {n_classes}")
    _check_labels(labels, V)
    hf = h.reshape(-1, h.shape[-1])
    yf = labels.reshape(-1).long()
    if reduction == "none":
        return _ChunkedLinearCENone.apply(hf, weight, yf, int(chunk_tokens), V).view(labels.shape)
    if reduction == "sum_and_none":
        total, per_token = _FusedLinearCESum.apply(hf, weight, yf, int(chunk_tokens), True, V)
        return total, per_token.view(labels.shape)
    total, _ = _FusedLinearCESum.apply(hf, weight, yf, int(chunk_tokens), False, V)
    if reduction == "sum":
        return total
    n = (yf != IGNORE_INDEX).sum().clamp(min=1).to(total.dtype)
    return total / n


# ========================================================================== layers
class Attention(nn.Module):
    """Causal multi-head self-attention. ``[B, T, d] -> [B, T, d]``.

    ``qkv`` packs query, key, value along the output dim (``[q | k | v]``, each ``[H, head_dim]``
    head-major), the same layout as GPT-2's ``c_attn``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.impl = cfg.attention
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask``: optional bool ``[B, 1, T, T]``, True = may attend (already causal;
        :func:`segment_attention_mask`); ``None`` = plain causal attention."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if attn_mask is not None:  # packed sequences (SFT): block-diagonal causal
            if self.impl == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
            else:
                y = eager_attention(q, k, v, dropout_p=p, attn_mask=attn_mask)
        elif self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = eager_attention(q, k, v, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                    attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference causal attention with the softmax computed in fp32.

    Args: ``q, k, v`` ``[B, H, T, hd]`` in any float dtype; ``attn_mask`` optional bool
    ``[B, 1, T, T]`` (True = may attend) replacing the causal mask. Returns ``[B, H, T, hd]`` in
    ``v.dtype``.
    """
    T = q.shape[-2]
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if attn_mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1)
    else:
        mask = ~attn_mask
    scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs.to(v.dtype), v)


class MLP(nn.Module):
    """``d -> d_ff -> d`` with tanh-approximated GeLU. ``[B, T, d] -> [B, T, d]``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block. ``[B, T, d] -> [B, T, d]``.

    ``activation_checkpointing`` (set by ``training.parallelize``) recomputes the block in the
    backward pass (non-reentrant ``torch.utils.checkpoint``) without changing parameter names.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.activation_checkpointing = False

    def _forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.ln_1(x), attn_mask))
        return x + self.resid_dropout(self.mlp(self.ln_2(x)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            return _checkpoint(self._forward, x, attn_mask, use_reentrant=False)
        return self._forward(x, attn_mask)


# =========================================================================== model
class PolyLM(nn.Module):
    """PolyLM decoder-only language model.

    Parameters (FQNs are stable: checkpoints and ``training.export`` rely on them):
    ``tok_emb.weight [padded_vocab_size, d]`` (also the output projection), ``pos_emb.weight
    [max_seq_len, d]``, ``layers.<i>.{ln_1,attn.qkv,attn.proj,ln_2,mlp.fc,mlp.proj}.*``,
    ``ln_f.*``.

    Build for large sizes on the meta device, then materialise::

        with torch.device("meta"):
            model = PolyLM(cfg)
        model = parallelize(model, ...)   # optional (FSDP2)
        model.to_empty(device="cuda")
        model.init_weights(seed=0)

    The tied output projection reads ``tok_emb.weight`` directly (there is no second parameter),
    so tying survives ``to_empty`` and FSDP sharding.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """(Re-)initialise every parameter in place; see the module docstring for the scheme.

        Each parameter gets its own generator seeded by ``(seed, FQN)`` and is drawn as a full
        tensor, then this rank's shard is kept (FSDP2 DTensor params), so the result does not
        depend on the world size or on init order. Padding rows of ``tok_emb`` are zeroed.

        Args:
            seed: base seed (int).

        Raises:
            RuntimeError: if parameters are still on the meta device (call ``to_empty`` first).
        """
        cfg = self.cfg
        std = cfg.init_std
        out_std = cfg.init_std / math.sqrt(2.0 * cfg.n_layers)
        for name, p in self.named_parameters():
            if p.is_meta:
                raise RuntimeError(f"parameter {name} is on the meta device; call "
                                   "model.to_empty(device=...) before init_weights()")
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            if name.startswith("tok_emb"):
                def fn(t, g, _v=cfg.vocab_size):
                    t.normal_(0.0, std, generator=g)
                    t[_v:].zero_()
            elif name.startswith("pos_emb"):
                def fn(t, g):
                    t.normal_(0.0, std, generator=g)
            elif ".ln_" in name or name.startswith("ln_f"):
                fill = 1.0 if leaf == "weight" else 0.0
                def fn(t, g, _f=fill):
                    t.fill_(_f)
            elif leaf == "bias":
                def fn(t, g):
                    t.zero_()
            elif parent == "proj":  # attn.proj / mlp.proj: residual output projections
                def fn(t, g):
                    t.normal_(0.0, out_std, generator=g)
            else:  # attn.qkv, mlp.fc
                def fn(t, g):
                    t.normal_(0.0, std, generator=g)
            _init_param(p, fn, seed=(seed * 1_000_003 + zlib.crc32(_clean_fqn(name).encode())) % (2**63))

    # --------------------------------------------------------------- forward
    def hidden_states(self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final-LayerNorm output ``[B, T, d]`` for ``input_ids`` ``LongTensor[B, T]``.

        ``segment_ids`` (optional ``LongTensor[B, T]``, packed sequences): consecutive runs of
        equal ids are separate examples; each gets positions from 0 and attends only inside
        itself (:func:`segment_attention_mask`), so a packed example computes what it computes
        alone. ``None``: one sequence per row (the pretraining path, unchanged).

        Raises:
            ValueError: ``T > max_seq_len`` or ids outside ``[0, vocab_size)`` (on an accelerator
                the range check is an asynchronous device-side assert, to avoid a host sync).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.cfg.max_seq_len}")
        in_range = (input_ids >= 0) & (input_ids < self.cfg.vocab_size)
        if not _check_ids(in_range, f"input_ids must be in [0, {self.cfg.vocab_size})"):
            raise ValueError(f"input_ids must be in [0, {self.cfg.vocab_size}); got range "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if segment_ids is None:
            pos = torch.arange(T, device=input_ids.device)
            x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
            for layer in self.layers:
                x = layer(x)
            return self.ln_f(x)
        if segment_ids.shape != input_ids.shape:
            raise ValueError(f"segment_ids {tuple(segment_ids.shape)} must match input_ids {tuple(input_ids.shape)}")
        pos, mask = segment_positions(segment_ids), segment_attention_mask(segment_ids)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln_f(x)

    def _output_weight(self) -> torch.Tensor:
        w = self.tok_emb.weight
        v = self.cfg.vocab_size
        return w if w.shape[0] == v else w[:v]

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        loss_chunk_tokens: int | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits or loss.

        Args:
            input_ids: ``LongTensor[B, T]``, ``T <= max_seq_len``.
            labels: ``LongTensor[B, T]`` next-token targets aligned with ``input_ids``
                (``labels[:, t]`` is the token following ``input_ids[:, t]``), -100 = ignore.
            loss_reduction: ``"mean"`` (over non-ignored tokens), ``"sum"``, ``"none"`` or
                ``"sum_and_none"`` (see :func:`fused_linear_cross_entropy`).
            loss_chunk_tokens: override ``cfg.loss_chunk_tokens``.
            segment_ids: optional ``LongTensor[B, T]`` for packed rows (see
                :meth:`hidden_states`); ``None`` = one sequence per row.

        Returns:
            ``labels is None``: logits ``[B, T, vocab_size]`` in the compute dtype (padding
            columns removed). Otherwise the fp32 loss (scalar, or ``[B, T]`` for ``"none"``, or
            ``(scalar, [B, T] detached)`` for ``"sum_and_none"``).
        """
        h = self.hidden_states(input_ids) if segment_ids is None else self.hidden_states(input_ids, segment_ids)
        if labels is None:
            return F.linear(h, self._output_weight())
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels {tuple(labels.shape)} must match input_ids {tuple(input_ids.shape)}")
        # the whole (padded) tied embedding with n_classes: the loss writes its full-shape
        # gradient (zero padding rows), no slice backward
        return fused_linear_cross_entropy(
            h, self.tok_emb.weight, labels, chunk_tokens=loss_chunk_tokens or self.cfg.loss_chunk_tokens,
            reduction=loss_reduction, n_classes=self.cfg.vocab_size)

    def per_token_loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-token fp32 cross-entropy ``[B, T]`` (0 where ``labels == -100``); differentiable.

        Used for per-language loss: average it over the tokens of each language. Goes through
        ``__call__`` so FSDP2's pre/post-forward hooks (all-gather, reshard) run.
        """
        return self(input_ids, labels, loss_reduction="none")


# ---------------------------------------------------------------- packed sequences
def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its segment: ``LongTensor[B, T]``, 0 at every segment start
    (a segment = a maximal run of equal ids in ``segment_ids`` ``[B, T]``)."""
    B, T = segment_ids.shape
    ar = torch.arange(T, device=segment_ids.device).expand(B, T)
    start = torch.ones_like(segment_ids, dtype=torch.bool)
    start[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return ar - torch.cummax(torch.where(start, ar, 0), dim=1).values


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask of packed rows: bool ``[B, 1, T, T]``, ``[b, 0, i, j]`` True
    iff ``j <= i`` and ``i``, ``j`` are in the same segment (run of equal ids) of
    ``segment_ids`` ``[B, T]``. Every row has its diagonal, so no softmax row is empty."""
    B, T = segment_ids.shape
    run = torch.cumsum(torch.cat([torch.zeros(B, 1, dtype=torch.long, device=segment_ids.device),
                                  (segment_ids[:, 1:] != segment_ids[:, :-1]).long()], dim=1), dim=1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril_()
    return ((run[:, :, None] == run[:, None, :]) & causal)[:, None]


# ------------------------------------------------------------------- init helpers
def _clean_fqn(name: str) -> str:
    for junk in ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module."):
        name = name.replace(junk, "")
    return name


def _init_param(p: torch.Tensor, fn: Callable[[torch.Tensor, torch.Generator], None], seed: int) -> None:
    """Run ``fn(full_tensor, generator)`` and copy this rank's part of the result into ``p``."""
    # DTensor params only exist once torch.distributed.tensor is imported (FSDP2 imports it);
    # avoid paying its import time for plain modules.
    dt = sys.modules.get("torch.distributed.tensor")
    if dt is not None and isinstance(p, dt.DTensor):
        local = p.to_local()
        dev = local.device
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        full = torch.empty(p.shape, dtype=p.dtype, device=dev)
        fn(full, g)
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        if local.numel():
            idx = tuple(slice(o, o + s) for o, s in zip(offset, shape))
            local.copy_(full[idx])
    else:
        g = torch.Generator(device=p.device)
        g.manual_seed(seed)
        fn(p.data, g)


# ===================================================================== accounting
def fsdp_memory_per_gpu(cfg: ModelConfig, n_gpus: int, *, mixed_precision: bool = True) -> dict[str, float]:
    """Per-GPU bytes of model state under FSDP full sharding (ZeRO-3) with AdamW.

    Model state only; the complete budget of a training step (activations, the loss head's
    buffers, gradient accumulation, allocator margins), checked against PyTorch's FSDP2 memory
    tracker, is ``training.memory.estimate_memory``.

    Accounting (activations and temporary buffers are not included -- they depend on the
    micro-batch and activation-checkpointing settings):

    * fp32 sharded parameters (the "master" weights; FSDP2 keeps sharded params in fp32 and
      casts to bf16 per all-gather with ``MixedPrecisionPolicy(param_dtype=bf16)``): 4 B / param;
    * fp32 sharded gradients (``reduce_dtype=fp32``): 4 B / param;
    * AdamW ``exp_avg`` + ``exp_avg_sq`` in fp32: 8 B / param;
    Total 16 B / param / n_gpus (the same 16 B as ZeRO's mixed-precision Adam, 2 + 2 + K with K = 12,
    Rajbhandari et al. 2020).
    Plus the transient unsharded (all-gathered) bf16 parameters: the root (embeddings, also the
    tied output layer, unsharded for the whole forward/backward) and two blocks (current and
    prefetched), 2 B / param (``mixed_precision=False``: 4 B).

    Returns:
        dict with GiB values: params, grads, optim, sharded_total, unsharded_peak, total.
    """
    n = cfg.num_params(padded=True)
    gib = 1024 ** 3
    shard = n / n_gpus
    bpe = 2 if mixed_precision else 4
    d = cfg.d_model
    per_block = (cfg.num_params(padded=True) - cfg.padded_vocab_size * d - cfg.max_seq_len * d - 2 * d) / cfg.n_layers
    root = cfg.padded_vocab_size * d + cfg.max_seq_len * d + 2 * d
    out = {
        "params": 4 * shard / gib,
        "grads": 4 * shard / gib,
        "optim": 8 * shard / gib,
    }
    out["sharded_total"] = out["params"] + out["grads"] + out["optim"]
    out["unsharded_peak"] = bpe * (root + 2 * per_block) / gib  # root + current and prefetched block
    out["total"] = out["sharded_total"] + out["unsharded_peak"]
    return out


def summary_table(names: list[str] | None = None, gpus: tuple[int, ...] = (8, 64)) -> str:
    """Text table: params, FLOPs/token, per-GPU FSDP memory for each config (built on meta)."""
    names = names or ["polylm-1.7b", "polylm-13b"]
    lines = []
    for name in names:
        cfg = ModelConfig.from_name(name)
        with torch.device("meta"):
            model = PolyLM(cfg)
        n_model = sum(p.numel() for p in model.parameters())
        n_cfg = cfg.num_params(padded=True)
        if n_model != n_cfg:  # the formula must describe the module exactly
            raise AssertionError(f"{name}: module has {n_model} params, formula {n_cfg}")
        lines.append(f"{name}: L={cfg.n_layers} d={cfg.d_model} heads={cfg.n_heads} d_ff={cfg.d_ff} "
                     f"vocab={cfg.vocab_size} (padded {cfg.padded_vocab_size}) seq={cfg.max_seq_len}")
        lines.append(f"  parameters: {cfg.num_params() / 1e9:.3f} B total "
                     f"({cfg.num_params(include_embeddings=False) / 1e9:.3f} B non-embedding, "
                     f"{cfg.vocab_size * cfg.d_model / 1e9:.3f} B tied token embedding)")
        fpt = cfg.flops_per_token(cfg.max_seq_len)
        lines.append(f"  FLOPs/token (train, 6N + 12*L*d*T, T={cfg.max_seq_len}): {fpt / 1e9:.2f} GFLOP")
        for g in gpus:
            m = fsdp_memory_per_gpu(cfg, g)
            lines.append(
                f"  FSDP on {g:>3} GPUs: params {m['params']:.2f} + grads {m['grads']:.2f} + Adam "
                f"{m['optim']:.2f} = {m['sharded_total']:.2f} GiB sharded; + bf16 all-gather peak "
                f"{m['unsharded_peak']:.2f} GiB => {m['total']:.2f} GiB/GPU (activations excluded)")
    lines.append("Accounting: fp32 sharded params (master) 4 B + fp32 grads 4 B + AdamW m,v 8 B = "
                 "16 B/param / n_gpus; peak adds bf16 unsharded root (embeddings) + 2 blocks.")
    lines.append("Model state only. The full per-GPU budget of a training step (activations, loss "
                 "head, gradient accumulation, margins) with PyTorch's FSDP2 tracker beside it: "
                 "python -m training.memory")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.model",
        description="PolyLM model facts: parameter counts, FLOPs per token, FSDP memory per GPU.")
    ap.add_argument("--summary", action="store_true", help="print the summary table (default action)")
    ap.add_argument("--config", action="append", choices=model_names(),
                    help="config(s) to summarise (default: polylm-1.7b and polylm-13b)")
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64], help="FSDP world sizes (default 8 64)")
    args = ap.parse_args(argv)
    print(summary_table(args.config, tuple(args.gpus)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
