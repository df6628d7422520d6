"""What a send costs the database: round trips, statements and write transactions.

Counted on the driver's trace (``bench/statements.py`` hooks asyncpg and aiomysql below
power_loop, and SQLite's trace callback), so ``BEGIN``/``COMMIT`` and anything a pool
sends on its own count too. These are the design's figures, not timings:

* SQLite runs statements inline on the event loop's thread: a write transaction is
  ``BEGIN IMMEDIATE``, the session-row update, its inserts and updates, ``COMMIT``;
* PostgreSQL folds each write transaction into one statement (a data-modifying ``WITH``);
* MySQL sends each write transaction as one ``BEGIN; ...; COMMIT`` text.

The durable contract needs two commits per no-tool send (the user's message before the
model call, the answer after it) and one more per mid-send write (the tool call before
the tool runs, its result after).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.statements import Trace, trace_statements, transactions
from power_loop import (
    LLMRequest,
    ProjectedRepresentation,
    ScriptedLLM,
    Store,
    Turn,
    call_tool,
    reply,
    tool,
)
from tests.loop.support import make_loop, stored_state


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return key


def answer(request: LLMRequest) -> Turn:
    return reply("ok")


def one_tool(request: LLMRequest) -> Turn:
    if request.messages[-1].role == "user":
        return call_tool("lookup", {"key": "k"})
    return reply("ok")


# backend -> (round trips, statements) per send of each workload
EXPECTED = {
    "sqlite": {"no_tool": (10, 10), "one_tool": (18, 18)},
    "postgresql": {"no_tool": (2, 2), "one_tool": (4, 4)},
    "mysql": {"no_tool": (2, 14), "one_tool": (4, 26)},
}
WRITE_TXNS = {"no_tool": 2, "one_tool": 4}


def statements(trace: Trace) -> int:
    return sum(len(name.split("+")) for _, name in trace)


async def traced_sends(store: Store, workload: str, sends: int,
                       **config: Any) -> tuple[Trace, str]:
    """``sends`` warm sends of ``workload`` (one untimed send first), traced."""
    llm = ScriptedLLM(answer if workload == "no_tool" else one_tool)
    loop = make_loop(store, llm, [lookup] if workload == "one_tool" else [], **config)
    sid = await loop.new_session()
    await loop.send("warm up", sid)
    with trace_statements() as trace:
        for i in range(sends):
            result = await loop.send(f"question {i}", sid)
            assert result.final_text == "ok"
    return trace, sid


@pytest.mark.parametrize("workload", ["no_tool", "one_tool"])
async def test_a_send_costs_its_commits_and_no_more(store: Store, backend: str,
                                                    workload: str) -> None:
    sends = 3
    trace, sid = await traced_sends(store, workload, sends)
    round_trips, stmts = EXPECTED[backend][workload]
    assert len(trace) == round_trips * sends, trace
    assert statements(trace) == stmts * sends, trace
    txns = transactions(trace)
    assert (txns.writing, txns.reading) == (WRITE_TXNS[workload] * sends, 0), trace
    per_send = 2 if workload == "no_tool" else 4
    assert [(seq, index) for seq, index, _, _ in await stored_state(store, sid)] == [
        (seq, seq // per_send) for seq in range(per_send * (sends + 1))]


async def test_projections_ride_in_the_final_write(store: Store, backend: str) -> None:
    trace, sid = await traced_sends(store, "no_tool", 2,
                                    representation=ProjectedRepresentation())
    # SQLite writes the projection with a statement of its own inside the transaction.
    round_trips = {"sqlite": 11, "postgresql": 2, "mysql": 2}[backend]
    assert len(trace) == round_trips * 2, trace
    assert transactions(trace).writing == 4
    projections = await store.read_projections(sid, 0, 3)
    assert sorted(projections) == [0, 1, 2]
