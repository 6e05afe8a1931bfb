"""`skyflow schedule add|list|pause|resume|remove|trigger|export` and the `skyflow scheduler` daemon."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from skyflow.cli.options import json_option


def open_store() -> Any:
    """The schedule tables in the runner's state DB."""
    from skyflow.home import skyflow_home
    from skyflow.scheduler.store import ScheduleStore

    return ScheduleStore(skyflow_home() / "state.db")


def open_launcher() -> Any:
    """A launcher wired to the runner's run state and cancel (the scheduler does not import the runner)."""
    from skyflow.errors import RunError
    from skyflow.scheduler.launch import RunLauncher
    from skyflow.session import Session

    session = Session()
    runs = session.state

    def run_state(run_id: str) -> tuple[str, int | None] | None:
        try:
            run = runs.get_run(run_id)
        except RunError:
            return None
        return run.state, run.runner_pid

    return RunLauncher(session.home / "scheduler" / "logs", run_state,
                       lambda run_id, timeout_s: session.cancel(run_id, timeout_s=timeout_s))


@click.group()
def schedule() -> None:
    """Run pipelines on a cron and when their data changes (see `skyflow scheduler`).

    \b
    skyflow schedule add pipelines/nightly-retrain.yaml --cron '0 3 * * *' --timezone Europe/Berlin
    skyflow schedule list
    skyflow scheduler                    # fires them, in the foreground
    """


@schedule.command()
@click.argument("file")
@click.option("--name", help="Schedule name (default: the pipeline's name).")
@click.option("--cron", help="Cron line, e.g. '0 3 * * 1' (overrides the pipeline's schedule.cron).")
@click.option("--timezone", help="IANA zone the cron is read in, e.g. Europe/Berlin (default UTC).")
@click.option("--on-change", "on_change", multiple=True, metavar="INPUT|URI", help="Rerun when this data changes.")
@click.option("--concurrency", type=click.Choice(["forbid", "allow", "replace"]),
              help="When a run is still going at the next fire: skip it, start another, or cancel the old one.")
@click.option("--catchup", type=click.Choice(["latest", "all", "none"]),
              help="Fires missed while no scheduler ran: run the latest one, all of them, or none.")
@click.option("--infra", help="Passed to each `skyflow run` (e.g. local).")
@click.option("--no-lineage", is_flag=True, help="Runs record no lineage.")
@json_option("the schedule added")
def add(file: str, name: str | None, cron: str | None, timezone: str | None, on_change: tuple[str, ...],
        concurrency: str | None, catchup: str | None, infra: str | None, no_lineage: bool, as_json: bool) -> None:
    """Add (or update) the schedule of pipeline FILE.

    Its runs launch without asking about their cost (`skyflow run --yes`): adding it is the consent.

    \b
    skyflow schedule add pipelines/nightly-retrain.yaml --cron '0 3 * * 1' --timezone Europe/Berlin
    skyflow schedule add pipeline.yaml --on-change corpus --concurrency replace --infra local
    """
    from skyflow.scheduler.api import add_schedule, next_fire, schedule_from_pipeline

    run_args = _run_args(infra, no_lineage)
    record = schedule_from_pipeline(file, name=name, cron=cron, timezone=timezone, on_change=on_change,
                                    concurrency=concurrency, catchup=catchup, run_args=run_args)
    saved = add_schedule(open_store(), record)
    when = next_fire(saved, time.time())
    if as_json:
        click.echo(json.dumps({"name": saved.name, "pipeline": saved.pipeline, "target": saved.target,
                               "cron": saved.cron, "timezone": saved.timezone,
                               "on_change": [r for r, _ in saved.on_change], "concurrency": saved.concurrency,
                               "catchup": saved.catchup, "next_fire": _when(when, saved.timezone),
                               "run_args": list(saved.run_args)}))
        return
    click.echo(f"schedule {saved.name}: {_trigger_text(saved)}; next run {_when(when, saved.timezone)}")
    click.echo("runs fire while `skyflow scheduler` is running")


def _run_args(infra: str | None, no_lineage: bool) -> tuple[str, ...]:
    """What each fired `skyflow run` gets. `--yes`: a schedule has no terminal to ask on, and adding it
    was the consent to its runs' cost."""
    return (("--infra", infra) if infra else ()) + (("--no-lineage",) if no_lineage else ()) + ("--yes",)


def _trigger_text(record: object) -> str:
    cron = getattr(record, "cron", None)
    watched = [ref for ref, _ in getattr(record, "on_change", ())]
    parts = [f"cron '{cron}' {getattr(record, 'timezone', '')}"] if cron else []
    return ", ".join(parts + ([f"on change of {', '.join(watched)}"] if watched else []))


def _when(epoch: float | None, timezone: str) -> str:
    if epoch is None:
        return "-"
    from skyflow.scheduler.timing import format_tick

    return format_tick(epoch, timezone)


@schedule.command("list")
@json_option("the schedules and the scheduler's lease")
def list_(as_json: bool) -> None:
    """List schedules with their next fire time and last run.

    \b
    skyflow schedule list
    skyflow schedule list --json | jq '.schedules[].next_fire'
    """
    from skyflow.scheduler.api import next_fire

    store = open_store()
    now = time.time()
    rows: list[dict[str, Any]] = []
    records = store.schedules()
    for record in records:
        last = next(iter(store.fires(record.name, limit=1)), None)
        rows.append({"name": record.name, "pipeline": record.pipeline, "target": record.target, "cron": record.cron,
                     "timezone": record.timezone, "on_change": [r for r, _ in record.on_change],
                     "concurrency": record.concurrency, "catchup": record.catchup, "paused": record.paused,
                     "next_fire": _when(next_fire(record, now), record.timezone),
                     "pending_change": record.pending_change,
                     "last_run": last.run_id if last else None,
                     "last_state": (last.outcome or last.state) if last else None})
    lease = store.lease()
    if as_json:
        click.echo(json.dumps({"schedules": rows, "scheduler": lease}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="schedules", title_justify="left")
    for column in ("name", "trigger", "next fire", "policy", "last run", "state"):
        table.add_column(column)
    for row, record in zip(rows, records, strict=True):
        table.add_row(row["name"] + (" (paused)" if row["paused"] else ""), _trigger_text(record),
                      row["next_fire"], f"{row['concurrency']}/{row['catchup']}", row["last_run"] or "-",
                      row["last_state"] or "-")
    console = Console()
    console.print(table)
    alive = lease and lease.get("expires_at", 0) > now
    console.print(f"scheduler: {'running as ' + str(lease['owner']) if alive and lease else 'not running'}")


@schedule.command()
@click.argument("name")
def pause(name: str) -> None:
    """Stop NAME from firing until `skyflow schedule resume`.

    \b
    skyflow schedule pause nightly-retrain
    """
    open_store().set_paused(name, True, time.time())
    click.echo(f"schedule {name}: paused")


@schedule.command()
@click.argument("name")
def resume(name: str) -> None:
    """Let NAME fire again; ticks that fell while it was paused are skipped.

    \b
    skyflow schedule resume nightly-retrain
    """
    from skyflow.scheduler.api import next_fire

    store = open_store()
    store.set_paused(name, False, time.time())
    record = store.get(name)
    click.echo(f"schedule {name}: resumed; next run {_when(next_fire(record, time.time()), record.timezone)}")


@schedule.command()
@click.argument("name")
def remove(name: str) -> None:
    """Delete NAME and its fire history (runs stay in `skyflow runs`).

    \b
    skyflow schedule remove nightly-retrain
    """
    open_store().remove(name)
    click.echo(f"schedule {name}: removed")


@schedule.command()
@click.argument("name")
@json_option("the run started")
def trigger(name: str, as_json: bool) -> None:
    """Start a run of NAME now, honouring its concurrency policy.

    \b
    skyflow schedule trigger nightly-retrain
    """
    from skyflow.scheduler.api import trigger_now

    fire = trigger_now(open_store(), open_launcher(), name)
    if as_json:
        click.echo(json.dumps({"schedule": name, "run_id": fire.run_id, "pid": fire.pid, "log": str(fire.log_path)}))
        return
    click.echo(f"schedule {name}: started run {fire.run_id} (pid {fire.pid}); log {fire.log_path}")
    click.echo(f"follow it with `skyflow status {fire.run_id}`")


@schedule.command()
@click.argument("file")
@click.option("--format", "fmt", required=True,
              type=click.Choice(["crontab", "k8s-cronjob", "github-actions", "airflow"]),
              help="Which scheduler the config is for.")
@click.option("--cron", help="Cron line (overrides the pipeline's schedule.cron).")
@click.option("--timezone", help="IANA zone the cron is read in.")
@click.option("--infra", help="Passed to each `skyflow run` (e.g. local).")
@click.option("--no-lineage", is_flag=True, help="Runs record no lineage.")
@click.option("--python", "python", metavar="PATH",
              help="crontab, airflow: interpreter with skyflow installed [default: this one].")
@click.option("--image", help="k8s-cronjob: container image with skyflow and the repository (required).")
@click.option("--pvc", metavar="CLAIM",
              help="k8s-cronjob: existing PersistentVolumeClaim for SKYFLOW_HOME [default: the export makes one].")
@click.option("--repo-root", metavar="DIR",
              help="github-actions, k8s-cronjob: checkout the pipeline lives in [default: its git root].")
@click.option("--install", metavar="REQUIREMENT",
              help="github-actions: a path or VCS URL of skyflow-llmops to install instead of the repository's "
                   "source tree (a bare name is refused) [default: the source tree].")
def export(file: str, fmt: str, cron: str | None, timezone: str | None, infra: str | None, no_lineage: bool,
           python: str | None, image: str | None, pvc: str | None, repo_root: str | None,
           install: str | None) -> None:
    """Print FILE's schedule as config for another scheduler; what it cannot express goes to stderr.

    \b
    skyflow schedule export pipelines/nightly-retrain.yaml --format crontab >> my.crontab
    skyflow schedule export pipeline.yaml --format k8s-cronjob --image registry/skyflow:1 > cronjob.yaml
    skyflow schedule export pipeline.yaml --format github-actions > .github/workflows/retrain.yml
    """
    import sys
    from pathlib import Path

    from skyflow.errors import SchedulerError
    from skyflow.home import skyflow_home
    from skyflow.scheduler.api import schedule_from_pipeline
    from skyflow.scheduler.exports import ExportSettings, checkout_install, export_schedule, find_repo_root

    run_args = _run_args(infra, no_lineage)
    record = schedule_from_pipeline(file, cron=cron, timezone=timezone, run_args=run_args)
    root = str(Path(repo_root).resolve()) if repo_root else find_repo_root(file)
    if fmt == "github-actions" and root is None:
        raise SchedulerError(f"{file} is not inside a git checkout; pass --repo-root DIR (the repository root)")
    if fmt == "github-actions" and install is None:
        install = checkout_install(str(root))
    settings = ExportSettings(python=python or sys.executable, home=str(skyflow_home().resolve()), image=image,
                              pvc=pvc, repo_root=root, install=install)
    text, warnings = export_schedule(record, fmt, file, settings)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(text, nl=False)


@click.command()
@click.option("--interval", default=30.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between polls of watched inputs (cron ticks fire on time regardless).")
@click.option("--lease-ttl", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds another scheduler waits before taking over from one that stopped answering.")
@click.option("-v", "--verbose", is_flag=True, help="Also log why due runs are waiting.")
def scheduler(interval: float, lease_ttl: float, verbose: bool) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C.

    \b
    skyflow scheduler
    skyflow scheduler --interval 5 -v    # poll watched data every 5 s, say why runs wait
    """
    import logging
    import threading

    from skyflow.cli.main import global_verbosity
    from skyflow.scheduler.daemon import Scheduler, stop_on_signals

    verbose = verbose or global_verbosity().verbose > 0
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("skyflow").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    stop_on_signals(stop)
    Scheduler(open_store(), open_launcher(), poll_s=interval, lease_ttl_s=lease_ttl).serve(stop)
