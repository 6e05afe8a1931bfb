"""The manifest format and the local file listing, asserted exactly: the bytes a manifest digest is
taken of, digest validation, hashing in chunks, and the wording and location of every refusal."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from skyflow.artifacts import manifest as manifest_module
from skyflow.artifacts.manifest import (
    CHUNK_BYTES,
    DigestingReader,
    FileEntry,
    Manifest,
    build_manifest,
    check_relative_path,
    digest_bytes,
    digest_hex,
    file_chunks,
    hash_file,
    list_local_files,
)
from skyflow.errors import ArtifactError

HEX = "0123456789abcdef" * 4
D = f"sha256:{HEX}"
URI = "s3://bucket/manifests/abc"


def refusal(root: Path, *, confined: bool = False) -> ArtifactError:
    """The ArtifactError listing ``root`` raises."""
    with pytest.raises(ArtifactError) as info:
        list_local_files(root, confined=confined)
    return info.value


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- digests ------------------------------------------------------------------------------------


def test_digest_bytes_is_the_prefixed_sha256_hex() -> None:
    assert digest_bytes(b"hello") == sha(b"hello")


def test_digest_hex_returns_the_hex_part_of_a_valid_digest() -> None:
    assert digest_hex(D) == HEX


@pytest.mark.parametrize("digest", [
    "sha256:" + "g" * 64,          # right length, not hex
    "sha256:" + "A" * 64,          # upper-case hex is not the canonical form
    "sha256:" + "X" * 64,
    "sha256:" + "0" * 63 + "/",    # right length, a path character
    "md5:" + "0" * 64,             # right hex, wrong algorithm
    "sha1:" + HEX,
    "sha256:" + "0" * 63,          # too short
    "sha256:" + "0" * 65,          # too long
    "sha256:",
    HEX,                           # no algorithm at all
    "",
])
def test_digest_hex_refuses_anything_but_sha256_and_64_lowercase_hex(digest: str) -> None:
    with pytest.raises(ArtifactError) as info:
        digest_hex(digest)
    assert str(info.value) == f"not a sha256 digest: {digest!r}"
    assert info.value.uri is None


def test_a_digesting_reader_passes_chunks_through_and_counts_all_of_them() -> None:
    reader = DigestingReader(iter([b"ab", b"cde", b"", b"f"]))
    assert list(reader) == [b"ab", b"cde", b"", b"f"]
    assert reader.size_bytes == 6
    assert reader.digest == sha(b"abcdef")


def test_a_digesting_reader_before_reading_is_the_empty_digest() -> None:
    reader = DigestingReader([])
    assert reader.size_bytes == 0
    assert reader.digest == sha(b"")


def test_file_chunks_reads_in_chunks_of_at_most_chunk_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = b"x" * CHUNK_BYTES + b"tail"
    path.write_bytes(data)
    chunks = list(file_chunks(path))
    assert [len(c) for c in chunks] == [CHUNK_BYTES, 4]
    assert b"".join(chunks) == data


def test_file_chunks_uses_the_module_chunk_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdefghij")
    monkeypatch.setattr(manifest_module, "CHUNK_BYTES", 4)
    assert list(file_chunks(path)) == [b"abcd", b"efgh", b"ij"]


def test_an_empty_file_has_no_chunks(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(file_chunks(path)) == []
    assert hash_file(path) == (sha(b""), 0)


def test_hash_file_counts_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdefghij")
    monkeypatch.setattr(manifest_module, "CHUNK_BYTES", 3)
    assert hash_file(path) == (sha(b"abcdefghij"), 10)


# --- manifest paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["C:", "a:", "C:x", "c:/x"])
def test_a_drive_letter_path_is_refused_even_when_short(path: str) -> None:
    with pytest.raises(ArtifactError) as info:
        check_relative_path(path)
    assert str(info.value) == f"manifest path {path!r} would leave the artifact directory; refusing it"
    assert info.value.uri is None


@pytest.mark.parametrize("path", ["a", "ab:", "abc:d", "a/b:c", "..a", "a.", "a/.b", "XX/XX/f"])
def test_a_colon_after_the_second_character_and_dotted_names_are_fine(path: str) -> None:
    assert check_relative_path(path) == path


@pytest.mark.parametrize("path", ["", "/", "/a", "//a", "a/", "a/./b", "..", "a/..", "a\\b", "a\x00b"])
def test_every_escaping_path_is_refused_with_the_same_message(path: str) -> None:
    with pytest.raises(ArtifactError) as info:
        check_relative_path(path)
    assert str(info.value) == f"manifest path {path!r} would leave the artifact directory; refusing it"


# --- manifest bytes -----------------------------------------------------------------------------


def test_manifest_bytes_are_compact_json_with_sorted_keys() -> None:
    m = Manifest("dir", (FileEntry("a/b.txt", D, 3), FileEntry("c", D, 0)))
    expected = (b'{"files":[["a/b.txt","' + D.encode() + b'",3],["c","' + D.encode() + b'",0]],'
                b'"kind":"dir","version":1}')
    assert m.to_bytes() == expected
    assert m.digest == sha(expected)
    assert m.size_bytes == 3


def test_a_single_file_manifest_bytes_and_digest() -> None:
    m = Manifest("file", (FileEntry("model.bin", D, 12),))
    expected = b'{"files":[["model.bin","' + D.encode() + b'",12]],"kind":"file","version":1}'
    assert m.to_bytes() == expected
    assert m.digest == sha(expected)
    assert m.size_bytes == 12


def test_an_empty_manifest_has_size_zero_and_round_trips() -> None:
    m = Manifest("dir", ())
    assert m.to_bytes() == b'{"files":[],"kind":"dir","version":1}'
    assert m.size_bytes == 0
    assert Manifest.from_bytes(m.to_bytes()) == m


def test_from_bytes_accepts_any_key_order_and_whitespace() -> None:
    data = b'{"version": 1, "kind": "file", "files": [["m", "' + D.encode() + b'", 5]]}'
    assert Manifest.from_bytes(data) == Manifest("file", (FileEntry("m", D, 5),))


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"kind":"dir"}', b'{"kind":"dir","files":[["a"]]}',
                                  b'{"kind":"dir","files":[["a","d","x"]]}', b"[1]"])
def test_an_unreadable_manifest_names_where_it_was_read(data: bytes) -> None:
    with pytest.raises(ArtifactError) as info:
        Manifest.from_bytes(data, uri=URI)
    assert info.value.uri == URI
    assert re.fullmatch(rf"{re.escape(URI)}: manifest is not valid JSON of this format \(.+\)", str(info.value))
    assert info.value.__cause__ is not None


def test_an_unreadable_manifest_without_a_uri_has_no_prefix() -> None:
    with pytest.raises(ArtifactError) as info:
        Manifest.from_bytes(b"{}")
    assert info.value.uri is None
    assert str(info.value) == "manifest is not valid JSON of this format ('kind')"


@pytest.mark.parametrize(("body", "words"), [
    (b'{"version":1,"kind":"tree","files":[]}', "unknown kind 'tree' or version 1"),
    (b'{"version":2,"kind":"dir","files":[]}', "unknown kind 'dir' or version 2"),
    (b'{"kind":"file","files":[]}', "unknown kind 'file' or version None"),
    (b'{"version":"1","kind":"dir","files":[]}', "unknown kind 'dir' or version '1'"),
])
def test_an_unknown_kind_or_version_names_both_and_where(body: bytes, words: str) -> None:
    with pytest.raises(ArtifactError) as info:
        Manifest.from_bytes(body, uri=URI)
    assert info.value.uri == URI
    assert str(info.value) == f"{URI}: manifest has {words}"


def test_a_manifest_entry_with_a_bad_digest_is_refused() -> None:
    body = b'{"version":1,"kind":"dir","files":[["a","sha256:../../x",1]]}'
    with pytest.raises(ArtifactError) as info:
        Manifest.from_bytes(body, uri=URI)
    assert str(info.value) == "not a sha256 digest: 'sha256:../../x'"


# --- listing local files ------------------------------------------------------------------------


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def rels(found: list[tuple[str, Path]]) -> list[str]:
    return [rel for rel, _ in found]


def test_a_single_file_is_listed_under_its_own_name(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"w")
    assert list_local_files(path) == [("model.bin", path)]


def test_files_are_listed_in_a_fixed_order_with_posix_paths(tmp_path: Path) -> None:
    """Top-down and sorted by name: a directory's files, then its subdirectories in turn."""
    root = make_tree(tmp_path / "out", {"b/z": b"", "a": b"", "b/a/y": b"", "c": b""})
    assert list_local_files(root) == [("a", root / "a"), ("c", root / "c"), ("b/z", root / "b/z"),
                                      ("b/a/y", root / "b/a/y")]


def test_skip_dirs_leaves_those_directories_out(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out", {".git/HEAD": b"", "src/x.py": b"", "x/.git/y": b""})
    assert rels(list_local_files(root, skip_dirs=frozenset({".git"}))) == ["src/x.py"]


def test_a_missing_output_path_is_named(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    error = refusal(root)
    assert error.uri == str(root)
    assert str(error) == f"{root}: output path does not exist; the stage wrote nothing there"


def test_a_symlinked_root_is_listed_when_not_confined(tmp_path: Path) -> None:
    real = make_tree(tmp_path / "real", {"f": b"x"})
    root = tmp_path / "out"
    root.symlink_to(real)
    assert list_local_files(root) == [("f", root / "f")]
    assert rels(list_local_files(root, confined=False)) == ["f"]


def test_a_confined_root_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    real = make_tree(tmp_path / "real", {"f": b"x"})
    root = tmp_path / "out"
    root.symlink_to(real)
    error = refusal(root, confined=True)
    assert error.uri == str(root)
    assert str(error) == (f"{root}: the output directory was replaced by a symlink to {real}; a stage "
                          "writes its files into the directory it is given (copy them in)")


def test_a_symlinked_directory_leaving_the_root_is_refused_where_it_is(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "elsewhere", {"secret": b"s"})
    root = make_tree(tmp_path / "out", {"sub/ok": b""})
    (root / "link").symlink_to(outside, target_is_directory=True)
    error = refusal(root)
    assert error.uri == str(root / "link")
    assert str(error) == (f"{root / 'link'}: a symlink points outside the output directory; "
                          "copy the file in instead")


def test_a_symlinked_file_leaving_the_root_is_refused_where_it_is(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"s")
    root = make_tree(tmp_path / "out", {"a": b""})
    (root / "b").symlink_to(outside)
    error = refusal(root)
    assert error.uri == str(root / "b")
    assert str(error) == f"{root / 'b'}: a symlink points outside the output directory; copy the file in instead"


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out", {"d/f": b"x"})
    (root / "alias").symlink_to(root / "d", target_is_directory=True)
    (root / "g").symlink_to(root / "d" / "f")
    assert rels(list_local_files(root)) == ["g", "alias/f", "d/f"]


def test_a_link_back_to_an_ancestor_is_skipped_and_the_walk_goes_on(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out", {"a/x": b"", "b/y": b"", "z": b""})
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "up").symlink_to(root / "a", target_is_directory=True)
    assert rels(list_local_files(root)) == ["z", "a/x", "b/y"]


# --- hard links (confined outputs) --------------------------------------------------------------


def test_hard_links_within_the_output_are_accepted(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out", {"a": b"1", "c": b"2"})
    os.link(root / "a", root / "b")
    os.link(root / "c", root / "d")
    assert rels(list_local_files(root, confined=True)) == ["a", "b", "c", "d"]


def test_a_hard_link_to_a_file_outside_a_confined_output_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"s")
    root = make_tree(tmp_path / "out", {"a1": b"1"})
    os.link(root / "a1", root / "a2")   # two names, both inside
    os.link(outside, root / "b")        # two names, one of them outside
    error = refusal(root, confined=True)
    assert error.uri == str(root / "b")
    assert str(error) == (f"{root / 'b'}: is a hard link to a file outside the output directory (2 links, 1 "
                          "of them here); copy the file in (cp) instead of linking it (ln)")


def test_the_hard_link_count_includes_every_outside_name(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"s")
    os.link(outside, tmp_path / "secret2")
    root = make_tree(tmp_path / "out", {})
    os.link(outside, root / "b")
    os.link(outside, root / "c")
    error = refusal(root, confined=True)
    assert str(error).endswith(": is a hard link to a file outside the output directory (4 links, 2 of them "
                                    "here); copy the file in (cp) instead of linking it (ln)")


def test_hard_links_outside_are_accepted_when_not_confined(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"s")
    root = make_tree(tmp_path / "out", {})
    os.link(outside, root / "b")
    assert list_local_files(root) == [("b", root / "b")]


# --- build_manifest -----------------------------------------------------------------------------


def test_a_single_file_builds_a_file_manifest_and_its_source(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights")
    manifest, sources = build_manifest(path)
    assert manifest == Manifest("file", (FileEntry("model.bin", sha(b"weights"), 7),))
    assert sources == {sha(b"weights"): path}


def test_a_directory_builds_a_sorted_dir_manifest_and_one_source_per_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out", {"b/x": b"same", "a": b"same", "c": b"other!"})
    manifest, sources = build_manifest(root, workers=1)
    assert manifest == Manifest("dir", (FileEntry("a", sha(b"same"), 4), FileEntry("c", sha(b"other!"), 6),
                                        FileEntry("b/x", sha(b"same"), 4)))
    assert manifest.size_bytes == 14
    assert set(sources) == {sha(b"same"), sha(b"other!")}
    assert sources[sha(b"other!")] == root / "c"
    assert sources[sha(b"same")].read_bytes() == b"same"


def test_build_manifest_passes_skip_dirs_on(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "work", {".venv/lib/x": b"v", "src/m.py": b"m"})
    with_venv, _ = build_manifest(root)
    assert [f.path for f in with_venv.files] == [".venv/lib/x", "src/m.py"]
    without, _ = build_manifest(root, skip_dirs=frozenset({".venv"}))
    assert without == Manifest("dir", (FileEntry("src/m.py", sha(b"m"), 1),))


def test_build_manifest_of_a_symlinked_directory_follows_it(tmp_path: Path) -> None:
    real = make_tree(tmp_path / "real", {"f": b"x"})
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    manifest, _ = build_manifest(link)
    assert manifest == Manifest("dir", (FileEntry("f", sha(b"x"), 1),))
