"""Which objects a store holds under a prefix: one bounded, paged listing instead of a HEAD per key.

A listing page names up to 1000 keys in one request, so checking many blobs by listing their prefix
is far cheaper than one HEAD each, as long as the prefix does not hold vastly more keys than are
asked about. The listing therefore stops after a budget of keys; S3 and GCS list in key order, so
a listing cut short still settles every key up to the last one it returned, and only the keys past
it need a HEAD. Azure, local disk and the rest answer per key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PAGE_KEYS = 1000
# A listed key costs about this fraction of a HEAD: a 1000-key page is priced like 12.5 HEADs on S3,
# and on a moto server a listed key took 0.2 ms against 3.4 ms per HEAD (16 in flight).
LISTED_KEYS_PER_HEAD = 10
# Below this many keys a listing's fixed cost outweighs the HEADs it saves.
MIN_KEYS_TO_LIST = 8


@dataclass(frozen=True)
class PrefixListing:
    """Sizes of the keys found under ``prefix``; every key at most ``through`` was seen
    (``through`` is None when the listing reached the end of the prefix)."""

    prefix: str
    sizes: dict[str, int]
    through: str | None

    def settles(self, key: str) -> bool:
        """Whether this listing says for certain if ``key`` is present."""
        return key.startswith(self.prefix) and (self.through is None or key <= self.through)


def listing_budget(wanted_keys: int) -> int:
    """How many keys a listing may read before HEADs for ``wanted_keys`` keys would be cheaper."""
    return wanted_keys * LISTED_KEYS_PER_HEAD


def list_sizes(fs: Any, protocol: str, path: str, max_keys: int) -> tuple[dict[str, int], str | None] | None:
    """(path -> size, last path seen if cut short) under ``path``, or None where no ordered paged
    listing is available (the caller then asks per key). ``path`` is ``bucket/prefix``."""
    bucket, _, prefix = path.partition("/")
    if protocol == "s3":
        pages = _s3_pages(fs, bucket, prefix, min(PAGE_KEYS, max_keys))
    elif protocol == "gcs":
        pages = _gcs_pages(fs, bucket, prefix, min(PAGE_KEYS, max_keys))
    else:
        return None
    sizes: dict[str, int] = {}
    for page in pages:
        for key, size in page:
            sizes[f"{bucket}/{key}"] = size
        if len(sizes) >= max_keys:
            return sizes, max(sizes)
    return sizes, None


def _s3_pages(fs: Any, bucket: str, prefix: str, page_keys: int) -> Iterator[list[tuple[str, int]]]:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_keys}
    while True:
        out = fs.call_s3("list_objects_v2", **kwargs)
        yield [(item["Key"], int(item["Size"])) for item in out.get("Contents", [])]
        if not out.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = out["NextContinuationToken"]


def _gcs_pages(fs: Any, bucket: str, prefix: str, page_keys: int) -> Iterator[list[tuple[str, int]]]:
    kwargs: dict[str, Any] = {"prefix": prefix, "maxResults": page_keys}
    while True:
        out = fs.call("GET", "b/{}/o", bucket, json_out=True, **kwargs)
        yield [(item["name"], int(item.get("size", 0))) for item in out.get("items", [])]
        token = out.get("nextPageToken")
        if not token:
            return
        kwargs["pageToken"] = token
