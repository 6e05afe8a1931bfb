"""Schedules as the CLI and Python callers use them: build from a pipeline, add, trigger, list."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from skyflow.errors import SchedulerError
from skyflow.scheduler.decisions import Fire
from skyflow.scheduler.launch import RunLauncher
from skyflow.scheduler.store import FireRow, ScheduleRecord, ScheduleStore
from skyflow.scheduler.timing import next_tick
from skyflow.scheduler.watch import observe

log = logging.getLogger("skyflow.scheduler")

CONCURRENCY = ("forbid", "allow", "replace")
CATCHUP = ("latest", "all", "none")


def watched_location(inputs: dict[str, str], base_dir: str, ref: str) -> str:
    """An on_change entry as a path or URI fsspec opens: an input's URI, relative paths from the pipeline."""
    uri = inputs.get(ref, ref)
    if "://" in uri and not uri.startswith("file://"):
        return uri
    path = Path(uri.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else Path(base_dir) / path)


def _absolute_target(target: str) -> str:
    path, sep, func = target.partition(":") if target.split(":", 1)[0].endswith(".py") else (target, "", "")
    return str(Path(path).resolve()) + (sep + func if sep else "")


def schedule_from_pipeline(target: str, *, name: str | None = None, cron: str | None = None,
                           timezone: str | None = None, on_change: tuple[str, ...] = (),
                           concurrency: str | None = None, catchup: str | None = None,
                           run_args: tuple[str, ...] = ()) -> ScheduleRecord:
    """The pipeline's `schedule:` block, with any option given here taking its place."""
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.models import Schedule

    pipeline = load_pipeline(target)
    base = pipeline.spec.schedule
    fields: dict[str, Any] = base.model_dump() if base else {}
    given = {"cron": cron, "timezone": timezone, "on_change": on_change or None, "concurrency": concurrency,
             "catchup": catchup}
    fields.update({k: v for k, v in given.items() if v is not None})
    if not fields.get("cron") and not fields.get("on_change"):
        raise SchedulerError(f"{target} has no schedule: block; give --cron '0 3 * * 1' and/or --on-change INPUT")
    try:
        schedule = Schedule.model_validate(fields)
    except ValueError as exc:
        raise SchedulerError(f"{target}: bad schedule: {exc}") from exc
    watched = []
    for ref in schedule.on_change:
        if ref not in pipeline.spec.inputs and "://" not in ref and not Path(ref).is_absolute():
            from skyflow.matching import close_matches

            matches = close_matches(ref, list(pipeline.spec.inputs))
            raise SchedulerError(f"on_change: {ref!r} is no input of {pipeline.name} and no URI"
                                 + (f"; did you mean {', '.join(matches)}?" if matches else ""))
        inputs = {name: spec.uri for name, spec in pipeline.spec.inputs.items()}
        watched.append((ref, watched_location(inputs, pipeline.base_dir, ref)))
    return ScheduleRecord(name=name or pipeline.name, target=_absolute_target(target), pipeline=pipeline.name,
                          cron=schedule.cron, timezone=schedule.timezone, on_change=tuple(watched),
                          concurrency=schedule.concurrency, catchup=schedule.catchup, params=dict(schedule.params),
                          run_args=run_args)


def add_schedule(store: ScheduleStore, record: ScheduleRecord, now_s: float | None = None) -> ScheduleRecord:
    """Store ``record`` and take the watched inputs' fingerprints as the baseline changes are seen against."""
    now_s = time.time() if now_s is None else now_s
    saved = store.save(record, now_s)
    seen = store.fingerprints(saved.name)
    for ref, uri in saved.on_change:
        old = seen.get(ref)
        if old is not None and store.watched_uri(saved.name, ref) == uri:
            continue
        try:
            fingerprint, _ = observe(uri, None)
        except SchedulerError as exc:  # adding needs no data: the scheduler takes the baseline when it can
            log.warning("schedule %s: no baseline of %s yet (the scheduler takes it on its first look): %s",
                        saved.name, ref, exc)
            continue
        store.save_fingerprint(None, saved.name, ref, uri, fingerprint, now_s)
    return saved


def next_fire(record: ScheduleRecord, now_s: float) -> float | None:
    if record.cron is None or record.paused:
        return None
    return next_tick(record.cron, record.timezone, max(now_s, record.watermark_at))


def trigger_now(store: ScheduleStore, launcher: RunLauncher, name: str, now_s: float | None = None) -> FireRow:
    """Start a run of ``name`` now, outside its cron, honouring its concurrency policy."""
    now_s = time.time() if now_s is None else now_s
    record = store.get(name)
    open_fires = [f for f in store.fires(name, open_only=True) if f.state != "started" or launcher.outcome(f) is None]
    if open_fires and record.concurrency == "forbid":
        raise SchedulerError(f"schedule {name!r} has run {open_fires[0].run_id} going (concurrency: forbid); "
                             f"wait for it or `skyflow cancel {open_fires[0].run_id}`")
    if record.concurrency == "replace":
        for fire in open_fires:
            launcher.cancel(fire)
    claimed = store.claim(None, name, (Fire(f"manual:{now_s:.6f}", "manual trigger"),), None, now_s)
    if not claimed:
        raise SchedulerError(f"schedule {name!r}: a manual run was just started; try again")
    fire = claimed[0]
    pid, log_path = launcher.start(record, fire)
    store.mark_started(name, fire.fire_key, pid, log_path)
    return store.fire(name, fire.fire_key)


__all__ = ["add_schedule", "next_fire", "schedule_from_pipeline", "trigger_now", "watched_location"]
