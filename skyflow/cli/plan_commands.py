"""`skyflow plan`: place every stage on the cheapest (or fastest) cloud, region and instance."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skyflow.cli.options import pipeline_target, set_option

if TYPE_CHECKING:
    from rich.console import Console

    from skyflow.planner import Alternative, Placement, Plan

_CREDENTIALS = {
    "aws": ("~/.aws/credentials", "~/.aws/config"),
    "gcp": ("~/.config/gcloud/application_default_credentials.json", "~/.config/gcloud/credentials.db"),
    "azure": ("~/.azure/azureProfile.json",),
    "lambda": ("~/.lambda_cloud/lambda_keys",),
    "runpod": ("~/.runpod/config.toml",),
    "kubernetes": ("~/.kube/config",),
}
_CREDENTIAL_ENV = {"aws": ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"), "gcp": ("GOOGLE_APPLICATION_CREDENTIALS",),
                   "azure": ("AZURE_CLIENT_ID",), "runpod": ("RUNPOD_API_KEY",), "kubernetes": ("KUBECONFIG",)}


def enabled_clouds() -> tuple[str, ...]:
    """Clouds whose credentials or kubeconfig exist here (a cheap check; nothing is contacted)."""
    found = []
    for cloud, paths in _CREDENTIALS.items():
        if any(Path(p).expanduser().exists() for p in paths) or any(os.environ.get(v)
                                                                      for v in _CREDENTIAL_ENV.get(cloud, ())):
            found.append(cloud)
    return tuple(found)


def local_capacity() -> Any:
    from skyflow.planner import LocalCapacity

    memory_gb = 0.0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return LocalCapacity(cpus=float(os.cpu_count() or 1), memory_gb=memory_gb, gpus=_local_gpus())


def _local_gpus() -> dict[str, int]:
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    from skyflow.spec.accelerators import KNOWN_ACCELERATORS

    gpus: dict[str, int] = {}
    for line in out.splitlines():
        words = line.replace("NVIDIA", "").split()
        name = next((k for w in words for k in KNOWN_ACCELERATORS if k.lower() == w.lower()), None)
        if name:
            gpus[name] = gpus.get(name, 0) + 1
    return gpus


def _split(value: str | None) -> tuple[str, ...] | None:
    return None if not value else tuple(v.strip() for v in value.split(",") if v.strip())


@click.command()
@pipeline_target
@set_option
@click.option("--catalog", "catalog_dir", metavar="DIR", help="Catalog folder of <cloud>/vms.csv files.")
@click.option("--egress", "egress_file", metavar="FILE", help="Egress rules file (USD per GB).")
@click.option("--minimize", type=click.Choice(["cost", "time"]), default="cost", show_default=True)
@click.option("--deadline", type=float, metavar="HOURS", help="Cheapest plan that finishes in time.")
@click.option("--max-cost", type=float, metavar="USD", help="Fastest plan within this budget.")
@click.option("--infra", metavar="LIST", help="Only these: aws,gcp/us-central1,local,...")
@click.option("--all-clouds", is_flag=True, help="Plan over every catalog cloud, credentials or not.")
@click.option("--allow-clouds", metavar="LIST")
@click.option("--block-clouds", metavar="LIST")
@click.option("--allow-regions", metavar="LIST")
@click.option("--block-regions", metavar="LIST")
@click.option("--explain", "explain", metavar="STAGE", help="Show the next best placements of STAGE.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(target: str, set_: tuple[str, ...], catalog_dir: str | None, egress_file: str | None, minimize: str,
         deadline: float | None, max_cost: float | None, infra: str | None, all_clouds: bool,
         allow_clouds: str | None, block_clouds: str | None, allow_regions: str | None,
         block_regions: str | None, explain: str | None, as_json: bool) -> None:
    """Plan TARGET: where each stage runs, what it costs, and what moving its data costs."""
    from skyflow.catalog import load_catalog, load_egress
    from skyflow.planner import Policy, explain_stage, plan_pipeline
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides

    pipeline = load_pipeline(target, parse_overrides(set_))
    catalog = load_catalog(catalog_dir)
    egress = load_egress(egress_file, catalog_dir)
    policy = Policy(
        objective=minimize,  # type: ignore[arg-type]
        deadline_h=deadline, max_cost_usd=max_cost, infra=_split(infra), all_clouds=all_clouds,
        allowed_clouds=_split(allow_clouds), blocked_clouds=_split(block_clouds) or (),
        allowed_regions=_split(allow_regions), blocked_regions=_split(block_regions) or (),
        enabled_clouds=None if all_clouds else enabled_clouds(), local=local_capacity(),
    )
    result = plan_pipeline(pipeline, catalog, egress, policy)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    render_plan(result)
    if explain:
        render_alternatives(explain, result.stages.get(explain),
                            explain_stage(pipeline, catalog, egress, policy, result, explain))


def _accelerators(p: Placement) -> str:
    return ", ".join(f"{n}:{c:g}" for n, c in p.accelerators.items()) or "-"


def render_plan(plan: Plan, console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Plan for {plan.pipeline} (minimize {plan.objective})")
    for col in ("stage", "infra", "instance", "accelerators", "spot", "$/h", "hours", "$"):
        table.add_column(col, justify="right" if col in ("$/h", "hours", "$") else "left")
    for name, p in plan.stages.items():
        table.add_row(name, p.infra, p.instance_type, _accelerators(p), "yes" if p.use_spot else "no",
                      f"{p.hourly_usd * p.num_nodes:,.2f}", f"{p.hours:g}", f"{p.compute_usd:,.2f}")
    console.print(table)
    if plan.egress:
        moves = Table(title="Data moved")
        for col in ("artifact", "to stage", "from", "to", "GB", "$"):
            moves.add_column(col, justify="right" if col in ("GB", "$") else "left")
        for e in plan.egress:
            moves.add_row(e.artifact, e.to_stage, e.source, e.target, f"{e.size_gb:g}", f"{e.usd:,.2f}")
        console.print(moves)
    console.print(f"compute ${plan.compute_usd:,.2f} + egress ${plan.egress_usd:,.2f} = "
                  f"[bold]${plan.total_usd:,.2f}[/bold], {plan.total_hours:.2f} h on the critical path")
    if plan.baseline_usd is not None and plan.baseline_usd > 0:
        saving = plan.baseline_usd - plan.total_usd
        console.print(f"all on {plan.baseline_cloud}, on demand: ${plan.baseline_usd:,.2f} — this plan saves "
                      f"${saving:,.2f} ({100 * saving / plan.baseline_usd:.0f}%)")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def render_alternatives(stage: str, chosen: Placement | None, alternatives: list[Alternative],
                        console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    where = f" (chosen: {chosen.infra} {chosen.instance_type})" if chosen else ""
    table = Table(title=f"Next best placements of {stage}{where}, the rest of the plan fixed")
    for col in ("infra", "instance", "accelerators", "$/h", "total $", "vs plan", "why it lost"):
        table.add_column(col)
    for a in alternatives:
        p = a.placement
        table.add_row(p.infra, p.instance_type, _accelerators(p), f"{p.hourly_usd:,.2f}", f"{a.total_usd:,.2f}",
                      f"+${a.delta_usd:,.2f}", a.reason)
    console.print(table)
