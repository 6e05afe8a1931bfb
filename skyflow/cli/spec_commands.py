"""`skyflow validate`, `dag` and `export`: look at a pipeline without running it."""

from __future__ import annotations

import click

from skyflow.cli.options import pipeline_target, set_option


@click.command()
@pipeline_target
@set_option
def validate(target: str, set_: tuple[str, ...]) -> None:
    """Check TARGET (pipeline.yaml or module.py:function) and print what is wrong."""
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides

    pipeline = load_pipeline(target, parse_overrides(set_))
    edges = len(pipeline.edges) + len(pipeline.ordering)
    click.echo(f"{target}: ok — pipeline {pipeline.name!r}, {len(pipeline.order)} stages, {edges} edges")


@click.command()
@pipeline_target
@set_option
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True, help="Output format.")
def dag(target: str, set_: tuple[str, ...], fmt: str) -> None:
    """Show the DAG of TARGET: stages in order, with the artifacts between them."""
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides
    from skyflow.spec.render import render_dag

    click.echo(render_dag(load_pipeline(target, parse_overrides(set_)), fmt))


@click.command()
@pipeline_target
@set_option
def export(target: str, set_: tuple[str, ...]) -> None:
    """Print TARGET as pipeline YAML (a decorated Python pipeline becomes a YAML file)."""
    from skyflow.spec.export import dump_pipeline_yaml
    from skyflow.spec.loader import load_pipeline
    from skyflow.spec.params import parse_overrides

    click.echo(dump_pipeline_yaml(load_pipeline(target, parse_overrides(set_))), nl=False)
