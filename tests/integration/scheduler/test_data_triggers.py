"""Data-change triggers on local files and a real S3 server (moto); the triggered run reuses the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from skyflow.scheduler import Scheduler, add_schedule, schedule_from_pipeline
from tests.integration.conftest import StoreServer
from tests.integration.scheduler.conftest import FakeClock, Home, fields

TWO_INPUTS = """\
name: two
inputs: {a: {uri: ./data/a}, b: {uri: B_URI}}
stages:
  sa: {run: 'cat $SKYFLOW_INPUT_A/x.txt > $SKYFLOW_OUTPUT_O/x', inputs: {a: a}, outputs: [o]}
  sb: {run: 'cat $SKYFLOW_INPUT_B/x.txt > $SKYFLOW_OUTPUT_O/x', inputs: {b: b}, outputs: [o]}
  join: {run: 'cat $SKYFLOW_INPUT_L/x $SKYFLOW_INPUT_R/x > $SKYFLOW_OUTPUT_O/x', inputs: {l: sa.o, r: sb.o},
         outputs: [o]}
schedule: {on_change: [b]}
"""


def _setup(home: Home, b_uri: str) -> tuple[Scheduler, FakeClock]:
    home.write("data/a/x.txt", "a1\n")
    path = home.write("two.yaml", TWO_INPUTS.replace("B_URI", b_uri))
    subprocess.run([sys.executable, "-m", "skyflow", "run", str(path), "--no-lineage", "--run-id", "first"],
                   check=True, capture_output=True, cwd=home.work)
    clock = FakeClock(1_750_000_000.0)
    add_schedule(home.store, schedule_from_pipeline(str(path), run_args=("--no-lineage",)), clock.now)
    return Scheduler(home.store, home.launcher, clock=clock, poll_s=10), clock


def _check_change_fires_once_and_reruns_only_downstream(home: Home, scheduler: Scheduler, clock: FakeClock,
                                                        rewrite_same: object, change: object) -> None:
    report = scheduler.tick()
    assert report.started == [] and report.content_reads == []  # the baseline was taken at add time
    rewrite_same()  # type: ignore[operator]
    clock.advance(10)
    report = scheduler.tick()
    assert report.started == []
    change()  # type: ignore[operator]
    clock.advance(5)
    assert scheduler.tick().started == []  # polled no sooner than poll_s
    clock.advance(5)
    report = scheduler.tick()
    assert [s.reason.split(" (")[0] for s in report.started] == ["change: b changed"]
    run_id = fields(report)[0]
    assert home.wait_runs()[run_id] == "succeeded"
    assert home.stages(run_id) == {"sa": "cached", "sb": "succeeded", "join": "succeeded"}
    clock.advance(10)
    report = scheduler.tick()
    assert report.started == [] and report.content_reads == []


def test_local_file_change_triggers_a_run_of_what_depends_on_it(home: Home) -> None:
    home.write("data/b/x.txt", "b1\n")
    scheduler, clock = _setup(home, "./data/b")
    target = home.work / "data/b/x.txt"

    def touch() -> None:
        os.utime(target, (time.time() + 5, time.time() + 5))

    _check_change_fires_once_and_reruns_only_downstream(home, scheduler, clock, touch,
                                                        lambda: target.write_text("b2\n"))


def test_s3_object_change_triggers_a_run(home: Home, s3_server: StoreServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for key, value in {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_uri().split("/")[2]
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="b/x.txt", Body=b"b1\n")
    scheduler, clock = _setup(home, f"s3://{bucket}/b")
    _check_change_fires_once_and_reruns_only_downstream(
        home, scheduler, clock, lambda: s3.put_object(Bucket=bucket, Key="b/x.txt", Body=b"b1\n"),
        lambda: s3.put_object(Bucket=bucket, Key="b/x.txt", Body=b"b2\n"))


def test_cli_and_sigterm_stop_of_the_real_scheduler(home: Home) -> None:
    path = home.write("hourly.yaml", "name: hourly\nstages: {say: {run: 'true'}}\n")

    def skyflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skyflow", *args], capture_output=True, text=True,
                              cwd=home.work, timeout=120)

    added = skyflow("schedule", "add", str(path), "--cron", "0 3 * * 1", "--timezone", "Europe/Berlin",
                    "--no-lineage")
    assert added.returncode == 0, added.stderr
    assert "next run" in added.stdout and "+0" in added.stdout
    assert skyflow("schedule", "pause", "hourly").returncode == 0
    assert '"paused": true' in skyflow("schedule", "list", "--json").stdout
    missing = skyflow("schedule", "pause", "hourlyy")
    assert missing.returncode == 2 and "Did you mean hourly?" in missing.stderr
    assert skyflow("schedule", "resume", "hourly").returncode == 0
    triggered = skyflow("schedule", "trigger", "hourly")
    assert triggered.returncode == 0 and "hourly-manual-" in triggered.stdout

    proc = subprocess.Popen([sys.executable, "-m", "skyflow", "scheduler", "--interval", "0.2"], cwd=home.work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        # It follows the manual run to its end, then idles; SIGTERM must stop it cleanly.
        while not any("schedule hourly: run hourly-manual-" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "scheduler exited early:\n" + "".join(lines)
            lines.append(line)
        assert home.store.lease() is not None
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "received SIGTERM; stopping" in rest and "scheduler stopped" in rest
    assert any("holding the scheduler lease" in line for line in lines)
    assert home.store.lease() is None
    assert skyflow("schedule", "remove", "hourly").returncode == 0
    assert home.store.schedules() == []
