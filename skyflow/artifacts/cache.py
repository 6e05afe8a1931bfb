"""Stage cache: a key from what decides a stage's outputs, and an index of verified hits in a store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyflow.artifacts.commit import read_manifest
from skyflow.artifacts.integrity import DamagedArtifact, check_blobs, quarantine
from skyflow.artifacts.manifest import Manifest, build_manifest, digest_bytes, digest_hex
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


# A cache hit re-reads and re-hashes its outputs' blobs when together they are at most this big; larger
# outputs are checked by presence and size, and their bytes when a stage fetches them.
REHASH_BYTES = 64 << 20


@dataclass(frozen=True)
class CacheHit:
    """A cache entry's outputs, found whole, and what was checked to say so."""

    outputs: dict[str, ArtifactRef]
    checked: str


class CacheIndex:
    """Cache entries (key -> output name -> artifact digest) kept in the store beside the artifacts.

    An entry names its own key, so that an entry copied or moved over another is never taken for it.
    """

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _key(self, key: str) -> str:
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ArtifactError(f"cache key {key!r} must be letters, digits, '-' or '_'",
                                uri=self.store.url(CACHE))
        return f"{CACHE}/{key}.json"

    def record(self, key: str, outputs: Mapping[str, ArtifactRef]) -> None:
        body = {"key": key, "outputs": {
            name: {"digest": ref.digest, "size_bytes": ref.size_bytes, "file_count": ref.file_count}
            for name, ref in sorted(outputs.items())}}
        self.store.write_bytes(self._key(key), json.dumps(body, sort_keys=True).encode())

    def lookup(self, key: str, *, deep: bool | None = None) -> dict[str, ArtifactRef] | None:
        """The outputs recorded under ``key``, or None when there are none or any of them is gone or
        damaged. ``deep``: True re-hashes every blob, False checks presence and sizes only, None
        (the default) re-hashes when the outputs are small enough (`check`)."""
        rehash_bytes = {True: 1 << 62, False: -1, None: REHASH_BYTES}[deep]
        hit = self.check(key, rehash_bytes=rehash_bytes)
        return hit.outputs if hit is not None else None

    def check(self, key: str, *, rehash_bytes: int = REHASH_BYTES) -> CacheHit | None:
        """The outputs recorded under ``key`` if they are whole, and what was checked; None on a miss.

        Every output's manifest is read and checked against its digest, every blob must be present at
        its size, and when the outputs total at most ``rehash_bytes`` every blob is re-hashed as well.
        An entry filed under another key, or naming a damaged or missing artifact, is a miss and is
        removed (damaged objects go to quarantine); a store that cannot be reached is only a miss.
        """
        entry_key = self._key(key)
        raw = self.store.read_optional(entry_key)
        if raw is None:
            return None
        entries = parse_entry(raw, key)
        if entries is None:
            quarantine(self.store, entry_key)
            return None
        if not entries:
            return None  # an entry written before entries named their key: it cannot be checked

        def manifest_of(item: tuple[str, str]) -> Manifest | None:
            try:
                return read_manifest(self.store, item[1], name=item[0])
            except DamagedArtifact:
                return None

        try:
            manifests = self.store.map_concurrently(manifest_of, list(entries.items()))
            found = {name: m for name, m in zip(entries, manifests, strict=True) if m is not None}
            if len(found) < len(entries):
                self.forget(key)
                return None
            total = sum(f.size_bytes for f in {f.digest: f for m in found.values() for f in m.files}.values())
            blobs = check_blobs(self.store, found.values(), rehash=total <= rehash_bytes)
        except ArtifactError:  # the store cannot be reached (damage is reported, not raised, above)
            return None
        if blobs.bad_paths:
            self.forget(key)
            return None
        checked = f"{len(found)} manifest{'s' if len(found) != 1 else ''} re-hashed, {blobs.describe()}"
        return CacheHit({name: ArtifactRef.in_store(self.store, m, name=name) for name, m in found.items()}, checked)

    def forget(self, key: str) -> None:
        self.store.delete([self._key(key)])


def parse_entry(raw: bytes, key: str) -> dict[str, str] | None:
    """Output name -> digest of an entry filed under ``key``; {} for an entry of the old format (no
    key inside); None when it is not an entry or names another key."""
    try:
        body = json.loads(raw)
        if "key" not in body:
            return {} if all(isinstance(item, dict) and "digest" in item for item in body.values()) else None
        if body["key"] != key:
            return None
        entries = {str(name): str(item["digest"]) for name, item in body["outputs"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    for digest in entries.values():
        try:
            digest_hex(digest)
        except ArtifactError:
            return None
    return entries or None


def entry_digests(raw: bytes) -> list[str] | None:
    """The artifact digests a cache entry names (either format); None when it is not an entry."""
    try:
        body = json.loads(raw)
        outputs = body["outputs"] if "key" in body else body
        return [str(item["digest"]) for item in outputs.values()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
