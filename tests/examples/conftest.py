"""Stage-by-stage execution of the shipped examples, following the runner's stage contract."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.spec.graph import ResolvedPipeline

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "examples: runs an example pipeline's stages end to end (seconds)")


def stage_env(pipeline: ResolvedPipeline, name: str, root: Path, run_id: str = "test-run") -> dict[str, str]:
    """What a stage process gets: inputs as local paths, empty output directories, run ids."""
    stage = pipeline.stages[name]
    env = {**os.environ, **{k: v or "" for k, v in pipeline.spec.envs.items()},
           **{k: v or "" for k, v in stage.envs.items()}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"SKYFLOW_RUN_ID": run_id, "SKYFLOW_STAGE": name})
    for edge in pipeline.inputs_of(name):
        if edge.kind == "stage":
            path = root / edge.producer / edge.artifact
        else:
            uri = pipeline.spec.inputs[edge.artifact].uri if edge.kind == "input" else edge.artifact
            path = (Path(pipeline.base_dir) / uri).resolve()
        env[f"SKYFLOW_INPUT_{edge.input_name.upper()}"] = str(path)
    for output in stage.outputs:
        folder = root / name / output
        folder.mkdir(parents=True)
        env[f"SKYFLOW_OUTPUT_{output.upper()}"] = str(folder)
    return env


def workdir(pipeline: ResolvedPipeline, name: str) -> Path:
    return Path(pipeline.base_dir) / str(pipeline.stages[name].workdir or ".")


def run_stage(pipeline: ResolvedPipeline, name: str, root: Path) -> str:
    """Run one batch stage's `run` with bash (setup is skipped: numpy is already here); its stdout."""
    done = subprocess.run(["bash", "-c", pipeline.stages[name].run or ""], cwd=workdir(pipeline, name),
                          env=stage_env(pipeline, name, root), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"stage {name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
