"""SkyPilot's resources fields: the forms each accepts, what they normalize to, and each refusal at its
FILE:LINE:COL with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyflow.errors import SpecError
from skyflow.spec.accelerators import canonical_accelerator
from skyflow.spec.loader import load_pipeline
from skyflow.spec.resources import Accelerator, JobRecovery, Quantity, Resources

STAGE = "name: x\nstages:\n  a:\n    run: x\n    resources: {fields}\n"


def _resources(tmp_path: Path, fields: str) -> Resources:
    path = tmp_path / "pipeline.yaml"
    path.write_text(STAGE.format(fields=fields))
    return load_pipeline(path).stages["a"].resources


def _refusal(tmp_path: Path, fields: str) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(STAGE.format(fields=fields))
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5:"), message
    return message.removeprefix(f"{path}:5:")


@pytest.mark.parametrize(("fields", "message"), [
    ("{cpus: '0+'}", "23: stages.a.resources.cpus: cpus must be positive, got '0+'"),
    ("{cpu_arch: 64}", "27: stages.a.resources.cpu_arch: must be one of x86_64, arm64, any, got 64"),
    ("{infra: 5}", "24: stages.a.resources.infra: input should be a valid string, got 5"),
    ("{spot_recovery: FAILOVER, job_recovery: NONE}",
     "16: stages.a.resources: give job_recovery or its older spelling spot_recovery, not both. Keep job_recovery."),
    ("{any_of: [{cpus: 2}], ordered: [{cpus: 4}]}",
     "16: stages.a.resources: give any_of or ordered, not both. Keep one list of alternatives."),
    ("{disk_size: big}", "28: stages.a.resources.disk_size: disk_size must be a number of GB, got 'big'. Write "
                         "disk_size: 256."),
    ("{accelerators: 5}", "31: stages.a.resources.accelerators: accelerators must be 'NAME:COUNT', got 5. Write "
                          "accelerators: A100:8."),
    ("{accelerators: ''}", "31: stages.a.resources.accelerators: accelerators must be 'NAME:COUNT', got ''. Write "
                           "accelerators: A100:8."),
    ("{ports: true}", "24: stages.a.resources.ports: ports must be numbers or ranges like 8000 or '10020-10040', "
                      "got True. Write ports: 8000."),
], ids=["zero-at-least", "arch-number", "infra-number", "both-recoveries", "any-of-and-ordered", "disk-word",
        "accelerators-number", "accelerators-empty", "ports-bool"])
def test_a_bad_resources_field_is_refused_at_its_value(tmp_path: Path, fields: str, message: str) -> None:
    assert _refusal(tmp_path, fields) == message


def test_a_value_that_fails_every_form_of_a_field_is_one_issue(tmp_path: Path) -> None:
    """autostop takes a bool, a number, a string or a mapping: a list fails each, reported once."""
    assert _refusal(tmp_path, "{autostop: [1]}") == "27: stages.a.resources.autostop: input should be a valid boolean"


def test_lenient_forms_normalize_to_one_value(tmp_path: Path) -> None:
    res = _resources(tmp_path, "{disk_size: '256 GiB', ports: null, infra: '*/us-east-1', accelerators: {A100: null},"
                               " job_recovery: {strategy: auto, recover_on_exit_codes: 3}}")
    assert res.disk_size == 256 and res.ports == ()
    assert res.accelerators == (Accelerator(name="A100", count=1.0),)
    assert res.job_recovery == JobRecovery(strategy=None, recover_on_exit_codes=(3,))
    assert res.location() == (None, "us-east-1", None)


def test_older_spellings_aliases_and_tpus_are_understood(tmp_path: Path) -> None:
    res = _resources(tmp_path, "{spot_recovery: failover, infra: K8S/my-ctx, accelerators: TPU-v5e-8, "
                               "ports: [8000, '10020-10040']}")
    assert res.job_recovery is not None and res.job_recovery.strategy == "FAILOVER"
    assert res.infra == "kubernetes/my-ctx" and res.location() == ("kubernetes", "my-ctx", None)
    assert res.accelerators == (Accelerator(name="tpu-v5e-8", count=1.0),)
    assert res.ports == ("8000", "10020-10040")
    assert canonical_accelerator("TPU-V4-8") == "tpu-v4-8" and canonical_accelerator("tpu-x") is None


@pytest.mark.parametrize(("quantity", "offered", "cpus", "fits"), [
    (Quantity(amount=8), 8, 0, True),
    (Quantity(amount=8), 16, 0, False),
    (Quantity(amount=8, at_least=True), 16, 0, True),
    (Quantity(amount=8, at_least=True), 4, 0, False),
    (Quantity(amount=4, per_cpu=True), 32, 8, True),
    (Quantity(amount=4, per_cpu=True), 31, 8, False),
])
def test_a_quantity_is_met_exactly_at_least_or_per_cpu(quantity: Quantity, offered: float, cpus: float,
                                                       fits: bool) -> None:
    assert quantity.satisfied_by(offered, cpus) is fits
