"""Threshold calibration of the quality models (pure Python + NumPy, no Spark).

Per language, the quality stage removes documents above ``max_ppl`` (KenLM perplexity) or below
``min_quality_score`` (fastText reference-vs-web probability). This module derives those
thresholds from the scores of documents the models never trained on (held-out reference text and
out-of-fold web text); :mod:`pipeline.quality_models` calls it after training.
"""
from __future__ import annotations

import numpy as np


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def quantile(xs, q: float) -> float | None:
    """``numpy.quantile`` (linear) of a non-empty list, else None."""
    return float(np.quantile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


def median(xs) -> float | None:
    """Median of a non-empty list, else None."""
    return quantile(xs, 0.5)


# ------------------------------------------------------------------ threshold calibration
# Fewest web documents of a language for a quantile of its own web scores / ppl.
MIN_WEB_DOCS = 20
# Defaults of the auto thresholds. PolyLM's rule filters and quality scoring together removed
# 28.3% of its data (arXiv 2307.06018, sec. 3.1): the quality stage should drop the worst web
# pages, not the web tier. The classifier alone drops about the worst WEB_DROP of web documents
# (out-of-fold scores), the LM alone about the worst PPL_WEB_DROP by perplexity (the two overlap).
DEFAULT_WEB_DROP = 0.2
DEFAULT_PPL_WEB_DROP = 0.1
# Upper bound of an auto min_quality_score (a P(ref) above 0.5 means "more web than reference").
MAX_AUTO_QUALITY_SCORE = 0.5


def _candidate(values, q: float, source: str, nd: int = 4) -> dict:
    return {"source": source, "quantile": round(q, 6), "n_docs": len(values), "value": _r(quantile(values, q), nd)}


def calibrate_max_ppl(ref_ppl, web_ppl, *, reference_keep: float, ppl_web_drop: float,
                      min_web_docs: int = MIN_WEB_DOCS, ref_source: str = "heldout_reference_ppl") -> dict:
    """Auto ``max_ppl`` of one language and how it was derived.

    ``max(reference_keep-quantile of ref_ppl, (1 - ppl_web_drop)-quantile of web_ppl)``: the LM
    alone removes at most about ``1 - reference_keep`` of unseen clean text and about
    ``ppl_web_drop`` of web text (web text is never LM training data, so its ppl is honest).
    With fewer than ``min_web_docs`` web documents only the reference quantile is used.

    Args:
        ref_ppl: perplexities of held-out reference documents (or of training documents when
            there are none; say so with ``ref_source``).
        web_ppl: perplexities of the language's web documents.
        reference_keep, ppl_web_drop: the quantile parameters, in [0, 1].
        min_web_docs: fewest web documents for the web quantile.
        ref_source: name recorded for the reference candidate.

    Returns:
        ``{"value": float | None, "source": "web_ppl" | ref_source | "none", "quantile": float,
        "n_docs": int, "candidates": [...]}``; each candidate is ``{"source", "quantile",
        "n_docs", "value"}`` (a web candidate with too few documents has value None and a
        ``note``). ``value`` is None only when both lists are empty.
    """
    cands = []
    if len(ref_ppl):
        cands.append(_candidate(ref_ppl, reference_keep, ref_source))
    if len(web_ppl) >= min_web_docs:
        cands.append(_candidate(web_ppl, 1.0 - ppl_web_drop, "web_ppl"))
    else:
        cands.append({"source": "web_ppl", "quantile": round(1.0 - ppl_web_drop, 6), "n_docs": len(web_ppl),
                      "value": None, "note": f"fewer than {min_web_docs} web documents"})
    usable = [c for c in cands if c["value"] is not None]
    if not usable:
        return {"value": None, "source": "none", "quantile": None, "n_docs": 0, "candidates": cands}
    best = max(usable, key=lambda c: c["value"])
    return {"value": best["value"], "source": best["source"], "quantile": best["quantile"],
            "n_docs": best["n_docs"], "candidates": cands}


def calibrate_min_quality_score(ref_scores, web_scores, pooled_web_scores, *, reference_keep: float,
                                web_drop: float, min_web_docs: int = MIN_WEB_DOCS,
                                cap: float = MAX_AUTO_QUALITY_SCORE) -> dict:
    """Auto ``min_quality_score`` of one language and how it was derived.

    The ``web_drop``-quantile of the language's OUT-OF-FOLD web classifier scores (each web
    document scored by a cross-fitted classifier that never saw it, so the share holds for
    unseen web text), but never above the reference floor ``min(cap, (1 - reference_keep)-
    quantile of held-out reference scores)``, so at most about ``1 - reference_keep`` of unseen
    clean text is removed. A language with fewer than ``min_web_docs`` web documents uses the
    pooled out-of-fold web scores of all languages (the classifier is multilingual); with no
    usable web scores the floor alone is used (the calibration before web scores were used).
    Without held-out reference scores the value is 0.0 (the rule removes nothing).

    Args:
        ref_scores: classifier P(ref) of the language's held-out reference documents.
        web_scores: out-of-fold P(ref) of the language's web documents.
        pooled_web_scores: out-of-fold P(ref) of every language's web documents.
        reference_keep, web_drop: quantile parameters in [0, 1].
        min_web_docs: fewest documents for a web quantile.
        cap: upper bound of the reference floor (0.5).

    Returns:
        ``{"value": float, "source": str, "quantile": float | None, "n_docs": int,
        "candidates": [...]}`` with source ``oof_web_score``, ``pooled_oof_web_score``,
        ``heldout_reference_score``, ``cap`` or ``no_heldout_reference``.
    """
    if not len(ref_scores):
        return {"value": 0.0, "source": "no_heldout_reference", "quantile": None, "n_docs": 0, "candidates": []}
    ref = _candidate(ref_scores, 1.0 - reference_keep, "heldout_reference_score", 6)
    cands = [ref]
    floor = ref if ref["value"] <= cap else {"source": "cap", "quantile": None, "n_docs": 0, "value": cap}
    if floor is not ref:
        cands.append(floor)
    web = None
    if len(web_scores) >= min_web_docs:
        web = _candidate(web_scores, web_drop, "oof_web_score", 6)
    elif len(pooled_web_scores) >= min_web_docs:
        web = _candidate(pooled_web_scores, web_drop, "pooled_oof_web_score", 6)
        web["note"] = f"{len(web_scores)} web documents of the language (< {min_web_docs}): pooled over languages"
    else:
        cands.append({"source": "oof_web_score", "quantile": round(web_drop, 6), "n_docs": len(web_scores),
                      "value": None,
                      "note": f"fewer than {min_web_docs} out-of-fold web scores, also pooled"})
    if web is not None:
        cands.append(web)
    best = web if web is not None and web["value"] < floor["value"] else floor
    return {"value": best["value"], "source": best["source"], "quantile": best["quantile"],
            "n_docs": best["n_docs"], "candidates": cands}

