"""Options and arguments shared by several commands, with their shell completion, and the command class
whose `--help` lists the params of the pipeline it was given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

PIPELINE_SUFFIXES = (".yaml", ".yml", ".py")
HELP_FLAGS = ("-h", "--help")


def complete_pipeline(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Pipeline files (*.yaml, *.yml, *.py) and folders under what was typed so far."""
    folder, _, stem = incomplete.rpartition("/")
    base = Path(folder or ".")
    if not base.is_dir():
        return []
    items = []
    for entry in sorted(base.iterdir()):
        if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem.startswith(".")):
            continue
        shown = f"{folder}/{entry.name}" if folder else entry.name
        if entry.is_dir():
            items.append(CompletionItem(shown + "/", type="plain"))
        elif entry.suffix in PIPELINE_SUFFIXES:
            items.append(CompletionItem(shown))
    return items


def complete_run_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The ids of recent runs in $SKYFLOW_HOME (newest first), with their pipeline and state."""
    from skyflow.home import skyflow_home
    from skyflow.runner.run_list import recent_runs

    db = skyflow_home() / "state.db"
    if not db.is_file():
        return []
    try:
        rows = recent_runs(db, limit=200)
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [CompletionItem(r.run_id, help=f"{r.pipeline} {r.state}") for r in rows if r.run_id.startswith(incomplete)]


def pipeline_target(func: F) -> F:
    return click.argument("target", metavar="PIPELINE", shell_complete=complete_pipeline)(func)


def run_id_argument(required: bool = True) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.argument("run_id", required=required, shell_complete=complete_run_id)(func)

    return decorate


def set_option(func: F) -> F:
    return click.option("--set", "set_", multiple=True, metavar="NAME=VALUE",
                        help="Override a pipeline param (repeatable); `--help` after PIPELINE lists them.")(func)


def json_option(what: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        option = click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON (schema: docs/cli.md).")
        return option(func)

    return decorate


class PipelineCommand(click.Command):
    """A command taking PIPELINE first, whose `--help` after it also lists that pipeline's params:
    `skyflow run pipeline.yaml --help`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in HELP_FLAGS for a in args):
            target = next((a for a in args if not a.startswith("-")), None)
            if target and Path(target.split(":", 1)[0]).is_file():
                ctx.meta["skyflow.help_pipeline"] = target
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        target = ctx.meta.get("skyflow.help_pipeline")
        if target:
            self._format_params(str(target), formatter)

    @staticmethod
    def _format_params(target: str, formatter: click.HelpFormatter) -> None:
        from skyflow.errors import SkyflowError
        from skyflow.spec.loader import load_pipeline

        try:
            params = load_pipeline(target).spec.params
        except SkyflowError as exc:
            with formatter.section(f"Params of {target}"):
                formatter.write_text(f"(cannot read them: {str(exc).splitlines()[0]})")
            return
        notes = _param_comments(target)
        with formatter.section(f"Params of {target} (set with --set NAME=VALUE)"):
            if not params:
                formatter.write_text("(none)")
            else:
                formatter.write_dl([(name, f"default: {value!r} ({type(value).__name__})"
                                     + (f" — {notes[name]}" if name in notes else ""))
                                    for name, value in params.items()])


def _param_comments(target: str) -> dict[str, str]:
    """The comment written after each param of a YAML pipeline (`scale: demo  # demo | full`)."""
    if not target.endswith((".yaml", ".yml")):
        return {}
    from ruamel.yaml import YAML

    try:
        params = YAML(typ="rt").load(Path(target).read_text(encoding="utf-8")).get("params")
        found = {}
        for key in params:
            token = (params.ca.items.get(key) or [None, None, None])[2]
            text = token.value.strip().splitlines()[0].lstrip("#").strip() if token is not None else ""
            if text:
                found[str(key)] = text
        return found
    except Exception:  # a help screen never fails on a comment it cannot read
        return {}
