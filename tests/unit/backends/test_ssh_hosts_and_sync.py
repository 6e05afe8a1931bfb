"""SSH pool host entries (names, ports, IPv6), what of the stage environment travels to a host, the
commands that end a node, where a pool keeps its files, what a host's probe reports, and which files
a sync sends or skips."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from skyflow.backends.ssh_remote import HostAddress, kill_command, parse_probe, remote_env, root_expression
from skyflow.backends.ssh_sync import DigestCache, local_manifest, parse_remote_manifest, plan_sync
from skyflow.errors import BackendError


@pytest.mark.parametrize(("entry", "host", "port", "shown"), [
    ("gpu1.lab", "gpu1.lab", 22, "gpu1.lab"),
    (" 10.0.0.5:2222 ", "10.0.0.5", 2222, "10.0.0.5:2222"),
    ("[fe80::1]:2200", "fe80::1", 2200, "[fe80::1]:2200"),
    ("[fe80::1]", "fe80::1", 22, "[fe80::1]"),
    ("fe80::2", "fe80::2", 22, "[fe80::2]"),
])
def test_host_entries_name_a_host_and_port(entry: str, host: str, port: int, shown: str) -> None:
    address = HostAddress.parse(entry, "lab")
    assert (address.host, address.port, str(address)) == (host, port, shown)


@pytest.mark.parametrize("entry", ["gpu1:ssh", "gpu1:0", "gpu1:70000", ":22", "[]:22"])
def test_a_host_entry_that_is_not_host_or_host_port_is_refused_with_an_example(entry: str) -> None:
    with pytest.raises(BackendError, match=rf"^ssh pool 'lab': host '{re.escape(entry)}' is not 'host' or 'host:port'; "
                                           r"write e\.g\. 10\.0\.0\.5 or gpu2\.lab:2222$") as caught:
        HostAddress.parse(entry, "lab")
    assert caught.value.backend == "ssh/lab"


def test_only_variables_with_shell_names_and_not_of_this_machine_travel() -> None:
    env = {"HF_HOME": "/data/hf", "PATH": "/usr/bin", "SSH_AUTH_SOCK": "/tmp/x", "BAD-NAME": "1", "1X": "2",
           "HOME": "/home/me"}
    assert remote_env(env, keep=frozenset({"HOME"})) == {"HF_HOME": "/data/hf", "HOME": "/home/me"}


def test_ending_a_node_without_a_token_ends_its_group_only_and_without_a_group_its_token_only() -> None:
    group_only = kill_command(4242)
    assert group_only.endswith("skyflow_end_group 4242\nexit 0\n'") and "skyflow_end_token " not in group_only
    token_only = kill_command(0, "abc123")
    assert token_only.endswith("skyflow_end_token abc123\nexit 0\n'") and "skyflow_end_group 0" not in token_only


@pytest.mark.parametrize(("root", "word"), [("~", '"$HOME"'), ("~/.skyflow/remote", '"$HOME"/.skyflow/remote'),
                                            ("~/my runs", "\"$HOME\"/'my runs'"), ("/scratch/sf", "/scratch/sf")])
def test_the_pools_root_is_a_shell_word_with_tilde_as_the_remote_home(root: str, word: str) -> None:
    assert root_expression(root) == word


def test_a_probe_reports_cpus_memory_and_each_gpu_by_its_short_name() -> None:
    output = "32\n263921000\nNVIDIA A100-SXM4-80GB\nNVIDIA A100-SXM4-80GB\nNVIDIA L4\n"
    assert parse_probe(output) == (32.0, 251.7, {"A100-80GB": 2, "L4": 1})
    assert parse_probe("") == (0.0, 0.0, {})


def test_a_sync_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    assert list(local_manifest(tmp_path, DigestCache())) == ["src/train.py"]


def test_a_remote_listing_ignores_lines_that_are_not_digests_of_files_under_the_mirror() -> None:
    good = "a" * 64
    listing = f"{good}  ./src/train.py\nsha256sum: ./x: Permission denied\n{'b' * 63}  ./short\n{good}  /abs\n"
    remote = parse_remote_manifest(listing)
    assert remote == {"src/train.py": good}
    assert plan_sync({"src/train.py": good, "new.py": "c" * 64}, {**remote, "old.py": good}) == (["new.py"],
                                                                                                 ["old.py"])
