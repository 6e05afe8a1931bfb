"""What a stage declared for MLflow about its outputs: a metrics file, plots, a (registered) model.

`metrics: FILE` — every number in the JSON file becomes a metric of the stage run (nested keys
joined with dots); a list of objects is a series, one step per object (its `step`, else its
position). `artifacts: [PATH...]` — those files are logged into the stage run. `kind: model` — the
output's files are logged as the directory `<output>/` of the stage run, tagged with the artifact's
digest; with `register: NAME` that directory also becomes a version of the registered model NAME
whose source run is the stage run, tagged with the skyflow run id and the digest. A version is
made once per digest: a cache hit of the same model links the version it already has.

Files are read from the artifact store the output was committed to, verified against their digests.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.lineage.mlflow_names import clean_key, quote_filter_value
from skyflow.lineage.records import DeclaredOutput, StageRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # metrics per log_batch call (MLflow's limit)


def metric_points(data: Any, prefix: str = "") -> list[tuple[str, float, int]]:
    """(key, value, step) for every number in a metrics file's JSON (booleans and text are left out)."""
    points: list[tuple[str, float, int]] = []
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            for index, item in enumerate(data):
                step = item.get("step", index)
                step = int(step) if _is_number(step) else index
                points.extend((k, v, step) for k, v, _ in metric_points({k: x for k, x in item.items() if k != "step"},
                                                                         prefix))
        return points
    if not isinstance(data, dict):
        return points
    for key, value in data.items():
        name = f"{prefix}{key}"
        if _is_number(value):
            points.append((clean_key(name), float(value), 0))
        elif isinstance(value, dict | list):
            points.extend(metric_points(value, f"{name}."))
    return points


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def log_declared_outputs(client: MlflowClient, run_id: str, rec: StageRecord, pipeline: str) -> None:
    """Log each declared output of a finished stage into its MLflow run."""
    outputs = {a.name: a for a in rec.outputs}
    for declared in rec.declared:
        record = outputs.get(declared.name)
        if record is None or not declared.logs_anything:
            continue
        with tempfile.TemporaryDirectory(prefix="skyflow-mlflow-") as tmp:
            _log_output(client, run_id, rec, declared, record, Path(tmp) / declared.name, pipeline)


def _log_output(client: MlflowClient, run_id: str, rec: StageRecord, declared: DeclaredOutput,
                record: ArtifactRecord, local: Path, pipeline: str) -> None:
    from mlflow.entities import RunTag

    version = None
    if declared.kind == "model" and declared.register:
        version = _version_with_digest(client, declared.register, record.digest)
    log_model = declared.kind == "model" and not (rec.cache_hit and (version is not None or not declared.register))
    wanted = () if log_model else tuple(filter(None, (declared.metrics, *declared.artifacts)))
    _fetch(record, local, wanted)
    missing: list[str] = []
    if declared.metrics:
        missing += _log_metrics_file(client, run_id, local, declared.metrics)
    for pattern in declared.artifacts:
        missing += _log_files(client, run_id, local, pattern)
    tags = [RunTag(f"skyflow.output.{clean_key(declared.name)}.digest", record.digest)]
    if log_model:
        client.log_artifacts(run_id, str(local), artifact_path=declared.name)
        tags.append(RunTag(f"skyflow.model.{clean_key(declared.name)}", f"runs:/{run_id}/{declared.name}"))
    if declared.register:
        version = version or _register(client, declared.register, run_id, rec, record, pipeline)
        tags.append(RunTag(f"skyflow.model_version.{clean_key(declared.name)}", f"{version.name}/{version.version}"))
    if missing:
        log.warning("lineage: stage %r declared %s in output %r, which it did not write",
                    rec.stage, ", ".join(missing), declared.name)
        tags.append(RunTag(f"skyflow.output.{clean_key(declared.name)}.missing", ", ".join(missing)))
    client.log_batch(run_id, tags=tags)


def _fetch(record: ArtifactRecord, local: Path, wanted: tuple[str, ...]) -> None:
    """The output's files (only those matching ``wanted`` when given) under ``local``, verified."""
    from skyflow.artifacts import ArtifactRef, sync_artifact

    sync_artifact(ArtifactRef.open(record), local, include=wanted)


def _log_metrics_file(client: MlflowClient, run_id: str, local: Path, relative: str) -> list[str]:
    from mlflow.entities import Metric

    path = local / relative
    if not path.is_file():
        return [relative]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("lineage: metrics file %s is not JSON (%s); its numbers are not logged", relative, exc)
        return []
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value, step in metric_points(data)]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])
    return []


def _log_files(client: MlflowClient, run_id: str, local: Path, pattern: str) -> list[str]:
    files = sorted(p for p in local.glob(pattern) if p.is_file()) if local.is_dir() else []
    if not files and local.is_file() and local.name == pattern:
        files = [local]
    for path in files:
        parent = path.parent.relative_to(local).as_posix() if local.is_dir() else "."
        client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)
    return [] if files else [pattern]


def _version_with_digest(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{quote_filter_value(name)}' AND tags.`skyflow.digest` = '{quote_filter_value(digest)}'",
            max_results=1,
        )
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return found[0] if found else None


def _register(client: MlflowClient, name: str, run_id: str, rec: StageRecord, record: ArtifactRecord,
              pipeline: str) -> ModelVersion:
    """A new version of registered model ``name`` (made if missing) from the stage run's directory."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"skyflow.pipeline": pipeline},
                                       description=f"registered by skyflow pipeline {pipeline!r}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {"skyflow.run_id": rec.run_id, "skyflow.stage": rec.stage, "skyflow.output": record.name,
            "skyflow.digest": record.digest, "skyflow.uri": record.uri}
    return client.create_model_version(
        name, source=f"runs:/{run_id}/{record.name}", run_id=run_id, tags=tags,
        description=f"output {record.name!r} of stage {rec.stage!r}, skyflow run {rec.run_id} ({record.digest})",
        await_creation_for=0,
    )
