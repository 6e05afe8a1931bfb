"""Load a pipeline from YAML or a decorated Python function into a ResolvedPipeline."""

from __future__ import annotations

import os
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from skyflow.errors import Issue, SourcePosition, SpecError
from skyflow.spec.graph import ResolvedPipeline, resolve_graph
from skyflow.spec.source import SourceMap, parse_yaml

_MERGED_MAPPINGS = ("resources", "envs", "secrets", "file_mounts")
_TASK_KEYS = {"run", "setup", "resources", "service", "num_nodes", "file_mounts"}

if TYPE_CHECKING:
    from skyflow.spec.decorators import Pipeline


def load_pipeline(target: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ResolvedPipeline:
    """Load ``pipeline.yaml`` or ``module.py:function``; apply ``--set`` overrides; validate."""
    text = str(target)
    if ":" in text and text.split(":", 1)[0].endswith(".py"):
        from skyflow.spec.decorators import load_python_pipeline

        data, smap, base_dir = load_python_pipeline(text)
        return resolve_data(data, smap, text, base_dir, overrides)
    path = FsPath(text)
    data, smap = parse_yaml(read_text(path), str(path))
    return resolve_data(data, smap, str(path), str(path.parent.resolve()), overrides)


def resolve_decorated(pipeline: Pipeline, overrides: dict[str, Any] | None = None) -> ResolvedPipeline:
    """A @Pipeline object traced and validated as ``file.py:function`` would be (its target says so, for resume)."""
    from skyflow.spec.decorators import decorated_data

    data, smap, base_dir, target = decorated_data(pipeline)
    return resolve_data(data, smap, target, base_dir, overrides)


def read_text(path: FsPath) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(Issue(f"{path}: no such file",
                              hint="Check the path (relative to where you run skyflow).")) from None
    except IsADirectoryError:
        raise SpecError(Issue(f"{path}: is a directory, not a pipeline file",
                              hint=f"Point at {path}/pipeline.yaml.")) from None
    except UnicodeDecodeError as exc:
        raise SpecError(Issue(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")) from None
    except OSError as exc:
        raise SpecError(Issue(f"{path}: cannot read: {exc.strerror}")) from None


def resolve_data(data: Any, smap: SourceMap, path: str, base_dir: str,
                 overrides: dict[str, Any] | None = None) -> ResolvedPipeline:
    """The one path every pipeline takes: tasks merged, params applied, models validated, DAG built."""
    from pydantic import ValidationError

    from skyflow.spec.diagnostics import issues_from_validation
    from skyflow.spec.models import PipelineSpec
    from skyflow.spec.params import apply_overrides, interpolate

    if data is None:
        raise SpecError(Issue(f"{path}: the file is empty", SourcePosition(smap.file, 1, 1),
                              hint="Start with name: my-pipeline and stages: {...}."))
    if not isinstance(data, dict):
        raise SpecError(Issue(f"a pipeline must be a mapping, got {type(data).__name__}",
                              SourcePosition(smap.file, 1, 1), hint="Start with name: my-pipeline."))
    if "stages" not in data and _TASK_KEYS & set(data):
        data, smap = _task_as_pipeline(data, smap, path)
    data = _merge_tasks(data, smap, base_dir)
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    params = apply_overrides(params, overrides or {})
    body = {k: v for k, v in data.items() if k != "params"}
    data = {**interpolate(body, params, smap), **({"params": params} if "params" in data or params else {})}
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc, data, smap, PipelineSpec)) from None
    return resolve_graph(spec, smap, path, base_dir)


def _task_as_pipeline(data: dict[str, Any], smap: SourceMap, path: str) -> tuple[dict[str, Any], SourceMap]:
    """A plain SkyPilot task file runs as a one-stage pipeline named after the task (or file)."""
    import re

    raw = str(data.get("name") or FsPath(path.split(":")[0]).stem)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-_") or "task"
    stage_name = name.replace("-", "_")
    rebased = SourceMap(smap.file)
    rebased.values[()] = smap.values.get((), SourcePosition(smap.file, 1, 1))
    rebased.graft(smap, ("stages", stage_name))
    rebased.keys[("stages", stage_name)] = rebased.values[("stages", stage_name)] = rebased.values[()]
    return {"name": name, "stages": {stage_name: data}}, rebased


def _merge_tasks(data: dict[str, Any], smap: SourceMap, base_dir: str) -> dict[str, Any]:
    """A stage's ``task:`` file is its base; keys in the stage override it (mappings key by key)."""
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return data
    merged = {}
    for name, stage in stages.items():
        task_ref = stage.get("task") if isinstance(stage, dict) else None
        if not isinstance(task_ref, str):
            merged[name] = stage
            continue
        task_path = FsPath(os.path.expanduser(task_ref))
        if not task_path.is_absolute():
            task_path = FsPath(base_dir) / task_path
        where = smap.position(("stages", name, "task"))
        if not task_path.is_file():
            raise SpecError(Issue(f"stages.{name}.task: no such task file {task_ref!r}", where,
                                  hint=f"Looked for {task_path}; paths are relative to the pipeline file."))
        task_data, task_map = parse_yaml(read_text(task_path), str(task_path))
        if not isinstance(task_data, dict):
            raise SpecError(Issue(f"{task_ref}: a task file must be a mapping", SourcePosition(str(task_path), 1, 1)))
        combined = dict(task_data)
        for key, value in stage.items():
            base = combined.get(key)
            if key in _MERGED_MAPPINGS and isinstance(base, dict) and isinstance(value, dict):
                combined[key] = {**base, **value}
            else:
                combined[key] = value
        smap.graft(task_map, ("stages", name))
        merged[name] = combined
    return {**data, "stages": merged}
