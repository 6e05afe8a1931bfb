"""All price-file I/O: SkyPilot-layout catalog folders, the shipped default, egress files, a cache."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Any

from skyflow.catalog.egress import EgressModel, parse_clouds, parse_rules
from skyflow.catalog.gcp import is_host_only, join_accelerators
from skyflow.catalog.offers import Offer, PriceCatalog
from skyflow.errors import CatalogError

DEFAULT = "default"
_CACHE_VERSION = "1"
_REQUIRED = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region")
_loaded: dict[str, PriceCatalog] = {}


def resolve_catalog_dir(catalog_dir: str | None) -> str:
    """The argument, else $SKYFLOW_CATALOG_DIR, else SkyPilot's cache when present, else the default."""
    if catalog_dir:
        return catalog_dir
    env = os.environ.get("SKYFLOW_CATALOG_DIR")
    if env:
        return env
    sky = Path("~/.sky/catalogs/v8").expanduser()
    if sky.is_dir() and any(sky.glob("*/vms.csv")):
        return str(sky)
    return DEFAULT


def read_catalog(catalog_dir: str | None = None) -> PriceCatalog:
    """Load a catalog folder (or the shipped default), from the in-process or on-disk cache if fresh."""
    where = resolve_catalog_dir(catalog_dir)
    if where == DEFAULT:
        return _default_catalog()
    root = Path(where).expanduser()
    if not root.is_dir():
        raise CatalogError("no such catalog folder; give a folder holding <cloud>/vms.csv files",
                           path=str(root))
    files = sorted(root.glob("*/vms.csv"))
    if not files:
        raise CatalogError("no <cloud>/vms.csv files in this folder", path=str(root))
    key = _cache_key(files)
    if key in _loaded:
        return _loaded[key]
    catalog = _read_cache(key)
    if catalog is None:
        offers = [o for f in files for o in read_vms_csv(f, f.parent.name.lower())]
        catalog = PriceCatalog.from_offers(offers)
        _write_cache(key, catalog)
    _loaded[key] = catalog
    return catalog


def _default_catalog() -> PriceCatalog:
    if DEFAULT not in _loaded:
        text = resources.files("skyflow.catalog").joinpath("data/offers.csv").read_text(encoding="utf-8")
        offers: list[Offer] = []
        by_cloud: dict[str, list[str]] = {}
        lines = text.splitlines()
        for line in lines[1:]:
            if line.strip() and not line.startswith("#"):
                by_cloud.setdefault(line.split(",", 1)[0], []).append(line.split(",", 1)[1])
        header = lines[0].split(",", 1)[1]
        for cloud, rows in by_cloud.items():
            offers += parse_vms_csv("\n".join([header, *rows]), cloud, "skyflow/catalog/data/offers.csv")
        _loaded[DEFAULT] = PriceCatalog.from_offers(offers)
    return _loaded[DEFAULT]


def read_vms_csv(path: Path, cloud: str) -> list[Offer]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
    except OSError as exc:
        raise CatalogError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from exc
    return parse_vms_csv(text, cloud, str(path))


def parse_vms_csv(text: str, cloud: str, where: str) -> list[Offer]:
    """Rows of a SkyPilot vms.csv as offers, tolerating the real files' quirks.

    CRLF endings; no SpotPrice column or empty cells; rows with more fields than the header
    (Azure's unquoted ``V1,V2`` Generation) have the extra fields folded into the last column;
    GCP's accelerator rows with an empty InstanceType are joined with their host VMs.
    """
    reader = csv.reader(io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CatalogError("empty file; expected a header row", path=where) from None
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise CatalogError(f"missing columns {', '.join(missing)}; header is {','.join(header)}", path=where)
    col = {name: i for i, name in enumerate(header)}
    vms: list[Offer] = []
    bare_accelerators: list[Offer] = []
    host_only: list[Offer] = []
    for line_no, fields in enumerate(reader, start=2):
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) > len(header):
            fields = [*fields[:len(header) - 1], ",".join(fields[len(header) - 1:])]
        offer = _row_offer(fields, col, cloud, where, line_no)
        if offer is None:
            continue
        if not offer.instance_type:
            bare_accelerators.append(offer)
        elif cloud == "gcp" and is_host_only(offer.instance_type):
            host_only.append(offer)
        else:
            vms.append(offer)
    if bare_accelerators:
        hosts = [vm for vm in vms if vm.accelerator_name is None]
        vms += join_accelerators(hosts + host_only, bare_accelerators)
    return vms


def _row_offer(fields: list[str], col: dict[str, int], cloud: str, where: str, line_no: int) -> Offer | None:
    def get(name: str) -> str:
        i = col.get(name)
        return fields[i].strip() if i is not None and i < len(fields) else ""

    price, spot = _number(get("Price"), where, line_no), _number(get("SpotPrice"), where, line_no)
    region = get("Region")
    if (price is None and spot is None) or not region:
        return None
    acc = get("AcceleratorName") or None
    return Offer(
        cloud=cloud, region=region, zone=get("AvailabilityZone") or None, instance_type=get("InstanceType"),
        accelerator_name=acc, accelerator_count=(_number(get("AcceleratorCount"), where, line_no) or 0.0)
        if acc else 0.0, vcpus=_number(get("vCPUs"), where, line_no) or 0.0,
        memory_gb=_number(get("MemoryGiB"), where, line_no) or 0.0, price=price, spot_price=spot,
    )


def _number(text: str, where: str, line_no: int) -> float | None:
    if not text or text.lower() in ("nan", "none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise CatalogError(f"line {line_no}: expected a number, got {text!r}", path=where) from None


def _cache_key(files: list[Path]) -> str:
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "skyflow" / "catalogs"


def _read_cache(key: str) -> PriceCatalog | None:
    path = _cache_dir() / f"{key}.pickle"
    try:
        with path.open("rb") as handle:
            loaded = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    return loaded if isinstance(loaded, PriceCatalog) else None


def _write_cache(key: str, catalog: PriceCatalog) -> None:
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.tmp"
        with tmp.open("wb") as handle:
            pickle.dump(catalog, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(folder / f"{key}.pickle")
    except OSError:
        pass  # a read-only home only costs the next run a re-parse


def read_egress(path: str | None, catalog_dir: str | None) -> EgressModel:
    """Default list prices, with ``path`` (or ``DIR/egress.yaml``) overriding clouds and adding rules."""
    defaults = _parse_egress_yaml(
        resources.files("skyflow.catalog").joinpath("data/egress.yaml").read_text(encoding="utf-8"),
        "skyflow/catalog/data/egress.yaml")
    source = path
    if source is None and catalog_dir:
        candidate = Path(catalog_dir).expanduser() / "egress.yaml"
        source = str(candidate) if candidate.is_file() else None
    if source is None:
        return EgressModel(clouds=defaults["clouds"])
    try:
        text = Path(source).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read egress file: {exc.strerror}", path=source) from exc
    override = _parse_egress_yaml(text, source)
    return EgressModel(clouds={**defaults["clouds"], **override["clouds"]}, rules=override["rules"])


def _parse_egress_yaml(text: str, where: str) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=where) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - {"rules", "clouds"}:
        raise CatalogError("an egress file is a mapping with rules: [...] and/or clouds: {...}", path=where)
    return {"rules": parse_rules(data.get("rules"), where), "clouds": parse_clouds(data.get("clouds"), where)}
