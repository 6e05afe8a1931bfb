"""Cron and data-change triggers, the scheduler daemon, and exports to other schedulers."""

from __future__ import annotations

from skyflow.scheduler.api import add_schedule, next_fire, schedule_from_pipeline, trigger_now
from skyflow.scheduler.daemon import Scheduler, TickReport
from skyflow.scheduler.decisions import Decision, Fingerprint, Fire, ScheduleView, decide
from skyflow.scheduler.exports import FORMATS, export_schedule
from skyflow.scheduler.launch import RunLauncher
from skyflow.scheduler.store import ScheduleRecord, ScheduleStore

__all__ = ["FORMATS", "Decision", "Fingerprint", "Fire", "RunLauncher", "ScheduleRecord", "ScheduleStore",
           "ScheduleView", "Scheduler", "TickReport", "add_schedule", "decide", "export_schedule", "next_fire",
           "schedule_from_pipeline", "trigger_now"]
