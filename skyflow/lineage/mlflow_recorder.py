"""MlflowRecorder: scrubs each record, spools it, and sends it to MLflow from a background thread.

The runner never fails because of MLflow and waits on it in one place only: `open_stage`, which
opens a stage's run as the stage starts (its id goes into the stage's environment), waiting until
the store is open and the pipeline run is in it. Every event is first appended to the spool file;
a worker thread sends events in order and marks them done. While the store is unreachable the
worker backs off (1 s doubling to 30 s); each new call and `flush()` make it try again at once;
`close()` tries once more and leaves what is still unsent in the spool, where the next recorder on
the same tracking URI finds and sends it. A caller waiting on the worker gives up as soon as an
HTTP server stops answering its health check, even while the worker is still inside one of MLflow's
own calls (which retries a lost server for minutes). An event the store rejects outright (bad value) is set
aside in `rejected.jsonl` beside the spool rather than blocking the ones after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skyflow.errors import SkyflowError
from skyflow.home import skyflow_home as default_home
from skyflow.lineage.mlflow_client import artifact_root_for
from skyflow.lineage.mlflow_names import TAG_OPENED_EARLY
from skyflow.lineage.mlflow_store import (
    MlflowStore,
    is_rejection,
    pipeline_experiment_tags,
    pipeline_run_tags,
    stage_run_tags,
)
from skyflow.lineage.records import RunInfo, StageRecord, StageRun
from skyflow.lineage.scrub import Scrubber
from skyflow.lineage.spool import SpooledEvent, SpoolFile, orphan_paths, spool_dir
from skyflow.lineage.sqlite_runs import EarlyExperiment, SqliteRunOpener

LOG_ARTIFACT_MAX_BYTES = 16 << 20
HEALTH_TIMEOUT_S = 2.0
BACKOFF_MAX_S = 30.0
# A caller waiting on the worker checks this often that an HTTP server still answers: a worker caught
# in MLflow's own retries (minutes against a server that went away) must not hold a stage or the end.
REACH_POLL_S = 1.0
# How long a starting stage waits for the store to open (importing MLflow, making a new sqlite
# store's tables) and the pipeline run to be in it, before it runs without a run of its own.
OPEN_STAGE_TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


class MlflowRecorder:
    """A LineageRecorder that writes to an MLflow tracking store and never loses a record."""

    def __init__(self, tracking_uri: str, secret_values: Sequence[str], *, skyflow_home: Path | None = None,
                 defer_open_s: float = 0.0) -> None:
        """``defer_open_s``: how long the worker waits before loading MLflow unless something needs the
        store sooner (a stage whose run cannot be opened without it, a flush); a run that hands off
        within that time never loads MLflow in this process."""
        self.tracking_uri = tracking_uri
        self._defer_open_s = defer_open_s
        self._store_wanted = False
        self._scrub = Scrubber(secret_values)
        self._dir = spool_dir(skyflow_home or default_home(), tracking_uri)
        self._spool = SpoolFile.create(self._dir, tracking_uri)
        self._pending: list[SpooledEvent] = []
        self._files: list[SpoolFile] = [self._spool]
        self._adopt_orphans()
        self._cond = threading.Condition()
        self._wake = False
        self._closing = False
        self._handed_off = False
        self._sending = False
        self._store_open = False
        self._store: MlflowStore | None = None
        self._failures = 0
        self._keys: dict[str, str] = {}  # skyflow run id -> run key, for the events after start_run
        self._started: set[str] = set()  # run keys whose pipeline run is in the store
        # Before MLflow has loaded, a stage's run is opened with plain SQL (a sqlite store only).
        self._infos: dict[str, RunInfo] = {}  # run key -> the run as start_run sent it (scrubbed)
        # run key -> (experiment, the pipeline run's id, its tags)
        self._early_parents: dict[str, tuple[EarlyExperiment, str, dict[str, str]]] = {}
        self._early_opener: SqliteRunOpener | None = None
        self._early_looked = False  # whether the store was checked for an opener
        self.last_error: str | None = None
        self._worker = threading.Thread(target=self._run, name="skyflow-lineage", daemon=True)
        self._worker.start()

    # -- the LineageRecorder protocol --------------------------------------------------------------
    def start_run(self, info: RunInfo) -> None:
        scrubbed = self._scrub.tree(info.to_json())
        with self._cond:
            self._keys[info.run_id] = info.run_key or info.run_id
            self._infos[info.run_key or info.run_id] = RunInfo.from_json(scrubbed)
        self._enqueue({"kind": "start_run", "info": scrubbed})

    def open_stage(self, run_id: str, stage: str, timeout_s: float = OPEN_STAGE_TIMEOUT_S) -> StageRun | None:
        """Open the stage's MLflow run now, nested under the pipeline run; None if the store is away.

        Waits (at most ``timeout_s``) only for what the run needs: the store open and the pipeline
        run sent. Creating the run itself is one call (~3 ms on sqlite, ~12 ms on a server).
        """
        with self._cond:
            key = self._keys.get(run_id, run_id)
            early = self._open_early(key, stage)
            if early is not None:
                return early
            store = self._wait_for_parent(key, timeout_s)
        if store is None:
            return None
        try:
            self._check_reachable()
            mlflow_run_id = store.open_stage(key, stage, time.time())
            experiment_id = store.parent_of(key).experiment_id
        except Exception as exc:  # the store went away: the stage runs without a run of its own
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("lineage: cannot open a run for stage %s: %s", stage, exc)
            return None
        return StageRun(self.tracking_uri, experiment_id, mlflow_run_id)

    def record_stage(self, rec: StageRecord) -> None:
        with self._cond:
            key = rec.run_key or self._keys.get(rec.run_id, "")
        data = self._scrub.tree(replace(rec, run_key=key, record_id=rec.record_id or uuid.uuid4().hex).to_json())
        log_copy = self._copy_log(rec.log_path) if rec.log_path else None
        node_runs = [self._collect_node_runs(uri, key) for uri, key in rec.node_mlflow]
        self._enqueue({"kind": "stage", "record": data, "log_copy": log_copy,
                       "node_runs": [path for path in node_runs if path is not None]})

    def end_run(self, run_id: str, state: str, totals: dict[str, Any]) -> None:
        with self._cond:
            key = self._keys.get(run_id, run_id)
        payload = {"kind": "end_run", "run_id": run_id, "run_key": key, "state": state, "totals": totals,
                   "ended_at": time.time()}
        self._enqueue(self._scrub.tree(payload))

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what can be sent within `timeout_s`; the rest stays spooled for the next recorder."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._worker.join(timeout=1.0)
        if self._worker.is_alive():
            return  # stuck in a slow call; the spool files stay locked until this process ends
        for spool in self._files:
            spool.close()
        self._files.clear()

    def hand_off(self) -> bool:
        """Leave what is unsent to a background process, so that a short run need not wait.

        Only while a local store (sqlite, file) is not open yet — deferred, or in the seconds of
        importing MLflow — and nothing is being sent: the worker then stops before its first send, the spool
        files are unlocked, and `python -m skyflow.lineage.drain` adopts and sends them. Records
        are already scrubbed and on disk, so none is lost; a reader waits for the drain
        (`wait_for_drain`). Returns False when the caller should `close()` as usual.
        """
        if urlparse(self.tracking_uri).scheme in ("http", "https") or self._store_open:
            return False
        with self._cond:
            if not self._pending or self._sending:
                return False
            self._handed_off = True
            self._cond.notify_all()
        for spool in self._files:
            spool.close()
        self._files.clear()
        start_drain(self.tracking_uri, self._dir.parent.parent)
        return True

    # -- buffering ---------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Events not yet accepted by the store."""
        with self._cond:
            return len(self._pending)

    @property
    def spool_path(self) -> Path:
        return self._spool.path

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Try to send everything now; True when nothing is left.

        Returns False as soon as an attempt has failed (the store is down) or after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if not self._pending:
                return True
            failures = self._failures
            self._wake = self._store_wanted = True
            self._cond.notify_all()
            while self._pending and self._failures == failures:
                left = deadline - time.monotonic()
                if left <= 0 or not self._worker.is_alive() or not self._wait_while_answering(left):
                    break
            return not self._pending

    def _open_early(self, key: str, stage: str) -> StageRun | None:
        """The stage's run made with plain SQL while MLflow is still loading (the pipeline's experiment
        too, in a new store or for a new pipeline); None when the store is open already, or is not a
        sqlite store this knows (nor a new one made from the template).

        Called holding the condition: the worker cannot open the store meanwhile, so the pipeline
        run made here is in the store before the worker's start_run looks for it (no second parent).
        """
        info = self._infos.get(key)
        if self._store_open or info is None:
            return None
        if not self._early_looked:
            self._early_looked = True
            self._early_opener = SqliteRunOpener.for_uri(self.tracking_uri)
        opener = self._early_opener
        if opener is None:
            return None
        try:
            if key not in self._early_parents:
                experiment = opener.experiment(info.pipeline)
                root = artifact_root_for(self.tracking_uri)
                if experiment is None and root is not None:
                    experiment = opener.create_experiment(info.pipeline, root, pipeline_experiment_tags(info.pipeline))
                if experiment is None:
                    return None
                run_tags = pipeline_run_tags(info)
                parent_id = opener.find_pipeline_run(experiment.experiment_id, key) or opener.create_run(
                    experiment, info.run_id, {**run_tags, TAG_OPENED_EARLY: "1"}, info.started_at)
                self._early_parents[key] = (experiment, parent_id, run_tags)
            experiment, parent_id, run_tags = self._early_parents[key]
            tags = {**stage_run_tags(run_tags, parent_id, stage), "skyflow.state": "running"}
            run_id = opener.create_run(experiment, stage, tags)
        except sqlite3.Error as exc:  # busy past its timeout, or changed under us: MLflow's way
            self._early_opener = None
            log.debug("lineage: cannot open a run for stage %s without MLflow: %s", stage, exc)
            return None
        return StageRun(self.tracking_uri, experiment.experiment_id, run_id)

    def _wait_for_parent(self, key: str, timeout_s: float) -> MlflowStore | None:
        """The open store once the pipeline run ``key`` is in it; None after a failed send or the timeout.
        Called holding the condition."""
        deadline = time.monotonic() + timeout_s
        failures = self._failures
        if key not in self._started:
            self._wake = self._store_wanted = True  # a worker backing off (or deferring) tries at once
            self._cond.notify_all()
        while key not in self._started and self._failures == failures and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0 or not self._worker.is_alive() or self._handed_off or not self._wait_while_answering(left):
                break
        return self._store if key in self._started else None

    def _wait_while_answering(self, left: float) -> bool:
        """Wait on the condition (held) for at most ``left`` seconds; False when a whole poll went by
        without news and an HTTP server no longer answers its health check (kept in ``last_error``).
        The check holds the condition for at most HEALTH_TIMEOUT_S; the worker only waits to report."""
        if self._cond.wait(min(left, REACH_POLL_S)):
            return True
        try:
            self._check_reachable()
        except OSError as exc:  # URLError, a refused or timed-out connection, an HTTP error status
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def _enqueue(self, payload: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(self._spool.append(payload))
            self._wake = True
            self._cond.notify_all()

    def _copy_log(self, log_path: str) -> str | None:
        source = Path(log_path)
        if not source.is_file():
            return None
        target = self._dir / f"log-{uuid.uuid4().hex[:12]}" / source.name
        target.parent.mkdir(parents=True)
        self._scrub.copy_file(source, target, max_bytes=LOG_ARTIFACT_MAX_BYTES)
        return str(target)

    def _collect_node_runs(self, store_uri: str, key: str) -> str | None:
        """What a remote attempt logged to its local MLflow store, fetched beside the spool and
        scrubbed (this process knows the secrets; the one that sends may not)."""
        from skyflow.lineage.node_replay import collect_node_runs

        folder = self._dir / f"node-{uuid.uuid4().hex[:12]}"
        try:
            captured = collect_node_runs(store_uri, key, folder / "store")
        except (SkyflowError, OSError, ValueError) as exc:
            self.last_error = f"cannot fetch the MLflow records a node carried back from {store_uri}/{key}: {exc}"
            log.warning("lineage: %s", self.last_error)
            captured = None
        if captured is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        target = folder / "runs.json"
        target.write_text(json.dumps(self._scrub.tree(captured)), encoding="utf-8")
        return str(target)

    def _adopt_orphans(self) -> None:
        for path in orphan_paths(self._dir, self._spool.path):
            adopted = SpoolFile.adopt(path)
            if adopted is None:
                continue
            spool, events = adopted
            self._files.append(spool)
            self._pending.extend(events)

    # -- the worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        # Opening the store costs seconds (imports, schema check): begin now, while the run starts,
        # rather than when the first event arrives (after the deferral, if any, unless wanted sooner).
        # A store that is away is retried with the events.
        if not self._defer():
            return
        store: MlflowStore | None = None
        try:
            store = self._open_store()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("lineage: %s unreachable: %s", self.tracking_uri, exc)
        backoff_s = 1.0
        while True:
            with self._cond:
                if not self._wake and not self._closing:
                    self._cond.wait(backoff_s if self._pending else None)
                if self._closing or self._handed_off:
                    return
                self._wake = False
                batch = list(self._pending)
                self._sending = bool(batch)
            ok = True
            if batch:
                try:
                    store = store or self._open_store()
                    self._send(store, batch)
                except Exception as exc:  # the store is away; keep the events and try later
                    ok = False
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.debug("lineage: %s unreachable: %s", self.tracking_uri, exc)
                finally:
                    with self._cond:
                        self._sending = False
            backoff_s = 1.0 if ok else min(backoff_s * 2, BACKOFF_MAX_S)
            with self._cond:
                self._failures += 0 if ok else 1
                self._cond.notify_all()

    def _defer(self) -> bool:
        """Wait out the deferral; False when the records were handed off (or the recorder closed) meanwhile."""
        deadline = time.monotonic() + self._defer_open_s
        with self._cond:
            while not (self._store_wanted or self._closing or self._handed_off):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return not (self._closing or self._handed_off)

    def _open_store(self) -> MlflowStore:
        self._check_reachable()
        store = MlflowStore(self.tracking_uri)
        with self._cond:
            self._store, self._store_open = store, True
        return store

    def _check_reachable(self) -> None:
        """Fail fast for a server that is down; MLflow's own client would retry for minutes."""
        if urlparse(self.tracking_uri).scheme not in ("http", "https"):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            response.read()

    def _send(self, store: MlflowStore, batch: list[SpooledEvent]) -> None:
        self._check_reachable()
        for event in batch:
            try:
                self._send_one(store, event)
            except Exception as exc:
                if not is_rejection(exc):
                    event.attempts += 1
                    raise
                self._set_aside(event, exc)
            self._done(event)

    def _send_one(self, store: MlflowStore, event: SpooledEvent) -> None:
        payload, retry = event.payload, event.attempts > 0
        if payload["kind"] == "start_run":
            info = RunInfo.from_json(payload["info"])
            store.start_run(info, retry=retry)
            with self._cond:  # a stage waiting in open_stage may go on now
                self._started.add(info.run_key or info.run_id)
                self._cond.notify_all()
        elif payload["kind"] == "stage":
            log_copy = Path(payload["log_copy"]) if payload.get("log_copy") else None
            if log_copy is not None and not log_copy.is_file():
                log_copy = None
            node_runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in payload.get("node_runs", [])
                         if Path(p).is_file()]
            store.record_stage(StageRecord.from_json(payload["record"]), log_copy=log_copy, retry=retry,
                               node_runs=node_runs)
        elif payload["kind"] == "end_run":
            store.end_run(payload.get("run_key") or payload["run_id"], payload["state"], payload["totals"],
                          ended_at=payload.get("ended_at"))

    def _done(self, event: SpooledEvent) -> None:
        for path in event.payload.get("node_runs", []):
            shutil.rmtree(Path(path).parent, ignore_errors=True)
        log_copy = event.payload.get("log_copy")
        if log_copy:
            Path(log_copy).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                Path(log_copy).parent.rmdir()
        with self._cond:
            event.file.mark_done(event)
            self._pending.remove(event)

    def _set_aside(self, event: SpooledEvent, exc: BaseException) -> None:
        self.last_error = f"rejected by {self.tracking_uri}: {exc}"
        log.warning("lineage: %s; the record is kept in %s", self.last_error, self._dir / "rejected.jsonl")
        with (self._dir / "rejected.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"error": str(exc), "event": event.payload}) + "\n")


def start_drain(tracking_uri: str, skyflow_home: Path) -> None:
    """A detached process that sends the spooled records of recorders that handed off."""
    import os
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-m", "skyflow.lineage.drain", tracking_uri, str(skyflow_home)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
