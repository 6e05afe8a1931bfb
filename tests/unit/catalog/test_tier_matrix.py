"""The egress tier matrix, built per price class, equals the schedule of every single pair."""

from __future__ import annotations

import random

import numpy as np
import pytest

from skyflow.catalog.egress import LOCAL, CloudEgress, EgressModel, EgressRule, Tiers


def pairwise(model: EgressModel, locations: tuple[str, ...]) -> list[list[Tiers]]:
    return [[model.tiers(src, dst) for dst in locations] for src in locations]


def assert_matrix_prices_every_pair(model: EgressModel, locations: tuple[str, ...]) -> None:
    ids, tiers = model.tier_matrix(locations)
    assert ids.shape == (len(locations), len(locations))
    got = [[tiers[k] for k in row] for row in ids.tolist()]
    assert got == pairwise(model, locations)
    assert len(set(tiers)) == len(tiers)  # equal ids <=> equal schedules


CLOUDS = {"aws": CloudEgress(Tiers(((10.0, 0.02), (float("inf"), 0.01))),
                             Tiers(((10240.0, 0.09), (float("inf"), 0.05)))),
          "gcp": CloudEgress(Tiers.flat(0.01), Tiers.flat(0.12)),
          "azure": CloudEgress(Tiers.flat(0.02), Tiers.flat(0.0875))}


def random_locations(rng: random.Random) -> tuple[str, ...]:
    regions = [f"{cloud}/r{i}" for cloud in ("aws", "gcp", "azure", "lambda") for i in range(rng.randint(1, 5))]
    zones = [f"{r}/{r.split('/')[1]}-{z}" for r in rng.sample(regions, 2) for z in "ab"]
    pool = [LOCAL, "ssh-pool", "k8s/ctx", *regions, *zones]
    picked = rng.sample(pool, rng.randint(1, len(pool)))
    return tuple(picked + rng.sample(picked, min(2, len(picked))))  # a repeated name (two pools in one place)


def random_rules(rng: random.Random, locations: tuple[str, ...]) -> tuple[EgressRule, ...]:
    patterns = ["*", "aws", "gcp", "azure", "lambda", LOCAL, *locations]
    return tuple(EgressRule(rng.choice(patterns), rng.choice(patterns), rng.choice([0.0, 0.01, 0.02, 0.05, 0.09]))
                 for _ in range(rng.randint(0, 6)))


@pytest.mark.parametrize("seed", range(60))
def test_the_class_built_matrix_equals_pricing_each_pair(seed: int) -> None:
    rng = random.Random(seed)
    locations = random_locations(rng)
    model = EgressModel(clouds=dict(rng.sample(sorted(CLOUDS.items()), rng.randint(0, 3))),
                        rules=random_rules(rng, locations))
    assert_matrix_prices_every_pair(model, locations)


def test_the_default_egress_model_on_the_shipped_catalogs_locations() -> None:
    from skyflow.catalog import load_catalog, load_egress

    regions = sorted(set(load_catalog().location_names))
    zones = [f"{r}/{r.split('/')[-1]}-a" for r in regions[:10]]
    locations = (LOCAL, *regions, *zones)
    assert len(regions) >= 10
    model = load_egress()
    assert_matrix_prices_every_pair(model, locations)
    ids, _ = model.tier_matrix(locations)
    assert np.all(np.diag(ids) == 0)  # a location to itself: free
