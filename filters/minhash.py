"""MinHash signatures and LSH banding for near-duplicate detection (pure Python + numpy).

The method is the one PolyLM used for fuzzy deduplication (Wei et al. 2023, arXiv 2307.06018,
sec. 2.1: "MinHashLSH"), in the formulation of Broder (1997) and Leskovec, Rajaraman & Ullman,
*Mining of Massive Datasets*, ch. 3:

1. **Shingling.** A document becomes the set of its n-grams ("shingles"). Text is normalised
   (NFKC, lowercase, unicode punctuation -> space, whitespace collapsed). Text written mostly in
   a script without spaces between words (Han, Hiragana/Katakana, Thai, Lao, Khmer, Myanmar) is
   shingled into character n-grams (``char_ngram``, whitespace removed); everything else into
   word n-grams (``ngram``) over :func:`filters.words.words` tokens, a shingle being its tokens
   joined by one space. The choice is made from the text's script, not from its language label,
   so the same text under two labels gives the same shingles (needed for cross-language
   matching). A document with fewer units than ``n`` still has one shingle: its whole unit
   sequence (it is compared, never dropped); a document without any unit has no shingle.
2. **Hashing.** Every shingle's UTF-8 bytes are hashed to an integer: ``poly64`` (default; a
   64-bit polynomial hash with a murmur3 ``fmix64`` finaliser, vectorised in numpy over a whole
   batch), or datasketch's ``sha1_32`` / ``sha1_64`` (``datasketch.hashfunc.sha1_hash32/64``).
3. **Permutations.** ``num_perm`` universal hash functions ``h_i(x) = ((a_i*x + b_i) mod 2**64
   mod (2**61 - 1)) & (2**32 - 1)`` with ``(a_i, b_i)`` drawn exactly as ``datasketch.MinHash``
   draws them from ``numpy.random.RandomState(seed)``; the signature is the per-permutation
   minimum over the document's shingles (``2**32 - 1`` for a document without shingles, like
   datasketch's empty MinHash). With the same seed and hash function the signatures are equal
   to ``datasketch.MinHash`` 1.6.5's, value for value (tested in ``tests/test_minhash.py``).
4. **Banding.** The first ``bands * rows`` values are cut into ``bands`` bands of ``rows``
   values; two documents are candidates when any band is equal. ``(bands, rows)`` come from
   :func:`recall_param` (the pipeline's default: every candidate pair is verified by its exact
   Jaccard, so false candidates cost only time and the banding is chosen for recall at the
   threshold) or :func:`optimal_param`, datasketch's ``_optimal_param`` (minimise the weighted
   integral of the false-positive and false-negative probability of the S-curve
   ``1 - (1 - s**r)**b``; with no verification behind it, it trades recall for precision).

Everything here is plain numpy; :mod:`pipeline.dedup` maps :class:`MinHasher` over Arrow batches.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
import unicodedata
from dataclasses import dataclass, field, asdict
from typing import Iterable, Sequence

import numpy as np

#: Modulus of the permutation family, a Mersenne prime (datasketch ``_mersenne_prime``).
MERSENNE_PRIME = (1 << 61) - 1
#: Permuted values are masked to 32 bits (datasketch ``_max_hash``).
MAX_HASH = (1 << 32) - 1
HASH_FUNCS = ("poly64", "sha1_32", "sha1_64")

_P = np.uint64(MERSENNE_PRIME)
_M = np.uint64(MAX_HASH)
_S61 = np.uint64(61)

# poly64 constants: base K (odd, so invertible mod 2**64), length salt, murmur3 fmix64 constants.
_K = 0x100000001B3 * 2 + 1          # odd 64-bit multiplier derived from the FNV-1 64-bit prime
_K_INV = pow(_K, -1, 1 << 64)
_LEN_SALT = 0x9E3779B97F4A7C15      # 2**64 / golden ratio
_FMIX1 = 0xFF51AFD7ED558CCD
_FMIX2 = 0xC4CEB9FE1A85EC53
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class MinHashConfig:
    """Parameters of shingling, hashing and MinHash.

    Attributes:
        num_perm: number of permutations = signature length (datasketch ``num_perm``; 128 as in
            datasketch's default).
        seed: seed of ``numpy.random.RandomState`` for the permutation coefficients
            (datasketch's default seed is 1).
        ngram: word n-gram size for space-delimited scripts (5, as in the PolyLM-era practice
            of Gopher/RefinedWeb: MassiveText used 13-grams, RefinedWeb 5-grams).
        char_ngram: character n-gram size for scripts without spaces (zh, ja, th...).
        hash: ``poly64`` (fast, vectorised), ``sha1_32`` or ``sha1_64`` (datasketch's).
        lowercase: lowercase before shingling.
        char_script_ratio: a text whose letters are at least this fraction Han/Kana/Thai/Lao/
            Khmer/Myanmar is shingled into character n-grams.

    Raises:
        ValueError: on an unknown hash name or non-positive sizes.
    """

    num_perm: int = 128
    seed: int = 1
    ngram: int = 5
    char_ngram: int = 5
    hash: str = "poly64"
    lowercase: bool = True
    char_script_ratio: float = 0.5

    def __post_init__(self):
        if self.hash not in HASH_FUNCS:
            raise ValueError(f"hash must be one of {HASH_FUNCS}, got {self.hash!r}")
        for k in ("num_perm", "ngram", "char_ngram"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)!r}")
        if self.num_perm < 2:
            raise ValueError("num_perm must be >= 2")

    @classmethod
    def from_dict(cls, d: dict | None) -> "MinHashConfig":
        """Build from a config section, ignoring keys that are not fields."""
        d = dict(d or {})
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- normalisation
# Scripts written without spaces between words (the same ranges as filters/words.py).
_SPACELESS_RUN = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]+")


def normalize_text(text: str | None, cfg: MinHashConfig = MinHashConfig()) -> str:
    """NFKC and (``cfg.lowercase``) lowercase; punctuation is dropped later by the tokenizer.

    Args:
        text: a document (``None`` counts as ``""``).
    """
    if not text:
        return ""
    s = unicodedata.normalize("NFKC", text)
    return s.lower() if cfg.lowercase else s


def is_spaceless(norm: str, ratio: float = 0.5, sample: int = 4000) -> bool:
    """True if at least ``ratio`` of the non-space characters of (the first ``sample``
    characters of) ``norm`` belong to scripts written without spaces (Han, Kana, Thai, Lao,
    Khmer, Myanmar)."""
    head = norm[:sample]
    n = len(head) - head.count(" ") - head.count("\n")
    if n <= 0:
        return False
    k = len(head) - len(_SPACELESS_RUN.sub("", head))
    return k >= ratio * n


def shingle_units(text: str | None, lang: str | None = None,
                  cfg: MinHashConfig = MinHashConfig()) -> tuple[str, list[str]]:
    """The units a document is shingled over, from :func:`filters.words.words`.

    The text is normalised (:func:`normalize_text`) and tokenised. Mostly-spaceless text
    (:func:`is_spaceless`) is tokenised with the language-independent splitter
    (``words(text, None)``), which makes every Han/Kana/Thai/... character (with its combining
    marks) a unit of its own and keeps embedded Latin words/numbers whole: the shingles are then
    character n-grams. Other text is tokenised with ``words(text, lang)`` (word n-grams). Pass
    ``lang=None`` for label-independent shingles (cross-language matching).

    Returns:
        ``("char", units)`` or ``("word", units)``; ``units`` may be empty; no unit contains
        whitespace.
    """
    from filters.words import words

    norm = normalize_text(text, cfg)
    if not norm:
        return "word", []
    if is_spaceless(norm, cfg.char_script_ratio):
        mode, toks = "char", words(norm, None)
    else:
        mode, toks = "word", words(norm, None if lang in _SEGMENTED else lang)
    return mode, toks


# zh/ja/th text that is not mostly spaceless (e.g. mislabelled) is split by the generic regex.
_SEGMENTED = ("zh", "ja", "th")


def shingles(text: str | None, lang: str | None = None,
             cfg: MinHashConfig = MinHashConfig()) -> list[bytes]:
    """The shingles of one document as UTF-8 byte strings (reference implementation; the
    batch path in :meth:`MinHasher.shingle_hashes` hashes exactly these bytes).

    A shingle is ``" ".join(units[i:i+n])`` with ``n = char_ngram`` for spaceless text and
    ``n = ngram`` otherwise; a document with fewer units than n gives one shingle of all its
    units; a document without units gives ``[]``.
    """
    mode, units = shingle_units(text, lang, cfg)
    if not units:
        return []
    n = cfg.char_ngram if mode == "char" else cfg.ngram
    if len(units) <= n:
        return [" ".join(units).encode("utf-8")]
    return [" ".join(units[i:i + n]).encode("utf-8") for i in range(len(units) - n + 1)]


# --------------------------------------------------------------------------- hash functions
def poly64(data: bytes) -> int:
    """Scalar ``poly64`` hash of a byte string (reference for the vectorised version).

    ``h = sum((c_t + 1) * K**(L-1-t)) mod 2**64`` over the bytes ``c_t`` (Horner), xor
    ``L * 0x9E3779B97F4A7C15``, then murmur3's ``fmix64``. Returns an int in ``[0, 2**64)``.
    """
    h = 0
    for c in data:
        h = (h * _K + c + 1) & _MASK64
    h ^= (len(data) * _LEN_SALT) & _MASK64
    return _fmix64_int(h)


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _FMIX1) & _MASK64
    h ^= h >> 33
    h = (h * _FMIX2) & _MASK64
    h ^= h >> 33
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    s = np.uint64(33)
    h ^= h >> s
    h *= np.uint64(_FMIX1)
    h ^= h >> s
    h *= np.uint64(_FMIX2)
    h ^= h >> s
    return h


def sha1_hash32(data: bytes) -> int:
    """datasketch's default hash: the first 4 bytes of SHA-1, little-endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def sha1_hash64(data: bytes) -> int:
    """datasketch's ``sha1_hash64``: the first 8 bytes of SHA-1, little-endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "little")


SCALAR_HASHES = {"poly64": poly64, "sha1_32": sha1_hash32, "sha1_64": sha1_hash64}


class _PowTable:
    """Growing tables of ``K**t`` and ``K**-t`` mod 2**64 (uint64), per process."""

    def __init__(self):
        self.kp = np.ones(1, np.uint64)
        self.ki = np.ones(1, np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.kp) < n:
            m = max(n, 2 * len(self.kp), _CHUNK_BYTES + 1)
            kp = np.full(m, _K, np.uint64)
            kp[0] = 1
            ki = np.full(m, _K_INV, np.uint64)
            ki[0] = 1
            with np.errstate(over="ignore"):
                self.kp = np.cumprod(kp, dtype=np.uint64)
                self.ki = np.cumprod(ki, dtype=np.uint64)
        return self.kp, self.ki


_POW = _PowTable()
_CHUNK_BYTES = 1 << 20   # text bytes hashed per vectorised pass


def _poly64_spans(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Vectorised :func:`poly64` of the byte spans ``buf[starts[i]:ends[i]]`` (all non-empty).

    Uses prefix sums ``Q[j] = sum_{t<j} (c_t + 1) * K**-t`` so that the Horner hash of a span is
    ``K**(e-1) * (Q[e] - Q[s])`` (all mod 2**64, which is how uint64 numpy arithmetic wraps).
    """
    L = len(buf)
    kp, ki = _POW.get(L + 1)
    q = np.empty(L + 1, np.uint64)
    q[0] = 0
    with np.errstate(over="ignore"):
        np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * ki[:L], out=q[1:])
        h = kp[ends - 1] * (q[ends] - q[starts])
        h ^= (ends - starts).astype(np.uint64) * np.uint64(_LEN_SALT)
        return _fmix64(h)


# --------------------------------------------------------------------------- permutations
@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` coefficients of ``num_perm`` permutations, exactly as
    ``datasketch.MinHash._init_permutations`` draws them.

    Returns:
        ``(a, b)``: two read-only uint64 arrays of shape ``(num_perm,)``; ``a`` in
        ``[1, 2**61 - 1)``, ``b`` in ``[0, 2**61 - 1)``.
    """
    gen = np.random.RandomState(seed)
    ab = np.array([(gen.randint(1, _P, dtype=np.uint64), gen.randint(0, _P, dtype=np.uint64))
                   for _ in range(num_perm)], dtype=np.uint64).T
    a, b = np.ascontiguousarray(ab[0]), np.ascontiguousarray(ab[1])
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _permute_min_chunk(h: np.ndarray, a: np.ndarray, b: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Per-segment minimum of the permuted hashes.

    Args:
        h: uint64 shingle hashes, shape (m,).
        a, b: permutation coefficients, shape (P,).
        seg: start index of every segment in ``h`` (sorted, first 0, all segments non-empty).

    Returns:
        uint64 array (len(seg), P) with values in ``[0, 2**32)``.
    """
    m = len(h)
    x, hi, bb = _workspace(a, b, m)
    with np.errstate(over="ignore"):
        np.multiply.outer(a, h, out=x)       # (P, m), wraps mod 2**64 like datasketch
        x += bb                              # b repeated along the row: no broadcasting (2x faster)
        np.right_shift(x, _S61, out=hi)
        x &= _P
        x += hi                              # x mod p, up to one subtraction of p
        if x.max() >= _P:                    # rare (~8 / 2**61 per value): finish the reduction
            np.add(x, np.uint64(1), out=hi)
            hi >>= _S61
            x += hi
        x &= _M
    return np.minimum.reduceat(x, seg, axis=1).T


_WS: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _workspace(a: np.ndarray, b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two reusable (p, m) uint64 scratch arrays (avoids allocating and page-faulting
    megabytes per chunk) and ``b`` repeated into a (p, m) array."""
    key = (len(a), m, b.tobytes())
    ws = _WS.get(key)
    if ws is None:
        if len(_WS) > 8:
            _WS.clear()
        p = len(a)
        ws = _WS[key] = (np.empty((p, m), np.uint64), np.empty((p, m), np.uint64),
                         np.repeat(b[:, None], m, axis=1))
    return ws


@functools.lru_cache(maxsize=1)
def _numba_kernel():
    """The compiled permute-and-min loop, or None when numba is not installed or
    ``POLY_MINHASH_BACKEND=numpy`` is set (then :func:`minhash_signatures` uses numpy).

    One fused pass per (shingle, permutation) instead of numpy's eight passes over a
    (num_perm, chunk) array: ~3x faster on one core, identical values. Compiled on first use
    in each process (~1 s; not cached on disk, so it also works from a ``--py-files`` zip).
    """
    import os

    if os.environ.get("POLY_MINHASH_BACKEND", "").lower() == "numpy":
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a pinned dependency
        return None
    p_, m_, s_ = _P, _M, _S61

    @numba.njit(nogil=True, cache=False)
    def kernel(hashes, offsets, a, b, out):  # pragma: no cover - compiled, tested via equality
        n_perm = a.shape[0]
        for d in range(offsets.shape[0] - 1):
            row = out[d]
            for i in range(offsets[d], offsets[d + 1]):
                h = hashes[i]
                for k in range(n_perm):
                    x = a[k] * h + b[k]           # wraps mod 2**64 like datasketch
                    x = (x & p_) + (x >> s_)      # mod 2**61 - 1 ...
                    if x >= p_:                   # ... up to one subtraction
                        x -= p_
                    v = x & m_
                    if v < row[k]:
                        row[k] = v

    return kernel


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1,
                       chunk: int = 1024, backend: str = "auto") -> np.ndarray:
    """MinHash signatures of many documents from their concatenated shingle hashes.

    Args:
        hashes: uint64 (or smaller unsigned) shingle hashes of all documents, concatenated.
        offsets: int64 array of shape (n_docs + 1,): document ``d`` owns
            ``hashes[offsets[d]:offsets[d+1]]``.
        num_perm, seed: as in :class:`MinHashConfig`.
        chunk: shingles processed per numpy pass (bounds the (chunk, num_perm) temporaries;
            the numpy path only: with numba, see :func:`_numba_kernel`, there are none).
        backend: ``auto`` (numba when available), ``numba`` or ``numpy``; all give the same
            values.

    Returns:
        uint32 array (n_docs, num_perm); ``2**32 - 1`` everywhere for a document without
        shingles. Equal to ``datasketch.MinHash(num_perm, seed).update_batch(...)``'s
        ``hashvalues`` for the same hash values.

    Raises:
        ValueError: unknown ``backend``, or ``numba`` asked for and not available.
    """
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be auto, numba or numpy, not {backend!r}")
    a, b = permutations(int(num_perm), int(seed))
    hashes = np.asarray(hashes, dtype=np.uint64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n_docs = len(offsets) - 1
    out = np.full((n_docs, num_perm), MAX_HASH, dtype=np.uint64)
    total = int(offsets[-1]) if n_docs else 0
    if total == 0:
        return out.astype(np.uint32)
    kernel = None if backend == "numpy" else _numba_kernel()
    if backend == "numba" and kernel is None:
        raise ValueError("backend='numba' but numba is not available (or POLY_MINHASH_BACKEND=numpy)")
    if kernel is not None:
        kernel(hashes, offsets, a, b, out)
        return out.astype(np.uint32)
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    starts = offsets[nonempty]
    ends = offsets[nonempty + 1]
    c0 = 0
    while c0 < total:
        c1 = min(c0 + chunk, total)
        # documents intersecting [c0, c1): non-empty docs with start < c1 and end > c0
        lo = int(np.searchsorted(ends, c0, side="right"))
        hi = int(np.searchsorted(starts, c1, side="left"))
        docs = nonempty[lo:hi]
        seg = np.maximum(starts[lo:hi], c0) - c0
        mins = _permute_min_chunk(hashes[c0:c1], a, b, seg)
        np.minimum(out[docs], mins, out=mins)
        out[docs] = mins
        c0 = c1
    return out.astype(np.uint32)


# --------------------------------------------------------------------------- LSH parameters
def _fp_probability(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _fn_probability(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@functools.lru_cache(maxsize=64)
def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` minimising ``fp_w * FP + fn_w * FN``, where FP is the integral of the
    candidate probability ``1 - (1 - s**r)**b`` over ``s in [0, threshold]`` and FN the integral
    of its complement over ``[threshold, 1]``; ``b * r <= num_perm``. Same search, same
    integrator (``scipy.integrate.quad``) and same tie-breaking as datasketch's
    ``lsh._optimal_param`` (so the same parameters as ``MinHashLSH(threshold, num_perm)``).

    Raises:
        ValueError: threshold outside [0, 1], num_perm < 2, weights not summing to 1.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError("num_perm must be >= 2")
    if abs(false_positive_weight + false_negative_weight - 1.0) > 1e-9:
        raise ValueError("false_positive_weight + false_negative_weight must be 1")
    min_error = float("inf")
    opt = (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, int(num_perm / b) + 1):
            err = (_fp_probability(threshold, b, r) * false_positive_weight
                   + _fn_probability(threshold, b, r) * false_negative_weight)
            if err < min_error:
                min_error = err
                opt = (b, r)
    return opt


@functools.lru_cache(maxsize=64)
def recall_param(threshold: float, num_perm: int, min_recall: float = 0.95) -> tuple[int, int]:
    """``(bands, rows)`` for LSH whose candidates are verified afterwards: the candidate
    probability at the threshold, ``1 - (1 - threshold**r)**b`` (the S-curve, MMDS sec. 3.4.2),
    is at least ``min_recall``, and among those the expected share of candidate pairs below
    the threshold (the integral of the S-curve over ``[0, threshold]``, i.e. the verification
    cost) is smallest; ties go to fewer bands. ``b * r <= num_perm``.

    With ``threshold=0.8, num_perm=128, min_recall=0.95`` this is 13 bands x 7 rows (candidate
    probability 0.953 at Jaccard 0.8, 0.31 at 0.6); datasketch's :func:`optimal_param` gives
    9 x 13 (0.40 at 0.8).

    Raises:
        ValueError: threshold outside (0, 1], num_perm < 2, min_recall outside (0, 1), or no
            ``(b, r)`` with ``b * r <= num_perm`` reaches ``min_recall`` (raise ``num_perm``).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError("num_perm must be >= 2")
    if not 0.0 < min_recall < 1.0:
        raise ValueError(f"min_recall must be in (0, 1), got {min_recall}")
    best, opt = float("inf"), None
    for r in range(1, num_perm + 1):
        p_band = threshold ** r
        if p_band <= 0.0:
            break
        # smallest b with 1 - (1 - p_band)**b >= min_recall
        b = 1 if p_band >= 1.0 else math.ceil(math.log1p(-min_recall) / math.log1p(-p_band) - 1e-12)
        if b * r > num_perm:
            continue
        while b > 1 and 1.0 - (1.0 - p_band) ** (b - 1) >= min_recall:  # guard the float ceil
            b -= 1
        cost = _fp_probability(threshold, b, r)
        if cost < best - 1e-12:
            best, opt = cost, (b, r)
    if opt is None:
        raise ValueError(f"no LSH banding with bands*rows <= num_perm={num_perm} reaches candidate "
                         f"probability {min_recall} at Jaccard {threshold}: raise num_perm")
    return opt


#: Jaccard similarities at which :func:`s_curve` reports the candidate probability.
S_CURVE_POINTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


def s_curve(bands: int, rows: int, threshold: float | None = None,
            points: Sequence[float] = S_CURVE_POINTS) -> dict[str, float]:
    """The LSH S-curve as ``{"0.50": p, ...}``: candidate probability (:func:`candidate_probability`)
    at each Jaccard similarity in ``points`` (plus ``threshold``), rounded to 4 digits."""
    pts = sorted(set(float(x) for x in points) | ({float(threshold)} if threshold is not None else set()))
    return {f"{x:.2f}": round(float(candidate_probability(x, bands, rows)), 4) for x in pts}


def candidate_probability(s: float | np.ndarray, bands: int, rows: int):
    """Probability that two sets of Jaccard similarity ``s`` share at least one band:
    ``1 - (1 - s**rows)**bands`` (the LSH S-curve, MMDS sec. 3.4.2)."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> list[list[bytes]]:
    """Band keys of every signature: ``bands`` byte strings of ``rows`` big-endian uint32 each.

    Two signatures share a bucket in band ``i`` iff their key ``i`` is equal; this is the same
    equality as datasketch's ``MinHashLSH`` keys (``hashvalues[i*r:(i+1)*r]`` byteswapped).

    Args:
        signatures: (n, num_perm) unsigned integer array with values < 2**32.

    Raises:
        ValueError: ``bands * rows`` exceeds the signature length.
    """
    sig = np.asarray(signatures)
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    raw = np.ascontiguousarray(sig[:, :bands * rows].astype(">u4"))
    width = rows * 4
    out = []
    for row in raw:
        bts = row.tobytes()
        out.append([bts[i * width:(i + 1) * width] for i in range(bands)])
    return out


# --------------------------------------------------------------------------- batch API
class MinHasher:
    """Shingles, hashes and signs batches of documents.

    Args:
        cfg: a :class:`MinHashConfig`.

    Example:
        >>> mh = MinHasher(MinHashConfig(num_perm=128))
        >>> hashes, offsets = mh.shingle_hashes(["a b c d e f", "a b c d e g"], ["en", "en"])
        >>> sig = mh.signatures(hashes, offsets)          # (2, 128) uint32
    """

    def __init__(self, cfg: MinHashConfig = MinHashConfig()):
        self.cfg = cfg

    # -- shingles -> hashes
    def shingle_hashes(self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every document's shingles.

        Args:
            texts: documents (``None`` = empty).
            langs: ISO 639-1 codes passed to the word tokenizer (or None).

        Returns:
            ``(hashes, offsets)``: uint64 array of all shingle hashes (document order, shingle
            order within a document, duplicates kept) and int64 offsets of shape (n + 1,).
        """
        n = len(texts)
        langs = list(langs) if langs is not None else [None] * n
        if len(langs) != n:
            raise ValueError(f"{n} texts but {len(langs)} langs")
        cfg = self.cfg
        if cfg.hash != "poly64":
            fn = SCALAR_HASHES[cfg.hash]
            per_doc = [np.fromiter((fn(s) for s in shingles(t, l, cfg)), dtype=np.uint64)
                       for t, l in zip(texts, langs)]
            offsets = np.zeros(n + 1, np.int64)
            offsets[1:] = np.cumsum([len(x) for x in per_doc])
            return (np.concatenate(per_doc) if n else np.zeros(0, np.uint64)), offsets
        return self.hashes_from_units([shingle_units(t, l, cfg) for t, l in zip(texts, langs)])

    def hashes_from_units(self, units: Sequence[tuple[str, list[str]]]) -> tuple[np.ndarray, np.ndarray]:
        """poly64 hashes of the shingles of already tokenised documents.

        Args:
            units: per document, :func:`shingle_units`'s ``(mode, units)``.

        Returns:
            ``(hashes, offsets)`` as :meth:`shingle_hashes`.

        Raises:
            ValueError: the config's hash is not ``poly64`` (the scalar hashes work on
                shingle strings: use :meth:`shingle_hashes`).
        """
        cfg = self.cfg
        if cfg.hash != "poly64":
            raise ValueError(f"hashes_from_units needs hash=poly64, not {cfg.hash}")
        n = len(units)
        word_docs, word_bufs, char_docs, char_bufs = [], [], [], []
        for d, (mode, units_d) in enumerate(units):
            if not units_d:
                continue
            if mode == "char":
                char_docs.append(d)
                char_bufs.append(" ".join(units_d).encode("utf-8"))
            else:
                word_docs.append(d)
                word_bufs.append(" ".join(units_d).encode("utf-8"))
        counts = np.zeros(n, np.int64)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for docs, bufs, ngram in ((word_docs, word_bufs, cfg.ngram),
                                  (char_docs, char_bufs, cfg.char_ngram)):
            # bounded chunks of text keep the K**t tables and temporaries small
            i = 0
            while i < len(docs):
                j, size = i, 0
                while j < len(docs) and (j == i or size + len(bufs[j]) <= _CHUNK_BYTES):
                    size += len(bufs[j])
                    j += 1
                h, c = _hash_group(bufs[i:j], ngram)
                counts[docs[i:j]] = c
                parts.append((np.asarray(docs[i:j]), c, h))
                i = j
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        hashes = np.empty(int(offsets[-1]), np.uint64)
        for docs, c, h in parts:
            # scatter each group's contiguous per-doc runs into document order
            src = np.concatenate([[0], np.cumsum(c)])
            dst_start = offsets[docs]
            idx = np.repeat(dst_start - src[:-1], c) + np.arange(len(h))
            hashes[idx] = h
        return hashes, offsets

    # -- hashes -> signatures
    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """uint32 signatures (n_docs, num_perm); see :func:`minhash_signatures`."""
        return minhash_signatures(hashes, offsets, self.cfg.num_perm, self.cfg.seed)

    def sign(self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
             ) -> np.ndarray:
        """Shingle, hash and sign ``texts``: uint32 array (n, num_perm)."""
        h, o = self.shingle_hashes(texts, langs)
        return self.signatures(h, o)


def _hash_group(bufs: list[bytes], n: int) -> tuple[np.ndarray, np.ndarray]:
    """poly64 hashes of the n-gram shingles of documents given as their units joined by one
    space (UTF-8; no unit contains a space, so the spaces are exactly the unit boundaries).

    Returns:
        (hashes uint64 concatenated per document, shingle counts int64 per document).
    """
    lens = np.fromiter((len(b) for b in bufs), dtype=np.int64, count=len(bufs))
    doc_off = np.zeros(len(bufs) + 1, np.int64)
    np.cumsum(lens, out=doc_off[1:])
    buf = np.frombuffer(b"".join(bufs), dtype=np.uint8)
    sp = np.flatnonzero(buf == 0x20)
    ustart = np.sort(np.concatenate([doc_off[:-1], sp + 1]))
    uend = np.sort(np.concatenate([sp, doc_off[1:]]))
    # units per document
    udoc_off = np.searchsorted(ustart, doc_off)               # first unit index of every doc
    ucount = np.diff(udoc_off)
    scount = np.where(ucount >= n, ucount - n + 1, np.minimum(ucount, 1))
    total = int(scount.sum())
    sdoc = np.repeat(np.arange(len(bufs)), scount)
    first = np.zeros(len(bufs) + 1, np.int64)
    np.cumsum(scount, out=first[1:])
    i = np.arange(total, dtype=np.int64) - first[sdoc]
    u0 = udoc_off[sdoc] + i
    u1 = udoc_off[sdoc] + np.minimum(i + n - 1, ucount[sdoc] - 1)
    h = _poly64_spans(buf, ustart[u0], uend[u1])
    return h, scount


def unique_sorted(hashes: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Per-document sorted unique shingle hashes (the shingle *sets*)."""
    return [np.unique(hashes[offsets[d]:offsets[d + 1]]) for d in range(len(offsets) - 1)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays (0.0 when both are empty)."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def signature_jaccard(s1: np.ndarray, s2: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity: fraction of equal signature values."""
    return float(np.count_nonzero(np.asarray(s1) == np.asarray(s2))) / len(s1)
