"""The stage wrapper a remote node runs: fetch inputs, run setup and run, commit outputs, report them.

A remote backend (Kubernetes, SkyPilot) starts ``python -m skyflow.backends.remote_stage`` on each
node with the JSON from :func:`node_spec` in ``SKYFLOW_STAGE_SPEC``. The node fetches its inputs
from the artifact store, runs the stage with ``SKYFLOW_INPUT_*``/``SKYFLOW_OUTPUT_*`` pointing at
its own directories, and node 0 commits the outputs and writes a small result JSON to the store
under :func:`result_key`, which the backend reads back as ``StageExit.outputs``. A node that cannot
reach the MLflow tracking store gives the stage a local one and node 0 carries it back
(:mod:`skyflow.backends.node_mlflow`).

The backends' side lives here too: the store a node can reach (and the error naming the fix when
there is none), the code package a node installs before the wrapper runs, and the dry run's YAML.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.backends.base import StageLaunch
from skyflow.backends.node_mlflow import capture_key, prepare_tracking
from skyflow.errors import ArtifactError, BackendError

if TYPE_CHECKING:  # the node runs this module and needs none of the code package's building
    from skyflow.artifacts.code_package import CodePackage
    from skyflow.artifacts.store import ArtifactStore

__all__ = ["CODE_URL_TTL_S", "SPEC_ENV", "WRAPPER_BACKENDS", "WRAPPER_MODULE", "code_package_for", "commit_workdir",
           "is_remote_uri", "main", "missing_store_message", "node_spec", "placeholder_urls", "read_result",
           "remote_store_uri", "render_yaml", "result_key", "run_node", "ship_code_package", "split_env",
           "store_for_render"]

SPEC_ENV = "SKYFLOW_STAGE_SPEC"
WRAPPER_MODULE = "skyflow.backends.remote_stage"
# The backends whose nodes run this wrapper (SSH pools run the stage's own scripts).
WRAPPER_BACKENDS = ("kubernetes", "skypilot")
REMOTE_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://")
# Names the runner sets from this machine that mean nothing on another one.
_HOST_ONLY = ("SKYFLOW_INPUT_", "SKYFLOW_OUTPUT_")
# The stage's MLflow run travels even when this shell has the same values (the node has not).
_KEEP_PREFIXES = ("SKYFLOW_", "SKYPILOT_", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


def is_remote_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(REMOTE_SCHEMES)


def store_for_render(launch: StageLaunch, backend: str) -> tuple[str, str]:
    """The store a dry run shows, and a YAML comment saying what is missing when there is none."""
    try:
        return remote_store_uri(launch, backend), ""
    except BackendError as exc:
        return "<remote store>", "".join(f"# {line}\n" for line in str(exc).splitlines())


def render_yaml(docs: list[Any]) -> str:
    """Documents as YAML for a person to review: multi-line strings (scripts) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=120)


def remote_store_uri(launch: StageLaunch, backend: str) -> str:
    """The object store a remote node reads inputs from and commits outputs to.

    That is the store the plan gave the stage (the pipeline's store for its cloud or region, or for
    where its cluster lives). A local-only store cannot be reached from another machine.
    """
    if launch.store_uri is not None and is_remote_uri(launch.store_uri):
        return launch.store_uri
    raise BackendError(missing_store_message(launch, backend), stage=launch.stage, backend=backend)


# The object store each cloud's nodes read fastest; any other cloud can use any of them.
_CLOUD_SCHEMES = {"aws": "s3", "gcp": "gs", "azure": "az"}


def missing_store_message(launch: StageLaunch, backend: str) -> str:
    """Why a remote stage cannot run with the store it has: the stage, where it runs, and the `stores:` line
    that fixes it."""
    placement = launch.placement
    runs_on = placement.infra
    if placement.region and "/" not in runs_on:
        runs_on = f"{runs_on}/{placement.region}"
    where = placement.located_at or runs_on
    cloud = where.split("/")[0]
    scheme = _CLOUD_SCHEMES.get(cloud)
    lives = f", a cluster in {placement.located_at}" if placement.located_at else ""
    store = launch.store_uri or "the local store"
    text = (f"stage {launch.stage!r} runs on {runs_on} ({backend}{lives}), but the pipeline has no object store "
            f"there: its artifacts would go to {store}, on this machine, which the nodes cannot reach. Add one to "
            f"the pipeline: `stores: {{{where}: {scheme or 's3'}://YOUR-BUCKET/skyflow}}`")
    notes = [] if scheme else ["or gs://, az://"]
    if "/" in where:
        notes.append(f"a `{cloud}:` key serves every {cloud} location")
    if notes:
        text += f" ({'; '.join(notes)})"
    if backend == "kubernetes" and not placement.located_at:
        context = runs_on.partition("/")[2] or "default"
        text += (f", or say where the cluster lives (`infra: aws/us-east-1` under kubernetes.contexts.{context} in "
                 "$SKYFLOW_HOME/config.yaml) so that the store for that cloud serves it")
    return text


# -- the code package, shared by the remote backends ------------------------------------------------

# How long the code package's signed URLs stay valid: the longest S3 and GCS accept (7 days). A pod may
# wait for a GPU, a managed job recover, or a service's pod be rescheduled, within this time.
CODE_URL_TTL_S = 7 * 24 * 3600


@functools.cache
def _code_package(kind: str) -> CodePackage:
    from skyflow.artifacts.code_package import build_code_package

    return build_code_package(kind)


def code_package_for(store_uri: str) -> CodePackage:
    """skyflow's code package for nodes using ``store_uri``, built once per process and store kind (this
    process runs the code it imported when it started). A store not known yet (a dry run without
    `stores:`) gets the package with no store library."""
    from skyflow.artifacts.code_package import store_kind

    return _code_package(store_kind(store_uri) if is_remote_uri(store_uri) else "file")


def placeholder_urls(package: CodePackage, store_uri: str) -> dict[str, str]:
    """What a dry run shows where a launch puts signed URLs (nothing is uploaded or signed)."""
    return {f.name: f"<signed at launch: {store_uri}/{package.key(f)}>" for f in package.files}


def ship_code_package(launch: StageLaunch, store_uri: str, backend: str, fix: str) -> dict[str, str]:
    """Upload the code package to the stage's store (once per digest) and sign each wheel's URL;
    a failure names the stage and ``fix``, the backend's way around it."""
    from skyflow.artifacts import open_store
    from skyflow.artifacts.code_package import presign_code_package, upload_code_package

    try:
        package = code_package_for(store_uri)
        store = open_store(store_uri)
        upload_code_package(package, store)
        return presign_code_package(package, store, expiration_s=CODE_URL_TTL_S)
    except ArtifactError as exc:
        raise BackendError(f"stage {launch.stage!r}: cannot ship skyflow's code package to the nodes: {exc}. "
                           f"Or {fix}", stage=launch.stage, backend=backend) from exc


def result_key(run_id: str, stage: str, attempt: int) -> str:
    return f"runs/{run_id}/{stage}/attempt-{attempt}/result.json"


def split_env(launch: StageLaunch) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) variables a remote node needs: not this machine's environment, not its paths.

    The runner's environment includes this shell's variables; only those the pipeline or skyflow set
    (or that differ from this shell) travel. Secrets are split out so they go in a Secret, not a spec.
    """
    secrets = set(launch.secret_values)
    stage_envs = set(launch.spec.envs)
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for key, value in launch.env.items():
        if key.startswith(_HOST_ONLY):
            continue
        if value in secrets:
            secret[key] = value
        elif key.startswith(_KEEP_PREFIXES) or key in stage_envs or os.environ.get(key) != value:
            plain[key] = value
    for key in ("SKYPILOT_NODE_RANK", "SKYPILOT_HEAD_IP", "SKYPILOT_NODE_IPS"):
        plain.pop(key, None)  # set per node
    return plain, secret


def node_spec(launch: StageLaunch, store_uri: str, workdir_ref: ArtifactRecord | None = None) -> dict[str, Any]:
    """What the wrapper on a node needs (no secret values: those arrive as environment variables)."""
    return {
        "run_id": launch.run_id, "stage": launch.stage, "attempt": launch.attempt,
        "setup": launch.setup, "run": launch.run, "num_nodes": launch.num_nodes,
        "store_uri": store_uri, "result_key": result_key(launch.run_id, launch.stage, launch.attempt),
        "inputs": {name: _wire(ref) for name, ref in launch.input_refs.items()},
        "outputs": sorted(launch.outputs),
        "workdir": _wire(workdir_ref) if workdir_ref else None,
    }


def _wire(ref: ArtifactRecord) -> dict[str, Any]:
    """A record as a node reads it (its name is the key it sits under)."""
    return {"uri": ref.uri, "digest": ref.digest, "size_bytes": ref.size_bytes, "store_uri": ref.store_uri}


def commit_workdir(launch: StageLaunch, store_uri: str) -> ArtifactRecord | None:
    """Upload the stage's own workdir (only one it names) so nodes can fetch it like an input."""
    from skyflow.artifacts import commit_output, open_store

    if not isinstance(launch.spec.workdir, str) or not launch.workdir.is_dir():
        return None
    return commit_output(open_store(store_uri), launch.workdir, name="workdir").record


def read_result(store_uri: str, key: str, *, stage: str | None = None, backend: str | None = None
                ) -> dict[str, ArtifactRecord] | None:
    """The outputs node 0 committed, or None when it wrote no result (it failed before).

    ``stage`` and ``backend`` name what a malformed result belongs to."""
    from skyflow.artifacts import open_store

    data = open_store(store_uri).read_optional(key)
    if data is None:
        return None
    try:
        outputs = json.loads(data)["outputs"]
        return {str(k): ArtifactRecord.from_json({"store_uri": store_uri, **v, "name": str(k)})
                for k, v in outputs.items()}
    except (ValueError, KeyError, TypeError, AttributeError, ArtifactError) as exc:
        owner = f"stage {stage!r}'s result" if stage else "the stage result"
        raise BackendError(f"{owner} at {store_uri}/{key} is malformed: {exc}", stage=stage, backend=backend) from exc


# -- on the node --------------------------------------------------------------------------------

def _fetch(ref: Mapping[str, Any], name: str, dest: Path) -> Path:
    from skyflow.artifacts import ArtifactRef, fetch_artifact

    return fetch_artifact(ArtifactRef.open(ArtifactRecord.from_json({**ref, "name": name})), dest)


def _node_env(spec: Mapping[str, Any], inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    # An Indexed Job numbers its pods; that number is the node rank.
    rank = env.get("SKYPILOT_NODE_RANK") or env.get("JOB_COMPLETION_INDEX") or "0"
    env["SKYPILOT_NODE_RANK"] = rank
    head = env.get("SKYPILOT_HEAD_IP") or "127.0.0.1"
    env["SKYPILOT_HEAD_IP"] = head
    env.setdefault("SKYPILOT_NODE_IPS", "\n".join([head] * int(spec.get("num_nodes", 1))))
    env.update({f"SKYFLOW_INPUT_{k.upper()}": str(p) for k, p in inputs.items()})
    env.update({f"SKYFLOW_OUTPUT_{k.upper()}": str(p) for k, p in outputs.items()})
    return env


def _bash(script: str, cwd: Path, env: Mapping[str, str]) -> int:
    return subprocess.call(["bash", "-c", script], cwd=cwd, env=dict(env))


def run_node(spec: Mapping[str, Any], root: Path) -> int:
    """Run one node's part of a stage under ``root``; node 0 commits and reports the outputs, and
    carries back the stage's MLflow calls when the node could not send them."""
    from skyflow.artifacts import open_store

    inputs = {name: _fetch(ref, name, root / "inputs" / name) for name, ref in spec["inputs"].items()}
    outputs = {name: root / "outputs" / name for name in spec["outputs"]}
    for path in outputs.values():
        path.mkdir(parents=True, exist_ok=True)
    workdir = _fetch(spec["workdir"], "workdir", root / "workdir") if spec.get("workdir") else root
    env = _node_env(spec, inputs, outputs)
    tracking = prepare_tracking(env, root)
    env.update(tracking.env)
    code = _run_stage(spec, workdir, env)
    if env["SKYPILOT_NODE_RANK"] != "0":
        return code
    store = open_store(spec["store_uri"])
    if tracking.local_store is not None:
        _carry_back_mlflow(store, tracking.local_store, spec)
    if code != 0:
        return code
    return _commit_outputs(store, outputs, spec["result_key"])


def _run_stage(spec: Mapping[str, Any], workdir: Path, env: Mapping[str, str]) -> int:
    if spec.get("setup"):
        code = _bash(spec["setup"], workdir, env)
        if code != 0:
            print(f"skyflow: setup failed with exit code {code}", flush=True)
            return code
    return _bash(spec["run"], workdir, env)


def _commit_outputs(store: ArtifactStore, outputs: Mapping[str, Path], key: str) -> int:
    from skyflow.artifacts import commit_output

    result: dict[str, Any] = {}
    for name, path in outputs.items():
        if not any(path.iterdir()):
            print(f"skyflow: the stage wrote nothing to output {name!r}", flush=True)
            return 1
        result[name] = commit_output(store, path, name=name, confined=True).record.to_json()
    store.write_bytes(key, json.dumps({"outputs": result}, sort_keys=True).encode())
    return 0


def _carry_back_mlflow(store: ArtifactStore, local_store: Path, spec: Mapping[str, Any]) -> None:
    """Commit the stage's local MLflow store and say where it is; a failure costs the metrics, not the stage."""
    from skyflow.artifacts import commit_output

    key = capture_key(spec["run_id"], spec["stage"], int(spec["attempt"]))
    try:
        record = commit_output(store, local_store, name="mlflow").record
        store.write_bytes(key, json.dumps(record.to_json(), sort_keys=True).encode())
    except ArtifactError as exc:
        print(f"skyflow: the stage's MLflow records could not be carried back: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    raw = Path(args[0]).read_text() if args else os.environ.get(SPEC_ENV)
    if not raw:
        print(f"skyflow: no stage spec: pass a file or set {SPEC_ENV}", file=sys.stderr)
        return 2
    spec = json.loads(raw)
    base = os.environ.get("SKYFLOW_NODE_ROOT")
    root = Path(base) if base else Path(tempfile.mkdtemp(prefix="skyflow-node-"))
    try:
        return run_node(spec, root)
    except ArtifactError as exc:
        print(f"skyflow: {exc}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
