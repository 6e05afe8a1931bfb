"""Service stages on the local backend: ready when the probe answers, serving after the run, `skyflow down`."""

from __future__ import annotations

import json
import urllib.request

from tests.integration.runner.conftest import Skyflow, wait_for

SERVE = """\
name: serve
stages:
  model: {run: 'echo weights > $SKYFLOW_OUTPUT_M/w', outputs: [m]}
  web:
    inputs: {m: model.m}
    resources: {ports: 8000}
    service: {readiness_probe: {path: /w, initial_delay_seconds: 60}, replicas: 2}
    run: cd $SKYFLOW_INPUT_M && exec python -m http.server $SKYFLOW_SERVICE_PORT --bind 127.0.0.1
"""


def test_service_is_ready_then_stopped_by_down(skyflow: Skyflow) -> None:
    skyflow.write("serve.yaml", SERVE)
    code, status, _ = skyflow.run_json("serve.yaml", "--no-lineage")
    assert code == 0 and status["stages"]["web"]["state"] == "succeeded"
    text = skyflow("status", status["run_id"]).stdout
    endpoints = [word.strip(",") for word in text.split() if word.startswith("http://127.0.0.1:")]
    assert len(set(endpoints)) == 2  # two replicas, each on its own port
    for endpoint in set(endpoints):
        with urllib.request.urlopen(f"{endpoint}/w", timeout=10) as response:
            assert response.read() == b"weights\n"
    down = skyflow("down", status["run_id"], check=True)
    assert "stopped web" in down.stdout
    wait_for(lambda: not _answers(next(iter(endpoints))), timeout_s=15, what="service to stop")


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}/w", timeout=2).close()
    except OSError:
        return False
    return True


def test_service_that_exits_before_ready_fails(skyflow: Skyflow) -> None:
    skyflow.write("bad.yaml", "name: bad\nstages:\n  web:\n    service: {readiness_probe: /health}\n"
                  "    run: echo crashing; exit 4\n")
    code, status, _ = skyflow.run_json("bad.yaml", "--no-lineage")
    assert code == 1 and status["stages"]["web"]["state"] == "failed"
    shown = skyflow("status", status["run_id"], "--json")
    assert shown.returncode == 1 and json.loads(shown.stdout)["state"] == "failed"  # a failed run's status exits 1
