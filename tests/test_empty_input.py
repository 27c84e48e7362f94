"""Empty input (issue 14, cause 6): a source whose files yield 0 documents runs through every
configured stage; each stage publishes a valid empty output with a schema and its stats add up."""
from __future__ import annotations

import os

from pipeline.cli import run_stages
from pipeline.config import load_config


def test_zero_documents_run_through_every_stage(spark, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "empty.jsonl").write_bytes(b"")           # no record at all
    (root / "blank.jsonl").write_bytes(b"\n\n  \n")   # blank lines only: no record either
    config = load_config(None, str(root))
    config["sources"] = [{"name": "nothing", "format": "jsonl", "glob": "*.jsonl", "tier": "web"}]
    out = str(tmp_path / "out")
    stats = run_stages(spark, out, config, config["stages"])
    assert list(stats) == config["stages"]
    for name, st in stats.items():
        tot = st["totals"]
        assert tot["in"] == tot["kept"] + sum(tot["removed"].values()) + sum(tot["quarantined"].values())
        assert tot["kept"] == 0, (name, tot)
        pub = f"{out}/{'corpus' if name == 'shard' else name}"
        marker = ".SUCCESS" if name == "shard" else "_SUCCESS"  # corpus/ hides it from parquet loaders
        assert os.path.exists(f"{pub}/{marker}"), name
    for name in config["stages"][:-1]:
        df = spark.read.parquet(f"{out}/{name}")   # readable, with a schema
        assert df.count() == 0 and "text" in df.columns, name
