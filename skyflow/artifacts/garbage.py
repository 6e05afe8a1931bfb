"""Garbage collection: remove manifests, blobs and cache entries that no kept artifact references."""

from __future__ import annotations

import time
from dataclasses import dataclass

from skyflow.artifacts.cache import entry_digests
from skyflow.artifacts.commit import read_manifest
from skyflow.artifacts.integrity import DamagedArtifact
from skyflow.artifacts.refs import BLOBS, CACHE, MANIFESTS, TMP, blob_key, digest_of_manifest_key
from skyflow.artifacts.store import ArtifactStore, KeyInfo


@dataclass(frozen=True)
class GcStats:
    manifests_removed: int
    blobs_removed: int
    cache_entries_removed: int
    bytes_freed: int
    dry_run: bool = False


def collect_garbage(store: ArtifactStore, keep: set[str], *, min_age_s: float = 3600.0,
                    dry_run: bool = False) -> GcStats:
    """Delete every artifact whose digest is not in ``keep``, then blobs no kept manifest lists,
    cache entries that point at a removed artifact, and old temp files. ``quarantine/`` is left alone.

    Objects younger than ``min_age_s`` stay: a commit in progress has uploaded blobs but not yet
    its manifest, and must not lose them. A commit may also reuse an old blob or manifest while gc
    runs, so just before deleting, gc lists the store again: a manifest that appeared meanwhile keeps
    its blobs, and an object whose modification time was refreshed (a local commit touches what it
    reuses) stays. With ``dry_run`` nothing is deleted; the counts say what would be.
    """
    cutoff = time.time() - min_age_s

    def old(info: KeyInfo) -> bool:
        return info.modified_s is None or info.modified_s <= cutoff

    manifests = store.list_keys(MANIFESTS)
    doomed = {k for k, info in manifests.items() if digest_of_manifest_key(k) not in keep and old(info)}
    kept_digests = {digest_of_manifest_key(k) for k in manifests if k not in doomed}
    referenced = _blobs_of(store, kept_digests)
    blobs = store.list_keys(BLOBS)
    dead_blobs = {k: info for k, info in blobs.items() if k not in referenced and old(info)}
    entries = sorted(store.list_keys(CACHE))
    alive = store.map_concurrently(lambda k: _cache_entry_kept(store, k, kept_digests), entries)
    dead_cache = [k for k, kept in zip(entries, alive, strict=True) if not kept]
    leftovers = [k for k, info in store.list_keys(TMP).items() if old(info)]
    if not dry_run:
        # What changed since the listings above: manifests written or refreshed by a commit since.
        now = store.list_keys(MANIFESTS)
        doomed = {k for k in doomed if k in now and old(now[k])}
        remaining = {digest_of_manifest_key(k) for k in now if k not in doomed}
        referenced |= _blobs_of(store, remaining - kept_digests)
        # Cache entries and manifests go before the blobs they name, so that a gc killed half-way
        # leaves no entry or manifest pointing at a deleted blob.
        store.delete(dead_cache + sorted(doomed))
        now_blobs = store.list_keys(BLOBS)
        dead_blobs = {k: info for k, info in dead_blobs.items()
                      if k in now_blobs and old(now_blobs[k]) and k not in referenced}
        store.delete(sorted(dead_blobs) + leftovers)
    return GcStats(manifests_removed=len(doomed), blobs_removed=len(dead_blobs),
                   cache_entries_removed=len(dead_cache),
                   bytes_freed=sum(i.size_bytes for i in dead_blobs.values()), dry_run=dry_run)


def _blobs_of(store: ArtifactStore, digests: set[str]) -> set[str]:
    """Blob keys the manifests of ``digests`` list (a manifest missing or damaged lists none)."""
    def listed(digest: str) -> set[str]:
        try:
            return {blob_key(f.digest) for f in read_manifest(store, digest).files}
        except DamagedArtifact:
            return set()

    return {key for keys in store.map_concurrently(listed, sorted(digests)) for key in keys}


def _cache_entry_kept(store: ArtifactStore, key: str, kept_digests: set[str]) -> bool:
    raw = store.read_optional(key)
    digests = entry_digests(raw) if raw is not None else None
    return digests is not None and all(d in kept_digests for d in digests)
