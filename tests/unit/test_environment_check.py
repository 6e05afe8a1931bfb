"""`skyflow check`'s findings on their own (Kubernetes contexts, Ray clusters, the lineage store), the
clouds found from their CLIs' credential files, and the user config's accelerator shorthand."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow.config import SkyflowConfig, load_config
from skyflow.errors import LineageError, SpecError
from skyflow.session import check
from skyflow.session.check import Finding, check_environment
from skyflow.session.discovery import detect_enabled_clouds


def config(**data: object) -> SkyflowConfig:
    return SkyflowConfig.model_validate(data)


def kinds(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port that accepts connections and answers every GET with 200 (a dashboard or MLflow's /health)."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_kubernetes_contexts_are_checked_against_the_kubeconfig(tmp_path: Path) -> None:
    contexts: dict[str, dict[str, dict[str, str]]] = {"contexts": {"default": {}, "gke-a": {}}}
    absent = check._kubernetes(config(kubernetes={"kubeconfig": str(tmp_path / "none"), **contexts}), {})
    missing = f"no kubeconfig at {tmp_path / 'none'}"
    assert [(f.name, f.ok, f.detail) for f in absent] == [("default", False, missing), ("gke-a", False, missing)]
    assert absent[0].fix.startswith("point kubernetes.kubeconfig (or KUBECONFIG)")

    broken = tmp_path / "broken"
    broken.write_text("contexts: [unclosed\n")
    found = check._kubernetes(config(kubernetes=contexts), {"KUBECONFIG": str(broken)})
    assert [(f.name, f.ok) for f in found] == [("default", True), ("gke-a", False)]
    assert found[1].detail == f"context 'gke-a' is not in {broken} (it has none)"
    assert check._kubernetes(config(), {}) == []


def test_a_kubernetes_context_without_the_client_says_how_to_install_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("contexts:\n  - name: gke-a\n  - not-a-mapping\n")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kubernetes" else real_find_spec(name, *a))
    found = check._kubernetes(config(kubernetes={"kubeconfig": str(kubeconfig), "contexts": {"gke-a": {}}}), {})
    assert found == [Finding("kubernetes", "gke-a", False, "the Kubernetes client is not installed",
                             "pip install 'kubernetes==37.0.1' (the k8s extra)")]


def test_a_ray_cluster_that_answers_needs_the_client_here(listening_port: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"http://127.0.0.1:{listening_port}"
    clusters = config(ray_clusters={"lab": {"address": address}})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert check._ray(clusters) == [Finding("ray", "ray/lab", False, f"{address} answers",
                                            "pip install 'ray[default]>=2.44,<3' (the Job Submission client)")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert check._ray(clusters) == [Finding("ray", "ray/lab", True, f"{address} answers", "")]


def test_a_tracking_server_that_does_not_answer_leaves_records_in_the_spool(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    finding = check._lineage(uri, tmp_path, {})
    assert not finding.ok and finding.detail.startswith(f"{uri} does not answer (")
    assert finding.detail.endswith("; records wait in the spool")
    assert finding.fix == "start the tracking server, or unset MLFLOW_TRACKING_URI to use the local store"


def test_a_tracking_server_that_answers_is_usable(tmp_path: Path, listening_port: int) -> None:
    uri = f"http://127.0.0.1:{listening_port}"
    finding = check._lineage(None, tmp_path, {"MLFLOW_TRACKING_URI": uri})
    assert finding.ok and finding.kind == "lineage" and uri in finding.detail


def test_a_lineage_store_this_mlflow_cannot_use_is_one_line_with_the_fix(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(uri: str) -> None:
        raise LineageError("lineage needs MLFLOW, which is missing\nsecond line")

    monkeypatch.setattr("skyflow.lineage.recorder.check_tracking_uri", refuse)
    findings = check_environment(config(), tmp_path, {"HOME": str(tmp_path)})
    lineage = kinds(findings, "lineage")
    assert lineage == [Finding("lineage", "mlflow", False, "lineage needs MLFLOW, which is missing",
                               "pip install 'mlflow-skinny>=3.17,<4' sqlalchemy alembic (core dependencies)")]


@pytest.mark.parametrize(("path", "cloud"), [
    (".config/gcloud/application_default_credentials.json", "gcp"),
    (".config/gcloud/credentials.db", "gcp"),
    (".azure/azureProfile.json", "azure"),
    (".lambda_cloud/lambda_keys", "lambda"),
    (".runpod/config.toml", "runpod"),
    (".aws/config", "aws"),
])
def test_clouds_are_found_from_their_clis_credential_files(tmp_path: Path, path: str, cloud: str) -> None:
    assert detect_enabled_clouds({}, tmp_path) == ()
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("")
    assert detect_enabled_clouds({}, tmp_path) == (cloud,)


def test_pool_accelerators_may_be_written_as_text_but_not_as_a_list(tmp_path: Path) -> None:
    pools = config(ssh_pools={"lab": {"hosts": "gpu1", "accelerators": "A100:8"}})
    assert pools.ssh_pools["lab"].accelerators == {"A100": 8} and pools.ssh_pools["lab"].hosts == ("gpu1",)
    path = tmp_path / "config.yaml"
    path.write_text("ssh_pools:\n  lab:\n    hosts: [gpu1]\n    accelerators: [A100, 8]\n")
    with pytest.raises(SpecError) as raised:
        load_config(path)
    assert str(raised.value).endswith(":4:19: ssh_pools.lab.accelerators: accelerators must map each name to a count "
                                      "(A100: 8), got ['A100', 8]. Write accelerators: {A100: 8}.")


def test_an_empty_config_file_is_the_default_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# nothing configured yet\n")
    assert load_config(path) == SkyflowConfig()
