"""The environment a stage process sees: skyflow's variables, SkyPilot's, params, envs, secrets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyflow.errors import SpecError
from skyflow.spec.graph import ResolvedPipeline


def env_name(name: str) -> str:
    return name.upper()


def stage_environment(pipeline: ResolvedPipeline, stage: str, *, run_id: str, params: Mapping[str, Any],
                      inputs: Mapping[str, Path], outputs: Mapping[str, Path], gpus_per_node: float,
                      secrets: Mapping[str, str], base_env: Mapping[str, str], num_nodes: int,
                      head_ip: str = "127.0.0.1") -> dict[str, str]:
    """Pipeline envs, then the stage's, then secrets (from the caller), then skyflow's own names."""
    spec = pipeline.stages[stage]
    env = dict(base_env)
    env.update({k: v for k, v in pipeline.spec.envs.items() if v is not None})
    env.update({k: v for k, v in spec.envs.items() if v is not None})
    env.update(secrets)
    env.update({f"SKYFLOW_PARAM_{env_name(k)}": _text(v) for k, v in params.items()})
    env.update({f"SKYFLOW_INPUT_{env_name(k)}": str(p) for k, p in inputs.items()})
    env.update({f"SKYFLOW_OUTPUT_{env_name(k)}": str(p) for k, p in outputs.items()})
    env.update({
        "SKYFLOW_RUN_ID": run_id,
        "SKYFLOW_STAGE": stage,
        "SKYFLOW_PIPELINE": pipeline.name,
        "SKYFLOW_PARAMS": json.dumps(dict(params), sort_keys=True),
        "SKYPILOT_TASK_ID": f"skyflow-{run_id}-{stage}",
        "SKYPILOT_NUM_NODES": str(num_nodes),
        "SKYPILOT_NODE_IPS": "\n".join([head_ip] * num_nodes),
        "SKYPILOT_HEAD_IP": head_ip,
        "SKYPILOT_NODE_RANK": "0",
        "SKYPILOT_NUM_GPUS_PER_NODE": f"{gpus_per_node:g}" if gpus_per_node >= 1 or gpus_per_node == 0 else "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def require_envs(pipeline: ResolvedPipeline, environ: Mapping[str, str]) -> None:
    """Envs declared without a value (`envs: {HF_TOKEN: null}`, as in SkyPilot) take theirs from
    ``environ`` (the shell and --env); one missing there is an error before anything runs."""
    needing: dict[str, list[str]] = {}
    for stage in pipeline.order:
        envs = {**pipeline.spec.envs, **pipeline.stages[stage].envs}
        for key, value in envs.items():
            if value is None and key not in environ:
                needing.setdefault(key, []).append(stage)
    if needing:
        raise SpecError("; ".join(
            f"{key} is declared without a value (envs: {{{key}: null}}) for "
            f"{'stages' if len(stages) > 1 else 'stage'} {', '.join(map(repr, stages))}; set it in this shell "
            f"or pass --env {key}=VALUE" for key, stages in needing.items()))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def secret_values(names: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's values for the pipeline's and stages' secret names (missing ones are left out)."""
    return {n: environ[n] for n in names if environ.get(n)}
