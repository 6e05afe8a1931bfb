"""`skyflow run` end to end on the local backend, as a user runs it: real processes, real state."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from skyflow.artifacts import ArtifactRef, fetch_artifact, load_manifest, open_store
from skyflow.artifacts.refs import blob_key
from skyflow.lineage.drain import wait_for_drain
from skyflow.processes import process_alive
from tests.integration.runner.conftest import Skyflow, signal_another_thread, wait_for

CHAIN = """\
name: chain
params: {greeting: hello}
inputs: {raw: {uri: ./data}}
stages:
  prep:
    run: |
      cat $SKYFLOW_INPUT_RAW/words.txt | tr a-z A-Z > $SKYFLOW_OUTPUT_CLEAN/words.txt
      echo "${params.greeting}" >> $SKYFLOW_OUTPUT_CLEAN/words.txt
    inputs: {raw: raw}
    outputs: [clean]
  train:
    run: |
      wc -l < $SKYFLOW_INPUT_DATA/words.txt > $SKYFLOW_OUTPUT_MODEL/lines.txt
      env | grep -E '^(SKYFLOW|SKYPILOT)_' | sort > $SKYFLOW_OUTPUT_MODEL/env.txt
    inputs: {data: prep.clean}
    outputs: [model]
  report:
    run: cat $SKYFLOW_INPUT_MODEL/lines.txt > $SKYFLOW_OUTPUT_REPORT/report.txt
    inputs: {model: train.model}
    outputs: [report]
"""


def _chain(skyflow: Skyflow) -> Path:
    skyflow.write("data/words.txt", "alpha\nbeta\n")
    return skyflow.write("chain.yaml", CHAIN)


def _ref(skyflow: Skyflow, output: dict[str, object]) -> ArtifactRef:
    store = open_store(str(skyflow.home / "artifacts"))
    return ArtifactRef(name="o", uri=str(output["uri"]), digest=str(output["digest"]),
                       size_bytes=int(output["size_bytes"]), file_count=0, store=store)  # type: ignore[call-overload]


def _read(skyflow: Skyflow, output: dict[str, object], name: str, tmp: Path) -> str:
    return (fetch_artifact(_ref(skyflow, output), tmp / str(output["digest"])[7:19]) / name).read_text()


def _blob(skyflow: Skyflow, output: dict[str, object]) -> Path:
    ref = _ref(skyflow, output)
    return Path(ref.store.url(blob_key(load_manifest(ref).files[0].digest)))


def test_run_prints_the_documented_json_and_commits_outputs(skyflow: Skyflow) -> None:
    _chain(skyflow)
    code, status, _ = skyflow.run_json("chain.yaml", "--run-id", "ci-abc123", "--no-lineage")
    assert code == 0
    assert set(status) == {"run_id", "pipeline", "state", "stages"}
    assert (status["run_id"], status["pipeline"], status["state"]) == ("ci-abc123", "chain", "succeeded")
    for row in status["stages"].values():
        assert set(row) == {"state", "attempts", "infra", "cost_usd", "outputs"}
        assert (row["state"], row["attempts"], row["infra"], row["cost_usd"]) == ("succeeded", 1, "local", 0.0)
    report = status["stages"]["report"]["outputs"]["report"]
    assert report["digest"].startswith("sha256:") and report["size_bytes"] == 2
    assert _read(skyflow, report, "report.txt", skyflow.home).strip() == "3"
    assert skyflow.status("ci-abc123") == status


def test_stage_environment_has_skyflow_and_skypilot_variables(skyflow: Skyflow) -> None:
    _chain(skyflow)
    _, status, _ = skyflow.run_json("chain.yaml", "--run-id", "env-run", "--no-lineage")
    text = _read(skyflow, status["stages"]["train"]["outputs"]["model"], "env.txt", skyflow.home)
    env = dict(line.split("=", 1) for line in text.splitlines())
    assert env["SKYFLOW_RUN_ID"] == "env-run" and env["SKYFLOW_STAGE"] == "train"
    assert Path(env["SKYFLOW_INPUT_DATA"]).name == "data" and env["SKYFLOW_OUTPUT_MODEL"].endswith("outputs/model")
    assert env["SKYFLOW_PARAM_GREETING"] == "hello"
    assert (env["SKYPILOT_NUM_NODES"], env["SKYPILOT_NODE_RANK"], env["SKYPILOT_HEAD_IP"]) == ("1", "0", "127.0.0.1")
    assert env["SKYPILOT_TASK_ID"] == "skyflow-env-run-train" and env["SKYPILOT_NUM_GPUS_PER_NODE"] == "0"


def test_unchanged_rerun_is_all_verified_cache_hits_and_a_deleted_blob_is_not_trusted(skyflow: Skyflow) -> None:
    _chain(skyflow)
    _, first, _ = skyflow.run_json("chain.yaml", "--no-lineage")
    _, second, _ = skyflow.run_json("chain.yaml", "--no-lineage")
    assert {s["state"] for s in second["stages"].values()} == {"cached"}
    assert second["stages"]["report"]["outputs"] == first["stages"]["report"]["outputs"]
    _blob(skyflow, first["stages"]["train"]["outputs"]["model"]).unlink()
    _, third, _ = skyflow.run_json("chain.yaml", "--no-lineage")
    assert third["stages"]["prep"]["state"] == "cached"
    assert third["stages"]["train"]["state"] == "succeeded"  # its cache entry points at a deleted blob
    _, fourth, _ = skyflow.run_json("chain.yaml", "--no-lineage", "--no-cache")
    assert {s["state"] for s in fourth["stages"].values()} == {"succeeded"}


def test_changed_input_reruns_only_what_depends_on_it(skyflow: Skyflow) -> None:
    _chain(skyflow)
    skyflow.write("side.yaml", CHAIN.replace("stages:\n", "stages:\n  side: {run: 'echo x > $SKYFLOW_OUTPUT_O/o', "
                                                         "outputs: [o]}\n"))
    skyflow.run_json("side.yaml", "--no-lineage")
    skyflow.write("data/words.txt", "alpha\nbeta\ngamma\n")
    _, status, _ = skyflow.run_json("side.yaml", "--no-lineage")
    states = {n: s["state"] for n, s in status["stages"].items()}
    assert states == {"side": "cached", "prep": "succeeded", "train": "succeeded", "report": "succeeded"}


def test_failure_stops_dependents_while_independent_branches_finish(skyflow: Skyflow) -> None:
    skyflow.write("fail.yaml", """\
name: fail
stages:
  broken: {run: 'echo about to fail; exit 7', outputs: [o], retries: 1}
  after: {run: 'true', inputs: {i: broken.o}}
  later: {run: 'true', depends_on: [after]}
  independent: {run: 'sleep 0.5; echo ok > $SKYFLOW_OUTPUT_O/o', outputs: [o]}
""")
    code, status, err = skyflow.run_json("fail.yaml", "--no-lineage")
    assert code == 1
    states = {n: (s["state"], s["attempts"]) for n, s in status["stages"].items()}
    assert states == {"broken": ("failed", 2), "after": ("skipped", 0), "later": ("skipped", 0),
                      "independent": ("succeeded", 1)}
    assert "skyflow resume" in err and status["state"] == "failed"
    logs = skyflow("logs", status["run_id"], "broken")
    assert logs.returncode == 1 and "about to fail" in logs.stdout  # the log of a failed stage, then exit 1


def test_preempted_stage_recovers_per_job_recovery_and_timeouts_fail(skyflow: Skyflow) -> None:
    skyflow.write("spot.yaml", """\
name: spot
stages:
  spot:
    resources: {use_spot: true, job_recovery: {strategy: FAILOVER, max_restarts_on_errors: 0}}
    run: |
      if [ ! -f preempted-once ]; then touch preempted-once; kill -9 $$; fi
      echo recovered > $SKYFLOW_OUTPUT_O/o
    outputs: [o]
  slow: {run: 'sleep 30', timeout: 1}
""")
    code, status, _ = skyflow.run_json("spot.yaml", "--no-lineage", "--infra", "local")  # force spot onto local
    assert status["stages"]["spot"]["state"] == "succeeded" and status["stages"]["spot"]["attempts"] == 2
    assert status["stages"]["slow"]["state"] == "failed" and code == 1
    with sqlite3.connect(skyflow.home / "state.db") as conn:
        (message,) = conn.execute("SELECT message FROM stages WHERE stage='slow'").fetchone()
    assert "timed out after 1 s" in message


def test_multi_node_stage_runs_one_process_per_rank(skyflow: Skyflow) -> None:
    skyflow.write("nodes.yaml", """\
name: nodes
stages:
  dist:
    num_nodes: 3
    run: echo "rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES head=$SKYPILOT_HEAD_IP"
""")
    code, status, _ = skyflow.run_json("nodes.yaml", "--no-lineage")
    assert code == 0
    log = skyflow("logs", status["run_id"], "dist", check=True).stdout
    assert sorted(line.split(") ", 1)[1] for line in log.splitlines()) == [
        f"rank={r} of 3 head=127.0.0.1" for r in range(3)]


def test_secrets_are_masked_in_logs_and_never_stored(skyflow: Skyflow) -> None:
    secret = "tok-8c1f5e0d-SECRET"
    skyflow.write("secret.yaml", """\
name: secret
secrets: [HF_TOKEN]
stages:
  leak: {run: 'echo "token is $HF_TOKEN"; echo $HF_TOKEN > $SKYFLOW_OUTPUT_O/o', outputs: [o]}
""")
    code, status, _ = skyflow.run_json("secret.yaml", env={"HF_TOKEN": secret})
    assert code == 0
    log = skyflow("logs", status["run_id"], "leak", check=True).stdout
    assert "token is ********" in log and secret not in log
    uri = f"sqlite:///{(skyflow.home / 'mlflow.db').resolve()}"
    assert wait_for_drain(uri, skyflow.home)  # lineage a short run left to the background is in MLflow
    for path in [skyflow.home / "state.db", skyflow.home / "mlflow.db", *skyflow.home.glob("runs/**/*.log")]:
        assert secret.encode() not in path.read_bytes(), path


def test_resume_after_the_runner_is_killed_reuses_committed_stages(skyflow: Skyflow) -> None:
    slept = skyflow.workdir / "slept"
    skyflow.write("long.yaml", f"""\
name: long
stages:
  first: {{run: 'echo one > $SKYFLOW_OUTPUT_O/o', outputs: [o]}}
  second:
    run: |
      if [ ! -f {slept} ]; then touch {slept}; sleep 60; fi
      cat $SKYFLOW_INPUT_I/o > $SKYFLOW_OUTPUT_O/o
    inputs: {{i: first.o}}
    outputs: [o]
  third: {{run: 'cat $SKYFLOW_INPUT_I/o', inputs: {{i: second.o}}}}
""")
    runner = skyflow.start("run", "long.yaml", "--run-id", "killed", "--no-lineage")
    # killed while the second stage sleeps, its process recorded (a kill before that would leave the
    # resumed attempt to sleep the 60 s itself)
    wait_for(lambda: slept.exists() and _state(skyflow, "killed", "second") == "running"
             and _groups(skyflow, "killed", "second"), what="second stage to start sleeping")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    before = skyflow.status("killed")
    assert before["state"] == "running" and before["stages"]["first"]["state"] == "succeeded"
    result = skyflow("resume", "killed", "--json")
    after = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 0, result.stderr
    assert after["state"] == "succeeded"
    assert after["stages"]["first"]["attempts"] == 1  # committed before the kill: not rerun
    assert after["stages"]["first"]["outputs"] == before["stages"]["first"]["outputs"]
    assert after["stages"]["second"]["state"] == "succeeded"


def _killed_before_recording(skyflow: Skyflow, run_id: str) -> int:
    """A run of one stage whose runner is SIGKILLed once the stage runs, with what it recorded of the stage's
    processes (groups, token) erased: what a runner killed between starting the stage and recording it
    leaves (the attempt's log path, recorded first). The first attempt's pid; a rerun of the stage exits 3
    while that process still runs."""
    pid_file, rerun = skyflow.workdir / "first.pid", skyflow.workdir / "rerun"
    skyflow.write("orphan.yaml", f"""\
name: orphan
stages:
  work:
    run: |
      if [ ! -f {pid_file} ]; then echo $$ > {pid_file}; exec sleep 120; fi
      first=$(cat {pid_file})
      if [ -e /proc/$first ] && [ "$(cut -d' ' -f3 /proc/$first/stat)" != Z ]; then
        echo "the first attempt still runs"; exit 3
      fi
      touch {rerun}
""")
    runner = skyflow.start("run", "orphan.yaml", "--run-id", run_id, "--no-lineage")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != ""
             and _groups(skyflow, run_id, "work"), what="the stage to start and be recorded")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    with sqlite3.connect(skyflow.home / "state.db") as conn:
        conn.execute("UPDATE stages SET process_groups='[]', group_starts='[]', remote_handle=NULL "
                     "WHERE run_id=? AND stage='work'", (run_id,))
    first = int(pid_file.read_text())
    assert process_alive(first)
    return first


def test_resume_ends_a_stage_its_runner_started_but_never_recorded(skyflow: Skyflow) -> None:
    """Resume finds and ends the unrecorded first attempt (by the token derived from its log path) before
    it runs the stage again: no second copy of the stage runs beside the first."""
    first = _killed_before_recording(skyflow, "unrecorded")
    result = skyflow("resume", "unrecorded", "--json")
    assert result.returncode == 0, result.stdout + result.stderr  # the rerun found the first attempt ended
    assert json.loads(result.stdout.splitlines()[-1])["state"] == "succeeded"
    assert (skyflow.workdir / "rerun").exists() and not process_alive(first)


def test_cancel_ends_a_stage_its_runner_started_but_never_recorded(skyflow: Skyflow) -> None:
    first = _killed_before_recording(skyflow, "unrecorded")
    result = skyflow("cancel", "unrecorded")
    assert result.returncode == 0, result.stdout + result.stderr
    assert skyflow.status("unrecorded")["state"] == "cancelled"
    assert not process_alive(first)


def _groups(skyflow: Skyflow, run_id: str, stage: str) -> bool:
    """Whether the runner has recorded the stage's process groups."""
    return bool(json.loads(_stage_column(skyflow, run_id, stage, "process_groups") or "[]"))


def _state(skyflow: Skyflow, run_id: str, stage: str) -> str | None:
    state: str | None = _stage_column(skyflow, run_id, stage, "state")
    return state


def _stage_column(skyflow: Skyflow, run_id: str, stage: str, column: str) -> Any:
    """One column of the stage's row in the state DB, or None while there is none (not opened when missing:
    connecting would create the file)."""
    db = skyflow.home / "state.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute(f"SELECT {column} FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone()
    except sqlite3.OperationalError:  # the runner is still creating its tables
        return None
    return row[0] if row else None


def test_cancel_stops_the_stage_processes_and_keeps_state(skyflow: Skyflow, tmp_path: Path) -> None:
    pidfile = tmp_path / "stage.pid"
    skyflow.write("cancel.yaml", f"name: c\nstages:\n  wait: {{run: 'echo $$ > {pidfile}; sleep 120'}}\n")
    runner = skyflow.start("run", "cancel.yaml", "--run-id", "to-cancel", "--no-lineage")
    wait_for(pidfile.exists, what="stage to start")
    result = skyflow("cancel", "to-cancel", check=True)
    assert "cancelled" in result.stdout
    runner.wait(timeout=30)
    assert runner.returncode == 1
    assert skyflow.status("to-cancel")["stages"]["wait"]["state"] == "cancelled"
    pid = int(pidfile.read_text())
    wait_for(lambda: not _alive(pid), timeout_s=10, what="stage process to exit")


def test_a_sigterm_that_lands_on_another_thread_of_the_runner_cancels_the_run(skyflow: Skyflow,
                                                                               tmp_path: Path) -> None:
    pidfile = tmp_path / "stage.pid"
    skyflow.write("cancel.yaml", f"name: c\nstages:\n  wait: {{run: 'echo $$ > {pidfile}; sleep 120'}}\n")
    runner = skyflow.start("run", "cancel.yaml", "--run-id", "elsewhere", "--no-lineage")
    try:
        wait_for(pidfile.exists, what="stage to start")
        signal_another_thread(runner.pid, signal.SIGTERM)
        runner.wait(timeout=60)  # the old loop slept until the stage's 120 s were up
        assert skyflow.status("elsewhere")["stages"]["wait"]["state"] == "cancelled"
    finally:
        runner.kill()
        runner.communicate(timeout=30)


def test_cancel_kills_a_runner_that_does_not_stop_and_the_stage_stays_cancelled(skyflow: Skyflow,
                                                                                 tmp_path: Path) -> None:
    """A runner that does not answer SIGTERM (stopped here; wedged or deaf in life) is killed before cancel
    ends its stages itself. Left alive, it saw its stage killed, recorded it failed after the cancel had
    recorded it cancelled, and closed the run as failed."""
    from skyflow.session import Session

    pidfile = tmp_path / "stage.pid"
    skyflow.write("stuck.yaml", f"name: s\nstages:\n  wait: {{run: 'echo $$ > {pidfile}; sleep 120'}}\n")
    runner = skyflow.start("run", "stuck.yaml", "--run-id", "stuck", "--no-lineage")
    try:
        wait_for(lambda: pidfile.exists() and _groups(skyflow, "stuck", "wait"), what="stage to start")
        runner.send_signal(signal.SIGSTOP)
        assert Session(home=skyflow.home).cancel("stuck", timeout_s=0.5) == "cancelled"
        runner.send_signal(signal.SIGCONT)  # a runner that was only slow would go on from here
        runner.wait(timeout=30)
        assert runner.returncode == -signal.SIGKILL
        status = skyflow.status("stuck")
        assert (status["state"], status["stages"]["wait"]["state"]) == ("cancelled", "cancelled")
        wait_for(lambda: not process_alive(int(pidfile.read_text())), timeout_s=10, what="stage process to exit")
    finally:
        runner.kill()
        runner.communicate(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_runs_lists_history(skyflow: Skyflow) -> None:
    _chain(skyflow)
    skyflow.run_json("chain.yaml", "--run-id", "nightly-1", "--no-lineage")
    listing = json.loads(skyflow("runs", "--json", check=True).stdout)
    assert [r["run_id"] for r in listing] == ["nightly-1"] and listing[0]["state"] == "succeeded"
    missing = skyflow("status", "nightly-2")
    assert missing.returncode == 2 and "no run 'nightly-2'" in missing.stderr
    assert "Did you mean nightly-1" in missing.stderr
