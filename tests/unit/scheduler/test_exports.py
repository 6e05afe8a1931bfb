"""Exports: the CronJob validates against the Kubernetes schema, the workflow parses, the DAG compiles."""

from __future__ import annotations

import py_compile
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from skyflow.errors import SchedulerError
from skyflow.scheduler.exports import export_schedule, k8s_name, to_crontab, utc_crons
from skyflow.scheduler.store import ScheduleRecord

RECORD = ScheduleRecord(name="Nightly_Retrain", target="/srv/ml/pipeline.yaml", pipeline="nightly", cron="0 3 * * 1",
                        timezone="Europe/Berlin", on_change=(), concurrency="forbid", catchup="latest",
                        params={"lr": 0.5, "note": "50% more"}, run_args=("--no-lineage",))


@pytest.mark.parametrize(("concurrency", "policy"), [("forbid", "Forbid"), ("allow", "Allow"), ("replace", "Replace")])
def test_k8s_cronjob_is_valid_and_maps_policies(concurrency: str, policy: str) -> None:
    text, _ = export_schedule(replace(RECORD, concurrency=concurrency, catchup="none"), "k8s-cronjob",
                              "pipelines/nightly.yaml", image="ghcr.io/acme/skyflow:1.0")
    manifest = yaml.safe_load(text)
    kubernetes_validate.validate(manifest, "1.30", strict=True)
    spec = manifest["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("0 3 * * 1", "Europe/Berlin", policy)
    assert spec["startingDeadlineSeconds"] == 300
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["skyflow", "run", "pipelines/nightly.yaml", "--set", "lr=0.5",
                                    "--set", "note=50% more", "--no-lineage"]
    assert manifest["metadata"]["name"] == "nightly-retrain" == k8s_name("Nightly_Retrain")


def test_k8s_cronjob_without_a_valid_schedule_is_rejected_by_the_schema() -> None:
    text, _ = export_schedule(RECORD, "k8s-cronjob", "p.yaml")
    manifest = yaml.safe_load(text)
    manifest["spec"]["concurrencyPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.30", strict=True)


def test_github_workflow_parses_runs_in_utc_and_gates_on_the_zone_offset() -> None:
    text, _ = export_schedule(RECORD, "github-actions", "pipelines/nightly.yaml")
    workflow = yaml.safe_load(text)
    on = workflow["on"]  # quoted: YAML 1.1 would read a bare `on` as true
    assert [c["cron"] for c in on["schedule"]] == ["0 2 * * 1", "0 1 * * 1"]  # CET, CEST
    assert "workflow_dispatch" in on
    assert workflow["concurrency"] == {"group": "skyflow-Nightly_Retrain", "cancel-in-progress": False}
    steps = workflow["jobs"]["run"]["steps"]
    assert steps[-1]["run"].endswith("--run-id ci-${{ github.sha }}")
    assert steps[-1]["run"].startswith("skyflow run pipelines/nightly.yaml")
    assert '"0 1 * * 1") want="+0200"' in steps[-2]["run"] and steps[-1]["if"] == "steps.gate.outputs.run == 'true'"


def test_utc_schedule_needs_no_gate_and_replace_cancels_in_progress() -> None:
    text, _ = export_schedule(replace(RECORD, timezone="UTC", concurrency="replace"), "github-actions", "p.yaml")
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


def test_airflow_dag_compiles_and_carries_the_schedule(tmp_path: Path) -> None:
    text, warnings = export_schedule(replace(RECORD, catchup="all"), "airflow", "p.yaml")
    dag = tmp_path / "skyflow_nightly.py"
    dag.write_text(text)
    py_compile.compile(str(dag), doraise=True)
    assert "schedule='0 3 * * 1'" in text and "tz='Europe/Berlin'" in text
    assert "catchup=True" in text and "max_active_runs=1" in text and not warnings


def test_crontab_escapes_percent_locks_for_forbid_and_sets_the_zone() -> None:
    text, warnings = to_crontab(RECORD)
    line = text.splitlines()[-1]
    assert line.startswith("0 3 * * 1 flock -n /tmp/skyflow-Nightly_Retrain.lock sh -c ")
    assert "cd /srv/ml && skyflow run pipeline.yaml" in line and "50\\% more" in line
    assert "CRON_TZ=Europe/Berlin" in text.splitlines()
    assert any("catchup: latest" in w for w in warnings)


def test_on_change_only_schedule_cannot_be_exported() -> None:
    with pytest.raises(SchedulerError, match="has no cron"):
        export_schedule(replace(RECORD, cron=None, on_change=(("raw", "/d"),)), "crontab", "p.yaml")
