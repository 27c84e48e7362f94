"""Print the headline ratios that the benchmarks of one ``make bench`` run recorded
(:func:`bench.common.record_ratio`), side by side with issue 19's targets.

``python bench/summary.py [PATH]`` (default :func:`bench.common.ratios_path`). Exit 0 even when a
target is not met: the table says which, and a benchmark is a measurement, not a test.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ratios_path  # noqa: E402


def _fmt(value: float, unit: str) -> str:
    return f"{value:.0%}" if unit == "%" else f"{value:.2f}x"


def table(records: list[dict]) -> list[str]:
    """Rows of the summary table (strings), one per record, in the order they were recorded.

    Each record is a dict as :func:`bench.common.record_ratio` writes it.
    """
    head = ("benchmark", "step", "ours", "raw primitive / peer (same run)", "ratio", "target", "")
    rows = [head]
    for r in records:
        met = "met" if r["ratio"] >= r["target"] else "NOT MET"
        rows.append((r["bench"], r["step"], r["ours"], r["reference"], _fmt(r["ratio"], r["unit"]),
                     ">= " + _fmt(r["target"], r["unit"]), met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r['bench']} / {r['step']}: {r['note']}" for r in records if r.get("note")]
    return out + (["how each was measured:"] + notes if notes else [])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else ratios_path()
    if not path.exists():
        print(f"no benchmark ratios recorded in {path}: run `make bench` first", file=sys.stderr)
        return 2
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"=== summary: {len(records)} ratios from this run ({path})")
    print("\n".join(table(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
