"""A send's usage in one pass (send_accounts): the separate accounts' totals, and a
stored form whose parts add up."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop.llm.messages import Message, TextPart, ToolResultPart
from power_loop.loop.accounting import send_accounts, send_usage

COUNTS = st.one_of(st.integers(-5, 10**6), st.none(), st.booleans(), st.floats(0, 10),
                   st.text(max_size=3))
USAGE = st.one_of(
    st.none(), st.integers(),
    st.fixed_dictionaries({}, optional=dict.fromkeys(
        ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"), COUNTS)))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    role = draw(st.sampled_from(["user", "assistant", "tool"]))
    meta: dict[str, Any] = {}
    if role == "assistant":
        if draw(st.booleans()):
            meta["usage"] = draw(USAGE)
        if draw(st.booleans()):
            meta["model"] = draw(st.one_of(st.sampled_from(["a", "b", ""]), st.integers()))
        return Message("assistant", (TextPart("ok"),), meta)
    if role == "tool":
        if draw(st.booleans()):
            meta["child_usage"] = draw(USAGE)
        return Message("tool", (ToolResultPart("c", "t", "r"),), meta)
    return Message.user("hi")


@settings(max_examples=80, deadline=None)
@given(st.lists(messages(), max_size=8))
def test_one_pass_gives_the_three_accounts(tail: list[Message]) -> None:
    total, children, stored = send_accounts(tail)
    assert total == send_usage(tail)
    assert {k: stored[k] for k in total.to_json()} == total.to_json()
    assert ("children" in stored) == (children.total_tokens > 0)
    calls = [m for m in tail if m.role == "assistant" and "usage" in m.meta]
    assert stored["model_calls"] == len(calls)
    by_model = stored["models"]
    assert sum(entry["model_calls"] for entry in by_model.values()) == len(calls)
    own = [sum(entry[k] for entry in by_model.values()) for k in total.to_json()]
    assert [a + b for a, b in zip(own, children.to_json().values(), strict=True)] \
        == list(total.to_json().values())
