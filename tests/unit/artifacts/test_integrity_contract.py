"""Damage found in a store, exactly: the error's fields, where quarantine moves an object, what a blob
check reports and says."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skyflow.artifacts import Manifest, commit_output, open_store
from skyflow.artifacts.integrity import BlobCheck, DamagedArtifact, check_blobs, quarantine
from skyflow.artifacts.refs import QUARANTINE, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore


def store() -> FsspecStore:
    return open_store(f"memory://integrity-{uuid.uuid4().hex}")


def test_the_error_names_the_artifact_its_digest_and_where_the_bad_objects_went() -> None:
    error = DamagedArtifact("blob missing", artifact="model", uri="s3://b/m", digest="sha256:ab",
                            quarantined=iter(["quarantine/x"]))
    assert (error.artifact, error.uri, error.digest, error.quarantined) == ("model", "s3://b/m", "sha256:ab",
                                                                           ("quarantine/x",))
    assert "blob missing" in str(error)


def test_quarantine_moves_the_object_under_a_dated_unique_name() -> None:
    s = store()
    s.write_bytes("blobs/sha256/ab/abcd", b"bad")
    moved = quarantine(s, "blobs/sha256/ab/abcd")
    assert moved is not None
    assert re.fullmatch(rf"{QUARANTINE}/blobs/sha256/ab/abcd\.\d{{8}}T\d{{6}}Z-[0-9a-f]{{6}}", moved)
    assert s.read_optional("blobs/sha256/ab/abcd") is None and s.read_bytes(moved) == b"bad"
    assert quarantine(s, "blobs/sha256/ab/abcd") is None  # gone already: nothing moved


def test_a_check_reports_absent_and_damaged_blobs_and_quarantines_only_the_damaged(tmp_path: Path) -> None:
    s = store()
    (tmp_path / "out").mkdir()
    for name, data in (("a", b"alpha"), ("b", b"bravo!"), ("c", b"charlie"), ("d", b"delta-delta")):
        (tmp_path / "out" / name).write_bytes(data)
    ref = commit_output(s, tmp_path / "out", name="out")
    manifest = Manifest.from_bytes(s.read_bytes(manifest_key(ref.digest)))
    by_path = {f.path: f for f in manifest.files}
    s.delete([blob_key(by_path["a"].digest)])  # absent
    s.write_bytes(blob_key(by_path["b"].digest), b"short")  # another size
    s.write_bytes(blob_key(by_path["c"].digest), b"CHARLIE")  # same size, other bytes
    total = sum(f.size_bytes for f in manifest.files)

    quick = check_blobs(s, [manifest], rehash=False)
    assert quick == BlobCheck(bad_paths=("a", "b"), bad_digests=frozenset({by_path["a"].digest, by_path["b"].digest}),
                              quarantined=quick.quarantined, blobs=4, total_bytes=total, rehashed=False)
    assert [q.split("/")[-1].split(".")[0] for q in quick.quarantined] == [by_path["b"].digest.split(":")[1]]
    assert quick.describe() == "4 blobs (0.0 MB) present at their sizes (not re-read)"

    full = check_blobs(s, [manifest, manifest], rehash=True)  # the same blobs twice are checked once
    # b was quarantined by the first check: absent now
    assert full.bad_paths == ("a", "b", "c", "a", "b", "c")
    assert full.bad_digests == {by_path[p].digest for p in "abc"}
    assert len(full.quarantined) == 1 and by_path["c"].digest.split(":")[1] in full.quarantined[0]
    assert (full.blobs, full.total_bytes, full.rehashed) == (4, total, True)
    assert s.read_optional(blob_key(by_path["d"].digest)) == b"delta-delta"  # a good blob stays


def test_the_summary_counts_blobs_and_megabytes() -> None:
    one = BlobCheck((), frozenset(), (), blobs=1, total_bytes=2_500_000, rehashed=True)
    assert one.describe() == "1 blob (2.5 MB) re-hashed"
    many = BlobCheck((), frozenset(), (), blobs=3, total_bytes=1_050_000, rehashed=True)
    assert many.describe() == "3 blobs (1.1 MB) re-hashed"


def test_the_quarantine_stamp_is_utc_whatever_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # UTC+05:45: no whole-hour offset can match UTC
    time.tzset()
    try:
        s = store()
        s.write_bytes("blobs/x", b"bad")
        before = datetime.now(UTC).replace(microsecond=0)
        moved = quarantine(s, "blobs/x")
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert moved is not None
    stamped = datetime.strptime(moved.rsplit(".", 1)[1].split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= after
