"""Keep secret values out of everything lineage writes: strings, JSON trees and log files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REDACTED = "***"
_CHUNK_BYTES = 1 << 20


class Scrubber:
    """Replaces every occurrence of any secret value with `***`.

    Empty and whitespace-only values are ignored (replacing them would garble everything).
    Longer secrets are matched first, so a secret that contains another is removed whole.
    """

    def __init__(self, secret_values: Sequence[str]) -> None:
        secrets = sorted({s for s in secret_values if s and s.strip()}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in secrets)) if secrets else None
        encoded = [s.encode() for s in secrets]
        self._bytes_pattern = re.compile(b"|".join(re.escape(s) for s in encoded)) if encoded else None
        self._max_bytes = max((len(s) for s in encoded), default=0)

    def text(self, value: str) -> str:
        return self._pattern.sub(REDACTED, value) if self._pattern else value

    def tree(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys included) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        return value

    def copy_file(self, source: Path, target: Path, *, max_bytes: int) -> None:
        """Copy the last `max_bytes` of `source` to `target`, secrets replaced.

        Works on bytes in chunks, so invalid UTF-8 and files larger than memory are fine; a
        secret that straddles two chunks is still caught because each chunk keeps a tail as
        long as the longest secret for the next one.
        """
        size = source.stat().st_size
        skip = max(0, size - max_bytes)
        with source.open("rb") as src, target.open("wb") as dst:
            if skip:
                dst.write(f"[skyflow: the first {skip} bytes of this log were left out]\n".encode())
                src.seek(skip)
            carry = b""
            while chunk := src.read(_CHUNK_BYTES):
                carry = self._emit(carry + chunk, dst, final=False)
            self._emit(carry, dst, final=True)

    def _emit(self, buffer: bytes, dst: Any, *, final: bool) -> bytes:
        if self._bytes_pattern is None:
            dst.write(buffer)
            return b""
        # A match that starts before `safe` lies wholly inside the buffer.
        safe = len(buffer) if final else max(0, len(buffer) - (self._max_bytes - 1))
        pos = 0
        for match in self._bytes_pattern.finditer(buffer):
            if match.start() >= safe:
                break
            dst.write(buffer[pos : match.start()])
            dst.write(REDACTED.encode())
            pos = match.end()
        end = max(pos, safe)
        dst.write(buffer[pos:end])
        return buffer[end:]
