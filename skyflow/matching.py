"""Close matches for "did you mean" hints, shared by every layer's error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches"]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``word``, ignoring case (``price`` suggests ``Price``)."""
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[f] for f in found]
