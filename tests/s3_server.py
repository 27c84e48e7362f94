"""A real S3-protocol server on 127.0.0.1 for tests: moto's standalone server (``moto_server``,
pinned in pyproject's ``test`` extra) in a subprocess, started and stopped by the caller."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class S3Server:
    """``with S3Server() as s3:`` -> ``s3.endpoint`` (``http://127.0.0.1:<port>``), ``s3.env``
    (the AWS_* variables pointing a client at it), :meth:`upload` and :meth:`make_bucket`."""

    def __init__(self, log: Path | None = None):
        from jobs.cluster import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}

    def __enter__(self) -> "S3Server":
        exe = Path(sys.executable).with_name("moto_server")
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        t_end = time.time() + 60
        while time.time() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("moto_server did not answer within 60 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def upload(self, local: Path, bucket: str, key: str) -> None:
        self.client().upload_file(str(local), bucket, key)
