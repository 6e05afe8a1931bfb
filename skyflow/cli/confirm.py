"""Asking before a plan spends money: from the config's `confirm_cost_usd` up, on a terminal, unless -y."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skyflow.errors import PlanningError

# `skyflow run` exits 1 when the question is answered no: nothing was launched, and `&&` stops there.
DECLINED_EXIT_CODE = 1


def needs_confirmation(total_usd: float, threshold_usd: float | None) -> bool:
    """Whether a plan of ``total_usd`` asks first: at or above the threshold (None: never)."""
    return threshold_usd is not None and total_usd >= threshold_usd


def confirm_spend(total_usd: float, threshold_usd: float | None, *, yes: bool, config_path: Path,
                  interactive: bool | None = None) -> None:
    """Ask on a terminal whether to launch a plan that costs ``total_usd``; off one, refuse without -y.

    Answered no, the command ends with DECLINED_EXIT_CODE and nothing launched.
    """
    if yes or not needs_confirmation(total_usd, threshold_usd):
        return
    where = f"confirm_cost_usd: {threshold_usd:g} in {config_path}"
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not interactive:
        raise PlanningError(f"this plan costs ${total_usd:,.2f}, at or above the ${threshold_usd:,.2f} that needs a "
                            f"yes ({where}), and there is no terminal to ask on; pass -y to launch it")
    if not click.confirm(f"This plan costs ${total_usd:,.2f} ({where}). Launch it?", default=False, err=True):
        click.echo("Nothing launched.", err=True)
        sys.exit(DECLINED_EXIT_CODE)
