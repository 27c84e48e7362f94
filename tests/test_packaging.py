"""pyproject.toml: test/benchmark-only libraries are extras, not runtime dependencies."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("pipeline", "filters", "training", "jobs")
#: Libraries used only by tests and benchmarks (issue 16 item 9), by import name.
TEST_ONLY = {"datasketch": "datasketch", "networkx": "networkx", "jieba": "jieba"}


def _dist(req: str) -> str:
    return re.split(r"[=<>!~\[; ]", req, maxsplit=1)[0].strip().lower()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_test_only_libraries_are_extras():
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_dist(r) for r in proj["dependencies"]}
    extras = proj["optional-dependencies"]
    installed_by_make = {_dist(r) for name in ("test", "bench") for r in extras.get(name, [])}
    for dist, mod in TEST_ONLY.items():
        assert dist not in runtime, f"{dist} is a runtime dependency but only tests/benchmarks use it"
        assert dist in installed_by_make, f"{dist} must stay in the test or bench extra (make setup installs both)"
        users = [str(p.relative_to(REPO)) for pkg in RUNTIME_PACKAGES for p in (REPO / pkg).rglob("*.py")
                 if mod in _imports(p)]
        assert not users, f"{mod} is imported by runtime code {users}: make it a runtime dependency again"
    tests_need = {"datasketch", "networkx"}  # imported by tests/, installed by `make test` via .[test]
    assert tests_need <= {_dist(r) for r in extras["test"]}
    mk = (REPO / "Makefile").read_text()
    assert re.search(r'pip install -e "\.\[test[,\]]', mk), "make setup must install the test extra"
