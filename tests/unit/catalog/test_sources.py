"""Reading SkyPilot-layout catalog folders: quirks of the real files, the default, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyflow.catalog import PriceCatalog, load_catalog
from skyflow.catalog.sources import parse_vms_csv, read_catalog
from skyflow.errors import CatalogError

QUIRKS = Path(__file__).parents[2] / "fixtures" / "catalogs" / "quirks"
SHARED = Path(os.environ.get("SKYFLOW_SHARED_DIR", Path(__file__).parents[3] / ".." / "shared"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyflow.catalog.sources as sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_loaded", {})


def _by_key(catalog_dir: Path) -> dict[tuple[str, str, str], object]:
    catalog = load_catalog(str(catalog_dir))
    return {(o.cloud, o.region, o.instance_type + ":" + (o.accelerator_name or "")): o for o in catalog.offers()}


def test_crlf_and_each_zone_with_its_own_prices() -> None:
    p4d = [o for o in load_catalog(str(QUIRKS)).offers() if o.instance_type == "p4d.24xlarge"]
    # A region's cheapest zone differs for on demand and spot, so zones are kept apart with their prices.
    assert [(o.zone, o.price, o.spot_price, o.accelerator_count) for o in p4d] == [
        ("us-east-1a", 32.77, 12.5, 8.0), ("us-east-1b", 32.77, 11.0, 8.0)]


def test_arch_column_wins_over_the_family_and_repeated_rows_keep_the_lowest_price() -> None:
    text = ("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,"
            "Arch\r\n"
            "m7g.large,,,2,8,0.08,0.03,us-east-1,use1-az1,arm64\r\n"
            "m7g.large,,,2,8,0.09,0.02,us-east-1,use1-az1,arm64\r\n"
            "odd.large,,,2,8,0.05,,us-east-1,use1-az1,aarch64\r\n"
            "m6i.large,,,2,8,0.09,0.04,us-east-1,use1-az2,\r\n"
            "t3.large,,,2,8,0.08,0.03,us-east-1,use1-az2,x86_64\r\n")
    catalog = PriceCatalog.from_offers(parse_vms_csv(text, "aws", "x.csv"))
    offers = {o.instance_type: o for o in catalog.offers()}
    assert len(catalog) == 4
    assert (offers["m7g.large"].arch, offers["m7g.large"].price, offers["m7g.large"].spot_price) == (
        "arm64", 0.08, 0.02)
    assert offers["odd.large"].arch == "arm64"  # the column says so, whatever the name
    assert (offers["m6i.large"].arch, offers["m6i.large"].burstable) == ("x86_64", False)  # empty cell: the family
    assert (offers["t3.large"].arch, offers["t3.large"].burstable) == ("x86_64", True)


GCP_HEADER = ("InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,"
              "SpotPrice\n")


def test_gcp_rows_naming_host_and_gpus_are_whole_offers() -> None:
    text = GCP_HEADER + ("a2-highgpu-8g,96,680,A100,8,,us-central1,us-central1-a,29.39,11.75\n"
                         "a3-ultragpu-8g,224,2952,H200,8,,us-central1,us-central1-a,84.81,38.16\n"
                         "g2-standard-4,4,16,L4,1,,us-central1,us-central1-a,0.71,0.28\n"
                         "a2-highgpu-1g,12,85,,,,us-central1,us-central1-a,0.95,0.47\n")
    offers = parse_vms_csv(text, "gcp", "x.csv")
    # the bare a2-highgpu-1g host has no GPU row to carry here: it is no offer on its own
    assert sorted((o.instance_type, o.accelerator_name, o.price) for o in offers) == [
        ("a2-highgpu-8g", "A100", 29.39), ("a3-ultragpu-8g", "H200", 84.81), ("g2-standard-4", "L4", 0.71)]


def test_gcp_accelerator_rows_priced_on_their_host_vm() -> None:
    offers = _by_key(QUIRKS)
    a100 = offers[("gcp", "us-central1", "a2-highgpu-8g:A100")]
    assert a100.price == pytest.approx(5.9 + 23.5)  # type: ignore[attr-defined]
    assert a100.spot_price == pytest.approx(2.9 + 11.5)  # type: ignore[attr-defined]
    t4 = offers[("gcp", "us-central1", "n1-highmem-8:T4")]
    assert t4.price == pytest.approx(0.47 + 0.35)  # type: ignore[attr-defined]
    # a host that only sells with its GPUs is no CPU offer; n1-standard-2 is too small to host a T4
    assert ("gcp", "us-central1", "a2-highgpu-8g:") not in offers
    assert ("gcp", "us-central1", "n1-standard-2:T4") not in offers
    assert ("gcp", "us-central1", "n1-standard-2:") in offers


def test_unquoted_generation_field_and_missing_spot() -> None:
    offers = _by_key(QUIRKS)
    assert offers[("azure", "eastus", "Standard_D8s_v5:")].spot_price == 0.08  # type: ignore[attr-defined]
    assert offers[("azure", "eastus", "Standard_ND96asr_v4:A100")].spot_price is None  # type: ignore[attr-defined]
    assert offers[("lambda", "us-east-1", "gpu_8x_a100:A100")].spot_price is None  # type: ignore[attr-defined]


def test_missing_columns_are_named() -> None:
    with pytest.raises(CatalogError, match=r"^x.csv:1:1: missing required columns Price; the header has Inst"):
        parse_vms_csv("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Region\n", "aws", "x.csv")


def test_bad_number_names_line_and_column() -> None:
    text = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\nm,,,8,32,cheap,r\n"
    with pytest.raises(CatalogError, match=r"^x.csv:2:10: Price is 'cheap', not a number"):
        parse_vms_csv(text, "aws", "x.csv")


def test_missing_folder() -> None:
    with pytest.raises(CatalogError, match="no such catalog folder"):
        load_catalog("/nonexistent/catalogs")


def test_default_catalog_covers_the_common_clouds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SKYFLOW_CATALOG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    catalog = load_catalog()
    assert set(catalog.clouds) >= {"aws", "gcp", "azure", "lambda", "runpod"}
    names = {o.accelerator_name for o in catalog.offers()}
    assert {"A100", "H100", "L4", "T4", None} <= names
    assert all(o.price and o.price > 0 for o in catalog.offers())
    gcp = [o for o in catalog.offers() if o.cloud == "gcp"]
    assert len(gcp) == 48  # every GCP row of the shipped file, GPU hosts included
    assert {("A100", "a2-highgpu-8g"), ("A100-80GB", "a2-ultragpu-8g"), ("H100", "a3-highgpu-8g"),
            ("H200", "a3-ultragpu-8g"), ("L4", "g2-standard-4"), ("T4", "n1-standard-4")} <= {
        (o.accelerator_name, o.instance_type) for o in gcp}


def test_env_var_chooses_the_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLOW_CATALOG_DIR", str(QUIRKS))
    assert set(load_catalog().clouds) == {"aws", "gcp", "azure", "lambda"}


def test_cache_round_trip_gives_the_same_offers(tmp_path: Path) -> None:
    import skyflow.catalog.sources as sources

    first = read_catalog(str(QUIRKS)).offers()
    sources._loaded.clear()
    assert list((tmp_path / "cache" / "skyflow" / "catalogs").glob("*.pickle"))
    assert read_catalog(str(QUIRKS)).offers() == first


def test_the_cache_holds_the_price_orders_a_fresh_parse_would_sort(tmp_path: Path) -> None:
    import numpy as np

    import skyflow.catalog.sources as sources

    read_catalog(str(QUIRKS))
    sources._loaded.clear()
    cached = read_catalog(str(QUIRKS))
    fresh = PriceCatalog.from_offers(cached.offers())
    for use_spot in (False, True):
        assert use_spot in cached._orders  # loaded with the file, not sorted by this process
        np.testing.assert_array_equal(cached._orders[use_spot], fresh.by_region_and_price(use_spot))


@pytest.mark.skipif(not (SHARED / "catalogs" / "anycloud").is_dir(), reason="shared catalogs absent")
def test_real_azure_and_gcp_files_load() -> None:
    catalog = load_catalog(str(SHARED / "catalogs" / "anycloud"))
    assert {"azure", "gcp"} <= set(catalog.clouds)
    gcp_a100 = [o for o in catalog.offers() if o.cloud == "gcp" and o.accelerator_name == "A100"
                and o.accelerator_count == 8 and o.region == "us-central1"]
    # one offer per zone (the file lists each zone twice), the GPU priced on its a2 host
    assert sorted((o.instance_type, o.zone) for o in gcp_a100) == [
        ("a2-highgpu-8g", f"us-central1-{z}") for z in "abcf"]
    assert [o.price for o in gcp_a100] == pytest.approx([5.91582 + 23.47126] * 4)
