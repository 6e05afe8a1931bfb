"""Planner bench: skyflow vs SkyPilot 0.14.1's optimizer on the same DAGs, a 1,000-stage random DAG, and
the realistic shapes of bench/planner/realistic.py (each in its own process, default time limit).

Reads ../shared (or $SKYFLOW_SHARED_DIR); SkyPilot runs in its own venv under .bench/ (created on
first use with `pip install skypilot==0.14.1`). Prints a table and writes .bench/planner.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SKYFLOW_SHARED_DIR", REPO.parent / "shared"))
OUT = REPO / ".bench"
SHAPES = {"chain3": "chain:3", "chain10": "chain:10", "chain30": "chain:30", "diamond": "diamond", "wide8": "wide:8"}
TEMPLATES = [({"cpus": "8+"}, 500.0), ({"accelerators": "A100:8"}, 300.0), ({"accelerators": "L4:1"}, 1.0),
             ({"accelerators": "A100:4"}, 150.0), ({"accelerators": "H100:8"}, 0.0)]


def run_skyflow(repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    from skyflow.catalog import load_catalog, load_egress
    from skyflow.planner import Policy, plan_pipeline
    from skyflow.spec.loader import load_pipeline

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    import highspy  # noqa: F401  (one-time: the MILP solver's import, counted apart from planning)

    solver_import_s = time.perf_counter() - t0
    catalog_dir = str(SHARED / "catalogs" / "bench")
    t0 = time.perf_counter()
    catalog = load_catalog(catalog_dir)
    load_s = time.perf_counter() - t0
    egress = load_egress(str(SHARED / "bench" / "egress-skypilot.yaml"), catalog_dir)
    policy = Policy(all_clouds=True)
    out: dict[str, Any] = {"catalog_load_s": load_s, "import_s": import_s, "solver_import_s": solver_import_s,
                           "shapes": {}}
    for name in SHAPES:
        pipeline = load_pipeline(SHARED / "bench" / "pipelines" / f"{name}.yaml")
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            plan = plan_pipeline(pipeline, catalog, egress, policy, baseline=False)
            times.append(time.perf_counter() - t)
        out["shapes"][name] = {"total_usd": plan.total_usd, "total_hours": plan.total_hours, "solver": plan.solver,
                               "plan_s_median": statistics.median(times), "plan_s_first": times[0]}
    return out


def _plan_args(shape: str) -> list[str]:
    """`skyflow plan` of a bench shape over the bench catalog and SkyPilot's egress prices, every cloud."""
    return ["plan", str(SHARED / "bench" / "pipelines" / f"{shape}.yaml"),
            "--catalog", str(SHARED / "catalogs" / "bench"),
            "--egress", str(SHARED / "bench" / "egress-skypilot.yaml"), "--all-clouds"]


# What a plan cannot do without, each in an interpreter of its own: the spec is validated by pydantic models,
# and the planner's arrays are numpy's (highspy's too). Net of `skyflow --version`, both together are the
# floor of any `skyflow plan` in a process of its own; a shape whose goal (SkyPilot's optimize / 100) is below
# it cannot meet that goal without a daemon.
_ONE_MODEL = "from pydantic import BaseModel\nclass Stage(BaseModel):\n    name: str\nStage(name='train')\n"
FLOORS = {"pydantic, one model": _ONE_MODEL, "numpy": "import numpy", "both": _ONE_MODEL + "import numpy"}


def run_skyflow_process(repeats: int) -> dict[str, Any]:
    """`skyflow plan` of each shape as a whole process (what a person waits for): in a process of its own,
    and answered by `skyflow daemon` (started for the bench, with its own SKYFLOW_HOME, stopped after);
    a bare `skyflow --version` and `python -c pass` to take interpreter start-up out. Wall medians of
    `repeats` after a warm-up; the two ways alternate run by run, so that drift touches both alike."""
    home = tempfile.mkdtemp(prefix="skyflow-bench-home-")
    alone = {**os.environ, "SKYFLOW_HOME": home, "SKYFLOW_DAEMON": "off"}
    served = {**alone, "SKYFLOW_DAEMON": "manual"}  # the daemon started below, and no other

    def once(args: list[str], env: dict[str, str]) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, cwd=REPO, env=env)
        return time.perf_counter() - t

    def timed(args: list[str], *envs: dict[str, str]) -> list[float]:
        for env in envs:
            once(args, env)  # warm-up: bytecode, catalog cache
        times: list[list[float]] = [[] for _ in envs]
        for _ in range(repeats):
            for spent, env in zip(times, envs, strict=True):
                spent.append(once(args, env))
        return [statistics.median(spent) for spent in times]

    subprocess.run([sys.executable, "-m", "skyflow", "daemon", "start"], check=True, env=served, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    try:
        out: dict[str, Any] = {"version_s": timed(["-m", "skyflow", "--version"], alone)[0],
                               "python_s": timed(["-c", "pass"], alone)[0], "shapes": {}, "daemon_shapes": {}}
        out["floor_s"] = {label: timed(["-c", code], alone)[0] for label, code in FLOORS.items()}
        for name in SHAPES:
            plan = ["-m", "skyflow", *_plan_args(name), "--json"]
            out["shapes"][name], out["daemon_shapes"][name] = timed(plan, alone, served)
        status = subprocess.run([sys.executable, "-m", "skyflow", "daemon", "status", "--json"], env=served,
                                cwd=REPO, capture_output=True, text=True)
        out["daemon_served"] = json.loads(status.stdout).get("served", 0)
    finally:
        subprocess.run([sys.executable, "-m", "skyflow", "daemon", "stop"], env=served, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)
    return out


def run_at_a_terminal(repeats: int, pause_s: float = 1.0) -> dict[str, Any]:
    """What a person at a terminal waits for with the default settings: `skyflow plan` of chain3 again and
    again (a pause between, to read the plan), standard input and error on a pseudo-terminal, from a
    fresh SKYFLOW_HOME with no daemon: the first runs in its own process and starts a daemon, the next
    ones are answered by it. The same sequence with SKYFLOW_DAEMON=off first, for comparison."""
    import pty

    plan = [sys.executable, "-m", "skyflow", *_plan_args("chain3")]
    out: dict[str, Any] = {"pause_s": pause_s}
    for mode in ("off", "auto"):
        home = tempfile.mkdtemp(prefix="skyflow-bench-home-")
        env = {**os.environ, "SKYFLOW_HOME": home, "SKYFLOW_DAEMON": mode}
        times = []
        try:
            for _ in range(repeats + 1):
                terminal, side = pty.openpty()
                t = time.perf_counter()
                subprocess.run(plan, check=True, stdin=side, stdout=subprocess.DEVNULL, stderr=side, cwd=REPO,
                               env=env)
                times.append(time.perf_counter() - t)
                os.close(side)
                os.close(terminal)
                time.sleep(pause_s)
        finally:
            subprocess.run([sys.executable, "-m", "skyflow", "daemon", "stop"], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(home, ignore_errors=True)
        out[mode] = {"first_s": times[0], "next_s_median": statistics.median(times[1:])}
    return out


def random_dag(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    stages: dict[str, Any] = {}
    for i in range(n):
        resources, size = TEMPLATES[rng.randrange(len(TEMPLATES))]
        parents = sorted({f"s{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        stages[f"s{i}"] = {"resources": resources, "estimate": {"hours": 1}, "run": "true",
                           "outputs": {"out": {"size_gb": size * rng.choice([0.1, 1, 2])}},
                           "inputs": {f"in{j}": f"{p}.out" for j, p in enumerate(parents)}}
    return {"name": f"random{n}", "stages": stages}


def run_large(n: int, egress_file: str | None, repeats: int, time_limit_s: float = 10.0) -> dict[str, Any]:
    from skyflow.catalog import load_catalog, load_egress
    from skyflow.planner import Policy, plan_pipeline
    from skyflow.spec.loader import resolve_data
    from skyflow.spec.source import parse_yaml

    data, smap = parse_yaml(json.dumps(random_dag(n, seed=7)), "random.yaml")
    t = time.perf_counter()
    pipeline = resolve_data(data, smap, "random.yaml", ".")
    load_s = time.perf_counter() - t
    catalog_dir = str(SHARED / "catalogs" / "bench")
    catalog, egress = load_catalog(catalog_dir), load_egress(egress_file, catalog_dir)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        plan = plan_pipeline(pipeline, catalog, egress, Policy(all_clouds=True, time_limit_s=time_limit_s),
                             baseline=False)
        times.append(time.perf_counter() - t)
    return {"stages": n, "edges": len(pipeline.edges), "egress": egress_file or "list prices",
            "time_limit_s": time_limit_s, "spec_load_s": load_s, "plan_s": statistics.median(times),
            "plan_s_all": times, "solver": plan.solver, "total_usd": plan.total_usd, "gap": plan.gap or 0.0}


def run_skypilot(repeats: int) -> dict[str, Any]:
    venv = OUT / "sky-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "skypilot==0.14.1"], check=True)
    result_file = OUT / "skypilot.json"
    cmd = [str(python), str(SHARED / "bench" / "sky_optimize_bench.py"), "--shapes", ",".join(SHAPES.values()),
           "--repeats", str(repeats), "--json", str(result_file), "--catalog-root", str(SHARED / "catalogs")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(result_file.read_text())
    by_shape = {r["shape"]: r for r in data["results"]}
    return {name: by_shape.get(shape, {}) for name, shape in SHAPES.items()}


def main(argv: list[str]) -> int:
    if not (SHARED / "catalogs" / "bench").is_dir():
        print(f"skipped: no shared catalogs at {SHARED}")
        return 0
    OUT.mkdir(exist_ok=True)
    repeats = int(os.environ.get("BENCH_REPEATS", "5"))
    ours = run_skyflow(repeats)
    try:
        sky: dict[str, Any] | None = run_skypilot(repeats)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"SkyPilot side skipped: {exc}")
        sky = None
    whole = run_skyflow_process(repeats)
    terminal = run_at_a_terminal(max(repeats, 5))
    skypilot_egress = str(SHARED / "bench" / "egress-skypilot.yaml")
    # (stages, time limit, goal in seconds): the default limit, and the one-second answer with its gap.
    large_runs = [(1000, 10.0, 1.0), (1000, 1.0, 1.0), (10_000, 10.0, 15.0)]
    large = [{**run_large(n, skypilot_egress, repeats if n <= 1000 else 1, limit), "goal_s": goal}
             for n, limit, goal in large_runs]
    print(f"one-time setup: import skyflow {ours['import_s'] * 1000:.0f} ms, highspy "
          f"{ours['solver_import_s'] * 1000:.0f} ms, catalog load (cached) {ours['catalog_load_s'] * 1000:.1f} ms")
    print(f"{'shape':<9}{'skyflow $':>11}{'SkyPilot $':>12}{'cost ratio':>12}{'skyflow s':>11}"
          f"{'SkyPilot s':>12}{'speedup':>10}  solver")
    ok = True
    for name, mine in ours["shapes"].items():
        theirs = (sky or {}).get(name, {})
        their_usd, their_s = theirs.get("total_cost"), theirs.get("opt_seconds_median")
        ratio = mine["total_usd"] / their_usd if their_usd else float("nan")
        speed = their_s / mine["plan_s_median"] if their_s else float("nan")
        ok &= not their_usd or mine["total_usd"] <= their_usd + 1e-6
        print(f"{name:<9}{mine['total_usd']:>11.2f}{their_usd or float('nan'):>12.2f}{ratio:>12.3f}"
              f"{mine['plan_s_median']:>11.4f}{their_s or float('nan'):>12.2f}{speed:>10.0f}  {mine['solver']}")
    print(f"whole process, net of `skyflow --version` ({whole['version_s']:.3f} s; `python -c pass` "
          f"{whole['python_s']:.3f} s); goal >= 100x SkyPilot's optimize. With the daemon: {whole['daemon_served']} "
          f"commands served by it")
    floor = {label: seconds - whole["version_s"] for label, seconds in whole["floor_s"].items()}
    print("  the floor, net of `--version`, each in an interpreter of its own: "
          + ", ".join(f"{label} {seconds:.3f} s" for label, seconds in floor.items()))
    print(f"{'shape':<9}{'plan s':>9}{'net s':>9}{'speedup':>9}{'daemon s':>9}{'net s':>9}{'speedup':>9}"
          f"{'SkyPilot s':>12}{'goal net s':>12}")
    for name, wall in whole["shapes"].items():
        their_s = (sky or {}).get(name, {}).get("opt_seconds_median")
        row = f"{name:<9}"
        for seconds in (wall, whole["daemon_shapes"][name]):
            net = seconds - whole["version_s"]
            speed = their_s / net if their_s and net > 0 else float("nan")
            row += f"{seconds:>9.3f}{net:>9.3f}{speed:>9.1f}"
        budget = their_s / 100 if their_s else float("nan")
        below = "  (below the floor)" if budget < floor["both"] else ""
        print(f"{row}{their_s or float('nan'):>12.2f}{budget:>12.3f}{below}")
    chain3_s = (sky or {}).get("chain3", {}).get("opt_seconds_median")
    print(f"at a terminal, chain3 again and again ({terminal['pause_s']:g} s between), default settings "
          "against SKYFLOW_DAEMON=off:")
    for mode in ("auto", "off"):
        first, after = terminal[mode]["first_s"], terminal[mode]["next_s_median"]
        net = after - whole["version_s"]
        speed = chain3_s / net if chain3_s and net > 0 else float("nan")
        print(f"  {mode:<5} first {first:.3f} s, the next ones {after:.3f} s median ({speed:.1f}x SkyPilot's "
              f"optimize net of `--version`)")
    for dag in large:
        gap = f"within {dag['gap']:.2%} of its bound" if dag["gap"] else "proven optimal"
        print(f"random DAG, {dag['stages']} stages / {dag['edges']} edges, egress {dag['egress']}, time limit "
              f"{dag['time_limit_s']:g} s: planned in {dag['plan_s']:.2f} s median ({dag['solver']}), "
              f"${dag['total_usd']:,.2f}, {gap} (goal < {dag['goal_s']:g} s)")
    from bench.planner.realistic import SHAPES, describe, run_shape

    realistic = [run_shape(shape, None, timeout_s=600) for shape in SHAPES]
    for measured in realistic:
        print(describe(measured))
    (OUT / "planner.json").write_text(json.dumps({"skyflow": ours, "skyflow_process": whole, "terminal": terminal,
                                                  "skypilot": sky, "large": large, "realistic": realistic}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
