"""End to end: the configured corpus build on the real sample, and the bad-input file set fed
through the same Spark code as `make corpus`."""
from __future__ import annotations

import collections
import json
import os

import pyarrow.dataset as ds

from pipeline.cli import run_stages
from pipeline.config import TARGET_LANGS, load_config
from tests.test_bad_input import build_bad_inputs


def _balanced(c: dict) -> bool:
    return c["in"] == c["kept"] + sum(c["removed"].values()) + sum(c["quarantined"].values())


def test_sample_build_all_languages_and_accounting(sample_build):
    out, config, stats = sample_build
    man = json.load(open(f"{out}/corpus/.manifest.json"))
    assert set(TARGET_LANGS) <= set(man["per_lang"]), f"missing languages: {set(TARGET_LANGS) - set(man['per_lang'])}"
    # The manifest agrees with the shards on disk.
    corpus = ds.dataset(f"{out}/corpus", format="parquet", partitioning="hive",
                        exclude_invalid_files=True).to_table(columns=["id", "lang", "source", "text"])
    assert corpus.num_rows == man["totals"]["documents"]
    by_stream = collections.Counter(zip(corpus.column("lang").to_pylist(), corpus.column("source").to_pylist()))
    for s in man["streams"]:
        assert by_stream[(s["lang"], s["source"])] == s["documents"]
        assert s["files"] and all(os.path.exists(f"{out}/corpus/{f}") for f in s["files"])
    assert len(set(corpus.column("id").to_pylist())) == corpus.num_rows
    # Every stage accounts for every document, per language and per source; chained counts agree.
    prev_kept = None
    for name in config["stages"]:
        st = json.load(open(f"{out}/stats/{name}.json"))
        assert _balanced(st["totals"])
        assert all(_balanced(c) for c in st["per_lang"].values())
        assert all(_balanced(c) for c in st.get("per_source", {}).values())
        if prev_kept is not None:
            assert st["totals"]["in"] == prev_kept, name
        prev_kept = st["totals"]["kept"]
        assert os.path.exists(f"{out}/corpus/.SUCCESS" if name == "shard" else f"{out}/{name}/_SUCCESS")
    assert prev_kept == man["totals"]["documents"]
    rep = json.load(open(f"{out}/report.json"))
    assert rep["chain"] == config["stages"]
    html = open(f"{out}/report.html", encoding="utf-8").read()
    assert "Per-language funnel" in html and "data:image/png;base64," in html


def test_ids_stable_across_reruns(sample_build, spark, tmp_path, shared_data):
    out, config, _ = sample_build
    cfg = dict(config)
    cfg["ingest"] = {**(config.get("ingest") or {}), "only_sources": ["ntrex", "pud-parallel", "dolma-jsonl"]}
    run_stages(spark, str(tmp_path), cfg, ["ingest"])
    again = {(r.source, r.id) for r in spark.read.parquet(str(tmp_path / "ingest")).select("source", "id").collect()}
    first = {(r.source, r.id) for r in spark.read.parquet(f"{out}/ingest")
             .where("source in ('ntrex', 'pud-parallel', 'dolma-jsonl')").select("source", "id").collect()}
    assert again == first and len(first) > 2000


def test_bad_input_accounted_end_to_end(spark, tmp_path):
    """Acceptance (issue 2): every bad record is accounted for with the right reason."""
    root = str(tmp_path / "data")
    os.makedirs(root)
    sources, expected = build_bad_inputs(root)
    config = load_config(None, root)
    config["sources"] = sources
    config["stages"] = ["ingest", "langid", "shard"]
    out = str(tmp_path / "out")
    stats = run_stages(spark, out, config, config["stages"])
    ing = stats["ingest"]
    for name, exp in expected.items():
        got = ing["per_source"][name]
        assert got["kept"] == exp.get("ok", 0), (name, got)
        assert got["quarantined"] == {k: v for k, v in exp.items() if k != "ok"}, (name, got)
        assert _balanced(got)
    q = spark.read.parquet(f"{out}/quarantine")
    counts = collections.Counter((r.source, r.reason) for r in q.select("source", "reason").collect())
    for name, exp in expected.items():
        for reason, n in exp.items():
            if reason != "ok":
                assert counts[(name, reason)] == n, (name, reason)
    # Quarantined text is a bounded snippet, not the 20 MB document.
    big = q.where("reason = 'doc_too_large'").selectExpr("max(length(text)) as m").first().m
    assert big <= 64 * 1024
    assert all(_balanced(s["totals"]) for s in stats.values())
    assert stats["langid"]["totals"]["in"] == ing["totals"]["kept"]
