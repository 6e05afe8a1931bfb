"""CPU architecture and burstable CPUs read from instance family names, where a catalog has no column."""

from __future__ import annotations

import pytest

from skyflow.catalog.families import ARM64, X86_64, arch_of, is_burstable, normalize_arch


@pytest.mark.parametrize(("cloud", "instance", "accelerator", "arch"), [
    ("aws", "m7g.large", None, ARM64), ("aws", "c7gn.2xlarge", None, ARM64), ("aws", "r6gd.xlarge", None, ARM64),
    ("aws", "t4g.micro", None, ARM64), ("aws", "x2gd.large", None, ARM64), ("aws", "im4gn.large", None, ARM64),
    ("aws", "is4gen.large", None, ARM64), ("aws", "g5g.xlarge", "T4G", ARM64), ("aws", "a1.large", None, ARM64),
    ("aws", "m6i.2xlarge", None, X86_64), ("aws", "g4dn.xlarge", "T4", X86_64), ("aws", "p4d.24xlarge", "A100", X86_64),
    ("aws", "t3.micro", None, X86_64), ("aws", "m7i-flex.large", None, X86_64), ("aws", "gr6.4xlarge", "L4", X86_64),
    ("aws", "u-6tb1.metal", None, X86_64), ("aws", "p6e-gb200.36xlarge", "GB200", ARM64),
    ("azure", "Standard_B2pts_v2", None, ARM64), ("azure", "Standard_B8ps_v2", None, ARM64),
    ("azure", "Standard_B4pls_v2", None, ARM64), ("azure", "Standard_D4pds_v5", None, ARM64),
    ("azure", "Standard_E2ps_v5", None, ARM64), ("azure", "Standard_D8s_v5", None, X86_64),
    ("azure", "Standard_NC24ads_A100_v4", "A100-80GB", X86_64), ("azure", "Standard_NP10s", None, X86_64),
    ("azure", "Standard_B2ats_v2", None, X86_64), ("gcp", "t2a-standard-4", None, ARM64),
    ("gcp", "c4a-highmem-8", None, ARM64), ("gcp", "t2d-standard-4", None, X86_64),
    ("gcp", "n2-standard-8", None, X86_64), ("lambda", "gpu_1x_gh200", "GH200", ARM64),
    ("lambda", "gpu_1x_a100_sxm4", "A100", X86_64), ("oci", "VM.Standard.A1.Flex", None, ARM64),
])
def test_architecture_from_the_family(cloud: str, instance: str, accelerator: str | None, arch: str) -> None:
    assert arch_of(cloud, instance, accelerator) == arch


@pytest.mark.parametrize(("cloud", "instance", "burstable"), [
    ("aws", "t2.micro", True), ("aws", "t3a.large", True), ("aws", "t4g.small", True), ("aws", "m6i.large", False),
    ("aws", "trn1.2xlarge", False), ("azure", "Standard_B2pts_v2", True), ("azure", "Standard_B1ls", True),
    ("azure", "Standard_D2s_v5", False), ("gcp", "e2-micro", True), ("gcp", "e2-medium", True),
    ("gcp", "f1-micro", True), ("gcp", "g1-small", True), ("gcp", "e2-standard-2", False),
    ("lambda", "cpu_4x_generalx", False),
])
def test_burstable_from_the_family(cloud: str, instance: str, burstable: bool) -> None:
    assert is_burstable(cloud, instance) is burstable


def test_catalog_arch_cells() -> None:
    assert [normalize_arch(v) for v in ("arm64", " AArch64", "x86_64", "i386", "", "riscv")] == [
        ARM64, ARM64, X86_64, X86_64, None, None]
