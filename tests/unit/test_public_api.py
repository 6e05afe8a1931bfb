"""The public API of every package, pinned: a name added, renamed or dropped is a decision, not an accident."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from skyflow.backends.base import Backend, RenderingBackend, ServiceBackend, WriteAheadBackend

PUBLIC = {
    "skyflow": ["Input", "Pipeline", "Placement", "Plan", "PlanningOptions", "Resources", "RunOptions", "RunResult",
                "Session", "SkyflowError", "SpecError", "__version__", "load_pipeline", "plan", "run", "stage"],
    "skyflow.backends": ["Backend", "Capacity", "Leftover", "RemoteHandle", "RenderingBackend", "Service",
                         "ServiceBackend", "StageExit", "StageHandle", "StageLaunch", "WriteAheadBackend"],
    "skyflow.cli": ["cli"],
    "skyflow.lineage": ["LineageNode", "LineageRecorder", "NullRecorder", "Producer", "RunInfo", "StageRecord",
                        "open_recorder", "resolve_tracking_uri"],
    "skyflow.planner": ["LOCAL_PLACEMENT", "Alternative", "CachedCopy", "EgressCharge", "LocalCapacity", "Placement",
                        "Plan", "Policy", "PoolLocation", "explain_stage", "forced_plan", "plan_pipeline"],
    "skyflow.runner": ["EventBus", "RunContext", "RunEvent", "RunLoop", "RunOptions", "RunRow", "RunStore",
                       "StageOutcome", "StageRow", "StageWork", "build_launch", "preview_launch"],
    "skyflow.session": ["DryRunStage", "PlanningOptions", "RunOptions", "RunResult", "Session",
                        "detect_enabled_clouds", "pools_from_config"],
    "skyflow.spec": ["Accelerator", "PipelineSpec", "ResolvedPipeline", "Resources", "Service", "Stage",
                     "load_pipeline", "resolve_decorated"],
    "skyflow.states": ["DONE", "FINAL", "RunState", "StageState"],
    "skyflow.home": ["cache_dir", "skyflow_home"],
    "skyflow.matching": ["close_matches"],
    "skyflow.processes": ["KILL_GRACE_S", "STAGE_TOKEN_VARIABLE", "attempt_token", "end_attempt",
                          "end_processes_with_token", "group_alive", "kill_process_groups", "new_stage_token",
                          "process_alive", "processes_with_token"],
}
PACKAGES = ["skyflow.artifacts", "skyflow.catalog", "skyflow.scheduler", *PUBLIC]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned(module: str) -> None:
    assert sorted(importlib.import_module(module).__all__) == sorted(PUBLIC[module])


@pytest.mark.parametrize("module", sorted(set(PACKAGES)))
def test_every_public_name_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__, f"{module} has no __all__"
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_every_public_name_imports_in_a_fresh_interpreter() -> None:
    """As a user's program meets them: `from PACKAGE import NAME` in a process where none of the package's
    submodules is loaded yet (other tests load them first, which hid that `from skyflow.cli import cli`
    recursed until it failed). One process per package that imports its names lazily; each name is
    imported with the package's submodules unloaded again."""
    check = """\
import importlib, sys
package = sys.argv[1]
for name in importlib.import_module(package).__all__:
    for loaded in [m for m in sys.modules if m.startswith(package + ".")]:
        del sys.modules[loaded]
        parent, _, child = loaded.rpartition(".")
        if parent in sys.modules:
            vars(sys.modules[parent]).pop(child, None)
    exec(f"from {package} import {name} as found\\nassert found is not None")
"""
    lazy = [m for m in sorted(set(PACKAGES)) if "__getattr__" in vars(importlib.import_module(m))]
    assert "skyflow.cli" in lazy
    for package in lazy:
        done = subprocess.run([sys.executable, "-c", check, package], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{package}: {done.stderr[-1500:]}"


@pytest.mark.parametrize(("module", "name", "abilities"), [
    ("skyflow.backends.local", "LocalBackend", {ServiceBackend}),
    ("skyflow.backends.ssh", "SshBackend", set()),
    ("skyflow.backends.ssh", "SshBackends", set()),
    ("skyflow.backends.kubernetes", "KubernetesBackend", {ServiceBackend, RenderingBackend}),
    ("skyflow.backends.skypilot", "SkyPilotBackend", {ServiceBackend, RenderingBackend, WriteAheadBackend}),
    ("skyflow.backends.fake", "FakeBackend", {ServiceBackend, RenderingBackend}),
])
def test_each_backend_says_what_it_can_do_through_the_protocols(module: str, name: str, abilities: set[type]) -> None:
    cls = getattr(importlib.import_module(module), name)
    for method in ("capacity", "launch", "abandon"):
        assert callable(getattr(cls, method, None)), f"{name} lacks {method} of the Backend protocol"
        assert method in dir(Backend)
    for protocol in (ServiceBackend, RenderingBackend, WriteAheadBackend):
        methods = [m for m in ("serve", "stop_service", "render", "planned_remote") if m in dir(protocol)]
        has = all(inspect.isfunction(getattr(cls, m, None)) for m in methods)
        assert has == (protocol in abilities), f"{name} and {protocol.__name__}"
