"""Mistakes in decorated pipelines are refused where they are written (FILE:LINE:COL) with a fix, and the
Python API's lesser forms (a lambda stage, params[...], fan-in lists, plain URIs, **kwargs) wire like YAML."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skyflow import Input, Pipeline, Resources, stage
from skyflow.errors import SpecError
from skyflow.spec import resolve_decorated
from skyflow.spec.decorators import ParamRef, load_python_pipeline

HERE = Path(__file__).resolve()
TEXT = HERE.read_text().splitlines()


def _line(fragment: str) -> int:
    """The line of this file that holds ``fragment`` (once, besides the lines that look it up)."""
    found = [n for n, text in enumerate(TEXT, 1) if fragment in text and "_at(" not in text and "_line(" not in text]
    assert len(found) == 1, (fragment, found)
    return found[0]


def _at(fragment: str, col: int = 1) -> str:
    return f"{HERE}:{_line(fragment)}:{col}: "


def _message(pipeline: Pipeline) -> str:
    with pytest.raises(SpecError) as info:
        resolve_decorated(pipeline)
    return str(info.value)


@stage(outputs=["model"])
def train(data: Path, outputs: dict[str, Path], steps: int = 1) -> None: ...


@stage(outputs=["a", "b"])
def split(data: Path, outputs: dict[str, Path]) -> None: ...


@stage(outputs=["merged"])
def merge(parts: list[Path], outputs: dict[str, Path]) -> None: ...


@stage()
def flexible(**kwargs: Any) -> None: ...


@stage
def bare(data: Path) -> None: ...


quick = stage(lambda data: None, name="quick", retries=-1)

PARAM_MISUSES: list[tuple[str, Callable[[Any], Any]]] = [
    ("testing", lambda params: bool(params.steps)),
    ("comparing", lambda params: params.steps == 3),
    ("comparing", lambda params: params.steps != 3),
    ("comparing", lambda params: params.steps < 3),
    ("comparing", lambda params: params.steps <= 3),
    ("comparing", lambda params: params.steps > 3),
    ("comparing", lambda params: params.steps >= 3),
    ("computing with", lambda params: params.steps + 1),
    ("computing with", lambda params: 2 * params.steps),
    ("converting", lambda params: int(params.steps)),
    ("converting", lambda params: float(params.steps)),
    ("converting", lambda params: [0, 1][params.steps]),
    ("formatting", lambda params: f"{params.steps}"),
]


@pytest.mark.parametrize(("what", "misuse"), PARAM_MISUSES, ids=[f"{w}-{i}" for i, (w, _) in enumerate(PARAM_MISUSES)])
def test_using_a_params_value_while_defining_the_pipeline_is_refused_at_that_line(
        what: str, misuse: Callable[[Any], Any]) -> None:
    @Pipeline(name="uses-param", params={"steps": 3}, inputs={"raw": Input(uri="s3://b/raw")})
    def uses_param(raw: Any, params: Any) -> None:
        misuse(params)
        train(data=raw)

    where = f"{HERE}:{misuse.__code__.co_firstlineno}:1: "
    assert _message(uses_param) == (
        f"{where}params.steps: {what} a param while the pipeline is defined; its value is only known when the stage "
        "runs. Pass it to the stage (steps=params.steps) and test it in the stage function, or choose with --set "
        "when you run.")


def test_params_compare_equal_by_name_and_are_read_by_key_too() -> None:
    assert ParamRef("steps") == ParamRef("steps") and ParamRef("steps").__ne__(ParamRef("steps")) is False
    assert ParamRef("steps") != ParamRef("lr") and hash(ParamRef("steps")) == hash(ParamRef("steps"))

    @Pipeline(name="by-key", params={"steps": 3}, inputs={"raw": "s3://b/raw"})
    def by_key(raw: Any, params: Any) -> None:
        assert not hasattr(params, "_private")
        train(data=raw, steps=params["steps"])

    resolved = resolve_decorated(by_key)
    assert resolved.stages["train"].envs["SKYFLOW_KWARG_steps"] == "3"
    assert resolved.spec.inputs["raw"].uri == "s3://b/raw"  # a plain URI is an input as in YAML


def test_a_stage_with_several_outputs_passed_whole_is_refused_at_the_call() -> None:
    @Pipeline(name="whole")
    def whole() -> None:
        parts = split(data="s3://b/raw")
        assert not hasattr(parts, "_private")
        train(data=parts)  # split has two outputs

    assert _message(whole) == (
        f"{_at('# split has two outputs')}stage 'split' has 2 outputs; pass one by name. "
        "Write split_result.OUTPUT with one of: a, b.")


def test_a_stage_called_outside_a_pipeline_or_with_positional_inputs_is_refused_at_the_call() -> None:
    with pytest.raises(SpecError) as info:
        train(data="s3://b/raw")  # outside any pipeline
    assert str(info.value) == (f"{_at('# outside any pipeline')}stage "
                               "'train' was called outside a pipeline function. Call stages inside a function "
                               "decorated with @Pipeline(...).")

    @Pipeline(name="positional")
    def positional() -> None:
        train("s3://b/raw")  # positional input

    assert _message(positional) == (
        f"{_at('# positional input')}stage 'train': pass inputs by "
        "name, e.g. train(data=...)")


def test_a_list_of_artifacts_fans_in_and_a_mixed_list_is_refused() -> None:
    @Pipeline(name="fan-in")
    def fan_in() -> None:
        parts = split(data="s3://b/raw")
        merge(parts=[parts.a, parts.b])

    resolved = resolve_decorated(fan_in)
    assert {(e.input_name, e.ref) for e in resolved.edges if e.consumer == "merge"} == {
        ("parts_0", "split.a"), ("parts_1", "split.b")}
    lists = resolved.stages["merge"].envs["SKYFLOW_INPUT_LISTS"]
    assert lists is not None
    assert json.loads(lists) == {"parts": ["parts_0", "parts_1"]}

    @Pipeline(name="mixed")
    def mixed() -> None:
        parts = split(data="s3://b/raw")
        merge(parts=[parts.a, "s3://b/other"])  # mixes an artifact with a URI

    assert _message(mixed) == (
        f"{_at('# mixes an artifact with a URI')}stage 'merge': parts= mixes "
        "artifacts with other values; a list passed to a stage holds artifacts only (fan-in) or values only")


def test_an_argument_that_is_no_json_value_is_refused_at_the_call() -> None:
    @Pipeline(name="not-json")
    def not_json() -> None:
        train(data="s3://b/raw", steps={1, 2})  # a set

    message = _message(not_json)
    assert message.startswith(f"{_at('# a set')}stage 'train': arguments must be JSON values or "
                              "artifacts (Object of type set is not JSON serializable)")


def test_a_stage_taking_any_keyword_accepts_every_argument_as_a_constant() -> None:
    @Pipeline(name="any-keyword")
    def any_keyword() -> None:
        flexible(anything=1, other="x")

    kwargs = resolve_decorated(any_keyword).stages["flexible"].envs["SKYFLOW_KWARGS"]
    assert kwargs is not None
    assert json.loads(kwargs) == {"anything": 1, "other": "x"}


def test_a_bare_decorator_and_a_lambda_stage_are_stages_and_the_lambdas_options_are_placed_on_its_line() -> None:
    @Pipeline(name="lambda-stage")
    def lambda_stage() -> None:
        bare(data="s3://b/raw")
        quick(data="s3://b/raw")

    message = _message(lambda_stage)
    col = TEXT[_line("quick = stage(lambda") - 1].index("retries=") + 1
    assert message.startswith(f"{HERE}:{_line('quick = stage(lambda')}:{col}: stages.quick.retries: ")
    assert "-1" in message


def test_a_stage_whose_source_cannot_be_read_still_loads_and_its_errors_point_at_the_call() -> None:
    namespace: dict[str, Any] = {"stage": stage}
    exec(textwrap.dedent("""\
        @stage(retries=-1)
        def unread(data):
            pass
        """), namespace)
    unread = namespace["unread"]
    assert unread.position.line == 1

    @Pipeline(name="unread-source")
    def unread_source() -> None:
        unread(data="s3://b/raw")  # defined by exec

    assert _message(unread_source).startswith(f"{_at('# defined by exec')}stages.unread.retries: ")


def test_an_undecorated_pipeline_and_an_undeclared_argument_are_refused_where_the_pipeline_is_declared() -> None:
    undecorated = Pipeline(name="undecorated")  # never applied to a function
    assert _message(undecorated) == f"{_at('# never applied to a function')}@Pipeline(...) must decorate a function"
    with pytest.raises(SpecError, match="must decorate a function"):
        undecorated.to_data()

    @Pipeline(name="undeclared")  # takes an argument it does not declare
    def undeclared(data: Any) -> None:
        train(data=data)

    assert _message(undeclared) == (
        f"{_at('takes an argument it does not declare')}pipeline function argument 'data' is no declared input or "
        "'params'. Declare it: @Pipeline(inputs={'data': Input(uri=...)}) or remove the argument.")


def test_an_exception_while_tracing_points_at_the_line_that_raised_it() -> None:
    @Pipeline(name="raises")
    def raises() -> None:
        {}["missing"]  # type: ignore[index]  # no such key

    assert _message(raises) == (
        f"{_at('# no such key')}KeyError while tracing the pipeline function: 'missing'. Fix the "
        "Python code at this line.")


def test_resources_show_the_fields_given() -> None:
    assert repr(Resources(accelerators="A100:8", use_spot=True)) == "Resources(accelerators='A100:8', use_spot=True)"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_pipeline_file_that_is_missing_or_not_python_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=rf"^{tmp_path}/absent.py: no such file$"):
        load_python_pipeline(f"{tmp_path}/absent.py:p")
    text = _write(tmp_path, "pipeline.txt", "x = 1\n")
    with pytest.raises(SpecError, match=rf"^{text}: cannot import this file$"):
        load_python_pipeline(f"{text}:p")


def test_errors_while_importing_a_pipeline_file_point_into_it(tmp_path: Path) -> None:
    syntax = _write(tmp_path, "syntax_err.py", "def p(:\n    pass\n")
    with pytest.raises(SpecError, match=rf"^{syntax}:1:7: Python syntax error: invalid syntax$"):
        load_python_pipeline(f"{syntax}:p")
    failing = _write(tmp_path, "failing_import.py", """\
        import math

        RATE = 1 / 0
        """)
    with pytest.raises(SpecError) as info:
        load_python_pipeline(f"{failing}:p")
    assert str(info.value) == (f"{failing}:3:1: ZeroDivisionError while importing the pipeline file: division by "
                               "zero. Fix the Python code at this line.")
    early = _write(tmp_path, "early_call.py", """\
        from skyflow import stage


        @stage()
        def prep() -> None:
            pass


        prep()
        """)
    with pytest.raises(SpecError) as info:
        load_python_pipeline(f"{early}:p")
    assert str(info.value).startswith(f"{early}:9:1: stage 'prep' was called outside a pipeline function.")
