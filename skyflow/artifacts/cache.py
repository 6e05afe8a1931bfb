"""Stage cache: a key from what decides a stage's outputs, and an index of verified hits in a store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from skyflow.artifacts.commit import find_corrupted_blobs, find_missing_blobs, read_manifest
from skyflow.artifacts.manifest import Manifest, build_manifest, digest_bytes
from skyflow.artifacts.refs import CACHE, ArtifactRef
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError
from skyflow.spec.models import Stage

CACHE_KEY_VERSION = 1
# Not code: version-control data, virtual environments and tool caches change without changing results.
CODE_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".mypy_cache",
                            ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", ".skyflow"})


def code_digest(workdir: str | Path | None) -> str:
    """Digest of the files in a stage's workdir (paths and bytes), skipping CODE_SKIP_DIRS."""
    if workdir is None:
        return digest_bytes(b"no workdir")
    manifest, _ = build_manifest(Path(workdir), skip_dirs=CODE_SKIP_DIRS)
    return manifest.digest


def stage_cache_key(stage: Stage, *, params: Mapping[str, Any], input_digests: Mapping[str, str],
                    code_digest: str, secret_names: Iterable[str] = ()) -> str:
    """Digest of a stage's resolved spec, parameters, code and input artifacts.

    Secret values never enter the key, only their names: rotating a token does not invalidate the
    cache, and the key can be stored anywhere. Placement (cloud, region, spot, instance type) is
    left out so that a hit in another store can be offered against recomputing; accelerators and
    the image are kept, since they can change numerics.
    """
    secrets = set(secret_names) | set(stage.secrets)
    body = {
        "version": CACHE_KEY_VERSION,
        "task": stage.task,
        "run": stage.run,
        "setup": stage.setup,
        "envs": {k: (None if k in secrets else v) for k, v in sorted(stage.envs.items())},
        "secrets": sorted(secrets),
        "params": dict(params),
        "image": stage.resources.image_id,
        "accelerators": sorted(f"{a.name}:{a.count:g}" for a in stage.resources.accelerators),
        "num_nodes": stage.num_nodes,
        "outputs": sorted(stage.outputs),
        "inputs": dict(sorted(input_digests.items())),
        "code": code_digest,
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return digest_bytes(data).split(":", 1)[1]


class CacheIndex:
    """Cache entries (key -> output name -> artifact digest) kept in the store beside the artifacts."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _key(self, key: str) -> str:
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ArtifactError(f"cache key {key!r} must be letters, digits, '-' or '_'",
                                uri=self.store.url(CACHE))
        return f"{CACHE}/{key}.json"

    def record(self, key: str, outputs: Mapping[str, ArtifactRef]) -> None:
        body = {name: {"digest": ref.digest, "size_bytes": ref.size_bytes, "file_count": ref.file_count}
                for name, ref in sorted(outputs.items())}
        self.store.write_bytes(self._key(key), json.dumps(body, sort_keys=True).encode())

    def lookup(self, key: str, *, deep: bool = False) -> dict[str, ArtifactRef] | None:
        """The outputs recorded under ``key``, or None when there are none or any of them is gone.

        Every output's manifest is read and checked against its digest, and every blob must be
        present with its size (``deep`` re-hashes the blobs too): a stale entry is a miss.
        """
        raw = self.store.read_optional(self._key(key))
        if raw is None:
            return None
        try:
            body = json.loads(raw)
            entries = {str(name): str(item["digest"]) for name, item in body.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

        def manifest_of(item: tuple[str, str]) -> Manifest | None:
            try:
                return read_manifest(self.store, item[1], name=item[0])
            except ArtifactError:
                return None

        manifests = self.store.map_concurrently(manifest_of, list(entries.items()))
        if any(m is None for m in manifests):
            return None
        found = {name: m for name, m in zip(entries, manifests, strict=True) if m is not None}
        if deep:
            if any(self.store.map_concurrently(lambda m: find_corrupted_blobs(self.store, m), found.values())):
                return None
        elif find_missing_blobs(self.store, *found.values()):  # every output's blobs in one check
            return None
        return {name: ArtifactRef.in_store(self.store, m, name=name) for name, m in found.items()}

    def forget(self, key: str) -> None:
        self.store.delete([self._key(key)])
