"""The Backend contract: what every backend must do with a StageLaunch, written once.

A backend's test module provides a ``harness`` fixture (a BackendHarness for its backend) and
imports these tests with ``from tests.integration.backends.contract import *``. The tests build
launches the way the runner does: local input and output directories, the stage environment,
a workdir, a log path, secret values.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skyflow.backends.base import Backend, StageExit, StageHandle, StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.masking import MASK
from skyflow.planner import Placement

__all__ = [
    "BackendHarness",
    "make_launch",
    "test_cancel_stops_every_process_of_the_stage",
    "test_environment_follows_the_contract",
    "test_failing_setup_fails_the_stage_with_its_message",
    "test_non_zero_exit_is_reported",
    "test_secret_values_are_masked_in_the_log_and_the_stream",
    "test_success_runs_in_the_workdir_and_fills_the_outputs",
    "test_timeout_stops_the_stage",
]

SECRET = "hunter2-0xC0FFEE"


@dataclass
class BackendHarness:
    """A backend under test and how to look at what it did.

    ``alive(handle)`` says whether any process of the attempt still runs (wherever it runs);
    ``read_output(launch, exit_, name, file)`` the text of a file in an output, whether the
    backend filled the local output directory or committed the output itself (StageExit.outputs).
    """

    backend: Backend
    alive: Callable[[StageHandle], bool]
    lines: list[tuple[str, str]] = field(default_factory=list)
    read_output: Callable[[StageLaunch, StageExit, str, str], str] | None = None
    placement: Placement | None = None  # what the planner would put in StageLaunch (None: local)

    def output_text(self, launch: StageLaunch, exit_: StageExit, name: str, file: str) -> str:
        if self.read_output is not None:
            return self.read_output(launch, exit_, name, file)
        return (launch.outputs[name] / file).read_text()


def make_launch(root: Path, run: str, *, setup: str | None = None, timeout_s: float | None = None,
                num_nodes: int = 1, stage: str = "train", placement: Placement | None = None,
                secrets: tuple[str, ...] = ()) -> StageLaunch:
    """A launch as the runner builds it: an input `data` holding words.txt, an output `model`."""
    attempt = root / "attempt"
    workdir, data, model = root / "workdir", attempt / "inputs" / "data", attempt / "outputs" / "model"
    for path in (workdir, data, model):
        path.mkdir(parents=True, exist_ok=True)
    (workdir / "train.sh").write_text("echo trained > \"$SKYFLOW_OUTPUT_MODEL/weights.txt\"\n")
    (data / "words.txt").write_text("alpha\nbeta\n")
    env = {**os.environ, "SKYFLOW_RUN_ID": "contract-run", "SKYFLOW_STAGE": stage,
           "SKYFLOW_INPUT_DATA": str(data), "SKYFLOW_OUTPUT_MODEL": str(model),
           "SKYPILOT_NUM_NODES": str(num_nodes), "SKYPILOT_NODE_RANK": "0",
           "SKYPILOT_HEAD_IP": "127.0.0.1", "SKYPILOT_NODE_IPS": "127.0.0.1", "PYTHONUNBUFFERED": "1",
           **({"API_TOKEN": secrets[0]} if secrets else {})}
    return launch_for(root, run, stage=stage, setup=setup, timeout_s=timeout_s, num_nodes=num_nodes, env=env,
                      placement=placement, secrets=secrets, inputs={"data": data}, outputs={"model": model},
                      run_id="contract-run", workdir=workdir)


def _launch(harness: BackendHarness, launch: StageLaunch) -> StageHandle:
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    return harness.backend.launch(launch)


def _wait_for_log(launch: StageLaunch, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if launch.log_path.exists() and text in launch.log_path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the log: {launch.log_path.read_text()!r}")


def test_success_runs_in_the_workdir_and_fills_the_outputs(harness: BackendHarness, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "bash train.sh && wc -l < \"$SKYFLOW_INPUT_DATA/words.txt\" "
                                   "> \"$SKYFLOW_OUTPUT_MODEL/lines.txt\"", placement=harness.placement)
    exit_ = _launch(harness, launch).wait()
    assert exit_.ok, (exit_, launch.log_path.read_text())
    assert harness.output_text(launch, exit_, "model", "weights.txt") == "trained\n"
    assert harness.output_text(launch, exit_, "model", "lines.txt").strip() == "2"


def test_non_zero_exit_is_reported(harness: BackendHarness, tmp_path: Path) -> None:
    exit_ = _launch(harness, make_launch(tmp_path, "echo failing; exit 3", placement=harness.placement)).wait()
    assert exit_.exit_code == 3 and not exit_.ok
    assert not exit_.timed_out and not exit_.cancelled


def test_failing_setup_fails_the_stage_with_its_message(harness: BackendHarness, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "echo never-runs", setup="exit 4", placement=harness.placement)
    exit_ = _launch(harness, launch).wait()
    log = launch.log_path.read_text()
    assert exit_.exit_code == 4
    assert "setup failed with exit code 4" in log and "never-runs" not in log


def test_timeout_stops_the_stage(harness: BackendHarness, tmp_path: Path) -> None:
    launch = make_launch(tmp_path, "echo started; sleep 120", timeout_s=1.5, placement=harness.placement)
    started = time.monotonic()
    handle = _launch(harness, launch)
    exit_ = handle.wait()
    assert exit_.timed_out and not exit_.ok
    assert time.monotonic() - started < 60
    assert not harness.alive(handle)


def test_cancel_stops_every_process_of_the_stage(harness: BackendHarness, tmp_path: Path) -> None:
    # a background child too: cancel stops the whole process group, not only the shell
    launch = make_launch(tmp_path, "sleep 120 & echo started; wait", placement=harness.placement)
    handle = _launch(harness, launch)
    _wait_for_log(launch, "started")
    assert harness.alive(handle)
    result: list[StageExit] = []
    waiter = threading.Thread(target=lambda: result.append(handle.wait()))
    waiter.start()
    handle.cancel()
    waiter.join(timeout=60)
    assert result and result[0].cancelled and not result[0].ok, result
    assert not harness.alive(handle)


def test_environment_follows_the_contract(harness: BackendHarness, tmp_path: Path) -> None:
    run = ("{ env | grep -E '^(SKYFLOW|SKYPILOT)_' | sort; echo CWD_HAS_TRAIN=$(test -f train.sh && echo yes); "
           "echo INPUT_WORDS=$(head -1 \"$SKYFLOW_INPUT_DATA/words.txt\"); } > \"$SKYFLOW_OUTPUT_MODEL/env.txt\"")
    launch = make_launch(tmp_path, run, placement=harness.placement)
    exit_ = _launch(harness, launch).wait()
    assert exit_.ok, launch.log_path.read_text()
    lines = harness.output_text(launch, exit_, "model", "env.txt").splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert (env["SKYFLOW_RUN_ID"], env["SKYFLOW_STAGE"]) == ("contract-run", "train")
    assert (env["SKYPILOT_NODE_RANK"], env["SKYPILOT_NUM_NODES"]) == ("0", "1")
    assert env["SKYPILOT_HEAD_IP"] and env["SKYPILOT_NODE_IPS"]
    assert (env["CWD_HAS_TRAIN"], env["INPUT_WORDS"]) == ("yes", "alpha")
    assert env["SKYFLOW_INPUT_DATA"].endswith("data") and env["SKYFLOW_OUTPUT_MODEL"].endswith("model")


def test_secret_values_are_masked_in_the_log_and_the_stream(harness: BackendHarness, tmp_path: Path) -> None:
    # the stage fills its output: a stage that writes none fails (on the node, or when the runner commits)
    launch = make_launch(tmp_path, 'echo "token is $API_TOKEN"; echo "again $API_TOKEN" >&2; '
                                   'echo ok > "$SKYFLOW_OUTPUT_MODEL/ok.txt"',
                         placement=harness.placement, secrets=(SECRET,))
    harness.lines.clear()
    exit_ = _launch(harness, launch).wait()
    log = launch.log_path.read_text()
    assert exit_.ok, log
    assert SECRET not in log and f"token is {MASK}" in log and f"again {MASK}" in log
    streamed = [line for stage, line in harness.lines if stage == "train"]
    assert f"token is {MASK}" in streamed and all(SECRET not in line for line in streamed)
