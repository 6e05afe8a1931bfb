"""A remote stage whose nodes cannot reach the run's artifact store is stopped before anything starts,
and a dry run says so: the error names the stage, where it runs, and the `stores:` entry that fixes it."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from skyflow.backends.base import StageLaunch
from skyflow.backends.fake import launch_for
from skyflow.backends.kubernetes import KubernetesBackend
from skyflow.backends.skypilot import SkyPilotBackend
from skyflow.config import KubernetesConfig, KubernetesContext, SkyflowConfig
from skyflow.errors import BackendError
from skyflow.planner import Placement

LOCAL_STORE = "/home/me/.skyflow/artifacts"


def _launch(tmp_path: Path, infra: str, *, located_at: str | None = None, store: str | None = LOCAL_STORE
            ) -> StageLaunch:
    cloud, _, region = infra.partition("/")
    placement = Placement(infra=infra, cloud=cloud, region=region or None, zone=None, instance_type="p4d.24xlarge",
                          accelerators={"A100": 8}, use_spot=False, num_nodes=1, hourly_usd=32.77, hours=1.0,
                          located_at=located_at, store_uri=store)
    return launch_for(tmp_path, "python train.py", stage="sft", placement=placement)


def _nothing_may_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the code package was built before the store was checked")

    for module in ("kubernetes", "skypilot"):
        monkeypatch.setattr(f"skyflow.backends.{module}.code_package_for", refuse)


def _kubernetes(context: str, **settings: Any) -> KubernetesBackend:
    def no_cluster(name: str) -> Any:
        raise AssertionError(f"a client for {name} was opened before the store was checked")

    config = SkyflowConfig(kubernetes=KubernetesConfig(contexts={context: KubernetesContext(**settings)}))
    return KubernetesBackend(config, client_factory=no_cluster)


def test_a_cloud_stage_without_a_store_for_its_cloud_fails_before_skypilot_is_called(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nothing_may_start(monkeypatch)
    backend = SkyPilotBackend(sky_module=types.SimpleNamespace())  # any call into it would fail
    with pytest.raises(BackendError, match=r"^stage 'sft' runs on aws/us-east-1 \(skypilot\), but the pipeline has no "
                       r"object store there: its artifacts would go to /home/me/\.skyflow/artifacts, on this "
                       r"machine, which the nodes cannot reach\. Add one to the pipeline: "
                       r"`stores: \{aws/us-east-1: s3://YOUR-BUCKET/skyflow\}` \(a `aws:` key serves every aws "
                       r"location\)$") as caught:
        backend.launch(_launch(tmp_path, "aws/us-east-1"))
    assert caught.value.stage == "sft" and caught.value.backend == "skypilot"


def test_a_cluster_stage_without_a_store_fails_before_anything_is_built_or_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nothing_may_start(monkeypatch)
    with pytest.raises(BackendError, match=r"stage 'sft' runs on kubernetes/gke \(kubernetes\).*"
                       r"`stores: \{kubernetes/gke: s3://YOUR-BUCKET/skyflow\}` \(or gs://, az://; a `kubernetes:` "
                       r"key serves every kubernetes location\), or say where the cluster lives \(`infra: "
                       r"aws/us-east-1` under kubernetes\.contexts\.gke in \$SKYFLOW_HOME/config\.yaml\)"):
        _kubernetes("gke").launch(_launch(tmp_path, "kubernetes/gke"))


def test_a_cluster_that_lives_in_a_cloud_is_pointed_at_that_clouds_store(tmp_path: Path) -> None:
    launch = _launch(tmp_path, "kubernetes/gke", located_at="gcp/us-central1")
    with pytest.raises(BackendError, match=r"runs on kubernetes/gke \(kubernetes, a cluster in gcp/us-central1\).*"
                       r"`stores: \{gcp/us-central1: gs://YOUR-BUCKET/skyflow\}` \(a `gcp:` key serves every gcp "
                       r"location\)$"):
        _kubernetes("gke", infra="gcp/us-central1").launch(launch)


@pytest.mark.parametrize("backend", ["skypilot", "kubernetes"])
def test_a_dry_run_says_so_above_what_it_would_launch(backend: str, tmp_path: Path) -> None:
    launch = _launch(tmp_path, "aws/us-east-1" if backend == "skypilot" else "kubernetes/gke")
    text = (SkyPilotBackend() if backend == "skypilot" else _kubernetes("gke")).render(launch)
    head, body = text.split("\n", 1)
    assert head.startswith(f"# stage 'sft' runs on {launch.placement.infra} ({backend}), but the pipeline has no "
                           "object store there")
    assert "`stores: {" in head
    assert "<remote store>" in body  # the rest is still shown, with the store left to fill in


def test_with_a_store_for_its_cloud_the_dry_run_has_no_warning_and_names_the_store(tmp_path: Path) -> None:
    text = SkyPilotBackend().render(_launch(tmp_path, "aws/us-east-1", store="s3://bucket/skyflow"))
    assert text.startswith("# sky launch, then sky down\nname: ")
    assert '"store_uri": "s3://bucket/skyflow"' in text  # what the nodes read and commit to
