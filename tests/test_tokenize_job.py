"""The tokenize Spark job (issue 5): token shards + manifest in the format the trainer reads,
bilingual documents under source=parallel, rejections with reasons, exact manifest counts and
byte-identical reruns."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.test_tokenizer import build_corpus_fixture
from jobs import tokenize as TJ
from training import tokenizer as T

REPO = Path(__file__).resolve().parent.parent


def _add_bad_docs(corpus: Path) -> None:
    d = corpus / "ar" / "odd"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([dict(r, lang="ar", source="odd") for r in [
        {"id": "odd-empty", "tier": "web", "url": None, "text": "  \n ", "meta": "{}", "lang_score": 0.9},
        {"id": "odd-parallel", "tier": "parallel", "url": None, "text": "نص", "meta": "{broken", "lang_score": 0.9},
        {"id": "odd-ok", "tier": "web", "url": None, "text": "مرحبا 2024 😀", "meta": "{}", "lang_score": 0.9},
    ]]), d / "part-00000.parquet")


@pytest.fixture(scope="module")
def tok_out(tmp_path_factory, shared_data):
    """A fixture corpus plus a small SentencePiece model at ``<out>/tokenizer/spm.model``."""
    out = tmp_path_factory.mktemp("tokenize")
    corpus = build_corpus_fixture(shared_data, out, pud_docs=4, max_docs=6)
    _add_bad_docs(corpus)
    sample = out / "sample.txt"
    T.write_training_sample(corpus, sample, 0.3, 200_000)
    chars = len(set(sample.read_text(encoding="utf-8")))
    cfg = T.TokenizerConfig(vocab_size=chars + 260 + 1500, input_sentence_size=0, num_threads=2,
                            train_extremely_large_corpus=False)
    T.train_spm(sample, out / "tokenizer" / "spm", cfg)
    return out


def _cfg(shard_tokens=1_500):
    cfg = T.load_config(profile="sample")
    cfg["tokenize"]["shard_tokens"] = shard_tokens
    return cfg


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_tokenize_job_shards_manifest_and_rerun(spark, tok_out):
    from jobs.tokenize import run_tokenize

    out = tok_out
    model = str(out / "tokenizer" / "spm.model")
    sp = T.load_spm(model)
    m = run_tokenize(spark, str(out), _cfg())
    tokens = out / "tokens"
    assert set(m) == {"tokenizer", "vocab_size", "bos_id", "eos_id", "pad_id", "streams", "total_tokens"}
    assert m == json.loads((tokens / ".manifest.json").read_text())
    assert (m["vocab_size"], m["bos_id"], m["eos_id"], m["pad_id"]) == (sp.get_piece_size(), 1, 2, 3)
    # the tokenizer path is relative to tokens/ (issue 16 item 8), so the folders can move together
    assert not Path(m["tokenizer"]).is_absolute()
    assert (tokens / m["tokenizer"]).resolve() == Path(model).resolve()
    assert (tokens / ".SUCCESS").exists() and not (tokens / "manifest.json").exists()

    # manifest counts == sums over the shards; format of every shard
    total = 0
    corpus_rows = T.corpus_dataset(out / "corpus").to_table().to_pylist()
    corpus_text = {r["id"]: r for r in corpus_rows}
    seen_ids = set()
    for s in m["streams"]:
        assert set(s) == {"lang", "source", "tier", "documents", "tokens", "files"}
        docs = toks = 0
        for f in s["files"]:
            assert f.startswith(f"{s['lang']}/{s['source']}/part-") and f.endswith(".parquet")
            t = pq.read_table(tokens / f)
            assert t.schema.field("input_ids").type == pa.list_(pa.int32())
            assert t.schema.field("id").type == pa.string()
            ids = t.column("id").to_pylist()
            assert ids == sorted(ids)
            rows = t.column("input_ids").to_pylist()
            # n_tokens lets each trainer rank index row lengths without decoding input_ids, and
            # row groups of about ROW_GROUP_TOKENS tokens keep what a rank decodes near its own rows
            assert t.column("n_tokens").to_pylist() == [len(x) for x in rows]
            md = pq.ParquetFile(tokens / f).metadata
            per_group = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
            mean = sum(len(x) for x in rows) / len(rows)
            assert max(per_group) <= max(64, min(8192, int(TJ.ROW_GROUP_TOKENS // mean))), per_group
            for doc_id, x in zip(ids, rows):
                assert x[-1] == 2 and 2 not in x[:-1] and 1 not in x and 3 not in x
                seen_ids.add(doc_id)
            docs += t.num_rows
            toks += sum(len(x) for x in rows)
        assert (docs, toks) == (s["documents"], s["tokens"]), s
        total += toks
    assert total == m["total_tokens"]
    streams = {(s["lang"], s["source"]): s for s in m["streams"]}
    assert len(streams["en", "ntrex"]["files"]) > 1, "shard_tokens should split the English NTREX stream"

    # monolingual documents decode back to their corpus text
    t = pq.read_table(tokens / streams["ko", "ntrex"]["files"][0])
    for doc_id, x in zip(t.column("id").to_pylist()[:10], t.column("input_ids").to_pylist()[:10]):
        assert sp.decode(x[:-1]) == corpus_text[doc_id]["text"]

    # parallel-tier docs -> bilingual documents under source=parallel, never under their own source
    assert ("de", "pud") not in streams and ("de", "parallel") in streams
    for lang in ("de", "zh", "ar"):
        s = streams[lang, "parallel"]
        assert s["tier"] == "parallel" and s["documents"] == 4  # pud_docs
        t = pa.concat_tables([pq.read_table(tokens / f) for f in s["files"]])
        for doc_id, x in zip(t.column("id").to_pylist(), t.column("input_ids").to_pylist()):
            base, direction = doc_id.split("#")
            assert direction in (f"en-{lang}", f"{lang}-en")
            text = sp.decode(x[:-1])
            src = corpus_text[base]
            pairs = json.loads(src["meta"])["pairs"]
            for en, xx in pairs:
                assert en in text and xx in text
    # rejected documents, with reasons, accounted for
    stats = json.loads((out / "stats" / "tokenize.json").read_text())
    assert stats["totals"]["removed"] == {"empty_text": 1, "parallel_meta_invalid": 1}
    assert stats["totals"]["in"] == len(corpus_rows) == stats["totals"]["kept"] + 2
    rej = ds.dataset(str(out / "rejected" / "stage=tokenize"), format="parquet", partitioning="hive").to_table()
    got = {(r["id"], r["reason"]) for r in rej.to_pylist()}
    assert got == {("odd-empty", "empty_text"), ("odd-parallel", "parallel_meta_invalid")}
    assert "odd-ok" in seen_ids and "odd-empty" not in seen_ids

    # every usual loader opens tokens/ as one table, lang and source in every row (issue 16 item 4)
    from tests.test_own_data import open_with_loaders

    frames = open_with_loaders(tokens)
    assert len(frames["datasets"]) == sum(s["documents"] for s in m["streams"])
    assert set(zip(frames["pandas"]["lang"], frames["pandas"]["source"])) == {(s["lang"], s["source"]) for s in m["streams"]}

    # tokenizing twice gives byte-identical shards and the same manifest
    first = _digest(tokens)
    m2 = run_tokenize(spark, str(out), _cfg())
    assert m2 == m
    assert _digest(tokens) == first


def test_tokenize_job_errors(spark, tmp_path, tok_out):
    from jobs.tokenize import run_tokenize

    with pytest.raises(FileNotFoundError, match="make corpus"):
        run_tokenize(spark, str(tmp_path), _cfg())
    with pytest.raises(FileNotFoundError, match="make tokenizer"):
        run_tokenize(spark, str(tok_out), _cfg(), model_path=str(tmp_path / "missing.model"))
    bad = _cfg()
    bad["tokenize"]["shard_tokenz"] = 5
    with pytest.raises(ValueError, match="unknown keys"):
        run_tokenize(spark, str(tok_out), bad)


@pytest.mark.parametrize("job", ["jobs.tokenize", "jobs.tokenizer"])
def test_cli_help(job):
    r = subprocess.run([sys.executable, "-m", job, "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--out" in r.stdout and "--profile" in r.stdout


def test_token_shard_row_groups_sized_by_tokens(tmp_path):
    """Long documents: row groups of about ROW_GROUP_TOKENS tokens (not 8192 rows), so a
    trainer rank that needs a few rows decodes a few MiB, not the whole shard; n_tokens per row."""
    rows = [[5] * 40_000 for _ in range(200)] + [[6] * 10 for _ in range(100)]
    table = pa.table({"id": [f"d{i:04d}" for i in range(len(rows))],
                      "input_ids": pa.array(rows, pa.list_(pa.int32()))})
    res = TJ.ShardWriter(str(tmp_path))((pa.scalar("de"), pa.scalar("web"), pa.scalar(0, pa.int32())), table)
    f = tmp_path / res.column("file")[0].as_py()
    md = pq.ParquetFile(f).metadata
    assert md.num_row_groups >= 4 and max(md.row_group(g).num_rows for g in range(md.num_row_groups)) <= 64
    t = pq.read_table(f)
    assert t.column("n_tokens").to_pylist() == [len(x) for x in t.column("input_ids").to_pylist()]
    assert res.column("tokens")[0].as_py() == 200 * 40_000 + 100 * 10


def _reference_rows(batch: pa.RecordBatch, sp, bilingual: dict, parallel_source: str = "parallel") -> list[dict]:
    """What the tokenize job must produce for ``batch``, one document at a time with a plain
    ``sp.encode(text)`` (the specification of :class:`training.tokenizer.TokenizeBatch`)."""
    from training.bilingual import BilingualConfig, BilingualError, render

    bcfg = BilingualConfig.from_dict(bilingual)
    rows = []
    for r in batch.to_pylist():
        base = {"lang": r["lang"], "tier": r["tier"], "detail": None}
        if r["tier"] == "parallel":
            try:
                docs = render(r["id"], r["meta"], bcfg)
            except BilingualError as e:
                rows.append({**base, "id": r["id"], "source": r["source"], "input_ids": None, "n_tokens": 0,
                             "n_chars": 0, "input_docs": 1, "reason": "parallel_meta_invalid",
                             "detail": json.dumps({"error": str(e)}, ensure_ascii=False)})
                continue
            for j, (nid, text, _d) in enumerate(docs):
                ids = sp.encode(text) + [sp.eos_id()]
                rows.append({**base, "id": nid, "source": parallel_source, "input_ids": ids, "n_tokens": len(ids),
                             "n_chars": len(text), "input_docs": int(j == 0), "reason": None})
        elif r["text"] is None or not r["text"].strip():
            rows.append({**base, "id": r["id"], "source": r["source"], "input_ids": None, "n_tokens": 0,
                         "n_chars": 0, "input_docs": 1, "reason": "empty_text"})
        else:
            ids = sp.encode(r["text"]) + [sp.eos_id()]
            rows.append({**base, "id": r["id"], "source": r["source"], "input_ids": ids, "n_tokens": len(ids),
                         "n_chars": len(r["text"]), "input_docs": 1, "reason": None})
    return rows


@pytest.mark.parametrize("threads", [1, 2])
def test_tokenize_batch_equals_plain_encode_per_document(tok_out, threads):
    """Issue 19 item 3: the batched, threaded encode with Arrow output built from flat arrays
    gives exactly the per-document ``sp.encode(text) + [eos]`` rows, on batches without parallel
    documents (the Arrow pass-through path) and with them (the per-row path), including empty,
    whitespace-only (Unicode spaces too) and null texts."""
    model = str(tok_out / "tokenizer" / "spm.model")
    sp = T.load_spm(model)
    corpus = T.corpus_dataset(tok_out / "corpus").to_table(columns=["id", "lang", "source", "tier", "text", "meta"])
    odd = [{"id": f"odd-{i}", "lang": "ja", "source": "web", "tier": "web", "text": t, "meta": None}
           for i, t in enumerate(["", " \n\t", "\u3000\u2003\x1c", None, "\u3000x", "a", "😀 2024"])]
    mono = pa.concat_tables([corpus.filter(pa.compute.not_equal(corpus["tier"], "parallel")).slice(0, 300),
                             pa.Table.from_pylist(odd, schema=corpus.schema)]).combine_chunks().to_batches()[0]
    mixed = pa.concat_tables([corpus.slice(0, 40), corpus.filter(pa.compute.equal(corpus["tier"], "parallel")),
                              pa.Table.from_pylist(odd, schema=corpus.schema),
                              pa.Table.from_pylist([{"id": "bad-par", "lang": "de", "source": "pud", "tier": "parallel",
                                                     "text": "x", "meta": "{broken"}], schema=corpus.schema)]
                             ).combine_chunks().to_batches()[0]
    bil = _cfg().get("bilingual") or {}
    fn = T.TokenizeBatch(model, bil, "parallel", num_threads=threads)
    for batch in (mono, mixed):
        got = fn(batch)
        assert got.schema.names == ["id", "lang", "source", "tier", "input_ids", "n_tokens", "n_chars",
                                    "input_docs", "reason", "detail"]
        assert got.schema.field("input_ids").type == pa.list_(pa.int32())
        assert got.to_pylist() == _reference_rows(batch, sp, bil)
    assert sum(r["tier"] == "parallel" for r in mixed.to_pylist()) > 1
    with pytest.raises(ValueError, match="num_threads"):
        T.TokenizeBatch(model, bil, num_threads=0)


def test_shard_order_by_id_then_token_digest():
    """Token shards sort rows by id (Python str order, non-ASCII ids included) and break ties
    by the token bytes' digest: the Arrow sort gives the order of the per-row Python sort."""
    def reference(ids, toks):
        dig = [hashlib.blake2b(pa.array(t, pa.int32()).to_numpy().tobytes(), digest_size=8).digest() for t in toks]
        return sorted(range(len(ids)), key=lambda i: (ids[i], dig[i]))

    unique = ["b", "a", "é", "z", "Z", "日本", "\U0001F600", "ab", "a\u0001"]
    dup = ["d", "c", "d", "a", "c"]
    for ids in (unique, dup):
        toks = [[i + 4, 7 * i % 5 + 4] for i in range(len(ids))]
        order = TJ._id_order(pa.chunked_array([pa.array(ids[:3]), pa.array(ids[3:])]),
                             pa.chunked_array([pa.array(toks[:3], pa.list_(pa.int32())),
                                               pa.array(toks[3:], pa.list_(pa.int32()))]))
        assert order.type == pa.int64() and order.to_pylist() == reference(ids, toks)


def _publish_like_shard_stage(corpus: Path, rows: int) -> list[str]:
    files = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.parquet"))
    (corpus / ".SUCCESS").write_text(json.dumps({"fingerprint": "f", "files": files, "rows": rows}))
    return files


def test_tokenize_reads_the_files_and_count_the_corpus_marker_records(spark, tok_out, tmp_path):
    """Issue 19 item 3: a corpus published by the shard stage records its files and documents in
    ``.SUCCESS``: the job reads exactly those files and takes that count (no count() pass); a
    stray file is not read, and a count that the output does not match is an error."""
    import shutil

    from jobs.tokenize import run_tokenize

    out = tmp_path / "o"
    shutil.copytree(tok_out / "corpus", out / "corpus")
    corpus_rows = T.corpus_dataset(out / "corpus").to_table().num_rows
    files = _publish_like_shard_stage(out / "corpus", corpus_rows)
    assert TJ.corpus_input(spark, str(out / "corpus")) == (corpus_rows, files)
    shutil.copy(out / "corpus" / files[0], out / "corpus" / files[0].replace("part-", "part-9"))  # stray
    model = str(tok_out / "tokenizer" / "spm.model")
    m = run_tokenize(spark, str(out), _cfg(), model_path=model)
    stats = json.loads((out / "stats" / "tokenize.json").read_text())
    assert stats["totals"]["in"] == corpus_rows and stats["documents_in"] == corpus_rows
    assert sum(s["documents"] for s in m["streams"]) == stats["extra"]["documents_out"]
    assert not (out / "_tmp").exists() or not any((out / "_tmp").iterdir())

    # an older shard-stage marker without rows: the manifest's totals give the count
    (out / "corpus" / ".SUCCESS").write_text(json.dumps({"fingerprint": "f", "files": files}))
    (out / "corpus" / ".manifest.json").write_text(json.dumps({"totals": {"documents": corpus_rows}}))
    assert TJ.corpus_input(spark, str(out / "corpus")) == (corpus_rows, files)

    (out / "corpus" / files[0].replace("part-", "part-9")).unlink()
    _publish_like_shard_stage(out / "corpus", corpus_rows + 1)
    with pytest.raises(RuntimeError, match="accounts for"):
        run_tokenize(spark, str(out), _cfg(), model_path=model)
    # the failed run published nothing over the previous tokens/
    assert (out / "tokens" / ".SUCCESS").exists()
    assert json.loads((out / "tokens" / ".manifest.json").read_text()) == m

