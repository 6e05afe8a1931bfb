"""A schedule as another scheduler's config: a crontab line, a Kubernetes CronJob, a GitHub Actions
workflow, an Airflow DAG. Each returns (text, warnings about what the target cannot express); the
warnings also stand as comments at the top of the text, next to what the export assumes."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from skyflow.errors import SchedulerError
from skyflow.scheduler.store import ScheduleRecord

FORMATS = ("crontab", "k8s-cronjob", "github-actions", "airflow")
_UTC_NAMES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu", "Universal"}
K8S_HOME = "/var/lib/skyflow"
K8S_PVC_SIZE = "10Gi"
GITHUB_HOME = "~/.skyflow"  # skyflow's default SKYFLOW_HOME on the runner
GITHUB_RUN_ID = "gh-${{ github.run_id }}-${{ github.run_attempt }}"  # unique per fire and per re-run
# A requirement that is only a project name (with extras, a version, a marker) is looked up on a package
# index, which holds other code than this checkout (the import name's project there is an unrelated one):
# only a path or a direct reference (`name @ URL`) will do.
_INDEX_NAME = re.compile(r"\s*[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\s*(\[[^\]]*\])?\s*([<>=!~;].*)?")
_ARCHIVES = (".whl", ".tar.gz", ".zip")  # a file name pip installs from this directory


@dataclass(frozen=True)
class ExportSettings:
    """Where an exported schedule runs: what that machine has, and where the runs keep their state.

    ``python`` and ``home`` serve the exports that run on this machine (crontab, airflow): an absolute
    interpreter with skyflow installed, and the SKYFLOW_HOME the runs share. ``repo_root`` is the
    checkout that a workflow (and an image) hold the pipeline in; ``install`` is what the workflow
    pip-installs; ``image`` and ``pvc`` are the CronJob's container image and state volume.
    """

    python: str
    home: str
    image: str | None = None
    pvc: str | None = None
    repo_root: str | None = None
    install: str | None = None


def _split_target(target: str) -> tuple[str, str]:
    """(file, ':function' or '') of a pipeline target, as `schedule_from_pipeline` stored it."""
    if target.split(":", 1)[0].endswith(".py"):
        path, sep, func = target.partition(":")
        return path, sep + func
    return target, ""


def _run_args(record: ScheduleRecord, python: str, pipeline: str, *, machine_goes_away: bool = False) -> list[str]:
    """The `skyflow run` command line; on a pod or CI runner that ends with the job (``machine_goes_away``)
    it returns only once lineage is in MLflow, instead of leaving that to a background process."""
    args = [python, "-m", "skyflow", "run", pipeline]
    for key, value in sorted(record.params.items()):
        args += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    waits = machine_goes_away and not {"--no-lineage", "--wait-for-lineage"} & set(record.run_args)
    return args + list(record.run_args) + (["--wait-for-lineage"] if waits else [])


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "schedule"


def _notes(warnings: list[str]) -> list[str]:
    return [f"# note: {w}" for w in warnings]


def _common_warnings(record: ScheduleRecord, target: str) -> list[str]:
    if record.cron is None:
        raise SchedulerError(f"schedule {record.name!r} has no cron; {target} can only fire on time, "
                             "add --cron or `cron:` to the pipeline's schedule")
    if record.on_change:
        refs = ", ".join(ref for ref, _ in record.on_change)
        return [f"on_change ({refs}) is not exported: {target} fires on time only; run `skyflow scheduler` "
                "for data-change triggers"]
    return []


def _in_repo(record: ScheduleRecord, repo_root: str) -> str:
    """The pipeline's path from the repository root, as a checkout or an image holds it."""
    path, suffix = _split_target(record.target)
    try:
        relative = Path(path).relative_to(repo_root)
    except ValueError:
        raise SchedulerError(f"{path} is not inside the repository {repo_root}; pass --repo-root with the "
                             "checkout that holds the pipeline") from None
    return relative.as_posix() + suffix


def export_schedule(record: ScheduleRecord, fmt: str, pipeline_arg: str, settings: ExportSettings
                    ) -> tuple[str, list[str]]:
    """``record`` as ``fmt`` text, and what that format cannot express. ``pipeline_arg`` is the path as
    typed: the CronJob runs it from the image's working directory when no repository root is known."""
    if fmt == "crontab":
        return to_crontab(record, settings)
    if fmt == "k8s-cronjob":
        return to_k8s_cronjob(record, pipeline_arg, settings)
    if fmt == "github-actions":
        return to_github_actions(record, settings)
    if fmt == "airflow":
        return to_airflow(record, settings)
    raise SchedulerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def to_crontab(record: ScheduleRecord, settings: ExportSettings) -> tuple[str, list[str]]:
    warnings = _common_warnings(record, "cron")
    if record.concurrency == "forbid":
        warnings.append("concurrency: forbid is exported as `flock -n`: a tick that falls while a run is active is "
                        "skipped, where `skyflow scheduler` would start it when the run ends")
    elif record.concurrency == "replace":
        warnings.append("concurrency: replace has no cron form; exported as forbid (`flock -n`): a tick that falls "
                        "while a run is active is skipped")
    if record.catchup != "none":
        warnings.append(f"catchup: {record.catchup} has no cron form; cron never runs ticks missed while the "
                        "machine was down")
    if record.timezone not in _UTC_NAMES:
        warnings.append(f"timezone {record.timezone} is set with CRON_TZ, which cronie and systemd-cron read and "
                        "Debian's cron ignores; with such a cron, convert the time to the machine's zone")
    path, _ = _split_target(record.target)
    home, stem = settings.home, _file_stem(record.name)
    logs = f"{home}/scheduler/logs"
    log = f"{logs}/{stem}.cron.log"
    run = shlex.join(_run_args(record, settings.python, record.target))
    if record.concurrency != "allow":
        run = f"flock -n {shlex.quote(f'{home}/scheduler/{stem}.cron.lock')} {run}"
    command = (f"cd {shlex.quote(str(Path(path).parent))} && mkdir -p {shlex.quote(logs)} && "
               f"SKYFLOW_HOME={shlex.quote(home)} {run} >> {shlex.quote(log)} 2>&1")
    lines = [f"# skyflow schedule {record.name}: pipeline {record.pipeline}",
             f"# runs {settings.python} -m skyflow with SKYFLOW_HOME={home} (cron's PATH has no virtualenv); "
             f"output goes to {log}",
             *_notes(warnings),
             f"CRON_TZ={record.timezone}",
             # In a crontab line an unescaped % ends the command.
             f"{record.cron} {command.replace('%', chr(92) + '%')}"]
    return "\n".join(lines) + "\n", warnings


def k8s_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (cleaned or "pipeline")[:52].rstrip("-")  # CronJob names leave 11 characters for the Job suffix


def to_k8s_cronjob(record: ScheduleRecord, pipeline_arg: str, settings: ExportSettings) -> tuple[str, list[str]]:
    import yaml

    if not settings.image:
        raise SchedulerError("k8s-cronjob needs --image IMAGE: an image with this checkout's skyflow-llmops "
                             "installed from its source tree (`python -m skyflow`) and the pipeline's repository at "
                             "its working directory")
    warnings = _common_warnings(record, "a CronJob")
    if record.concurrency == "forbid":
        warnings.append("concurrency: forbid is exported as concurrencyPolicy: Forbid: the controller skips a tick "
                        "that falls while the Job runs, where `skyflow scheduler` would start it when the run ends")
    elif record.concurrency == "allow":
        warnings.append("concurrency: allow: overlapping Jobs share one ReadWriteOnce volume, so a Job placed on "
                        "another node waits for it; use a ReadWriteMany claim (--pvc) for true overlap")
    name = k8s_name(record.name)
    claim = settings.pvc or f"{name}-home"
    labels = {"app.kubernetes.io/managed-by": "skyflow", "skyflow/pipeline": k8s_name(record.pipeline)}
    spec: dict[str, object] = {"schedule": record.cron, "timeZone": record.timezone,
                               "concurrencyPolicy": record.concurrency.capitalize(),
                               "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3}
    if record.catchup == "none":
        spec["startingDeadlineSeconds"] = 300  # a tick later than this is dropped, as with catchup: none
    elif record.catchup == "all":
        warnings.append("catchup: all has no CronJob form; the controller starts only the newest missed tick")
    pipeline = _in_repo(record, settings.repo_root) if settings.repo_root else pipeline_arg
    command = _run_args(record, "python", pipeline, machine_goes_away=True)
    container = {"name": "skyflow", "image": settings.image, "command": command,
                 "env": [{"name": "SKYFLOW_HOME", "value": K8S_HOME}],
                 "volumeMounts": [{"name": "skyflow-home", "mountPath": K8S_HOME}]}
    spec["jobTemplate"] = {"spec": {"backoffLimit": 0, "template": {
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [container],
                 "volumes": [{"name": "skyflow-home", "persistentVolumeClaim": {"claimName": claim}}]}}}}
    documents: list[dict[str, object]] = []
    if settings.pvc is None:
        documents.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                          "metadata": {"name": claim, "labels": labels},
                          "spec": {"accessModes": ["ReadWriteOnce"],
                                   "resources": {"requests": {"storage": K8S_PVC_SIZE}}}})
    documents.append({"apiVersion": "batch/v1", "kind": "CronJob",
                      "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "skyflow"}},
                      "spec": spec})
    made = f" (made below: {K8S_PVC_SIZE}, the default storage class)" if settings.pvc is None else ""
    header = [f"# skyflow schedule {record.name}: pipeline {record.pipeline}, as a Kubernetes CronJob",
              f"# the image {settings.image} must have skyflow installed and hold the pipeline's repository at its "
              f"working directory: each Job runs `python -m skyflow run {pipeline}` there",
              f"# SKYFLOW_HOME={K8S_HOME} (runs, cache, lineage) is the PersistentVolumeClaim {claim}{made}, "
              "so it outlives each Job",
              *_notes(warnings)]
    return "\n".join(header) + "\n" + yaml.safe_dump_all(documents, sort_keys=False), warnings


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


def check_install(install: str) -> str:
    """A pip requirement for this checkout's skyflow: a path or a direct reference, never a name an index resolves."""
    if _INDEX_NAME.fullmatch(install) and not install.strip().endswith(_ARCHIVES):
        raise SchedulerError(f"--install {install!r} is a project name pip would look up on a package index, which "
                             "holds other code than this checkout; give a path in the checkout (e.g. '.[s3]') or a "
                             "direct reference ('skyflow-llmops @ git+https://...')")
    return install


def to_github_actions(record: ScheduleRecord, settings: ExportSettings) -> tuple[str, list[str]]:
    import yaml

    if settings.repo_root is None or settings.install is None:
        raise SchedulerError("github-actions needs the repository root and what to pip-install: pass --repo-root "
                             "DIR and --install REQUIREMENT")
    warnings = _common_warnings(record, "GitHub Actions")
    assert record.cron is not None
    crons = utc_crons(record.cron, record.timezone)
    if record.catchup == "all":
        warnings.append("catchup: all has no GitHub Actions form; missed ticks are not run")
    elif record.catchup == "none":
        warnings.append("catchup: none has no GitHub Actions form; a scheduled run that GitHub starts late "
                        "(it may, under load) still runs")
    pipeline = _in_repo(record, settings.repo_root)
    install = check_install(settings.install)
    cache_key = f"skyflow-home-{_file_stem(record.name)}-"
    steps: list[dict[str, object]] = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
        {"name": "install skyflow from the checkout", "run": f"python -m pip install {shlex.quote(install)}"},
        {"name": "restore SKYFLOW_HOME (runs, cache, lineage) of earlier runs", "uses": "actions/cache@v4",
         "with": {"path": GITHUB_HOME, "key": cache_key + "${{ github.run_id }}-${{ github.run_attempt }}",
                  "restore-keys": cache_key}},
    ]
    command = shlex.join(_run_args(record, "python", pipeline, machine_goes_away=True)) + f" --run-id {GITHUB_RUN_ID}"
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
        "permissions": {"contents": "read"},
    }
    if record.concurrency != "allow":
        # One running and one pending run per group, as forbid (with catchup latest) and replace ask.
        workflow["concurrency"] = {"group": f"skyflow-{record.name}",
                                   "cancel-in-progress": record.concurrency == "replace"}
    workflow["jobs"] = {"run": {"runs-on": "ubuntu-latest", "steps": steps}}
    header = [f"# skyflow schedule {record.name}: pipeline {record.pipeline}, as a GitHub Actions workflow "
              "(put it under .github/workflows/)",
              f"# installs skyflow with `pip install {shlex.quote(install)}` from the repository root and runs "
              f"`python -m skyflow run {pipeline}` there",
              f"# SKYFLOW_HOME ({GITHUB_HOME}: runs, local cache, lineage) moves from run to run through actions/cache",
              *_notes(warnings)]
    return "\n".join(header) + "\n" + yaml.safe_dump(workflow, sort_keys=False, width=1000), warnings


def to_airflow(record: ScheduleRecord, settings: ExportSettings) -> tuple[str, list[str]]:
    warnings = _common_warnings(record, "Airflow")
    if record.concurrency == "replace":
        warnings.append("concurrency: replace has no Airflow form; exported as max_active_runs=1 (a run that falls "
                        "due while one is active waits for it)")
    if record.catchup == "none":
        warnings.append("catchup: none is exported as catchup=False (Airflow still runs the newest interval)")
    path, _ = _split_target(record.target)
    # BashOperator runs in a temporary directory: every path is absolute, and the pipeline's folder is the cwd.
    fixed = (f"cd {shlex.quote(str(Path(path).parent))} && SKYFLOW_HOME={shlex.quote(settings.home)} "
             + shlex.join(_run_args(record, settings.python, record.target, machine_goes_away=True)))
    if any(mark in fixed for mark in ("{{", "{%", "{#")):
        fixed = "{% raw %}" + fixed + "{% endraw %}"  # params are text, not Jinja
    # Airflow's run id (manual__2025-...+00:00) made a skyflow run id; a retry is a new skyflow run.
    run_id = '"airflow-$(printf %s \'{{ run_id }}\' | tr -c \'A-Za-z0-9._-\' _)-{{ ti.try_number }}"'
    command = f"{fixed} --run-id {run_id}"
    start = datetime.now(UTC)
    notes = "\n".join(_notes(warnings))
    text = f'''"""Airflow DAG: the skyflow pipeline {record.pipeline} on {record.cron!r} in {record.timezone}."""

# The worker needs {settings.python} (with skyflow installed) and {path};
# runs keep their state in SKYFLOW_HOME={settings.home}.
{notes}
import pendulum

try:
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
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


def find_repo_root(path: str) -> str | None:
    """The nearest folder above ``path`` holding a .git entry: the checkout a workflow or image holds."""
    for folder in Path(path).resolve().parents:
        if (folder / ".git").exists():
            return str(folder)
    return None


def checkout_install(repo_root: str) -> str:
    """skyflow as a workflow installs it: from its own source tree, when that lies in the repository."""
    source = Path(__file__).resolve().parents[2]
    extras = "s3,gcs,azure"  # lineage's sqlite store comes with the core install
    try:
        relative = source.relative_to(Path(repo_root).resolve())
    except ValueError:
        relative = None
    if relative is None or not (source / "pyproject.toml").is_file():
        raise SchedulerError(f"skyflow is not installed from a checkout inside {repo_root}; pass --install with a "
                             "pip requirement the workflow can install (e.g. 'skyflow-llmops @ git+https://...')")
    return f"./{relative.as_posix()}[{extras}]" if relative.parts else f".[{extras}]"
