"""SIGKILL the runner at 20 seeded random points, then `skyflow resume`: it always finishes, nothing
committed runs again, and no half-written output is ever used (every output equals a clean run's)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from skyflow.artifacts import ArtifactRef, fetch_artifact, open_store
from tests.integration.runner.conftest import Skyflow, wait_for

KILLS = 20
SEED = 20240605

# Every stage first notes that it started (the ledger, outside skyflow), then writes its output in two
# steps with a pause between, so a kill can leave a half-written output behind. Each output is a hash
# of the stage's inputs and name: any partial or stale input changes every output downstream of it.
STEP = """\
echo x >> {ledger}/$SKYFLOW_STAGE
h=$(cat {inputs} | sha256sum | cut -c1-16)
echo "$SKYFLOW_STAGE $h" > $SKYFLOW_OUTPUT_OUT/v.txt
sleep {pause}
echo "$SKYFLOW_STAGE done $(echo "$h $SKYFLOW_STAGE" | sha256sum | cut -c1-16)" >> $SKYFLOW_OUTPUT_OUT/v.txt
"""

# a -> b1, b2, b3 -> c -> d: a fan-out and a join, six stages.
STAGES = {
    "a": ({"raw": "raw"}, "$SKYFLOW_INPUT_RAW/seed.txt", 0.15),
    "b1": ({"a": "a.out"}, "$SKYFLOW_INPUT_A/v.txt", 0.2),
    "b2": ({"a": "a.out"}, "$SKYFLOW_INPUT_A/v.txt", 0.1),
    "b3": ({"a": "a.out"}, "$SKYFLOW_INPUT_A/v.txt", 0.25),
    "c": ({"b1": "b1.out", "b2": "b2.out", "b3": "b3.out"},
          "$SKYFLOW_INPUT_B1/v.txt $SKYFLOW_INPUT_B2/v.txt $SKYFLOW_INPUT_B3/v.txt", 0.15),
    "d": ({"c": "c.out"}, "$SKYFLOW_INPUT_C/v.txt", 0.1),
}


def pipeline_yaml(ledger: Path) -> str:
    lines = ["name: diamond", "inputs: {raw: {uri: ./data}}", "stages:"]
    for name, (inputs, reads, pause) in STAGES.items():
        script = STEP.format(ledger=ledger, inputs=reads, pause=pause)
        lines += [f"  {name}:", "    run: |", *(f"      {line}" for line in script.splitlines()),
                  f"    inputs: {json.dumps(inputs)}", "    outputs: [out]"]
    return "\n".join(lines) + "\n"


def ledger_counts(ledger: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().splitlines()) for p in ledger.iterdir()}


def read_output(home: Path, output: dict[str, object], tmp: Path) -> bytes:
    ref = ArtifactRef(name="out", uri=str(output["uri"]), digest=str(output["digest"]),
                      size_bytes=int(output["size_bytes"]), file_count=0,  # type: ignore[call-overload]
                      store=open_store(str(home / "artifacts")))
    return (fetch_artifact(ref, tmp / str(output["digest"])[7:23]) / "v.txt").read_bytes()


def start_running(sky: Skyflow, pipeline: str, run_id: str) -> subprocess.Popen[str]:
    """`skyflow run` in the background, returned once its first stage is running."""
    proc = sky.start("run", pipeline, "--run-id", run_id, "--json")
    wait_for(lambda: stage_running(sky.home, run_id) or proc.poll() is not None, 60, "the first stage to start")
    assert proc.poll() is None, proc.communicate()
    return proc


def stage_running(home: Path, run_id: str) -> bool:
    db = home / "state.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT 1 FROM stages WHERE run_id=? AND state='running'", (run_id,)).fetchone() \
                is not None
    except sqlite3.OperationalError:  # schema still being made
        return False


@pytest.mark.xdist_group("kill-resume")
def test_resume_after_sigkill_finishes_reruns_nothing_committed_and_uses_no_partial_output(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "seed.txt").write_text("kill me softly\n")
    # `skyflow resume` has no --no-lineage: point lineage at a server that is not there, so records wait
    # in the spool (the recorder's behaviour for an unreachable store) and each resume stays fast.
    lineage_off = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}

    def session(name: str) -> tuple[Skyflow, Path]:
        sky = Skyflow(tmp_path / name / "home", work)
        sky.env.update(lineage_off)
        ledger = tmp_path / name / "ledger"
        ledger.mkdir(parents=True)
        (work / f"{name}.yaml").write_text(pipeline_yaml(ledger))
        return sky, ledger

    clean, clean_ledger = session("clean")
    proc = start_running(clean, "clean.yaml", "clean")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with sqlite3.connect(clean.home / "state.db") as conn:  # from the first stage's start to the run's end
        query = "SELECT r.ended_at - MIN(s.started_at) FROM runs r JOIN stages s USING (run_id)"
        span_s = conn.execute(query).fetchone()[0]
    expected = json.loads(out.splitlines()[-1])
    assert ledger_counts(clean_ledger) == dict.fromkeys(STAGES, 1)
    expected_digests = {s: row["outputs"]["out"]["digest"] for s, row in expected["stages"].items()}
    final = read_output(clean.home, expected["stages"]["d"]["outputs"]["out"], tmp_path)
    assert final.startswith(b"d ") and b" done " in final

    rng = random.Random(SEED)
    committed_at_kill = []
    for i in range(KILLS):
        sky, ledger = session(f"k{i}")
        run_id = f"kill-{i}"
        proc = start_running(sky, f"k{i}.yaml", run_id)
        delay = rng.uniform(0, 0.9 * span_s)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()

        before = sky.status(run_id)
        # The runner dies without a word; on a slow moment it may have finished just before the kill.
        assert before["state"] in ("running", "succeeded"), f"kill {i} after {delay:.2f} s: {before}"
        done = {s: row for s, row in before["stages"].items() if row["state"] in ("succeeded", "cached")}
        runs_before = ledger_counts(ledger)
        committed_at_kill.append(len(done) if before["state"] == "running" else -1)

        result = sky("resume", run_id, "--json", timeout=120)
        assert result.returncode == 0, f"kill {i}: resume failed\n{result.stdout}\n{result.stderr}"
        after = json.loads(result.stdout.splitlines()[-1])
        assert after["state"] == "succeeded", f"kill {i}: {after}"
        assert all(row["state"] in ("succeeded", "cached") for row in after["stages"].values()), after
        for stage, row in done.items():
            assert after["stages"][stage]["attempts"] == row["attempts"], f"kill {i}: {stage} ran again"
            assert after["stages"][stage]["outputs"] == row["outputs"], f"kill {i}: {stage} output replaced"
            assert ledger_counts(ledger).get(stage) == runs_before.get(stage), f"kill {i}: {stage} ran again"
        digests = {s: row["outputs"]["out"]["digest"] for s, row in after["stages"].items()}
        assert digests == expected_digests, f"kill {i}: outputs differ from a clean run's"
        assert read_output(sky.home, after["stages"]["d"]["outputs"]["out"], tmp_path / f"k{i}") == final
        leftover = _stage_pids(sky.home)
        assert not leftover, f"kill {i}: stage processes still alive: {leftover}"

    # The seeded delays must really have cut runs at different depths, or the test proves little.
    cut = [n for n in committed_at_kill if n >= 0]
    assert len(cut) >= KILLS - 3 and min(cut) == 0 and max(cut) >= 4, committed_at_kill


def _stage_pids(home: Path) -> list[int]:
    """Processes still running a stage script under this SKYFLOW_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(home) in cmdline and state != "Z" and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids
