"""The session feed outlives the processes: the writer SIGKILLed mid-send, the reader's
process gone too, a new reader from the last cursor it handed out.

Child A starts a send whose (unsafe) tool hangs. A first reader (its own store, as a web
server's would be) follows the feed until the model's tool call is committed, then goes
away, like a browser whose server died: it keeps only the last cursor. A is SIGKILLed;
child B resumes the send once A's lease lapses; a second reader, on another store,
follows from that cursor until the send ends. What the two readers saw, put together,
is the whole feed, read again from scratch: nothing missed, nothing twice, in order.

The same with a wait: a first reader follows until the send waits for an approval; an
approver process decides and is SIGKILLed at once; a third process resumes the send; a
second reader, from the first one's last cursor, sees the decision once, then the rest.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from power_loop import (
    FeedItem,
    FeedMessage,
    FeedWait,
    ScriptedLLM,
    StatefulAgentLoop,
    open_store,
)
from power_loop.store.waits import waits_of
from tests.durability.child import EXIT_OK, GATED_TOOL, UNSAFE_TOOL
from tests.durability.conftest import Spawn
from tests.durability.harness import StoreView, read_effects, starts, wait_until
from tests.feed.support import collect, expected_keys, key

pytestmark = pytest.mark.slow

TTL = 1.5
POLL = (0.02, 0.2)


async def _follow(view: StoreView, session_id: str, after: str | None, *,
                  until_call: bool = False, until_wait: bool = False,
                  until_finished: int | None = None) -> list[FeedItem]:
    """A reader with a store of its own, closed when it stops reading."""
    store = await open_store(view.dsn, table_prefix=view.prefix)
    try:
        loop = StatefulAgentLoop(llm=ScriptedLLM([]), store=store)
        got: list[FeedItem] = []
        if until_finished is not None:
            return await collect(loop.watch(session_id, after=after, poll=POLL),
                                 until_finished=until_finished)
        async for item in loop.watch(session_id, after=after, poll=POLL):
            got.append(item)
            if until_call and isinstance(item, FeedMessage) and item.message.tool_calls:
                break
            if until_wait and isinstance(item, FeedWait):
                break
        return got
    finally:
        await store.aclose()


def test_a_reader_resumes_from_its_cursor_after_writer_and_reader_died(
        backend: str, view: StoreView, spawn: Spawn, effects: Path) -> None:
    sid = view.new_session()
    a = spawn("a", sid, [{"op": "send", "text": "first"}], tool=UNSAFE_TOOL, tool_sleep=600.0,
              lease_ttl=TTL)
    first = view.run(_follow(view, sid, None, until_call=True))
    wait_until(lambda: bool(starts(read_effects(effects), pid=a.pid)), "A to be in its tool")
    a.signal(signal.SIGKILL)
    a.expect_killed()
    assert list(map(key, first)) == [("send", 0, "pending"), ("message", 0, 0),
                                     ("message", 0, 1)]
    wait_until(lambda: view.lease_lapsed(sid), "A's lease to lapse")

    b = spawn("b", sid, [{"op": "resume"}], tool=UNSAFE_TOOL)
    second = view.run(_follow(view, sid, first[-1].cursor, until_finished=0))
    b.expect_exit(EXIT_OK)

    whole = view.run(_follow(view, sid, None, until_finished=0))
    assert first + second == whole
    assert [key(i) for i in whole] == view.run(expected_keys(view.store, sid))
    assert len({i.cursor for i in whole}) == len(whole)
    assert key(whole[-1]) == ("send", 0, "done")
    seqs = [i.seq for i in whole if isinstance(i, FeedMessage)]
    assert seqs == list(range(len(seqs))) == list(range(view.session(sid).next_seq))


def test_a_reader_sees_each_wait_event_once_across_a_killed_approver(
        backend: str, view: StoreView, spawn: Spawn, effects: Path) -> None:
    sid = view.new_session()
    asker = spawn("asker", sid, [{"op": "send", "text": "first"}], tool=GATED_TOOL)
    asker.expect_exit(EXIT_OK)
    first = view.run(_follow(view, sid, None, until_wait=True))
    (wait,) = view.run(waits_of(view.store).waiting(sid))
    opened = ("wait", 0, f"{wait.wait_id}:waiting")
    assert list(map(key, first)) == [("send", 0, "pending"), ("message", 0, 0),
                                     ("message", 0, 1), opened]

    approver = spawn("approver", sid, [{"op": "approve", "call_id": wait.wait_id}],
                     tool=GATED_TOOL, crash_at="after_decision", lease_ttl=TTL)
    approver.expect_killed()
    wait_until(lambda: view.lease_lapsed(sid), "the dead approver's lease to lapse")
    resumer = spawn("resumer", sid, [{"op": "resume"}], tool=GATED_TOOL)
    second = view.run(_follow(view, sid, first[-1].cursor, until_finished=0))
    resumer.expect_exit(EXIT_OK)

    whole = view.run(_follow(view, sid, None, until_finished=0))
    assert first + second == whole
    assert [key(i) for i in whole] == view.run(expected_keys(view.store, sid))
    assert [key(i) for i in whole if isinstance(i, FeedWait)] == [
        opened, ("wait", 0, f"{wait.wait_id}:approved")]
    assert key(second[0]) == ("wait", 0, f"{wait.wait_id}:approved")
    assert len({i.cursor for i in whole}) == len(whole)
    assert key(whole[-1]) == ("send", 0, "done")
