"""Generated hook misbehaviour, through a real loop on every backend.

Each example is one send (the third of its session, so it folds, calls a tool and the
model twice) with one hook that misbehaves at one point, the first or second time it is
reached: it raises (an exception of any kind, a ``BaseException`` that is not a process
exit, ``GeneratorExit``, a cancellation of its own, an exception group, a power_loop
error, an exception whose ``__str__`` raises) or returns something (a value of the wrong
type, a decision its point does not take, a decision holding the wrong types, or a valid
one). For each: the send either finishes or raises ``HookError`` / ``SendVetoedError``
(nothing else), the lease is free, and without the hook the session carries on:
``resume`` finishes whatever is pending and the next send works.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    FoldOutcome,
    HookError,
    LLMRequest,
    LLMResponse,
    Message,
    Reply,
    SendVetoedError,
    SessionBusyError,
    StopReason,
    Store,
    ToolCallPart,
    ToolResultPart,
    Usage,
    Veto,
)
from power_loop.events.hooks import HOOK_POINTS
from tests.hooks.support import FixedFold, Recorder, fill, make_loop
from tests.loop.support import lease_is_free

RUNS = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class NotAnError(BaseException):
    pass


RAISES: dict[str, Any] = {
    "ValueError": lambda: ValueError("bad"),
    "KeyError": lambda: KeyError("k"),
    "empty RuntimeError": lambda: RuntimeError(),
    "BaseException": lambda: NotAnError("odd"),
    "GeneratorExit": lambda: GeneratorExit(),
    "own CancelledError": lambda: asyncio.CancelledError(),
    "ExceptionGroup": lambda: ExceptionGroup("many", [ValueError("a"), TypeError("b")]),
    "PowerLoopError": lambda: SessionBusyError("busy", session_id="x", holder=None,
                                               retry_after=1.0),
    "unprintable": lambda: Unprintable(),
}

RETURNS: dict[str, Any] = {
    "int": lambda: 42,
    "object": lambda: object(),
    "bytes": lambda: b"bytes",
    "str": lambda: "changed text",
    "Veto": lambda: Veto("no"),
    "Veto(int)": lambda: Veto(7),  # type: ignore[arg-type]
    "Reply": lambda: Reply("short"),
    "Reply(None)": lambda: Reply(None),  # type: ignore[arg-type]
    "LLMRequest": lambda: LLMRequest((Message.user("x"),)),
    "LLMRequest(garbage)": lambda: LLMRequest(("not a message",)),  # type: ignore[arg-type]
    "LLMResponse": lambda: LLMResponse(Message.assistant("hooked"), Usage(),
                                       StopReason.END_TURN),
    "LLMResponse(user)": lambda: LLMResponse(Message.user("x"), Usage(), StopReason.END_TURN),
    "LLMResponse(garbage)": lambda: LLMResponse("x", 5, "y"),  # type: ignore[arg-type]
    "ToolCallPart(other id)": lambda: ToolCallPart("other", "lookup", json.dumps({"key": 1})),
    "ToolResultPart": lambda: ToolResultPart("c", "lookup", "hooked result"),
    "ToolResultPart(int)": lambda: ToolResultPart("c", "lookup", 5),  # type: ignore[arg-type]
    "FoldOutcome": lambda: FoldOutcome("hooked summary"),
    "FoldOutcome(int)": lambda: FoldOutcome(5),  # type: ignore[arg-type]
}


class Misbehave:
    def __init__(self, point: str, nth: int, kind: str) -> None:
        self.point, self.nth, self.kind, self.seen = point, nth, kind, 0

    def __call__(self, point: str, *args: Any) -> Any:
        if point != self.point:
            return None
        self.seen += 1
        if self.seen != self.nth:
            return None
        if self.kind in RAISES:
            raise RAISES[self.kind]()
        return RETURNS[self.kind]()


@RUNS
@given(point=st.sampled_from(HOOK_POINTS), nth=st.integers(1, 2),
       kind=st.sampled_from([*RAISES, *RETURNS]))
async def test_no_hook_behaviour_wedges_a_session(store: Store, point: str, nth: int,
                                                  kind: str) -> None:
    event(f"{point}: {kind}")
    loop = make_loop(store, [Recorder([], act=Misbehave(point, nth, kind))], fold=FixedFold())
    clean = make_loop(store, [], fold=FixedFold())
    sid = await loop.new_session()
    await fill(clean, sid)
    try:
        result = await loop.send("use k", session_id=sid)
        outcome = f"finished: {result.stop_reason}"
    except HookError as exc:
        assert (exc.point == point and exc.__cause__ is not None) or kind in RETURNS
        outcome = "HookError"
    except SendVetoedError:
        assert point == "on_send_start"
        outcome = "vetoed"
    event(f"outcome: {outcome}")
    assert await lease_is_free(store, sid)
    await clean.resume(sid)
    session = await store.get_session(sid)
    assert session.pending_send is None and await lease_is_free(store, sid)
    after = await clean.send("hello", session_id=sid)
    assert after.final_text == "echo: hello"
