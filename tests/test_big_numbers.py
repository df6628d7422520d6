"""Integers past 64 bits stay exact wherever stored JSON is decoded (orjson or not)."""

from __future__ import annotations

from power_loop import Store
from power_loop.llm._json import loads

BIG = 2**70 + 1


def test_the_fast_decoder_keeps_big_integers_exact() -> None:
    for value in (BIG, -BIG, 18446744073709551615, 10**18):
        decoded = loads(f'{{"n": {value}, "list": [{value}]}}')
        assert decoded == {"n": value, "list": [value]}
        assert type(decoded["n"]) is int


async def test_session_metadata_keeps_big_integers_exact(store: Store) -> None:
    record = await store.create_session(None, metadata={"n": BIG, "nested": {"m": [-BIG]}})
    again = await store.get_session(record.id)
    assert again.metadata == {"n": BIG, "nested": {"m": [-BIG]}}
    assert type(again.metadata["n"]) is int
