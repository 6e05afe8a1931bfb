"""Scale bench: `skyflow validate`, `plan` and `run` of no-op chains of 20, 1,000 and 10,000 stages.

Each stage writes a one-line artifact and reads its predecessor's (the chain of bench/runner/run.py).
Every figure is the wall time of the whole process (perf_counter around the subprocess) under a fresh
temporary SKYFLOW_HOME, `--infra local --no-lineage --no-cache`. Per stage: the run's wall time over
its stages, and the run's marginal cost per stage against the 20-stage chain,
(T_N - T_20) / (N - 20). The goal (issue 19): the 10,000-stage run's per-stage cost no more than the
20-stage run's.

Usage: python -m bench.runner.scale [--stages 20,1000,10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.runner.run import chain_yaml


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode:
        print(f"  {' '.join(cmd[2:4])} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed, done.returncode


def measure(n: int, work: Path) -> dict[str, Any]:
    (work / f"chain{n}.yaml").write_text(chain_yaml(n))
    env = dict(os.environ, SKYFLOW_HOME=str(work / f"home{n}"))
    skyflow = [sys.executable, "-m", "skyflow"]
    row: dict[str, Any] = {"stages": n}
    row["validate_s"], _ = timed([*skyflow, "validate", f"chain{n}.yaml"], env, work)
    row["plan_s"], _ = timed([*skyflow, "plan", f"chain{n}.yaml", "--infra", "local", "--json"], env, work)
    row["run_s"], code = timed([*skyflow, "run", f"chain{n}.yaml", "--infra", "local", "--no-lineage", "--no-cache",
                                "--json"], env, work)
    row["ok"] = code == 0
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner.scale")
    parser.add_argument("--stages", default="20,1000,10000", help="comma-separated chain lengths")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.stages.split(","))
    work = Path(tempfile.mkdtemp(prefix="skyflow-scale-"))
    rows = []
    try:
        for n in sizes:
            rows.append(measure(n, work))
            r = rows[-1]
            print(f"{n:>6} stages: validate {r['validate_s']:.2f} s, plan {r['plan_s']:.2f} s, run {r['run_s']:.2f} s "
                  f"({1000 * r['run_s'] / n:.1f} ms per stage){'' if r['ok'] else ' FAILED'}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    for r in rows[1:]:
        r["marginal_ms"] = 1000 * (r["run_s"] - base["run_s"]) / (r["stages"] - base["stages"])
        print(f"{r['stages']:>6} stages: {r['marginal_ms']:.1f} ms per stage beyond the {base['stages']}-stage run; "
              f"the {base['stages']}-stage run: {1000 * base['run_s'] / base['stages']:.1f} ms per stage")
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
