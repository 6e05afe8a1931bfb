"""The base of every spec model: frozen, strict about unknown keys, with close-match hints."""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def close_matches(word: str, candidates: list[str] | tuple[str, ...] | set[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``word`` (case-insensitive)."""
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[f] for f in found]


def custom_error(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    """A pydantic error whose text is final (formatted here) and whose ctx keeps hints/matches."""
    text = message.format(**ctx).replace("{", "{{").replace("}", "}}")
    return PydanticCustomError(kind, text, ctx)


class SpecModel(BaseModel):
    """Frozen model that names unknown keys with close matches and a fix."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Keys people write that mean something else here: key -> how to say it instead.
    unknown_key_hints: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = set(cls.model_fields)
        allowed |= {f.alias for f in cls.model_fields.values() if f.alias}
        for key in data:
            if key in allowed:
                continue
            hint = cls.unknown_key_hints.get(str(key))
            matches = [] if hint else close_matches(str(key), sorted(allowed))
            raise custom_error(
                "unknown_field", "unknown field {field!r}", field=str(key), matches=matches,
                hint=hint or f"Allowed: {', '.join(sorted(allowed))}.",
            )
        return data
