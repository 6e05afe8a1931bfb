"""Faults injected into real runs: a stage killed from outside, the S3 server stopped mid-upload,
a full disk under the store, the MLflow server down. Nothing committed may be lost or half-visible."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, open_store, verify_artifact
from skyflow.artifacts.commit import commit_output, read_manifest
from skyflow.artifacts.manifest import build_manifest, digest_bytes, hash_file, list_local_files
from skyflow.artifacts.refs import BLOBS, MANIFESTS, blob_key
from skyflow.errors import ArtifactError
from tests.integration.conftest import free_port, serve, stop_group
from tests.integration.lineage.conftest import MlflowServer
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def stage_row(home: Path, run_id: str | None, stage: str) -> dict[str, object] | None:
    """The stage's row in the state DB (of the only run when ``run_id`` is None)."""
    path = home / "state.db"
    if not path.exists():
        return None
    where, args = ("stage = ?", [stage]) if run_id is None else ("run_id = ? AND stage = ?", [run_id, stage])
    try:
        with sqlite3.connect(path, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute(f"SELECT * FROM stages WHERE {where}", args).fetchone()
    except sqlite3.OperationalError:  # the runner has made the file but not its tables yet
        return None
    return dict(row) if row else None


# -- (a) a stage killed from outside ---------------------------------------------------------------

# The stage writes its pid, then waits; a second attempt finds the marker of the first and finishes.
VICTIM = """\
name: victim
stages:
  victim:
    resources: {{use_spot: true{recovery}}}
    run: |
      echo $$ > {pidfile}.$SKYFLOW_RUN_ID
      if [ -f {marker} ]; then echo second > $SKYFLOW_OUTPUT_O/o; exit 0; fi
      touch {marker}
      sleep 60
    outputs: [o]
"""


@pytest.mark.parametrize("recovery", [True, False], ids=["job_recovery", "no_recovery"])
def test_a_stage_killed_by_another_process_recovers_only_with_job_recovery(skyflow: Skyflow, tmp_path: Path,
                                                                          recovery: bool) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "started"
    skyflow.write("victim.yaml", VICTIM.format(
        pidfile=pidfile, marker=marker,
        recovery=", job_recovery: {strategy: FAILOVER, max_restarts_on_errors: 0}" if recovery else ""))
    runner = skyflow.start("run", "victim.yaml", "--no-lineage", "--infra", "local", "--json",
                           "--run-id", "victim-1")

    def first_attempt_running() -> bool:
        row = stage_row(skyflow.home, "victim-1", "victim")
        return bool(row and json.loads(str(row["process_groups"] or "[]"))) and marker.exists()

    wait_for(first_attempt_running, 60, "the stage's first attempt")
    row = stage_row(skyflow.home, "victim-1", "victim")
    assert row is not None
    (group,) = json.loads(str(row["process_groups"]))
    # The state DB and the stage agree on the process: the stage's own pid leads that group.
    wait_for(lambda: Path(f"{pidfile}.victim-1").exists(), 10, "the stage's pid file")
    assert os.getpgid(int(Path(f"{pidfile}.victim-1").read_text())) == group
    os.killpg(group, signal.SIGKILL)  # as a reclaimed spot VM: no warning, the whole group

    out, err = runner.communicate(timeout=60)
    status = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    stage = status["stages"]["victim"]
    if recovery:
        assert runner.returncode == 0, err
        assert stage["state"] == "succeeded" and stage["attempts"] == 2
    else:
        assert runner.returncode == 1
        assert stage["state"] == "failed" and stage["attempts"] == 1
        row = stage_row(skyflow.home, "victim-1", "victim")
        assert row is not None and "killed by SIGKILL" in str(row["message"])
    with sqlite3.connect(skyflow.home / "state.db") as conn:
        attempts = conn.execute("SELECT attempt, exit_code, reason FROM attempts WHERE run_id = 'victim-1' "
                                "ORDER BY attempt").fetchall()
        outputs = conn.execute("SELECT count(*) FROM outputs WHERE run_id = 'victim-1'").fetchone()[0]
    assert attempts[0][1:] == (-9, "killed by SIGKILL")
    assert len(attempts) == (2 if recovery else 1)
    assert outputs == (1 if recovery else 0)
    assert live_members(group) == []  # nothing of the killed attempt is left running


def live_members(group: int) -> list[int]:
    """Pids in process group ``group`` that are not zombies (an orphaned zombie waits for init)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


# -- (b) the S3 server stopped mid-upload ----------------------------------------------------------

BIG_FILES, BIG_FILE_BYTES = 400, 64 << 10  # 25 MiB in 400 blobs: the upload takes long enough to cut
STOP_AFTER_BLOBS = 20
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def big_output(root: Path) -> Path:
    out = root / "big"
    out.mkdir()
    for i in range(BIG_FILES):
        (out / f"part-{i:03d}.bin").write_bytes(os.urandom(BIG_FILE_BYTES))
    return out


def moto_s3(port: int) -> tuple[list[str], dict[str, Any]]:
    moto = str(Path(sys.executable).parent / "moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    # Fewer retries than skyflow's default (5), so the test waits seconds, not half a minute.
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
               "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5}}
    return [moto, "-H", "127.0.0.1", "-p", str(port)], options


def test_a_failing_store_stops_the_commit_at_the_first_failure(tmp_path: Path) -> None:
    """One file that cannot be written fails the commit without trying the rest: against a store that
    is down, every further file would wait out its own retries first."""
    source = tmp_path / "out"
    source.mkdir()
    for i in range(7):  # fewer than a listing needs: each file is looked up, then written
        (source / f"f{i:03d}").write_bytes(os.urandom(64))
    store = open_store(str(tmp_path / "store"), workers=1)
    first = list_local_files(source)[0][1]
    blocked = Path(store.root) / blob_key(hash_file(first)[0])
    blocked.parent.parent.mkdir(parents=True)
    blocked.parent.write_bytes(b"")  # a file where the blob's folder must go: writing it fails
    with pytest.raises(ArtifactError, match="failed: NotADirectoryError") as caught:
        commit_output(store, source, name="many")
    assert caught.value.artifact == "many"
    written = [p for p in Path(store.root, BLOBS).rglob("*") if p.is_file() and p != blocked.parent]
    assert len(written) <= 1, f"{len(written)} files were uploaded after the first one failed"
    assert not Path(store.root, MANIFESTS).exists()


def test_s3_server_stopped_mid_upload_fails_clearly_and_leaves_no_manifest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import boto3

    source = big_output(tmp_path)
    manifest, _ = build_manifest(source)
    port = free_port()
    cmd, options = moto_s3(port)
    caplog.set_level("DEBUG", logger="botocore.retries.standard")
    with serve(cmd, port) as proc:
        access_log = Path(os.readlink(f"/proc/{proc.pid}/fd/1"))  # the server's own record of requests
        store = open_store("s3://faults/root", options, create=True)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="t",
                              aws_secret_access_key="t", region_name="us-east-1")
        seen: list[str] = []

        def stop_mid_upload() -> None:
            while proc.poll() is None:
                listed = client.list_objects_v2(Bucket="faults", Prefix="root/").get("Contents", [])
                if len(listed) >= STOP_AFTER_BLOBS:
                    seen.extend(o["Key"] for o in listed)
                    stop_group(proc)
                    return

        watcher = threading.Thread(target=stop_mid_upload, daemon=True)
        watcher.start()
        with pytest.raises(ArtifactError) as caught:
            commit_output(store, source, name="big")
        watcher.join(timeout=30)
        requests = [m.groupdict() for m in ACCESS_LINE.finditer(access_log.read_text(errors="replace"))]

    error = caught.value
    assert seen, "the server was not stopped during the upload"
    assert error.artifact == "big" and str(error.uri).startswith("s3://faults/root/blobs/")
    assert "the store cannot be reached" in error.message and "EndpointConnectionError" in error.message, \
        error.message  # whole: the failure's wording depends on where the upload was cut
    assert str(error).startswith(f"artifact 'big' at {error.uri}: ")
    delays = [float(r.getMessage().rsplit(":", 1)[1]) for r in caplog.records
              if "retrying request after delay" in r.getMessage()]
    assert delays, "the library did not retry"
    # What the server stored before it stopped (moto keeps objects in memory, so they went with it):
    # blobs only. The manifest was never sent, so no reader could have taken the artifact as whole.
    stored = [r["path"] for r in requests if r["method"] == "PUT" and r["status"] == "200"
              and r["path"] != "/faults"]  # the bucket's creation
    assert len(stored) >= STOP_AFTER_BLOBS
    assert all(p.startswith("/faults/root/blobs/sha256/") for p in stored), stored
    assert not [r for r in requests if "/manifests/" in r["path"] or "/cache/" in r["path"]]
    assert all(key.startswith("root/blobs/") for key in seen)

    # The server returns (empty, as moto starts) holding exactly what the first one had stored: the
    # leftover blobs are not an artifact, and a new commit finishes it, uploading only what is missing.
    with serve(cmd, port):
        second = open_store("s3://faults/root", options, create=True)
        stored_keys = {p.removeprefix("/faults/root/") for p in stored}
        for entry in manifest.files:
            if blob_key(entry.digest) in stored_keys:
                second.write_bytes(blob_key(entry.digest), (source / entry.path).read_bytes())
        with pytest.raises(ArtifactError, match="artifact not found"):
            read_manifest(second, manifest.digest, name="big")
        ref = commit_output(second, source, name="big")
        assert ref.digest == manifest.digest and verify_artifact(ref, deep=True)
        assert len(second.list_keys(f"{MANIFESTS}/")) == 1
        assert len(second.list_keys(f"{BLOBS}/")) == BIG_FILES


# -- (c) a full disk under the store ---------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


FILLS_DISK = """\
name: filler
stores: {{local: {{uri: {store}}}}}
stages:
  make:
    run: |
      for i in 1 2 3 4; do head -c 262144 /dev/urandom > $SKYFLOW_OUTPUT_DATA/part-$i; done
    outputs: [data]
"""


def test_a_full_disk_fails_the_commit_cleanly_and_resume_completes_after_space_is_freed(
        skyflow: Skyflow, small_disk: Path) -> None:
    store_dir = small_disk / "store"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 << 10))  # 0.5 MiB left; the stage's output is 1 MiB
    skyflow.write("filler.yaml", FILLS_DISK.format(store=store_dir))
    code, status, err = skyflow.run_json("filler.yaml", "--no-lineage", "--run-id", "full-1")
    assert code == 1 and status["state"] == "failed", err
    assert status["stages"]["make"]["state"] == "failed" and status["stages"]["make"]["outputs"] == {}
    row = stage_row(skyflow.home, "full-1", "make")
    assert row is not None
    message = str(row["message"])
    assert message.startswith(f"artifact 'data' at {store_dir}/") and "no space left on the device" in message
    # Nothing half-written is visible: no manifest, no temp file left, and each blob that did land is whole.
    assert not (store_dir / MANIFESTS).exists()
    assert list((store_dir / "tmp").glob("*")) == []
    for blob in (store_dir / BLOBS).rglob("*"):
        if blob.is_file():
            assert digest_bytes(blob.read_bytes()) == f"sha256:{blob.name}"

    filler.unlink()
    resumed = skyflow("resume", "full-1", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    output = skyflow.status("full-1")["stages"]["make"]["outputs"]["data"]
    assert verify_artifact(ArtifactRef(name="data", uri=output["uri"], digest=output["digest"],
                                       size_bytes=output["size_bytes"], file_count=0,
                                       store=open_store(str(store_dir))), deep=True)
    assert output["size_bytes"] == 4 * 262144


# -- (d) the MLflow server down during a run -------------------------------------------------------

# b waits until the test has stopped the server, so b, c and the run's end happen while it is down.
CHAIN = """\
name: {name}
stages:
  a: {{run: 'echo a > $SKYFLOW_OUTPUT_O/o', outputs: [o]}}
  b:
    inputs: {{i: a.o}}
    run: |
      for i in $(seq 600); do [ -f {go} ] && break; sleep 0.1; done
      cat $SKYFLOW_INPUT_I/o > $SKYFLOW_OUTPUT_O/o; echo b >> $SKYFLOW_OUTPUT_O/o
    outputs: [o]
  c: {{inputs: {{i: b.o}}, run: 'cat $SKYFLOW_INPUT_I/o > $SKYFLOW_OUTPUT_O/o', outputs: [o]}}
"""


def child_runs(tracking_uri: str, experiment: str, run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs([found.experiment_id], f"tags.`skyflow.run_id` = '{run_id}'")
    return {str(r.data.tags.get("skyflow.kind")) + ":" + str(r.info.run_name): r.info.status for r in runs}


@pytest.mark.xdist_group("reliability")
def test_mlflow_down_during_a_run_loses_no_lineage(skyflow: Skyflow, tmp_path: Path) -> None:
    server_root = tmp_path / "mlflow"
    server_root.mkdir()
    server = MlflowServer(server_root)
    server.start()
    try:
        env = {"MLFLOW_TRACKING_URI": server.uri}
        go = tmp_path / "go"
        skyflow.write("chain.yaml", CHAIN.format(name="chain", go=go))
        runner = skyflow.start("run", "chain.yaml", "--run-id", "down-1", "--json", "--infra", "local", env=env)
        wait_for(lambda: (stage_row(skyflow.home, "down-1", "b") or {}).get("state") == "running", 60,
                 "stage b to start")
        server.stop()
        go.touch()
        # A guard against a hang, not a speed check: on a loaded two-core machine this run once took
        # over 120 s (normally about 30 s) while the other test worker was busy.
        out, err = runner.communicate(timeout=300)
        assert runner.returncode == 0, out + err  # the run goes on without its lineage store
        status = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        assert {s["state"] for s in status["stages"].values()} == {"succeeded"}
        spooled = [p for p in (skyflow.home / "lineage-spool").rglob("*.jsonl") if p.stat().st_size > 0]
        assert spooled, "nothing was kept for the server's return"

        # The server returns; the next run on this SKYFLOW_HOME sends what the first one kept.
        server.start()
        skyflow.write("later.yaml", "name: later\nstages:\n  only: {run: 'true'}\n")
        later = skyflow("run", "later.yaml", "--run-id", "later-1", "--infra", "local", env=env)
        assert later.returncode == 0, later.stdout + later.stderr
        assert child_runs(server.uri, "chain", "down-1") == {
            "pipeline_run:down-1": "FINISHED", "stage_run:a": "FINISHED", "stage_run:b": "FINISHED",
            "stage_run:c": "FINISHED"}
        assert child_runs(server.uri, "later", "later-1") == {
            "pipeline_run:later-1": "FINISHED", "stage_run:only": "FINISHED"}
        left = [p for p in (skyflow.home / "lineage-spool").rglob("*.jsonl") if p.stat().st_size > 0]
        assert left == []
    finally:
        server.stop()
