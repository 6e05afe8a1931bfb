"""A blob over 64 MiB with one byte flipped in the store, read as the runner reads it: fetched into a
stage's inputs, or moved to another store (files that size stream through in chunks, hashed as they
pass). Either way the read fails with the store's damage error naming the file and the digest, leaves
nothing at the destination that could pass for the file, and moves the bad blob to quarantine/, so the
next commit of the right bytes stores them afresh."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRef, DamagedArtifact, commit_output, load_manifest, open_store
from skyflow.artifacts.refs import QUARANTINE, blob_key
from skyflow.artifacts.store import FsspecStore
from skyflow.artifacts.transfer import WHOLE_FILE_BYTES
from skyflow.runner import artifact_io

pytestmark = pytest.mark.integration

SIZE_MIB = 70


def _random_file(path: Path, mib: int) -> str:
    """Write ``mib`` MiB of random bytes, 1 MiB at a time; their sha256 digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    return f"sha256:{digest.hexdigest()}"


def _flip_a_byte_in_the_middle(path: Path) -> None:
    middle = path.stat().st_size // 2
    with open(path, "r+b") as f:
        f.seek(middle)
        byte = f.read(1)
        f.seek(middle)
        f.write(bytes([byte[0] ^ 0xFF]))


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()] if root.exists() else []


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[ArtifactRef, str, Path]:
    """A committed output holding one 70 MiB file whose stored blob has a byte flipped: (its ref, the
    file's digest, the stored blob)."""
    output = tmp_path / "attempt-1" / "outputs" / "model"
    digest = _random_file(output / "weights.bin", SIZE_MIB)
    store = open_store(str(tmp_path / "store"), create=True)
    ref = commit_output(store, output, name="model", confined=True)
    (entry,) = load_manifest(ref).files
    assert entry.digest == digest and entry.size_bytes == SIZE_MIB << 20 > WHOLE_FILE_BYTES
    assert isinstance(store, FsspecStore)
    blob = Path(store.root) / blob_key(digest)
    _flip_a_byte_in_the_middle(blob)
    return ref, digest, blob


def _quarantined(ref: ArtifactRef, error: DamagedArtifact, blob: Path, digest: str) -> None:
    """The bad blob is kept aside under quarantine/ (whole), no longer under its name."""
    kept = ref.store.list_keys(QUARANTINE)
    assert len(error.quarantined) == 1 and error.quarantined[0] in kept, (error.quarantined, kept)
    assert error.quarantined[0].startswith(f"{QUARANTINE}/{blob_key(digest)}.")
    assert kept[error.quarantined[0]].size_bytes == SIZE_MIB << 20
    assert not blob.exists()


def test_fetching_a_corrupted_large_input_fails_leaves_nothing_and_quarantines_the_blob(
        damaged: tuple[ArtifactRef, str, Path], tmp_path: Path) -> None:
    ref, digest, blob = damaged
    dest = tmp_path / "attempt-2" / "inputs" / "model"

    with pytest.raises(DamagedArtifact) as caught:
        artifact_io.fetch_input(ref, dest)
    message = str(caught.value)
    assert "'weights.bin'" in message and "corrupted" in message and digest in message, message
    assert caught.value.digest == ref.digest
    assert caught.value.uri == ref.store.url(blob_key(digest))
    assert _files_under(dest) == [], "a partial copy was left where the stage reads its input"
    _quarantined(ref, caught.value, blob, digest)

    # the name is free again: a commit of the right bytes stores them afresh, and the fetch works
    again = commit_output(ref.store, tmp_path / "attempt-1" / "outputs" / "model", name="model", confined=True)
    assert again.digest == ref.digest
    path, size, _ = artifact_io.fetch_input(again, dest)
    assert size == SIZE_MIB << 20
    with open(path / "weights.bin", "rb") as f:
        assert f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()}" == digest


def test_moving_a_corrupted_large_blob_to_another_store_copies_nothing_and_quarantines_it(
        damaged: tuple[ArtifactRef, str, Path], tmp_path: Path) -> None:
    ref, digest, blob = damaged
    target = open_store(str(tmp_path / "elsewhere"), create=True)

    with pytest.raises(DamagedArtifact) as caught:
        artifact_io.transfer_artifact(ref, target)
    message = str(caught.value)
    assert "'weights.bin'" in message and "corrupted" in message and digest in message, message
    assert "nothing was copied" in message and caught.value.digest == ref.digest
    assert target.list_keys("") == {}, "the target store kept part of the damaged artifact"
    _quarantined(ref, caught.value, blob, digest)
