"""All price-file I/O: SkyPilot-layout catalog folders, the shipped default, egress files, a cache."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Any

from skyflow.catalog.egress import EgressModel
from skyflow.catalog.egress_file import parse_egress_yaml
from skyflow.catalog.families import normalize_arch
from skyflow.catalog.gcp import is_host_only, join_accelerators
from skyflow.catalog.offers import Offer, PriceCatalog
from skyflow.catalog.positions import catalog_error, csv_position, show
from skyflow.errors import CatalogError, SourcePosition
from skyflow.home import cache_dir
from skyflow.matching import close_matches

DEFAULT = "default"
# 2: offers per zone, with architecture and burstable columns; 3: with the planner's price orders
_CACHE_VERSION = "3"
_REQUIRED = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region")
_USED = (*_REQUIRED, "SpotPrice", "AvailabilityZone", "Arch")
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
        for use_spot in (False, True):  # sorted once here, not by every plan that loads the cache
            catalog.by_region_and_price(use_spot)
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
    raw = _read_bytes(path, str(path), "catalog file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(raw, exc, str(path)) from exc
    return parse_vms_csv(text, cloud, str(path))


def parse_vms_csv(text: str, cloud: str, where: str) -> list[Offer]:
    """Rows of a SkyPilot vms.csv as offers, tolerating the real files' quirks.

    CRLF endings and a leading BOM; no SpotPrice column or empty cells; rows with more fields than
    the header (Azure's unquoted ``V1,V2`` Generation) have the extra fields folded into the last
    column; GCP's accelerator rows with an empty InstanceType are joined with their host VMs (a row
    that names both a GPU host and its GPUs is a whole offer already). An ``Arch`` column, where
    present, gives each row's CPU architecture; elsewhere the instance family does.
    Anything else wrong is a CatalogError at ``FILE:LINE:COL`` (the row's line, the field's column).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    vms: list[Offer] = []
    bare_accelerators: list[Offer] = []
    host_only: list[Offer] = []
    try:
        header = _read_header(reader, text, where)
        col = {name: i for i, name in enumerate(header)}
        width, needed = len(header), max(col[c] for c in _REQUIRED) + 1
        end = 1
        for fields in reader:
            line_no, end = end + 1, reader.line_num
            if not fields or not any(f.strip() for f in fields):
                continue
            if end != line_no or len(fields) < needed:
                raise _row_error(fields, header, col, text, where, line_no, end)
            if len(fields) > width:
                fields = [*fields[:width - 1], ",".join(fields[width - 1:])]
            try:
                offer = _row_offer(fields, col, cloud)
            except _BadField as bad:
                raise catalog_error(csv_position(where, text, line_no, col[bad.column]), bad.message,
                                    hint=bad.hint) from None
            if offer is None:
                continue
            if not offer.instance_type:
                bare_accelerators.append(offer)
            elif cloud == "gcp" and offer.accelerator_name is None and is_host_only(offer.instance_type):
                host_only.append(offer)
            else:
                vms.append(offer)
    except csv.Error as exc:
        raise catalog_error(SourcePosition(where, max(reader.line_num, 1), 1), f"not valid CSV: {exc}.",
                            hint="Fix the quoting of this row.") from None
    if bare_accelerators:
        hosts = [vm for vm in vms if vm.accelerator_name is None]
        vms += join_accelerators(hosts + host_only, bare_accelerators)
    return vms


def _read_header(reader: Any, text: str, where: str) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise catalog_error(SourcePosition(where, 1, 1), "empty file; expected a header row.",
                            hint=f"Start the file with a header such as {','.join(_REQUIRED)}.") from None
    seen: dict[str, int] = {}
    for index, name in enumerate(header):
        if name in seen and name in _USED:
            raise catalog_error(csv_position(where, text, 1, index),
                                f"column {name!r} appears twice (fields {seen[name] + 1} and {index + 1}); "
                                f"which one to read is ambiguous.", hint="Rename or delete one of them.")
        seen.setdefault(name, index)
    missing = [c for c in _REQUIRED if c not in seen]
    if missing:
        near = [f"{found!r} for {name}" for name in missing for found in close_matches(name, header, n=1)]
        raise catalog_error(SourcePosition(where, 1, 1),
                            f"missing required columns {', '.join(missing)}; the header has "
                            f"{', '.join(h for h in header if h) or 'no named columns'}.", matches=near,
                            hint=f"A vms.csv header needs {','.join(_REQUIRED)} (SpotPrice and "
                                 f"AvailabilityZone are optional).")
    return header


def _row_error(fields: list[str], header: list[str], col: dict[str, int], text: str, where: str,
               line_no: int, end: int) -> CatalogError:
    spanning = next((i for i, f in enumerate(fields) if "\n" in f), None)
    if end != line_no and spanning is not None:
        return catalog_error(csv_position(where, text, line_no, spanning),
                             f"a quoted field opened here runs on to line {end}: "
                             f"{show(fields[spanning].split(chr(10), 1)[0] + '...')}.",
                             hint="Close the quote on the same line (a vms.csv field never spans lines).")
    lost = [name for name in _REQUIRED if col[name] >= len(fields)]
    return catalog_error(SourcePosition(where, line_no, 1),
                         f"row has {len(fields)} fields but the header has {len(header)}, so it lacks "
                         f"{', '.join(lost)}.", hint="Add the missing fields, or quote a field that holds a comma.")


class _BadField(Exception):
    """One field's value is wrong; the caller knows the row and adds the position."""

    def __init__(self, column: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.column, self.message, self.hint = column, message, hint


def _row_offer(fields: list[str], col: dict[str, int], cloud: str) -> Offer | None:
    # Required columns are present in every row that reaches here (the caller checked the width).
    def optional(name: str) -> str:
        i = col.get(name)
        return fields[i].strip() if i is not None and i < len(fields) else ""

    price, spot = _number(fields[col["Price"]].strip(), "Price"), _number(optional("SpotPrice"), "SpotPrice")
    if price is None and spot is None:
        return None
    region = fields[col["Region"]].strip()
    if not region:
        raise _BadField("Region", "Region is empty on a priced row.",
                        "Give the region the price applies to, like us-east-1.")
    acc = fields[col["AcceleratorName"]].strip() or None
    count = 0.0
    if acc:
        count = _number(fields[col["AcceleratorCount"]].strip(), "AcceleratorCount") or 0.0
        if not count:
            raise _BadField("AcceleratorCount", f"AcceleratorName is {acc!r} but AcceleratorCount is "
                            f"{fields[col['AcceleratorCount']].strip() or 'empty'}.",
                            f"Give the number of {acc} per VM, like 8, or clear AcceleratorName.")
    return Offer(
        cloud=cloud, region=region, zone=optional("AvailabilityZone") or None,
        instance_type=fields[col["InstanceType"]].strip(), accelerator_name=acc, accelerator_count=count,
        vcpus=_number(fields[col["vCPUs"]].strip(), "vCPUs") or 0.0,
        memory_gb=_number(fields[col["MemoryGiB"]].strip(), "MemoryGiB") or 0.0, price=price, spot_price=spot,
        arch=normalize_arch(optional("Arch")),
    )


_INF = math.inf
_EXAMPLES = {"Price": "USD per hour, like 3.06", "SpotPrice": "USD per hour, like 0.92",
             "AcceleratorCount": "accelerators per VM, like 8 (or 0.5 for a shared GPU)",
             "vCPUs": "vCPUs per VM, like 8", "MemoryGiB": "GiB of memory, like 32"}


def _number(text: str, column: str) -> float | None:
    if not text or text.lower() in ("nan", "none", "null"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise _BadField(column, f"{column} is {show(text)}, not a number; expected {_EXAMPLES[column]}.",
                        "Fix the number, or leave the field empty if it is unknown.") from None
    if not 0 <= value < _INF:
        raise _BadField(column, f"{column} is {show(text)}; expected a finite number >= 0: {_EXAMPLES[column]}.",
                        "Fix the number, or leave the field empty if it is unknown.")
    return value


def _cache_key(files: list[Path]) -> str:
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _cache_dir() -> Path:
    return cache_dir("catalogs")


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
    default_clouds, _ = parse_egress_yaml(
        resources.files("skyflow.catalog").joinpath("data/egress.yaml").read_text(encoding="utf-8"),
        "skyflow/catalog/data/egress.yaml")
    source = path
    if source is None and catalog_dir:
        candidate = Path(catalog_dir).expanduser() / "egress.yaml"
        source = str(candidate) if candidate.is_file() else None
    if source is None:
        return EgressModel(clouds=default_clouds)
    raw = _read_bytes(Path(source).expanduser(), source, "egress file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(raw, exc, source) from exc
    clouds, rules = parse_egress_yaml(text, source)
    return EgressModel(clouds={**default_clouds, **clouds}, rules=rules)


def _read_bytes(path: Path, where: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read {what}: {exc.strerror}", path=where) from exc


def _decode_error(raw: bytes, exc: UnicodeDecodeError, where: str) -> CatalogError:
    """Where the first byte that is not UTF-8 sits, counted in the characters before it."""
    before = raw[:exc.start].decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
    return catalog_error(SourcePosition(where, line, col), f"not UTF-8 text: byte {raw[exc.start]:#04x} "
                         f"({exc.reason}).", hint="Save the file as UTF-8.")
