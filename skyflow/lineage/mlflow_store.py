"""The MLflow layout of lineage: experiments, parent and child runs, params, metrics, tags, datasets.

One experiment per pipeline (tagged `skyflow.pipeline`, shown in the UI's model-training view); one
parent run per pipeline run (tags `skyflow.run_id` and `skyflow.run_key`); one nested child run per
stage (`mlflow.parentRunId`), opened when the stage starts so that the stage's own MLflow calls land
in it. Inputs and outputs are MLflow datasets told apart by the standard `mlflow.data.context` input
tag (`input` / `output`), so `dataset.digest = '...' AND dataset.context = 'output'` finds the stage
that wrote an artifact. Nothing here deletes a run: a stage recorded again (a resume) leaves its
earlier run tagged `skyflow.superseded_by`.

Every call here is synchronous and assumes its strings were scrubbed already; MlflowRecorder adds
the buffering. mlflow is imported only when a MlflowStore is made.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from skyflow.artifacts.record import ArtifactRecord
from skyflow.lineage.mlflow_client import artifact_root_for, open_client
from skyflow.lineage.mlflow_names import (
    CONTEXT_TAG,
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    PARENT_TAG,
    TAG_KIND,
    TAG_OPENED_EARLY,
    TAG_OUTPUT_URIS,
    TAG_PIPELINE,
    TAG_RUN_ID,
    TAG_RUN_KEY,
    TAG_STAGE,
    TAG_SUPERSEDED_BY,
    clean_key,
    cut,
    dataset_digest,
    flatten,
    quote_filter_value,
    source_of,
)
from skyflow.lineage.mlflow_outputs import log_declared_outputs
from skyflow.lineage.node_replay import replay_node_runs
from skyflow.lineage.records import RunInfo, StageRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

# Tags of the pipeline run copied onto each stage run, so one stage run tells its whole story.
RUN_TAGS_ON_STAGES = (
    TAG_PIPELINE,
    TAG_RUN_KEY,
    "skyflow.pipeline_digest",
    "skyflow.git_commit",
    "skyflow.git_dirty",
    "skyflow.version",
    "mlflow.source.git.commit",
    "mlflow.user",
    "mlflow.source.name",
    "mlflow.source.type",
)
# The UI opens an experiment of this kind on its model-training view (runs, charts), not on traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

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


@dataclass(frozen=True)
class ParentRun:
    """A pipeline run's MLflow run; `fresh` if this store made it (so it has no stage runs yet)."""

    run_id: str
    experiment_id: str
    stage_tags: dict[str, str]
    fresh: bool


class MlflowStore:
    """Writes lineage records into one MLflow tracking store (sqlite, a server, ...).

    `open_stage` may be called from stage threads while another thread sends records: the parent
    runs it needs are kept under a lock.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client: MlflowClient = open_client(tracking_uri)
        self._artifact_root = artifact_root_for(tracking_uri)
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, ParentRun] = {}
        self._lock = threading.Lock()

    # -- writes ---------------------------------------------------------------------------------
    def start_run(self, info: RunInfo, *, retry: bool) -> ParentRun:
        """The pipeline run's parent run: the one this run made before (a resume), the one a stage
        opened early for it (`SqliteRunOpener`, tagged `skyflow.opened_early`), else a new one."""
        experiment_id = self._experiment(info.pipeline)
        key = info.run_key or info.run_id
        existing = self._find_parent([experiment_id], key, by_key=bool(info.run_key))
        early = existing is not None and existing.data.tags.get(TAG_OPENED_EARLY) == "1"
        tags = pipeline_run_tags(info)
        if existing is None or early:
            mine = existing.info.run_id if existing is not None else None
            earlier = [r for r in self._same_run_id(experiment_id, info.run_id) if r != mine]
            if earlier:
                # Another machine (or SKYFLOW_HOME) used this run id: keep both, never merge.
                tags["skyflow.run_id_used_before_by"] = ",".join(earlier)
                log.warning("lineage: run id %r is already in MLflow (run %s); this run gets its own MLflow run",
                            info.run_id, ", ".join(earlier))
        if existing is None:
            run = self.client.create_run(
                experiment_id, start_time=int(info.started_at * 1000), tags=tags, run_name=info.run_id
            )
            run_id, logged_params = str(run.info.run_id), {}
        else:
            # A resumed run (or a retried event): the same parent; params cannot change in MLflow.
            run_id, logged_params = existing.info.run_id, existing.data.params
            ended = existing.info.end_time
            if not early and (ended is None or int(info.started_at * 1000) >= ended):
                self._set_status(run_id, "RUNNING")  # not for a start older than a recorded end
        params = {clean_key(k): cut(v, MAX_PARAM_VALUE) for k, v in flatten("", info.params).items()}
        self._log(run_id, params={k: v for k, v in params.items() if k not in logged_params}, tags=tags)
        if info.plan_json is not None and (existing is None or early or retry):
            self._log_text(run_id, json.dumps(info.plan_json, indent=2, sort_keys=True), "plan.json")
        if early:
            self.client.delete_tag(run_id, TAG_OPENED_EARLY)
        stage_tags = {k: tags[k] for k in (*RUN_TAGS_ON_STAGES, TAG_RUN_ID) if k in tags}
        parent = ParentRun(run_id, experiment_id, stage_tags, fresh=existing is None or early)
        with self._lock:
            self._parents[key] = parent
        return parent

    def open_stage(self, run_key: str, stage: str, started_at: float) -> str:
        """A RUNNING child run for a stage that starts now; returns its MLflow run id."""
        parent = self._parent(run_key)
        tags = {**self._stage_tags(parent, stage), "skyflow.state": "running"}
        run = self.client.create_run(
            parent.experiment_id, start_time=int(started_at * 1000), tags=tags, run_name=stage
        )
        return str(run.info.run_id)

    def record_stage(self, rec: StageRecord, *, log_copy: Path | None, retry: bool,
                     node_runs: Sequence[dict[str, Any]] = ()) -> str:
        """The stage's run, completed: tags, params, metrics, datasets, its log, what a remote node
        logged where it could not reach the store (`node_runs`), declared outputs, final status."""
        key = rec.run_key or rec.run_id
        parent = self._parent(key)
        tags = {
            **self._stage_tags(parent, rec.stage),
            "skyflow.state": rec.state,
            "skyflow.cache_hit": str(rec.cache_hit).lower(),
            "skyflow.code_digest": rec.code_digest or "",
            "skyflow.cache_key": rec.cache_key or "",
            # Dataset sources cannot be searched; this tag lets a URI find its producer.
            TAG_OUTPUT_URIS: "\n".join(a.uri for a in rec.outputs),
        }
        if rec.record_id:
            tags["skyflow.record_id"] = rec.record_id
        run = self._stage_run(parent, rec, tags, retry=retry)
        run_id = str(run.info.run_id)
        params = {**flatten("resources", rec.resources), **flatten("placement", rec.placement)}
        logged = run.data.params
        params = {clean_key(k): cut(v, MAX_PARAM_VALUE) for k, v in params.items()}
        self._log(run_id, params={k: v for k, v in params.items() if k not in logged},
                  metrics=self._stage_metrics(rec), tags=tags)
        datasets = [(a, "input") for a in rec.inputs] + [(a, "output") for a in rec.outputs]
        if datasets:
            self._log_datasets(run_id, datasets)
        if log_copy is not None:
            self._log_file(run_id, run.info.artifact_uri, log_copy, "logs")
        if node_runs:
            replay_node_runs(self.client, run_id, parent.experiment_id, node_runs)
        if rec.declared and rec.state in ("succeeded", "cached"):
            log_declared_outputs(self.client, run_id, rec, parent.stage_tags.get(TAG_PIPELINE, ""))
        ended_at = rec.ended_at or time.time()
        self._set_status(run_id, STATUS_BY_STATE.get(rec.state, "FINISHED"), end_time_s=ended_at)
        if not parent.fresh or retry:
            self._supersede(parent, rec.stage, run_id)
        return run_id

    def end_run(self, run_key: str, state: str, totals: dict[str, Any], *, ended_at: float | None = None) -> None:
        """The pipeline run's end: its state, totals and end time. An end older than the one recorded
        is dropped: records of a run and of its resume may be sent by two processes (each run's
        background drain), and the later end must win whichever arrives last."""
        parent_id = self._parent(run_key).run_id
        end_time_s = ended_at or time.time()
        recorded = self.client.get_run(parent_id).info.end_time
        if recorded is not None and recorded > int(end_time_s * 1000):
            return
        metrics = {
            clean_key(f"total_{k}"): float(v)
            for k, v in totals.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        tags = {
            clean_key(f"skyflow.total.{k}"): cut(str(v), MAX_TAG_VALUE)
            for k, v in totals.items()
            if not (isinstance(v, int | float) and not isinstance(v, bool))
        }
        tags["skyflow.state"] = state
        self._log(parent_id, metrics=metrics, tags=tags)
        self._set_status(parent_id, STATUS_BY_STATE.get(state, "FINISHED"), end_time_s=end_time_s)

    # -- runs -------------------------------------------------------------------------------------
    @staticmethod
    def _stage_tags(parent: ParentRun, stage: str) -> dict[str, str]:
        return stage_run_tags(parent.stage_tags, parent.run_id, stage)

    def _stage_run(self, parent: ParentRun, rec: StageRecord, tags: dict[str, str], *, retry: bool) -> Run:
        """The stage's run: the one opened when it started, the one a first send of this record made,
        else a new one (the store was away when the stage started, or it never ran: a cache hit)."""
        from mlflow.exceptions import MlflowException

        if rec.mlflow_run_id:
            try:
                return self.client.get_run(rec.mlflow_run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        if retry and rec.record_id:
            found = self.client.search_runs(
                [parent.experiment_id],
                f"tags.`{PARENT_TAG}` = '{parent.run_id}' AND tags.`skyflow.record_id` = '{rec.record_id}'",
                max_results=1,
            )
            if found:
                return found[0]
        started_at = rec.started_at or rec.ended_at or time.time()
        return self.client.create_run(
            parent.experiment_id, start_time=int(started_at * 1000), tags=tags, run_name=rec.stage
        )

    def _supersede(self, parent: ParentRun, stage: str, current: str) -> None:
        """Tag the stage's earlier runs under this parent (an earlier attempt of a resumed run)."""
        runs = self.client.search_runs(
            [parent.experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent.run_id}' AND tags.`{TAG_STAGE}` = '{quote_filter_value(stage)}'",
            max_results=1000,
        )
        for run in runs:
            if run.info.run_id != current and TAG_SUPERSEDED_BY not in run.data.tags:
                self.client.set_tag(run.info.run_id, TAG_SUPERSEDED_BY, current)

    def _set_status(self, run_id: str, status: str, *, end_time_s: float | None = None) -> None:
        """Set a run's status (and end time, once it is final) in one call.

        Not `MlflowClient.set_terminated`: against a server that fetches the run again and writes
        "View run ... at" to stdout, which belongs to the runner's progress display.
        """
        from mlflow.entities import RunStatus

        final = RunStatus.is_terminated(RunStatus.from_string(status))
        end_time = int((end_time_s or time.time()) * 1000) if final else None
        self.client._tracking_client.store.update_run_info(run_id, RunStatus.from_string(status), end_time, None)

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
            tags=[RunTag(k, cut(v, MAX_TAG_VALUE)) for k, v in (tags or {}).items()],
        )

    def _log_datasets(self, run_id: str, datasets: list[tuple[ArtifactRecord, str]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entries = []
        for artifact, context in datasets:
            source_type, source = source_of(artifact.uri)
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

    # -- lookups ----------------------------------------------------------------------------------
    def _experiment(self, pipeline: str) -> str:
        if pipeline in self._experiments:
            return self._experiments[pipeline]
        experiment = self.client.get_experiment_by_name(pipeline)
        if experiment is None:
            from mlflow.exceptions import MlflowException

            try:
                experiment_id = self.client.create_experiment(
                    pipeline, artifact_location=self._artifact_root, tags=pipeline_experiment_tags(pipeline))
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
            if EXPERIMENT_KIND_TAG not in experiment.tags and TAG_PIPELINE in experiment.tags:
                self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        self._experiments[pipeline] = experiment_id
        return experiment_id

    def _find_parent(self, experiment_ids: list[str], key: str, *, by_key: bool) -> Run | None:
        tag = TAG_RUN_KEY if by_key else TAG_RUN_ID
        runs = self.client.search_runs(
            experiment_ids,
            f"tags.`{TAG_KIND}` = 'pipeline_run' AND tags.`{tag}` = '{quote_filter_value(key)}'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0] if runs else None

    def _same_run_id(self, experiment_id: str, run_id: str) -> list[str]:
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{TAG_KIND}` = 'pipeline_run' AND tags.`{TAG_RUN_ID}` = '{quote_filter_value(run_id)}'",
            max_results=20,
        )
        return [r.info.run_id for r in runs]

    def parent_of(self, key: str) -> ParentRun:
        return self._parent(key)

    def _parent(self, key: str) -> ParentRun:
        """The parent run of a run key (or, for records spooled before keys, a run id)."""
        with self._lock:
            if key in self._parents:
                return self._parents[key]
        experiments = skyflow_experiment_ids(self.client)
        found = self._find_parent(experiments, key, by_key=True) or self._find_parent(experiments, key, by_key=False)
        if found is None:
            raise RecordRejected(f"no MLflow run is tagged {TAG_RUN_KEY} or {TAG_RUN_ID} = {key!r}: "
                                 "start_run was never recorded")
        tags = {k: v for k, v in found.data.tags.items() if k in (*RUN_TAGS_ON_STAGES, TAG_RUN_ID)}
        parent = ParentRun(found.info.run_id, found.info.experiment_id, tags, fresh=False)
        with self._lock:
            self._parents[key] = parent
        return parent


def pipeline_experiment_tags(pipeline: str) -> dict[str, str]:
    """The tags of a pipeline's experiment: whose it is, and the UI's model-training view."""
    return {TAG_PIPELINE: pipeline, EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}


def pipeline_run_tags(info: RunInfo) -> dict[str, str]:
    """The tags of a pipeline run's parent run."""
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
    standard = {
        TAG_RUN_KEY: info.run_key,
        "mlflow.source.git.commit": info.git_commit,
        "mlflow.user": info.user,
        "mlflow.source.name": info.source_name,
        "mlflow.source.type": info.source_type,
    }
    tags.update({k: v for k, v in standard.items() if v})
    return tags


def stage_run_tags(parent_tags: dict[str, str], parent_run_id: str, stage: str) -> dict[str, str]:
    """The tags of a stage's run: the parent's tags every stage carries, its stage, its parent."""
    return {**{k: parent_tags[k] for k in (*RUN_TAGS_ON_STAGES, TAG_RUN_ID) if k in parent_tags},
            TAG_KIND: "stage_run", TAG_STAGE: stage, PARENT_TAG: parent_run_id}


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
