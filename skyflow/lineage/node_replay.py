"""What a remote stage logged to MLflow where it could not reach the store, replayed into its run.

A node that cannot reach the tracking store gives the stage a local MLflow file store and carries it
back through the stage's artifact store (`skyflow.backends.node_mlflow`). Here the runner's side:
:func:`collect_node_runs` fetches one attempt's carried-back store and reads it into plain JSON (no
MLflow import: the layout is MLflow's file store), which the recorder scrubs and spools; and
:func:`replay_node_runs` logs it into the stage's MLflow run: every metric with its steps and
timestamps, params, tags and artifacts. Runs the stage opened itself (nested runs) become child runs
of the stage's run. A replayed attempt is tagged, so a record sent twice does not log it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.lineage.mlflow_names import MAX_PARAM_VALUE, MAX_TAG_VALUE, PARENT_TAG, clean_key, cut

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["REPLAYED_TAG_PREFIX", "collect_node_runs", "read_file_store", "replay_node_runs"]

REPLAYED_TAG_PREFIX = "skyflow.node_mlflow."
# MLflow's log_batch limits per call.
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
# MLflow's own bookkeeping tags on the node's runs; the stage run has its own.
_KEEP_MLFLOW_TAGS = ("mlflow.note.content",)


def collect_node_runs(store_uri: str, key: str, dest: Path) -> dict[str, Any] | None:
    """The runs an attempt's node logged locally, fetched under ``dest`` and read; None when the node
    left none at ``key`` (it reached the store, or failed before it ran the stage)."""
    from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store

    store = open_store(store_uri)
    data = store.read_optional(key)
    if data is None:
        return None
    record = ArtifactRecord.from_json({**json.loads(data), "store_uri": store_uri, "name": "mlflow"})
    root = fetch_artifact(ArtifactRef.open(record, store=store), dest)
    return {"key": key, "runs": read_file_store(root / "mlruns")}


def read_file_store(mlruns: Path) -> list[dict[str, Any]]:
    """Every run of an MLflow file store: id, name, parent, times, metrics (key, value, timestamp ms,
    step), params, tags and its artifacts folder; parents before their children."""
    runs: list[dict[str, Any]] = []
    for meta in sorted(mlruns.glob("*/*/meta.yaml")):
        folder = meta.parent
        if folder.parent.name.startswith("."):  # .trash: runs the stage deleted
            continue
        tags = _read_values(folder / "tags")
        artifacts = folder / "artifacts"
        runs.append({
            "run_id": folder.name, "experiment_id": folder.parent.name, "run_name": tags.get("mlflow.runName"),
            "parent": tags.get(PARENT_TAG), "start_time": _meta_int(meta, "start_time"),
            "end_time": _meta_int(meta, "end_time"), "metrics": list(_read_metrics(folder / "metrics")),
            "params": _read_values(folder / "params"), "tags": tags,
            "artifacts": str(artifacts) if artifacts.is_dir() and any(artifacts.iterdir()) else None,
        })
    ids = {run["run_id"] for run in runs}
    depth = {run["run_id"]: _depth(run, {r["run_id"]: r for r in runs}, ids) for run in runs}
    return sorted(runs, key=lambda run: depth[run["run_id"]])


def _depth(run: dict[str, Any], by_id: dict[str, dict[str, Any]], ids: set[str]) -> int:
    depth, seen = 0, {run["run_id"]}
    while run.get("parent") in ids and run["parent"] not in seen:
        seen.add(run["parent"])
        run, depth = by_id[run["parent"]], depth + 1
    return depth


def _read_values(folder: Path) -> dict[str, str]:
    """Params or tags: one file per key (a key with `/` is a nested path)."""
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8", errors="replace")
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _read_metrics(folder: Path) -> Iterator[tuple[str, float, int, int]]:
    """Each logged value: `timestamp value [step]` per line."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        key = path.relative_to(folder).as_posix()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            try:
                value = float(parts[1])
                yield key, value, int(parts[0]), int(parts[2]) if len(parts) > 2 else 0
            except ValueError:
                continue


def _meta_int(meta: Path, field: str) -> int | None:
    for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            try:
                return int(value.strip().strip("'\""))
            except ValueError:
                return None
    return None


def replay_node_runs(client: MlflowClient, stage_run_id: str, experiment_id: str,
                     captured: Sequence[dict[str, Any]]) -> None:
    """Log each captured attempt into the stage's run (once: a replayed attempt is tagged)."""
    done = client.get_run(stage_run_id).data.tags
    for capture in captured:
        marker = REPLAYED_TAG_PREFIX + Path(capture["key"]).parent.name
        if marker in done:
            continue
        ids: dict[str, str] = {}
        for run in capture["runs"]:
            target = _target_run(client, run, stage_run_id, experiment_id, ids)
            ids[run["run_id"]] = target
            _log_run(client, target, run)
        client.set_tag(stage_run_id, marker, "replayed")


def _target_run(client: MlflowClient, run: dict[str, Any], stage_run_id: str, experiment_id: str,
                ids: dict[str, str]) -> str:
    """The stage's run for the run the node was given, else a new child run (of its replayed parent)."""
    if run["run_id"] == stage_run_id:
        return stage_run_id
    parent = ids.get(run.get("parent") or "", stage_run_id)
    created = client.create_run(experiment_id, start_time=run.get("start_time"), run_name=run.get("run_name"),
                                tags={PARENT_TAG: parent, "skyflow.kind": "node_run"})
    new_id = str(created.info.run_id)
    from mlflow.entities import RunStatus

    end = run.get("end_time") or max((m[2] for m in run["metrics"]), default=run.get("start_time"))
    client._tracking_client.store.update_run_info(new_id, RunStatus.FINISHED, end, None)
    return new_id


def _log_run(client: MlflowClient, run_id: str, run: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    logged = client.get_run(run_id).data.params
    params = [Param(clean_key(k), cut(v, MAX_PARAM_VALUE)) for k, v in run["params"].items()
              if clean_key(k) not in logged]  # a param cannot change; an earlier attempt's value stays
    tags = [RunTag(clean_key(k), cut(v, MAX_TAG_VALUE)) for k, v in run["tags"].items()
            if not k.startswith("mlflow.") or k in _KEEP_MLFLOW_TAGS]
    metrics = [Metric(clean_key(k), v, ts, step) for k, v, ts, step in run["metrics"]]
    for chunk in _chunks(params, _BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tags, _BATCH_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(metrics, _BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)
    if run.get("artifacts") and Path(run["artifacts"]).is_dir():
        client.log_artifacts(run_id, run["artifacts"])


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
