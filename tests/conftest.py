"""Suite-wide rules. Under CI=true a skipped integration or reliability test fails the run, unless
it is marked as needing what CI cannot have (``realcluster``): a missing sshd, `ip`, mount
permission or SkyPilot install must not turn the checks that need them into silent skips."""

from __future__ import annotations

import os
from collections.abc import Generator

import pluggy
import pytest

STRICT_DIRS = ("tests/integration/", "tests/reliability/", "tests/examples/")

# A `skyflow plan` that a test runs from a terminal (pytest -s) would leave a daemon behind for its
# SKYFLOW_HOME; the tests of that start it themselves (tests/integration/cli/test_daemon.py).
os.environ["SKYFLOW_DAEMON"] = "manual"


def _register_hypothesis_profiles() -> None:
    """`--hypothesis-profile=mutation` (the mutation pass): a property test that fails stops there, not
    shrinking its example for minutes (every failure is a killed mutant; the example is not wanted), and
    writes nothing to the example database that the suite keeps."""
    from hypothesis import Phase, settings

    settings.register_profile("mutation", phases=(Phase.explicit, Phase.reuse, Phase.generate), database=None)


_register_hypothesis_profiles()


def _strict(item: pytest.Item) -> bool:
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return False
    path = item.nodeid.replace("\\", "/")
    return path.startswith(STRICT_DIRS) and item.get_closest_marker("realcluster") is None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _strict(item) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true, where everything this test needs is installed by .ci/run: "
                           f"{reason}")


@pytest.fixture(autouse=True)
def _fresh_filesystems() -> Generator[None, None, None]:
    """Each test's object-store clients are its own. fsspec keeps one filesystem per set of arguments
    for the life of the process, and a store opened from the environment (AWS_ENDPOINT_URL and the
    like) passes none: without this, a test would reuse the client an earlier test made for its own
    server, which may be gone."""
    yield
    from fsspec.registry import registry

    for implementation in set(registry.values()):
        implementation.clear_instance_cache()
