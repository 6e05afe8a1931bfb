"""The runner's use of artifacts: import external inputs, fetch inputs, commit outputs, cache."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyflow.artifacts import (
    ArtifactRecord,
    ArtifactRef,
    ArtifactStore,
    CacheIndex,
    build_manifest,
    code_digest,
    commit_output,
    fetch_artifact,
    open_store,
    stage_cache_key,
    transfer_artifact,
)
from skyflow.errors import ArtifactError
from skyflow.runner.state import RunStore
from skyflow.spec.graph import ResolvedPipeline, is_uri


def store_for_infra(pipeline: ResolvedPipeline, infra: str, home: Path,
                    located_at: str | None = None) -> tuple[str, bool, str | None]:
    """(store URI, create if missing, region) for a stage placed at ``infra``.

    `stores:` may name a cloud/region or a cloud; the local machine, SSH pools and anything
    unnamed use the `local` store. ``located_at`` is where the placement's machines live when its
    name does not say (a Kubernetes context's `infra:`, e.g. aws/us-east-1 for an EKS cluster); it is
    tried after ``infra`` itself. A bucket is created only where the user allowed it.
    """
    for where in (infra, located_at) if located_at else (infra,):
        parts = where.split("/")
        cloud, region = parts[0], parts[1] if len(parts) > 1 and parts[1] != "*" else None
        for key in ([f"{cloud}/{region}"] if region else []) + [cloud]:
            spec = pipeline.spec.stores.get(key)
            if spec is not None and cloud not in ("local", "ssh"):
                return spec.uri, spec.create, region
    local = pipeline.spec.stores.get("local")
    return local_store_uri(pipeline, home), bool(local and local.create), None


def stage_code_dir(pipeline: ResolvedPipeline, name: str) -> Path | None:
    """The folder whose files enter a stage's cache key: its `workdir:`, None when it has none."""
    workdir = pipeline.stages[name].workdir
    if not isinstance(workdir, str):
        return None
    return _in_pipeline_dir(pipeline, workdir)


def predict_cached_copies(pipeline: ResolvedPipeline, state: RunStore, home: Path,
                          environ: Mapping[str, str]) -> dict[str, list[tuple[str, float]]]:
    """Stages whose outputs an earlier run left in one of this pipeline's stores, checked still there:
    stage -> [(location, size in GB)], the location being the `stores:` key (`local` for the local store).

    Cache keys are computed as the runner computes them, in topological order. Input digests are
    known for local pipeline inputs (hashed in place, nothing copied) and for the outputs of
    upstream stages predicted cached; a stage with any other input is not predicted.
    """
    params = dict(pipeline.spec.params)
    names = list(pipeline.spec.secrets) + [n for st in pipeline.stages.values() for n in st.secrets]
    secret_names = [n for n in names if environ.get(n)]
    locations = _store_locations(pipeline, home)
    external: dict[str, str | None] = {}
    known: dict[str, dict[str, ArtifactRecord]] = {}
    found: dict[str, list[tuple[str, float]]] = {}
    for name in pipeline.order:
        spec = pipeline.stages[name]
        if not spec.cache or not spec.outputs:
            continue
        digests = _input_digests(pipeline, name, known, external)
        if digests is None:
            continue
        key = stage_cache_key(spec, params=params, input_digests=digests,
                              code_digest=code_digest(stage_code_dir(pipeline, name)), secret_names=secret_names)
        rows = state.outputs_for_cache_key(key)
        if not rows or set(rows) != set(spec.outputs):
            continue
        uris = {(row.store_uri or "").rstrip("/") for row in rows.values()}
        location = locations.get(next(iter(uris))) if len(uris) == 1 else None
        if location is None or not _still_there(rows):
            continue
        known[name] = rows
        found[name] = [(location, sum(row.size_bytes or 0 for row in rows.values()) / 1e9)]
    return found


def _store_locations(pipeline: ResolvedPipeline, home: Path) -> dict[str, str]:
    """Store URI -> the planner location whose stages write there (as `store_for_infra` picks stores)."""
    out = {}
    for key, spec in pipeline.spec.stores.items():
        cloud = key.split("/")[0]
        if cloud not in ("local", "ssh"):
            out[spec.uri.rstrip("/")] = key if "/" in key else f"{key}/*"
    out[local_store_uri(pipeline, home).rstrip("/")] = "local"
    return out


def _input_digests(pipeline: ResolvedPipeline, name: str, known: Mapping[str, Mapping[str, ArtifactRecord]],
                   external: dict[str, str | None]) -> dict[str, str] | None:
    digests = {}
    for edge in pipeline.inputs_of(name):
        if edge.kind == "stage":
            row = known.get(edge.producer or "", {}).get(edge.artifact)
            digest = row.digest if row is not None else None
        else:
            if edge.artifact not in external:
                external[edge.artifact] = _local_digest(external_location(pipeline, edge.artifact))
            digest = external[edge.artifact]
        if digest is None:
            return None
        digests[edge.input_name] = digest
    return digests


def _local_digest(location: str) -> str | None:
    """The digest a local input would be committed under (hashed in place); None for remote data."""
    if "://" in location or not Path(location).exists():
        return None
    manifest, _ = build_manifest(Path(location))
    return manifest.digest


def _still_there(rows: Mapping[str, ArtifactRecord]) -> bool:
    try:
        return outputs_still_there(rows)
    except (ArtifactError, OSError, ValueError, ImportError):
        return False


def local_store_uri(pipeline: ResolvedPipeline, home: Path) -> str:
    """The `local` store's URI: a relative path is taken from the pipeline's folder, as inputs' are."""
    spec = pipeline.spec.stores.get("local")
    if spec is None:
        return str(home / "artifacts")
    if "://" in spec.uri:
        return spec.uri
    return str(_in_pipeline_dir(pipeline, spec.uri))


def external_location(pipeline: ResolvedPipeline, ref: str) -> str:
    """A pipeline input's or URI's location as a local path or a remote URI."""
    uri = pipeline.spec.inputs[ref].uri if ref in pipeline.spec.inputs else ref
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return str(_in_pipeline_dir(pipeline, uri.removeprefix("file://")))


def _in_pipeline_dir(pipeline: ResolvedPipeline, path_text: str) -> Path:
    """A path as the pipeline file means it: ``~`` expanded, a relative one taken from the file's folder."""
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else Path(pipeline.base_dir) / path


def import_external(store: ArtifactStore, name: str, location: str) -> ArtifactRef:
    """Commit external data into the store so it has a digest (same bytes are stored once)."""
    if "://" not in location:
        if not Path(location).exists():
            raise ArtifactError("input data does not exist", artifact=name, uri=location)
        return commit_output(store, location, name=name)
    import fsspec

    with tempfile.TemporaryDirectory(prefix="skyflow-input-") as tmp:
        target = Path(tmp) / "data"
        try:
            fs, path = fsspec.core.url_to_fs(location)
            if fs.isdir(path):
                fs.get(path.rstrip("/") + "/", str(target), recursive=True)
            else:
                fs.get(path, str(target))
        except FileNotFoundError as exc:
            raise ArtifactError("input data does not exist", artifact=name, uri=location) from exc
        except (OSError, ValueError, ImportError) as exc:
            raise ArtifactError(f"cannot read input data: {exc}", artifact=name, uri=location) from exc
        return commit_output(store, target, name=name)


def fetch_input(ref: ArtifactRef, dest: Path) -> tuple[Path, int, float]:
    started = time.monotonic()
    path = fetch_artifact(ref, dest)
    return path, ref.size_bytes, time.monotonic() - started


def commit_outputs(store: ArtifactStore, outputs: Mapping[str, Path]) -> dict[str, ArtifactRecord]:
    records = {}
    for name, path in outputs.items():
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            raise ArtifactError("the stage wrote nothing to this output", artifact=name, uri=str(path))
        records[name] = commit_output(store, path, name=name, confined=True).record
    return records


def cache_lookup(store: ArtifactStore, key: str) -> tuple[dict[str, ArtifactRecord], str] | None:
    """The outputs of a cache hit and what was checked to call it one (see `CacheIndex.check`)."""
    found = CacheIndex(store).check(key)
    if found is None:
        return None
    return {n: r.record for n, r in found.outputs.items()}, found.checked


def cache_forget(store: ArtifactStore, key: str | None) -> None:
    """Drop a cache entry (its outputs were found damaged); a store that cannot be reached is left as it is."""
    if key:
        with contextlib.suppress(ArtifactError):
            CacheIndex(store).forget(key)


def cache_record(store: ArtifactStore, key: str, outputs: Mapping[str, ArtifactRecord]) -> None:
    CacheIndex(store).record(key, {n: ArtifactRef.open(o, store=store) for n, o in outputs.items()})


def outputs_still_there(outputs: Mapping[str, ArtifactRecord], store: ArtifactStore | None = None) -> bool:
    """Whether every output's manifest and blobs are still in its store (sizes checked, not bytes)."""
    from skyflow.artifacts import verify_artifact

    try:
        return all(verify_artifact(ArtifactRef.open(o, store=store), deep=False) for o in outputs.values())
    except (ArtifactError, OSError, ValueError, ImportError):
        return False


def describe(records: Mapping[str, ArtifactRecord]) -> dict[str, Any]:
    return {n: {"uri": o.uri, "digest": o.digest, "size_bytes": o.size_bytes} for n, o in records.items()}


__all__ = ["ArtifactRecord", "ArtifactRef", "ArtifactStore", "cache_forget", "cache_lookup", "cache_record",
           "code_digest", "commit_outputs", "describe", "external_location", "fetch_input", "import_external", "is_uri",
           "local_store_uri", "open_store", "outputs_still_there", "predict_cached_copies", "stage_cache_key",
           "stage_code_dir", "store_for_infra", "transfer_artifact"]
