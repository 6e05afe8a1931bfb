"""Load: four runs of one pipeline and a scheduler on one SKYFLOW_HOME; a 200-stage run with 50 at once."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, CacheIndex, open_store, verify_artifact
from skyflow.artifacts.refs import MANIFESTS, manifest_key
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("reliability")]

RUNS = 4
# `prep` gives every run the same bytes (so they meet in the cache); `own` writes the run's id, so
# each run's output differs and must stay its own.
SHARED = """\
name: shared
inputs: {raw: {uri: ./data}}
stages:
  prep:
    inputs: {raw: raw}
    run: 'sleep 2; sort $SKYFLOW_INPUT_RAW/d.txt > $SKYFLOW_OUTPUT_O/o'
    outputs: [o]
  own:
    cache: false
    inputs: {p: prep.o}
    run: 'cat $SKYFLOW_INPUT_P/o > $SKYFLOW_OUTPUT_O/o; echo "$SKYFLOW_RUN_ID" >> $SKYFLOW_OUTPUT_O/o'
    outputs: [o]
"""


def state_rows(home: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    with sqlite3.connect(home / "state.db", timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, args).fetchall())


def test_four_runs_and_a_scheduler_on_one_home_stay_consistent_and_share_the_cache(skyflow: Skyflow) -> None:
    data = skyflow.workdir / "data"
    data.mkdir()
    (data / "d.txt").write_text("\n".join(str(i) for i in range(2000, 0, -1)) + "\n")
    trigger = skyflow.workdir / "trigger.txt"
    trigger.write_text("v1\n")
    skyflow.write("shared.yaml", SHARED)
    skyflow("schedule", "add", "shared.yaml", "--name", "watch", "--on-change", str(trigger),
            "--concurrency", "allow", "--infra", "local", "--no-lineage", check=True)
    scheduler = skyflow.start("scheduler", "--interval", "0.2")
    try:
        runs = [skyflow.start("run", "shared.yaml", "--run-id", f"conc-{i}", "--infra", "local", "--no-lineage",
                              "--json") for i in range(RUNS)]
        trigger.write_text("v2\n")  # the scheduler's run starts beside the four
        for proc in runs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, out + err

        def scheduled_run_ended() -> bool:
            found = state_rows(skyflow.home, "SELECT state FROM runs WHERE run_id NOT LIKE 'conc-%'")
            return bool(found) and found[0]["state"] not in ("running", "pending")

        wait_for(scheduled_run_ended, 90, "the scheduler's run")
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.communicate(timeout=60)

    home = skyflow.home
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs_ = {r["run_id"]: r["state"] for r in state_rows(home, "SELECT run_id, state FROM runs")}
    assert len(runs_) == RUNS + 1 and set(runs_.values()) == {"succeeded"}, runs_
    stages = state_rows(home, "SELECT run_id, stage, state, cache_key FROM stages")
    assert len(stages) == 2 * len(runs_) and {s["state"] for s in stages} <= {"succeeded", "cached"}
    outputs = {(o["run_id"], o["stage"]): o for o in state_rows(home, "SELECT * FROM outputs")}
    assert set(outputs) == {(r, s) for r in runs_ for s in ("prep", "own")}

    store = open_store(str(home / "artifacts"))

    def ref(row: sqlite3.Row) -> ArtifactRef:
        return ArtifactRef(name=row["name"], uri=row["uri"], digest=row["digest"], size_bytes=row["size_bytes"],
                           file_count=0, store=store)

    # Same content, one artifact: every run's prep output is the same digest, stored once, and its
    # cache entry (written by whichever runs computed it) reads back whole.
    prep_digests = {outputs[(r, "prep")]["digest"] for r in runs_}
    assert len(prep_digests) == 1
    writers = [s["run_id"] for s in stages if s["stage"] == "prep" and s["state"] == "succeeded"]
    assert len(writers) >= 2, f"only {writers} computed prep: the runs did not overlap"
    assert verify_artifact(ref(outputs[("conc-0", "prep")]), deep=True)
    (prep_key,) = {s["cache_key"] for s in stages if s["stage"] == "prep"}
    hit = CacheIndex(store).lookup(prep_key, deep=True)
    assert hit is not None and hit["o"].digest in prep_digests
    # Different content, kept apart: each run's own output holds its run id, in its own attempt folder.
    for run_id in runs_:
        assert verify_artifact(ref(outputs[(run_id, "own")]), deep=True)
        written = home / "runs" / run_id / "own" / "attempt-1" / "outputs" / "o" / "o"
        assert written.read_text().splitlines()[-1] == run_id
    own_digests = {outputs[(r, "own")]["digest"] for r in runs_}
    assert len(own_digests) == len(runs_)
    manifests = {p.name for p in (home / "artifacts" / MANIFESTS).iterdir()}
    assert manifests == {Path(manifest_key(d)).name for d in prep_digests | own_digests | {
        o["digest"] for o in outputs.values()}} | imported_inputs(home, runs_)


def imported_inputs(home: Path, runs: dict[str, str]) -> set[str]:
    """Manifests of the external input `raw`, which each run imports into the store (same bytes: one)."""
    found = set()
    for run_id in runs:
        for row in state_rows(home, "SELECT artifact FROM transfers WHERE run_id = ? AND stage = 'prep'", run_id):
            digest = str(row["artifact"]).split("=", 1)[1]
            found.add(Path(manifest_key(digest)).name)
    return found


LAYERS, WIDTH, PARALLEL = 4, 50, 50
RSS_BOUND_KB = 1_500_000  # a leak guard, far above what the runner needs


# The first layer's stages meet at a barrier: each marks itself in BARRIER and waits (up to 120 s)
# until all 50 have, so the run can only finish if the runner really starts 50 at once. Every stage
# also counts the stages running beside it (a marker per running stage in LIVE) and records a count
# over the limit in OVER: the runner must never run more than --parallel at once.
BARRIER_WAIT = ('touch "{barrier}/$SKYFLOW_STAGE"; n=0; '
                'while [ "$(ls "{barrier}" | wc -l)" -lt {width} ]; do sleep 0.05; n=$((n+1)); '
                '[ $n -gt 2400 ] && {{ echo "barrier: only $(ls "{barrier}" | wc -l) stages came"; exit 3; }}; done; ')
LIVE_IN = ('touch "{live}/$SKYFLOW_STAGE"; [ "$(ls "{live}" | wc -l)" -gt {parallel} ] && '
           'ls "{live}" > "{over}/$SKYFLOW_STAGE"; ')
LIVE_OUT = '; rm -f "{live}/$SKYFLOW_STAGE"'


def layered_pipeline(root: Path) -> str:
    """4 layers of 50 stages; each stage past the first layer reads two stages of the layer before."""
    dirs = {name: root / name for name in ("barrier", "live", "over")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    enter = LIVE_IN.format(parallel=PARALLEL, **dirs)
    leave = LIVE_OUT.format(**dirs)
    lines = ["name: wide", "stages:"]
    for layer in range(LAYERS):
        for i in range(WIDTH):
            lines.append(f"  s{layer}_{i}:")
            if layer:
                a, b = f"s{layer - 1}_{i}", f"s{layer - 1}_{(i + 1) % WIDTH}"
                body = "cat $SKYFLOW_INPUT_A/o $SKYFLOW_INPUT_B/o | sha256sum > $SKYFLOW_OUTPUT_O/o"
                lines.append(f"    inputs: {{a: {a}.o, b: {b}.o}}")
            else:
                body = BARRIER_WAIT.format(width=WIDTH, **dirs) + f"echo {i} > $SKYFLOW_OUTPUT_O/o"
            lines.append("    run: " + json.dumps(enter + body + leave))
            lines.append("    outputs: [o]")
    return "\n".join(lines) + "\n"


def peak_rss_kb(pid: int) -> int | None:
    """The process's high-water resident set (VmHWM), or None once it has exited (a zombie has none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


@pytest.mark.parametrize("lineage", [False, True], ids=["no_lineage", "lineage"])
def test_200_stages_with_50_at_once_finish_and_the_runner_memory_stays_bounded(
        skyflow: Skyflow, record_property: Any, lineage: bool) -> None:
    skyflow.write("wide.yaml", layered_pipeline(skyflow.workdir / "meet"))
    runner = skyflow.start("run", "wide.yaml", "--parallel", str(PARALLEL), "--infra", "local", "--json",
                           "--run-id", "wide-1", *([] if lineage else ["--no-lineage"]))
    peak = [0]
    running_at_once = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = peak_rss_kb(runner.pid)
            if rss is None:
                return
            peak[0] = max(peak[0], rss)
            with contextlib.suppress(sqlite3.Error):
                (n,) = state_rows(skyflow.home, "SELECT count(*) FROM stages WHERE state = 'running'")[0]
                running_at_once[0] = max(running_at_once[0], n)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = runner.communicate(timeout=170)  # a deadlock ends here, not in CI's global timeout
    finally:
        stop.set()
        sampler.join(timeout=5)
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, err[-3000:]
    status = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert len(status["stages"]) == LAYERS * WIDTH
    assert {s["state"] for s in status["stages"].values()} == {"succeeded"}
    # the first layer passed its barrier: all 50 of its stages were running at the same time
    assert len(list((skyflow.workdir / "meet" / "barrier").iterdir())) == WIDTH
    assert list((skyflow.workdir / "meet" / "over").iterdir()) == [], "more than --parallel stages ran at once"
    assert list((skyflow.workdir / "meet" / "live").iterdir()) == []
    record_property("runner_peak_rss_kb", peak[0])
    record_property("stages_running_at_once_max", running_at_once[0])
    print(f"lineage {'on' if lineage else 'off'}: runner peak RSS {peak[0] / 1024:.0f} MiB; "
          f"at most {running_at_once[0]} stages running at once")
    assert 0 < peak[0] < RSS_BOUND_KB
