"""`resources.job_recovery` on a Kubernetes stage, through `skyflow run`: a pod evicted or deleted from
outside (a preemption) is recovered by a new attempt, `recover_on_exit_codes` recovers the codes it
lists, and `max_restarts_on_errors` bounds the restarts on any other error.

No Kubernetes API server can run here, so kmock stands in for one and the test plays the Job
controller and kubelet (kmock_cluster.py), as test_kubernetes_backend.py does; the runner reaches it
through a kubeconfig, as it would a real cluster. :class:`DisruptingController` adds what a cluster
does to a running pod from outside: the kubelet evicting it (node pressure), or the pod being
deleted (a reclaimed spot node, preemption by the scheduler, a drain). The assertions are on what
skyflow decided (attempts, final state, how the runner classified each failed attempt), never on
the words this controller writes into pod or Job status.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyflow.artifacts import open_store
from tests.integration.backends.kmock_cluster import NAMESPACE, JobController, kmock_server
from tests.integration.backends.test_mixed_pipeline import _kubeconfig
from tests.integration.conftest import StoreServer
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 90
IMAGE = "skyflow:test"


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


@dataclass
class DisruptingController(JobController):
    """kmock_cluster's Job controller and kubelet, and the disruptions a cluster inflicts on a running pod.

    ``disrupt`` ends a Job's running stage container (its whole process tree, as the kubelet ends a
    container) and then reports the pod as Kubernetes does: ``evicted`` — the pod stays, Failed, with
    reason Evicted, a DisruptionTarget condition and its container terminated with 137; ``deleted`` —
    the pod is gone, and the Job controller, which counted it, fails the Job (backoffLimit 0).
    """

    disruptions: dict[str, str] = field(default_factory=dict)  # pod -> "evicted" | "deleted"

    def disrupt(self, job: str, how: str) -> None:
        pod = f"{job}-pod"
        with self._lock:
            self.disruptions[pod] = how
            stage = self.procs[job][-1]
        for pid in _process_tree(stage.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _run_pod(self, job: Any, pod: str, index: int | None) -> tuple[int, dict[str, Any]] | None:
        result = super()._run_pod(job, pod, index)
        how = self.disruptions.get(pod)
        if result is None or how is None:
            return result
        _, status = result
        if how == "deleted":
            self.core.delete_namespaced_pod(pod, NAMESPACE)
            return None
        status.update({
            "reason": "Evicted", "message": "The node was low on resource: memory.",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                            "message": "The node was low on resource: memory."}],
            "containerStatuses": [{"name": "stage", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 128 + signal.SIGKILL, "reason": "Error"}}}]})
        return 128 + signal.SIGKILL, status

    def _run_job(self, job: Any) -> None:
        super()._run_job(job)
        name = job.metadata.name
        if self.disruptions.get(f"{name}-pod") == "deleted" and not self._stop.is_set():
            self.batch.patch_namespaced_job_status(name, NAMESPACE, {"status": {"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}]}})


@dataclass
class Cluster:
    sky: Skyflow
    controller: DisruptingController
    store: str
    counter: Path

    def pipeline(self, run: str, recovery: str) -> None:
        """recovery.yaml: one stage on the cluster that counts its attempts ($n), then runs ``run``."""
        script = (f"n=$(( $(cat {self.counter} 2>/dev/null || echo 0) + 1 ))\necho $n > {self.counter}\n{run}\n"
                  "echo done > $SKYFLOW_OUTPUT_O/o\n")
        body = "".join(f"      {line}\n" for line in script.splitlines())
        self.counter.unlink(missing_ok=True)
        self.sky.write("recovery.yaml", f"name: recovery\nstores:\n  aws/us-east-1: {self.store}\nstages:\n  train:\n"
                                        f"    resources: {{infra: kubernetes/kmock, job_recovery: {recovery}}}\n"
                                        f"    retries: 0\n    outputs: [o]\n    run: |\n{body}")

    def start(self, run_id: str) -> subprocess.Popen[str]:
        return self.sky.start("run", "recovery.yaml", "--no-lineage", "--no-cache", "--run-id", run_id)

    def run(self, run_id: str) -> tuple[int, str]:
        ran = self.sky("run", "recovery.yaml", "--no-lineage", "--no-cache", "--run-id", run_id,
                       timeout=RUN_TIMEOUT_S)
        return ran.returncode, ran.stdout + ran.stderr

    def attempts(self, run_id: str) -> list[int]:
        """The exit code of each attempt of the stage, as run state recorded it."""
        with sqlite3.connect(self.sky.home / "state.db") as db:
            return [int(code) for (code,) in db.execute(
                "SELECT exit_code FROM attempts WHERE run_id=? AND stage='train' ORDER BY attempt", (run_id,))]

    def attempts_run(self) -> int:
        return int(self.counter.read_text())


def decisions(output: str) -> list[str]:
    """What the runner decided after each failed attempt it ran again (its `retrying` lines), without
    the details it quotes from the backend."""
    return [line.split("; ")[-1].split(" (")[0] for line in output.splitlines() if " train retrying: " in line]


@pytest.fixture
def cluster(tmp_path: Path, s3_server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    aws = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    store = s3_server.new_uri("skyflow")
    open_store(store, create=True)
    sky = Skyflow(tmp_path / "home", tmp_path / "work")
    sky.workdir.mkdir()
    sky.home.mkdir()
    sky.env.update(aws)
    with kmock_server() as emulator:
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", str(emulator.url))
        (sky.home / "config.yaml").write_text(yaml.safe_dump({"kubernetes": {
            "kubeconfig": str(kubeconfig),
            "contexts": {"kmock": {"namespace": NAMESPACE, "infra": "aws/us-east-1", "image": IMAGE,
                                   "image_has_skyflow": True}}}}))
        controller = DisruptingController(emulator, tmp_path / "pods", {"PATH": os.environ["PATH"], **aws},
                                          skyflow_images=frozenset({IMAGE}))
        try:
            yield Cluster(sky, controller, store, tmp_path / "count")
        finally:
            controller.stop()


@pytest.mark.parametrize("how", ["evicted", "deleted"])
def test_a_pod_taken_away_from_outside_is_recovered(cluster: Cluster, tmp_path: Path, how: str) -> None:
    started = tmp_path / "started"
    cluster.pipeline(f'if [ "$n" = 1 ]; then touch {started}; sleep 300; fi', "{max_restarts_on_errors: 0}")
    runner = cluster.start(how)
    try:
        wait_for(started.exists, RUN_TIMEOUT_S, "the first attempt's pod to run its stage")
        (job,) = cluster.controller.stages_started
        cluster.controller.disrupt(job, how)
        out, err = runner.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not end in {RUN_TIMEOUT_S} s") from None
    finally:
        runner.kill()
    status = cluster.sky.status(how)
    assert runner.returncode == 0 and status["state"] == "succeeded", (status, out, err)
    assert status["stages"]["train"]["attempts"] == 2 and cluster.attempts_run() == 2
    first, second = cluster.attempts(how)
    assert first < 0 and second == 0  # the first attempt ended as killed from outside, not with an exit code
    assert decisions(out) == ["recovering from preemption"], out
    assert len(cluster.controller.seen) == 2  # a new Job for the new attempt


def test_a_container_exiting_with_128_plus_a_signal_number_is_not_recovered(cluster: Cluster) -> None:
    # The pod was not taken away: its container exited 137 by itself, which is an exit code, not a preemption.
    cluster.pipeline("exit 137", "{max_restarts_on_errors: 0}")
    code, shown = cluster.run("exits-137")
    status = cluster.sky.status("exits-137")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 1 and cluster.attempts_run() == 1
    assert cluster.attempts("exits-137") == [137]
    assert decisions(shown) == [], shown


RECOVER_42 = "{max_restarts_on_errors: 0, recover_on_exit_codes: [42]}"


def test_an_exit_code_in_recover_on_exit_codes_is_recovered(cluster: Cluster) -> None:
    cluster.pipeline('if [ "$n" = 1 ]; then exit 42; fi', RECOVER_42)
    code, shown = cluster.run("listed")
    status = cluster.sky.status("listed")
    assert code == 0 and status["state"] == "succeeded", shown
    assert status["stages"]["train"]["attempts"] == 2 and cluster.attempts_run() == 2
    assert cluster.attempts("listed") == [42, 0]
    assert decisions(shown) == ["exit code 42 is in recover_on_exit_codes"], shown


def test_an_exit_code_not_in_recover_on_exit_codes_fails_after_one_attempt(cluster: Cluster) -> None:
    cluster.pipeline('if [ "$n" = 1 ]; then exit 43; fi', RECOVER_42)
    code, shown = cluster.run("unlisted")
    status = cluster.sky.status("unlisted")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 1 and cluster.attempts_run() == 1
    assert cluster.attempts("unlisted") == [43]
    assert decisions(shown) == [], shown


def test_max_restarts_on_errors_restarts_a_failing_stage(cluster: Cluster) -> None:
    cluster.pipeline('if [ "$n" -le 2 ]; then exit 1; fi', "{max_restarts_on_errors: 2}")
    code, shown = cluster.run("fails-twice")
    status = cluster.sky.status("fails-twice")
    assert code == 0 and status["state"] == "succeeded", shown
    assert status["stages"]["train"]["attempts"] == 3 and cluster.attempts_run() == 3
    assert cluster.attempts("fails-twice") == [1, 1, 0]
    assert decisions(shown) == ["restart 1 of 2 on error", "restart 2 of 2 on error"], shown


def test_max_restarts_on_errors_bounds_the_restarts(cluster: Cluster) -> None:
    cluster.pipeline("exit 1", "{max_restarts_on_errors: 2}")
    code, shown = cluster.run("always-fails")
    status = cluster.sky.status("always-fails")
    assert code == 1 and status["state"] == "failed", shown
    assert status["stages"]["train"]["attempts"] == 3 and cluster.attempts_run() == 3
    assert cluster.attempts("always-fails") == [1, 1, 1]
    assert decisions(shown) == ["restart 1 of 2 on error", "restart 2 of 2 on error"], shown
