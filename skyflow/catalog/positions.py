"""Where a bad value sits in a price or egress file (line:col), and the CatalogError that names it.

Positions are worked out only when a problem is reported: the fast paths keep no per-value marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skyflow.errors import CatalogError, Issue, SourcePosition

KeyPath = tuple[Any, ...]


def catalog_error(position: SourcePosition, message: str, *, hint: str | None = None,
                  matches: Iterable[str] = ()) -> CatalogError:
    """``FILE:LINE:COL: message Did you mean ...? hint`` as a CatalogError whose ``path`` is the file."""
    error = CatalogError(Issue(message, position, hint, tuple(matches)).render())
    error.path = position.file
    return error


def show(value: object, limit: int = 60) -> str:
    """A value as the user would recognise it (YAML's null, true, false), cut short when long."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- CSV -------------------------------------------------------------------------------------------
def csv_field_columns(line: str) -> list[int]:
    """1-based start column of each field in one CSV line (quoted commas and ``""`` respected)."""
    starts, i, n = [1], 0, len(line)
    quoted, at_start = False, True
    while i < n:
        ch = line[i]
        if quoted:
            if ch == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 1
                else:
                    quoted = False
        elif ch == '"' and at_start:
            quoted = True
        elif ch == ",":
            starts.append(i + 2)
            at_start = True
            i += 1
            continue
        at_start = False
        i += 1
    return starts


def csv_position(file: str, text: str, line: int, field: int | None) -> SourcePosition:
    """Where field number ``field`` (0-based; None: the row) of ``line`` starts in ``text``."""
    if field is None:
        return SourcePosition(file, line, 1)
    lines = text.split("\n", line)
    starts = csv_field_columns(lines[line - 1]) if line <= len(lines) else [1]
    return SourcePosition(file, line, starts[field] if field < len(starts) else 1)


# -- YAML ------------------------------------------------------------------------------------------
class YamlDocument:
    """A YAML file's plain data, with the position of any value looked up (lazily) by its key path."""

    def __init__(self, text: str, file: str) -> None:
        from skyflow.yaml_quick import read_plain

        self.text, self.file = text, file
        self._root: Any = None
        quick = read_plain(text)  # a plain document through libyaml, the rest by ruamel
        if quick is not None:
            self.data: Any = quick.data
            return
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            self.data = YAML(typ="safe").load(text)
        except YAMLError as exc:
            raise _syntax_error(exc, file, text) from exc
        except TypeError as exc:  # a list holding a list or a mapping, used as a key (`? [a, [b]]`), cannot be hashed
            raise catalog_error(_unhashable_key_position(text, file),
                                "not valid YAML: a key must be a name, not a list holding lists or mappings.",
                                hint="Write `key: value` with a plain name as the key.") from exc

    def position(self, path: KeyPath, *, key: bool = False) -> SourcePosition:
        """The value at ``path`` (or, with ``key``, the key naming it); the nearest parent if not found."""
        node, key_node = self._node(path)
        mark = (key_node if key and key_node is not None else node).start_mark
        return SourcePosition(self.file, mark.line + 1, mark.column + 1)

    def error(self, path: KeyPath, message: str, *, key: bool = False, hint: str | None = None,
              matches: Iterable[str] = ()) -> CatalogError:
        return catalog_error(self.position(path, key=key), message, hint=hint, matches=matches)

    def _node(self, path: KeyPath) -> tuple[Any, Any]:
        from ruamel.yaml import YAML
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        if self._root is None:
            self._root = YAML(typ="safe").compose(self.text)
        node, key_node = self._root, None
        for step in path:
            if isinstance(node, MappingNode):
                pair = next(((k, v) for k, v in node.value if _same_key(k.value, step)), None)
                if pair is None:
                    break
                key_node, node = pair
            elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
                key_node, node = None, node.value[step]
            else:
                break
        return node, key_node


def _same_key(written: object, key: object) -> bool:
    if isinstance(written, list) and isinstance(key, tuple):  # a sequence used as a key (`? [a, b]`)
        return len(written) == len(key) and all(_same_key(w.value, k) for w, k in zip(written, key, strict=True))
    if not isinstance(written, str):
        return False
    if isinstance(key, str):
        return written == key
    if key is None:
        return written in ("", "~", "null", "Null", "NULL")
    if isinstance(key, bool):
        return written.lower() in (("true", "yes", "on") if key else ("false", "no", "off"))
    try:
        return float(written) == key
    except (TypeError, ValueError):
        return False


def _unhashable_key_position(text: str, file: str) -> SourcePosition:
    """Where the first key that is a list holding a list or a mapping starts (found on the node tree)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    pending = [YAML(typ="safe").compose(text)]
    while pending:
        node = pending.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, SequenceNode) and not all(isinstance(item, ScalarNode) for item in key.value):
                    return SourcePosition(file, key.start_mark.line + 1, key.start_mark.column + 1)
                pending.append(value)
        elif isinstance(node, SequenceNode):
            pending.extend(node.value)
    return SourcePosition(file, 1, 1)


def _syntax_error(exc: Exception, file: str, text: str) -> CatalogError:
    from ruamel.yaml.error import MarkedYAMLError
    from ruamel.yaml.reader import ReaderError

    hint = "Fix the YAML syntax at that spot."
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = " ".join(str(exc.problem or "").split())
        if exc.context and exc.context_mark is not None:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        if "duplicate key" in problem:
            hint = "A key may appear once per mapping; delete or merge the repeats."
        return catalog_error(SourcePosition(file, mark.line + 1, mark.column + 1),
                             f"not valid YAML: {problem}.", hint=hint)
    if isinstance(exc, ReaderError):
        before = text[:max(exc.position, 0)]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return catalog_error(SourcePosition(file, line, col),
                             f"not valid YAML: character {character!r} is not allowed.",
                             hint="Remove it, or write it as an escape inside a double-quoted string.")
    return catalog_error(SourcePosition(file, 1, 1), f"not valid YAML: {exc}", hint=hint)
