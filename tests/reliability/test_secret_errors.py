"""A secret that ends up in an error message (an output file named after it) is masked before the
message is stored in the state DB or printed by any command."""

from __future__ import annotations

import sqlite3

import pytest

from tests.integration.runner.conftest import Skyflow
from tests.reliability.test_security import files_holding

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("secret-errors")]

SECRET = "tok-5ecret-VALUE-91"

NAMED_AFTER_IT = """\
name: named
secrets: [MY_TOKEN]
stages:
  leak:
    run: 'ln -s /etc/hostname "$SKYFLOW_OUTPUT_O/$MY_TOKEN"'
    outputs: [o]
"""


def test_an_error_message_holding_a_secret_is_masked_in_state_and_output(skyflow: Skyflow) -> None:
    skyflow.write("named.yaml", NAMED_AFTER_IT)
    env = {"MY_TOKEN": SECRET}
    ran = skyflow("run", "named.yaml", "--no-lineage", "--run-id", "named", env=env)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    printed = [ran.stdout + ran.stderr]
    for args in (("status", "named"), ("status", "named", "--json"), ("runs",), ("runs", "--json"),
                 ("logs", "named", "leak")):
        shown = skyflow(*args, env=env)
        printed.append(shown.stdout + shown.stderr)
    with sqlite3.connect(skyflow.home / "state.db") as conn:
        (message,) = conn.execute("SELECT message FROM stages WHERE run_id='named'").fetchone()
    # the message is there, the value is not
    assert "/outputs/o/********: a symlink points outside the output directory" in message, message
    assert [text for text in printed if SECRET in text] == []
    assert files_holding(skyflow.home, [SECRET]) == []
