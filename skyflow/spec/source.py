"""Parse YAML into plain Python data plus a map from each value's path to its file position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyflow.errors import Issue, SourcePosition, SpecError

Path = tuple[str | int, ...]

# Aliases share one node, which becomes plain data once per use: nine levels of ten aliases in 500
# bytes would become 10**9 values. A document may become at most this many values, or ten per byte
# of its text, whichever is more (text without aliases becomes fewer values than it has bytes).
MIN_VALUES = 100_000
VALUES_PER_BYTE = 10


@dataclass
class SourceMap:
    """Positions of keys and values by path (("stages", "sft", "resources"), ...)."""

    file: str
    values: dict[Path, SourcePosition] = field(default_factory=dict)
    keys: dict[Path, SourcePosition] = field(default_factory=dict)

    def position(self, path: Path, *, key: bool = False) -> SourcePosition:
        """The position of ``path``, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if not key and probe in self.keys:
                return self.keys[probe]
            probe = probe[:-1]
        return self.values.get((), SourcePosition(self.file, 1, 1))

    def graft(self, other: SourceMap, prefix: Path, *, overwrite: bool = False) -> None:
        """Copy ``other``'s positions under ``prefix`` (a task file merged into a stage)."""
        for src, dst in ((other.values, self.values), (other.keys, self.keys)):
            for path, pos in src.items():
                target = prefix + path
                if overwrite or target not in dst:
                    dst[target] = pos


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse ``text``; return plain dict/list/scalars and their positions.

    A plain document is read through libyaml (`skyflow.yaml_quick`), anything else by ruamel.yaml
    (`parse_yaml_with_ruamel`); both give the same values and positions."""
    from skyflow.yaml_quick import read_plain

    quick = read_plain(text, file=file)
    if quick is None:
        return parse_yaml_with_ruamel(text, file)
    return quick.data, SourceMap(file, {(): SourcePosition(file, 1, 1), **quick.values}, quick.keys)


def parse_yaml_with_ruamel(text: str, file: str) -> tuple[Any, SourceMap]:
    """`parse_yaml` by ruamel.yaml: YAML 1.2 with aliases, merges and tags, and its errors' positions."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = SourcePosition(file, mark.line + 1, mark.column + 1) if mark else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if "duplicate key" in problem or "found duplicate key" in str(exc):
            problem = _duplicate_key_message(exc)
        raise SpecError(Issue(f"invalid YAML: {problem}", pos, hint=_yaml_hint(problem))) from exc
    except YAMLError as exc:
        raise SpecError(Issue(f"invalid YAML: {exc}", SourcePosition(file, 1, 1))) from exc
    except TypeError as exc:  # a mapping or list used as a mapping key (`? a: {b: 1}`) cannot be hashed
        raise SpecError(Issue("invalid YAML: a mapping key must be a plain name, not a mapping or a list",
                              _complex_key_position(yaml, text, file),
                              hint="Write `key: value`; `? ` starts a complex key, which skyflow does not accept.")
                        ) from exc
    except RecursionError as exc:
        raise SpecError(Issue("invalid YAML: nested too deeply to be a pipeline", SourcePosition(file, 1, 1),
                              hint="A pipeline needs a few levels of nesting, not hundreds.")) from exc
    smap = SourceMap(file)
    smap.values[()] = SourcePosition(file, 1, 1)
    budget = _Budget(max(MIN_VALUES, VALUES_PER_BYTE * len(text)))
    try:
        return _to_plain(tree, (), smap, budget), smap
    except _TooManyValues as exc:
        raise SpecError(Issue(f"invalid YAML: aliases expand this document to more than {budget.limit} values; "
                              "refusing to expand it", exc.position,
                              hint="Use an anchor (&name) for a block you repeat a few times, not aliases of "
                                   "aliases.")) from None
    except RecursionError as exc:
        raise SpecError(Issue("invalid YAML: nested too deeply to be a pipeline", SourcePosition(file, 1, 1),
                              hint="A pipeline needs a few levels of nesting, not hundreds.")) from exc


class _TooManyValues(Exception):
    def __init__(self, position: SourcePosition) -> None:
        super().__init__(str(position))
        self.position = position


@dataclass
class _Budget:
    """How many values the document may become, how many it has, and where the alias being expanded
    is used (the position to report)."""

    limit: int
    spent: int = 0
    seen: set[int] = field(default_factory=set)
    alias_at: SourcePosition | None = None

    def spend(self, smap: SourceMap, path: Path) -> None:
        self.spent += 1
        if self.spent > self.limit:
            raise _TooManyValues(self.alias_at or smap.position(path))


def _complex_key_position(yaml: Any, text: str, file: str) -> SourcePosition:
    """Where the first key that is not a plain scalar starts (found on the node tree, which is never hashed)."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    pending = [yaml.compose(text)]
    while pending:
        node = pending.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    return SourcePosition(file, key.start_mark.line + 1, key.start_mark.column + 1)
                pending.append(value)
        elif isinstance(node, SequenceNode):
            pending.extend(node.value)
    return SourcePosition(file, 1, 1)


def _duplicate_key_message(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "duplicate key" in line:
            return line.strip().rstrip(".") + " (each key may appear once in a mapping)"
    return "duplicate key"


def _yaml_hint(problem: str) -> str | None:
    if "tab" in problem or "'\\t'" in problem:
        return "Indent with spaces, not tabs."
    if "mapping values are not allowed" in problem:
        return "Quote values that contain ': ' or fix the indentation."
    if "could not find expected ':'" in problem:
        return "Each mapping entry needs 'key: value'."
    return None


def _to_plain(node: Any, path: Path, smap: SourceMap, budget: _Budget) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    budget.spend(smap, path)
    if isinstance(node, (CommentedMap, CommentedSeq)):
        if id(node) in budget.seen and budget.alias_at is None:  # a node met again: an alias, expanded here
            budget.alias_at = smap.position(path)
            try:
                return _to_plain_container(node, path, smap, budget)
            finally:
                budget.alias_at = None
        budget.seen.add(id(node))
        return _to_plain_container(node, path, smap, budget)
    return _plain_scalar(node)


def _to_plain_container(node: Any, path: Path, smap: SourceMap, budget: _Budget) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key in node:
            kline, kcol = node.lc.key(key) if _has_lc(node, key) else (node.lc.line, node.lc.col)
            vline, vcol = node.lc.value(key) if _has_lc(node, key) else (kline, kcol)
            plain_key = _plain_scalar(key)
            child = (*path, str(plain_key))
            smap.keys[child] = SourcePosition(smap.file, kline + 1, kcol + 1)
            smap.values[child] = SourcePosition(smap.file, vline + 1, vcol + 1)
            out[str(plain_key) if plain_key is not None else "null"] = _to_plain(node[key], child, smap, budget)
        return out
    items = []
    for index, item in enumerate(node):
        line, col = node.lc.item(index) if index in node.lc.data else (node.lc.line, node.lc.col)
        smap.values[(*path, index)] = SourcePosition(smap.file, line + 1, col + 1)
        items.append(_to_plain(item, (*path, index), smap, budget))
    return items


def _has_lc(node: Any, key: Any) -> bool:
    return key in node.lc.data


def _plain_scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, TaggedScalar, ...) become builtins."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "value") and isinstance(value.value, str):  # TaggedScalar
        return str(value.value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return str(value) if not isinstance(value, (dict, list)) else value
