"""The runner's use of artifacts: import external inputs, fetch inputs, commit outputs, cache."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyflow.artifacts import (
    ArtifactRef,
    ArtifactStore,
    CacheIndex,
    code_digest,
    commit_output,
    fetch_artifact,
    open_store,
    stage_cache_key,
    transfer_artifact,
)
from skyflow.errors import ArtifactError
from skyflow.runner.state import OutputRow
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
        cloud, region = parts[0], parts[1] if len(parts) > 1 else None
        for key in ([f"{cloud}/{region}"] if region else []) + [cloud]:
            spec = pipeline.spec.stores.get(key)
            if spec is not None and cloud not in ("local", "ssh"):
                return spec.uri, spec.create, region
    local = pipeline.spec.stores.get("local")
    return local_store_uri(pipeline, home), bool(local and local.create), None


def local_store_uri(pipeline: ResolvedPipeline, home: Path) -> str:
    spec = pipeline.spec.stores.get("local")
    if spec is None:
        return str(home / "artifacts")
    return spec.uri if "://" in spec.uri else str(Path(spec.uri).expanduser())


def external_location(pipeline: ResolvedPipeline, ref: str) -> str:
    """A pipeline input's or URI's location as a local path or a remote URI."""
    uri = pipeline.spec.inputs[ref].uri if ref in pipeline.spec.inputs else ref
    if "://" in uri and not uri.startswith("file://"):
        return uri
    path = Path(uri.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else Path(pipeline.base_dir) / path)


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


def ref_from_row(row: OutputRow, store: ArtifactStore) -> ArtifactRef:
    """The committed output recorded in run state, in the store that holds it."""
    store_uri = row.uri.split("/manifests/")[0]
    target = store if store_uri.rstrip("/") == store.uri.rstrip("/") else open_store(store_uri)
    return ArtifactRef(name=row.name, uri=row.uri, digest=row.digest, size_bytes=row.size_bytes,
                       file_count=0, store=target)


def fetch_input(ref: ArtifactRef, dest: Path) -> tuple[Path, int, float]:
    started = time.monotonic()
    path = fetch_artifact(ref, dest)
    return path, ref.size_bytes, time.monotonic() - started


def commit_outputs(store: ArtifactStore, outputs: Mapping[str, Path]) -> dict[str, OutputRow]:
    rows = {}
    for name, path in outputs.items():
        if not any(path.iterdir()):
            raise ArtifactError("the stage wrote nothing to this output", artifact=name, uri=str(path))
        ref = commit_output(store, path, name=name)
        rows[name] = OutputRow(name, ref.uri, ref.digest, ref.size_bytes)
    return rows


def rows_from_backend(outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, OutputRow]:
    """Outputs a remote node committed itself ({name: {uri, digest, size_bytes}})."""
    try:
        return {n: OutputRow(n, str(o["uri"]), str(o["digest"]), int(o["size_bytes"])) for n, o in outputs.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"the backend reported malformed outputs: {exc}") from exc


def cache_lookup(store: ArtifactStore, key: str) -> dict[str, OutputRow] | None:
    found = CacheIndex(store).lookup(key)
    if found is None:
        return None
    return {n: OutputRow(n, r.uri, r.digest, r.size_bytes) for n, r in found.items()}


def cache_record(store: ArtifactStore, key: str, outputs: Mapping[str, OutputRow]) -> None:
    refs = {n: ArtifactRef(name=n, uri=o.uri, digest=o.digest, size_bytes=o.size_bytes, file_count=0,
                           store=store) for n, o in outputs.items()}
    CacheIndex(store).record(key, refs)


def outputs_still_there(store: ArtifactStore, outputs: Mapping[str, OutputRow]) -> bool:
    from skyflow.artifacts import verify_artifact

    try:
        return all(verify_artifact(ref_from_row(o, store), deep=False) for o in outputs.values())
    except ArtifactError:
        return False


def describe(rows: Mapping[str, OutputRow]) -> dict[str, Any]:
    return {n: {"uri": o.uri, "digest": o.digest, "size_bytes": o.size_bytes} for n, o in rows.items()}


__all__ = ["ArtifactRef", "ArtifactStore", "OutputRow", "code_digest", "is_uri", "open_store", "stage_cache_key",
           "transfer_artifact"]
