"""Malformed catalog CSV and egress YAML files: each is refused at FILE:LINE:COL with the value and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyflow.catalog.egress_file import parse_egress_yaml
from skyflow.catalog.positions import csv_field_columns
from skyflow.catalog.sources import parse_vms_csv, read_egress, read_vms_csv
from skyflow.errors import CatalogError

H = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
OK = "m6i.2xlarge,,,8,32,0.384,0.2,us-east-1,us-east-1a"


def rows(*lines: str, newline: str = "\n") -> str:
    return newline.join([H, *lines]) + newline


# (file text, expected FILE:LINE:COL, fragments the message must hold)
CSV_CASES = {
    "empty": ("", "1:1", ["empty file; expected a header row", "InstanceType,AcceleratorName"]),
    "misspelled columns": (
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Prices,region\nm,,,8,32,1,r\n", "1:1",
        ["missing required columns Price, Region", "the header has InstanceType, ", "Prices, region.",
         "Did you mean 'Prices' for Price, 'region' for Region?"]),
    "column twice": (f"{H},Price\n{OK},1\n", f"1:{len(H) + 2}",
                     ["column 'Price' appears twice (fields 6 and 10)", "Rename or delete one"]),
    "word for a number, CRLF": (rows(OK, "m6i.4xlarge,,,eight,64,0.768,,us-east-1,us-east-1a", newline="\r\n"),
                                "3:15", ["vCPUs is 'eight', not a number", "like 8", "Fix the number"]),
    "negative price after a blank line": (rows(OK, "", "p4d.24xlarge,A100,8,96,1152,-32.77,,us-east-1,"), "4:29",
                                          ["Price is '-32.77'; expected a finite number >= 0"]),
    "infinite spot price": (rows("p4d.24xlarge,A100,8,96,1152,32.77,1e400,us-east-1,"), "2:35",
                            ["SpotPrice is '1e400'", "finite"]),
    "quote never closed": (rows('g,A100,8,96,1152,1,1,"us-east-1,a', OK, OK), "2:22",
                           ["quoted field opened here runs on to line 4", "'us-east-1,a...'", "Close the quote"]),
    "short row": (rows(OK, "m6i.2xlarge,,,8,32"), "3:1",
                  ["row has 5 fields but the header has 9, so it lacks Price, Region", "quote a field"]),
    "accelerator without a count": (rows("p4d.24xlarge,A100,,96,1152,32.77,,us-east-1,"), "2:19",
                                    ["AcceleratorName is 'A100' but AcceleratorCount is empty", "number of A100"]),
    "priced row without a region": (rows("p4d.24xlarge,A100,8,96,1152,32.77,,, us-east-1a"), "2:36",
                                    ["Region is empty on a priced row", "like us-east-1"]),
    "quoted comma shifts the columns": (rows('"p4d,""24"" xl",A100,8,96,1152,abc,,us-east-1,'), "2:32",
                                        ["Price is 'abc', not a number", "USD per hour"]),
    "bad field before an unquoted Generation": (
        "\ufeffInstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,Generation\n"
        "Standard_D8s_v5,,,8,32,0.384,x,eastus,V1,V2\n", "2:30", ["SpotPrice is 'x', not a number"]),
    "field over the csv module's limit": (rows(OK, "m,,,8,32,1,,r" + "r" * 200_000 + ","), "3:1",
                                          ["not valid CSV: field larger than field limit"]),
}


@pytest.mark.parametrize("text, where, fragments", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_malformed_vms_csv(text: str, where: str, fragments: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_vms_csv(text, "aws", "aws/vms.csv")
    message = str(caught.value)
    assert message.startswith(f"aws/vms.csv:{where}: "), message
    assert caught.value.path == "aws/vms.csv"
    for fragment in fragments:
        assert fragment in message, message


EGRESS_CASES = {
    "syntax": ("rules:\n  - {from: aws, to: gcp, usd_per_gb: 0.1\n", "3:1",
               ["not valid YAML: expected ',' or '}'", "flow mapping at line 2", "Fix the YAML syntax"]),
    "key twice": ("rules: []\nclouds: {}\nrules: []\n", "3:1", ['duplicate key "rules"', "once per mapping"]),
    "a list, not a mapping": ("- from: aws\n", "1:1", ["an egress file is a mapping, got [{'from': 'aws'}]"]),
    "unknown top key": ("# rates\nrule:\n  - {from: aws, to: gcp, usd_per_gb: 0.1}\n", "2:1",
                        ["unknown key 'rule'; it takes rules, clouds", "Did you mean rules?"]),
    "unknown rule key": ("rules:\n  - from: aws\n    to: gcp\n    usd_per_gib: 0.1\n", "4:5",
                         ["rules[0] has unknown key 'usd_per_gib'", "Did you mean usd_per_gb?"]),
    "rule lacks a key": ("rules:\n  - {from: aws, usd_per_gb: 0.1}\n", "2:5", ["rules[0] lacks to."]),
    "glob pattern": ("rules:\n  - {from: aws/*, to: gcp, usd_per_gb: 0.1}\n", "2:12",
                     ["rules[0].from 'aws/*' is a pattern", "'aws' already covers every aws region"]),
    "upper-case cloud": ("rules:\n  - {from: aws, to: GCP/us-central1, usd_per_gb: 0.1}\n", "2:21",
                         ["'GCP/us-central1' is not a location", "write 'gcp/us-central1'"]),
    "null location": ("rules:\n  - {from: null, to: gcp, usd_per_gb: 1}\n", "2:12",
                      ["rules[0].from is null; expected '*', a cloud"]),
    "contradicting rules": ("rules:\n  - {from: aws, to: gcp, usd_per_gb: 0.1}\n"
                            "  - {from: '*', to: '*', usd_per_gb: 0.2}\n"
                            "  - {from: aws, to: gcp, usd_per_gb: 0.3}\n", "4:5",
                            ["rules[2] (from aws to gcp, usd_per_gb 0.3) contradicts rules[0] at line 2",
                             "never applies"]),
    "rate is nan": ("rules:\n  - {from: aws, to: gcp, usd_per_gb: .nan}\n", "2:38",
                    ["rules[0].usd_per_gb is nan; expected a finite USD/GB number >= 0"]),
    "word for a tier bound": ("clouds:\n  aws:\n    internet: [[x, 0.1], [null, 0.05]]\n", "3:17",
                              ["clouds.aws.internet[0] bound is 'x'; expected a GB amount > 0"]),
    "open tier not last": ("clouds:\n  aws:\n    internet: [[null, 0.1], [100, 0.05]]\n", "3:29",
                           ["internet[1] follows a tier with no upper bound"]),
    "falling tier bounds": ("clouds: {aws: {internet: [[100, 0.1], [50, 0.05]]}}\n", "1:40",
                            ["bound 50 GB is not above the previous bound 100 GB"]),
    "unknown cloud price key": ("clouds:\n  aws:\n    inter_region: 0.02\n    internt: 0.09\n", "4:5",
                                ["clouds.aws has unknown key 'internt'", "Did you mean internet?"]),
    "rules as a mapping": ("rules: {from: aws}\n", "1:8", ["rules must be a list, got {'from': 'aws'}"]),
    "control character": ("rules: \x07\n", "1:8", ["character '\\x07' is not allowed"]),
}


@pytest.mark.parametrize("text, where, fragments", EGRESS_CASES.values(), ids=EGRESS_CASES.keys())
def test_malformed_egress_yaml(text: str, where: str, fragments: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_egress_yaml(text, "egress.yaml")
    message = str(caught.value)
    assert message.startswith(f"egress.yaml:{where}: "), message
    assert caught.value.path == "egress.yaml"
    for fragment in fragments:
        assert fragment in message, message


def test_bytes_that_are_not_utf8_are_placed(tmp_path: Path) -> None:
    csv_file = tmp_path / "vms.csv"
    csv_file.write_bytes(rows("m6i,,,8,32,0.38,,us-east-1,zone-\xe9x").encode("latin-1"))
    with pytest.raises(CatalogError, match=rf"^{csv_file}:2:33: not UTF-8 text: byte 0xe9"):
        read_vms_csv(csv_file, "aws")
    yaml_file = tmp_path / "egress.yaml"
    yaml_file.write_bytes(b"rules:\n  - {from: \xff}\n")
    with pytest.raises(CatalogError, match=rf"^{yaml_file}:2:12: not UTF-8 text: byte 0xff"):
        read_egress(str(yaml_file), None)


def test_tolerated_quirks_still_load() -> None:
    text = ("\ufeffInstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,Generation\r\n"
            "Standard_D8s_v5,,,8,32,0.384,eastus,V1,V2\r\n"
            "Standard_NC4as_T4_v3,T4,0.5,4,28,0.526,eastus,V2\r\n\r\n"
            "gone,,,8,32,,,V1\r\n")
    offers = parse_vms_csv(text, "azure", "azure/vms.csv")
    assert [(o.instance_type, o.accelerator_count, o.spot_price) for o in offers] == [
        ("Standard_D8s_v5", 0.0, None), ("Standard_NC4as_T4_v3", 0.5, None)]


def test_repeated_rule_at_the_same_rate_is_harmless() -> None:
    _, rules = parse_egress_yaml("rules:\n  - {from: aws, to: gcp, usd_per_gb: 0.1}\n"
                                 "  - {from: aws, to: gcp, usd_per_gb: 0.1}\n", "egress.yaml")
    assert [(r.source, r.target, r.usd_per_gb) for r in rules] == [("aws", "gcp", 0.1)] * 2


def test_field_columns_respect_quotes() -> None:
    assert csv_field_columns('a,"b,""c""",,d') == [1, 3, 13, 14]
    assert csv_field_columns("") == [1]
    assert csv_field_columns('x"y,z') == [1, 5]
