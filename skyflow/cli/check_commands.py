"""`skyflow check`: which clouds, clusters, pools, stores and lineage store this machine can use."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("target", required=False, metavar="[PIPELINE]")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON list (schema: docs/cli.md).")
def check(target: str | None, as_json: bool) -> None:
    """Say what this machine can use, one line each, with the fix for what is missing.

    With PIPELINE, also whether each of its `stores:` is reachable with this machine's credentials.
    Exits 0 whatever it finds (a cloud without credentials is simply not planned on).

    \b
    skyflow check
    skyflow check examples/rlhf/pipeline.yaml --json
    """
    from rich.console import Console
    from rich.text import Text

    from skyflow.session import Session
    from skyflow.session.check import check_environment

    session = Session()
    stores = {}
    if target:
        pipeline = session.load(target)
        stores = {key: spec.uri for key, spec in pipeline.spec.stores.items() if "://" in spec.uri}
    findings = check_environment(session.config, session.home, session.environ, stores=stores)
    if as_json:
        click.echo(json.dumps([f.to_json() for f in findings], indent=1))
        return
    console = Console()
    width = max(len(f"{f.kind} {f.name}") for f in findings)
    for f in findings:
        mark = Text("ok  ", style="green") if f.ok else Text("no  ", style="red")
        line = Text.assemble(mark, f"{f.kind} {f.name}".ljust(width + 2), f.detail)
        if f.fix:
            line.append(f" — {f.fix}", style="yellow")
        console.print(line)
