"""Turn pydantic validation errors into file:line:col issues with the bad value and a fix."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from skyflow.errors import Issue
from skyflow.matching import close_matches
from skyflow.spec.base import model_at
from skyflow.spec.source import Path, SourceMap

_PRIORITY = {"unknown_field": 0, "missing": 2}


def issues_from_validation(exc: ValidationError, data: Any, smap: SourceMap, root: type[BaseModel]) -> list[Issue]:
    """One issue per distinct place in the file, most specific error first."""
    by_path: dict[tuple[Path, bool], dict[str, Any]] = {}
    for details in exc.errors(include_url=False):
        err: dict[str, Any] = dict(details)
        if err["type"] == "extra_forbidden":
            err = _explain_unknown_key(err, root)
        path, is_key = _locate(data, tuple(err["loc"]), err)
        key = (path, is_key)
        current = by_path.get(key)
        if current is None or _rank(err) < _rank(current):
            by_path[key] = err
    # A union tries each branch: a bare type error beside deeper errors is the branch that was not meant.
    deeper = {p[:i] for p, _ in by_path for i in range(len(p))}
    by_path = {k: e for k, e in by_path.items() if not (k[0] in deeper and e["type"].endswith("_type"))}
    issues = [_issue(err, path, is_key, smap) for (path, is_key), err in by_path.items()]
    return sorted(issues, key=lambda i: (i.position.line, i.position.col) if i.position else (0, 0))


def _explain_unknown_key(err: dict[str, Any], root: type[BaseModel]) -> dict[str, Any]:
    loc = tuple(err["loc"])
    model = model_at(root, loc[:-1])
    key = str(loc[-1])
    allowed = sorted(model.model_fields) if model else []
    hint = model.unknown_key_hints.get(key) if model else None
    matches = [] if hint else close_matches(key, allowed)
    if not hint and allowed:
        hint = f"Allowed here: {', '.join(allowed)}."
    return {**err, "type": "unknown_field", "msg": f"unknown field {key!r}", "loc": loc[:-1],
            "ctx": {"field": key, "matches": matches, "hint": hint}}


def _rank(err: dict[str, Any]) -> int:
    if err["type"] in _PRIORITY:
        return _PRIORITY[err["type"]]
    return 1 if err.get("ctx", {}).get("hint") or err["type"].startswith(("bad_", "unknown_")) else 3


def _locate(data: Any, loc: tuple[Any, ...], err: dict[str, Any]) -> tuple[Path, bool]:
    """The part of pydantic's loc that exists in the data (union branch tags are dropped)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if part == "[key]":  # the mapping key itself is wrong (a bad name): point at the key
            return tuple(path), True
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if (isinstance(node, dict) and part in node) or in_list:
            path.append(part)
            node = node[part]
        elif err["type"] == "missing" and isinstance(node, dict) and part == loc[-1]:
            break
    if err["type"] == "unknown_field":
        return (*path, err["ctx"]["field"]), True
    return tuple(path), False


def _issue(err: dict[str, Any], path: Path, is_key: bool, smap: SourceMap) -> Issue:
    ctx = err.get("ctx") or {}
    where = ".".join(str(p) for p in path) or "<top level>"
    msg = err["msg"]
    kind = err["type"]
    matches = list(ctx.get("matches") or [])
    hint = ctx.get("hint")
    if kind == "missing":
        missing = err["loc"][-1]
        return Issue(f"{where}: missing required field {missing!r}", smap.position(path, key=True),
                     hint=f"Add {missing}: ... here.")
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        matches = close_matches(str(err["input"]), allowed) if allowed else []
        msg = f"must be one of {', '.join(allowed)}"
    text = f"{where}: {msg[0].lower() + msg[1:] if msg else msg}"
    if kind not in ("unknown_field",) and "got" not in msg and _is_scalar(err.get("input")):
        text += f", got {_show(err['input'])}"
    return Issue(text, smap.position(path, key=is_key), hint=hint, matches=tuple(matches))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
