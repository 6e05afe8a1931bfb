"""`skyflow check`: what this machine can use, one line each with the fix for what is missing.

Clouds (credentials present, SkyPilot installed), Kubernetes contexts (in the kubeconfig, client
installed), SSH pools (each host answers on its port), a pipeline's stores (reachable and
listable with this machine's credentials) and the lineage store. Nothing is created or changed.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skyflow.session.discovery import detect_enabled_clouds

__all__ = ["CLOUD_FIXES", "Finding", "check_environment"]

CLOUD_FIXES = {
    "aws": "run `aws configure`, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
    "gcp": "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS",
    "azure": "run `az login`, or set AZURE_CLIENT_ID (with a secret or federated token)",
    "lambda": "put your API key in ~/.lambda_cloud/lambda_keys (`api_key = ...`)",
    "runpod": "set RUNPOD_API_KEY, or run `runpod config`",
}
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Finding:
    """One line of the check: what, whether it can be used, what was seen, and the fix when it cannot."""

    kind: str  # cloud, skypilot, kubernetes, ssh, ray, store, lineage, state
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_environment(config: Any, home: Path, environ: Mapping[str, str], *,
                      stores: Mapping[str, str] | None = None, tracking_uri: str | None = None) -> list[Finding]:
    """Every finding, in a stable order: clouds, SkyPilot, Kubernetes, SSH pools, Ray clusters, stores,
    lineage, run state."""
    findings = _clouds(environ)
    findings += _kubernetes(config, environ)
    findings += _ssh(config)
    findings += _ray(config)
    findings += [_store(name, uri) for name, uri in (stores or {}).items()]
    findings.append(_lineage(tracking_uri, home, environ))
    findings.append(_state_db(home))
    return findings


def _clouds(environ: Mapping[str, str]) -> list[Finding]:
    enabled = set(detect_enabled_clouds(environ))
    out = [Finding("cloud", cloud, cloud in enabled,
                   "credentials found" if cloud in enabled else "no credentials on this machine",
                   "" if cloud in enabled else fix)
           for cloud, fix in CLOUD_FIXES.items()]
    has_sky = importlib.util.find_spec("sky") is not None
    out.append(Finding("skypilot", "sky", has_sky,
                       "installed: stages placed on a cloud can launch" if has_sky else
                       "not installed: stages placed on a cloud cannot launch (planning still works)",
                       "" if has_sky else "pip install 'skypilot>=0.10' (the skypilot extra)"))
    return out


def _kubernetes(config: Any, environ: Mapping[str, str]) -> list[Finding]:
    contexts = dict(config.kubernetes.contexts)
    if not contexts:
        return []
    path = Path(config.kubernetes.kubeconfig or environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    known = _kubeconfig_contexts(path.expanduser())
    client = importlib.util.find_spec("kubernetes") is not None
    out = []
    for name in contexts:
        if known is None:
            out.append(Finding("kubernetes", name, False, f"no kubeconfig at {path}",
                               "point kubernetes.kubeconfig (or KUBECONFIG) at your cluster's kubeconfig"))
        elif name != "default" and name not in known:
            out.append(Finding("kubernetes", name, False, f"context {name!r} is not in {path} "
                               f"(it has {', '.join(sorted(known)) or 'none'})",
                               "rename the context in the skyflow config, or add it to the kubeconfig"))
        elif not client:
            out.append(Finding("kubernetes", name, False, "the Kubernetes client is not installed",
                               "pip install 'kubernetes==37.0.1' (the k8s extra)"))
        else:
            out.append(Finding("kubernetes", name, True, f"context in {path}"))
    return out


def _kubeconfig_contexts(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return {str(c.get("name")) for c in (data or {}).get("contexts") or [] if isinstance(c, dict)}


def _ssh(config: Any) -> list[Finding]:
    from skyflow.backends.ssh_remote import HostAddress
    from skyflow.errors import BackendError

    out = []
    for name, pool in config.ssh_pools.items():
        down = []
        for host in pool.hosts:
            try:
                address = HostAddress.parse(host, name)
                socket.create_connection((address.host, address.port), timeout=CONNECT_TIMEOUT_S).close()
            except (OSError, BackendError) as exc:
                down.append(f"{host} ({getattr(exc, 'strerror', None) or exc})")
        ok = not down
        out.append(Finding("ssh", f"ssh/{name}", ok,
                           f"{len(pool.hosts)} host(s) answer" if ok else f"not answering: {', '.join(down)}",
                           "" if ok else "check that the host is up and sshd listens there (ssh_pools in the config)"))
    return out


def _ray(config: Any) -> list[Finding]:
    """Each Ray cluster's dashboard answers on its port (the Job Submission API is served there)."""
    from urllib.parse import urlsplit

    out = []
    for name, cluster in config.ray_clusters.items():
        where = urlsplit(cluster.address)
        try:
            socket.create_connection((where.hostname or "", where.port or 8265), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            seen = f"{cluster.address} does not answer ({exc.strerror or exc})"
            out.append(Finding("ray", f"ray/{name}", False, seen,
                               "start the cluster (`ray start --head --dashboard-host 0.0.0.0`) or fix its address "
                               "(ray_clusters in the config)"))
            continue
        client = importlib.util.find_spec("ray") is not None
        out.append(Finding("ray", f"ray/{name}", client, f"{cluster.address} answers",
                           "" if client else "pip install 'ray[default]>=2.44,<3' (the Job Submission client)"))
    return out


def _state_db(home: Path) -> Finding:
    """Run state can be read: a damaged state DB is named with how to start afresh."""
    import sqlite3

    path = home / "state.db"
    if not path.is_file():
        return Finding("state", "runs", True, f"{path}: no runs yet")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error as exc:
        verdict, runs = str(exc), 0
    if verdict != "ok":
        return Finding("state", "runs", False, f"{path} is damaged: {verdict}",
                       f"move it aside to start afresh (`mv {path} {path}.broken`); the runs it held are then no "
                       "longer known to skyflow, their artifacts stay in the stores")
    return Finding("state", "runs", True, f"{path}: {runs} run(s), intact")


def _store(name: str, uri: str) -> Finding:
    from skyflow.artifacts import open_store
    from skyflow.errors import SkyflowError

    try:
        store = open_store(uri)
        store.list_prefix("manifests/", wanted_keys=1)
    except (SkyflowError, OSError, ValueError, ImportError) as exc:
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        library = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(scheme)
        hint = (f"pip install {library} (the store's extra) and check this machine's credentials" if library
                else "check the path")
        return Finding("store", name, False, f"{uri}: {str(exc).splitlines()[0][:160]}", hint)
    return Finding("store", name, True, f"{uri} is reachable")


def _lineage(tracking_uri: str | None, home: Path, environ: Mapping[str, str]) -> Finding:
    from skyflow.errors import LineageError
    from skyflow.lineage.recorder import check_tracking_uri, describe_tracking, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or environ.get("MLFLOW_TRACKING_URI"), home)
    try:
        check_tracking_uri(uri)
    except LineageError as exc:
        return Finding("lineage", "mlflow", False, str(exc).splitlines()[0],
                       "pip install 'mlflow-skinny>=3.17,<4' sqlalchemy alembic (core dependencies)")
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S):
                pass
        except (urllib.error.URLError, OSError) as exc:
            return Finding("lineage", "mlflow", False, f"{uri} does not answer ({exc}); records wait in the spool",
                           "start the tracking server, or unset MLFLOW_TRACKING_URI to use the local store")
    return Finding("lineage", "mlflow", True, describe_tracking(uri))
