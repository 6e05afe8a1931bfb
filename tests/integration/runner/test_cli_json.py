"""Every `--json` the CLI prints matches the schema docs/cli.md documents for it, and every command
with `--json` has one there."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest

from skyflow.cli.main import COMMANDS, cli
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"
SCHEMA = re.compile(r"<!-- json-schema: (\S+) -->\n```json\n(.*?)\n```", re.S)
# the schema each command's --json prints
DOCUMENTED = {"run": "run-status", "resume": "run-status", "status": "run-status", "runs": "runs",
              "validate": "validate", "dag": "dag", "plan": "plan", "catalog gpus": "catalog-gpus",
              "cancel": "cancel", "down": "down", "schedule list": "schedule-list", "schedule add": "schedule-add",
              "schedule trigger": "schedule-trigger", "check": "check", "artifacts ls": "artifacts-ls",
              "artifacts show": "artifacts-show", "artifacts gc": "artifacts-gc",
              "artifacts verify": "artifacts-verify", "lineage": "lineage", "daemon status": "daemon-status"}
PIPELINE = "name: p\nstages:\n  make:\n    run: echo made > $SKYFLOW_OUTPUT_DATA/d.txt\n    outputs: [data]\n" \
           "  use:\n    run: cat $SKYFLOW_INPUT_DATA/d.txt\n    inputs: {data: make.data}\n"


def _schemas() -> dict[str, Any]:
    found = {name: json.loads(body) for name, body in SCHEMA.findall(DOC.read_text())}
    for schema in found.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    return found


def _commands_with_json() -> set[str]:
    ctx = click.Context(cli)
    named = set()
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        subs = ([(f"{name} {s}", command.get_command(ctx, s)) for s in command.list_commands(ctx)]
                if isinstance(command, click.Group) else [(name, command)])
        named |= {path for path, sub in subs if sub is not None and any("--json" in p.opts for p in sub.params)}
    return named


def test_every_json_command_has_a_documented_schema() -> None:
    assert _commands_with_json() == set(DOCUMENTED)
    assert set(DOCUMENTED.values()) <= set(_schemas())


def _check(skyflow: Skyflow, schema: str, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
    result = skyflow(*args, "--json")
    assert result.returncode in codes, f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    try:
        documents = [json.loads(result.stdout)]
    except json.JSONDecodeError:  # one document per line and store (gc, verify)
        documents = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert documents, f"{args}: nothing printed"
    for document in documents:
        jsonschema.validate(document, _schemas()[schema])
    return documents[-1]


def test_each_json_output_matches_its_schema(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", PIPELINE)
    skyflow.write("bad.yaml", "name: p\nstages:\n  a:\n    run: echo\n    depends_on: [mkae]\n")
    ran = _check(skyflow, "run-status", "run", "p.yaml", "--run-id", "j1")
    assert ran["state"] == "succeeded" and ran["stages"]["make"]["outputs"]["data"]["digest"].startswith("sha256:")
    assert _check(skyflow, "run-status", "status", "j1") == ran
    assert _check(skyflow, "runs", "runs")[0]["run_id"] == "j1"
    assert _check(skyflow, "validate", "validate", "p.yaml")["ok"] is True
    bad = _check(skyflow, "validate", "validate", "bad.yaml", codes=(2,))
    assert bad["issues"][0]["line"] == 5 and bad["issues"][0]["file"] == "bad.yaml"
    dag = _check(skyflow, "dag", "dag", "p.yaml")
    assert dag["edges"] == [{"from": "make", "to": "use", "input": "data", "kind": "stage", "artifact": "make.data"}]
    _check(skyflow, "plan", "plan", "p.yaml")
    assert _check(skyflow, "catalog-gpus", "catalog", "gpus", "H100")
    assert _check(skyflow, "down", "down", "j1") == {"run_id": "j1", "stopped": []}
    assert _check(skyflow, "check", "check")
    digest = ran["stages"]["make"]["outputs"]["data"]["digest"]
    assert any(a["digest"] == digest for a in _check(skyflow, "artifacts-ls", "artifacts", "ls"))
    assert _check(skyflow, "artifacts-show", "artifacts", "show", digest[7:19])["files"][0]["path"] == "d.txt"
    _check(skyflow, "artifacts-gc", "artifacts", "gc", "--keep-last", "1", "--dry-run")
    _check(skyflow, "artifacts-verify", "artifacts", "verify")
    assert _check(skyflow, "lineage", "lineage", digest)["producer"] is not None


def test_cancel_and_schedule_json(skyflow: Skyflow) -> None:
    gate = skyflow.workdir / "go"
    skyflow.write("wait.yaml", f"name: waiting\nstages:\n  wait:\n    run: while [ ! -e {gate} ]; do sleep 0.1; done\n")
    proc = skyflow.start("run", "wait.yaml", "--no-lineage", "--run-id", "c1")
    try:
        wait_for(lambda: skyflow.stage_state("c1", "wait") == "running", what="the stage to start")
        assert _check(skyflow, "run-status", "status", "c1")["runner_alive"] is True
        assert _check(skyflow, "cancel", "cancel", "c1") == {"run_id": "c1", "state": "cancelled"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    gate.write_text("")
    added = _check(skyflow, "schedule-add", "schedule", "add", "wait.yaml", "--cron", "0 3 * * *", "--no-lineage")
    assert added["name"] == "waiting" and "--yes" in added["run_args"]
    listed = _check(skyflow, "schedule-list", "schedule", "list")
    assert [s["name"] for s in listed["schedules"]] == ["waiting"]
    fired = _check(skyflow, "schedule-trigger", "schedule", "trigger", "waiting")
    wait_for(lambda: skyflow.stage_state(fired["run_id"], "wait") in ("succeeded", "failed"),
             what="the triggered run to end")
    assert skyflow.status(fired["run_id"])["state"] == "succeeded"
