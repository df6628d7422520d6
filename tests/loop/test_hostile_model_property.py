"""Property: no model output or model failure wedges a session, on every backend.

Hypothesis draws one hostile model call per example: an answer full of hostile text,
names, ids, arguments, token counts, stop reasons and metadata; a failure of any
exception kind, before or after streaming text; a stream of the wrong shape; a call that
hangs until the send is cancelled; or a final answer for a structured-output send. The
call is played through a real :class:`~power_loop.StatefulAgentLoop` on the test's store.

For every example: the send returns, or raises a PowerLoopError (never anything else,
never a hang), or, when it hung, is cancelled; the stored history decodes and pairs every
call with a result; the lease is free; and the next send works - at once, or, when the
failed call left the send pending, after the typed SendPendingError and a resume or an
abort.
``HYPOTHESIS_PROFILE=deep`` runs more examples.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMResponseError,
    Message,
    PowerLoopError,
    SendResult,
    StopReason,
    Store,
    StructuredOutputError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
    tool,
)
from power_loop.llm.contract import RESERVED_META
from power_loop.llm.service import TextDelta, ToolCallDelta
from tests.loop.hostile import (
    Behaviour,
    HostileLLM,
    answer,
    assert_history_valid,
    check_session_after,
    raising,
    send_bounded,
    yielding,
)
from tests.loop.support import lease_is_free, make_loop

PROFILES = {
    "ci": settings(max_examples=50, derandomize=True, database=None),
    "deep": settings(max_examples=400),
}
RUNS = settings(PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"]),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


# -- hostile pieces -----------------------------------------------------------------------

SPECIALS = ["\ud800", "\udfff", "\ud83d\ude00", "\x00", "\x01", "\x1b[31m", "\x7f", "\u202e",
            "\u200f", "\ufeff", "\u2028", "\\", '"', "\\u0000", "\\ud800", "\\x", "{", "["]
HUGE = ["h" * 300_000, "\U0001f600" * 20_000, "[" * 100_000, "\x00" * 50_000]
hostile_text = st.one_of(
    st.lists(st.one_of(st.characters(), st.sampled_from(SPECIALS)), max_size=12).map("".join),
    st.sampled_from(HUGE))
names = st.one_of(st.just("echo"), st.just("echo"), hostile_text)
call_ids = st.one_of(st.sampled_from(["c1", "dup", "", "pl_1_0", "pl_1_1"]), hostile_text)
arguments = st.one_of(
    hostile_text.map(lambda t: json.dumps({"text": t})),
    hostile_text.map(lambda t: json.dumps({"text": t}, ensure_ascii=False)),
    hostile_text,
    st.just("{" * 60_000), st.just('{"a":' * 5_000 + "1" + "}" * 5_000),
    st.just('{"text": "\\ud800"}'), st.just("[]"), st.just("null"), st.just(""))
counts = st.one_of(st.integers(0, 10_000), st.integers(-(2**70), 2**70), st.none(),
                   st.floats(allow_nan=True), st.booleans(), st.text(max_size=3))
usages = st.one_of(st.builds(Usage, counts, counts, counts, counts), st.none(),
                   st.just({"input_tokens": 3}))
stops = st.one_of(st.sampled_from(list(StopReason)), st.text(max_size=20), st.integers(),
                  st.none())
meta_values = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), hostile_text,
                        st.builds(object), st.lists(st.integers(), max_size=3))
metas = st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(sorted(RESERVED_META))),
                        meta_values, max_size=4)
deltas = st.lists(st.one_of(hostile_text.map(TextDelta),
                            st.builds(ToolCallDelta, st.integers(-5, 5),
                                      st.one_of(st.none(), hostile_text),
                                      st.one_of(st.none(), hostile_text), hostile_text)),
                  max_size=3)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class NotAnException(BaseException):
    pass


ERRORS: dict[str, Callable[[], BaseException]] = {
    "Exception": lambda: ValueError("bad"),
    "unprintable": Unprintable,
    "StopIteration": StopIteration,
    "StopAsyncIteration": StopAsyncIteration,
    "GeneratorExit": GeneratorExit,
    "BaseException": lambda: NotAnException("odd"),
    "ExceptionGroup": lambda: ExceptionGroup("g", [ValueError("a"), TypeError("b")]),
    "own CancelledError": asyncio.CancelledError,
    "LLMError": lambda: LLMError("provider down", provider="hostile"),
    "huge message": lambda: RuntimeError("m" * 200_000),
}

BROKEN: dict[str, Behaviour] = {
    "nothing": yielding([]),
    "a str item": yielding(["text"]),
    "a None item": yielding([None]),
    "TextDelta(int)": yielding([TextDelta(5)]),  # type: ignore[arg-type]
    "after the response": yielding([LLMResponse(Message("assistant", ()), Usage(),
                                                StopReason.END_TURN), TextDelta("late")]),
    "role user": answer(Message("user", (TextPart("hi"),))),
    "role tool": answer(Message("tool", (ToolResultPart("c", "echo", "x"),))),
    "a result part": answer(Message("assistant", (ToolResultPart("c", "echo", "x"),))),
    "TextPart(None)": answer(Message("assistant", (TextPart(None),))),  # type: ignore[arg-type]
    "dict arguments": answer(Message("assistant", (
        ToolCallPart("c", "echo", {"text": "x"}),))),  # type: ignore[arg-type]
    "message a str": answer("hello"),
    "not an iterator": lambda request: None,  # type: ignore[dict-item,return-value]
}


@dataclass(frozen=True)
class Case:
    """One hostile model call and how the send is made."""

    category: str
    behaviour: Behaviour
    structured: bool = False
    hangs: bool = False


def _answer(text: str, calls: list[tuple[str, str, str]], usage: Any, stop: Any,
            meta: dict[str, Any], before: list[Any], model: Any) -> Behaviour:
    parts = ((TextPart(text),) if text else ()) + tuple(ToolCallPart(i, n, a)
                                                        for i, n, a in calls)
    return answer(Message("assistant", parts, meta), usage, stop, model, before)


answers = st.builds(
    _answer, hostile_text,
    st.lists(st.tuples(call_ids, names, arguments), max_size=3),
    usages, stops, metas, deltas, st.one_of(st.none(), hostile_text, st.integers()))


def _never(request: LLMRequest) -> AsyncIterator[Any]:  # replaced in the test
    raise AssertionError("a hanging case plays its own behaviour")


def hanging(streaming: asyncio.Event) -> Behaviour:
    """A call that streams a little, then waits forever (until it is cancelled)."""

    async def run(request: LLMRequest) -> AsyncIterator[Any]:
        yield TextDelta("thinking")
        streaming.set()
        await asyncio.Event().wait()

    return run


structured_answers = st.one_of(
    hostile_text, hostile_text.map(lambda t: json.dumps({"a": t})),
    hostile_text.map(lambda t: "```json\n" + json.dumps({"a": t}, ensure_ascii=False) + "\n```"),
    st.sampled_from(["[" * 100_000, "[" * 900 + "]" * 900, '{"a": ' * 900 + "1" + "}" * 900]))
BY_CATEGORY: dict[str, st.SearchStrategy[Case]] = {
    "answer": answers.map(lambda b: Case("answer", b)),
    "failure": st.tuples(st.sampled_from(sorted(ERRORS)), st.lists(hostile_text, max_size=2)).map(
        lambda e: Case(f"failure: {e[0]}" + (" mid-stream" if e[1] else ""),
                       raising(ERRORS[e[0]](), [TextDelta(t) for t in e[1]]))),
    "broken": st.sampled_from(sorted(BROKEN)).map(lambda k: Case(f"broken: {k}", BROKEN[k])),
    "structured": st.tuples(structured_answers, usages, stops).map(
        lambda t: Case("structured", answer(Message("assistant", (TextPart(t[0]),)), t[1],
                                            t[2]), structured=True)),
    "hang": st.just(Case("hang, cancelled", _never, hangs=True)),
}

SCHEMA = {"type": "object"}
ERROR_KINDS = {"unknown tool": "unknown tool", "not valid JSON": "malformed arguments",
               "must be a JSON object": "arguments not an object",
               "invalid arguments": "arguments against the schema"}


def _kind_of(result: ToolResultPart) -> str:
    if not result.is_error:
        return "a tool's output"
    return next((kind for marker, kind in ERROR_KINDS.items() if marker in result.content),
                "another error")


async def _hung_send(loop: Any, sid: str, streaming: asyncio.Event) -> BaseException:
    task = asyncio.create_task(loop.send("Hello", session_id=sid))
    async with asyncio.timeout(30):
        await streaming.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as exc:
        return exc
    raise AssertionError("a cancelled send returned")


# One test per category, so each gets its share of examples (a hang has only two).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("category", list(BY_CATEGORY))
@RUNS
@given(data=st.data(), recover=st.sampled_from(["abort", "resume"]))
async def test_no_hostile_model_call_wedges_a_session(store: Store, category: str,
                                                      data: st.DataObject, recover: str) -> None:
    case = data.draw(BY_CATEGORY[category], label="case")
    event(case.category)
    streaming = asyncio.Event()
    llm = HostileLLM([hanging(streaming) if case.hangs else case.behaviour])
    loop = make_loop(store, llm, [echo])
    sid = await loop.new_session()
    outcome: SendResult | BaseException
    if case.hangs:
        outcome = await _hung_send(loop, sid, streaming)
        assert (await store.get_send(sid, 0)).status == "cancelled"
        assert await lease_is_free(store, sid)
    elif case.structured:
        try:
            async with asyncio.timeout(30):
                outcome = await loop.send("Hello", session_id=sid, output_schema=SCHEMA)
        except PowerLoopError as exc:
            outcome = exc
    else:
        outcome = await send_bounded(loop, "Hello", sid)
    if isinstance(outcome, BaseException) and not case.hangs:
        assert isinstance(outcome, PowerLoopError), repr(outcome)
        event(f"raised {outcome.code}")
        if case.category.startswith("broken"):
            assert isinstance(outcome, LLMError)
        if isinstance(outcome, StructuredOutputError):
            assert outcome.result is not None and outcome.result.status == "done"
            assert len(outcome.problem) < 1_000
    elif isinstance(outcome, SendResult):
        event(f"finished ({outcome.stop_reason})")
        if case.structured:
            assert isinstance(outcome.output, dict)
        assert outcome.usage.total_tokens >= 0
    if isinstance(outcome, LLMResponseError):
        assert case.category.startswith("broken")
    stored = await assert_history_valid(store, sid)
    for result in (r for m in stored for r in m.tool_results):
        event(f"the model read: {_kind_of(result)}")
    ended = await check_session_after(loop, llm, store, sid, outcome, recover)
    event(f"session after: {ended}" + (f", then {recover}" if ended == "pending" else ""))
