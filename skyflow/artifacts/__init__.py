"""Artifacts over fsspec: content-addressed, committed atomically, cached, moved between stores.

Layout inside a store root::

    blobs/sha256/ab/<hex>           file contents, stored once per digest
    manifests/sha256/<hex>.json     an artifact: its files' paths, digests and sizes (written last)
    cache/<key>.json                stage cache entries: their key, output name -> artifact digest
    tmp/                            files being written, renamed (locally) or copied into place
    quarantine/                     objects found damaged, moved aside (gc leaves them alone)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use: a reader of run state or lineage needs ArtifactRecord, not the
# whole package (fsspec, the spec models for cache keys).
_EXPORTS = {
    "ArtifactRecord": "skyflow.artifacts.record",
    "ArtifactRef": "skyflow.artifacts.refs",
    "ArtifactStore": "skyflow.artifacts.store",
    "CacheHit": "skyflow.artifacts.cache",
    "CacheIndex": "skyflow.artifacts.cache",
    "CodePackage": "skyflow.artifacts.code_package",
    "DamagedArtifact": "skyflow.artifacts.integrity",
    "FileEntry": "skyflow.artifacts.manifest",
    "FsspecStore": "skyflow.artifacts.store",
    "GcStats": "skyflow.artifacts.garbage",
    "KeyInfo": "skyflow.artifacts.store",
    "Manifest": "skyflow.artifacts.manifest",
    "ScrubReport": "skyflow.artifacts.scrub",
    "SyncStats": "skyflow.artifacts.sync",
    "TransferStats": "skyflow.artifacts.refs",
    "bootstrap_script": "skyflow.artifacts.code_package",
    "build_code_package": "skyflow.artifacts.code_package",
    "build_manifest": "skyflow.artifacts.manifest",
    "code_digest": "skyflow.artifacts.cache",
    "collect_garbage": "skyflow.artifacts.garbage",
    "commit_output": "skyflow.artifacts.commit",
    "fetch_artifact": "skyflow.artifacts.sync",
    "gc": "skyflow.artifacts.garbage",
    "load_manifest": "skyflow.artifacts.commit",
    "node_command": "skyflow.artifacts.code_package",
    "open_store": "skyflow.artifacts.store",
    "presign_code_package": "skyflow.artifacts.code_package",
    "scrub_store": "skyflow.artifacts.scrub",
    "stage_cache_key": "skyflow.artifacts.cache",
    "sync_artifact": "skyflow.artifacts.sync",
    "transfer_artifact": "skyflow.artifacts.transfer",
    "upload_code_package": "skyflow.artifacts.code_package",
    "verify_artifact": "skyflow.artifacts.commit",
}

__all__ = [
    "ArtifactRecord", "ArtifactRef", "ArtifactStore", "CacheHit", "CacheIndex", "CodePackage", "DamagedArtifact",
    "FileEntry", "FsspecStore", "GcStats", "KeyInfo", "Manifest", "ScrubReport", "SyncStats", "TransferStats",
    "bootstrap_script", "build_code_package", "build_manifest", "code_digest", "collect_garbage", "commit_output",
    "fetch_artifact", "gc", "load_manifest", "node_command", "open_store", "presign_code_package", "scrub_store",
    "stage_cache_key", "sync_artifact", "transfer_artifact", "upload_code_package", "verify_artifact",
]

if TYPE_CHECKING:
    from skyflow.artifacts.cache import CacheHit, CacheIndex, code_digest, stage_cache_key
    from skyflow.artifacts.code_package import (
        CodePackage,
        bootstrap_script,
        build_code_package,
        node_command,
        presign_code_package,
        upload_code_package,
    )
    from skyflow.artifacts.commit import commit_output, load_manifest, verify_artifact
    from skyflow.artifacts.garbage import GcStats, collect_garbage
    from skyflow.artifacts.integrity import DamagedArtifact
    from skyflow.artifacts.manifest import FileEntry, Manifest, build_manifest
    from skyflow.artifacts.record import ArtifactRecord
    from skyflow.artifacts.refs import ArtifactRef, TransferStats
    from skyflow.artifacts.scrub import ScrubReport, scrub_store
    from skyflow.artifacts.store import ArtifactStore, FsspecStore, KeyInfo, open_store
    from skyflow.artifacts.sync import SyncStats, fetch_artifact, sync_artifact
    from skyflow.artifacts.transfer import transfer_artifact

    gc = collect_garbage


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'skyflow.artifacts' has no attribute {name!r}")
    attribute = "collect_garbage" if name == "gc" else name
    return getattr(importlib.import_module(module_name), attribute)
