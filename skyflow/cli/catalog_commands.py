"""`skyflow catalog gpus`: per accelerator and count, the cheapest offer of each cloud."""

from __future__ import annotations

import json

import click
import numpy as np


@click.group()
def catalog() -> None:
    """Look at the price catalog the planner prices offers from.

    \b
    skyflow catalog gpus
    skyflow catalog gpus H100 --json
    """


@catalog.command()
@click.argument("name", required=False)
@click.option("--catalog", "catalog_dir", metavar="DIR", help="Catalog folder of <cloud>/vms.csv files.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list (schema: docs/cli.md).")
def gpus(name: str | None, catalog_dir: str | None, as_json: bool) -> None:
    """Per accelerator and count, the cheapest on-demand and spot offer in each cloud (like sky show-gpus).

    \b
    skyflow catalog gpus
    skyflow catalog gpus A100 --catalog my-catalog/
    skyflow catalog gpus H100 --json | jq '.[] | select(.count == 8)'
    """
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
    found: list[dict[str, object]] = []
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
                found.append({"accelerator": acc, "count": count, "cloud": cloud, "instance": o.instance_type,
                              "on_demand_usd": _price(c.price, demand), "region": _region(cat, demand),
                              "spot_usd": _price(c.spot, spot), "spot_region": _region(cat, spot)})
    if as_json:
        click.echo(json.dumps(found))
        return
    table = Table(title="Cheapest offer per accelerator, count and cloud (USD per hour)")
    for col in ("accelerator", "count", "cloud", "instance", "on-demand", "region", "spot", "spot region"):
        table.add_column(col, justify="right" if col in ("count", "on-demand", "spot") else "left")
    for r in found:
        table.add_row(str(r["accelerator"]), f"{r['count']:g}", str(r["cloud"]), str(r["instance"]),
                      _usd(r["on_demand_usd"]), str(r["region"] or "-"), _usd(r["spot_usd"]),
                      str(r["spot_region"] or "-"))
    Console().print(table)


def _cheapest(cat: object, rows: np.ndarray, prices: np.ndarray) -> int | None:
    priced = rows[~np.isnan(prices[rows])]
    return None if len(priced) == 0 else int(priced[np.argmin(prices[priced])])


def _price(prices: np.ndarray, index: int | None) -> float | None:
    return None if index is None else round(float(prices[index]), 6)


def _usd(price: object) -> str:
    return "-" if price is None else f"{price:,.2f}"


def _region(cat: object, index: int | None) -> str | None:
    if index is None:
        return None
    return str(cat.offer(index).region)  # type: ignore[attr-defined]
