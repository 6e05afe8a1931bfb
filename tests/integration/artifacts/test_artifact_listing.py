"""Many-key presence checks on real stores: one bounded listing, HEADs only past where it stopped."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from skyflow.artifacts import open_store
from skyflow.artifacts.listing import LISTED_KEYS_PER_HEAD
from skyflow.artifacts.refs import BLOBS, blob_key

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stores")]


def digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_a_listing_cut_short_still_answers_every_key(kind: str, request: pytest.FixtureRequest) -> None:
    server: Any = request.getfixturevalue(f"{kind}_server")
    store = open_store(server.new_uri(), server.storage_options, create=True)
    stored = {blob_key(digest(i)): i % 7 + 1 for i in range(400)}
    store.map_concurrently(lambda item: store.write_bytes(item[0], b"x" * item[1]), list(stored.items()))
    asked = list(stored)[::40] + [blob_key(digest(i)) for i in range(1000, 1005)]  # 10 present, 5 absent

    listing = store.list_prefix(f"{BLOBS}/", wanted_keys=len(asked))
    assert listing is not None and listing.through is not None  # 400 keys > a budget of 150
    assert len(listing.sizes) >= len(asked) * LISTED_KEYS_PER_HEAD
    assert any(not listing.settles(key) for key in asked), "every asked key fell inside the listing"

    sizes = store.sizes_of(asked)
    assert sizes == {key: stored.get(key) for key in asked}


def test_a_complete_listing_settles_absent_keys(s3_server: Any) -> None:
    store = open_store(s3_server.new_uri(), s3_server.storage_options, create=True)
    present = [blob_key(digest(i)) for i in range(10)]
    store.map_concurrently(lambda key: store.write_bytes(key, b"x"), present)
    absent = blob_key(digest(99))
    listing = store.list_prefix(f"{BLOBS}/", wanted_keys=20)
    assert listing is not None and listing.through is None
    assert listing.settles(absent) and absent not in listing.sizes
    assert store.sizes_of([*present, absent]) == {**dict.fromkeys(present, 1), absent: None}


def test_stores_without_an_ordered_listing_answer_per_key(azure_server: Any, tmp_path: Any) -> None:
    for store in (open_store(azure_server.new_uri(), azure_server.storage_options, create=True),
                  open_store(str(tmp_path / "local"))):
        assert store.list_prefix(f"{BLOBS}/", wanted_keys=100) is None
        keys = [blob_key(digest(i)) for i in range(12)]
        for key in keys[:6]:
            store.write_bytes(key, b"ab")
        assert store.sizes_of(keys) == {k: (2 if i < 6 else None) for i, k in enumerate(keys)}
