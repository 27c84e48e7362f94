"""Stage numbers out of range (``shard.target_shard_bytes=0``, ``ingest.max_doc_bytes=-1``,
``langid.default_threshold=2``) stop the job when the config loads, before Spark starts, with
exit status 2 and the fix; before, ``target_shard_bytes=0`` passed the driver checks and raised
a ValueError traceback only in the shard stage, after every earlier stage had run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("override, match", [
    ("shard.target_shard_bytes=0", r"shard\.target_shard_bytes must be an integer >= 1, got 0 "
                                   r"\(e\.g\. --set shard\.target_shard_bytes=134217728\)"),
    ("shard.target_shard_bytes=-5", r"shard\.target_shard_bytes must be an integer >= 1, got -5"),
    ("ingest.max_doc_bytes=0", r"ingest\.max_doc_bytes must be an integer >= 1, got 0"),
    ("langid.max_chars=abc", r"langid\.max_chars must be an integer >= 1, got 'abc'"),
    ("langid.default_threshold=2", r"langid\.default_threshold must be a number in \[0\.0, 1\.0\], got 2"),
    ("dedup.num_perm=abc", r"dedup\.num_perm must be an integer >= 1, got 'abc' \(e\.g\. --set dedup\.num_perm=128\)"),
    ("dedup.threshold=high", r"dedup\.threshold must be a number in \[0\.0, 1\.0\], got 'high'"),
    ("dedup.ngram=2.5", r"dedup\.ngram must be an integer >= 1, got 2\.5"),
])
def test_bad_stage_numbers_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_good_stage_numbers_pass():
    cfg = load_config(overrides=["shard.target_shard_bytes=1000", "ingest.max_doc_bytes=4096",
                                 "langid.default_threshold=0", "langid.max_chars=100"])
    assert cfg["shard"]["target_shard_bytes"] == 1000


def test_build_corpus_exit_2_before_spark(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    r = subprocess.run([sys.executable, "-m", "jobs.build_corpus", "--input", str(tmp_path / "*.jsonl"),
                        "--format", "jsonl", "--out", str(tmp_path / "out"),
                        "--set", "shard.target_shard_bytes=0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "shard.target_shard_bytes must be an integer >= 1" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stages", ["[shard,ingest]", "[ingest,ingest,shard]", "[langid,shard]", "[]"])
def test_stage_chain_out_of_order_or_empty_is_refused_at_load(stages):
    """`stages=[shard,ingest]` used to pass the config check and fail after Spark started
    (StageInputMissing traceback); `stages=[]` silently ran a default chain."""
    from pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="stages"):
        load_config(overrides=[f"stages={stages}"])
    assert load_config(overrides=["stages=[ingest,rules,shard]"])["stages"] == ["ingest", "rules", "shard"]


@pytest.mark.parametrize("override, message", [
    ("training.steps=abc", "training.steps: expected an integer, got 'abc'"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("metrics.tensorboard=maybe", "metrics.tensorboard: expected true or false, got 'maybe'"),
    ("training.micro_batch_size=2.5", "training.micro_batch_size: expected an integer, got 2.5"),
])
def test_train_config_value_types_named(override, message):
    """A value of the wrong type names its key and the expected type; before, `training.steps=abc`
    failed in the range check with "'<=' not supported between instances of 'str' and 'int'"."""
    from training.train_config import load_config as load_train_config

    with pytest.raises(ValueError) as e:
        load_train_config(REPO / "configs" / "train" / "tiny-test.yaml", [override])
    assert str(e.value) == message
