"""Benchmark of quality scoring on one core: documents/s and tokens/s end to end, with
normalisation, SentencePiece, KenLM and classifier time shown separately, next to raw
``kenlm.Model.score`` throughput on the same token strings.

Models: ``--models-dir`` (default ``build/sample/models/quality`` from ``make quality-models``);
when it has no manifest, small models are trained first into ``build/bench/quality-models``
from the real NTREX / Leipzig reference text and the dolma English web JSONL (needs
``make tools``). Input: the real NTREX documents, enlarged by replication + perturbation to
``--docs`` documents (synthetic: said so in the output).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, data_root, enlarge, ntrex_documents  # noqa: E402
from filters import quality as Q  # noqa: E402
from filters.normalize import normalize  # noqa: E402


def _train_bench_models(dest: str) -> None:
    from pipeline.quality_models import train_quality_models

    root = data_root()
    docs = []
    for lang, doc_id, text in ntrex_documents(root):
        docs.append({"id": f"ntrex/{lang}/{doc_id}", "source": "ntrex", "tier": "reference", "lang": lang,
                     "text": text, "meta": json.dumps({"doc_id": doc_id})})
    for f in sorted((root / "leipzig-sentences").glob("*.txt")):
        if f.stem == "LICENSE":
            continue
        lines = [l for l in f.read_text(encoding="utf-8").split("\n") if l.strip()]
        for i in range(0, len(lines), 20):
            docs.append({"id": f"leipzig/{f.stem}/{i}", "source": "leipzig", "tier": "reference",
                         "lang": f.stem, "text": "\n".join(lines[i:i + 20]), "meta": "{}"})
    for f in sorted((root / "dolma-tests").glob("*.json*.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                docs.append({"id": f"dolma/{f.name}/{i}", "source": "dolma", "tier": "web", "lang": "en",
                             "text": json.loads(line)["text"], "meta": "{}"})
    train_quality_models(docs, dest, vocab_size=8000, input_desc="bench: ntrex+leipzig, dolma en web")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=str(REPO / "build" / "sample" / "models" / "quality"))
    p.add_argument("--docs", type=int, default=6000, help="documents to score (enlarged NTREX)")
    args = p.parse_args(argv)

    def current(d: str) -> bool:  # a manifest whose classifier takes this code's features
        if not os.path.exists(os.path.join(d, Q.MANIFEST)):
            return False
        clf = Q.load_manifest(d).get("classifier") or {}
        return clf.get("features_version") == Q.CLASSIFIER_FEATURES

    mdir = args.models_dir
    if not current(mdir):
        mdir = str(REPO / "build" / "bench" / "quality-models")
        if not current(mdir):
            print(f"no current models in {args.models_dir}: training bench models into {mdir}", flush=True)
            _train_bench_models(mdir)
    langs, clf_path, _ = Q.model_paths(mdir)
    base = [(lang, text) for lang, _, text in ntrex_documents() if lang in langs]
    docs = enlarge(base, args.docs, seed=0)
    print(f"input: {len(base)} real NTREX documents in {len(langs)} languages, replicated and perturbed "
          f"to {len(docs)} documents (synthetic enlargement)")
    print(f"models: {mdir}")
    by_lang: dict[str, list[str]] = {}
    for lang, text in docs:
        by_lang.setdefault(lang, []).append(text)
    n_chars = sum(len(t) for _, t in docs)

    # warm up / load models (not timed: loaded once per worker in the stage)
    t = time.perf_counter()
    models = {lang: Q.load_lm(*langs[lang]) for lang in by_lang}
    clf = Q.load_classifier(clf_path) if clf_path else None
    t_load = time.perf_counter() - t

    t_norm = t_sp = t_lm = t_raw = t_clf = t_feat = 0.0
    n_tokens = 0
    lines = []
    for lang, texts in by_lang.items():
        pm = models[lang]
        t = time.perf_counter()
        pars_per_doc = [pm.paragraphs(x) for x in texts]
        t_norm += time.perf_counter() - t
        t = time.perf_counter()
        toks_per_doc = [pm.tokenize(pars) for pars in pars_per_doc]
        t_sp += time.perf_counter() - t
        t = time.perf_counter()
        for toks in toks_per_doc:
            lp, n = pm.score_pieces(toks)
            Q.ppl_from_log10(lp, n)
            n_tokens += n
        t_lm += time.perf_counter() - t
        # raw kenlm.Model.score on the same (pre-joined) token strings
        joined = [" ".join(p) for toks in toks_per_doc for p in toks]
        score = pm.lm.score
        t = time.perf_counter()
        for s in joined:
            score(s, bos=True, eos=True)
        t_raw += time.perf_counter() - t
        t = time.perf_counter()
        lines.extend(Q.classifier_line(Q.classifier_tokens(pars, toks))
                     for pars, toks in zip(pars_per_doc, toks_per_doc))
        t_feat += time.perf_counter() - t
    if clf is not None:
        t = time.perf_counter()
        for i in range(0, len(lines), 2000):
            clf.predict_proba(lines[i:i + 2000])
        t_clf = time.perf_counter() - t
    t_clf += t_feat  # classifier time includes building its input (structure tokens, joining)
    total = t_norm + t_sp + t_lm + t_clf
    nd = len(docs)
    print(f"model load (once per worker): {t_load:.2f} s")
    print(f"documents: {nd}, characters: {n_chars}, tokens (pieces + </s>): {n_tokens}")
    print(f"end_to_end docs_per_sec_per_core: {nd / total:.1f}")
    print(f"end_to_end tokens_per_sec_per_core: {n_tokens / total:.0f}")
    print(f"end_to_end chars_per_sec_per_core: {n_chars / total:.0f}")
    print(f"normalize_sec: {t_norm:.3f} ({n_chars / t_norm / 1e6:.2f} M chars/s)")
    print(f"sentencepiece_sec: {t_sp:.3f} ({n_tokens / t_sp:.0f} tokens/s)")
    print(f"kenlm_sec: {t_lm:.3f} ({n_tokens / t_lm:.0f} tokens/s, incl. joining pieces)")
    print(f"raw_kenlm_score_sec: {t_raw:.3f} ({n_tokens / t_raw:.0f} tokens/s, kenlm.Model.score on the same "
          f"token strings)")
    if clf is not None:
        print(f"classifier_sec: {t_clf:.3f} ({nd / t_clf:.0f} docs/s: input features {t_feat:.3f} s + fastText "
              f"predict on lists of 2000)")
    print(f"time_share: normalize {t_norm / total:.0%}, sentencepiece {t_sp / total:.0%}, "
          f"kenlm {t_lm / total:.0%}, classifier {t_clf / total:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
