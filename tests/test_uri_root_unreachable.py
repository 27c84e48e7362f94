"""A URI data root nobody serves (``--data-root s3a://nope-bucket/x`` with no server) ends the build
with exit status 2 and the listing error (bucket, endpoint, credentials to check), not an
InputError traceback with status 1. Real code: ``jobs.build_corpus`` in a subprocess, the S3
endpoint pointed at a closed local port so it fails at once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_unreachable_uri_data_root_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    r = subprocess.run([sys.executable, "-m", "jobs.build_corpus", "--out", str(tmp_path / "out"),
                        "--data-root", "s3a://nope-bucket/x", "--set", "stages=[ingest]",
                        "--master", "local[1]"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "error: cannot list s3a://nope-bucket/x/" in r.stderr
    assert "AWS_ENDPOINT_URL" in r.stderr
