"""Egress prices: free in a region and from local, inter-region charged, tiers marginal, rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyflow.catalog import EgressModel, EgressRule, load_egress
from skyflow.catalog.egress_file import parse_egress_yaml
from skyflow.errors import CatalogError

DEFAULT = load_egress()


def test_default_locations() -> None:
    assert DEFAULT.rate_usd_per_gb("aws/us-east-1", "aws/us-east-1") == 0
    assert DEFAULT.rate_usd_per_gb("local", "gcp/us-central1") == 0
    for cloud in ("aws", "gcp", "azure"):
        assert DEFAULT.rate_usd_per_gb(f"{cloud}/a", f"{cloud}/b") > 0
    assert DEFAULT.rate_usd_per_gb("aws/us-east-1", "gcp/us-central1") == 0.09
    assert DEFAULT.rate_usd_per_gb("gcp/us-central1", "local") == 0.12


def test_tier_boundary_is_not_free() -> None:
    at_10tb = DEFAULT.estimate_egress_usd(10240, "aws/us-east-1", "local")
    assert at_10tb == pytest.approx(10240 * 0.09)
    assert DEFAULT.estimate_egress_usd(10241, "aws/us-east-1", "local") == pytest.approx(at_10tb + 0.085)


@given(st.floats(0, 300_000), st.floats(0, 300_000), st.sampled_from(["aws", "gcp", "azure"]))
def test_tiers_are_monotone(a: float, b: float, cloud: str) -> None:
    low, high = sorted((a, b))
    cost = DEFAULT.estimate_egress_usd
    assert cost(low, f"{cloud}/r", "local") <= cost(high, f"{cloud}/r", "local") + 1e-9


def test_most_specific_rule_wins_and_ties_go_to_the_earlier() -> None:
    model = EgressModel(rules=parse_egress_yaml(json.dumps({"rules": [
        {"from": "*", "to": "*", "usd_per_gb": 0.1},
        {"from": "aws", "to": "aws", "usd_per_gb": 0.02},
        {"from": "aws/us-east-1", "to": "gcp/us-central1", "usd_per_gb": 0.09},
        {"from": "aws", "to": "gcp/us-central1", "usd_per_gb": 0.5},
        {"from": "aws/us-east-1", "to": "gcp", "usd_per_gb": 0.6},
    ]}), "t")[1])
    assert model.rate_usd_per_gb("aws/us-east-1", "gcp/us-central1") == 0.09
    assert model.rate_usd_per_gb("aws/us-west-2", "aws/us-east-1") == 0.02
    assert model.rate_usd_per_gb("aws/us-east-1", "aws/us-east-1") == 0
    assert model.rate_usd_per_gb("aws/us-west-2", "gcp/us-central1") == 0.5
    assert model.rate_usd_per_gb("aws/us-east-1", "gcp/europe-west4") == 0.6
    assert model.rate_usd_per_gb("gcp/x", "local") == 0.1
    assert EgressModel(rules=(EgressRule("aws", "*", 1.0), EgressRule("*", "gcp", 2.0))).rate_usd_per_gb(
        "aws/a", "gcp/b") == 1.0


def test_bad_rules_and_tiers() -> None:
    with pytest.raises(CatalogError, match=r"^f.yaml:1:9: rules\[0\] lacks to\."):
        parse_egress_yaml('rules: [{from: aws, usd_per_gb: 1}]', "f.yaml")
    with pytest.raises(CatalogError, match=r"^f.yaml:1:42: rules\[0\].usd_per_gb is -1; expected a finite"):
        parse_egress_yaml('rules: [{from: aws, to: "*", usd_per_gb: -1}]', "f.yaml")
    with pytest.raises(CatalogError, match=r"^f.yaml:1:40: clouds.aws.internet\[1\] bound 50 GB is not above"):
        parse_egress_yaml("clouds: {aws: {internet: [[100, 0.1], [50, 0.05]]}}", "f.yaml")


def test_override_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "egress.yaml"
    path.write_text("rules:\n  - {from: aws, to: aws, usd_per_gb: 0}\n")
    model = load_egress(None, str(tmp_path))
    assert model.rate_usd_per_gb("aws/a", "aws/b") == 0
    assert model.rate_usd_per_gb("aws/a", "gcp/b") == 0.09  # falls back to list prices
    path.write_text("rules: [oops\n")
    with pytest.raises(CatalogError, match=r":2:1: not valid YAML: expected ',' or ']'"):
        load_egress(str(path), None)
