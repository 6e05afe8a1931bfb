"""`skyflow plan` and `skyflow catalog gpus` on a small catalog: JSON shape, explain, errors, flags, pools."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from skyflow.cli.plan_commands import render_plan
from skyflow.planner import Placement, Plan
from tests.unit.cli.cli_helpers import run

HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone\n"
VMS = {
    "aws": ["p4d.24xlarge,A100,8,96,1152,32.77,12.0,us-east-1,us-east-1a",
            "p5.48xlarge,H100,8,192,2048,98.32,40.0,us-east-1,us-east-1a",
            "m6i.2xlarge,,,8,32,0.384,0.15,us-east-1,us-east-1a"],
    "lambda": ["gpu_8x_a100,A100,8,124,1800,29.39,11.0,us-south-1,us-south-1a",
               "cpu_8x,,,8,32,0.388,0.09,us-south-1,us-south-1a"],
}
PIPELINE = """\
name: rlhf
stages:
  sft: {run: 'python sft.py', outputs: {model: {size_gb: 30}}, estimate: {hours: {A100: 10, H100: 4}},
        resources: {accelerators: [A100:8, H100:8]}}
  ppo: {run: 'python ppo.py', inputs: {policy: sft.model}, estimate: 2,
        resources: {accelerators: A100:8, use_spot: true}}
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for cloud, rows in VMS.items():
        (tmp_path / "cat" / cloud).mkdir(parents=True)
        (tmp_path / "cat" / cloud / "vms.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (tmp_path / "egress.yaml").write_text("rules:\n  - {from: '*', to: '*', usd_per_gb: 0.1}\n")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    for var, sub in (("HOME", "home"), ("SKYFLOW_HOME", "skyflow"), ("XDG_CACHE_HOME", "cache")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("SKYFLOW_LOCAL_GPUS", "")
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_CLIENT_ID",
                "RUNPOD_API_KEY", "SKYFLOW_CATALOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return {"pipeline": str(tmp_path / "p.yaml"), "catalog": str(tmp_path / "cat"),
            "egress": str(tmp_path / "egress.yaml"), "home": str(tmp_path / "skyflow")}


def plan_args(files: dict[str, str], *extra: str) -> list[str]:
    return ["plan", files["pipeline"], "--catalog", files["catalog"], "--egress", files["egress"], *extra]


def test_json_is_exactly_the_documented_shape(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(plan_args(files, "--all-clouds", "--json"), capsys)
    assert code == 0
    assert json.loads(out) == {
        "pipeline": "rlhf", "objective": "cost", "total_usd": 315.9, "total_hours": 12.0,
        "stages": {
            "sft": {"infra": "lambda/us-south-1", "cloud": "lambda", "region": "us-south-1", "zone": "us-south-1a",
                    "instance_type": "gpu_8x_a100", "accelerators": {"A100": 8}, "use_spot": False,
                    "num_nodes": 1, "hourly_usd": 29.39, "hours": 10.0, "compute_usd": 293.9},
            "ppo": {"infra": "lambda/us-south-1", "cloud": "lambda", "region": "us-south-1", "zone": "us-south-1a",
                    "instance_type": "gpu_8x_a100", "accelerators": {"A100": 8}, "use_spot": True,
                    "num_nodes": 1, "hourly_usd": 11.0, "hours": 2.0, "compute_usd": 22.0}},
        "egress": [], "baseline": {"cloud": "lambda", "usd": 352.68}, "solver": "dp"}


def test_deadline_and_budget_flags(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(plan_args(files, "--all-clouds", "--json", "--deadline", "8"), capsys)
    fast = json.loads(out)
    assert fast["stages"]["sft"]["instance_type"] == "p5.48xlarge" and fast["total_hours"] <= 8
    _, out, _ = run(plan_args(files, "--all-clouds", "--json", "--minimize", "time", "--max-cost", "320"), capsys)
    within = json.loads(out)
    assert within["objective"] == "time" and within["total_usd"] <= 320
    assert within["stages"]["sft"]["instance_type"] == "gpu_8x_a100"  # the H100 plan costs 393.28 + 22 + 3
    # a budget alone asks for the fastest plan within it, as its help says
    _, out, _ = run(plan_args(files, "--all-clouds", "--json", "--max-cost", "420"), capsys)
    fastest = json.loads(out)
    assert fastest["objective"] == "time" and fastest["total_usd"] <= 420
    assert fastest["stages"]["sft"]["instance_type"] == "p5.48xlarge" and fastest["total_hours"] < 12


def test_explain_and_tables(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(plan_args(files, "--all-clouds", "--explain", "sft"), capsys)
    assert code == 0
    assert "Plan for rlhf (minimize cost)" in out and "gpu_8x_a100" in out
    assert "Next best placements of sft" in out and "p4d.24xlarge" in out
    assert "+$36.80" in out and "+$3.00 egress" in out
    assert "all on lambda, on demand: $352.68" in out


def test_no_candidate_is_a_user_error(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(plan_args(files, "--all-clouds", "--block-clouds", "lambda,aws"), capsys)
    assert code == 2 and out == ""
    assert "stage 'sft': no place to run it" in err and "the clouds considered (none" in err
    assert "Traceback" not in err


def test_without_all_clouds_only_clouds_with_credentials(files: dict[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(plan_args(files, "--json"), capsys)
    assert code == 2 and "the clouds considered (none" in err
    (tmp_path / "home" / ".aws").mkdir()
    (tmp_path / "home" / ".aws" / "credentials").write_text("[default]\n")
    code, out, _ = run(plan_args(files, "--json"), capsys)
    assert code == 0 and {s["cloud"] for s in json.loads(out)["stages"].values()} == {"aws"}


def test_pools_come_from_the_user_config(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    Path(files["home"], "config.yaml").write_text(
        "ssh_pools:\n  lab: {hosts: [10.0.0.5, 10.0.0.6], accelerators: {A100: 8}, hourly_usd: 1.5}\n")
    code, out, _ = run(plan_args(files, "--json", "--all-clouds", "--infra", "ssh/lab,aws"), capsys)
    assert code == 0
    sft = json.loads(out)["stages"]["sft"]
    assert (sft["infra"], sft["instance_type"], sft["compute_usd"]) == ("ssh/lab", "ssh:lab", 15.0)
    code, _, err = run(plan_args(files, "--json", "--infra", "kubernetes/none"), capsys)
    assert code == 2 and "no place to run it" in err


def test_catalog_gpus(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["catalog", "gpus", "a100", "--catalog", files["catalog"]], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if "A100" in line]
    assert len(rows) == 2 and "32.77" in rows[0] + rows[1] and "29.39" in rows[0] + rows[1] and "H100" not in out
    code, _, err = run(["catalog", "gpus", "Z9", "--catalog", files["catalog"]], capsys)
    assert code == 2 and "no accelerator 'Z9'" in err
    # the shipped catalog's GCP GPUs ride their host VMs
    code, out, _ = run(["catalog", "gpus"], capsys)
    gcp = {line.split("│")[4].strip() for line in out.splitlines() if "│ gcp " in line}
    assert code == 0 and {"a2-highgpu-8g", "a2-ultragpu-8g", "a3-highgpu-8g", "a3-ultragpu-8g", "g2-standard-4"} <= gcp


def _cached_plan(recompute_usd: float | None) -> Plan:
    copy = Placement(infra="local", cloud="local", region=None, zone=None, instance_type="cached", accelerators={},
                     use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0, cached=True)
    train = Placement(infra="gcp/us-central1", cloud="gcp", region="us-central1", zone="us-central1-a",
                      instance_type="a2-highgpu-8g", accelerators={"A100": 8}, use_spot=False, num_nodes=1,
                      hourly_usd=29.39, hours=2.0)
    return Plan(pipeline="rlhf", objective="cost", stages={"sft": copy, "ppo": train}, egress=(), total_usd=58.78,
                total_hours=2.0, baseline_usd=65.54, baseline_cloud="aws", recompute_usd=recompute_usd)


def test_cached_copies_save_apart_from_the_clouds() -> None:
    console = Console(file=io.StringIO(), width=200)
    render_plan(_cached_plan(352.68), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "all on aws, on demand, reusing the same cached outputs: $65.54 — this plan saves $6.76 (10%)" in text
    assert "reusing cached outputs of sft saves $293.90: recomputing every stage would cost $352.68" in text


DIAMOND = """\
name: diamond
stages:
  prep: {run: 'true', outputs: {d: {size_gb: 100}}, resources: {cpus: 8}}
  left: {run: 'true', inputs: {d: prep.d}, outputs: {m: {size_gb: 30}}, resources: {accelerators: A100:8}}
  right: {run: 'true', inputs: {d: prep.d}, outputs: {m: {size_gb: 30}}, resources: {accelerators: A100:8}}
  join: {run: 'true', inputs: {l: left.m, r: right.m}, resources: {cpus: 8}}
"""


def test_json_stays_pure_when_the_integer_program_runs(files: dict[str, str], tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    # a diamond is no tree, so HiGHS solves it; the solver must not write to the process's stdout
    (tmp_path / "p.yaml").write_text(DIAMOND)
    code, out, err = run(plan_args(files, "--json", "--all-clouds"), capfd)
    assert code == 0, err
    assert set(json.loads(out)["stages"]) == {"prep", "left", "right", "join"}


def test_planning_loads_no_transfer_library_and_no_masked_arrays(tmp_path: Path) -> None:
    """`skyflow plan` moves no data and runs nothing: fsspec (40 ms to import), numpy.ma (what numpy 2's
    np.unique imports on its first call, 15 ms) and the runner's loop and lineage stay out of it."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    code = ("import sys\nfrom skyflow.cli.main import main\n"
            "try:\n    main(['plan', 'examples/rlhf/pipeline.yaml', '--all-clouds', '--json'])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(sorted(m for m in ('fsspec', 'numpy.ma', 'mlflow', 'skyflow.runner.loop',"
            " 'skyflow.runner.lineage_io') if m in sys.modules), file=sys.stderr)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SKYFLOW_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["pipeline"] == "rlhf"
    assert done.stderr.strip().splitlines()[-1] == "[]"
