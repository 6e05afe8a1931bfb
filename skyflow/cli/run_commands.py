"""`skyflow run | resume | status | logs | cancel | runs`: execute pipelines and look at runs."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from skyflow.cli.options import pipeline_target, set_option
from skyflow.cli.planning import PlanningFlags, planning_options


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """--env KEY=VALUE, or --env KEY to pass this shell's value on (as `sky launch --env` does)."""
    from skyflow.errors import SpecError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            if key not in os.environ:
                raise SpecError(f"--env {key}: {key} is not set in this shell; write --env {key}=VALUE")
            value = os.environ[key]
        out[key] = value
    return out


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.command()
@pipeline_target
@set_option
@click.option("--env", "envs", multiple=True, metavar="KEY[=VALUE]", help="Pass an env var to every stage.")
@click.option("--run-id", help="Name the run (e.g. ci-$GIT_SHA); default: PIPELINE-DATE-TIME-XXXX.")
@planning_options
@click.option("--no-cache", is_flag=True, help="Run every stage even when a verified cached result exists.")
@click.option("--parallel", type=click.IntRange(min=1), help="At most this many stages at once.")
@click.option("--no-lineage", is_flag=True, help="Do not record lineage in MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON status object at the end.")
@click.option("--dry-run", is_flag=True, help="Plan and show what each backend would launch; run nothing.")
@click.option("--output", metavar="DIR", help="With --dry-run: write DIR/<stage>.yaml instead of printing.")
def run(target: str, set_: tuple[str, ...], envs: tuple[str, ...], run_id: str | None, planning: PlanningFlags,
        no_cache: bool, parallel: int | None, no_lineage: bool, as_json: bool, dry_run: bool,
        output: str | None) -> None:
    """Plan PIPELINE, then run every stage, moving artifacts and recording lineage."""
    from skyflow.cli.plan_commands import render_plan
    from skyflow.cli.planning import plan_with_flags
    from skyflow.runner.api import RunRequest
    from skyflow.runner.engine import RunOptions
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides

    overrides = parse_overrides(set_)
    pipeline = load_pipeline(target, overrides)
    extra_env = _env_pairs(envs)
    if dry_run:
        _dry_run(pipeline, planning, output)
        return
    if output:
        raise click.UsageError("--output goes with --dry-run")
    plan, _ = plan_with_flags(pipeline, planning, no_cache=no_cache)
    if as_json:
        for message in plan.warnings:
            _warn(message)
    else:
        render_plan(plan)
    options = RunOptions(run_id=run_id, no_cache=no_cache, max_parallel=parallel,
                         retry_base_delay_s=float(os.environ.get("SKYFLOW_RETRY_BASE_S", "1")),
                         extra_env=extra_env)
    request = RunRequest(pipeline, target, overrides, plan.to_json(), options, lineage=not no_lineage)
    _execute(request, as_json)


def _dry_run(pipeline: Any, planning: PlanningFlags, output: str | None) -> None:
    """Print (or write to OUTPUT/<stage>.yaml) what each stage's backend would launch."""
    from pathlib import Path

    from skyflow.backends.registry import BackendContext, BackendPool, backend_kind
    from skyflow.cli.plan_commands import render_plan
    from skyflow.cli.planning import plan_with_flags
    from skyflow.runner.state import skyflow_home
    from skyflow.spec.config import load_config

    # A cluster or pool forced by --infra needs no configuration to be reviewed: place every stage there.
    forced = planning.infra and backend_kind(planning.infra) in ("kubernetes", "ssh")
    # Every stage is shown as launched, so plan as if nothing were cached.
    if forced:
        plan = _forced_plan(pipeline, str(planning.infra))
        click.echo(f"every stage placed on {planning.infra} (--infra); not priced")
    else:
        priced, _ = plan_with_flags(pipeline, planning, no_cache=True)
        render_plan(priced)
        plan = priced.to_json()
    pool = BackendPool(BackendContext(config=load_config(skyflow_home() / "config.yaml")))
    for name, launch in _preview_launches(pipeline, plan).items():
        backend = pool.for_infra(str(launch.placement.get("infra", "local")))
        render = getattr(backend, "render", None)
        text = render(launch) if render else f"# setup\n{launch.setup or ''}\n# run\n{launch.run}\n"
        if output:
            Path(output).mkdir(parents=True, exist_ok=True)
            (Path(output) / f"{name}.yaml").write_text(text)
        else:
            click.echo(f"--- # {name} on {launch.placement.get('infra', 'local')} ({backend.name})\n{text}")
    if output:
        click.echo(f"wrote {len(pipeline.order)} file(s) to {output}")


def _forced_plan(pipeline: Any, infra: str) -> dict[str, Any]:
    stages = {}
    for name in pipeline.order:
        res = pipeline.stages[name].resources
        accs = {a.name: a.count for a in res.accelerators[:1]}
        stages[name] = {"infra": infra, "accelerators": accs, "use_spot": res.use_spot, "disk_size": res.disk_size,
                        "num_nodes": pipeline.stages[name].num_nodes, "hourly_usd": 0.0, "compute_usd": 0.0}
    return {"pipeline": pipeline.name, "stages": stages, "total_usd": 0.0, "total_hours": 0.0}


def _preview_launches(pipeline: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """The StageLaunch each stage would get, with placeholders for what only a run knows."""
    from pathlib import Path

    from skyflow.backends.base import StageLaunch
    from skyflow.runner.environment import stage_environment

    stores = [s.uri for key, s in pipeline.spec.stores.items() if key != "local"]
    store = stores[0] if stores else None
    node = Path("/skyflow")
    launches = {}
    for name in pipeline.order:
        spec = pipeline.stages[name]
        edges = pipeline.inputs_of(name)
        inputs = {e.input_name: node / "inputs" / e.input_name for e in edges}
        outputs = {o: node / "outputs" / o for o in spec.outputs}
        gpus = sum(a.count for a in spec.resources.accelerators[:1])
        secrets = {n: f"<{n}>" for n in [*pipeline.spec.secrets, *spec.secrets]}
        env = stage_environment(pipeline, name, run_id="DRY-RUN", params=dict(pipeline.spec.params), inputs=inputs,
                                outputs=outputs, gpus_per_node=gpus, secrets=secrets, base_env={},
                                num_nodes=spec.num_nodes)
        refs = {e.input_name: {"uri": f"<{e.ref} once committed>", "digest": "<digest>", "size_bytes": 0,
                               "store_uri": store or "<store>"} for e in edges}
        launches[name] = StageLaunch(run_id="DRY-RUN", stage=name, attempt=1, setup=spec.setup, run=spec.run or "true",
                                     workdir=Path(pipeline.base_dir), env=env, num_nodes=spec.num_nodes,
                                     log_path=Path("stage.log"), timeout_s=spec.timeout, gpu_count=gpus,
                                     secret_values=tuple(secrets.values()), inputs=inputs, outputs=outputs,
                                     input_refs=refs, store_uri=store,
                                     placement=plan["stages"][name], stage_spec=spec)
    return launches


def _execute(request: Any, as_json: bool, resume_id: str | None = None) -> None:
    from skyflow.cli.progress import ProgressView
    from skyflow.errors import RunFailed
    from skyflow.runner.api import execute
    from skyflow.runner.report import run_status_json
    from skyflow.runner.state import RunStore

    placements = {n: p.get("infra", "local") for n, p in request.plan.get("stages", {}).items()}
    with ProgressView(list(request.pipeline.order), placements, quiet=as_json) as view:
        run_id, outcome, where = execute(request, view, _warn, resume_id=resume_id)
    run = RunStore().get_run(run_id)
    if as_json:
        click.echo(json.dumps(run_status_json(run)))
    else:
        _summary(run, where)
    if outcome != "succeeded":
        raise RunFailed(f"run {run_id} {outcome}; see `skyflow status {run_id}` and `skyflow resume {run_id}`",
                        run_id=run_id)


def _summary(run: Any, where: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"run {run.run_id}: {run.state}", title_justify="left")
    for column in ("stage", "state", "attempts", "infra", "time", "est. $", "actual $", "note"):
        table.add_column(column)
    for name, row in run.stages.items():
        table.add_row(name, row.state, str(row.attempts), row.infra or "local",
                      f"{row.duration_s:.1f}s" if row.duration_s else "", f"{row.estimated_usd or 0:.2f}",
                      f"{row.cost_usd or 0:.4f}", (row.message or "")[:80])
    console.print(table)
    for name, row in run.stages.items():
        if row.endpoint and row.process_groups:
            console.print(f"{name} is serving at {row.endpoint} — stop it with `skyflow down {run.run_id}`")
    console.print(f"estimated ${run.estimated_usd or 0:.2f}, actual ${run.actual_usd or 0:.4f}")
    console.print(f"lineage: {where}" if where else "lineage: not recorded")
    console.print(f"state: {RunStoreLocation()}; outputs: `skyflow status {run.run_id} --json`")


def RunStoreLocation() -> str:
    from skyflow.runner.state import skyflow_home

    return str(skyflow_home() / "state.db")


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--parallel", type=click.IntRange(min=1))
def resume(run_id: str, as_json: bool, parallel: int | None) -> None:
    """Rerun the failed and never-run stages of RUN_ID, reusing committed outputs."""
    from skyflow.runner.api import RunRequest, runner_alive
    from skyflow.runner.engine import RunOptions
    from skyflow.runner.state import RunStore
    from skyflow.spec.loader import load_pipeline

    run = RunStore().get_run(run_id)
    if run.state == "running" and runner_alive(run_id):
        from skyflow.errors import RunError

        raise RunError(f"run {run_id!r} is still running (pid {run.runner_pid}); `skyflow cancel {run_id}` first")
    pipeline = load_pipeline(run.target, run.overrides)
    if pipeline.digest() != run.pipeline_digest:
        _warn(f"{run.target} changed since run {run_id} started; resuming with the current version")
    options = RunOptions(run_id=run_id, max_parallel=parallel, no_cache=bool(run.options.get("no_cache")),
                         retry_base_delay_s=float(os.environ.get("SKYFLOW_RETRY_BASE_S", "1")))
    request = RunRequest(pipeline, run.target, run.overrides, run.plan or {}, options,
                         lineage=bool(run.options.get("lineage", True)))
    _execute(request, as_json, resume_id=run_id)


@click.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str | None, as_json: bool) -> None:
    """Show RUN_ID's stages (default: the newest run)."""
    from skyflow.errors import RunError
    from skyflow.runner.report import run_status_json
    from skyflow.runner.state import RunStore

    store = RunStore()
    if run_id is None:
        runs = store.list_runs(limit=1)
        if not runs:
            raise RunError("no runs yet; start one with `skyflow run PIPELINE`")
        run = runs[0]
    else:
        run = store.get_run(run_id)
    if as_json:
        click.echo(json.dumps(run_status_json(run)))
    else:
        _summary(run, None)


@click.command()
@click.argument("run_id")
@click.argument("stage")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the stage finishes.")
def logs(run_id: str, stage: str, follow: bool) -> None:
    """Print the log of STAGE in RUN_ID."""
    from skyflow.runner.api import log_path
    from skyflow.runner.state import RunStore

    path = log_path(run_id, stage)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if not follow or RunStore().get_run(run_id).stages[stage].state not in ("running", "pending"):
                break
            time.sleep(0.2)


@click.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Stop RUN_ID: its stages are killed and its state is kept for `skyflow resume`."""
    from skyflow.runner.api import cancel_run

    click.echo(f"run {run_id}: {cancel_run(run_id)}")


@click.command()
@click.argument("run_id")
def down(run_id: str) -> None:
    """Stop the services RUN_ID left serving."""
    from skyflow.runner.api import down_run

    stopped = down_run(run_id)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else f"run {run_id} has no service running")


@click.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--json", "as_json", is_flag=True)
def runs(limit: int, pipeline: str | None, as_json: bool) -> None:
    """List recent runs with their state and cost."""
    from rich.console import Console
    from rich.table import Table

    from skyflow.runner.state import RunStore

    rows = RunStore().list_runs(limit=limit, pipeline=pipeline)
    if as_json:
        click.echo(json.dumps([{"run_id": r.run_id, "pipeline": r.pipeline, "state": r.state,
                                "created_at": r.created_at, "estimated_usd": r.estimated_usd,
                                "actual_usd": r.actual_usd} for r in rows]))
        return
    table = Table(title="runs", title_justify="left")
    for column in ("run", "pipeline", "state", "started", "stages", "est. $", "actual $"):
        table.add_column(column)
    for r in rows:
        done = sum(1 for s in r.stages.values() if s.state in ("succeeded", "cached"))
        table.add_row(r.run_id, r.pipeline, r.state, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
                      f"{done}/{len(r.stages)}", f"{r.estimated_usd or 0:.2f}", f"{r.actual_usd or 0:.4f}")
    Console().print(table)
