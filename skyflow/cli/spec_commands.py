"""`skyflow validate`, `dag` and `export`: look at a pipeline without running it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from skyflow.cli.options import PipelineCommand, json_option, pipeline_target, set_option

if TYPE_CHECKING:
    from skyflow.errors import Issue
    from skyflow.spec.graph import ResolvedPipeline


def issue_json(issue: Issue) -> dict[str, Any]:
    pos = issue.position
    return {"message": issue.message, "file": pos.file if pos else None, "line": pos.line if pos else None,
            "col": pos.col if pos else None, "hint": issue.hint, "matches": list(issue.matches),
            "text": issue.render()}


@click.command(cls=PipelineCommand)
@pipeline_target
@set_option
@json_option("the diagnostics")
def validate(target: str, set_: tuple[str, ...], as_json: bool) -> None:
    """Check PIPELINE (pipeline.yaml or module.py:function) and print what is wrong, at FILE:LINE:COL.

    Exits 0 when it is valid, 2 when not.

    \b
    skyflow validate examples/rlhf/pipeline.yaml
    skyflow validate examples/rlhf/pipeline.py:rlhf --json | jq '.issues[].text'
    """
    from skyflow.errors import SpecError
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides

    try:
        pipeline = load_pipeline(target, parse_overrides(set_))
    except SpecError as exc:
        if not as_json:
            raise
        click.echo(json.dumps({"target": target, "ok": False, "issues": [issue_json(i) for i in exc.issues]}))
        sys.exit(exc.exit_code)
    edges = len(pipeline.edges) + len(pipeline.ordering)
    if as_json:
        click.echo(json.dumps({"target": target, "ok": True, "pipeline": pipeline.name,
                               "stages": len(pipeline.order), "edges": edges, "issues": []}))
        return
    click.echo(f"{target}: ok — pipeline {pipeline.name!r}, {len(pipeline.order)} stages, {edges} edges")


def dag_json(pipeline: ResolvedPipeline) -> dict[str, Any]:
    """Stages in run order with their upstream and outputs, and every edge."""
    return {"pipeline": pipeline.name,
            "stages": [{"name": n, "upstream": pipeline.upstream(n), "downstream": pipeline.downstream(n),
                        "outputs": list(pipeline.stages[n].outputs)} for n in pipeline.order],
            "edges": [{"from": e.producer, "to": e.consumer, "input": e.input_name, "kind": e.kind,
                       "artifact": e.ref} for e in pipeline.edges],
            "ordering": [{"before": a, "after": b} for a, b in pipeline.ordering]}


@click.command(cls=PipelineCommand)
@pipeline_target
@set_option
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot", "json"]), default="text",
              show_default=True, help="Output format (json: schema in docs/cli.md).")
@json_option("the DAG (same as --format json)")
def dag(target: str, set_: tuple[str, ...], fmt: str, as_json: bool) -> None:
    """Show the DAG of PIPELINE: stages in order, with the artifacts between them.

    \b
    skyflow dag examples/rlhf/pipeline.yaml
    skyflow dag pipeline.yaml --format mermaid > dag.mmd
    skyflow dag pipeline.yaml --format dot | dot -Tpng > dag.png
    """
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides
    from skyflow.spec.render import render_dag

    pipeline = load_pipeline(target, parse_overrides(set_))
    if as_json or fmt == "json":
        click.echo(json.dumps(dag_json(pipeline)))
        return
    click.echo(render_dag(pipeline, fmt))


@click.command(cls=PipelineCommand)
@pipeline_target
@set_option
def export(target: str, set_: tuple[str, ...]) -> None:
    """Print PIPELINE as pipeline YAML (a decorated Python pipeline becomes a YAML file).

    Params stay params: a stage that used `params.lr` reads `${params.lr}` in the YAML.

    \b
    skyflow export examples/rlhf/pipeline.py:rlhf > rlhf.yaml
    skyflow run rlhf.yaml --set kl_coef=0.1
    """
    from skyflow.spec.export import export_pipeline_yaml
    from skyflow.spec.params import parse_overrides

    click.echo(export_pipeline_yaml(target, parse_overrides(set_)), nl=False)
