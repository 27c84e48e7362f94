"""Run the `ingest` stage: `python -m jobs.ingest --help` or `spark-submit jobs/ingest.py ...`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import stage_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(stage_main("ingest"))
