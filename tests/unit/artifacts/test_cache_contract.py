"""The stage cache as stores hold it: the exact bytes a key is the digest of, the exact entry written, what
a code digest leaves out, and what a lookup or check reports (how deep it looked, which outputs it found)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from skyflow.artifacts.cache import CacheIndex, code_digest, stage_cache_key
from skyflow.artifacts.manifest import FileEntry, Manifest, digest_bytes
from skyflow.artifacts.refs import ArtifactRef, blob_key, manifest_key
from skyflow.artifacts.store import FsspecStore, open_store
from skyflow.errors import ArtifactError
from skyflow.spec.models import Stage

DATA = "sha256:" + "a" * 64
CODE = "sha256:" + "c" * 64


def memory_store() -> FsspecStore:
    return open_store(f"memory://cache-contract-{uuid.uuid4().hex}")


def put_artifact(store: FsspecStore, files: dict[str, bytes], name: str = "out") -> ArtifactRef:
    manifest = Manifest("dir", tuple(FileEntry(p, digest_bytes(b), len(b)) for p, b in sorted(files.items())))
    for data in files.values():
        store.write_bytes(blob_key(digest_bytes(data)), data)
    store.write_bytes(manifest_key(manifest.digest), manifest.to_bytes())
    return ArtifactRef.in_store(store, manifest, name=name)


def full_stage() -> Stage:
    return Stage.model_validate({
        "task": "train", "run": "python train.py", "setup": "pip install -e .",
        "envs": {"SEED": "1", "HF_TOKEN": "hf_live"}, "secrets": {"WANDB_API_KEY": "w"},
        "resources": {"image_id": "docker:pytorch:2.3", "accelerators": "A100:8", "cloud": "aws"},
        "num_nodes": 2, "outputs": ["model", "metrics"],
    })


# --- the key ---------------------------------------------------------------------------------------------


def test_the_key_is_the_digest_of_one_canonical_json_text() -> None:
    # Keys are stored beside artifacts and shared between machines and releases: the text hashed is fixed.
    text = (
        '{"accelerators":["A100:8"],"code":"' + CODE + '","envs":{"HF_TOKEN":null,"SEED":"1"},'
        '"image":"docker:pytorch:2.3","inputs":{"data":"' + DATA + '","tokenizer":"' + CODE + '"},'
        '"num_nodes":2,"outputs":["metrics","model"],"params":{"epochs":3,"lr":0.1},"run":"python train.py",'
        '"secrets":["HF_TOKEN","WANDB_API_KEY"],"setup":"pip install -e .","task":"train","version":1}'
    )
    key = stage_cache_key(full_stage(), params={"lr": 0.1, "epochs": 3},
                          input_digests={"tokenizer": CODE, "data": DATA}, code_digest=CODE, secret_names=["HF_TOKEN"])
    assert key == hashlib.sha256(text.encode()).hexdigest()


def test_the_order_params_and_inputs_are_given_in_does_not_change_the_key() -> None:
    one = stage_cache_key(full_stage(), params={"lr": 0.1, "epochs": 3}, input_digests={"a": DATA, "b": CODE},
                          code_digest=CODE)
    other = stage_cache_key(full_stage(), params={"epochs": 3, "lr": 0.1}, input_digests={"b": CODE, "a": DATA},
                            code_digest=CODE)
    assert one == other


def test_params_that_are_not_json_values_are_keyed_by_their_text() -> None:
    as_path = stage_cache_key(full_stage(), params={"data_dir": Path("/data/v2")}, input_digests={},
                              code_digest=CODE)
    as_text = stage_cache_key(full_stage(), params={"data_dir": "/data/v2"}, input_digests={}, code_digest=CODE)
    assert as_path == as_text


def test_a_stage_without_a_workdir_has_one_fixed_code_digest() -> None:
    assert code_digest(None) == "sha256:" + hashlib.sha256(b"no workdir").hexdigest()


def test_the_code_digest_ignores_version_control_environments_and_tool_caches(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('train')\n")
    before = code_digest(tmp_path)
    for folder in (".git", "__pycache__", ".venv", "venv", ".pytest_cache", ".ruff_cache", ".skyflow"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "state").write_text(folder)
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00")
    assert code_digest(tmp_path) == before
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    assert code_digest(tmp_path) != before


# --- entries ---------------------------------------------------------------------------------------------


def test_a_recorded_entry_is_this_json_under_its_key() -> None:
    store = memory_store()
    ref = put_artifact(store, {"a": b"alpha", "b": b"beta"})
    CacheIndex(store).record("k-1_x", {"out": ref})
    assert store.read_bytes("cache/k-1_x.json").decode() == (
        '{"key": "k-1_x", "outputs": {"out": {"digest": "' + ref.digest + '", "file_count": 2, "size_bytes": 9}}}')


def test_a_key_that_is_not_a_plain_name_is_refused_naming_the_cache_folder() -> None:
    store = memory_store()
    with pytest.raises(ArtifactError) as caught:
        CacheIndex(store).lookup("a/b")
    assert str(caught.value) == f"{store.uri}/cache: cache key 'a/b' must be letters, digits, '-' or '_'"
    assert caught.value.uri == f"{store.uri}/cache"


def test_a_hit_returns_each_output_as_a_ref_in_this_store_under_its_name() -> None:
    store = memory_store()
    model, metrics = put_artifact(store, {"w": b"weights"}, "model"), put_artifact(store, {"m": b"{}"}, "metrics")
    index = CacheIndex(store)
    index.record("k", {"model": model, "metrics": metrics})
    hit = index.check("k")
    assert hit is not None
    assert hit.outputs == {"model": model, "metrics": metrics}
    assert [ref.name for ref in hit.outputs.values()] == ["metrics", "model"]
    assert hit.checked == "2 manifests re-hashed, 2 blobs (0.0 MB) re-hashed"


def test_outputs_exactly_at_the_rehash_budget_are_rehashed() -> None:
    store = memory_store()
    index = CacheIndex(store)
    index.record("k", {"out": put_artifact(store, {"a": b"alpha", "b": b"beta"})})  # 9 bytes
    at_budget = index.check("k", rehash_bytes=9)
    assert at_budget is not None and at_budget.checked == "1 manifest re-hashed, 2 blobs (0.0 MB) re-hashed"


def damaged_same_size(store: FsspecStore, data: bytes) -> None:
    store.write_bytes(blob_key(digest_bytes(data)), bytes(reversed(data)))


def test_a_deep_lookup_rehashes_and_misses_on_bytes_of_the_right_size() -> None:
    store = memory_store()
    index = CacheIndex(store)
    index.record("k", {"out": put_artifact(store, {"a": b"alpha"})})
    damaged_same_size(store, b"alpha")
    assert index.lookup("k", deep=True) is None
    assert store.read_optional("cache/k.json") is None


def test_a_shallow_lookup_trusts_sizes_even_for_the_smallest_outputs() -> None:
    store = memory_store()
    index = CacheIndex(store)
    ref = put_artifact(store, {"a": b"1"})
    index.record("k", {"out": ref})
    store.write_bytes(blob_key(digest_bytes(b"1")), b"2")  # one byte, damaged: only re-reading can tell
    assert index.lookup("k", deep=False) == {"out": ref}
    assert index.lookup("k") is None


def test_an_entry_naming_an_artifact_that_is_gone_is_removed_on_lookup() -> None:
    store = memory_store()
    index = CacheIndex(store)
    ref = put_artifact(store, {"a": b"alpha"})
    index.record("k", {"out": ref, "other": put_artifact(store, {"b": b"beta"}, "other")})
    store.delete([manifest_key(ref.digest)])
    assert index.lookup("k") is None
    assert store.read_optional("cache/k.json") is None
    assert store.list_keys("quarantine") == {}


def test_an_entry_naming_a_blob_that_is_gone_is_removed_on_lookup() -> None:
    store = memory_store()
    index = CacheIndex(store)
    index.record("k", {"out": put_artifact(store, {"a": b"alpha"})})
    store.delete([blob_key(digest_bytes(b"alpha"))])
    assert index.lookup("k", deep=False) is None
    assert store.read_optional("cache/k.json") is None


@pytest.mark.parametrize("body", [{"note": "see digest.txt"}, {"out": ["digest"]}])
def test_json_whose_values_are_not_entries_is_quarantined_not_kept_as_an_old_entry(body: dict[str, Any]) -> None:
    store = memory_store()
    raw = json.dumps(body).encode()
    store.write_bytes("cache/k.json", raw)
    assert CacheIndex(store).lookup("k") is None
    assert store.read_optional("cache/k.json") is None
    assert [store.read_bytes(k) for k in store.list_keys("quarantine/cache")] == [raw]
