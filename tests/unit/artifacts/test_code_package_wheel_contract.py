"""The code package as a node receives it, pinned exactly: which source files skyflow's wheel holds (also
when skyflow is installed under a dotted folder such as .venv), that wheel's METADATA, WHEEL, RECORD and
digest stamp, the package digest's canonical description, what a build leaves in its work directory and
reuses, the index an upload writes, and how installed distributions are resolved and repacked (prereleases,
extras that refer back, reinstalls, RECORD quirks, gui scripts, headers), with every refusal's whole message."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import sysconfig
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

import skyflow
from skyflow.artifacts import open_store
from skyflow.artifacts.code_package import (
    DIST_NAME,
    CodePackage,
    PackageFile,
    build_code_package,
    repack_distribution,
    resolve_requirements,
    upload_code_package,
)
from skyflow.artifacts.code_package import _package_digest as package_digest
from skyflow.errors import ArtifactError
from tests.unit.artifacts.test_code_package_errors import FakeEnvironment, probe_name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def tiny_skyflow(parent: Path, version: str = "0.3.1") -> Path:
    """A package directory the way skyflow's looks, with a few files of each kind."""
    src = parent / "skyflow"
    files = {
        "__init__.py": f'__version__ = "{version}"\n',
        "mod.py": "A = 1\n",
        "sub/deep.py": "B = 2\n",
        "py.typed": "",
        "catalog/__init__.py": "",
        "catalog/data/offers.csv": "gpu,usd\n",
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def own_wheel(package: CodePackage) -> Path:
    return package.directory / package.files[0].name


# -- skyflow's own wheel ---------------------------------------------------------------------------

def test_skyflows_wheel_holds_its_modules_and_package_data_and_nothing_else(tmp_path: Path) -> None:
    src = tiny_skyflow(tmp_path)
    for rel in ("notes.txt", "sub/py.typed", "__pycache__/mod.py", "sub/__pycache__/deep.py", ".hidden/secret.py",
                ".scratch.py", "catalog/data/.cache/old.csv", "catalog/readme.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("left out\n")
    package = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    with zipfile.ZipFile(own_wheel(package)) as zf:
        packed = [n for n in zf.namelist() if not n.startswith("skyflow_llmops-")]
    assert packed == ["skyflow/__init__.py", "skyflow/catalog/__init__.py", "skyflow/catalog/data/offers.csv",
                      "skyflow/mod.py", "skyflow/py.typed", "skyflow/sub/deep.py"]


def test_skyflow_installed_under_a_dotted_folder_is_packed_whole(tmp_path: Path) -> None:
    src = tiny_skyflow(tmp_path / ".venv" / "lib" / "site-packages")
    package = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    with zipfile.ZipFile(own_wheel(package)) as zf:
        assert zf.read("skyflow/mod.py") == b"A = 1\n"
        assert [n for n in zf.namelist() if n.startswith("skyflow/")] == [
            "skyflow/__init__.py", "skyflow/catalog/__init__.py", "skyflow/catalog/data/offers.csv",
            "skyflow/mod.py", "skyflow/py.typed", "skyflow/sub/deep.py"]


def test_skyflows_wheel_metadata_record_and_stamp_are_exact(tmp_path: Path) -> None:
    import importlib.metadata

    package = build_code_package("file", source_dir=tiny_skyflow(tmp_path), work_dir=tmp_path / "work")
    version = f"0.3.1+g{package.digest[:12]}"
    dist_info = f"skyflow_llmops-{version}.dist-info"
    pins = [f"fsspec=={importlib.metadata.version('fsspec')}", f"pydantic=={importlib.metadata.version('pydantic')}"]
    assert package.version == version
    assert own_wheel(package).name == f"skyflow_llmops-{version}-py3-none-any.whl"
    metadata = ("Metadata-Version: 2.1\nName: skyflow-llmops\n" f"Version: {version}\n"
                "Summary: skyflow's node runtime, packed from the machine that planned the run\n"
                "Requires-Python: >=3.11\n" + "".join(f"Requires-Dist: {pin}\n" for pin in pins)).encode()
    wheel = (b"Wheel-Version: 1.0\nGenerator: skyflow.artifacts.code_package\nRoot-Is-Purelib: true\n"
             b"Tag: py3-none-any\n")
    stamp = json.dumps({"digest": package.digest, "scheme": "file"}).encode()
    with zipfile.ZipFile(own_wheel(package)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos][-5:] == [f"{dist_info}/METADATA", f"{dist_info}/WHEEL",
                                                    f"{dist_info}/skyflow-code-package.json",
                                                    f"{dist_info}/top_level.txt", f"{dist_info}/RECORD"]
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert zf.read(f"{dist_info}/METADATA") == metadata
        assert zf.read(f"{dist_info}/WHEEL") == wheel
        assert zf.read(f"{dist_info}/top_level.txt") == b"skyflow\n"
        assert zf.read(f"{dist_info}/skyflow-code-package.json") == stamp
        sources = {n: zf.read(n) for n in zf.namelist() if n.startswith("skyflow/")}
        record = zf.read(f"{dist_info}/RECORD").decode()
    listed = [*sources.items(), (f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel),
              (f"{dist_info}/skyflow-code-package.json", stamp), (f"{dist_info}/top_level.txt", b"skyflow\n")]
    assert record == "".join(f"{n},sha256={b64(d)},{len(d)}\n" for n, d in listed) + f"{dist_info}/RECORD,,\n"


# -- building ------------------------------------------------------------------------------------

def test_a_build_fills_its_work_directory_and_describes_each_wheel(tmp_path: Path) -> None:
    work = tmp_path / "work"
    package = build_code_package("file", source_dir=tiny_skyflow(tmp_path), work_dir=work)
    assert (package.dist, package.scheme, package.platform) == (DIST_NAME, "file", sysconfig.get_platform())
    assert package.python == (sys.version_info.major, sys.version_info.minor)
    assert package.directory == work / package.digest
    assert {p.name for p in work.iterdir()} <= {package.digest, "wheels"}  # wheels/: what this process repacked
    assert sorted(p.name for p in package.directory.iterdir()) == sorted(f.name for f in package.files)
    for f in package.files:
        data = (package.directory / f.name).read_bytes()
        assert (f.sha256, f.size_bytes) == (sha256(data), len(data))
    assert {f.name.split("-")[0] for f in package.files[1:]} >= {"fsspec", "pydantic"}


def test_a_package_is_built_once_per_work_directory_and_repacks_are_shared(tmp_path: Path) -> None:
    src = tiny_skyflow(tmp_path)
    first = build_code_package("file", source_dir=src, work_dir=tmp_path / "one")
    assert build_code_package("file", source_dir=src, work_dir=tmp_path / "one") is first
    other = build_code_package("file", source_dir=src, work_dir=tmp_path / "two")
    assert other is not first and (other.digest, other.files) == (first.digest, first.files)
    assert other.directory == tmp_path / "two" / first.digest
    # the dependencies were repacked once, into the first work directory, and are linked from there
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [first.digest]


def test_without_a_source_directory_the_running_skyflow_is_packed(tmp_path: Path) -> None:
    running = Path(skyflow.__file__).resolve().parent
    default = build_code_package("file", work_dir=tmp_path / "work")
    assert default.digest == build_code_package("file", source_dir=running, work_dir=tmp_path / "work").digest


def test_the_default_store_is_s3(tmp_path: Path) -> None:
    package = build_code_package(source_dir=tiny_skyflow(tmp_path), work_dir=tmp_path / "work")
    assert package.scheme == "s3"
    assert {f.name.split("-")[0] for f in package.files} >= {"s3fs", "certifi", "fsspec"}


def test_the_package_digest_is_the_sha256_of_its_sorted_description() -> None:
    wheel = PackageFile("fsspec-1.0-py3-none-any.whl", "ab" * 32, 10)
    described = ('{"dist": "skyflow-llmops", "format": 1, "requires": ["fsspec==1.0"], "scheme": "file", '
                 '"sources": [["skyflow/__init__.py", "' + "cd" * 32 + '"]], "version": "0.3.1", '
                 '"wheels": [["fsspec-1.0-py3-none-any.whl", "' + "ab" * 32 + '"]]}')
    assert package_digest("file", "0.3.1", ["fsspec==1.0"], [("skyflow/__init__.py", "cd" * 32)], [wheel]) == (
        sha256(described.encode()))


# -- refusals of a source directory ----------------------------------------------------------------

def test_a_source_directory_without_init_is_refused_with_the_whole_message(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as exc:
        build_code_package("file", source_dir=tmp_path, work_dir=tmp_path / "work")
    assert str(exc.value) == (f"{tmp_path} is not a package directory (no __init__.py); pass skyflow's package "
                              "directory as source_dir")


@pytest.mark.parametrize(("init", "message"), [
    ("def broken(:\n", "cannot read the package version: "),
    ("VERSION = '1.0'\n", 'no `__version__ = "X.Y.Z"` in the package'),
])
def test_a_version_that_cannot_be_read_names_the_init_file(tmp_path: Path, init: str, message: str) -> None:
    src = tmp_path / "skyflow"
    src.mkdir()
    (src / "__init__.py").write_text(init)
    with pytest.raises(ArtifactError) as exc:
        build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    assert exc.value.uri == str(src / "__init__.py")
    assert str(exc.value).startswith(f"{src / '__init__.py'}: {message}")
    if message.startswith("no"):
        assert str(exc.value) == f"{src / '__init__.py'}: {message}"


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux's /proc")
def test_a_source_file_that_cannot_be_read_names_the_source_directory(tmp_path: Path) -> None:
    src = tiny_skyflow(tmp_path)
    (src / "broken.py").symlink_to("/proc/self/mem")  # a file whose read fails (EIO)
    with pytest.raises(ArtifactError) as exc:
        build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    assert exc.value.uri == str(src)
    assert str(exc.value).startswith(f"{src}: cannot read broken.py while packing skyflow (")
    assert str(exc.value).endswith("); if it is being edited, launch again")


# -- uploading -------------------------------------------------------------------------------------

def handmade_package(directory: Path, wheels: dict[str, bytes]) -> CodePackage:
    for name, data in wheels.items():
        (directory / name).write_bytes(data)
    files = tuple(PackageFile(n, sha256(d), len(d)) for n, d in wheels.items())
    return CodePackage(digest="0123456789abcdef" * 4, dist=DIST_NAME, version="0.3.1+g0123456789ab", scheme="gs",
                       python=(3, 11), platform="linux-x86_64", files=files, directory=directory)


def test_upload_writes_the_wheels_by_content_and_the_index_last_as_sorted_json(tmp_path: Path) -> None:
    store = open_store(f"memory://code-{uuid.uuid4().hex}")
    package = handmade_package(tmp_path, {"skyflow_llmops-0.3.1-py3-none-any.whl": b"own wheel",
                                          "fsspec-1.0-py3-none-any.whl": b"fsspec wheel"})
    assert upload_code_package(package, store)
    index = {"format": 1, "digest": package.digest, "dist": "skyflow-llmops", "version": "0.3.1+g0123456789ab",
             "scheme": "gs", "python": [3, 11], "platform": "linux-x86_64",
             "files": [{"name": "skyflow_llmops-0.3.1-py3-none-any.whl", "sha256": sha256(b"own wheel"),
                        "size_bytes": 9},
                       {"name": "fsspec-1.0-py3-none-any.whl", "sha256": sha256(b"fsspec wheel"), "size_bytes": 12}]}
    assert package.index() == index
    assert store.read_bytes(f"code/{package.digest}.json") == json.dumps(index, indent=1, sort_keys=True).encode()
    assert store.read_bytes(f"code/wheels/{sha256(b'fsspec wheel')}/fsspec-1.0-py3-none-any.whl") == b"fsspec wheel"
    assert not upload_code_package(package, store)


def test_a_wheel_removed_before_upload_is_named_with_the_index_it_was_for(tmp_path: Path) -> None:
    store = open_store(f"memory://code-{uuid.uuid4().hex}")
    package = handmade_package(tmp_path, {"a-1.0-py3-none-any.whl": b"a"})
    (tmp_path / "a-1.0-py3-none-any.whl").unlink()
    with pytest.raises(ArtifactError) as exc:
        upload_code_package(package, store)
    assert exc.value.uri == store.url(package.index_key)
    assert str(exc.value) == (f"{store.url(package.index_key)}: the code package's wheel "
                              f"{tmp_path / 'a-1.0-py3-none-any.whl'} is gone; build the package again")


# -- resolving what is installed -------------------------------------------------------------------

@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEnvironment:
    return FakeEnvironment(tmp_path, monkeypatch)


def test_the_closure_maps_each_name_to_its_installed_version_prereleases_included(env: FakeEnvironment) -> None:
    app, lib = probe_name(), probe_name()
    env.install(app, "2.0", requires=(f"{lib}>=1.0",))
    env.install(lib, "1.1rc1")
    assert resolve_requirements([app]) == {app: "2.0", lib: "1.1rc1"}


def test_an_extra_asked_for_later_is_followed_and_extras_that_refer_back_end(env: FakeEnvironment) -> None:
    app, lib, fast, extra_lib = probe_name(), probe_name(), probe_name(), probe_name()
    env.install(app, requires=(lib, f"{app}[fast]; extra == 'all'", f"{fast}; extra == 'fast'"))
    env.install(lib, requires=(f"{app}[all]",))  # refers back to the app, with an extra
    env.install(fast, requires=(f"{extra_lib}", f"{app}[all]"))
    env.install(extra_lib, "3.0")
    assert resolve_requirements([app]) == {app: "1.0", lib: "1.0", fast: "1.0", extra_lib: "3.0"}


@pytest.mark.parametrize(("root", "fix"), [("s3fs", "pip install s3fs (the s3 extra)"),
                                           ("adlfs", "pip install adlfs (the azure extra)"),
                                           ("pydantic", "pip install pydantic")])
def test_a_missing_distribution_is_named_with_the_pip_command_that_adds_it(env: FakeEnvironment, root: str,
                                                                           fix: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [str(env.site)])  # an environment where nothing else is installed
    with pytest.raises(ArtifactError) as exc:
        resolve_requirements([root])
    assert str(exc.value) == (f"{root} (needed by skyflow on remote nodes) is not installed in this environment "
                              f"({env.prefix}); the code package is made from what is installed here: {fix}")


# -- repacking -------------------------------------------------------------------------------------

def test_repacking_a_distribution_that_is_not_installed_names_the_code_package(tmp_path: Path) -> None:
    name = probe_name()
    with pytest.raises(ArtifactError) as exc:
        repack_distribution(name, tmp_path)
    assert str(exc.value).startswith(f"{name} (needed by the code package on remote nodes) is not installed")


def test_a_repacked_wheel_skips_caches_and_installer_files_and_keeps_the_dist_info(env: FakeEnvironment,
                                                                                  tmp_path: Path) -> None:
    name = probe_name()
    module = name.replace("-", "_")
    env.install(name, files={f"{module}/__init__.py": b"X = 1\n",
                             f"{module}/__pycache__/__init__.cpython-311.pyc": b"bytecode",
                             "../../bin/probe-gui": b"#!/usr/bin/python3\ngenerated\n",
                             "../../bin/probe-tool": b"#!/bin/sh\necho tool\n"},
                extra_meta={"INSTALLER": "pip\n", "REQUESTED": "",
                            "entry_points.txt": "[gui_scripts]\nprobe-gui = probe:main\n"})
    record = env.site / f"{module}-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text().replace("\n", "\n\n", 1))  # a blank line, as some tools leave
    wheel = repack_distribution(name, tmp_path / "out")
    dist_info = f"{module}-1.0.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        assert zf.namelist() == [f"{module}-1.0.data/scripts/probe-tool", f"{module}/__init__.py",
                                 f"{dist_info}/METADATA", f"{dist_info}/WHEEL", f"{dist_info}/entry_points.txt",
                                 f"{dist_info}/RECORD"]


def test_a_record_without_the_metadata_file_cannot_be_repacked(env: FakeEnvironment, tmp_path: Path) -> None:
    name = probe_name()
    module = name.replace("-", "_")
    env.install(name, files={f"{module}/__init__.py": b""})
    record = env.site / f"{module}-1.0.dist-info" / "RECORD"
    record.write_text("".join(line + "\n" for line in record.read_text().splitlines() if "/METADATA," not in line))
    with pytest.raises(ArtifactError) as exc:
        repack_distribution(name, tmp_path / "out")
    assert str(exc.value) == (f"{name} 1.0 was not installed from a wheel (no RECORD listing its files), so it "
                              "cannot be repacked; reinstall it with a current pip")


def test_wheel_tags_are_read_with_or_without_a_space_after_the_colon(env: FakeEnvironment, tmp_path: Path) -> None:
    name = probe_name()
    env.install(name, extra_meta={"WHEEL": "Wheel-Version: 1.0\nTag:py3-none-any\nTag: py2-none-any\n"})
    assert repack_distribution(name, tmp_path).name == f"{name.replace('-', '_')}-1.0-py3.py2-none-any.whl"


def test_headers_keep_their_folders_below_the_distributions_own(env: FakeEnvironment, tmp_path: Path) -> None:
    name = probe_name()
    module = name.replace("-", "_")
    headers = f"../../include/site/python{sys.version_info.major}.{sys.version_info.minor}/{name}"
    env.install(name, files={f"{headers}/probe.h": b"int a;\n", f"{headers}/detail/impl/more.h": b"int b;\n"})
    with zipfile.ZipFile(repack_distribution(name, tmp_path)) as zf:
        assert [n for n in zf.namelist() if "/headers/" in n] == [f"{module}-1.0.data/headers/detail/impl/more.h",
                                                                  f"{module}-1.0.data/headers/probe.h"]


def fake_fsspec(env: FakeEnvironment, version: str, body: bytes) -> None:
    for old in env.site.glob("fsspec*"):
        shutil.rmtree(old)
    env.install("fsspec", version, files={"fsspec/__init__.py": body})


def packed_fsspec(package: CodePackage) -> tuple[str, bytes]:
    wheel = next(package.directory / f.name for f in package.files if f.name.startswith("fsspec-"))
    with zipfile.ZipFile(wheel) as zf:
        return wheel.name, zf.read("fsspec/__init__.py")


def test_a_reinstalled_distribution_is_repacked_again(env: FakeEnvironment, tmp_path: Path) -> None:
    src = tiny_skyflow(tmp_path)
    fake_fsspec(env, "1.0", b"VERSION = 1\n")
    first = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    assert packed_fsspec(first) == ("fsspec-1.0-py3-none-any.whl", b"VERSION = 1\n")
    fake_fsspec(env, "2.0", b"VERSION = 2\n")
    second = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    assert packed_fsspec(second) == ("fsspec-2.0-py3-none-any.whl", b"VERSION = 2\n")
    assert second.digest != first.digest
    assert {"fsspec-1.0-py3-none-any.whl", "fsspec-2.0-py3-none-any.whl"} <= {
        p.name for p in (tmp_path / "work" / "wheels").iterdir()}


def test_the_same_distribution_installed_elsewhere_is_repacked_from_there(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src = tiny_skyflow(tmp_path)
    one = FakeEnvironment(tmp_path / "one", monkeypatch)
    fake_fsspec(one, "1.0", b"FROM = 'one'\n")
    first = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    two = FakeEnvironment(tmp_path / "two", monkeypatch)
    fake_fsspec(two, "1.0", b"FROM = 'two'\n")
    second = build_code_package("file", source_dir=src, work_dir=tmp_path / "work")
    assert packed_fsspec(first)[1] == b"FROM = 'one'\n"
    assert packed_fsspec(second)[1] == b"FROM = 'two'\n"


def test_without_a_work_directory_builds_share_one_temp_folder_removed_at_exit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import atexit

    from skyflow.artifacts import code_package as code_package_module

    registered: list[tuple[object, tuple[object, ...]]] = []
    monkeypatch.setattr(atexit, "register", lambda func, *args: registered.append((func, args)))
    monkeypatch.setattr(code_package_module, "_work_dir", None)
    first = code_package_module._default_work_dir()
    try:
        assert first.is_dir() and first.name.startswith("skyflow-code-")
        assert first.parent == Path(tempfile.gettempdir())
        assert code_package_module._default_work_dir() == first
        assert registered == [(shutil.rmtree, (first, True))]  # removed at exit, quietly if gone already
    finally:
        shutil.rmtree(first, ignore_errors=True)
