"""spark-submit entry point: ``spark-submit scripts/spark_job.py <job> [job args...]`` runs
``python -m jobs.<job>`` with the repository root (not ``jobs/``) first on ``sys.path``.

Running ``jobs/<job>.py`` as a script would put ``jobs/`` itself on ``sys.path``, where
``jobs/tokenize.py`` shadows the standard library's ``tokenize`` module (imported by
``inspect`` / ``linecache``) and the driver fails at import time. Used by ``jobs/cluster.py``.
"""
import os
import runpy
import sys

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = repo
    job = sys.argv[1]
    sys.argv = [os.path.join(repo, "jobs", f"{job}.py"), *sys.argv[2:]]
    runpy.run_module(f"jobs.{job}", run_name="__main__", alter_sys=True)
