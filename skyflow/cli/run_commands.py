"""`skyflow run | resume | status | logs | cancel | down`: execute pipelines and look at runs."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from skyflow.cli.options import PipelineCommand, json_option, pipeline_target, run_id_argument, set_option
from skyflow.cli.planning import PlanningOptions, planning_options

if TYPE_CHECKING:
    from rich.console import Console

    from skyflow.cli.progress import ProgressView
    from skyflow.runner.state import RunRow
    from skyflow.session import RunResult, Session
    from skyflow.spec.graph import ResolvedPipeline


wait_for_lineage_option = click.option(
    "--wait-for-lineage", is_flag=True,
    help="Exit only once every lineage record is in MLflow (by default a short run on a local store leaves "
         "them to a background process; use this where the machine goes away after the command).")


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


def _warner() -> Callable[[str], None]:
    """How this command warns: on stderr, or not at all under the global -q. Decided here, in the
    command's thread: runner threads warn too, and click's context is not theirs."""
    from skyflow.cli.main import global_verbosity

    return (lambda message: None) if global_verbosity().quiet else _warn


@click.command(cls=PipelineCommand)
@pipeline_target
@set_option
@click.option("--env", "envs", multiple=True, metavar="KEY[=VALUE]", help="Pass an env var to every stage.")
@click.option("--run-id", help="Name the run (e.g. ci-$GIT_SHA); default: PIPELINE-DATE-TIME-XXXX.")
@planning_options
@click.option("--no-cache", is_flag=True, help="Run every stage even when a verified cached result exists.")
@click.option("--parallel", type=click.IntRange(min=1), help="At most this many stages at once.")
@click.option("--no-lineage", is_flag=True, help="Do not record lineage in MLflow.")
@wait_for_lineage_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON status object at the end, nothing else on stdout (schema: docs/cli.md).")
@click.option("-q", "--quiet", is_flag=True, help="Show only the progress, not the stages' output.")
@click.option("--detach", is_flag=True, help="Start the run in the background and return its id at once.")
@click.option("-y", "--yes", is_flag=True,
              help="Launch without asking, whatever the plan costs (see confirm_cost_usd in docs/cli.md).")
@click.option("--dry-run", is_flag=True, help="Plan and show what each backend would launch; run nothing.")
@click.option("--output", metavar="DIR", help="With --dry-run: write DIR/<stage>.yaml instead of printing.")
def run(target: str, set_: tuple[str, ...], envs: tuple[str, ...], run_id: str | None, planning: PlanningOptions,
        no_cache: bool, parallel: int | None, no_lineage: bool, wait_for_lineage: bool, as_json: bool, quiet: bool,
        detach: bool, yes: bool, dry_run: bool, output: str | None) -> None:
    """Plan PIPELINE, then run every stage, moving artifacts and recording lineage.

    Each stage's output is streamed, prefixed by its stage; exits 1 when a stage failed.
    A plan that costs confirm_cost_usd ($10 unless config.yaml says otherwise) or more asks first on
    a terminal (answered no: nothing launched, exit 1); off a terminal it needs -y (else exit 2).

    \b
    skyflow run examples/rlhf/pipeline.yaml
    skyflow run pipeline.yaml --set scale=full --all-clouds --run-id ci-$GIT_SHA
    skyflow run pipeline.py:rlhf --infra local --no-cache -q
    skyflow run pipeline.yaml --detach && skyflow logs RUN ppo -f
    skyflow run pipeline.yaml --dry-run --output launched/
    """
    from skyflow.cli.confirm import confirm_spend
    from skyflow.cli.plan_commands import render_plan
    from skyflow.runner.environment import require_envs
    from skyflow.session import RunOptions, Session
    from skyflow.spec.params import parse_overrides

    session = Session(warn=_warner(), lineage_in_background=not wait_for_lineage)
    overrides = parse_overrides(set_)
    pipeline = session.load(target, overrides)
    extra_env = _env_pairs(envs)
    if dry_run:
        _dry_run(session, pipeline, planning, output)
        return
    if output:
        raise click.UsageError("--output goes with --dry-run")
    require_envs(pipeline, {**os.environ, **extra_env})
    run_id = session.new_run_id(pipeline, run_id)
    if detach and yes:  # nothing to ask: the background run plans for itself
        _detach(session, run_id)
        return
    plan = session.plan(pipeline, planning, no_cache=no_cache)
    if as_json:
        for message in plan.warnings:
            session.warn(message)
    else:
        render_plan(plan)
    confirm_spend(plan.total_usd, session.config.confirm_cost_usd, yes=yes, config_path=session.home / "config.yaml")
    if detach:
        _detach(session, run_id)
        return
    options = RunOptions(run_id=run_id, no_cache=no_cache, max_parallel=parallel,
                         retry_base_delay_s=float(os.environ.get("SKYFLOW_RETRY_BASE_S", "1")),
                         extra_env=extra_env)
    _execute(session, as_json, lambda view: session.run(pipeline, plan, run_id=run_id, target=target,
                                                        overrides=overrides, options=options,
                                                        lineage=not no_lineage, on_event=view),
             list(pipeline.order), {n: p.infra for n, p in plan.stages.items()}, quiet=quiet)


def _detach(session: Session, run_id: str) -> None:
    """The same command, without --detach and with the chosen run id, in its own session; its output
    goes to a log beside the run's stage logs."""
    import subprocess

    args = [a for a in sys.argv[1:] if a != "--detach"]
    args += [] if {"-y", "--yes"} & set(args) else ["--yes"]  # asked here already: it has no terminal
    if "--run-id" not in args and not any(a.startswith("--run-id=") for a in args):
        args += ["--run-id", run_id]
    log = session.home / "runs" / run_id / "runner.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "skyflow", *args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    click.echo(f"run {run_id} started in the background (pid {proc.pid}); its output: {log}\n"
               f"  skyflow status {run_id}\n  skyflow logs {run_id} STAGE -f\n  skyflow cancel {run_id}")


def _dry_run(session: Session, pipeline: ResolvedPipeline, planning: PlanningOptions, output: str | None) -> None:
    """Print (or write to OUTPUT/<stage>.yaml) what each stage's backend would launch."""
    from pathlib import Path

    from skyflow.cli.plan_commands import render_plan

    plan, forced, stages = session.dry_run(pipeline, planning)
    if forced:
        click.echo(f"every stage placed on {planning.infra} (--infra); not priced")
    else:
        render_plan(plan)
    for stage in stages:
        if output:
            Path(output).mkdir(parents=True, exist_ok=True)
            (Path(output) / f"{stage.stage}.yaml").write_text(stage.text)
        else:
            click.echo(f"--- # {stage.stage} on {stage.infra} ({stage.backend})\n{stage.text}")
    if output:
        click.echo(f"wrote {len(stages)} file(s) to {output}")


def _execute(session: Session, as_json: bool, start: Callable[[ProgressView], RunResult], stages: list[str],
             placements: dict[str, str], quiet: bool = False) -> None:
    from skyflow.artifacts.progress import reporting_transfers_to
    from skyflow.cli.main import global_verbosity
    from skyflow.cli.progress import ProgressView
    from skyflow.errors import RunFailed
    from skyflow.runner.report import run_status_json

    quiet = quiet or global_verbosity().quiet
    with ProgressView(stages, placements, quiet=as_json, stream=not quiet) as view, \
            reporting_transfers_to(view.transfers()):
        result = start(view)
    if as_json:
        click.echo(json.dumps(run_status_json(result.run)))
    else:
        _summary(session.home, result.run, result.lineage)
    if not result.ok:
        raise RunFailed(f"run {result.run_id} {result.state}; see `skyflow status {result.run_id}` and "
                        f"`skyflow resume {result.run_id}`", run_id=result.run_id)


def _failure_tail(console: Console, stage: str, log: Path, lines: int = 8) -> None:
    """The last lines a failed stage printed, so the cause shows without `skyflow logs`."""
    from rich.text import Text

    if not log.is_file():
        return
    with open(log, "rb") as f:
        tail = [line.decode("utf-8", "replace").rstrip("\n") for line in _last_lines(f, lines)]
    if tail:
        console.print(Text(f"last lines of {stage} ({log}):", style="red"))
        for line in tail:
            console.print(Text(f"  {line}"), soft_wrap=True)


def _summary(home: Path, run: RunRow, where: str | None, orphaned: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    state = f"{run.state}, but its runner is gone" if orphaned else run.state
    table = Table(title=f"run {run.run_id}: {state}", title_justify="left")
    for column in ("stage", "state", "attempts", "infra", "time", "est. $", "actual $", "note"):
        table.add_column(column)
    for name, row in run.stages.items():
        table.add_row(name, row.state, str(row.attempts), row.infra or "local",
                      f"{row.duration_s:.1f}s" if row.duration_s else "", f"{row.estimated_usd or 0:.2f}",
                      f"{row.cost_usd or 0:.4f}", (row.message or "")[:80])
    console.print(table)
    for name, row in run.stages.items():
        if row.state == "failed" and row.log_path:
            _failure_tail(console, name, Path(row.log_path))
    for name, row in run.stages.items():
        if row.endpoint and (row.process_groups or row.remote_handle):
            console.print(f"{name} is serving at {row.endpoint} — stop it with `skyflow down {run.run_id}`")
    outputs = [f"{name}.{out}" for name, row in run.stages.items() for out in row.outputs]
    if outputs:
        console.print(f"outputs: {', '.join(outputs)} — a local copy: "
                      f"`skyflow artifacts get {run.run_id} {outputs[-1]}`, or `skyflow status {run.run_id} --json`",
                      soft_wrap=True)  # commands stay on one line, to be copied
    console.print(f"estimated ${run.estimated_usd or 0:.2f}, actual ${run.actual_usd or 0:.4f}")
    if orphaned:
        console.print(f"[yellow]its runner (pid {run.runner_pid}) stopped without finishing it:[/yellow] "
                      f"`skyflow resume {run.run_id}` continues it, `skyflow cancel {run.run_id}` ends it",
                      soft_wrap=True)
    console.print(f"lineage: {where}" if where else "lineage: not recorded")
    console.print(f"state: {home / 'state.db'}; outputs: `skyflow status {run.run_id} --json`")


@click.command()
@run_id_argument()
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON status object at the end, nothing else on stdout (schema: docs/cli.md).")
@click.option("--parallel", type=click.IntRange(min=1), help="At most this many stages at once.")
@click.option("-q", "--quiet", is_flag=True, help="Show only the progress, not the stages' output.")
@wait_for_lineage_option
def resume(run_id: str, as_json: bool, parallel: int | None, quiet: bool, wait_for_lineage: bool) -> None:
    """Rerun the failed and never-run stages of RUN_ID, reusing committed outputs.

    It runs the plan the run started with, without asking again; exits 1 when a stage failed.

    \b
    skyflow resume rlhf-20261130-061200-ab12
    skyflow resume rlhf-20261130-061200-ab12 --json | jq .state
    """
    from skyflow.session import Session

    session = Session(warn=_warner(), lineage_in_background=not wait_for_lineage)
    run = session.get_run(run_id)
    planned = {str(n): str(p.get("infra", "local")) for n, p in ((run.plan or {}).get("stages") or {}).items()}
    placements = {n: planned.get(n, row.infra or "local") for n, row in run.stages.items()}
    _execute(session, as_json, lambda view: session.resume(run_id, max_parallel=parallel, on_event=view),
             list(run.stages), placements, quiet=quiet)


@click.command()
@run_id_argument(required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the run's state as one JSON object (schema: docs/cli.md).")
def status(run_id: str | None, as_json: bool) -> None:
    """Show RUN_ID's stages (default: the newest run).

    Exits 0 for a run that succeeded or is still running, 1 for one that failed or was cancelled.

    \b
    skyflow status                       # the newest run
    skyflow status rlhf-20261130-0612-ab12 --json | jq .stages.ppo.outputs
    """
    from skyflow.home import skyflow_home
    from skyflow.runner.report import run_status_json
    from skyflow.runner.run_reads import find_run, runner_alive
    from skyflow.runner.state import RunStore

    home = skyflow_home()  # the state DB only: no planner, no backends (scripts poll this command)
    run = find_run(RunStore(home / "state.db"), run_id)
    orphaned = run.state == "running" and not runner_alive(run)
    if as_json:
        shown = run_status_json(run)
        if run.state == "running":  # whether anything still drives it (the same object as `run --json` otherwise)
            shown["runner_alive"] = not orphaned
        click.echo(json.dumps(shown))
    else:
        _summary(home, run, _lineage_where(home, run), orphaned=orphaned)
    if run.state in ("failed", "cancelled") or orphaned:
        sys.exit(1)


def _lineage_where(home: Path, run: RunRow) -> str:
    """Where a run's lineage is read from (the store `skyflow lineage` and `skyflow ui` open)."""
    if not run.options.get("lineage", True):
        return "not recorded (the run had --no-lineage)"
    from skyflow.lineage.recorder import describe_tracking, resolve_tracking_uri

    return describe_tracking(resolve_tracking_uri(None, home))


@click.command()
@run_id_argument()
@click.argument("stage")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the stage finishes (waits for a pending one).")
@click.option("--tail", "tail", type=click.IntRange(min=0), metavar="N", help="Start with the last N lines.")
@click.option("--attempt", type=click.IntRange(min=1), metavar="N", help="This attempt's log (default: the latest).")
def logs(run_id: str, stage: str, follow: bool, tail: int | None, attempt: int | None) -> None:
    """Print the log of STAGE in RUN_ID; exits 1 when the stage failed.

    \b
    skyflow logs RUN ppo -f              # follow, waiting for the stage to start
    skyflow logs RUN ppo --tail 20 --attempt 1
    """
    from skyflow.home import skyflow_home
    from skyflow.runner.run_reads import stage_log_path
    from skyflow.runner.state import RunStore

    home = skyflow_home()
    store = RunStore(home / "state.db")
    path = stage_log_path(store, home, run_id, stage, attempt=attempt, wait=follow)
    f = open(path, "rb")  # noqa: SIM115 - reopened when the log is rotated
    try:
        if tail is not None:
            sys.stdout.buffer.write(b"".join(_last_lines(f, tail)))
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            if follow and _rotated(path, f):  # the stage's log passed its size limit: go on in the new one
                sys.stdout.buffer.write(f.read())  # the moved file's last lines, written before it was moved
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                continue
            if not follow or store.get_run(run_id).stages[stage].state not in ("running", "pending"):
                break
            time.sleep(0.2)
    finally:
        f.close()
    if store.get_run(run_id).stages[stage].state == "failed":
        sys.exit(1)


def _rotated(path: Path, f: BinaryIO) -> bool:
    """Whether ``path`` now names another file than the open ``f`` (the log was moved aside)."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except OSError:
        return False


def _last_lines(f: BinaryIO, count: int) -> list[bytes]:
    """The last ``count`` lines of ``f``, leaving it at its end (a bounded deque, not the whole file)."""
    from collections import deque

    if count == 0:
        f.seek(0, 2)
        return []
    return list(deque(f, maxlen=count))


@click.command()
@run_id_argument()
@json_option("the run's state afterwards")
def cancel(run_id: str, as_json: bool) -> None:
    """Stop RUN_ID: its stages are killed and its state is kept for `skyflow resume`.

    The run's runner gets SIGTERM and stops them itself; a runner that has not done so within 30 s
    is killed, and the stages are stopped from here.

    \b
    skyflow cancel rlhf-20261130-061200-ab12
    skyflow resume rlhf-20261130-061200-ab12     # later: the stages that did not finish
    """
    from skyflow.session import Session

    state = Session().cancel(run_id)
    click.echo(json.dumps({"run_id": run_id, "state": state}) if as_json else f"run {run_id}: {state}")


@click.command()
@run_id_argument()
@json_option("the stages stopped")
def down(run_id: str, as_json: bool) -> None:
    """Stop the services RUN_ID left serving (local replicas, a Kubernetes Deployment, `sky serve`).

    \b
    skyflow down rlhf-20261130-061200-ab12
    """
    from skyflow.session import Session

    stopped = Session().down(run_id)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "stopped": stopped}))
        return
    click.echo(f"stopped {', '.join(stopped)}" if stopped else f"run {run_id} has no service running")
