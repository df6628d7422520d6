"""The loop's recovery methods: finish, heal or abandon a send whose process stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from power_loop.errors import PowerLoopError
from power_loop.events.types import SendStarted
from power_loop.loop.accounting import usage_json
from power_loop.loop.driver import CANCEL_MEANS_RELEASE, UNKNOWN_OUTCOME, Emit
from power_loop.loop.tail import encode, open_call_parts, synthetic_result
from power_loop.loop.window import Window, load_window

if TYPE_CHECKING:
    from power_loop.context.engine import ContextEngine
    from power_loop.loop.agent import StatefulAgentLoop
    from power_loop.loop.config import AgentLoopConfig
    from power_loop.loop.driver import SendRun
    from power_loop.loop.results import SendResult
    from power_loop.store.port import Connection
    from power_loop.store.records import SendRecord, SessionClaim
    from power_loop.store.store import Store


def hand_over_on_cancel() -> None:
    """Make the sends of the current task hand their work over when cancelled.

    By default a cancelled send ends ``cancelled``, its partial answer kept. After this
    call, in the task that made it (and in the tasks it starts afterwards: it is a
    context variable), a cancelled send is handed over instead: it stays pending, its
    session lease released at once, and a worker resumes it at its next poll, as it
    would the send of a process that died (a tool cut off is run again only if it is
    ``safe_to_repeat``; see docs/recovery.md). Workers run their sends this way.

    For a process that stops on purpose with sends still running: a web server shutting
    down past its grace, a deploy (docs/web.md).

    Example::

        async def run_send(loop, text, session_id):
            hand_over_on_cancel()  # a shutdown hands this send to the workers
            return await loop.send(text, session_id)
    """
    CANCEL_MEANS_RELEASE.set(True)


class RecoveryMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`."""

    config: AgentLoopConfig
    _engine: ContextEngine
    _get_store: Callable[[], Awaitable[Store]]
    _owner: Callable[[], str]
    _sink: Callable[[Emit | None], Emit | None]
    _wait_for: Callable[..., Awaitable[SessionClaim]]
    # A Coroutine, not an Awaitable: DelegationMethods (a later base) defines it.
    _runner_for: Callable[..., Coroutine[Any, Any, StatefulAgentLoop | None]]
    _prepare: Callable[..., Awaitable[SendRun]]
    _run: Callable[[Store, SendRun], Awaitable[SendResult]]

    async def _claim(self, session_id: str, emit: Emit | None = None,
                     send_index: int | None = None) -> tuple[Store, SessionClaim]:
        store = await self._get_store()
        owner = self._owner()
        claim = await self._wait_for(
            lambda: store.claim_session(session_id, owner=owner, ttl=self.config.lease_ttl),
            session_id, emit, send_index)
        return store, claim

    async def _pending_window(self, store: Store, claim: SessionClaim, *,
                              strict: bool = True) -> tuple[SendRecord, Window]:
        """The pending send and the window of its messages (for heal and abort)."""
        assert claim.pending_send is not None
        try:
            send = await store.get_send(claim.lease.session_id, claim.pending_send)
            window = await load_window(store, claim.lease.session_id, send.first_seq,
                                       claim.next_seq, claim.incarnation, strict=strict)
        except BaseException:
            await asyncio.shield(store.release_lease(claim.lease))
            raise
        return send, window

    async def resume(self, session_id: str, *,
                     on_event: Emit | None = None) -> SendResult | None:
        """Finish the session's pending send, if it has one (``None`` otherwise).

        Tool calls whose results were lost are run again only if their tool is
        ``safe_to_repeat``; the others get a stored result telling the model their
        outcome is unknown. ``on_event`` receives the events as they happen.
        """
        sink = self._sink(on_event)
        _, claim = await self._claim(session_id, sink)
        return await self._resume_claimed(claim, sink)

    async def resume_claimed(self, claim: SessionClaim, *,
                             on_event: Emit | None = None) -> SendResult | None:
        """Resume with a session lease already taken (as workers claim them).

        A child session of one of the loop's agents is run by that agent's loop (its
        model, tools and config).
        """
        return await self._resume_claimed(claim, self._sink(on_event))

    async def _resume_claimed(self, claim: SessionClaim,
                              on_event: Emit | None) -> SendResult | None:
        store = await self._get_store()
        session_id = claim.lease.session_id
        if claim.pending_send is None:
            await store.release_lease(claim.lease)
            return None
        try:
            runner = await self._runner_for(store, session_id)
            if runner is None:
                send = await store.get_send(session_id, claim.pending_send)
        except BaseException:
            await asyncio.shield(store.release_lease(claim.lease))
            raise
        if runner is not None:  # an agent's session: its own tools and model
            return await runner.resume_claimed(claim, on_event=on_event)
        if on_event is not None:
            on_event(SendStarted(session_id=session_id, send_index=send.send_index,
                                 source=send.source, resumed=True))
        run = await self._prepare(
            store, session_id=session_id, lease=claim.lease, send_index=send.send_index,
            first_seq=send.first_seq, next_seq=claim.next_seq, incarnation=claim.incarnation,
            system_prompt=claim.system_prompt, metadata=claim.metadata, source=send.source,
            emit=on_event)
        return await self._run(store, run)

    async def heal_pending(self, session_id: str) -> int:
        """Store a result for every tool call of the pending send that has none.

        The send stays pending (``resume`` will carry on from there). Returns how many
        results were written.
        """
        store, claim = await self._claim(session_id, self._sink(None))
        try:
            if claim.pending_send is None:
                return 0
            send, window = await self._pending_window(store, claim)
            messages = [synthetic_result(c, UNKNOWN_OUTCOME, "healed")
                        for c in open_call_parts(window)]
            if messages:
                await store.append_messages(session_id, encode(messages, send.send_index),
                                            epoch=claim.lease.epoch,
                                            expect_seq=claim.next_seq)
            return len(messages)
        finally:
            await store.release_lease(claim.lease)

    async def abort_pending(self, session_id: str) -> bool:
        """Abandon the pending send: answer its open tool calls and mark it aborted.

        Returns ``False`` when there was no pending send.
        """
        store, claim = await self._claim(session_id, self._sink(None))
        return await self._abort_claimed(store, claim)

    async def _abort_claimed(self, store: Store, claim: SessionClaim) -> bool:
        session_id = claim.lease.session_id
        if claim.pending_send is None:
            await store.release_lease(claim.lease)
            return False
        # Not strict: abandoning a send must work whatever its history holds.
        send, window = await self._pending_window(store, claim, strict=False)
        messages = [synthetic_result(c, UNKNOWN_OUTCOME, "aborted")
                    for c in open_call_parts(window)]
        tail = [*window.messages, *messages]
        rep = self._engine.representation
        own = rep.project(send.send_index, tail) if rep.stores_projections else None
        projections = [(send.send_index, rep.version, own)] if own is not None else []

        async def body(conn: Connection) -> None:
            await store._finish_send_txn(
                conn, session_id, send.send_index, encode(messages, send.send_index),
                status="aborted", epoch=None, release=claim.lease, stop_reason="aborted",
                rounds=sum(1 for m in tail if m.role == "assistant"),
                usage=usage_json(tail), error=None)
            await store._put_projections_txn(conn, session_id, projections)

        try:
            await store._write(body)
        except PowerLoopError:
            await asyncio.shield(store.release_lease(claim.lease))
            raise
        return True
