"""Every SkyPilot task skyflow would launch is accepted by SkyPilot itself (`sky.Task.from_yaml_config`).

SkyPilot 0.14.1 cannot share skyflow's environment (its click pin conflicts), so it lives in
``.venv/skypilot`` (made by tests/services/prepare.sh) and the check runs in a subprocess of it. That
subprocess sees no network: HOME and SKY_RUNTIME_DIR point at a temporary directory whose
``~/.sky/catalogs/v8/<cloud>/vms.csv`` is written here from skyflow's shipped offers (no checksum
files, so SkyPilot treats them as user-edited and never downloads), and ``requests`` refuses to
connect. Each stage shape from examples/ and tests/fixtures/seed_tasks/ is pinned to an offer of that
catalog the way the planner pins it. The tasks carry skyflow's code package as SkyPilot would upload
it (a file mount of the package's directory here, which SkyPilot checks exists), or as signed URLs,
or a user's own install.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyflow.backends.remote_stage import code_package_for
from skyflow.backends.skypilot import SkyPilotBackend
from skyflow.config import SkyPilotConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "backends"))
from backend_launches import ROOT, STORE, all_launches

pytestmark = pytest.mark.integration

SKY_PYTHON = ROOT / ".venv" / "skypilot" / "bin" / "python"
OFFERS = ROOT / "skyflow" / "catalog" / "data" / "offers.csv"
CLOUDS = ("aws", "gcp", "lambda")
HEADER = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price",
          "SpotPrice", "Region", "AvailabilityZone"]

CHECK = r'''
import json, sys
import requests

def no_network(*args, **kwargs):
    raise requests.exceptions.ConnectionError("network disabled in skyflow's schema check")

requests.get = requests.post = requests.request = no_network
requests.Session.request = no_network
import sky

results = {}
for name, config in json.load(open(sys.argv[1])).items():
    try:
        task = sky.Task.from_yaml_config(config)
        task.expand_and_validate_file_mounts()  # each local source must exist on this machine
        results[name] = {"ok": True, "resources": sorted(str(r) for r in task.resources),
                         "file_mounts": task.file_mounts or {}, "setup": task.setup, "run": task.run}
    except Exception as exc:
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
json.dump(results, sys.stdout)
'''


def _offers() -> list[dict[str, str]]:
    with OFFERS.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["Cloud"] in CLOUDS]


def write_catalogs(home: Path, offers: list[dict[str, str]]) -> None:
    for cloud in CLOUDS:
        path = home / ".sky" / "catalogs" / "v8" / cloud / "vms.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HEADER + (["Arch"] if cloud == "aws" else []))
            writer.writeheader()
            for row in offers:
                if row["Cloud"] == cloud:
                    out = {k: row.get(k, "") for k in HEADER if k != "GpuInfo"}
                    writer.writerow({**out, "GpuInfo": "", **({"Arch": "x86_64"} if cloud == "aws" else {})})


def pin(accelerators: dict[str, float], offers: list[dict[str, str]]) -> dict[str, Any]:
    """The cheapest offer with the stage's accelerator (or a CPU machine), as the planner pins it."""
    if accelerators:
        name, count = next(iter(accelerators.items()))
        fits = [o for o in offers if o["AcceleratorName"] == name and float(o["AcceleratorCount"] or 0) == count]
    else:
        fits = [o for o in offers if not o["AcceleratorName"]]
    if not fits:
        return {}
    offer = min(fits, key=lambda o: float(o["Price"]))
    return {"infra": f"{offer['Cloud']}/{offer['Region']}", "cloud": offer["Cloud"], "region": offer["Region"],
            "instance_type": offer["InstanceType"]}


def sky_python() -> Path:
    if not SKY_PYTHON.exists():
        pytest.skip("SkyPilot 0.14.1 is not installed in .venv/skypilot: run tests/services/prepare.sh "
                    "(it needs network access to PyPI once)")
    return SKY_PYTHON


def test_every_stage_shape_is_a_task_skypilot_accepts(tmp_path: Path) -> None:
    python = sky_python()
    offers = _offers()
    configs: dict[str, dict[str, Any]] = {}
    for launch in all_launches("aws"):
        placement = pin(dict(launch.placement.accelerators), offers)
        if not placement:
            continue
        for use_spot in (False, True):
            pinned = replace(launch, placement=replace(launch.placement, **placement, use_spot=use_spot))
            key = f"{launch.stage}@{placement['infra']}{'/spot' if use_spot else ''}#{len(configs)}"
            configs[key] = SkyPilotBackend().task_config(pinned, STORE)
            if not use_spot and len(configs) < 8:  # the other ways a node gets skyflow, on a few shapes
                for name, settings in (("url", SkyPilotConfig(code_fetch="url")),
                                       ("own", SkyPilotConfig(install="", python="/opt/venv/bin/python"))):
                    configs[f"{key}:{name}"] = SkyPilotBackend(config=settings).task_config(pinned, STORE)
    assert len(configs) >= 20
    assert any(c["num_nodes"] > 1 for c in configs.values()) and any("service" in c for c in configs.values())
    home = tmp_path / "home"
    write_catalogs(home, offers)
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    env = {"HOME": str(home), "SKY_RUNTIME_DIR": str(home), "PATH": os.environ.get("PATH", ""),
           "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", "NO_PROXY": "*"}
    proc = subprocess.run([str(python), "-c", CHECK, str(tmp_path / "configs.json")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    rejected = {name: r["error"] for name, r in results.items() if not r["ok"]}
    assert rejected == {}
    package = code_package_for(STORE)
    mount = {f"~/.skyflow/code/{package.digest}": str(package.directory)}
    by_kind = {kind: [r for name, r in results.items() if name.endswith(kind)] for kind in (":url", ":own")}
    packaged = [r for name, r in results.items() if ":" not in name]
    assert packaged and all(r["file_mounts"] == mount and package.digest in r["setup"] for r in packaged)
    assert by_kind[":url"] and all(r["file_mounts"] == {} and '"fetch": "url"' in r["setup"]
                                   for r in by_kind[":url"])
    assert by_kind[":own"] and all(r["setup"] is None and r["run"] == "/opt/venv/bin/python -m "
                                   "skyflow.backends.remote_stage" for r in by_kind[":own"])
    train = next(r for name, r in results.items() if "A100" in json.dumps(configs[name]["resources"]))
    assert any("A100" in res for res in train["resources"])
