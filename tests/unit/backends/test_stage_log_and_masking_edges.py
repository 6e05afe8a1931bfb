"""A stage log after it was closed, what a failed write is called (a full disk, naming its device, or
any other error), and the masking process of a service when its log sits on a full disk."""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from skyflow.backends import masking, stage_log
from skyflow.backends.masking import MASK, mask_secrets
from skyflow.backends.stage_log import StageLog, describe_write_failure


def test_a_closed_log_drops_writes_and_closing_twice_is_harmless(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "stage.log")
    log.write(b"before\n")
    log.close()
    assert log.write(b"after\n") == 0
    log.flush()
    log.close()
    assert (tmp_path / "stage.log").read_bytes() == b"before\n"


def test_a_write_that_fails_for_another_reason_says_so_with_the_systems_words(tmp_path: Path) -> None:
    failure = OSError(errno.EACCES, "Permission denied")
    assert describe_write_failure(tmp_path / "stage.log", failure) == \
        f"writing its log {tmp_path / 'stage.log'} failed: Permission denied"
    assert describe_write_failure(tmp_path / "x", OSError("disk went away"), what="") == \
        f"writing {tmp_path / 'x'} failed: disk went away"


def _mounts(text: str | None) -> Any:
    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        assert path == "/proc/self/mounts"
        if text is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return io.StringIO(text)
    return fake_open


def test_a_full_disk_is_named_by_its_mount_point_skipping_lines_that_are_not_mounts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_log, "open", _mounts("garbage\n/dev/sda1 / ext4 rw 0 0\n"), raising=False)
    text = describe_write_failure(tmp_path / "stage.log", OSError(errno.ENOSPC, "No space left on device"))
    assert text.startswith(f"no space left on the device holding its log {tmp_path / 'stage.log'} "
                           "(ext4 mounted at /, ")
    assert text.endswith("KiB free now); free space there, then `skyflow resume` the run")


def test_without_a_mount_table_a_full_disk_is_named_by_its_device_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_log, "open", _mounts(None), raising=False)
    text = describe_write_failure(tmp_path / "stage.log", OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert f"(device {tmp_path.stat().st_dev}, " in text


def test_a_full_disk_whose_folder_is_gone_is_named_without_free_space(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_log, "open", _mounts(None), raising=False)
    text = describe_write_failure(tmp_path / "gone" / "stage.log", OSError(errno.ENOSPC, "No space left on device"))
    assert text == (f"no space left on the device holding its log {tmp_path / 'gone' / 'stage.log'} (its device); "
                    "free space there, then `skyflow resume` the run")


def test_empty_secret_values_mask_nothing() -> None:
    assert mask_secrets("token= and more", ["", "more"]) == f"token= and {MASK}"


def test_the_service_masker_on_a_full_disk_reads_on_and_says_why_once(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full, a device every write to fails with ENOSPC")
    monkeypatch.setenv("SKYFLOW_MASK_VALUES", '["s3cr3t"]')
    monkeypatch.setenv("SKYFLOW_LOG_MAX_BYTES", "")
    stdin = io.TextIOWrapper(io.BytesIO(b"serving with s3cr3t\n" * 1000))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert masking.main(["/dev/full"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("skyflow: service log: no space left on the device holding its log /dev/full (")
    assert err.count("\n") == 1 and stdin.buffer.closed  # read to its end, then closed
