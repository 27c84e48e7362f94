"""Issue 15: restart at scale. A rerun skips the stages already published for the same input
and config (fingerprint in ``_SUCCESS``); a changed config reruns from the changed stage on;
``force`` redoes everything; the next stage reads exactly the files ``_SUCCESS`` lists."""
from __future__ import annotations

import json
import shutil

from pipeline.cli import run_stages
from pipeline.config import load_config
from tests.cluster_helpers import write_config

CHAIN = ["ingest", "langid", "shard"]
SOURCES = ["cc-whirlwind-wet", "cc-whirlwind-warc", "ccnet-wet"]


def _skipped(stats: dict) -> list[str]:
    return [s for s in CHAIN if stats[s].get("skipped")]


def _marker(out, stage) -> dict:
    marker = "corpus/.SUCCESS" if stage == "shard" else f"{stage}/_SUCCESS"  # corpus/: hidden marker
    return json.loads((out / marker).read_text())


def test_rerun_skips_published_stages_and_config_change_reruns_from_there(spark, shared_data, tmp_path):
    cfg = write_config(tmp_path / "pipeline.yaml", sources=SOURCES, stages=CHAIN)
    out = tmp_path / "out"
    first = run_stages(spark, str(out), load_config(cfg, str(shared_data)), CHAIN)
    assert _skipped(first) == []
    marks = {s: _marker(out, s) for s in CHAIN}
    assert all(m["fingerprint"] and m["files"] for m in marks.values())
    assert len({m["fingerprint"] for m in marks.values()}) == 3
    # corpus/ records its documents for `make tokenize`, which then needs no count() pass
    manifest = json.loads((out / "corpus" / ".manifest.json").read_text())
    assert marks["shard"]["rows"] == manifest["totals"]["documents"] == first["shard"]["totals"]["kept"] > 0

    again = run_stages(spark, str(out), load_config(cfg, str(shared_data)), CHAIN)
    assert _skipped(again) == CHAIN
    assert {s: again[s]["totals"] for s in CHAIN} == {s: first[s]["totals"] for s in CHAIN}
    assert {s: _marker(out, s) for s in CHAIN} == marks  # nothing republished

    # a changed langid threshold: ingest is reused, langid and everything after it rerun
    write_config(cfg, sources=SOURCES, stages=CHAIN, langid={"default_threshold": 0.9})
    changed = run_stages(spark, str(out), load_config(cfg, str(shared_data)), CHAIN)
    assert _skipped(changed) == ["ingest"]
    assert _marker(out, "ingest") == marks["ingest"]
    assert _marker(out, "langid")["fingerprint"] != marks["langid"]["fingerprint"]
    assert _marker(out, "shard")["fingerprint"] != marks["shard"]["fingerprint"]

    forced = run_stages(spark, str(out), load_config(cfg, str(shared_data)), CHAIN, force=True)
    assert _skipped(forced) == []
    assert forced["langid"]["totals"] == changed["langid"]["totals"]


def test_next_stage_reads_only_the_files_success_lists(spark, shared_data, tmp_path):
    """A stray data file in a published directory (left by an interrupted publish on an object
    store, where a directory rename is copy + delete) is not read by the next stage."""
    cfg = write_config(tmp_path / "pipeline.yaml", sources=SOURCES, stages=CHAIN)
    out = tmp_path / "out"
    config = load_config(cfg, str(shared_data))
    st = run_stages(spark, str(out), config, ["ingest", "langid"])
    listed = _marker(out, "ingest")["files"]
    shutil.copy(out / "ingest" / listed[0], out / "ingest" / "part-99999-stray.zstd.parquet")
    again = run_stages(spark, str(out), config, ["langid"], force=True)["langid"]
    assert again["documents_in"] == st["ingest"]["totals"]["kept"]
    assert again["totals"] == st["langid"]["totals"]
