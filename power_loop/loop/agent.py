"""``StatefulAgentLoop``: a thin handle that rebuilds every send from the store.

It holds no authoritative state. Build one per request in a web handler, or keep one
for the life of a worker: either way, a process that has only the DSN and a session id
continues the conversation exactly where any other process left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from power_loop._faults import checkpoint
from power_loop.approvals.methods import ApprovalMethods
from power_loop.context.engine import ContextEngine, History
from power_loop.context.notes import NoteLimits, note_tools
from power_loop.context.recall import recall_tools
from power_loop.errors import HistoryInvariantError, InvalidArgumentError, SendPendingError
from power_loop.events._chain import HookChain
from power_loop.events.hooks import SendContext
from power_loop.events.sinks import sink_feed
from power_loop.events.types import Event, SendFailed, SendFinished, SendStarted
from power_loop.llm.contract import exception_code, exception_text
from power_loop.llm.messages import Message, Usage, decode_message
from power_loop.llm.service import LLMService
from power_loop.loop.config import AgentLoopConfig
from power_loop.loop.delegation import Delegate, DelegationMethods
from power_loop.loop.driver import Emit, RunDeps, SendRun
from power_loop.loop.observing import ObservingMethods
from power_loop.loop.recovery import RecoveryMethods
from power_loop.loop.results import HistoryItem, SendResult
from power_loop.loop.structured import validator_for
from power_loop.loop.tail import encode, final_text
from power_loop.loop.timing import TimerMethods
from power_loop.loop.waiting import wait_for_lease
from power_loop.loop.window import Window
from power_loop.loop.workflowing import WorkflowMethods
from power_loop.store.migrations import SchemaPolicy
from power_loop.store.records import Lease, SendRecord
from power_loop.store.shared import DEFAULT_GRACE, acquire_store, check_grace, release_store
from power_loop.store.store import Store
from power_loop.timers.tools import TimerLimits, timer_tools
from power_loop.tools.registry import ToolLimits, ToolRegistry
from power_loop.tools.sources import ToolSource
from power_loop.tools.tool import Tool

T = TypeVar("T")
_HOST = socket.gethostname()
_DONE = object()
_ME = [f"{_HOST}:{os.getpid()}:"]
"""The start of this process's lease owners (a forked child makes its own)."""
if hasattr(os, "register_at_fork"):  # pragma: no branch - no fork, no other pid
    os.register_at_fork(after_in_child=lambda: _ME.__setitem__(0, f"{_HOST}:{os.getpid()}:"))


@functools.lru_cache(maxsize=64)
def _built_in_tools(notes: NoteLimits | None, recall_chars: int | None,
                    timers: TimerLimits | None) -> tuple[Tool, ...]:
    """The built-in tools a config asks for, built once per process (building a tool
    costs about a millisecond: a loop per request must not pay it)."""
    built: list[Tool] = []
    if notes is not None:
        built.extend(note_tools(notes))
    if recall_chars is not None:
        built.extend(recall_tools(recall_chars))
    if timers is not None:
        built.extend(timer_tools(timers))
    return tuple(built)


def _failure(exc: BaseException) -> dict[str, str]:
    """The fields of the ``SendFailed`` event of a send that raised ``exc``."""
    cls = type(exc)
    code = "cancelled" if isinstance(exc, asyncio.CancelledError) else exception_code(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" \
        else f"{cls.__module__}.{cls.__qualname__}"
    return {"code": code or "unexpected", "error_type": name,
            "message": exception_text(exc, 2000)}


def _joined(first: Emit, second: Emit) -> Emit:
    def both(event: Event) -> None:
        first(event)
        second(event)

    return both


class StatefulAgentLoop(RecoveryMethods, ApprovalMethods, TimerMethods, DelegationMethods,
                        ObservingMethods, WorkflowMethods):
    """Runs agent sends durably against a store.

    Args:
        llm: The model (any :class:`~power_loop.LLMService`; ``ScriptedLLM`` offline).
        dsn: Where the store is. Loops of one process naming the same DSN (and table
            prefix and schema policy) in one event loop share one store, opened by the
            first and kept open ``store_grace`` seconds after :meth:`aclose` of the
            last (so a loop per request reuses it); the schema is checked once per
            process. A web app may instead open a store at start-up and pass it.
        store: An open store to use instead (the caller closes it).
        config: Limits and policies.
        tools: A :class:`ToolRegistry`, or tools, functions and tool sources (MCP
            servers: :class:`~power_loop.MCPServer`) to put in one.
        table_prefix: With ``dsn``: the store's table prefix.
        schema: With ``dsn``: the schema policy.
        store_grace: With ``dsn``: seconds the shared store stays open, idle, after
            the last loop using it closes (default 30). A loop built within that time
            finds it open; after it, or when the event loop shuts down, it is closed.
            ``0`` closes it with the last loop.
        agents: Agents the model may hand tasks to (:class:`~power_loop.AgentSpec`);
            see docs/agents.md.

    Example::

        async with StatefulAgentLoop(llm=llm, dsn="app.db", tools=[add]) as loop:
            sid = await loop.new_session(system_prompt="Be brief.")
            result = await loop.send("What is 2 + 3?", session_id=sid)
            print(result.final_text)
    """

    def __init__(self, *, llm: LLMService, dsn: str | None = None, store: Store | None = None,
                 config: AgentLoopConfig | None = None,
                 tools: ToolRegistry | Iterable[Tool | ToolSource | Callable[..., Any]]
                 | None = None,
                 table_prefix: str = "pl_",
                 schema: SchemaPolicy = SchemaPolicy.AUTO_CREATE,
                 agents: Sequence[Delegate] | None = None,
                 store_grace: float = DEFAULT_GRACE) -> None:
        if (dsn is None) == (store is None):
            raise InvalidArgumentError("pass exactly one of dsn= or store=")
        self._grace = check_grace(store_grace)
        self._llm = llm
        self._dsn = dsn
        self._store = store
        self._owns_store = store is None
        self._table_prefix = table_prefix
        self._schema = schema
        self.config = config or AgentLoopConfig()
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools or ())
        cfg = self.config
        recall = cfg.fold_strategy is not None or cfg.representation.stores_projections
        for built_in in _built_in_tools(cfg.notes, cfg.recall_max_chars if recall else None,
                                        cfg.timers):
            self.tools.register(built_in)
        self._delegation = agents[0].delegation(agents, self) if agents else None
        for built_in in self._delegation.tools() if self._delegation else ():
            self.tools.register(built_in)
        self._hooks = HookChain.of(cfg.hooks)
        self._engine = ContextEngine(
            representation=cfg.representation,
            fold_strategy=(self._hooks.fold_strategy(cfg.fold_strategy) if self._hooks
                           else cfg.fold_strategy),
            budget_tokens=cfg.context_budget_tokens, counter=cfg.token_counter,
            notes=cfg.notes, memory=cfg.memory, memory_budget_tokens=cfg.memory_budget_tokens)
        self._opening: asyncio.Lock | None = None
        self._limits = ToolLimits(self.config.tool_timeout, self.config.max_tool_output_chars)
        self._feed = sink_feed(cfg.sinks)
        self._run_deps: RunDeps | None = None

    def __repr__(self) -> str:
        return f"StatefulAgentLoop(llm={self._llm.model!r}, store={self._store!r})"

    @property
    def llm(self) -> LLMService:
        """The model the loop calls."""
        return self._llm

    # -- lifecycle ---------------------------------------------------------------------

    async def _get_store(self) -> Store:
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                assert self._dsn is not None
                self._store = await acquire_store(self._dsn, table_prefix=self._table_prefix,
                                                  schema=self._schema)
        return self._store

    @property
    def store(self) -> Store:
        """The store (opened on first use, or by ``async with``)."""
        if self._store is None:
            raise InvalidArgumentError("the store is not open yet: use `async with loop` or "
                                       "await a loop method first")
        return self._store

    async def __aenter__(self) -> StatefulAgentLoop:
        await self._get_store()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop this loop's workflow executors (their leases released: another process
        resumes them at once), then release the store if this loop opened it from
        ``dsn=`` (after the last loop of the process on that DSN releases it, it closes
        once ``store_grace`` expires)."""
        await self._stop_workflows()
        if self._owns_store and self._store is not None:
            store, self._store = self._store, None
            await release_store(store, grace=self._grace)

    def _cache_key(self, session_id: str) -> tuple[object, ...] | None:
        """The session's key in the store's window cache (``None``: not cached), made
        once per send: the same for taking its history and putting it back."""
        if self.config.cache_sessions == 0:
            return None
        return (session_id, *self._engine.cache_flavour())

    @staticmethod
    def _cached(store: Store, key: tuple[object, ...] | None) -> History | None:
        """The session's history from the store's window cache (taken: this send owns
        it until :meth:`_keep` puts it back)."""
        if key is None:
            return None
        item = store.window_cache.take(key)
        return item if isinstance(item, History) else None

    @staticmethod
    def _keep(store: Store, history: History, key: tuple[object, ...] | None) -> None:
        if key is not None:
            store.window_cache.put(key, history, history.cache_bytes())

    def _deps(self, store: Store) -> RunDeps:
        deps = self._run_deps  # the same for every send over one store: made once
        if (deps is None or deps.store is not store or deps.tools is not self.tools
                or deps.config is not self.config):
            deps = self._run_deps = RunDeps(store, self._llm, self.tools, self.config,
                                            self._limits, self._engine, self._hooks)
        return deps

    @staticmethod
    def _owner() -> str:
        # One owner per send: two sends in one process must not share a lease.
        return _ME[0] + os.urandom(6).hex()

    async def _wait_for(self, attempt: Callable[[], Awaitable[T]], session_id: str,
                        emit: Emit | None, send_index: int | None = None) -> T:
        """Retry ``attempt`` while the session is busy, within ``config.lease_wait``
        (each holder waited on is reported: a ``LeaseWait`` event and a log line)."""
        return await wait_for_lease(attempt, session_id=session_id,
                                    lease_wait=self.config.lease_wait, emit=emit,
                                    send_index=send_index)

    # -- sessions ----------------------------------------------------------------------

    async def new_session(self, *, system_prompt: str | None = None,
                          metadata: Mapping[str, Any] | None = None,
                          session_id: str | None = None, parent_id: str | None = None) -> str:
        """Create a session; returns its id (generated unless given)."""
        store = await self._get_store()
        record = await store.create_session(session_id, system_prompt=system_prompt,
                                            metadata=metadata, parent_id=parent_id)
        return record.id

    async def resolve_system_prompt(self, session_id: str) -> str | None:
        """The system prompt the session's next request will carry."""
        session = await (await self._get_store()).get_session(session_id)
        return session.system_prompt if session.system_prompt is not None \
            else self.config.system_prompt

    async def history(self, session_id: str) -> list[HistoryItem]:
        """Every message of the session, in order."""
        store = await self._get_store()
        records = await store.read_messages(session_id)
        if not records:
            await store.get_session(session_id)  # raises SessionNotFoundError
        return [HistoryItem(r.seq, r.send_index, decode_message(r.role, r.body), r.created_at)
                for r in records]

    async def prewarm(self, session_id: str) -> None:
        """Load the session's active window into memory ahead of its next send."""
        store = await self._get_store()
        session = await store.get_session(session_id)
        upto_send, upto_seq = session.send_count, session.next_seq
        if session.pending_send is not None:
            upto_send = session.pending_send
            upto_seq = (await store.get_send(session_id, upto_send)).first_seq
        key = self._cache_key(session_id)
        history = await self._engine.history(store, session_id, session.incarnation,
                                             upto_send=upto_send, upto_seq=upto_seq,
                                             cached=self._cached(store, key))
        self._keep(store, history, key)

    # -- sends -------------------------------------------------------------------------

    async def send(self, text: str, session_id: str, *, request_key: str | None = None,
                   source: str = "user",
                   output_schema: Mapping[str, Any] | None = None) -> SendResult:
        """Send the user's ``text`` and run the agent until it answers.

        Args:
            request_key: An idempotency key: a second send with the same key in this
                session returns the first one's result and writes nothing. If that send
                has not finished, the retry waits for whoever holds the session and
                returns its result; if its process died, ``on_pending`` decides
                (``resume`` finishes it and returns its result).
            source: Who is speaking: ``user`` (default), ``timer``...
            output_schema: JSON Schema the answer must match (overrides
                ``config.output_schema``); the parsed value is ``result.output``.

        Raises:
            SessionBusyError: the session stayed busy longer than ``config.lease_wait``.
            SendPendingError: the previous send never finished, or (a retry) the send
                with this ``request_key`` did not; see ``on_pending``.
            InvalidArgumentError: ``request_key`` names a send of different text.
            LeaseLostError: another process took the session over mid-send.
            StructuredOutputError: with an output schema, the answer does not match it
                (the send is stored; the error carries its result).
        """
        return await self._send(text, session_id, None, request_key, source, output_schema)

    async def stream(self, text: str, session_id: str, *, request_key: str | None = None,
                     source: str = "user", output_schema: Mapping[str, Any] | None = None,
                     ) -> AsyncGenerator[Event, None]:
        """Like :meth:`send`, yielding typed events as they happen.

        The last event is :class:`~power_loop.events.SendFinished` carrying the result.
        Errors are raised from the iteration, after a
        :class:`~power_loop.events.SendFailed` event naming them. Leaving the loop early
        cancels the send: its partial answer is kept, marked, and the history stays
        valid. Wrap the stream in ``contextlib.aclosing`` so the cancellation completes
        before you go on.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(self._send(text, session_id, queue.put_nowait, request_key,
                                              source, output_schema))
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        try:
            while (item := await queue.get()) is not _DONE:
                yield item
            task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _sink(self, emit: Emit | None) -> Emit | None:
        """``emit`` joined with the config's ``on_event`` and sinks (any may be absent)."""
        hook, feed = self.config.on_event, self._feed
        if feed is not None:  # first: queueing for the sinks never raises
            hook = feed if hook is None else _joined(feed, hook)
        if hook is None or emit is None:
            return hook or emit

        def both(event: Event) -> None:
            emit(event)
            hook(event)

        return both

    async def _send(self, text: str, session_id: str, emit: Emit | None,
                    request_key: str | None, source: str,
                    output_schema: Mapping[str, Any] | None = None,
                    after_begin: Callable[[], Awaitable[None]] | None = None) -> SendResult:
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a string, not {type(text).__name__}")
        if output_schema is not None:
            validator_for(output_schema)  # a bad schema is refused before anything is written
        emit = self._sink(emit)
        reply = None
        if self._hooks is not None:  # before anything is stored: a veto leaves no trace
            text, reply = await self._hooks.send_start(SendContext(session_id, None, source),
                                                       text)
        store = await self._get_store()
        user = Message.user(text) if source == "user" else Message.user(text, source=source)
        first = [user] if reply is None else [
            user, Message.assistant(reply, hook="short_circuit", stop_reason="short_circuit")]
        owner = self._owner()

        async def begin() -> Any:
            return await store.begin_send(session_id, encode(first, 0), owner=owner,
                                          ttl=self.config.lease_ttl, source=source,
                                          request_key=request_key)

        while True:
            try:
                start = await self._wait_for(begin, session_id, emit)
                break
            except SendPendingError as exc:
                await self._refuse_if_waiting(exc)  # SessionWaitingError: it waits on a person
                if self.config.on_pending == "raise":
                    raise
                if self.config.on_pending == "resume":
                    await self.resume(session_id)
                else:
                    await self.abort_pending(session_id)
        if after_begin is not None:
            await after_begin()  # the message is recorded (now, or by an earlier delivery)
        if start.existing is not None:
            if start.existing.status == "pending":
                return await self._retry_pending(start.existing, text, emit)
            return self._finished(await self._result_of(start.existing, text), emit)
        checkpoint("after_begin")
        assert start.lease is not None
        if emit is not None:
            emit(SendStarted(session_id=session_id, send_index=start.send_index, source=source))
        run = await self._prepare(
            store, session_id=session_id, lease=start.lease, send_index=start.send_index,
            first_seq=start.first_seq, next_seq=start.first_seq, incarnation=start.incarnation,
            system_prompt=start.system_prompt, metadata=start.metadata, source=source,
            emit=emit, output_schema=output_schema, new_messages=first)
        return await self._run(store, run)

    async def _prepare(self, store: Store, *, session_id: str, lease: Lease, send_index: int,
                       first_seq: int, next_seq: int, incarnation: str,
                       system_prompt: str | None, metadata: Mapping[str, Any], source: str,
                       emit: Emit | None, output_schema: Mapping[str, Any] | None = None,
                       new_messages: Sequence[Message] = ()) -> SendRun:
        """Build the run of a send whose lease is held: its history and its window."""
        engine = self._engine
        system = system_prompt if system_prompt is not None else self.config.system_prompt
        key = self._cache_key(session_id)
        try:
            history = await engine.history(store, session_id, incarnation,
                                           upto_send=send_index, upto_seq=first_seq,
                                           cached=self._cached(store, key))
            tail: Sequence[Message] = new_messages
            if next_seq > first_seq:
                records = await store.read_messages(session_id, from_seq=first_seq,
                                                    limit=next_seq - first_seq)
                if len(records) != next_seq - first_seq:  # never a window behind the lease's
                    raise HistoryInvariantError(
                        f"session {session_id!r}: expected messages {first_seq}.."
                        f"{next_seq - 1}, the store returned {len(records)}")
                tail = [*(decode_message(r.role, r.body) for r in records), *new_messages]
            window = Window(session_id, incarnation, start_seq=first_seq,
                            prior_call_ids=history.call_ids)
            window.extend(tail)
        except BaseException:
            await asyncio.shield(store.release_lease(lease))
            raise
        run = SendRun(self._deps(store), session_id=session_id, lease=lease,
                      send_index=send_index, history=history, window=window, system=system,
                      emit=emit, source=source, metadata=metadata, output_schema=output_schema)
        run.cache_key = key
        return run

    async def _run(self, store: Store, run: SendRun) -> SendResult:
        try:
            result = await run.run()
        except BaseException as exc:
            if run.settled:
                self._keep(store, run.history, run.cache_key)
            if not (isinstance(exc, asyncio.CancelledError) and run.settled):
                # (A cancelled send that was closed ended with SendFinished already.)
                # An on_event hook raising here must not hide the send's own error.
                with contextlib.suppress(Exception):
                    run._event(SendFailed, **_failure(exc))
            raise
        self._keep(store, run.history, run.cache_key)
        if self._engine.memory is not None:
            await self._engine.remember(run.session_id, result)
        return result

    @staticmethod
    def _finished(result: SendResult, emit: Emit | None) -> SendResult:
        """``result``, reported to ``emit`` as the send's end."""
        if emit is not None:
            emit(SendFinished(session_id=result.session_id, send_index=result.send_index,
                              result=result))
        return result

    @staticmethod
    def _check_text(send: SendRecord, first: Message | None, text: str) -> None:
        if first is not None and first.text != text:
            raise InvalidArgumentError(
                f"request_key {send.request_key!r} was used for send #{send.send_index} with "
                "different text; use a new key for a new message")

    async def _result_of(self, send: SendRecord, text: str) -> SendResult:
        """The result of a send already finished (an idempotent retry)."""
        store = await self._get_store()
        records = await store.read_messages(send.session_id, from_seq=send.first_seq)
        tail = [decode_message(r.role, r.body) for r in records if r.send_index == send.send_index]
        self._check_text(send, tail[0] if tail else None, text)
        return SendResult(send.session_id, send.send_index, final_text(tail),
                          Usage.from_json(send.usage), send.rounds, send.stop_reason or "",
                          send.status, tuple(tail),
                          children_usage=Usage.from_json(send.usage.get("children")))

    async def _retry_pending(self, send: SendRecord, text: str,
                             emit: Emit | None) -> SendResult:
        """A retry (the same ``request_key``) of a send that has not finished.

        Whoever holds the session (the send's own process, still running; a process
        resuming it; or a dead one, until its lease expires) is waited for, within
        ``lease_wait``. If the send finished meanwhile, its result is returned. If it is
        still pending, its process stopped: ``on_pending`` decides. ``resume`` finishes
        it and returns its result, ``abort`` abandons it and returns the aborted send,
        ``raise`` raises SendPendingError.
        """
        store = await self._get_store()
        first = await store.read_messages(send.session_id, from_seq=send.first_seq, limit=1)
        self._check_text(send, decode_message(first[0].role, first[0].body)
                         if first else None, text)
        store, claim = await self._claim(send.session_id, emit, send.send_index)
        try:
            current = await store.get_send(send.session_id, send.send_index)
        except BaseException:
            await asyncio.shield(store.release_lease(claim.lease))
            raise
        if current.status != "pending":  # its holder finished it while we waited
            await store.release_lease(claim.lease)
            return self._finished(await self._result_of(current, text), emit)
        # Pending with the lease ours: this is the session's pending send.
        policy = self.config.on_pending
        if policy == "resume":
            resumed = await self._resume_claimed(claim, emit)
            assert resumed is not None
            return resumed
        if policy == "abort":
            await self._abort_claimed(store, claim)
            aborted = await store.get_send(send.session_id, send.send_index)
            return self._finished(await self._result_of(aborted, text), emit)
        await store.release_lease(claim.lease)
        raise SendPendingError(
            f"send #{send.send_index} of session {send.session_id!r} (request_key "
            f"{send.request_key!r}) never finished: the process running it stopped. Call "
            "loop.resume(session_id) to finish it, or set AgentLoopConfig(on_pending="
            "'resume') so that retrying the send finishes it and returns its result",
            session_id=send.session_id, send_index=send.send_index)
