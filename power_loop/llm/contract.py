"""The :class:`~power_loop.llm.service.LLMService` contract, enforced where the loop reads it.

Whatever a service yields or raises, the loop either stores a well-formed answer or
raises a :class:`~power_loop.errors.PowerLoopError`:

* a service that raises something other than a ``PowerLoopError`` (any ``Exception``,
  a ``BaseException`` that is not a process exit, ``GeneratorExit``, an exception group,
  even one whose ``__str__`` raises) fails with :class:`~power_loop.errors.LLMError`;
* a service that breaks the stream's shape (an item that is not a stream item, text
  that is not a string, anything after the :class:`LLMResponse` or no response at all,
  an answer whose role or parts are wrong) fails with :class:`~power_loop.errors.LLMResponseError`;
* what is merely odd in an answer is normalized, not refused: token counts that are not
  non-negative integers, an unknown stop reason, call ids no provider accepts back,
  surrogate pairs, ``meta`` values that cannot be stored. See docs/tools.md.
"""

from __future__ import annotations

import asyncio
import math
import operator
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from power_loop.errors import InvalidArgumentError, LLMError, LLMResponseError, PowerLoopError
from power_loop.llm.messages import Message, Part, TextPart, ToolCallPart, Usage
from power_loop.llm.service import LLMResponse, StopReason, StreamItem, TextDelta, ToolCallDelta
from power_loop.store.records import dump_json

MAX_SHOWN = 500
"""Characters of a foreign exception's text kept in the error power_loop raises."""
MAX_TOKENS = 2**53 - 1
"""The largest token count kept (what every JSON reader holds exactly)."""
MAX_CALL_ID = 128
_CALL_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_CALL_ID}}}")
RESERVED_META = frozenset({"partial", "synthetic", "stop_reason", "usage", "model",
                           "input_estimate", "dropped_tool_calls", "source"})
"""``meta`` keys the loop itself writes and reads: a service's own values are dropped."""
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_NO_META = Message("assistant", ()).meta
"""The ``meta`` of a message made without any (one shared empty mapping)."""
SEND_FAILED = "The send is left pending: resume it to call the model again, or abort it"
"""What a failed send call leads to (the sentence ending the error's message)."""
SEND_BROKEN = "The send is left pending: fix the service and resume it, or abort it"
"""What a send call that broke the contract leads to."""


class HookFailed(Exception):
    """An event hook raised while the model streamed: its error is raised as it is."""

    def __init__(self, original: BaseException) -> None:
        super().__init__()
        self.original = original


async def close_quietly(stream: object) -> None:
    """Close a failed service's stream (its generator's ``finally``), whatever it raises.

    Only a cancellation of the caller and a process exit get through: the failure being
    raised is the service's first one.
    """
    close = getattr(stream, "aclose", None)
    if not callable(close):
        return
    try:
        await close()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if is_process_exit(exc):
            raise


def service_name(service: object) -> str:
    """What to call a service in messages: its ``provider``, else its class name."""
    provider = getattr(type(service), "provider", None)
    return provider if isinstance(provider, str) and provider else type(service).__name__


def exception_text(exc: BaseException, limit: int = MAX_SHOWN) -> str:
    """``str(exc)``, even when its ``__str__`` raises, at most ``limit`` characters."""
    try:
        text = str(exc)
    except BaseException:
        text = "<the exception's text could not be rendered>"
    return text if len(text) <= limit else text[:limit] + "..."


def describe(exc: BaseException, limit: int = MAX_SHOWN) -> str:
    """``Type: text`` of an exception (see :func:`exception_text`)."""
    text = exception_text(exc, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def exception_code(exc: BaseException) -> str | None:
    """The ``code`` of a power_loop error, read from its class (never a property's value)."""
    code = getattr(type(exc), "code", None) if isinstance(exc, PowerLoopError) else None
    return code if isinstance(code, str) else None


def is_process_exit(exc: BaseException) -> bool:
    """KeyboardInterrupt and SystemExit pass through untouched: the process is stopping."""
    return isinstance(exc, _PROCESS_EXITS)


def as_power_loop_error(exc: BaseException, service: object, *,
                        then: str = SEND_FAILED) -> PowerLoopError:
    """A service's failure as the error the send raises (a PowerLoopError is kept).

    ``then`` ends the message: what the failure leads to (a fold says its own).
    """
    if isinstance(exc, PowerLoopError):
        return exc
    name = service_name(service)
    return LLMError(f"{name}.stream failed with {describe(exc)}. {then}", provider=name)


def protocol_error(service: object, problem: str, *,
                   then: str = SEND_BROKEN) -> LLMResponseError:
    name = service_name(service)
    return LLMResponseError(
        f"{name}.stream broke the LLMService contract: {problem}. {then}", provider=name)


def check_item(item: object, service: object, *, then: str = SEND_BROKEN) -> StreamItem:
    """One streamed item, or raise :class:`LLMResponseError`."""
    if isinstance(item, TextDelta):
        if not isinstance(item.text, str):
            raise protocol_error(service, f"a TextDelta's text is a {type(item.text).__name__}",
                                 then=then)
        return item
    if isinstance(item, (ToolCallDelta, LLMResponse)):
        return item
    raise protocol_error(service, f"it yielded a {type(item).__name__}, not a stream item",
                         then=then)


def storable(text: str) -> str:
    """``text`` as the store gives it back: a surrogate pair becomes its one character.

    Lone surrogates and NUL are kept (the store keeps them on every backend); only the
    one normalization the store would make anyway is made before the answer is used.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text


def checked_answer(response: LLMResponse, service: object, *,
                   then: str = SEND_BROKEN) -> LLMResponse:
    """The response with its message checked and normalized, or raise LLMResponseError."""
    if _as_checked(response):
        return response
    message = response.message
    if not isinstance(message, Message):
        raise protocol_error(service, f"the LLMResponse's message is a {type(message).__name__}",
                             then=then)
    if message.role != "assistant":
        raise protocol_error(service, f"the answer's role is {_short(message.role)}, "
                                      "not 'assistant'", then=then)
    if not isinstance(message.parts, (tuple, list)):
        raise protocol_error(service, "the answer's parts are not a tuple", then=then)
    parts = tuple(_checked_part(p, service, then) for p in message.parts)
    meta = _checked_meta(message.meta)
    stop = response.stop_reason
    if not isinstance(stop, StopReason):
        try:
            stop = StopReason(stop)
        except (ValueError, TypeError):
            meta["reported_stop_reason"] = _short(stop)
            has_calls = any(isinstance(p, ToolCallPart) for p in parts)
            stop = StopReason.TOOL_USE if has_calls else StopReason.END_TURN
    model = response.model if isinstance(response.model, str) else None
    model = storable(model[:200]) if model else None
    usage = checked_usage(response.usage)
    if (type(response) is LLMResponse and type(message) is Message  # the usual answer
            and type(message.parts) is tuple and all(map(operator.is_, parts, message.parts))
            and not meta and not message.meta and stop is response.stop_reason
            and usage is response.usage and model is response.model):
        return response
    return LLMResponse(Message("assistant", parts, MappingProxyType(meta)), usage, stop, model)


def _as_checked(response: LLMResponse) -> bool:
    """Whether :func:`checked_answer` would return ``response`` as it is: the usual
    answer (exact types, ASCII text, no ``meta`` of the service's own, counts in range),
    told without building anything and without running any of the service's code."""
    message = response.message
    if (type(response) is not LLMResponse or type(message) is not Message
            or type(message.role) is not str or message.role != "assistant"
            or type(message.parts) is not tuple or message.meta is not _NO_META
            or type(response.stop_reason) is not StopReason):
        return False
    model = response.model
    if model is not None and (type(model) is not str or not 0 < len(model) <= 200
                              or not model.isascii()):
        return False
    usage = response.usage
    if type(usage) is not Usage:
        return False
    for count in (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                  usage.cache_write_tokens):
        if type(count) is not int or not 0 <= count <= MAX_TOKENS:
            return False
    for part in message.parts:
        if type(part) is TextPart:
            if type(part.text) is not str or not part.text.isascii():
                return False
        elif type(part) is ToolCallPart:
            for text in (part.id, part.name, part.arguments):
                if type(text) is not str or not text.isascii():
                    return False
        else:
            return False
    return True


def checked_usage(usage: object) -> Usage:
    """Token counts as non-negative integers (anything else counts as 0; capped)."""
    if not isinstance(usage, Usage):
        return Usage()
    counts = [getattr(usage, f) for f in _COUNTS]
    if type(usage) is Usage and all(_count(c) is c for c in counts):
        return usage
    return Usage(*map(_count, counts))


def call_id_is_usable(call_id: str) -> bool:
    """Whether a call id can be sent back to every provider as it is.

    The strictest rule among the providers: letters, digits, ``_`` and ``-``, at most
    :data:`MAX_CALL_ID` characters. Another id is replaced by one of power_loop's.
    """
    return _CALL_ID.fullmatch(call_id) is not None


def fresh_call_id(base: str, taken: set[str], used: Callable[[str], bool]) -> str:
    """``base``, or ``base`` with ``_`` appended until no call of the session has it."""
    fresh = base
    while fresh in taken or used(fresh):
        fresh += "_"  # the model itself wrote an id of this shape
    return fresh


_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if not isinstance(value, int):
        return 0
    return min(max(value, 0), MAX_TOKENS)


def _checked_part(part: object, service: object, then: str) -> Part:
    if isinstance(part, TextPart):
        if not isinstance(part.text, str):
            raise protocol_error(service, "a TextPart's text is not a string", then=then)
        text = storable(part.text)
        return part if type(part) is TextPart and text is part.text else TextPart(text)
    if isinstance(part, ToolCallPart):
        fields = (part.id, part.name, part.arguments)
        if not all(isinstance(f, str) for f in fields):
            raise protocol_error(service, "a ToolCallPart's id, name and arguments must be "
                                          "strings", then=then)
        checked = tuple(map(storable, fields))
        if type(part) is ToolCallPart and all(map(operator.is_, checked, fields)):
            return part
        return ToolCallPart(*checked)
    raise protocol_error(service, f"an answer cannot carry a {type(part).__name__}",
                         then=then)


def _checked_meta(meta: object) -> dict[str, Any]:
    """The service's own ``meta``: storable entries, minus the keys the loop owns."""
    if not isinstance(meta, Mapping):
        return {}
    kept: dict[str, Any] = {}
    for key, value in list(meta.items()):
        if not isinstance(key, str) or key in RESERVED_META:
            continue
        try:
            dump_json({key: value})
        except (InvalidArgumentError, RecursionError):
            continue
        kept[key] = value
    return kept


def _short(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:100])
    return type(value).__name__
