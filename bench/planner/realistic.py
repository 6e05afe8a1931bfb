"""Realistic LLMOps DAGs for the planner bench: the stage mix of real pipelines, and a 200-stage fan-out.

`python -m bench.planner.realistic [SHAPE ...] [--time-limit S]` plans each shape (``fanout200``,
``realistic1000``, ``realistic5000``; default all three) in its own process over the bench catalog
with the SkyPilot egress model, and prints the whole `plan_pipeline` call's wall time, the process's
peak RSS (``resource.getrusage``), the plan's cost, its proven lower bound and gap. ``--json FILE``
keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SKYFLOW_SHARED_DIR", REPO.parent / "shared"))
SHAPES = ("fanout200", "realistic1000", "realistic5000")

PREP: dict[str, Any] = {"cpus": "32+", "memory": "128+"}
# (resources, weight): CPU prep, big training on demand and spot, mid-size training, cheap GPUs.
STAGE_MIX: list[tuple[dict[str, Any], float]] = [
    (PREP, 0.20),
    ({"accelerators": "A100:8"}, 0.15),
    ({"accelerators": "A100:8", "use_spot": True}, 0.10),
    ({"accelerators": "H100:8", "use_spot": True}, 0.10),
    ({"accelerators": "A100:4"}, 0.15),
    ({"accelerators": {"L4": 1, "T4": 1, "A10": 1}}, 0.15),
    ({"accelerators": "L4:1", "use_spot": True}, 0.15),
]
GPU_MIX = STAGE_MIX[1:]
INPUTS = {"raw": {"uri": "s3://llm-corpus/raw/", "size_gb": 500.0},
          "evalset": {"uri": "gs://llm-evals/v3/", "size_gb": 40.0}}


def _output_gb(rng: random.Random) -> float:
    """0.1 to 500 GB, log-uniform (most artifacts are small, a few are checkpoints or corpora)."""
    return round(math.exp(rng.uniform(math.log(0.1), math.log(500.0))), 1)


def _stage(rng: random.Random, resources: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    stage: dict[str, Any] = {"resources": resources, "estimate": {"hours": round(rng.uniform(0.5, 8.0), 1)},
                             "run": "true", "outputs": {"out": {"size_gb": _output_gb(rng)}}, "inputs": inputs}
    if "accelerators" in resources and rng.random() < 0.10:
        stage["num_nodes"] = rng.choice([2, 4])
    return stage


def realistic_dag(n: int, seed: int = 11) -> dict[str, Any]:
    """``n`` stages drawn from STAGE_MIX; each reads one to three of the previous 50 stages, and
    about 2 % read the 500 GB S3 corpus or the 40 GB GCS eval set."""
    rng = random.Random(seed)
    kinds, weights = zip(*STAGE_MIX, strict=True)
    stages: dict[str, Any] = {}
    for i in range(n):
        inputs: dict[str, str] = {}
        if i:
            window = range(max(0, i - 50), i)
            parents = rng.sample(window, min(len(window), rng.randint(1, 3)))
            inputs = {f"in{j}": f"s{p}.out" for j, p in enumerate(sorted(parents))}
        if i == 0 or rng.random() < 0.02:
            inputs["data"] = rng.choice(list(INPUTS))
        stages[f"s{i}"] = _stage(rng, dict(rng.choices(kinds, weights)[0]), inputs)
    return {"name": f"realistic{n}", "inputs": INPUTS, "stages": stages}


def fanout_dag(branches: int = 198, seed: int = 13) -> dict[str, Any]:
    """One CPU prep stage reading the S3 corpus, ``branches`` GPU stages reading it, one join reading all."""
    rng = random.Random(seed)
    kinds, weights = zip(*GPU_MIX, strict=True)
    stages: dict[str, Any] = {"prep": _stage(rng, dict(PREP), {"data": "raw"})}
    for i in range(branches):
        stages[f"b{i}"] = _stage(rng, dict(rng.choices(kinds, weights)[0]), {"data": "prep.out"})
    stages["join"] = _stage(rng, dict(PREP), {f"in{i}": f"b{i}.out" for i in range(branches)})
    return {"name": f"fanout{branches + 2}", "inputs": INPUTS, "stages": stages}


def shape_data(shape: str) -> dict[str, Any]:
    if shape == "fanout200":
        return fanout_dag()
    if shape.startswith("realistic"):
        return realistic_dag(int(shape.removeprefix("realistic")))
    raise SystemExit(f"no shape {shape!r}; shapes: {', '.join(SHAPES)}")


def plan_one(shape: str, time_limit_s: float | None) -> dict[str, Any]:
    """Plan ``shape`` in this process; the caller runs it in a fresh one so peak RSS is this shape's."""
    from skyflow.catalog import load_catalog, load_egress
    from skyflow.planner import Policy, plan_pipeline
    from skyflow.spec.loader import resolve_data
    from skyflow.spec.source import parse_yaml

    data, smap = parse_yaml(json.dumps(shape_data(shape)), f"{shape}.yaml")
    pipeline = resolve_data(data, smap, f"{shape}.yaml", ".")
    catalog_dir = str(SHARED / "catalogs" / "bench")
    catalog = load_catalog(catalog_dir)
    egress = load_egress(str(SHARED / "bench" / "egress-skypilot.yaml"), catalog_dir)
    policy = Policy(all_clouds=True) if time_limit_s is None else Policy(all_clouds=True, time_limit_s=time_limit_s)
    rss_before_mb = _peak_rss_mb()
    t = time.perf_counter()
    plan = plan_pipeline(pipeline, catalog, egress, policy, baseline=False)
    wall_s = time.perf_counter() - t
    return {"shape": shape, "stages": len(pipeline.stages), "edges": len(pipeline.edges), "wall_s": wall_s,
            "peak_rss_mb": _peak_rss_mb(),
            # a large program's search runs in a child process (the planner ends it at the time limit)
            "peak_child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "rss_before_plan_mb": rss_before_mb, "solver": plan.solver, "total_usd": plan.total_usd,
            "lower_bound_usd": getattr(plan, "lower_bound_usd", None), "gap": getattr(plan, "gap", None),
            "time_limit_s": time_limit_s, "stats": dict(plan.stats)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ru_maxrss keeps, across exec, the peak of the process that
    forked this one (a large bench process made every shape read as large as itself); /proc's VmHWM is this
    program's own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_shape(shape: str, time_limit_s: float | None, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.planner.realistic", "--one", shape]
    if time_limit_s is not None:
        cmd += ["--time-limit", str(time_limit_s)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, check=True)
    except subprocess.TimeoutExpired:
        return {"shape": shape, "timed_out_s": timeout_s}
    except subprocess.CalledProcessError as exc:
        return {"shape": shape, "error": exc.stderr.strip().splitlines()[-1:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def describe(row: dict[str, Any]) -> str:
    if "timed_out_s" in row:
        return f"{row['shape']}: not finished in {row['timed_out_s']:.0f} s"
    if "error" in row:
        return f"{row['shape']}: failed: {row['error']}"
    gap = row.get("gap")
    gap_text = "optimal" if not gap else f"gap {100 * gap:.2f} % (bound ${row['lower_bound_usd']:,.2f})"
    return (f"{row['shape']} ({row['stages']} stages, {row['edges']} edges): {row['wall_s']:.2f} s, peak RSS "
            f"{row['peak_rss_mb']:.0f} MB ({row['rss_before_plan_mb']:.0f} MB before planning"
            + (f"; search child {row['peak_child_rss_mb']:.0f} MB" if row.get("peak_child_rss_mb") else "") + "), "
            f"${row['total_usd']:,.2f}, {gap_text}, {row['solver']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.planner.realistic")
    parser.add_argument("shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--time-limit", type=float, default=None, help="Policy.time_limit_s (default: the Policy's)")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill a shape's process after this many s")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(plan_one(args.one, args.time_limit)))
        return 0
    if not (SHARED / "catalogs" / "bench").is_dir():
        print(f"skipped: no shared catalogs at {SHARED}")
        return 0
    rows = []
    for shape in args.shapes:
        rows.append(run_shape(shape, args.time_limit, args.timeout))
        print(describe(rows[-1]), flush=True)
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
