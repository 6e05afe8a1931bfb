"""Two small contracts around moving and removing artifacts: gc's default age (an hour, to the second)
and the byte counts every transfer reports to the progress callback the CLI installs (sizes add up
across transfers; each chunk moved adds to the value)."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest
from fsspec.callbacks import Callback

from skyflow.artifacts import collect_garbage, commit_output, open_store, transfer_artifact
from skyflow.artifacts import garbage as gc_module
from skyflow.artifacts.progress import reporting_transfers_to
from skyflow.artifacts.refs import ArtifactRef, manifest_key
from skyflow.artifacts.store import FsspecStore

NOW = 1_000_000.0


def committed(store: FsspecStore, tmp_path: Path, name: str, files: dict[str, bytes],
              when: float | None = None) -> ArtifactRef:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for path, data in files.items():
        (src / path).write_bytes(data)
    ref = commit_output(store, src, name=name)
    if when is not None:
        for key in store.list_keys(""):
            os.utime(Path(store.root) / key, (when, when))
    return ref


def test_by_default_gc_removes_an_artifact_exactly_an_hour_old(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_module, "time", types.SimpleNamespace(time=lambda: NOW))
    store = open_store(str(tmp_path / "store"), create=True)
    assert isinstance(store, FsspecStore)
    ref = committed(store, tmp_path, "out", {"a.txt": b"an hour of work"}, when=NOW - 3600)

    stats = collect_garbage(store, set())

    assert (stats.manifests_removed, stats.blobs_removed, stats.bytes_freed) == (1, 1, len(b"an hour of work"))
    assert manifest_key(ref.digest) not in store.list_keys("")


def test_transfers_add_what_they_will_move_to_the_callback_size_and_each_file_to_its_value(tmp_path: Path) -> None:
    source = open_store(str(tmp_path / "source"), create=True)
    target = open_store(str(tmp_path / "target"), create=True)
    first = committed(source, tmp_path, "first", {"a": b"0123456789", "b": b"abcde"})
    second = committed(source, tmp_path, "second", {"c": b"xyz"})
    bar = Callback()

    with reporting_transfers_to(bar) as installed:
        assert installed is bar
        transfer_artifact(first, target)
        assert (bar.size, bar.value) == (15, 15)
        transfer_artifact(second, target)
        assert (bar.size, bar.value) == (18, 18)
        transfer_artifact(first, target)  # all there already: nothing more to move
        assert (bar.size, bar.value) == (18, 18)

    other = Callback()
    with reporting_transfers_to(other):
        transfer_artifact(second, open_store(str(tmp_path / "elsewhere"), create=True))
    assert (other.size, other.value) == (3, 3)
    assert (bar.size, bar.value) == (18, 18)  # the block is over: the first callback hears nothing more
