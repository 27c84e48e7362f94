"""Benchmark: tokenization throughput of the tokenize Spark job vs raw SentencePiece encode.

Input: NTREX documents (18 languages) replicated and perturbed to ``--docs`` documents
(synthetic enlargement: the output says so), written as a corpus in the shard stage's layout.
Model: ``--model`` or ``build/sample/tokenizer/spm.model`` when it exists, else a small model
trained here on NTREX (announced).

Prints plain lines:
* ``raw_encode_tokens_per_sec_per_core``: ``SentencePieceProcessor.encode`` on the same texts,
  one thread, batch call.
* ``spark_tokenize_tokens_per_sec_per_core``: the job's tokenize pass (read corpus, encode in
  ``mapInArrow``, write the tokenized temp parquet) divided by the cores of ``local[N]``.
* ``spark_job_tokens_per_sec_per_core``: the whole job (incl. shard writing, manifest, counts).

``python bench/bench_tokenize.py --help``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import data_root, enlarge, ntrex_documents  # noqa: E402


def write_corpus(docs: list[tuple[str, str]], corpus: Path, files_per_lang: int = 2) -> None:
    """Write (lang, text) docs as ``corpus/<lang>/bench/part-*.parquet`` + ``.SUCCESS`` (the shard stage's layout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_lang: dict[str, list] = {}
    for i, (lang, text) in enumerate(docs):
        by_lang.setdefault(lang, []).append({"id": f"bench-{i:08d}", "tier": "web", "url": None, "text": text,
                                             "meta": "{}", "lang_score": 1.0, "lang": lang, "source": "bench"})
    for lang, rows in by_lang.items():
        d = corpus / lang / "bench"
        d.mkdir(parents=True, exist_ok=True)
        k = max(1, min(files_per_lang, len(rows)))
        for j in range(k):
            pq.write_table(pa.Table.from_pylist(rows[j::k]), d / f"part-{j:05d}.parquet")
    (corpus / ".SUCCESS").write_text("")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--docs", type=int, default=int(os.environ.get("BENCH_TOKENIZE_DOCS", 6000)),
                   help="documents (NTREX replicated + perturbed)")
    p.add_argument("--cores", type=int, default=2, help="Spark local[N] cores")
    p.add_argument("--model", default=None, help="SentencePiece model (default: build/sample/tokenizer/spm.model)")
    args = p.parse_args(argv)

    from training import tokenizer as T

    real = [(lang, text) for lang, _d, text in ntrex_documents(data_root())]
    docs = enlarge(real, args.docs, seed=0)
    print(f"data: {len(docs)} documents = {len(real)} real NTREX documents replicated and perturbed "
          f"(synthetic enlargement, not new text); {sum(len(t) for _, t in docs):,} characters")
    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        tmp = Path(tmp)
        model = args.model or str(REPO / "build" / "sample" / "tokenizer" / "spm.model")
        if not os.path.exists(model):
            sample = tmp / "sample.txt"
            sample.write_text("\n".join(t for _, t in real), encoding="utf-8")
            chars = len(set(sample.read_text(encoding="utf-8")))
            cfg = T.TokenizerConfig(vocab_size=chars + 260 + 4000, input_sentence_size=0,
                                    train_extremely_large_corpus=False)
            model = T.train_spm(sample, tmp / "spm", cfg)
            print(f"model: trained here on NTREX (vocab {cfg.vocab_size}); "
                  f"build/sample/tokenizer/spm.model not found")
        else:
            print(f"model: {model}")
        sp = T.load_spm(model)
        texts = [t for _, t in docs]
        t0 = time.perf_counter()
        ids = sp.encode(texts, num_threads=1)
        raw_s = time.perf_counter() - t0
        raw_tokens = sum(len(x) for x in ids) + len(ids)  # + EOS per document, as in the shards
        print(f"raw_encode_seconds {raw_s:.3f}")
        print(f"raw_encode_tokens_per_sec_per_core {raw_tokens / raw_s:.0f}")

        out = tmp / "out"
        write_corpus(docs, out / "corpus")
        from jobs.tokenize import run_tokenize
        from pipeline.session import build_spark

        spark = build_spark("bench-tokenize", master=f"local[{args.cores}]",
                            conf={"spark.sql.shuffle.partitions": str(2 * args.cores)})
        try:
            cfg = T.load_config(profile="sample")
            run_tokenize(spark, str(out), cfg, model_path=model)  # warm-up (JVM, Python workers)
            t0 = time.perf_counter()
            m = run_tokenize(spark, str(out), cfg, model_path=model)
            job_s = time.perf_counter() - t0
        finally:
            spark.stop()
        import json

        stats = json.loads((out / "stats" / "tokenize.json").read_text())
        tok_s = stats["extra"]["tokenize_seconds"]
        total = m["total_tokens"]
        if total != raw_tokens:
            print(f"WARNING: job counted {total} tokens, raw encode {raw_tokens}")
        print(f"spark_cores {args.cores}")
        print(f"spark_tokenize_seconds {tok_s:.3f}")
        print(f"spark_tokenize_tokens_per_sec_per_core {total / tok_s / args.cores:.0f}")
        print(f"spark_job_seconds {job_s:.3f}")
        print(f"spark_job_tokens_per_sec_per_core {total / job_s / args.cores:.0f}")
        print(f"spark_tokenize_vs_raw_per_core {total / tok_s / args.cores / (raw_tokens / raw_s):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
