"""Records of a small pipeline for lineage tests: prompts -> sft -> rm, (sft, rm) -> ppo."""

from __future__ import annotations

import time
from pathlib import Path

from skyflow.artifacts.record import ArtifactRecord
from skyflow.lineage.records import RunInfo, StageRecord

SECRET = "sk-test-7f3a9c1e5b"


def artifact(name: str, fill: str, size: int) -> ArtifactRecord:
    return ArtifactRecord(name, f"file:///data/rlhf/{name}", "sha256:" + fill * 64, size)


PLACEMENT = {"infra": "aws", "cloud": "aws", "region": "us-east-1", "instance_type": "p5.48xlarge", "use_spot": True}
RAW = artifact("prompts", "0", 10)
MODEL = artifact("model", "a", 100)
REWARD = artifact("reward_model", "b", 200)
POLICY = artifact("policy", "c", 300)


def run_info(run_id: str, pipeline: str = "rlhf", *, run_key: str = "") -> RunInfo:
    return RunInfo(
        run_id=run_id,
        pipeline=pipeline,
        pipeline_digest="pd-1234",
        params={"lr": 1e-5, "wandb_key": SECRET, "model": {"base": "llama-3-8b"}},
        plan_json={"stages": {"sft": {"infra": "local", "token": SECRET}}},
        git_commit="0123456789abcdef",
        git_dirty=True,
        code_digest="code-42",
        skyflow_version="0.1.0",
        started_at=time.time(),
        run_key=run_key,
        user="ada",
        source_name="/pipelines/rlhf/pipeline.yaml",
        source_type="PROJECT",
    )


def stage_record(
    run_id: str,
    stage: str,
    inputs: list[ArtifactRecord],
    outputs: list[ArtifactRecord],
    *,
    log_path: Path | None = None,
    cache_hit: bool = False,
    attempts: int = 1,
    mlflow_run_id: str | None = None,
) -> StageRecord:
    return StageRecord(
        run_id=run_id,
        stage=stage,
        state="cached" if cache_hit else "succeeded",
        attempts=attempts,
        placement=PLACEMENT,
        resources={"accelerators": {"H100": 8}, "cpus": "32+", "env_token": SECRET},
        duration_s=12.5,
        estimated_usd=1.25,
        actual_usd=1.5,
        egress_gb=0.5,
        egress_usd=0.045,
        cache_hit=cache_hit,
        inputs=inputs,
        outputs=outputs,
        code_digest=f"code-{stage}",
        log_path=str(log_path) if log_path else None,
        cache_key=f"key-{stage}",
        mlflow_run_id=mlflow_run_id,
    )


def chain_records(run_id: str, log_path: Path | None = None) -> list[StageRecord]:
    return [
        stage_record(run_id, "sft", [RAW], [MODEL], log_path=log_path),
        stage_record(run_id, "rm", [MODEL], [REWARD], attempts=3),
        stage_record(run_id, "ppo", [MODEL, REWARD], [POLICY]),
    ]
