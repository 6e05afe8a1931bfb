"""Less common catalog inputs: egress files with malformed clouds and tiers or keys that are not names,
where the catalog folder comes from, its caches, duplicate offers with missing prices, and positions."""

from __future__ import annotations

from pathlib import Path

import pytest

import skyflow.catalog.sources as sources
from skyflow.catalog import EgressModel, Offer
from skyflow.catalog.egress_file import parse_egress_yaml
from skyflow.catalog.offers import merge_duplicates
from skyflow.catalog.positions import YamlDocument, csv_position
from skyflow.catalog.sources import read_catalog, read_egress, resolve_catalog_dir
from skyflow.errors import CatalogError, SourcePosition

QUIRKS = Path(__file__).parents[2] / "fixtures" / "catalogs" / "quirks"
TIERS_HELP = "Write a USD/GB number like 0.09, or tiers like [[10240, 0.09], [null, 0.05]] (GB bound, USD/GB)."

CASES = {
    "clouds as a list": ("clouds: [aws]\n", "1:9", "clouds must be a mapping of cloud -> prices, got ['aws']. Write "
                         "clouds: {aws: {inter_region: 0.02, internet: 0.09}}."),
    "prices as a number": ("clouds:\n  aws: 0.09\n", "2:8", "clouds.aws must be a mapping of inter_region and "
                           "internet prices, got 0.09. Write {inter_region: 0.02, internet: 0.09}."),
    "no tiers": ("clouds:\n  aws:\n    internet: []\n", "3:15", "clouds.aws.internet is []; expected a USD/GB "
                 f"number or a list of tiers. {TIERS_HELP}"),
    "a tier that is a number": ("clouds:\n  aws:\n    internet: [0.09]\n", "3:16", "clouds.aws.internet[0] is 0.09; "
                                f"a tier is [upto_gb, usd_per_gb]. {TIERS_HELP}"),
    "a number as a cloud": ("clouds:\n  5: {internet: 0.1}\n", "2:3", "clouds: 5 is not a cloud name. Name a cloud "
                            "in lower case, like aws, gcp or azure."),
    "a rule that is a number": ("rules:\n  - {from: aws, to: gcp, usd_per_gb: 0.1}\n  - 5\n", "3:5",
                                "rules[1] must be a mapping of from, to, usd_per_gb; got 5. Write {from: aws, to: gcp, "
                                "usd_per_gb: 0.09}."),
    "a number as a location": ("rules:\n  - {from: 5, to: gcp, usd_per_gb: 0.1}\n", "2:12",
                               "rules[0].from is 5; expected '*', a cloud ('aws'), a region ('aws/us-east-1') or "
                               "'local'. Quote it: locations are strings."),
    "a location with a zone": ("rules:\n  - {from: 'aws/us-east-1/x', to: gcp, usd_per_gb: 0.1}\n", "2:12",
                               "rules[0].from 'aws/us-east-1/x' is not a location; expected '*', a cloud ('aws'), a "
                               "region ('aws/us-east-1') or 'local'. A location is one cloud name, then at most one "
                               "/region."),
    "a star inside a name": ("rules:\n  - {from: '*aws', to: gcp, usd_per_gb: 0.1}\n", "2:12",
                             "rules[0].from '*aws' is a pattern; expected '*', a cloud ('aws'), a region "
                             "('aws/us-east-1') or 'local'. Only a lone '*' matches everything."),
    "null key": ("clouds:\n  aws:\n    internet: 0.09\n    null: 0.1\n", "4:5",
                 "clouds.aws has unknown key null; it takes inter_region, internet. Rename or delete the key."),
    "number key after names": ("clouds:\n  aws:\n    internet: 0.09\n    5: 0.1\n", "4:5",
                               "clouds.aws has unknown key 5; it takes inter_region, internet. Rename or delete the "
                               "key."),
    "float key": ("rules: []\n1.5: x\n", "2:1", "an egress file has unknown key 1.5; it takes rules, clouds. Rename "
                  "or delete the key."),
    "boolean key": ("rules: []\nfalse: 1\ntrue: 1\n", "2:1", "an egress file has unknown key false; it takes rules, "
                    "clouds. Rename or delete the key."),
    "number key in a rule": ("rules:\n  - {from: aws, to: gcp, usd_per_gb: 0.1, 7: 1}\n", "2:43",
                             "rules[0] has unknown key 7; it takes from, to, usd_per_gb. Rename or delete the key."),
    "list key after names": ("rules: []\n? [a, b]\n: 1\n", "2:3", "an egress file has unknown key ('a', 'b'); it "
                             "takes rules, clouds. Rename or delete the key."),
    "list key holding a list": ("clouds:\n  aws:\n    internet: 0.09\n    ? [1, [x]]\n    : 2\n", "4:7",
                                "not valid YAML: a key must be a name, not a list holding lists or mappings. Write "
                                "`key: value` with a plain name as the key."),
    "list key holding a mapping": ("rules:\n  - ? [a, {b: 1}]\n    : 1\n", "2:7",
                                   "not valid YAML: a key must be a name, not a list holding lists or mappings. Write "
                                   "`key: value` with a plain name as the key."),
}


@pytest.mark.parametrize(("text", "where", "message"), CASES.values(), ids=CASES.keys())
def test_a_malformed_egress_file_is_refused_at_the_value_or_key(text: str, where: str, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_egress_yaml(text, "egress.yaml")
    assert str(caught.value) == f"egress.yaml:{where}: {message}"


def test_tiers_ending_at_a_bound_keep_their_last_rate_beyond_it() -> None:
    clouds, _ = parse_egress_yaml("clouds: {aws: {internet: [[100, 0.1], [500, 0.05]]}}\n", "egress.yaml")
    internet = clouds["aws"].internet
    assert internet.cost_usd(100) == pytest.approx(10.0)
    assert internet.cost_usd(1000) == pytest.approx(100 * 0.1 + 400 * 0.05 + 500 * 0.05)


def test_an_empty_egress_file_adds_nothing() -> None:
    assert parse_egress_yaml("", "egress.yaml") == ({}, ())
    assert parse_egress_yaml("# only a comment\n", "egress.yaml") == ({}, ())


def test_a_path_past_what_the_file_holds_points_at_the_nearest_value() -> None:
    doc = YamlDocument("a:\n  - x\n  - y\nb: 1\n", "f.yaml")
    assert doc.position(("a", 1)) == SourcePosition("f.yaml", 3, 5)
    assert doc.position(("a", 5)) == SourcePosition("f.yaml", 2, 3)  # no item 5: the list
    assert doc.position(("b", "c")) == SourcePosition("f.yaml", 4, 4)  # a number has no keys: the number
    assert doc.position(("zz",)) == SourcePosition("f.yaml", 1, 1)  # no such key: the whole document


def test_a_csv_position_is_the_start_of_the_field_or_of_the_row() -> None:
    text = 'a,b,c\nx,"y,z",w\n'
    assert csv_position("f.csv", text, 2, 2) == SourcePosition("f.csv", 2, 9)
    assert csv_position("f.csv", text, 2, None) == SourcePosition("f.csv", 2, 1)
    assert csv_position("f.csv", text, 2, 7) == SourcePosition("f.csv", 2, 1)  # no such field
    assert csv_position("f.csv", text, 9, 1) == SourcePosition("f.csv", 9, 1)  # no such line


def test_a_missing_egress_file_is_refused_with_the_systems_reason(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=rf"^{tmp_path}/absent.yaml: cannot read egress file: No such file or "
                                           r"directory$") as caught:
        read_egress(str(tmp_path / "absent.yaml"), None)
    assert caught.value.path == str(tmp_path / "absent.yaml")


def test_a_negative_size_is_no_transfer() -> None:
    with pytest.raises(ValueError, match=r"^size_gb must be >= 0, got -1$"):
        EgressModel().estimate_egress_usd(-1, "aws/us-east-1", "gcp/us-central1")


def test_skypilots_catalog_cache_is_used_when_no_folder_is_named(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKYFLOW_CATALOG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    sky = tmp_path / ".sky" / "catalogs" / "v8"
    (sky / "aws").mkdir(parents=True)
    assert resolve_catalog_dir(None) == sources.DEFAULT  # the folder without any vms.csv is not a catalog
    (sky / "aws" / "vms.csv").write_text("InstanceType\n")
    assert resolve_catalog_dir(None) == str(sky)
    assert resolve_catalog_dir("/elsewhere") == "/elsewhere"


def test_a_folder_read_twice_is_parsed_once_and_an_unwritable_cache_costs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(sources, "_loaded", {})
    first = read_catalog(str(QUIRKS))
    assert len(first) > 0
    assert not (blocker / "skyflow").exists()
    assert read_catalog(str(QUIRKS)) is first


def test_a_folder_without_catalog_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "aws").mkdir()
    with pytest.raises(CatalogError, match=rf"^{tmp_path}: no <cloud>/vms.csv files in this folder$"):
        read_catalog(str(tmp_path))


def _offer(price: float | None, spot: float | None) -> Offer:
    return Offer("aws", "us-east-1", "us-east-1a", "m6i.2xlarge", None, 0.0, 8, 32, price, spot)


def test_duplicate_offers_keep_each_price_that_either_row_gives() -> None:
    (merged,) = merge_duplicates([_offer(None, 0.2), _offer(0.38, None)])
    assert (merged.price, merged.spot_price) == (0.38, 0.2)
    (merged,) = merge_duplicates([_offer(0.4, None), _offer(0.38, 0.3), _offer(None, 0.2)])
    assert (merged.price, merged.spot_price) == (0.38, 0.2)
