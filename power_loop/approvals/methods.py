"""The loop's human-in-the-loop methods: decide a waiting call, and see what waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from power_loop._faults import checkpoint
from power_loop.errors import (
    SendPendingError,
    SessionWaitingError,
    WaitDecidedError,
    WaitNotFoundError,
)
from power_loop.events.types import Event, TimerFired
from power_loop.llm.messages import Usage, decode_message
from power_loop.store.waits import Decided, WaitRecord, waits_of

if TYPE_CHECKING:
    from power_loop.loop.config import AgentLoopConfig
    from power_loop.loop.results import SendResult
    from power_loop.store.store import Store
    from power_loop.timers.records import TimerClaim

Emit = Callable[[Event], None]


class ApprovalMethods:
    """Mixed into :class:`~power_loop.StatefulAgentLoop`."""

    config: AgentLoopConfig
    _get_store: Callable[[], Awaitable[Store]]
    resume: Callable[..., Awaitable[SendResult | None]]

    async def approve(self, session_id: str, call_id: str, *,
                      resume: bool = True) -> SendResult:
        """Approve a waiting tool call; the send then goes on.

        The decision is recorded first, with a conditional write: of several processes
        approving at once, one wins and the others get :class:`WaitDecidedError`. Then,
        with ``resume`` (the default), this process continues the send under the
        session lease: the tool runs (once), and the model carries on.

        Returns:
            The send's result: finished, or ``waiting`` again (other calls of the round
            are still undecided, or the model asked for another approval). With
            ``resume=False`` the send is left for a worker to continue, and the result
            is the send as it stands (``pending``, or ``waiting`` on the rest).

        Raises:
            WaitNotFoundError: the session waits on no call with this id.
            WaitDecidedError: it was decided already (by another process, or expired).
            InvalidArgumentError: the call is a question: ``answer`` it.
        """
        decided = await waits_of(await self._get_store()).decide(session_id, call_id,
                                                                 "approved")
        return await self._go_on(decided, resume)

    async def reject(self, session_id: str, call_id: str, *, reason: str | None = None,
                     resume: bool = True) -> SendResult:
        """Reject a waiting tool call: it never runs, and the model reads ``reason``.

        Otherwise like :meth:`approve`.
        """
        decided = await waits_of(await self._get_store()).decide(session_id, call_id,
                                                                 "rejected", reason)
        return await self._go_on(decided, resume)

    async def answer(self, session_id: str, call_id: str, text: str, *,
                     resume: bool = True) -> SendResult:
        """Answer an ``ask_user`` question: ``text`` becomes the call's result.

        Otherwise like :meth:`approve`.
        """
        decided = await waits_of(await self._get_store()).decide(session_id, call_id,
                                                                 "answered", text)
        return await self._go_on(decided, resume)

    async def waiting_for(self, session_id: str) -> list[WaitRecord]:
        """What the session's send waits on (empty: it waits on nothing)."""
        return await waits_of(await self._get_store()).waiting(session_id)

    # -- internals -----------------------------------------------------------------------

    async def _go_on(self, decided: Decided, resume: bool) -> SendResult:
        checkpoint("after_decision")
        wait = decided.wait
        if decided.remaining or not resume:
            return await self._send_result(wait.session_id, wait.send_index,
                                           decided.remaining)
        result = await self.resume(wait.session_id)
        if result is None or result.send_index != wait.send_index:
            # Another process (a worker, another approver) finished the send first.
            return await self._send_result(wait.session_id, wait.send_index, ())
        return result

    async def _send_result(self, session_id: str, send_index: int,
                           waiting: tuple[WaitRecord, ...]) -> SendResult:
        """The result of a send as stored: finished, or still waiting."""
        from power_loop.loop.accounting import send_usage
        from power_loop.loop.awaiting import AWAITING_APPROVAL, AWAITING_INPUT
        from power_loop.loop.results import SendResult
        from power_loop.loop.tail import final_text

        store = await self._get_store()
        send = await store.get_send(session_id, send_index)
        records = await store.read_messages(session_id, from_seq=send.first_seq)
        tail = [decode_message(r.role, r.body) for r in records if r.send_index == send_index]
        rounds = sum(1 for m in tail if m.role == "assistant")
        if send.status == "pending":
            waiting = waiting or tuple(await waits_of(store).waiting(session_id))
            stop = (AWAITING_APPROVAL if any(w.kind == "approval" for w in waiting)
                    else AWAITING_INPUT)
            return SendResult(session_id, send_index, "", send_usage(tail), rounds,
                              stop if waiting else "", "waiting" if waiting else "pending",
                              tuple(tail), waiting=waiting)
        return SendResult(session_id, send_index, final_text(tail), Usage.from_json(send.usage),
                          send.rounds, send.stop_reason or "", send.status, tuple(tail))

    async def _refuse_if_waiting(self, exc: SendPendingError) -> None:
        """A new send found the last one pending: if it waits on a person, say so."""
        if self.config.on_pending == "abort":
            return  # documented: a new send abandons the waiting one
        waiting = await waits_of(await self._get_store()).waiting(exc.session_id)
        if waiting:
            ids = tuple(w.wait_id for w in waiting)
            kinds = {w.kind for w in waiting}
            verbs = " or ".join(v for k, v in (("approval", "approve or reject"),
                                               ("input", "answer")) if k in kinds)
            raise SessionWaitingError(
                f"session {exc.session_id!r} is waiting on {', '.join(ids)}: {verbs} "
                f"{'it' if len(ids) == 1 else 'them'} first (loop.approve/reject/answer or "
                "`power-loop sessions`), or abort_pending() to abandon the send",
                session_id=exc.session_id, send_index=exc.send_index, waiting=ids) from exc

    async def _expire(self, claim: TimerClaim, sink: Emit | None) -> SendResult | None:
        """Fire an expiry timer: the wait becomes a rejection (once), the send goes on."""
        store = await self._get_store()
        timer = claim.timer
        decided: Decided | None = None
        try:
            decided = await waits_of(store).decide(timer.session_id, timer.message, "expired")
        except (WaitDecidedError, WaitNotFoundError):
            pass  # decided in time, or this fire was delivered before: nothing to do
        await store.advance_timer(claim, fired=True)
        if sink is not None:
            sink(TimerFired(session_id=timer.session_id, timer_id=timer.timer_id,
                            fire=timer.fire_count, lateness=claim.lateness))
        if decided is None:
            return None
        return await self._go_on(decided, True)
