"""Ray clusters in the config, offered to the planner, and a stage's job submission (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyflow.backends.base import RenderingBackend, ServiceBackend
from skyflow.backends.fake import launch_for
from skyflow.backends.ray_jobs import RayBackend
from skyflow.backends.ray_submission import REDACTED, job_submission
from skyflow.backends.registry import backend_kind
from skyflow.backends.remote_stage import node_spec, split_env
from skyflow.config import RayCluster, SkyflowConfig, load_config
from skyflow.errors import BackendError, PlanningError, SpecError
from skyflow.planner import Placement, Policy, plan_pipeline
from skyflow.session.discovery import pools_from_config
from tests.unit.planner.tables import catalog, offer, pipeline, rules

CONFIG = SkyflowConfig.model_validate({"ray_clusters": {"gpu": {
    "address": "http://head.internal:8265", "nodes": 4, "accelerators": {"A100": 8}, "cpus": 96,
    "hourly_usd": 20.0}}})
CAT = catalog(offer("aws/us-east-1", "p4d", 32.0, acc="A100", count=8), offer("aws/us-east-1", "m", 0.4))


def test_a_ray_cluster_is_offered_as_a_pool_of_whole_nodes() -> None:
    (pool,) = pools_from_config(CONFIG)
    assert (pool.name, pool.kind, pool.max_nodes, pool.accelerators) == ("ray/gpu", "ray", 4, {"A100": 8})
    p = pipeline({"ppo": {"resources": {"accelerators": "A100:8"}, "num_nodes": 2, "estimate": 3}})
    placed = plan_pipeline(p, CAT, rules(), Policy(pools=(pool,))).stages["ppo"]
    assert (placed.infra, placed.cloud, placed.instance_type) == ("ray/gpu", "ray", "ray:gpu")
    assert placed.compute_usd == pytest.approx(20.0 * 2 * 3)  # cheaper than two p4d at 32.0
    assert backend_kind(placed.infra) == "ray"


def test_infra_pins_a_stage_to_a_ray_cluster_or_says_which_exist() -> None:
    (pool,) = pools_from_config(CONFIG)
    pinned = pipeline({"a": {"resources": {"infra": "ray/gpu"}}, "b": {}})
    plan = plan_pipeline(pinned, CAT, rules(), Policy(pools=(pool,)))
    assert (plan.stages["a"].infra, plan.stages["b"].infra) == ("ray/gpu", "local")
    forced = plan_pipeline(pipeline({"b": {}}), CAT, rules(), Policy(pools=(pool,), infra=("ray/gpu",)))
    assert forced.stages["b"].infra == "ray/gpu"
    with pytest.raises(PlanningError, match=r"no ray pool gpus is configured \(configured: ray/gpu"):
        plan_pipeline(pipeline({"a": {"resources": {"infra": "ray/gpus"}}}), CAT, rules(), Policy(pools=(pool,)))
    with pytest.raises(PlanningError, match="ray/gpu does not fit: it needs 5 nodes; the pool has 4"):
        plan_pipeline(pipeline({"a": {"resources": {"infra": "ray/gpu"}, "num_nodes": 5}}), CAT, rules(),
                      Policy(pools=(pool,)))


def test_a_bad_cluster_address_is_a_positioned_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ray_clusters:\n  gpu:\n    address: head:8265\n")
    with pytest.raises(SpecError, match=r"config.yaml:3:\d+: .*dashboard URL, got 'head:8265'.*http://HEAD:8265"):
        load_config(path)


def _launch(tmp_path: Path, resources: dict[str, object], num_nodes: int = 1) -> object:
    accelerators: dict[str, float] = {"A100": 2} if "accelerators" in resources else {}
    placement = Placement(infra="ray/gpu", cloud="ray", region="gpu", zone=None, instance_type="ray:gpu",
                          accelerators=accelerators, use_spot=False, num_nodes=num_nodes, hourly_usd=0.0,
                          hours=0.0, store_uri="s3://bucket/skyflow")
    return launch_for(tmp_path, "python ppo.py", num_nodes=num_nodes, placement=placement, secrets=("tok-123",),
                      spec={"resources": resources},
                      env={"SKYFLOW_STAGE": "ppo", "SKYPILOT_NUM_NODES": str(num_nodes), "HF_TOKEN": "tok-123",
                           "RAY_ADDRESS": "http://head.internal:8265"})


def test_resources_become_entrypoint_resources_and_secrets_are_redacted(tmp_path: Path) -> None:
    launch = _launch(tmp_path, {"accelerators": "A100:2", "cpus": 8, "memory": 64})
    plain, secret = split_env(launch)  # type: ignore[arg-type]
    cluster = CONFIG.ray_clusters["gpu"]
    sub = job_submission(launch, cluster, node_spec(launch, "s3://bucket/skyflow"), plain, secret,  # type: ignore[arg-type]
                         None, "sid-1")
    kwargs = sub.kwargs()
    assert (kwargs["entrypoint_num_gpus"], kwargs["entrypoint_num_cpus"]) == (2.0, 8.0)
    assert kwargs["entrypoint_memory"] == 64 * 1024**3
    assert kwargs["entrypoint_resources"] == {"accelerator_type:A100": 0.001}
    env = kwargs["runtime_env"]["env_vars"]
    assert "RAY_ADDRESS" not in env  # Ray gives the entrypoint the cluster's own address
    skypilot = (env["SKYPILOT_NODE_RANK"], env["SKYPILOT_HEAD_IP"], env["SKYPILOT_NUM_NODES"])
    assert skypilot == ("0", "head.internal", "1")
    assert json.loads(env["SKYFLOW_STAGE_SPEC"])["run"] == "python ppo.py"
    assert env["HF_TOKEN"] == "tok-123" and sub.redacted()["runtime_env"]["env_vars"]["HF_TOKEN"] == REDACTED
    assert "working_dir" not in kwargs["runtime_env"]  # `nodes_have_skyflow`: no code package
    assert kwargs["entrypoint"] == 'sh -c "$SKYFLOW_RAY_ENTRYPOINT"'  # the script is in the environment
    script = env["SKYFLOW_RAY_ENTRYPOINT"]
    assert "SKYFLOW_PYTHON=python3\n" in script and '"$SKYFLOW_PYTHON" -P -m skyflow.backends.remote_stage' in script


def test_a_multi_node_stage_leaves_the_accelerators_to_its_own_actors(tmp_path: Path) -> None:
    launch = _launch(tmp_path, {"accelerators": "A100:2", "cpus": 4}, num_nodes=3)
    plain, secret = split_env(launch)  # type: ignore[arg-type]
    sub = job_submission(launch, CONFIG.ray_clusters["gpu"], {}, plain, secret, None, "sid")  # type: ignore[arg-type]
    kwargs = sub.kwargs()
    assert "entrypoint_num_gpus" not in kwargs and "entrypoint_resources" not in kwargs
    assert kwargs["entrypoint_num_cpus"] == 4.0
    assert kwargs["runtime_env"]["env_vars"]["SKYPILOT_NUM_NODES"] == "3"


def test_an_unknown_cluster_names_the_configured_ones() -> None:
    backend = RayBackend(SkyflowConfig(ray_clusters={"gpu": RayCluster(address="http://h:8265"),
                                                     "cpu": RayCluster(address="http://c:8265")}))
    with pytest.raises(BackendError, match=r"no Ray cluster 'gpus'.*configured: cpu, gpu.*Did you mean ray/gpu"):
        backend.cluster("ray/gpus")


def test_the_ray_backend_renders_dry_runs_but_serves_no_services() -> None:
    backend = RayBackend(CONFIG)
    assert isinstance(backend, RenderingBackend) and not isinstance(backend, ServiceBackend)


def test_redacting_never_adds_a_secret_the_submission_does_not_carry() -> None:
    from skyflow.backends.ray_submission import JobSubmission

    sub = JobSubmission("sid", "python x.py", {"env_vars": {"A": "1"}}, secret_names=("HF_TOKEN",))
    assert sub.redacted()["runtime_env"]["env_vars"] == {"A": "1"}
