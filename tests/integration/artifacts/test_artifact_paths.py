"""Fetching never writes outside the destination; committing never follows a link out of the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRef, Manifest, commit_output, fetch_artifact, open_store
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.refs import blob_key, manifest_key
from skyflow.errors import ArtifactError

pytestmark = pytest.mark.integration


def crafted_ref(tmp_path: Path, path: str) -> ArtifactRef:
    """An artifact whose manifest (written by hand, as a hostile store could) names ``path``."""
    store = open_store(str(tmp_path / "store"))
    data = b"payload"
    store.write_bytes(blob_key(digest_bytes(data)), data)
    body = json.dumps({"version": 1, "kind": "dir", "files": [[path, digest_bytes(data), len(data)]]},
                      separators=(",", ":"), sort_keys=True).encode()
    store.write_bytes(manifest_key(digest_bytes(body)), body)
    return ArtifactRef(name="evil", uri="", digest=digest_bytes(body), size_bytes=7, file_count=1, store=store)


@pytest.mark.parametrize("path", ["../escaped", "a/../../escaped", "/tmp/escaped"])
def test_a_manifest_path_leaving_the_destination_is_refused(tmp_path: Path, path: str) -> None:
    ref = crafted_ref(tmp_path, path)
    with pytest.raises(ArtifactError, match=r"artifact 'evil'.*would leave the artifact directory"):
        fetch_artifact(ref, tmp_path / "dest")
    assert not (tmp_path / "escaped").exists()


def test_a_symlink_in_the_destination_is_not_followed_outside(tmp_path: Path) -> None:
    ref = crafted_ref(tmp_path, "sub/file")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "sub").symlink_to(outside)
    with pytest.raises(ArtifactError, match=r"would be written outside .*through a symlink"):
        fetch_artifact(ref, tmp_path / "dest")
    assert list(outside.iterdir()) == []


def test_an_output_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not part of the output")
    out = tmp_path / "out"
    out.mkdir()
    (out / "ok.txt").write_text("fine")
    (out / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(ArtifactError, match=r"artifact 'model'.*symlink points outside the output"):
        commit_output(open_store(str(tmp_path / "store")), out, name="model")


def test_links_inside_the_output_are_stored_as_their_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "real" / "w.bin").write_bytes(b"weights")
    (out / "alias").symlink_to(out / "real")
    (out / "loop").symlink_to(out)  # a loop inside the output is walked once, not forever
    ref = commit_output(open_store(str(tmp_path / "store")), out, name="model")
    manifest = Manifest.from_bytes(ref.store.read_bytes(manifest_key(ref.digest)))
    assert [f.path for f in manifest.files] == ["alias/w.bin", "real/w.bin"]
