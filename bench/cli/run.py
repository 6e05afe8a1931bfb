"""CLI bench: whole-process times of the commands a person waits for, beside their goals.

- `skyflow --version` (the floor), `skyflow validate` and `skyflow dag` of each example (goal < 0.3 s);
- `skyflow lineage DIGEST` and `skyflow runs` on a home holding 1,000 runs (goal < 0.5 s): 1,000
  pipeline runs of a 3-stage chain in the MLflow sqlite store (4,000 MLflow runs, made through
  skyflow's own MlflowStore) and 1,000 runs in the state DB, built once under .bench/cli-home.

Each command runs `--repeats` times (default 7) in a fresh process after one warm-up; min and median
of the wall time (perf_counter around the subprocess) are printed. `--before DIR` also times the same
commands from another checkout's `skyflow` package (e.g. `git worktree add /tmp/before HEAD~1`), the
runs of both interleaved so that load on the machine falls on both alike. The runner's fixed overhead
with lineage on, beside Metaflow's, is `python -m bench.runner.run`.

Usage: python -m bench.cli.run [--repeats 7] [--before DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / ".bench" / "cli-home"
RUNS = 1000
GOALS = {"validate": 0.3, "dag": 0.3, "lineage": 0.5, "runs": 0.5}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYFLOW_", "MLFLOW_"))}
    return {**env, "SKYFLOW_HOME": str(HOME)}


def build_home() -> str:
    """1,000 runs in both stores (made once); returns the digest `skyflow lineage` traces."""
    marker = HOME / "bench.json"
    if marker.is_file():
        return str(json.loads(marker.read_text())["digest"])
    from skyflow.artifacts.record import ArtifactRecord
    from skyflow.lineage.mlflow_store import MlflowStore
    from skyflow.lineage.records import RunInfo, StageRecord
    from skyflow.runner.state import RunStore

    HOME.mkdir(parents=True, exist_ok=True)
    store = MlflowStore(f"sqlite:///{HOME / 'mlflow.db'}")
    state = RunStore(HOME / "state.db")
    digest = ""
    started = time.perf_counter()
    for index in range(RUNS):
        run_id = f"bench-{index:04d}"
        info = RunInfo(run_id=run_id, pipeline="bench", pipeline_digest="pd", params={"i": index}, plan_json=None,
                       git_commit=None, git_dirty=False, code_digest=None, skyflow_version="bench",
                       started_at=time.time(), run_key=run_id)
        store.start_run(info, retry=False)
        upstream = ArtifactRecord("raw", "s3://data/raw", "sha256:" + "0" * 64, 10)
        for stage in ("prep", "train", "eval"):
            out = ArtifactRecord("x", f"s3://bench/{run_id}/{stage}", f"sha256:{index:04d}{stage:0>6}".ljust(71, "f"),
                                 100)
            record = StageRecord(run_id=run_id, stage=stage, state="succeeded", attempts=1, placement={},
                                 resources={}, duration_s=1.0, estimated_usd=0.0, actual_usd=0.0, egress_gb=0.0,
                                 egress_usd=0.0, cache_hit=False, inputs=[upstream], outputs=[out], run_key=run_id)
            store.record_stage(record, log_copy=None, retry=False)
            upstream, digest = out, out.digest
        store.end_run(run_id, "succeeded", {"actual_usd": 0.0})
        state.create_run(run_id, "bench", "bench.yaml", "pd", {}, {}, None, ["prep", "train", "eval"], 0.0)
        if index % 100 == 99:
            print(f"  made {index + 1} runs in {time.perf_counter() - started:.0f} s", flush=True)
    marker.write_text(json.dumps({"digest": digest}))
    return digest


def _once(argv: list[str], checkout: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one process; CPU time (user + system) moves less with the machine's load."""
    env = _env()
    if checkout != ROOT:
        env["PYTHONPATH"] = str(checkout)  # its skyflow package before the installed one
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skyflow", *argv], env=env, cwd=checkout, capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_commands(argv: list[str], repeats: int, checkouts: list[Path]) -> list[tuple[float, float, float]]:
    """(min, median) wall seconds and median CPU seconds of the whole process per checkout, after one
    warm-up each; the checkouts' runs alternate."""
    times: list[list[tuple[float, float]]] = [[] for _ in checkouts]
    working = []
    for index, checkout in enumerate(checkouts):
        try:
            _once(argv, checkout)
            working.append(index)
        except subprocess.CalledProcessError:
            if checkout == ROOT:
                raise
            print(f"  ({' '.join(argv)} fails from {checkout}: not timed there)", flush=True)
    for _ in range(repeats):
        for index in working:
            times[index].append(_once(argv, checkouts[index]))
    return [(min(w for w, _ in t), statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            if t else (math.nan, math.nan, math.nan) for t in times]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli.run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--before", type=Path, help="another checkout to time beside this one")
    args = parser.parse_args(argv)
    digest = build_home()
    commands: dict[str, list[str]] = {"--version": ["--version"]}
    for example in sorted((ROOT / "examples").glob("*/pipeline.yaml")):
        name = example.parent.name
        commands[f"validate {name}"] = ["validate", str(example.relative_to(ROOT))]  # each checkout its own
        commands[f"dag {name}"] = ["dag", str(example.relative_to(ROOT))]
    commands[f"lineage ({RUNS} runs)"] = ["lineage", digest.split(":")[1][:12]]
    commands[f"runs ({RUNS} runs)"] = ["runs"]
    commands[f"runs --json --limit {RUNS}"] = ["runs", "--json", "--limit", str(RUNS)]
    checkouts = [ROOT] + ([args.before.resolve()] if args.before else [])
    results: dict[str, Any] = {}
    failed = 0
    print(f"{'command':<28} {'min s':>7} {'median s':>9} {'cpu s':>6}"
          + ("   before: min / median / cpu s" if args.before else "") + "  goal")
    for label, command in commands.items():
        measured = time_commands(command, args.repeats, checkouts)
        (low, mid, cpu), before = measured[0], measured[1:]
        goal = GOALS.get(label.split()[0])
        met = "" if goal is None else f"< {goal} s: {'met' if mid < goal else 'MISSED'}"
        failed += 1 if goal is not None and mid >= goal else 0
        results[label] = {"min_s": low, "median_s": mid, "cpu_s": cpu, "goal_s": goal}
        if before:
            results[label].update(before_min_s=before[0][0], before_median_s=before[0][1], before_cpu_s=before[0][2])
        shown = f"   {before[0][0]:>6.3f} / {before[0][1]:.3f} / {before[0][2]:.3f}" if before else ""
        print(f"{label:<28} {low:>7.3f} {mid:>9.3f} {cpu:>6.3f}{shown}  {met}", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
