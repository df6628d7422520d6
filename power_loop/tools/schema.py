"""JSON Schema from a function's type hints, descriptions from its docstring.

Supported annotations: ``str``, ``int``, ``float``, ``bool``, ``None``, ``list[T]``,
``tuple[T, ...]``, ``dict[str, T]``, ``Literal[...]``, ``Enum`` subclasses, ``T | None``
and other unions, ``Annotated[T, "description"]``, dataclasses and ``TypedDict`` s, and
``Any``. Parameters with a default are optional. Anything else is refused when the tool
is declared, with a message naming the parameter, never when the model calls it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from power_loop.errors import InvalidArgumentError

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


def type_schema(annotation: Any, where: str) -> dict[str, Any]:
    """The JSON Schema of one annotation (``where`` names it in errors)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        schema = type_schema(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema = {"enum": values}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            schema = {**_SCALARS[next(iter(kinds))], "enum": values}
        return schema
    if origin in (Union, types.UnionType):
        options = [type_schema(a, where) for a in args]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, Sequence, set, frozenset) or annotation in (list, tuple, set):
        item = type_schema(args[0], where) if args else {}
        return {"type": "array", "items": item}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0], where)}
        return {"type": "array", "prefixItems": [type_schema(a, where) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if origin in (dict, Mapping) or annotation is dict:
        if args and args[0] is not str:
            raise InvalidArgumentError(
                f"{where}: dict keys must be str for JSON, not {args[0]!r}")
        values_schema = type_schema(args[1], where) if args else {}
        return {"type": "object", "additionalProperties": values_schema}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        return {"enum": values}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        fields = dataclasses.fields(annotation)
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        return _object({f.name: type_schema(hints[f.name], f"{where}.{f.name}") for f in fields},
                       required)
    if typing.is_typeddict(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        props = {k: type_schema(v, f"{where}.{k}") for k, v in hints.items()}
        return _object(props, sorted(annotation.__required_keys__))
    raise InvalidArgumentError(
        f"{where}: type {annotation!r} cannot be described as JSON Schema; use str, int, "
        "float, bool, list, dict, Literal, an Enum, a dataclass or a TypedDict")


def converter_for(annotation: Any) -> Callable[[Any], Any] | None:
    """How to turn a validated JSON value into ``annotation``'s Python value.

    ``None`` when the JSON value is already right (str, int, list of str...). Enums and
    dataclasses are rebuilt wherever they occur: inside optionals, lists, dicts, other
    dataclasses and TypedDicts.
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return converter_for(args[0])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        inner = {f.name: c for f in dataclasses.fields(annotation)
                 if (c := converter_for(hints[f.name])) is not None}
        cls = annotation

        def build(value: Any) -> Any:
            return cls(**{k: inner[k](v) if k in inner else v for k, v in value.items()})

        return build
    if typing.is_typeddict(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        fields = {k: c for k, h in hints.items() if (c := converter_for(h)) is not None}
        if not fields:
            return None
        return lambda value: {k: fields[k](v) if k in fields else v for k, v in value.items()}
    if origin in (Union, types.UnionType):
        options = [(a, converter_for(a)) for a in args]
        if all(c is None for _, c in options):
            return None
        return lambda value: _convert_union(options, value)
    if origin in (list, Sequence, set, frozenset, tuple) and args:
        items = [converter_for(a) for a in args if a is not Ellipsis]
        if all(c is None for c in items):
            return None
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return lambda value: tuple(c(v) if c else v for c, v in zip(items, value,
                                                                          strict=False))
        item = items[0]
        assert item is not None
        kind = {list: list, Sequence: list, set: set, frozenset: frozenset, tuple: tuple}[origin]
        return lambda value: kind(item(v) for v in value)
    if origin in (dict, Mapping) and len(args) == 2:
        values = converter_for(args[1])
        if values is None:
            return None
        return lambda value: {k: values(v) for k, v in value.items()}
    return None


def _convert_union(options: list[tuple[Any, Callable[[Any], Any] | None]], value: Any) -> Any:
    if value is None:
        return None
    for _, convert in options:
        if convert is None:
            continue
        try:
            return convert(value)
        except (TypeError, ValueError, KeyError):
            continue
    return value


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$")
_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """A Google-style docstring's summary and its ``Args:`` descriptions."""
    text = inspect.cleandoc(doc or "")
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in text.splitlines():
        heading = _SECTION.match(line)
        if heading:
            section, current, arg_indent = heading.group(1), None, None
            continue
        if section is None:
            summary_lines.append(line)
            continue
        if section not in {"Args", "Arguments", "Parameters"} or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG.match(line)
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1).lstrip("*")
            args[current] = match.group(3).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(summary_lines).strip(), args


def function_schema(fn: Callable[..., Any], *, skip: set[str]) -> tuple[str, dict[str, Any]]:
    """``fn``'s description and the JSON Schema of its arguments (``skip``: injected)."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise InvalidArgumentError(f"cannot resolve the type hints of {fn.__name__}: {exc}") \
            from exc
    summary, arg_docs = parse_docstring(fn.__doc__)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise InvalidArgumentError(f"{fn.__name__}: parameter {name!r} is positional-only; "
                                       "tool arguments are passed by name")
        schema = type_schema(hints.get(name, Any), f"{fn.__name__}({name})")
        if name in arg_docs and "description" not in schema:
            schema["description"] = arg_docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif isinstance(param.default, (str, int, float, bool, type(None))):
            schema["default"] = param.default
        elif isinstance(param.default, enum.Enum):
            schema["default"] = param.default.value
        properties[name] = schema
    return summary, _object(properties, required)
