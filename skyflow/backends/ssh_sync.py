"""Moving files to and from an SSH host: the workdir by digest, inputs out, outputs back."""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path
from typing import Any

# Directories that are never code a stage needs on the host.
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", ".skyflow",
                          ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"})


class DigestCache:
    """sha256 of local files, recomputed only when size or mtime changed."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int, str]] = {}

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = str(path)
        hit = self._seen.get(key)
        if hit is not None and hit[:2] == (stat.st_size, stat.st_mtime_ns):
            return hit[2]
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        self._seen[key] = (stat.st_size, stat.st_mtime_ns, sha.hexdigest())
        return sha.hexdigest()


def local_manifest(root: Path, cache: DigestCache) -> dict[str, str]:
    """relative path -> sha256 of every regular file under ``root`` (skipping SKIPPED_DIRS)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                files[path.relative_to(root).as_posix()] = cache.digest(path)
    return files


def parse_remote_manifest(text: str) -> dict[str, str]:
    """`sha256sum` lines ("HEX  ./path") -> {path: HEX}."""
    files = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path.startswith("./"):
            files[path[2:]] = digest
    return files


def plan_sync(local: dict[str, str], remote: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files to upload, files to delete) to make the remote mirror equal the local tree."""
    upload = sorted(p for p, d in local.items() if remote.get(p) != d)
    delete = sorted(p for p in remote if p not in local)
    return upload, delete


async def sync_tree(conn: Any, sftp: Any, local_root: Path, mirror: str, cache: DigestCache) -> tuple[int, int]:
    """Make ``mirror`` on the host a copy of ``local_root``, sending only changed files.

    Returns (files uploaded, files deleted).
    """
    q = shlex.quote(mirror)
    listing = await conn.run(f"mkdir -p {q} && cd {q} && find . -type f -print0 | xargs -0 -r sha256sum",
                             check=True)
    upload, delete = plan_sync(local_manifest(local_root, cache), parse_remote_manifest(str(listing.stdout)))
    if delete:
        await conn.run(f"cd {q} && xargs -0 rm -f --", input="\0".join(delete), check=True)
    made: set[str] = set()
    for rel in upload:
        parent = os.path.dirname(rel)
        if parent and parent not in made:
            await sftp.makedirs(f"{mirror}/{parent}", exist_ok=True)
            made.add(parent)
        await sftp.put(str(local_root / rel), f"{mirror}/{rel}", preserve=True)
    return len(upload), len(delete)


async def put_dir(sftp: Any, local: Path, remote: str) -> None:
    """Copy the directory ``local`` to ``remote`` (which must not exist yet)."""
    await sftp.put(str(local), remote, recurse=True, preserve=True)


async def get_dir_contents(sftp: Any, remote: str, local: Path) -> None:
    """Copy what is inside ``remote`` into the existing directory ``local``."""
    for name in await sftp.listdir(remote):
        if name in (".", ".."):
            continue
        await sftp.get(f"{remote}/{name}", str(local / name), recurse=True, preserve=True)
