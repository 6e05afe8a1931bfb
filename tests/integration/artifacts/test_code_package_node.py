"""A bare node (a clean interpreter with no skyflow and no package index) installs the code package from
a moto S3 server through signed URLs, runs the stage wrapper, and commits the stage's output back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, commit_output, fetch_artifact, open_store
from skyflow.artifacts.code_package import (
    STORE_REQUIREMENTS,
    WRAPPER_REQUIREMENTS,
    CodePackage,
    bootstrap_script,
    build_code_package,
    node_command,
    presign_code_package,
    resolve_requirements,
    upload_code_package,
)
from skyflow.artifacts.store import ArtifactStore
from skyflow.backends.remote_stage import SPEC_ENV, result_key
from skyflow.errors import ArtifactError
from tests.integration.conftest import StoreServer

pytestmark = pytest.mark.integration

_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def bare_python() -> str:
    """A python3 of this machine's minor version with venv and ensurepip, outside any virtualenv."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3")):
        probe = subprocess.run([candidate, "-I", "-c", "import sys, venv, ensurepip; "
                                "print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False) \
            if os.path.exists(candidate) else None
        if probe is not None and probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
    pytest.fail(f"no bare Python {want} with venv and ensurepip: neither /usr/bin/python3 nor {sys.base_prefix}")


@pytest.fixture
def s3_env(s3_server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, **_CREDENTIALS}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def package() -> CodePackage:
    return build_code_package("s3")


def stage_spec(uri: str, data: ArtifactRef, attempt: int) -> dict[str, Any]:
    """What the backend hands the wrapper (node_spec's shape): upper-case the input into output `model`,
    and record which interpreter ran the stage."""
    return {"run_id": "r1", "stage": "train", "attempt": attempt, "setup": None, "num_nodes": 1,
            "run": 'tr a-z A-Z < "$SKYFLOW_INPUT_DATA/rows.txt" > "$SKYFLOW_OUTPUT_MODEL/model.txt" && '
                   'printf %s "$SKYFLOW_PYTHON" > "$SKYFLOW_OUTPUT_MODEL/python.txt"',
            "store_uri": uri, "result_key": result_key("r1", "train", attempt),
            "inputs": {"data": {"uri": data.uri, "digest": data.digest, "size_bytes": data.size_bytes,
                                "store_uri": uri}},
            "outputs": ["model"], "workdir": None}


def committed_output(store: ArtifactStore, spec: dict[str, Any], name: str) -> ArtifactRef:
    """The output the node reported in its result object."""
    record = json.loads(store.read_bytes(spec["result_key"]))["outputs"][name]
    return ArtifactRef(name=name, uri=record["uri"], digest=record["digest"], size_bytes=record["size_bytes"],
                       file_count=0, store=store)


def run_bare_node(script: str, home: Path, s3_env: dict[str, str], spec: dict[str, Any] | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """The script under `env -i`: only PATH, HOME, the store's credentials and the stage spec."""
    (home / "node.sh").write_text(script)
    env = {"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1", "HOME": str(home),
           "SKYFLOW_NODE_ROOT": str(home / "node"), **s3_env}
    if spec is not None:
        env[SPEC_ENV] = json.dumps(spec)
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", str(home / "node.sh")],
                          capture_output=True, text=True, timeout=600, cwd=home, check=False)


def test_a_bare_node_installs_the_package_by_signed_url_and_runs_the_stage(
        package: CodePackage, s3_server: StoreServer, s3_env: dict[str, str], tmp_path: Path) -> None:
    uri = s3_server.new_uri()
    store = open_store(uri, create=True)
    assert upload_code_package(package, store)
    assert not upload_code_package(package, store)  # the index is there: nothing is sent again
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.txt").write_text("hello bare node\n")
    data = commit_output(store, tmp_path / "data", name="data")
    command = node_command(package, fetch="url", urls=presign_code_package(package, store, expiration_s=900),
                           python=bare_python())
    home = tmp_path / "home"
    home.mkdir()

    spec = stage_spec(uri, data, attempt=1)
    first = run_bare_node(command, home, s3_env, spec)
    assert first.returncode == 0, first.stderr[-4000:]
    env_dir = home / ".skyflow" / "env" / package.digest
    assert f"code package {package.digest} installed in {env_dir}" in first.stderr
    got = fetch_artifact(committed_output(store, spec, "model"), tmp_path / "back")
    assert (got / "model.txt").read_text() == "HELLO BARE NODE\n"
    assert (got / "python.txt").read_text() == str(env_dir / "bin" / "python")

    spec = stage_spec(uri, data, attempt=2)
    second = run_bare_node(command, home, s3_env, spec)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"code package {package.digest} already installed in {env_dir}" in second.stderr
    assert re.search(r"installed in \S+ \(\d", second.stderr) is None  # no second install
    got = fetch_artifact(committed_output(store, spec, "model"), tmp_path / "again")
    assert (got / "model.txt").read_text() == "HELLO BARE NODE\n"


def test_a_node_installs_from_a_directory_the_backend_copied(tmp_path: Path) -> None:
    """fetch='dir' (SkyPilot file_mounts, SFTP): the wheels are already on the node, nothing is downloaded."""
    package = build_code_package("file")
    copied = Path(shutil.copytree(package.directory, tmp_path / "copied"))
    script = bootstrap_script(package, fetch="dir", directory=str(copied), python=bare_python()) + \
        '"$SKYFLOW_PYTHON" -c "import skyflow.backends.remote_stage, skyflow; print(skyflow.__file__)"\n'
    env_dir = tmp_path / ".skyflow" / "env" / package.digest
    first = run_bare_node(script, tmp_path, {})
    assert first.returncode == 0, first.stderr[-4000:]
    assert f"code package {package.digest} installed in {env_dir}" in first.stderr
    assert Path(first.stdout.strip()).is_relative_to(env_dir)
    shutil.rmtree(copied)  # installed: the copy is no longer needed
    second = run_bare_node(script, tmp_path, {})
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"code package {package.digest} already installed in {env_dir}" in second.stderr


def test_a_wheel_with_other_bytes_in_the_store_stops_the_node(
        package: CodePackage, s3_server: StoreServer, s3_env: dict[str, str], tmp_path: Path) -> None:
    uri = s3_server.new_uri()
    store = open_store(uri, create=True)
    upload_code_package(package, store)
    own = package.files[0]
    store.write_bytes(package.key(own), b"not the wheel")
    command = node_command(package, fetch="url", urls=presign_code_package(package, store, expiration_s=900),
                           python=bare_python())
    proc = run_bare_node(command, tmp_path, s3_env)
    assert proc.returncode == 3
    assert f"{own.name} does not have the bytes the code package lists" in proc.stderr
    assert not (tmp_path / ".skyflow" / "env" / package.digest / "bin").exists()


def test_what_the_wrapper_imports_against_a_real_store_is_all_in_the_package(
        s3_server: StoreServer, s3_env: dict[str, str], tmp_path: Path) -> None:
    """Commit and fetch through S3 in a fresh interpreter; every distribution it loaded is shipped."""
    uri = s3_server.new_uri()
    probe = (
        "import sys; before = set(sys.modules)\n"
        "import importlib.metadata as m, tempfile\n"
        "from pathlib import Path\n"
        "from skyflow.artifacts import commit_output, fetch_artifact, open_store\n"
        f"store = open_store({uri!r}, create=True)\n"
        "src = Path(tempfile.mkdtemp()); (src / 'a.txt').write_text('x')\n"
        "fetch_artifact(commit_output(store, src, name='a'), Path(tempfile.mkdtemp()) / 'b')\n"
        "owners = m.packages_distributions()\n"
        "print('\\n'.join({d for mod in set(sys.modules) - before for d in owners.get(mod.split('.')[0], [])}))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **s3_env}, check=False)
    assert proc.returncode == 0, proc.stderr
    from packaging.utils import canonicalize_name

    loaded = {canonicalize_name(d) for d in proc.stdout.split()} - {"skyflow", "skyflow-llmops"}
    assert {"s3fs", "aiobotocore", "botocore"} <= loaded
    assert loaded - set(resolve_requirements([*WRAPPER_REQUIREMENTS, *STORE_REQUIREMENTS["s3"]])) == set()



def test_an_azure_store_signs_urls_a_node_can_fetch_with_urllib(azure_server: StoreServer) -> None:
    package = build_code_package("file")
    store = open_store(azure_server.new_uri(), azure_server.storage_options, create=True)
    upload_code_package(package, store)
    urls = presign_code_package(package, store, expiration_s=300)
    for file in package.files[:2]:
        with urllib.request.urlopen(urls[file.name], timeout=30) as response:
            assert hashlib.sha256(response.read()).hexdigest() == file.sha256


def test_a_gcs_store_without_signing_credentials_points_at_fetch_dir(gcs_server: StoreServer) -> None:
    package = build_code_package("file")
    store = open_store(gcs_server.new_uri(), gcs_server.storage_options, create=True)
    with pytest.raises(ArtifactError, match=r"cannot sign a URL for skyflow_llmops-.*GCS service account key.*"
                       r"use fetch='dir'"):
        presign_code_package(package, store)
