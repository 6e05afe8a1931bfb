"""`skyflow catalog gpus`: per accelerator and count, the cheapest offer of each cloud."""

from __future__ import annotations

import click
import numpy as np


@click.group()
def catalog() -> None:
    """Look at the price catalog."""


@catalog.command()
@click.argument("name", required=False)
@click.option("--catalog", "catalog_dir", metavar="DIR", help="Catalog folder of <cloud>/vms.csv files.")
def gpus(name: str | None, catalog_dir: str | None) -> None:
    """Per accelerator and count, the cheapest on-demand and spot offer in each cloud (like sky show-gpus)."""
    from rich.console import Console
    from rich.table import Table

    from skyflow.catalog import load_catalog
    from skyflow.errors import CatalogError

    cat = load_catalog(catalog_dir)
    c = cat.columns
    names = [n for n in cat.accelerator_names if n and (name is None or n.lower() == name.lower())]
    if not names:
        raise CatalogError(f"no accelerator {name!r} in the catalog; known: "
                           f"{', '.join(sorted(n for n in cat.accelerator_names if n))}")
    table = Table(title="Cheapest offer per accelerator, count and cloud (USD per hour)")
    for col in ("accelerator", "count", "cloud", "instance", "on-demand", "region", "spot", "spot region"):
        table.add_column(col, justify="right" if col in ("count", "on-demand", "spot") else "left")
    for acc in sorted(names, key=str.lower):
        acc_id = cat.accelerator_id(acc)
        for count in sorted({float(x) for x in c.acc_count[c.acc_name == acc_id]}):
            for cloud_id, cloud in enumerate(cat.cloud_names):
                rows = np.nonzero((c.acc_name == acc_id) & (c.acc_count == count) & (c.cloud == cloud_id))[0]
                if len(rows) == 0:
                    continue
                demand, spot = _cheapest(cat, rows, c.price), _cheapest(cat, rows, c.spot)
                shown = demand if demand is not None else spot
                assert shown is not None
                o = cat.offer(shown)
                table.add_row(acc, f"{count:g}", cloud, o.instance_type, _usd(c.price, demand),
                              _region(cat, demand), _usd(c.spot, spot), _region(cat, spot))
    Console().print(table)


def _cheapest(cat: object, rows: np.ndarray, prices: np.ndarray) -> int | None:
    priced = rows[~np.isnan(prices[rows])]
    return None if len(priced) == 0 else int(priced[np.argmin(prices[priced])])


def _usd(prices: np.ndarray, index: int | None) -> str:
    return "-" if index is None else f"{prices[index]:,.2f}"


def _region(cat: object, index: int | None) -> str:
    if index is None:
        return "-"
    return str(cat.offer(index).region)  # type: ignore[attr-defined]
