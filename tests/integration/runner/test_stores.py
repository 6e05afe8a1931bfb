"""Stages commit to the store of their location, and a cached result in another store is moved, not recomputed."""

from __future__ import annotations

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
