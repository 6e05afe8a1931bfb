"""Planning at the edge: which clouds this user can launch on, history, and the planner call."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyflow.spec.graph import ResolvedPipeline


def detect_enabled_clouds(environ: dict[str, str] | None = None, home: Path | None = None) -> tuple[str, ...]:
    """Clouds with credentials on this machine (files and variables their own CLIs use)."""
    env = dict(os.environ) if environ is None else environ
    home = home or Path.home()
    found = []
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or (home / ".aws" / "credentials").is_file():
        found.append("aws")
    if env.get("GOOGLE_APPLICATION_CREDENTIALS") or (
            home / ".config" / "gcloud" / "application_default_credentials.json").is_file():
        found.append("gcp")
    if env.get("AZURE_CLIENT_ID") or (home / ".azure" / "azureProfile.json").is_file():
        found.append("azure")
    if (home / ".lambda_cloud" / "lambda_keys").is_file():
        found.append("lambda")
    if env.get("RUNPOD_API_KEY") or (home / ".runpod" / "config.toml").is_file():
        found.append("runpod")
    return tuple(found)


def _median_history(pipeline: ResolvedPipeline) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    from skyflow.runner.state import RunStore

    hours, sizes = RunStore().history(list(pipeline.order))
    return ({s: {a: statistics.median(v) for a, v in per.items()} for s, per in hours.items()},
            {k: statistics.median(v) for k, v in sizes.items()})


def build_policy(pipeline: ResolvedPipeline, *, infra: str | None, all_clouds: bool, **fields: Any) -> Any:
    from skyflow.backends.local import detect_capacity
    from skyflow.planner import LocalCapacity, Policy

    capacity = detect_capacity()
    hours, sizes = _median_history(pipeline)
    return Policy(infra=tuple(p.strip() for p in infra.split(",") if p.strip()) if infra else None,
                  all_clouds=all_clouds, enabled_clouds=detect_enabled_clouds(),
                  local=LocalCapacity(cpus=capacity.cpus, memory_gb=capacity.memory_gb, gpus=dict(capacity.gpus)),
                  observed_hours=hours, observed_size_gb=sizes, **fields)


def plan_for_run(pipeline: ResolvedPipeline, *, infra: str | None, all_clouds: bool, catalog_dir: str | None,
                 egress_file: str | None, warn: Callable[[str], None]) -> dict[str, Any]:
    """The plan a run executes, as its JSON (what run state and lineage keep)."""
    from skyflow.catalog import load_catalog, load_egress
    from skyflow.planner import plan_pipeline

    catalog = load_catalog(catalog_dir)
    egress = load_egress(egress_file, catalog_dir)
    plan = plan_pipeline(pipeline, catalog, egress, build_policy(pipeline, infra=infra, all_clouds=all_clouds))
    for message in plan.warnings:
        warn(message)
    return dict(plan.to_json())


def print_plan_summary(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"plan for {plan.get('pipeline')}: ${plan.get('total_usd', 0):.2f}, "
                  f"{plan.get('total_hours', 0):.2f} h", title_justify="left")
    for column in ("stage", "infra", "instance", "accelerators", "spot", "$/h", "hours", "$"):
        table.add_column(column)
    for name, p in plan.get("stages", {}).items():
        accs = ", ".join(f"{k}:{v:g}" for k, v in (p.get("accelerators") or {}).items()) or "-"
        spot = "yes" if p.get("use_spot") else "no"
        table.add_row(name, p.get("infra", ""), p.get("instance_type") or "-", accs, spot,
                      f"{p.get('hourly_usd', 0):.2f}", f"{p.get('hours', 0):.2f}", f"{p.get('compute_usd', 0):.2f}")
    Console().print(table)
