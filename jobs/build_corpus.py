"""Build the whole corpus (every configured stage, then the report).

`python -m jobs.build_corpus --help` or `spark-submit jobs/build_corpus.py ...`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import build_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(build_main())
