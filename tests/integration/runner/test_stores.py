"""Stages commit to the store of their location, and a cached result in another store is moved, not recomputed."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import StoreServer
from tests.integration.runner.conftest import Skyflow

pytestmark = pytest.mark.xdist_group("stores")

PIPELINE = """\
name: stores
stores: {{local: {{uri: {store}, create: true}}}}
inputs: {{raw: ./data}}
stages:
  prep: {{run: 'sort $SKYFLOW_INPUT_RAW/words > $SKYFLOW_OUTPUT_CLEAN/words', inputs: {{raw: raw}}, outputs: [clean]}}
  count: {{run: 'wc -l < $SKYFLOW_INPUT_DATA/words > $SKYFLOW_OUTPUT_N/n', inputs: {{data: prep.clean}}, outputs: [n]}}
"""
# The same stages (same cache keys), the first run's bucket now declared as the aws/us-east-1 store.
SECOND = """\
name: stores
stores: {{local: {{uri: {store}, create: true}}, aws/us-east-1: {{uri: {bucket}}}}}
inputs: {{raw: ./data}}
stages:
  prep: {{run: 'sort $SKYFLOW_INPUT_RAW/words > $SKYFLOW_OUTPUT_CLEAN/words', inputs: {{raw: raw}}, outputs: [clean],
          estimate: 1}}
  count: {{run: 'wc -l < $SKYFLOW_INPUT_DATA/words > $SKYFLOW_OUTPUT_N/n', inputs: {{data: prep.clean}}, outputs: [n],
           estimate: 1}}
"""


def test_outputs_go_to_the_configured_store_and_hits_move_between_stores(skyflow: Skyflow,
                                                                         s3_server: StoreServer) -> None:
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    bucket = s3_server.new_uri("skyflow")
    skyflow.write("data/words", "b\na\nc\n")
    skyflow.write("p.yaml", PIPELINE.format(store=bucket))
    code, first, err = skyflow.run_json("p.yaml", "--no-lineage", env=env)
    assert code == 0, err
    for stage in first["stages"].values():
        assert all(o["uri"].startswith(bucket + "/manifests/") for o in stage["outputs"].values())

    local_dir = skyflow.workdir / "store"
    skyflow.write("p.yaml", PIPELINE.format(store=local_dir))
    code, second, err = skyflow.run_json("p.yaml", "--no-lineage", env=env)
    assert code == 0, err
    assert {s["state"] for s in second["stages"].values()} == {"cached"}  # moved from S3, not rerun
    for name, stage in second["stages"].items():
        for output, ref in stage["outputs"].items():
            assert ref["uri"].startswith(str(local_dir))
            assert ref["digest"] == first["stages"][name]["outputs"][output]["digest"]


def test_the_plan_reuses_outputs_left_in_another_declared_store(skyflow: Skyflow, s3_server: StoreServer) -> None:
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    bucket = s3_server.new_uri("skyflow")
    skyflow.write("data/words", "b\na\nc\n")
    skyflow.write("p.yaml", PIPELINE.format(store=bucket))
    code, first, err = skyflow.run_json("p.yaml", "--no-lineage", env=env)
    assert code == 0, err

    # Now the bucket is the aws/us-east-1 store: the plan reuses what is there instead of an hour of work.
    local_dir = skyflow.workdir / "store"
    second = SECOND.format(store=local_dir, bucket=bucket)
    skyflow.write("p.yaml", second)
    planned = skyflow("plan", "p.yaml", "--json", "--minimize", "time", env=env, check=True)
    stages = json.loads(planned.stdout)["stages"]
    assert {(s["infra"], s.get("cached"), s["compute_usd"]) for s in stages.values()} == {("aws/us-east-1", True, 0.0)}
    text = skyflow("plan", "p.yaml", "--minimize", "time", env={**env, "COLUMNS": "200"}, check=True).stdout
    assert "aws/us-east-1 (cached)" in text
    ignored = skyflow("plan", "p.yaml", "--json", "--minimize", "time", "--no-cache", env=env, check=True)
    assert not any(s.get("cached") for s in json.loads(ignored.stdout)["stages"].values())

    code, run, err = skyflow.run_json("p.yaml", "--no-lineage", "--minimize", "time", env=env)
    assert code == 0, err
    assert {s["state"] for s in run["stages"].values()} == {"cached"}
    for name, stage in run["stages"].items():
        for output, ref in stage["outputs"].items():
            assert ref["uri"].startswith(bucket + "/manifests/")
            assert ref["digest"] == first["stages"][name]["outputs"][output]["digest"]
