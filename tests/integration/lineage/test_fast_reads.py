"""`skyflow lineage` and `skyflow runs` read what they need without MLflow's or the runner's imports:
a sqlite lineage store is read from its tables, and gives the same trees as the MLflow client on the
same store; the run listing gives what run state holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyflow.lineage.mlflow_recorder import MlflowRecorder
from skyflow.lineage.store_reader import MlflowLineageReader, SqliteLineageReader, open_reader
from skyflow.lineage.trace import _trace
from skyflow.runner.run_list import recent_runs
from skyflow.runner.state import RunStore
from tests.integration.lineage.lineage_pipeline import POLICY, RAW, SECRET, chain_records, run_info

pytestmark = pytest.mark.integration


def _record_runs(home: Path, run_ids: list[str]) -> str:
    uri = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    recorder = MlflowRecorder(uri, [SECRET], skyflow_home=home)
    for run_id in run_ids:
        recorder.start_run(run_info(run_id))
        for rec in chain_records(run_id):
            recorder.record_stage(rec)
        recorder.end_run(run_id, "succeeded", {"actual_usd": 1.0})
    assert recorder.flush(120), recorder.last_error
    recorder.close()
    return uri


def test_the_sqlite_reader_traces_what_the_mlflow_client_traces(home: Path) -> None:
    uri = _record_runs(home, ["run-1", "run-2"])
    reader = open_reader(uri)
    assert isinstance(reader, SqliteLineageReader)
    client_reader = MlflowLineageReader(uri)
    where = "the store"
    for target in (POLICY.digest, POLICY.digest.split(":")[1][:8], POLICY.uri):
        fast = _trace(reader, target, 64, where)
        slow = _trace(client_reader, target, 64, where)
        assert fast is not None and fast == slow
    assert _trace(reader, RAW.digest, 64, where) is None is _trace(client_reader, RAW.digest, 64, where)  # raw data
    node = _trace(reader, POLICY.digest, 64, where)
    assert node is not None and [n.producer.stage if n.producer else None for n in node.walk()] == [
        "ppo", "sft", None, "rm", "sft", None]
    assert _trace(reader, "feedfacefeedface", 64, where) is None


def _imports_of(home: Path, *argv: str) -> tuple[str, set[str]]:
    code = ("import sys\nfrom skyflow.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "SKYFLOW_HOME": str(home), "HOME": str(home)})
    out, _, modules = proc.stdout.rpartition("MODULES ")
    return out, set(modules.split())


def test_lineage_of_a_sqlite_store_imports_no_mlflow(home: Path) -> None:
    _record_runs(home, ["run-1"])
    out, modules = _imports_of(home, "lineage", POLICY.digest.split(":")[1][:12])
    assert "made by stage ppo" in out and "made by stage sft" in out
    assert not {m for m in modules if m.split(".")[0] in ("mlflow", "sqlalchemy", "alembic")}


def test_runs_lists_what_run_state_holds_without_the_runner(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = RunStore(home / "state.db")
    for index in range(3):
        store.create_run(f"r{index}", "p" if index else "q", "p.yaml", "digest", {}, {}, None, ["a", "b"], 1.5)
    listed = recent_runs(home / "state.db", limit=2)
    assert [(r.run_id, r.pipeline, r.state) for r in listed] == [
        (r.run_id, r.pipeline, r.state) for r in store.list_runs(limit=2)]
    assert [r.run_id for r in recent_runs(home / "state.db", pipeline="q")] == ["r0"]
    out, modules = _imports_of(home, "runs")
    assert "r0" in out and "r2" in out
    assert not {"skyflow.runner.state", "skyflow.session", "numpy", "pydantic"} & modules
