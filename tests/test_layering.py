"""Layering of the code base (DESIGN.md "Shape"): data flows jobs/ -> pipeline/ -> filters/.

``jobs/`` holds thin CLI entry points; nothing in ``pipeline/`` or ``filters/`` may import them,
and ``filters/`` (pure Python) never imports ``pipeline/`` or Spark.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in a file, including imports inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, mod in _imports(path):
            if mod.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return bad


def test_pipeline_and_filters_never_import_jobs():
    assert _offenders("pipeline", ("jobs",)) == []
    assert _offenders("filters", ("jobs",)) == []


def test_filters_import_neither_pipeline_nor_spark():
    assert _offenders("filters", ("pipeline", "pyspark", "jobs")) == []


def test_train_quality_models_job_is_thin():
    """The quality-model recipe lives in pipeline/quality_models.py and
    filters/quality_calibration.py; the job only parses arguments."""
    src = (ROOT / "jobs" / "train_quality_models.py").read_text(encoding="utf-8")
    assert len(src.splitlines()) < 150
    tree = ast.parse(src)
    assert [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))] == ["main"]
