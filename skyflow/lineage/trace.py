"""Answer "where did this artifact come from?" from MLflow: the stage run that wrote it, recursively.

An artifact is found by its digest (`dataset.digest`, a prefix of 6+ characters works) or by its
URI (the `skyflow.output_uris` tag of stage runs). Inputs are traced by digest, preferring a
current stage run (not one a resume superseded), then a producer in the same pipeline run, then one
that really ran (not a cache hit), then the newest.
An input that no stage wrote is raw data: a leaf.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyflow.artifacts.record import ArtifactRecord
from skyflow.errors import LineageError
from skyflow.lineage.mlflow_client import sqlite_file
from skyflow.lineage.mlflow_names import (
    MAX_DATASET_DIGEST,
    PARENT_TAG,
    TAG_PIPELINE,
    TAG_RUN_ID,
    TAG_STAGE,
    TAG_SUPERSEDED_BY,
    dataset_digest,
)
from skyflow.lineage.records import LineageNode, Producer
from skyflow.lineage.store_reader import DatasetEntry, LineageReader, StageRunView, open_reader, reading

MIN_DIGEST_PREFIX = 6
MAX_DEPTH = 64


def trace_artifact(tracking_uri: str, uri_or_digest: str, *, max_depth: int = MAX_DEPTH) -> LineageNode:
    """The lineage tree of one artifact, back to raw data. Raises LineageError if it is unknown.

    A sqlite store is read directly (no MLflow import); any other store through the MLflow client."""
    from skyflow.lineage.recorder import describe_tracking

    if sqlite_file(tracking_uri) is None:
        from skyflow.lineage.recorder import check_tracking_uri

        check_tracking_uri(tracking_uri)
    from skyflow.lineage.mlflow_client import store_failures_as_lineage_errors

    where = describe_tracking(tracking_uri)
    with store_failures_as_lineage_errors(where), reading(open_reader(tracking_uri)) as reader:
        node = _trace(reader, uri_or_digest, max_depth, where)
    if node is None:
        raise LineageError(
            f"no skyflow stage in {where} wrote an artifact "
            f"{'with digest' if is_digest(uri_or_digest) else 'at'} {uri_or_digest!r}. "
            "Pass the URI or digest shown by `skyflow status RUN --json` (a digest prefix of "
            f"{MIN_DIGEST_PREFIX}+ characters works)."
        )
    return node


def _trace(reader: LineageReader, uri_or_digest: str, max_depth: int, where: str) -> LineageNode | None:
    experiments = reader.experiment_ids()
    if not experiments:
        raise LineageError(f"{where} holds no skyflow runs yet.")
    tracer = _Tracer(reader, experiments, max_depth)
    if is_digest(uri_or_digest):
        return tracer.by_digest(uri_or_digest, context_run=None, depth=0, seen=frozenset())
    return tracer.by_uri(uri_or_digest)


def is_digest(text: str) -> bool:
    """A digest (`sha256:ab12...` or bare hex) rather than a URI or a path."""
    return "/" not in text and "\\" not in text and not Path(text).exists()


class _Tracer:
    def __init__(self, reader: LineageReader, experiments: list[str], max_depth: int) -> None:
        self.reader = reader
        self.experiments = experiments
        self.max_depth = max_depth

    def by_digest(
        self, digest: str, *, context_run: str | None, depth: int, seen: frozenset[str]
    ) -> LineageNode | None:
        short = dataset_digest(digest)
        if len(short) < MIN_DIGEST_PREFIX:
            raise LineageError(f"digest {digest!r} is too short: give at least {MIN_DIGEST_PREFIX} characters.")
        runs = self.reader.runs_with_digest(self.experiments, short, prefix=len(short) != MAX_DATASET_DIGEST)
        found = self._best(runs, lambda d: dataset_digest(_full_digest(d)).startswith(short), context_run)
        if found is None:
            return None
        return self._node(*found, depth=depth, seen=seen)

    def by_uri(self, uri: str) -> LineageNode | None:
        candidates = {uri}
        path = Path(uri)
        if path.exists():
            candidates |= {str(path.resolve()), path.resolve().as_uri()}
        for candidate in candidates:
            runs = self.reader.runs_with_output_uri(self.experiments, candidate)
            found = self._best(runs, _at_uri(candidate), None)
            if found is not None:
                return self._node(*found, depth=0, seen=frozenset())
        return None

    def _best(
        self, runs: list[StageRunView], matches: Callable[[DatasetEntry], bool], context_run: str | None
    ) -> tuple[StageRunView, DatasetEntry] | None:
        hits = [(run, d) for run in runs for d in _datasets(run, "output") if matches(d)]
        if not hits:
            return None

        def rank(hit: tuple[StageRunView, DatasetEntry]) -> tuple[bool, bool, bool, int]:
            tags = hit[0].tags
            current = TAG_SUPERSEDED_BY not in tags
            same_run = context_run is not None and tags.get(PARENT_TAG) == context_run
            ran = tags.get("skyflow.cache_hit") != "true"
            return (current, same_run, ran, hit[0].start_time or 0)

        return max(hits, key=rank)

    def _node(self, run: StageRunView, dataset: DatasetEntry, *, depth: int, seen: frozenset[str]) -> LineageNode:
        artifact = _artifact(dataset)
        producer = _producer(run)
        if artifact.digest in seen:
            return LineageNode(artifact, producer, note="cycle: this artifact is its own ancestor")
        if depth >= self.max_depth:
            return LineageNode(artifact, producer, note=f"stopped at depth {self.max_depth}")
        seen = seen | {artifact.digest}
        inputs = []
        for input_dataset in _datasets(run, "input"):
            child = self.by_digest(_full_digest(input_dataset), context_run=run.tags.get(PARENT_TAG),
                                   depth=depth + 1, seen=seen)
            inputs.append(child or LineageNode(_artifact(input_dataset), None))
        return LineageNode(artifact, producer, tuple(inputs))


def _at_uri(uri: str) -> Callable[[DatasetEntry], bool]:
    return lambda dataset: _uri(dataset) == uri


def _datasets(run: StageRunView, context: str) -> list[DatasetEntry]:
    return [d for d in run.datasets if d.context == context]


def _profile(dataset: DatasetEntry) -> dict[str, Any]:
    try:
        profile = json.loads(dataset.profile or "{}")
    except json.JSONDecodeError:
        return {}
    return profile if isinstance(profile, dict) else {}


def _full_digest(dataset: DatasetEntry) -> str:
    return str(_profile(dataset).get("digest") or dataset.digest)


def _uri(dataset: DatasetEntry) -> str:
    try:
        return str(json.loads(dataset.source).get("uri", dataset.source))
    except (json.JSONDecodeError, AttributeError):
        return str(dataset.source)


def _artifact(dataset: DatasetEntry) -> ArtifactRecord:
    size = _profile(dataset).get("size_bytes")
    return ArtifactRecord(dataset.name, _uri(dataset), _full_digest(dataset), int(size) if size is not None else None)


def _producer(run: StageRunView) -> Producer:
    tags = run.tags
    dirty = tags.get("skyflow.git_dirty")
    return Producer(
        run_id=tags.get(TAG_RUN_ID, ""),
        pipeline=tags.get(TAG_PIPELINE, ""),
        stage=tags.get(TAG_STAGE, run.run_name or ""),
        state=tags.get("skyflow.state", ""),
        cache_hit=tags.get("skyflow.cache_hit") == "true",
        code_digest=tags.get("skyflow.code_digest") or None,
        git_commit=tags.get("skyflow.git_commit") or None,
        git_dirty=None if dirty is None else dirty == "true",
        started_at=run.start_time / 1000 if run.start_time else None,
        mlflow_run_id=run.run_id,
        mlflow_experiment_id=run.experiment_id,
    )
