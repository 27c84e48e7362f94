"""Issue 15: raw input on object storage. A real S3-protocol server (moto's standalone server
on 127.0.0.1, started and stopped here) holds a copy of a few sample files; the build from
``s3a://`` equals the local-path build, and a missing bucket / missing object is an error or a
quarantine record, never a silent skip."""
from __future__ import annotations

import json

import pytest

from pipeline import fs
from pipeline.cli import run_stages
from pipeline.config import load_config
from pipeline.readers import list_source_files, load_sources, read_source_file
from tests.cluster_helpers import assert_same_stage, write_config
from tests.s3_server import S3Server

#: WARC, WET and JSON lines (gzip) sources of the sample: every byte-level reader path.
SOURCES = ["cc-warc", "cc-whirlwind-wet", "dolma-jsonl"]
BUCKET, PREFIX = "raw-crawl", "sample"


@pytest.fixture(scope="module")
def s3(tmp_path_factory, shared_data):
    """The moto server with the files of :data:`SOURCES` (plus one more WARC) uploaded under
    ``s3://raw-crawl/sample/<path relative to the data root>``."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with S3Server(log=log) as server:
        server.make_bucket(BUCKET)
        for rel in ["resiliparse-tests/warcfile.warc.gz", "cc-whirlwind/whirlwind.warc.wet.gz",
                    "cc-whirlwind/whirlwind.warc.gz", *[p.relative_to(shared_data).as_posix() for p in
                                                        sorted((shared_data / "dolma-tests").glob("*.json*.gz"))]]:
            server.upload(shared_data / rel, BUCKET, f"{PREFIX}/{rel}")
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    fs.configure_input(fs.input_options())
    yield s3
    fs.configure_input({})


def test_glob_listing_on_s3_equals_local_glob(s3_env, shared_data):
    root = f"s3a://{BUCKET}/{PREFIX}"
    for globs, excl in [(["dolma-tests/*.jsonl.gz", "dolma-tests/*.json.gz"], []),
                        (["**/*.gz"], ["cc-whirlwind/*.wet.gz"]),
                        (["cc-whirlwind/whirlwind.warc.[gw]*"], []),
                        (["*/whirlwind.warc.gz"], [])]:
        remote = fs.list_files(root, globs, excl)
        local = fs.list_files(str(shared_data), globs, excl)
        uploaded = [p for p in local if not p.endswith((".wat.gz",)) and "clueweb" not in p
                    and "sample-000" not in p]
        assert [fs.relpath(p, root) for p in remote] == [fs.relpath(p, str(shared_data)) for p in uploaded], globs
        assert remote and all(p.startswith(root + "/") for p in remote)


def test_s3_build_equals_local_build(spark, s3_env, shared_data, tmp_path):
    cfg = write_config(tmp_path / "pipeline.yaml", sources=SOURCES, stages=["ingest", "langid"])
    local, remote = tmp_path / "local", tmp_path / "s3"
    st_local = run_stages(spark, str(local), load_config(cfg, str(shared_data)), ["ingest", "langid"])
    config = load_config(cfg, f"s3a://{BUCKET}/{PREFIX}")
    assert config["data_root"] == f"s3a://{BUCKET}/{PREFIX}", "the URI must not become a local path"
    st_s3 = run_stages(spark, str(remote), config, ["ingest", "langid"])
    for stage in ("ingest", "langid"):
        assert st_local[stage]["totals"] == st_s3[stage]["totals"], stage
        assert_same_stage(local, remote, stage)  # same ids, reasons, kept rows (meta.path included)
    tot = st_s3["ingest"]["totals"]
    assert tot["kept"] > 50 and tot["in"] == tot["kept"] + sum(tot["quarantined"].values()) + sum(tot["removed"].values())
    assert st_s3["langid"]["totals"]["kept"] > 0  # the survivors of langid, equal above


def test_missing_bucket_is_a_clear_error(s3_env):
    src = {"name": "x", "format": "warc", "glob": "*.warc.gz", "tier": "web"}
    with pytest.raises(fs.InputError, match="no-such-bucket"):
        list_source_files(src, "s3a://no-such-bucket/raw")
    with pytest.raises(ValueError, match="no files match"):  # bucket exists, nothing under the prefix
        list_source_files(src, f"s3a://{BUCKET}/no-such-prefix")


def test_missing_or_unreadable_object_is_quarantined(s3_env):
    src = load_sources(["configs/sources/sample.yaml"])
    warc = next(s for s in src if s["name"] == "cc-warc")
    root = f"s3a://{BUCKET}/{PREFIX}"
    recs = list(read_source_file(f"{root}/resiliparse-tests/gone.warc.gz", warc, root))
    assert [r["reason"] for r in recs] == ["unreadable_file"]
    assert "gone.warc.gz" in recs[0]["meta"]["path"] and json.loads(recs[0]["detail"])["error"]
    recs = list(read_source_file(f"s3a://no-such-bucket/{PREFIX}/a.warc.gz", warc, f"s3a://no-such-bucket/{PREFIX}"))
    assert [r["reason"] for r in recs] == ["unreadable_file"]


def test_remote_glob_semantics_equal_glob_glob(tmp_path):
    """The pattern matching used for object-store listings (:func:`pipeline.fs._glob_regex`)
    selects the same files as :func:`glob.glob` (recursive) on a local tree."""
    import glob
    import os

    tree = ["a.warc.gz", "b.jsonl", "d/c.warc.gz", "d/e/f.warc.gz", "d/e/g.json.gz", "x1.txt", "x2.txt",
            "xa.txt", "[odd].txt", ".hidden/h.warc.gz", "d/.h.warc.gz"]
    for rel in tree:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    for pat in ["*.warc.gz", "**/*.warc.gz", "d/**/*.gz", "d/*/*.gz", "x[0-9].txt", "x[!0-9].txt", "x?.txt",
                "**", "d/**", "*/e/*"]:
        want = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / pat), recursive=True)
                      if os.path.isfile(p))
        rx = fs._glob_regex(pat)
        got = sorted(f for f in files if rx.match(f) and not any(c.startswith(".") for c in f.split("/")))
        assert got == want, pat
