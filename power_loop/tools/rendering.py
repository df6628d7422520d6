"""What a tool returned or raised, as bounded, valid text.

Nothing here trusts the objects it is given: a ``__str__`` that raises or returns
something other than text, an int too long for ``str()``, a structure that contains
itself or nests past the recursion limit, text holding lone surrogates. Every function
returns text of a bounded size made of valid Unicode (lone surrogates become U+FFFD;
NUL is kept, the store keeps it on every backend), or raises an ordinary exception that
the caller turns into an error result.
"""

from __future__ import annotations

import inspect
import json
import traceback
import types
from collections.abc import Iterator
from typing import Any

MAX_ERROR_CHARS = 2_000
"""The longest error result the model reads."""

MAX_TRACEBACK_CHARS = 20_000
"""The longest traceback kept in ``ToolCallFinished`` and in the log."""

_STACK_DEPTH = 64


def truncate(text: str, limit: int, *, total: int | None = None) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much was dropped.

    ``total`` is the full length when ``text`` is only the start of something longer
    that was never built; the marker then says "at least".
    """
    if total is None and len(text) <= limit:
        return text
    if total is None:
        marker = f"\n[... truncated: showing {{kept:,}} of {len(text):,} characters]"
    else:
        marker = f"\n[... truncated: showing {{kept:,}} of at least {total:,} characters]"
    kept = max(0, limit - len(marker.format(kept=limit)))
    return text[:kept] + marker.format(kept=kept)


def clean(text: str) -> str:
    """``text`` as valid Unicode: a surrogate pair becomes its character, a lone one U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def text_of(value: object) -> str:
    """``str(value)``, else ``repr(value)``: exactly a ``str``, or the first failure raised.

    A ``__str__`` returning a ``str`` subclass gets a plain copy, so nothing of the
    subclass's own runs afterwards.
    """
    failure: BaseException | None = None
    for render in (str, repr):
        try:
            text = render(value)
        except Exception as exc:
            failure = failure or exc
            continue
        return str.__str__(text)
    assert failure is not None
    raise failure


def safe_text(value: object, limit: int) -> str:
    """Bounded, valid text for ``value``; a placeholder when it cannot be shown. Never raises."""
    try:
        return clean(truncate(text_of(value), limit))
    except BaseException:
        return f"<unprintable {type_name(value)}>"


def type_name(value: object) -> str:
    """The short name of ``value``'s type (``ValueError``). Never raises."""
    try:
        name = type(value).__name__
        if isinstance(name, str):
            return clean(str.__str__(name))
    except BaseException:
        pass
    return "<unnamed type>"


def qualified_name(value: object) -> str:
    """``module.QualName`` of ``value``'s type, just the name for builtins. Never raises."""
    try:
        cls = type(value)
        module, name = cls.__module__, cls.__qualname__
        if isinstance(module, str) and isinstance(name, str):
            module, name = str.__str__(module), str.__str__(name)
            return clean(name if module == "builtins" else f"{module}.{name}")
    except BaseException:
        pass
    return type_name(value)


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """The formatted traceback of ``exc``, its cause and context, bounded. Never raises."""
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:
        text = (f"{qualified_name(exc)}: {safe_text(exc, 500)} (its traceback could not be "
                "formatted)")
    return clean(cut_middle(text, limit))


def format_suspended(coro: object, limit: int = MAX_TRACEBACK_CHARS) -> str | None:
    """Where a suspended coroutine (and what it awaits) stands, as a stack. Never raises."""
    try:
        frames: list[tuple[types.FrameType, int]] = []
        current: Any = coro
        while current is not None and len(frames) < _STACK_DEPTH:
            frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
            if isinstance(frame, types.FrameType):
                frames.append((frame, frame.f_lineno))
            current = getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom",
                                                                     None)
        return format_frames(frames, limit)
    except BaseException:
        return None


def format_thread_stack(frame: types.FrameType | None,
                        limit: int = MAX_TRACEBACK_CHARS) -> str | None:
    """Where a thread stands, innermost frame last. Never raises."""
    try:
        frames: list[tuple[types.FrameType, int]] = []
        while frame is not None and len(frames) < _STACK_DEPTH:
            frames.append((frame, frame.f_lineno))
            frame = frame.f_back
        return format_frames(frames[::-1], limit)
    except BaseException:
        return None


def format_frames(frames: list[tuple[types.FrameType, int]], limit: int) -> str | None:
    if not frames:
        return None
    summary = traceback.StackSummary.extract(iter(frames), lookup_lines=True)
    return clean(cut_middle("".join(summary.format()), limit))


def cut_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, keeping its start and its end (a traceback's
    outermost calls and, last, the exception itself)."""
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit:,}+ characters omitted ...]\n"
    keep = max(0, limit - len(marker))
    head = keep // 3
    return text[:head] + marker + text[len(text) - (keep - head):]


def return_problem(value: object) -> str | None:
    """Why power_loop will not show what a tool returned (``None``: it will).

    Generators are not iterated (one may never end); an awaitable is awaited once by
    the runner, so one found here came out of another awaitable.
    """
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        return (f"returned a {type_name(value)}, which power_loop does not iterate; return a "
                "list or a string instead")
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never run: without this Python warns it was never awaited
        return (f"returned an awaitable whose value is again awaitable "
                f"({type_name(value)}); return the awaited value instead")
    return None


def render_output(value: Any, limit: int) -> str:
    """A tool's return value as the text the model reads, at most ``limit`` characters.

    ``None`` is empty; text is itself; bytes are decoded as UTF-8 (invalid bytes
    replaced); anything else is JSON, with ``str()`` (else ``repr()``) of what JSON
    cannot hold, and ``str()`` of the whole value when JSON fails (a cycle, non-text
    keys). Only the first ``limit`` characters of JSON are ever built. Raises when the
    value cannot be shown at all (an int beyond Python's digit limit, a ``__str__`` and
    ``__repr__`` that both raise).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return clean(truncate(str.__str__(value), limit))
    if isinstance(value, (bytes, bytearray)):
        return _render_bytes(bytes(value[: 4 * limit + 4]), len(value), limit)
    try:
        return _render_json(value, limit)
    except (ValueError, TypeError, RecursionError):
        return clean(truncate(text_of(value), limit))


def _render_bytes(head: bytes, size: int, limit: int) -> str:
    text = head.decode("utf-8", "replace")
    if size > len(head):
        return clean(truncate(text[:limit], limit, total=len(text)))
    return clean(truncate(text, limit))


def _render_json(value: Any, limit: int) -> str:
    encoder = json.JSONEncoder(ensure_ascii=False, default=_json_default)
    chunks: list[str] = []
    size = 0
    for chunk in _chunks(encoder, value):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return clean(truncate("".join(chunks)[:limit], limit, total=size))
    return clean("".join(chunks))


def _chunks(encoder: json.JSONEncoder, value: Any) -> Iterator[str]:
    # Not the one-shot C encoder: this one yields as it goes, so a huge value is never
    # rendered past the limit.
    return encoder.iterencode(value, _one_shot=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    return text_of(value)
