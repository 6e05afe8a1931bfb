"""Which backend a placement's infra names, and what a kind with no backend installed says."""

from __future__ import annotations

import pytest

from skyflow.backends.registry import BackendContext, BackendPool, backend_kind
from skyflow.errors import BackendError


@pytest.mark.parametrize(("infra", "kind"), [("k8s/gke", "kubernetes"), ("kubernetes", "kubernetes"),
                                             ("ssh/lab", "ssh"), ("ray/gpu", "ray"), ("local", "local"),
                                             ("aws/us-east-1", "skypilot")])
def test_each_infra_goes_to_its_backend(infra: str, kind: str) -> None:
    assert backend_kind(infra) == kind


def test_a_kind_without_a_backend_points_at_running_locally() -> None:
    with pytest.raises(BackendError, match=r"^no backend for 'nomad' is available in this installation; "
                                           r"run with --infra local to use this machine$") as caught:
        BackendPool(BackendContext()).get("nomad")
    assert caught.value.backend == "nomad"
