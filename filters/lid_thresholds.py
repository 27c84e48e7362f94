"""Per-language minimum LID scores (``langid.thresholds``), derived from held-out short sentences.

One threshold for every language (CCNet's 0.5, Wenzek et al. 2020 sec. 3.2) is far too strict
for languages whose lid.176 scores are spread out: on Leipzig sentences 7.2% of the Indonesian
sentences lid.176 labels ``id`` (right) score below 0.5, against 0% for Hebrew or Thai.
FineWeb-2 (Penedo et al. 2025, "FineWeb2: One Pipeline to Scale Them All", sec. 3 on language
identification) therefore sets the LID confidence threshold per language from the distribution
of the classifier's scores on that language. :func:`derive_threshold` does that on a tuning set
of sentences of known language:

1. **Recall bound.** Among the tuning sentences of language L that lid.176 labels L (right), take
   the score that is below their ``1 - keep`` quantile with probability ``confidence``
   (:func:`filters.calibration.lower_quantile_bound`; ``keep`` = 0.995 and 95% need 598
   sentences). So the threshold removes at most 0.5% of the correctly identified text.
2. **Never above the CCNet 0.5** (``ceiling``): where a language's scores are all high, 0.5 stays.
3. **No dirtier than 0.5.** The documents a lower threshold adds (score in [t, 0.5)) must be at
   least as often of the right language as those 0.5 keeps: if the tuning sentences of OTHER
   languages labelled L make up a larger share of that band than of the scores >= 0.5, the
   threshold is raised (to just above the offending wrong-language score) until they do not.
4. With too few tuning sentences for the bound, the ceiling (0.5) is used.

``bench/bench_lid_thresholds.py`` runs this on Leipzig + UD dev/train sentences (tuning) and
measures on NTREX + UD test sentences (never tuned on); configs/pipeline.yaml records the result.
"""
from __future__ import annotations

import math

import numpy as np

from filters.calibration import lower_quantile_bound, min_docs_for_bound

#: Share of correctly identified sentences a threshold keeps (with DEFAULT_CONFIDENCE).
DEFAULT_KEEP = 0.995
DEFAULT_CONFIDENCE = 0.95
#: A threshold below the ceiling must keep at least this share more of the right sentences
#: (on the tuning set) than the ceiling does; smaller gains are within noise and not worth the
#: wrong-language text a lower threshold also lets in.
DEFAULT_MIN_GAIN = 0.005
#: CCNet's language-ID threshold (Wenzek et al. 2020, sec. 3.2): the upper bound of a derived one.
CEILING = 0.5


def derive_threshold(right, wrong, *, keep: float = DEFAULT_KEEP, confidence: float = DEFAULT_CONFIDENCE,
                     ceiling: float = CEILING, min_gain: float = DEFAULT_MIN_GAIN) -> dict:
    """Minimum lid score of one language L (module docstring).

    Args:
        right: lid scores (float, [0, 1]) of tuning sentences of language L labelled L.
        wrong: lid scores of tuning sentences of OTHER languages labelled L.
        keep: share of ``right`` sentences kept at least (with ``confidence``).
        confidence: confidence of the order-statistic bound.
        ceiling: the threshold is never above this.

    Returns:
        ``{"value": float, "source": "recall_bound" | "recall_bound_raised" | "ceiling"
        | "ceiling_too_few", "n_right": int, "n_wrong": int, "bound": float | None,
        "min_docs": int}``.
    """
    right = np.asarray(list(right), dtype=np.float64)
    wrong = np.asarray(list(wrong), dtype=np.float64)
    info = {"n_right": int(len(right)), "n_wrong": int(len(wrong)),
            "min_docs": min_docs_for_bound(1.0 - keep, confidence)}
    b = lower_quantile_bound(right, 1.0 - keep, confidence)
    if b is None:
        return {"value": ceiling, "source": "ceiling_too_few", "bound": None, **info}
    t = min(ceiling, b["value"])
    info["bound"] = round(b["value"], 4)
    if t >= ceiling:
        return {"value": ceiling, "source": "ceiling", **info}
    hi_right = int((right >= ceiling).sum())
    hi_wrong = int((wrong >= ceiling).sum())
    hi_share = hi_wrong / max(1, hi_right + hi_wrong)
    source = "recall_bound"
    for cand in [t] + sorted(float(w) + 1e-4 for w in wrong if t <= w < ceiling):
        if cand >= ceiling:
            break
        br = int(((right >= cand) & (right < ceiling)).sum())
        bw = int(((wrong >= cand) & (wrong < ceiling)).sum())
        if bw == 0 or bw / max(1, br + bw) <= hi_share:
            if br < min_gain * len(right):
                return {"value": ceiling, "source": "ceiling_small_gain", **info}
            return {"value": math.floor(cand * 1e4) / 1e4, "source": source, **info}
        source = "recall_bound_raised"
    return {"value": ceiling, "source": "ceiling", **info}


def derive_thresholds(true_langs, pred_langs, scores, languages, **kw) -> dict[str, dict]:
    """:func:`derive_threshold` for every language of ``languages``.

    Args:
        true_langs, pred_langs: N ISO 639-1 codes (known language, lid.176 label).
        scores: N lid scores.
        languages: target languages.
        **kw: passed to :func:`derive_threshold`.

    Returns:
        ``{lang: derive_threshold(...) dict}``.
    """
    t = np.asarray(true_langs)
    p = np.asarray(pred_langs)
    s = np.asarray(scores, dtype=np.float64)
    return {lang: derive_threshold(s[(t == lang) & (p == lang)], s[(t != lang) & (p == lang)], **kw)
            for lang in languages}


def lid_metrics(true_langs, pred_langs, scores, languages, thresholds: dict, default: float = CEILING) -> dict:
    """Accuracy of the langid stage's decision on sentences of known language.

    A sentence of language L counts as right when its label is L and its score is at least the
    label's threshold (``thresholds.get(label, default)``); ``wrong_kept`` of label L counts the
    sentences of OTHER languages kept as L (label L, score above its threshold).

    Returns:
        ``{lang: {"n": int, "accuracy": float, "wrong_kept": int, "kept": int}}`` where ``kept``
        counts every sentence kept with label ``lang``.
    """
    t = np.asarray(true_langs)
    p = np.asarray(pred_langs)
    s = np.asarray(scores, dtype=np.float64)
    thr = np.array([float(thresholds.get(x, default)) for x in p])
    kept = s >= thr
    out = {}
    for lang in languages:
        mine = t == lang
        n = int(mine.sum())
        out[lang] = {"n": n, "accuracy": float(((p == lang) & kept & mine).sum() / n) if n else None,
                     "wrong_kept": int(((p == lang) & kept & ~mine).sum()),
                     "kept": int(((p == lang) & kept).sum())}
    return out
