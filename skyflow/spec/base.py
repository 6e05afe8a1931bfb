"""The base of every spec model: frozen, strict about unknown keys, with close-match hints."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError


def custom_error(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    """A pydantic error whose text is final (formatted here) and whose ctx keeps hints/matches.

    pydantic fills ``{name}`` in the text from ctx by plain replacement (doubled braces are not an
    escape there), so braces in a bad value (a mapping written where a list goes) stay as written."""
    return PydanticCustomError(kind, message.format(**ctx), ctx)


class SpecModel(BaseModel):
    """Frozen model; unknown keys are errors that diagnostics explain with close matches and a fix."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


    # Keys people write that mean something else here: key -> how to say it instead.
    unknown_key_hints: ClassVar[dict[str, str]] = {}


def model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[SpecModel] | None:
    """The spec model class that validated the mapping at pydantic's ``loc`` (union tags included)."""
    import typing

    current: Any = root
    pending: list[Any] = []
    for part in loc:
        options = pending or _unwrap(current)
        pending = []
        models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
        tagged = [m for m in models if m.__name__ == part]
        if tagged:
            pending = [tagged[0]]
            continue
        model = next((m for m in models if part in m.model_fields), None)
        if model is not None:
            current = model.model_fields[part].annotation
            continue
        containers = [o for o in options if typing.get_origin(o) in (dict, tuple, list)]
        if containers:
            args = typing.get_args(containers[0])
            current = args[-1] if typing.get_origin(containers[0]) is dict else args[0]
            continue
        return None
    final = pending or _unwrap(current)
    found = [o for o in final if isinstance(o, type) and issubclass(o, SpecModel)]
    return found[0] if found else None


def _unwrap(annotation: Any) -> list[Any]:
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _unwrap(arg)]
    return [annotation]
