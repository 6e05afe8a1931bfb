"""PriceCatalog: every priced instance offer, stored as columns so that filtering is vectorized."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Offer:
    """One instance type in one region, at that region's cheapest zone."""

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

    @classmethod
    def from_offers(cls, offers: Iterable[Offer]) -> PriceCatalog:
        tables: dict[str, dict[str, int]] = {k: {} for k in ("cloud", "loc", "zone", "inst")}
        tables["zone"][""] = 0
        acc_ids: dict[str, int] = {"": 0}
        acc_names = [""]
        rows = []
        for o in collapse_zones(offers):
            acc_key = (o.accelerator_name or "").lower()
            if acc_key not in acc_ids:
                acc_ids[acc_key] = len(acc_names)
                acc_names.append(o.accelerator_name or "")
            rows.append((
                tables["cloud"].setdefault(o.cloud, len(tables["cloud"])),
                tables["loc"].setdefault(o.location, len(tables["loc"])),
                tables["zone"].setdefault(o.zone or "", len(tables["zone"])),
                tables["inst"].setdefault(o.instance_type, len(tables["inst"])),
                acc_ids[acc_key], o.accelerator_count if acc_key else 0.0, o.vcpus, o.memory_gb,
                np.nan if o.price is None else o.price, np.nan if o.spot_price is None else o.spot_price,
            ))
        arr = np.array(rows, dtype=float).reshape(-1, 10)
        ints = [arr[:, i].astype(np.int32) for i in range(5)]
        columns = OfferColumns(cloud=ints[0], region=ints[1], zone=ints[2], instance=ints[3], acc_name=ints[4],
                               acc_count=arr[:, 5], vcpus=arr[:, 6], memory_gb=arr[:, 7], price=arr[:, 8],
                               spot=arr[:, 9])
        return cls(columns, list(tables["cloud"]), list(tables["loc"]), list(tables["zone"]),
                   list(tables["inst"]), acc_names)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def clouds(self) -> tuple[str, ...]:
        return self.cloud_names

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
        )

    def offers(self, indices: Iterable[int] | None = None) -> list[Offer]:
        picked = range(len(self)) if indices is None else indices
        return [self.offer(int(i)) for i in picked]


def _opt(value: Any) -> float | None:
    return None if np.isnan(value) else float(value)


def collapse_zones(offers: Iterable[Offer]) -> list[Offer]:
    """One offer per (cloud, region, instance, accelerator): a region's price is its cheapest zone's.

    On-demand and spot may be cheapest in different zones; the zone kept is the on-demand one's
    (spot's when there is no on-demand price) and each price is the region's minimum.
    """
    best: dict[tuple[Any, ...], Offer] = {}
    for o in offers:
        key = (o.cloud, o.region, o.instance_type, (o.accelerator_name or "").lower(), o.accelerator_count)
        seen = best.get(key)
        if seen is None:
            best[key] = o
            continue
        price = _min(seen.price, o.price)
        zone = o.zone if (o.price is not None and (seen.price is None or o.price < seen.price)) else seen.zone
        if seen.price is None and o.price is None and _min(seen.spot_price, o.spot_price) != seen.spot_price:
            zone = o.zone
        best[key] = Offer(o.cloud, o.region, zone, o.instance_type, seen.accelerator_name,
                          o.accelerator_count, seen.vcpus, seen.memory_gb, price,
                          _min(seen.spot_price, o.spot_price))
    return list(best.values())


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
