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
