"""Build the whole corpus (every configured stage, then the report).

`python -m jobs.build_corpus --help` or `spark-submit jobs/build_corpus.py ...`.
"""
import os
import sys

# Run as a script (spark-submit jobs/x.py), Python puts jobs/ first on sys.path, where
# jobs/tokenize.py would shadow the standard library's tokenize: use the repo root instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = _ROOT
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from pipeline.cli import build_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(build_main())
