"""Live progress of a run: a rich table on a terminal, plain lines otherwise; stage output streamed
above it, each line prefixed by its stage (coloured per stage on a terminal)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from skyflow.runner.events import INPUTS, LOG, RUN_STARTED, RunEvent

STYLE = {"succeeded": "green", "cached": "cyan", "failed": "red", "skipped": "yellow", "cancelled": "yellow",
         "running": "bold blue", "retrying": "magenta", "pending": "dim"}


PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
# Events for other subscribers (lineage) or too chatty for the plain progress lines.
QUIET_KINDS = frozenset({LOG, INPUTS, RUN_STARTED})


class ProgressView:
    """Receives RunEvents from runner threads and shows them."""

    def __init__(self, stages: list[str], placements: dict[str, str], console: Any | None = None,
                 quiet: bool = False, stream: bool = True) -> None:
        """``quiet``: print nothing (``--json``); ``stream``: show the stages' output lines (off with ``--quiet``)."""
        self._console = console
        self.stream = stream and not quiet
        self.colour = {stage: PALETTE[i % len(PALETTE)] for i, stage in enumerate(stages)}
        self.stages = stages
        self.placements = placements
        self.state = dict.fromkeys(stages, "pending")
        self.started: dict[str, float] = {}
        self.elapsed: dict[str, float] = {}
        self.cost: dict[str, float] = {}
        self.quiet = quiet
        self.live: Any = None
        self._lock = threading.Lock()
        self.moved: tuple[int, int] = (0, 0)  # artifact bytes moved, of those expected
        self.moving_since: float | None = None
        self._shown_at = 0.0

    @property
    def console(self) -> Any:
        """rich's console, made on first use: a quiet view (``--json``) never loads rich."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=False)
        return self._console

    def __enter__(self) -> ProgressView:
        if not self.quiet and self.console.is_terminal:
            from rich.live import Live

            # transient: the run's summary table replaces it at the end (not shown twice)
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def __call__(self, event: RunEvent) -> None:
        if event.kind == LOG:
            self._line(event.stage or "", event.message)
            return
        with self._lock:
            if event.stage is not None:
                if event.kind == "running":
                    self.started[event.stage] = time.monotonic()
                if event.kind in STYLE:
                    self.state[event.stage] = event.kind
                if event.duration_s:
                    self.elapsed[event.stage] = event.duration_s
                self.cost[event.stage] = event.cost_usd
            if self.live is not None:
                self.live.update(self._table())
            elif not self.quiet and event.kind not in QUIET_KINDS:
                print(f"[{time.strftime('%H:%M:%S')}] {self._plain(event)}", flush=True)

    def transfers(self) -> Any:
        """An fsspec Callback for `skyflow.artifacts.progress`: the live table's caption shows the
        artifacts moving once a transfer has taken a few seconds."""
        from fsspec.callbacks import Callback

        view = self

        class _Moved(Callback):  # type: ignore[misc]  # fsspec is untyped
            def call(self, *args: Any, **kwargs: Any) -> None:
                view._moved(int(self.value), int(self.size or 0))

        return _Moved()

    def _moved(self, value: int, size: int) -> None:
        if self.live is None:
            return
        with self._lock:
            now = time.monotonic()
            self.moved = (value, size)
            if value >= size:
                self.moving_since = None
            elif self.moving_since is None:
                self.moving_since = now
            if now - self._shown_at >= 0.25 or value >= size:
                self._shown_at = now
                self.live.update(self._table(), refresh=True)  # no event may come while bytes move

    def _plain(self, event: RunEvent) -> str:
        """One progress line: "train running on local", "train failed: exit 1", "run r1 succeeded"."""
        if event.stage is None and event.kind.startswith("run-"):
            run_id = event.run_id or event.message
            return f"run {run_id} {event.kind.removeprefix('run-')}".replace("  ", " ")
        where = f" on {self.placements.get(event.stage or '', 'local')}" if event.kind == "running" else ""
        detail = f": {event.message}" if event.message and event.kind != "running" else ""
        return f"{event.stage or 'run'} {event.kind}{where}{detail}"

    def _line(self, stage: str, line: str) -> None:
        if not self.stream:
            return
        from rich.text import Text

        with self._lock:
            if self.live is not None:  # printed above the live table
                self.live.console.print(Text.assemble((stage, self.colour.get(stage, "")), " | ", line))
            else:
                print(f"{stage} | {line}", flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        from skyflow.cli.transfer_bar import show_after_s

        caption = None
        if self.moving_since is not None and time.monotonic() - self.moving_since >= show_after_s():
            done, total = self.moved
            caption = f"moving artifacts: {_size(done)} of {_size(total)} ({100 * done / max(total, 1):.0f}%)"
        table = Table(title="stages", title_justify="left", caption=caption, caption_justify="left")
        for column in ("stage", "state", "backend", "elapsed", "cost"):
            table.add_column(column, justify="right" if column in ("elapsed", "cost") else "left")
        for stage in self.stages:
            state = self.state[stage]
            elapsed = self.elapsed.get(stage)
            if elapsed is None and state in ("running", "retrying") and stage in self.started:
                elapsed = time.monotonic() - self.started[stage]
            table.add_row(stage, f"[{STYLE.get(state, '')}]{state}[/]", self.placements.get(stage, "local"),
                          f"{elapsed:.1f}s" if elapsed is not None else "",
                          f"${self.cost.get(stage, 0.0):.2f}" if stage in self.cost else "")
        return table


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1000
    return f"{value:.1f} GB"


def plain_output() -> bool:
    return not sys.stdout.isatty()
