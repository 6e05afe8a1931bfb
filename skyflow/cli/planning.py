"""The planning flags of `skyflow plan` and `skyflow run`, given to a command as one PlanningOptions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import click

from skyflow.session.planning_options import PlanningOptions

__all__ = ["PlanningOptions", "planning_options"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option("--catalog", "catalog_dir", metavar="DIR", help="Catalog folder of <cloud>/vms.csv files."),
    click.option("--egress", "egress_file", metavar="FILE", help="Egress rules file (USD per GB)."),
    click.option("--minimize", type=click.Choice(["cost", "time"]), default="cost", show_default=True,
                 help="cost, or time: the fastest plan, then the cheapest of those."),
    click.option("--deadline", type=click.FloatRange(min=0, min_open=True), metavar="HOURS",
                 help="Cheapest plan that finishes in time (hours > 0)."),
    click.option("--max-cost", type=click.FloatRange(min=0, min_open=True), metavar="USD",
                 help="Fastest plan within this budget (USD > 0), then the cheapest of those; minimizes time "
                      "whatever --minimize says."),
    click.option("--time-limit", type=click.FloatRange(min=0), default=PlanningOptions.time_limit, show_default=True,
                 metavar="SECONDS",
                 help="Stop the search after this long with the best plan found, its lower bound and gap; "
                      "0: search until the plan is proven optimal."),
    click.option("--infra", metavar="LIST", help="Only these: aws,gcp/us-central1,local,ssh/lab,kubernetes/ctx; "
                                                 "`local` alone forces this machine."),
    click.option("--all-clouds", is_flag=True, help="Plan over every catalog cloud, credentials or not (what-if)."),
    click.option("--allow-clouds", metavar="LIST", help="Only these clouds, comma-separated: aws,gcp."),
    click.option("--block-clouds", metavar="LIST", help="Never these clouds, comma-separated: azure,lambda."),
    click.option("--allow-regions", metavar="LIST", help="Only these regions, comma-separated: us-east-1,us-central1."),
    click.option("--block-regions", metavar="LIST", help="Never these regions, comma-separated: eu-west-3."),
)
_FIELDS = tuple(f.name for f in fields(PlanningOptions))


def planning_options(func: F) -> F:
    """Add the planning flags to a command; it receives them as one ``planning: PlanningOptions``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = PlanningOptions(**{name: kwargs.pop(name) for name in _FIELDS})
        return func(*args, planning=options, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
