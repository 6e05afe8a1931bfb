"""`skyflow plan`: place every stage on the cheapest (or fastest) cloud, region and instance."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from skyflow.cli.options import PipelineCommand, pipeline_target, set_option
from skyflow.cli.planning import PlanningOptions, planning_options

if TYPE_CHECKING:
    from rich.console import Console

    from skyflow.planner import Alternative, Placement, Plan

@click.command(cls=PipelineCommand)
@pipeline_target
@set_option
@planning_options
@click.option("--explain", "explain", metavar="STAGE", help="Show the next best placements of STAGE.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (schema: docs/cli.md).")
@click.option("--no-cache", is_flag=True, help="Plan every stage as recomputed, ignoring cached outputs.")
def plan(target: str, set_: tuple[str, ...], planning: PlanningOptions, explain: str | None, as_json: bool,
         no_cache: bool) -> None:
    """Plan PIPELINE: where each stage runs, what it costs, and what moving its data costs.

    Nothing is launched. Clouds without credentials are left out unless --all-clouds.

    \b
    skyflow plan examples/rlhf/pipeline.yaml --set scale=full --all-clouds
    skyflow plan pipeline.yaml --deadline 12 --explain ppo
    skyflow plan pipeline.yaml --allow-clouds aws,gcp --json | jq .total_usd
    """
    from skyflow.planner import explain_stage
    from skyflow.session import Session
    from skyflow.session.discovery import load_prices
    from skyflow.spec.params import parse_overrides

    started = time.monotonic()  # the time limit bounds the whole command, loading included
    session = Session()
    pipeline = session.load(target, parse_overrides(set_))
    result = session.plan(pipeline, planning, no_cache=no_cache, started=started, progress=terminal_progress())
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    render_plan(result)
    if explain:
        catalog, egress = load_prices(planning)
        policy = session.policy(pipeline, planning, no_cache=no_cache)
        render_alternatives(explain, result.stages.get(explain),
                            explain_stage(pipeline, catalog, egress, policy, result, explain))


def terminal_progress(after_s: float = 1.0) -> Callable[[str], None] | None:
    """Print planning progress on stderr once planning has taken ``after_s``, only on a terminal
    (stdout, where --json goes, is never written)."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(message: str) -> None:
        if time.monotonic() - started >= after_s:
            click.echo(f"planning: {message}", err=True)

    return show


def _infra(p: Placement) -> str:
    return f"{p.infra} (cached)" if p.cached else p.infra


def _accelerators(p: Placement) -> str:
    return ", ".join(f"{n}:{c:g}" for n, c in p.accelerators.items()) or "-"


# How the plan table says where a stage's hours come from (Placement.hours_source).
_HOURS_FROM = {"estimate": "estimate", "history": "past runs", "fallback": "guess (1 h)"}


def _hours_from(p: Placement) -> str:
    return "-" if p.cached else _HOURS_FROM[p.hours_source]


def _duration(hours: float) -> str:
    """Hours as a person reads them: "16.14 h", "4.5 min", "12 s", "<1 s" (never 7.33e-06)."""
    if hours >= 1:
        return f"{hours:.2f} h"
    if hours >= 1 / 60:
        return f"{hours * 60:.1f} min"
    if hours * 3600 >= 1 or hours == 0:
        return f"{hours * 3600:.0f} s"
    return "<1 s"


def render_plan(plan: Plan, console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Plan for {plan.pipeline} (minimize {plan.objective})")
    for col in ("stage", "infra", "instance", "accelerators", "spot", "$/h", "hours", "hours from", "$"):
        table.add_column(col, justify="right" if col in ("$/h", "hours", "$") else "left")
    for name, p in plan.stages.items():
        table.add_row(name, _infra(p), p.instance_type, _accelerators(p), "yes" if p.use_spot else "no",
                      f"{p.hourly_usd * p.num_nodes:,.2f}", "-" if p.cached else _duration(p.hours), _hours_from(p),
                      f"{p.compute_usd:,.2f}")
    console.print(table)
    if plan.egress:
        moves = Table(title="Data moved")
        for col in ("artifact", "to stage", "from", "to", "GB", "$"):
            moves.add_column(col, justify="right" if col in ("GB", "$") else "left")
        for e in plan.egress:
            moves.add_row(e.artifact, e.to_stage, e.source, e.target, f"{e.size_gb:g}", f"{e.usd:,.2f}")
        console.print(moves)
    console.print(f"compute ${plan.compute_usd:,.2f} + egress ${plan.egress_usd:,.2f} = "
                  f"[bold]${plan.total_usd:,.2f}[/bold], {_duration(plan.total_hours)} on the critical path")
    if plan.gap > 0:
        bound = "" if plan.lower_bound_usd is None else f"; no plan costs less than ${plan.lower_bound_usd:,.2f}"
        console.print(f"within {100 * plan.gap:.2f}% of the best possible (the time limit stopped the search{bound}; "
                      f"--time-limit 0 proves the optimum)")
    cached = [name for name, p in plan.stages.items() if p.cached]
    if plan.baseline_usd is not None and plan.baseline_usd > 0:
        # The baseline reuses the same cached outputs, so this saving is where the stages run.
        saving = plan.baseline_usd - plan.total_usd
        reusing = ", reusing the same cached outputs" if cached else ""
        console.print(f"all on {plan.baseline_cloud}, on demand{reusing}: ${plan.baseline_usd:,.2f} — this plan "
                      f"saves ${saving:,.2f} ({100 * saving / plan.baseline_usd:.0f}%)")
    if cached and plan.recompute_usd is not None:
        saved = plan.recompute_usd - plan.total_usd
        what = f" saves ${saved:,.2f}" if saved > 0.005 else ""
        console.print(f"reusing cached outputs of {', '.join(cached)}{what}: recomputing every stage would cost "
                      f"${plan.recompute_usd:,.2f}")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def render_alternatives(stage: str, chosen: Placement | None, alternatives: list[Alternative],
                        console: Console | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    where = f" (chosen: {_infra(chosen)} {chosen.instance_type})" if chosen else ""
    table = Table(title=f"Next best placements of {stage}{where}, the rest of the plan fixed")
    for col in ("infra", "instance", "accelerators", "$/h", "total $", "vs plan", "why it lost"):
        table.add_column(col)
    for a in alternatives:
        p = a.placement
        table.add_row(_infra(p), p.instance_type, _accelerators(p), f"{p.hourly_usd:,.2f}", f"{a.total_usd:,.2f}",
                      f"+${a.delta_usd:,.2f}", a.reason)
    console.print(table)
