"""ArtifactRecord read back from plain data (unknown size, store and file count stay unknown; numbers
given as text are read as numbers), and the digest a store key names, whatever folders lead to it."""

from __future__ import annotations

import pytest

from skyflow.artifacts.record import ArtifactRecord
from skyflow.artifacts.refs import digest_of_blob_key, digest_of_manifest_key
from skyflow.errors import ArtifactError

HEX = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
DIGEST = f"sha256:{HEX}"


def test_a_record_without_size_store_or_file_count_keeps_them_unknown() -> None:
    assert ArtifactRecord.from_json({"name": "raw", "uri": "/data/raw", "digest": DIGEST}) == \
        ArtifactRecord(name="raw", uri="/data/raw", digest=DIGEST, size_bytes=None, store_uri=None, file_count=None)


@pytest.mark.parametrize("missing", ["size_bytes", "store_uri", "file_count"])
def test_each_unknown_field_stays_unknown_beside_the_known_ones(missing: str) -> None:
    data = {"name": "model", "uri": "s3://b/runs/manifests/x.json", "digest": DIGEST, "size_bytes": 12,
            "store_uri": "s3://b/runs", "file_count": 3}
    data[missing] = None
    assert ArtifactRecord.from_json(data).to_json() == data


def test_numbers_and_names_given_as_other_types_are_read_as_the_fields_types() -> None:
    record = ArtifactRecord.from_json({"name": 7, "uri": "/u", "digest": DIGEST, "size_bytes": "12",
                                       "store_uri": 5, "file_count": 3.0})
    assert record == ArtifactRecord(name="7", uri="/u", digest=DIGEST, size_bytes=12, store_uri="5", file_count=3)
    assert (type(record.size_bytes), type(record.file_count)) == (int, int)


def test_a_record_missing_its_digest_is_refused_with_what_was_given() -> None:
    with pytest.raises(ArtifactError) as caught:
        ArtifactRecord.from_json({"name": "raw", "uri": "/data/raw"})
    assert str(caught.value) == "not an artifact record: {'name': 'raw', 'uri': '/data/raw'} ('digest')"


@pytest.mark.parametrize("key", [f"{HEX}.json", f"manifests/sha256/{HEX}.json", f"a/b/c/manifests/sha256/{HEX}.json"])
def test_a_manifest_key_names_its_digest_at_any_depth(key: str) -> None:
    assert digest_of_manifest_key(key) == DIGEST


@pytest.mark.parametrize("key", [HEX, f"blobs/sha256/2c/{HEX}", f"a/b/blobs/sha256/2c/{HEX}"])
def test_a_blob_key_names_its_digest_at_any_depth(key: str) -> None:
    assert digest_of_blob_key(key) == DIGEST
