"""Session on the FakeBackend: resuming a changed pipeline, lineage that cannot start, finding runs,
cancelling what a dead runner left (on this machine and on a backend that cannot be reached), stopping
services, and asking for a log a stage has not written yet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import FakeBackend, FakeResult
from skyflow.errors import BackendError, LineageError, RunError
from skyflow.planner import Placement, Plan
from skyflow.runner.context import RunOptions
from skyflow.runner.state import RunStore
from skyflow.session import Session
from skyflow.session.api import _resolve
from skyflow.spec.loader import load_pipeline
from tests.unit.test_processes import STUBBORN

T = TypeVar("T")
PIPELINE = """
name: two
params: {{flavour: plain}}
stages:
  prep: {{run: prep, outputs: [rows]}}
  train: {{run: 'train {marker}', inputs: {{rows: prep.rows}}, outputs: [model]}}
"""


def in_worker_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` off the main thread, as a server or notebook calling skyflow does (no signal handlers)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def local_plan() -> Plan:
    local = Placement(infra="local", cloud="local", region=None, zone=None, instance_type="local", accelerators={},
                      use_spot=False, num_nodes=1, hourly_usd=0.0, hours=1.0)
    return Plan(pipeline="two", objective="cost", stages={"prep": local, "train": local}, egress=(),
                total_usd=0.0, total_hours=2.0)


def writes_outputs(failing: set[str]) -> FakeBackend:
    def handler(launch: StageLaunch) -> FakeResult:
        if launch.stage in failing:
            return FakeResult(exit_code=2, lines=["no good"])
        for name, path in launch.outputs.items():
            (path / f"{name}.txt").write_text(f"{launch.stage} wrote {name}")
        return FakeResult(lines=[f"{launch.stage} done"])

    return FakeBackend(handler)


def session(tmp_path: Path, backend: FakeBackend, warnings: list[str]) -> Session:
    return Session(home=tmp_path / "home", environ={"SKYFLOW_RETRY_BASE_S": "0", "PATH": "/usr/bin"},
                   warn=warnings.append, backends={"local": backend})


def write_pipeline(tmp_path: Path, marker: str = "v1") -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.format(marker=marker))
    return path


def options() -> RunOptions:
    return RunOptions(retry_base_delay_s=0.0, env={"PATH": "/usr/bin"})


def test_resuming_a_changed_pipeline_warns_and_runs_the_current_version(tmp_path: Path) -> None:
    warnings: list[str] = []
    path = write_pipeline(tmp_path)
    first = session(tmp_path, writes_outputs({"train"}), warnings)
    failed = in_worker_thread(lambda: first.run(load_pipeline(path), local_plan(), run_id="r1", options=options(),
                                                lineage=False))
    assert failed.state == "failed" and warnings == []
    write_pipeline(tmp_path, marker="v2")
    backend = writes_outputs(set())
    resumed = in_worker_thread(lambda: session(tmp_path, backend, warnings).resume("r1"))
    assert resumed.ok
    assert warnings == [f"{path} changed since run r1 started; resuming with the current version"]
    assert [launch.run for launch in backend.launches] == ["train v2"]  # prep's output is reused


def test_lineage_that_cannot_start_is_turned_off_with_one_warning(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mlflow(*args: object, **kwargs: object) -> None:
        raise LineageError("this MLflow cannot reach that store")

    monkeypatch.setattr("skyflow.lineage.recorder.open_recorder", no_mlflow)
    warnings: list[str] = []
    path = write_pipeline(tmp_path)
    result = in_worker_thread(lambda: session(tmp_path, writes_outputs(set()), warnings).run(
        load_pipeline(path), local_plan(), run_id="r1", options=options(), lineage=True))
    assert result.ok and result.lineage is None
    assert warnings == ["lineage off: this MLflow cannot reach that store"]


def test_the_default_warning_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Session(home=tmp_path).warn("the catalog is 40 days old")
    assert capsys.readouterr() == ("", "warning: the catalog is 40 days old\n")


def test_the_newest_run_is_the_default_and_none_is_an_error(tmp_path: Path) -> None:
    s = Session(home=tmp_path / "home")
    with pytest.raises(RunError, match=r"no runs yet; start one with `skyflow run PIPELINE`"):
        s.get_run()
    for run_id, pipeline in (("old", "a"), ("new", "b")):
        s.state.create_run(run_id, pipeline, f"{pipeline}.yaml", "d", {}, {}, None, ["x"], None)
    assert s.get_run().run_id == "new"
    assert [r.run_id for r in s.runs()] == ["new", "old"]
    assert [r.run_id for r in s.runs(pipeline="a")] == ["old"]


def dead_runner_run(home: Path, stages: list[str]) -> RunStore:
    """A run recorded as running whose runner is gone (killed without a chance to record it)."""
    state = RunStore(home / "state.db")
    state.create_run("r1", "two", "pipeline.yaml", "d", {}, {}, None, stages, None)
    state.set_run("r1", runner_pid=None)
    return state


def test_only_a_running_run_can_be_cancelled(tmp_path: Path) -> None:
    state = dead_runner_run(tmp_path / "home", ["prep"])
    state.set_run("r1", state="succeeded")
    with pytest.raises(RunError, match=r"run 'r1' is succeeded; only a running run can be cancelled"):
        Session(home=tmp_path / "home").cancel("r1")


def test_cancelling_a_run_whose_runner_died_keeps_what_finished(tmp_path: Path) -> None:
    state = dead_runner_run(tmp_path / "home", ["prep", "train"])
    state.finish_stage("r1", "prep", "succeeded", {})
    assert Session(home=tmp_path / "home").cancel("r1") == "cancelled"
    run = state.get_run("r1")
    assert run.state == "cancelled"
    assert run.stages["prep"].state == "succeeded"
    assert (run.stages["train"].state, run.stages["train"].message) == ("cancelled", "run cancelled")


def _deaf_runner_run(home: Path) -> tuple[RunStore, subprocess.Popen[str]]:
    """A run whose recorded runner is alive and ignores SIGTERM."""
    state = dead_runner_run(home, ["train"])
    deaf = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert deaf.stdout is not None and deaf.stdout.readline() == "ready\n"
    state.set_run("r1", runner_pid=deaf.pid)
    state.set_stage("r1", "train", state="running")
    return state, deaf


def test_a_runner_that_ignores_sigterm_is_killed_and_the_run_cancelled(tmp_path: Path) -> None:
    state, deaf = _deaf_runner_run(tmp_path / "home")
    try:
        assert Session(home=tmp_path / "home").cancel("r1", timeout_s=0.2) == "cancelled"
        assert deaf.wait(timeout=30) == -signal.SIGKILL
        assert state.get_run("r1").state == "cancelled" and state.get_stage("r1", "train").state == "cancelled"
    finally:
        deaf.kill()
        deaf.communicate(timeout=30)


def test_a_runner_that_survives_sigkill_leaves_the_run_as_it_was(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # a process in uninterruptible sleep (a hung NFS read) outlives SIGKILL until the kernel lets go
    import skyflow.processes

    state, deaf = _deaf_runner_run(tmp_path / "home")
    monkeypatch.setattr(skyflow.processes, "kill_process", lambda pid, start: False)
    try:
        with pytest.raises(RunError, match=rf"the runner of run 'r1' \(pid {deaf.pid}\) did not end on SIGTERM, "
                                           r"nor within 5 s of SIGKILL .*try `skyflow cancel r1` again"):
            Session(home=tmp_path / "home").cancel("r1", timeout_s=0.2)
        assert state.get_run("r1").state == "running" and state.get_stage("r1", "train").state == "running"
    finally:
        deaf.kill()
        deaf.communicate(timeout=30)


class UnreachableBackend(FakeBackend):
    def abandon(self, leftover: Leftover) -> None:
        raise BackendError("the cloud API did not answer")


@pytest.mark.parametrize(("backend", "message"), [
    (FakeBackend(), "run cancelled"),
    (UnreachableBackend(), "run cancelled; stopping it on aws/us-east-1 failed: the cloud API did not answer"),
])
def test_cancelling_stops_a_remote_stage_or_says_why_it_could_not(tmp_path: Path, backend: FakeBackend,
                                                                   message: str) -> None:
    state = dead_runner_run(tmp_path / "home", ["train"])
    state.set_stage("r1", "train", state="running", infra="aws/us-east-1", remote_handle=json.dumps({"task": "t-1"}))
    Session(home=tmp_path / "home", backends={"skypilot": backend}).cancel("r1")
    assert state.get_stage("r1", "train").message == message
    assert state.get_run("r1").state == "cancelled"


class NoServices:
    """A backend that runs stages but cannot serve or stop services."""

    name = "batch-only"


def test_down_refuses_a_service_on_a_backend_that_cannot_stop_it(tmp_path: Path) -> None:
    state = dead_runner_run(tmp_path / "home", ["serve"])
    state.set_stage("r1", "serve", infra="ssh/lab", endpoint="http://lab:8000",
                    remote_handle=json.dumps({"pid": 1}))
    with pytest.raises(RunError, match=r"stage 'serve' serves on ssh/lab, whose backend cannot stop services"):
        Session(home=tmp_path / "home", backends={"ssh": NoServices()}).down("r1")  # type: ignore[dict-item]
    fake = FakeBackend()
    assert Session(home=tmp_path / "home", backends={"ssh": fake}).down("r1") == ["serve"]
    assert fake.stopped_services == [Leftover((), {"pid": 1})]
    row = state.get_stage("r1", "serve")
    assert row.remote_handle is None and row.message == "stopped (was serving at http://lab:8000)"


def test_a_stage_without_a_log_yet_says_what_state_it_is_in(tmp_path: Path) -> None:
    dead_runner_run(tmp_path / "home", ["prep"])
    with pytest.raises(RunError, match=r"stage 'prep' of run 'r1' has no log yet \(it is pending\)"):
        Session(home=tmp_path / "home").log_path("r1", "prep")


def test_a_loaded_pipeline_is_loaded_again_only_for_new_params(tmp_path: Path) -> None:
    loaded = load_pipeline(write_pipeline(tmp_path))
    assert _resolve(loaded, None) is loaded
    again = _resolve(loaded, {"flavour": "spicy"})
    assert again.spec.params["flavour"] == "spicy" and loaded.spec.params["flavour"] == "plain"
