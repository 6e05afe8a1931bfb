"""`python -m bench [SUITE ...]`: run every bench/<suite>/run.py (or the named ones) in turn."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def suites() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.parent.name for p in here.glob("*/run.py"))


def main(argv: list[str]) -> int:
    chosen = argv or suites()
    unknown = [s for s in chosen if s not in suites()]
    if unknown:
        print(f"no bench suite {', '.join(unknown)}; suites: {', '.join(suites())}", file=sys.stderr)
        return 2
    failed = 0
    for name in chosen:
        print(f"== bench/{name}", flush=True)
        module = importlib.import_module(f"bench.{name}.run")
        failed += 1 if module.main([]) else 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
