"""PriceCatalog: every priced instance offer, stored as columns so that filtering is vectorized.

Offers stay per zone: a region's price for a request is its cheapest zone's, chosen when planning
(on demand and spot apart), so the zone a plan names is always the zone whose price it used, and a
zone pin prices that zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from skyflow.catalog.families import ARCHES, arch_of, is_burstable, normalize_arch


@dataclass(frozen=True)
class Offer:
    """One instance type in one zone (or one region, where the catalog names no zones).

    ``arch`` (x86_64 or arm64) and ``burstable`` come from the catalog where it says; None means
    "read it from the instance family" (`skyflow.catalog.families`), done when the catalog is built.
    """

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    accelerator_name: str | None
    accelerator_count: float
    vcpus: float
    memory_gb: float
    price: float | None  # on-demand USD per hour
    spot_price: float | None  # spot USD per hour; None where the cloud sells no spot
    arch: str | None = None
    burstable: bool | None = None

    @property
    def location(self) -> str:
        return f"{self.cloud}/{self.region}"

    def hourly_usd(self, use_spot: bool) -> float | None:
        return self.spot_price if use_spot else self.price


@dataclass(frozen=True)
class OfferColumns:
    """A set of offers as parallel numpy columns; strings are ids into the catalog's tables."""

    cloud: np.ndarray
    region: np.ndarray  # id into the catalog's location table ("cloud/region")
    zone: np.ndarray  # id into the zone table; 0 is "no zone"
    instance: np.ndarray
    acc_name: np.ndarray  # id into the accelerator table; 0 is "none"
    acc_count: np.ndarray
    vcpus: np.ndarray
    memory_gb: np.ndarray
    price: np.ndarray  # NaN where unknown
    spot: np.ndarray  # NaN where unknown
    arch: np.ndarray  # index into families.ARCHES
    burstable: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.price)


class PriceCatalog:
    """All offers of a catalog, with the string tables their ids point into.

    Built from ``Offer`` rows (tests, the shipped default) or from cached columns (big files).
    """

    def __init__(self, columns: OfferColumns, clouds: Sequence[str], locations: Sequence[str],
                 zones: Sequence[str], instances: Sequence[str], accelerators: Sequence[str]) -> None:
        self.columns = columns
        self.cloud_names = tuple(clouds)
        self.location_names = tuple(locations)
        self.zone_names = tuple(zones)
        self.instance_names = tuple(instances)
        self.accelerator_names = tuple(accelerators)
        self._acc_ids = {name.lower(): i for i, name in enumerate(self.accelerator_names) if i}
        self._orders: dict[bool, np.ndarray] = {}

    @classmethod
    def from_offers(cls, offers: Iterable[Offer]) -> PriceCatalog:
        tables: dict[str, dict[str, int]] = {k: {} for k in ("cloud", "loc", "zone", "inst")}
        tables["zone"][""] = 0
        acc_ids: dict[str, int] = {"": 0}
        acc_names = [""]
        rows = []
        kinds: dict[tuple[str, str, str | None], tuple[str, bool]] = {}  # the family's arch, burstable
        for o in merge_duplicates(offers):
            acc_key = (o.accelerator_name or "").lower()
            if acc_key not in acc_ids:
                acc_ids[acc_key] = len(acc_names)
                acc_names.append(o.accelerator_name or "")
            family = (o.cloud, o.instance_type, o.accelerator_name)
            if family not in kinds:
                kinds[family] = (arch_of(*family), is_burstable(o.cloud, o.instance_type))
            arch = (normalize_arch(o.arch) if o.arch else None) or kinds[family][0]
            burstable = kinds[family][1] if o.burstable is None else o.burstable
            rows.append((
                tables["cloud"].setdefault(o.cloud, len(tables["cloud"])),
                tables["loc"].setdefault(o.location, len(tables["loc"])),
                tables["zone"].setdefault(o.zone or "", len(tables["zone"])),
                tables["inst"].setdefault(o.instance_type, len(tables["inst"])),
                acc_ids[acc_key], ARCHES.index(arch), burstable,
                o.accelerator_count if acc_key else 0.0, o.vcpus, o.memory_gb,
                np.nan if o.price is None else o.price, np.nan if o.spot_price is None else o.spot_price,
            ))
        arr = np.array(rows, dtype=float).reshape(-1, 12)
        ints = [arr[:, i].astype(np.int32) for i in range(6)]
        columns = OfferColumns(cloud=ints[0], region=ints[1], zone=ints[2], instance=ints[3], acc_name=ints[4],
                               arch=ints[5].astype(np.int8), burstable=arr[:, 6].astype(bool),
                               acc_count=arr[:, 7], vcpus=arr[:, 8], memory_gb=arr[:, 9], price=arr[:, 10],
                               spot=arr[:, 11])
        return cls(columns, list(tables["cloud"]), list(tables["loc"]), list(tables["zone"]),
                   list(tables["inst"]), acc_names)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def clouds(self) -> tuple[str, ...]:
        return self.cloud_names

    def by_region_and_price(self, use_spot: bool) -> np.ndarray:
        """Offer indices sorted by location, then on-demand (or spot) price, unpriced last; ties in
        catalog order. Computed once: the cheapest offer per location of any subset is then its first
        row per location in this order."""
        orders: dict[bool, np.ndarray] = getattr(self, "_orders", None) or {}
        if use_spot not in orders:
            prices = self.columns.spot if use_spot else self.columns.price
            order = np.lexsort((np.nan_to_num(prices, nan=np.inf), self.columns.region))
            orders[use_spot] = order.astype(np.int32) if len(order) < 2**31 else order  # half the cached bytes
            self._orders = orders
        return orders[use_spot]

    def accelerator_id(self, name: str) -> int | None:
        return self._acc_ids.get(name.lower())

    def offer(self, index: int) -> Offer:
        c = self.columns
        acc = int(c.acc_name[index])
        zone = int(c.zone[index])
        cloud, _, region = self.location_names[int(c.region[index])].partition("/")
        return Offer(
            cloud=cloud, region=region, zone=self.zone_names[zone] if zone else None,
            instance_type=self.instance_names[int(c.instance[index])],
            accelerator_name=self.accelerator_names[acc] if acc else None,
            accelerator_count=float(c.acc_count[index]), vcpus=float(c.vcpus[index]),
            memory_gb=float(c.memory_gb[index]), price=_opt(c.price[index]), spot_price=_opt(c.spot[index]),
            arch=ARCHES[int(c.arch[index])], burstable=bool(c.burstable[index]),
        )

    def offers(self, indices: Iterable[int] | None = None) -> list[Offer]:
        picked = range(len(self)) if indices is None else indices
        return [self.offer(int(i)) for i in picked]


def _opt(value: Any) -> float | None:
    return None if np.isnan(value) else float(value)


def merge_duplicates(offers: Iterable[Offer]) -> list[Offer]:
    """One offer per (cloud, region, zone, instance, accelerator), each price the lowest listed.

    Real files list some rows twice; zones stay apart (see the module docstring). Sorted by
    location, instance and zone, so that zones of equal price resolve to the first by name.
    """
    best: dict[tuple[Any, ...], Offer] = {}
    for o in offers:
        key = (o.cloud, o.region, o.instance_type, (o.accelerator_name or "").lower(), o.accelerator_count,
               o.zone or "")
        seen = best.get(key)
        best[key] = o if seen is None else replace(
            seen, price=_min(seen.price, o.price), spot_price=_min(seen.spot_price, o.spot_price))
    return [best[k] for k in sorted(best)]


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
