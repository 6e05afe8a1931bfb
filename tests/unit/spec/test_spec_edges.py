"""Less common spellings and mistakes in pipeline files: unreadable files and task files, tagged and binary
YAML values, complex keys deep in a document, schedule params, registered outputs, and how a pipeline is
drawn and written back."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import skyflow.spec
from skyflow.errors import SourcePosition, SpecError
from skyflow.spec.export import dump_pipeline_yaml
from skyflow.spec.loader import load_pipeline
from skyflow.spec.params import apply_overrides
from skyflow.spec.render import render_dag
from skyflow.spec.source import SourceMap, parse_yaml


def _write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    return str(info.value)


def test_a_folder_bytes_that_are_not_utf8_and_a_path_through_a_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    assert _refusal(tmp_path / "folder") == (f"{tmp_path}/folder: is a directory, not a pipeline file. Point at "
                                             f"{tmp_path}/folder/pipeline.yaml.")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\xe9\n")
    assert _refusal(latin) == f"{latin}: not UTF-8 text (invalid continuation byte at byte 7)"
    assert _refusal(latin / "pipeline.yaml") == f"{latin}/pipeline.yaml: cannot read: Not a directory"


def test_a_missing_task_file_and_a_task_file_that_is_no_mapping_are_refused(tmp_path: Path) -> None:
    missing = _write(tmp_path, "name: x\nstages:\n  a:\n    task: nope.yaml\n")
    assert _refusal(missing) == (f"{missing}:4:11: stages.a.task: no such task file 'nope.yaml'. Looked for "
                                 f"{tmp_path}/nope.yaml; paths are relative to the pipeline file.")
    _write(tmp_path, "- a\n", "list.yaml")
    listed = _write(tmp_path, "name: x\nstages:\n  a:\n    task: list.yaml\n")
    assert _refusal(listed) == f"{tmp_path}/list.yaml:1:1: list.yaml: a task file must be a mapping"


def test_an_unknown_schedule_param_is_refused_at_its_key_with_a_did_you_mean(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nparams: {steps: 3}\nstages: {a: {run: x}}\n"
                            "schedule: {cron: '@daily', params: {stepz: 4}}\n")
    assert _refusal(path) == f"{path}:4:37: schedule.params: the pipeline has no param 'stepz'. Did you mean steps?"


def test_registering_a_data_output_is_refused_and_a_null_register_is_none(tmp_path: Path) -> None:
    unset = _write(tmp_path, "name: x\nstages:\n  a:\n    run: x\n    outputs: {m: {register: null}}\n", "unset.yaml")
    assert load_pipeline(unset).stages["a"].outputs["m"].registered_model is None
    path = _write(tmp_path, "name: x\nstages:\n  a:\n    run: x\n    outputs: {m: {register: my-model}}\n")
    assert _refusal(path) == (f"{path}:5:29: stages.a.outputs.m.register: register needs kind: model on this output, "
                              "got register: 'my-model' on a data output. Add kind: model to this output, or drop "
                              "register.")


def test_tagged_and_binary_values_become_plain_strings() -> None:
    data, _ = parse_yaml("run: !shell echo hi\nkey: !!binary aGVsbG8=\n", "f.yaml")
    assert data == {"run": "echo hi", "key": "hello"}


@pytest.mark.parametrize(("text", "line", "col"), [
    ("- ? a: {b: 1}\n  : 1\n", 1, 5),
    ("a: {b: 1}\nc:\n  - x\n  - ? k: {b: 1}\n    : 1\n", 4, 7),
], ids=["in-a-list", "after-plain-keys"])
def test_a_mapping_used_as_a_key_is_placed_wherever_it_sits(text: str, line: int, col: int) -> None:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "f.yaml")
    assert str(info.value).startswith(f"f.yaml:{line}:{col}: invalid YAML: a mapping key must be a plain name")


def test_a_value_without_its_own_position_takes_its_keys() -> None:
    smap = SourceMap("f.yaml")
    smap.keys[("stages", "a")] = SourcePosition("f.yaml", 3, 3)
    assert smap.position(("stages", "a", "run")) == SourcePosition("f.yaml", 3, 3)
    assert smap.position(("other",)) == SourcePosition("f.yaml", 1, 1)


def test_a_whole_number_override_of_a_float_param_stays_a_float() -> None:
    merged = apply_overrides({"lr": 0.1, "name": "x"}, {"lr": 1})
    assert merged == {"lr": 1.0, "name": "x"} and isinstance(merged["lr"], float)


def test_the_spec_package_names_what_it_does_not_export() -> None:
    with pytest.raises(AttributeError, match=r"^module 'skyflow.spec' has no attribute 'Nope'$"):
        skyflow.spec.Nope  # noqa: B018


SERVED = """\
    name: x
    stages:
      prep:
        run: |
          echo one
          echo two
        resources: {cpus: 8, memory: 4x, use_spot: true}
        inputs: {raw: 'https://example.com/raw.csv'}
        outputs: [data]
      serve:
        run: serve
        num_nodes: 2
        service: {readiness_probe: /health}
        inputs: {d: prep.data}
    """


def test_the_dag_drawings_label_resources_and_leave_raw_uris_out_of_the_graphs(tmp_path: Path) -> None:
    pipeline = load_pipeline(_write(tmp_path, SERVED))
    assert render_dag(pipeline, "text") == textwrap.dedent("""\
        pipeline x: 2 stages
          prep  [cpus=8, spot]
            <- raw: https://example.com/raw.csv
            -> data
          serve  [x2 nodes, service]
            <- d: prep.data""")
    assert render_dag(pipeline, "mermaid") == textwrap.dedent("""\
        flowchart LR
          prep["prep<br/>cpus=8, spot"]
          serve["serve<br/>x2 nodes, service"]
          prep -->|data| serve""")
    assert render_dag(pipeline, "dot") == textwrap.dedent("""\
        digraph "x" {
          rankdir=LR;
          "prep" [shape=box, label="prep\\ncpus=8, spot"];
          "serve" [shape=box, label="serve\\nx2 nodes, service"];
          "prep" -> "serve" [label="data"];
        }""")


def test_export_writes_exact_sizes_as_numbers_and_scripts_as_blocks_and_round_trips(tmp_path: Path) -> None:
    original = load_pipeline(_write(tmp_path, SERVED))
    text = dump_pipeline_yaml(original)
    assert "    run: |\n      echo one\n      echo two\n" in text
    resources = YAML(typ="safe").load(text)["stages"]["prep"]["resources"]
    assert resources == {"cpus": 8, "memory": "4x", "use_spot": True}
    again = load_pipeline(_write(tmp_path, text, "exported.yaml"))
    assert again.spec == original.spec


def test_a_bad_value_with_braces_is_shown_as_written() -> None:
    """A mapping given where a name goes shows once, with single braces, in the error."""
    from skyflow.spec.base import custom_error

    assert custom_error("bad", "got {value!r}", value={"a": 1}).message() == "got {'a': 1}"
