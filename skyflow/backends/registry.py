"""Which backend runs a placement: `local`, `ssh/POOL`, `kubernetes/CONTEXT`, `ray/CLUSTER`, or a cloud via SkyPilot.

Backends are imported only when a stage is placed on them, so heavy clients (kubernetes, sky,
asyncssh, ray) stay optional extras.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skyflow.backends.base import Backend
from skyflow.config import SkyflowConfig
from skyflow.errors import BackendError

__all__ = ["CLOUD_BACKEND", "FACTORIES", "BackendContext", "BackendPool", "backend_kind"]

# infra kind -> "module:factory"; a factory takes a BackendContext and returns a Backend.
FACTORIES: dict[str, str] = {
    "local": "skyflow.backends.local:from_context",
    "kubernetes": "skyflow.backends.kubernetes:from_context",
    "ray": "skyflow.backends.ray_jobs:from_context",
    "skypilot": "skyflow.backends.skypilot:from_context",
    "ssh": "skyflow.backends.ssh:from_context",
}
CLOUD_BACKEND = "skypilot"


@dataclass
class BackendContext:
    """What every backend may need: the user's config, a log listener, parallelism."""

    config: SkyflowConfig = field(default_factory=SkyflowConfig)
    on_line: Callable[[str, str], None] | None = None
    max_parallel: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def backend_kind(infra: str) -> str:
    head = infra.split("/", 1)[0]
    if head in ("k8s",):
        return "kubernetes"
    if head in FACTORIES or head in ("local", "ssh", "kubernetes"):
        return head
    return CLOUD_BACKEND


class BackendPool:
    """Opens each backend once, on first use."""

    def __init__(self, context: BackendContext, opened: Mapping[str, Backend] | None = None) -> None:
        """``opened``: backends by kind already open (a FakeBackend for tests, a preconfigured client)."""
        self.context = context
        self._open: dict[str, Backend] = dict(opened or {})

    def get(self, kind: str) -> Backend:
        if kind not in self._open:
            target = FACTORIES.get(kind)
            if target is None:
                raise BackendError(f"no backend for {kind!r} is available in this installation; "
                                   f"run with --infra local to use this machine", backend=kind)
            module, _, name = target.partition(":")
            factory: Callable[[BackendContext], Backend] = getattr(importlib.import_module(module), name)
            self._open[kind] = factory(self.context)
        return self._open[kind]

    def for_infra(self, infra: str) -> Backend:
        return self.get(backend_kind(infra))
