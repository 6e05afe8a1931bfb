"""The `skyflow` command: a lazy click group; each command's module is imported only when run."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from skyflow import __version__

# command name -> (module, attribute, one-line help). Modules load only when the command runs,
# which keeps `skyflow --help` fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("skyflow.cli.spec_commands", "validate", "Check a pipeline and print what is wrong."),
    "dag": ("skyflow.cli.spec_commands", "dag", "Show the pipeline's DAG (text, mermaid or dot)."),
    "export": ("skyflow.cli.spec_commands", "export", "Print a pipeline (YAML or Python) as YAML."),
    "plan": ("skyflow.cli.plan_commands", "plan", "Place each stage on the cheapest cloud, region and instance."),
    "catalog": ("skyflow.cli.catalog_commands", "catalog", "Look at the price catalog (gpus)."),
    "run": ("skyflow.cli.run_commands", "run", "Plan and run a pipeline end to end."),
    "resume": ("skyflow.cli.run_commands", "resume", "Rerun the failed and never-run stages of a run."),
    "status": ("skyflow.cli.run_commands", "status", "Show a run's stages (--json for scripts)."),
    "logs": ("skyflow.cli.run_commands", "logs", "Print a stage's log (-f to follow)."),
    "cancel": ("skyflow.cli.run_commands", "cancel", "Stop a run, keeping its state for resume."),
    "runs": ("skyflow.cli.runs_commands", "runs", "List recent runs with cost."),
    "down": ("skyflow.cli.run_commands", "down", "Stop the services a run left serving."),
    "schedule": ("skyflow.cli.schedule_commands", "schedule", "Add, list, pause, trigger and export schedules."),
    "scheduler": ("skyflow.cli.schedule_commands", "scheduler", "Fire scheduled and data-triggered runs (foreground)."),
    "lineage": ("skyflow.cli.lineage_commands", "lineage", "Show where an artifact came from, back to raw data."),
    "ui": ("skyflow.cli.lineage_commands", "ui", "Serve the MLflow UI on the lineage store."),
    "artifacts": ("skyflow.cli.artifacts_commands", "artifacts", "List artifacts, copy one out; gc what no run keeps."),
    "check": ("skyflow.cli.check_commands", "check", "What this machine can use: clouds, clusters, pools, stores."),
    "daemon": ("skyflow.cli.daemon.commands", "daemon", "Keep skyflow loaded: plan, validate and dag answer at once."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, so that `skyflow --help` imports no command module.
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name and name not in COMMANDS and not name.startswith("-"):
            from skyflow.matching import close_matches

            matches = close_matches(name, list(COMMANDS))
            hint = f" Did you mean {', '.join(matches)}?" if matches else ""
            raise click.UsageError(f"no such command {name!r}.{hint} Commands: {', '.join(sorted(COMMANDS))}.")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="skyflow", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True,
              help="Log what skyflow does to stderr (-v: info, -vv: debug, with third-party libraries).")
@click.option("-q", "--quiet", is_flag=True,
              help="Quieter runs: progress without the stages' output (as run -q), no warnings; errors only in logs.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Plan and run multi-stage LLMOps pipelines on the cheapest place that fits each stage.

    \b
    skyflow validate examples/rlhf/pipeline.yaml
    skyflow plan examples/rlhf/pipeline.yaml --set scale=full --all-clouds
    skyflow run examples/rlhf/pipeline.yaml
    skyflow run examples/rlhf/pipeline.yaml --help     # also lists the pipeline's params
    skyflow status && skyflow logs RUN ppo --tail 20
    skyflow -q run pipeline.yaml -y --json             # for scripts: one JSON object, no question

    Shell completion (commands, options, pipeline files, run ids): see docs/cli.md.
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q do not go together; pick one")
    ctx.obj = Verbosity(verbose=verbose, quiet=quiet)
    _configure_logging(verbose, quiet)


class Verbosity:
    """The global -v/-q, for the commands that honour them (`global_verbosity()`)."""

    def __init__(self, verbose: int = 0, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet


def global_verbosity() -> Verbosity:
    """-v/-q as given before the command (`skyflow -q run ...`); defaults outside a command."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Verbosity) else Verbosity()


def _configure_logging(verbose: int, quiet: bool) -> None:
    import logging

    if not verbose and not quiet:
        return
    level = logging.ERROR if quiet else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level if quiet or verbose > 1 else logging.WARNING)  # -v: skyflow's info, not every library's
    logging.getLogger("skyflow").setLevel(level)


def entry() -> Any:
    """The process's entry point (the `skyflow` script, `python -m skyflow`): `main`, then a quick exit."""
    from skyflow.processes import skip_final_collections

    try:
        return main()
    finally:
        skip_final_collections()


def main(argv: list[str] | None = None) -> Any:
    from skyflow.errors import INTERRUPTED_EXIT, SkyflowError

    if not sys.stdout.isatty():  # logs and CI: rich would wrap tables at 80 columns
        os.environ.setdefault("COLUMNS", "120")
    try:
        return cli.main(args=argv, prog_name="skyflow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(INTERRUPTED_EXIT)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except SkyflowError as exc:
        click.echo(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(INTERRUPTED_EXIT)
