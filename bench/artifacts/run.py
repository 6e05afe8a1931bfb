"""Artifact benchmark: 1 GB of 200 files local->S3 and S3->GCS against plain fsspec, and cache re-checks.

Usage: python -m bench.artifacts.run [--mb 1000] [--files 200] [--rounds 4] [--json out.json]
Servers (moto, fake-gcs-server) run on 127.0.0.1 for the duration; nothing leaves the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.artifacts.servers import gcs_server, s3_server
from skyflow.artifacts import (
    ArtifactRef,
    CacheIndex,
    code_digest,
    commit_output,
    open_store,
    stage_cache_key,
    transfer_artifact,
)
from skyflow.artifacts.store import DEFAULT_WORKERS, FsspecStore
from skyflow.spec.models import Stage


def make_files(root: Path, total_mb: int, count: int) -> list[Path]:
    size = total_mb * 1_000_000 // count
    paths = []
    for i in range(count):
        path = root / f"shard-{i:04d}.bin"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def fresh(options: dict[str, Any], scheme: str) -> FsspecStore:
    return open_store(f"{scheme}://bench-{uuid.uuid4().hex[:12]}/root", options, create=True)


def drop(store: FsspecStore) -> None:
    """Empty a bucket so the in-memory servers do not accumulate gigabytes across rounds."""
    store.fs.rm(store.root.split("/")[0], recursive=True)


def plain_copy(src: FsspecStore, dst: FsspecStore, keys: list[str]) -> None:
    """The floor: each object read whole and written whole, as many at a time as skyflow uses."""
    def one(key: str) -> None:
        dst.fs.pipe_file(f"{dst.root}/{key}", src.fs.cat_file(f"{src.root}/{key}"))
    with ThreadPoolExecutor(max_workers=DEFAULT_WORKERS) as pool:
        list(pool.map(one, keys))


def run_round(files: list[Path], keys: list[str], s3_opts: dict[str, Any], gcs_opts: dict[str, Any],
              total: int, *, ours_first: bool) -> dict[str, float]:
    """Each way of moving the files once, into fresh buckets that are emptied afterwards. Rounds
    alternate which of each pair goes first, so that neither always meets the fuller server."""
    plain_s3, ours_s3 = fresh(s3_opts, "s3"), fresh(s3_opts, "s3")
    plain_gcs, ours_gcs = fresh(gcs_opts, "gs"), fresh(gcs_opts, "gs")
    seconds: dict[str, float] = {}
    refs: list[Any] = []

    def put_plain() -> None:
        seconds["put_local_s3"], _ = timed(plain_s3.fs.put, [str(p) for p in files],
                                           [f"{plain_s3.root}/{k}" for k in keys])

    def put_ours() -> None:
        seconds["ours_local_s3"], ref = timed(commit_output, ours_s3, files[0].parent, name="corpus")
        refs.append(ref)

    def copy_plain() -> None:
        seconds["copy_s3_gcs"], _ = timed(plain_copy, plain_s3, plain_gcs, keys)

    def copy_ours() -> None:
        seconds["ours_s3_gcs"], (_, stats) = timed(transfer_artifact, refs[0], ours_gcs)
        assert stats.bytes == total

    for step in ((put_ours, put_plain, copy_ours, copy_plain) if ours_first
                 else (put_plain, put_ours, copy_plain, copy_ours)):
        step()
    for store in (plain_s3, ours_s3, plain_gcs, ours_gcs):
        drop(store)
    return seconds


def bench_moves(files: list[Path], s3_opts: dict[str, Any], gcs_opts: dict[str, Any], rounds: int
                ) -> dict[str, Any]:
    total = sum(p.stat().st_size for p in files)
    keys = [f"plain/{p.name}" for p in files]
    best: dict[str, float] = {}
    for i in range(rounds):
        for name, seconds in run_round(files, keys, s3_opts, gcs_opts, total, ours_first=i % 2 == 1).items():
            best[name] = min(seconds, best.get(name, float("inf")))
    mb = total / 1e6
    return {
        "bytes": total, "files": len(files), "rounds": rounds,
        "local_to_s3": {"plain_s": best["put_local_s3"], "skyflow_s": best["ours_local_s3"],
                        "plain_mb_s": mb / best["put_local_s3"], "skyflow_mb_s": mb / best["ours_local_s3"],
                        "ratio": best["put_local_s3"] / best["ours_local_s3"]},
        "s3_to_gcs": {"plain_s": best["copy_s3_gcs"], "skyflow_s": best["ours_s3_gcs"],
                      "plain_mb_s": mb / best["copy_s3_gcs"], "skyflow_mb_s": mb / best["ours_s3_gcs"],
                      "ratio": best["copy_s3_gcs"] / best["ours_s3_gcs"]},
    }


def bench_cache_chain(store: FsspecStore, work: Path, stages: int = 10) -> dict[str, float]:
    """Commit a chain's outputs once, then time what a rerun does per stage: code digest, key, lookup."""
    chain = []
    for i in range(stages):
        workdir = work / f"code-{i}"
        workdir.mkdir(parents=True)
        for j in range(20):
            (workdir / f"mod{j}.py").write_text(f"# stage {i} module {j}\n" * 50)
        out = work / f"out-{i}"
        out.mkdir()
        for j in range(50):
            (out / f"part-{j}.bin").write_bytes(os.urandom(20_000))
        chain.append((Stage.model_validate({"run": f"python step{i}.py", "outputs": ["out"]}), workdir, out))
    index = CacheIndex(store)

    def run_chain(commit: bool) -> int:
        upstream: dict[str, str] = {}
        hits = 0
        for stage, workdir, out in chain:
            key = stage_cache_key(stage, params={"seed": 1}, input_digests=upstream,
                                  code_digest=code_digest(workdir), secret_names=["HF_TOKEN"])
            found: dict[str, ArtifactRef] | None = index.lookup(key)
            if found is None and commit:
                found = {"out": commit_output(store, out, name="out")}
                index.record(key, found)
            else:
                hits += found is not None
            assert found is not None
            upstream = {"in": found["out"].digest}
        return hits

    first_s, _ = timed(run_chain, commit=True)
    rerun_s, hits = timed(run_chain, commit=False)
    assert hits == stages
    return {"stages": stages, "first_run_s": first_s, "rerun_checks_s": rerun_s}


def render(results: dict[str, Any]) -> str:
    moves = results["moves"]
    lines = [f"{moves['bytes'] / 1e9:.2f} GB in {moves['files']} files, best of {moves['rounds']} rounds", "",
             "| move | plain fsspec | skyflow | ratio (plain time / skyflow time) |", "|---|---|---|---|"]
    for name, label in (("local_to_s3", "local -> S3 (put vs commit_output)"),
                        ("s3_to_gcs", "S3 -> GCS (cat/pipe vs transfer_artifact)")):
        m = moves[name]
        lines.append(f"| {label} | {m['plain_s']:.2f} s ({m['plain_mb_s']:.0f} MB/s) | {m['skyflow_s']:.2f} s "
                     f"({m['skyflow_mb_s']:.0f} MB/s) | {m['ratio']:.2f} |")
    lines += ["", "| 10-stage chain, every stage a verified cache hit | first run (commit) | rerun checks |",
              "|---|---|---|"]
    for name, c in results["cache"].items():
        lines.append(f"| {name} store | {c['first_run_s']:.2f} s | {c['rerun_checks_s']:.3f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skyflow-bench-artifacts-") as tmp, \
            s3_server() as s3_opts, gcs_server() as gcs_opts:
        data = Path(tmp) / "data"
        data.mkdir()
        files = make_files(data, args.mb, args.files)
        results: dict[str, Any] = {"moves": bench_moves(files, s3_opts, gcs_opts, args.rounds), "cache": {}}
        results["cache"]["local"] = bench_cache_chain(open_store(str(Path(tmp) / "store")), Path(tmp) / "c1")
        results["cache"]["S3 (moto)"] = bench_cache_chain(fresh(s3_opts, "s3"), Path(tmp) / "c2")
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
