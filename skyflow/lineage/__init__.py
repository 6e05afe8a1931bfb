"""Lineage: what each run and stage read and wrote, recorded in MLflow (or nowhere), and traced back."""

from __future__ import annotations

from skyflow.lineage.recorder import LineageRecorder, NullRecorder, open_recorder, resolve_tracking_uri
from skyflow.lineage.records import LineageNode, Producer, RunInfo, StageRecord

__all__ = ["LineageNode", "LineageRecorder", "NullRecorder", "Producer", "RunInfo", "StageRecord", "open_recorder",
           "resolve_tracking_uri"]
