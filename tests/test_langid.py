"""Language ID: batching, label mapping, edge cases, and accuracy on the real NTREX documents."""
from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa

from bench.common import ntrex_documents
from filters.langid import LangID, to_iso
from pipeline.config import TARGET_LANGS
from pipeline.langid import LangIDBatch


def test_label_mapping():
    assert to_iso("__label__iw") == "he"
    assert to_iso("__label__in") == "id"
    assert to_iso("__label__en") == "en"
    assert to_iso("__label__ceb") == "ceb"


def test_batch_edge_cases():
    lid = LangID()
    texts = ["", None, "   \n\t ", "Das ist ein ganz normaler deutscher Satz.\nUnd noch einer hier.",
             "x" * 50000, "これは日本語の文章です。\n改行もあります。"]
    langs, scores = lid.predict(texts)
    assert langs[:3] == ["und", "und", "und"] and np.all(scores[:3] == 0)
    assert langs[3] == "de" and scores[3] > 0.8
    assert langs[5] == "ja"
    assert scores.dtype == np.float32 and scores.shape == (6,)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))


def test_batch_function_reasons():
    fn = LangIDBatch(LangID().model_path, 20000, ["de", "en"], 0.5, {"en": 0.99999})
    batch = pa.RecordBatch.from_pydict({
        "id": ["a", "b", "c", "d"],
        "text": ["Das ist ein ganz normaler deutscher Satz über das Wetter.",
                 "Ceci est une phrase française tout à fait normale.",
                 "This is ok.", ""]})
    out = fn(batch).to_pydict()
    assert out["reason"][0] is None and out["lang"][0] == "de"
    assert out["reason"][1] == "lang_not_target" and out["lang"][1] == "fr"
    assert out["reason"][2] == "lang_low_score"  # en threshold set absurdly high
    assert out["reason"][3] == "lang_not_target" and out["lang"][3] == "und"
    assert out["id"] == ["a", "b", "c", "d"]


def test_ntrex_accuracy_every_language(shared_data):
    """Acceptance (issue 2): LID right for >= 99% of the 123 NTREX documents in every language."""
    docs = ntrex_documents(shared_data)
    langs, _ = LangID().predict([t for _, _, t in docs])
    total = collections.Counter(l for l, _, _ in docs)
    right = collections.Counter(l for (l, _, _), p in zip(docs, langs) if p == l)
    assert set(total) == set(TARGET_LANGS)
    report = {l: right[l] / total[l] for l in sorted(total)}
    print("NTREX document LID accuracy:", {l: round(a, 4) for l, a in report.items()})
    assert all(total[l] == 123 for l in total)
    bad = {l: a for l, a in report.items() if a < 0.99}
    assert not bad, f"LID accuracy below 99%: {bad}"
