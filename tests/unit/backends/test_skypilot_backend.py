"""The SkyPilot backend's launch path with a fake ``sky`` module that records every call, and the
task's setup/run/file_mounts that install skyflow's code package on each node.

This is the one sanctioned fake: SkyPilot provisions real clouds, which no test here can reach. The
fake answers like SkyPilot 0.14's SDK (request ids resolved by ``stream_and_get``); the artifact store
the stage wrapper would write its result to is a real local directory.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import open_store
from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.masking import MASK
from skyflow.backends.registry import BackendContext
from skyflow.backends.remote_stage import code_package_for, result_key
from skyflow.backends.skypilot import SkyPilotBackend, SkyPilotStageHandle, SkyServeService, from_context
from skyflow.backends.skypilot_task import service_section, task_resources
from skyflow.config import _OUR_NAMES, SkyflowConfig, SkyPilotConfig, load_config
from skyflow.errors import BackendError, SpecError
from skyflow.planner import Placement
from skyflow.spec.models import Service, Stage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sky_signatures import SKY_PYTHON, CallShapes, Recording, real_signatures

SECRET = "hf_s3cr3t"


class FakeSky(types.ModuleType):
    """Records calls; `logs` is what tail_logs writes; `exit_code` what it returns."""

    def __init__(self) -> None:
        super().__init__("sky")
        self.calls: list[tuple[str, Any]] = []
        self.logs = f"step 1\nusing token {SECRET}\ndone"
        self.exit_code = 0
        self.on_tail: Any = None
        self.serve_statuses = ["CONTROLLER_INIT", "REPLICA_INIT", "READY"]
        self.jobs = types.SimpleNamespace(launch=self._jobs_launch, tail_logs=self._jobs_tail, cancel=self._jobs_cancel)
        self.serve = types.SimpleNamespace(up=self._serve_up, down=self._serve_down, status=self._serve_status)
        fake = self

        class Task:
            def __init__(self, config: dict[str, Any]) -> None:
                self.config = config
                self.secrets: dict[str, str] = {}

            @classmethod
            def from_yaml_config(cls, config: dict[str, Any]) -> Task:
                fake.calls.append(("Task.from_yaml_config", config))
                return cls(config)

            def update_secrets(self, secrets: dict[str, str]) -> None:
                self.secrets.update(secrets)

        self.Task = Task

    def stream_and_get(self, request: Any) -> Any:
        return request  # the fake's calls return their results directly

    def launch(self, task: Any, cluster_name: str, down: bool) -> Any:
        self.calls.append(("launch", {"cluster_name": cluster_name, "down": down, "secrets": task.secrets}))
        return 1, object()

    def tail_logs(self, cluster: str, job_id: int, follow: bool, output_stream: Any) -> int:
        self.calls.append(("tail_logs", (cluster, job_id, follow)))
        return self._write(output_stream)

    def down(self, cluster: str) -> None:
        self.calls.append(("down", cluster))

    def cancel(self, cluster: str, job_ids: list[int]) -> None:
        self.calls.append(("cancel", (cluster, job_ids)))

    def _write(self, stream: Any) -> int:
        if self.on_tail:
            self.on_tail()
        for piece in (self.logs[:7], self.logs[7:], "\n"):  # lines split across writes, as a stream does
            stream.write(piece)
        return self.exit_code

    def _jobs_launch(self, task: Any, name: str) -> Any:
        self.calls.append(("jobs.launch", {"name": name, "secrets": task.secrets}))
        return [42], object()

    def _jobs_tail(self, job_id: int, follow: bool, output_stream: Any) -> int:
        self.calls.append(("jobs.tail_logs", job_id))
        return self._write(output_stream)

    def _jobs_cancel(self, name: str | None = None, job_ids: list[int] | None = None) -> None:
        self.calls.append(("jobs.cancel", job_ids if job_ids is not None else {"name": name}))

    def _serve_up(self, task: Any, service_name: str) -> Any:
        self.calls.append(("serve.up", {"service_name": service_name, "config": task.config}))
        return service_name, "34.1.2.3:30001"

    def _serve_status(self, names: list[str]) -> list[dict[str, Any]]:
        self.calls.append(("serve.status", names))
        status = self.serve_statuses.pop(0) if len(self.serve_statuses) > 1 else self.serve_statuses[0]
        return [{"name": names[0], "status": types.SimpleNamespace(value=status),
                 "endpoint": "http://34.1.2.3:30001" if status == "READY" else None}]

    def _serve_down(self, name: str) -> None:
        self.calls.append(("serve.down", name))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture(scope="session")
def sdk_signatures() -> dict[str, inspect.Signature] | None:
    found = real_signatures()
    if found is None and os.environ.get("CI"):
        pytest.fail(f"{SKY_PYTHON} is missing: tests/services/prepare.sh installs SkyPilot there")
    return found


@pytest.fixture
def sky(monkeypatch: pytest.MonkeyPatch, sdk_signatures: dict[str, inspect.Signature] | None) -> Iterator[FakeSky]:
    """The fake, seen by skyflow through a recorder: after the test, every call skyflow made must bind
    to the real SDK's signature of that name (a fake that accepts what SkyPilot would refuse proves nothing)."""
    fake, shapes = FakeSky(), CallShapes()
    monkeypatch.setitem(sys.modules, "sky", Recording(fake, shapes))
    yield fake
    if sdk_signatures is not None:
        assert shapes.mismatches(sdk_signatures) == []


def _launch(tmp_path: Path, *, use_spot: bool = False, stage_spec: dict[str, Any] | None = None) -> StageLaunch:
    placement = Placement(infra="aws/us-east-1", cloud="aws", region="us-east-1", zone=None,
                          instance_type="p4d.24xlarge", accelerators={"A100": 8}, use_spot=use_spot, num_nodes=1,
                          hourly_usd=32.77, hours=1.0, store_uri="s3://bucket/skyflow")
    launch = launch_for(tmp_path, "python train.py", spec=stage_spec, placement=placement,
                        env={"SKYFLOW_STAGE": "train", "HF_TOKEN": SECRET}, secrets=(SECRET,),
                        outputs={"model": tmp_path / "model"})
    return replace(launch, log_path=tmp_path / "logs" / "stage.log")


@pytest.fixture
def backend(sky: FakeSky, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SkyPilotBackend:
    # Nodes would reach the pipeline's s3:// store; here that store is a local directory.
    store = open_store(str(tmp_path / "store"), create=True)
    monkeypatch.setattr("skyflow.backends.skypilot.remote_store_uri", lambda launch, backend: store.uri)
    return SkyPilotBackend(poll_s=0.0)


def _write_result(tmp_path: Path) -> dict[str, Any]:
    outputs = {"model": {"uri": "s3://bucket/skyflow/manifests/x.json", "digest": "d" * 64, "size_bytes": 5}}
    open_store(str(tmp_path / "store")).write_bytes(result_key("r1", "train", 1),
                                                    json.dumps({"outputs": outputs}).encode())
    return outputs


def test_on_demand_stage_is_launched_tailed_with_secrets_masked_and_taken_down(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    outputs = _write_result(tmp_path)
    lines: list[tuple[str, str]] = []
    backend.on_line = lambda stage, line: lines.append((stage, line))
    handle = backend.launch(_launch(tmp_path))
    exit_ = handle.wait()
    assert exit_.ok and exit_.outputs is not None
    assert {n: {"uri": r.uri, "digest": r.digest, "size_bytes": r.size_bytes} for n, r in exit_.outputs.items()} \
        == outputs
    assert exit_.outputs["model"].store_uri == str(tmp_path / "store")
    assert sky.names() == ["Task.from_yaml_config", "launch", "tail_logs", "down"]
    launched = dict(sky.calls[1][1])
    assert launched["down"] is True and launched["secrets"] == {"HF_TOKEN": SECRET}
    config = sky.calls[0][1]
    assert config["resources"]["infra"] == "aws/us-east-1" and config["resources"]["use_spot"] is False
    assert SECRET not in json.dumps(config)
    log = (tmp_path / "logs" / "stage.log").read_text()
    assert log == f"step 1\nusing token {MASK}\ndone\n"
    assert ("train", f"using token {MASK}") in lines


def test_a_malformed_result_names_its_stage_and_the_cluster_is_still_taken_down(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    open_store(str(tmp_path / "store")).write_bytes(result_key("r1", "train", 1), b'{"outputs": ["model"]}')
    with pytest.raises(BackendError, match=r"^stage 'train'\'s result at .*/runs/r1/train/attempt-1/result\.json is "
                                           r"malformed: ") as raised:
        backend.launch(_launch(tmp_path)).wait()
    assert (raised.value.stage, raised.value.backend) == ("train", "skypilot")
    assert sky.names()[-1] == "down"


def test_spot_stage_is_a_managed_job_and_is_never_taken_down_by_skyflow(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    _write_result(tmp_path)
    handle = backend.launch(_launch(tmp_path, use_spot=True))
    assert isinstance(handle, SkyPilotStageHandle) and handle.remote == {
        "backend": "skypilot", "cluster": handle.cluster, "job_id": 42, "managed": True}
    assert handle.wait().ok
    assert sky.names() == ["Task.from_yaml_config", "jobs.launch", "jobs.tail_logs"]


def test_a_failing_task_reports_its_exit_code_and_still_takes_the_cluster_down(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    sky.exit_code = 3
    exit_ = backend.launch(_launch(tmp_path)).wait()
    assert exit_.exit_code == 3 and not exit_.ok
    assert sky.names()[-1] == "down"


def test_success_without_a_result_is_a_failure(backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    exit_ = backend.launch(_launch(tmp_path)).wait()
    assert exit_.exit_code == 1 and "wrote no result" in exit_.reason


@pytest.mark.parametrize(("use_spot", "expected"), [(False, ("cancel", ("cluster", [1]))),
                                                    (True, ("jobs.cancel", [42]))])
def test_cancel_stops_the_job_through_skypilot(backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path,
                                               use_spot: bool, expected: tuple[str, Any]) -> None:
    handle = backend.launch(_launch(tmp_path, use_spot=use_spot))
    assert isinstance(handle, SkyPilotStageHandle)
    sky.on_tail = handle.cancel  # cancelled while the logs are being followed
    exit_ = handle.wait()
    assert exit_.cancelled and not exit_.ok
    name, args = expected
    assert (name, args if name == "jobs.cancel" else (handle.cluster, [1])) in sky.calls


def test_abandon_cancels_a_managed_job_or_takes_a_cluster_down(backend: SkyPilotBackend, sky: FakeSky) -> None:
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-1", "job_id": 7, "managed": True}))
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-2", "job_id": 1, "managed": False}))
    assert sky.calls == [("jobs.cancel", [7]), ("down", "sf-train-2")]


@pytest.mark.parametrize("use_spot", [False, True], ids=["cluster", "managed-job"])
def test_the_handle_written_ahead_names_what_the_launch_makes(backend: SkyPilotBackend, sky: FakeSky,
                                                               tmp_path: Path, use_spot: bool) -> None:
    """Recorded before `sky launch` or `sky jobs launch` (minutes of provisioning) returns."""
    launch = _launch(tmp_path, use_spot=use_spot)
    planned = backend.planned_remote(launch)
    handle = backend.launch(launch)
    assert isinstance(handle, SkyPilotStageHandle)
    assert planned == {**handle.remote, "job_id": None}
    made = sky.calls[-1][1]
    assert made["name" if use_spot else "cluster_name"] == planned["cluster"]


def test_the_handle_written_ahead_for_a_service_is_the_services(backend: SkyPilotBackend, sky: FakeSky,
                                                                tmp_path: Path) -> None:
    launch = _launch(tmp_path, stage_spec={"resources": {"ports": 8000}, "service": {"readiness_probe": "/"}})
    assert backend.planned_remote(launch) == backend.serve(launch).remote


def test_abandon_of_a_handle_written_ahead_cancels_the_managed_job_by_name_or_takes_the_cluster_down(
        backend: SkyPilotBackend, sky: FakeSky) -> None:
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-1", "job_id": None,
                                     "managed": True}))
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-2", "job_id": None,
                                     "managed": False}))
    assert sky.calls == [("jobs.cancel", {"name": "sf-train-1"}), ("down", "sf-train-2")]


@pytest.mark.parametrize("absent", ["ClusterDoesNotExist", "ClusterNotUpError"])
def test_abandon_of_what_was_never_made_or_is_gone_is_not_an_error(backend: SkyPilotBackend, sky: FakeSky,
                                                                    absent: str) -> None:
    """A runner that died before its launch reached SkyPilot left a handle whose cluster (or jobs controller)
    is not there: resume goes on."""
    error = type(absent, (ValueError,), {})

    def missing(*args: Any, **kwargs: Any) -> None:
        raise error("Cluster 'sf-train-2' does not exist.")

    sky.down = missing  # type: ignore[method-assign]
    sky.jobs.cancel = missing
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-2", "job_id": None,
                                     "managed": False}))
    backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-1", "job_id": None,
                                     "managed": True}))


def test_launch_failure_is_a_backend_error_naming_the_stage(backend: SkyPilotBackend, sky: FakeSky,
                                                             tmp_path: Path) -> None:
    def refuse(task: Any, cluster_name: str, down: bool) -> Any:
        raise RuntimeError("ResourcesUnavailableError: no p4d.24xlarge in us-east-1")

    sky.launch = refuse  # type: ignore[method-assign]
    with pytest.raises(BackendError, match=r"could not launch stage 'train' on aws/us-east-1.*p4d"):
        backend.launch(_launch(tmp_path))


def _service_stage() -> dict[str, Any]:
    return {"run": "python serve.py", "resources": {"ports": 8080},
            "service": {"readiness_probe": "/health", "replicas": 2}}


def test_serve_up_then_ready_when_sky_serve_status_says_ready_then_down(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    service = backend.serve(_launch(tmp_path, stage_spec=_service_stage()))
    assert isinstance(service, SkyServeService)
    up = sky.calls[1][1]
    assert up["config"]["service"] == {"readiness_probe": {"path": "/health", "initial_delay_seconds": 1200,
                                                           "timeout_seconds": 15}, "replicas": 2}
    assert service.wait_ready(threading.Event(), timeout_s=60) is None
    assert sky.names().count("serve.status") == 3
    assert service.endpoint == "http://34.1.2.3:30001"
    # as `skyflow down` does, from the run state
    backend.stop_service(Leftover(remote=json.loads(json.dumps(service.remote))))
    assert sky.calls[-1] == ("serve.down", up["service_name"])


def test_a_failed_service_is_reported_with_where_to_look(backend: SkyPilotBackend, sky: FakeSky,
                                                          tmp_path: Path) -> None:
    sky.serve_statuses = ["REPLICA_INIT", "FAILED"]
    service = backend.serve(_launch(tmp_path, stage_spec=_service_stage()))
    problem = service.wait_ready(threading.Event(), timeout_s=60)
    assert problem is not None and "FAILED" in problem and f"sky serve logs {service.name}" in problem


def test_a_service_never_ready_times_out_and_a_cancel_stops_waiting(backend: SkyPilotBackend, sky: FakeSky,
                                                                     tmp_path: Path) -> None:
    sky.serve_statuses = ["REPLICA_INIT"]
    service = backend.serve(_launch(tmp_path, stage_spec=_service_stage()))
    problem = service.wait_ready(threading.Event(), timeout_s=0.0)
    assert problem == "not READY after 0 s (sky serve status: REPLICA_INIT)"
    cancelled = threading.Event()
    cancelled.set()
    assert service.wait_ready(cancelled, timeout_s=60) == "cancelled"


# -- how nodes get skyflow ----------------------------------------------------------------------------

def test_nodes_install_the_code_package_from_a_file_mount_then_run_the_wrapper_with_it(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    _write_result(tmp_path)
    assert backend.launch(_launch(tmp_path)).wait().ok
    config = sky.calls[0][1]
    package = code_package_for(str(tmp_path / "store"))
    remote = f"~/.skyflow/code/{package.digest}"
    assert config["file_mounts"] == {remote: str(package.directory)}
    assert sorted(p.name for p in package.directory.iterdir()) == sorted(f.name for f in package.files)
    setup = _installer_config(config["setup"])
    assert setup["digest"] == package.digest and setup["fetch"] == "dir" and setup["dir"] == remote
    assert config["run"].endswith('"$SKYFLOW_PYTHON" -P -m skyflow.backends.remote_stage "$@"\n')
    assert _installer_config(config["run"]) == setup  # finds what setup installed
    assert "skyflow[" not in json.dumps(config)  # never a name from a package index
    assert not (tmp_path / "store" / "code").exists()  # SkyPilot carries the file mount; nothing uploaded


def test_an_install_of_your_own_replaces_the_code_package(sky: FakeSky, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("skyflow.backends.skypilot.remote_store_uri", lambda launch, backend: str(tmp_path))
    baked = SkyPilotBackend(config=SkyPilotConfig(install="", python="/opt/venv/bin/python"))
    config = baked.task_config(_launch(tmp_path), str(tmp_path))
    assert "setup" not in config and "file_mounts" not in config
    assert config["run"] == "/opt/venv/bin/python -m skyflow.backends.remote_stage"
    own = SkyPilotBackend(config=SkyPilotConfig(install="uv pip install --system /wheels/*.whl"))
    config = own.task_config(_launch(tmp_path), str(tmp_path))
    assert config["setup"] == "uv pip install --system /wheels/*.whl"
    assert config["run"] == "python3 -m skyflow.backends.remote_stage"


# Refused inputs: each asks pip (or uv) to resolve one of the names the refusal guards, in a spelling
# the check must see through, on a package index. Nothing here runs them; they are built from the
# refusal's own list of names, so no line of this file is such an install.
_MODULE, _DIST = sorted(_OUR_NAMES)
_BY_NAME = [("pip install {}", _MODULE), ("uv pip install --system '{}'", f"{_DIST}[s3]>=0.1"),
            ("pip install torch && python3 -m pip install -q {}", _DIST.replace("-", "_").swapcase()),
            ("/opt/venv/bin/pip install {}; echo done", f"{_MODULE}==0.1")]
# Accepted: a path, a direct reference, a wheel file, and the name only as some other word's argument.
_AS_CODE = [("pip install -e /src/{}", _MODULE), ("pip install '{} @ git+https://example.com/repo@abc123'", _DIST),
            ("pip install /wheels/{}-0.1.0-py3-none-any.whl", _DIST.replace("-", "_")),
            ("pip install torch && echo {}", _MODULE), ("pip install -r {}", _MODULE)]


@pytest.mark.parametrize("setup", [command.format(name) for command, name in _BY_NAME],
                         ids=["bare-name", "uv-with-extras-and-version", "after-another-command", "pip-by-path-pinned"])
def test_an_install_of_your_own_may_not_fetch_skyflow_by_name(tmp_path: Path, setup: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"skypilot:\n  install: {json.dumps(setup)}\n")
    with pytest.raises(SpecError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:2:12: skypilot.install: skypilot.install pip-installs ")
    assert "by name: a package index holds other code under that name" in message
    assert "Leave install out" in message


@pytest.mark.parametrize("setup", ["", "uv pip install --system /wheels/*.whl",
                                   *(command.format(name) for command, name in _AS_CODE)],
                         ids=["none", "wheels-by-glob", "editable-path", "direct-reference", "wheel-file", "echo",
                              "requirements-file"])
def test_an_install_of_your_own_may_give_skyflow_as_code(setup: str) -> None:
    assert SkyPilotConfig(install=setup).install == setup


def test_the_config_file_reaches_the_backend(tmp_path: Path) -> None:
    config = SkyflowConfig.model_validate({"skypilot": {"python": "python3.11", "code_fetch": "url"}})
    backend = from_context(BackendContext(config=config))
    assert backend.settings.python == "python3.11" and backend.settings.code_fetch == "url"


def test_signed_urls_from_a_store_that_cannot_sign_fail_the_launch_with_the_fix(
        sky: FakeSky, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path / "store"), create=True)
    monkeypatch.setattr("skyflow.backends.skypilot.remote_store_uri", lambda launch, backend: store.uri)
    url = SkyPilotBackend(config=SkyPilotConfig(code_fetch="url"))
    with pytest.raises(BackendError, match=r"stage 'train': cannot ship skyflow's code package to the nodes: .*"
                                           r"cannot make signed URLs.*skypilot: \{install: \.\.\.\}"):
        url.launch(_launch(tmp_path))
    assert sky.calls == []


def test_a_dry_run_with_signed_urls_shows_placeholders_and_ships_nothing(sky: FakeSky, tmp_path: Path) -> None:
    launch = _launch(tmp_path)
    text = SkyPilotBackend(config=SkyPilotConfig(code_fetch="url")).render(launch)
    package = code_package_for("s3://bucket/skyflow")
    assert f"<signed at launch: s3://bucket/skyflow/code/wheels/{package.files[0].sha256}/" in text
    assert "file_mounts" not in text and "setup: |\n  SKYFLOW_PYTHON=$(python3 -I -c '" in text
    assert sky.calls == []


def test_a_stages_image_id_reaches_the_task(backend: SkyPilotBackend, tmp_path: Path) -> None:
    launch = _launch(tmp_path, stage_spec={"resources": {"image_id": "docker:python:3.11-slim"}})
    config = backend.task_config(launch, str(tmp_path))
    assert config["resources"]["image_id"] == "docker:python:3.11-slim"


def _installer_config(script: str) -> dict[str, Any]:
    """The JSON the bootstrap hands its installer (the last single-quoted argument)."""
    quoted = script.split(" -I -c ", 1)[1].split(") || exit", 1)[0]
    return dict(json.loads(shlex.split(quoted)[1]))


def test_the_signature_check_refuses_calls_the_real_sdk_would_refuse(
        sdk_signatures: dict[str, inspect.Signature] | None) -> None:
    if sdk_signatures is None:
        pytest.skip("SkyPilot's venv is not here (tests/services/prepare.sh makes it)")
    shapes = CallShapes([("jobs.launch", 1, ("cluster_name",)),  # jobs.launch names it `name`
                         ("tail_logs", 1, ("follow",)),  # job_id is required
                         ("down", 4, ()),  # down(cluster_name, purge, graceful, graceful_timeout); a 5th is not
                         ("down", 5, ()), ("launch", 1, ("cluster_name", "down")), ("sky.nothing", 0, ())])
    wrong = shapes.mismatches(sdk_signatures)
    assert len(wrong) == 4
    assert "jobs.launch" in wrong[0] and "tail_logs" in wrong[1] and "down(5 positional" in wrong[2]
    assert "does not know" in wrong[3]


# -- failures SkyPilot reports, and what is left to stop ------------------------------------------------

def test_without_skypilot_installed_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sky", None)
    with pytest.raises(BackendError, match=r"^stages placed on a cloud run through SkyPilot: "
                                           r"pip install 'skypilot>=0.10'"):
        _ = SkyPilotBackend().sky


def test_a_task_skypilot_rejects_names_the_stage_and_launches_nothing(backend: SkyPilotBackend, sky: FakeSky,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(config: dict[str, Any]) -> Any:
        raise ValueError("Invalid resources: disk_tier 'ultra' is not supported")

    monkeypatch.setattr(sky.Task, "from_yaml_config", reject)
    with pytest.raises(BackendError, match=r"^SkyPilot rejected the task for stage 'train': Invalid resources: "
                                           r"disk_tier 'ultra' is not supported$") as caught:
        backend.launch(_launch(tmp_path))
    assert caught.value.stage == "train" and "launch" not in sky.names()


def test_a_stage_without_secrets_launches_without_any(backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    launch = replace(_launch(tmp_path), env={"SKYFLOW_STAGE": "train"}, secret_values=())
    handle = backend.launch(launch)
    assert handle.process_groups == []  # nothing runs on this machine
    assert dict(sky.calls[1][1])["secrets"] == {} and "secrets" not in sky.calls[0][1]


@pytest.mark.parametrize("managed", [False, True])
def test_losing_the_log_stream_is_a_backend_error_and_a_plain_cluster_still_goes_down(
        backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path, managed: bool) -> None:
    def lose() -> None:
        raise ConnectionError("API server closed the connection")

    sky.on_tail = lose
    handle = backend.launch(_launch(tmp_path, use_spot=managed))
    assert isinstance(handle, SkyPilotStageHandle)
    with pytest.raises(BackendError, match=rf"^SkyPilot: following {handle.cluster} failed: API server closed "
                                           r"the connection$") as caught:
        handle.wait()
    assert caught.value.stage == "train"
    assert (sky.names()[-1] == "down") is not managed  # a managed job is SkyPilot's to end


def test_a_backend_error_while_following_is_passed_on_as_it_is(backend: SkyPilotBackend, sky: FakeSky,
                                                                tmp_path: Path) -> None:
    def fail() -> None:
        raise BackendError("the run's store went away", stage="train", backend="skypilot")

    sky.on_tail = fail
    with pytest.raises(BackendError, match=r"^the run's store went away$"):
        backend.launch(_launch(tmp_path)).wait()
    assert sky.names()[-1] == "down"


def test_a_failed_serve_up_names_the_stage(backend: SkyPilotBackend, sky: FakeSky, tmp_path: Path) -> None:
    def refuse(task: Any, service_name: str) -> Any:
        raise RuntimeError("controller is not up")

    sky.serve.up = refuse
    with pytest.raises(BackendError, match=r"^sky serve up failed for stage 'train': controller is not up$"):
        backend.serve(_launch(tmp_path, stage_spec=_service_stage()))


def test_a_service_stops_through_sky_serve_down_and_runs_nothing_here(backend: SkyPilotBackend, sky: FakeSky,
                                                                      tmp_path: Path) -> None:
    service = backend.serve(_launch(tmp_path, stage_spec=_service_stage()))
    assert service.process_groups == []
    service.stop()
    assert sky.calls[-1] == ("serve.down", service.name)


def test_abandon_takes_down_a_service_that_never_became_ready_and_ignores_empty_handles(
        backend: SkyPilotBackend, sky: FakeSky) -> None:
    backend.abandon(Leftover(remote=None))
    backend.stop_service(Leftover(remote=None))
    backend.abandon(Leftover(remote={"backend": "skypilot", "service": "sf-serve-1a2b"}))
    assert sky.calls == [("serve.down", "sf-serve-1a2b")]


def test_a_failed_teardown_says_which_sky_command_failed(backend: SkyPilotBackend, sky: FakeSky) -> None:
    def refuse(cluster: str) -> None:
        raise RuntimeError(f"cluster {cluster} is locked by another operation")

    sky.down = refuse  # type: ignore[method-assign]
    with pytest.raises(BackendError, match=r"^SkyPilot: sky down sf-train-2 failed: cluster sf-train-2 is locked "
                                           r"by another operation$"):
        backend.abandon(Leftover(remote={"backend": "skypilot", "cluster": "sf-train-2", "job_id": 1,
                                         "managed": False}))


def test_clouds_offer_no_fixed_capacity() -> None:
    cap = SkyPilotBackend(sky_module=types.SimpleNamespace()).capacity()
    assert (cap.cpus, cap.memory_gb, dict(cap.gpus), cap.max_parallel) == (0.0, 0.0, {}, 64)


# -- the task's resources ---------------------------------------------------------------------------

def _placement(**fields: Any) -> Placement:
    base: dict[str, Any] = {"infra": "aws/us-east-1", "cloud": "aws", "region": "us-east-1", "zone": None,
                            "instance_type": "p4d.24xlarge", "accelerators": {}, "use_spot": False, "num_nodes": 1,
                            "hourly_usd": 1.0, "hours": 1.0}
    return Placement(**{**base, **fields})


def test_a_zone_pins_the_task_to_it_and_disk_settings_and_ports_travel() -> None:
    stage = Stage.model_validate({"run": "serve", "resources": {"disk_size": 512, "disk_tier": "high",
                                                               "ports": 8000},
                                  "service": {"readiness_probe": "/", "ports": 9000}})
    resources = task_resources(_placement(zone="us-east-1a"), stage)
    assert resources == {"infra": "aws/us-east-1/us-east-1a", "instance_type": "p4d.24xlarge", "use_spot": False,
                         "disk_size": 512, "disk_tier": "high", "ports": ["8000", "9000"]}


def test_a_placement_without_cloud_or_instance_type_leaves_them_to_skypilot() -> None:
    resources = task_resources(_placement(infra="", cloud="", region=None, instance_type=""),
                               Stage.model_validate({"run": "x"}))
    assert resources == {"use_spot": False}


def test_a_replica_policy_replaces_a_fixed_replica_count() -> None:
    service = Service.model_validate({"readiness_probe": "/health",
                                      "replica_policy": {"min_replicas": 1, "max_replicas": 4}})
    section = service_section(service)
    assert "replicas" not in section
    assert section["replica_policy"] == {"min_replicas": 1, "max_replicas": 4}
