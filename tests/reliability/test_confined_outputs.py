"""A stage's output holds only what the stage put in it: an output directory replaced by a symlink to
another directory, or a hard link to a file elsewhere, is refused at commit, and nothing is committed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from skyflow.artifacts import open_store
from tests.integration.runner.conftest import Skyflow

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("confined-outputs")]

LINKS = """\
name: links
stages:
  swapped:
    run: 'rmdir $SKYFLOW_OUTPUT_O && ln -s {outside} $SKYFLOW_OUTPUT_O'
    outputs: [o]
  linked:
    run: 'echo mine > $SKYFLOW_OUTPUT_O/mine; ln {outside}/secret.txt $SKYFLOW_OUTPUT_O/copy'
    outputs: [o]
  twice:
    run: 'echo mine > $SKYFLOW_OUTPUT_O/a; mkdir $SKYFLOW_OUTPUT_O/sub; ln $SKYFLOW_OUTPUT_O/a $SKYFLOW_OUTPUT_O/sub/b'
    outputs: [o]
"""


def messages(home: Path, run_id: str) -> dict[str, str]:
    with sqlite3.connect(home / "state.db") as conn:
        rows = conn.execute("SELECT stage, message FROM stages WHERE run_id=?", (run_id,)).fetchall()
    return {stage: message or "" for stage, message in rows}


def test_a_symlinked_output_dir_and_an_outside_hard_link_are_refused(skyflow: Skyflow, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the stage's to publish")
    store = tmp_path / "store"
    skyflow.write("links.yaml", f"stores: {{local: {{uri: {store}}}}}\n" + LINKS.format(outside=outside))
    code, status, err = skyflow.run_json("links.yaml", "--no-lineage", "--run-id", "links")
    assert code == 1, err
    stages = status["stages"]
    assert stages["swapped"]["state"] == "failed" and stages["swapped"]["outputs"] == {}
    assert stages["linked"]["state"] == "failed" and stages["linked"]["outputs"] == {}
    # two names of one file, both inside the output: nothing comes from elsewhere
    assert stages["twice"]["state"] == "succeeded" and stages["twice"]["outputs"]["o"]["size_bytes"] == 10

    said = messages(skyflow.home, "links")
    assert "the output directory was replaced by a symlink to " + str(outside) in said["swapped"], said
    assert "/linked/attempt-1/outputs/o/copy: is a hard link to a file outside the output directory (2 links, " \
           "1 of them here); copy the file in (cp)" in said["linked"], said
    # Only the good stage's manifest is in the store; the outside file is not in any blob.
    assert len(open_store(str(store)).list_keys("manifests/")) == 1
    secret = b"not the stage's to publish"
    assert [p for p in store.rglob("*") if p.is_file() and secret in p.read_bytes()] == []
    assert (outside / "secret.txt").read_text() == "not the stage's to publish"
