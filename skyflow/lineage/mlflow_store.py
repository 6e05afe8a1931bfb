"""The MLflow layout of lineage: experiments, parent and child runs, params, metrics, tags, datasets.

One experiment per pipeline (tagged `skyflow.pipeline`); one parent run per pipeline run (tag
`skyflow.run_id`); one nested child run per stage (`mlflow.parentRunId`). Inputs and outputs are
MLflow datasets told apart by the standard `mlflow.data.context` input tag (`input` / `output`),
so `dataset.digest = '...' AND dataset.context = 'output'` finds the stage that wrote an artifact.

Every call here is synchronous and assumes its strings were scrubbed already; MlflowRecorder adds
the buffering. mlflow is imported only when a MlflowStore is made.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from skyflow.artifacts.record import ArtifactRecord
from skyflow.lineage.records import RunInfo, StageRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

TAG_KIND = "skyflow.kind"  # "pipeline_run" or "stage_run"
TAG_RUN_ID = "skyflow.run_id"
TAG_PIPELINE = "skyflow.pipeline"
TAG_STAGE = "skyflow.stage"
TAG_OUTPUT_URIS = "skyflow.output_uris"
CONTEXT_TAG = "mlflow.data.context"
PARENT_TAG = "mlflow.parentRunId"
# Tags of the pipeline run copied onto each stage run, so one stage run tells its whole story.
RUN_TAGS_ON_STAGES = (
    TAG_PIPELINE,
    "skyflow.pipeline_digest",
    "skyflow.git_commit",
    "skyflow.git_dirty",
    "skyflow.version",
    "mlflow.source.git.commit",
)

# MLflow's limits (mlflow/utils/validation.py).
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_DATASET_DIGEST = 36
_KEY_BAD_CHARS = re.compile(r"[^\w\-. /:]")

STATUS_BY_STATE = {
    "succeeded": "FINISHED",
    "cached": "FINISHED",
    "failed": "FAILED",
    "cancelled": "KILLED",
    "skipped": "KILLED",
    "running": "RUNNING",
    "pending": "SCHEDULED",
}


class RecordRejected(Exception):
    """The store will never accept this record as it is; sending it again cannot help."""


def is_rejection(exc: BaseException) -> bool:
    """True for errors that retrying cannot fix (bad values), False for an unreachable store."""
    if isinstance(exc, RecordRejected):
        return True
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE"


def dataset_digest(digest: str) -> str:
    """The form of an artifact digest MLflow can hold (36 chars): no `algo:` prefix, cut to fit."""
    return digest.split(":", 1)[-1][:MAX_DATASET_DIGEST]


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for other stores and `:memory:`."""
    parsed = urlparse(tracking_uri)
    # sqlite:///rel.db has path "/rel.db", sqlite:////abs/x.db has "//abs/x.db".
    if parsed.scheme != "sqlite" or parsed.path in ("", "/", "/:memory:"):
        return None
    return Path(parsed.path[1:])


def artifact_root_for(tracking_uri: str) -> str | None:
    """Where a sqlite store keeps artifacts: beside its database file. None: the server decides."""
    path = sqlite_path(tracking_uri)
    return None if path is None else (path.parent / "mlflow-artifacts").resolve().as_uri()


def use_write_ahead_log(db_path: Path) -> None:
    """Put a sqlite store in WAL mode (a setting kept in the file): a commit then needs no fsync of
    its own with synchronous=NORMAL, and readers never block the writer. Best effort: a store that
    is busy right now keeps its mode."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=5.0)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def _sqlite_connection_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # NORMAL is durable against a killed process in WAL mode (only power loss can drop the last
    # commits, and the lineage spool is the record of what was not yet sent).
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def tune_sqlite_engine(client: MlflowClient) -> None:
    """Apply the connection pragmas to the engine MLflow made for a sqlite store."""
    from sqlalchemy import event

    engine = getattr(client._tracking_client.store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _sqlite_connection_pragmas):
        event.listen(engine, "connect", _sqlite_connection_pragmas)
        engine.dispose()  # connections opened before the listener reconnect with it


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"prefix.a.b": "1"}`; lists and scalars become strings."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    if value is None:
        return {}
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {prefix: text}


def clean_key(key: str) -> str:
    return _KEY_BAD_CHARS.sub("_", key)[:MAX_KEY]


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _source(uri: str) -> tuple[str, str]:
    scheme = urlparse(uri).scheme
    source_type = scheme if scheme and len(scheme) > 1 else "local"  # `C:` is a drive, not a scheme
    return source_type, json.dumps({"uri": uri})


class MlflowStore:
    """Writes lineage records into one MLflow tracking store (sqlite, a server, ...)."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        db_path = sqlite_path(tracking_uri)
        if db_path is not None:
            use_write_ahead_log(db_path)
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        if db_path is not None:
            tune_sqlite_engine(self.client)
        self._artifact_root = artifact_root_for(tracking_uri)
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, _Parent] = {}

    # -- writes ---------------------------------------------------------------------------------
    def start_run(self, info: RunInfo, *, retry: bool) -> str:
        experiment_id = self._experiment(info.pipeline)
        existing = self._find_parent(experiment_id, info.run_id)
        tags = {
            TAG_KIND: "pipeline_run",
            TAG_RUN_ID: info.run_id,
            TAG_PIPELINE: info.pipeline,
            "skyflow.pipeline_digest": info.pipeline_digest,
            "skyflow.git_commit": info.git_commit or "",
            "skyflow.git_dirty": str(info.git_dirty).lower(),
            "skyflow.code_digest": info.code_digest or "",
            "skyflow.version": info.skyflow_version,
        }
        if info.git_commit:
            tags["mlflow.source.git.commit"] = info.git_commit
        if existing is None:
            run = self.client.create_run(
                experiment_id, start_time=int(info.started_at * 1000), tags=tags, run_name=info.run_id
            )
            run_id, logged_params = str(run.info.run_id), {}
        else:
            # A resumed run (or a retried event): reuse the parent; params cannot change in MLflow.
            run_id, logged_params = existing.info.run_id, existing.data.params
            self._set_status(run_id, "RUNNING")
        params = {clean_key(k): _cut(v, MAX_PARAM_VALUE) for k, v in flatten("", info.params).items()}
        self._log(run_id, params={k: v for k, v in params.items() if k not in logged_params}, tags=tags)
        if info.plan_json is not None and (existing is None or retry):
            self._log_text(run_id, json.dumps(info.plan_json, indent=2, sort_keys=True), "plan.json")
        stage_tags = {k: tags[k] for k in RUN_TAGS_ON_STAGES if k in tags}
        self._parents[info.run_id] = _Parent(run_id, experiment_id, stage_tags, fresh=existing is None)
        return run_id

    def record_stage(self, rec: StageRecord, *, log_copy: Path | None, retry: bool) -> str:
        parent = self._parent(rec.run_id)
        experiment_id = parent.experiment_id
        # A stage recorded again (resume, or a half-sent retry) replaces its earlier child run.
        stale = [] if parent.fresh and not retry else self._find_children(experiment_id, rec.run_id, rec.stage)
        tags = {
            **parent.stage_tags,
            TAG_KIND: "stage_run",
            TAG_RUN_ID: rec.run_id,
            TAG_STAGE: rec.stage,
            PARENT_TAG: parent.run_id,
            "skyflow.state": rec.state,
            "skyflow.cache_hit": str(rec.cache_hit).lower(),
            "skyflow.code_digest": rec.code_digest or "",
            "skyflow.cache_key": rec.cache_key or "",
            # Dataset sources cannot be searched; this tag lets a URI find its producer.
            TAG_OUTPUT_URIS: "\n".join(a.uri for a in rec.outputs),
        }
        run = self.client.create_run(
            experiment_id, start_time=int((time.time() - rec.duration_s) * 1000), tags=tags, run_name=rec.stage
        )
        run_id = str(run.info.run_id)
        params = {**flatten("resources", rec.resources), **flatten("placement", rec.placement)}
        self._log(
            run_id,
            params={clean_key(k): _cut(v, MAX_PARAM_VALUE) for k, v in params.items()},
            metrics=self._stage_metrics(rec),
        )
        datasets = [(a, "input") for a in rec.inputs] + [(a, "output") for a in rec.outputs]
        if datasets:
            self._log_datasets(run_id, datasets)
        if log_copy is not None:
            self._log_file(run_id, run.info.artifact_uri, log_copy, "logs")
        self._set_status(run_id, STATUS_BY_STATE.get(rec.state, "FINISHED"))
        for old in stale:
            if old.info.run_id != run_id:
                self.client.delete_run(old.info.run_id)
        return run_id

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        parent_id = self._parent(run_id).run_id
        metrics = {
            clean_key(f"total_{k}"): float(v)
            for k, v in totals.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        tags = {
            clean_key(f"skyflow.total.{k}"): _cut(str(v), MAX_TAG_VALUE)
            for k, v in totals.items()
            if not (isinstance(v, int | float) and not isinstance(v, bool))
        }
        tags["skyflow.state"] = state
        self._log(parent_id, metrics=metrics, tags=tags)
        self._set_status(parent_id, STATUS_BY_STATE.get(state, "FINISHED"))

    # -- helpers --------------------------------------------------------------------------------
    def _set_status(self, run_id: str, status: str) -> None:
        """Set a run's status (and end time, once it is final) in one call.

        Not `MlflowClient.set_terminated`: against a server that fetches the run again and writes
        "View run ... at" to stdout, which belongs to the runner's progress display.
        """
        from mlflow.entities import RunStatus

        final = RunStatus.is_terminated(RunStatus.from_string(status))
        self.client._tracking_client.store.update_run_info(
            run_id, RunStatus.from_string(status), int(time.time() * 1000) if final else None, None
        )

    def _stage_metrics(self, rec: StageRecord) -> dict[str, float]:
        metrics: dict[str, float | None] = {
            "duration_s": rec.duration_s,
            "estimated_usd": rec.estimated_usd,
            "actual_usd": rec.actual_usd,
            "egress_gb": rec.egress_gb,
            "egress_usd": rec.egress_usd,
            "attempts": rec.attempts,
            "retries": max(0, rec.attempts - 1),
            "cache_hit": 1.0 if rec.cache_hit else 0.0,
        }
        for kind, artifacts in (("input", rec.inputs), ("output", rec.outputs)):
            for artifact in artifacts:
                metrics[clean_key(f"{kind}_bytes.{artifact.name}")] = artifact.size_bytes
        return {k: float(v) for k, v in metrics.items() if v is not None}

    def _log(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, v) for k, v in (params or {}).items()],
            tags=[RunTag(k, _cut(v, MAX_TAG_VALUE)) for k, v in (tags or {}).items()],
        )

    def _log_datasets(self, run_id: str, datasets: list[tuple[ArtifactRecord, str]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entries = []
        for artifact, context in datasets:
            source_type, source = _source(artifact.uri)
            profile = json.dumps({"digest": artifact.digest, "size_bytes": artifact.size_bytes})
            dataset = Dataset(
                name=artifact.name,
                digest=dataset_digest(artifact.digest),
                source_type=source_type,
                source=source,
                profile=profile,
            )
            entries.append(DatasetInput(dataset, [InputTag(CONTEXT_TAG, context)]))
        self.client.log_inputs(run_id, entries)

    def _log_file(self, run_id: str, artifact_uri: str | None, path: Path, artifact_path: str) -> None:
        """A local artifact root takes a plain copy (no lookup of the run); others go through MLflow."""
        parsed = urlparse(artifact_uri or "")
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
            return
        target = Path(url2pathname(parsed.path)) / artifact_path
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)

    def _log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="skyflow-lineage-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def _experiment(self, pipeline: str) -> str:
        if pipeline in self._experiments:
            return self._experiments[pipeline]
        experiment = self.client.get_experiment_by_name(pipeline)
        if experiment is None:
            from mlflow.exceptions import MlflowException

            try:
                experiment_id = self.client.create_experiment(
                    pipeline, artifact_location=self._artifact_root, tags={TAG_PIPELINE: pipeline}
                )
            except MlflowException:
                # Another runner made it in the meantime.
                found = self.client.get_experiment_by_name(pipeline)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
        self._experiments[pipeline] = experiment_id
        return experiment_id

    def _find_parent(self, experiment_id: str, skyflow_run_id: str) -> Run | None:
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{TAG_KIND}` = 'pipeline_run' AND tags.`{TAG_RUN_ID}` = '{quote_filter_value(skyflow_run_id)}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def _find_children(self, experiment_id: str, skyflow_run_id: str, stage: str) -> list[Run]:
        return list(
            self.client.search_runs(
                [experiment_id],
                f"tags.`{TAG_KIND}` = 'stage_run' AND tags.`{TAG_RUN_ID}` = '{quote_filter_value(skyflow_run_id)}'"
                f" AND tags.`{TAG_STAGE}` = '{quote_filter_value(stage)}'",
                max_results=100,
            )
        )

    def _parent(self, skyflow_run_id: str) -> _Parent:
        if skyflow_run_id in self._parents:
            return self._parents[skyflow_run_id]
        runs = self.client.search_runs(
            self._skyflow_experiment_ids(),
            f"tags.`{TAG_KIND}` = 'pipeline_run' AND tags.`{TAG_RUN_ID}` = '{quote_filter_value(skyflow_run_id)}'",
            max_results=1,
        )
        if not runs:
            raise RecordRejected(
                f"no MLflow run is tagged {TAG_RUN_ID}={skyflow_run_id!r}: start_run was never recorded"
            )
        tags = {k: v for k, v in runs[0].data.tags.items() if k in RUN_TAGS_ON_STAGES}
        parent = _Parent(runs[0].info.run_id, runs[0].info.experiment_id, tags, fresh=False)
        self._parents[skyflow_run_id] = parent
        return parent

    def _skyflow_experiment_ids(self) -> list[str]:
        return skyflow_experiment_ids(self.client)


@dataclass(frozen=True)
class _Parent:
    """A pipeline run's MLflow run; `fresh` if this store made it (so it has no stage runs yet)."""

    run_id: str
    experiment_id: str
    stage_tags: dict[str, str]
    fresh: bool


def skyflow_experiment_ids(client: MlflowClient) -> list[str]:
    """Ids of every experiment skyflow made (tagged `skyflow.pipeline`)."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(
            filter_string=f"tags.`{TAG_PIPELINE}` != ''", max_results=1000, page_token=token
        )
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def quote_filter_value(value: str) -> str:
    """Escape a value for an MLflow search filter's single-quoted string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
