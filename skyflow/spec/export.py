"""Write a validated pipeline back as YAML in the user's own forms ('A100:8', '8+'), params still params."""

from __future__ import annotations

import io
from typing import Any

from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.models import PipelineSpec, Stage
from skyflow.spec.resources import Resources


def resources_to_data(res: Resources) -> dict[str, Any]:
    data = res.model_dump(mode="json", exclude_defaults=True)
    if res.accelerators:
        data["accelerators"] = ", ".join(str(a) for a in res.accelerators) if len(res.accelerators) == 1 \
            else [str(a) for a in res.accelerators]
    for name in ("cpus", "memory"):
        value = getattr(res, name)
        if value is not None:
            data[name] = str(value) if value.at_least or value.per_cpu else _number(value.amount)
    if res.ports:
        data["ports"] = [int(p) if p.isdigit() else p for p in res.ports]
    for key in ("any_of", "ordered"):
        if getattr(res, key):
            data[key] = [resources_to_data(r) for r in getattr(res, key)]
    return data


def stage_to_data(stage: Stage) -> dict[str, Any]:
    data = stage.model_dump(mode="json", exclude_defaults=True, exclude={"task"})
    resources = resources_to_data(stage.resources)
    if resources:
        data["resources"] = resources
    else:
        data.pop("resources", None)
    if stage.estimate.hours:
        hours = stage.estimate.hours
        data["estimate"] = {"hours": hours["default"] if list(hours) == ["default"] else dict(hours)}
    if stage.outputs:
        data["outputs"] = {k: v.model_dump(exclude_defaults=True) for k, v in stage.outputs.items()}
    return data


def spec_to_data(spec: PipelineSpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json", exclude_defaults=True, exclude={"stages"})
    data["stages"] = {name: stage_to_data(stage) for name, stage in spec.stages.items()}
    keys = ("name", "description", "params", "envs", "secrets", "stores", "inputs", "stages", "schedule")
    return {k: data[k] for k in keys if k in data}


def dump_pipeline_yaml(pipeline: ResolvedPipeline, written: dict[str, Any] | None = None) -> str:
    """``pipeline`` as YAML; with ``written`` (the pipeline's data before params were applied), every
    string that named a param names it again (``${params.lr}``), so `--set` works on the file."""
    from ruamel.yaml import YAML

    data = spec_to_data(pipeline.spec)
    if written is not None:
        data = _with_param_refs(data, {k: v for k, v in written.items() if k != "params"})
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 100
    out = io.StringIO()
    yaml.dump(_literal_blocks(data), out)
    return out.getvalue()


def export_pipeline_yaml(target: str, overrides: dict[str, Any] | None = None) -> str:
    """Load ``target`` (pipeline.yaml or file.py:function) and write it as YAML, params kept as references."""
    import copy
    from pathlib import Path

    from skyflow.spec.loader import read_text, resolve_data
    from skyflow.spec.source import parse_yaml

    if ":" in target and target.split(":", 1)[0].endswith(".py"):
        from skyflow.spec.decorators import load_python_pipeline

        data, smap, base_dir = load_python_pipeline(target)
    else:
        path = Path(target)
        data, smap = parse_yaml(read_text(path), str(path))
        base_dir = str(path.parent.resolve())
    written = copy.deepcopy(data) if isinstance(data, dict) else None
    return dump_pipeline_yaml(resolve_data(data, smap, target, base_dir, overrides), written)


def _with_param_refs(node: Any, written: Any) -> Any:
    """``node`` with each string put back as written where the written one used ``${params.NAME}``."""
    if isinstance(written, str) and "${params." in written and isinstance(node, (str, int, float, bool)):
        return written
    if isinstance(node, dict) and isinstance(written, dict):
        return {k: _with_param_refs(v, written.get(k)) for k, v in node.items()}
    if isinstance(node, list) and isinstance(written, list) and len(node) == len(written):
        return [_with_param_refs(v, w) for v, w in zip(node, written, strict=True)]
    return node


def _literal_blocks(node: Any) -> Any:
    from ruamel.yaml.scalarstring import LiteralScalarString

    if isinstance(node, dict):
        return {k: _literal_blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal_blocks(v) for v in node]
    if isinstance(node, str) and "\n" in node:
        return LiteralScalarString(node)
    return node


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value
