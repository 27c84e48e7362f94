"""Derive the per-language LID thresholds (``langid.thresholds`` in configs/pipeline.yaml) and
measure them on sentences never tuned on.

Tuning: Leipzig + UD dev/train sentences; measurement: NTREX-128 + UD test sentences
(:func:`bench.common.short_sentences`). Rule: :mod:`filters.lid_thresholds`. Prints per language
the derivation, raw lid.176 top-1 accuracy, the accuracy of the langid stage with 0.5 for every
language (as before) and with the derived thresholds (after summing aliased labels such as
zh + wuu + yue), and the wrong-language sentences kept under each; then the YAML to paste.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import short_sentences  # noqa: E402

LANGS = ["zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl", "ar", "tr", "he", "ja", "ko", "th", "vi", "id"]


def raw_top1(texts: list[str]) -> list[str]:
    """lid.176 top-1 label per text, with only the historical aliases (iw->he, ...), no summing."""
    from filters.langid import LangID, load_model

    lid = LangID()
    labels, _ = load_model(lid.model_path).predict([lid.prepare(t) for t in texts], k=1)
    old = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "arz": "ar"}
    out = []
    for lab in labels:
        c = lab[0].replace("__label__", "") if len(lab) else "und"
        out.append(old.get(c, c))
    return out


def old_stage(texts: list[str]) -> tuple[list[str], list[float]]:
    """Label and score as the langid stage had them before (top-1, no summing)."""
    from filters.langid import LangID, load_model

    lid = LangID()
    labels, probs = load_model(lid.model_path).predict([lid.prepare(t) for t in texts], k=1)
    old = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "arz": "ar"}
    langs = [old.get(lab[0].replace("__label__", ""), lab[0].replace("__label__", "")) for lab in labels]
    return langs, [min(1.0, float(p[0])) for p in probs]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    from filters.langid import LangID
    from filters.lid_thresholds import derive_thresholds, lid_metrics

    lid = LangID()
    tune = short_sentences("tune")
    meas = short_sentences("measure")
    tl, ts = lid.predict([t for _, t in tune])
    der = derive_thresholds([l for l, _ in tune], tl, ts, LANGS)
    thr = {l: d["value"] for l, d in der.items()}
    true = [l for l, _ in meas]
    texts = [t for _, t in meas]
    raw = raw_top1(texts)
    ol, os_ = old_stage(texts)
    nl, ns = lid.predict(texts)
    m_old = lid_metrics(true, ol, os_, LANGS, {}, 0.5)
    m_new = lid_metrics(true, nl, ns, LANGS, thr)
    print(f"tuning: {len(tune)} sentences (Leipzig, UD dev/train); measured on {len(meas)} others "
          f"(NTREX-128, UD test)")
    print(f"{'lang':4} {'thr':>6} {'source':>20} {'n_tune':>6} {'n_meas':>6} {'raw':>7} {'old@0.5':>8} {'new':>7} "
          f"{'wrong old':>9} {'wrong new':>9}")
    for l in LANGS:
        n = m_new[l]["n"]
        r = sum(1 for a, b in zip(true, raw) if a == l and b == l) / n
        print(f"{l:4} {thr[l]:6.3f} {der[l]['source']:>20} {der[l]['n_right']:6d} {n:6d} {r:7.4f} "
              f"{m_old[l]['accuracy']:8.4f} {m_new[l]['accuracy']:7.4f} {m_old[l]['wrong_kept']:9d} "
              f"{m_new[l]['wrong_kept']:9d}")
    tot = {k: sum(m[l]["wrong_kept"] for l in LANGS) for k, m in (("old", m_old), ("new", m_new))}
    kept = {k: sum(m[l]["kept"] for l in LANGS) for k, m in (("old", m_old), ("new", m_new))}
    print(f"wrong-language sentences kept: old {tot['old']}/{kept['old']} kept, new {tot['new']}/{kept['new']}")
    print("langid.thresholds: {" + ", ".join(f"{l}: {thr[l]}" for l in LANGS) + "}")
    return {"derivation": der, "old": m_old, "new": m_new}


if __name__ == "__main__":
    main()
