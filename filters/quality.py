"""Document quality scores: KenLM perplexity on SentencePiece pieces and a fastText classifier.

Pure Python (no Spark). The recipe follows CCNet (Wenzek et al. 2020, sec. 3.3,
``cc_net/perplexity.py``) and PolyLM (Wei et al. 2023, arXiv 2307.06018, sec. 3.1):

1. :func:`filters.normalize.normalize` the document (the same function used for training);
2. split it into paragraphs (lines), tokenise each with the language's SentencePiece model;
3. score each paragraph with the language's 5-gram KenLM (``<s>`` and ``</s>`` included);
4. document perplexity ``ppl = 10 ** (-sum(log10 p) / n_tokens)`` where ``n_tokens`` counts the
   pieces plus one ``</s>`` per paragraph (CCNet's ``DocLM``);
5. ``ppl_bucket``: ``head`` if ``ppl < cutoff_30``, ``middle`` if ``ppl < cutoff_60``, else
   ``tail`` with per-language cut-offs at the 30th/60th percentile (CCNet, sec. 3.3);
6. ``quality_score``: probability of ``__label__ref`` from a fastText supervised classifier on
   word bigrams (``wordNgrams=2``, PolyLM sec. 3.1) over the same pieces, trained with
   reference-tier text as positives and web text as negatives.

Models are loaded once per process (:func:`load_lm`, :func:`load_classifier` are cached by
path), so a Spark Python worker loads each file once.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from filters.normalize import normalize

LABEL_REF = "__label__ref"
LABEL_WEB = "__label__web"
MANIFEST = "manifest.json"

# Reason names used by the quality stage.
REASON_NO_TEXT = "quality_no_text"       # nothing left to score after normalisation
REASON_PPL = "ppl_too_high"              # ppl above the language's max_ppl
REASON_CLASSIFIER = "quality_low"        # classifier score below min_quality_score
REASON_NO_MODEL = "quality_no_model"     # no models for the document's language (if rejected)

# Paragraphs longer than this many characters are scored in chunks (split at a space when
# possible) so a single 20 MB line never reaches SentencePiece / KenLM as one string.
DEFAULT_MAX_PARAGRAPH_CHARS = 20_000
# Marks paragraph ends in the classifier input, so line structure (navigation menus, lists of
# short lines) is visible to its bigrams. SentencePiece pieces of normalised text never contain
# it as a whole piece.
PARAGRAPH_TOKEN = "__p__"
# Classifier input: at most this many pieces per document (its beginning).
DEFAULT_CLASSIFIER_MAX_TOKENS = 4_096


@dataclass(frozen=True)
class PplResult:
    """Perplexity of one document.

    Attributes:
        ppl: ``10 ** (-log10_prob / n_tokens)`` (float, > 0) or ``None`` when ``n_tokens == 0``.
        log10_prob: sum of KenLM ``log10 p`` over all paragraphs (float, <= 0).
        n_tokens: SentencePiece pieces + one ``</s>`` per paragraph (int).
        n_paragraphs: paragraphs scored (int).
        pieces: the pieces of the whole document with :data:`PARAGRAPH_TOKEN` after each
            paragraph (list[str]), the classifier's input (:func:`classifier_pieces`).
    """

    ppl: float | None
    log10_prob: float
    n_tokens: int
    n_paragraphs: int
    pieces: list


def ppl_from_log10(log10_prob: float, n_tokens: int) -> float | None:
    """CCNet perplexity ``10 ** (-log10_prob / n_tokens)``; ``None`` when ``n_tokens <= 0``.

    The result is always finite for finite ``log10_prob``; it is capped at 1e300 so a
    pathological document cannot overflow to ``inf``.
    """
    if n_tokens <= 0:
        return None
    x = -log10_prob / n_tokens
    return 1e300 if x >= 300 else float(10.0 ** x)


def chunk_paragraph(par: str, max_chars: int) -> list[str]:
    """Split one paragraph into pieces of at most ``max_chars`` characters, at the last space
    before the limit when there is one (hard cut otherwise). Deterministic."""
    if len(par) <= max_chars:
        return [par]
    out = []
    i, n = 0, len(par)
    while i < n:
        j = min(i + max_chars, n)
        if j < n:
            k = par.rfind(" ", i + max_chars // 2, j)
            if k > i:
                j = k
        chunk = par[i:j].strip()
        if chunk:
            out.append(chunk)
        i = j
    return out


class PieceTokenizer:
    """SentencePiece tokenisation of normalised paragraphs, as used for KenLM training and scoring.

    Pieces outside the SentencePiece vocabulary (runs of characters the model does not cover,
    e.g. Chinese text given to the English model) are split into single characters, so every
    unknown character is one KenLM token: otherwise a whole run of foreign text would count as
    one token and look deceptively likely.

    Args:
        sp_model: path of a SentencePiece ``.model``.

    Raises:
        FileNotFoundError: ``sp_model`` missing. OSError: not a SentencePiece model.
    """

    def __init__(self, sp_model: str):
        import sentencepiece as spm

        if not os.path.exists(sp_model):
            raise FileNotFoundError(f"quality model file not found: {sp_model}")
        self.sp = spm.SentencePieceProcessor(model_file=sp_model)
        self.vocab = frozenset(self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size()))

    def encode(self, paragraphs: list[str]) -> list[list[str]]:
        """Pieces (list of str) of each paragraph; unknown pieces split into characters."""
        if not paragraphs:
            return []
        vocab = self.vocab
        out = []
        for pieces in self.sp.encode(paragraphs, out_type=str, num_threads=1):
            if all(p in vocab for p in pieces):
                out.append(pieces)
                continue
            fixed = []
            for p in pieces:
                if p in vocab:
                    fixed.append(p)
                else:
                    if p.startswith("\u2581") and len(p) > 1:
                        fixed.append("\u2581")
                        p = p[1:]
                    fixed.extend(p)
            out.append(fixed)
        return out


class PerplexityModel:
    """SentencePiece tokenizer + KenLM n-gram model of one language.

    Args:
        sp_model: path of a SentencePiece ``.model`` trained on normalised text.
        lm_model: path of a KenLM model (binary from ``build_binary`` or ARPA) trained on the
            same normalised text tokenised by :class:`PieceTokenizer`.
        max_paragraph_chars: paragraphs longer than this are scored in chunks.

    Raises:
        FileNotFoundError: a model file is missing.
        OSError / RuntimeError: a file is not a valid model (from sentencepiece / kenlm).
    """

    def __init__(self, sp_model: str, lm_model: str,
                 max_paragraph_chars: int = DEFAULT_MAX_PARAGRAPH_CHARS):
        import kenlm

        if not os.path.exists(lm_model):
            raise FileNotFoundError(f"quality model file not found: {lm_model}")
        self.tokenizer = PieceTokenizer(sp_model)
        self.lm = kenlm.Model(lm_model)
        self.max_paragraph_chars = int(max_paragraph_chars)

    def paragraphs(self, text: str) -> list[str]:
        """Normalised, non-empty paragraphs of ``text`` (long ones chunked)."""
        out: list[str] = []
        for par in normalize(text).split("\n"):
            if par:
                out.extend(chunk_paragraph(par, self.max_paragraph_chars))
        return out

    def tokenize(self, paragraphs: list[str]) -> list[list[str]]:
        """Pieces of each (already normalised) paragraph (:meth:`PieceTokenizer.encode`)."""
        return self.tokenizer.encode(paragraphs)

    def score_pieces(self, pieces_per_par: list[list[str]]) -> tuple[float, int]:
        """Sum of KenLM log10 probabilities and token count over paragraphs.

        Returns:
            (log10_prob: float, n_tokens: int) with ``n_tokens = sum(len(p) + 1)`` (``</s>``).
        """
        lp = 0.0
        n = 0
        score = self.lm.score
        for pieces in pieces_per_par:
            lp += score(" ".join(pieces), bos=True, eos=True)
            n += len(pieces) + 1
        return lp, n

    def perplexity(self, text: str) -> PplResult:
        """Perplexity of one document (see module docstring). Never raises on any string."""
        pars = self.paragraphs(text or "")
        toks = self.tokenize(pars)
        lp, n = self.score_pieces(toks)
        return PplResult(ppl_from_log10(lp, n), lp, n, len(pars), classifier_pieces(toks))


class QualityClassifier:
    """fastText supervised reference-vs-web classifier over SentencePiece pieces.

    Args:
        path: fastText ``.bin`` (or quantised ``.ftz``) with labels ``__label__ref`` and
            ``__label__web``.

    Raises:
        FileNotFoundError: ``path`` missing. ValueError: the model lacks ``__label__ref``.
    """

    def __init__(self, path: str):
        import fasttext

        if not os.path.exists(path):
            raise FileNotFoundError(f"quality classifier not found: {path}")
        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load warning
        self.model = fasttext.load_model(path)
        labels = self.model.get_labels()
        if LABEL_REF not in labels:
            raise ValueError(f"classifier {path} has labels {labels}, expected {LABEL_REF}")
        self.n_labels = len(labels)

    def predict_proba(self, lines: list[str]) -> np.ndarray:
        """P(``__label__ref``) for each line (pieces joined by spaces, no newlines).

        Returns:
            float64 array of shape ``(len(lines),)`` in [0, 1]. Empty lines get the model's
            prior-free answer for no features (fastText returns the label bias).
        """
        if not lines:
            return np.zeros(0, dtype=np.float64)
        # fastText 0.9.3 under NumPy 2: always predict on a list, never a single string.
        labels, probs = self.model.predict([ln.replace("\n", " ") for ln in lines], k=self.n_labels)
        out = np.empty(len(lines), dtype=np.float64)
        for i, (ls, ps) in enumerate(zip(labels, probs)):
            p = 0.0
            for l, v in zip(ls, ps):
                if l == LABEL_REF:
                    p = float(v)
                    break
            out[i] = min(1.0, max(0.0, p)) if math.isfinite(p) else 0.0
        return out


def classifier_pieces(pieces_per_par: list[list[str]]) -> list[str]:
    """Flatten per-paragraph pieces for the classifier, with :data:`PARAGRAPH_TOKEN` after
    each paragraph."""
    out: list[str] = []
    for par in pieces_per_par:
        out.extend(par)
        out.append(PARAGRAPH_TOKEN)
    return out


def classifier_line(pieces: list[str], max_tokens: int = DEFAULT_CLASSIFIER_MAX_TOKENS) -> str:
    """The classifier's input for one document: its first ``max_tokens`` pieces joined by spaces."""
    return " ".join(pieces[:max_tokens])


@functools.lru_cache(maxsize=64)
def load_lm(sp_model: str, lm_model: str,
            max_paragraph_chars: int = DEFAULT_MAX_PARAGRAPH_CHARS) -> PerplexityModel:
    """Cached :class:`PerplexityModel` (one per process and path pair)."""
    return PerplexityModel(sp_model, lm_model, max_paragraph_chars)


@functools.lru_cache(maxsize=8)
def load_classifier(path: str) -> QualityClassifier:
    """Cached :class:`QualityClassifier` (one per process and path)."""
    return QualityClassifier(path)


# ------------------------------------------------------------------ buckets and decisions
def ppl_bucket(ppl: float | None, cutoffs: tuple[float, float] | None) -> str | None:
    """CCNet bucket of a perplexity: ``head`` (< cut-off 1), ``middle`` (< cut-off 2) or ``tail``.

    Args:
        ppl: document perplexity or None.
        cutoffs: (30th, 60th percentile) of the language, or None.

    Returns:
        ``"head" | "middle" | "tail"``, or None when ``ppl`` or ``cutoffs`` is None.
    """
    if ppl is None or cutoffs is None:
        return None
    head, tail = cutoffs
    if ppl < head:
        return "head"
    if ppl < tail:
        return "middle"
    return "tail"


def decide(ppl: float | None, n_tokens: int, quality_score: float | None,
           max_ppl: float | None, min_quality_score: float | None) -> tuple[str | None, str | None]:
    """Removal decision for one scored document.

    Order: no text (``quality_no_text``), then ``ppl_too_high`` (``ppl > max_ppl``), then
    ``quality_low`` (``quality_score < min_quality_score``). A threshold of None disables
    that rule.

    Returns:
        (reason or None, detail JSON string or None).
    """
    if n_tokens <= 0 or ppl is None:
        return REASON_NO_TEXT, json.dumps({"n_tokens": int(n_tokens)})
    if max_ppl is not None and ppl > max_ppl:
        return REASON_PPL, _detail(ppl=ppl, max_ppl=max_ppl, n_tokens=n_tokens,
                                   quality_score=quality_score)
    if min_quality_score is not None and quality_score is not None and quality_score < min_quality_score:
        return REASON_CLASSIFIER, _detail(quality_score=quality_score,
                                          min_quality_score=min_quality_score, ppl=ppl)
    return None, None


def _detail(**kw) -> str:
    return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in kw.items()
                       if v is not None}, sort_keys=True)


# ------------------------------------------------------------------ model sets
def load_manifest(models_dir: str) -> dict:
    """Read ``<models_dir>/manifest.json`` written by ``jobs/train_quality_models.py``.

    Raises:
        FileNotFoundError: no manifest (run ``make quality-models`` or pass model paths).
    """
    path = os.path.join(models_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no quality model manifest at {path}: run `make quality-models` first, or set "
            f"quality.models / quality.classifier in the config to your own model files")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def model_paths(models_dir: str | None, overrides: dict | None = None,
                classifier: str | None = None) -> tuple[dict[str, tuple[str, str]], str | None, dict]:
    """Resolve per-language model files from the manifest and user overrides.

    Args:
        models_dir: directory with ``manifest.json`` (may be None when every model is given).
        overrides: ``{lang: {"sp_model": path, "kenlm": path}}`` from the config.
        classifier: path of a user classifier (overrides the manifest's).

    Returns:
        (``{lang: (sp_model, kenlm)}`` with absolute paths, classifier path or None,
        manifest dict or {}).

    Raises:
        FileNotFoundError: a referenced file does not exist.
        ValueError: an override lacks ``sp_model`` or ``kenlm``.
    """
    manifest: dict = {}
    langs: dict[str, tuple[str, str]] = {}
    clf = None
    if models_dir and os.path.exists(os.path.join(models_dir, MANIFEST)):
        manifest = load_manifest(models_dir)
        for lang, m in (manifest.get("languages") or {}).items():
            langs[lang] = (os.path.join(models_dir, m["sp_model"]), os.path.join(models_dir, m["kenlm"]))
        if manifest.get("classifier"):
            clf = os.path.join(models_dir, manifest["classifier"]["path"])
    for lang, m in (overrides or {}).items():
        if not m or "sp_model" not in m or "kenlm" not in m:
            raise ValueError(f"quality.models.{lang} needs both sp_model and kenlm paths, got {m}")
        langs[lang] = (os.path.abspath(m["sp_model"]), os.path.abspath(m["kenlm"]))
    if classifier:
        clf = os.path.abspath(classifier)
    for lang, (a, b) in langs.items():
        for p in (a, b):
            if not os.path.exists(p):
                raise FileNotFoundError(f"quality model for {lang} not found: {p}")
    if clf and not os.path.exists(clf):
        raise FileNotFoundError(f"quality classifier not found: {clf}")
    return langs, clf, manifest


def roc_auc(pos_scores, neg_scores) -> float:
    """ROC AUC (probability that a random positive outscores a random negative; ties 1/2),
    via the Mann-Whitney U statistic.

    Raises:
        ValueError: either list is empty.
    """
    from scipy.stats import rankdata

    pos = np.asarray(pos_scores, dtype=np.float64)
    neg = np.asarray(neg_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))
