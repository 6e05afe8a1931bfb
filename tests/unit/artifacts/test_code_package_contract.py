"""The code package's contract with the node and the store: the exact bootstrap shell and the config it
hands the node installer, what that installer does in a real shell (an environment already there, a
missing or altered wheel, a Python that does not match), the node command around it, signed URLs from
a store that can sign and the errors from one that cannot, and the temporary work directory that a
process removes when it exits."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

import skyflow
from skyflow.artifacts import code_package, open_store
from skyflow.artifacts.code_package import (
    DEFAULT_ENV_ROOT,
    DIGEST_FILE,
    DIST_NAME,
    CodePackage,
    PackageFile,
    bootstrap_script,
    node_command,
    presign_code_package,
)
from skyflow.artifacts.store import FsspecStore
from skyflow.errors import ArtifactError

DIGEST = "0123456789abcdef" * 4
WRAPPER_TAIL = '"$SKYFLOW_PYTHON" -P -m skyflow.backends.remote_stage "$@"\n'
SCRIPT_END = ") || exit\nexport SKYFLOW_PYTHON\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_of(tmp_path: Path, contents: dict[str, bytes], *, digest: str = DIGEST,
               python: tuple[int, int] | None = None) -> CodePackage:
    """A package of the given wheel files, written under ``tmp_path/built``, for this interpreter."""
    directory = tmp_path / "built"
    directory.mkdir(exist_ok=True)
    files = []
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        files.append(PackageFile(name, sha256(data), len(data)))
    return CodePackage(digest=digest, dist=DIST_NAME, version=f"0.1.0+g{digest[:12]}", scheme="file",
                       python=python or (sys.version_info.major, sys.version_info.minor),
                       platform=sysconfig.get_platform(), files=tuple(files), directory=directory)


def listed_package(names: list[str]) -> CodePackage:
    """A package that only lists wheels (for what is decided before any file is read)."""
    files = tuple(PackageFile(name, sha256(name.encode()), 10 + i) for i, name in enumerate(names))
    return CodePackage(digest=DIGEST, dist=DIST_NAME, version="0.1.0+g0123456789ab", scheme="s3",
                       python=(3, 11), platform="linux-x86_64", files=files, directory=Path("/nowhere"))


def installer_argv(script: str) -> list[str]:
    """The command line inside ``SKYFLOW_PYTHON=$(...)``: the python, its flags, program and config."""
    assert script.startswith("SKYFLOW_PYTHON=$(") and script.endswith(SCRIPT_END)
    return shlex.split(script[len("SKYFLOW_PYTHON=$("):-len(SCRIPT_END)])


def run_sh(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    return subprocess.run(["sh", "-c", script, "sh", *args], env=base | (env or {}), capture_output=True,
                          text=True, timeout=60)


# -- the script's text ---------------------------------------------------------------------------

def test_the_script_runs_the_installer_isolated_with_the_whole_config_as_sorted_json() -> None:
    package = listed_package(["b-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl"])
    urls = {"a-2.0-py3-none-any.whl": "https://signed.example/a?sig=1",
            "b-1.0-py3-none-any.whl": "https://signed.example/b?sig=2"}
    python = "/opt/my python/bin/python3"
    script = bootstrap_script(package, fetch="url", urls=urls, python=python, env_root="$HOME/envs")
    config = {"digest": DIGEST, "dist": "skyflow-llmops", "version": "0.1.0+g0123456789ab",
              "python": [3, 11], "platform": "linux-x86_64", "digest_file": "skyflow-code-package.json",
              "env_root": "$HOME/envs", "fetch": "url", "dir": None,
              "files": [{"name": "b-1.0-py3-none-any.whl", "sha256": sha256(b"b-1.0-py3-none-any.whl"),
                         "size_bytes": 10, "url": "https://signed.example/b?sig=2"},
                        {"name": "a-2.0-py3-none-any.whl", "sha256": sha256(b"a-2.0-py3-none-any.whl"),
                         "size_bytes": 11, "url": "https://signed.example/a?sig=1"}]}
    argv = [python, "-I", "-c", code_package._NODE_INSTALLER, json.dumps(config, sort_keys=True)]
    assert script == f"SKYFLOW_PYTHON=$({shlex.join(argv)}) || exit\nexport SKYFLOW_PYTHON\n"
    assert installer_argv(script) == argv


def test_a_dir_fetch_config_names_the_directory_and_no_urls() -> None:
    package = listed_package(["a-2.0-py3-none-any.whl"])
    script = bootstrap_script(package, fetch="dir", directory="$VOLUME/code")
    argv = installer_argv(script)
    assert argv[:3] == ["python3", "-I", "-c"]
    config = json.loads(argv[4])
    assert config == {"digest": DIGEST, "dist": DIST_NAME, "version": "0.1.0+g0123456789ab", "python": [3, 11],
                      "platform": "linux-x86_64", "digest_file": DIGEST_FILE, "env_root": DEFAULT_ENV_ROOT,
                      "fetch": "dir", "dir": "$VOLUME/code",
                      "files": [{"name": "a-2.0-py3-none-any.whl", "sha256": sha256(b"a-2.0-py3-none-any.whl"),
                                 "size_bytes": 10, "url": None}]}
    assert DEFAULT_ENV_ROOT == "~/.skyflow/env"
    assert script.startswith("SKYFLOW_PYTHON=$(python3 -I -c ")


def test_a_url_fetch_lists_up_to_three_missing_wheels_then_an_ellipsis() -> None:
    names = [f"w{i}-1.0-py3-none-any.whl" for i in range(5)]
    package = listed_package(names)
    with pytest.raises(ArtifactError) as four:
        bootstrap_script(package, fetch="url", urls={names[4]: "https://x.example/4"})
    assert str(four.value) == ("fetch='url' needs a URL for every wheel; missing w0-1.0-py3-none-any.whl, "
                               "w1-1.0-py3-none-any.whl, w2-1.0-py3-none-any.whl ... (use presign_code_package)")
    with pytest.raises(ArtifactError) as three:
        bootstrap_script(package, fetch="url", urls={names[0]: "https://x.example/0", names[3]: "https://x.example/3"})
    assert str(three.value) == ("fetch='url' needs a URL for every wheel; missing w1-1.0-py3-none-any.whl, "
                                "w2-1.0-py3-none-any.whl, w4-1.0-py3-none-any.whl (use presign_code_package)")
    with pytest.raises(ArtifactError) as none:
        bootstrap_script(listed_package(names[:1]), fetch="url")
    assert str(none.value) == ("fetch='url' needs a URL for every wheel; missing w0-1.0-py3-none-any.whl "
                               "(use presign_code_package)")


def test_a_dir_fetch_without_a_directory_and_an_unknown_fetch_are_refused() -> None:
    package = listed_package(["a-2.0-py3-none-any.whl"])
    for directory in (None, ""):
        with pytest.raises(ArtifactError) as exc:
            bootstrap_script(package, fetch="dir", directory=directory)
        assert str(exc.value) == "fetch='dir' needs the directory on the node that holds the package's wheels"
    with pytest.raises(ArtifactError) as bad:
        bootstrap_script(package, fetch="scp", directory="/x")  # type: ignore[arg-type]
    assert str(bad.value) == "fetch must be 'url' or 'dir', not 'scp'"


def test_the_node_command_is_the_bootstrap_then_the_wrapper_module_with_the_arguments() -> None:
    package = listed_package(["a-2.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"])
    args: dict[str, Any] = {"directory": "/mnt/code", "python": "/usr/bin/python3.11", "env_root": "/mnt/envs"}
    assert node_command(package, fetch="dir", **args) == bootstrap_script(package, fetch="dir", **args) + WRAPPER_TAIL
    urls = {f.name: f"https://signed.example/{f.name}" for f in package.files}
    assert node_command(package, fetch="url", urls=urls, module="my stages.run") == (
        bootstrap_script(package, fetch="url", urls=urls) + "\"$SKYFLOW_PYTHON\" -P -m 'my stages.run' \"$@\"\n")
    default = node_command(package, fetch="dir", directory="/mnt/code")
    assert default == bootstrap_script(package, fetch="dir", directory="/mnt/code") + WRAPPER_TAIL
    assert default.startswith("SKYFLOW_PYTHON=$(python3 -I -c ")
    assert json.loads(installer_argv(default.removesuffix(WRAPPER_TAIL))[4])["env_root"] == "~/.skyflow/env"


# -- the script on a node ------------------------------------------------------------------------

def installed_env(root: Path, digest: str, python: Path | None = None) -> Path:
    """An environment the installer made before: its python and the marker naming the digest."""
    env = root / digest
    (env / "bin").mkdir(parents=True)
    if python is None:
        (env / "bin" / "python").write_text("")
    else:
        (env / "bin" / "python").symlink_to(python)
    (env / ".skyflow-code-package").write_text(digest + "\n")
    return env


def test_an_environment_already_installed_for_the_digest_is_used_as_it_is(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    env = installed_env(tmp_path / "volume" / "envs", DIGEST)
    script = bootstrap_script(package, fetch="dir", directory=str(tmp_path / "not-copied"),
                              python=sys.executable, env_root="$NODE_VOLUME/envs") + 'echo "got $SKYFLOW_PYTHON"\n'
    node = run_sh(script, env={"NODE_VOLUME": str(tmp_path / "volume")})
    assert (node.returncode, node.stdout) == (0, f"got {env}/bin/python\n"), node.stderr
    assert node.stderr == f"skyflow: code package {DIGEST} already installed in {env}\n"


def test_a_wheel_missing_from_the_directory_stops_the_shell(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    (tmp_path / "volume" / "code").mkdir(parents=True)
    script = bootstrap_script(package, fetch="dir", directory="$NODE_VOLUME/code", python=sys.executable,
                              env_root=str(tmp_path / "envs")) + "echo after\n"
    node = run_sh(script, env={"NODE_VOLUME": str(tmp_path / "volume")})
    assert (node.returncode, node.stdout) == (3, "")
    assert node.stderr == (f"skyflow: {tmp_path}/volume/code/a-1.0-py3-none-any.whl is missing; the backend "
                           "should have copied the code package there\n")


def test_a_wheel_in_the_directory_with_other_bytes_is_refused_by_its_sha256(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a", "b-1.0-py3-none-any.whl": b"wheel b"})
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a")
    (copied / "b-1.0-py3-none-any.whl").write_bytes(b"wheel B")
    script = bootstrap_script(package, fetch="dir", directory=str(copied), python=sys.executable,
                              env_root=str(tmp_path / "envs")) + "echo after\n"
    node = run_sh(script)
    assert (node.returncode, node.stdout) == (3, "")
    assert node.stderr == (f"skyflow: b-1.0-py3-none-any.whl does not have the bytes the code package lists "
                           f"(sha256 {sha256(b'wheel B')}, expected {sha256(b'wheel b')})\n")
    assert not (tmp_path / "envs" / DIGEST).exists()


def test_a_downloaded_wheel_with_other_bytes_is_refused_by_its_sha256(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    served = tmp_path / "served.whl"
    served.write_bytes(b"tampered")
    script = bootstrap_script(package, fetch="url", urls={"a-1.0-py3-none-any.whl": served.as_uri()},
                              python=sys.executable, env_root=str(tmp_path / "envs"))
    node = run_sh(script)
    assert (node.returncode, node.stdout) == (3, "")
    assert node.stderr == (f"skyflow: a-1.0-py3-none-any.whl does not have the bytes the code package lists "
                           f"(sha256 {sha256(b'tampered')}, expected {sha256(b'wheel a')})\n")


def test_a_node_whose_python_differs_from_the_builders_is_refused(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"}, python=(2, 7))
    installed_env(tmp_path / "envs", DIGEST)
    script = bootstrap_script(package, fetch="dir", directory=str(package.directory), python=sys.executable,
                              env_root=str(tmp_path / "envs"))
    node = run_sh(script)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    platform = sysconfig.get_platform()
    assert (node.returncode, node.stdout) == (3, "")
    assert node.stderr == (f"skyflow: this node's {sys.executable} is Python {here} on {platform}; the code "
                           f"package {DIGEST[:12]} was built for Python 2.7 on {platform} (its binary wheels "
                           "carry that platform): run the node on an image with that Python\n")


def test_the_node_command_runs_the_module_with_the_installed_python_and_the_arguments(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    installed_env(tmp_path / "envs", DIGEST, python=Path(sys.executable))
    doc = tmp_path / "doc.json"
    doc.write_text('{"b": 1, "a": [2]}')
    command = node_command(package, fetch="dir", directory=str(package.directory), python=sys.executable,
                           env_root=str(tmp_path / "envs"), module="json.tool")
    node = run_sh(command, "--sort-keys", "--compact", str(doc))
    assert (node.returncode, node.stdout) == (0, '{"a":[2],"b":1}\n'), node.stderr


# -- signed URLs ---------------------------------------------------------------------------------

class SigningFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """A filesystem that signs every path (as S3 or GCS would with keys that can sign)."""

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        return f"https://signed.example/{path}?expires={expiration}"


class RefusingFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """A filesystem whose credentials cannot sign."""

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        raise PermissionError(f"no signing key for {path}")


def test_presign_signs_each_wheel_at_its_content_addressed_key(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a", "b-1.0-py3-none-any.whl": b"wheel b"})
    store = FsspecStore(SigningFileSystem(), "bucket/pipelines", "s3://bucket/pipelines")
    a, b = sha256(b"wheel a"), sha256(b"wheel b")
    assert presign_code_package(package, store) == {
        "a-1.0-py3-none-any.whl": f"https://signed.example/bucket/pipelines/code/wheels/{a}/a-1.0-py3-none-any.whl"
                                  "?expires=21600",
        "b-1.0-py3-none-any.whl": f"https://signed.example/bucket/pipelines/code/wheels/{b}/b-1.0-py3-none-any.whl"
                                  "?expires=21600"}
    assert presign_code_package(package, store, expiration_s=60)["a-1.0-py3-none-any.whl"].endswith(
        f"/code/wheels/{a}/a-1.0-py3-none-any.whl?expires=60")


def test_presign_names_the_wheel_the_error_and_the_credentials_it_needs(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    store = FsspecStore(RefusingFileSystem(), "bucket/p", "gs://bucket/p")
    key = f"code/wheels/{sha256(b'wheel a')}/a-1.0-py3-none-any.whl"
    with pytest.raises(ArtifactError) as exc:
        presign_code_package(package, store)
    assert exc.value.uri == f"gs://bucket/p/{key}"
    assert str(exc.value) == (
        f"gs://bucket/p/{key}: cannot sign a URL for a-1.0-py3-none-any.whl: PermissionError: no signing key "
        f"for bucket/p/{key}. Signing needs credentials that can sign (S3 keys, a GCS service account key, "
        "an Azure account key); otherwise have the backend copy the package's directory to the node and "
        "use fetch='dir'")
    assert isinstance(exc.value.__cause__, PermissionError)


def test_a_store_without_signing_is_told_to_copy_the_directory(tmp_path: Path) -> None:
    package = package_of(tmp_path, {"a-1.0-py3-none-any.whl": b"wheel a"})
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ArtifactError) as exc:
        presign_code_package(package, store)
    assert exc.value.uri == store.uri
    assert str(exc.value) == (
        f"{store.uri}: this store cannot make signed URLs (a local path, or a filesystem without signing); "
        "have the backend copy the package's directory to the node and use fetch='dir'")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_a_store_that_is_not_fsspec_cannot_sign(tmp_path: Path) -> None:
    class OtherStore:
        uri = "custom://bucket/p"

    with pytest.raises(ArtifactError) as exc:
        presign_code_package(package_of(tmp_path, {"a.whl": b"a"}), OtherStore())  # type: ignore[arg-type]
    assert exc.value.uri == "custom://bucket/p"
    assert str(exc.value) == "custom://bucket/p: only fsspec stores can sign URLs; ship the files with fetch='dir'"


# -- the work directory --------------------------------------------------------------------------

def python_importing_skyflow(program: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` in a fresh interpreter that imports this checkout's skyflow."""
    root = str(Path(skyflow.__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", program], env=env, cwd=root, capture_output=True, text=True,
                          timeout=60)


def test_the_default_work_directory_is_one_fresh_temporary_directory_per_process() -> None:
    first = code_package._default_work_dir()
    assert code_package._default_work_dir() == first
    assert first.is_dir() and first.parent == Path(tempfile.gettempdir())
    assert first.name.startswith("skyflow-code-") and len(first.name) > len("skyflow-code-")


def test_the_default_work_directory_is_removed_when_the_process_exits() -> None:
    proc = python_importing_skyflow(
        "from skyflow.artifacts import code_package\n"
        "work = code_package._default_work_dir()\n"
        "(work / 'pkg').mkdir()\n"
        "(work / 'pkg' / 'a.whl').write_bytes(b'wheel')\n"
        "print(work)\n")
    assert (proc.returncode, proc.stderr) == (0, "")
    work = Path(proc.stdout.strip())
    assert work.name.startswith("skyflow-code-")
    assert not work.exists()


def test_a_work_directory_removed_early_leaves_a_clean_exit() -> None:
    proc = python_importing_skyflow(
        "import shutil\n"
        "from skyflow.artifacts import code_package\n"
        "work = code_package._default_work_dir()\n"
        "shutil.rmtree(work)\n"
        "print(work)\n")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert not Path(proc.stdout.strip()).exists()


# -- store kinds and wheel files -----------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "kind"), [
    ("s3", "s3"), ("S3A://bucket/p", "s3"), ("gs://bucket", "gs"), ("GCS", "gs"), ("az://container/p", "az"),
    ("abfs://c", "az"), ("abfss://c@account/p", "az"), ("file:///srv/store", "file"), ("local", "file"), ("", "file"),
    ("gs://bucket/nested://key", "gs"),
])
def test_each_store_scheme_and_alias_has_its_kind(scheme: str, kind: str) -> None:
    assert code_package.store_kind(scheme) == kind


@pytest.mark.parametrize(("scheme", "message"), [
    ("ftp", "no code package for store scheme 'ftp'; use one of s3, gs, az or file."),
    ("abf://c", "no code package for store scheme 'abf://c'; use one of s3, gs, az or file. "
                "Did you mean abfs, abfss?"),
    ("gs3", "no code package for store scheme 'gs3'; use one of s3, gs, az or file. Did you mean s3, gs, s3a?"),
])
def test_an_unknown_store_scheme_is_refused_with_the_whole_message(scheme: str, message: str) -> None:
    with pytest.raises(ArtifactError) as exc:
        code_package.store_kind(scheme)
    assert str(exc.value) == message


def b64_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_a_written_wheel_is_sorted_stamped_and_recorded_with_the_dist_info_last(tmp_path: Path) -> None:
    script = tmp_path / "run"
    script.write_bytes(b"#!python\nprint(1)\n")
    module, metadata = b"b = 1\n", b"Name: x\n"
    members: list[tuple[str, bytes | Path, int]] = [
        ("x-1.0.dist-info/METADATA", metadata, 0o644), ("pkg/b.py", module, 0o644),
        ("x-1.0.data/scripts/run", script, 0o100755), ("pkg/a,b.txt", b"ab", 0o600), ("zz.py", b"", 0o644)]
    out = tmp_path / "out" / "wheels"
    wheel = code_package.write_wheel(out / "x-1.0-py3-none-any.whl", members, "x-1.0.dist-info")
    assert wheel == out / "x-1.0-py3-none-any.whl"
    assert sorted(p.name for p in wheel.parent.iterdir()) == ["x-1.0-py3-none-any.whl"]
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["pkg/a,b.txt", "pkg/b.py", "x-1.0.data/scripts/run", "zz.py",
                                               "x-1.0.dist-info/METADATA", "x-1.0.dist-info/RECORD"]
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
        assert [i.external_attr >> 16 for i in infos] == [0o100600, 0o100644, 0o100755, 0o100644, 0o100644, 0o100644]
        record = zf.read("x-1.0.dist-info/RECORD").decode()
    assert record == (f'"pkg/a,b.txt",sha256={b64_sha256(b"ab")},2\n'
                      f"pkg/b.py,sha256={b64_sha256(module)},6\n"
                      f"x-1.0.data/scripts/run,sha256={b64_sha256(script.read_bytes())},18\n"
                      f"zz.py,sha256={b64_sha256(b'')},0\n"
                      f"x-1.0.dist-info/METADATA,sha256={b64_sha256(metadata)},8\n"
                      "x-1.0.dist-info/RECORD,,\n")
    again = code_package.write_wheel(tmp_path / "again.whl", list(reversed(members)), "x-1.0.dist-info")
    assert again.read_bytes() == wheel.read_bytes()


def test_wheel_tags_are_compressed_per_position_in_first_seen_order() -> None:
    assert code_package._compressed_tag(["py3-none-any"]) == "py3-none-any"
    assert code_package._compressed_tag(["py2-none-any", "py3-none-any"]) == "py2.py3-none-any"
    assert code_package._compressed_tag(["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64",
                                         "cp311-abi3-manylinux_2_17_x86_64"]) == (
        "cp311-cp311.abi3-manylinux_2_17_x86_64.manylinux2014_x86_64")
