"""Hostile model output and model failures never wedge a session (one case per named kind).

Each case ends as an error result the model reads, a finished send with the answer
normalized, or a typed PowerLoopError with the send left pending (the next send then
raises SendPendingError until it is resumed or aborted), and the session goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from power_loop import (
    LLMError,
    LLMResponseError,
    Message,
    ScriptedLLM,
    SendResult,
    StopReason,
    Store,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
    tool,
)
from power_loop.llm.contract import MAX_TOKENS
from power_loop.llm.messages import decode_message
from power_loop.llm.service import TextDelta
from power_loop.tools.registry import MAX_ERROR_CHARS
from tests.loop.hostile import (
    HostileLLM,
    answer,
    assert_history_valid,
    check_session_after,
    raising,
    send_bounded,
    yielding,
)
from tests.loop.support import StallingLLM, lease_is_free, make_loop


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


def calls(*parts: ToolCallPart, text: str = "") -> Message:
    return Message("assistant", ((TextPart(text),) if text else ()) + parts)


async def run_case(store: Store, *behaviours: Any) -> tuple[SendResult | BaseException, str,
                                                            list[Message]]:
    llm = HostileLLM(behaviours)
    loop = make_loop(store, llm, [echo])
    sid = await loop.new_session()
    outcome = await send_bounded(loop, "Hello", sid)
    stored = await assert_history_valid(store, sid)
    ended = await check_session_after(loop, llm, store, sid, outcome)
    return outcome, ended, stored


def results_of(messages: list[Message]) -> list[ToolResultPart]:
    return [r for m in messages for r in m.tool_results]


# -- tool calls the model gets wrong: error results it reads -----------------------------


@pytest.mark.parametrize("arguments", [
    "[" * 100_000,                      # a RecursionError in the decoder
    "{\"a\":" * 50_000 + "1" + "}" * 50_000,
    "x" * 1_000_000,                    # huge and malformed
    "{\"text\": \"\\ud800\\x\"}",         # an invalid JSON escape
    "\x00{}",
], ids=["deep-list", "deep-object", "huge", "bad-escape", "nul"])
async def test_malformed_arguments_are_a_bounded_error_result(store: Store,
                                                              arguments: str) -> None:
    outcome, ended, stored = await run_case(
        store, answer(calls(ToolCallPart("c1", "echo", arguments))))
    assert isinstance(outcome, SendResult) and ended == "done"
    [result] = results_of(stored)
    assert result.is_error and "not valid JSON" in result.content
    assert len(result.content) <= MAX_ERROR_CHARS
    # The arguments are stored as the model wrote them.
    assert stored[1].tool_calls[0].arguments == arguments


@pytest.mark.parametrize("name", ["", "n" * 100_000, "r\u00e9sum\u00e9", "a\x00b\x1b[2J",
                                  "\u202eecho", "\ud800"],
                         ids=["empty", "huge", "non-ascii", "control", "rtl", "surrogate"])
async def test_unknown_tool_names_are_a_bounded_error_result(store: Store, name: str) -> None:
    outcome, ended, stored = await run_case(
        store, answer(calls(ToolCallPart("c1", name, "{}"))))
    assert isinstance(outcome, SendResult) and ended == "done"
    [result] = results_of(stored)
    assert result.is_error and "unknown tool" in result.content
    assert "Available tools: echo." in result.content
    assert len(result.content) <= MAX_ERROR_CHARS
    assert stored[1].tool_calls[0].name == name


async def test_hostile_call_ids_are_replaced(store: Store) -> None:
    hostile = ["pl_1_1", "", "dup", "dup", "i" * 129, "a\x00b", "caf\u00e9", "has space",
               "\ud800", "a.b:c"]
    message = calls(*(ToolCallPart(i, "echo", '{"text": "x"}') for i in hostile))
    outcome, ended, stored = await run_case(store, answer(message))
    assert isinstance(outcome, SendResult) and ended == "done"
    ids = [c.id for c in stored[1].tool_calls]
    assert len(set(ids)) == len(hostile)
    assert ids[:4] == ["pl_1_1", "pl_1_1_", "dup", "pl_1_3"]
    assert all(i.startswith("pl_1_") for i in ids[4:])
    assert [r.call_id for r in results_of(stored)] == ids
    assert [r.content for r in results_of(stored)] == ["x"] * len(hostile)


# -- text the model writes: stored and read back exactly, on every backend ---------------

HOSTILE_TEXT = [
    "lone \ud800 high", "lone \udfff low", "nul \x00 inside", "ctl \x01\x07\x1b[31m\x7f\x9f",
    "rtl \u202e\u200f\u2067 marks", "escapes \\u0000 \\ud800 \\x \\", "line \u2028 sep \ufeff",
    "big " + "\U0001f600" * 50_000,
]


@pytest.mark.parametrize("text", HOSTILE_TEXT, ids=[t.split()[0] for t in HOSTILE_TEXT])
async def test_any_text_round_trips(store: Store, text: str) -> None:
    message = Message("assistant", (TextPart(text), ToolCallPart("c1", "echo", "")),
                      {"note": text})
    outcome, ended, stored = await run_case(
        store, answer(message, model=text, before=[TextDelta(text)]),
        answer(Message("assistant", (TextPart(text),))))
    assert isinstance(outcome, SendResult) and ended == "done"
    assert outcome.final_text == text
    assert [m.text for m in stored] == ["Hello", text, "", text]
    assert stored[1].meta["note"] == text and stored[1].meta["model"] == text[:200]
    assert tuple(stored[:4]) == outcome.messages


async def test_a_surrogate_pair_is_stored_as_its_character(store: Store) -> None:
    outcome, _, stored = await run_case(
        store, answer(Message("assistant", (TextPart("\ud83d\ude00"),))))
    assert isinstance(outcome, SendResult)
    assert outcome.final_text == stored[1].text == "\U0001f600"


# -- services that fail: a typed error, the send left pending -----------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class NotAnException(BaseException):
    pass


class BadCode(LLMError):
    @property
    def code(self) -> str:  # type: ignore[override]
        raise RuntimeError("no code either")


FAILURES: dict[str, BaseException] = {
    "value-error": ValueError("bad"),
    "unprintable": Unprintable(),
    "stop-iteration": StopIteration(),
    "stop-async-iteration": StopAsyncIteration(),
    "generator-exit": GeneratorExit(),
    "base-exception": NotAnException("odd"),
    "exception-group": ExceptionGroup("many", [ValueError("a"), KeyError("b")]),
    "base-exception-group": BaseExceptionGroup("many", [NotAnException("a")]),
    "own-cancellation": asyncio.CancelledError(),
    "huge-message": RuntimeError("m" * 1_000_000),
    "power-loop-error-with-a-bad-code": BadCode("down", provider="x"),
}


@pytest.mark.parametrize("error", FAILURES.values(), ids=FAILURES.keys())
@pytest.mark.parametrize("after_text", [False, True], ids=["at-once", "mid-stream"])
async def test_a_failing_service_raises_typed_and_leaves_the_send_pending(
        store: Store, error: BaseException, after_text: bool) -> None:
    before = [TextDelta("Half an")] if after_text else []
    outcome, ended, stored = await run_case(store, raising(error, before))
    assert isinstance(outcome, LLMError) and ended == "pending"
    if not isinstance(error, LLMError):
        cause = outcome.__cause__
        assert type(outcome) is LLMError and cause is not None
        assert error in (cause, cause.__cause__)  # async generators wrap StopIteration
        assert len(outcome.message) < 1_000 and type(error).__name__ in outcome.message
    expected = ["Half an"] if after_text else []
    assert [m.text for m in stored[1:]] == expected
    if after_text:
        assert stored[1].meta["partial"] == "stream_error"


async def test_the_pause_records_the_error(store: Store) -> None:
    llm = HostileLLM([raising(Unprintable())])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    with pytest.raises(LLMError, match="could not be rendered"):
        await loop.send("Hello", session_id=sid)
    send = await store.get_send(sid, 0)
    assert send.status == "pending" and send.error is not None
    assert send.error["type"] == "LLMError" and send.error["code"] == "llm_error"
    assert await lease_is_free(store, sid)
    resumed = await loop.resume(sid)
    assert resumed is not None and resumed.final_text == "fine"


async def test_keyboard_interrupt_passes_through_and_frees_the_lease(store: Store) -> None:
    llm = HostileLLM([raising(KeyboardInterrupt())])
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    with pytest.raises(KeyboardInterrupt):
        await loop.send("Hello", session_id=sid)
    assert await lease_is_free(store, sid)
    assert (await store.get_session(sid)).pending_send == 0
    resumed = await loop.resume(sid)
    assert resumed is not None and resumed.final_text == "fine"


# -- services that break the stream's shape: LLMResponseError, the send left pending ------

BROKEN: dict[str, Any] = {
    "nothing": yielding([]),
    "a-string": yielding(["text"]),
    "none": yielding([None]),
    "a-dict": yielding([{"text": "hi"}]),
    "text-not-str": yielding([TextDelta(5)]),  # type: ignore[arg-type]
    "role-user": answer(Message("user", (TextPart("hi"),))),
    "role-tool": answer(Message("tool", (ToolResultPart("c", "echo", "x"),))),
    "result-part": answer(Message("assistant", (ToolResultPart("c", "echo", "x"),))),
    "text-part-none": answer(Message("assistant", (TextPart(None),))),  # type: ignore[arg-type]
    "call-args-dict": answer(calls(ToolCallPart("c", "echo", {"text": "x"}))),  # type: ignore[arg-type]
    "message-a-string": answer("hello"),
    "parts-a-string": answer(Message("assistant", "hello")),  # type: ignore[arg-type]
    "foreign-part": answer(Message("assistant", (object(),))),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("behaviour", BROKEN.values(), ids=BROKEN.keys())
async def test_a_broken_stream_is_an_llm_response_error(store: Store, behaviour: Any) -> None:
    outcome, ended, stored = await run_case(store, behaviour)
    assert isinstance(outcome, LLMResponseError), outcome
    assert outcome.code == "llm_invalid_response" and ended == "pending"
    assert "LLMService contract" in outcome.message
    assert [m.role for m in stored] == ["user"]


async def test_a_stream_that_is_not_an_async_iterator_is_an_llm_error(store: Store) -> None:
    outcome, ended, _ = await run_case(store, lambda request: None)
    assert type(outcome) is LLMError and ended == "pending"
    assert isinstance(outcome.__cause__, TypeError)


async def test_items_after_the_response_are_refused(store: Store) -> None:
    response = answer(Message("assistant", (TextPart("a"),)))

    async def then_more(request: Any) -> Any:
        async for item in response(request):
            yield item
        yield TextDelta("late")

    outcome, ended, _ = await run_case(store, then_more)
    assert isinstance(outcome, LLMResponseError) and ended == "pending"


# -- odd but usable answers: normalized and stored ----------------------------------------


@pytest.mark.parametrize(("usage", "expected"), [
    (Usage(-5, -1, -2, -3), Usage()),
    (Usage(None, 3, None, None), Usage(0, 3)),  # type: ignore[arg-type]
    (Usage(10**30, 2, 0, 0), Usage(MAX_TOKENS, 2)),
    (Usage(2.9, "7", True, float("nan")), Usage(2, 0)),  # type: ignore[arg-type]
    ({"input_tokens": 3}, Usage()),
], ids=["negative", "none", "huge", "wrong-types", "not-a-usage"])
async def test_token_counts_are_normalized(store: Store, usage: Any, expected: Usage) -> None:
    outcome, ended, stored = await run_case(
        store, answer(Message("assistant", (TextPart("a"),)), usage=usage))
    assert isinstance(outcome, SendResult) and ended == "done"
    assert outcome.usage == expected
    assert Usage.from_json(stored[1].meta["usage"]) == expected


@pytest.mark.parametrize("stop", ["pause_turn", "end_turn", 42, None, "x" * 10_000],
                         ids=["unknown", "a-str", "an-int", "none", "huge"])
async def test_an_unknown_stop_reason_is_normalized(store: Store, stop: Any) -> None:
    outcome, ended, stored = await run_case(
        store, answer(Message("assistant", (TextPart("a"),)), stop=stop))
    assert isinstance(outcome, SendResult) and ended == "done"
    assert outcome.stop_reason == StopReason.END_TURN.value
    reported = stored[1].meta.get("reported_stop_reason")
    if stop == "end_turn":
        assert reported is None
    else:
        assert isinstance(reported, str) and len(reported) <= 110


async def test_service_meta_is_kept_when_storable(store: Store) -> None:
    meta = {"trace": "t-1", "partial": True, "synthetic": "x", "stop_reason": "lie",
            "bad": object(), "nan": float("nan"), "deep": [[[["ok"]]]]}
    outcome, _, stored = await run_case(
        store, answer(Message("assistant", (TextPart("a"),), meta)))
    assert isinstance(outcome, SendResult) and outcome.final_text == "a"
    kept = dict(stored[1].meta)
    assert kept["trace"] == "t-1" and kept["deep"] == [[[["ok"]]]]
    assert kept["stop_reason"] == "end_turn"
    assert not {"partial", "synthetic", "bad", "nan"} & kept.keys()


async def test_a_hanging_service_stays_cancellable(store: Store) -> None:
    llm = StallingLLM(["Thinking"], then=ScriptedLLM(["fine"]))
    loop = make_loop(store, llm)
    sid = await loop.new_session()
    task = asyncio.create_task(loop.send("Hello", session_id=sid))
    await llm.streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await lease_is_free(store, sid)
    assert (await store.get_session(sid)).pending_send is None
    result = await loop.send("again", session_id=sid)
    assert result.final_text == "fine"
    records = await store.read_messages(sid)
    assert [decode_message(r.role, r.body).text for r in records] == [
        "Hello", "Thinking", "again", "fine"]


async def test_a_failing_event_hook_is_not_blamed_on_the_service(store: Store) -> None:
    class HookBroke(Exception):
        pass

    def on_event(event: Any) -> None:
        if type(event).__name__ == "TextChunk":
            raise HookBroke("the caller's hook")

    llm = HostileLLM([answer(Message("assistant", (TextPart("Hi"),)),
                             before=[TextDelta("Hi")])])
    loop = make_loop(store, llm, on_event=on_event)
    sid = await loop.new_session()
    with pytest.raises(HookBroke):
        await loop.send("Hello", session_id=sid)
    send = await store.get_send(sid, 0)
    assert send.status == "pending" and send.error is not None
    assert send.error["type"] == "HookBroke"
    assert await lease_is_free(store, sid)


# -- the codec's own guards -------------------------------------------------------------


@pytest.mark.parametrize("arguments", ["[" * 100_000, "{\"a\":" * 100_000])
def test_parsed_arguments_too_deep_is_a_value_error(arguments: str) -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        ToolCallPart("c", "echo", arguments).parsed_arguments()


@pytest.mark.parametrize("data", [None, [], "usage", {"input_tokens": None},
                                  {"input_tokens": -3, "output_tokens": True},
                                  {"input_tokens": "7", "output_tokens": 2.5}])
def test_usage_from_json_reads_garbage_as_zero(data: Any) -> None:
    assert Usage.from_json(data) == Usage()
