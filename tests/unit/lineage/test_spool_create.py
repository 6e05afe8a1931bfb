"""A new spool file is never adopted by another recorder between its creation and its lock."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from skyflow.lineage.spool import SpoolFile, orphan_paths


def test_a_recorder_adopting_orphans_at_the_moment_another_creates_its_file_does_not_take_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "spool"
    adopted: list[Any] = []
    real_flock = fcntl.flock

    looking = [False]

    def flock_after_another_recorder_looked(fd: int, operation: int) -> None:
        if not looking[0]:  # another run's recorder, starting at this very moment, adopts what it can lock
            looking[0] = True
            for path in orphan_paths(directory, tmp_path / "none.jsonl"):
                found = SpoolFile.adopt(path)
                if found is not None:
                    adopted.append(found)
            looking[0] = False
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_another_recorder_looked)  # the fcntl the spool uses
    created = SpoolFile.create(directory, "sqlite:///x.db")
    assert adopted == []
    assert created.path.suffix == ".jsonl" and created.path.exists()
    assert [p.name for p in directory.iterdir() if p.name.endswith(".creating")] == []
