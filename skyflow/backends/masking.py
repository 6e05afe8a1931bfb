"""Copy a process's output to its log, with every secret value masked as it is captured.

Output is cut into lines at ``\\n`` and at ``\\r`` (a progress bar redrawing itself ends a line), and a
line longer than MAX_LINE_BYTES is cut into pieces of that size, so the memory a stage's output takes
here is bounded whatever the stage prints. A secret that spans several lines (a PEM key) is masked
line by line: each of its lines is a secret of its own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from skyflow.backends.stage_log import StageLog, describe_write_failure

MASK = "********"
MAX_LINE_BYTES = 1 << 20
READ_BYTES = 1 << 16
# Lines of a multi-line secret shorter than this are not masked on their own: "-----" or "==" would
# mask half of any log, and leak next to nothing.
MIN_PIECE_CHARS = 4


def secret_pieces(secrets: Iterable[str]) -> list[str]:
    """The strings to mask for ``secrets``: each value, and each line of a value that spans lines;
    longest first, so that a longer match wins over a part of it."""
    pieces = set()
    for value in secrets:
        if not value:
            continue
        pieces.add(value)
        lines = value.splitlines()
        if len(lines) > 1:
            pieces.update(line.strip() for line in lines if len(line.strip()) >= MIN_PIECE_CHARS)
    return sorted(pieces, key=len, reverse=True)


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    for value in secret_pieces(secrets):
        text = text.replace(value, MASK)
    return text


def masked_lines(chunks: Iterable[bytes], pieces: Sequence[bytes], max_bytes: int = MAX_LINE_BYTES
                 ) -> Iterator[bytes]:
    """Lines (without their ending) of a byte stream, each secret piece replaced by the mask.

    A line ends at ``\n``, ``\r\n`` or ``\r``; a line longer than ``max_bytes`` comes out in pieces
    of that size, or up to a secret's length more where a secret would straddle the cut: the buffer
    never holds much more than ``max_bytes`` and twice the longest secret.
    """
    keep = max((len(p) for p in pieces), default=1)
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        start = yield from _drain(buf, pieces, max_bytes, keep, final=False)
        del buf[:start]
    yield from _drain(buf, pieces, max_bytes, keep, final=True)


def _drain(buf: bytearray, pieces: Sequence[bytes], max_bytes: int, keep: int, *,
           final: bool) -> Generator[bytes, None, int]:
    """Yield the lines that are complete in ``buf``; returns where the rest starts."""
    start = 0
    while start < len(buf):
        limit = start + max_bytes + 1
        ends = [i for i in (buf.find(b"\n", start, limit), buf.find(b"\r", start, limit)) if i >= 0]
        if ends:
            end = min(ends)
            if buf[end] == 0x0D and end + 1 == len(buf) and not final:
                break  # may be the first half of "\r\n": wait for the next chunk
            crlf = buf[end:end + 2] == b"\r\n"
            line = bytes(buf[start:end])
            start = end + (2 if crlf else 1)
            if line or buf[end] == 0x0A or crlf:  # a bare "\r" right after a line end adds no line
                yield _mask(line, pieces)
            continue
        if len(buf) - start < max_bytes + 2 * keep and not final:
            break  # wait: a secret may straddle where the line would be cut
        cut = _safe_cut(buf, start, start + max_bytes, pieces) if len(buf) - start > max_bytes else len(buf)
        yield _mask(bytes(buf[start:cut]), pieces)
        start = cut
    return start


def _safe_cut(buf: bytearray, start: int, cut: int, pieces: Sequence[bytes]) -> int:
    """``cut``, moved forward past any secret that would straddle it (so a piece may run a secret's
    length past the limit)."""
    moved = True
    while moved and cut < len(buf):
        moved = False
        for piece in pieces:
            at = buf.find(piece, max(start, cut - len(piece) + 1), cut + len(piece) - 1)
            if at >= 0 and at < cut < at + len(piece):
                cut, moved = at + len(piece), True
    return min(cut, len(buf))


def _mask(data: bytes, pieces: Sequence[bytes]) -> bytes:
    for piece in pieces:
        data = data.replace(piece, MASK.encode())
    return data


class LogPump(threading.Thread):
    """Reads a pipe, cuts it into bounded lines, masks secrets, appends to the log, and hands lines to a
    listener.

    A write to the log that fails (a full disk) is kept in ``error`` and the log is written no more,
    but the pipe is still read to its end and lines still reach the listener: the process writing
    into the pipe never blocks on a pump that died. Its owner decides what the failure means.
    """

    def __init__(self, source: IO[bytes], log: IO[bytes] | StageLog, secrets: Sequence[str], prefix: str = "",
                 on_line: Callable[[str], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.log = log
        self.pieces = [p.encode() for p in secret_pieces(secrets)]
        self.prefix = prefix
        self.on_line = on_line
        self.error: OSError | None = None

    def run(self) -> None:
        read = getattr(self.source, "read1", self.source.read)  # what the pipe has, without waiting for more

        def chunks() -> Iterator[bytes]:
            while True:
                self._to_log(self.log.flush)  # everything read so far is in the log before waiting for more
                chunk = read(READ_BYTES)
                if not chunk:
                    return
                yield chunk

        for raw in masked_lines(chunks(), self.pieces):
            line = self.prefix + raw.decode("utf-8", "replace")
            self._to_log(functools.partial(self.log.write, (line + "\n").encode()))
            if self.on_line:
                self.on_line(line)
        self._to_log(self.log.flush)
        self.source.close()

    def _to_log(self, action: Callable[[], object]) -> None:
        if self.error is not None:
            return
        try:
            action()
        except OSError as exc:
            self.error = exc


def main(argv: list[str]) -> int:
    """`python -m skyflow.backends.masking LOG`: copy stdin to LOG with secrets masked.

    Long-running service processes outlive the runner, so their output goes through this small
    process instead of a thread of the runner. Secret values arrive in SKYFLOW_MASK_VALUES (JSON),
    the log's size limit in SKYFLOW_LOG_MAX_BYTES. A log that cannot be written (a full disk) is
    given up, with one line on stderr; the service's output is still read, so it never blocks.
    """
    import json
    import os
    import sys

    secrets = json.loads(os.environ.pop("SKYFLOW_MASK_VALUES", "[]"))
    limit = os.environ.pop("SKYFLOW_LOG_MAX_BYTES", "")
    log = StageLog(Path(argv[0]), int(limit) if limit.isdigit() else None)
    try:
        pump = LogPump(sys.stdin.buffer, log, secrets)
        pump.run()
    finally:
        log.close()
    if pump.error is not None:
        print(f"skyflow: service log: {describe_write_failure(log.path, pump.error)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
