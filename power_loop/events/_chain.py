"""Running the configured hooks at each point, and holding them to their contract.

Whatever a hook raises (any exception, a cancellation of its own, an exception group)
becomes a :class:`~power_loop.errors.HookError` chained to it, and so does a return
value its point cannot use. Only the cancellation of the send itself and a process exit
pass through untouched. What a hook returns is checked and normalized like what a model
or a tool returns, so nothing a hook does can be stored half-formed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from power_loop.context.fold import FoldJob, FoldOutcome, FoldStrategy, SendCost
from power_loop.context.outcome import fold_error
from power_loop.errors import (
    FoldError,
    FoldVetoedError,
    HookError,
    InvalidArgumentError,
    LLMResponseError,
    SendVetoedError,
)
from power_loop.events.hooks import HOOK_POINTS, Hooks, Reply, SendContext, Veto
from power_loop.events.types import ToolCallFinished
from power_loop.llm.contract import checked_answer, describe, is_process_exit, storable
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart
from power_loop.llm.service import LLMRequest, LLMResponse
from power_loop.tools.context import ToolContext
from power_loop.tools.rendering import clean, truncate

if TYPE_CHECKING:
    from power_loop.loop.results import SendResult

RunTool = Callable[[ToolCallPart], Awaitable[Message]]
Stream = Callable[[LLMRequest], Awaitable[LLMResponse]]
Report = Callable[..., None]


def check_hooks(hooks: object) -> tuple[Any, ...]:
    """The configured hooks as a tuple, or raise InvalidArgumentError (nothing runs yet)."""
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Sequence):
        raise InvalidArgumentError(f"AgentLoopConfig.hooks must be a list of hooks, not "
                                   f"{type(hooks).__name__}")
    for index, hook in enumerate(hooks):
        found = [p for p in HOOK_POINTS if getattr(hook, p, None) is not None]
        if not found:
            raise InvalidArgumentError(
                f"AgentLoopConfig.hooks[{index}] ({type(hook).__name__}) has none of the hook "
                f"methods ({', '.join(HOOK_POINTS)}): subclass power_loop.Hooks")
        for point in found:
            if not inspect.iscoroutinefunction(getattr(hook, point)):
                raise InvalidArgumentError(
                    f"AgentLoopConfig.hooks[{index}].{point} must be an `async def` method")
    return tuple(hooks)


def _overrides(hook: object, point: str) -> bool:
    """Whether ``hook`` does something at ``point`` (a no-op from Hooks is skipped)."""
    if getattr(hook, point, None) is None:
        return False
    return getattr(type(hook), point, None) is not getattr(Hooks, point)


class HookChain:
    """The hooks of one loop, point by point, in their declared order."""

    def __init__(self, hooks: Sequence[object]) -> None:
        self._at: dict[str, tuple[object, ...]] = {
            point: tuple(h for h in hooks if _overrides(h, point)) for point in HOOK_POINTS}

    @classmethod
    def of(cls, hooks: Sequence[object]) -> HookChain | None:
        """The chain, or ``None`` when no hook does anything (the loop then skips it all)."""
        chain = cls(hooks)
        return chain if any(chain._at.values()) else None

    def at(self, point: str) -> bool:
        return bool(self._at[point])

    async def _call(self, hook: object, point: str, *args: Any) -> Any:
        try:
            return await getattr(hook, point)(*args)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the send is being stopped
            raise _failed(hook, point, exc) from exc
        except BaseException as exc:
            if is_process_exit(exc):
                raise
            raise _failed(hook, point, exc) from exc

    # -- send --------------------------------------------------------------------------

    async def send_start(self, ctx: SendContext, text: str) -> tuple[str, str | None]:
        """The user's text as the hooks leave it, and a hook's reply (or ``None``)."""
        for hook in self._at["on_send_start"]:
            got = await self._call(hook, "on_send_start", ctx, text)
            if got is None:
                continue
            if isinstance(got, Veto):
                reason = _reason(got, hook, "on_send_start")
                raise SendVetoedError(
                    f"{type(hook).__name__}.on_send_start vetoed the send to session "
                    f"{ctx.session_id!r}: {reason}. Nothing was stored",
                    reason=reason, session_id=ctx.session_id)
            if isinstance(got, Reply):
                if not isinstance(got.text, str):
                    raise _wrong(hook, "on_send_start", "a Reply whose text is not a str")
                return text, storable(got.text)
            if not isinstance(got, str):
                raise _wrong(hook, "on_send_start", _kind(got))
            text = storable(got)
        return text, None

    async def send_end(self, ctx: SendContext, result: SendResult) -> None:
        for hook in self._at["on_send_end"]:
            try:
                await self._call(hook, "on_send_end", ctx, result)
            except HookError as exc:
                exc.result = result
                raise

    # -- model call --------------------------------------------------------------------

    async def model_call(self, ctx: SendContext, request: LLMRequest,
                         stream: Stream) -> LLMResponse | Veto:
        """Run the model call (or not) through the hooks: the answer to store, or a veto."""
        response: LLMResponse | None = None
        for hook in self._at["on_model_request"]:
            got = await self._call(hook, "on_model_request", ctx, request)
            if got is None:
                continue
            if isinstance(got, Veto):
                return Veto(_reason(got, hook, "on_model_request"))
            if isinstance(got, LLMResponse):
                response = _answer(got, hook, "on_model_request", "short_circuit")
                break
            if not isinstance(got, LLMRequest) or not all(
                    isinstance(m, Message) for m in got.messages):
                raise _wrong(hook, "on_model_request", _kind(got))
            request = got
        if response is None:
            response = await stream(request)
        for hook in self._at["on_model_response"]:
            got = await self._call(hook, "on_model_response", ctx, request, response)
            if got is None or got is response:
                continue
            if not isinstance(got, LLMResponse):
                raise _wrong(hook, "on_model_response", _kind(got))
            response = _answer(got, hook, "on_model_response", "changed")
        return response

    # -- tool call ---------------------------------------------------------------------

    async def tool_call(self, ctx: ToolContext, call: ToolCallPart, run: RunTool,
                        report: Report, max_chars: int) -> Message:
        """One tool call through the hooks: the result message to store."""
        meta: dict[str, Any] = {}
        result: ToolResultPart | None = None
        effective = call
        for hook in self._at["on_tool_start"]:
            got = await self._call(hook, "on_tool_start", ctx, effective)
            if got is None:
                continue
            if isinstance(got, Veto):
                reason = _reason(got, hook, "on_tool_start")
                result = ToolResultPart(call.id, call.name, truncate(clean(reason), max_chars),
                                        True)
                meta["hook"] = "vetoed"
                break
            if isinstance(got, ToolResultPart):
                result = _result(got, call, hook, "on_tool_start", max_chars)
                meta["hook"] = "short_circuit"
                break
            if (not isinstance(got, ToolCallPart) or got.id != call.id
                    or got.name != call.name or not isinstance(got.arguments, str)):
                raise _wrong(hook, "on_tool_start", _kind(got) + " (a ToolCallPart must keep "
                             "the call's id and name: only its arguments may change)")
            effective = ToolCallPart(call.id, call.name, storable(got.arguments))
        if result is None:
            message = await run(effective)
            result = message.tool_results[0]
            meta.update(message.meta)
            if effective.arguments != call.arguments:
                meta["arguments"] = effective.arguments
        else:
            report(ToolCallFinished, call_id=call.id, name=call.name, output=result.content,
                   is_error=result.is_error, duration=0.0, synthetic=meta["hook"])
        for hook in self._at["on_tool_end"]:
            got = await self._call(hook, "on_tool_end", ctx, effective, result)
            if got is None or got is result:
                continue
            result = _result(got, call, hook, "on_tool_end", max_chars)
            meta.setdefault("hook", "changed")
        return Message.tool_result(result, **meta)

    # -- fold --------------------------------------------------------------------------

    def fold_strategy(self, inner: FoldStrategy | None) -> FoldStrategy | None:
        """``inner`` with the fold hooks around it (``inner`` itself when there are none)."""
        if inner is None or not (self.at("on_fold_start") or self.at("on_fold_end")):
            return inner
        return HookedFold(inner, self)

    async def fold(self, job: FoldJob, inner: FoldStrategy) -> FoldOutcome:
        outcome: FoldOutcome | None = None
        for hook in self._at["on_fold_start"]:
            got = await self._call(hook, "on_fold_start", job)
            if got is None:
                continue
            if isinstance(got, Veto):
                raise FoldVetoedError(f"{type(hook).__name__}.on_fold_start vetoed fold "
                                      f"#{job.fold_index}: {_reason(got, hook, 'on_fold_start')}")
            outcome = _fold_outcome(got, hook, "on_fold_start")
            break
        if outcome is None:
            name = type(inner).__name__
            try:
                outcome = await inner.fold(job)
            except Exception as exc:
                raise fold_error(exc, inner) from exc  # named after the strategy, not us
            if not isinstance(outcome, FoldOutcome):
                raise FoldError(f"{name}.fold returned a {type(outcome).__name__}, not a "
                                "FoldOutcome")
        for hook in self._at["on_fold_end"]:
            got = await self._call(hook, "on_fold_end", job, outcome)
            if got is None:
                continue
            outcome = _fold_outcome(got, hook, "on_fold_end")
        return outcome


class HookedFold:
    """A fold strategy with the fold hooks around its ``fold`` (name and choice are its own)."""

    def __init__(self, inner: FoldStrategy, chain: HookChain) -> None:
        self.inner = inner
        self._chain = chain

    def __repr__(self) -> str:
        return repr(self.inner)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_summary_tokens(self) -> int:
        value = getattr(self.inner, "max_summary_tokens", 0)
        return value if isinstance(value, int) else 0

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        return self.inner.choose(sends, budget_tokens)

    async def fold(self, job: FoldJob) -> FoldOutcome:
        return await self._chain.fold(job, self.inner)


# -- checking what hooks return ---------------------------------------------------------


def _failed(hook: object, point: str, exc: BaseException) -> HookError:
    return HookError(f"{type(hook).__name__}.{point} raised {describe(exc)}. The send is left "
                     "pending (resume it once the hook is fixed) unless it had finished",
                     hook=type(hook).__name__, point=point)


def _wrong(hook: object, point: str, what: str) -> HookError:
    return HookError(f"{type(hook).__name__}.{point} returned {what}, which {point} cannot "
                     "return (see power_loop.Hooks). The send is left pending: fix the hook "
                     "and resume it", hook=type(hook).__name__, point=point)


def _kind(value: object) -> str:
    return f"a {type(value).__name__}"


def _reason(veto: Veto, hook: object, point: str) -> str:
    if not isinstance(veto.reason, str):
        raise _wrong(hook, point, "a Veto whose reason is not a str")
    return storable(veto.reason)


def _answer(response: LLMResponse, hook: object, point: str, mark: str) -> LLMResponse:
    """A hook's answer checked as a model's is; marked in ``meta`` as the hook's."""
    try:
        checked = checked_answer(response, hook)
    except LLMResponseError as exc:
        raise _wrong(hook, point, f"an LLMResponse that cannot be stored ({exc.message})"
                     ) from exc
    message = checked.message
    marked = Message(message.role, message.parts,
                     MappingProxyType({**message.meta, "hook": mark}))
    return LLMResponse(marked, checked.usage, checked.stop_reason, checked.model)


def _fold_outcome(got: object, hook: object, point: str) -> FoldOutcome:
    """A hook's fold outcome, of the right shape (the engine checks the rest, as a strategy's)."""
    if not isinstance(got, FoldOutcome):
        raise _wrong(hook, point, _kind(got))
    if not isinstance(got.summary, str) or not isinstance(got.note_ops, (list, tuple)):
        raise _wrong(hook, point, "a FoldOutcome whose summary is not a str or note_ops "
                     "not a list")
    return got


def _result(got: object, call: ToolCallPart, hook: object, point: str,
            max_chars: int) -> ToolResultPart:
    """A hook's tool result, for ``call``, bounded like a tool's own."""
    if (not isinstance(got, ToolResultPart) or not isinstance(got.content, str)
            or not isinstance(got.is_error, bool)):
        raise _wrong(hook, point, _kind(got) if not isinstance(got, ToolResultPart)
                     else "a ToolResultPart whose content is not a str or is_error not a bool")
    return ToolResultPart(call.id, call.name, truncate(clean(got.content), max_chars),
                          got.is_error)
