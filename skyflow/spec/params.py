"""Pipeline params: `--set name=value` overrides and `${params.name}` interpolation."""

from __future__ import annotations

import re
from typing import Any

from skyflow.errors import Issue, SpecError
from skyflow.matching import close_matches
from skyflow.spec.source import Path, SourceMap

_REF = re.compile(r"(\$?)\$\{params\.([A-Za-z0-9_-]+)\}")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """'k=v' strings (from --set) into a dict; values are read as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise SpecError(Issue(f"--set {pair!r}: expected NAME=VALUE", hint="Write --set ppo_steps=50."))
        out[name.strip()] = _scalar(raw)
    return out


def _scalar(raw: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if raw == "":
        return ""
    try:
        value = YAML(typ="safe", pure=True).load(raw)
    except YAMLError:
        return raw
    if isinstance(value, str) and raw[:1] not in ("'", '"'):
        # Unquoted text is kept as typed: YAML would fold newlines, strip spaces and drop `#...`.
        return raw
    return value if isinstance(value, (str, int, float, bool)) or value is None else raw


def apply_overrides(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated by overrides; unknown names and type changes are errors."""
    merged = dict(defaults)
    for name, value in overrides.items():
        if name not in defaults:
            raise SpecError(Issue(f"--set {name}={value!r}: the pipeline has no param {name!r}",
                                  matches=tuple(close_matches(name, list(defaults))),
                                  hint=f"Params: {', '.join(sorted(defaults)) or '(none)'}."))
        merged[name] = _coerce(name, defaults[name], value)
    return merged


def _coerce(name: str, default: Any, value: Any) -> Any:
    if default is None or isinstance(default, str):
        return value if default is None else str(value)
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise SpecError(Issue(
        f"--set {name}={value!r}: expected {expected.__name__} like the default {default!r}",
        hint=f"Write --set {name}={default!r}.",
    ))


def interpolate(data: Any, params: dict[str, Any], smap: SourceMap, path: Path = ()) -> Any:
    """Replace ${params.NAME} in every string; a string that is only a reference keeps the type."""
    issues: list[Issue] = []
    result = _walk(data, params, smap, path, issues)
    if issues:
        raise SpecError(issues)
    return result


def _walk(node: Any, params: dict[str, Any], smap: SourceMap, path: Path, issues: list[Issue]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, params, smap, (*path, k), issues) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, params, smap, (*path, i), issues) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${params." not in node:
        return node
    whole = _REF.fullmatch(node)
    if whole and not whole.group(1):
        return _lookup(whole.group(2), params, smap, path, issues)

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):  # $${params.x} escapes to a literal ${params.x}
            return match.group(0)[1:]
        value = _lookup(match.group(2), params, smap, path, issues)
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    return _REF.sub(substitute, node)


def _lookup(name: str, params: dict[str, Any], smap: SourceMap, path: Path, issues: list[Issue]) -> Any:
    if name in params:
        return params[name]
    issues.append(Issue(
        f"{'.'.join(map(str, path))}: ${{params.{name}}} names no param",
        smap.position(path), matches=tuple(close_matches(name, list(params))),
        hint=f"Declare it under params: {{{name}: ...}}.",
    ))
    return None
