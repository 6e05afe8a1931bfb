"""Manifests, path checks and error wording, without touching a store."""

from __future__ import annotations

import errno

import pytest

from skyflow.artifacts.failures import describe_failure, is_storage_failure, naming, translated
from skyflow.artifacts.manifest import FileEntry, Manifest, check_relative_path, digest_hex
from skyflow.artifacts.sync import select_files
from skyflow.errors import ArtifactError

D = "sha256:" + "0" * 64


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "", "a\\..\\b", "C:/x",
                                  "a/\x00"])
def test_paths_that_leave_the_artifact_are_refused(path: str) -> None:
    with pytest.raises(ArtifactError, match="would leave the artifact directory"):
        check_relative_path(path)


def test_ordinary_relative_paths_pass() -> None:
    assert check_relative_path("a/b.c/..d") == "a/b.c/..d"


def test_a_manifest_with_an_escaping_path_is_rejected_when_read() -> None:
    data = Manifest("dir", (FileEntry("../../home/x", D, 1),)).to_bytes()
    with pytest.raises(ArtifactError, match="refusing it"):
        Manifest.from_bytes(data)


def test_the_digest_depends_on_content_only_and_round_trips() -> None:
    one = Manifest("dir", (FileEntry("a", D, 1), FileEntry("b", D, 1)))
    assert Manifest.from_bytes(one.to_bytes()) == one
    assert one.digest != Manifest("dir", (FileEntry("a", D, 2), FileEntry("b", D, 1))).digest
    assert one.size_bytes == 2


def test_a_digest_must_be_sha256_hex() -> None:
    with pytest.raises(ArtifactError, match="not a sha256 digest"):
        digest_hex("sha256:../../etc")


def test_globs_select_files() -> None:
    files = [FileEntry(p, D, 1) for p in ("a/x.bin", "a/y.txt", "b/z.bin")]
    assert [f.path for f in select_files(files, ["*.bin"], ["b/*"])] == ["a/x.bin"]
    assert len(select_files(files)) == 3


@pytest.mark.parametrize(("exc", "words"), [
    (FileNotFoundError("no such key"), "not found"),
    (PermissionError("AccessDenied"), "permission denied; check the credentials"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (ConnectionRefusedError("refused"), "cannot be reached"),
])
def test_failures_are_named_with_their_cause_and_a_fix(exc: Exception, words: str) -> None:
    with pytest.raises(ArtifactError, match=words) as info, naming("model"), translated("s3://b/k", "reading"):
        raise exc
    assert info.value.artifact == "model" and info.value.uri == "s3://b/k"
    assert str(info.value).startswith("artifact 'model' at s3://b/k: reading failed: ")
    assert info.value.__cause__ is exc


def test_bugs_are_not_disguised_as_storage_failures() -> None:
    assert not is_storage_failure(KeyError("x"))
    with pytest.raises(KeyError), translated("s3://b/k", "reading"):
        raise KeyError("x")


def test_describe_failure_keeps_the_library_message() -> None:
    assert "bucket-xyz" in describe_failure(FileNotFoundError("bucket-xyz"))
