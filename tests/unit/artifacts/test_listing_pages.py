"""A bounded, paged prefix listing: pages followed to the end or cut at the budget, in S3's and GCS's
answer shapes (the same calls against moto and fake-gcs-server are in
tests/integration/artifacts/test_artifact_listing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from skyflow.artifacts.listing import (
    LISTED_KEYS_PER_HEAD,
    PAGE_KEYS,
    PrefixListing,
    list_sizes,
    listing_budget,
)

KEYS = [(f"blobs/sha256/ab/{i:04d}", i) for i in range(25)]


class S3Pages:
    """Answers list_objects_v2 as S3 does: MaxKeys per page, a continuation token while truncated."""

    def __init__(self, keys: list[tuple[str, int]]) -> None:
        self.keys, self.calls = keys, []  # type: ignore[var-annotated]

    def call_s3(self, method: str, **kwargs: Any) -> dict[str, Any]:
        assert method == "list_objects_v2"
        self.calls.append(kwargs)
        start = int(kwargs.get("ContinuationToken", 0))
        matching = [(k, s) for k, s in self.keys if k.startswith(kwargs["Prefix"])]
        page = matching[start:start + kwargs["MaxKeys"]]
        out: dict[str, Any] = {"IsTruncated": start + len(page) < len(matching)}
        if page:
            out["Contents"] = [{"Key": k, "Size": s} for k, s in page]
        if out["IsTruncated"]:
            out["NextContinuationToken"] = str(start + len(page))
        return out


class GcsPages:
    """Answers the objects list as GCS's JSON API does: maxResults per page, nextPageToken while more."""

    def __init__(self, keys: list[tuple[str, int]]) -> None:
        self.keys, self.calls = keys, []  # type: ignore[var-annotated]

    def call(self, method: str, path: str, bucket: str, *, json_out: bool, **kwargs: Any) -> dict[str, Any]:
        assert (method, path, json_out) == ("GET", "b/{}/o", True)
        self.calls.append({"bucket": bucket, **kwargs})
        start = int(kwargs.get("pageToken", 0))
        matching = [(k, s) for k, s in self.keys if k.startswith(kwargs["prefix"])]
        page = matching[start:start + kwargs["maxResults"]]
        out: dict[str, Any] = {}
        if page:  # GCS leaves out `items` when there are none; an object without a size counts 0 bytes
            out["items"] = [{"name": k, "size": str(s)} if s else {"name": k} for k, s in page]
        if start + len(page) < len(matching):
            out["nextPageToken"] = str(start + len(page))
        return out


@pytest.mark.parametrize("fake", [S3Pages, GcsPages])
def test_a_listing_follows_every_page_to_the_end(fake: type) -> None:
    fs = fake([*KEYS, ("other/x", 1)])
    protocol = "s3" if fake is S3Pages else "gcs"
    found = list_sizes(fs, protocol, "bucket/blobs/", max_keys=1000)
    assert found == ({f"bucket/{k}": s for k, s in KEYS}, None)
    assert len(fs.calls) == 1  # 25 keys fit one page of PAGE_KEYS


@pytest.mark.parametrize("fake", [S3Pages, GcsPages])
def test_a_listing_cut_at_its_budget_says_how_far_it_got(fake: type) -> None:
    fs = fake(KEYS)
    protocol = "s3" if fake is S3Pages else "gcs"
    sizes, through = list_sizes(fs, protocol, "bucket/blobs/sha256/", max_keys=10)  # type: ignore[misc]
    assert sizes == {f"bucket/{k}": s for k, s in KEYS[:10]}
    assert through == "bucket/blobs/sha256/ab/0009"
    assert [c.get("MaxKeys", c.get("maxResults")) for c in fs.calls] == [10]
    many = [(f"blobs/{i:05d}", 1) for i in range(2500)]
    pages = fake(many)
    sizes, through = list_sizes(pages, protocol, "bucket/blobs/", max_keys=1500)  # type: ignore[misc]
    # pages of PAGE_KEYS: the budget is passed within the second, which is kept whole
    assert len(sizes) == 2000 and through == "bucket/blobs/01999" and len(pages.calls) == 2
    pages = fake(many)
    sizes, through = list_sizes(pages, protocol, "bucket/blobs/", max_keys=5000)  # type: ignore[misc]
    assert len(sizes) == 2500 and through is None and len(pages.calls) == 3  # continued to the end


@pytest.mark.parametrize("fake", [S3Pages, GcsPages])
def test_an_empty_prefix_lists_nothing_to_its_end(fake: type) -> None:
    fs = fake(KEYS)
    assert list_sizes(fs, "s3" if fake is S3Pages else "gcs", "bucket/manifests/", max_keys=100) == ({}, None)
    assert fs.calls[0].get("Bucket", fs.calls[0].get("bucket")) == "bucket"


def test_pages_are_never_longer_than_a_store_allows() -> None:
    fs = S3Pages(KEYS)
    list_sizes(fs, "s3", "bucket/blobs/", max_keys=5000)
    assert fs.calls[0]["MaxKeys"] == PAGE_KEYS and fs.calls[0]["Bucket"] == "bucket"
    assert fs.calls[0]["Prefix"] == "blobs/"


def test_other_stores_answer_per_key() -> None:
    assert list_sizes(object(), "file", "/tmp/x", max_keys=10) is None
    assert list_sizes(object(), "az", "c/x", max_keys=10) is None


def test_what_a_listing_settles() -> None:
    whole = PrefixListing("blobs/", {"blobs/a": 1}, through=None)
    assert whole.settles("blobs/zzz") and not whole.settles("manifests/a")
    cut = PrefixListing("blobs/", {"blobs/a": 1}, through="blobs/m")
    assert cut.settles("blobs/m") and cut.settles("blobs/b") and not cut.settles("blobs/n")
    assert listing_budget(7) == 7 * LISTED_KEYS_PER_HEAD
