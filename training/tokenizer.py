"""PolyLM's multilingual SentencePiece BPE tokenizer: sampling, training, evaluation, HF export.

PolyLM (arXiv 2307.06018, sec. 2.2) uses a BPE SentencePiece model with a 256,000-token
vocabulary, digits split into single digits and byte fallback for unknown UTF-8 characters,
trained on a sample in which low-resource languages are upsampled. This module does that:

1. **Sample** (:func:`write_training_sample`): lines of the corpus shards
   ``<out>/corpus/lang=xx/source=yy/part-*.parquet`` are drawn per language with the
   exponentially smoothed distribution of XLM-R (Conneau et al. 2020, sec. 3.1):
   ``p_l = n_l ** alpha / sum_k n_k ** alpha`` with ``n_l`` the characters of language ``l``
   (default ``alpha = 0.3``, XLM-R's value). Language ``l`` receives ``p_l * total_chars``
   characters: a language with less data than that is *upsampled* (each line repeated
   ``floor(r)`` times plus once more with probability ``r - floor(r)``, ``r = quota / n_l``),
   one with more is subsampled (each line kept with probability ``r``). Lines of held-out NTREX
   sentences are never sampled, so the compression report measures unseen text.
2. **Train** (:func:`train_spm`): SentencePiece BPE, ``byte_fallback``, ``split_digits``,
   ``character_coverage = 1.0`` (every character of the sample gets a piece, so all 18 scripts
   are covered; anything unseen falls back to UTF-8 bytes), identity normalisation and kept
   whitespace so ``decode(encode(x)) == x`` for every string.
3. **Evaluate** (:func:`compression_report`): tokens per 1000 characters and UTF-8 bytes per
   token on held-out NTREX sentences, per language, for several models (``alpha`` and the
   ``alpha = 1`` baseline) - table (:func:`format_table`) and plot (:func:`plot_compression`).
4. **Hugging Face** (:func:`hf_tokenizer`, :func:`save_hf_tokenizer`): ``LlamaTokenizer`` /
   ``LlamaTokenizerFast`` over the same ``.model`` give identical ids.

Special tokens (ids fixed by :data:`SPECIAL_IDS`, the Llama layout plus a pad):

======  =====  ============================================================================
id      piece  use
======  =====  ============================================================================
0       <unk>  never produced by encoding (byte fallback covers every character)
1       <s>    beginning of sequence; *not* added to training documents
2       </s>   end of document: appended to every document in the token shards, so packed
               training windows see a document boundary as ``</s>``
3       <pad>  padding only (never in shards; the loss ignores padded positions)
======  =====  ============================================================================

These are SentencePiece *control* pieces: encoding text that literally contains ``"</s>"``
yields ordinary character pieces, never id 2, so documents cannot forge boundaries. The 256
byte pieces ``<0x00>`` .. ``<0xFF>`` follow at ids 4..259.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import time
import unicodedata
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

#: Special-token layout (see module docstring). LlamaTokenizer/LlamaTokenizerFast assume
#: unk=0, bos=1, eos=2, which this keeps.
SPECIAL_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": 3}
SPECIAL_PIECES = {"unk_piece": "<unk>", "bos_piece": "<s>", "eos_piece": "</s>", "pad_piece": "<pad>"}

#: The 18 PolyLM languages (ISO 639-1), arXiv 2307.06018 table 1.
LANGUAGES = ["zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl", "ar", "tr", "he", "ja",
             "ko", "th", "vi", "id"]

#: NTREX-128 file code -> ISO 639-1 (English is the source side, ``newstest2019-src.eng.txt``).
NTREX_CODES = {"arb": "ar", "deu": "de", "fra": "fr", "heb": "he", "ind": "id", "ita": "it",
               "jpn": "ja", "kor": "ko", "nld": "nl", "pol": "pl", "por": "pt", "rus": "ru",
               "spa": "es", "tha": "th", "tur": "tr", "vie": "vi", "zho-CN": "zh"}

_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


# ============================================================================ configuration
@dataclass
class TokenizerConfig:
    """The ``tokenizer:`` section of ``configs/tokenizer.yaml``.

    Attributes:
        vocab_size: pieces in the model (256,000 for PolyLM, sec. 2.2; small for the sample).
        alpha: sampling exponent, ``p_l ~ n_l ** alpha`` (0.3 as in XLM-R, sec. 3.1).
        compare_alpha: also train a baseline with this alpha for the compression report
            (1.0 = no upsampling, sampling proportional to data); ``None`` skips it.
        sample_chars: characters in the training sample; ``None`` = the corpus size (then
            alpha only redistributes, the sample is as large as the corpus).
        max_sample_chars: cap on ``sample_chars`` (the sample is written to local disk).
        input_sentence_size: SentencePiece's own cap on sentences it loads (0 = all).
        max_sentence_length: longest line (UTF-8 bytes) kept in the sample; longer lines are
            cut at whitespace/character boundaries into chunks of at most this size.
        max_sentencepiece_length: longest piece in characters (SentencePiece default 16).
        num_threads: trainer threads (0 = all CPUs).
        seed: seed of the line sampler.
        heldout_every: NTREX documents ``i`` with ``i % heldout_every == 0`` are held out of
            the sample and used by the compression report.
        languages: languages that must be covered (reported when absent from the corpus).
        train_extremely_large_corpus: SentencePiece flag for very large samples (full model).
    """

    vocab_size: int = 256000
    alpha: float = 0.3
    compare_alpha: float | None = 1.0
    sample_chars: int | None = None
    max_sample_chars: int = 2_000_000_000
    input_sentence_size: int = 0
    max_sentence_length: int = 16384
    max_sentencepiece_length: int = 16
    num_threads: int = 0
    seed: int = 1234
    heldout_every: int = 5
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    train_extremely_large_corpus: bool = False

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"tokenizer.vocab_size={self.vocab_size} is too small (260 ids are special/byte)")
        if not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"tokenizer.alpha must be in (0, 1], got {self.alpha}")
        if self.compare_alpha is not None and not (0.0 < self.compare_alpha <= 1.0):
            raise ValueError(f"tokenizer.compare_alpha must be in (0, 1] or null, got {self.compare_alpha}")
        if self.heldout_every < 2:
            raise ValueError("tokenizer.heldout_every must be >= 2")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TokenizerConfig":
        """Build from a dict; unknown keys raise ``ValueError`` (typos must not pass silently)."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown keys in tokenizer config: {sorted(unknown)}")
        return cls(**d)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | os.PathLike | None = None, profile: str | None = None) -> dict:
    """Load ``configs/tokenizer.yaml`` and apply a profile's overrides.

    Args:
        path: YAML file; ``None`` = ``configs/tokenizer.yaml`` of this repository.
        profile: name under ``profiles:`` (``sample``, ``full``); ``None`` = the file's
            ``profile:`` key.

    Returns:
        dict with the sections ``tokenizer``, ``bilingual``, ``tokenize`` (profile applied)
        and ``profile`` (the name used).

    Raises:
        FileNotFoundError: no such file. KeyError: unknown profile.
    """
    import yaml

    path = Path(path) if path else Path(__file__).resolve().parent.parent / "configs" / "tokenizer.yaml"
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    profiles = raw.pop("profiles", {}) or {}
    name = profile or raw.pop("profile", None)
    raw.pop("profile", None)
    if name:
        if name not in profiles:
            raise KeyError(f"profile {name!r} not in {path} (have: {sorted(profiles)})")
        raw = _deep_merge(raw, profiles[name] or {})
    raw["profile"] = name
    for sec in ("tokenizer", "bilingual", "tokenize"):
        raw.setdefault(sec, {})
    return raw


# ============================================================================ corpus access
def corpus_dataset(corpus_dir: str | os.PathLike):
    """A pyarrow dataset over ``corpus_dir/<lang>/<source>/*.parquet`` (files sorted by path,
    so reads are in a reproducible order).

    Raises:
        FileNotFoundError: no parquet file under ``corpus_dir``.
    """
    import pyarrow.dataset as ds

    root = Path(corpus_dir)
    files = sorted(str(p) for p in root.glob("*/*/*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"no corpus shards under {root} (expected <lang>/<source>/part-*.parquet): "
            f"build the corpus first (`make corpus`)")
    if all(Path(f).parent.parent.name.startswith("lang=") for f in files):
        # corpora written before lang/source became file columns: lang=xx/source=yy folders
        part = ds.partitioning(pa.schema([("lang", pa.string()), ("source", pa.string())]), flavor="hive")
        return ds.dataset(files, format="parquet", partitioning=part, partition_base_dir=str(root))
    return ds.dataset(files, format="parquet")


def corpus_char_counts(corpus_dir: str | os.PathLike) -> dict[str, int]:
    """Characters (Unicode code points of ``text``) per language in the corpus shards.

    Returns:
        ``{lang: n_chars}`` sorted by language code.
    """
    import pyarrow.compute as pc

    dset = corpus_dataset(corpus_dir)
    counts: dict[str, int] = {}
    for batch in dset.to_batches(columns=["lang", "text"]):
        if not batch.num_rows:
            continue
        t = pa.table({"lang": batch.column("lang"),
                      "n": pc.fill_null(pc.utf8_length(batch.column("text")), 0)})
        agg = t.group_by("lang").aggregate([("n", "sum")])
        for lang, n in zip(agg.column("lang").to_pylist(), agg.column("n_sum").to_pylist()):
            counts[lang] = counts.get(lang, 0) + int(n)
    return dict(sorted(counts.items()))


def language_weights(sizes: dict[str, int], alpha: float) -> dict[str, float]:
    """Exponentially smoothed sampling distribution ``p_l = n_l^alpha / sum_k n_k^alpha``
    (XLM-R, Conneau et al. 2020, sec. 3.1; PolyLM sec. 2.2 upsamples low-resource languages).

    Args:
        sizes: data per language (any unit, here characters); languages with 0 are dropped.
        alpha: exponent in (0, 1]; 1 = proportional to data.

    Returns:
        ``{lang: p_l}`` summing to 1.

    Raises:
        ValueError: no language with data.
    """
    pos = {l: float(n) for l, n in sizes.items() if n > 0}
    if not pos:
        raise ValueError("no language has any data")
    w = {l: n ** alpha for l, n in pos.items()}
    z = sum(w.values())
    return {l: v / z for l, v in sorted(w.items())}


def sample_rates(sizes: dict[str, int], alpha: float, total_chars: int) -> dict[str, float]:
    """Per-language sampling rate ``r_l = p_l * total_chars / n_l`` (> 1 = upsampled).

    Returns:
        ``{lang: r_l}`` for languages with data.
    """
    p = language_weights(sizes, alpha)
    return {l: p[l] * total_chars / sizes[l] for l in p}


def normalize_key(s: str) -> str:
    """Key used to match held-out sentences against corpus lines: NFKC, whitespace collapsed,
    stripped (so ingest-time normalisation does not let a held-out sentence leak in)."""
    return " ".join(unicodedata.normalize("NFKC", s).split())


def _split_long(line: str, max_bytes: int) -> list[str]:
    if len(line.encode("utf-8")) <= max_bytes:
        return [line]
    out, cur, cur_b = [], [], 0
    for tok in re.split(r"(\s+)", line):
        b = len(tok.encode("utf-8"))
        if b > max_bytes:  # a single huge "word": cut by characters
            for ch in tok:
                cb = len(ch.encode("utf-8"))
                if cur_b + cb > max_bytes:
                    out.append("".join(cur)); cur, cur_b = [], 0
                cur.append(ch); cur_b += cb
            continue
        if cur_b + b > max_bytes:
            out.append("".join(cur)); cur, cur_b = [], 0
        cur.append(tok); cur_b += b
    if cur:
        out.append("".join(cur))
    return [c for c in out if c.strip()]


@dataclass
class SampleStats:
    """What :func:`write_training_sample` wrote.

    Attributes:
        alpha: sampling exponent used.
        corpus_chars: ``{lang: n_l}`` characters in the corpus.
        weights: ``{lang: p_l}``.
        rates: ``{lang: r_l}`` (expected copies per line; > 1 = upsampled).
        sample_chars: ``{lang: characters written}``; sample_lines likewise.
        heldout_lines_skipped: corpus lines equal to a held-out sentence (not sampled).
        path: the sample file (one line per SentencePiece sentence).
    """

    alpha: float
    corpus_chars: dict
    weights: dict
    rates: dict
    sample_chars: dict
    sample_lines: dict
    heldout_lines_skipped: int
    path: str


def write_training_sample(corpus_dir: str | os.PathLike, out_path: str | os.PathLike, alpha: float,
                          total_chars: int | None = None, heldout: Iterable[str] = (),
                          seed: int = 1234, max_sentence_length: int = 16384,
                          sizes: dict[str, int] | None = None,
                          log: Callable[[str], None] | None = None) -> SampleStats:
    """Write the alpha-smoothed training sample: one corpus line per output line.

    Deterministic: the same corpus, alpha, total and seed give the same file (the RNG is a
    NumPy PCG64 seeded with ``(seed, crc32(lang))`` per language, files are read in path order).

    Args:
        corpus_dir: the ``corpus/`` directory of the shard stage.
        out_path: text file to write (UTF-8).
        alpha: exponent of :func:`language_weights`.
        total_chars: characters wanted in the sample; ``None`` = the corpus size.
        heldout: sentences that must not be sampled (matched by :func:`normalize_key`).
        seed: sampler seed.
        max_sentence_length: UTF-8 bytes; longer lines are split (SentencePiece would drop them).
        sizes: ``{lang: chars}`` if already counted (else :func:`corpus_char_counts`).
        log: progress callback.

    Returns:
        :class:`SampleStats`.

    Raises:
        FileNotFoundError: no corpus shards.
    """
    import pyarrow.dataset as ds

    sizes = sizes or corpus_char_counts(corpus_dir)
    total = int(total_chars) if total_chars else int(sum(sizes.values()))
    weights = language_weights(sizes, alpha)
    rates = sample_rates(sizes, alpha, total)
    held = {normalize_key(h) for h in heldout}
    dset = corpus_dataset(corpus_dir)
    out_chars: dict[str, int] = {}
    out_lines: dict[str, int] = {}
    skipped = 0
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for lang in sorted(rates):
            r = rates[lang]
            whole, frac = int(math.floor(r)), r - math.floor(r)
            rng = np.random.default_rng([seed, zlib.crc32(lang.encode("utf-8"))])
            nc = nl = 0
            for batch in dset.to_batches(columns=["text"], filter=ds.field("lang") == lang):
                lines = []
                for text in batch.column("text").to_pylist():
                    if not text:
                        continue
                    for line in text.split("\n"):
                        if not line.strip():
                            continue
                        if held and normalize_key(line) in held:
                            skipped += 1
                            continue
                        lines.extend(_split_long(line, max_sentence_length))
                if not lines:
                    continue
                copies = whole + (rng.random(len(lines)) < frac)
                for line, k in zip(lines, copies.tolist()):
                    if k:
                        f.write((line + "\n") * k)
                        nc += k * len(line)
                        nl += k
            out_chars[lang], out_lines[lang] = nc, nl
            if log:
                log(f"  sample {lang}: n={sizes[lang]:,} chars p={weights[lang]:.4f} "
                    f"rate={r:.3f} -> {nc:,} chars, {nl:,} lines")
    return SampleStats(alpha=alpha, corpus_chars=dict(sizes), weights=weights, rates=rates,
                       sample_chars=out_chars, sample_lines=out_lines,
                       heldout_lines_skipped=skipped, path=str(out_path))


# ============================================================================ training
def trainer_options(cfg: TokenizerConfig) -> dict[str, Any]:
    """SentencePiece trainer flags for PolyLM's tokenizer (sec. 2.2: BPE, 256K, split digits,
    byte fallback), plus what exact round trips need (identity normalisation, whitespace kept).
    """
    return dict(
        model_type="bpe",
        vocab_size=cfg.vocab_size,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        max_sentencepiece_length=cfg.max_sentencepiece_length,
        max_sentence_length=cfg.max_sentence_length,
        input_sentence_size=cfg.input_sentence_size,
        shuffle_input_sentence=True,
        train_extremely_large_corpus=cfg.train_extremely_large_corpus,
        num_threads=cfg.num_threads or (os.cpu_count() or 1),
        **SPECIAL_IDS,
        **SPECIAL_PIECES,
    )


def train_spm(sample_path: str | os.PathLike, model_prefix: str | os.PathLike,
              cfg: TokenizerConfig) -> str:
    """Train the SentencePiece BPE model on a sample file.

    Args:
        sample_path: text file, one sentence per line (:func:`write_training_sample`).
        model_prefix: output prefix; writes ``<prefix>.model`` and ``<prefix>.vocab``.
        cfg: tokenizer configuration (vocab size, threads...).

    Returns:
        Path of the ``.model`` file.

    Raises:
        RuntimeError: SentencePiece failed (e.g. the sample has more distinct characters than
            ``vocab_size`` allows with ``character_coverage=1.0``: raise the vocab size).
    """
    import sentencepiece as spm

    Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(input=str(sample_path), model_prefix=str(model_prefix),
                                       minloglevel=1, **trainer_options(cfg))
    except RuntimeError as e:
        raise RuntimeError(f"SentencePiece training failed on {sample_path} "
                           f"(vocab_size={cfg.vocab_size}): {e}") from e
    return f"{model_prefix}.model"


@functools.lru_cache(maxsize=8)
def load_spm(model_path: str):
    """A ``sentencepiece.SentencePieceProcessor`` for ``model_path``, loaded once per process.

    Raises:
        OSError/RuntimeError: the file is missing or not a SentencePiece model.
    """
    import sentencepiece as spm

    if not os.path.exists(model_path):
        raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
    return spm.SentencePieceProcessor(model_file=model_path)


def model_info(model_path: str) -> dict:
    """``{"vocab_size", "bos_id", "eos_id", "pad_id", "unk_id"}`` of a model (ints)."""
    sp = load_spm(str(model_path))
    return {"vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
            "pad_id": sp.pad_id(), "unk_id": sp.unk_id()}


@functools.lru_cache(maxsize=8)
def byte_piece_ids(model_path: str) -> np.ndarray:
    """Sorted int32 ids of the 256 byte-fallback pieces ``<0x00>``..``<0xFF>``."""
    sp = load_spm(str(model_path))
    return np.array(sorted(i for i in range(sp.get_piece_size()) if sp.is_byte(i)), dtype=np.int32)


# ============================================================================ NTREX held-out
def load_ntrex(data_root: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """NTREX-128 (news, 1,997 sentences line-aligned across the 18 languages).

    Returns:
        ``(doc_ids, {lang: sentences})``; ``doc_ids[i]`` is the document of sentence ``i``.

    Raises:
        FileNotFoundError: ``<data_root>/ntrex-128`` or a language file is missing.
        ValueError: a file's line count differs from ``DOCUMENT_IDS.tsv``.
    """
    root = Path(data_root) / "ntrex-128"
    ids_path = root / "DOCUMENT_IDS.tsv"
    if not ids_path.exists():
        raise FileNotFoundError(f"NTREX-128 not found at {root} (pass --data-root)")
    doc_ids = [l.strip() for l in ids_path.read_text(encoding="utf-8").splitlines()]
    files = {"en": root / "newstest2019-src.eng.txt"}
    files.update({iso: root / f"newstest2019-ref.{code}.txt" for code, iso in NTREX_CODES.items()})
    out = {}
    for lang, p in files.items():
        lines = p.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != len(doc_ids):
            raise ValueError(f"{p}: {len(lines)} lines but {len(doc_ids)} document ids")
        out[lang] = lines
    return doc_ids, dict(sorted(out.items()))


def ntrex_split(data_root: str | os.PathLike, every: int = 5) -> tuple[dict, dict]:
    """Split NTREX by document: document number ``i`` (in file order) is held out when
    ``i % every == 0`` (about 1/every of the 123 documents).

    Returns:
        ``(train, heldout)``, each ``{lang: [(doc_id, [sentences])]}``.
    """
    doc_ids, sents = load_ntrex(data_root)
    order: list[str] = []
    for d in doc_ids:
        if not order or order[-1] != d:
            order.append(d)
    held_docs = {d for i, d in enumerate(order) if i % every == 0}
    train: dict[str, list] = {}
    held: dict[str, list] = {}
    for lang, lines in sents.items():
        groups: dict[str, list[str]] = {}
        for d, s in zip(doc_ids, lines):
            groups.setdefault(d, []).append(s)
        for d in order:
            (held if d in held_docs else train).setdefault(lang, []).append((d, groups[d]))
    return train, held


def heldout_sentences(data_root: str | os.PathLike, every: int = 5) -> dict[str, list[str]]:
    """Held-out NTREX sentences per language (see :func:`ntrex_split`)."""
    _, held = ntrex_split(data_root, every)
    return {l: [s for _, ss in docs for s in ss] for l, docs in held.items()}


# ============================================================================ evaluation
def compression_stats(model_path: str, sentences: list[str]) -> dict:
    """Compression of ``sentences`` under a model.

    Returns:
        dict: ``sentences``, ``chars`` (code points), ``bytes`` (UTF-8), ``tokens`` (no BOS/EOS),
        ``tokens_per_1k_chars`` = 1000 * tokens / chars, ``bytes_per_token`` = bytes / tokens,
        ``byte_fallback_share`` = share of tokens that are byte pieces.
    """
    sp = load_spm(str(model_path))
    ids = sp.encode(sentences)
    n_tok = sum(len(x) for x in ids)
    chars = sum(len(s) for s in sentences)
    nbytes = sum(len(s.encode("utf-8")) for s in sentences)
    bytes_ids = byte_piece_ids(str(model_path))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=n_tok)
    n_byte = int(np.isin(flat, bytes_ids).sum()) if n_tok else 0
    return {"sentences": len(sentences), "chars": chars, "bytes": nbytes, "tokens": n_tok,
            "tokens_per_1k_chars": 1000.0 * n_tok / max(chars, 1),
            "bytes_per_token": nbytes / max(n_tok, 1),
            "byte_fallback_share": n_byte / max(n_tok, 1)}


def compression_report(models: dict[str, str], heldout: dict[str, list[str]],
                       corpus_chars: dict[str, int] | None = None) -> dict:
    """Per-language compression for several models on held-out sentences.

    Args:
        models: ``{label: model_path}``, e.g. ``{"alpha=0.3": ..., "alpha=1": ...}``.
        heldout: ``{lang: sentences}``.
        corpus_chars: optional ``{lang: chars}`` of the training corpus, to order languages by
            data and to name the low-resource ones.

    Returns:
        ``{"models": {label: path}, "languages": [...], "per_lang": {lang: {label: stats}},
        "corpus_chars": {...}}``; stats from :func:`compression_stats`.
    """
    langs = sorted(heldout)
    if corpus_chars:
        langs = sorted(langs, key=lambda l: (-corpus_chars.get(l, 0), l))
    per_lang = {l: {lab: compression_stats(p, heldout[l]) for lab, p in models.items()} for l in langs}
    return {"models": dict(models), "languages": langs, "per_lang": per_lang,
            "corpus_chars": dict(corpus_chars or {})}


def low_resource_languages(corpus_chars: dict[str, int], k: int = 5,
                           among: Iterable[str] | None = None) -> list[str]:
    """The ``k`` languages with the least characters (ties by code); ``among`` restricts the
    candidates (e.g. languages with held-out data)."""
    cand = {l: n for l, n in corpus_chars.items() if among is None or l in set(among)}
    return sorted(cand, key=lambda l: (cand[l], l))[:k]


def upsampling_effect(report: dict, upsampled: str, baseline: str, k: int = 5) -> dict:
    """Compare the upsampled model with the baseline (the acceptance figures of issue 5).

    Returns:
        dict: ``low_resource`` (the k languages with least data), ``low_tpc_upsampled`` /
        ``low_tpc_baseline`` (mean tokens per character over them), ``en_tokens_ratio``
        (English tokens upsampled / baseline; < 1.10 is the acceptance bound).

    Raises:
        ValueError: the report has no corpus sizes or no English.
    """
    cc = report.get("corpus_chars") or {}
    if not cc:
        raise ValueError("report has no corpus_chars: cannot tell which languages have least data")
    low = low_resource_languages(cc, k, among=report["per_lang"])
    pl = report["per_lang"]
    tpc = lambda lab: float(np.mean([pl[l][lab]["tokens"] / pl[l][lab]["chars"] for l in low]))
    if "en" not in pl:
        raise ValueError("report has no English held-out data")
    return {"low_resource": low, "low_tpc_upsampled": tpc(upsampled), "low_tpc_baseline": tpc(baseline),
            "en_tokens_ratio": pl["en"][upsampled]["tokens"] / pl["en"][baseline]["tokens"]}


def format_table(report: dict) -> str:
    """Markdown table: per language, corpus chars and, per model, tokens per 1000 chars and
    bytes per token."""
    labels = list(report["models"])
    head = ["lang", "corpus chars"]
    for lab in labels:
        head += [f"tok/1k chars ({lab})", f"bytes/tok ({lab})"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for l in report["languages"]:
        cells = [l, f"{report['corpus_chars'].get(l, 0):,}"]
        for lab in labels:
            s = report["per_lang"][l][lab]
            cells += [f"{s['tokens_per_1k_chars']:.1f}", f"{s['bytes_per_token']:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_compression(report: dict, png_path: str | os.PathLike) -> str:
    """Grouped bars per language (ordered by corpus size): tokens per 1000 characters (top) and
    bytes per token (bottom), one bar per model. Writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["models"])
    langs = report["languages"]
    x = np.arange(len(langs))
    w = 0.8 / max(len(labels), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.6 * len(langs)), 7), sharex=True)
    for j, lab in enumerate(labels):
        tpc = [report["per_lang"][l][lab]["tokens_per_1k_chars"] for l in langs]
        bpt = [report["per_lang"][l][lab]["bytes_per_token"] for l in langs]
        axes[0].bar(x + (j - (len(labels) - 1) / 2) * w, tpc, w, label=lab)
        axes[1].bar(x + (j - (len(labels) - 1) / 2) * w, bpt, w, label=lab)
    axes[0].set_ylabel("tokens per 1000 chars")
    axes[1].set_ylabel("UTF-8 bytes per token")
    axes[1].set_xticks(x, langs)
    axes[1].set_xlabel("language (most corpus data on the left)")
    axes[0].legend()
    axes[0].set_title("Held-out NTREX compression per language")
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return str(png_path)


# ============================================================================ Hugging Face
def hf_tokenizer(model_path: str | os.PathLike, fast: bool = True):
    """``LlamaTokenizerFast`` (or ``LlamaTokenizer``) over the SentencePiece model, configured to
    give the same ids as ``SentencePieceProcessor.encode``: ``legacy=True`` and
    ``add_prefix_space=True`` (SentencePiece's dummy prefix), no BOS/EOS added (the training
    documents carry only a trailing ``</s>``), ``split_special_tokens=True`` (text containing
    ``"</s>"`` is encoded as characters, as SentencePiece does), pad ``<pad>`` (id 3).

    Raises:
        ImportError: transformers/protobuf not installed.
    """
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    kw = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
              add_bos_token=False, add_eos_token=False, legacy=True, add_prefix_space=True,
              split_special_tokens=True, clean_up_tokenization_spaces=False)
    if fast:
        return LlamaTokenizerFast(vocab_file=str(model_path), from_slow=True, **kw)
    return LlamaTokenizer(vocab_file=str(model_path), **kw)


def save_hf_tokenizer(model_path: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """Write ``tokenizer.json``, ``tokenizer.model``, ``tokenizer_config.json`` and
    ``special_tokens_map.json`` to ``out_dir`` (loadable with ``AutoTokenizer.from_pretrained``)."""
    tok = hf_tokenizer(model_path, fast=True)
    tok.save_pretrained(str(out_dir))
    return str(out_dir)


# ============================================================================ orchestration
def train_tokenizer(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: TokenizerConfig,
                    data_root: str | os.PathLike, hf: bool = True,
                    log: Callable[[str], None] = print) -> dict:
    """The ``tokenizer`` stage: sample, train (``alpha`` and the ``compare_alpha`` baseline),
    report compression on held-out NTREX, export for Hugging Face.

    Writes, under ``out_dir`` (``<out>/tokenizer``):
    ``spm.model``/``spm.vocab`` (the tokenizer), ``alpha<a>/spm.model`` (baseline),
    ``compression.json``/``compression.md``/``compression.png``, ``hf/`` (HF files),
    ``tokenizer.json`` (summary: config, sampling figures, ids, timings) and ``_SUCCESS`` last.
    The samples are written to a temporary directory and deleted. The stage builds in
    ``<out_dir>.tmp-*`` and swaps it in at the end, so a killed run leaves the old output.

    Returns:
        the summary dict (also ``tokenizer.json``).

    Raises:
        FileNotFoundError: no corpus shards or no NTREX data.
    """
    import tempfile

    t0 = time.time()
    out_dir = Path(out_dir)
    tmp = Path(f"{out_dir}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"[tokenizer] counting corpus characters in {corpus_dir}")
    sizes = corpus_char_counts(corpus_dir)
    missing = [l for l in cfg.languages if l not in sizes]
    if missing:
        log(f"[tokenizer] WARNING: no corpus data for {missing}: their characters are covered "
            f"only through byte fallback")
    total = cfg.sample_chars or sum(sizes.values())
    total = min(int(total), cfg.max_sample_chars)
    held = heldout_sentences(data_root, cfg.heldout_every)
    held_all = [s for ss in held.values() for s in ss]
    runs = [("main", cfg.alpha)]
    if cfg.compare_alpha is not None and cfg.compare_alpha != cfg.alpha:
        runs.append(("compare", cfg.compare_alpha))
    summary: dict[str, Any] = {"config": asdict(cfg), "corpus_chars": sizes, "sample_total_chars": total,
                               "runs": {}}
    models: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="spm-sample-") as sdir:
        for kind, alpha in runs:
            label = f"alpha={alpha:g}"
            mdir = tmp if kind == "main" else tmp / f"alpha{alpha:g}"
            log(f"[tokenizer] sampling {total:,} chars with {label}")
            t1 = time.time()
            st = write_training_sample(corpus_dir, Path(sdir) / f"sample-{alpha:g}.txt", alpha, total,
                                       heldout=held_all, seed=cfg.seed,
                                       max_sentence_length=cfg.max_sentence_length, sizes=sizes, log=log)
            t2 = time.time()
            log(f"[tokenizer] training SentencePiece BPE vocab_size={cfg.vocab_size} ({label})")
            path = train_spm(st.path, mdir / "spm", cfg)
            t3 = time.time()
            log(f"[tokenizer] trained {path} in {t3 - t2:.1f}s")
            rec = asdict(st)
            rec.pop("path")
            rec.update({"model": str(Path(path).relative_to(tmp)), "sample_seconds": round(t2 - t1, 2),
                        "train_seconds": round(t3 - t2, 2)})
            summary["runs"][label] = rec
            models[label] = path
    report = compression_report(models, held, sizes)
    labels = list(models)
    if len(labels) == 2:
        eff = upsampling_effect(report, labels[0], labels[1])
        report["upsampling_effect"] = eff
        log(f"[tokenizer] low-resource {eff['low_resource']}: tokens/char "
            f"{eff['low_tpc_upsampled']:.4f} ({labels[0]}) vs {eff['low_tpc_baseline']:.4f} ({labels[1]}); "
            f"English tokens x{eff['en_tokens_ratio']:.4f}")
    report["models"] = {k: str(Path(v).relative_to(tmp)) for k, v in models.items()}
    (tmp / "compression.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    table = format_table(report)
    (tmp / "compression.md").write_text(table, encoding="utf-8")
    plot_compression(report, tmp / "compression.png")
    log("[tokenizer] held-out NTREX compression:\n" + table)
    if hf:
        save_hf_tokenizer(tmp / "spm.model", tmp / "hf")
    summary.update(model_info(str(tmp / "spm.model")))
    summary.update({"model": "spm.model", "special_tokens": {**SPECIAL_IDS, **SPECIAL_PIECES},
                    "seconds": round(time.time() - t0, 2)})
    (tmp / "tokenizer.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    clear_model_cache()
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    (out_dir / "_SUCCESS").write_text("")
    log(f"[tokenizer] wrote {out_dir} in {summary['seconds']:.1f}s")
    return summary


def clear_model_cache() -> None:
    """Forget cached models (call after a model file was replaced on disk)."""
    load_spm.cache_clear()
    byte_piece_ids.cache_clear()


# ============================================================================ batch encoding
class TokenizeBatch:
    """Picklable ``pyarrow.RecordBatch -> RecordBatch`` function used by the tokenize job
    (:func:`pipeline.stage.map_arrow`); the model loads once per Python worker.

    Input columns: ``id, lang, source, tier, text, meta`` (strings; ``meta`` may be null).
    Output schema: :data:`TOKENIZED_DDL` - ``id, lang, source, tier, input_ids list<int32>
    (EOS appended), n_tokens long (incl. EOS), n_chars long, input_docs int (1 on the first
    output row of each input document, else 0), reason, detail``. Output rows follow the input
    rows (a parallel document's bilingual documents in place of it).

    Parallel-tier documents become bilingual documents (:mod:`training.bilingual`) filed under
    ``source="parallel"``; other documents are encoded as they are. Rows that cannot be encoded
    keep ``input_ids`` null and get a ``reason``: ``empty_text`` (no non-whitespace text, as
    ``str.strip`` sees it) or ``parallel_meta_invalid`` (the pairs cannot be read; ``detail``
    says why).

    Speed (issue 19 item 3): one SentencePiece batch call per Arrow batch with ``add_eos=True``
    (the same ids as ``sp.encode(text) + [eos_id]``) on ``num_threads`` threads, ids copied
    once into a flat int32 array and wrapped as ``pa.ListArray.from_arrays(offsets, values)``;
    a batch without parallel documents passes its ``id, lang, source, tier`` columns through
    as Arrow arrays (no Python objects but the texts and their ids).

    Args:
        model_path: SentencePiece model (a path :func:`pipeline.ship.resolve` understands).
        bilingual: the ``bilingual`` config section (:class:`training.bilingual.BilingualConfig`).
        parallel_source: the source name of bilingual documents.
        num_threads: SentencePiece encode threads per Python worker (``>= 1``); the job passes
            the executor's cores (``local[N]``: N).
        encode_seconds: optional Spark accumulator (float) that receives the CPU seconds of the
            Python worker process (all its threads, ``time.process_time``) spent in
            ``sp.encode`` (for the job's breakdown); None = not measured.

    Raises:
        ValueError: ``num_threads < 1`` or an invalid ``bilingual`` section (on the driver).
    """

    def __init__(self, model_path: str, bilingual: dict | None = None, parallel_source: str = "parallel",
                 num_threads: int = 1, encode_seconds=None):
        from training.bilingual import BilingualConfig

        self.model_path = model_path
        self.bilingual = dict(bilingual or {})
        BilingualConfig.from_dict(self.bilingual)  # validate on the driver
        self.parallel_source = parallel_source
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = int(num_threads)
        self.encode_seconds = encode_seconds

    def _expand(self, batch: pa.RecordBatch, texts_in: list):
        """The per-row path for a batch with parallel documents: lists of the output columns
        ``id, lang, source, tier, text (None = not encoded), input_docs, reason, detail``."""
        from training.bilingual import BilingualError, render

        bcfg = _bilingual_cfg(json.dumps(self.bilingual, sort_keys=True))
        cols = {n: batch.column(n).to_pylist() for n in ("id", "lang", "source", "tier")}
        metas = batch.column("meta").to_pylist() if "meta" in batch.schema.names else [None] * batch.num_rows
        out: tuple[list, ...] = ([], [], [], [], [], [], [], [])

        def add(k, i, lang, source, text, is_first, reason=None, detail=None):
            for col, v in zip(out, (i, lang, source, cols["tier"][k], text, 1 if is_first else 0, reason, detail)):
                col.append(v)

        for k in range(batch.num_rows):
            doc_id, lang, source, tier, text = (cols["id"][k], cols["lang"][k], cols["source"][k],
                                                cols["tier"][k], texts_in[k])
            if tier == "parallel":
                try:
                    docs = render(doc_id, metas[k], bcfg)
                except BilingualError as e:
                    add(k, doc_id, lang, source, None, True, "parallel_meta_invalid",
                        json.dumps({"error": str(e)}, ensure_ascii=False))
                    continue
                for j, (nid, t, _d) in enumerate(docs):
                    add(k, nid, lang, self.parallel_source, t, j == 0)
            elif text is None or not text.strip():
                add(k, doc_id, lang, source, None, True, "empty_text", None)
            else:
                add(k, doc_id, lang, source, text, True)
        return out

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import itertools

        import pyarrow.compute as pc

        from pipeline.ship import resolve

        sp = load_spm(resolve(self.model_path))
        n_in = batch.num_rows
        texts_in = batch.column("text").to_pylist()
        parallel = pc.any(pc.fill_null(pc.equal(batch.column("tier"), "parallel"), False)).as_py()
        if parallel:
            ids, langs, sources, tiers, texts, first, reasons, details = self._expand(batch, texts_in)
            n = len(texts)
            key_cols = [pa.array(ids, pa.string()), pa.array(langs, pa.string()), pa.array(sources, pa.string()),
                        pa.array(tiers, pa.string())]
            valid = np.fromiter((t is not None for t in texts), dtype=bool, count=n)
            input_docs = pa.array(first, pa.int32())
            reason_arr, detail_arr = pa.array(reasons, pa.string()), pa.array(details, pa.string())
        else:  # one output row per input row: the key columns pass through as Arrow arrays
            texts, n = texts_in, n_in
            key_cols = [batch.column(c).cast(pa.string()) for c in ("id", "lang", "source", "tier")]
            # not t.strip() == (t == "" or t.isspace()); isspace stops at the first other character
            valid = np.fromiter((t is not None and t != "" and not t.isspace() for t in texts), dtype=bool, count=n)
            input_docs = pa.array(np.ones(n, dtype=np.int32))
            reason_arr = pa.array(np.where(valid, None, "empty_text"), pa.string())
            detail_arr = pa.nulls(n, pa.string())
        todo = np.flatnonzero(valid)
        todo_texts = texts if len(todo) == n else [texts[j] for j in todo]
        t0 = time.process_time()
        enc = sp.encode(todo_texts, add_eos=True, num_threads=self.num_threads) if len(todo) else []
        if self.encode_seconds is not None:
            self.encode_seconds.add(time.process_time() - t0)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[todo] = np.fromiter(map(len, enc), dtype=np.int64, count=len(enc))
        n_chars = np.zeros(n, dtype=np.int64)
        n_chars[todo] = np.fromiter(map(len, todo_texts), dtype=np.int64, count=len(todo_texts))
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(enc), dtype=np.int32, count=int(offsets[-1]))
        input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values),
                                             mask=None if valid.all() else pa.array(~valid))
        return pa.RecordBatch.from_arrays(
            key_cols + [input_ids, pa.array(lengths), pa.array(n_chars), input_docs, reason_arr, detail_arr],
            names=["id", "lang", "source", "tier", "input_ids", "n_tokens", "n_chars", "input_docs",
                   "reason", "detail"])


#: Spark DDL of :class:`TokenizeBatch` output.
TOKENIZED_DDL = ("id string, lang string, source string, tier string, input_ids array<int>, "
                 "n_tokens bigint, n_chars bigint, input_docs int, reason string, detail string")


@functools.lru_cache(maxsize=4)
def _bilingual_cfg(key: str):
    from training.bilingual import BilingualConfig

    return BilingualConfig.from_dict(json.loads(key))
