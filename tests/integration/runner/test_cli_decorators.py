"""The decorator API as a user meets it through the CLI: fan-in over a list of artifacts, a param
compared while the pipeline is defined, inputs checked against the stage function's signature,
`export` keeping param references, and decorator typos reported where they are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration

FLOW = '''\
from pathlib import Path

from skyflow import Pipeline, stage


@stage(outputs=["data"])
def make(seed, outputs):
    (outputs["data"] / "d.txt").write_text(str(seed))


@stage(outputs=["best"])
def pick(models, lr, outputs):
    seen = ",".join(sorted((Path(m) / "d.txt").read_text() for m in models))
    (outputs["best"] / "all.txt").write_text(f"{seen} lr={lr}")


@Pipeline(name="fanin", params={"lr": 0.1})
def fanin(params):
    parts = [make(seed=i) for i in range(3)]
    pick(models=[p.data for p in parts], lr=params.lr)


@Pipeline(name="compare", params={"lr": 0.1})
def compare(params):
    if params.lr > 0.05:
        make(seed=1)


@Pipeline(name="wrong-name", params={"lr": 0.1})
def wrong_name(params):
    make(sed=1)


@Pipeline(name="missing", params={"lr": 0.1})
def missing(params):
    make()


@stage(outputs=["model"],
       retires=2)
def train(seed, outputs):
    pass


@Pipeline(name="typo")
def typo():
    train(seed=1)
'''


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _one_line_error(result: object) -> str:
    stderr = getattr(result, "stderr", "")
    assert getattr(result, "returncode", None) == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def flow(skyflow: Skyflow) -> Path:
    return skyflow.write("flow.py", FLOW)


def test_fan_in_over_a_list_of_artifacts_runs(skyflow: Skyflow, flow: Path) -> None:
    ran = skyflow("run", "flow.py:fanin", "--no-lineage", "--run-id", "fan", "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    got = skyflow("artifacts", "get", "fan", "pick.best", str(skyflow.workdir / "best"))
    assert got.returncode == 0, got.stderr
    assert (skyflow.workdir / "best" / "all.txt").read_text() == "0,1,2 lr=0.1"


def test_comparing_a_param_is_refused_at_its_line(skyflow: Skyflow, flow: Path) -> None:
    line = _one_line_error(skyflow("validate", "flow.py:compare"))
    assert f"flow.py:{_line_of(FLOW, 'if params.lr')}:" in line
    assert "params.lr: comparing a param" in line and "lr=params.lr" in line


def test_an_input_the_function_does_not_take_fails_validation(skyflow: Skyflow, flow: Path) -> None:
    line = _one_line_error(skyflow("validate", "flow.py:wrong_name"))
    assert f"flow.py:{_line_of(FLOW, 'make(sed=1)')}:" in line
    assert "make() takes no argument 'sed'" in line and "Did you mean seed?" in line


def test_an_argument_the_call_leaves_out_fails_validation(skyflow: Skyflow, flow: Path) -> None:
    line = _one_line_error(skyflow("validate", "flow.py:missing"))
    assert f"flow.py:{_line_of(FLOW, '    make()')}:" in line and "needs 'seed'" in line


def test_a_decorator_typo_is_reported_at_the_decorator(skyflow: Skyflow, flow: Path) -> None:
    line = _one_line_error(skyflow("validate", "flow.py:typo"))
    assert f"flow.py:{_line_of(FLOW, 'retires=2')}:8: " in line
    assert "unknown field 'retires'" in line and "Did you mean retries?" in line


def test_export_keeps_param_references_so_set_still_works(skyflow: Skyflow, flow: Path) -> None:
    exported = skyflow("export", "flow.py:fanin")
    assert exported.returncode == 0, exported.stderr
    assert "SKYFLOW_KWARG_lr: ${params.lr}" in exported.stdout
    skyflow.write("fanin.yaml", exported.stdout)
    ran = skyflow("run", "fanin.yaml", "--set", "lr=0.9", "--no-lineage", "--run-id", "exported", "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    got = skyflow("artifacts", "get", "exported", "pick.best", str(skyflow.workdir / "best"))
    assert got.returncode == 0, got.stderr
    assert (skyflow.workdir / "best" / "all.txt").read_text() == "0,1,2 lr=0.9"


def test_export_of_yaml_keeps_param_references(skyflow: Skyflow) -> None:
    skyflow.write("p.yaml", "name: p\nparams: {lr: 0.1}\nstages:\n  a:\n    run: echo --lr ${params.lr}\n")
    exported = skyflow("export", "p.yaml")
    assert exported.returncode == 0, exported.stderr
    assert "run: echo --lr ${params.lr}" in exported.stdout
