"""Accelerator names skyflow knows, their canonical spelling, and parsing of 'A100:8' forms."""

from __future__ import annotations

import re

KNOWN_ACCELERATORS: tuple[str, ...] = (
    "A10", "A10G", "A100", "A100-80GB", "A100-80GB-SXM", "A40", "A4000", "A5000", "A6000",
    "B100", "B200", "GB200", "GH200", "H100", "H100-MEGA", "H100-NVL", "H100-SXM", "H200",
    "K80", "K520", "L4", "L40", "L40S", "M60", "P100", "P4", "P40", "T4", "T4g", "V100",
    "V100-32GB", "RTX3060", "RTX3070", "RTX3080", "RTX3090", "RTX4060", "RTX4070", "RTX4080",
    "RTX4090", "RTX5070", "RTX5080", "RTX5090", "RTX4000-Ada", "RTX5880-Ada", "RTX6000",
    "RTX6000-Ada", "RTXA4000", "RTXA5000", "RTXA6000", "RTXPRO6000", "RTXPRO6000WS",
    "MI25", "MI100", "MI210", "MI250", "MI300X", "MI325X", "Gaudi", "Gaudi2", "Gaudi3",
    "Inferentia", "Inferentia2", "Trainium", "Trainium2", "A100-40GB",
)
_CANONICAL = {name.lower(): name for name in KNOWN_ACCELERATORS}
_TPU = re.compile(r"^tpu-v\d+[a-z]*(-\d+)?$", re.IGNORECASE)


def canonical_accelerator(name: str) -> str | None:
    """The canonical spelling of ``name`` (case-insensitive), or None when unknown."""
    if _TPU.match(name):
        return name.lower()
    return _CANONICAL.get(name.lower())


def known_accelerators() -> list[str]:
    return sorted(set(_CANONICAL.values()))
