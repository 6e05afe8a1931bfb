"""The egress file (``rules:`` and ``clouds:``) checked value by value; each problem names its line:col."""

from __future__ import annotations

import math
import re
from typing import Any

from skyflow.catalog.egress import LOCAL, CloudEgress, EgressRule, Tiers
from skyflow.catalog.positions import KeyPath, YamlDocument, show
from skyflow.matching import close_matches

TOP_KEYS = ("rules", "clouds")
RULE_KEYS = ("from", "to", "usd_per_gb")
CLOUD_KEYS = ("inter_region", "internet")
_LOCATION = re.compile(r"[a-z0-9][a-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_LOCATION_HELP = "'*', a cloud ('aws'), a region ('aws/us-east-1') or 'local'"
_TIERS_HELP = "Write a USD/GB number like 0.09, or tiers like [[10240, 0.09], [null, 0.05]] (GB bound, USD/GB)."


def parse_egress_yaml(text: str, file: str) -> tuple[dict[str, CloudEgress], tuple[EgressRule, ...]]:
    """The clouds' list prices and the rules an egress file gives; a CatalogError at FILE:LINE:COL if wrong."""
    doc = YamlDocument(text, file)
    data = doc.data
    if data is None:
        return {}, ()
    if not isinstance(data, dict):
        raise doc.error((), f"an egress file is a mapping, got {show(data)}.",
                        hint="Write rules: [{from, to, usd_per_gb}, ...] and/or clouds: {cloud: prices}.")
    _known_keys(doc, (), data, TOP_KEYS, "an egress file")
    return parse_clouds(doc, data.get("clouds")), parse_rules(doc, data.get("rules"))


def parse_rules(doc: YamlDocument, items: object) -> tuple[EgressRule, ...]:
    """The ``rules:`` list; a later rule repeating an earlier one's from/to at another rate is refused."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise doc.error(("rules",), f"rules must be a list, got {show(items)}.",
                        hint="Write rules: [{from: aws, to: gcp, usd_per_gb: 0.09}, ...].")
    rules: list[EgressRule] = []
    first: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        path = ("rules", index)
        if not isinstance(item, dict):
            raise doc.error(path, f"rules[{index}] must be a mapping of from, to, usd_per_gb; got {show(item)}.",
                            hint="Write {from: aws, to: gcp, usd_per_gb: 0.09}.")
        _known_keys(doc, path, item, RULE_KEYS, f"rules[{index}]")
        absent = [k for k in RULE_KEYS if k not in item]
        if absent:
            raise doc.error(path, f"rules[{index}] lacks {', '.join(absent)}.",
                            hint="Every rule needs from, to and usd_per_gb.")
        rule = EgressRule(_location(doc, path, item, "from"), _location(doc, path, item, "to"),
                          _rate(doc, (*path, "usd_per_gb"), item["usd_per_gb"], f"rules[{index}].usd_per_gb"))
        pair = (rule.source, rule.target)
        if pair in first and rules[first[pair]].usd_per_gb != rule.usd_per_gb:
            earlier = first[pair]
            line = doc.position(("rules", earlier)).line
            raise doc.error(path, f"rules[{index}] (from {rule.source} to {rule.target}, usd_per_gb "
                                  f"{rule.usd_per_gb:g}) contradicts rules[{earlier}] at line {line} "
                                  f"(usd_per_gb {rules[earlier].usd_per_gb:g}); the earlier rule wins, so this "
                                  f"one never applies.", hint="Delete one of the two.")
        first.setdefault(pair, index)
        rules.append(rule)
    return tuple(rules)


def parse_clouds(doc: YamlDocument, items: object) -> dict[str, CloudEgress]:
    """The ``clouds:`` mapping: ``{aws: {inter_region: 0.02, internet: [[10240, 0.09], [null, 0.05]]}}``."""
    if items is None:
        return {}
    if not isinstance(items, dict):
        raise doc.error(("clouds",), f"clouds must be a mapping of cloud -> prices, got {show(items)}.",
                        hint="Write clouds: {aws: {inter_region: 0.02, internet: 0.09}}.")
    out = {}
    for cloud, prices in items.items():
        path = ("clouds", cloud)
        if not isinstance(cloud, str) or not _LOCATION.fullmatch(cloud) or "/" in cloud:
            raise doc.error(path, f"clouds: {show(cloud)} is not a cloud name.", key=True,
                            hint="Name a cloud in lower case, like aws, gcp or azure.")
        if not isinstance(prices, dict):
            raise doc.error(path, f"clouds.{cloud} must be a mapping of inter_region and internet prices, "
                                  f"got {show(prices)}.", hint="Write {inter_region: 0.02, internet: 0.09}.")
        _known_keys(doc, path, prices, CLOUD_KEYS, f"clouds.{cloud}")
        out[cloud] = CloudEgress(*(parse_tiers(doc, (*path, k), prices.get(k, 0), f"clouds.{cloud}.{k}")
                                   for k in CLOUD_KEYS))
    return out


def parse_tiers(doc: YamlDocument, path: KeyPath, value: object, name: str) -> Tiers:
    """``0.09`` or ``[[10240, 0.09], [51200, 0.085], [null, 0.05]]`` (GB bound, USD/GB), priced marginally."""
    if _is_number(value):
        return Tiers.flat(_rate(doc, path, value, name))
    if not isinstance(value, list) or not value:
        raise doc.error(path, f"{name} is {show(value)}; expected a USD/GB number or a list of tiers.",
                        hint=_TIERS_HELP)
    steps: list[tuple[float, float]] = []
    for index, item in enumerate(value):
        where = (*path, index)
        if not isinstance(item, list) or len(item) != 2:
            raise doc.error(where, f"{name}[{index}] is {show(item)}; a tier is [upto_gb, usd_per_gb].",
                            hint=_TIERS_HELP)
        if steps and steps[-1][0] == math.inf:
            raise doc.error(where, f"{name}[{index}] follows a tier with no upper bound (null).",
                            hint="Only the last tier may have a null bound; delete or reorder the tiers.")
        upto = _bound(doc, (*where, 0), item[0], f"{name}[{index}]")
        if steps and upto <= steps[-1][0]:
            raise doc.error((*where, 0), f"{name}[{index}] bound {upto:g} GB is not above the previous "
                                         f"bound {steps[-1][0]:g} GB.", hint="Tier bounds must increase.")
        steps.append((upto, _rate(doc, (*where, 1), item[1], f"{name}[{index}] usd_per_gb")))
    if steps[-1][0] != math.inf:
        steps.append((math.inf, steps[-1][1]))
    return Tiers(tuple(steps))


def _known_keys(doc: YamlDocument, path: KeyPath, mapping: dict[Any, Any], allowed: tuple[str, ...],
                what: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise doc.error((*path, key), f"{what} has unknown key {show(key)}; it takes {', '.join(allowed)}.",
                            key=True, matches=close_matches(str(key), allowed, n=1),
                            hint="Rename or delete the key.")


def _location(doc: YamlDocument, path: KeyPath, rule: dict[str, Any], key: str) -> str:
    value = rule[key]
    name = f"rules[{path[-1]}].{key}"
    if not isinstance(value, str) or not value.strip():
        hint = ("Quote it: locations are strings." if isinstance(value, (int, float))
                else "Write a location such as aws/us-east-1.")
        raise doc.error((*path, key), f"{name} is {show(value)}; expected {_LOCATION_HELP}.", hint=hint)
    text = value.strip()
    if text == "*" or text == LOCAL or _LOCATION.fullmatch(text):
        return text
    if "*" in text:
        cloud = text.split("/", 1)[0].strip("*")
        hint = (f"Patterns are not supported; '{cloud}' already covers every {cloud} region."
                if cloud and "*" not in text.split("/", 1)[0] else "Only a lone '*' matches everything.")
        raise doc.error((*path, key), f"{name} {text!r} is a pattern; expected {_LOCATION_HELP}.", hint=hint)
    cloud = text.split("/", 1)[0]
    hint = (f"Clouds are lower case: write {text.replace(cloud, cloud.lower(), 1)!r}."
            if cloud != cloud.lower() else "A location is one cloud name, then at most one /region.")
    raise doc.error((*path, key), f"{name} {text!r} is not a location; expected {_LOCATION_HELP}.", hint=hint)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rate(doc: YamlDocument, path: KeyPath, value: object, name: str) -> float:
    if not _is_number(value) or not 0 <= value < math.inf:  # type: ignore[operator]
        raise doc.error(path, f"{name} is {show(value)}; expected a finite USD/GB number >= 0, like 0.09.",
                        hint="Fix the rate (0 for free).")
    return float(value)  # type: ignore[arg-type]


def _bound(doc: YamlDocument, path: KeyPath, value: object, name: str) -> float:
    if value is None:
        return math.inf
    if not _is_number(value) or not 0 < value < math.inf:  # type: ignore[operator]
        raise doc.error(path, f"{name} bound is {show(value)}; expected a GB amount > 0, or null for no bound.",
                        hint=_TIERS_HELP)
    return float(value)  # type: ignore[arg-type]

