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
   word bigrams (``wordNgrams=2``, PolyLM sec. 3.1) over the same pieces plus language-agnostic
   structure tokens (:func:`classifier_tokens`), trained with reference-tier text as positives
   and web text as negatives.

Models are loaded once per process (:func:`load_lm`, :func:`load_classifier` are cached by
path), so a Spark Python worker loads each file once.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
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
# Classifier input: at most this many tokens per document (its structure tokens, then the
# beginning of its pieces).
DEFAULT_CLASSIFIER_MAX_TOKENS = 4_096
# Version of the classifier's input features (:func:`classifier_tokens`); recorded in the
# model manifest so a classifier is never fed features it was not trained on.
CLASSIFIER_FEATURES = "sp-pieces+structure-v2"

# Sentence-final punctuation after :func:`filters.normalize.normalize` (CJK full stops and
# corner quotes are already ASCII there), plus the Arabic question mark, Devanagari danda and
# Urdu full stop that normalisation keeps.
_END_CHARS = ('.', '!', '?', '"', "'", ')', ']', '\u061f', '\u0964', '\u06d4')
# A sentence boundary inside a paragraph: terminal punctuation (optionally closed by a quote or
# bracket) followed by whitespace and more text, or directly by a non-ASCII character (Chinese
# and Japanese put no space after a full stop; "data.wien.gv.at" or "3.5" do not count).
_SENT_RE = re.compile(r"[.!?\u061f\u0964\u06d4]+[\"')\]]*(?:\s+(?=\S)|(?=[^\x00-\x7f\s]))")
_URL_RE = re.compile(r"https?:|www\.|[a-z0-9-]\.(?:com|net|org|info|html?|php|aspx?)\b|\S@\S")
# The same test as ``_URL_RE.search`` in pieces that start with a literal (which ``re`` scans
# for quickly) instead of one alternation tried at every position (:func:`has_url`).
_TLD_RE = re.compile(r"\.(?:com|net|org|info|html?|php|aspx?)\b")
_AT_RE = re.compile(r"\S@\S")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


# Tiers of the quality models' training data (pipeline/quality_models.py): positives and LM
# text, and negatives.
POSITIVE_TIERS = ("reference", "book")
NEGATIVE_TIERS = ("web",)


def split_key(doc_id: str, source: str, lang: str, meta: str | None) -> str:
    """The group key that decides a document's train / held-out split of the quality models
    (``pipeline/quality_models.py``): the source document the reader recorded in ``meta``
    (``doc_id`` for NTREX and its regional variants, ``doc_key`` for UD/PUD) so translations and
    near-duplicate variants never straddle the split; UDHR (text and HTML copies) per language;
    otherwise the document ``id``."""
    m = {}
    if meta:
        try:
            m = json.loads(meta)
        except (ValueError, TypeError):
            m = {}
    if isinstance(m, dict):
        if m.get("doc_id"):
            return f"doc:{m['doc_id']}"
        if m.get("doc_key"):
            return f"doc:{m['doc_key']}"
    if source and source.startswith("udhr"):
        return f"udhr:{lang}"
    return f"id:{doc_id}"


def is_heldout(key: str, fraction: float) -> bool:
    """True if ``key`` falls in the held-out fraction (sha1 of the key, deterministic)."""
    import hashlib

    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")
    return h / 2.0 ** 64 < fraction


# File (in the models directory) with the hashes of the documents the KenLMs were trained on
# (:func:`text_hash`, sorted uint64, numpy ``.npy``): the quality stage leaves them out of
# the run's ppl percentiles, their perplexity being memorised.
LM_TRAIN_HASHES = "quality-lm-train-hashes.npy"


def text_hash(lang: str, text: str) -> int:
    """64-bit hash of one document for LM-training membership: the first 8 bytes (big-endian,
    unsigned) of ``sha1(lang + "\n" + text)`` over the raw (not normalised) UTF-8 text."""
    import hashlib

    return int.from_bytes(hashlib.sha1(f"{lang}\n{text or ''}".encode("utf-8", "surrogatepass")).digest()[:8],
                          "big")


@functools.lru_cache(maxsize=8)
def load_text_hashes(path: str) -> np.ndarray:
    """Sorted uint64 array of :data:`LM_TRAIN_HASHES` (cached per process and path).

    Raises:
        FileNotFoundError: ``path`` missing.
    """
    a = np.load(path)
    if a.dtype != np.uint64 or a.ndim != 1:
        raise ValueError(f"{path}: expected a 1-d uint64 array, got {a.dtype} {a.shape}")
    return np.sort(a)


def hashes_contain(sorted_hashes: np.ndarray, hashes: list[int]) -> np.ndarray:
    """Boolean array: is each of ``hashes`` in ``sorted_hashes`` (sorted uint64)?"""
    q = np.asarray(hashes, dtype=np.uint64)
    if not sorted_hashes.size or not q.size:
        return np.zeros(q.size, dtype=bool)
    i = np.minimum(np.searchsorted(sorted_hashes, q), sorted_hashes.size - 1)
    return sorted_hashes[i] == q


@dataclass(frozen=True)
class PplResult:
    """Perplexity of one document.

    Attributes:
        ppl: ``10 ** (-log10_prob / n_tokens)`` (float, > 0) or ``None`` when ``n_tokens == 0``.
        log10_prob: sum of KenLM ``log10 p`` over all paragraphs (float, <= 0).
        n_tokens: SentencePiece pieces + one ``</s>`` per paragraph (int).
        n_paragraphs: paragraphs scored (int).
        features: the classifier's input tokens (list[str], :func:`classifier_tokens`):
            the document's structure tokens, then its pieces with a paragraph token after
            each paragraph. Join with :func:`classifier_line`.
    """

    ppl: float | None
    log10_prob: float
    n_tokens: int
    n_paragraphs: int
    features: list


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
    one token and look deceptively likely. (A piece that starts with the word-boundary mark
    ``\u2581`` keeps it as a token of its own before the characters.)

    Fast path (:meth:`encode_joined`): the paragraphs of a whole batch are encoded to ids in one
    call of SentencePiece's batch API (``num_threads`` threads in C++), and the KenLM input of a
    paragraph is built by one C-level ``" ".join`` over a piece table indexed by id. Only a
    paragraph with an unknown id (``unk_id``) is re-encoded to piece strings for the
    character split above; the result is the same token sequence as encoding every paragraph
    to pieces and checking each piece against the vocabulary.

    Args:
        sp_model: path of a SentencePiece ``.model``.
        num_threads: default SentencePiece threads per batch call (int >= 1; one Spark task per
            core wants 1).

    Raises:
        FileNotFoundError: ``sp_model`` missing. OSError: not a SentencePiece model.
    """

    def __init__(self, sp_model: str, num_threads: int = 1):
        import sentencepiece as spm

        if not os.path.exists(sp_model):
            raise FileNotFoundError(f"quality model file not found: {sp_model}")
        self.sp = spm.SentencePieceProcessor(model_file=sp_model)
        self.num_threads = max(1, int(num_threads))
        table = list(self.sp.id_to_piece(list(range(self.sp.get_piece_size()))))
        self.vocab = frozenset(table)
        self.unk_id = self.sp.unk_id()
        # id -> piece, with the unknown id mapped to "\n": paragraphs never contain a newline,
        # so "\n" in a joined paragraph marks an unknown piece exactly (checked here: no real
        # piece contains one; otherwise the ids are searched for unk_id instead)
        self._sentinel = not any("\n" in p for i, p in enumerate(table) if i != self.unk_id)
        if 0 <= self.unk_id < len(table):
            table[self.unk_id] = "\n"
        self._table = table

    def _fix(self, pieces: list[str]) -> list[str]:
        """Split the pieces outside the vocabulary into characters (class docstring)."""
        vocab = self.vocab
        if vocab.issuperset(pieces):
            return pieces
        fixed = []
        for p in pieces:
            if p in vocab:
                fixed.append(p)
            else:
                if p.startswith("\u2581") and len(p) > 1:
                    fixed.append("\u2581")
                    p = p[1:]
                fixed.extend(p)
        return fixed

    def iter_joined(self, paragraphs: list[str], num_threads: int | None = None):
        """KenLM input of each paragraph, in order: its pieces (unknown ones split into
        characters) joined by single spaces, and its piece count.

        All paragraphs are encoded to ids in one SentencePiece batch call; the strings are built
        one paragraph at a time as the caller consumes them (so a batch's strings need not all
        be held at once).

        Args:
            paragraphs: normalised, non-empty paragraphs without newlines (list[str]).
            num_threads: SentencePiece threads for this call (default: the constructor's).

        Yields:
            (joined: str, n_pieces: int) per paragraph; a paragraph without pieces gives ``""``, 0.
        """
        if not paragraphs:
            return
        ids_per_par = self.sp.encode(paragraphs, out_type=int,
                                     num_threads=int(num_threads or self.num_threads))
        get = self._table.__getitem__
        sentinel, unk = self._sentinel, self.unk_id
        for par, ids in zip(paragraphs, ids_per_par):
            s = " ".join(map(get, ids))
            if ("\n" in s) if sentinel else (unk in ids):  # rare: pieces outside the vocabulary
                pieces = self._fix(self.sp.encode(par, out_type=str))
                yield " ".join(pieces), len(pieces)
            else:
                yield s, len(ids)

    def encode_joined(self, paragraphs: list[str], num_threads: int | None = None) -> tuple[list[str], list[int]]:
        """:meth:`iter_joined` as two lists: (joined strings, piece counts), ``len(paragraphs)``
        long each."""
        joined: list[str] = []
        counts: list[int] = []
        for s_, c in self.iter_joined(paragraphs, num_threads):
            joined.append(s_)
            counts.append(c)
        return joined, counts

    def encode(self, paragraphs: list[str]) -> list[list[str]]:
        """Pieces (list of str) of each paragraph; unknown pieces split into characters."""
        joined, _ = self.encode_joined(paragraphs)
        return [s.split(" ") if s else [] for s in joined]


@dataclass
class BatchScores:
    """Scores of a list of documents of one language (:meth:`PerplexityModel.score_texts`).

    Attributes:
        ppl: list[float | None], CCNet perplexity per document (None: no tokens).
        log10_prob: list[float], sum of KenLM ``log10 p`` per document.
        n_tokens: list[int], pieces + one ``</s>`` per paragraph.
        n_paragraphs: list[int].
        lines: list[str], the classifier input line of each document
            (:func:`classifier_line` of :func:`classifier_tokens`, at most ``max_tokens`` tokens;
            ``""`` for a document without paragraphs).
    """

    ppl: list
    log10_prob: list
    n_tokens: list
    n_paragraphs: list
    lines: list


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
        mx = self.max_paragraph_chars
        for par in normalize(text).split("\n"):
            if par:
                if len(par) <= mx:
                    out.append(par)
                else:
                    out.extend(chunk_paragraph(par, mx))
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
        return PplResult(ppl_from_log10(lp, n), lp, n, len(pars), classifier_tokens(pars, toks))

    def score_texts(self, texts: list, max_tokens: int = DEFAULT_CLASSIFIER_MAX_TOKENS,
                    num_threads: int | None = None) -> BatchScores:
        """Perplexity and classifier line of many documents at once; the same figures as
        :meth:`perplexity` and ``classifier_line(features, max_tokens)`` per document.

        All paragraphs of ``texts`` go to SentencePiece in one batch call
        (:meth:`PieceTokenizer.iter_joined`, ``num_threads`` threads), KenLM scores each
        paragraph's joined pieces as one string (``<s>``/``</s>`` included), and the classifier
        line is assembled from those strings (:func:`classifier_line_joined`), with no loop over
        tokens in Python. Per-document log10 sums add the paragraphs in order, as
        :meth:`score_pieces` does, so ``ppl`` is bit-identical.

        Args:
            texts: raw documents (str or None).
            max_tokens: classifier tokens per line (:data:`DEFAULT_CLASSIFIER_MAX_TOKENS`).
            num_threads: SentencePiece threads (default: the tokenizer's).

        Returns:
            :class:`BatchScores` with lists of ``len(texts)``.
        """
        pars_per_doc = [self.paragraphs(t or "") for t in texts]
        it = self.tokenizer.iter_joined([p for ps in pars_per_doc for p in ps], num_threads)
        score = self.lm.score
        ppl, lp_out, ntok, npar, lines = [], [], [], [], []
        for pars in pars_per_doc:
            k = len(pars)
            joined: list[str] = []
            counts: list[int] = []
            lp = 0.0
            for _ in range(k):
                s_, c = next(it)
                lp += score(s_, bos=True, eos=True)
                joined.append(s_)
                counts.append(c)
            n = sum(counts) + k
            ppl.append(ppl_from_log10(lp, n))
            lp_out.append(lp)
            ntok.append(n)
            npar.append(k)
            lines.append(classifier_line_joined(pars, joined, counts, max_tokens))
        return BatchScores(ppl, lp_out, ntok, npar, lines)


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


def _bucket(x: float, edges: tuple) -> int:
    """Index of the first edge ``x`` is below (``len(edges)`` if none)."""
    for i, e in enumerate(edges):
        if x < e:
            return i
    return len(edges)


def has_url(paragraph: str) -> bool:
    """Whether ``_URL_RE`` matches somewhere in ``paragraph`` (a URL, ``www.``, a domain ending
    in a common TLD, or an e-mail-like ``x@y``); same answer, several times faster on text
    without URLs."""
    if "http:" in paragraph or "https:" in paragraph or "www." in paragraph:
        return True
    if "." in paragraph:
        for m in _TLD_RE.finditer(paragraph):
            if m.start() > 0 and paragraph[m.start() - 1] in _HOST_CHARS:
                return True
    return "@" in paragraph and _AT_RE.search(paragraph) is not None


def sentence_count(paragraph: str) -> int:
    """Sentences in one normalised paragraph: 1 + the sentence boundaries inside it (terminal
    punctuation followed by more text, see ``_SENT_RE``). A heuristic, never 0."""
    return 1 + len(_SENT_RE.findall(paragraph))


def paragraph_token(paragraph: str) -> str:
    """The token that closes a paragraph in the classifier input: ``__p{L}{E}{S}__`` with
    ``L`` the length bucket (characters < 10, 30, 80, 200, longer: 0-4), ``E`` ``e`` if the
    paragraph ends with sentence-final punctuation else ``n``, ``S`` its sentence count
    (1, 2, 3 = three or more). Its bigrams with the paragraph's last piece show line structure
    (menus, one-word lines, lists) to the classifier. Language-agnostic."""
    return (f"__p{_bucket(len(paragraph), (10, 30, 80, 200))}"
            f"{'e' if paragraph.endswith(_END_CHARS) else 'n'}{min(sentence_count(paragraph), 3)}__")


def structure_tokens(paragraphs: list[str]) -> list[str]:
    """Language-agnostic document-level structure tokens (bucketed statistics) for the classifier.

    The same function is used to train and to score. Statistics over the normalised,
    non-empty paragraphs (digits are already ``0``):

    ``__s_npar{i}__`` paragraph count (< 2, 4, 8, 16, 32, 64, more);
    ``__s_short{i}__`` share of paragraphs under 30 characters (< .05, .15, .3, .5, .7, more);
    ``__s_endp{i}__`` share ending with sentence-final punctuation (< .3, .5, .7, .85, .95, more);
    ``__s_dig{i}__`` digit share of characters (< .005, .01, .02, .05, .1, more);
    ``__s_url{i}__`` paragraphs with a URL / e-mail / domain (0, 1, 2-4, 5+);
    ``__s_pipe{i}__`` ``|`` characters (0, 1-2, 3-9, 10+);
    ``__s_multi{i}__`` share of paragraphs with more than one sentence (< .05, .2, .4, .6, .8, more);
    ``__s_sps{i}__`` mean sentences per paragraph (< 1.05, 1.3, 1.7, 2.5, 4, more);
    ``__s_medlen{i}__`` median paragraph length in characters (< 10, 20, 40, 80, 160, 320, more).

    The bucket edges are round numbers set a priori (not fitted). Why: web negatives are a
    few documents in most languages and the pieces of one language's SentencePiece model are
    not shared with the others, so what a multilingual classifier can carry from the languages
    with many web documents (en, de) to those with one or two (ru, it, nl) is mostly this:
    menus and lists of short lines, missing final punctuation, digits, URLs, and paragraphs of
    several sentences (the reference sources, NTREX / UD / Leipzig, are one sentence per line).

    Args:
        paragraphs: normalised non-empty paragraphs (:meth:`PerplexityModel.paragraphs`).

    Returns:
        9 tokens (list[str]); ``[]`` for no paragraphs.
    """
    return _structure(paragraphs, [sentence_count(p) for p in paragraphs],
                      [p.endswith(_END_CHARS) for p in paragraphs])


def _structure(paragraphs: list[str], sents: list[int], ends: list[bool]) -> list[str]:
    """:func:`structure_tokens` from precomputed sentence counts and final-punctuation flags."""
    n = len(paragraphs)
    if not n:
        return []
    lens = [len(p) for p in paragraphs]
    chars = sum(lens) or 1
    srt = sorted(lens)
    med = srt[n // 2] if n % 2 else (srt[n // 2 - 1] + srt[n // 2]) / 2.0
    return [
        f"__s_npar{_bucket(n, (2, 4, 8, 16, 32, 64))}__",
        f"__s_short{_bucket(sum(1 for x in lens if x < 30) / n, (0.05, 0.15, 0.3, 0.5, 0.7))}__",
        f"__s_endp{_bucket(sum(ends) / n, (0.3, 0.5, 0.7, 0.85, 0.95))}__",
        f"__s_dig{_bucket(sum(p.count('0') for p in paragraphs) / chars, (0.005, 0.01, 0.02, 0.05, 0.1))}__",
        f"__s_url{_bucket(sum(1 for p in paragraphs if has_url(p)), (1, 2, 5))}__",
        f"__s_pipe{_bucket(sum(p.count('|') for p in paragraphs), (1, 3, 10))}__",
        f"__s_multi{_bucket(sum(1 for x in sents if x > 1) / n, (0.05, 0.2, 0.4, 0.6, 0.8))}__",
        f"__s_sps{_bucket(sum(sents) / n, (1.05, 1.3, 1.7, 2.5, 4))}__",
        f"__s_medlen{_bucket(med, (10, 20, 40, 80, 160, 320))}__",
    ]


def classifier_tokens(paragraphs: list[str], pieces_per_par: list[list[str]]) -> list[str]:
    """The classifier's input tokens for one document (features version
    :data:`CLASSIFIER_FEATURES`): :func:`structure_tokens` of its paragraphs, then each
    paragraph's SentencePiece pieces followed by its :func:`paragraph_token`.

    Args:
        paragraphs: normalised paragraphs; pieces_per_par: their pieces (same length).
    """
    sents = [sentence_count(p) for p in paragraphs]
    ends = [p.endswith(_END_CHARS) for p in paragraphs]
    out = _structure(paragraphs, sents, ends)
    for par, pieces, ns, e in zip(paragraphs, pieces_per_par, sents, ends):
        out.extend(pieces)
        # == paragraph_token(par), without recounting
        out.append(f"__p{_bucket(len(par), (10, 30, 80, 200))}{'e' if e else 'n'}{min(ns, 3)}__")
    return out


def classifier_line(pieces: list[str], max_tokens: int = DEFAULT_CLASSIFIER_MAX_TOKENS) -> str:
    """The classifier's input line for one document: its first ``max_tokens`` tokens
    (:func:`classifier_tokens`, structure tokens first) joined by spaces."""
    return " ".join(pieces[:max_tokens])


def classifier_line_joined(paragraphs: list[str], joined: list[str], n_pieces: list[int],
                           max_tokens: int = DEFAULT_CLASSIFIER_MAX_TOKENS) -> str:
    """``classifier_line(classifier_tokens(paragraphs, pieces), max_tokens)`` from each
    paragraph's pieces already joined by spaces (:meth:`PieceTokenizer.encode_joined`):
    the joined strings are concatenated whole, and only the paragraph where ``max_tokens`` is
    reached is split (pieces never contain a space). Same string, no loop over tokens.

    Args:
        paragraphs: normalised paragraphs; joined: their pieces joined by ``" "``;
        n_pieces: their piece counts (same length); max_tokens: cap on tokens (int >= 0).
    """
    sents = [sentence_count(p) for p in paragraphs]
    ends = [p.endswith(_END_CHARS) for p in paragraphs]
    parts = _structure(paragraphs, sents, ends)[:max_tokens]
    left = max_tokens - len(parts)
    for par, s, c, ns, e in zip(paragraphs, joined, n_pieces, sents, ends):
        if left <= 0:
            break
        if c:
            if c <= left:
                parts.append(s)
                left -= c
            else:
                parts.append(" ".join(s.split(" ", left)[:left]))
                break
        if left <= 0:
            break
        parts.append(f"__p{_bucket(len(par), (10, 30, 80, 200))}{'e' if e else 'n'}{min(ns, 3)}__")
        left -= 1
    return " ".join(parts)


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
    """Read ``<models_dir>/manifest.json`` written by ``pipeline/quality_models.py``.

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
