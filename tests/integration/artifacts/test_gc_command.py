"""`skyflow artifacts gc | ls | show` after real runs: what no kept run references goes, the rest stays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, open_store, verify_artifact
from skyflow.artifacts.refs import BLOBS, CACHE, MANIFESTS, manifest_key
from skyflow.errors import ArtifactError
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.integration


@pytest.fixture
def sky(tmp_path: Path) -> Skyflow:
    """The real `skyflow` CLI against a private SKYFLOW_HOME."""
    (tmp_path / "work").mkdir()
    return Skyflow(tmp_path / "home", tmp_path / "work")

PIPELINE = """\
name: {name}
params: {{n: 0}}
stages:
  make:
    run: |
      echo "shared by every run" > $SKYFLOW_OUTPUT_OUT/const.txt
      echo "{name} ${{params.n}}" > $SKYFLOW_OUTPUT_OUT/n.txt
    outputs: [out]
"""


def run(sky: Skyflow, name: str, n: int) -> dict[str, Any]:
    sky.write(f"{name}.yaml", PIPELINE.format(name=name))
    code, status, stderr = sky.run_json(f"{name}.yaml", "--set", f"n={n}", "--no-lineage")
    assert code == 0, stderr
    return status


def output_ref(sky: Skyflow, status: dict[str, Any]) -> ArtifactRef:
    out = status["stages"]["make"]["outputs"]["out"]
    return ArtifactRef(name="out", uri=out["uri"], digest=out["digest"], size_bytes=out["size_bytes"],
                       file_count=0, store=open_store(str(sky.home / "artifacts")))


def gc(sky: Skyflow, *args: str) -> dict[str, Any]:
    result = sky("artifacts", "gc", *args, "--json", check=True)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return dict(json.loads(line))


def test_gc_keeps_the_newest_runs_and_drops_the_cache_entries_of_what_it_removes(sky: Skyflow) -> None:
    old, middle, new = (run(sky, "chain", n) for n in (1, 2, 3))
    other = run(sky, "other", 1)  # keep-last counts per pipeline
    store = open_store(str(sky.home / "artifacts"))
    assert len(store.list_keys(MANIFESTS)) == 4 and len(store.list_keys(CACHE)) == 4

    preview = gc(sky, "--keep-last", "1", "--min-age", "0", "--dry-run")
    assert (preview["dry_run"], preview["manifests"], preview["cache_entries"]) == (True, 2, 2)
    assert preview["blobs"] == 2  # the two n.txt files; const.txt is shared with kept artifacts
    assert len(store.list_keys(MANIFESTS)) == 4 and len(store.list_keys(CACHE)) == 4

    done = gc(sky, "--keep-last", "1", "--min-age", "0")
    assert {k: done[k] for k in ("manifests", "blobs", "cache_entries")} == \
        {k: preview[k] for k in ("manifests", "blobs", "cache_entries")}
    assert done["dry_run"] is False and done["bytes"] == len("chain 1\n") + len("chain 2\n")
    assert sorted(store.list_keys(MANIFESTS)) == sorted(
        manifest_key(s["stages"]["make"]["outputs"]["out"]["digest"]) for s in (new, other))
    assert verify_artifact(output_ref(sky, new)) and verify_artifact(output_ref(sky, other))
    for gone in (old, middle):
        with pytest.raises(ArtifactError, match="artifact not found"):
            verify_artifact(output_ref(sky, gone))
    assert len(store.list_keys(BLOBS)) == 3  # const.txt, "chain 3", "other 1"
    assert len(store.list_keys(CACHE)) == 2  # no entry is left pointing at a removed artifact

    assert run(sky, "chain", 3)["stages"]["make"]["state"] == "cached"
    rerun = run(sky, "chain", 1)  # its cache entry went with its output: it runs again
    assert rerun["stages"]["make"]["state"] == "succeeded"
    assert verify_artifact(output_ref(sky, rerun))


def test_gc_spares_objects_younger_than_min_age(sky: Skyflow) -> None:
    first = run(sky, "chain", 1)
    run(sky, "chain", 2)
    result = gc(sky, "--keep-last", "1")  # default --min-age 1h: everything here is younger
    assert (result["manifests"], result["blobs"], result["cache_entries"]) == (0, 0, 0)
    assert verify_artifact(output_ref(sky, first))


def test_ls_and_show_list_the_committed_artifacts(sky: Skyflow) -> None:
    status = run(sky, "chain", 7)
    digest = status["stages"]["make"]["outputs"]["out"]["digest"]
    listed = json.loads(sky("artifacts", "ls", "--json", check=True).stdout)
    assert [(r["digest"], r["files"]) for r in listed] == [(digest, 2)]
    shown = sky("artifacts", "show", digest.removeprefix("sha256:")[:12], check=True).stdout
    assert digest in shown and "n.txt" in shown and "const.txt" in shown


def test_bad_arguments_are_user_errors(sky: Skyflow) -> None:
    bad_age = sky("artifacts", "gc", "--keep-last", "1", "--min-age", "soon")
    assert bad_age.returncode == 2 and "'soon' is not an age" in bad_age.stderr
    missing = sky("artifacts", "gc")
    assert missing.returncode == 2 and "--keep-last" in missing.stderr
    unknown = sky("artifacts", "show", "abc123")
    assert unknown.returncode == 2 and "no artifact with digest 'abc123'" in unknown.stderr
