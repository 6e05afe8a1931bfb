"""A write-ahead spool of lineage events, so none is lost while the tracking store is away.

Each recorder appends its events to its own JSON-lines file under
`$SKYFLOW_HOME/lineage-spool/<hash of the tracking URI>/` and holds an exclusive `flock` on it
while it lives. A sent event gets a `{"done": seq}` line. A file whose lock can be taken belongs to
a recorder that is gone (closed with the store down, or killed): the next recorder for the same
tracking URI adopts it, sends what is not done, and deletes it.

Lines are flushed to the OS on each append (not fsynced): a killed process loses nothing, a
machine that loses power may lose the last events.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def spool_dir(skyflow_home: Path, tracking_uri: str) -> Path:
    key = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return skyflow_home / "lineage-spool" / key


@dataclass
class SpooledEvent:
    """One event waiting to be sent; `attempts` counts failed sends (a retry must be idempotent)."""

    file: SpoolFile
    seq: int
    payload: dict[str, Any]
    attempts: int = 0


class SpoolFile:
    """One locked JSON-lines file of events."""

    def __init__(self, path: Path, handle: IO[str], *, owned: bool) -> None:
        self.path = path
        self._handle = handle
        self.owned = owned
        self.open_events = 0
        self._next_seq = 0

    @classmethod
    def create(cls, directory: Path, tracking_uri: str) -> SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "TRACKING_URI").write_text(tracking_uri + "\n")
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a name no other recorder looks for, then given its spool name: a recorder
        # adopting orphans could otherwise lock the new file between its creation and its lock.
        creating = directory / f".{name}.creating"
        handle = creating.open("a+", encoding="utf-8")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = directory / f"{name}.jsonl"
        os.rename(creating, path)
        return cls(path, handle, owned=True)

    @classmethod
    def adopt(cls, path: Path) -> tuple[SpoolFile, list[SpooledEvent]] | None:
        """Lock another recorder's file if that recorder is gone; None while it is alive."""
        try:
            handle = path.open("a+", encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        spool = cls(path, handle, owned=False)
        events = spool._read_pending()
        return spool, events

    def _read_pending(self) -> list[SpooledEvent]:
        self._handle.seek(0)
        events: dict[int, dict[str, Any]] = {}
        for line in self._handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed writer may be cut short
            if "done" in entry:
                events.pop(entry["done"], None)
            elif "seq" in entry:
                events[entry["seq"]] = entry["event"]
                self._next_seq = max(self._next_seq, entry["seq"] + 1)
        self.open_events = len(events)
        # Adopted events may have been half sent already: mark them as retries.
        return [SpooledEvent(self, seq, payload, attempts=1) for seq, payload in sorted(events.items())]

    def append(self, payload: dict[str, Any]) -> SpooledEvent:
        seq = self._next_seq
        self._next_seq += 1
        self._write({"seq": seq, "event": payload})
        self.open_events += 1
        return SpooledEvent(self, seq, payload)

    def mark_done(self, event: SpooledEvent) -> None:
        self.open_events -= 1
        if self.open_events == 0:
            # Nothing pending: start the file afresh instead of letting it grow.
            self._handle.truncate(0)
            self._handle.flush()
        else:
            self._write({"done": event.seq})

    def _write(self, entry: dict[str, Any]) -> None:
        self._handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Release the lock; a file of another recorder with nothing left is deleted first."""
        if self.open_events == 0:
            self.path.unlink(missing_ok=True)
        self._handle.close()


def orphan_paths(directory: Path, own: Path) -> list[Path]:
    """Other recorders' spool files, oldest first."""
    if not directory.is_dir():
        return []
    paths = [p for p in directory.glob("*.jsonl") if p != own]
    return sorted(paths, key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # sent and removed by its recorder meanwhile
        return 0.0
