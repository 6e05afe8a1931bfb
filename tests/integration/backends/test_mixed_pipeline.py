"""One pipeline, three backends: a stage on this machine, one on an SSH pool, one on Kubernetes.

The pipeline file pins each stage with ``resources: {infra: ...}`` and is run unchanged through the
real ``skyflow run`` CLI in a subprocess; artifacts cross local → SSH pool → Kubernetes.

- ``local``: the runner's machine.
- ``ssh/lab``: real OpenSSH ``sshd`` processes on loopback (fixtures in conftest.py).
- ``kubernetes/kmock``: no Kubernetes API server runs where these tests run, so kmock's
  ``KubernetesEmulator`` stands in for one. The runner reaches it through a kubeconfig file named in
  ``$SKYFLOW_HOME/config.yaml``, exactly as it would a real cluster; this test process plays the Job
  controller and kubelet (:class:`JobController`), running each pod's stage wrapper as a local process.
  The pods fetch their inputs from and commit their outputs to a real S3 server (moto), the
  pipeline's ``stores:`` entry for where the cluster lives.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from skyflow.backends.masking import MASK
from tests.integration.backends.conftest import SshPoolSetup
from tests.integration.backends.kmock_cluster import NAMESPACE, JobController, kmock_server
from tests.integration.conftest import StoreServer
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

WORDS = "delta\nalpha\ncharlie\nbravo\n"
TOKEN = "mixed-s3cr3t-value"

PIPELINE = """\
name: mixed-backends
inputs: {{raw: {{uri: ./data}}}}
stores:
  aws/us-east-1: {store}
secrets: [MIXED_TOKEN]
stages:
  prep:
    resources: {{infra: local}}
    run: sort $SKYFLOW_INPUT_RAW/words.txt | tr a-z A-Z > $SKYFLOW_OUTPUT_CLEAN/words.txt
    inputs: {{raw: raw}}
    outputs: [clean]
  count:
    resources: {{infra: ssh/lab}}
    run: |
      wc -l < $SKYFLOW_INPUT_DATA/words.txt | tr -d ' ' > $SKYFLOW_OUTPUT_STATS/lines.txt
      sha256sum < $SKYFLOW_INPUT_DATA/words.txt | cut -d' ' -f1 >> $SKYFLOW_OUTPUT_STATS/lines.txt
      echo "$SKYFLOW_OUTPUT_STATS" > $SKYFLOW_OUTPUT_STATS/where.txt
    inputs: {{data: prep.clean}}
    outputs: [stats]
  report:
    resources: {{infra: kubernetes/kmock}}
    run: |
      cat $SKYFLOW_INPUT_STATS/lines.txt $SKYFLOW_INPUT_WORDS/words.txt > $SKYFLOW_OUTPUT_REPORT/report.txt
      echo "token ${{#MIXED_TOKEN}} chars: $MIXED_TOKEN" | tee -a $SKYFLOW_OUTPUT_REPORT/report.txt
      echo "$SKYFLOW_OUTPUT_REPORT" > $SKYFLOW_OUTPUT_REPORT/where.txt
    inputs: {{stats: count.stats, words: prep.clean}}
    outputs: [report]
"""


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE}}],
    }))
    return path


def _config(pool: SshPoolSetup, kubeconfig: Path) -> str:
    return pool.config_yaml("lab") + yaml.safe_dump({"kubernetes": {
        "kubeconfig": str(kubeconfig),
        "contexts": {"kmock": {"namespace": NAMESPACE, "infra": "aws/us-east-1", "image": "skyflow:test"}}}})


def _read(output: dict[str, Any], name: str, into: Path) -> bytes:
    uri = str(output["uri"])
    ref = ArtifactRef(name="o", uri=uri, digest=str(output["digest"]), size_bytes=int(output["size_bytes"]),
                      file_count=0, store=open_store(uri.split("/manifests/")[0]))
    return (fetch_artifact(ref, into / str(output["digest"])[7:19]) / name).read_bytes()


def test_one_pipeline_runs_across_local_an_ssh_pool_and_kubernetes(
        tmp_path: Path, loopback_pool: SshPoolSetup, s3_server: StoreServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
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
    sky.env["SKYFLOW_SSH_KNOWN_HOSTS"] = str(loopback_pool.known_hosts)
    sky.env["MIXED_TOKEN"] = TOKEN  # reaches the pod through the Job's Secret, masked in its log
    sky.write("data/words.txt", WORDS)
    sky.write("mixed.yaml", PIPELINE.format(store=store))

    with kmock_server() as emulator:
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", str(emulator.url))
        (sky.home / "config.yaml").write_text(_config(loopback_pool, kubeconfig))
        # The kubelet's side of the pod environment: where the cluster's S3 is and its credentials
        # (on EKS this would be IRSA); the rest comes from the Job the runner created.
        controller = JobController(emulator, tmp_path / "pods", {"PATH": os.environ["PATH"], **aws})
        try:
            code, status, err = sky.run_json("mixed.yaml", "--run-id", "mixed-3", "--no-lineage", "--no-cache")
        finally:
            controller.stop()

    assert code == 0, json.dumps(status, indent=1) + err
    stages = status["stages"]
    assert {n: (row["state"], row["infra"]) for n, row in stages.items()} == {
        "prep": ("succeeded", "local"), "count": ("succeeded", "ssh/lab"),
        "report": ("succeeded", "kubernetes/kmock")}
    assert len(controller.seen) == 1, controller.seen  # one Job, for the one stage on the cluster

    clean = "".join(sorted(WORDS.upper().splitlines(keepends=True))).encode()
    stats = f"4\n{hashlib.sha256(clean).hexdigest()}\n".encode()
    # prep ran here, count on the pool (its output directory was under the pool's workdir_root) ...
    assert _read(stages["prep"]["outputs"]["clean"], "words.txt", tmp_path / "a") == clean
    count = stages["count"]["outputs"]["stats"]
    assert _read(count, "lines.txt", tmp_path / "b") == stats
    remote = _read(count, "where.txt", tmp_path / "b").decode().strip()
    assert remote.startswith(f"{loopback_pool.pool.workdir_root}/runs/mixed-3/count/attempt-1/node-0/")
    # ... and report in a pod, which fetched both inputs from S3 and committed its output there.
    report = stages["report"]["outputs"]["report"]
    assert str(report["uri"]).startswith(store + "/")
    secret_line = f"token {len(TOKEN)} chars: {TOKEN}\n".encode()
    assert _read(report, "report.txt", tmp_path / "c") == stats + clean + secret_line
    log = (sky.home / "runs" / "mixed-3" / "report" / "attempt-1" / "stage.log").read_text()
    assert f"token {len(TOKEN)} chars: {MASK}" in log and TOKEN not in log
    assert _read(report, "where.txt", tmp_path / "c").decode().startswith(str(tmp_path / "pods") + "/")

    # The same file, unchanged, as a dry run: each stage's launch written out, the cluster's as manifests.
    out = tmp_path / "dry"
    sky("run", "mixed.yaml", "--dry-run", "--output", str(out), check=True)
    assert sorted(p.name for p in out.iterdir()) == ["count.yaml", "prep.yaml", "report.yaml"]
    assert "sort $SKYFLOW_INPUT_RAW/words.txt" in (out / "prep.yaml").read_text()
    assert "sha256sum < $SKYFLOW_INPUT_DATA/words.txt" in (out / "count.yaml").read_text()
    docs = [d for d in yaml.safe_load_all((out / "report.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["Secret", "Job"]
    assert TOKEN not in (out / "report.yaml").read_text()
    for doc in docs:
        kubernetes_validate.validate(json.loads(json.dumps(doc)), "1.30", strict=True)
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "skyflow:test"
    spec = next(e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                if e["name"] == "SKYFLOW_STAGE_SPEC")
    assert json.loads(spec)["store_uri"] == store
