"""`skyflow artifacts ls | gc | show | get` in-process on local stores: the human output, stores that
were never written to, digest prefixes that name several artifacts or only one in another store, and
arguments refused before anything is copied."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyflow.artifacts import commit_output, open_store
from skyflow.artifacts.refs import ArtifactRef, manifest_key
from skyflow.cli.artifacts_commands import _size
from tests.unit.cli.cli_helpers import run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "skyflow"
    monkeypatch.setenv("SKYFLOW_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    return home


def commit(store_dir: Path, tmp_path: Path, name: str, data: bytes) -> ArtifactRef:
    source = tmp_path / "sources" / name
    source.mkdir(parents=True)
    (source / "data.bin").write_bytes(data)
    return commit_output(open_store(str(store_dir)), source, name=name)


def test_ls_prints_one_line_per_artifact_and_skips_stores_never_written(home: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ref = commit(home / "artifacts", tmp_path, "model", b"w" * 2_500_000)
    code, out, _ = run(["artifacts", "ls", "--store", str(tmp_path / "never-written")], capsys)
    assert code == 0
    store = re.escape(str(home / "artifacts"))
    assert re.fullmatch(rf"{re.escape(ref.digest[:19])}\s+1 files\s+2\.5 MB\s+0\.0 h\s+{store}\n", out), out
    assert not (tmp_path / "never-written").exists()


def test_gc_says_what_it_would_remove_and_then_removes_it(home: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    ref = commit(home / "artifacts", tmp_path, "orphan", b"o" * 1500)
    args = ["artifacts", "gc", "--keep-last", "1", "--min-age", "0s", "--store", str(tmp_path / "never-written")]
    code, out, _ = run([*args, "--dry-run"], capsys)
    assert code == 0
    assert out == f"{home / 'artifacts'}: would remove 1 artifacts, 1 blobs (1.5 kB), 0 cache entries\n"
    assert open_store(str(home / "artifacts")).size_of(manifest_key(ref.digest)) is not None
    code, out, _ = run(args, capsys)
    assert (code, out) == (0, f"{home / 'artifacts'}: removed 1 artifacts, 1 blobs (1.5 kB), 0 cache entries\n")
    assert open_store(str(home / "artifacts")).list_keys("manifests") == {}


def test_show_refuses_a_prefix_that_names_several_artifacts(home: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    commit(home / "artifacts", tmp_path, "a", b"first")
    commit(home / "artifacts", tmp_path, "b", b"second")
    code, _, err = run(["artifacts", "show", "sha256:"], capsys)
    assert code == 2
    assert f"digest prefix 'sha256:' names 2 artifacts in {home / 'artifacts'}; give more of it" in err


def test_show_finds_a_prefix_in_the_store_that_has_it(home: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    commit(home / "artifacts", tmp_path, "here", b"in the default store")
    other = tmp_path / "zz-team-store"
    ref = commit(other, tmp_path, "there", b"x" * 2048)
    prefix = ref.digest.removeprefix("sha256:")[:12]
    code, out, _ = run(["artifacts", "show", prefix, "--store", str(other)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{ref.digest}  dir, 1 files, 2.0 kB  {ref.uri}"
    assert re.fullmatch(r"  data\.bin  2\.0 kB  sha256:[0-9a-f]{64}", lines[1])


@pytest.mark.parametrize(("args", "message"), [
    (["r1", "eval"], "'eval' is not STAGE.OUTPUT (e.g. eval.report)"),
    (["r1", "eval."], "'eval.' is not STAGE.OUTPUT"),
])
def test_get_refuses_an_output_that_is_not_stage_dot_name(home: Path, capsys: pytest.CaptureFixture[str],
                                                          args: list[str], message: str) -> None:
    code, _, err = run(["artifacts", "get", *args], capsys)
    assert code == 2 and message in err


def test_get_refuses_a_destination_that_holds_files(home: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, _, err = run(["artifacts", "get", "r1", "eval.report", str(dest)], capsys)
    assert code == 2 and f"{dest} exists and is not empty; name another folder" in err
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("size", "shown"), [(999, "999 B"), (1000, "1.0 kB"), (999_949, "999.9 kB"),
                                             (2_500_000, "2.5 MB"), (7_000_000_000, "7.0 GB"),
                                             (5_000_000_000_000, "5000.0 GB")])
def test_sizes_are_shown_in_the_largest_unit_below_a_thousand(size: int, shown: str) -> None:
    assert _size(size) == shown
