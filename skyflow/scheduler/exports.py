"""A schedule as another scheduler's config: a crontab line, a Kubernetes CronJob, a GitHub Actions
workflow, an Airflow DAG. Each returns (text, warnings about what the target cannot express)."""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from skyflow.errors import SchedulerError
from skyflow.scheduler.store import ScheduleRecord

FORMATS = ("crontab", "k8s-cronjob", "github-actions", "airflow")
_UTC_NAMES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu", "Universal"}


def _run_args(record: ScheduleRecord, pipeline_arg: str) -> list[str]:
    args = ["skyflow", "run", pipeline_arg]
    for key, value in sorted(record.params.items()):
        args += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args + list(record.run_args)


def _common_warnings(record: ScheduleRecord, target: str) -> list[str]:
    if record.cron is None:
        raise SchedulerError(f"schedule {record.name!r} has no cron; {target} can only fire on time, "
                             "add --cron or `cron:` to the pipeline's schedule")
    if record.on_change:
        refs = ", ".join(ref for ref, _ in record.on_change)
        return [f"on_change ({refs}) is not exported: {target} fires on time only; run `skyflow scheduler` "
                "for data-change triggers"]
    return []


def export_schedule(record: ScheduleRecord, fmt: str, pipeline_arg: str, *, image: str = "skyflow:latest"
                    ) -> tuple[str, list[str]]:
    if fmt == "crontab":
        return to_crontab(record)
    if fmt == "k8s-cronjob":
        return to_k8s_cronjob(record, pipeline_arg, image)
    if fmt == "github-actions":
        return to_github_actions(record, pipeline_arg)
    if fmt == "airflow":
        return to_airflow(record, pipeline_arg)
    raise SchedulerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def to_crontab(record: ScheduleRecord) -> tuple[str, list[str]]:
    warnings = _common_warnings(record, "cron")
    if record.concurrency == "replace":
        warnings.append("concurrency: replace has no cron form; exported as forbid (flock -n)")
    if record.catchup != "none":
        warnings.append(f"catchup: {record.catchup} has no cron form; cron never runs missed ticks")
    path = record.target.split(":", 1)[0]
    workdir, name = path.rsplit("/", 1) if "/" in path else (".", path)
    command = shlex.join(_run_args(record, name + record.target[len(path):]))
    command = f"cd {shlex.quote(workdir)} && {command}"
    if record.concurrency != "allow":
        command = f"flock -n /tmp/skyflow-{record.name}.lock sh -c {shlex.quote(command)}"
    command += f" >> $HOME/skyflow-{record.name}.log 2>&1"
    lines = [f"# skyflow schedule {record.name}: pipeline {record.pipeline}",
             *(f"# note: {w}" for w in warnings)]
    if record.timezone not in _UTC_NAMES:
        lines.append("# CRON_TZ is read by cronie and systemd-cron; with another cron, convert the time to the "
                     "machine's zone")
    lines.append(f"CRON_TZ={record.timezone}")
    # In a crontab line an unescaped % ends the command.
    lines.append(f"{record.cron} {command.replace('%', chr(92) + '%')}")
    return "\n".join(lines) + "\n", warnings


def k8s_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (cleaned or "pipeline")[:52].rstrip("-")  # CronJob names leave 11 characters for the Job suffix


def to_k8s_cronjob(record: ScheduleRecord, pipeline_arg: str, image: str) -> tuple[str, list[str]]:
    import yaml

    warnings = _common_warnings(record, "a CronJob")
    spec: dict[str, object] = {"schedule": record.cron, "timeZone": record.timezone,
                               "concurrencyPolicy": record.concurrency.capitalize(),
                               "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3}
    if record.catchup == "none":
        spec["startingDeadlineSeconds"] = 300  # a tick later than this is dropped, as with catchup: none
    elif record.catchup == "all":
        warnings.append("catchup: all has no CronJob form; the controller starts only the newest missed tick")
    spec["jobTemplate"] = {"spec": {"backoffLimit": 0, "template": {
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "skyflow",
                                "skyflow/pipeline": k8s_name(record.pipeline)}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "skyflow", "image": image, "command": _run_args(record, pipeline_arg),
            "env": [{"name": "SKYFLOW_HOME", "value": "/var/lib/skyflow"}]}]}}}}
    manifest = {"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": k8s_name(record.name), "labels": {"app.kubernetes.io/managed-by": "skyflow"}},
                "spec": spec}
    return yaml.safe_dump(manifest, sort_keys=False), warnings


def utc_crons(cron: str, timezone: str) -> list[tuple[str, str]]:
    """(UTC cron, the zone's UTC offset it is right for) — one per offset the zone uses in a year."""
    if timezone in _UTC_NAMES:
        return [(cron, "+0000")]
    minute, hours, dom, month, dow = cron.split()[:5]
    zone = ZoneInfo(timezone)
    year = datetime.now(UTC).year
    offsets = sorted({datetime(year, m, 15, 12, tzinfo=zone).utcoffset() or timedelta() for m in range(1, 13)})
    out = []
    for offset in offsets:
        shift_h, rest = divmod(int(offset.total_seconds()), 3600)
        if rest:
            raise SchedulerError(f"timezone {timezone} is not a whole number of hours from UTC; "
                                 "GitHub Actions cron runs in UTC: export with a UTC schedule")
        if hours == "*" and dom == dow == "*":
            shifted = hours
        elif re.fullmatch(r"\d+(,\d+)*", hours):
            local = [int(h) for h in hours.split(",")]
            if any(not 0 <= h - shift_h < 24 for h in local) and (dom, dow) != ("*", "*"):
                raise SchedulerError(f"{cron!r} in {timezone} falls on another day in UTC; GitHub Actions cron "
                                     "runs in UTC: pick an hour that stays on the same day, or a UTC schedule")
            shifted = ",".join(str((h - shift_h) % 24) for h in local)
        else:
            raise SchedulerError(f"hour field {hours!r} of {cron!r} cannot be moved from {timezone} to UTC; "
                                 "GitHub Actions cron runs in UTC: use a UTC schedule")
        sign = "-" if offset < timedelta() else "+"
        total = abs(int(offset.total_seconds())) // 60
        out.append((f"{minute} {shifted} {dom} {month} {dow}", f"{sign}{total // 60:02d}{total % 60:02d}"))
    return out


def to_github_actions(record: ScheduleRecord, pipeline_arg: str) -> tuple[str, list[str]]:
    import yaml

    warnings = _common_warnings(record, "GitHub Actions")
    assert record.cron is not None
    crons = utc_crons(record.cron, record.timezone)
    if record.catchup == "all":
        warnings.append("catchup: all has no GitHub Actions form; missed ticks are not run")
    steps: list[dict[str, object]] = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
        {"run": "pip install skyflow"},
    ]
    command = shlex.join(_run_args(record, pipeline_arg)) + " --run-id ci-${{ github.sha }}"
    run_step: dict[str, object] = {"name": "skyflow run", "run": command}
    if len(crons) > 1:
        # Each UTC cron is right in one half of the year; the step runs only when the zone is at its offset.
        cases = " ".join(f'"{c}") want="{o}" ;;' for c, o in crons)
        gate = (f'case "${{{{ github.event.schedule }}}}" in {cases} *) want="" ;; esac\n'
                f'if [ -z "$want" ] || [ "$(TZ={record.timezone} date +%z)" = "$want" ]; then '
                'echo "run=true" >> "$GITHUB_OUTPUT"; else echo "run=false" >> "$GITHUB_OUTPUT"; fi')
        steps.append({"id": "gate", "name": f"fire at {record.cron} in {record.timezone}", "run": gate})
        run_step["if"] = "steps.gate.outputs.run == 'true'"
    steps.append(run_step)
    workflow: dict[str, object] = {
        "name": f"skyflow {record.name}",
        "on": {"schedule": [{"cron": c} for c, _ in crons], "workflow_dispatch": {}},
    }
    if record.concurrency != "allow":
        workflow["concurrency"] = {"group": f"skyflow-{record.name}",
                                   "cancel-in-progress": record.concurrency == "replace"}
    workflow["jobs"] = {"run": {"runs-on": "ubuntu-latest", "steps": steps}}
    return yaml.safe_dump(workflow, sort_keys=False, width=1000), warnings


def to_airflow(record: ScheduleRecord, pipeline_arg: str) -> tuple[str, list[str]]:
    warnings = _common_warnings(record, "Airflow")
    if record.concurrency == "replace":
        warnings.append("concurrency: replace has no Airflow form; exported as max_active_runs=1")
    if record.catchup == "none":
        warnings.append("catchup: none is exported as catchup=False (Airflow still runs the newest interval)")
    command = shlex.join(_run_args(record, pipeline_arg)) + " --run-id airflow-{{ ts_nodash }}"
    start = datetime.now(UTC)
    text = f'''"""Airflow DAG: the skyflow pipeline {record.pipeline} on {record.cron!r} in {record.timezone}."""

import pendulum
from airflow import DAG

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id={("skyflow_" + re.sub(r"[^A-Za-z0-9_]", "_", record.name))!r},
    schedule={record.cron!r},
    start_date=pendulum.datetime({start.year}, {start.month}, {start.day}, tz={record.timezone!r}),
    catchup={record.catchup == "all"!r},
    max_active_runs={1 if record.concurrency != "allow" else 16},
    tags=["skyflow"],
) as dag:
    BashOperator(task_id="skyflow_run", bash_command={command!r})
'''
    return text, warnings
