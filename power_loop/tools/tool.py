"""A tool: a Python function the model may call, described by JSON Schema."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints, overload

import fastjsonschema

from power_loop.errors import InvalidArgumentError, ToolError
from power_loop.llm.service import ToolSpec
from power_loop.tools.context import ToolContext
from power_loop.tools.schema import converter_for, function_schema

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
MIN_OUTPUT_CHARS = 200
"""The smallest output cap: room for the truncation marker and some output."""


__all__ = ["MIN_OUTPUT_CHARS", "Tool", "ToolError", "make_tool", "tool", "type_hints"]


_VALIDATORS: dict[str, Callable[[Any], Any]] = {}
_MAX_VALIDATORS = 1024


def _compiled(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The compiled validator of a schema, shared by equal schemas: compiling costs
    milliseconds, and a loop per request builds its tools (the built-in ones too) anew."""
    try:
        key = json.dumps(schema, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return fastjsonschema.compile(dict(schema))
    found = _VALIDATORS.get(key)
    if found is None:
        found = fastjsonschema.compile(dict(schema))
        if len(_VALIDATORS) >= _MAX_VALIDATORS:
            _VALIDATORS.clear()
        _VALIDATORS[key] = found
    return found


@dataclass(frozen=True, eq=False)
class Tool:
    """A callable the model can use.

    Attributes:
        name: How the model calls it (letters, digits, ``_`` and ``-``; up to 64).
        description: What it does, for the model.
        parameters: JSON Schema of its arguments (an object).
        fn: The function (sync functions run in a worker thread). Not a generator
            function: power_loop does not iterate what a tool returns.
        safe_to_repeat: Re-running it after a crash is harmless (reads, idempotent
            writes). Calls of other tools whose outcome was lost are never re-run: the
            model is told the outcome is unknown.
        timeout: Seconds before the call is abandoned (``None``: the loop's default).
        max_output_chars: Longer output is cut with a visible marker (``None``: the
            loop's default).
        requires_approval: ``True``, or a function of the call's arguments returning
            whether this call needs a person's approval before it runs (see
            docs/human-in-the-loop.md). A policy that raises refuses the call: the model
            gets an error result and the tool does not run.
        approval_expires: Seconds after which an unanswered approval becomes a
            rejection (``None``: it waits as long as it takes).
        asks_user: The call is a question to the user (the built-in ``ask_user``): the
            send waits for ``answer(...)``, whose text becomes the result.
        validator: Checks the arguments instead of a validator compiled from
            ``parameters`` (for schemas from elsewhere, e.g. an MCP server: see
            :mod:`power_loop.mcp`); raises ``fastjsonschema.JsonSchemaValueException``
            for arguments that don't fit.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any]
    safe_to_repeat: bool = False
    timeout: float | None = None
    max_output_chars: int | None = None
    context_param: str | None = None
    _converters: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    requires_approval: bool | Callable[[Mapping[str, Any]], bool] = False
    approval_expires: float | None = None
    asks_user: bool = False
    validator: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.requires_approval, bool) or callable(self.requires_approval)):
            raise InvalidArgumentError(
                f"tool {self.name!r}: requires_approval must be True, False or a function "
                "of the call's arguments")
        expires = self.approval_expires
        if expires is not None and (isinstance(expires, bool) or not isinstance(
                expires, (int, float)) or not 0 < expires <= 366 * 86_400):
            raise InvalidArgumentError(
                f"tool {self.name!r}: approval_expires must be seconds above 0, at most a "
                f"year, not {expires!r}")
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidArgumentError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if inspect.isgeneratorfunction(self.fn) or inspect.isasyncgenfunction(self.fn):
            raise InvalidArgumentError(
                f"tool {self.name!r} is a generator function; power_loop does not iterate "
                "what a tool returns: return a list or a string instead")
        if self.max_output_chars is not None and self.max_output_chars < MIN_OUTPUT_CHARS:
            raise InvalidArgumentError(
                f"tool {self.name!r}: max_output_chars must be at least {MIN_OUTPUT_CHARS}")
        if self.validator is not None:
            object.__setattr__(self, "_validate", self.validator)
            return
        try:
            validator = _compiled(self.parameters)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise InvalidArgumentError(f"tool {self.name!r} has an invalid schema: {exc}") from exc
        object.__setattr__(self, "_validate", validator)

    @property
    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, arguments: Any) -> None:
        """Raise ``fastjsonschema.JsonSchemaValueException`` when arguments don't fit."""
        self._validate(arguments)  # type: ignore[attr-defined]

    def bind(self, arguments: Mapping[str, Any], context: ToolContext) -> dict[str, Any]:
        """The keyword arguments for the function: converted, with the context if it takes one."""
        kwargs = {k: self._converters[k](v) if k in self._converters else v
                  for k, v in arguments.items()}
        if self.context_param is not None:
            kwargs[self.context_param] = context
        return kwargs

    async def invoke(self, arguments: Mapping[str, Any], context: ToolContext) -> Any:
        """Call the function with validated arguments, raising whatever it raises.

        The loop does not use this: it runs calls through ``ToolRegistry.run``, which
        turns every failure into an error result. A ``StopIteration`` from a sync
        function comes out as a ``RuntimeError`` caused by it (as from a coroutine).
        """
        kwargs = self.bind(arguments, context)
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        result = await asyncio.to_thread(_call_in_thread, self.fn, kwargs)
        if inspect.isawaitable(result):
            return await result
        return result


def _call_in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except StopIteration as exc:
        # A future cannot carry StopIteration: set on one, the awaiting task never wakes.
        raise RuntimeError("the tool function raised StopIteration") from exc


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s resolved type hints, or :class:`InvalidArgumentError` saying why not."""
    try:
        return get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise InvalidArgumentError(
            f"cannot resolve the type hints of {getattr(fn, '__name__', fn)!r}: {exc} (with "
            "`from __future__ import annotations`, annotation types must be importable "
            "from the function's module)") from exc


def _is_context(hint: Any) -> bool:
    """``ToolContext``, also as ``ToolContext | None`` or ``Annotated[ToolContext, ...]``."""
    if hint is ToolContext:
        return True
    origin = get_origin(hint)
    if origin is typing.Annotated:
        return _is_context(get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return len(options) == 1 and _is_context(options[0])
    return False


def make_tool(fn: Callable[..., Any], *, name: str | None = None,
              description: str | None = None, safe_to_repeat: bool = False,
              timeout: float | None = None, max_output_chars: int | None = None,
              requires_approval: bool | Callable[[Mapping[str, Any]], bool] = False,
              approval_expires: float | None = None) -> Tool:
    """Build a :class:`Tool` from a function's signature, hints and docstring."""
    hints = type_hints(fn)
    context_params = {n for n, h in hints.items() if n != "return" and _is_context(h)}
    if len(context_params) > 1:
        raise InvalidArgumentError(f"{fn.__name__} takes more than one ToolContext")
    summary, parameters = function_schema(fn, skip=context_params)
    converters = {n: c for n, h in hints.items()
                  if n not in context_params and n != "return"
                  and (c := converter_for(h)) is not None}
    return Tool(
        name=fn.__name__ if name is None else name,
        description=description or summary or fn.__name__,
        parameters=parameters, fn=fn, safe_to_repeat=safe_to_repeat, timeout=timeout,
        max_output_chars=max_output_chars,
        context_param=next(iter(context_params), None), _converters=converters,
        requires_approval=requires_approval, approval_expires=approval_expires)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(*, name: str | None = None, description: str | None = None,
         safe_to_repeat: bool = False, timeout: float | None = None,
         max_output_chars: int | None = None,
         requires_approval: bool | Callable[[Mapping[str, Any]], bool] = False,
         approval_expires: float | None = None) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, safe_to_repeat: bool = False,
         timeout: float | None = None, max_output_chars: int | None = None,
         requires_approval: bool | Callable[[Mapping[str, Any]], bool] = False,
         approval_expires: float | None = None,
         ) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function into a :class:`Tool`; use bare (``@tool``) or with options.

    The JSON Schema comes from the type hints, the descriptions from the Google-style
    docstring (summary, then ``Args:``). A parameter annotated :class:`ToolContext`
    receives the call's context instead of a model argument.

    Example::

        @tool(safe_to_repeat=True)
        async def weather(city: str, unit: Literal["C", "F"] = "C") -> str:
            \"\"\"Current weather for a city.

            Args:
                city: City name, e.g. "Paris".
                unit: Temperature unit.
            \"\"\"
    """

    def build(f: Callable[..., Any]) -> Tool:
        return make_tool(f, name=name, description=description, safe_to_repeat=safe_to_repeat,
                         timeout=timeout, max_output_chars=max_output_chars,
                         requires_approval=requires_approval,
                         approval_expires=approval_expires)

    return build(fn) if fn is not None else build
