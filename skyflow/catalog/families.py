"""CPU architecture and burstable CPUs of an instance type, read from its family name.

Catalogs rarely say either (SkyPilot's AWS file has an ``Arch`` column; GCP, Azure and Lambda have
none), yet both decide whether a job runs: an x86_64 image does not boot on Arm, and a burstable
VM runs at full speed only until its CPU credits are spent. The names encode both:
- AWS: a ``g`` among the attributes after the generation is Graviton (m7g, c7gn, r6gd, t4g, x2gd,
  im4gn, is4gen, g5g), as are a1 and mac2 and later; the ``t`` families (t2, t3, t3a, t4g) burst.
- Azure: a ``p`` among the additive features is Arm (D2ps_v5, E4pds_v5, B2pts_v2); the B series
  bursts.
- GCP: t2a, c4a and n4a are Arm; e2-micro/small/medium, f1-micro and g1-small are shared-core.
- OCI: the VM.Standard.A shapes are Arm.
- Any cloud: a Grace superchip (GH200, GB200, GB300) is Arm.
"""

from __future__ import annotations

import re

X86_64 = "x86_64"
ARM64 = "arm64"
ARCHES = (X86_64, ARM64)  # a catalog column stores the index into this tuple

_ARM_ACCELERATORS = frozenset({"gh200", "gb200", "gb300"})
_AWS = re.compile(r"^(?P<family>[a-z]+)(?P<gen>\d+)(?P<attrs>[a-z]*)(?:-[a-z0-9]+)?\.")
_AZURE = re.compile(r"^Standard_(?P<family>[A-Z]+)\d+(?:-\d+)?(?P<features>[a-z]*)")
_GCP_ARM = frozenset({"t2a", "c4a", "n4a"})
_GCP_SHARED_CORE = frozenset({"e2-micro", "e2-small", "e2-medium", "f1-micro", "g1-small"})


def normalize_arch(value: str) -> str | None:
    """A catalog's ``Arch`` cell as x86_64 or arm64; None when it says neither (then ask the family)."""
    lowered = value.strip().lower()
    if lowered in ("arm64", "aarch64", "arm"):
        return ARM64
    if lowered in ("x86_64", "amd64", "x86", "i386"):
        return X86_64
    return None


def arch_of(cloud: str, instance_type: str, accelerator: str | None) -> str:
    """x86_64 or arm64, from the accelerator (Grace chips) and the instance family's name."""
    if accelerator and accelerator.lower() in _ARM_ACCELERATORS:
        return ARM64
    if cloud == "aws":
        m = _AWS.match(instance_type)
        if m is None:
            return X86_64
        family, gen = m.group("family"), int(m.group("gen"))
        arm = "g" in m.group("attrs") or (family == "a" and gen == 1) or (family == "mac" and gen >= 2)
        return ARM64 if arm else X86_64
    if cloud == "azure":
        m = _AZURE.match(instance_type)
        return ARM64 if m is not None and "p" in m.group("features") else X86_64
    if cloud == "gcp":
        return ARM64 if instance_type.split("-", 1)[0] in _GCP_ARM else X86_64
    if cloud == "oci":
        return ARM64 if instance_type.startswith("VM.Standard.A") else X86_64
    return X86_64


def is_burstable(cloud: str, instance_type: str) -> bool:
    """Whether the CPUs are shared or credit-based (no sustained full speed)."""
    if cloud == "aws":
        m = _AWS.match(instance_type)
        return m is not None and m.group("family") == "t"
    if cloud == "azure":
        m = _AZURE.match(instance_type)
        return m is not None and m.group("family") == "B"
    if cloud == "gcp":
        return instance_type in _GCP_SHARED_CORE
    return False
