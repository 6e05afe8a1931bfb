"""ArtifactRecord: one artifact as plain data (where it is, its digest, its store), the same everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from skyflow.errors import ArtifactError

__all__ = ["ArtifactRecord"]


@dataclass(frozen=True)
class ArtifactRecord:
    """A committed artifact (its manifest's URI in ``store_uri``), or data outside any store.

    Run state, backends, nodes and lineage all pass artifacts as this record; `ArtifactRef` is the
    same record with its store opened. ``store_uri`` is None only for data that lives at its own
    location (a pipeline input as lineage shows it); ``size_bytes``/``file_count`` may be unknown.
    """

    name: str
    uri: str
    digest: str
    size_bytes: int | None = None
    store_uri: str | None = None
    file_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtifactRecord:
        try:
            size, count, store = data.get("size_bytes"), data.get("file_count"), data.get("store_uri")
            return cls(name=str(data["name"]), uri=str(data["uri"]), digest=str(data["digest"]),
                       size_bytes=None if size is None else int(size), store_uri=None if store is None else str(store),
                       file_count=None if count is None else int(count))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"not an artifact record: {dict(data)!r} ({exc})") from exc
