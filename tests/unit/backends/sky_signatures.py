"""The real SkyPilot SDK's signatures, to hold the fake ``sky`` module to them.

The fake answers what skyflow calls; these helpers check that every call skyflow made would bind to
the real SDK's function of that name (SkyPilot 0.14.1 in ``.venv/skypilot``, made by
tests/services/prepare.sh): a renamed keyword, a positional argument landing on another parameter or
a missing required one fails the test that made the call.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SKY_PYTHON = ROOT / ".venv" / "skypilot" / "bin" / "python"
# Everything skyflow's SkyPilot backend may call; a call to anything else fails the check.
SDK_NAMES = ("launch", "tail_logs", "down", "cancel", "stream_and_get", "jobs.launch", "jobs.tail_logs",
             "jobs.cancel", "serve.up", "serve.down", "serve.status", "Task.from_yaml_config", "Task.update_secrets")

_DESCRIBE = r'''
import inspect, json, sys
import sky
out = {}
for name in sys.argv[1:]:
    obj = sky
    for part in name.split("."):
        obj = getattr(obj, part)
    out[name] = [[p.name, int(p.kind), p.default is not inspect.Parameter.empty]
                 for p in inspect.signature(obj).parameters.values()]
json.dump(out, sys.stdout)
'''


def real_signatures() -> dict[str, inspect.Signature] | None:
    """The real SDK's signatures by dotted name, or None when the SkyPilot venv is not there."""
    if not SKY_PYTHON.exists():
        return None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT / ".venv" / "skypilot")}
    done = subprocess.run([str(SKY_PYTHON), "-c", _DESCRIBE, *SDK_NAMES], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    described = json.loads(done.stdout)
    return {name: inspect.Signature([inspect.Parameter(p, inspect._ParameterKind(kind),
                                                       default=None if has_default else inspect.Parameter.empty)
                                     for p, kind, has_default in params])
            for name, params in described.items()}


@dataclass
class CallShapes:
    """How each SDK function was called: (dotted name, positional count, keyword names)."""

    seen: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)

    def mismatches(self, signatures: dict[str, inspect.Signature]) -> list[str]:
        wrong = []
        for name, positional, keywords in self.seen:
            signature = signatures.get(name)
            if signature is None:
                wrong.append(f"skyflow called sky.{name}, which the check does not know (add it to SDK_NAMES)")
                continue
            try:
                signature.bind(*([None] * positional), **dict.fromkeys(keywords))
            except TypeError as exc:
                wrong.append(f"sky.{name}({positional} positional, keywords {list(keywords)}) does not bind to "
                             f"SkyPilot's {name}{signature}: {exc}")
        return wrong


class Recording:
    """Stands in for the ``sky`` module: passes every access to ``target`` and notes each call's shape.
    A Task made by ``Task.from_yaml_config`` is wrapped too, so its methods are noted with ``self``."""

    def __init__(self, target: Any, shapes: CallShapes, path: str = "") -> None:
        self._target, self._shapes, self._path = target, shapes, path

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        dotted = f"{self._path}.{name}" if self._path else name
        if isinstance(value, (types.SimpleNamespace, type)):
            return Recording(value, self._shapes, dotted)
        if not callable(value):
            return value
        return self._noting(dotted, value)

    def _noting(self, dotted: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        instance = self._path == "Task" and not isinstance(self._target, type)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._shapes.seen.append((dotted, len(args) + (1 if instance else 0), tuple(sorted(kwargs))))
            result = fn(*args, **kwargs)
            return Recording(result, self._shapes, "Task") if dotted == "Task.from_yaml_config" else result

        return call
