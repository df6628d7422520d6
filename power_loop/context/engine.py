"""Builds what the model sees from the store: representation x fold strategy.

A request is laid out as::

    system prompt, tools                              (stable)
    [summary of the folded sends]                     (changes only at a fold)
    finished sends since the fold, each rendered by the representation
    [context: the agent's notes, cross-session memory] (the tail: changes freely)
    the current send, verbatim

Everything before the context message is the cached prefix (``cache_prefix``), so notes
and memory never disturb it. The history part is a pure function of the store (the
latest fold, the log, the projections), cached between sends as :class:`History` and
brought up to date by reading only what is new; a cold loop builds the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from power_loop._faults import checkpoint
from power_loop.context.fold import FoldJob, FoldStrategy, SendCost
from power_loop.context.history import History as History  # the loop imports it from here
from power_loop.context.history import (
    RenderedSend,
    call_ids_of,
    group_records,
    group_stored,
    message_bytes,
)
from power_loop.context.memory import MemoryProvider
from power_loop.context.notes import NoteLimits, render_notes
from power_loop.context.outcome import checked_outcome, error_record, fold_error
from power_loop.context.representation import Representation, VerbatimRepresentation
from power_loop.context.tokens import (
    TokenCounter,
    calibration,
    count_message,
    count_messages,
    count_tools,
)
from power_loop.errors import (
    HistoryInvariantError,
    HookError,
    InvalidArgumentError,
    PowerLoopError,
)
from power_loop.events.types import Event, FoldFailed, FoldFinished, FoldStarted
from power_loop.llm.contract import is_process_exit
from power_loop.llm.messages import Message, TextPart, decode_message
from power_loop.llm.service import LLMService, ToolSpec
from power_loop.llm.stored import StoredMessage
from power_loop.loop.results import SendResult
from power_loop.loop.window import check_next
from power_loop.store.context_ops import FoldRecord
from power_loop.store.port import Connection
from power_loop.store.records import Lease, MessageRecord
from power_loop.store.store import Store

log = logging.getLogger("power_loop.context")
Emit = Callable[[Event], None]
MAX_FOLDS_PER_SEND = 4
MEMORY_CUT = "\n[... cut to the memory budget]"


def _group(records: Sequence[MessageRecord]) -> list[tuple[int, int, list[Message]]]:
    """Messages grouped into (send_index, first_seq, messages), in order."""
    return _group_rows([(r.seq, r.send_index, r.role, r.body) for r in records])


def _group_rows(rows: Sequence[tuple[int, int, str, Any]],
                ) -> list[tuple[int, int, list[Message]]]:
    groups: list[tuple[int, int, list[Message]]] = []
    current = -1
    for seq, send_index, role, body in rows:
        message = decode_message(role, body)
        if send_index == current:
            groups[-1][2].append(message)
        else:
            groups.append((send_index, seq, [message]))
            current = send_index
    return groups


def _plain_user(message: Message) -> bool:
    """A user message of text alone (nothing for the pairing check to see)."""
    return message.role == "user" and all(type(p) is TextPart for p in message.parts)


def _shape(obj: object) -> tuple[str, str, object, str]:
    """What identifies a representation or counter for sharing cached histories:
    its class, its version and its repr (an object without a repr of its own has its
    address in it, so it never shares: safe, only slower)."""
    kind = type(obj)
    return kind.__module__, kind.__qualname__, getattr(obj, "version", None), repr(obj)


class ContextEngine:
    """Renders history, decides and runs folds, and supplies the tail context."""

    def __init__(self, *, representation: Representation, fold_strategy: FoldStrategy | None,
                 budget_tokens: int | None, counter: TokenCounter, notes: NoteLimits | None,
                 memory: MemoryProvider | None, memory_budget_tokens: int) -> None:
        self.representation = representation
        self.fold_strategy = fold_strategy
        self.budget_tokens = budget_tokens
        self.counter = counter
        self.notes = notes
        self.memory = memory
        self.memory_budget_tokens = memory_budget_tokens
        # Folds and notes are read from the store at each send only when something can
        # have written them: the default (verbatim, no folds) costs no extra reads.
        self.tracks_store = fold_strategy is not None or notes is not None
        # Tokens are read only to decide folds: without a budget they are not counted.
        self.counts_tokens = budget_tokens is not None

    def cache_flavour(self) -> tuple[object, ...]:
        """What a cached history depends on besides the store: engines that agree on
        it build the same history from the same log, so they share cache entries."""
        return ("history", self.tracks_store, self.counts_tokens,
                _shape(self.representation), _shape(self.counter))

    # -- loading -----------------------------------------------------------------------

    async def history(self, store: Store, session_id: str, incarnation: str, *,
                      upto_send: int, upto_seq: int, cached: History | None) -> History:
        """The rendered history before send ``upto_send`` (whose first seq is ``upto_seq``)."""
        fold = await store.latest_fold(session_id) if self.tracks_store else None
        notes = await store.list_notes(session_id) if self.tracks_store else []
        same_fold = (cached is not None and
                     (cached.fold.fold_index if cached.fold else -1)
                     == (fold.fold_index if fold else -1))
        if (cached is None or cached.incarnation != incarnation or not same_fold
                or cached.next_seq > upto_seq or cached.next_send > upto_send):
            cached = History(session_id, incarnation, fold, self._summary(fold), [],
                             fold.end_send if fold else 0, fold.end_seq if fold else 0)
        cached.notes = notes
        if cached.next_seq < upto_seq:
            await self._extend(store, cached, upto_seq, upto_send)
        return cached

    async def _extend(self, store: Store, history: History, upto_seq: int,
                      upto_send: int) -> None:
        start = history.next_seq
        rows = await store.read_message_texts(history.session_id, from_seq=start,
                                              upto_seq=upto_seq)
        if len(rows) != upto_seq - start:
            raise HistoryInvariantError(
                f"session {history.session_id!r}: expected messages {start}.."
                f"{upto_seq - 1}, the store returned {len(rows)}")
        projections: dict[int, tuple[int, Any]] = {}
        if self.representation.stores_projections:
            projections = await store.read_projections(history.session_id,
                                                        history.next_send, upto_send)
        open_calls: list[str] = []
        grouped = group_stored(rows, start)
        del rows  # the bodies live on in the messages; the rows' tuples can go
        if grouped is None:  # a row the read could not key: read whole records
            records = await store.read_messages(history.session_id, from_seq=start,
                                                limit=upto_seq - start)
            if len(records) != upto_seq - start:
                raise HistoryInvariantError(
                    f"session {history.session_id!r}: expected messages {start}.."
                    f"{upto_seq - 1}, the store returned {len(records)}")
            grouped = group_records(records, start)
        flat, bounds, eager = grouped
        # Runs of sends of text alone (between the ones decoded at once) are taken whole
        # when rendering them is showing them: what _append makes of each, without the
        # copy, the count, the scan or (until a fold asks for them) the RenderedSend.
        bulk = type(self.representation) is VerbatimRepresentation and not self.counts_tokens
        position, count = 0, len(bounds)
        for stop in [*eager, count]:
            if position < stop and bulk and not open_calls:
                history.add_run(bounds, position, stop, flat)
            else:
                for k in range(position, stop):
                    self._add_stored(history, bounds.send(k, flat), False, open_calls,
                                     projections)
            if stop < count:
                self._add_stored(history, bounds.send(stop, flat), True, open_calls,
                                 projections)
            position = stop + 1
        if open_calls:
            raise HistoryInvariantError(
                f"session {history.session_id!r}: finished sends leave tool calls {open_calls} "
                "without results")
        history.next_seq = upto_seq
        history.next_send = upto_send
        if count:
            history.calibration = calibration(flat[bounds.span(count - 1, count)[0]:])

    def _add_stored(self, history: History, send: RenderedSend, eager: bool,
                    open_calls: list[str], projections: dict[int, tuple[int, Any]]) -> None:
        """Add one send as read (``eager``: some of its messages were decoded at once),
        checking the pairing rules on what may hold tool calls or results."""
        send_index, first_seq, messages = send.send_index, send.first_seq, send.messages
        # A stored message of text alone (decoded when first read) cannot change the
        # pairing state: it is checked only where a result is due.
        for offset, message in enumerate(messages) if eager or open_calls else ():
            if open_calls or not (isinstance(message, StoredMessage) or _plain_user(message)):
                check_next(message, open_calls, history.call_ids, history.session_id,
                           first_seq + offset)
        verbatim = type(self.representation) is VerbatimRepresentation
        if verbatim and not eager and not self.counts_tokens:
            history.add(send)
            return
        stored = projections.get(send_index)
        projection = stored[1] if stored and stored[0] == self.representation.version else None
        if projection is None and self.representation.stores_projections:
            projection = self.representation.project(send_index, messages)
            history.unstored.append((send_index, self.representation.version, projection))
        self._append(history, send_index, first_seq, messages, projection,
                     send.nbytes if verbatim else None)

    def _append(self, history: History, send_index: int, first_seq: int,
                messages: Sequence[Message], projection: Any,
                nbytes: int | None = None) -> None:
        """Add a finished send (``nbytes``: its messages' estimate, when the rendering
        is those messages)."""
        rendered = self.representation.render(send_index, messages, projection)
        tokens = count_messages(self.counter, rendered) if self.counts_tokens else 0
        if nbytes is None:
            nbytes = sum(message_bytes(m) for m in rendered)
        history.add(RenderedSend(send_index, first_seq, rendered, tokens, call_ids_of(messages),
                                 nbytes))

    @staticmethod
    def _summary(fold: FoldRecord | None) -> Message | None:
        if fold is None:
            return None
        return Message.user(
            f"[power_loop] Summary of the conversation before this point (sends 0 to "
            f"{fold.end_send - 1}; recall_send or recall_compacted bring back details):\n"
            f"{fold.summary}", summary=fold.fold_index)

    # -- after a send ------------------------------------------------------------------

    def projection_rows(self, history: History, send_index: int,
                        messages: Sequence[Message]) -> list[tuple[int, int, Any]]:
        """Projections to store with the send's final write (its own, and any missing)."""
        if not self.representation.stores_projections:
            return []
        own = self.representation.project(send_index, messages)
        return [*history.unstored, (send_index, self.representation.version, own)]

    def add_finished(self, history: History, send_index: int, first_seq: int,
                     messages: Sequence[Message], end_seq: int) -> None:
        """Bring the cached history past a send this process just finished."""
        if history.next_send != send_index or history.next_seq != first_seq:
            history.next_seq = -1  # out of step: rebuild at the next send
            return
        projection = (self.representation.project(send_index, messages)
                      if self.representation.stores_projections else None)
        self._append(history, send_index, first_seq, messages, projection)
        history.unstored.clear()
        history.next_send, history.next_seq = send_index + 1, end_seq
        history.calibration = calibration(messages)

    # -- the request -------------------------------------------------------------------

    def context_message(self, history: History, memory_text: str | None) -> Message | None:
        """The tail message carrying notes and memory (``None`` when there are neither)."""
        sections = []
        if history.notes:
            heading = ("Your notes (edit them with note_add, note_update, note_delete):"
                       if self.notes is not None else "Notes kept from earlier in this session:")
            sections.append(f"{heading}\n{render_notes(history.notes)}")
        if memory_text:
            sections.append(f"From other conversations:\n{self._clip_memory(memory_text)}")
        if not sections:
            return None
        return Message.user("[power_loop context]\n" + "\n\n".join(sections), context=True)

    def _clip_memory(self, text: str) -> str:
        """``text`` within the memory budget (a provider that overshoots is cut, marked)."""
        tokens = self.counter.count_text(text)
        if tokens <= self.memory_budget_tokens:
            return text
        keep = max(0, len(text) * self.memory_budget_tokens // tokens - len(MEMORY_CUT))
        return text[:keep] + MEMORY_CUT

    def _summary_tokens(self, history: History) -> int:
        return count_message(self.counter, history.summary) if history.summary else 0

    def estimate(self, history: History, system: str | None, tools: Sequence[ToolSpec],
                 rest: Sequence[Message]) -> int:
        """Estimated input tokens of a request: prefix, system, tools and the rest."""
        return (history.tokens + self._summary_tokens(history)
                + self.counter.count_text(system or "") + count_tools(self.counter, tools)
                + count_messages(self.counter, rest))

    def over_budget(self, history: History, system: str | None, tools: Sequence[ToolSpec],
                    tail: Sequence[Message]) -> bool:
        if self.budget_tokens is None or self.fold_strategy is None or not history.sends:
            return False
        return history.tokens > self.room_for_sends(history, system, tools, tail)

    def room_for_sends(self, history: History, system: str | None, tools: Sequence[ToolSpec],
                       tail: Sequence[Message]) -> int:
        """The tokens (by estimate) the finished sends may take: the budget less what
        every request carries besides them (system prompt, tools, summary, the notes, the
        current send) and the memory reserve."""
        assert self.budget_tokens is not None
        reserve = self.memory_budget_tokens if self.memory is not None else 0
        notes = self.context_message(history, None)  # the notes ride in every request
        rest = [notes, *tail] if notes is not None else list(tail)
        overhead = self.estimate(history, system, tools, rest) - history.tokens
        return int((self.budget_tokens - reserve) / history.calibration) - overhead

    async def recall_memory(self, session_id: str, query: str) -> str | None:
        if self.memory is None:
            return None
        try:
            return await self.memory.recall(session_id, query,
                                            budget_tokens=self.memory_budget_tokens)
        except Exception:  # memory is an aid: without it the send goes on, unaided
            log.exception("MemoryProvider.recall failed for session %r; sending without "
                          "recalled memory", session_id)
            return None

    async def remember(self, session_id: str, result: SendResult) -> None:
        if self.memory is None or result.status == "waiting":  # not finished: nothing yet
            return
        try:
            await self.memory.remember(session_id, result)
        except Exception:  # memory is an aid: its failure must not fail a finished send
            log.exception("MemoryProvider.remember failed for session %r", session_id)

    # -- folding -----------------------------------------------------------------------

    async def fold_if_needed(self, store: Store, history: History, *, lease: Lease,
                             llm: LLMService, system: str | None, tools: Sequence[ToolSpec],
                             tail: Sequence[Message], send_index: int,
                             emit: Emit | None) -> History:
        """Fold whole sends until the request fits the budget (or nothing is left).

        A fold that fails (see :meth:`_fold`) ends the folding for this send: the send
        goes on with the history as it stands.
        """
        for _ in range(MAX_FOLDS_PER_SEND):
            if not self.over_budget(history, system, tools, tail):
                return history
            summary = self._summary_tokens(history)
            room = self.room_for_sends(history, system, tools, tail) + summary
            # The new summary replaces the old one and may be as long as the strategy's
            # output cap: set that much aside (at most half the room) before choosing.
            cap = getattr(self.fold_strategy, "max_summary_tokens", 0)
            reserve = max(summary, min(cap, room // 2))
            folded = await self._fold(store, history, lease, llm, send_index,
                                      max(0, room - reserve), emit)
            if folded is None:
                break
            history = folded
        return history

    async def _fold(self, store: Store, history: History, lease: Lease, llm: LLMService,
                    send_index: int, room: int, emit: Emit | None) -> History | None:
        """Fold once; ``None`` when the fold failed (journaled ``failed``, reported).

        The strategy's failure - whatever it or its model raises or returns, and note
        operations the store refuses - never fails the send: history stays as it is
        (the log is never touched), the journal entry is marked ``failed`` and the next
        send over the budget tries again. A cancellation of the send or a process exit
        during the fold marks it ``failed`` too, and gets through. The store's own
        failures are raised (the send is left pending, as for any store failure).
        """
        strategy = self.fold_strategy
        assert strategy is not None
        costs = [SendCost(s.send_index, s.tokens) for s in history.sends]
        count = max(1, min(len(costs), strategy.choose(costs, room)))
        folded, kept = history.sends[:count], history.sends[count:]
        end_send = folded[-1].send_index + 1
        end_seq = kept[0].first_seq if kept else history.next_seq
        fold_index = history.fold.fold_index + 1 if history.fold else 0
        sid = history.session_id
        await store.begin_fold(sid, epoch=lease.epoch, fold_index=fold_index,
                               strategy=strategy.name, first_send=folded[0].send_index,
                               end_send=end_send, end_seq=end_seq)
        checkpoint("fold_started")
        if emit is not None:
            emit(FoldStarted(session_id=sid, send_index=send_index, fold_index=fold_index,
                             first_send=folded[0].send_index, end_send=end_send,
                             strategy=strategy.name))
        records = await store.read_messages(sid, from_seq=folded[0].first_seq,
                                            limit=end_seq - folded[0].first_seq)
        limits = self.notes or NoteLimits()
        job = FoldJob(sid, fold_index, [(i, msgs) for i, _, msgs in _group(records)],
                      history.fold.summary if history.fold else None, history.notes, llm,
                      limits)
        # The summary may be as long as what it replaces (the folded sends and the old
        # summary) or the room set aside for it, whichever is more: never longer.
        replaced = sum(s.tokens for s in folded) + self._summary_tokens(history)
        cap = max(replaced, getattr(strategy, "max_summary_tokens", 0) or 0)
        try:
            outcome = checked_outcome(await strategy.fold(job), strategy, notes=history.notes,
                                      limits=limits, counter=self.counter,
                                      max_summary_tokens=cap)
        except BaseException as exc:
            await self._fold_failed(store, lease, sid, send_index, fold_index,
                                    fold_error(exc, strategy), exc, emit)
            return None
        checkpoint("fold_answered")

        async def commit(conn: Connection) -> list[Mapping[str, Any]]:
            applied = await store._commit_fold_txn(
                conn, sid, lease.epoch, fold_index, outcome.summary, outcome.note_ops,
                {**outcome.usage.to_json(), "calls": outcome.calls}, limits.max_notes)
            checkpoint("in_fold_commit")
            return applied

        try:
            applied = await store._write(commit)
        except InvalidArgumentError as exc:  # rolled back: e.g. a note op the store refuses
            await self._fold_failed(store, lease, sid, send_index, fold_index,
                                    fold_error(exc, strategy), exc, emit)
            return None
        if emit is not None:
            emit(FoldFinished(session_id=sid, send_index=send_index, fold_index=fold_index,
                              end_send=end_send, summary=outcome.summary,
                              notes_written=len(applied), usage=outcome.usage))
        fold = await store.latest_fold(sid)
        history.fold, history.summary = fold, self._summary(fold)
        history.keep(kept)
        history.notes = await store.list_notes(sid)
        history.unstored = [row for row in history.unstored if row[0] >= end_send]
        return history

    async def _fold_failed(self, store: Store, lease: Lease, sid: str, send_index: int,
                           fold_index: int, error: PowerLoopError, exc: BaseException,
                           emit: Emit | None) -> None:
        """Journal the fold ``failed`` and report it; re-raise a cancellation or an exit."""
        task = asyncio.current_task()
        # A hook that failed ends the send (HookError), as at every other hook point.
        stopping = is_process_exit(exc) or isinstance(exc, HookError) or (
            isinstance(exc, asyncio.CancelledError) and task is not None
            and task.cancelling() > 0)
        if stopping:
            # The send is being stopped: mark the fold failed whatever comes next, then
            # let the cancellation (or exit) through.
            try:
                await asyncio.shield(store.fail_fold(sid, epoch=lease.epoch,
                                                     fold_index=fold_index,
                                                     error=error_record(error)))
            except PowerLoopError:
                pass  # left "started": the next fold replaces it, as after a crash
            raise exc
        await store.fail_fold(sid, epoch=lease.epoch, fold_index=fold_index,
                              error=error_record(error))
        log.warning("fold #%d of session %r failed; send #%d goes on with its history "
                    "unfolded: %s", fold_index, sid, send_index, error.message)
        if emit is not None:
            emit(FoldFailed(session_id=sid, send_index=send_index, fold_index=fold_index,
                            error=error))
