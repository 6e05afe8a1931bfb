"""Exports: the CronJob validates against the Kubernetes schema and keeps its state on a volume, the
workflow installs skyflow from the checkout, every export uses absolute paths where it runs, and
what a target cannot express is said in the text and in the warnings."""

from __future__ import annotations

import ast
import py_compile
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from skyflow.errors import SchedulerError
from skyflow.scheduler.exports import (
    K8S_HOME,
    ExportSettings,
    check_install,
    checkout_install,
    export_schedule,
    find_repo_root,
    k8s_name,
    to_crontab,
    utc_crons,
)
from skyflow.scheduler.store import ScheduleRecord

RECORD = ScheduleRecord(name="Nightly_Retrain", target="/srv/ml/pipelines/nightly.yaml", pipeline="nightly",
                        cron="0 3 * * 1", timezone="Europe/Berlin", on_change=(), concurrency="forbid",
                        catchup="latest", params={"lr": 0.5, "note": "50% more"}, run_args=("--no-lineage",))
SETTINGS = ExportSettings(python="/opt/venv/bin/python", home="/var/skyflow home", image="ghcr.io/acme/skyflow:1.0",
                          repo_root="/srv/ml", install=".[s3,gcs,azure]")
REPO_ROOT = Path(__file__).resolve().parents[3]


def _bash_command(dag_text: str) -> str:
    """The BashOperator's command as Airflow reads it from the DAG file."""
    calls = [n for n in ast.walk(ast.parse(dag_text)) if isinstance(n, ast.Call)]
    (value,) = [k.value for c in calls for k in c.keywords if k.arg == "bash_command"]
    return str(ast.literal_eval(value))


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(("concurrency", "policy"), [("forbid", "Forbid"), ("allow", "Allow"), ("replace", "Replace")])
def test_k8s_cronjob_is_valid_and_maps_policies(concurrency: str, policy: str) -> None:
    text, _ = export_schedule(replace(RECORD, concurrency=concurrency, catchup="none"), "k8s-cronjob",
                              "pipelines/nightly.yaml", SETTINGS)
    claim, manifest = list(yaml.safe_load_all(text))
    for document in (claim, manifest):
        kubernetes_validate.validate(document, "1.30", strict=True)
    spec = manifest["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("0 3 * * 1", "Europe/Berlin", policy)
    assert spec["startingDeadlineSeconds"] == 300
    assert _container(manifest)["command"] == ["python", "-m", "skyflow", "run", "pipelines/nightly.yaml",
                                               "--set", "lr=0.5", "--set", "note=50% more", "--no-lineage"]
    assert manifest["metadata"]["name"] == "nightly-retrain" == k8s_name("Nightly_Retrain")


def test_k8s_cronjob_keeps_skyflow_home_on_a_claim_it_makes_or_is_given() -> None:
    text, _ = export_schedule(RECORD, "k8s-cronjob", "p.yaml", SETTINGS)
    claim, manifest = list(yaml.safe_load_all(text))
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = _container(manifest)
    assert container["image"] == "ghcr.io/acme/skyflow:1.0"
    home = {e["name"]: e["value"] for e in container["env"]}["SKYFLOW_HOME"]
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert home == mount["mountPath"] == K8S_HOME
    assert mount["name"] == volume["name"] and volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    given, _ = export_schedule(RECORD, "k8s-cronjob", "p.yaml", replace(SETTINGS, pvc="shared-state"))
    (only,) = list(yaml.safe_load_all(given))
    assert only["kind"] == "CronJob"
    assert only["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "shared-state"}


def test_k8s_cronjob_without_a_valid_schedule_is_rejected_by_the_schema() -> None:
    text, _ = export_schedule(RECORD, "k8s-cronjob", "p.yaml", SETTINGS)
    manifest = list(yaml.safe_load_all(text))[-1]
    manifest["spec"]["concurrencyPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.30", strict=True)


def test_k8s_cronjob_needs_an_image_and_says_it_skips_under_forbid() -> None:
    with pytest.raises(SchedulerError, match="k8s-cronjob needs --image IMAGE"):
        export_schedule(RECORD, "k8s-cronjob", "p.yaml", replace(SETTINGS, image=None))
    text, warnings = export_schedule(RECORD, "k8s-cronjob", "p.yaml", SETTINGS)
    (forbid,) = [w for w in warnings if w.startswith("concurrency: forbid")]
    assert "skips a tick" in forbid and f"# note: {forbid}" in text.splitlines()


def test_github_workflow_installs_from_the_checkout_runs_in_utc_and_gates_on_the_zone_offset() -> None:
    text, _ = export_schedule(RECORD, "github-actions", "pipelines/nightly.yaml", SETTINGS)
    workflow = yaml.safe_load(text)
    on = workflow["on"]  # quoted: YAML 1.1 would read a bare `on` as true
    assert [c["cron"] for c in on["schedule"]] == ["0 2 * * 1", "0 1 * * 1"]  # CET, CEST
    assert "workflow_dispatch" in on
    assert workflow["concurrency"] == {"group": "skyflow-Nightly_Retrain", "cancel-in-progress": False}
    steps = workflow["jobs"]["run"]["steps"]
    installs = [s["run"] for s in steps if "pip install" in s.get("run", "")]
    assert installs == ["python -m pip install '.[s3,gcs,azure]'"]
    assert steps[-1]["run"].startswith("python -m skyflow run pipelines/nightly.yaml --set lr=0.5")
    assert steps[-1]["run"].endswith("--run-id gh-${{ github.run_id }}-${{ github.run_attempt }}")
    assert '"0 1 * * 1") want="+0200"' in steps[-2]["run"] and steps[-1]["if"] == "steps.gate.outputs.run == 'true'"
    (cache,) = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"] == "~/.skyflow" and cache["with"]["key"].startswith(cache["with"]["restore-keys"])


def test_github_workflow_never_installs_by_name_from_an_index() -> None:
    for name in ("skyflow-llmops", "SkyFlow-LLMOps[s3]", "skyflow-llmops==0.1.0", " skyflow_llmops >=0.1",
                 "skyflow-llmops; python_version >= '3.11'"):
        with pytest.raises(SchedulerError, match="is a project name pip would look up on a package index"):
            export_schedule(RECORD, "github-actions", "p.yaml", replace(SETTINGS, install=name))
    for kept in ("skyflow-llmops @ git+https://example.org/acme/skyflow-llmops", ".[s3]", "./sub[gcs]",
                 "/abs/checkout", "dist/skyflow_llmops-0.1.0-py3-none-any.whl", "skyflow_llmops-0.1.0.tar.gz"):
        assert check_install(kept) == kept
    with pytest.raises(SchedulerError, match="not inside the repository /elsewhere"):
        export_schedule(RECORD, "github-actions", "p.yaml", replace(SETTINGS, repo_root="/elsewhere"))


def test_the_checkout_install_points_at_this_source_tree() -> None:
    assert find_repo_root(str(REPO_ROOT / "tests" / "fixtures" / "schedules" / "nightly.yaml")) == str(REPO_ROOT)
    assert checkout_install(str(REPO_ROOT)) == ".[s3,gcs,azure]"
    assert checkout_install(str(REPO_ROOT.parent)) == f"./{REPO_ROOT.name}[s3,gcs,azure]"
    with pytest.raises(SchedulerError, match="pass --install"):
        checkout_install(str(REPO_ROOT / "tests"))


def test_utc_schedule_needs_no_gate_and_replace_cancels_in_progress() -> None:
    text, _ = export_schedule(replace(RECORD, timezone="UTC", concurrency="replace"), "github-actions", "p.yaml",
                              SETTINGS)
    workflow = yaml.safe_load(text)
    assert [c["cron"] for c in workflow["on"]["schedule"]] == ["0 3 * * 1"]
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert all(s.get("id") != "gate" for s in workflow["jobs"]["run"]["steps"])


def test_utc_translation_refuses_what_it_cannot_move() -> None:
    assert utc_crons("15 * * * *", "Asia/Tokyo") == [("15 * * * *", "+0900")]
    with pytest.raises(SchedulerError, match="falls on another day in UTC"):
        utc_crons("0 3 * * 1", "Asia/Tokyo")
    with pytest.raises(SchedulerError, match="not a whole number of hours"):
        utc_crons("0 3 * * *", "Asia/Kolkata")
    with pytest.raises(SchedulerError, match="hour field '\\*/2'"):
        utc_crons("0 */2 * * *", "Europe/Berlin")


def test_airflow_dag_compiles_and_runs_absolute_paths(tmp_path: Path) -> None:
    text, warnings = export_schedule(replace(RECORD, catchup="all"), "airflow", "p.yaml", SETTINGS)
    dag = tmp_path / "skyflow_nightly.py"
    dag.write_text(text)
    py_compile.compile(str(dag), doraise=True)
    assert "schedule='0 3 * * 1'" in text and "tz='Europe/Berlin'" in text
    assert "catchup=True" in text and "max_active_runs=1" in text and not warnings
    command = _bash_command(text)
    assert "cd /srv/ml/pipelines && SKYFLOW_HOME='/var/skyflow home' /opt/venv/bin/python -m skyflow run " \
           "/srv/ml/pipelines/nightly.yaml" in command
    assert "{{ run_id }}" in command and "{{ ti.try_number }}" in command


def test_airflow_keeps_jinja_out_of_params_and_says_what_it_cannot_do() -> None:
    record = replace(RECORD, params={"prompt": "{{ not a template }}"}, concurrency="replace", catchup="none")
    text, warnings = export_schedule(record, "airflow", "p.yaml", SETTINGS)
    command = _bash_command(text)
    assert command.startswith("{% raw %}cd /srv/ml/pipelines") and "{% endraw %} --run-id" in command
    assert [w.split(" ", 2)[:2] for w in warnings] == [["concurrency:", "replace"], ["catchup:", "none"]]
    assert all(f"# note: {w}" in text for w in warnings)


def test_crontab_uses_absolute_interpreter_and_home_locks_for_forbid_and_sets_the_zone() -> None:
    text, warnings = to_crontab(RECORD, SETTINGS)
    line = text.splitlines()[-1]
    fields = line.split(" ", 5)
    assert " ".join(fields[:5]) == "0 3 * * 1"
    words = shlex.split(fields[5].replace("\\%", "%"))
    assert words[:7] == ["cd", "/srv/ml/pipelines", "&&", "mkdir", "-p", "/var/skyflow home/scheduler/logs", "&&"]
    assert words[7:11] == ["SKYFLOW_HOME=/var/skyflow home", "flock", "-n",
                           "/var/skyflow home/scheduler/Nightly_Retrain.cron.lock"]
    assert words[11:16] == ["/opt/venv/bin/python", "-m", "skyflow", "run", "/srv/ml/pipelines/nightly.yaml"]
    assert "50\\% more" in line and "%" not in line.replace("\\%", "")
    assert "CRON_TZ=Europe/Berlin" in text.splitlines()
    assert [w.split(" ", 1)[0] for w in warnings] == ["concurrency:", "catchup:", "timezone"]
    assert "skipped" in warnings[0] and "Debian's cron ignores" in warnings[2]
    assert all(f"# note: {w}" in text for w in warnings)


def test_a_job_whose_machine_goes_away_waits_for_its_lineage_and_crontab_leaves_it_to_the_drain() -> None:
    record = replace(RECORD, run_args=())
    cronjob = list(yaml.safe_load_all(export_schedule(record, "k8s-cronjob", "p.yaml", SETTINGS)[0]))[1]
    assert _container(cronjob)["command"][-1] == "--wait-for-lineage"
    workflow = yaml.safe_load(export_schedule(record, "github-actions", "p.yaml", SETTINGS)[0])
    assert " --wait-for-lineage --run-id gh-" in workflow["jobs"]["run"]["steps"][-1]["run"]
    assert " --wait-for-lineage --run-id " in _bash_command(export_schedule(record, "airflow", "p.yaml", SETTINGS)[0])
    assert "--wait-for-lineage" not in to_crontab(record, SETTINGS)[0]  # a machine that stays: the drain finishes
    for run_args in (("--no-lineage",), ("--wait-for-lineage",)):
        command = _container(list(yaml.safe_load_all(export_schedule(replace(record, run_args=run_args), "k8s-cronjob",
                                                                      "p.yaml", SETTINGS)[0]))[1])["command"]
        assert command.count("--wait-for-lineage") == (run_args == ("--wait-for-lineage",))


def test_crontab_allow_runs_without_a_lock() -> None:
    text, warnings = to_crontab(replace(RECORD, concurrency="allow", catchup="none", timezone="UTC"), SETTINGS)
    assert "flock" not in text and not warnings


def test_on_change_only_schedule_cannot_be_exported() -> None:
    with pytest.raises(SchedulerError, match="has no cron"):
        export_schedule(replace(RECORD, cron=None, on_change=(("raw", "/d"),)), "crontab", "p.yaml", SETTINGS)


def test_an_export_says_it_drops_data_change_triggers_and_a_python_target_runs_from_its_folder() -> None:
    record = replace(RECORD, target="/srv/ml/pipelines/nightly.py:build", on_change=(("raw", "/d/raw"), ("b", "s3://b")),
                     concurrency="allow", catchup="none", timezone="UTC")
    text, warnings = to_crontab(record, SETTINGS)
    assert warnings == ["on_change (raw, b) is not exported: cron fires on time only; run `skyflow scheduler` for "
                        "data-change triggers"]
    words = shlex.split(text.splitlines()[-1].split(" ", 5)[5].replace("\\%", "%"))
    assert words[:2] == ["cd", "/srv/ml/pipelines"]
    assert "/srv/ml/pipelines/nightly.py:build" in words
    with pytest.raises(SchedulerError, match=r"unknown export format 'nomad'; choose one of crontab, k8s-cronjob, "
                                             r"github-actions, airflow"):
        export_schedule(record, "nomad", "p.yaml", SETTINGS)


def test_crontab_exports_replace_as_a_skipping_lock() -> None:
    text, warnings = to_crontab(replace(RECORD, concurrency="replace", catchup="none", timezone="UTC"), SETTINGS)
    assert warnings == ["concurrency: replace has no cron form; exported as forbid (`flock -n`): a tick that falls "
                        "while a run is active is skipped"]
    assert "flock -n '/var/skyflow home/scheduler/Nightly_Retrain.cron.lock'" in text


def test_k8s_cronjob_says_it_starts_only_the_newest_missed_tick_under_catchup_all() -> None:
    text, warnings = export_schedule(replace(RECORD, catchup="all"), "k8s-cronjob", "p.yaml", SETTINGS)
    assert "catchup: all has no CronJob form; the controller starts only the newest missed tick" in warnings
    manifest = list(yaml.safe_load_all(text))[-1]
    assert "startingDeadlineSeconds" not in manifest["spec"]


def test_github_workflow_needs_a_checkout_and_says_what_catchup_it_cannot_keep() -> None:
    for missing in ({"repo_root": None}, {"install": None}):
        with pytest.raises(SchedulerError, match=r"github-actions needs the repository root and what to pip-install"):
            export_schedule(RECORD, "github-actions", "p.yaml", replace(SETTINGS, **missing))  # type: ignore[arg-type]
    utc = replace(RECORD, timezone="UTC")
    _, all_warnings = export_schedule(replace(utc, catchup="all"), "github-actions", "p.yaml", SETTINGS)
    assert all_warnings == ["catchup: all has no GitHub Actions form; missed ticks are not run"]
    _, none_warnings = export_schedule(replace(utc, catchup="none"), "github-actions", "p.yaml", SETTINGS)
    assert none_warnings == ["catchup: none has no GitHub Actions form; a scheduled run that GitHub starts late "
                             "(it may, under load) still runs"]


def test_github_workflow_under_allow_puts_no_concurrency_group() -> None:
    text, _ = export_schedule(replace(RECORD, timezone="UTC", concurrency="allow"), "github-actions", "p.yaml",
                              SETTINGS)
    workflow = yaml.safe_load(text)
    assert "concurrency" not in workflow and list(workflow) == ["name", "on", "permissions", "jobs"]
