"""Committing a stage's output (data first, manifest last), reading manifests back, verifying."""

from __future__ import annotations

from pathlib import Path

from skyflow.artifacts.failures import naming
from skyflow.artifacts.manifest import DigestingReader, Manifest, build_manifest, digest_bytes
from skyflow.artifacts.refs import ArtifactRef, blob_key, manifest_key
from skyflow.artifacts.store import ArtifactStore
from skyflow.errors import ArtifactError


def commit_output(store: ArtifactStore, local_path: str | Path, *, name: str) -> ArtifactRef:
    """Hash ``local_path`` (a file or directory), upload the blobs the store lacks, then the manifest.

    The manifest is written last, with a conditional create where the store has one: until it
    lands, the artifact does not exist for any reader, so a writer killed mid-upload leaves only
    unreferenced blobs (removed by ``collect_garbage``).
    """
    with naming(name):
        manifest, sources = build_manifest(Path(local_path))
        keys = {digest: blob_key(digest) for digest in sources}
        sizes = {f.digest: f.size_bytes for f in manifest.files}
        present = store.sizes_of(keys.values())
        missing = [(sources[d], k) for d, k in keys.items() if present[k] != sizes[d]]
        store.upload_files(missing)
        store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes(), exclusive=True)
        return ArtifactRef.in_store(store, manifest, name=name)


def load_manifest(ref: ArtifactRef) -> Manifest:
    """The ref's manifest, checked against the ref's digest."""
    return read_manifest(ref.store, ref.digest, name=ref.name)


def read_manifest(store: ArtifactStore, digest: str, *, name: str | None = None) -> Manifest:
    key = manifest_key(digest)
    with naming(name):
        if store.size_of(key) is None:
            raise ArtifactError("artifact not found: no manifest with this digest in the store; was it "
                                "committed here, or removed by garbage collection?", uri=store.url(key))
        data = store.read_bytes(key)
        if digest_bytes(data) != digest:
            raise ArtifactError(f"manifest is corrupted: its bytes hash to {digest_bytes(data)}, "
                                f"not {digest}", uri=store.url(key))
        return Manifest.from_bytes(data, uri=store.url(key))


def find_missing_blobs(store: ArtifactStore, manifest: Manifest) -> list[str]:
    """Paths of files whose blob is absent or has the wrong size (a cheap check: one HEAD each)."""
    wanted = {blob_key(f.digest): f.size_bytes for f in manifest.files}
    sizes = store.sizes_of(wanted)
    bad = {key for key, size in wanted.items() if sizes[key] != size}
    return [f.path for f in manifest.files if blob_key(f.digest) in bad]


def find_corrupted_blobs(store: ArtifactStore, manifest: Manifest) -> list[str]:
    """Paths of files whose blob is missing or whose bytes no longer hash to the manifest's digest."""
    unique = {f.digest: f for f in manifest.files}

    def is_bad(digest: str) -> bool:
        if store.size_of(blob_key(digest)) is None:
            return True
        reader = DigestingReader(store.read_chunks(blob_key(digest)))
        for _ in reader:
            pass
        return reader.digest != digest or reader.size_bytes != unique[digest].size_bytes

    bad = {d for d, flag in zip(unique, store.map_concurrently(is_bad, list(unique)), strict=True) if flag}
    return [f.path for f in manifest.files if f.digest in bad]


def verify_artifact(ref: ArtifactRef, *, deep: bool = True) -> bool:
    """True if the artifact is whole; raises ArtifactError naming the missing or corrupted files.

    ``deep`` re-reads and re-hashes every blob; without it only presence and sizes are checked.
    """
    manifest = load_manifest(ref)
    bad = find_corrupted_blobs(ref.store, manifest) if deep else find_missing_blobs(ref.store, manifest)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ArtifactError(f"{len(bad)} of {len(manifest.files)} files are missing or corrupted: {shown}; "
                            "commit the output again or transfer it from a store that has it",
                            artifact=ref.name, uri=ref.uri)
    return True
