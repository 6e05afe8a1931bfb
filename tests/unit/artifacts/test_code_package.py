"""The code package: skyflow's own wheel and repacked dependency wheels, their digest and RECORDs, and
a wheelhouse that installs into a fresh virtualenv with no package index."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path

import pytest

import skyflow
from skyflow.artifacts import open_store
from skyflow.artifacts.code_package import (
    DIGEST_FILE,
    DIST_NAME,
    STORE_REQUIREMENTS,
    WRAPPER_REQUIREMENTS,
    CodePackage,
    bootstrap_script,
    build_code_package,
    presign_code_package,
    repack_distribution,
    resolve_requirements,
    store_kind,
    upload_code_package,
)
from skyflow.errors import ArtifactError

REPO_ROOT = Path(__file__).resolve().parents[3]


def copy_of_skyflow(dest: Path, source: Path | None = None) -> Path:
    """A snapshot of the package (default: the running one), so a test can change it freely."""
    return Path(shutil.copytree(source or Path(skyflow.__file__).parent, dest / "skyflow",
                                ignore=shutil.ignore_patterns("__pycache__")))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of_skyflow(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def package(source: Path, tmp_path_factory: pytest.TempPathFactory) -> CodePackage:
    return build_code_package("file", source_dir=source, work_dir=tmp_path_factory.mktemp("work"))


def clean_env() -> dict[str, str]:
    """No index, find-links or constraints from this machine's pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def wheel_of(package: CodePackage, dist: str) -> Path:
    prefix = dist.replace("-", "_") + "-"
    return next(package.directory / f.name for f in package.files if f.name.lower().startswith(prefix))


def record_problems(wheel: Path) -> list[str]:
    """Every way the wheel's RECORD disagrees with its members (empty when it verifies)."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode())))
        listed = {row[0] for row in rows}
        problems += [f"not in RECORD: {n}" for n in sorted(names - listed)]
        problems += [f"in RECORD but not in the wheel: {n}" for n in sorted(listed - names)]
        for path, hash_field, size in rows:
            if path == record_name:
                continue
            data = zf.read(path)
            want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if hash_field != want or int(size) != len(data):
                problems.append(f"{path}: RECORD says {hash_field},{size}; the member is {want},{len(data)}")
    return problems


def test_the_wheelhouse_installs_with_no_index_and_the_wrapper_imports(package: CodePackage,
                                                                       tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--find-links",
                              str(package.directory), f"{package.dist}=={package.version}"],
                             env=clean_env(), capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run([str(python), "-I", "-c", "import importlib.metadata as m, skyflow, "
                            "skyflow.backends.remote_stage, skyflow.artifacts; "
                            f"print(skyflow.__file__); print(m.version({DIST_NAME!r}))"],
                           env=clean_env(), capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    where, version = probe.stdout.split()
    assert Path(where).is_relative_to(venv)
    assert version == package.version

    # The same interpreter is now a "baked image": the bootstrap uses it as it is.
    env_root = tmp_path / "envs"
    script = bootstrap_script(package, fetch="dir", directory=str(package.directory), python=str(python),
                              env_root=str(env_root)) + 'echo "$SKYFLOW_PYTHON"\n'
    node = subprocess.run(["sh", "-c", script], env=clean_env(), capture_output=True, text=True)
    assert node.returncode == 0, node.stderr
    assert f"code package {package.digest} already installed in" in node.stderr
    assert Path(node.stdout.strip()) == python
    assert not env_root.exists()


def test_the_digest_follows_skyflows_files_and_nothing_else(source: Path, package: CodePackage,
                                                             tmp_path: Path) -> None:
    again = build_code_package("file", source_dir=source, work_dir=tmp_path / "again")
    assert again.digest == package.digest
    assert again.files == package.files  # the same files make the same wheel bytes

    changed = copy_of_skyflow(tmp_path / "changed", source)
    (changed / "__pycache__").mkdir()
    (changed / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    assert build_code_package("file", source_dir=changed, work_dir=tmp_path / "w1").digest == package.digest

    stage_wrapper = changed / "backends" / "remote_stage.py"
    stage_wrapper.write_text(stage_wrapper.read_text() + "\n# a local change\n")
    edited = build_code_package("file", source_dir=changed, work_dir=tmp_path / "w2")
    assert edited.digest != package.digest
    assert edited.version != package.version and edited.version.endswith(edited.digest[:12])
    # Only skyflow's own wheel differs; its dependencies are the same files.
    assert edited.files[1:] == package.files[1:]
    assert edited.files[0].sha256 != package.files[0].sha256


def test_the_digest_covers_the_store_library(package: CodePackage, source: Path, tmp_path: Path) -> None:
    s3 = build_code_package("s3://bucket/prefix", source_dir=source, work_dir=tmp_path)
    assert s3.scheme == "s3" and s3.digest != package.digest
    names = {f.name.split("-")[0] for f in s3.files}
    assert {"s3fs", "aiobotocore", "botocore", "fsspec", "pydantic"} <= names
    assert "s3fs" not in {f.name.split("-")[0] for f in package.files}


def test_every_record_verifies(package: CodePackage) -> None:
    assert package.files, "an empty package"
    problems = {f.name: record_problems(package.directory / f.name) for f in package.files}
    assert {name: p for name, p in problems.items() if p} == {}


def test_skyflows_wheel_names_its_distribution_pins_and_digest(package: CodePackage) -> None:
    with zipfile.ZipFile(wheel_of(package, DIST_NAME)) as zf:
        names = zf.namelist()
        dist_info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        stamp = json.loads(zf.read(f"{dist_info}/{DIGEST_FILE}"))
    assert f"Name: {DIST_NAME}\n" in metadata and f"Version: {package.version}\n" in metadata
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist"))
    assert [r.split("==")[0] for r in requires] == sorted(WRAPPER_REQUIREMENTS)
    assert stamp == {"digest": package.digest, "scheme": "file"}
    assert {"skyflow/py.typed", "skyflow/backends/remote_stage.py", "skyflow/catalog/data/offers.csv"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_a_repacked_distribution_is_the_installed_one_byte_for_byte(tmp_path: Path) -> None:
    import importlib.metadata

    first = repack_distribution("typing-extensions", tmp_path / "a")
    second = repack_distribution("typing-extensions", tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    installed = importlib.metadata.distribution("typing-extensions")
    module = Path(str(installed.locate_file("typing_extensions.py")))
    with zipfile.ZipFile(first) as zf:
        assert zf.read("typing_extensions.py") == module.read_bytes()
        assert not [n for n in zf.namelist() if n.endswith(("/INSTALLER", "/REQUESTED", "/direct_url.json"))]


def test_a_plain_script_goes_back_under_data_with_a_portable_shebang(tmp_path: Path) -> None:
    # jmespath installs bin/jp.py as a script of its own (not an entry point).
    wheel = repack_distribution("jmespath", tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        scripts = [n for n in zf.namelist() if ".data/scripts/" in n]
        assert scripts == [f"jmespath-{wheel.name.split('-')[1]}.data/scripts/jp.py"]
        assert zf.read(scripts[0]).startswith(b"#!python\n")
    assert record_problems(wheel) == []


def test_the_closure_holds_every_distribution_the_wrapper_imports() -> None:
    """What the node wrapper imports for an s3 store, found by importing it, is all in the package."""
    probe = ("import sys; before = set(sys.modules); import importlib.metadata as m, fsspec, "
             "skyflow.backends.remote_stage, skyflow.artifacts, skyflow.artifacts.sync, skyflow.artifacts.commit; "
             "fsspec.get_filesystem_class('s3'); owners = m.packages_distributions(); "
             "print('\\n'.join(sorted({d for mod in set(sys.modules) - before "
             "for d in owners.get(mod.split('.')[0], [])})))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    from packaging.utils import canonicalize_name

    imported = {canonicalize_name(d) for d in proc.stdout.split()} - {"skyflow", DIST_NAME}
    closure = resolve_requirements([*WRAPPER_REQUIREMENTS, *STORE_REQUIREMENTS["s3"]])
    assert {"s3fs", "botocore", "fsspec"} <= imported  # the probe saw the real imports
    assert imported - set(closure) == set()


def test_the_distribution_name_is_the_one_in_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    assert any(dep.startswith("packaging") for dep in project["dependencies"])


def test_upload_sends_each_wheel_once_and_skips_a_package_already_there(package: CodePackage, source: Path,
                                                                         tmp_path: Path) -> None:
    store = open_store(f"memory://code-{uuid.uuid4().hex}")
    assert upload_code_package(package, store)
    assert not upload_code_package(package, store)
    index = json.loads(store.read_bytes(package.index_key))
    assert index["digest"] == package.digest and len(index["files"]) == len(package.files)
    for f in package.files:
        assert store.read_bytes(package.key(f)) == (package.directory / f.name).read_bytes()

    changed = copy_of_skyflow(tmp_path, source)
    (changed / "errors.py").write_text((changed / "errors.py").read_text() + "\n")
    edited = build_code_package("file", source_dir=changed, work_dir=tmp_path / "work")
    assert upload_code_package(edited, store)
    wheels = [k for k in store.list_keys("code/wheels")]
    assert len(wheels) == len(package.files) + 1  # only the new skyflow wheel was added


@pytest.mark.parametrize(("scheme", "match"), [
    ("ftp", r"no code package for store scheme 'ftp'; use one of s3, gs, az or file"),
    ("s3x://bucket/x", r"Did you mean s3"),
])
def test_an_unknown_store_scheme_is_refused_with_the_choices(scheme: str, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        store_kind(scheme)


def test_a_dependency_missing_here_is_named_with_the_fix() -> None:
    with pytest.raises(ArtifactError, match=r"no-such-lib-\w+ \(needed by skyflow on remote nodes\) is not "
                       r"installed in this environment .*pip install no-such-lib-"):
        resolve_requirements([f"no-such-lib-{uuid.uuid4().hex[:8]}"])


def test_a_directory_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"is not a package directory \(no __init__.py\)"):
        build_code_package("file", source_dir=tmp_path, work_dir=tmp_path / "w")


def test_bootstrap_needs_a_url_for_every_wheel(package: CodePackage) -> None:
    urls = {f.name: f"https://example.invalid/{f.name}" for f in package.files[1:]}
    with pytest.raises(ArtifactError, match=r"fetch='url' needs a URL for every wheel; missing skyflow_llmops-"):
        bootstrap_script(package, fetch="url", urls=urls)
    with pytest.raises(ArtifactError, match=r"fetch='dir' needs the directory"):
        bootstrap_script(package, fetch="dir")


def test_a_store_that_cannot_sign_urls_points_at_fetch_dir(package: CodePackage) -> None:
    store = open_store(f"memory://code-{uuid.uuid4().hex}")
    with pytest.raises(ArtifactError, match=r"cannot make signed URLs.*use fetch='dir'"):
        presign_code_package(package, store)
