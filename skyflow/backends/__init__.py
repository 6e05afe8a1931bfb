"""Backends: where stage attempts run (this machine, SSH pools, Kubernetes, clouds through SkyPilot).

The protocol is here; each backend's module is imported only when a stage is placed on it
(skyflow.backends.registry), so heavy clients stay optional extras.
"""

from __future__ import annotations

from skyflow.backends.base import (
    Backend,
    Capacity,
    Leftover,
    RemoteHandle,
    RenderingBackend,
    Service,
    ServiceBackend,
    StageExit,
    StageHandle,
    StageLaunch,
    WriteAheadBackend,
)

__all__ = ["Backend", "Capacity", "Leftover", "RemoteHandle", "RenderingBackend", "Service", "ServiceBackend",
           "StageExit", "StageHandle", "StageLaunch", "WriteAheadBackend"]
