"""`skyflow runs`: the recent runs, with their state and cost (a listing only: it imports no runner)."""

from __future__ import annotations

import json
import time

import click


@click.command()
@click.option("--limit", default=20, show_default=True, help="At most this many runs, newest first.")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (schema: docs/cli.md).")
def runs(limit: int, pipeline: str | None, as_json: bool) -> None:
    """List recent runs with their state and cost.

    \b
    skyflow runs
    skyflow runs --pipeline rlhf --limit 5 --json | jq '.[0].run_id'
    """
    from skyflow.home import skyflow_home
    from skyflow.runner.run_list import recent_runs

    rows = recent_runs(skyflow_home() / "state.db", limit=limit, pipeline=pipeline)
    if as_json:
        click.echo(json.dumps([{"run_id": r.run_id, "pipeline": r.pipeline, "state": r.state,
                                "created_at": r.created_at, "estimated_usd": r.estimated_usd,
                                "actual_usd": r.actual_usd} for r in rows]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="runs", title_justify="left")
    for column in ("run", "pipeline", "state", "started", "stages", "est. $", "actual $"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.run_id, r.pipeline, r.state, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
                      f"{r.stages_done}/{r.stages}", f"{r.estimated_usd or 0:.2f}", f"{r.actual_usd or 0:.4f}")
    Console().print(table)
