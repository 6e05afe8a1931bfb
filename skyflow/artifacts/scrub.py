"""Checking a whole store (`skyflow artifacts verify`): every manifest, blob and cache entry, bad ones quarantined."""

from __future__ import annotations

from dataclasses import dataclass

from skyflow.artifacts.cache import CacheIndex, entry_digests, parse_entry
from skyflow.artifacts.commit import read_manifest
from skyflow.artifacts.integrity import DamagedArtifact, check_blobs, quarantine
from skyflow.artifacts.manifest import Manifest
from skyflow.artifacts.refs import CACHE, MANIFESTS, digest_of_manifest_key, manifest_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError

__all__ = ["Damage", "ScrubReport", "scrub_store"]


@dataclass(frozen=True)
class Damage:
    """One damaged object: its key, what is wrong, and where it was moved (None: removed or absent)."""

    key: str
    problem: str
    quarantined: str | None = None


@dataclass(frozen=True)
class ScrubReport:
    store: str
    deep: bool
    manifests: int
    blobs: int
    total_bytes: int
    cache_entries: int
    damage: tuple[Damage, ...]

    @property
    def ok(self) -> bool:
        return not self.damage


def scrub_store(store: ArtifactStore, *, deep: bool = False) -> ScrubReport:
    """Check every manifest against its digest, every blob it lists (present at its size; with
    ``deep``, re-read and re-hashed) and every cache entry (filed under its own key, naming whole
    artifacts). Damaged manifests, blobs and misfiled entries are quarantined; entries naming a
    damaged or missing artifact are removed, so that the stage runs again instead of hitting."""
    damage: list[Damage] = []
    keys = sorted(store.list_keys(MANIFESTS))

    def manifest_of(key: str) -> Manifest | DamagedArtifact:
        if not _is_manifest_key(key):  # a file put there by hand or by a tool: no digest to check it against
            moved = quarantine(store, key)
            return DamagedArtifact("not a manifest: manifests are named <sha256 hex>.json", uri=store.url(key),
                                   quarantined=[moved] if moved else [])
        try:
            return read_manifest(store, digest_of_manifest_key(key))
        except DamagedArtifact as exc:
            return exc

    manifests: dict[str, Manifest] = {}
    for key, found in zip(keys, store.map_concurrently(manifest_of, keys), strict=True):
        if isinstance(found, DamagedArtifact):
            damage.append(Damage(key, found.message, next(iter(found.quarantined), None)))
        else:
            manifests[digest_of_manifest_key(key)] = found
    blobs = check_blobs(store, manifests.values(), rehash=deep)
    moved = iter(blobs.quarantined)
    for digest, manifest in manifests.items():
        bad = [f.path for f in manifest.files if f.digest in blobs.bad_digests]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            damage.append(Damage(f"{MANIFESTS}/{digest.split(':', 1)[1]}.json",
                                 f"{len(bad)} of {len(manifest.files)} files missing or corrupted: {shown}"))
    damage += [Damage(q.split("/", 1)[1].rsplit(".", 1)[0], "blob does not hash to its name", q) for q in moved]
    whole = {d for d, m in manifests.items() if not any(f.digest in blobs.bad_digests for f in m.files)}
    entries = sorted(store.list_keys(CACHE))
    for key in entries:
        damage += _scrub_entry(store, key, whole)
    return ScrubReport(store=store.uri, deep=deep, manifests=len(keys), blobs=blobs.blobs,
                       total_bytes=blobs.total_bytes, cache_entries=len(entries), damage=tuple(damage))


def _is_manifest_key(key: str) -> bool:
    try:
        return manifest_key(digest_of_manifest_key(key)) == key
    except ArtifactError:
        return False


def _scrub_entry(store: ArtifactStore, key: str, whole: set[str]) -> list[Damage]:
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    raw = store.read_optional(key)
    if raw is None:
        return []
    parsed = parse_entry(raw, name)
    if parsed is None:
        return [Damage(key, "not a cache entry for this key (copied over from another, or unreadable)",
                       quarantine(store, key))]
    if not all(d in whole for d in (list(parsed.values()) or entry_digests(raw) or [])):
        CacheIndex(store).forget(name)
        return [Damage(key, "cache entry names a missing or damaged artifact; removed")]
    return []
