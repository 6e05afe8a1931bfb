"""This machine's GPUs and how concurrent stages share them (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from skyflow.errors import BackendError


def detect_gpus() -> dict[int, str]:
    """Device index -> accelerator name, from nvidia-smi; empty on a machine without GPUs."""
    if os.environ.get("SKYFLOW_LOCAL_GPUS") is not None:  # e.g. "0:A100,1:A100" to pin or test
        pairs = [p.split(":", 1) for p in os.environ["SKYFLOW_LOCAL_GPUS"].split(",") if p.strip()]
        return {int(i): name for i, name in pairs}
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=index,name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    gpus = {}
    for line in out.splitlines():
        index, _, name = line.partition(",")
        gpus[int(index)] = _short_name(name.strip())
    return gpus


def _short_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; the catalog's names are short: no form factor or memory
    ('Tesla V100-SXM2-16GB' -> 'V100') but the 80 GB A100's ('NVIDIA A100-SXM4-80GB' -> 'A100-80GB'),
    and RTX in one word ('NVIDIA GeForce RTX 4090' -> 'RTX4090')."""
    words = name.upper().replace("NVIDIA", "").replace("GEFORCE", "").split()
    for i, word in enumerate(words):
        if any(ch.isdigit() for ch in word):
            model = ("RTX" if i and words[i - 1] == "RTX" else "") + word.split("-")[0]
            parts = [part for w in words for part in w.split("-")]
            return f"{model}-80GB" if model == "A100" and "80GB" in parts else model
    return name


class GpuAllocator:
    """Whole devices for whole counts; fractional requests share one device until it is full."""

    def __init__(self, devices: dict[int, str]) -> None:
        self._free = {index: 1.0 for index in devices}
        self._lock = threading.Condition()

    def acquire(self, count: float) -> list[int] | None:
        """Devices for ``count`` GPUs, waiting until they are free; None when no GPU is wanted."""
        if count <= 0:
            return None
        if count > len(self._free) and self._free:
            raise BackendError(f"stage wants {count:g} GPUs; this machine has {len(self._free)}")
        if not self._free:
            return []
        with self._lock:
            while True:
                chosen = self._choose(count)
                if chosen is not None:
                    share = count if count < 1 else 1.0
                    for index in chosen:
                        self._free[index] -= share
                    return chosen
                self._lock.wait()

    def _choose(self, count: float) -> list[int] | None:
        if count < 1:
            shared = [i for i, free in sorted(self._free.items()) if free >= count - 1e-9]
            return shared[:1] or None
        whole = [i for i, free in sorted(self._free.items()) if free >= 1.0 - 1e-9]
        return whole[: int(count)] if len(whole) >= count else None

    def release(self, devices: list[int] | None, count: float) -> None:
        if not devices:
            return
        share = count if count < 1 else 1.0
        with self._lock:
            for index in devices:
                self._free[index] = min(1.0, self._free[index] + share)
            self._lock.notify_all()
