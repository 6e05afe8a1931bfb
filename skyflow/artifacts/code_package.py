"""Code package: the running skyflow and what its node wrapper imports, as wheels a bare node installs.

A remote node must run exactly the code that planned it, and nothing on a node is resolved by name
from a package index. So the planner's machine builds a wheelhouse: a wheel of the running skyflow
package directory (uncommitted changes included) and wheels of the wrapper's dependencies, repacked
from the distributions installed here. It is stored content-addressed in the pipeline's store::

    code/<digest>.json                  the package's index (written last: present means complete)
    code/wheels/<sha256>/<file>.whl     each wheel once, shared by every package that has it

:func:`bootstrap_script` is the shell a node runs first: it installs the wheelhouse into
``~/.skyflow/env/<digest>`` with ``pip install --no-index`` (or finds it there already, or finds the
node's own python baked with it) and leaves that interpreter in ``$SKYFLOW_PYTHON``.
"""

from __future__ import annotations

import ast
import base64
import csv
import difflib
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import sys
import sysconfig
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from skyflow.artifacts.store import ArtifactStore, FsspecStore
from skyflow.errors import ArtifactError

# The distribution name in pyproject.toml; the import package is `skyflow`. The name `skyflow` on
# the public package index belongs to an unrelated project.
DIST_NAME = "skyflow-llmops"
WRAPPER_MODULE = "skyflow.backends.remote_stage"
# Third-party distributions the wrapper imports on a node besides its store's library: every store
# goes through fsspec, and pydantic comes in through skyflow.artifacts (its cache key imports
# skyflow.spec.models). The unit tests check this list against what the wrapper really imports.
WRAPPER_REQUIREMENTS = ("fsspec", "pydantic")
# Each store's filesystem library. botocore imports certifi for its CA bundle when it is there (and
# falls back to a copy of its own): ship it, so a node verifies TLS as this machine does.
STORE_REQUIREMENTS: dict[str, tuple[str, ...]] = {"s3": ("s3fs", "certifi"), "gs": ("gcsfs",),
                                                  "az": ("adlfs",), "file": ()}
_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az",
            "file": "file", "local": "file", "": "file"}
_EXTRAS = {"s3fs": "s3", "gcsfs": "gcs", "adlfs": "azure"}  # pyproject extras that install them
CODE_PREFIX = "code"
# Inside the skyflow wheel's dist-info: the package digest, so a node can tell a baked image apart.
DIGEST_FILE = "skyflow-code-package.json"
DEFAULT_ENV_ROOT = "~/.skyflow/env"
_FORMAT = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same files always make the same wheel bytes
_SKIPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}  # written by the installer


@dataclass(frozen=True)
class PackageFile:
    """One wheel of a code package."""

    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class CodePackage:
    """A built wheelhouse: skyflow's wheel and its node dependencies, under ``directory`` here."""

    digest: str  # sha256 hex over skyflow's files and every dependency wheel
    dist: str
    version: str  # skyflow's version with the digest as local label: 0.1.0+g<12 hex>
    scheme: str  # the store kind it was built for: s3, gs, az or file
    python: tuple[int, int]
    platform: str  # sysconfig.get_platform() of the machine that built it
    files: tuple[PackageFile, ...]
    directory: Path

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def index_key(self) -> str:
        return f"{CODE_PREFIX}/{self.digest}.json"

    def key(self, file: PackageFile) -> str:
        """Where one wheel lives in a store: by its own content, so packages share unchanged wheels."""
        return f"{CODE_PREFIX}/wheels/{file.sha256}/{file.name}"

    def index(self) -> dict[str, Any]:
        return {"format": _FORMAT, "digest": self.digest, "dist": self.dist, "version": self.version,
                "scheme": self.scheme, "python": list(self.python), "platform": self.platform,
                "files": [{"name": f.name, "sha256": f.sha256, "size_bytes": f.size_bytes} for f in self.files]}


_lock = threading.Lock()
_packages: dict[tuple[str, Path], CodePackage] = {}
_repacked: dict[tuple[str, str], Path] = {}
_work_dir: Path | None = None


# -- building ------------------------------------------------------------------------------------

def build_code_package(scheme: str = "s3", *, source_dir: Path | None = None,
                       work_dir: Path | None = None) -> CodePackage:
    """The code package for nodes using a store of ``scheme`` (s3, gs, az, file, or a store URI).

    ``source_dir`` is the skyflow package directory to ship (default: the running one). Built once
    per process per digest; wheels are written under ``work_dir`` (default: a temporary directory
    removed when the process exits).
    """
    kind = store_kind(scheme)
    src = (source_dir or Path(__file__).resolve().parents[1]).resolve()
    sources = _source_files(src)
    base_version = _source_version(src)
    roots = [*WRAPPER_REQUIREMENTS, *STORE_REQUIREMENTS[kind]]
    with _lock:
        out = (work_dir or _default_work_dir()).resolve()
        deps = [_repack_cached(name, out / "wheels") for name in sorted(resolve_requirements(roots))]
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in roots]
        source_digests = [(arc, hashlib.sha256(data).hexdigest()) for arc, data in sources]
        dep_files = [PackageFile(p.name, _sha256_file(p), p.stat().st_size) for p in deps]
        digest = _package_digest(kind, base_version, pins, source_digests, dep_files)
        built = _packages.get((digest, out))
        if built is not None and all((built.directory / f.name).is_file() for f in built.files):
            return built
        package_dir = out / digest
        package_dir.mkdir(parents=True, exist_ok=True)
        for wheel in deps:
            _link_or_copy(wheel, package_dir / wheel.name)
        version = f"{base_version}+g{digest[:12]}"
        own = _write_skyflow_wheel(package_dir, sources, version, pins, {"digest": digest, "scheme": kind})
        files = (PackageFile(own.name, _sha256_file(own), own.stat().st_size), *dep_files)
        package = CodePackage(digest=digest, dist=DIST_NAME, version=version, scheme=kind,
                              python=(sys.version_info.major, sys.version_info.minor),
                              platform=sysconfig.get_platform(), files=files, directory=package_dir)
        _packages[(digest, out)] = package
        return package


def store_kind(scheme: str) -> str:
    """s3, gs, az or file for a scheme or store URI (``gs://b/x`` -> gs); a clear error otherwise."""
    name = scheme.partition("://")[0].lower() if "://" in scheme else scheme.lower()
    kind = _SCHEMES.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(_SCHEMES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ArtifactError(f"no code package for store scheme {scheme!r}; use one of s3, gs, az or file.{hint}")
    return kind


def resolve_requirements(roots: Iterable[str]) -> dict[str, str]:
    """Canonical name -> installed version for ``roots`` and their requirements, recursively.

    Markers are evaluated for this interpreter (and each requested extra); every version must
    satisfy what its dependents ask for, since the node's pip will check the same.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    versions: dict[str, str] = {}
    extras_of: dict[str, set[str]] = {}
    todo: list[tuple[Requirement, str]] = [(Requirement(root), "skyflow") for root in roots]
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        dist = _installed(req.name, wanted_by)
        version = dist.version
        if not req.specifier.contains(version, prereleases=True):
            raise ArtifactError(f"{wanted_by} needs {req}, but {req.name} {version} is installed here; "
                                "install a matching version so the node gets a consistent set")
        new_extras = set(req.extras) - extras_of.get(name, set())
        if name in versions and not new_extras:
            continue
        versions[name] = version
        extras_of.setdefault(name, set()).update(req.extras)
        for line in dist.requires or []:
            try:
                sub = Requirement(line)
            except InvalidRequirement as exc:
                raise ArtifactError(f"{req.name} {version} has a malformed requirement {line!r}: {exc}") from exc
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra})
                                         for extra in ("", *sorted(extras_of[name]))):
                todo.append((sub, f"{req.name} {version}"))
    return versions


def _record_files(dist: importlib.metadata.Distribution) -> list[PurePosixPath] | None:
    """Every file the distribution's RECORD lists, read from RECORD itself: `Distribution.files` from
    the importlib_metadata backport (which MLflow and others install as a finder) leaves out listed
    files that are gone, and a wheel rebuilt without them would install as broken on the node."""
    text = dist.read_text("RECORD")
    if text is None:
        return None
    return [PurePosixPath(row[0]) for row in csv.reader(text.splitlines()) if row and row[0]]


def _installed(name: str, wanted_by: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        extra = _EXTRAS.get(name)
        how = f"pip install {name} (the {extra} extra)" if extra else f"pip install {name}"
        raise ArtifactError(f"{name} (needed by {wanted_by} on remote nodes) is not installed in this "
                            f"environment ({sys.prefix}); the code package is made from what is installed "
                            f"here: {how}") from None


def _source_files(src: Path) -> list[tuple[str, bytes]]:
    """(name in the wheel, bytes) of skyflow's modules and package data; caches and dotfiles stay out.

    Read once, so the digest and the wheel describe the same bytes even while files are being edited.
    """
    if not (src / "__init__.py").is_file():
        raise ArtifactError(f"{src} is not a package directory (no __init__.py); pass skyflow's package "
                            "directory as source_dir")
    found = []
    for path in sorted(src.rglob("*")):
        inside = path.relative_to(src)  # the folders above src (a .venv, ~/.local) do not count
        rel = inside.as_posix()
        if "__pycache__" in inside.parts or any(p.startswith(".") for p in inside.parts) or not (
                path.suffix == ".py" or rel == "py.typed" or rel.startswith("catalog/data/")):
            continue
        try:
            if path.is_file():
                found.append((f"skyflow/{rel}", path.read_bytes()))
        except OSError as exc:
            raise ArtifactError(f"cannot read {rel} while packing skyflow ({exc}); if it is being edited, "
                                "launch again", uri=str(src)) from exc
    return found


def _source_version(src: Path) -> str:
    """``__version__`` as written in the package's __init__.py (read, not imported)."""
    init = src / "__init__.py"
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ArtifactError(f"cannot read the package version: {exc}", uri=str(init)) from exc
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
            continue
        if any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets) \
                and isinstance(node.value.value, str):
            return node.value.value
    raise ArtifactError('no `__version__ = "X.Y.Z"` in the package', uri=str(init))


def _package_digest(kind: str, version: str, pins: list[str], sources: list[tuple[str, str]],
                    deps: list[PackageFile]) -> str:
    body = {"format": _FORMAT, "dist": DIST_NAME, "version": version, "scheme": kind, "requires": pins,
            "sources": sources, "wheels": [[f.name, f.sha256] for f in deps]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _default_work_dir() -> Path:
    global _work_dir
    if _work_dir is None:
        import atexit
        import shutil

        _work_dir = Path(tempfile.mkdtemp(prefix="skyflow-code-"))
        atexit.register(shutil.rmtree, _work_dir, True)
    return _work_dir


def _link_or_copy(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    try:
        os.link(src, dest)
    except OSError:
        import shutil

        shutil.copyfile(src, dest)


# -- wheels --------------------------------------------------------------------------------------

def _write_skyflow_wheel(dest: Path, sources: list[tuple[str, bytes]], version: str, pins: list[str],
                         stamp: Mapping[str, str]) -> Path:
    dist_info = f"{_wheel_name(DIST_NAME)}-{version}.dist-info"
    metadata = "".join([
        "Metadata-Version: 2.1\n", f"Name: {DIST_NAME}\n", f"Version: {version}\n",
        "Summary: skyflow's node runtime, packed from the machine that planned the run\n",
        "Requires-Python: >=3.11\n", *(f"Requires-Dist: {pin}\n" for pin in pins)])
    wheel = ("Wheel-Version: 1.0\nGenerator: skyflow.artifacts.code_package\nRoot-Is-Purelib: true\n"
             "Tag: py3-none-any\n")
    members: list[tuple[str, bytes | Path, int]] = [(arc, data, 0o644) for arc, data in sources]
    members += [(f"{dist_info}/METADATA", metadata.encode(), 0o644),
                (f"{dist_info}/WHEEL", wheel.encode(), 0o644),
                (f"{dist_info}/top_level.txt", b"skyflow\n", 0o644),
                (f"{dist_info}/{DIGEST_FILE}", json.dumps(dict(stamp), sort_keys=True).encode(), 0o644)]
    path = dest / f"{_wheel_name(DIST_NAME)}-{version}-py3-none-any.whl"
    write_wheel(path, members, dist_info)
    return path


def write_wheel(path: Path, members: Iterable[tuple[str, bytes | Path, int]], dist_info: str) -> Path:
    """Write a wheel: ``members`` are (name in the zip, bytes or a file, mode); RECORD is added last.

    Entries are sorted with the dist-info at the end and stamped with a fixed time, so the same
    members always give the same bytes.
    """
    records: list[str] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    ordered = sorted(members, key=lambda m: (m[0].startswith(f"{dist_info}/"), m[0]))
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content, mode in ordered:
            data = content.read_bytes() if isinstance(content, Path) else content
            _zip_write(zf, name, data, mode)
            records.append(f"{_record_name(name)},sha256={_b64_digest(data)},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        _zip_write(zf, f"{dist_info}/RECORD", ("\n".join(records) + "\n").encode(), 0o644)
    os.replace(tmp, path)
    return path


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.external_attr = (0o100000 | (mode & 0o777)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def _record_name(name: str) -> str:
    return f'"{name}"' if "," in name else name


def _repack_cached(name: str, dest: Path) -> Path:
    """Repack once per process per installed copy (its RECORD changes when it is reinstalled)."""
    dist = importlib.metadata.distribution(name)
    record = dist.read_text("RECORD") or ""
    key = (str(dist.locate_file("")) + name, hashlib.sha256(record.encode()).hexdigest())
    wheel = _repacked.get(key)
    if wheel is None or not wheel.is_file():
        wheel = repack_distribution(name, dest)
        _repacked[key] = wheel
    return wheel


def repack_distribution(name: str, dest: Path) -> Path:
    """Rebuild the wheel an installed distribution came from, into ``dest``; returns its path.

    Files come from the distribution's RECORD; the tags from its WHEEL file. Bytecode caches and what
    the installer added (INSTALLER, REQUESTED, direct_url.json) are left out, scripts pip generated
    from entry points are left for the node's pip to generate again, other scripts and data files go
    back under ``<name>.data/``.
    """
    dist = _installed(name, "the code package")
    files = _record_files(dist)
    meta = [f for f in files or [] if len(f.parts) == 2 and f.parts[0].endswith(".dist-info")
            and f.parts[1] == "METADATA"]
    if not files or not meta:
        raise ArtifactError(f"{name} {dist.version} was not installed from a wheel (no RECORD listing its "
                            "files), so it cannot be repacked; reinstall it with a current pip")
    dist_info = meta[0].parts[0]
    if json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"):
        raise ArtifactError(f"{name} is installed in editable mode; nodes need a real copy: install it "
                            "without -e")
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise ArtifactError(f"{name} {dist.version} has no wheel tags in {dist_info}/WHEEL; reinstall it")
    generated = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    data_dir = dist_info.removesuffix(".dist-info") + ".data"
    members: list[tuple[str, bytes | Path, int]] = []
    for entry in files:
        rel = entry.as_posix()
        if "__pycache__" in entry.parts or (entry.parts[0] == dist_info and entry.name in _SKIPPED_DIST_INFO):
            continue
        source = Path(str(dist.locate_file(entry)))
        member = _data_member(source, data_dir, generated) if rel.startswith("../") else (rel, source)
        if member is None:
            continue
        if not source.is_file():
            raise ArtifactError(f"{name} {dist.version} lists {rel} in its RECORD but it is missing from "
                                f"{source.parent}; reinstall {name}")
        members.append((member[0], member[1], source.stat().st_mode))
    wheel = dest / f"{_wheel_name(dist.metadata['Name'])}-{dist.version}-{_compressed_tag(tags)}.whl"
    return write_wheel(wheel, members, dist_info)


def _data_member(source: Path, data_dir: str, generated: set[str]) -> tuple[str, bytes | Path] | None:
    """Where a file installed outside site-packages goes in the wheel (None: pip makes it again)."""
    target = Path(os.path.normpath(source))
    scripts = Path(sysconfig.get_path("scripts"))
    prefix = Path(sys.prefix)
    if target.parent == scripts:
        if target.name in generated:
            return None
        data = target.read_bytes()
        first, newline, rest = data.partition(b"\n")
        if first.startswith(b"#!") and b"python" in first:
            data = b"#!python" + newline + rest  # pip points it at the node's interpreter again
        return f"{data_dir}/scripts/{target.name}", data
    headers = prefix / "include" / "site" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if target.is_relative_to(headers):
        rel = target.relative_to(headers).as_posix().split("/", 1)[-1]
        return f"{data_dir}/headers/{rel}", target
    if target.is_relative_to(prefix):
        return f"{data_dir}/data/{target.relative_to(prefix).as_posix()}", target
    raise ArtifactError(f"cannot repack {target}: it is installed outside this environment ({prefix})")


def _compressed_tag(tags: list[str]) -> str:
    """py-abi-platform tags joined per position, as wheel file names write them (first seen first)."""
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for i, piece in enumerate(tag.split("-", 2)):
            if piece not in parts[i]:
                parts[i].append(piece)
    return "-".join(".".join(p) for p in parts)


def _wheel_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- the store -----------------------------------------------------------------------------------

def upload_code_package(package: CodePackage, store: ArtifactStore) -> bool:
    """Put the package in ``store`` unless it is there; True when this call uploaded it.

    Wheels the store already holds (under their own digest) are not sent again; the index goes last
    and is created only once, so a package is complete wherever its index exists.
    """
    if store.size_of(package.index_key) is not None:
        return False
    keys = {package.key(f): f for f in package.files}
    sizes = store.sizes_of(keys)
    missing = [(package.directory / f.name, key) for key, f in keys.items() if sizes[key] != f.size_bytes]
    for path, _ in missing:
        if not path.is_file():
            raise ArtifactError(f"the code package's wheel {path} is gone; build the package again",
                                uri=store.url(package.index_key))
    store.upload_files(missing)
    store.write_bytes(package.index_key, json.dumps(package.index(), indent=1, sort_keys=True).encode(),
                      exclusive=True)
    return True


def presign_code_package(package: CodePackage, store: ArtifactStore, *, expiration_s: int = 6 * 3600
                         ) -> dict[str, str]:
    """Wheel file name -> an HTTPS URL a node can fetch with no credentials, valid ``expiration_s``."""
    if not isinstance(store, FsspecStore):
        raise ArtifactError("only fsspec stores can sign URLs; ship the files with fetch='dir'", uri=store.uri)
    urls = {}
    for file in package.files:
        key = package.key(file)
        try:
            urls[file.name] = str(store.fs.sign(f"{store.root}/{key}", expiration=expiration_s))
        except NotImplementedError:
            raise ArtifactError("this store cannot make signed URLs (a local path, or a filesystem without "
                                "signing); have the backend copy the package's directory to the node and "
                                "use fetch='dir'", uri=store.uri) from None
        except Exception as exc:  # each library fails in its own way when its credentials cannot sign
            raise ArtifactError(
                f"cannot sign a URL for {file.name}: {type(exc).__name__}: {exc}. Signing needs credentials "
                "that can sign (S3 keys, a GCS service account key, an Azure account key); otherwise have "
                "the backend copy the package's directory to the node and use fetch='dir'",
                uri=store.url(key)) from exc
    return urls


# -- on the node ---------------------------------------------------------------------------------

def bootstrap_script(package: CodePackage, *, fetch: Literal["url", "dir"], urls: Mapping[str, str] | None = None,
                     directory: str | None = None, python: str = "python3",
                     env_root: str = DEFAULT_ENV_ROOT) -> str:
    """POSIX shell that makes ``$SKYFLOW_PYTHON`` an interpreter with exactly this code package.

    ``fetch="url"`` downloads each wheel from ``urls`` (see :func:`presign_code_package`) with
    Python's standard library; ``fetch="dir"`` takes them from ``directory`` on the node, where the
    backend copied ``package.directory``. Every wheel's sha256 is checked, then pip installs them
    into ``<env_root>/<digest>`` without an index. Nothing is fetched when that environment already
    holds this digest, or when ``python`` itself was baked with it. A failure exits the shell.
    ``directory`` and ``env_root`` are expanded on the node (``~`` and ``$VAR``), so a backend can
    point them at a volume whose path the node's environment names.
    """
    if fetch == "url":
        missing = sorted({f.name for f in package.files} - set(urls or {}))
        if urls is None or missing:
            raise ArtifactError(f"fetch='url' needs a URL for every wheel; missing {', '.join(missing[:3])}"
                                f"{' ...' if len(missing) > 3 else ''} (use presign_code_package)")
    elif fetch == "dir":
        if not directory:
            raise ArtifactError("fetch='dir' needs the directory on the node that holds the package's wheels")
    else:
        raise ArtifactError(f"fetch must be 'url' or 'dir', not {fetch!r}")
    config = {"digest": package.digest, "dist": package.dist, "version": package.version,
              "python": list(package.python), "platform": package.platform, "digest_file": DIGEST_FILE,
              "env_root": env_root, "fetch": fetch, "dir": directory,
              "files": [{"name": f.name, "sha256": f.sha256, "size_bytes": f.size_bytes,
                         "url": (urls or {}).get(f.name)} for f in package.files]}
    return (f"SKYFLOW_PYTHON=$({shlex.quote(python)} -I -c {shlex.quote(_NODE_INSTALLER)} "
            f"{shlex.quote(json.dumps(config, sort_keys=True))}) || exit\nexport SKYFLOW_PYTHON\n")


def node_command(package: CodePackage, *, fetch: Literal["url", "dir"], urls: Mapping[str, str] | None = None,
                 directory: str | None = None, python: str = "python3", env_root: str = DEFAULT_ENV_ROOT,
                 module: str = WRAPPER_MODULE) -> str:
    """The bootstrap, then ``module`` (the stage wrapper) run by the interpreter it installed."""
    return (bootstrap_script(package, fetch=fetch, urls=urls, directory=directory, python=python,
                             env_root=env_root)
            + f'"$SKYFLOW_PYTHON" -P -m {shlex.quote(module)} "$@"\n')


# Runs on the node with only the standard library. Its stdout is the interpreter to use; everything
# else (its own messages, venv and pip output) goes to stderr.
_NODE_INSTALLER = r'''
import fcntl, hashlib, json, os, shutil, subprocess, sys, sysconfig, tempfile, time, urllib.error, urllib.request
from pathlib import Path

cfg = json.loads(sys.argv[1])
digest = cfg["digest"]


def where(path):
    return os.path.expanduser(os.path.expandvars(path))


def say(message):
    print("skyflow: " + message, file=sys.stderr, flush=True)


def fail(message):
    say(message)
    sys.exit(3)


def baked():
    import importlib.metadata
    import importlib.util
    try:
        found = importlib.metadata.distribution(cfg["dist"])
        stamp = json.loads(found.read_text(cfg["digest_file"]) or "{}")
        spec = importlib.util.find_spec("skyflow")
    except (ImportError, ValueError):
        return False
    if stamp.get("digest") != digest or spec is None or spec.origin is None:
        return False
    return Path(spec.origin).resolve() == Path(found.locate_file("skyflow/__init__.py")).resolve()


def check(path, item):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != item["sha256"]:
        fail("%s does not have the bytes the code package lists (sha256 %s, expected %s)"
             % (item["name"], h.hexdigest(), item["sha256"]))


def download(item, target):
    for attempt in range(4):
        try:
            with urllib.request.urlopen(item["url"], timeout=60) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            return
        except (OSError, urllib.error.URLError) as exc:
            final = attempt == 3 or (isinstance(exc, urllib.error.HTTPError) and exc.code in (400, 403, 404))
            if final:
                fail("cannot download %s: %s (the signed URL may have expired: launch the stage again)"
                     % (item["name"], exc))
            time.sleep(2 ** attempt)


def fetch(dest):
    for item in cfg["files"]:
        target = dest / item["name"]
        if cfg["fetch"] == "dir":
            source = Path(where(cfg["dir"])) / item["name"]
            if not source.is_file():
                fail("%s is missing; the backend should have copied the code package there" % source)
            os.symlink(source.resolve(), target)
        else:
            download(item, target)
        check(target, item)


def run(cmd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # no index, constraint or find-links from this machine's config
    code = subprocess.call(cmd, stdout=sys.stderr.fileno(), env=env)
    if code != 0:
        fail("%s failed with exit code %d" % (" ".join(cmd[:4]), code))


def install(env, python, marker):
    started = time.monotonic()
    shutil.rmtree(env, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=digest[:12] + ".", dir=env.parent) as tmp:
        fetch(Path(tmp))
        run([sys.executable, "-m", "venv", str(env)])
        run([str(python), "-m", "pip", "install", "--no-index", "--find-links", tmp, "--no-cache-dir",
             "--disable-pip-version-check", "--no-warn-script-location", "--quiet",
             "%s==%s" % (cfg["dist"], cfg["version"])])
    marker.write_text(digest + "\n")
    say("code package %s installed in %s (%.1f s)" % (digest, env, time.monotonic() - started))


def main():
    want = tuple(cfg["python"])
    if sys.version_info[:2] != want or sysconfig.get_platform() != cfg["platform"]:
        fail("this node's %s is Python %d.%d on %s; the code package %s was built for Python %d.%d on %s "
             "(its binary wheels carry that platform): run the node on an image with that Python"
             % (sys.executable, *sys.version_info[:2], sysconfig.get_platform(), digest[:12], *want,
                cfg["platform"]))
    if baked():
        say("code package %s already installed in %s" % (digest, sys.executable))
        return sys.executable
    root = Path(where(cfg["env_root"]))
    env = root / digest
    python = env / "bin" / "python"
    marker = env / ".skyflow-code-package"

    def installed():
        return python.exists() and marker.is_file() and marker.read_text().strip() == digest

    if installed():
        say("code package %s already installed in %s" % (digest, env))
        return str(python)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / (digest + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two stages on one node install once
        if installed():
            say("code package %s already installed in %s" % (digest, env))
        else:
            install(env, python, marker)
    return str(python)


print(main())
'''
