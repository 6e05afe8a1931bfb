"""This machine's GPUs as skyflow reads them (`nvidia-smi`, or SKYFLOW_LOCAL_GPUS) and how GpuAllocator
shares them between stages: whole devices for whole counts, one device shared by fractions, a wait
for a busy device, and a refusal for more devices than there are."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from skyflow.backends.gpus import GpuAllocator, _short_name, detect_gpus
from skyflow.backends.local import detect_capacity
from skyflow.errors import BackendError

SMI_QUERY = "--query-gpu=index,name --format=csv,noheader"


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where to write what a fake `nvidia-smi`, first on PATH, prints for skyflow's query."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = tmp_path / "answer"
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\n[ "$*" = "{SMI_QUERY}" ] || exit 9\ncat {answer}\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    monkeypatch.delenv("SKYFLOW_LOCAL_GPUS", raising=False)
    return answer


def test_gpus_come_from_nvidia_smi_with_the_catalog_s_short_names(nvidia_smi: Path) -> None:
    nvidia_smi.write_text("0, Tesla T4\n1, Tesla T4\n2, NVIDIA H100 80GB HBM3\n3, NVIDIA A100-SXM4-40GB\n")
    assert detect_gpus() == {0: "T4", 1: "T4", 2: "H100", 3: "A100"}
    assert detect_capacity().gpus == {"T4": 2, "H100": 1, "A100": 1}


# What nvidia-smi calls each card, and the catalog's name (`skyflow catalog gpus`) a stage asks for.
SMI_NAMES = {
    "Tesla T4": "T4", "NVIDIA L4": "L4", "NVIDIA A10G": "A10G", "NVIDIA L40S": "L40S", "NVIDIA H200": "H200",
    "NVIDIA H100 80GB HBM3": "H100", "NVIDIA GH200 480GB": "GH200", "Tesla V100-SXM2-16GB": "V100",
    "NVIDIA A100-SXM4-40GB": "A100", "NVIDIA A100-PCIE-40GB": "A100", "NVIDIA A100-SXM4-80GB": "A100-80GB",
    "NVIDIA A100 80GB PCIe": "A100-80GB", "NVIDIA GeForce RTX 4090": "RTX4090",
}


@pytest.mark.parametrize(("reported", "catalog"), SMI_NAMES.items(), ids=[n.replace(" ", "_") for n in SMI_NAMES])
def test_each_card_is_known_by_the_name_stages_ask_for(nvidia_smi: Path, reported: str, catalog: str) -> None:
    nvidia_smi.write_text(f"0, {reported}\n")
    assert detect_gpus() == {0: catalog}


def test_a_failing_or_missing_nvidia_smi_means_no_gpus(nvidia_smi: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (nvidia_smi.parent / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_gpus() == {}
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert detect_gpus() == {}
    assert detect_capacity().gpus == {}


def test_skyflow_local_gpus_overrides_nvidia_smi(nvidia_smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nvidia_smi.write_text("0, Tesla T4\n")
    monkeypatch.setenv("SKYFLOW_LOCAL_GPUS", "0:A100,1:A100")
    assert detect_gpus() == {0: "A100", 1: "A100"}
    monkeypatch.setenv("SKYFLOW_LOCAL_GPUS", "")  # pinned to none
    assert detect_gpus() == {}


def _acquire(gpus: GpuAllocator, count: float, within_s: float = 30) -> list[int] | None:
    """``gpus.acquire(count)``, which must answer within ``within_s`` (an upper bound: it waits only
    while the devices it needs are held)."""
    answer: list[list[int] | None] = []
    failure: list[BaseException] = []

    def ask() -> None:
        try:
            answer.append(gpus.acquire(count))
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(within_s)
    if failure:
        raise failure[0]
    assert answer, f"acquire({count:g}) still waits after {within_s:g} s"
    return answer[0]


def test_whole_gpus_go_to_one_stage_each() -> None:
    gpus = GpuAllocator({0: "T4", 1: "T4", 2: "T4", 3: "T4"})
    first, second = _acquire(gpus, 2), _acquire(gpus, 2)
    assert first is not None and second is not None
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    gpus.release(first, 2)
    assert _acquire(gpus, 1) in [[d] for d in first]


def test_no_gpu_wanted_is_no_assignment() -> None:
    assert _acquire(GpuAllocator({0: "T4"}), 0) is None


def test_fractions_share_a_device_until_it_is_full() -> None:
    gpus = GpuAllocator({0: "T4", 1: "T4"})
    halves = [_acquire(gpus, 0.5), _acquire(gpus, 0.5)]
    assert halves[0] == halves[1] and halves[0] is not None and len(halves[0]) == 1
    whole = _acquire(gpus, 1)
    assert whole is not None and whole != halves[0], "a device already shared out in halves was given whole"


def test_a_stage_waits_for_a_busy_device_and_gets_the_one_released() -> None:
    gpus = GpuAllocator({0: "T4", 1: "T4"})
    held = [_acquire(gpus, 1), _acquire(gpus, 1)]
    got: list[list[int] | None] = []
    waiter = threading.Thread(target=lambda: got.append(gpus.acquire(1)), daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert not got, "a third stage got a device while both were held"
    gpus.release(held[1], 1)
    waiter.join(30)
    assert got == [held[1]]


@pytest.mark.parametrize("count", [3, 2.5])
def test_more_gpus_than_the_machine_has_is_refused_naming_what_it_has(count: float) -> None:
    gpus = GpuAllocator({0: "T4", 1: "T4"})
    with pytest.raises(BackendError, match=f"^stage wants {count:g} GPUs; this machine has 2$"):
        _acquire(gpus, count)
    assert sorted(_acquire(gpus, 2) or []) == [0, 1], "a refused request must not hold any device"


def test_a_machine_without_gpus_gives_a_gpu_stage_no_devices() -> None:
    assert GpuAllocator({}).acquire(1) == []


def test_a_name_without_a_model_number_is_kept_as_it_is() -> None:
    assert _short_name("Tesla Prototype") == "Tesla Prototype"
