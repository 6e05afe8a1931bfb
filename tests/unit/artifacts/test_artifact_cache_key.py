"""The stage cache key: what changes it, what never enters it."""

from __future__ import annotations

from typing import Any

from skyflow.artifacts import stage_cache_key
from skyflow.spec.models import Stage

CODE = "sha256:" + "c" * 64


def key(stage: Stage, **overrides: Any) -> str:
    args: dict[str, Any] = {"params": {"lr": 0.1}, "input_digests": {"data": "sha256:" + "a" * 64},
                            "code_digest": CODE, "secret_names": ()}
    return stage_cache_key(stage, **(args | overrides))


def stage(**fields: Any) -> Stage:
    return Stage.model_validate({"run": "python train.py", "outputs": ["model"]} | fields)


def test_same_inputs_give_the_same_key() -> None:
    assert key(stage()) == key(stage())
    assert len(key(stage())) == 64


def test_every_result_deciding_part_changes_the_key() -> None:
    base = key(stage())
    changed = {
        key(stage(run="python train.py --epochs 2")),
        key(stage(setup="pip install x")),
        key(stage(envs={"SEED": "1"})),
        key(stage(resources={"accelerators": "A100:8"})),
        key(stage(), params={"lr": 0.2}),
        key(stage(), input_digests={"data": "sha256:" + "b" * 64}),
        key(stage(), code_digest="sha256:" + "d" * 64),
    }
    assert base not in changed and len(changed) == 7


def test_placement_does_not_change_the_key() -> None:
    assert key(stage(resources={"cloud": "aws", "use_spot": True})) == key(stage(resources={"cloud": "gcp"}))


def test_secret_values_never_enter_the_key() -> None:
    with_token = stage(envs={"HF_TOKEN": "hf_live_value_1"}, secrets={"WANDB_API_KEY": "wandb-secret-1"})
    rotated = stage(envs={"HF_TOKEN": "hf_live_value_2"}, secrets={"WANDB_API_KEY": "wandb-secret-2"})
    assert key(with_token, secret_names=["HF_TOKEN"]) == key(rotated, secret_names=["HF_TOKEN"])
    assert key(with_token, secret_names=["HF_TOKEN"]) != key(stage(), secret_names=["HF_TOKEN"])
    assert key(with_token) != key(rotated)  # an env var not named secret is part of the spec
