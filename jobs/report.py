"""Rewrite report.json / report.html from the stats of the stages that ran."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import report_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(report_main())
