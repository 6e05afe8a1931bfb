"""Reliability and security tests: fuzzed inputs, leaked secrets, unsafe paths, faults, load."""

from __future__ import annotations

import pytest

# Real servers shared with the integration suite, and the `skyflow` process helper.
from tests.integration.conftest import s3_server
from tests.integration.lineage.conftest import MlflowServer
from tests.integration.runner.conftest import Skyflow, skyflow

__all__ = ["MlflowServer", "Skyflow", "s3_server", "skyflow"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: property-based fuzzing of every input skyflow reads")
    config.addinivalue_line("markers", "faults: faults injected into a real run (kills, dead servers, full disks)")
