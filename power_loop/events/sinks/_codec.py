"""Events to JSON objects and back, derived from each event class's own fields.

Every field is coded by its declared type: plain values as they are, ``Usage``,
``datetime``, ``Message``, dataclasses such as ``SendResult`` (field by field, so a
field added to them is carried too), power_loop errors, and events nested in events.
A field of a type the codec does not know makes its event class fail loudly the first
time it is coded, so a new event type is never written half.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from power_loop.errors import InvalidArgumentError, PowerLoopError
from power_loop.events.types import Event
from power_loop.llm.messages import Message, Usage, decode_message, encode_message

SCHEMA_VERSION = 1
"""The version written in every JSONL line (``"v"``); :func:`replay` reads only it."""

Code = Callable[[Any], Any]
_RESERVED = ("v", "type")
_namespace: dict[str, Any] = {}


def _names() -> dict[str, Any]:
    """What the events' string annotations name (``SendResult`` lives a floor above)."""
    if not _namespace:
        from power_loop.loop.results import SendResult  # no cycle: it needs only llm/

        _namespace.update(PowerLoopError=PowerLoopError, SendResult=SendResult, Event=Event,
                          Usage=Usage, Message=Message, datetime=datetime, Any=Any)
    return _namespace


def _same(value: Any) -> Any:
    return value


class _EventCoder:
    """How one event class is written and read."""

    def __init__(self, cls: type[Event]) -> None:
        self.cls = cls
        self.name = type_name(cls)
        self.fields: list[tuple[str, Code | None, Code | None]] = []
        self.required: set[str] = set()
        hints = typing.get_type_hints(cls, globalns=vars(_module_of(cls)), localns=_names())
        for f in dataclasses.fields(cls):
            if f.name in _RESERVED:
                raise TypeError(f"{cls.__name__}.{f.name}: the name is reserved in JSONL lines")
            encode, decode = _coder(hints[f.name], f"{cls.__name__}.{f.name}")
            plain = encode is _same
            self.fields.append((f.name, None if plain else encode, None if plain else decode))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.required.add(f.name)

    def encode(self, event: Event) -> dict[str, Any]:
        line: dict[str, Any] = {"v": SCHEMA_VERSION, "type": self.name}
        for name, encode, _ in self.fields:
            value = getattr(event, name)
            line[name] = value if encode is None or value is None else encode(value)
        return line

    def decode(self, line: Mapping[str, Any]) -> Event:
        missing = self.required.difference(line)
        if missing:
            raise ValueError(f"{self.name} lacks {sorted(missing)}")
        values: dict[str, Any] = {}
        for name, _, decode in self.fields:
            if name in line:  # an older line may lack a field that has a default
                value = line[name]
                values[name] = value if decode is None or value is None else decode(value)
        return self.cls(**values)


def _module_of(cls: type) -> types.ModuleType:
    return sys.modules[cls.__module__]


def type_name(cls: type) -> str:
    """The ``type`` written for an event class: its name, qualified if it is not ours."""
    if cls.__module__.startswith("power_loop."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _coder(hint: Any, where: str) -> tuple[Code, Code]:
    """The (encode, decode) pair of a declared type; ``_same`` for plain JSON values."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (str, int, float, bool, Any) or origin in (dict, Mapping) or hint is dict:
        return _same, _same
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _coder(rest[0], where)  # None is written as null, never coded
        if all(a in (str, int, float, bool) for a in rest):
            return _same, _same
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        encode, decode = _coder(args[0], where)
        return (lambda v: [encode(x) for x in v]), (lambda v: tuple(decode(x) for x in v))
    if hint is Usage:
        return (lambda u: u.to_json()), (lambda d: Usage(**d))
    if hint is datetime:
        return (lambda d: d.isoformat()), datetime.fromisoformat
    if hint is Message:
        return (lambda m: {"role": m.role, "body": encode_message(m)}), \
            (lambda d: decode_message(d["role"], d["body"]))
    if isinstance(hint, type) and issubclass(hint, Event):
        return encode_event, decode_event
    if isinstance(hint, type) and issubclass(hint, PowerLoopError):
        return _encode_error, _decode_error
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_coder(hint, where)
    raise TypeError(f"{where}: the JSONL codec cannot write a {hint!r}")


def _dataclass_coder(cls: type, where: str) -> tuple[Code, Code]:
    hints = typing.get_type_hints(cls, globalns=vars(_module_of(cls)), localns=_names())
    coders = [(f.name, *_coder(hints[f.name], f"{where}.{f.name}"))
              for f in dataclasses.fields(cls)]
    plain = tuple(name for name, enc, _ in coders if enc is _same)
    coded = tuple((name, enc) for name, enc, _ in coders if enc is not _same)

    def encode(value: Any) -> dict[str, Any]:
        # Field order is kept by the decoder's names, not the line's: plain fields first.
        out: dict[str, Any] = {name: getattr(value, name) for name in plain}
        for name, enc in coded:
            item = getattr(value, name)
            out[name] = item if item is None else enc(item)
        return out

    def decode(data: Mapping[str, Any]) -> Any:
        return cls(**{name: (data[name] if data[name] is None else dec(data[name]))
                      for name, _, dec in coders if name in data})

    return encode, decode


# -- errors -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _encode_error(error: PowerLoopError) -> dict[str, Any]:
    cls = type(error)
    return {"class": cls.__name__, "module": cls.__module__, "code": error.code,
            "message": getattr(error, "message", str(error)),
            "details": {str(k): _plain(v) for k, v in getattr(error, "details", {}).items()}}


def _error_classes() -> dict[tuple[str, str], type[PowerLoopError]]:
    found: dict[tuple[str, str], type[PowerLoopError]] = {}
    stack: list[type[PowerLoopError]] = [PowerLoopError]
    while stack:
        cls = stack.pop()
        found[(cls.__module__, cls.__name__)] = cls
        stack.extend(cls.__subclasses__())
    return found


def _decode_error(data: Mapping[str, Any]) -> PowerLoopError:
    """The error rebuilt without its ``__init__`` (whose signature varies by class)."""
    cls = _error_classes().get((data["module"], data["class"]), PowerLoopError)
    error = cls.__new__(cls)
    Exception.__init__(error, data["message"])
    error.message = data["message"]
    error.details = dict(data.get("details") or {})
    for key, value in error.details.items():
        if not hasattr(type(error), key):
            setattr(error, key, value)
    if error.code != data["code"]:  # a class this process does not have
        error.code = data["code"]  # type: ignore[misc]
    return error


# -- events -------------------------------------------------------------------------------


_coders: dict[type[Event], _EventCoder] = {}
_by_name: dict[str, type[Event]] = {}


def coder_of(cls: type[Event]) -> _EventCoder:
    """The coder of an event class (built on first use; raises on an unknown field type)."""
    coder = _coders.get(cls)
    if coder is None:
        coder = _coders[cls] = _EventCoder(cls)
    return coder


def encode_event(event: Event) -> dict[str, Any]:
    """The JSON object of an event (with ``v`` and ``type``)."""
    return coder_of(type(event)).encode(event)


def _class_named(name: str) -> type[Event] | None:
    cls = _by_name.get(name)
    if cls is None:
        stack: list[type[Event]] = [Event]
        while stack:
            sub = stack.pop()
            # ``slots=True`` makes a dataclass anew: the class it replaced may linger
            # among the subclasses until collected. The one its module names wins.
            if type_name(sub) not in _by_name or _is_current(sub):
                _by_name[type_name(sub)] = sub
            stack.extend(sub.__subclasses__())
        cls = _by_name.get(name)
    return cls


def _is_current(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    return module is not None and getattr(module, cls.__name__, None) is cls


def decode_event(line: Mapping[str, Any]) -> Event:
    """An event back from its JSON object.

    Raises:
        InvalidArgumentError: another schema version, an unknown type, a malformed object.
    """
    if not isinstance(line, Mapping):
        raise InvalidArgumentError("an event line must be a JSON object")
    if line.get("v") != SCHEMA_VERSION:
        raise InvalidArgumentError(f"event schema version {line.get('v')!r} is not "
                                   f"{SCHEMA_VERSION}, the one this power_loop reads")
    name = line.get("type")
    cls = _class_named(name) if isinstance(name, str) else None
    if cls is None:
        raise InvalidArgumentError(f"unknown event type {name!r}")
    try:
        return coder_of(cls).decode(line)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidArgumentError(f"a malformed {name} event: {exc}") from exc


_encode_line = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"),
                                check_circular=False).encode  # events hold no cycles

_fast_dumps: Callable[[Any], bytes] | None
try:  # optional: pip install power-loop[fast]
    from orjson import dumps as _fast_dumps
except ImportError:  # pragma: no cover - depends on the environment
    _fast_dumps = None


def _finite(value: Any) -> bool:
    """Whether no float in ``value`` is NaN or infinite (orjson writes those as null)."""
    kind = type(value)
    if kind is float:
        return bool(value - value == 0.0)
    items: Any
    if kind is dict:
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return True
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:
                return False
        elif (kind is dict or kind is list or kind is tuple) and not _finite(item):
            return False
    return True


def dump_line(event: Event) -> bytes:
    """One JSONL line with its newline: ASCII only, so any text survives.

    orjson (extra ``fast``) writes it when it writes the same JSON value in ASCII (about
    five times faster than ``json``); anything else (non-ASCII text, which ``json``
    escapes, lone surrogates, integers beyond 64 bits, NaN or infinities, which orjson
    would write as null) is left to ``json``, so the line decodes to the same event
    either way.
    """
    line = encode_event(event)
    if _fast_dumps is not None and _finite(line):
        try:
            data = _fast_dumps(line)
        except TypeError:  # orjson refuses it (its JSONEncodeError is a TypeError)
            pass
        else:
            if data.isascii():
                return data + b"\n"
    return (_encode_line(line) + "\n").encode("ascii")


def dumps(event: Event) -> str:
    """One JSONL line (without its newline): ASCII only, so any text survives."""
    return dump_line(event)[:-1].decode("ascii")
