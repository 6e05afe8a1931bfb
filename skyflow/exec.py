"""`python -m skyflow.exec FILE.py:FUNCTION`: run a decorated stage function inside a stage process.

Inputs arrive as local paths in SKYFLOW_INPUT_<NAME>, outputs go to SKYFLOW_OUTPUT_<NAME>; the
function gets each input as a Path argument, ``outputs`` as {name: Path}, and the constants and
param values it was called with in the pipeline function.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def stage_arguments(func: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments for ``func`` from the stage environment."""
    from skyflow.spec.decorators import INPUT_LISTS_ENV, KWARG_ENV_PREFIX, KWARGS_ENV
    from skyflow.spec.params import _scalar

    kwargs: dict[str, Any] = json.loads(env.get(KWARGS_ENV, "{}"))
    for key, value in env.items():
        if key.startswith(KWARG_ENV_PREFIX):
            kwargs[key[len(KWARG_ENV_PREFIX):]] = _scalar(value)
    for name, inputs in json.loads(env.get(INPUT_LISTS_ENV, "{}")).items():  # fan-in: a list of paths
        kwargs[name] = [Path(env[f"SKYFLOW_INPUT_{i.upper()}"]) for i in inputs]
    names = inspect.signature(func).parameters
    for name in names:
        path = env.get(f"SKYFLOW_INPUT_{name.upper()}")
        if path is not None:
            kwargs[name] = Path(path)
    if "outputs" in names:
        kwargs["outputs"] = {k[len("SKYFLOW_OUTPUT_"):].lower(): Path(v) for k, v in env.items()
                             if k.startswith("SKYFLOW_OUTPUT_")}
    return kwargs


def main(argv: list[str]) -> int:
    from skyflow.errors import SkyflowError
    from skyflow.spec.decorators import StageDefinition, import_file

    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m skyflow.exec FILE.py:FUNCTION", file=sys.stderr)
        return 2
    file_part, _, attr = argv[0].rpartition(":")
    try:
        module = import_file(Path(file_part).resolve())
    except SkyflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    definition = getattr(module, attr, None)
    if not isinstance(definition, StageDefinition):
        print(f"error: {argv[0]}: {attr!r} is not a @stage function", file=sys.stderr)
        return 2
    definition.func(**stage_arguments(definition.func, os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
