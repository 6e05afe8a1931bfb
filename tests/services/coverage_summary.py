"""Line and branch coverage of skyflow, apart, against the goals (from the combined coverage data).

    python tests/services/coverage_summary.py [--lines 95] [--branches 90]

Exit status 1 when either figure is under its goal. The packages are listed worst first, so the gaps
are where to look.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def _package(path: str) -> str:
    parts = Path(path).parts
    start = parts.index("skyflow")
    inner = parts[start + 1:]
    return "skyflow" if len(inner) == 1 else f"skyflow/{inner[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=float, default=95.0, help="goal for line coverage, percent")
    parser.add_argument("--branches", type=float, default=90.0, help="goal for branch coverage, percent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "coverage.json"
        subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(out)], check=True)
        data = json.loads(out.read_text())
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for path, entry in data["files"].items():
        summary = entry["summary"]
        totals = per[_package(path)]
        totals[0] += summary["num_statements"]
        totals[1] += summary["covered_lines"]
        totals[2] += summary["num_branches"]
        totals[3] += summary["covered_branches"]
    lines = sum(t[0] for t in per.values()), sum(t[1] for t in per.values())
    branches = sum(t[2] for t in per.values()), sum(t[3] for t in per.values())

    def pct(total: int, covered: int) -> float:
        return 100.0 * covered / total if total else 100.0

    print(f"{'package':<24} {'lines':>14} {'branches':>14}")
    for name, (n, c, nb, cb) in sorted(per.items(), key=lambda kv: pct(kv[1][0], kv[1][1])):
        print(f"{name:<24} {pct(n, c):>6.1f}% {n - c:>5} miss {pct(nb, cb):>6.1f}% {nb - cb:>5} miss")
    line_pct, branch_pct = pct(*lines), pct(*branches)
    print(f"\nlines    {line_pct:.1f}% of {lines[0]} (goal {args.lines:.0f}%)"
          f"\nbranches {branch_pct:.1f}% of {branches[0]} (goal {args.branches:.0f}%)")
    met = line_pct >= args.lines and branch_pct >= args.branches
    print("goals met" if met else "under the goal: see `coverage report` or htmlcov/index.html for the lines missed")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
