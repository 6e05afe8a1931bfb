"""How the Ray backend ends an attempt from what the Job Submission API answers (a job stopped outside
skyflow, one that succeeded without a result), stops jobs, reads clusters from the config, reviews a
launch for a cluster not configured yet, and reports a missing SDK or an unreachable dashboard."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import open_store
from skyflow.backends import ray_jobs
from skyflow.backends.base import Leftover, StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.masking import MASK
from skyflow.backends.ray_jobs import RayBackend, RayStageHandle, open_client, stop_and_wait
from skyflow.backends.remote_stage import result_key
from skyflow.config import RayCluster, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.planner import Placement

SECRET = "s3cr3t-token"


class FakeJobClient:
    """Answers like ray.job_submission.JobSubmissionClient; records stop_job calls."""

    def __init__(self, statuses: list[str], streamed: str = "", full_log: str = "") -> None:
        self.statuses, self.streamed, self.full_log = statuses, streamed, full_log
        self.stopped: list[str] = []

    def get_job_status(self, submission_id: str) -> Any:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == "gone":
            raise RuntimeError(f"Job {submission_id} does not exist")
        return types.SimpleNamespace(value=status)

    def stop_job(self, submission_id: str) -> bool:
        self.stopped.append(submission_id)
        raise RuntimeError("the job already finished")

    async def tail_job_logs(self, submission_id: str) -> AsyncIterator[str]:
        yield self.streamed

    def get_job_logs(self, submission_id: str) -> str:
        return self.full_log


def _launch(tmp_path: Path, infra: str = "ray/gpu", store_uri: str | None = "s3://bucket/skyflow") -> StageLaunch:
    placement = Placement(infra=infra, cloud="ray", region=None, zone=None, instance_type="ray:gpu",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0,
                          store_uri=store_uri)
    return launch_for(tmp_path, "python train.py", placement=placement, secrets=(SECRET,),
                      env={"HF_TOKEN": SECRET})


def _handle(tmp_path: Path, client: FakeJobClient) -> RayStageHandle:
    return RayStageHandle(client, _launch(tmp_path), "gpu", "http://head:8265", "skyflow-r1-train-1-abcd",
                          str(tmp_path / "store"), result_key("r1", "train", 1), poll_s=0.0)


def test_a_job_stopped_outside_skyflow_is_a_termination_naming_the_job(tmp_path: Path) -> None:
    client = FakeJobClient(["RUNNING", "STOPPED"], streamed="epoch 1\n",
                           full_log=f"epoch 1\nepoch 2 with {SECRET}\n")
    handle = _handle(tmp_path, client)
    exit_ = handle.wait()  # follows the log itself when launch did not
    assert (exit_.exit_code, exit_.reason) == (-15, "Ray job skyflow-r1-train-1-abcd was stopped outside skyflow")
    # what the stream missed is taken from the full log, masked like the rest
    assert handle.launch.log_path.read_text() == f"epoch 1\nepoch 2 with {MASK}\n"


def test_a_job_that_succeeded_without_a_result_is_a_failure_naming_where_it_looked(tmp_path: Path) -> None:
    open_store(str(tmp_path / "store"), create=True)
    exit_ = _handle(tmp_path, FakeJobClient(["SUCCEEDED"])).wait()
    assert exit_.exit_code == 1
    assert exit_.reason == (f"the Ray job succeeded but wrote no result to {tmp_path / 'store'}/"
                            f"{result_key('r1', 'train', 1)}")


def test_a_malformed_result_is_a_backend_error(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"), create=True)
    store.write_bytes(result_key("r1", "train", 1), json.dumps({"outputs": {"model": "not a record"}}).encode())
    with pytest.raises(BackendError, match=r"^stage 'train'\'s result at .*/runs/r1/train/attempt-1/result\.json is "
                                           r"malformed: 'str' object is not a mapping$") as raised:
        _handle(tmp_path, FakeJobClient(["SUCCEEDED"])).wait()
    assert (raised.value.stage, raised.value.backend) == ("train", "ray")


def _clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock that moves 10 s per reading; sleeping is recorded, not waited."""
    slept: list[float] = []
    now = iter(range(0, 100_000, 10))
    monkeypatch.setattr(ray_jobs, "time", types.SimpleNamespace(monotonic=lambda: float(next(now)),
                                                                sleep=slept.append))
    return slept


def test_stop_and_wait_polls_until_the_job_ends_even_when_stop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = _clock(monkeypatch)
    client = FakeJobClient(["RUNNING", "RUNNING", "STOPPED"])
    assert stop_and_wait(client, "job-1", timeout_s=600) == "STOPPED"
    assert client.stopped == ["job-1"] and slept == [ray_jobs.POLL_S, ray_jobs.POLL_S]


def test_stop_and_wait_on_a_job_ray_no_longer_knows_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock(monkeypatch)
    assert stop_and_wait(FakeJobClient(["gone"]), "job-1") == "STOPPED"


def test_stop_and_wait_gives_up_after_its_timeout_with_the_last_status(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = _clock(monkeypatch)
    assert stop_and_wait(FakeJobClient(["RUNNING"]), "job-1", timeout_s=35) == "RUNNING"
    assert len(slept) == 3  # readings at 10, 20 and 30 s; at 40 s the deadline (35 s) has passed


def test_capacity_counts_every_node_of_every_cluster() -> None:
    config = SkyflowConfig(ray_clusters={
        "gpu": RayCluster(address="http://a:8265", nodes=4, accelerators={"A100": 8}, cpus=96, memory_gb=1000),
        "cpu": RayCluster(address="http://b:8265", nodes=2, cpus=16),
        "small": RayCluster(address="http://c:8265")})
    cap = RayBackend(config).capacity()
    assert (cap.cpus, cap.memory_gb, dict(cap.gpus), cap.max_parallel) == (416, 4000, {"A100": 32}, 64)


def test_plain_ray_means_the_only_configured_cluster_and_is_ambiguous_with_two() -> None:
    one = SkyflowConfig(ray_clusters={"gpu": RayCluster(address="http://a:8265")})
    assert RayBackend(one).cluster("ray") == ("gpu", one.ray_clusters["gpu"])
    two = SkyflowConfig(ray_clusters={"gpu": RayCluster(address="http://a:8265"),
                                      "cpu": RayCluster(address="http://b:8265")})
    with pytest.raises(BackendError, match=r"^no Ray cluster '\(unnamed\)' in the skyflow config \(configured: "
                                           r"cpu, gpu\); add it under ray_clusters: \{NAME: "):
        RayBackend(two).cluster("ray", "train")


def test_a_dry_run_for_an_unconfigured_cluster_shows_why_above_a_placeholder_address(tmp_path: Path) -> None:
    text = RayBackend(SkyflowConfig()).render(_launch(tmp_path, infra="ray/gpu", store_uri=None))
    lines = text.splitlines()
    assert lines[0] == "# Ray job on cluster 'gpu' (http://HEAD:8265), through its Job Submission API"
    assert any(line.startswith("# no Ray cluster 'gpu' in the skyflow config (configured: none)") for line in lines)
    assert "working_dir: '<skyflow''s code package " in text  # the package a launch would upload
    assert SECRET not in text


def test_a_dry_run_on_nodes_that_have_skyflow_uploads_no_code_package(tmp_path: Path) -> None:
    config = SkyflowConfig(ray_clusters={"gpu": RayCluster(address="http://head:8265", nodes_have_skyflow=True)})
    text = RayBackend(config).render(_launch(tmp_path))
    assert text.startswith("# Ray job on cluster 'gpu' (http://head:8265), through its Job Submission API\n")
    assert "working_dir" not in text and "code package" not in text


def test_abandon_ignores_handles_of_other_backends() -> None:
    def no_client(address: str) -> Any:
        raise AssertionError("no client may be opened")

    backend = RayBackend(SkyflowConfig(), client_factory=no_client)
    backend.abandon(Leftover(remote={"backend": "kubernetes", "context": "gke", "objects": []}))
    backend.abandon(Leftover(remote=None))


def test_without_rays_sdk_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)
    with pytest.raises(BackendError, match=r"^the Ray backend needs Ray's Job Submission SDK: "
                                           r"pip install 'ray\[default\]>=2.44,<3'"):
        open_client("http://head:8265")


def test_an_unreachable_dashboard_names_the_address_and_the_expected_form(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(address: str) -> Any:
        raise ConnectionError(f"Failed to connect to Ray at address: {address}.")

    monkeypatch.setattr(ray_jobs, "_client_class", lambda: refuse)
    with pytest.raises(BackendError, match=r"^cannot reach the Ray cluster's dashboard at http://head:8265: Failed "
                                           r"to connect to Ray at address: http://head:8265\.\. Is the cluster up, "
                                           r"and is this its dashboard address \(http://HEAD:8265\)\?$"):
        open_client("http://head:8265")


def test_a_refused_submission_is_a_backend_error_naming_the_cluster_and_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing(FakeJobClient):
        def submit_job(self, **kwargs: Any) -> str:
            raise RuntimeError("Request failed with status code 500")

    monkeypatch.setattr(ray_jobs, "remote_store_uri", lambda launch, backend: str(tmp_path / "store"))
    config = SkyflowConfig(ray_clusters={"gpu": RayCluster(address="http://head:8265", nodes_have_skyflow=True)})
    backend = RayBackend(config, client_factory=lambda address: Refusing(["PENDING"]))
    with pytest.raises(BackendError, match=r"^Ray cluster at http://head:8265: submitting stage 'train' failed: "
                                           r"Request failed with status code 500$") as caught:
        backend.launch(_launch(tmp_path))
    assert caught.value.stage == "train"
