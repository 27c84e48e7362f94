"""Train the quality models (``make quality-models``, ``python -m jobs.train_quality_models``): per language a SentencePiece model and a
5-gram KenLM, and one multilingual fastText reference-vs-web classifier.

Input: the ``langid`` stage output (``<out>/langid/``: docs with ``tier``, ``lang``; read with
pyarrow on the machine running this job). Output: ``<out>/models/quality/`` with
``manifest.json`` (paths relative to it, training counts, held-out figures and the
calibrated per-language thresholds the ``quality`` stage uses by default)::

    quality-<lang>.sp.model (+ .sp.vocab)   SentencePiece unigram model on normalised text
    quality-<lang>.kenlm.binary             5-gram KenLM (lmplz -o 5, build_binary)
    quality-classifier.bin                  fastText supervised, wordNgrams=2, labels ref/web
    quality-lm-train-hashes.npy             sorted uint64 hashes of the LM training documents
                                            (filters.quality.text_hash): the quality stage leaves
                                            them out of its ppl_bucket percentiles
    manifest.json

(File names are unique across languages because Spark ships files to executors by base name.)

Recipe (CCNet, Wenzek et al. 2020 sec. 3.3; PolyLM, arXiv 2307.06018 sec. 3.1):

* Positives / LM training text: the ``reference`` and ``book`` tiers (NTREX, UD, Leipzig,
  UDHR, books). Negatives: the ``web`` tier. The ``parallel`` tier is left out: its text is a
  copy of reference documents (PUD) and would leak across the split.
* Split BEFORE training, by document group: ``sha1(group key)`` below ``--heldout-fraction``
  goes to held-out. The group key is the source document the reader recorded in ``meta``
  (``doc_id`` for NTREX and its regional variants, ``doc_key`` for UD/PUD) so translations
  and near-duplicate variants of one document never straddle the split; UDHR (two copies per
  language: text and HTML) is grouped per language; everything else by ``id``.
* Text is normalised with :func:`filters.normalize.normalize` (the same call as scoring),
  one paragraph per line.
* Classifier: multilingual (one model). After langid the sample has web documents in only
  some languages (en ~116, de ~100, ja ~29, es ~20, zh ~14, fr ~12, pl ~11, a handful in
  pt/it/ru/nl, none in the other seven), so a per-language classifier cannot be trained for
  most languages and would see a few dozen negatives in the rest; one model shares what marks
  web text across languages. Its input (:func:`filters.quality.classifier_tokens`, one
  function for training and scoring) is language-agnostic structure tokens (bucketed
  paragraph count, short-line share, share of lines ending in sentence punctuation, digit
  share, URLs, ``|``, sentences per paragraph, median line length) followed by the document's
  SentencePiece pieces (from its language's model, which also gives word-like units for
  zh/ja/th text without spaces) with a paragraph token (length bucket, final punctuation,
  sentence count) after each paragraph. The structure tokens are what carries web-ness to the
  languages with one or two web documents: measured on the sample (held-out reference vs
  out-of-fold web, below), pieces plus a bare paragraph marker gave ROC AUC 0.68 in ru and
  0.92 in zh; the structure and paragraph tokens give 0.95 and 0.98, and no language lost.
  Tried and not kept: character n-grams (``minn``/``maxn``: mixed, ru 0.90, twice the
  time), 25 epochs (+0.004, 2x time), other negative balancing (no change). These choices
  were made on the sample's cross-fitted figures (a handful of variants, no per-language or
  per-document settings; the bucket edges are round numbers, not fitted), so the sample's
  AUCs are slightly optimistic for other data.
  Training set: reference documents of the train split and EVERY web document (web text is
  never LM training data, and negatives are scarce); positives are capped (evenly per
  language, and within it per source, so UD's single sentences do not drown the books' and
  UDHR's multi-sentence paragraphs: it lifts held-out books and NTREX variants and costs
  ru 0.005 AUC); in each language with web documents the web lines are oversampled to that
  language's positive count, so language identity alone does not predict the label there.
  Caveats: for languages without web examples the classifier has seen only positives of
  that language, so their scores lean on the structure tokens (their threshold still comes
  from held-out reference scores); the reference sources are mostly one sentence per line,
  so part of what the classifier rewards is that format: clean multi-sentence web paragraphs
  score lower than the same sentences one per line would.
* Classifier evaluation (manifest ``auc`` per language): ROC AUC of held-out reference
  documents against every web document of the language, each scored by a classifier that
  never saw it (cross-fitting, ``--cv-folds`` k folds by ``sha1("cv" + group key) % k``: the
  fold-f classifier is trained as above on the train-split reference and web documents
  outside fold f and scores the held-out reference and web documents of fold f). A held-out
  split alone would leave 0-2 web documents in most languages. The shipped classifier is
  trained on all folds.
* Thresholds (the ``auto`` values of ``quality.default_thresholds``), per language
  (:mod:`filters.quality_calibration`). PolyLM's ML filtering removes only "extremely low
  quality" documents (arXiv 2307.06018 sec. 2.1; CCNet, Wenzek et al. 2020 sec. 3.3, only
  buckets by ppl), and thresholds must not move with a handful of documents: every quantile is
  a distribution-free order-statistic bound at 95% confidence (:mod:`filters.calibration`),
  which exists only from a stated number of documents, with a conservative fallback below it.

  - ``max_ppl``: Tukey's far-out fence (Q3 + 3 IQR of log10 ppl, with 95% bounds on the
    quartiles; needs 11 held-out reference documents), or, if larger, the 95% upper bound of the
    ``--reference-keep`` quantile of held-out reference ppl (149 documents for 0.98) or of the
    ``1 - ppl_web_drop`` quantile of the language's web ppl (29 documents for 0.9). Fewer than
    11 documents: no ppl filter.
  - ``min_quality_score``: the 95% lower bound of the ``web_drop`` quantile (default 0.05) of
    the language's OUT-OF-FOLD web scores (59 documents for 0.05), else of the pooled
    out-of-fold web scores of all languages, capped by the 95% lower bound of the
    (1 - ``--reference-keep``) quantile of held-out reference scores (149 documents) and 0.5;
    without any web bound, that reference bound alone, else no classifier filter.

  Measured on held-out clean paragraphs formatted as web pages (tests/heldout_clean.py): the
  old point quantiles (web q0.2 of as few as 20 documents, reference q0.98 of 33-190) removed
  up to 37% of a language's clean text (es, he); see README "Quality thresholds".
  The manifest records how each was derived (``thresholds_derivation``: source, quantile,
  number of documents, every candidate); ``make quality-models`` prints it. Caveat: the
  shipped classifier trains on every web document of the input, so on those same documents
  its scores are lower than out-of-fold and the classifier removes more than ``web_drop`` of
  them; on new web text the out-of-fold share applies. Override the thresholds per language
  in ``quality.thresholds``.
* Parallel (issue 19): the languages are independent jobs (SentencePiece, KenLM, scoring of the
  language's documents) run in a pool of spawned processes sized to the CPUs available
  (``workers``); then the shipped classifier and the ``cv_folds`` cross-fitting classifiers are
  fitted concurrently in one pool (each fit in a fresh process). Every job has the same inputs
  and seeds as in one process, so the models are the same files (the SentencePiece ``.model``
  records the path of its training text, which lives in a fresh temporary folder on every run).
* Input (:func:`load_docs`): the langid output is streamed in record batches and at most
  ``--max-docs`` documents per language and label (reference / web / other) are kept, the
  bottom-k of a salted hash of the split key (deterministic, independent of file order and of
  the train/held-out split), so the driver's memory is bounded on any corpus size; the
  manifest says how many documents each language had and how many were used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from filters.normalize import normalize
from filters.quality import (CLASSIFIER_FEATURES, LABEL_REF, LABEL_WEB, LM_TRAIN_HASHES, MANIFEST,  # noqa: F401
                             NEGATIVE_TIERS, POSITIVE_TIERS, PerplexityModel, PieceTokenizer, QualityClassifier,
                             classifier_line, is_heldout, roc_auc, split_key, text_hash)
from filters.calibration import min_docs_for_bound
from filters.quality_calibration import (CONFIDENCE, DEFAULT_PPL_WEB_DROP, DEFAULT_WEB_DROP,  # noqa: F401
                                         FENCE_K, MAX_AUTO_QUALITY_SCORE, MIN_REF_DOCS_FENCE, MIN_WEB_DOCS, _r,
                                         calibrate_max_ppl, calibrate_min_quality_score, median, quantile)


def _min_docs(q: float) -> int | None:
    """:func:`filters.calibration.min_docs_for_bound` at :data:`CONFIDENCE`, None for q outside (0, 1)."""
    return min_docs_for_bound(q, CONFIDENCE) if 0.0 < q < 1.0 else None


CJK_LANGS = {"zh", "ja", "ko"}


def log(msg: str) -> None:
    """Progress line on stderr with a UTC timestamp."""
    sys.stderr.write(time.strftime("%H:%M:%S ", time.gmtime()) + "[quality-models] " + msg + "\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ tools
def find_tool(name: str, explicit: str | None = None) -> str:
    """Path of a KenLM program (``lmplz`` / ``build_binary``): ``explicit``, else next to the
    running Python (the venv's bin, where ``make tools`` installs it), else ``$PATH``.

    Raises:
        FileNotFoundError: not found (the message says to run ``make tools``).
    """
    if explicit:
        if not os.path.exists(explicit):
            raise FileNotFoundError(f"{name} not found at {explicit}")
        return explicit
    cand = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(cand):
        return cand
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"KenLM's {name} not found: run `make tools` (builds it into .venv/bin)")


# ------------------------------------------------------------------ data
# Documents kept per (language, label) by load_docs: models trained on a bounded, deterministic
# sample, so the driver's memory is O(max_docs x languages), not O(corpus). 20k documents per
# language and label is far more than a 5-gram KenLM on a few MB of text or the classifier's
# capped positives (max_positives) need, and a few hundred MB of text at most.
DEFAULT_MAX_DOCS = 20_000
SAMPLE_SALT = "quality-sample"


def doc_label(tier: str | None) -> str:
    """Label of a tier for sampling: ``ref`` (:data:`POSITIVE_TIERS`), ``web``
    (:data:`NEGATIVE_TIERS`) or ``other`` (e.g. the parallel tier, never trained on)."""
    return "ref" if tier in POSITIVE_TIERS else ("web" if tier in NEGATIVE_TIERS else "other")


def sample_key(doc_id: str, source: str, lang: str, meta: str | None) -> tuple[int, int]:
    """Bottom-k sampling key of a document: ``(h(salt + split key), h(salt + id))``, each the
    first 8 bytes (big-endian) of a sha1. The split key (:func:`filters.quality.split_key`)
    keeps the translations and variants of one source document together; the salt makes the
    key independent of the train/held-out split hash (``sha1(split key)``), so the sample keeps
    the held-out fraction; the id breaks ties inside a group. Independent of file order."""
    k = split_key(doc_id, source, lang, meta)
    a = hashlib.sha1(f"{SAMPLE_SALT}\n{k}".encode("utf-8")).digest()[:8]
    b = hashlib.sha1(f"{SAMPLE_SALT}\n{doc_id}".encode("utf-8")).digest()[:8]
    return int.from_bytes(a, "big"), int.from_bytes(b, "big")


class LoadedDocs(list):
    """The list of document dicts :func:`load_docs` returns, plus ``counts``:
    ``{lang: {label: {"documents": n in the input, "used": n kept}}}`` and ``max_docs``."""

    counts: dict
    max_docs: int | None


def load_docs(path: str, languages: list[str] | None = None, max_docs: int | None = DEFAULT_MAX_DOCS,
              batch_rows: int = 2048) -> LoadedDocs:
    """Stream the langid-stage parquet at ``path`` and keep a bounded, deterministic sample.

    The dataset is read in record batches (pyarrow ``Dataset.to_batches``, only the columns
    ``id, source, tier, lang, text, meta``); per (language, label) with label ``ref`` /
    ``web`` / ``other`` (:func:`doc_label`) the ``max_docs`` documents with the smallest
    :func:`sample_key` are kept (bottom-k with a bounded heap): the same documents whatever the
    file order or partitioning, and (salted key) the same train/held-out proportions as the
    input. Peak memory is the parquet row group being decoded plus ``max_docs`` documents per
    language and label: O(max_docs x languages), not O(corpus).

    Args:
        path: parquet directory (``file:`` prefix accepted; a URI is read with pyarrow's
            filesystems).
        languages: keep only these languages (default: all).
        max_docs: documents kept per (language, label); None keeps everything (O(corpus) memory).
        batch_rows: rows per record batch read.

    Returns:
        :class:`LoadedDocs`: dicts with ``id, source, tier, lang, text, meta`` ordered by
        (language, label, sample key), with ``counts`` (input and kept documents per language
        and label) and ``max_docs``. Rows with a null ``lang`` are skipped (counted under
        language ``"null"``).

    Raises:
        FileNotFoundError: ``path`` has no ``_SUCCESS`` (the stage did not finish).
        ValueError: ``max_docs`` < 1.
    """
    import heapq

    import pyarrow.dataset as ds

    if max_docs is not None and max_docs < 1:
        raise ValueError(f"max_docs must be >= 1 or None, got {max_docs}")
    local = path[len("file:"):] if path.startswith("file:") else path
    if "://" not in local and not os.path.exists(os.path.join(local, "_SUCCESS")):
        raise FileNotFoundError(f"{path} has no _SUCCESS: run `make langid` first")
    cols = ["id", "source", "tier", "lang", "text", "meta"]
    dataset = ds.dataset(local, format="parquet")
    flt = ds.field("lang").isin(list(languages)) if languages else None
    # heaps[(lang, label)]: max-heap (negated keys) of the max_docs smallest keys seen so far
    heaps: dict[tuple[str, str], list] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    n_rows = 0
    t0 = time.time()
    # one fragment and batch at a time, no decode threads: the Python loop below is the
    # bottleneck anyway, and read-ahead only raises the peak memory
    for batch in dataset.to_batches(columns=cols, filter=flt, batch_size=batch_rows,
                                    batch_readahead=1, fragment_readahead=1, use_threads=False):
        c = {name: batch.column(name).to_pylist() for name in ("id", "source", "tier", "lang", "meta")}
        texts = batch.column("text")
        for i in range(batch.num_rows):
            lang = c["lang"][i]
            label = doc_label(c["tier"][i])
            cnt = counts.setdefault(lang if lang is not None else "null", {}).setdefault(
                label, {"documents": 0, "used": 0})
            cnt["documents"] += 1
            if lang is None:
                continue
            key = sample_key(c["id"][i] or "", c["source"][i] or "", lang, c["meta"][i])
            h = heaps.setdefault((lang, label), [])
            neg = (-key[0], -key[1])
            if max_docs is not None and len(h) >= max_docs:
                if neg <= h[0][:2]:  # not smaller than the largest key kept
                    continue
                heapq.heapreplace(h, (*neg, c["id"][i], n_rows + i, _row(c, texts, i)))
            else:
                heapq.heappush(h, (*neg, c["id"][i], n_rows + i, _row(c, texts, i)))
        n_rows += batch.num_rows
        if n_rows % 200_000 < batch.num_rows:
            log(f"read {n_rows} documents ({time.time() - t0:.0f}s)")
    out = LoadedDocs()
    for (lang, label) in sorted(heaps):
        kept = sorted(heaps[(lang, label)], key=lambda e: (-e[0], -e[1], e[2]))
        counts[lang][label]["used"] = len(kept)
        out.extend(e[4] for e in kept)
    out.counts = counts
    out.max_docs = max_docs
    return out


def _row(c: dict, texts, i: int) -> dict:
    return {"id": c["id"][i], "source": c["source"][i], "tier": c["tier"][i], "lang": c["lang"][i],
            "text": texts[i].as_py(), "meta": c["meta"][i]}


def assign_splits(docs: list[dict], heldout_fraction: float) -> None:
    """Add ``split`` (``train`` | ``heldout``) and ``label`` (``ref`` | ``web`` | None) in place."""
    for d in docs:
        key = split_key(d["id"], d.get("source") or "", d.get("lang") or "", d.get("meta"))
        d["split"] = "heldout" if is_heldout(key, heldout_fraction) else "train"
        tier = d.get("tier")
        d["label"] = "ref" if tier in POSITIVE_TIERS else ("web" if tier in NEGATIVE_TIERS else None)


# ------------------------------------------------------------------ per-language LM
def train_sentencepiece(text_file: str, prefix: str, lang: str, vocab_size: int, seed: int) -> int:
    """Train a unigram SentencePiece model (``prefix.model``) on normalised paragraphs.

    ``vocab_size`` is an upper bound: on small data SentencePiece lowers it
    (``hard_vocab_limit=False``). Returns the vocabulary size of the trained model.
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=text_file, model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.9995 if lang in CJK_LANGS else 1.0, hard_vocab_limit=False,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, seed_sentencepiece_size=200_000,
        max_sentence_length=16384, num_threads=2, minloglevel=2,
        split_digits=False, byte_fallback=False)
    return spm.SentencePieceProcessor(model_file=prefix + ".model").get_piece_size()


def train_kenlm(pieces_file: str, out_binary: str, order: int, lmplz: str, build_binary: str,
                memory: str = "20%") -> None:
    """``lmplz -o ORDER --discount_fallback`` on a pieces file, then ``build_binary``.

    ``--discount_fallback`` (Kneser-Ney discounts fall back to defaults when count-of-counts are
    degenerate) is needed on the few hundred kilobytes of text a language has in the sample.

    Raises:
        RuntimeError: lmplz or build_binary failed (its stderr tail in the message).
    """
    tmpdir = os.path.dirname(out_binary)
    arpa = out_binary + ".arpa"
    with open(pieces_file, "rb") as fin, open(arpa, "wb") as fout:
        p = subprocess.run([lmplz, "-o", str(order), "--discount_fallback", "-S", memory, "-T", tmpdir],
                           stdin=fin, stdout=fout, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"lmplz failed ({p.returncode}): {p.stderr.decode(errors='replace')[-2000:]}")
    p = subprocess.run([build_binary, arpa, out_binary], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"build_binary failed ({p.returncode}): "
                           f"{(p.stdout + p.stderr).decode(errors='replace')[-2000:]}")
    os.remove(arpa)



# ------------------------------------------------------------------ parallel training
def _pool_size(workers: int | None, n_jobs: int) -> int:
    """Processes for ``n_jobs`` independent jobs: ``workers`` if given, else the CPUs this
    process may run on (``os.sched_getaffinity``), at most ``n_jobs`` and at least 1."""
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            workers = os.cpu_count() or 1
    return max(1, min(int(workers), n_jobs))


def _map_jobs(fn, jobs: list, n_workers: int):
    """``fn`` over ``jobs`` in order: in this process when ``n_workers == 1``, else in a pool of
    ``n_workers`` spawned processes (fresh interpreters: no state from a Spark driver or torch is
    inherited; see :func:`_train_fasttext_isolated`). Yields results in job order.

    Raises:
        whatever ``fn`` raised for the first failing job (the others are cancelled).
    """
    if n_workers <= 1:
        for j in jobs:
            yield fn(j)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(fn, j) for j in jobs]
        try:
            for f in futs:
                yield f.result()
        except BaseException:
            for f in futs:
                f.cancel()
            raise


def _train_language(job: dict) -> dict:
    """Train and evaluate the SentencePiece model and KenLM of one language (one pool job).

    Args:
        job: ``lang``, ``lm_label`` (``ref`` | ``web``: which documents the LM trains on),
            ``docs`` (the language's labelled documents after :func:`assign_splits`), ``work``
            (output folder), ``vocab_size``, ``seed``, ``order``, ``lmplz``, ``build_binary``,
            ``reference_keep``, ``ppl_web_drop``, ``min_web_docs``, ``input_docs`` (or None).

    Returns:
        ``{"lang", "entry": manifest entry, "hashes": [text_hash of the LM training docs],
        "lines": {doc id: classifier line (filters.quality.classifier_line_joined, default
        cap)}, "log": progress line}``.
    """
    lang, lm_label, ld, work = job["lang"], job["lm_label"], job["docs"], job["work"]
    order = job["order"]
    train_ref = [d for d in ld if d["label"] == lm_label and d["split"] == "train"]
    held_ref = [d for d in ld if d["label"] == lm_label and d["split"] == "heldout"]
    web = [d for d in ld if d["label"] == "web"] if lm_label == "ref" else []
    lt = time.time()
    sp_prefix = os.path.join(work, f"quality-{lang}.sp")
    lm_path = os.path.join(work, f"quality-{lang}.kenlm.binary")
    txt = os.path.join(work, f"{lang}.train.txt")
    n_par = 0
    hashes = []
    with open(txt, "w", encoding="utf-8") as f:
        for d in train_ref:
            hashes.append(text_hash(lang, d["text"]))
            norm = normalize(d["text"])
            if norm:
                f.write(norm + "\n")
                n_par += norm.count("\n") + 1
    vs = train_sentencepiece(txt, sp_prefix, lang, job["vocab_size"], job["seed"])
    tok = PieceTokenizer(sp_prefix + ".model")
    pieces_txt = os.path.join(work, f"{lang}.train.pieces")
    n_tok = 0
    with open(txt, encoding="utf-8") as fin, open(pieces_txt, "w", encoding="utf-8") as fout:
        lines = fin.read().split("\n")
        joined, counts = tok.encode_joined([ln for ln in lines if ln])
        for s_, c in zip(joined, counts):
            fout.write(s_ + "\n")
            n_tok += c + 1
    train_kenlm(pieces_txt, lm_path, order, job["lmplz"], job["build_binary"])
    os.remove(txt)
    os.remove(pieces_txt)
    # evaluate on unseen text: held-out reference and every web doc (never LM training data)
    pm = PerplexityModel(sp_prefix + ".model", lm_path)
    res = pm.score_texts([d["text"] for d in ld])
    ppl = {d["id"]: p for d, p in zip(ld, res.ppl) if p is not None}
    doc_lines = {d["id"]: line for d, line in zip(ld, res.lines)}
    held_ppl = [ppl[d["id"]] for d in held_ref if d["id"] in ppl]
    web_ppl = [ppl[d["id"]] for d in web if d["id"] in ppl]
    train_ppl = [ppl[d["id"]] for d in train_ref if d["id"] in ppl]
    entry = {
        "sp_model": f"quality-{lang}.sp.model", "kenlm": f"quality-{lang}.kenlm.binary", "vocab_size": vs,
        "lm_trained_on": "reference" if lm_label == "ref" else "web",
        "train_docs": len(train_ref), "train_paragraphs": n_par, "train_tokens": n_tok,
        "heldout_ref_docs": len(held_ref), "web_docs": len(web),
        "train_ref_median_ppl": _r(median(train_ppl)),
        "heldout_ref_median_ppl": _r(median(held_ppl)),
        "web_median_ppl": _r(median(web_ppl)),
        # every integer percentile 1..99 of held-out reference ppl: the quality stage's
        # fallback ppl_bucket cut-offs for languages with too few unseen docs in a run
        "heldout_ref_ppl_percentiles": {str(q): _r(quantile(held_ppl, q / 100))
                                        for q in range(1, 100)} if held_ppl else {},
    }
    if job["input_docs"] is not None:
        entry["input_docs"] = job["input_docs"]
    # held-out documents only: training documents have memorised (low) ppl, a fence on them
    # would remove clean unseen text
    cal_ppl = calibrate_max_ppl(held_ppl, web_ppl, reference_keep=job["reference_keep"],
                                ppl_web_drop=job["ppl_web_drop"], min_web_docs=job["min_web_docs"],
                                ref_source="heldout_reference_ppl" if lm_label == "ref" else "heldout_web_ppl")
    entry["max_ppl"] = cal_ppl["value"]
    entry["thresholds_derivation"] = {"max_ppl": cal_ppl}
    msg = (f"{lang}: sp vocab {vs}, {len(train_ref)} train docs, {n_tok} tokens; "
           f"median ppl held-out ref {_r(median(held_ppl))} (n={len(held_ppl)}) vs web "
           f"{_r(median(web_ppl))} (n={len(web_ppl)}) [{time.time() - lt:.1f}s]")
    return {"lang": lang, "entry": entry, "hashes": hashes, "lines": doc_lines, "log": msg}


# ------------------------------------------------------------------ main training
def train_quality_models(docs: list[dict], models_dir: str, *, languages: list[str] | None = None,
                         heldout_fraction: float = 0.2, vocab_size: int = 8000, order: int = 5,
                         reference_keep: float = 0.98, epoch: int = 10, lr: float = 0.5,
                         dim: int = 32, max_positives: int = 3000, classifier_train_tokens: int = 256,
                         cv_folds: int = 5, web_drop: float = DEFAULT_WEB_DROP,
                         ppl_web_drop: float = DEFAULT_PPL_WEB_DROP, min_web_docs: int = MIN_WEB_DOCS,
                         seed: int = 0, lmplz: str | None = None,
                         build_binary: str | None = None, input_desc: str = "",
                         input_counts: dict | None = None, max_docs: int | None = None,
                         web_fallback: bool = False, workers: int | None = None) -> dict:
    """Train every model from ``docs`` and write them plus ``manifest.json`` to ``models_dir``.

    A language with web documents but no reference-tier training documents (e.g. a user's
    web-only input, issue 16) gets, with ``web_fallback``, a KenLM trained on the train split of
    its OWN web documents: the ppl threshold then only removes extreme outliers of that input
    (Tukey's far-out fence on its held-out web documents; garbled text, wrong script, lists of
    symbols), since web text is no reference of quality. Such languages are recorded as
    ``lm_trained_on: "web"`` in the manifest (and the quality stats); the classifier is trained
    only when some language has reference documents (it needs both labels), and a language
    without held-out reference documents gets no classifier threshold.

    Args:
        docs: dicts with ``id, source, tier, lang, text, meta`` (e.g. from :func:`load_docs`).
        models_dir: output directory (replaced atomically: built in a temp sibling, renamed).
        languages: languages to train (default: every language with positive documents).
        heldout_fraction: share of document groups held out from training (for evaluation
            and threshold calibration).
        vocab_size: SentencePiece vocabulary upper bound per language.
        order: KenLM n-gram order (CCNet: 5).
        reference_keep: quantile of the reference-bound candidates of the auto thresholds
            (see :func:`calibrate_max_ppl`, :func:`calibrate_min_quality_score`).
        web_drop: share of web documents the auto ``min_quality_score`` removes at most (95% lower
            bound of that quantile of the out-of-fold web scores; needs ``cv_folds >= 2``).
        ppl_web_drop: the web candidate of the auto ``max_ppl`` (see
            :func:`filters.quality_calibration.calibrate_max_ppl`).
        min_web_docs: ignored (each bound states its own minimum, filters.calibration).
        epoch, lr, dim: fastText supervised hyper-parameters (wordNgrams=2, thread=1 fixed).
        max_positives: cap on classifier positives, spread evenly over languages (web
            negatives are few; training on every reference doc only slows fastText down).
        classifier_train_tokens: classifier tokens (structure tokens + pieces) per training document.
        cv_folds: k of the cross-fitted classifier evaluation (manifest ``auc``; < 2 disables).
        seed: SentencePiece / fastText seed.
        lmplz, build_binary: KenLM program paths (default: see :func:`find_tool`).
        input_counts: documents per language and label in the input and used for training
            (:attr:`LoadedDocs.counts`), recorded in the manifest (``input_documents``
            and per language ``input_docs``).
        max_docs: the per-(language, label) sample size ``docs`` was drawn with (manifest).
        web_fallback: train the LM of a language without reference documents on its web
            documents (above); False: such languages get no models (``missing_model`` decides).
        workers: processes that train the languages (one job per language: SentencePiece,
            KenLM, evaluation) and then the classifier and its cross-fitting folds (one fastText
            fit each) in parallel; default the CPUs available (``os.sched_getaffinity``), 1 runs
            the languages in this process. The models are the same whatever the value (each job
            has fixed inputs and seeds; fastText runs with ``thread=1``).

    Returns:
        The manifest dict; per language ``max_ppl`` / ``min_quality_score`` and
        ``thresholds_derivation`` (source, quantile, n docs and the candidates of each).

    Raises:
        ValueError: no training documents at all (no reference documents, and no web documents
            or ``web_fallback`` off); a drop/keep share outside [0, 1].
        FileNotFoundError: KenLM programs missing.
        RuntimeError: lmplz / build_binary failed.
    """
    t0 = time.time()
    for name, v in (("reference_keep", reference_keep), ("web_drop", web_drop), ("ppl_web_drop", ppl_web_drop)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    lmplz = find_tool("lmplz", lmplz)
    build_binary = find_tool("build_binary", build_binary)
    assign_splits(docs, heldout_fraction)
    by_lang: dict[str, list[dict]] = {}
    for d in docs:
        if d["label"] is not None and d.get("lang"):
            by_lang.setdefault(d["lang"], []).append(d)
    ref_langs = {l for l, ds_ in by_lang.items() if any(d["label"] == "ref" and d["split"] == "train" for d in ds_)}
    web_langs = ({l for l, ds_ in by_lang.items() if l not in ref_langs
                  and any(d["label"] == "web" and d["split"] == "train" for d in ds_)} if web_fallback else set())
    langs = sorted(ref_langs | web_langs)
    if languages:
        langs = [l for l in langs if l in set(languages)]
    if not langs:
        raise ValueError("no reference-tier training documents in the input"
                         + ("" if web_fallback else " (web_fallback is off)") + ": nothing to train on")
    if web_langs & set(langs):
        log(f"no reference-tier documents in {', '.join(sorted(web_langs & set(langs)))}: their KenLM is trained on "
            f"their own web documents (only extreme ppl outliers are removed)")

    models_dir = os.path.abspath(models_dir)
    parent = os.path.dirname(models_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".quality-models-", dir=parent)
    manifest: dict = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": input_desc, "normalization": "filters.normalize.normalize (NFKC, lowercase, optional "
        "accents stripped, digits->0, unicode punctuation->ASCII)",
        "split": {"method": "sha1(group key) < heldout_fraction", "heldout_fraction": heldout_fraction},
        "positive_tiers": list(POSITIVE_TIERS), "negative_tiers": list(NEGATIVE_TIERS),
        "kenlm_order": order, "languages": {},
        "calibration": {"reference_keep": reference_keep, "web_drop": web_drop, "ppl_web_drop": ppl_web_drop,
                        "confidence": CONFIDENCE, "fence_k": FENCE_K,
                        "min_docs": {"reference_fence": MIN_REF_DOCS_FENCE,
                                     "reference_ppl_bound": _min_docs(1.0 - reference_keep),
                                     "web_ppl_bound": _min_docs(ppl_web_drop),
                                     "web_score_bound": _min_docs(web_drop)},
                        "max_ppl": "max(Tukey far-out fence Q3 + 3 IQR of log10 held-out reference ppl with 95% "
                                   "bounds on the quartiles, 95% upper bound of the reference_keep quantile of "
                                   "held-out reference ppl, 95% upper bound of the (1 - ppl_web_drop) quantile of "
                                   "the language's web ppl), each only with enough documents (min_docs)",
                        "min_quality_score": "min(95% lower bound of the web_drop quantile of the language's "
                                             "out-of-fold web classifier scores (pooled over languages when too "
                                             f"few), {MAX_AUTO_QUALITY_SCORE}, 95% lower bound of the "
                                             "(1 - reference_keep) quantile of held-out reference scores); none "
                                             "applicable: no classifier filter",
                        "rationale": "remove only extremely low quality documents (PolyLM, arXiv 2307.06018 "
                                     "sec. 2.1) with thresholds that do not move with a handful of documents"},
        "reference_keep": reference_keep}
    if input_counts is not None:
        manifest["input_documents"] = {
            "max_docs_per_lang_label": max_docs,
            "method": "bottom-k per (lang, label) of sha1(salt + split key), streamed (load_docs)",
            "languages": input_counts}
    feats: dict[str, list[str]] = {}   # doc id -> classifier tokens
    lm_train_hashes: list[int] = []
    fit_pool = None
    try:
        jobs = []
        for lang in langs:
            ld = by_lang[lang]
            lm_label = "ref" if lang in ref_langs else "web"
            jobs.append({"lang": lang, "lm_label": lm_label, "docs": ld, "work": work, "vocab_size": vocab_size,
                         "seed": seed, "order": order, "lmplz": lmplz, "build_binary": build_binary,
                         "reference_keep": reference_keep, "ppl_web_drop": ppl_web_drop,
                         "min_web_docs": min_web_docs,
                         "input_docs": None if input_counts is None else input_counts.get(lang, {})})
        n_workers = _pool_size(workers, len(jobs))
        log(f"training {len(jobs)} languages in {n_workers} process{'es' if n_workers > 1 else ''}")
        for i, res in enumerate(_map_jobs(_train_language, jobs, n_workers), 1):
            lang = res["lang"]
            manifest["languages"][lang] = res["entry"]
            lm_train_hashes.extend(res["hashes"])
            for doc_id, line in res["lines"].items():
                feats[doc_id] = line.split(" ") if line else []
            log(f"[{i}/{len(langs)}] {res['log']}")
        np.save(os.path.join(work, LM_TRAIN_HASHES), np.array(sorted(set(lm_train_hashes)), dtype=np.uint64))
        manifest["lm_train_hashes"] = {
            "path": LM_TRAIN_HASHES, "documents": len(set(lm_train_hashes)),
            "method": "first 8 bytes (big-endian uint64) of sha1(lang + '\\n' + raw text) of every LM training "
                      "document, sorted (filters.quality.text_hash)"}

        # ---------------------------------------------------------------- classifier
        params = {"wordNgrams": 2, "epoch": epoch, "lr": lr, "dim": dim, "thread": 1, "minCount": 1,
                  "bucket": 200000, "loss": "softmax", "seed": seed}
        labelled = [d for lang in langs for d in by_lang[lang] if feats.get(d["id"])]
        clf_path = os.path.join(work, "quality-classifier.bin")
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp

        # the shipped classifier and the cv folds are independent fastText fits: one pool for all
        # (each fit in a fresh spawned process, as _train_fasttext_isolated does)
        fit_pool = ProcessPoolExecutor(max_workers=_pool_size(workers, 1 + max(cv_folds, 0)),
                                       mp_context=mp.get_context("spawn"), max_tasks_per_child=1)
        counts = _train_classifier([d for d in labelled if classifier_trainable(d)], feats, clf_path, params,
                                   max_positives, classifier_train_tokens, seed, executor=fit_pool)
        clf_info = {"path": "quality-classifier.bin", "kind": "multilingual", "labels": [LABEL_REF, LABEL_WEB],
                    "features_version": CLASSIFIER_FEATURES,
                    "features": "filters.quality.classifier_tokens: structure tokens, then the SentencePiece "
                                "pieces of the document's language with a paragraph token after each paragraph "
                                f"(first {classifier_train_tokens} tokens per training document)",
                    "train_set": "train-split reference documents (capped, evenly per language and source) and "
                                 "every web document (oversampled per language to its positive count)",
                    "params": params, "max_positives": max_positives, "max_tokens": classifier_train_tokens,
                    **{k: v for k, v in counts.items() if k != "_fit"}}
        ev: dict = {}
        if counts["train_pos"] and counts["train_neg"] and cv_folds >= 2:
            # the folds' fits join the shipped classifier's in the pool before anything waits
            ev = evaluate_classifier(labelled, feats, work, params=params, max_positives=max_positives,
                                     max_tokens=classifier_train_tokens, seed=seed, folds=cv_folds,
                                     executor=fit_pool)
        if counts["train_pos"] and counts["train_neg"]:
            counts["lr_used"] = clf_info["lr_used"] = counts.pop("_fit").result()
            log(f"classifier: {counts['train_pos']} reference vs {counts['train_neg']} web training docs "
                f"(web oversampled per language), fastText wordNgrams=2 epoch={epoch}")
            clf = QualityClassifier(clf_path)
            ref_scores: dict[str, list[float]] = {}
            for lang in langs:
                held = [d for d in by_lang[lang] if d["label"] == "ref" and d["split"] == "heldout"
                        and d["id"] in feats]
                ref_scores[lang] = [float(x) for x in clf.predict_proba([classifier_line(feats[d["id"]])
                                                                         for d in held])]
                manifest["languages"][lang]["heldout_ref_median_quality_score"] = _r(median(ref_scores[lang]))
            if cv_folds >= 2:
                clf_info["evaluation"] = {
                    "method": "ROC AUC of held-out reference docs vs every web doc of the language, each doc "
                              "scored out-of-fold (cross-fitting by group key)", "folds": cv_folds}
                clf_info["auc"] = {}
                for lang in langs:
                    e = ev.get(lang) or {}
                    lm = manifest["languages"][lang]
                    lm["auc"] = _r(e.get("auc"))
                    lm["auc_ref_docs"] = e.get("n_ref", 0)
                    lm["auc_web_docs"] = e.get("n_web", 0)
                    clf_info["auc"][lang] = lm["auc"]
                log("classifier ROC AUC (held-out reference vs out-of-fold web): " + ", ".join(
                    f"{l} {v} (web n={manifest['languages'][l]['auc_web_docs']})"
                    for l, v in clf_info["auc"].items() if v is not None))
            else:
                log("cv_folds < 2: no out-of-fold web scores; min_quality_score from held-out reference only")
            pooled = [x for lang in langs for x in (ev.get(lang) or {}).get("web_scores", [])]
            for lang in langs:
                lm = manifest["languages"][lang]
                web_oof = (ev.get(lang) or {}).get("web_scores", [])
                lm["web_median_oof_quality_score"] = _r(median(web_oof))
                cal_q = calibrate_min_quality_score(ref_scores[lang], web_oof, pooled, reference_keep=reference_keep,
                                                    web_drop=web_drop, min_web_docs=min_web_docs)
                lm["min_quality_score"] = cal_q["value"]
                lm["thresholds_derivation"]["min_quality_score"] = cal_q
            log("auto thresholds: " + "; ".join(
                f"{l} max_ppl {manifest['languages'][l]['max_ppl']} ({_src(manifest['languages'][l], 'max_ppl')}), "
                f"min_quality_score {manifest['languages'][l]['min_quality_score']} "
                f"({_src(manifest['languages'][l], 'min_quality_score')})" for l in langs))
            manifest["classifier"] = clf_info
        else:
            log(f"classifier NOT trained: {counts['train_pos']} positive and {counts['train_neg']} negative "
                f"training docs (needs both tiers); quality_score will be null")
            manifest["classifier"] = None
        fit_pool.shutdown(wait=True)
        fit_pool = None
        manifest["seconds"] = round(time.time() - t0, 1)
        with open(os.path.join(work, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
        if os.path.exists(models_dir):
            old = models_dir + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(models_dir, old)
            os.rename(work, models_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work, models_dir)
    except BaseException:
        if fit_pool is not None:
            fit_pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"models written to {models_dir} in {manifest['seconds']}s")
    return manifest


def _train_classifier(docs: list[dict], feats: dict, path: str, params: dict, max_positives: int,
                      max_tokens: int, seed: int, executor=None) -> dict:
    """Train the fastText classifier on ``docs`` (``label`` ref/web) and save it to ``path``.

    Positives: at most ``max_positives``, spread evenly over languages and, within a language,
    evenly over its sources (fixed-seed sample; a source with fewer documents than its share
    gives the rest to the others), so no one reference format (e.g. UD's single sentences)
    dominates and the few multi-sentence-paragraph sources (books, UDHR) are seen.
    Negatives: in each language with web documents they are oversampled to that language's
    positive count, so language identity alone does not predict the label there.

    The fit runs in a fresh spawned process (:func:`_fit_retrying`); with ``executor`` (a
    process pool) it is only submitted there and the call returns at once, so several fits run
    in parallel.

    Returns:
        counts: ``train_pos``, ``train_neg`` (distinct documents), ``train_lines``, and
        ``lr_used`` (the learning rate that trained without NaN) or, with ``executor`` and
        something to train, ``_fit``: the future whose result is ``lr_used`` (the model is at
        ``path`` once it is done).
    """
    rng = np.random.default_rng(seed)
    pos: dict[str, dict[str, list[str]]] = {}   # lang -> source -> lines
    neg: dict[str, list[str]] = {}
    for d in docs:
        feat = classifier_line(feats[d["id"]], max_tokens)
        if feat and d["label"] == "ref":
            pos.setdefault(d["lang"], {}).setdefault(d.get("source") or "", []).append(feat)
        elif feat and d["label"] == "web":
            neg.setdefault(d["lang"], []).append(feat)
    n_pos = n_neg = 0
    lines: list[str] = []
    quota = max(1, max_positives // max(1, len(pos)))
    for lang in sorted(set(pos) | set(neg)):
        by_src = pos.get(lang, {})
        ps: list[str] = []
        left = quota
        srcs = sorted(by_src, key=lambda k: (len(by_src[k]), k))
        for i, src in enumerate(srcs):
            xs = by_src[src]
            take = [xs[j] for j in sorted(rng.permutation(len(xs))[:left // (len(srcs) - i)])]
            ps.extend(take)
            left -= len(take)
        lines.extend(f"{LABEL_REF} {x}" for x in ps)
        n_pos += len(ps)
        ns = neg.get(lang, [])
        if ns:
            rep = max(1, round(max(len(ps), len(ns)) / len(ns)))
            lines.extend(f"{LABEL_WEB} {x}" for x in ns * rep)
            n_neg += len(ns)
    counts = {"train_pos": n_pos, "train_neg": n_neg, "train_lines": len(lines)}
    if not n_pos or not n_neg:
        return counts
    tmp = path + ".train.txt"
    with open(tmp, "w", encoding="utf-8") as f:
        for j in rng.permutation(len(lines)):
            f.write(lines[j] + "\n")
    if executor is not None:
        counts["_fit"] = executor.submit(_fit_retrying, tmp, params, path)
    else:
        counts["lr_used"] = _train_fasttext_isolated(tmp, params, path)
    return counts


def _fit_retrying(train_file: str, params: dict, path: str) -> float:
    """Fit and save the fastText classifier, then delete ``train_file``.

    fastText can hit NaN on small, oversampled data even with thread=1: retried with a smaller
    learning rate (halved, at most 3 times).

    Returns:
        the learning rate that worked (float).

    Raises:
        RuntimeError: fastText's error other than NaN, or NaN at the last learning rate.
    """
    lr = params["lr"]
    try:
        for attempt in range(4):
            try:
                _fit_and_save(train_file, {**params, "lr": lr}, path)
                break
            except RuntimeError as e:
                if "NaN" not in str(e) or attempt == 3:
                    raise
                log(f"fastText hit NaN at lr={lr}; retrying with lr={lr / 2}")
                lr /= 2
    finally:
        os.remove(train_file)
    return lr


def _fit_and_save(train_file: str, params: dict, path: str) -> None:
    import fasttext

    fasttext.train_supervised(input=train_file, verbose=0, **params).save_model(path)


def _train_fasttext_isolated(train_file: str, params: dict, path: str) -> float:
    """:func:`_fit_retrying` (fit, save, delete ``train_file``) in a fresh (spawned) process;
    returns the learning rate used.

    In a process that had run torch (FSDP, torch.compile) first, fastText 0.9.3 reported
    "Encountered NaN" on data it trains on cleanly in a fresh process, and kept doing so at
    every smaller learning rate; a spawned process gives the same, deterministic model
    (thread=1, fixed seed) whatever ran before it.

    Raises:
        RuntimeError: fastText's own error (e.g. "Encountered NaN."), re-raised from the child.
    """
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_fit_retrying, (train_file, params, path))


def classifier_trainable(d: dict) -> bool:
    """Whether the shipped classifier (and each cross-fitting fold) may train on ``d``:
    train-split reference documents and every web document."""
    return (d["label"] == "ref" and d["split"] == "train") or d["label"] == "web"


def classifier_evaluable(d: dict) -> bool:
    """Whether ``d`` enters the classifier's ROC AUC: held-out reference and every web document."""
    return (d["label"] == "ref" and d["split"] == "heldout") or d["label"] == "web"


def cv_fold(d: dict, k: int) -> int:
    """Cross-fitting fold of a document: ``sha1("cv" + group key) % k`` (translations and
    variants of one source document share a fold)."""
    key = "cv" + split_key(d["id"], d.get("source") or "", d.get("lang") or "", d.get("meta"))
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % k


def evaluate_classifier(docs: list[dict], feats: dict, work: str, *, params: dict, max_positives: int,
                        max_tokens: int, seed: int, folds: int, executor=None) -> dict[str, dict]:
    """Honest per-language ROC AUC of the classifier recipe, by cross-fitting.

    Each document gets a fold (:func:`cv_fold`). For each fold f a classifier is trained with
    :func:`_train_classifier` (the shipped recipe) on the :func:`classifier_trainable`
    documents outside f and scores the :func:`classifier_evaluable` documents inside f, so every
    held-out reference and every web document is scored exactly once, by a classifier that
    never saw it (held-out reference documents are never trained on at all).

    Args:
        docs: dicts with ``id, lang, label, split`` (+ ``source, meta`` for the group key),
            after :func:`assign_splits`.
        feats: ``{doc id: classifier tokens}`` (:func:`filters.quality.classifier_tokens`).
        work: scratch directory for the fold models.
        params, max_positives, max_tokens, seed: as for the shipped classifier.
        folds: k (>= 2).
        executor: a process pool to fit the k fold classifiers in parallel (None: one after
            the other, each in a spawned process).

    Returns:
        ``{lang: {"auc": float | None, "n_ref": int, "n_web": int, "ref_scores": [...],
        "web_scores": [...]}}`` for every language in ``docs``; ``auc`` is None unless the
        language has both held-out reference and web documents. Scores are P(ref) in [0, 1].

    Raises:
        ValueError: ``folds < 2``.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    docs = [d for d in docs if feats.get(d["id"])]
    fold = {d["id"]: cv_fold(d, folds) for d in docs}
    oof: dict[str, float] = {}
    pending = []
    for f in range(folds):
        test = [d for d in docs if fold[d["id"]] == f and classifier_evaluable(d)]
        if not test:
            continue
        path = os.path.join(work, f"cv-classifier-{f}.bin")
        c = _train_classifier([d for d in docs if fold[d["id"]] != f and classifier_trainable(d)], feats, path,
                              params, max_positives, max_tokens, seed, executor=executor)
        if not c["train_pos"] or not c["train_neg"]:
            continue
        pending.append((test, path, c))
    for test, path, c in pending:  # in fold order
        if "_fit" in c:
            c["lr_used"] = c.pop("_fit").result()
        clf = QualityClassifier(path)
        for d, s in zip(test, clf.predict_proba([classifier_line(feats[d["id"]]) for d in test])):
            oof[d["id"]] = float(s)
        os.remove(path)
    out: dict[str, dict] = {}
    for lang in sorted({d["lang"] for d in docs}):
        pos = [oof[d["id"]] for d in docs if d["lang"] == lang and d["label"] == "ref" and d["id"] in oof]
        neg = [oof[d["id"]] for d in docs if d["lang"] == lang and d["label"] == "web" and d["id"] in oof]
        out[lang] = {"auc": roc_auc(pos, neg) if pos and neg else None, "n_ref": len(pos), "n_web": len(neg),
                     "ref_scores": pos, "web_scores": neg}
    return out



def training_options(qcfg: dict, **given) -> dict:
    """``web_drop``, ``ppl_web_drop`` and ``max_docs`` for training: the value given (not None),
    else the ``quality:`` config's (``web_drop``, ``ppl_web_drop``, ``train_max_docs``), else the
    defaults. ``max_docs`` 0 or null means no cap (None).

    Raises:
        ValueError: a share outside [0, 1] or a negative ``max_docs``.
    """
    out = {"web_drop": DEFAULT_WEB_DROP, "ppl_web_drop": DEFAULT_PPL_WEB_DROP, "max_docs": DEFAULT_MAX_DOCS}
    for key, cfg_key in (("web_drop", "web_drop"), ("ppl_web_drop", "ppl_web_drop"), ("max_docs", "train_max_docs")):
        if given.get(key) is not None:
            out[key] = given[key]
        elif cfg_key in qcfg:
            out[key] = qcfg[cfg_key]
    for key in ("web_drop", "ppl_web_drop"):
        out[key] = float(out[key])
        if not 0.0 <= out[key] <= 1.0:
            raise ValueError(f"quality.{key} must be in [0, 1], got {out[key]}")
    if out["max_docs"] is not None:
        out["max_docs"] = int(out["max_docs"])
        if out["max_docs"] < 0:
            raise ValueError(f"quality.train_max_docs must be >= 0 (0: no cap), got {out['max_docs']}")
        out["max_docs"] = out["max_docs"] or None
    return out


def default_models_dir(out: str) -> str:
    """``<out>/models/quality``."""
    return os.path.join(out, "models", "quality")



_SRC_TAGS = {"reference_fence": "fence", "web_ppl": "web", "heldout_reference_ppl": "ref", "train_reference_ppl": "train",
             "oof_web_score": "web", "pooled_oof_web_score": "pool", "heldout_reference_score": "ref",
             "cap": "cap", "no_heldout_reference": "none", "none": "none"}


def _src(lm: dict, key: str, short: bool = False) -> str:
    """How a language's auto threshold was derived, e.g. ``web q0.9 n=83`` (``web/83`` short)."""
    d = (lm.get("thresholds_derivation") or {}).get(key)
    if not d:
        return "-"
    tag = _SRC_TAGS.get(d["source"], d["source"])
    if short:
        return tag if tag in ("cap", "none") else f"{tag}/{d['n_docs']}"
    return d["source"] + ("" if d.get("quantile") is None else f" q{d['quantile']:g} n={d['n_docs']}")


def print_table(manifest: dict, file=None) -> None:
    """Print the per-language evaluation table of a manifest: training docs, held-out reference
    and web docs, median ppl of both, classifier ROC AUC (held-out reference vs out-of-fold
    web), calibrated thresholds and where each came from (``ref``: held-out reference
    quantile, ``web``: the language's web quantile, ``pool``: pooled out-of-fold web scores of
    all languages, ``cap``: 0.5; ``/n``: documents behind the quantile)."""
    print(f"{'lang':4} {'train':>6} {'n_held':>6} {'n_web':>5} {'ppl_held':>9} {'ppl_web':>9} {'auc':>6} "
          f"{'max_ppl':>9} {'from':>9} {'min_q':>7} {'from':>9}", file=file)
    for lang, lm in manifest["languages"].items():
        print(f"{lang:4} {lm['train_docs']:6d} {lm['heldout_ref_docs']:6d} {lm['web_docs']:5d} "
              f"{_fmt(lm['heldout_ref_median_ppl']):>9} {_fmt(lm['web_median_ppl']):>9} {_fmt(lm.get('auc')):>6} "
              f"{_fmt(lm['max_ppl']):>9} {_src(lm, 'max_ppl', True):>9} "
              f"{_fmt(lm.get('min_quality_score'), 4):>7} {_src(lm, 'min_quality_score', True):>9}", file=file)
    counts = (manifest.get("input_documents") or {}).get("languages")
    if counts:
        k = manifest["input_documents"].get("max_docs_per_lang_label")
        print(f"input documents used/in per label (at most {k} per language and label): " + "; ".join(
            f"{lang} " + " ".join(f"{lab} {v['used']}/{v['documents']}" for lab, v in sorted(c.items()))
            for lang, c in sorted(counts.items())), file=file)


def _fmt(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if x != 0 and abs(x) < 10 ** -nd:
        return f"{x:.1e}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.{nd}f}"
