"""Planning at the edge, shared by `skyflow plan` and `skyflow run`: flags, what this machine and the
user's config offer (clouds with credentials, local capacity, SSH pools, Kubernetes contexts),
run history, and the planner call.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from skyflow.catalog import EgressModel, PriceCatalog
    from skyflow.planner import CachedCopy, Plan, Policy, PoolLocation
    from skyflow.spec.config import SkyflowConfig
    from skyflow.spec.graph import ResolvedPipeline

F = TypeVar("F", bound=Callable[..., Any])
# A Kubernetes context has no node count the planner could know; multi-node stages always fit.
KUBERNETES_MAX_NODES = 10_000


@dataclass(frozen=True)
class PlanningFlags:
    """The planning flags of `skyflow plan` and `skyflow run`, as given on the command line."""

    catalog_dir: str | None = None
    egress_file: str | None = None
    minimize: str = "cost"
    deadline: float | None = None
    max_cost: float | None = None
    infra: str | None = None
    all_clouds: bool = False
    allow_clouds: str | None = None
    block_clouds: str | None = None
    allow_regions: str | None = None
    block_regions: str | None = None


_OPTIONS = (
    click.option("--catalog", "catalog_dir", metavar="DIR", help="Catalog folder of <cloud>/vms.csv files."),
    click.option("--egress", "egress_file", metavar="FILE", help="Egress rules file (USD per GB)."),
    click.option("--minimize", type=click.Choice(["cost", "time"]), default="cost", show_default=True),
    click.option("--deadline", type=click.FloatRange(min=0, min_open=True), metavar="HOURS",
                 help="Cheapest plan that finishes in time (hours > 0)."),
    click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), metavar="USD",
                 help="Fastest plan within this budget (USD > 0)."),
    click.option("--infra", metavar="LIST", help="Only these: aws,gcp/us-central1,local,ssh/lab,kubernetes/ctx; "
                                                 "`local` alone forces this machine."),
    click.option("--all-clouds", is_flag=True, help="Plan over every catalog cloud, credentials or not (what-if)."),
    click.option("--allow-clouds", metavar="LIST"),
    click.option("--block-clouds", metavar="LIST"),
    click.option("--allow-regions", metavar="LIST"),
    click.option("--block-regions", metavar="LIST"),
)
_FIELDS = tuple(f.name for f in fields(PlanningFlags))


def planning_options(func: F) -> F:
    """Add the planning flags to a command; it receives them as one ``planning: PlanningFlags``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = PlanningFlags(**{name: kwargs.pop(name) for name in _FIELDS})
        return func(*args, planning=flags, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def detect_enabled_clouds(environ: dict[str, str] | None = None, home: Path | None = None) -> tuple[str, ...]:
    """Clouds with credentials on this machine (files and variables their own CLIs use); nothing is contacted."""
    env = dict(os.environ) if environ is None else environ
    home = home or Path.home()
    found = []
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or any(
            (home / ".aws" / f).is_file() for f in ("credentials", "config")):
        found.append("aws")
    if env.get("GOOGLE_APPLICATION_CREDENTIALS") or any(
            (home / ".config" / "gcloud" / f).is_file() for f in ("application_default_credentials.json",
                                                                  "credentials.db")):
        found.append("gcp")
    if env.get("AZURE_CLIENT_ID") or (home / ".azure" / "azureProfile.json").is_file():
        found.append("azure")
    if (home / ".lambda_cloud" / "lambda_keys").is_file():
        found.append("lambda")
    if env.get("RUNPOD_API_KEY") or (home / ".runpod" / "config.toml").is_file():
        found.append("runpod")
    return tuple(found)


def pools_from_config(config: SkyflowConfig) -> tuple[PoolLocation, ...]:
    """The SSH pools and Kubernetes contexts of the user's config, as planner locations."""
    from skyflow.planner import PoolLocation

    pools = [PoolLocation(name=f"ssh/{name}", kind="ssh", max_nodes=len(pool.hosts), cpus=pool.cpus,
                          memory_gb=pool.memory_gb, accelerators=dict(pool.accelerators), hourly_usd=pool.hourly_usd)
             for name, pool in config.ssh_pools.items()]
    for name, ctx in config.kubernetes.contexts.items():
        where = ctx.infra if ctx.infra is None or "/" in ctx.infra else f"{ctx.infra}/*"
        pools.append(PoolLocation(
            name=f"kubernetes/{name}", kind="kubernetes", max_nodes=KUBERNETES_MAX_NODES, cpus=ctx.cpus,
            memory_gb=ctx.memory_gb, accelerators=dict(ctx.accelerators),
            cpu_hourly_usd=ctx.pricing.cpu_hourly_usd, memory_gb_hourly_usd=ctx.pricing.memory_gb_hourly_usd,
            accelerators_hourly_usd=dict(ctx.pricing.accelerators_hourly_usd), egress_location=where))
    return tuple(pools)


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if not value else tuple(v.strip() for v in value.split(",") if v.strip())


def _median_history(pipeline: ResolvedPipeline) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    from skyflow.runner.state import RunStore, skyflow_home

    if not (skyflow_home() / "state.db").is_file():  # no runs yet: don't create a state DB to plan
        return {}, {}
    hours, sizes = RunStore().history(list(pipeline.order))
    return ({s: {a: statistics.median(v) for a, v in per.items()} for s, per in hours.items()},
            {k: statistics.median(v) for k, v in sizes.items()})


def cached_copies(pipeline: ResolvedPipeline) -> dict[str, tuple[CachedCopy, ...]]:
    """Where earlier runs left each stage's outputs (still there), for the planner to weigh against recomputing."""
    from skyflow.planner import CachedCopy
    from skyflow.runner.artifact_io import predict_cached_copies
    from skyflow.runner.state import RunStore, skyflow_home

    home = skyflow_home()
    if not (home / "state.db").is_file():  # no runs yet: nothing is cached
        return {}
    found = predict_cached_copies(pipeline, RunStore(), home, os.environ)
    return {name: tuple(CachedCopy(location, size) for location, size in copies) for name, copies in found.items()}


def build_policy(pipeline: ResolvedPipeline, flags: PlanningFlags, config: SkyflowConfig | None = None, *,
                 no_cache: bool = False) -> Policy:
    """The one Policy both commands plan with: flags, this machine, the user's pools, run history,
    and (unless ``no_cache``) the cached copies of stage outputs."""
    from skyflow.backends.local import detect_capacity
    from skyflow.planner import LocalCapacity, Policy
    from skyflow.runner.state import skyflow_home
    from skyflow.spec.config import load_config

    config = config or load_config(skyflow_home() / "config.yaml")
    capacity = detect_capacity()
    hours, sizes = _median_history(pipeline)
    return Policy(
        objective=flags.minimize,  # type: ignore[arg-type]
        deadline_h=flags.deadline, max_cost_usd=flags.max_cost, infra=_split(flags.infra),
        all_clouds=flags.all_clouds, allowed_clouds=_split(flags.allow_clouds),
        blocked_clouds=_split(flags.block_clouds) or (), allowed_regions=_split(flags.allow_regions),
        blocked_regions=_split(flags.block_regions) or (),
        enabled_clouds=None if flags.all_clouds else detect_enabled_clouds(),
        local=LocalCapacity(cpus=capacity.cpus, memory_gb=capacity.memory_gb, gpus=dict(capacity.gpus)),
        pools=pools_from_config(config), observed_hours=hours, observed_size_gb=sizes,
        cached={} if no_cache else cached_copies(pipeline))


def load_prices(flags: PlanningFlags) -> tuple[PriceCatalog, EgressModel]:
    from skyflow.catalog import load_catalog, load_egress

    return load_catalog(flags.catalog_dir), load_egress(flags.egress_file, flags.catalog_dir)


def plan_with_flags(pipeline: ResolvedPipeline, flags: PlanningFlags, *,
                    no_cache: bool = False) -> tuple[Plan, Policy]:
    from skyflow.planner import plan_pipeline

    catalog, egress = load_prices(flags)
    policy = build_policy(pipeline, flags, no_cache=no_cache)
    return plan_pipeline(pipeline, catalog, egress, policy), policy
