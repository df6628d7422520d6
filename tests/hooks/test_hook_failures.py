"""A hook that raises, at every hook point, on every backend: the send ends with a
``HookError`` chained to what the hook raised, the store holds no half-written message,
the lease is released, and once the hook stops raising ``resume`` finishes the send into
exactly the history a run without the failure stores."""

from __future__ import annotations

from typing import Any

import pytest

from power_loop import HookError, Store
from power_loop.events.hooks import HOOK_POINTS
from tests.hooks.support import FixedFold, Recorder, fill, history_of, make_loop
from tests.loop.support import lease_is_free


class Boom(Exception):
    pass


class Switch:
    """Raises at one point while armed."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.armed = True

    def __call__(self, point: str, *args: Any) -> None:
        if self.armed and point == self.point:
            raise Boom(f"failing at {point}")


async def _reference(store: Store) -> tuple[list[Any], str | None]:
    loop = make_loop(store, [], fold=FixedFold())
    sid = await loop.new_session()
    await fill(loop, sid)
    await loop.send("use k", session_id=sid)
    fold = await store.latest_fold(sid)
    return await history_of(store, sid), fold.summary if fold else None


@pytest.mark.parametrize("point", HOOK_POINTS)
async def test_a_raising_hook_leaves_the_session_resumable(store: Store, point: str) -> None:
    expected, expected_summary = await _reference(store)
    switch = Switch(point)
    loop = make_loop(store, [Recorder([], act=switch)], fold=FixedFold())
    sid = await loop.new_session()
    await fill(make_loop(store, [], fold=FixedFold()), sid)
    before = await history_of(store, sid)

    with pytest.raises(HookError) as caught:
        await loop.send("use k", session_id=sid)
    error = caught.value
    assert (error.code, error.point, error.hook) == ("hook_failed", point, "Recorder")
    assert isinstance(error.__cause__, Boom)
    assert await lease_is_free(store, sid)
    stored = await history_of(store, sid)
    assert stored == expected[:len(stored)]  # a prefix of the real run: nothing half-written
    session = await store.get_session(sid)

    switch.armed = False
    if point == "on_send_start":  # raised before anything was stored
        assert stored == before and session.pending_send is None
        await loop.send("use k", session_id=sid)
    elif point == "on_send_end":  # raised after the final write
        assert session.pending_send is None and error.result is not None
        assert error.result.final_text == "done: value of k"
        assert await loop.resume(sid) is None
    else:
        assert session.pending_send == 2
        result = await loop.resume(sid)
        assert result is not None and result.final_text == "done: value of k"
    assert await history_of(store, sid) == expected
    fold = await store.latest_fold(sid)
    assert (fold.summary if fold else None) == expected_summary
    assert await lease_is_free(store, sid)


@pytest.mark.parametrize("point", ["on_model_request", "on_tool_start", "on_fold_start"])
async def test_garbage_from_a_hook_is_a_hook_error(store: Store, point: str) -> None:
    def act(at: str, *args: Any) -> Any:
        return 42 if at == point else None

    loop = make_loop(store, [Recorder([], act=act)], fold=FixedFold())
    sid = await loop.new_session()
    await fill(make_loop(store, [], fold=FixedFold()), sid)
    with pytest.raises(HookError, match="returned a int") as caught:
        await loop.send("use k", session_id=sid)
    assert caught.value.point == point
    assert await lease_is_free(store, sid)
    result = await make_loop(store, [], fold=FixedFold()).resume(sid)
    assert result is not None and result.final_text == "done: value of k"
