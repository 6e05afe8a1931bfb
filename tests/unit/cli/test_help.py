"""Every command's --help shows an example and says what each option does; a pipeline's params are
listed by `run PIPELINE --help` and `plan PIPELINE --help`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from skyflow.cli.main import COMMANDS, cli


def _commands() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        yield (name,), command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                sub_command = command.get_command(ctx, sub)
                assert sub_command is not None
                yield (name, sub), sub_command


ALL = list(_commands())


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_help_has_an_example_and_every_option_says_what_it_does(path: tuple[str, ...],
                                                                 command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    examples = [line.strip() for line in result.output.splitlines() if line.strip().startswith("skyflow ")]
    assert any(line.startswith(f"skyflow {' '.join(path)}") for line in examples) or (
        isinstance(command, click.Group) and examples), f"no example in `skyflow {' '.join(path)} --help`"
    silent = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not silent, f"`skyflow {' '.join(path)}` options without help text: {silent}"


def test_top_level_help_shows_examples_and_global_options() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "skyflow run " in result.output and "-v, --verbose" in result.output and "-q, --quiet" in result.output


@pytest.mark.parametrize("command", ["run", "plan", "validate", "dag"])
def test_help_after_a_pipeline_lists_its_params(command: str, tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nparams:\n  lr: 0.1   # learning rate\n  model: tiny\nstages:\n  a:\n"
                        "    run: echo ${params.lr}\n")
    result = CliRunner().invoke(cli, [command, str(pipeline), "--help"])
    assert result.exit_code == 0, result.output
    assert f"Params of {pipeline}" in result.output
    assert "lr" in result.output and "default: 0.1 (float) — learning rate" in result.output
    assert "model" in result.output and "default: 'tiny' (str)" in result.output


def test_help_after_a_broken_pipeline_says_why_in_one_line(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nstages:\n  a:\n    rnu: echo\n")
    result = CliRunner().invoke(cli, ["run", str(pipeline), "--help"])
    assert result.exit_code == 0, result.output
    assert "cannot read them:" in result.output and "rnu" in result.output
