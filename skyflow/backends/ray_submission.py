"""A stage as a Ray job submission: pure functions from a launch to the entrypoint, runtime_env and resources.

The job's entrypoint (a script in its environment) runs the stage wrapper
(:mod:`skyflow.backends.remote_stage`), which fetches the inputs from the pipeline's store, runs the
stage and commits its outputs. Unless the nodes have
skyflow installed, the job's ``working_dir`` is skyflow's code package (Ray uploads it to the
cluster once per digest) and the entrypoint installs it with the node's Python before the wrapper
starts. Ray itself sets ``RAY_ADDRESS`` in the entrypoint's environment, so a stage that starts its
own actors (``ray.init()``) joins the cluster its job runs on.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from skyflow.artifacts.code_package import bootstrap_script
from skyflow.backends.base import StageLaunch
from skyflow.backends.remote_stage import SPEC_ENV, WRAPPER_MODULE
from skyflow.processes import attempt_token

if TYPE_CHECKING:
    from skyflow.artifacts.code_package import CodePackage
    from skyflow.config import RayCluster

__all__ = ["ENTRYPOINT", "ENTRYPOINT_ENV", "REDACTED", "JobSubmission", "accelerator_resource", "cluster_name",
           "entrypoint_script", "job_submission", "new_submission_id"]

REDACTED = "<redacted>"
# The script the job runs travels in its environment: Ray prints a job's entrypoint at the top of its log,
# and the code package's installer is long.
ENTRYPOINT_ENV = "SKYFLOW_RAY_ENTRYPOINT"
ENTRYPOINT = f'sh -c "${ENTRYPOINT_ENV}"'
# Ray's share of a node's `accelerator_type:<name>` resource that pins a task to that GPU model.
ACCELERATOR_SHARE = 0.001


@dataclass(frozen=True)
class JobSubmission:
    """The arguments of ``JobSubmissionClient.submit_job`` for one attempt (secret values included)."""

    submission_id: str
    entrypoint: str
    runtime_env: Mapping[str, Any]
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    secret_names: tuple[str, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """What ``submit_job`` takes; resources not asked for are left out (Ray's defaults apply)."""
        out: dict[str, Any] = {"entrypoint": self.entrypoint, "submission_id": self.submission_id,
                               "runtime_env": json.loads(json.dumps(self.runtime_env)),
                               "metadata": dict(self.metadata)}
        for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.entrypoint_resources:
            out["entrypoint_resources"] = dict(self.entrypoint_resources)
        return out

    def redacted(self) -> dict[str, Any]:
        """The submission as a dry run shows it: secret values replaced."""
        out = self.kwargs()
        env = out["runtime_env"].get("env_vars", {})
        for name in self.secret_names:
            if name in env:
                env[name] = REDACTED
        return out


def cluster_name(infra: str | None) -> str:
    """`ray/gpu` -> gpu; plain `ray` -> ""."""
    return str(infra or "").partition("/")[2]


# The token of the attempt's log path, which the runner records before it submits: a later runner finds the
# job by it when the runner before it died between submitting it and recording its submission id.
ATTEMPT_TOKEN_KEY = "skyflow_attempt_token"


def new_submission_id(run_id: str, stage: str, attempt: int) -> str:
    """Unique per submission: a resumed run starts its attempts at 1 again, and Ray refuses a used id."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{run_id}-{stage}-{attempt}").strip("-")[:80]
    return f"skyflow-{stem}-{uuid.uuid4().hex[:8]}"


def accelerator_resource(name: str) -> str:
    """The custom resource Ray gives a node for its GPU model: A100-80GB -> accelerator_type:A100-80G."""
    model = name[:-1] if name.upper().endswith("GB") else name
    return f"accelerator_type:{model}"


def entrypoint_script(cluster: RayCluster, package: CodePackage | None) -> str:
    """The shell a job runs: install the code package (unless the nodes have skyflow), then the wrapper
    in a node directory of its own that is removed when the job ends."""
    lines = ['root=$(mktemp -d "${TMPDIR:-/tmp}/skyflow-node-XXXXXX") || exit',
             "trap 'rm -rf \"$root\"' EXIT",
             "trap 'exit 143' TERM INT"]
    if package is None:
        lines.append(f"SKYFLOW_PYTHON={shlex.quote(cluster.python)}")
    else:
        # The job's working_dir holds the package's wheels; Ray starts the entrypoint there ($PWD may be stale).
        lines.append(bootstrap_script(package, fetch="dir", directory=".", python=cluster.python,
                                      env_root=cluster.env_root).rstrip("\n"))
    lines.append(f'SKYFLOW_NODE_ROOT="$root" "$SKYFLOW_PYTHON" -P -m {WRAPPER_MODULE}')
    return "\n".join(lines) + "\n"


def _head_host(address: str) -> str:
    return urlsplit(address).hostname or "127.0.0.1"


def _resources(launch: StageLaunch) -> tuple[float | None, float | None, int | None, dict[str, float]]:
    """(cpus, gpus, memory bytes, custom resources) the job's entrypoint reserves.

    A one-node stage reserves what it asks for, pinned to its GPU model. A stage on several nodes
    runs its driver once and spreads its work with Ray itself (actors, placement groups), so the
    driver reserves no accelerators: its actors claim them.
    """
    spec = launch.spec.resources
    cpus = spec.cpus.amount if spec.cpus is not None else None
    memory = None
    if spec.memory is not None:
        gb = spec.memory.amount * (cpus or 1.0) if spec.memory.per_cpu else spec.memory.amount
        memory = int(gb * 1024**3)
    if launch.num_nodes > 1 or not launch.placement.accelerators:
        return cpus, None, memory, {}
    name, count = next(iter(launch.placement.accelerators.items()))
    return cpus, float(count), memory, {accelerator_resource(name): ACCELERATOR_SHARE}


def job_submission(launch: StageLaunch, cluster: RayCluster, node_spec: Mapping[str, Any],
                   plain_env: Mapping[str, str], secret_env: Mapping[str, str],
                   package: CodePackage | None, submission_id: str) -> JobSubmission:
    """Everything one attempt submits; ``package`` None when the nodes have skyflow installed."""
    head = _head_host(cluster.address)
    env = {**plain_env, "SKYPILOT_NODE_RANK": "0", "SKYPILOT_HEAD_IP": head, "SKYPILOT_NODE_IPS": head,
           SPEC_ENV: json.dumps(dict(node_spec), sort_keys=True), ENTRYPOINT_ENV: entrypoint_script(cluster, package),
           **secret_env}
    env.pop("RAY_ADDRESS", None)  # Ray sets the cluster's own address for the entrypoint
    runtime_env: dict[str, Any] = {"env_vars": dict(sorted(env.items()))}
    if package is not None:
        runtime_env["working_dir"] = str(package.directory)
    cpus, gpus, memory, resources = _resources(launch)
    metadata = {"skyflow_run": launch.run_id, "skyflow_stage": launch.stage, "skyflow_attempt": str(launch.attempt),
                ATTEMPT_TOKEN_KEY: attempt_token(launch.log_path)}
    return JobSubmission(submission_id=submission_id, entrypoint=ENTRYPOINT,
                         runtime_env=runtime_env, entrypoint_num_cpus=cpus, entrypoint_num_gpus=gpus,
                         entrypoint_memory=memory, entrypoint_resources=resources, metadata=metadata,
                         secret_names=tuple(sorted(secret_env)))
