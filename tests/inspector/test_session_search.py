"""``session_search(store).find``: sessions by state and by text, on every backend."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import Store
from power_loop.errors import InvalidArgumentError, SessionExistsError
from power_loop.store.records import NewMessage, dump_json
from power_loop.store.session_search import MAX_SEARCH_CHARS, session_search
from power_loop.store.waits import NewWait, waits_of


def _hello(send_index: int = 0) -> list[NewMessage]:
    return [NewMessage(send_index, "user", {"role": "user", "content": "hi"})]


async def _states(store: Store) -> dict[str, str]:
    """One session in each state (and an idle one); returns state -> session id."""
    ids: dict[str, str] = {}
    parked = (await store.create_session("parked-1", metadata={"team": "ops"})).id
    start = await store.begin_send(parked, _hello(), owner="t", ttl=30)
    assert start.lease is not None
    await store.release_lease(start.lease)
    _, gone = await store.claim_stranded_sessions("w", ttl=30, limit=10, max_attempts=0)
    assert gone == [parked]
    ids["parked"] = parked
    waiting = (await store.create_session("waiting-1", metadata={"team": "Sales_%"})).id
    start = await store.begin_send(waiting, _hello(), owner="t", ttl=30)
    assert start.lease is not None
    await waits_of(store).hold(waiting, 0, [NewWait("call_1", "approval", "pay", "{}")],
                               lease=start.lease)
    ids["waiting"] = waiting
    pending = (await store.create_session("pending-1")).id
    await store.begin_send(pending, _hello(), owner="t", ttl=30)
    ids["pending"] = pending
    ids["idle"] = (await store.create_session("idle-1", metadata={"note": "a!b"})).id
    return ids


async def test_find_filters_by_state_and_text(store: Store) -> None:
    ids = await _states(store)
    find = session_search(store).find
    newest_first = [ids["idle"], ids["pending"], ids["waiting"], ids["parked"]]
    assert [s.id for s in await find()] == newest_first
    assert [s.id for s in await find(state="pending")] == newest_first[1:]
    assert [s.id for s in await find(state="waiting")] == [ids["waiting"]]
    assert [s.id for s in await find(state="parked")] == [ids["parked"]]
    assert [s.id for s in await find(text="ing-")] == [ids["pending"], ids["waiting"]]
    assert [s.id for s in await find(text='"ops"')] == [ids["parked"]]
    # % and _ are plain characters, and so is the escape character itself.
    assert [s.id for s in await find(text="_%")] == [ids["waiting"]]
    assert [s.id for s in await find(text="a!b")] == [ids["idle"]]
    assert await find(text="%%") == []
    assert [s.id for s in await find(state="waiting", text="parked")] == []
    assert [s.id for s in await find(limit=2)] == newest_first[:2]


async def test_find_refuses_bad_arguments(store: Store) -> None:
    find = session_search(store).find
    for bad in ({"state": "done"}, {"limit": 0}, {"text": "x" * (MAX_SEARCH_CHARS + 1)}):
        with pytest.raises(InvalidArgumentError):
            await find(**bad)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                    min_size=1, max_size=12))
async def test_any_text_is_a_literal_substring(store: Store, text: str) -> None:
    # Whatever the text (quotes, wildcards, the escape character), it is data: every
    # session found holds it (letter case aside, as some engines compare), and the
    # session whose stored metadata holds it is found.
    sid = f"s-{hashlib.sha256(text.encode('utf-8')).hexdigest()}"
    with contextlib.suppress(SessionExistsError):  # an example hypothesis ran before
        await store.create_session(sid, metadata={"k": text})
    found = await session_search(store).find(text=text, limit=500)
    for record in found:
        haystack = record.id + dump_json(dict(record.metadata))
        assert text.casefold() in haystack.casefold()
    if text in dump_json({"k": text}):
        assert sid in [s.id for s in found]
