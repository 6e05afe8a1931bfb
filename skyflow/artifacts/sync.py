"""Placing an artifact in a local directory: verified, inside the directory, only changed files."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skyflow.artifacts.commit import load_manifest
from skyflow.artifacts.failures import naming, translated
from skyflow.artifacts.integrity import DamagedArtifact, quarantine
from skyflow.artifacts.manifest import DigestingReader, FileEntry, check_relative_path, hash_file
from skyflow.artifacts.progress import expect_bytes, moved_bytes
from skyflow.artifacts.refs import ArtifactRef, blob_key
from skyflow.errors import ArtifactError

# How much of a file's name its temp file keeps: 200 bytes, a dot, 8 hex, ".part" fit in 255.
_NAME_START_BYTES = 200

@dataclass(frozen=True)
class SyncStats:
    """What a sync did: files and bytes copied, files already up to date."""

    files_copied: int
    files_unchanged: int
    bytes_copied: int


def select_files(files: Iterable[FileEntry], include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> list[FileEntry]:
    """Entries matching any ``include`` glob (all when none) and no ``exclude`` glob."""
    include, exclude = tuple(include), tuple(exclude)
    return [f for f in files
            if (not include or any(fnmatch.fnmatchcase(f.path, g) for g in include))
            and not any(fnmatch.fnmatchcase(f.path, g) for g in exclude)]


def safe_target(dest_dir: Path, relative: str) -> Path:
    """``dest_dir/relative``, refusing any path (or symlink already in dest_dir) that leads outside."""
    check_relative_path(relative)
    root = dest_dir.resolve()
    target = root / relative
    if not target.parent.resolve().is_relative_to(root):
        raise ArtifactError(f"{relative!r} would be written outside {root} (through a symlink); refusing it",
                            uri=str(target))
    return target


def sync_artifact(ref: ArtifactRef, dest_dir: str | Path, *, include: Iterable[str] = (),
                  exclude: Iterable[str] = (), incremental: bool = True) -> SyncStats:
    """Make ``dest_dir`` hold the artifact's (selected) files; with ``incremental``, a local file whose
    digest already matches the manifest is left alone. Each file is verified while it is written and
    renamed into place only when its digest matches, so a failed sync leaves no half-written file."""
    dest = Path(dest_dir)
    with naming(ref.name):
        manifest = load_manifest(ref)
        wanted = select_files(manifest.files, include, exclude)
        with translated(str(dest), "creating the destination directory"):
            dest.mkdir(parents=True, exist_ok=True)
        targets = [(entry, safe_target(dest, entry.path)) for entry in wanted]
        expect_bytes(sum(entry.size_bytes for entry, _ in targets))
        copied = ref.store.map_concurrently(lambda pair: _place(ref, pair[0], pair[1], incremental), targets)
    return SyncStats(files_copied=sum(1 for c in copied if c is not None),
                     files_unchanged=sum(1 for c in copied if c is None),
                     bytes_copied=sum(c for c in copied if c is not None))


def fetch_artifact(ref: ArtifactRef, dest_dir: str | Path) -> Path:
    """Put the artifact under ``dest_dir``; returns the file (a file artifact) or ``dest_dir``."""
    sync_artifact(ref, dest_dir)
    manifest = load_manifest(ref)
    dest = Path(dest_dir).resolve()
    return dest / manifest.files[0].path if manifest.kind == "file" else dest


def _place(ref: ArtifactRef, entry: FileEntry, target: Path, incremental: bool) -> int | None:
    """Copy one blob to ``target``; None when an up-to-date copy is already there."""
    with translated(str(target), "writing"):
        if incremental and target.is_file() and not target.is_symlink() \
                and target.stat().st_size == entry.size_bytes and hash_file(target)[0] == entry.digest:
            moved_bytes(entry.size_bytes)
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        found = _copy_verified(ref, entry, target)
        if found is not None:  # a second try, in case a commit rewrote the blob while it was read
            found = _copy_verified(ref, entry, target)
        if found is None:
            return entry.size_bytes
        key = blob_key(entry.digest)
        if found == (None, 0):
            raise DamagedArtifact(f"blob for {entry.path!r} is missing: the manifest says {entry.size_bytes} bytes, "
                                  f"{entry.digest}", uri=ref.store.url(key), digest=ref.digest)
        moved = quarantine(ref.store, key)  # read twice with the same result: it is the stored copy that is bad
        where = f"; moved to {ref.store.url(moved)}" if moved else ""
        raise DamagedArtifact(f"blob for {entry.path!r} is corrupted: read {found[1]} bytes hashing to {found[0]}, "
                              f"manifest says {entry.size_bytes} bytes, {entry.digest}{where}",
                              uri=ref.store.url(key), digest=ref.digest, quarantined=[moved] if moved else [])


def _temp_name(name: str) -> str:
    """A hidden name for the temp file beside ``name``: its start (so a leftover says whose it was), a
    random part, and a suffix, within the 255 bytes a file name may have even when ``name`` uses all."""
    start = name.encode()[:_NAME_START_BYTES].decode(errors="ignore")
    return f".{start}.{uuid.uuid4().hex[:8]}.part"


def _copy_verified(ref: ArtifactRef, entry: FileEntry, target: Path) -> tuple[str | None, int] | None:
    """Write the blob to a temp file beside ``target`` while hashing it, and rename it into place if it
    is the manifest's bytes: None then; else (digest read, size read), or (None, 0) if there is no blob."""
    tmp = target.parent / _temp_name(target.name)
    try:
        reader = DigestingReader(ref.store.read_chunks(blob_key(entry.digest)))
        try:
            with open(tmp, "wb") as f:
                for chunk in reader:
                    f.write(chunk)
                    moved_bytes(len(chunk))
        except ArtifactError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None, 0
            raise
        if reader.digest != entry.digest or reader.size_bytes != entry.size_bytes:
            return reader.digest, reader.size_bytes
        os.replace(tmp, target)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
