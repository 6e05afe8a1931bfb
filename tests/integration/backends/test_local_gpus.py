"""The local backend hands this machine's GPUs to stages: `skyflow run` on a machine whose `nvidia-smi`
reports two T4s. Stages that run together get devices of their own in CUDA_VISIBLE_DEVICES, a third
waits for a free one, a card nvidia-smi names at length serves a stage asking for it by the catalog's
name, and a stage asking for more GPUs than the machine has is refused.

No GPU is needed: `nvidia-smi` here is a script that answers the query skyflow makes, as the real one
does on a two-GPU machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

# Waits (at most 60 s) until COUNT stages have marked themselves in DIR: the stages hold their devices
# at the same time, whatever the machine's speed. A stage that waits in vain fails with exit code 3.
HOLD = ('deadline=$((SECONDS + 60)); while [ "$(ls {dir} | wc -l)" -lt {count} ]; do '
        '[ $SECONDS -lt $deadline ] || exit 3; sleep 0.05; done')


@pytest.fixture
def two_t4s(tmp_path: Path) -> Skyflow:
    """`skyflow` on a machine where `nvidia-smi` lists devices 0 and 1, both Tesla T4."""
    (tmp_path / "work").mkdir()
    skyflow = Skyflow(tmp_path / "home", tmp_path / "work")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "gpus").write_text("0, Tesla T4\n1, Tesla T4\n")  # what it answers; a test may change it
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$*" = "--query-gpu=index,name --format=csv,noheader" ] || exit 9\n'
                   f"cat {tmp_path / 'gpus'}\n")
    smi.chmod(0o755)
    skyflow.env.pop("SKYFLOW_LOCAL_GPUS", None)
    skyflow.env.pop("CUDA_VISIBLE_DEVICES", None)
    skyflow.env["PATH"] = f"{bin_dir}{os.pathsep}{skyflow.env.get('PATH', os.defpath)}"
    return skyflow


def _gpu_stage(name: str, run: str, gpu: str = "T4") -> str:
    return (f"  {name}:\n    resources: {{accelerators: {{{gpu}: 1}}}}\n    estimate: {{hours: 0.01}}\n"
            "    outputs: [env]\n    run: |\n" + "".join(f"      {line}\n" for line in run.splitlines()))


def _env_of(skyflow: Skyflow, stage: dict[str, Any], tmp: Path) -> dict[str, str]:
    """The environment a stage wrote to its `env` output."""
    output = stage["outputs"]["env"]
    ref = ArtifactRef(name="env", uri=output["uri"], digest=output["digest"], size_bytes=output["size_bytes"],
                      file_count=0, store=open_store(str(skyflow.home / "artifacts")))
    text = (fetch_artifact(ref, tmp / output["digest"][7:23]) / "env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_two_gpu_stages_running_together_get_different_devices(two_t4s: Skyflow, tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    script = "env > $SKYFLOW_OUTPUT_ENV/env\ntouch " + str(started) + "/$SKYFLOW_STAGE\n" + \
        HOLD.format(dir=started, count=2)
    two_t4s.write("g.yaml", "name: g\nstages:\n" + _gpu_stage("a", script) + _gpu_stage("b", script))

    code, status, err = two_t4s.run_json("g.yaml", "--no-lineage", "--run-id", "pair")
    assert code == 0 and status["state"] == "succeeded", f"{status}\n{err}"
    envs = {name: _env_of(two_t4s, stage, tmp_path) for name, stage in status["stages"].items()}
    devices = {name: env.get("CUDA_VISIBLE_DEVICES") for name, env in envs.items()}
    assert sorted(map(str, devices.values())) == ["0", "1"], devices
    assert all(env["SKYPILOT_NUM_GPUS_PER_NODE"] == "1" for env in envs.values())


def test_three_gpu_stages_on_two_devices_never_hold_the_same_one(two_t4s: Skyflow, tmp_path: Path) -> None:
    started, held, clashes = tmp_path / "started", tmp_path / "held", tmp_path / "clashes"
    started.mkdir()
    held.mkdir()
    # mkdir is atomic: it fails for the second holder of a device. Each stage keeps its device until
    # two stages have started, so the first two always hold theirs at once.
    script = (f"env > $SKYFLOW_OUTPUT_ENV/env\nd=$CUDA_VISIBLE_DEVICES\n"
              f'mkdir "{held}/device-$d" || echo "$SKYFLOW_STAGE got device $d, held by another" >> {clashes}\n'
              f"touch {started}/$SKYFLOW_STAGE\n{HOLD.format(dir=started, count=2)}\n"
              f'rmdir "{held}/device-$d" || true')
    two_t4s.write("g.yaml", "name: g\nstages:\n" + "".join(_gpu_stage(n, script) for n in ("a", "b", "c")))

    code, status, err = two_t4s.run_json("g.yaml", "--no-lineage", "--run-id", "three")
    assert not clashes.exists(), clashes.read_text()
    assert code == 0 and status["state"] == "succeeded", f"{status}\n{err}"
    devices = {name: _env_of(two_t4s, stage, tmp_path)["CUDA_VISIBLE_DEVICES"]
               for name, stage in status["stages"].items()}
    assert set(devices) == {"a", "b", "c"} and set(devices.values()) == {"0", "1"}, devices
    assert sorted(p.name for p in started.iterdir()) == ["a", "b", "c"]


def test_a_card_nvidia_smi_names_at_length_serves_the_catalog_name(two_t4s: Skyflow, tmp_path: Path) -> None:
    (tmp_path / "gpus").write_text("0, NVIDIA A100-SXM4-80GB\n")
    two_t4s.write("a.yaml", "name: a\nstages:\n" + _gpu_stage("train", "env > $SKYFLOW_OUTPUT_ENV/env", "A100-80GB"))

    code, status, err = two_t4s.run_json("a.yaml", "--no-lineage", "--run-id", "a100")
    assert code == 0 and status["state"] == "succeeded", f"{status}\n{err}"
    assert status["stages"]["train"]["infra"] == "local"
    assert _env_of(two_t4s, status["stages"]["train"], tmp_path).get("CUDA_VISIBLE_DEVICES") == "0"


def test_a_stage_wanting_more_gpus_than_the_machine_has_is_refused(two_t4s: Skyflow, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    two_t4s.write("big.yaml", "name: big\nstages:\n  train:\n    resources: {accelerators: {T4: 4}}\n"
                  f"    estimate: {{hours: 0.01}}\n    run: touch {marker}\n")

    planned = two_t4s("run", "big.yaml", "--no-lineage", "-y")  # the planner finds no place for it
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "Traceback" not in planned.stderr and "stage 'train': no place to run it." in planned.stderr

    # forced onto this machine, it is refused there, naming what the machine has
    forced = two_t4s("run", "big.yaml", "--no-lineage", "-y", "--infra", "local", "--run-id", "forced",
                     env={"COLUMNS": "400"}, timeout=60)
    assert forced.returncode == 1, forced.stdout + forced.stderr
    assert "Traceback" not in forced.stdout + forced.stderr
    assert "stage 'train' asks for 4x T4, more than the local machine has" in forced.stdout  # under the plan
    assert "train failed: stage wants 4 GPUs; this machine has 2" in forced.stdout
    assert two_t4s.status("forced")["stages"]["train"]["state"] == "failed"
    assert not marker.exists(), "the stage ran without the GPUs it asked for"
