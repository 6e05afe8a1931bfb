"""The Python API: @stage and @Pipeline record what the user declared; the YAML path validates it.

Decorators only record (nothing is validated or run at import). Loading a decorated pipeline calls
its function with placeholders, which wires the DAG from the values passed between stage calls, and
turns the result into the same data a YAML file gives, so both go through one code path.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, overload

from skyflow.errors import Issue, SourcePosition, SpecError
from skyflow.spec.source import SourceMap

if TYPE_CHECKING:
    import skyflow  # the public API facade: Plan and RunResult come from layers above this one

KWARGS_ENV = "SKYFLOW_KWARGS"
KWARG_ENV_PREFIX = "SKYFLOW_KWARG_"
# {argument: [input names]}: an argument given a list of artifacts (fan-in) gets a list of paths.
INPUT_LISTS_ENV = "SKYFLOW_INPUT_LISTS"


def _caller(depth: int = 2) -> SourcePosition:
    frame = sys._getframe(depth)
    return SourcePosition(frame.f_code.co_filename, frame.f_lineno, 1)


class Resources:
    """Resources of a stage, with SkyPilot's fields; checked when the pipeline loads."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.position = _caller()

    def __repr__(self) -> str:
        return f"Resources({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"


@dataclass(frozen=True)
class Input:
    """External data a pipeline reads: its URI, where it lives, and its size."""

    uri: str
    infra: str | None = None
    size_gb: float | None = None


@dataclass(frozen=True)
class ArtifactRef:
    """A placeholder for an artifact while a pipeline function is traced."""

    ref: str


@dataclass(frozen=True, eq=False)
class ParamRef:
    """A placeholder for a pipeline param; becomes ${params.NAME}.

    While the pipeline function is traced a param has no value yet: comparing it, testing it or
    computing with it is refused at that line (the stage function receives the value).
    """

    name: str

    def _refuse(self, what: str) -> SpecError:
        return SpecError(Issue(
            f"params.{self.name}: {what} a param while the pipeline is defined; its value is only known when "
            "the stage runs.", _caller(3),
            hint=f"Pass it to the stage ({self.name}=params.{self.name}) and test it in the stage function, "
                 "or choose with --set when you run."))

    def __bool__(self) -> bool:
        raise self._refuse("testing")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ParamRef):
            return self.name == other.name
        raise self._refuse("comparing")

    def __ne__(self, other: object) -> bool:
        if isinstance(other, ParamRef):
            return self.name != other.name
        raise self._refuse("comparing")

    def __hash__(self) -> int:
        return hash(("ParamRef", self.name))

    def __lt__(self, other: object) -> bool:
        raise self._refuse("comparing")

    def __le__(self, other: object) -> bool:
        raise self._refuse("comparing")

    def __gt__(self, other: object) -> bool:
        raise self._refuse("comparing")

    def __ge__(self, other: object) -> bool:
        raise self._refuse("comparing")

    def _arithmetic(self, other: object) -> Any:
        raise self._refuse("computing with")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arithmetic
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = _arithmetic

    def __int__(self) -> int:
        raise self._refuse("converting")

    def __float__(self) -> float:
        raise self._refuse("converting")

    def __index__(self) -> int:
        raise self._refuse("converting")

    def __format__(self, spec: str) -> str:
        raise self._refuse("formatting")


class ParamsProxy:
    def __init__(self, names: list[str]) -> None:
        self._names = names

    def __getattr__(self, name: str) -> ParamRef:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names:
            from skyflow.matching import close_matches

            raise SpecError(Issue(f"params.{name}: the pipeline has no param {name!r}", _caller(),
                                  matches=tuple(close_matches(name, self._names))))
        return ParamRef(name)

    def __getitem__(self, name: str) -> ParamRef:
        return self.__getattr__(name)


class StageCall:
    """What calling a stage inside a pipeline function returns: its outputs by name."""

    def __init__(self, name: str, outputs: list[str]) -> None:
        self._name = name
        self._outputs = outputs

    def __getattr__(self, output: str) -> ArtifactRef:
        if output.startswith("_"):
            raise AttributeError(output)
        if output not in self._outputs:
            from skyflow.matching import close_matches

            raise SpecError(Issue(f"stage {self._name!r} declares no output {output!r}", _caller(),
                                  matches=tuple(close_matches(output, self._outputs)),
                                  hint=f"Outputs: {', '.join(self._outputs) or '(none)'}."))
        return ArtifactRef(f"{self._name}.{output}")

    def sole_output(self) -> ArtifactRef:
        if len(self._outputs) != 1:
            raise SpecError(Issue(f"stage {self._name!r} has {len(self._outputs)} outputs; pass one by name",
                                  _caller(4), hint=f"Write {self._name}_result.OUTPUT with one of: "
                                  f"{', '.join(self._outputs) or '(none)'}."))
        return ArtifactRef(f"{self._name}.{self._outputs[0]}")


@dataclass
class _Trace:
    """The stages called while a pipeline function runs."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[str, SourcePosition] = field(default_factory=dict)
    resource_positions: dict[str, SourcePosition] = field(default_factory=dict)
    # where each option given to @stage(...) is written, so that a typo there is reported there
    option_positions: dict[str, dict[str, SourcePosition]] = field(default_factory=dict)


_ACTIVE: list[_Trace] = []


class StageDefinition:
    """A function declared as a stage; calling it inside a pipeline function records a call."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.func = func
        self.name = options.pop("name", None) or func.__name__
        self.options = options
        try:
            line = inspect.getsourcelines(func)[1]
        except (OSError, TypeError):  # no source to read (exec, python -c): its code still knows the line
            line = getattr(getattr(func, "__code__", None), "co_firstlineno", 1)
        self.position = SourcePosition(inspect.getsourcefile(func) or "<python>", line, 1)

    def __call__(self, *args: Any, **kwargs: Any) -> StageCall:
        if not _ACTIVE:
            raise SpecError(Issue(f"stage {self.name!r} was called outside a pipeline function", _caller(),
                                  hint="Call stages inside a function decorated with @Pipeline(...)."))
        trace = _ACTIVE[-1]
        if args:
            raise SpecError(Issue(f"stage {self.name!r}: pass inputs by name, e.g. {self.name}(data=...)",
                                  _caller()))
        self._check_arguments(kwargs)
        name = self.name
        if name in trace.stages:
            name = f"{self.name}_{sum(1 for s in trace.stages if s.startswith(self.name))}"
        inputs: dict[str, str] = {}
        constants: dict[str, Any] = {}
        param_envs: dict[str, str] = {}
        lists: dict[str, list[str]] = {}
        for key, value in kwargs.items():
            value = _artifact_or_value(value)
            if isinstance(value, ArtifactRef):
                inputs[key] = value.ref
            elif isinstance(value, ParamRef):
                param_envs[f"{KWARG_ENV_PREFIX}{key}"] = f"${{params.{value.name}}}"
            elif isinstance(value, (list, tuple)) and value and any(isinstance(v, ArtifactRef) for v in value):
                if not all(isinstance(v, ArtifactRef) for v in value):
                    raise SpecError(Issue(f"stage {self.name!r}: {key}= mixes artifacts with other values; a list "
                                          "passed to a stage holds artifacts only (fan-in) or values only",
                                          _caller()))
                lists[key] = [f"{key}_{i}" for i in range(len(value))]
                inputs.update(zip(lists[key], (v.ref for v in value), strict=True))
            else:
                constants[key] = value
        if lists:
            param_envs[INPUT_LISTS_ENV] = json.dumps(lists, sort_keys=True)
        trace.stages[name] = self._stage_data(name, inputs, constants, param_envs)
        trace.positions[name] = _caller()
        trace.resource_positions[name] = self.position
        trace.option_positions[name] = self.option_positions()
        return StageCall(name, list(self._outputs()))

    def option_positions(self) -> dict[str, SourcePosition]:
        """Where each ``@stage(key=...)`` is written: the line and column of ``key=`` in the decorator."""
        import re

        try:
            lines, start = inspect.getsourcelines(self.func)
        except (OSError, TypeError):
            return {}
        found: dict[str, SourcePosition] = {}
        for offset, line in enumerate(lines):
            if re.match(r"\s*(async\s+)?def\s", line):
                break
            for key in self.options:
                match = re.search(rf"\b{re.escape(key)}\s*=", line)
                if match and key not in found:
                    found[key] = SourcePosition(self.position.file, start + offset, match.start() + 1)
        return {key: found.get(key, self.position) for key in self.options}

    def _check_arguments(self, kwargs: dict[str, Any]) -> None:
        """The call's arguments against the function's signature, so a wrong name fails at validation,
        at the call, not when the stage runs."""
        from skyflow.matching import close_matches

        params = inspect.signature(self.func).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = [n for n, p in params.items() if n != "outputs" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in kwargs:
            if key not in accepted:
                raise SpecError(Issue(f"stage {self.name!r}: {self.func.__name__}() takes no argument {key!r}",
                                      _caller(3), matches=tuple(close_matches(key, accepted)),
                                      hint=f"Its arguments: {', '.join(accepted) or '(none)'}."))
        missing = [n for n in accepted if n not in kwargs and params[n].default is inspect.Parameter.empty
                   and params[n].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if missing:
            raise SpecError(Issue(f"stage {self.name!r}: {self.func.__name__}() needs "
                                  f"{', '.join(repr(m) for m in missing)}, which this call does not pass",
                                  _caller(3), hint=f"Pass {missing[0]}=... here, or give it a default."))

    def _outputs(self) -> dict[str, Any]:
        outputs = self.options.get("outputs") or {}
        return {o: {} for o in outputs} if isinstance(outputs, (list, tuple)) else dict(outputs)

    def _stage_data(self, name: str, inputs: dict[str, str], constants: dict[str, Any],
                    param_envs: dict[str, str]) -> dict[str, Any]:
        data = {k: v for k, v in self.options.items() if v is not None}
        resources = data.get("resources")
        if isinstance(resources, Resources):
            data["resources"] = dict(resources.fields)
        try:
            encoded = json.dumps(constants, sort_keys=True)
        except TypeError as exc:
            raise SpecError(Issue(f"stage {name!r}: arguments must be JSON values or artifacts ({exc})",
                                  _caller(3))) from None
        module_file = FsPath(self.position.file).name
        envs = {**(data.get("envs") or {}), **param_envs}
        if constants:
            envs[KWARGS_ENV] = encoded
        data.update({"run": f"python -m skyflow.exec {module_file}:{self.func.__name__}", "envs": envs})
        if inputs:
            data["inputs"] = inputs
        if "outputs" in data:
            data["outputs"] = self._outputs()
        return data


@overload
def stage(func: Callable[..., Any], **options: Any) -> StageDefinition: ...


@overload
def stage(func: None = None, **options: Any) -> Callable[[Callable[..., Any]], StageDefinition]: ...


def stage(func: Callable[..., Any] | None = None,
          **options: Any) -> StageDefinition | Callable[[Callable[..., Any]], StageDefinition]:
    """Declare a function as a stage: ``@stage(resources=Resources(accelerators="A100:8"), ...)``.

    Options are a stage's YAML fields (resources, outputs, estimate, retries, cache, num_nodes,
    setup, envs, secrets, timeout, depends_on, ...). The function receives each input as a local
    path, ``outputs`` (if it takes that argument) as a dict of output directories, and constants.
    """
    if func is not None:
        return StageDefinition(func, options)
    return lambda f: StageDefinition(f, options)


class Pipeline:
    """Declare a pipeline function: ``@Pipeline(name="rlhf", params={...}, inputs={...})``."""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name
        self.options = options
        self.func: Callable[..., Any] | None = None
        self.position = _caller()

    def __call__(self, func: Callable[..., Any]) -> Pipeline:
        self.func = func
        self.name = self.name or func.__name__.replace("_", "-")
        return self

    def plan(self, **options: Any) -> skyflow.Plan:
        """Plan this pipeline as `skyflow plan` does (``options``: infra=..., all_clouds=True, deadline=...)."""
        import skyflow  # the public API, which reaches the session lazily

        return skyflow.plan(self, **options)

    def run(self, **params: Any) -> skyflow.RunResult:
        """Plan and run this pipeline as `skyflow run` does, ``params`` overriding its defaults."""
        import skyflow

        return skyflow.run(self, params=params)

    def to_data(self) -> tuple[dict[str, Any], SourceMap]:
        """Trace the pipeline function into pipeline data with positions in the Python file."""
        if self.func is None:
            raise SpecError(Issue("@Pipeline(...) must decorate a function", self.position))
        inputs = {k: _input_data(v) for k, v in (self.options.get("inputs") or {}).items()}
        params = dict(self.options.get("params") or {})
        arguments = self._arguments(list(inputs), list(params))
        trace = _Trace()
        _ACTIVE.append(trace)
        try:
            self.func(**arguments)
        except SpecError:
            raise
        except Exception as exc:
            raise user_code_error(exc, FsPath(self.position.file), "tracing the pipeline function") from None
        finally:
            _ACTIVE.pop()
        data = {"name": self.name, **{k: v for k, v in self.options.items() if v is not None}}
        data.update({"inputs": inputs, "params": params, "stages": trace.stages})
        data = {k: v for k, v in data.items() if v not in ({}, None)} | {"stages": trace.stages}
        return data, self._source_map(trace)

    def _arguments(self, inputs: list[str], params: list[str]) -> dict[str, Any]:
        assert self.func is not None
        out: dict[str, Any] = {}
        for name in inspect.signature(self.func).parameters:
            if name == "params":
                out[name] = ParamsProxy(params)
            elif name in inputs:
                out[name] = ArtifactRef(name)
            else:
                raise SpecError(Issue(f"pipeline function argument {name!r} is no declared input or 'params'",
                                      self.position, hint="Declare it: @Pipeline(inputs={'" + name + "': "
                                      "Input(uri=...)}) or remove the argument."))
        return out

    def _source_map(self, trace: _Trace) -> SourceMap:
        assert self.func is not None
        file = inspect.getsourcefile(self.func) or "<python>"
        smap = SourceMap(file)
        smap.values[()] = self.position
        for name, pos in trace.positions.items():
            smap.keys[("stages", name)] = pos
            smap.values[("stages", name)] = pos
            options = trace.option_positions.get(name, {})
            for key in trace.stages[name]:
                smap.values[("stages", name, key)] = pos
            smap.values[("stages", name, "resources")] = trace.resource_positions[name]
            for key, option_pos in options.items():
                if key == "resources":  # a Resources(...) keeps the position it was made at
                    continue
                smap.keys[("stages", name, key)] = smap.values[("stages", name, key)] = option_pos
        return smap


def _artifact_or_value(value: Any) -> Any:
    """A stage call stands for its sole output, also inside a list (fan-in)."""
    if isinstance(value, StageCall):
        return value.sole_output()
    if isinstance(value, (list, tuple)):
        return [v.sole_output() if isinstance(v, StageCall) else v for v in value]
    return value


def _input_data(value: Any) -> Any:
    if isinstance(value, Input):
        return {k: v for k, v in vars(value).items() if v is not None}
    return value


def decorated_data(pipeline: Pipeline) -> tuple[dict[str, Any], SourceMap, str, str]:
    """A @Pipeline object's data, source map, base folder and ``file.py:function`` target."""
    if pipeline.func is None:
        raise SpecError(Issue("@Pipeline(...) must decorate a function", pipeline.position))
    path = FsPath(pipeline.position.file).resolve()
    data, smap = pipeline.to_data()
    for stage_data in data["stages"].values():
        stage_data.setdefault("workdir", ".")
    return data, smap, str(path.parent), f"{path}:{pipeline.func.__name__}"


def load_python_pipeline(target: str) -> tuple[dict[str, Any], SourceMap, str]:
    """Import ``file.py`` and trace its ``function`` (a @Pipeline) into pipeline data."""
    file_part, _, attr = target.rpartition(":")
    path = FsPath(file_part).resolve()
    module = import_file(path)
    pipeline = getattr(module, attr, None)
    if not isinstance(pipeline, Pipeline):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))
        raise SpecError(Issue(f"{target}: {attr!r} is not a @Pipeline function in {file_part}",
                              matches=tuple(found), hint=f"Pipelines there: {', '.join(found) or '(none)'}."))
    data, smap = pipeline.to_data()
    for stage_data in data["stages"].values():
        stage_data.setdefault("workdir", ".")
    return data, smap, str(path.parent)


def import_file(path: FsPath) -> Any:
    """Import a Python file by path (its directory first on sys.path, as `python file.py` would)."""
    if not path.is_file():
        raise SpecError(Issue(f"{path}: no such file"))
    name = f"skyflow_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SpecError(Issue(f"{path}: cannot import this file"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SpecError:
        raise
    except SyntaxError as exc:
        raise SpecError(Issue(f"Python syntax error: {exc.msg}",
                              SourcePosition(str(path), exc.lineno or 1, exc.offset or 1))) from None
    except Exception as exc:
        raise user_code_error(exc, path, "importing the pipeline file") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def user_code_error(exc: BaseException, path: FsPath, doing: str) -> SpecError:
    """A user's exception as a positioned issue: the deepest frame in their file."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if FsPath(f.filename) == path]
    frame = frames[-1] if frames else None
    position = SourcePosition(str(path), frame.lineno or 1, 1) if frame else None
    return SpecError(Issue(f"{type(exc).__name__} while {doing}: {exc}", position,
                           hint="Fix the Python code at this line."))
