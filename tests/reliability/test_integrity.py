"""Damage in a store, on local disk and S3 (moto): every kind is found, quarantined and healed by the run
itself, and the stage that needs the data gets the right bytes. Garbage collection never removes what a
live run or a concurrent commit is using."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts import ArtifactRef, CacheIndex, collect_garbage, commit_output, open_store, verify_artifact
from skyflow.artifacts.commit import read_manifest
from skyflow.artifacts.manifest import digest_bytes
from skyflow.artifacts.refs import BLOBS, QUARANTINE, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore
from skyflow.artifacts.sync import fetch_artifact
from tests.integration.conftest import StoreServer
from tests.integration.runner.conftest import Skyflow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("integrity")]

WORDS = "".join(f"word {i:05d}\n" for i in range(400))
# `words` and `upper` have the same size, so their blobs can be swapped without a size changing.
# `twin` has an output named like `make`'s: its cache entry can be copied over `make`'s.
PIPELINE = """\
name: heal
stores: {{local: {{uri: {store}, create: true}}}}
inputs: {{raw: ./data}}
stages:
  make:
    run: |
      sed s/word/item/ $SKYFLOW_INPUT_RAW/words > $SKYFLOW_OUTPUT_DATA/words
      tr a-z A-Z < $SKYFLOW_INPUT_RAW/words > $SKYFLOW_OUTPUT_DATA/upper
    inputs: {{raw: raw}}
    outputs: [data]
  twin: {{run: 'echo twin > $SKYFLOW_OUTPUT_DATA/words', outputs: [data]}}
  gate:
    run: 'while [ ! -f {gate} ]; do sleep 0.05; done; echo open > $SKYFLOW_OUTPUT_OK/ok'
    outputs: [ok]
  use:
    run: 'cat $SKYFLOW_INPUT_DATA/words $SKYFLOW_INPUT_DATA/upper $SKYFLOW_INPUT_OK/ok > $SKYFLOW_OUTPUT_OUT/out'
    inputs: {{data: make.data, ok: gate.ok}}
    outputs: [out]
"""
EXPECTED = (WORDS.replace("word", "item") + WORDS.upper() + "open\n").encode()


class Where:
    """One kind of store for a test: its URI, the environment a run needs, and the store opened here."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.env: dict[str, str] = {}
        options: dict[str, Any] = {}
        if kind == "s3":
            server: StoreServer = request.getfixturevalue("s3_server")
            self.uri = server.new_uri("heal")
            self.env = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            options = server.storage_options
        else:
            self.uri = str(tmp_path / "store")
        self.store = open_store(self.uri, options, create=True)

    def ref(self, record: dict[str, Any]) -> ArtifactRef:
        return ArtifactRef(name=str(record.get("name", "x")), uri=record["uri"], digest=record["digest"],
                           size_bytes=int(record["size_bytes"]), file_count=0, store=self.store)

    def quarantined(self) -> list[str]:
        return sorted(self.store.list_keys(QUARANTINE))


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    return Where(request.param, tmp_path, request)


def outputs_of(home: Path, run_id: str, stage: str) -> dict[str, dict[str, Any]]:
    try:
        with sqlite3.connect(home / "state.db", timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM outputs WHERE run_id=? AND stage=?", (run_id, stage)).fetchall()
    except sqlite3.OperationalError:
        return {}
    return {r["name"]: dict(r) for r in rows}


def stage_of(home: Path, run_id: str, stage: str) -> dict[str, Any]:
    with sqlite3.connect(home / "state.db", timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM stages WHERE run_id=? AND stage=?", (run_id, stage)).fetchone())


# -- the kinds of damage, each done to `make`'s output as the store holds it ----------------------------

def _files(where: Where, record: dict[str, Any]) -> dict[str, str]:
    manifest = read_manifest(where.store, record["digest"])
    return {f.path: blob_key(f.digest) for f in manifest.files}


def flip_a_byte(where: Where, home: Path, run_id: str) -> None:
    key = _files(where, outputs_of(home, run_id, "make")["data"])["words"]
    data = bytearray(where.store.read_bytes(key))
    data[7] ^= 0x01
    where.store.write_bytes(key, bytes(data))


def swap_two_blobs(where: Where, home: Path, run_id: str) -> None:
    files = _files(where, outputs_of(home, run_id, "make")["data"])
    words, upper = where.store.read_bytes(files["words"]), where.store.read_bytes(files["upper"])
    where.store.write_bytes(files["words"], upper)
    where.store.write_bytes(files["upper"], words)


def edit_the_manifest(where: Where, home: Path, run_id: str) -> None:
    key = manifest_key(outputs_of(home, run_id, "make")["data"]["digest"])
    where.store.write_bytes(key, where.store.read_bytes(key).replace(b'"upper"', b'"UPPER"'))


def delete_a_blob(where: Where, home: Path, run_id: str) -> None:
    where.store.delete([_files(where, outputs_of(home, run_id, "make")["data"])["upper"]])


def copy_an_entry_over_another(where: Where, home: Path, run_id: str) -> None:
    own, twin = stage_of(home, run_id, "make")["cache_key"], stage_of(home, run_id, "twin")["cache_key"]
    where.store.write_bytes(f"cache/{own}.json", where.store.read_bytes(f"cache/{twin}.json"))


def damage_the_imported_input(where: Where, home: Path, run_id: str) -> None:
    key = blob_key(digest_bytes(WORDS.encode()))
    data = bytearray(where.store.read_bytes(key))
    data[3] ^= 0x20
    where.store.write_bytes(key, bytes(data))


def setup(skyflow: Skyflow, where: Where, gate: Path) -> None:
    (skyflow.workdir / "data").mkdir(exist_ok=True)
    (skyflow.workdir / "data" / "words").write_text(WORDS)
    skyflow.write("heal.yaml", PIPELINE.format(store=where.uri, gate=gate))


def use_output(where: Where, home: Path, run_id: str, tmp_path: Path) -> bytes:
    record = outputs_of(home, run_id, "use")["out"]
    return (fetch_artifact(where.ref(record), tmp_path / f"fetched-{run_id}") / "out").read_bytes()


def all_outputs_whole(where: Where, home: Path, run_id: str) -> None:
    for stage in ("make", "twin", "gate", "use"):
        for record in outputs_of(home, run_id, stage).values():
            assert verify_artifact(where.ref(record), deep=True)


# -- damage found while a run is going: the consumer's fetch finds it, the producer runs again -----------

@pytest.mark.parametrize("damage", [flip_a_byte, swap_two_blobs, edit_the_manifest, delete_a_blob],
                         ids=["flipped-byte", "swapped-blobs", "edited-manifest", "deleted-blob"])
def test_damage_found_by_a_consumer_heals_in_the_same_run(skyflow: Skyflow, where: Where, tmp_path: Path,
                                                          damage: Callable[[Where, Path, str], None]) -> None:
    gate = tmp_path / "gate-open"
    setup(skyflow, where, gate)
    runner = skyflow.start("run", "heal.yaml", "--run-id", "heal-1", "--infra", "local", "--no-lineage", "--json",
                           env=where.env)
    try:
        wait_for(lambda: "data" in outputs_of(skyflow.home, "heal-1", "make"), 60, "make's output")
        damage(where, skyflow.home, "heal-1")  # after make committed it, before use fetches it
        gate.touch()
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, f"{out}\n{err}"
    assert use_output(where, skyflow.home, "heal-1", tmp_path) == EXPECTED
    make = stage_of(skyflow.home, "heal-1", "make")
    assert (make["state"], make["heals"], make["attempts"]) == ("succeeded", 1, 2)  # ran again once, in this run
    all_outputs_whole(where, skyflow.home, "heal-1")
    if damage is not delete_a_blob:
        assert where.quarantined()  # the bad copy is kept aside, not deleted


# -- damage found between runs: the next run's cache lookup finds it, the stage runs instead of hitting ---

@pytest.mark.parametrize("damage", [flip_a_byte, swap_two_blobs, edit_the_manifest, copy_an_entry_over_another,
                                    damage_the_imported_input],
                         ids=["flipped-byte", "swapped-blobs", "edited-manifest", "copied-entry", "imported-input"])
def test_damage_left_in_the_store_is_never_a_cache_hit_and_the_next_run_heals_it(
        skyflow: Skyflow, where: Where, tmp_path: Path, damage: Callable[[Where, Path, str], None]) -> None:
    gate = tmp_path / "gate-open"
    gate.touch()
    setup(skyflow, where, gate)
    code, _, err = skyflow.run_json("heal.yaml", "--run-id", "first", "--infra", "local", "--no-lineage",
                                        env=where.env)
    assert code == 0, err
    damage(where, skyflow.home, "first")
    # An imported input is only read when a stage runs: --no-cache makes `make` read it.
    extra = ["--no-cache"] if damage is damage_the_imported_input else []
    code, second, err = skyflow.run_json("heal.yaml", "--run-id", "second", "--infra", "local", "--no-lineage",
                                         *extra, env=where.env)
    assert code == 0, err
    assert use_output(where, skyflow.home, "second", tmp_path) == EXPECTED
    if damage is not damage_the_imported_input:
        assert second["stages"]["make"]["state"] == "succeeded"  # computed, not served from the damaged copy
    all_outputs_whole(where, skyflow.home, "second")
    assert verify_artifact(where.ref(outputs_of(skyflow.home, "first", "make")["data"]), deep=True)
    # The cache serves the healed outputs again, and says what it checked.
    code, third, err = skyflow.run_json("heal.yaml", "--run-id", "third", "--infra", "local", "--no-lineage",
                                        env=where.env)
    assert code == 0, err
    assert {s["state"] for s in third["stages"].values()} == {"cached"}
    assert stage_of(skyflow.home, "third", "make")["message"] == \
        "verified cache hit: 1 manifest re-hashed, 2 blobs (0.0 MB) re-hashed"


def test_verify_finds_and_quarantines_damage_and_the_next_run_recomputes(skyflow: Skyflow, where: Where,
                                                                         tmp_path: Path) -> None:
    gate = tmp_path / "gate-open"
    gate.touch()
    setup(skyflow, where, gate)
    code, _, err = skyflow.run_json("heal.yaml", "--run-id", "first", "--infra", "local", "--no-lineage",
                                    env=where.env)
    assert code == 0, err
    clean = skyflow("artifacts", "verify", "--deep", "--store", where.uri, "--json", env=where.env)
    assert clean.returncode == 0, clean.stderr
    flip_a_byte(where, skyflow.home, "first")
    copy_an_entry_over_another(where, skyflow.home, "first")
    shallow = skyflow("artifacts", "verify", "--store", where.uri, env=where.env)
    assert shallow.returncode == 1 and "not a cache entry for this key" in shallow.stdout  # sizes still match
    deep = skyflow("artifacts", "verify", "--deep", "--store", where.uri, "--json", env=where.env)
    assert deep.returncode == 1, deep.stderr
    report = next(json.loads(line) for line in deep.stdout.splitlines() if where.uri in line)
    assert any("does not hash to its name" in d["problem"] and d["quarantined"] for d in report["damage"])
    again = skyflow("artifacts", "verify", "--deep", "--store", where.uri, env=where.env)
    assert again.returncode == 1 and "files missing or corrupted: words" in again.stdout  # reported until healed
    code, second, err = skyflow.run_json("heal.yaml", "--run-id", "second", "--infra", "local", "--no-lineage",
                                         env=where.env)
    assert code == 0, err
    assert second["stages"]["make"]["state"] == "succeeded"
    assert use_output(where, skyflow.home, "second", tmp_path) == EXPECTED
    healed = skyflow("artifacts", "verify", "--deep", "--store", where.uri, env=where.env)
    assert healed.returncode == 0, healed.stdout


# -- a stage that leaves a process writing into its output -------------------------------------------

SCRIBBLER = """\
import os, random, sys
path, pidfile = sys.argv[1], sys.argv[2]
open(pidfile, "w").write(str(os.getpid()))
size = os.path.getsize(path)
with open(path, "r+b") as f:
    while True:
        f.seek(random.randrange(size - 64))
        f.write(os.urandom(64))
        f.flush()
"""

LEFTOVER = """\
name: leftover
stores: {{local: {{uri: {store}, create: true}}}}
stages:
  big:
    run: |
      head -c 20000000 /dev/zero > $SKYFLOW_OUTPUT_O/big.bin
      setsid python {scribbler} $SKYFLOW_OUTPUT_O/big.bin {pidfile} > /dev/null 2>&1 < /dev/null &
      while [ ! -s {pidfile} ]; do sleep 0.01; done
    outputs: [o]
"""


@pytest.fixture
def scribbler_pid(tmp_path: Path) -> Iterator[Path]:
    pidfile = tmp_path / "scribbler.pid"
    yield pidfile
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), 9)


def test_a_file_still_being_written_after_the_stage_exits_is_stored_under_the_digest_of_its_bytes(
        skyflow: Skyflow, where: Where, tmp_path: Path, scribbler_pid: Path) -> None:
    scribbler = tmp_path / "scribble.py"
    scribbler.write_text(SCRIBBLER)
    skyflow.write("leftover.yaml", LEFTOVER.format(store=where.uri, scribbler=scribbler, pidfile=scribbler_pid))
    code, _, err = skyflow.run_json("leftover.yaml", "--run-id", "left", "--infra", "local", "--no-lineage",
                                      env=where.env)
    assert code == 0, err
    record = outputs_of(skyflow.home, "left", "big")["o"]
    assert verify_artifact(where.ref(record), deep=True)  # every blob hashes to its name
    manifest = read_manifest(where.store, record["digest"])
    assert [f.size_bytes for f in manifest.files] == [20_000_000]


# -- garbage collection against a live run and against a commit that reuses blobs ------------------------

LIVE = """\
name: live
stages:
  a: {run: 'echo "$SKYFLOW_RUN_ID" > $SKYFLOW_OUTPUT_OUT/id', outputs: [out]}
  b: {run: 'while [ ! -f "$SKYFLOW_PARAM_GATE" ]; do sleep 0.05; done; echo ok > $SKYFLOW_OUTPUT_OK/ok', outputs: [ok]}
  c:
    run: 'cat $SKYFLOW_INPUT_A/id $SKYFLOW_INPUT_B/ok > $SKYFLOW_OUTPUT_OUT/out'
    inputs: {a: a.out, b: b.ok}
    outputs: [out]
params: {gate: /nonexistent}
"""


def test_gc_never_removes_what_a_run_still_in_progress_committed(skyflow: Skyflow, tmp_path: Path) -> None:
    skyflow.write("live.yaml", LIVE)
    gate, opened = tmp_path / "gate-live", tmp_path / "gate-open"
    opened.touch()
    live = skyflow.start("run", "live.yaml", "--run-id", "live-1", "--infra", "local", "--no-lineage", "--json",
                         "--set", f"gate={gate}")
    try:
        wait_for(lambda: "out" in outputs_of(skyflow.home, "live-1", "a"), 60, "a's output in the live run")
        # A newer run of the same pipeline finishes while the first is still running.
        code, _, err = skyflow.run_json("live.yaml", "--run-id", "newer", "--infra", "local", "--no-lineage",
                                        "--set", f"gate={opened}")
        assert code == 0, err
        result = skyflow("artifacts", "gc", "--keep-last", "1", "--min-age", "0s", "--json", check=True)
        assert json.loads(result.stdout.splitlines()[0])["manifests"] >= 0
        store = open_store(str(skyflow.home / "artifacts"))
        record = outputs_of(skyflow.home, "live-1", "a")["out"]
        assert verify_artifact(ArtifactRef(name="out", uri=record["uri"], digest=record["digest"],
                                           size_bytes=record["size_bytes"], file_count=1, store=store))
        gate.touch()
        _, err = live.communicate(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, err
    assert stage_of(skyflow.home, "live-1", "a")["attempts"] == 1  # nothing had to be made again


class CommitDuringGc(FsspecStore):
    """The same store, with one commit made by another writer right after gc has listed the blobs:
    the moment at which a commit reusing an old blob races a gc."""

    def __init__(self, base: FsspecStore, commit: Callable[[], None]) -> None:
        super().__init__(base.fs, base.root, base.uri, workers=base.workers)
        self._commit: Callable[[], None] | None = commit

    def list_keys(self, prefix: str) -> dict[str, Any]:
        found = super().list_keys(prefix)
        if prefix == BLOBS and self._commit is not None:
            commit, self._commit = self._commit, None
            commit()
        return found


def test_a_commit_reusing_an_old_blob_while_gc_runs_keeps_it(where: Where, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "shared.bin").write_bytes(os.urandom(3000))
    (tmp_path / "old" / "only-old.bin").write_bytes(os.urandom(1000))
    old = commit_output(where.store, tmp_path / "old", name="old")
    min_age_s = 0.0
    if where.store.is_local:  # make everything of the old artifact two hours old, and gc spare only the young
        two_hours_ago = time.time() - 7200
        for key in where.store.list_keys(""):
            os.utime(Path(where.uri) / key, (two_hours_ago, two_hours_ago))
        min_age_s = 3600.0
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "same.bin").write_bytes((tmp_path / "old" / "shared.bin").read_bytes())
    made: list[ArtifactRef] = []
    racing = CommitDuringGc(where.store, lambda: made.append(commit_output(where.store, tmp_path / "new", name="new")))
    stats = collect_garbage(racing, set(), min_age_s=min_age_s)  # neither artifact is a root yet
    assert made and stats.manifests_removed == 1 and stats.blobs_removed == 1  # only what is the old one's alone
    assert verify_artifact(made[0], deep=True)
    with pytest.raises(Exception, match="not found"):
        verify_artifact(old)


def test_cache_entries_name_their_key(where: Where, tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "f").write_text("x")
    ref = commit_output(where.store, tmp_path / "o", name="o")
    CacheIndex(where.store).record("k1", {"o": ref})
    body = json.loads(where.store.read_bytes("cache/k1.json"))
    assert body["key"] == "k1" and body["outputs"]["o"]["digest"] == ref.digest
