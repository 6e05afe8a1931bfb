"""`skyflow artifacts get` shows a progress bar of the bytes it moves on a terminal (once a transfer
has taken SKYFLOW_PROGRESS_AFTER_S; 0 here, so that the test waits on nothing), and none off one."""

from __future__ import annotations

import pytest

from tests.integration.runner.conftest import Skyflow
from tests.integration.runner.test_terminal import ANSI, _read_until_exit, _spawn

pytestmark = pytest.mark.integration

BIG = "name: big\nstages:\n  make:\n    run: head -c 3000000 /dev/zero > $SKYFLOW_OUTPUT_BLOB/blob.bin\n" \
      "    outputs: [blob]\n"


@pytest.fixture
def made(skyflow: Skyflow) -> Skyflow:
    skyflow.write("big.yaml", BIG)
    ran = skyflow("run", "big.yaml", "--no-lineage", "--run-id", "big", "-q")
    assert ran.returncode == 0, ran.stderr
    skyflow.env["SKYFLOW_PROGRESS_AFTER_S"] = "0"
    return skyflow


def test_a_terminal_sees_the_bytes_move(made: Skyflow) -> None:
    proc, leader = _spawn(made, "artifacts", "get", "big", "make.blob", "out")
    shown = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 0, shown
    assert "make.blob -> out" in shown and "3.0/3.0 MB" in shown, shown
    assert (made.workdir / "out" / "blob.bin").stat().st_size == 3_000_000


def test_off_a_terminal_there_is_no_bar(made: Skyflow) -> None:
    got = made("artifacts", "get", "big", "make.blob", "out")
    assert got.returncode == 0, got.stderr
    assert "MB" not in got.stdout + got.stderr
    assert got.stdout.strip().endswith("(1 file(s), verified)")


CHAIN = BIG + "  use:\n    run: wc -c < $SKYFLOW_INPUT_BLOB/blob.bin\n    inputs: {blob: make.blob}\n"


def test_a_run_on_a_terminal_shows_artifacts_moving_under_its_table(skyflow: Skyflow) -> None:
    skyflow.write("chain.yaml", CHAIN)
    skyflow.env["SKYFLOW_PROGRESS_AFTER_S"] = "0"
    proc, leader = _spawn(skyflow, "run", "chain.yaml", "--no-lineage")
    shown = ANSI.sub("", _read_until_exit(proc, leader).decode("utf-8", "replace"))
    assert proc.returncode == 0, shown
    assert "moving artifacts: " in shown and "of 3.0 MB" in shown, shown
    plain = skyflow("run", "chain.yaml", "--no-lineage", "--no-cache")
    assert plain.returncode == 0, plain.stderr
    assert "moving artifacts" not in plain.stdout + plain.stderr
