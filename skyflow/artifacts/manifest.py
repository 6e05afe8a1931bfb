"""Manifests: per-file digests and sizes of an artifact, and the digest that names the artifact."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from skyflow.errors import ArtifactError

HASH_NAME = "sha256"
CHUNK_BYTES = 8 << 20
MANIFEST_VERSION = 1
ArtifactKind = Literal["file", "dir"]


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes."""
    return f"{HASH_NAME}:{hashlib.sha256(data).hexdigest()}"


def digest_hex(digest: str) -> str:
    """The hex part of ``sha256:<hex>``; rejects anything else, since it becomes a storage key."""
    algo, _, hexpart = digest.partition(":")
    if algo != HASH_NAME or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ArtifactError(f"not a {HASH_NAME} digest: {digest!r}", uri=None)
    return hexpart


class DigestingReader:
    """Hashes chunks as they pass, so a copy is verified without reading the bytes twice."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._hash.update(chunk)
            self.size_bytes += len(chunk)
            yield chunk

    @property
    def digest(self) -> str:
        return f"{HASH_NAME}:{self._hash.hexdigest()}"


def file_chunks(path: Path) -> Iterator[bytes]:
    """A local file's bytes in large chunks."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def hash_file(path: Path) -> tuple[str, int]:
    """(digest, size) of a local file, read in large chunks (hashlib releases the GIL for them)."""
    reader = DigestingReader(file_chunks(path))
    for _ in reader:
        pass
    return reader.digest, reader.size_bytes


def check_relative_path(path: str) -> str:
    """A manifest path must stay inside the artifact: relative, POSIX, no '..', no empty parts."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts) or (len(path) > 1 and path[1] == ":")):
        raise ArtifactError(f"manifest path {path!r} would leave the artifact directory; refusing it",
                            uri=None)
    return path


@dataclass(frozen=True)
class FileEntry:
    """One file of an artifact: where it sits inside the artifact, its digest and size."""

    path: str
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    """An artifact's content: a single file or a directory tree, its file entries in a fixed order
    (each directory's files, then its subdirectories)."""

    kind: ArtifactKind
    files: tuple[FileEntry, ...]

    def to_bytes(self) -> bytes:
        body = {"version": MANIFEST_VERSION, "kind": self.kind,
                "files": [[f.path, f.digest, f.size_bytes] for f in self.files]}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @property
    def digest(self) -> str:
        return digest_bytes(self.to_bytes())

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @classmethod
    def from_bytes(cls, data: bytes, *, uri: str | None = None) -> Manifest:
        try:
            body = json.loads(data)
            kind = body["kind"]
            files = tuple(FileEntry(str(p), str(d), int(s)) for p, d, s in body["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"manifest is not valid JSON of this format ({exc})", uri=uri) from exc
        if kind not in ("file", "dir") or body.get("version") != MANIFEST_VERSION:
            raise ArtifactError(f"manifest has unknown kind {kind!r} or version {body.get('version')!r}",
                                uri=uri)
        for entry in files:
            check_relative_path(entry.path)
            digest_hex(entry.digest)
        return cls(kind=kind, files=files)


def list_local_files(root: Path, *, skip_dirs: frozenset[str] = frozenset(), confined: bool = False
                     ) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under ``root``; symlinks may not leave it.

    ``confined`` (a stage's output): ``root`` itself may not be a symlink, and no file may be a hard
    link to a file outside ``root`` (its other names are all under ``root``). Otherwise a stage could
    commit what lies elsewhere on the machine under its output's name.
    """
    if confined and root.is_symlink():
        raise ArtifactError(f"the output directory was replaced by a symlink to {os.readlink(root)}; a stage "
                            "writes its files into the directory it is given (copy them in)", uri=str(root))
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise ArtifactError("output path does not exist; the stage wrote nothing there", uri=str(root))
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real_here = here.resolve()
        if not real_here.is_relative_to(real_root):
            raise ArtifactError("a symlink points outside the output directory; copy the file in "
                                "instead", uri=str(here))
        parts = here.relative_to(root).parts
        if real_here in {root.joinpath(*parts[:i]).resolve() for i in range(len(parts))}:
            dirnames.clear()  # a link back to an ancestor: walking on would never end
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            path = here / name
            if not path.resolve().is_relative_to(real_root):
                raise ArtifactError("a symlink points outside the output directory; copy the file in "
                                    "instead", uri=str(path))
            if path.is_file():
                found.append((PurePosixPath(path.relative_to(root).as_posix()).as_posix(), path))
    if confined:
        _refuse_outside_hard_links(found)
    return found


def _refuse_outside_hard_links(files: list[tuple[str, Path]]) -> None:
    """Every name of a file with several hard links must be among ``files`` (under the root)."""
    names: dict[tuple[int, int], set[Path]] = {}
    links: dict[tuple[int, int], tuple[int, Path]] = {}
    for _, path in files:
        st = path.stat()
        if st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            names.setdefault(inode, set()).add(path.resolve())
            links[inode] = (st.st_nlink, path)
    for inode, (count, path) in links.items():
        inside = len(names[inode])
        if count > inside:
            raise ArtifactError(f"is a hard link to a file outside the output directory ({count} links, {inside} "
                                "of them here); copy the file in (cp) instead of linking it (ln)", uri=str(path))


def build_manifest(local_path: Path, *, workers: int = 4, skip_dirs: frozenset[str] = frozenset()
                   ) -> tuple[Manifest, dict[str, Path]]:
    """Hash every file under ``local_path``; returns the manifest and digest -> a local copy."""
    files = list_local_files(local_path, skip_dirs=skip_dirs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = list(pool.map(lambda item: hash_file(item[1]), files))
    entries = tuple(FileEntry(rel, digest, size) for (rel, _), (digest, size) in zip(files, hashed,
                                                                                      strict=True))
    sources = {digest: path for (_, path), (digest, _) in zip(files, hashed, strict=True)}
    kind: ArtifactKind = "file" if local_path.is_file() else "dir"
    return Manifest(kind=kind, files=entries), sources
