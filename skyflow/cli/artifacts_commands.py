"""`skyflow artifacts gc | ls | show | verify | get`: look at the artifact stores, check them, remove what no
kept run uses."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import click

from skyflow.cli.options import complete_run_id

_AGE_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age_s(text: str) -> float:
    """'90s', '30m', '1h', '2d', '1w' or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not an age; write e.g. 90s, 30m, 1h, 2d or 1w")
    return float(match[1]) * _AGE_UNITS_S[match[2] or "s"]


def _store_uris(extra: tuple[str, ...]) -> list[str]:
    """The default local store, every store that holds an output recorded in run state, and --store."""
    from skyflow.home import skyflow_home
    from skyflow.runner.state import RunStore

    uris = {str(skyflow_home() / "artifacts")}
    for run in RunStore().list_runs(limit=1 << 31):
        uris.update(out.store_uri for stage in run.stages.values() for out in stage.outputs.values()
                    if out.store_uri)
    return sorted(uris | set(extra))


def _size(size_bytes: int) -> str:
    if size_bytes < 1000:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


@click.group()
def artifacts() -> None:
    """Look at artifact stores, copy an output out, and remove artifacts no kept run references.

    \b
    skyflow artifacts get RUN eval.report
    skyflow artifacts ls
    skyflow artifacts gc --keep-last 5 --dry-run
    """


store_option = click.option("--store", "stores", multiple=True, metavar="URI",
                            help="Also this store (default: the local store and every store run state names).")


@artifacts.command()
@click.argument("run_id", shell_complete=complete_run_id)
@click.argument("output", metavar="STAGE.OUTPUT")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
def get(run_id: str, output: str, dest: str | None) -> None:
    """Copy a run's output out of its store into DEST (default: ./OUTPUT), checked against its digest.

    \b
    skyflow artifacts get rlhf-20261130-061200-ab12 eval.report
    skyflow artifacts get RUN ppo.policy /tmp/policy
    """
    from pathlib import Path

    from skyflow.session import Session
    from skyflow.session.session import fetch_output

    stage, sep, name = output.partition(".")
    if not sep or not stage or not name:
        raise click.BadParameter(f"{output!r} is not STAGE.OUTPUT (e.g. eval.report)", param_hint="STAGE.OUTPUT")
    target = Path(dest or name)
    if target.exists() and any(target.iterdir()):
        raise click.BadParameter(f"{target} exists and is not empty; name another folder", param_hint="DEST")
    from skyflow.artifacts.progress import reporting_transfers_to
    from skyflow.cli.transfer_bar import TransferBar

    run = Session().get_run(run_id)
    with TransferBar(f"{output} -> {target}") as bar, reporting_transfers_to(bar):
        path = fetch_output(run, stage, name, target)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    click.echo(f"{output} of run {run_id} -> {path} ({len(files)} file(s), verified)")


@artifacts.command()
@click.option("--keep-last", type=click.IntRange(min=1), required=True, metavar="N",
              help="Keep the outputs of the newest N runs of each pipeline.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--min-age", default="1h", show_default=True, metavar="AGE",
              help="Never remove objects younger than this (a commit may be in progress).")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per store (schema: docs/cli.md).")
def gc(keep_last: int, dry_run: bool, min_age: str, stores: tuple[str, ...], as_json: bool) -> None:
    """Remove artifacts, blobs and cache entries that no kept run references.

    \b
    skyflow artifacts gc --keep-last 5 --dry-run
    skyflow artifacts gc --keep-last 1 --min-age 2d --store s3://team-artifacts/llm
    """
    from pathlib import Path

    from skyflow.artifacts import collect_garbage, open_store
    from skyflow.runner.state import RunStore

    min_age_s = parse_age_s(min_age)
    keep = RunStore().referenced_digests(keep_last)
    for uri in _store_uris(stores):
        if "://" not in uri and not Path(uri).is_dir():
            continue  # a local store nothing was ever written to
        stats = collect_garbage(open_store(uri), keep, min_age_s=min_age_s, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps({"store": uri, "dry_run": dry_run, "manifests": stats.manifests_removed,
                                   "blobs": stats.blobs_removed, "cache_entries": stats.cache_entries_removed,
                                   "bytes": stats.bytes_freed}))
            continue
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{uri}: {verb} {stats.manifests_removed} artifacts, {stats.blobs_removed} blobs "
                   f"({_size(stats.bytes_freed)}), {stats.cache_entries_removed} cache entries")


@artifacts.command()
@click.option("--deep", is_flag=True,
              help="Re-read and re-hash every blob (default: manifests re-hashed, blobs present at their sizes).")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per store (schema: docs/cli.md).")
def verify(deep: bool, stores: tuple[str, ...], as_json: bool) -> None:
    """Check every artifact and cache entry in the stores; move what is damaged to quarantine/.

    A manifest or blob that does not hash to its name, and a cache entry filed under another key,
    are moved to the store's quarantine/ folder; cache entries naming a damaged or missing artifact
    are removed. The next run of the stages that made them runs them again. Exit code 1 when
    anything was found.

    \b
    skyflow artifacts verify
    skyflow artifacts verify --deep --store s3://team-artifacts/llm
    """
    import sys
    from pathlib import Path

    from skyflow.artifacts import open_store, scrub_store

    damaged = False
    for uri in _store_uris(stores):
        if "://" not in uri and not Path(uri).is_dir():
            continue
        report = scrub_store(open_store(uri), deep=deep)
        damaged |= not report.ok
        if as_json:
            click.echo(json.dumps({"store": uri, "deep": deep, "manifests": report.manifests, "blobs": report.blobs,
                                   "bytes": report.total_bytes, "cache_entries": report.cache_entries,
                                   "damage": [{"key": d.key, "problem": d.problem, "quarantined": d.quarantined}
                                              for d in report.damage]}))
            continue
        how = "re-hashed" if deep else "present at their sizes"
        click.echo(f"{uri}: {report.manifests} artifacts, {report.blobs} blobs ({_size(report.total_bytes)}) {how}, "
                   f"{report.cache_entries} cache entries: " + ("ok" if report.ok else f"{len(report.damage)} damaged"))
        for d in report.damage:
            where = f" -> {d.quarantined}" if d.quarantined else ""
            click.echo(f"  {d.key}: {d.problem}{where}")
    if damaged:
        sys.exit(1)


@artifacts.command(name="ls")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (schema: docs/cli.md).")
def ls(stores: tuple[str, ...], as_json: bool) -> None:
    """List the artifacts in each store: digest, files, size, age.

    \b
    skyflow artifacts ls
    skyflow artifacts ls --store s3://team-artifacts/llm --json
    """
    from pathlib import Path

    from skyflow.artifacts import load_manifest, open_store
    from skyflow.artifacts.refs import MANIFESTS, ArtifactRef, digest_of_manifest_key, manifest_key

    rows: list[dict[str, Any]] = []
    for uri in _store_uris(stores):
        if "://" not in uri and not Path(uri).is_dir():
            continue
        store = open_store(uri)
        for key, info in sorted(store.list_keys(MANIFESTS).items()):
            digest = digest_of_manifest_key(key)
            manifest = load_manifest(ArtifactRef(name=digest, uri=store.url(manifest_key(digest)), digest=digest,
                                                 size_bytes=0, file_count=0, store=store))
            rows.append({"store": uri, "digest": digest, "files": len(manifest.files),
                         "size_bytes": manifest.size_bytes, "modified_s": info.modified_s})
    if as_json:
        click.echo(json.dumps(rows))
        return
    now = time.time()
    for r in rows:
        age = f"{(now - r['modified_s']) / 3600:.1f} h" if r["modified_s"] else "?"
        click.echo(f"{r['digest'][:19]}  {r['files']:>6} files  {_size(r['size_bytes']):>9}  {age:>8}  {r['store']}")


@artifacts.command()
@click.argument("digest")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the artifact and its files as JSON (schema: docs/cli.md).")
def show(digest: str, stores: tuple[str, ...], as_json: bool) -> None:
    """Print an artifact's files (DIGEST may be a unique prefix, with or without 'sha256:').

    \b
    skyflow artifacts show 3f2a9c
    skyflow artifacts show sha256:3f2a9c --json | jq '.files[].path'
    """
    from pathlib import Path

    from skyflow.artifacts import load_manifest, open_store
    from skyflow.artifacts.refs import MANIFESTS, ArtifactRef, digest_of_manifest_key, manifest_key

    wanted = digest if digest.startswith("sha256:") else f"sha256:{digest}"
    for uri in _store_uris(stores):
        if "://" not in uri and not Path(uri).is_dir():
            continue
        store = open_store(uri)
        found = sorted({d for d in map(digest_of_manifest_key, store.list_keys(MANIFESTS)) if d.startswith(wanted)})
        if len(found) > 1:
            raise click.ClickException(f"digest prefix {digest!r} names {len(found)} artifacts in {uri}; "
                                       "give more of it")
        if found:
            ref = ArtifactRef(name=found[0], uri=store.url(manifest_key(found[0])), digest=found[0],
                              size_bytes=0, file_count=0, store=store)
            manifest = load_manifest(ref)
            if as_json:
                click.echo(json.dumps({"digest": found[0], "kind": manifest.kind, "uri": ref.uri, "store": uri,
                                       "size_bytes": manifest.size_bytes,
                                       "files": [{"path": f.path, "size_bytes": f.size_bytes, "digest": f.digest}
                                                 for f in manifest.files]}))
                return
            click.echo(f"{found[0]}  {manifest.kind}, {len(manifest.files)} files, "
                       f"{_size(manifest.size_bytes)}  {ref.uri}")
            for f in manifest.files:
                click.echo(f"  {f.path}  {_size(f.size_bytes)}  {f.digest}")
            return
    raise click.ClickException(f"no artifact with digest {digest!r} in {', '.join(_store_uris(stores))}; "
                               "see `skyflow artifacts ls`")
