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
# PolyLM's ML filtering removes only "extremely low quality" documents (arXiv 2307.06018 sec. 2.1;
# CCNet, Wenzek et al. 2020 sec. 3.3, uses perplexity to BUCKET text, not to drop it). So both auto
# thresholds aim at extreme outliers, and every quantile they use is an order statistic with a
# 95% confidence bound (filters.calibration), never a point estimate from a handful of documents.
#
# Share of web documents the auto min_quality_score removes at most (with CONFIDENCE): the worst 5%.
# (0.2 before; on held-out clean paragraphs formatted as web pages, that removed 14 of 64 Spanish
# ones, because the classifier scores any web-formatted text low.)
DEFAULT_WEB_DROP = 0.05
# Share of web documents the web ppl candidate of max_ppl would remove (kept for the config key;
# only a candidate, the reference fence below usually decides).
DEFAULT_PPL_WEB_DROP = 0.1
# Confidence of every order-statistic bound.
CONFIDENCE = 0.95
# Tukey's "far out" fence (Tukey 1977, "Exploratory Data Analysis", ch. 2): Q3 + 3 IQR, applied to
# log10 ppl of held-out reference documents. On the sample, clean paragraphs of unseen text have a
# median ppl 1.2-1.6x the held-out reference median (the LM is trained one sentence per line) and
# the held-out reference p99 is 1.5-2.5x the median: a quantile of the reference itself (the old
# q0.98) removes clean text; the far-out fence (1.9-6.7x the median) removes only outliers.
FENCE_K = 3.0
# Quartiles of fewer held-out reference documents have no 95% bound (filters.calibration).
MIN_REF_DOCS_FENCE = 11
# Upper bound of an auto min_quality_score (a P(ref) above 0.5 means "more web than reference").
MAX_AUTO_QUALITY_SCORE = 0.5
# Kept for callers of the old signature; the minimum now follows from the bound (min_docs_for_bound).
MIN_WEB_DOCS = None


def _none(source: str, n: int, note: str) -> dict:
    return {"source": source, "quantile": None, "n_docs": int(n), "value": None, "note": note}


def calibrate_max_ppl(ref_ppl, web_ppl, *, reference_keep: float = 0.98, ppl_web_drop: float = DEFAULT_PPL_WEB_DROP,
                      min_web_docs: int | None = None, ref_source: str = "heldout_reference_ppl",
                      confidence: float = CONFIDENCE, fence_k: float = FENCE_K) -> dict:
    """Auto ``max_ppl`` of one language and how it was derived: remove only extreme outliers.

    Candidates (the LARGEST applicable one is used, so each can only loosen the filter):

    * ``reference_fence`` (needs :data:`MIN_REF_DOCS_FENCE` = 11 documents): Tukey's far-out fence
      ``10 ** (Q3 + fence_k * (Q3 - Q1))`` on log10 ppl of held-out reference documents, with Q3
      the 95% UPPER bound of the 0.75 quantile and Q1 the 95% LOWER bound of the 0.25 quantile
      (:func:`filters.calibration.upper_quantile_bound`), so a small sample widens the fence.
    * ``heldout_reference_ppl``: the 95% upper bound of the ``reference_keep`` quantile of held-out
      reference ppl (needs ``min_docs_for_bound(1 - reference_keep)`` = 149 documents for 0.98).
    * ``web_ppl``: the 95% upper bound of the ``1 - ppl_web_drop`` quantile of the language's web
      ppl (web text is never LM training data; needs 29 documents for 0.9).

    Args:
        ref_ppl: ppl of held-out reference documents (or training documents when there are none;
            say so with ``ref_source``).
        web_ppl: ppl of the language's web documents.
        reference_keep, ppl_web_drop: quantile parameters in [0, 1].
        min_web_docs: ignored (the bound decides); kept for old callers.
        ref_source: name recorded for the reference candidates' documents.
        confidence, fence_k: see above.

    Returns:
        ``{"value": float | None, "source": str, "quantile": float | None, "n_docs": int,
        "candidates": [...]}``; every candidate is ``{"source", "quantile", "n_docs", "value"}``
        plus ``rank``/``confidence`` (bounds) or a ``note`` (why it has no value). ``value`` is
        None (no ppl filter) when no candidate applies.
    """
    from filters.calibration import min_docs_for_bound, upper_quantile_bound

    ref = [float(x) for x in ref_ppl if x is not None and x > 0]
    web = [float(x) for x in web_ppl if x is not None and x > 0]
    cands = []
    if len(ref) >= MIN_REF_DOCS_FENCE:
        lg = np.log10(ref)
        q3 = upper_quantile_bound(lg, 0.75, confidence)
        q1 = upper_quantile_bound(-lg, 0.75, confidence)  # -(lower bound of the 0.25 quantile)
        if q3 is not None and q1 is not None:
            lo = -q1["value"]
            cands.append({"source": "reference_fence", "quantile": None, "n_docs": len(ref),
                          "value": _r(10 ** (q3["value"] + fence_k * (q3["value"] - lo))),
                          "q1": _r(10 ** lo), "q3": _r(10 ** q3["value"]), "k": fence_k,
                          "confidence": confidence, "documents_from": ref_source})
    if not cands:
        cands.append(_none("reference_fence", len(ref), f"fewer than {MIN_REF_DOCS_FENCE} reference documents"))
    b = upper_quantile_bound(ref, reference_keep, confidence) if 0 < reference_keep < 1 else None
    cands.append({"source": ref_source, "quantile": reference_keep, "n_docs": len(ref), "value": _r(b["value"]),
                  "rank": b["rank"], "confidence": confidence} if b else
                 _none(ref_source, len(ref), f"fewer than {min_docs_for_bound(1 - reference_keep, confidence)} "
                       f"documents for a {confidence:.0%} bound" if 0 < reference_keep < 1 else "reference_keep"))
    q = 1.0 - ppl_web_drop
    b = upper_quantile_bound(web, q, confidence) if 0 < q < 1 else None
    cands.append({"source": "web_ppl", "quantile": round(q, 6), "n_docs": len(web), "value": _r(b["value"]),
                  "rank": b["rank"], "confidence": confidence} if b else
                 _none("web_ppl", len(web), f"fewer than {min_docs_for_bound(ppl_web_drop, confidence)} web "
                       f"documents for a {confidence:.0%} bound" if 0 < q < 1 else "ppl_web_drop"))
    usable = [c for c in cands if c["value"] is not None]
    if not usable:
        return {"value": None, "source": "none", "quantile": None, "n_docs": len(ref), "candidates": cands}
    best = max(usable, key=lambda c: c["value"])
    return {"value": best["value"], "source": best["source"], "quantile": best["quantile"],
            "n_docs": best["n_docs"], "candidates": cands}


def calibrate_min_quality_score(ref_scores, web_scores, pooled_web_scores, *, reference_keep: float = 0.98,
                                web_drop: float = DEFAULT_WEB_DROP, min_web_docs: int | None = None,
                                cap: float = MAX_AUTO_QUALITY_SCORE, confidence: float = CONFIDENCE) -> dict:
    """Auto ``min_quality_score`` of one language and how it was derived: remove only the
    classifier's extreme web documents.

    The 95% LOWER bound of the ``web_drop`` quantile (default 0.05) of the language's OUT-OF-FOLD
    web classifier scores (each from a classifier that never saw the document), so with 95%
    confidence at most ``web_drop`` of unseen web text like it is removed by the classifier
    alone; this needs ``min_docs_for_bound(web_drop)`` web documents (59 for 0.05). With fewer, the
    pooled out-of-fold web scores of all languages (one multilingual classifier; languages with
    few web documents score web text higher, so the pooled bound is the more conservative one).
    Capped by the 95% lower bound of the ``1 - reference_keep`` quantile of held-out reference
    scores (needs 149 documents for 0.98) and by ``cap``. With no web bound at all: the reference
    bound alone, else no classifier filter (value None): a threshold from held-out reference
    scores alone removes clean text formatted as web pages (the classifier scores format).

    Args:
        ref_scores: classifier P(ref) of the language's held-out reference documents.
        web_scores: out-of-fold P(ref) of the language's web documents.
        pooled_web_scores: out-of-fold P(ref) of every language's web documents.
        reference_keep, web_drop: quantile parameters in [0, 1].
        min_web_docs: ignored (the bound decides); kept for old callers.
        cap: upper bound (0.5).
        confidence: of every bound.

    Returns:
        ``{"value": float | None, "source": str, "quantile": float | None, "n_docs": int,
        "candidates": [...]}`` with source ``oof_web_score``, ``pooled_oof_web_score``,
        ``heldout_reference_score``, ``cap``, ``none`` or ``no_heldout_reference``.
    """
    from filters.calibration import lower_quantile_bound, min_docs_for_bound

    if not len(ref_scores):
        return {"value": None, "source": "no_heldout_reference", "quantile": None, "n_docs": 0, "candidates": []}
    cands = []
    web = None
    need = min_docs_for_bound(web_drop, confidence) if 0 < web_drop < 1 else None
    if need is not None:
        for src, xs in (("oof_web_score", web_scores), ("pooled_oof_web_score", pooled_web_scores)):
            b = lower_quantile_bound(xs, web_drop, confidence)
            if b is not None:
                web = {"source": src, "quantile": round(web_drop, 6), "n_docs": len(xs), "value": _r(b["value"], 6),
                       "rank": b["rank"], "confidence": confidence}
                if src == "pooled_oof_web_score":
                    web["note"] = f"{len(web_scores)} web documents of the language (< {need}): pooled over languages"
                cands.append(web)
                break
            cands.append(_none(src, len(xs), f"fewer than {need} documents for a {confidence:.0%} bound"))
    b = lower_quantile_bound(ref_scores, 1.0 - reference_keep, confidence) if 0 < reference_keep < 1 else None
    ref = ({"source": "heldout_reference_score", "quantile": round(1.0 - reference_keep, 6), "n_docs": len(ref_scores),
            "value": _r(b["value"], 6), "rank": b["rank"], "confidence": confidence} if b else
           _none("heldout_reference_score", len(ref_scores), "too few documents for a bound"))
    cands.append(ref)
    capc = {"source": "cap", "quantile": None, "n_docs": 0, "value": cap}
    usable = [c for c in (web, ref if ref["value"] is not None else None) if c is not None]
    if not usable:
        return {"value": None, "source": "none", "quantile": None, "n_docs": len(web_scores), "candidates": cands}
    best = min(usable + [capc], key=lambda c: c["value"])
    if best is capc:
        cands.append(capc)
    return {"value": best["value"], "source": best["source"], "quantile": best["quantile"],
            "n_docs": best["n_docs"], "candidates": cands}
