"""The send state machine: one model round after another until the send is finished.

(The order of a send's writes, which every durability guarantee rests on, reads in
this one module; what it asks of the send's messages is in
:mod:`power_loop.loop.tail`.)

A run holds the session's lease and drives the send from whatever state the store says
it is in, so finishing a fresh send and resuming one left by a dead process are the same
code. At each step it looks at the send's persisted tail:

* tool calls without results -> run them, store each result as soon as it and the ones
  before it are done (results are stored in call order);
* a user message, or complete tool results -> call the model; store its answer before
  any tool runs (with the tool calls), or store it together with the send's end (and the
  lease's release) when it is final;
* an answer cut by the output limit, or left partial by a failed stream -> ask the model
  to continue it.

Writes are fenced by the lease epoch and extend the lease; a
:class:`~power_loop.loop.lease_keeper.LeaseKeeper` renews it during long model calls and
tools, and cancels the run if the lease is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from power_loop._faults import checkpoint
from power_loop.context.active import ACTIVE_RUN, ActiveRun
from power_loop.context.engine import ContextEngine, History
from power_loop.errors import LeaseLostError, PowerLoopError, StructuredOutputError
from power_loop.events._chain import HookChain
from power_loop.events.hooks import SendContext, Veto
from power_loop.events.types import (
    Event,
    RoundFinished,
    RoundStarted,
    SendFinished,
    TextChunk,
    ToolCallFinished,
    ToolCallStarted,
    ToolListChanged,
    UsageUpdated,
)
from power_loop.llm.contract import (
    HookFailed,
    as_power_loop_error,
    call_id_is_usable,
    check_item,
    checked_answer,
    close_quietly,
    exception_code,
    exception_text,
    fresh_call_id,
    is_process_exit,
    protocol_error,
    service_name,
    storable,
)
from power_loop.llm.messages import (
    Message,
    TextPart,
    ToolCallPart,
)
from power_loop.llm.service import LLMRequest, LLMResponse, LLMService, StopReason, TextDelta
from power_loop.loop.accounting import send_accounts, send_usage
from power_loop.loop.awaiting import finished_waits, hold
from power_loop.loop.config import AgentLoopConfig
from power_loop.loop.lease_keeper import LeaseKeeper
from power_loop.loop.results import SendResult
from power_loop.loop.structured import parse_output
from power_loop.loop.tail import encode, final_text, open_call_parts, synthetic_result, was_cut
from power_loop.loop.window import Window, load_window
from power_loop.store.records import Lease
from power_loop.store.store import Store
from power_loop.tools.context import ToolContext
from power_loop.tools.registry import ToolLimits, ToolRegistry

Emit = Callable[[Event], None]

CANCEL_MEANS_RELEASE: ContextVar[bool] = ContextVar("power_loop_cancel_means_release",
                                                    default=False)
"""Set in a task whose cancellation should hand its send over rather than end it.

Workers set it: when a worker shuts down, a send it was running stays pending and its
lease is released, so another worker resumes it. Elsewhere a cancelled send is closed
as ``cancelled`` with its partial answer kept.
"""

CONTINUE_TEXT = ("[power_loop] Your previous answer was cut off. Continue exactly where it "
                 "stopped, without repeating anything.")
FINAL_ROUND_TEXT = ("[power_loop] The tool-call limit for this request is reached. Answer now "
                    "with what you have, without calling tools.")
NO_FINAL_TEXT = ("[power_loop] The model kept calling tools after the round limit and gave no "
                 "answer.")
UNKNOWN_OUTCOME = ("The outcome of this call is unknown: the process running it stopped before "
                   "its result was recorded. It may or may not have taken effect; check before "
                   "calling it again.")
CANCELLED_RESULT = "The call was cancelled before it finished; its outcome is unknown."


@dataclass(frozen=True, slots=True)
class RunDeps:
    """What a run needs from its loop."""

    store: Store
    llm: LLMService
    tools: ToolRegistry
    config: AgentLoopConfig
    limits: ToolLimits
    engine: ContextEngine
    hooks: HookChain | None = None


def _in_final_write() -> None:
    checkpoint("in_final_write")


class SendRun:
    """One send being driven while its session's lease is held."""

    def __init__(self, deps: RunDeps, *, session_id: str, lease: Lease, send_index: int,
                 history: History, window: Window, system: str | None, emit: Emit | None,
                 source: str = "user",
                 metadata: Mapping[str, Any] = MappingProxyType({}),
                 output_schema: Mapping[str, Any] | None = None) -> None:
        self._deps = deps
        self.session_id = session_id
        self.lease = lease
        self.send_index = send_index
        self.history = history
        self.first_seq = window.next_seq - len(window.messages)
        self.window = window
        self._prefix = history.prefix()  # fixed for the send once folds are done
        self._memory_text: str | None = None
        self._context: Message | None = None  # notes and memory: set by _prepare_context
        self._system = system
        self._emit = emit
        self.source = source
        self._metadata = metadata
        self._output_schema = (output_schema if output_schema is not None
                               else deps.config.output_schema)
        self._hooks = deps.hooks
        self._fresh_calls: set[str] = set()
        self.decided: dict[str, Message] = {}
        """Results of calls a person decided (see :mod:`power_loop.loop.awaiting`)."""
        self.started_waits: dict[str, str] = {}
        """Call id -> wait id of the approved and held calls that run (to mark ``done``)."""
        self._done_results: dict[str, Message] = {}
        self._result_meta: dict[str, dict[str, Any]] = {}  # filled by tools (ActiveRun)
        self._partial: list[str] = []
        self._lease_lost = False
        # Held by the renewer while it renews and by the writes that release the lease,
        # so a renewal never overlaps the end of the run.
        self._lease_lock = asyncio.Lock()
        self._stopped = False
        self.settled = False
        """True once the run has written its last word (finished or paused)."""
        self.cache_key: tuple[object, ...] | None = None
        """Where the loop keeps the session's history once the run ends."""

    # -- state derived from the log ----------------------------------------------------

    def _tail(self) -> list[Message]:
        return self.window.messages

    def _event(self, kind: type[Event], **fields: object) -> None:
        if self._emit is not None:
            self._emit(kind(session_id=self.session_id, send_index=self.send_index,
                            **fields))  # type: ignore[arg-type]

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> SendResult:
        main = asyncio.current_task()
        assert main is not None
        self._main = main
        self._keeper = LeaseKeeper(self._renew, self._deps.config.lease_ttl / 3,
                                   on_lost=self._lost, lock=self._lease_lock,
                                   active=lambda: not self._stopped)
        try:
            await self._refresh_tools()
            await self._prepare_context()
            return await self._drive()
        except asyncio.CancelledError:
            if self._lease_lost and not self.settled:
                main.uncancel()
                raise LeaseLostError(
                    f"lost the lease on session {self.session_id!r} during send "
                    f"#{self.send_index}; another process took it over",
                    session_id=self.session_id, epoch=self.lease.epoch) from None
            if not self.settled:
                if CANCEL_MEANS_RELEASE.get():
                    await asyncio.shield(self._release_quietly())
                else:
                    await asyncio.shield(self._close_cancelled())
            raise
        except LeaseLostError:
            raise
        except BaseException:
            if not self.settled:
                # Leave the send pending for resume(), but let others in right away.
                await asyncio.shield(self._release_quietly())
            raise
        finally:
            self._stopped = True
            await self._keeper.aclose()

    async def _refresh_tools(self) -> None:
        """Bring the tool sources' tools (MCP servers') up to date for this send."""
        if not self._deps.tools.sources:
            return
        for source, change in await self._deps.tools.refresh():
            self._event(ToolListChanged, source=source, added=change.added,
                        removed=change.removed, changed=change.changed)

    async def _prepare_context(self) -> None:
        """Fold older history if over budget (the lease is renewed meanwhile), recall memory."""
        engine, deps = self._deps.engine, self._deps
        if engine.fold_strategy is not None:
            self.history = await engine.fold_if_needed(
                deps.store, self.history, lease=self.lease, llm=deps.llm, system=self._system,
                tools=deps.tools.specs(), tail=self.window.messages, send_index=self.send_index,
                emit=self._emit)
            self._prefix = self.history.prefix()
        if engine.memory is not None:
            asked = next((m.text for m in self.window.messages if m.role == "user"), "")
            self._memory_text = await engine.recall_memory(self.session_id, asked)
        self._context = engine.context_message(self.history, self._memory_text)

    async def _drive(self) -> SendResult:
        config = self._deps.config
        while True:
            if self.window.open_calls:
                waiting = await hold(self, open_call_parts(self.window))
                if waiting is not None:
                    return waiting
                await self._run_tools()
                continue
            tail = self._tail()
            last = tail[-1]
            extra: list[Message] = []
            if last.role == "assistant":
                cuts = sum(1 for m in tail if was_cut(m))
                failed = bool(last.meta.get("partial"))  # a failed stream: always go on
                if not failed and (not was_cut(last) or cuts > config.max_continuations):
                    stop = str(last.meta.get("stop_reason", StopReason.END_TURN.value))
                    return await self._finish([], stop)
                extra.append(Message.user(CONTINUE_TEXT, synthetic="continue"))
            result = await self._call_model(extra)
            if result is not None:
                return result

    # -- model calls -------------------------------------------------------------------

    async def _call_model(self, extra: list[Message]) -> SendResult | None:
        config, tail = self._deps.config, self._tail()
        rounds = sum(1 for m in tail if m.role == "assistant")
        emit = self._emit
        # What the send spent so far: for its token budget and the UsageUpdated event.
        spent = (send_usage(tail) if config.max_send_tokens is not None or emit is not None
                 else None)
        if (config.max_send_tokens is not None and spent is not None
                and spent.total_tokens >= config.max_send_tokens):
            return await self._finish([], "token_budget")
        if rounds > config.max_rounds:
            return await self._finish([], "max_rounds")
        final_round = rounds == config.max_rounds
        if final_round:
            extra.append(Message.user(FINAL_ROUND_TEXT, synthetic="final_round"))
        self.window.check_request(extra)
        context = (self._context,) if self._context is not None else ()
        rest = (*context, *self.window.messages, *extra)
        tools = self._deps.tools.specs()
        request = LLMRequest(
            messages=(*self._prefix, *rest), system=self._system,
            tools=tools, tool_choice="none" if final_round else "auto",
            max_output_tokens=config.max_output_tokens, output_schema=self._output_schema,
            cache_prefix=len(self._prefix),
            metadata={"session_id": self.session_id, "send_index": self.send_index})
        estimate = (self._deps.engine.estimate(self.history, self._system, tools, rest)
                    if self._deps.engine.budget_tokens is not None else None)
        if emit is not None:
            self._event(RoundStarted, round=rounds + 1, model=self._deps.llm.model,
                        provider=service_name(self._deps.llm))
        response = (await self._stream(request) if self._hooks is None else
                    await self._hooks.model_call(self._hook_context(), request, self._stream))
        if isinstance(response, Veto):  # a hook's veto: its reason is the send's answer
            vetoed = Message.assistant(response.reason, synthetic="vetoed")
            return await self._finish([*extra, vetoed], "vetoed")
        checkpoint("after_model_answer")
        message = self._annotate(response, final_round, estimate)
        if spent is not None:
            self._event(UsageUpdated, usage=response.usage, total=spent + response.usage)
        stop = "max_rounds" if final_round else response.stop_reason.value
        if message.tool_calls:
            await self._append([*extra, message])
            self._fresh_calls.update(c.id for c in message.tool_calls)
            checkpoint("after_assistant_saved")
            self._event(RoundFinished, round=rounds + 1, stop_reason=stop,
                        tool_calls=len(message.tool_calls))
            return None
        self._event(RoundFinished, round=rounds + 1, stop_reason=stop, tool_calls=0)
        if (was_cut(message)
                and sum(1 for m in (*tail, message) if was_cut(m)) <= config.max_continuations):
            await self._append([*extra, message])
            return None
        return await self._finish([*extra, message], stop)

    async def _stream(self, request: LLMRequest) -> LLMResponse:
        """The model's answer, checked; any failure pauses the send and raises typed."""
        self._partial = []
        llm = self._deps.llm
        response: LLMResponse | None = None
        stream: object = None
        try:
            stream = llm.stream(request)
            async for raw in stream:
                item = check_item(raw, llm)
                if response is not None:
                    raise protocol_error(llm, "it yielded more after its LLMResponse")
                if isinstance(item, TextDelta):
                    self._partial.append(storable(item.text))
                    try:
                        self._event(TextChunk, text=item.text)
                    except BaseException as exc:
                        raise HookFailed(exc) from exc
                elif isinstance(item, LLMResponse):
                    response = item
            if response is None:
                raise protocol_error(llm, "it ended without an LLMResponse")
            response = checked_answer(response, llm)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the send is being stopped
            # A cancellation the service met on its own: a failure like any other.
            await self._fail_model_call(stream, exc)
        except HookFailed as failed:  # the caller's event hook, not the service
            await self._fail_model_call(stream, failed.original, wrap=False)
        except BaseException as exc:
            if is_process_exit(exc):
                raise
            await self._fail_model_call(stream, exc)
        # The whole answer is kept until it is stored: a cancellation before then keeps
        # it as a partial answer rather than losing what the caller already saw.
        self._partial = [response.message.text]
        return response

    async def _fail_model_call(self, stream: object, exc: BaseException, *,
                               wrap: bool = True) -> NoReturn:
        """Close the service's stream, pause the send, raise the failure (as ours)."""
        error = as_power_loop_error(exc, self._deps.llm) if wrap else exc
        await close_quietly(stream)
        await self._pause(error)
        if error is exc:
            raise error
        raise error from exc

    def _annotate(self, response: LLMResponse, final_round: bool,
                  estimate: int | None) -> Message:
        """The answer as stored: usage and stop reason in meta, call ids made unique."""
        message = response.message  # checked by _stream
        meta = {**message.meta, "stop_reason": response.stop_reason.value,
                "usage": response.usage.to_json()}
        if estimate is not None:
            meta["input_estimate"] = estimate  # calibrates later estimates against usage
        if response.model:
            meta["model"] = response.model
        calls = message.tool_calls
        if not calls:  # nothing to drop or to make unique
            return Message("assistant", tuple(message.parts), MappingProxyType(meta))
        parts = list(message.parts)
        if final_round:
            meta["dropped_tool_calls"] = len(calls)
            parts = [p for p in parts if not isinstance(p, ToolCallPart)]
            if not any(isinstance(p, TextPart) and p.text for p in parts):
                parts, meta["synthetic"] = [TextPart(NO_FINAL_TEXT)], "no_final_text"
        taken = set(self.window.open_calls)
        for i, part in enumerate(parts):
            if isinstance(part, ToolCallPart):
                if (not call_id_is_usable(part.id) or part.id in taken
                        or self.window.uses_call_id(part.id)):
                    fresh = fresh_call_id(f"pl_{self.window.next_seq}_{i}", taken,
                                          self.window.uses_call_id)
                    part = parts[i] = ToolCallPart(fresh, part.name, part.arguments)
                taken.add(part.id)
        return Message("assistant", tuple(parts), MappingProxyType(meta))

    # -- tools -------------------------------------------------------------------------

    async def _run_tools(self) -> None:
        token = ACTIVE_RUN.set(ActiveRun(self._deps.store, self.session_id, self.send_index,
                                         self.lease.epoch, self._apply_note, self._emit,
                                         self._result_meta))
        try:
            await self._run_tool_calls()
        finally:
            ACTIVE_RUN.reset(token)

    async def _apply_note(self, op: Mapping[str, Any]) -> Mapping[str, Any]:
        """A note tool's write: fenced by this send's lease, shown from the next request."""
        store, limits = self._deps.store, self._deps.config.notes
        applied = await store.apply_note(self.session_id, op, epoch=self.lease.epoch,
                                         max_notes=limits.max_notes if limits else None)
        self.history.notes = await store.list_notes(self.session_id)
        self._context = self._deps.engine.context_message(self.history, self._memory_text)
        return applied

    async def _run_tool_calls(self) -> None:
        calls = open_call_parts(self.window)
        semaphore = asyncio.Semaphore(self._deps.config.max_parallel_tools)

        async def one(call: ToolCallPart) -> Message:
            if call.id in self.decided:  # a person rejected or answered it
                return self.decided[call.id]
            message = await (run_one(call) if self._hooks is None else self._hooks.tool_call(
                self._tool_context(call), call, run_one, self._event,
                self._deps.limits.max_output_chars))
            self._done_results[call.id] = message
            return message

        async def run_one(call: ToolCallPart) -> Message:
            fresh = call.id in self._fresh_calls
            found = self._deps.tools.get(call.name)
            if not fresh and found is not None and not found.safe_to_repeat:
                self._event(ToolCallFinished, call_id=call.id, name=call.name,
                            output=UNKNOWN_OUTCOME, is_error=True, duration=0.0,
                            synthetic="unknown_outcome")
                return synthetic_result(call, UNKNOWN_OUTCOME, "unknown_outcome")
            attempt = 1 if fresh else 2
            async with semaphore:
                self._event(ToolCallStarted, call_id=call.id, name=call.name,
                            arguments=call.arguments, attempt=attempt)
                started = time.monotonic()
                context = self._tool_context(call)
                outcome = await self._deps.tools.run(call, context, self._deps.limits)
                result = outcome.result
                checkpoint("after_tool_ran")
                self._event(ToolCallFinished, call_id=call.id, name=call.name,
                            output=result.content, is_error=result.is_error,
                            duration=time.monotonic() - started,
                            error_type=outcome.error_type, traceback=outcome.traceback)
            return Message.tool_result(result, **self._result_meta.pop(call.id, {}))

        if len(calls) == 1:
            await self._append([await one(calls[0])])
            checkpoint("after_results_saved")
            return
        tasks = [asyncio.create_task(one(call)) for call in calls]
        position = {task: i for i, task in enumerate(tasks)}
        finished: dict[int, Message] = {}
        next_index = 0
        try:
            waiting = set(tasks)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    finished[position[task]] = task.result()
                batch = []
                while next_index in finished:
                    batch.append(finished.pop(next_index))
                    next_index += 1
                if batch:
                    await self._append(batch)
            checkpoint("after_results_saved")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _hook_context(self) -> SendContext:
        return SendContext(self.session_id, self.send_index, self.source, self._metadata)

    def _tool_context(self, call: ToolCallPart) -> ToolContext:
        return ToolContext(
            session_id=self.session_id, send_index=self.send_index, call_id=call.id,
            tool_name=call.name, attempt=1 if call.id in self._fresh_calls else 2,
            idempotency_key=ToolContext.key_for(self.session_id, self.send_index, call.id),
            session_metadata=self._metadata)

    # -- writes ------------------------------------------------------------------------

    async def _append(self, messages: list[Message]) -> None:
        # Conditional on the seq the window expects: a commit that fails without an
        # answer is then settled by reading, never replayed (store/settle.py).
        await self._deps.store.append_messages(
            self.session_id, encode(messages, self.send_index), epoch=self.lease.epoch,
            extend_lease=self._deps.config.lease_ttl, expect_seq=self.window.next_seq,
            finish_waits=finished_waits(self, messages))
        self.window.extend(messages)
        self._partial = []

    async def _finish(self, messages: list[Message], stop_reason: str,
                      status: str = "done") -> SendResult:
        tail = [*self._tail(), *messages]
        usage, children, stored_usage = send_accounts(tail)
        rounds = sum(1 for m in tail if m.role == "assistant")
        store = self._deps.store

        projections = self._deps.engine.projection_rows(self.history, self.send_index, tail)
        async with self._lease_lock:
            self._stopped = True
            await store.close_send(
                self.session_id, self.send_index, encode(messages, self.send_index),
                lease=self.lease, status=status, stop_reason=stop_reason, rounds=rounds,
                usage=stored_usage, projections=projections,
                before_commit=_in_final_write, finish_waits=finished_waits(self, messages))
            self.settled = True
        self.window.extend(messages)
        # The next send of this session starts from here without reading anything back.
        self._deps.engine.add_finished(self.history, self.send_index, self.first_seq,
                                       self.window.messages, self.window.next_seq)
        text = final_text(tail)
        result = SendResult(self.session_id, self.send_index, text, usage, rounds,
                            stop_reason, status, tuple(tail),
                            children_usage=children)
        if self._hooks is not None and status == "done":
            await self._hooks.send_end(self._hook_context(), result)
        if self._output_schema is not None and status == "done":
            output, problem = parse_output(text, self._output_schema)
            if problem is not None:
                raise StructuredOutputError(
                    f"send #{self.send_index} of session {self.session_id!r}: {problem}",
                    text=text, problem=problem, result=result)
            result = dataclasses.replace(result, output=output)
        self._event(SendFinished, result=result)
        return result

    async def _pause(self, exc: BaseException) -> None:
        """The model failed: keep any partial answer, leave the send pending, let go."""
        text = "".join(self._partial)
        messages = [Message.assistant(text, partial="stream_error")] if text else []
        error = {"type": type(exc).__name__, "code": exception_code(exc),
                 "message": storable(exception_text(exc, 2000))}
        async with self._lease_lock:
            self._stopped = True
            await self._deps.store.pause_send(self.session_id, self.send_index,
                                              encode(messages, self.send_index),
                                              lease=self.lease, error=error)
            self.settled = True
        self.window.extend(messages)

    async def _close_cancelled(self) -> None:
        """Cancelled: keep the partial answer (marked), answer open calls, end the send."""
        store = self._deps.store
        # A write interrupted by the cancellation may or may not have committed: start
        # again from what the store holds.
        session = await store.get_session(self.session_id)
        if session.pending_send != self.send_index or session.lease_epoch != self.lease.epoch:
            self.settled = True  # the final write committed; or the session is gone from us
            return
        self.window = await load_window(store, self.session_id, self.first_seq,
                                        session.next_seq, self.window.incarnation)
        messages: list[Message] = []
        text = "".join(self._partial)
        last = self.window.messages[-1]
        stored = last.role == "assistant" and last.text == text
        if text and not self.window.open_calls and not stored:
            messages.append(Message.assistant(text, partial="cancelled"))
        for call in open_call_parts(self.window):
            messages.append(self._done_results.get(call.id)
                            or synthetic_result(call, CANCELLED_RESULT, "cancelled"))
        await self._finish(messages, "cancelled", "cancelled")

    async def _release_quietly(self) -> None:
        try:
            await self._deps.store.release_lease(self.lease)
        except PowerLoopError:
            pass

    async def _renew(self) -> bool:
        """Renew the lease once (see :class:`LeaseKeeper`); ``False`` once it is lost."""
        try:
            self.lease = await self._deps.store.renew_lease(self.lease,
                                                            ttl=self._deps.config.lease_ttl)
        except LeaseLostError:
            return False
        return True

    def _lost(self) -> None:
        self._lease_lost = True
        self._main.cancel()
