"""Generator backends for multilingual self-instruct, with the engineering around them: retries
with exponential backoff, a rate limit, a request budget, and every raw response written to
disk (atomically) before it is parsed, so a killed run resumes without re-asking.

Backends (``request(prompt) -> raw dict`` in the OpenAI response format):

* :class:`OpenAIBackend`: an OpenAI-compatible ``/v1/chat/completions`` (or
  ``/v1/completions``) endpoint through the ``openai`` client (pinned 1.109.1) with a
  configurable ``base_url``: OpenAI, vLLM's and llama.cpp's servers, and the canned test server.
* :class:`TransformersBackend`: a local ``transformers`` causal LM directory (e.g. this
  project's HF export from ``training/export.py``), sampled with ``generate``.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Completion", "OpenAIBackend", "TransformersBackend", "Generator", "GenerationError",
           "BudgetExhausted", "completion_from_raw", "make_backend"]


class GenerationError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""


class BudgetExhausted(RuntimeError):
    """The request budget (``max_requests``) is spent; rerun with a larger one to continue."""


@dataclass
class Completion:
    """A parsed response: generated ``text``, ``finish_reason`` (``"stop"``, ``"length"``...)
    and whether it came from the on-disk cache (``cached``)."""

    text: str
    finish_reason: str | None
    cached: bool = False


def completion_from_raw(raw: dict) -> Completion:
    """Text and finish reason of an OpenAI-format response dict (chat ``message.content`` or
    completions ``text``). Raises ``GenerationError`` when it has no choice."""
    choices = raw.get("choices") or []
    if not choices:
        raise GenerationError(f"response without choices: {json.dumps(raw)[:200]}")
    c = choices[0]
    text = (c.get("message") or {}).get("content") if "message" in c else c.get("text")
    return Completion(text or "", c.get("finish_reason"))


class OpenAIBackend:
    """OpenAI-compatible endpoint via the ``openai`` client (its own retries disabled: the
    :class:`Generator` retries).

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1`` (vLLM).
        model: model name sent in the request.
        api_key: key (``$OPENAI_API_KEY`` if None; local servers accept any string).
        max_tokens: completion token limit (a response hitting it has ``finish_reason=length``).
        temperature, top_p: sampling (Alpaca used 1.0 / 1.0).
        timeout_s: per-request timeout, seconds.
        chat: use chat/completions (True) or completions (False).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 max_tokens: int = 3072, temperature: float = 1.0, top_p: float = 1.0,
                 timeout_s: float = 120.0, chat: bool = True):
        from openai import OpenAI

        self.model, self.max_tokens, self.temperature, self.top_p = model, int(max_tokens), temperature, top_p
        self.chat = bool(chat)
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                             max_retries=0, timeout=timeout_s)

    def request(self, prompt: str) -> dict:
        """One request; returns the response as a dict. Raises the ``openai`` exceptions."""
        kw = dict(model=self.model, max_tokens=self.max_tokens, temperature=self.temperature,
                  top_p=self.top_p)
        if self.chat:
            r = self.client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **kw)
        else:
            r = self.client.completions.create(prompt=prompt, **kw)
        return r.model_dump(mode="json")

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Connection errors, timeouts, 408/409/429 and 5xx are retried; other statuses are not."""
        import openai

        if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)):
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return False


class TransformersBackend:
    """A local causal LM directory loaded with ``AutoModelForCausalLM`` (offline).

    Args:
        model_dir: HF model + tokenizer directory (``training/export.py`` output).
        max_new_tokens: generation limit (``finish_reason="length"`` when reached without EOS).
        temperature, top_p: sampling; temperature 0 = greedy.
        device: torch device string.
        seed: base seed; request k samples with ``seed + k`` (reproducible).
    """

    def __init__(self, model_dir: str, max_new_tokens: int = 1024, temperature: float = 1.0,
                 top_p: float = 1.0, device: str = "cpu", seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        self.max_new_tokens, self.temperature, self.top_p = int(max_new_tokens), temperature, top_p
        self.device, self.seed, self.n = device, int(seed), 0
        self.model_name = os.path.basename(os.path.normpath(model_dir))

    def request(self, prompt: str) -> dict:
        """Generate a continuation of ``prompt``; returns an OpenAI completions-format dict."""
        import torch

        ids = self.tok(prompt, return_tensors="pt").input_ids.to(self.device)
        limit = getattr(self.model.config, "n_positions", None) or getattr(self.model.config, "max_position_embeddings", None)
        if limit:  # keep the prompt's tail so prompt + completion fit the context
            ids = ids[:, -max(1, limit - self.max_new_tokens):]
            new = min(self.max_new_tokens, limit - ids.shape[1])
        else:
            new = self.max_new_tokens
        torch.manual_seed(self.seed + self.n)
        self.n += 1
        sample = self.temperature > 0
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=new, do_sample=sample,
                                      temperature=self.temperature if sample else None,
                                      top_p=self.top_p if sample else None,
                                      pad_token_id=self.tok.pad_token_id or 0)
        gen = out[0, ids.shape[1]:].tolist()
        eos = self.tok.eos_token_id
        finish = "stop" if (eos is not None and eos in gen) else "length"
        if eos is not None and eos in gen:
            gen = gen[:gen.index(eos)]
        return {"object": "text_completion", "model": self.model_name,
                "choices": [{"index": 0, "text": self.tok.decode(gen), "finish_reason": finish}],
                "usage": {"prompt_tokens": int(ids.shape[1]), "completion_tokens": len(gen)}}

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Local generation errors are not retried."""
        return False


def make_backend(cfg: dict):
    """Backend from a config dict: ``{"backend": "openai", "base_url", "model", ...}`` or
    ``{"backend": "transformers", "model_dir", ...}``. Raises ``ValueError`` naming the fix
    for an unknown backend or a missing key."""
    cfg = dict(cfg)
    kind = cfg.pop("backend", None)
    if kind == "openai":
        if not cfg.get("base_url") or not cfg.get("model"):
            raise ValueError("generator.backend=openai needs generator.base_url and generator.model")
        return OpenAIBackend(**cfg)
    if kind == "transformers":
        if not cfg.get("model_dir"):
            raise ValueError("generator.backend=transformers needs generator.model_dir (an HF export)")
        return TransformersBackend(**cfg)
    raise ValueError(f"generator.backend must be 'openai' or 'transformers', got {kind!r}")


class Generator:
    """Requests through a backend with disk cache, retries, rate limit and budget.

    Each request has a stable ``key`` (e.g. ``lang=fr/round=0003/req-0005``); its response is
    stored as ``<raw_dir>/<key>.json`` (``{"key", "prompt", "response", "attempts",
    "seconds"}``), written to a temporary file and renamed before the caller parses it. A key
    already on disk is answered from the file without a request (resume).

    Args:
        backend: object with ``request(prompt) -> dict`` and ``retryable(exc) -> bool``.
        raw_dir: directory of the raw responses.
        max_requests: budget of requests over the whole run, the responses already on disk
            included (None = unlimited); past it :class:`BudgetExhausted` is raised.
        requests_per_minute: rate limit (None/0 = unlimited); requests are spaced evenly.
        max_retries: retries of a retryable failure (then :class:`GenerationError`).
        backoff_s, max_backoff_s: exponential backoff ``backoff_s * 2**attempt`` capped at
            ``max_backoff_s``, times a uniform jitter in [0.5, 1).
        sleep: the sleep function (tests pass a recorder).
    """

    def __init__(self, backend, raw_dir: str | Path, *, max_requests: int | None = None,
                 requests_per_minute: float | None = None, max_retries: int = 5,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, seed: int = 0):
        self.backend = backend
        self.raw_dir = Path(raw_dir)
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        self.max_requests = max_requests
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.max_retries, self.backoff_s, self.max_backoff_s = int(max_retries), backoff_s, max_backoff_s
        self.sleep = sleep
        self._rng = random.Random(seed)
        self._last = 0.0
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "cached": 0, "retries": 0, "failed": 0}
        self._on_disk = sum(1 for _ in self.raw_dir.rglob("*.json"))

    def path(self, key: str) -> Path:
        """File of the raw response for ``key``."""
        return self.raw_dir / f"{key}.json"

    def _wait_rate(self) -> None:
        if self.interval:
            with self._lock:
                now = time.monotonic()
                wait = self._last + self.interval - now
                if wait > 0:
                    self.sleep(wait)
                self._last = max(now, self._last + self.interval)

    def complete(self, key: str, prompt: str) -> Completion:
        """Response for ``key`` (from disk if present, else requested and stored first).

        Raises:
            BudgetExhausted: the budget is spent (nothing requested).
            GenerationError: non-retryable failure or retries exhausted (nothing stored, so a
                rerun asks again).
        """
        p = self.path(key)
        if p.is_file():
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
                self.stats["cached"] += 1
                c = completion_from_raw(rec["response"])
                c.cached = True
                return c
            except (ValueError, KeyError):
                p.unlink()  # a damaged record (should not happen: writes are atomic)
        if self.max_requests is not None and self._on_disk + self.stats["requests"] >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} spent ({self._on_disk} responses "
                                  f"on disk); raise generator.max_requests to continue")
        t0 = time.monotonic()
        attempt = 0
        while True:
            self._wait_rate()
            try:
                raw = self.backend.request(prompt)
                break
            except Exception as e:  # noqa: BLE001 - classified by the backend
                if not self.backend.retryable(e) or attempt >= self.max_retries:
                    self.stats["failed"] += 1
                    raise GenerationError(f"{key}: {type(e).__name__}: {e} (after {attempt} retries)") from e
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + 0.5 * self._rng.random())
                attempt += 1
                self.stats["retries"] += 1
                self.sleep(delay)
        self.stats["requests"] += 1
        rec = {"key": key, "prompt": prompt, "response": raw, "attempts": attempt + 1,
               "seconds": round(time.monotonic() - t0, 3)}
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)
        return completion_from_raw(raw)
