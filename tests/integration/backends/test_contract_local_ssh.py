"""The backend contract run against the local backend and an SSH pool of real sshd hosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyflow.backends.base import StageHandle
from skyflow.backends.local import LocalBackend, detect_capacity
from skyflow.backends.ssh import SshBackend
from skyflow.planner import Placement
from skyflow.processes import group_alive
from tests.integration.backends.conftest import SshPoolSetup
from tests.integration.backends.contract import *  # noqa: F403 - the contract's tests run here
from tests.integration.backends.contract import BackendHarness


def _ssh_alive(handle: StageHandle) -> bool:
    # the pool's hosts are sshd processes on this machine, so their process groups are visible here
    return any(group_alive(pgid) for pgid in handle.remote_groups.values())  # type: ignore[attr-defined]


@pytest.fixture(params=["local", "ssh"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendHarness]:
    lines: list[tuple[str, str]] = []

    def on_line(stage: str, line: str) -> None:
        lines.append((stage, line))

    if request.param == "local":
        yield BackendHarness(LocalBackend(detect_capacity(), on_line=on_line),
                             alive=lambda h: any(group_alive(g) for g in h.process_groups), lines=lines)
        return
    setup: SshPoolSetup = request.getfixturevalue("loopback_pool")
    backend = SshBackend("lab", setup.pool, on_line=on_line, known_hosts=str(setup.known_hosts))
    placement = Placement(infra="ssh/lab", cloud="ssh", region="lab", zone=None, instance_type="ssh:lab",
                          accelerators={}, use_spot=False, num_nodes=1, hourly_usd=0.0, hours=0.0)
    yield BackendHarness(backend, alive=_ssh_alive, lines=lines, placement=placement)
