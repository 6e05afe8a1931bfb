"""The Ray backend against a real Ray cluster (a head and two workers, each in a network namespace of
its own where they can be made, see ray_cluster.py).

Stages reach the cluster only through its dashboard's Job Submission API, as they would a remote
one; their artifacts go through a real S3 server (moto), which the nodes reach with the endpoint and
credentials their environment gives them. The nodes' ``python3`` lacks the code package, so every job
really installs skyflow from the wheels Ray ships as its working_dir (once per node environment).

- the backend contract suite, run on Ray;
- one pipeline across this machine, an SSH pool and the Ray cluster, whose Ray stage starts Ray
  actors of its own on the cluster's nodes (each writes to S3 from its node and reports the node's
  address), then the same file as a dry run;
- a runner killed with SIGKILL leaves its job running; `skyflow resume` finds it by the stored
  submission id (or, when the runner died before storing it, by its attempt's token), stops it, and
  runs the stage again; `skyflow cancel` stops it too.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from skyflow.backends.base import Backend, Leftover, StageExit, StageHandle, StageLaunch
from skyflow.backends.masking import MASK
from skyflow.backends.ray_jobs import RayBackend, RayStageHandle
from skyflow.config import SkyflowConfig
from skyflow.planner import Placement
from skyflow.runner.state import RunStore
from tests.integration.backends import ray_cluster
from tests.integration.backends.conftest import SshPoolSetup
from tests.integration.backends.contract import *  # noqa: F403 - the contract's tests run here
from tests.integration.backends.contract import BackendHarness, make_launch
from tests.integration.backends.ray_cluster import AWS_CREDENTIALS, RayTestCluster
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ray")]
ray_test_cluster = ray_cluster.ray_test_cluster  # the module's cluster (stopped after it), a fixture


@pytest.fixture
def s3_env(ray_test_cluster: RayTestCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This machine's side of the store: the same S3 the nodes reach."""
    env = {"AWS_ENDPOINT_URL": ray_test_cluster.s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1", **AWS_CREDENTIALS}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _store(cluster: RayTestCluster) -> str:
    uri = cluster.s3.new_uri("skyflow")
    open_store(uri, create=True)
    return uri


class NamedWorkdir:
    """The Ray backend under the contract, with each launch's workdir named by its stage (`workdir:`).

    Like every backend whose nodes fetch from a store, Ray ships a workdir the stage names (the
    pipeline's folder is not uploaded on every attempt); the contract's launches leave it unnamed.
    """

    def __init__(self, backend: RayBackend) -> None:
        self.backend = backend
        self.name = backend.name

    def capacity(self) -> Any:
        return self.backend.capacity()

    def launch(self, launch: StageLaunch) -> StageHandle:
        spec = launch.spec.model_copy(update={"workdir": str(launch.workdir)})
        return self.backend.launch(replace(launch, spec=spec))

    def abandon(self, leftover: Leftover) -> None:
        self.backend.abandon(leftover)


def _job_alive(handle: StageHandle) -> bool:
    assert isinstance(handle, RayStageHandle)
    return handle.status() in ("PENDING", "RUNNING")


def _read_output(launch: StageLaunch, exit_: StageExit, name: str, file: str) -> str:
    assert exit_.outputs is not None, exit_
    dest = launch.log_path.parent / "fetched" / name
    return (fetch_artifact(ArtifactRef.open(exit_.outputs[name]), dest) / file).read_text()


@pytest.fixture(scope="module")
def installed_nodes(ray_test_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """One job before the contract's: the nodes' first install of the code package is not part of any
    contract test's time (the cancel test waits for its stage's first line)."""
    env = {"AWS_ENDPOINT_URL": ray_test_cluster.s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1", **AWS_CREDENTIALS}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        backend = RayBackend(SkyflowConfig(ray_clusters={"lab": ray_test_cluster.config()}), poll_s=0.2)
        placement = Placement(infra="ray/lab", cloud="ray", region="lab", zone=None, instance_type="ray:lab",
                              accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0,
                              store_uri=_store(ray_test_cluster))
        launch = make_launch(tmp_path_factory.mktemp("warm"), "echo warm > $SKYFLOW_OUTPUT_MODEL/w",
                             placement=placement)
        exit_ = backend.launch(launch).wait()
        assert exit_.ok, launch.log_path.read_text()


@pytest.fixture
def harness(ray_test_cluster: RayTestCluster, s3_env: dict[str, str], installed_nodes: None
            ) -> Iterator[BackendHarness]:
    lines: list[tuple[str, str]] = []
    config = SkyflowConfig(ray_clusters={"lab": ray_test_cluster.config()})
    backend = RayBackend(config, on_line=lambda stage, line: lines.append((stage, line)), poll_s=0.1)
    placement = Placement(infra="ray/lab", cloud="ray", region="lab", zone=None, instance_type="ray:lab",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0,
                          store_uri=_store(ray_test_cluster))
    wrapped: Backend = NamedWorkdir(backend)
    yield BackendHarness(wrapped, alive=_job_alive, lines=lines, read_output=_read_output, placement=placement)


# -- one pipeline across local, an SSH pool and Ray ----------------------------------------------------

WORDS = "delta\nalpha\ncharlie\nbravo\n"
TOKEN = "ray-s3cr3t-value"
ACTORS = """\
import json, os, sys, fsspec, ray
ray.init()  # RAY_ADDRESS, set by Ray for the job, names the cluster
@ray.remote(num_cpus=1)
class Counter:
    def count(self, text, probes):
        ip = ray.util.get_node_ip_address()
        with fsspec.open(f"{probes}/{ip}", "w") as out:  # the store, reached from the actor's own node
            out.write(text)
        return ray.get_runtime_context().get_node_id(), ip, len(text.split())
words = open(os.path.join(os.environ["SKYFLOW_INPUT_WORDS"], "words.txt")).read()
actors = [Counter.remote() for _ in range(3)]  # one CPU each: the three nodes have one each
found = ray.get([a.count.remote(words, sys.argv[1]) for a in actors])
out = os.path.join(os.environ["SKYFLOW_OUTPUT_REPORT"], "actors.json")
json.dump({"nodes": len({n for n, _, _ in found}), "ips": sorted(ip for _, ip, _ in found),
           "driver": ray.util.get_node_ip_address(), "counts": [c for _, _, c in found],
           "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"])}, open(out, "w"))
"""

PIPELINE = """\
name: ray-mixed
inputs: {{raw: {{uri: ./data}}}}
stores:
  ray/lab: {store}
secrets: [RAY_TOKEN]
stages:
  prep:
    resources: {{infra: local}}
    run: sort $SKYFLOW_INPUT_RAW/words.txt | tr a-z A-Z > $SKYFLOW_OUTPUT_CLEAN/words.txt
    inputs: {{raw: raw}}
    outputs: [clean]
  count:
    resources: {{infra: ssh/lab}}
    run: wc -l < $SKYFLOW_INPUT_DATA/words.txt | tr -d ' ' > $SKYFLOW_OUTPUT_STATS/lines.txt
    inputs: {{data: prep.clean}}
    outputs: [stats]
  report:
    resources: {{infra: ray/lab}}
    workdir: ./ray_code
    run: |
      python3 actors.py {probes}
      cat $SKYFLOW_INPUT_STATS/lines.txt $SKYFLOW_INPUT_WORDS/words.txt > $SKYFLOW_OUTPUT_REPORT/report.txt
      echo "token $RAY_TOKEN nodes $SKYPILOT_NUM_NODES rank $SKYPILOT_NODE_RANK" \\
        | tee -a $SKYFLOW_OUTPUT_REPORT/report.txt
    inputs: {{stats: count.stats, words: prep.clean}}
    outputs: [report]
"""


def _read(output: dict[str, Any], name: str, into: Path) -> bytes:
    uri = str(output["uri"])
    ref = ArtifactRef(name="o", uri=uri, digest=str(output["digest"]), size_bytes=int(output["size_bytes"]),
                      file_count=0, store=open_store(uri.split("/manifests/")[0]))
    return (fetch_artifact(ref, into / str(output["digest"])[7:19]) / name).read_bytes()


def _skyflow(tmp_path: Path, cluster: RayTestCluster, s3_env: dict[str, str], config: str) -> Skyflow:
    sky = Skyflow(tmp_path / "home", tmp_path / "work")
    sky.workdir.mkdir()
    sky.home.mkdir()
    sky.env.update(s3_env)
    (sky.home / "config.yaml").write_text(config)
    return sky


def test_one_pipeline_runs_across_local_an_ssh_pool_and_ray_whose_stage_starts_actors(
        tmp_path: Path, ray_test_cluster: RayTestCluster, loopback_pool: SshPoolSetup, s3_env: dict[str, str]) -> None:
    store = _store(ray_test_cluster)
    probes = store.rsplit("/", 1)[0] + "/actor-probes"  # beside the store's root, in its bucket
    sky = _skyflow(tmp_path, ray_test_cluster, s3_env, loopback_pool.config_yaml("lab")
                   + ray_test_cluster.config_yaml("lab"))
    sky.env["SKYFLOW_SSH_KNOWN_HOSTS"] = str(loopback_pool.known_hosts)
    sky.env["RAY_TOKEN"] = TOKEN
    sky.write("data/words.txt", WORDS)
    sky.write("ray_code/actors.py", ACTORS)
    sky.write("mixed.yaml", PIPELINE.format(store=store, probes=probes))

    code, status, err = sky.run_json("mixed.yaml", "--run-id", "ray-mixed-1", "--no-lineage", "--no-cache")

    assert code == 0, json.dumps(status, indent=1) + err
    stages = status["stages"]
    assert {n: (row["state"], row["infra"]) for n, row in stages.items()} == {
        "prep": ("succeeded", "local"), "count": ("succeeded", "ssh/lab"), "report": ("succeeded", "ray/lab")}
    clean = "".join(sorted(WORDS.upper().splitlines(keepends=True))).encode()
    report = stages["report"]["outputs"]["report"]
    assert str(report["uri"]).startswith(store + "/")  # committed by the job itself
    assert _read(report, "report.txt", tmp_path / "r") == b"4\n" + clean + f"token {TOKEN} nodes 1 rank 0\n".encode()
    actors = json.loads(_read(report, "actors.json", tmp_path / "r"))
    # the stage's own actors ran on the cluster, spread over its nodes (one CPU each, three nodes), the
    # driver on the head; in namespaces, three hosts with three addresses of their own
    ips = actors.pop("ips")
    assert actors == {"nodes": 3, "driver": ray_test_cluster.node_ips[0], "counts": [4, 4, 4], "alive_nodes": 3}
    if ray_test_cluster.namespaced:
        assert ips == sorted(ray_test_cluster.node_ips) and len(set(ips)) == 3 and "127.0.0.1" not in ips
    # each actor wrote to S3 from its own node
    fs = fsspec.filesystem("s3", **ray_test_cluster.s3.storage_options)
    assert sorted(path.rsplit("/", 1)[1] for path in fs.ls(probes, refresh=True)) == sorted(set(ips))
    assert {fs.cat(f"{probes}/{ip}") for ip in ips} == {clean}
    log = (sky.home / "runs" / "ray-mixed-1" / "report" / "attempt-1" / "stage.log").read_text()
    assert f"token {MASK} nodes 1 rank 0" in log and TOKEN not in log

    # The same file as a dry run: the Ray stage's job submission, its secret redacted.
    out = tmp_path / "dry"
    sky("run", "mixed.yaml", "--dry-run", "--output", str(out), check=True)
    text = (out / "report.yaml").read_text()
    assert TOKEN not in text
    submission = next(d for d in yaml.safe_load_all(text) if d)
    env = submission["runtime_env"]["env_vars"]
    assert env["RAY_TOKEN"] == "<redacted>"
    assert json.loads(env["SKYFLOW_STAGE_SPEC"])["store_uri"] == store
    assert "skyflow.backends.remote_stage" in env["SKYFLOW_RAY_ENTRYPOINT"]
    assert submission["runtime_env"]["working_dir"].startswith("<skyflow's code package ")


# -- a runner killed with SIGKILL --------------------------------------------------------------------

SLOW = """\
name: ray-slow
stores:
  ray/lab: {store}
stages:
  wait:
    resources: {{infra: ray/lab}}
    run: |
      if [ -e {marker} ]; then echo second > $SKYFLOW_OUTPUT_DONE/who.txt; exit 0; fi
      touch {marker}
      sleep 300
    outputs: [done]
"""


def _remote_handle(home: Path, run_id: str, stage: str) -> dict[str, Any] | None:
    row = RunStore(home / "state.db").get_run(run_id).stages[stage]
    return json.loads(row.remote_handle) if row.remote_handle else None


def _killed_runner(tmp_path: Path, cluster: RayTestCluster, s3_env: dict[str, str], recorded: bool
                   ) -> tuple[Skyflow, str]:
    """A run whose Ray stage's job runs when its runner is SIGKILLed; without ``recorded``, the job's submission
    id is erased from the run state, as a runner killed between submitting and recording leaves it (the
    attempt's log path, recorded first, stays). The first job's submission id."""
    client: Any = cluster.client()
    marker = tmp_path / "first-attempt-started"  # the nodes share this machine's files: they can leave a mark here
    sky = _skyflow(tmp_path, cluster, s3_env, cluster.config_yaml("lab"))
    sky.write("slow.yaml", SLOW.format(store=_store(cluster), marker=marker))
    runner = sky.start("run", "slow.yaml", "--run-id", "ray-slow-1", "--no-lineage")
    try:
        wait_for(marker.exists, 180, "the Ray job to start")
        wait_for(lambda: _remote_handle(sky.home, "ray-slow-1", "wait") is not None, 30, "the job to be recorded")
        handle = _remote_handle(sky.home, "ray-slow-1", "wait")
        assert handle is not None and handle["backend"] == "ray"
        runner.send_signal(signal.SIGKILL)  # no cleanup from the runner
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    first = str(handle["submission_id"])
    assert str(client.get_job_status(first)) == "RUNNING"  # the job outlives the runner
    if not recorded:
        with sqlite3.connect(sky.home / "state.db") as conn:
            conn.execute("UPDATE stages SET remote_handle=NULL WHERE run_id='ray-slow-1' AND stage='wait'")
    return sky, first


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "never-recorded"])
def test_a_killed_runners_job_is_found_on_resume(
        tmp_path: Path, ray_test_cluster: RayTestCluster, s3_env: dict[str, str], recorded: bool) -> None:
    """By its stored submission id, or, when the runner died before storing it, by the token of the
    attempt's log path in the job's metadata: the job is stopped and the stage runs again."""
    sky, first = _killed_runner(tmp_path, ray_test_cluster, s3_env, recorded)
    client: Any = ray_test_cluster.client()
    resumed = sky("resume", "ray-slow-1", timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert str(client.get_job_status(first)) == "STOPPED"
    second = _remote_handle(sky.home, "ray-slow-1", "wait")
    assert second is not None and second["submission_id"] != first
    assert str(client.get_job_status(second["submission_id"])) == "SUCCEEDED"
    assert sky.stage_state("ray-slow-1", "wait") == "succeeded"


def test_cancel_stops_the_job_of_a_runner_that_died_before_recording_it(
        tmp_path: Path, ray_test_cluster: RayTestCluster, s3_env: dict[str, str]) -> None:
    sky, first = _killed_runner(tmp_path, ray_test_cluster, s3_env, recorded=False)
    cancelled = sky("cancel", "ray-slow-1", timeout=120)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert str(ray_test_cluster.client().get_job_status(first)) == "STOPPED"
    assert sky.stage_state("ray-slow-1", "wait") == "cancelled"


# -- where the nodes run -------------------------------------------------------------------------------

def test_without_network_namespaces_the_cluster_fails_under_ci_rather_than_run_on_loopback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_cluster, "netns_unavailable", lambda: "no CAP_NET_ADMIN (simulated)")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="hosts of their own under CI=true: no CAP_NET_ADMIN"), \
            ray_cluster.started_cluster(tmp_path):
        pass
