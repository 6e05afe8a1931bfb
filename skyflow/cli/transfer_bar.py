"""A progress bar for artifact transfers on a terminal, shown once a transfer has taken a few seconds.

It is an fsspec Callback: `skyflow.artifacts.progress` tells it the bytes every transfer expects and
moves. Off a terminal it shows nothing (logs and CI get no bar)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fsspec.callbacks import Callback

# A transfer shorter than this shows no bar; SKYFLOW_PROGRESS_AFTER_S changes it (0: at once).
SHOW_AFTER_S = 2.0


def show_after_s() -> float:
    try:
        return max(0.0, float(os.environ.get("SKYFLOW_PROGRESS_AFTER_S", SHOW_AFTER_S)))
    except ValueError:
        return SHOW_AFTER_S


class TransferBar(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A rich bar labelled ``label`` on ``console``'s terminal, started when bytes have been moving
    for ``show_after_s`` seconds."""

    def __init__(self, label: str, console: Any | None = None) -> None:
        super().__init__()
        from rich.console import Console

        self.label = label
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal
        self.delay_s = show_after_s()
        self.started_at: float | None = None
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()

    def call(self, *args: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            self.started_at = self.started_at if self.started_at is not None else now
            if self._progress is None and now - self.started_at >= self.delay_s and self.value < (self.size or 0):
                self._start()
            if self._progress is not None:
                self._progress.update(self._task, total=self.size or None, completed=self.value)

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=self.size or None, completed=self.value)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.update(self._task, total=self.size or None, completed=self.value)
                self._progress.stop()
                self._progress = None

    def __enter__(self) -> TransferBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
