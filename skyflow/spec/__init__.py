"""What the user asked for: pipeline and stage models, YAML with positions, the @stage decorators.

Names are imported on first use (pydantic models load only when a pipeline does).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PipelineSpec": "skyflow.spec.models",
    "Stage": "skyflow.spec.models",
    "Service": "skyflow.spec.models",
    "Resources": "skyflow.spec.resources",
    "Accelerator": "skyflow.spec.resources",
    "ResolvedPipeline": "skyflow.spec.graph",
    "load_pipeline": "skyflow.spec.loader",
    "resolve_decorated": "skyflow.spec.loader",
}

__all__ = ["Accelerator", "PipelineSpec", "ResolvedPipeline", "Resources", "Service", "Stage", "load_pipeline",
           "resolve_decorated"]

if TYPE_CHECKING:
    from skyflow.spec.graph import ResolvedPipeline
    from skyflow.spec.loader import load_pipeline, resolve_decorated
    from skyflow.spec.models import PipelineSpec, Service, Stage
    from skyflow.spec.resources import Accelerator, Resources


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skyflow.spec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
