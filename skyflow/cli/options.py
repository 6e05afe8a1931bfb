"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def pipeline_target(func: F) -> F:
    return click.argument("target", metavar="PIPELINE")(func)


def set_option(func: F) -> F:
    return click.option("--set", "set_", multiple=True, metavar="NAME=VALUE",
                        help="Override a pipeline param (repeatable).")(func)
