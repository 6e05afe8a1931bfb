"""Runner bench: skyflow's local orchestration overhead beside Metaflow 2.19 and Prefect 3, in one run.

Shapes: a 20-stage chain, a 5-stage chain and an 8-way fan-out of no-op stages (each stage writes a
one-line artifact and reads its predecessor's, as each Metaflow step stores `self.x`). skyflow runs
three times per shape: lineage on (the default MLflow sqlite store under a temporary SKYFLOW_HOME; a
run over before MLflow has loaded leaves its records to the background drain), lineage on with
`--wait-for-lineage` (the command returns once every record is in MLflow), and `--no-lineage`.
Every figure is the wall time of the whole process (perf_counter around the subprocess), several
repetitions interleaved across tools, min and median reported. After each run the bench waits until
the lineage drain it left (if any) has ended, so that one tool's background work does not slow the
next measurement; the median wait is reported beside the times ("background after").

Per stage = (T20 - T5) / 15; fixed = T5 - 5 x per stage. The peers run in their own venvs under
.bench/ (made on first use from the package registry) with the flows in ../shared/bench/peers/flows
($SKYFLOW_SHARED_DIR); a peer that cannot be had is skipped with a message.

Usage: python -m bench.runner.run [--repeats 3] [--no-prefect] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.planner.run import OUT, SHARED

FLOWS = SHARED / "bench" / "peers" / "flows"
PEERS = {"metaflow": "metaflow==2.19.39", "prefect": "prefect==3.9.1"}
SHAPES = ("chain20", "chain5", "fanout8")


# -- pipelines --------------------------------------------------------------------------------------
def chain_yaml(n: int) -> str:
    lines = [f"name: chain{n}", "stages:"]
    for i in range(n):
        lines += [f"  s{i}:", f"    run: echo {i} > $SKYFLOW_OUTPUT_X/x", "    outputs: [x]"]
        if i:
            lines.append(f"    inputs: {{prev: s{i - 1}.x}}")
    return "\n".join(lines) + "\n"


def fanout_yaml(k: int) -> str:
    """start -> k bodies -> join -> end: the same 11 tasks as Metaflow's foreach flow."""
    lines = [f"name: fanout{k}", "stages:",
             "  start:", "    run: echo 0 > $SKYFLOW_OUTPUT_X/x", "    outputs: [x]"]
    for i in range(k):
        lines += [f"  body{i}:", f"    run: echo {i} > $SKYFLOW_OUTPUT_X/x", "    outputs: [x]",
                  "    inputs: {start: start.x}"]
    joined = ", ".join(f"b{i}: body{i}.x" for i in range(k))
    total = " + ".join(f"$(cat $SKYFLOW_INPUT_B{i}/x)" for i in range(k))
    lines += ["  join:", f"    run: echo $(( {total} )) > $SKYFLOW_OUTPUT_X/x",
              "    outputs: [x]", f"    inputs: {{{joined}}}",
              "  end:", "    run: cp $SKYFLOW_INPUT_TOTAL/x $SKYFLOW_OUTPUT_X/x", "    outputs: [x]",
              "    inputs: {total: join.x}"]
    return "\n".join(lines) + "\n"


def write_pipelines(root: Path) -> dict[str, Path]:
    texts = {"chain20": chain_yaml(20), "chain5": chain_yaml(5), "fanout8": fanout_yaml(8)}
    paths = {}
    for name, text in texts.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text)
    return paths


# -- running --------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus variables that would redirect or skew any of the tools."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "METAFLOW_", "SKYFLOW_", "MLFLOW_")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return wall


def peer_python(tool: str) -> Path | None:
    """The interpreter of .bench/<tool>-venv, installing the pinned release on first use."""
    venv = OUT / f"{tool}-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {tool}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {PEERS[tool]} into {venv.relative_to(OUT.parent)} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PEERS[tool]],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{tool} skipped: cannot install {PEERS[tool]}: {exc}")
        return None
    return python


def version_of(python: Path, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


Case = Callable[[Path], float]  # given a fresh scratch directory, run once and return the wall time


def skyflow_cases(pipelines: dict[str, Path], home: Path, *extra: str) -> dict[str, Case]:
    env = clean_env(SKYFLOW_HOME=str(home))

    def case(shape: str) -> Case:
        cmd = [sys.executable, "-m", "skyflow", "run", str(pipelines[shape]), "--json", "--no-cache", *extra]
        return lambda scratch: timed(cmd, scratch, env)

    return {shape: case(shape) for shape in SHAPES}


def metaflow_cases(python: Path) -> dict[str, Case]:
    flows = {"chain20": "metaflow_linear.py", "chain5": "metaflow_linear5.py", "fanout8": "metaflow_foreach.py"}

    def case(flow: str) -> Case:
        def run(scratch: Path) -> float:
            env = clean_env(METAFLOW_DEFAULT_METADATA="local", METAFLOW_DEFAULT_DATASTORE="local",
                            METAFLOW_HOME=str(scratch / "mfhome"), METAFLOW_DATASTORE_SYSROOT_LOCAL=str(scratch),
                            USERNAME="bench")
            return timed([str(python), str(FLOWS / flow), "run"], scratch, env)
        return run

    return {shape: case(flow) for shape, flow in flows.items()}


def prefect_cases(python: Path, home: Path) -> dict[str, Case]:
    """One flow of N sequential tasks, warm PREFECT_HOME (its database made by the warm-up run)."""
    env = clean_env(PREFECT_HOME=str(home))

    def case(n: int) -> Case:
        code = f"import sys; sys.path.insert(0, {str(FLOWS)!r}); import prefect_linear as f; f.linear_pipeline(n={n})"
        return lambda scratch: timed([str(python), "-c", code], scratch, env)

    return {"chain20": case(20), "chain5": case(5)}


# -- measuring ------------------------------------------------------------------------------------
def measure(systems: dict[str, dict[str, Case]], repeats: int, scratch_root: Path) -> dict[str, Any]:
    """One warm-up of every case, then `repeats` rounds, interleaving systems to share machine noise."""
    walls: dict[str, dict[str, list[float]]] = {s: {c: [] for c in cases} for s, cases in systems.items()}
    first: dict[str, dict[str, float]] = {s: {} for s in systems}
    background: dict[str, list[float]] = {s: [] for s in systems}
    for round_ in range(repeats + 1):
        for system, cases in systems.items():
            for shape, run in cases.items():
                scratch = Path(tempfile.mkdtemp(prefix=f"{system}-{shape}-", dir=scratch_root))
                wall = run(scratch)
                behind = settle()
                shutil.rmtree(scratch, ignore_errors=True)
                if round_:
                    walls[system][shape].append(wall)
                    background[system].append(behind)
                else:
                    first[system][shape] = wall
                print(f"  {system:<20} {shape:<8} {'warm-up' if not round_ else f'#{round_}':<8} {wall:6.2f} s"
                      + (f" (then {behind:.2f} s of background work)" if behind else ""), flush=True)
    return {s: {"first": first[s], "runs": walls[s], "background_s": statistics.median(background[s]),
                **figures(walls[s])} for s in systems}


def settle(limit_s: float = 120.0) -> float:
    """Wait until no lineage drain a skyflow run left behind is running, so that it does not slow the
    next measurement (of either tool); the seconds waited (0 when none was running)."""
    started = time.perf_counter()
    if not _drains_running():
        return 0.0
    while time.perf_counter() - started < limit_s and _drains_running():
        time.sleep(0.05)
    return time.perf_counter() - started


def _drains_running() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"skyflow.lineage.drain" in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def figures(runs: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {shape: {"min": min(v), "median": statistics.median(v)} for shape, v in runs.items()}
    if "chain20" in runs and "chain5" in runs:
        for stat in ("min", "median"):
            per = (out["chain20"][stat] - out["chain5"][stat]) / 15
            out[f"per_stage_{stat}"] = per
            out[f"fixed_{stat}"] = out["chain5"][stat] - 5 * per
    return out


def render(results: dict[str, Any], versions: dict[str, str]) -> str:
    def cell(r: dict[str, Any], key: str, unit: str = "s") -> str:
        if unit == "ms":
            if key + "_min" not in r:
                return "-"

            return f"{r[key + '_min'] * 1000:.0f} / {r[key + '_median'] * 1000:.0f} ms"
        if key not in r:
            return "-"
        return f"{r[key]['min']:.2f} / {r[key]['median']:.2f} s"

    lines = ["| tool | 20-stage chain | 5-stage chain | 8-way fan-out (11 stages) | per stage (T20-T5)/15 "
             "| fixed (T5 - 5 x per stage) | background after |", "|---|---|---|---|---|---|---|"]
    for system, r in results.items():
        fixed = f"{r['fixed_min']:.2f} / {r['fixed_median']:.2f} s" if "fixed_min" in r else "-"
        behind = f"{r['background_s']:.2f} s" if r.get("background_s") else "-"
        lines.append(f"| {system} | {cell(r, 'chain20')} | {cell(r, 'chain5')} | {cell(r, 'fanout8')} "
                     f"| {cell(r, 'per_stage', 'ms')} | {fixed} | {behind} |")
    mf = results.get("Metaflow")
    if mf:
        lines.append("")
        for system, r in results.items():
            if system == "Metaflow" or "per_stage_median" not in r:
                continue
            line = (f"{system}: per stage {r['per_stage_median'] / mf['per_stage_median']:.2f}x Metaflow's "
                    f"(target <= 0.20), 20-stage wall {r['chain20']['median'] / mf['chain20']['median']:.2f}x")
            if "fanout8" in r:
                line += f", fan-out {r['fanout8']['median'] / mf['fanout8']['median']:.2f}x"
            line += (f", fixed {r['fixed_min'] / mf['fixed_min']:.2f}x by the minima and "
                     f"{r['fixed_median'] / mf['fixed_median']:.2f}x by the medians (target <= 2)")
            lines.append(line)
    lines.append("")
    lines.append("min / median of the measured runs; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner.run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--no-prefect", action="store_true", help="leave Prefect out (its runs take ~10 s each)")
    parser.add_argument("--json", dest="json_out", type=Path, default=OUT / "runner.json")
    args = parser.parse_args(argv if argv is not None else [])
    OUT.mkdir(exist_ok=True)
    import skyflow

    versions = {"python": platform.python_version(), "skyflow": skyflow.__version__}
    with tempfile.TemporaryDirectory(prefix="skyflow-runner-bench-") as tmp:
        root = Path(tmp)
        pipelines = write_pipelines(root)
        systems: dict[str, dict[str, Case]] = {
            "skyflow (lineage on)": skyflow_cases(pipelines, root / "home-lineage"),
            "skyflow (--wait-for-lineage)": skyflow_cases(pipelines, root / "home-wait", "--wait-for-lineage"),
            "skyflow (--no-lineage)": skyflow_cases(pipelines, root / "home-plain", "--no-lineage"),
        }
        if not FLOWS.is_dir():
            print(f"peers skipped: no peer flows at {FLOWS} (set SKYFLOW_SHARED_DIR)")
        else:
            mf = peer_python("metaflow")
            if mf is not None:
                systems["Metaflow"] = metaflow_cases(mf)
                versions["metaflow"] = version_of(mf, "metaflow")
            pf = None if args.no_prefect else peer_python("prefect")
            if pf is not None:
                systems["Prefect (warm home)"] = prefect_cases(pf, root / "prefect-home")
                versions["prefect"] = version_of(pf, "prefect")
        scratch = root / "scratch"
        scratch.mkdir()
        results = measure(systems, max(1, args.repeats), scratch)
    cold = results["skyflow (lineage on)"]["first"]["chain20"]
    print(f"\nskyflow's first run on a new SKYFLOW_HOME (creates the MLflow database): chain20 {cold:.2f} s")
    args.json_out.write_text(json.dumps({"versions": versions, "cpus": os.cpu_count(), "results": results}, indent=1))
    print(render(results, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
