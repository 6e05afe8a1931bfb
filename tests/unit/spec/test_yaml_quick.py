"""The libyaml reader gives what ruamel.yaml gives, value for value and position for position, or hands over."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyflow.errors import SkyflowError
from skyflow.spec.source import SourceMap, parse_yaml, parse_yaml_with_ruamel
from skyflow.yaml_quick import read_plain

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted([*REPO.glob("examples/**/*.yaml"), *REPO.glob("pipelines/**/*.yaml"),
                  *REPO.glob("skyflow/**/*.yaml")])
EXAMPLES = sorted(REPO.glob("examples/*/pipeline.yaml"))


def positions(smap: SourceMap) -> tuple[dict[Any, tuple[int, int]], dict[Any, tuple[int, int]]]:
    return ({p: (s.line, s.col) for p, s in smap.keys.items()},
            {p: (s.line, s.col) for p, s in smap.values.items()})


def assert_read_alike(text: str) -> bool:
    """When libyaml takes ``text``, ruamel reads it too, to the same values and positions; True if taken."""
    if read_plain(text) is None:
        return False
    try:
        data, smap = parse_yaml_with_ruamel(text, "f.yaml")
    except SkyflowError as exc:
        raise AssertionError(f"libyaml read a document ruamel refuses ({exc}):\n{text!r}") from exc
    quick_data, quick_map = parse_yaml(text, "f.yaml")
    assert quick_data == data, text
    assert [type(v) for v in _leaves(quick_data)] == [type(v) for v in _leaves(data)], text
    assert positions(quick_map) == positions(smap), text
    return True


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_files_read_alike(path: Path) -> None:
    assert_read_alike(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_catalog_files_read_as_ruamels_safe_loader_reads_them(path: Path) -> None:
    from ruamel.yaml import YAML

    from skyflow.catalog.positions import YamlDocument

    text = path.read_text(encoding="utf-8")
    assert YamlDocument(text, str(path)).data == YAML(typ="safe").load(text)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_examples_are_read_by_libyaml(path: Path) -> None:
    assert read_plain(path.read_text(encoding="utf-8")) is not None


@pytest.mark.parametrize(("text", "value"), [
    ("a: yes", "yes"), ("a: on", "on"), ("a: No", "No"), ("a: y", "y"),
    ("a: true", True), ("a: FALSE", False), ("a: True", True),
    ("a: ~", None), ("a: null", None), ("a: NULL", None),
    ("a: 12", 12), ("a: -3", -3), ("a: +4", 4), ("a: 0", 0), ("a: 0.25", 0.25), ("a: -1.5", -1.5),
    ("a: 4+", "4+"), ("a: 32+", "32+"), ("a: A100:8", "A100:8"), ("a: ./train.sh", "./train.sh"),
    ("a: 3-stage", "3-stage"), ("a: 10GB", "10GB"), ("a: '010'", "010"), ('a: "1e3"', "1e3"),
    ("a: |\n  x\n  y\n", "x\ny\n"), ("a: >-\n  x\n  y\n", "x y"), ("a: 'it''s'", "it's"),
    ("a: é🙂", "é🙂"),
])
def test_plain_scalars_as_yaml_1_2(text: str, value: Any) -> None:
    doc = read_plain(text)
    assert doc is not None and doc.data == {"a": value}
    assert type(doc.data["a"]) is type(value)
    assert assert_read_alike(text)


@pytest.mark.parametrize("text", [
    "a: 010", "a: 1e3", "a: 0x1f", "a: 0o17", "a: 1_000", "a: 1:30", "a: .inf", "a: -.inf", "a: .nan",
    "a: .5", "a: 1.", "a: 2024-01-01", "a: 2024-01-01 10:00:00",  # forms decided by ruamel
    "a: !!str 12", "a: !custom x", "a: !!float 1",  # explicit tags
    "a: &x {b: 1}\nc: *x", "a: &x 1\nb: *x", "base: &b {x: 1}\nd: {<<: *b, y: 2}",  # aliases and merges
    "&k a: 1\nb: *k", "x: {&k a: 1}\ny: [*k]",  # aliases of keys
    "&0:# c\nname: x", "a: &x 1", "- &x [1]", "a: ! x",  # anchors (whose names end elsewhere in YAML 1.1), tags
    "a: 1\rb: 2",  # a lone carriage return
    "a: 1\na: 2", "1: a", "true: a", "null: a", "? [a]\n: b",  # repeated or non-string keys
    "%YAML 1.1\n---\na: yes", "a: b\x85c", "\ufeffa: 1", "a: 1\n---\nb: 2",  # versions, breaks, streams
    "a: 'x\ty'", "a:", "a: {b: }", "a: [x, ]\nb:",  # tabs, empty values (each parser places them elsewhere)
    "a: [1, 2", "a: b: c", "\ta: 1", "",  # errors and an empty document: ruamel's to report
])
def test_what_is_handed_to_ruamel(text: str) -> None:
    assert read_plain(text) is None


def test_a_pipeline_error_still_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nstages:\n  a:\n    run: echo\n    resources: {cpus: 4+, acelerators: A100}\n")
    from skyflow.spec.loader import load_pipeline

    with pytest.raises(SkyflowError) as caught:
        load_pipeline(path)
    assert f"{path}:5:27: stages.a.resources.acelerators" in str(caught.value)


# -- generated documents ---------------------------------------------------------------------------------
WORDS = ["yes", "on", "1e3", "010", "0x1f", "1_0", "1:30", ".inf", "~", "null", "", "4+", "-1", "+1", "1.", ".5",
         "2024-01-01", "<<", "=", "a: b", "#x", "- x", "é🙂", "\t", " lead", "trail ", "true", "True", "0", "-0.5",
         "A100:8", "s3://b/k", "{x}", "[1]", "'q'", '"d"', "\\", "multi\nline", "x\r\ny", "%", "@", "`", "!",
         "&a", "*a"]
SCALARS = st.one_of(st.sampled_from(WORDS), st.text(max_size=10), st.integers(-(2**40), 2**40), st.booleans(),
                    st.none(), st.floats(allow_nan=False, allow_infinity=False))
KEYS = st.one_of(st.sampled_from(["a", "run", "b c", "yes", "1", "x-y", "é", "k:", "#", "-", "?"]), st.text(max_size=6))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
NOISE = st.text(alphabet="abc019 :-,#'\"|>&*!%@{}[]?\n\t.+~\u00e9\r", max_size=4)


def dumped(tree: Any, flow: bool | None, style: str | None, width: int, indent: int, crlf: bool) -> str:
    return yaml.safe_dump({"root": tree}, default_flow_style=flow, default_style=style, width=width, indent=indent,
                          allow_unicode=True, line_break="\r\n" if crlf else None, sort_keys=False)


@settings(max_examples=int(os.environ.get("SKYFLOW_YAML_EXAMPLES", "300")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, flow=st.sampled_from([None, True, False]), style=st.sampled_from([None, None, "'", '"', "|", ">"]),
       width=st.sampled_from([20, 80, 4096]), indent=st.sampled_from([2, 4]), crlf=st.booleans(),
       edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), NOISE), max_size=3))
def test_generated_documents_read_alike(tree: Any, flow: bool | None, style: str | None, width: int, indent: int,
                                        crlf: bool, edits: list[tuple[int, int, str]]) -> None:
    text = dumped(tree, flow, style, width, indent, crlf)
    for at, cut, noise in edits:  # noise that may break the document or change what it means
        at = min(at, len(text))
        text = text[:at] + noise + text[at + cut:]
    assert_read_alike(text)


PIPELINE_TEXTS = [p.read_text(encoding="utf-8") for p in [*EXAMPLES, *sorted(REPO.glob("pipelines/*.yaml"))]]
EDIT_NOISE = st.text(alphabet="abc019 :-,#'\"|>&*!%@{}[]?\n\t.+~\u00e9\r\\", max_size=6)


@settings(max_examples=int(os.environ.get("SKYFLOW_YAML_EXAMPLES", "300")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(PIPELINE_TEXTS),
       edits=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 8), EDIT_NOISE), min_size=1, max_size=4))
def test_edited_pipelines_read_alike(base: str, edits: list[tuple[int, int, str]]) -> None:
    """Real pipelines with a few characters changed (how a typo or a half-written edit looks)."""
    text = base
    for at, cut, noise in edits:
        at = min(at, len(text))
        text = text[:at] + noise + text[at + cut:]
    assert_read_alike(text)
