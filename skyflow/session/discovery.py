"""What this machine and the user's config offer the planner: clouds with credentials, local capacity,
SSH pools, Kubernetes contexts, Ray clusters, run history and cached copies of stage outputs. Reads files and the
environment: the edge where a planning Policy is assembled.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping
from pathlib import Path

from skyflow.backends.local import detect_capacity
from skyflow.catalog import EgressModel, PriceCatalog, load_catalog, load_egress
from skyflow.config import SkyflowConfig
from skyflow.planner import CachedCopy, LocalCapacity, Policy, PoolLocation
from skyflow.session.planning_options import PlanningOptions
from skyflow.spec.graph import ResolvedPipeline
from skyflow.spec.work import work_key

__all__ = ["KUBERNETES_MAX_NODES", "PlanningOptions", "build_policy", "cached_copies", "detect_enabled_clouds",
           "load_prices", "pools_from_config"]

# A Kubernetes context has no node count the planner could know; multi-node stages always fit.
KUBERNETES_MAX_NODES = 10_000


def detect_enabled_clouds(environ: Mapping[str, str] | None = None, home: Path | None = None) -> tuple[str, ...]:
    """Clouds with credentials on this machine (files and variables their own CLIs use); nothing is contacted."""
    env = os.environ if environ is None else environ
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
    """The SSH pools, Kubernetes contexts and Ray clusters of the user's config, as planner locations."""
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
    pools.extend(_ray_locations(config))
    return tuple(pools)


def _ray_locations(config: SkyflowConfig) -> list[PoolLocation]:
    """Each Ray cluster as a pool of whole nodes: its node count, one node's resources, a node's price."""
    return [PoolLocation(name=f"ray/{name}", kind="ray", max_nodes=cluster.nodes, cpus=cluster.cpus,
                         memory_gb=cluster.memory_gb, accelerators=dict(cluster.accelerators),
                         hourly_usd=cluster.hourly_usd,
                         egress_location=cluster.infra if cluster.infra is None or "/" in cluster.infra
                         else f"{cluster.infra}/*")
            for name, cluster in config.ray_clusters.items()]


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if not value else tuple(v.strip() for v in value.split(",") if v.strip())


def median_history(pipeline: ResolvedPipeline, home: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Median past hours and output sizes (GB) of this pipeline's stages, from earlier runs that did
    the same work (see `skyflow.spec.work`); hours per stage keyed by where they were measured
    ("local" for this machine, else the accelerator)."""
    if not (home / "state.db").is_file():  # no runs yet: don't create a state DB to plan
        return {}, {}
    from skyflow.runner.state import RunStore  # only with a run history (sqlite and the runner's rows)

    keys = {name: work_key(pipeline.name, name, stage) for name, stage in pipeline.stages.items()}
    hours, sizes = RunStore(home / "state.db").history(pipeline.name, keys)
    return ({s: {a: statistics.median(v) for a, v in per.items()} for s, per in hours.items()},
            {k: statistics.median(v) for k, v in sizes.items()})


def cached_copies(pipeline: ResolvedPipeline, home: Path,
                  environ: Mapping[str, str]) -> dict[str, tuple[CachedCopy, ...]]:
    """Where earlier runs left each stage's outputs (still there), for the planner to weigh against recomputing."""
    if not (home / "state.db").is_file():  # no runs yet: nothing is cached
        return {}
    from skyflow.runner.artifact_io import predict_cached_copies
    from skyflow.runner.state import RunStore

    found = predict_cached_copies(pipeline, RunStore(home / "state.db"), home, environ)
    return {name: tuple(CachedCopy(location, size) for location, size in copies) for name, copies in found.items()}


def build_policy(pipeline: ResolvedPipeline, options: PlanningOptions, config: SkyflowConfig, home: Path,
                 environ: Mapping[str, str], *, no_cache: bool = False) -> Policy:
    """The one Policy every plan is made with: the options, this machine, the user's pools, run
    history, and (unless ``no_cache``) the cached copies of stage outputs."""
    capacity = detect_capacity()
    hours, sizes = median_history(pipeline, home)
    return Policy(
        objective=options.minimize,  # type: ignore[arg-type]
        deadline_h=options.deadline, max_cost_usd=options.max_cost, infra=_split(options.infra),
        all_clouds=options.all_clouds, allowed_clouds=_split(options.allow_clouds),
        blocked_clouds=_split(options.block_clouds) or (), allowed_regions=_split(options.allow_regions),
        blocked_regions=_split(options.block_regions) or (),
        enabled_clouds=None if options.all_clouds else detect_enabled_clouds(environ),
        local=LocalCapacity(cpus=capacity.cpus, memory_gb=capacity.memory_gb, gpus=dict(capacity.gpus)),
        pools=pools_from_config(config), observed_hours=hours, observed_size_gb=sizes,
        cached={} if no_cache else cached_copies(pipeline, home, environ), time_limit_s=options.time_limit)


def load_prices(options: PlanningOptions) -> tuple[PriceCatalog, EgressModel]:
    return load_catalog(options.catalog_dir), load_egress(options.egress_file, options.catalog_dir)
