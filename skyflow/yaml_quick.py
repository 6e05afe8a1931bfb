"""YAML read through libyaml (PyYAML's C parser) when a document is plain, as ruamel.yaml would read it.

ruamel.yaml reads YAML 1.2 and keeps every position, but its parser is pure Python: a 66-line
pipeline takes it about 40 ms and a 10,000-stage file most of `skyflow validate`'s seconds. libyaml
parses the same text in a few milliseconds and marks where each node starts. So a document is first
read here, and only one that needs more goes to ruamel (the callers fall back to it):

- scalars follow YAML 1.2's core schema as ruamel resolves them: ``true``/``false`` are booleans,
  ``yes``/``no``/``on``/``off`` stay strings, ``~`` and ``null`` are null;
- any plain scalar that ruamel could read as something other than what is decided here (``010``,
  ``1e3``, ``0x1f``, ``1_000``, ``1:30``, ``.inf``, dates, ``<<`` merges) hands the document over, as do
  explicit tags, anchors and aliases, a key that is not a string, a repeated key, an empty value (``key:``,
  placed elsewhere by each parser), directives (``%YAML 1.1``), tabs (libyaml takes some ruamel refuses),
  characters YAML 1.1 and 1.2 read differently (NEL, line and paragraph separators, a BOM), more
  than one document and any error (ruamel reports it, with its position and wording).

`read_plain` returns None in all of those cases; what it returns is, value for value and position for
position, what ruamel's round-trip loader gives (tests/unit/spec/test_yaml_quick.py compares them).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from skyflow.errors import SourcePosition

__all__ = ["PlainDocument", "read_plain"]

Path = tuple[str | int, ...]

_PLAIN, _QUOTED = "?plain", "?quoted"  # what an untagged scalar is, until it is resolved here
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+")
# Plain scalars YAML 1.2 might read as a number, a date, a merge or a value key in a form not
# decided here: a superset of ruamel's int, float and timestamp patterns (none of which ends in a sign,
# so `cpus: 4+` is a string here as there).
_OTHER_FORMS = re.compile(r"[-+]?\.?[0-9](?:[0-9a-fA-FxXoObB_.:+\-]*[0-9a-fA-F_.])?"
                          r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|<<|=|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*")
# Read differently by YAML 1.1 (libyaml: line breaks) and 1.2; a BOM moves columns; directives change the
# version; libyaml takes tabs inside flow collections' plain scalars that ruamel refuses; a lone carriage
# return ends a line (the walk below finds a node's first character by splitting at newlines).
_HAND_OVER_TEXT = re.compile("[\t\x85\u2028\u2029\ufeff]|\r(?!\n)|^%", re.MULTILINE)


@dataclass
class PlainDocument:
    """Plain data (dict/list/str/int/float/bool/None) and, by key path, where each key and value starts."""

    data: Any
    keys: dict[Path, SourcePosition] = field(default_factory=dict)
    values: dict[Path, SourcePosition] = field(default_factory=dict)


class _HandOver(Exception):
    """The document needs ruamel."""


def read_plain(text: str, *, file: str | None = None) -> PlainDocument | None:
    """``text`` read through libyaml, or None when it must be read by ruamel (see the module docstring);
    with ``file``, the positions of its keys and values in that file too."""
    loader = _loader_class()
    if loader is None or _HAND_OVER_TEXT.search(text):
        return None
    import yaml

    try:
        root = yaml.compose(text, Loader=loader)  # nosec B506: composes nodes only, constructs nothing
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if root is None:
        return None
    doc = PlainDocument(None)
    lines = text.split("\n") if "&" in text or "!" in text else None
    try:
        doc.data = _Walk(doc, file, lines).value(root, ())
    except (_HandOver, RecursionError):
        return None
    return doc


class _Walk:
    def __init__(self, doc: PlainDocument, file: str | None, lines: list[str] | None) -> None:
        self.doc = doc
        self.file = file  # None: no positions
        self.lines = lines  # the text's lines when it holds an '&' or a '!' anywhere
        self.seen: set[int] = set()

    def node_seen(self, node: Any) -> None:
        """Hand over a node met before (an alias: ruamel expands it within its value budget) or one with
        properties: an anchor's name ends where YAML 1.1 and 1.2 disagree (`&0:` is the anchor `0` for
        libyaml, `0:` for ruamel), and `!` is a tag. A node with properties starts at them."""
        if id(node) in self.seen:
            raise _HandOver
        self.seen.add(id(node))
        if self.lines is not None:
            line = self.lines[node.start_mark.line]
            if node.start_mark.column < len(line) and line[node.start_mark.column] in "&!":
                raise _HandOver

    def value(self, node: Any, path: Path) -> Any:
        self.node_seen(node)
        tag = node.tag
        if tag == _PLAIN:
            if not node.value:  # an empty value: the parsers place it differently (the colon, the next token)
                raise _HandOver
            return _resolve_plain(node.value)
        if tag == _QUOTED:
            return node.value
        if tag == _MAP:
            return self.mapping(node, path)
        if tag == _SEQ:
            return self.sequence(node, path)
        raise _HandOver  # an explicit tag

    def mapping(self, node: Any, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag not in (_PLAIN, _QUOTED):
                raise _HandOver  # a tagged or complex key
            self.node_seen(key_node)
            key = key_node.value if key_node.tag == _QUOTED else _resolve_plain(key_node.value)
            if not isinstance(key, str) or key in out:
                raise _HandOver  # a key ruamel turns into a string its own way, or a duplicate ruamel reports
            child = (*path, key)
            if self.file is not None:
                self.doc.keys[child] = self.position(key_node)
                self.doc.values[child] = self.position(value_node)
            out[key] = self.value(value_node, child)
        return out

    def position(self, node: Any) -> SourcePosition:
        return SourcePosition(self.file or "", node.start_mark.line + 1, node.start_mark.column + 1)

    def sequence(self, node: Any, path: Path) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            if self.file is not None:
                self.doc.values[child] = self.position(item)
            items.append(self.value(item, child))
        return items


def _resolve_plain(text: str) -> Any:
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _OTHER_FORMS.fullmatch(text):
        raise _HandOver
    return text


@functools.cache
def _loader_class() -> Any:
    """A libyaml loader that leaves untagged scalars unresolved (marked plain or quoted), or None
    without libyaml."""
    import yaml

    if not getattr(yaml, "__with_libyaml__", False):
        return None

    class _Unresolved(yaml.CSafeLoader):
        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            if kind is yaml.ScalarNode:
                return _PLAIN if implicit[0] else _QUOTED
            return _MAP if kind is yaml.MappingNode else _SEQ

    return _Unresolved
