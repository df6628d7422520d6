"""The message codec: every part kind round-trips, and what is stored is the documented JSON."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from power_loop import (
    InvalidArgumentError,
    Message,
    ScriptedLLM,
    Store,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    call_tool,
    tool,
)
from power_loop.llm.messages import (
    CODEC_VERSION,
    decode_message,
    decode_part,
    encode_message,
    encode_part,
)
from tests.loop.support import make_loop

WEIRD = "caf\u00e9 \u2603 \U0001f600 \u2028 \x00 \\ \" ' <b> \n\t"

MESSAGES = [
    Message.user("Hello"),
    Message.user(WEIRD, source="timer", synthetic="continue"),
    Message.assistant("Let me look.", [ToolCallPart("c1", "search", '{"q": "x"}'),
                                       ToolCallPart("c2", "broken", "{not json")],
                      stop_reason="tool_use", usage={"input_tokens": 3}),
    Message.assistant(),
    Message("assistant", (TextPart("a"), TextPart("b"))),
    Message.tool_result(ToolResultPart("c1", "search", "found " + WEIRD)),
    Message.tool_result(ToolResultPart("c2", "broken", "Error: bad", True), synthetic="healed"),
    Message("user", (TextPart(""),)),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_round_trip(message: Message) -> None:
    body = encode_message(message)
    assert body["v"] == CODEC_VERSION
    back = decode_message(message.role, body)
    assert back == message
    assert dict(back.meta) == dict(message.meta)
    assert [type(p) for p in back.parts] == [type(p) for p in message.parts]


def test_parts_encode_as_documented() -> None:
    assert encode_part(TextPart("Hi")) == {"kind": "text", "text": "Hi"}
    assert encode_part(ToolCallPart("c1", "add", '{"a": 1}')) == {
        "kind": "tool_call", "id": "c1", "name": "add", "arguments": '{"a": 1}'}
    assert encode_part(ToolResultPart("c1", "add", "2")) == {
        "kind": "tool_result", "call_id": "c1", "name": "add", "content": "2",
        "is_error": False}
    assert decode_part({"kind": "tool_result", "call_id": "c", "name": "n",
                        "content": "x"}) == ToolResultPart("c", "n", "x", False)


def test_meta_is_read_only_and_not_compared() -> None:
    message = decode_message("user", {"v": 1, "parts": [], "meta": {"a": 1}})
    assert isinstance(message.meta, MappingProxyType)
    with pytest.raises(TypeError):
        message.meta["a"] = 2  # type: ignore[index]
    assert message == Message("user", ())


@pytest.mark.parametrize("body", [
    {"v": 1, "parts": [{"kind": "image", "url": "x"}], "meta": {}},
    {"v": 1, "parts": [{"text": "no kind"}], "meta": {}},
    {"v": 2, "parts": [], "meta": {}},
    {"v": 0, "parts": [], "meta": {}},
    {"v": "1", "parts": [], "meta": {}},
    {"parts": [], "meta": {}},
])
def test_unknown_kind_or_version_is_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        decode_message("user", body)


def test_unknown_role_and_foreign_parts_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError):
        decode_message("system", {"v": 1, "parts": [], "meta": {}})
    with pytest.raises(InvalidArgumentError):
        encode_part("just a string")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        encode_message(Message("user", ("text",)))  # type: ignore[arg-type]


_RESULT = {"kind": "tool_result", "call_id": "c1", "name": "x", "content": "ok"}


@pytest.mark.parametrize("body", [
    {"v": 1, "meta": {}},
    {"v": 1, "parts": [{"kind": "text"}], "meta": {}},
    {"v": 1, "parts": [{"kind": "tool_call", "id": "c1", "name": "x"}], "meta": {}},
    {"v": 1, "parts": None, "meta": {}},
    {"v": 1, "parts": {"kind": "text", "text": "a"}, "meta": {}},
    {"v": 1, "parts": ["text"], "meta": {}},
    {"v": 1, "parts": [{"text": "no kind"}], "meta": {}},
    {"v": 1, "parts": [{"kind": "image", "url": "x"}], "meta": {}},
    {"v": 1, "parts": [{"kind": "text", "text": 5}], "meta": {}},
    {"v": 1, "parts": [{"kind": "text", "text": None}], "meta": {}},
    {"v": 1, "parts": [{"kind": "tool_call", "id": 1, "name": "x", "arguments": "{}"}],
     "meta": {}},
    {"v": 1, "parts": [{"kind": "tool_call", "id": "c1", "name": "x", "arguments": {}}],
     "meta": {}},
    {"v": 1, "parts": [{**_RESULT, "content": ["ok"]}], "meta": {}},
    {"v": 1, "parts": [{**_RESULT, "is_error": "yes"}], "meta": {}},
    {"v": 1, "parts": [{**_RESULT, "is_error": 1}], "meta": {}},
    {"v": 1, "parts": [], "meta": ["not", "an", "object"]},
    ["not", "an", "object"],
], ids=lambda body: str(body)[:60])
def test_malformed_body_is_rejected(body: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_message("assistant", body)
    assert info.value.code == "invalid_argument"


def test_a_well_formed_body_decodes_strictly() -> None:
    message = decode_message("tool", {"v": 1, "parts": [{**_RESULT, "is_error": True}],
                                      "meta": {}})
    assert message.tool_results == (ToolResultPart("c1", "x", "ok", True),)
    # is_error may be left out (false); nothing else is optional.
    assert decode_message("tool", {"v": 1, "parts": [_RESULT], "meta": {}}).tool_results == (
        ToolResultPart("c1", "x", "ok", False),)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_stored_rows_have_the_documented_shape(store: Store) -> None:
    llm = ScriptedLLM([call_tool("add", {"a": 1, "b": 2}), "It is 3."])
    loop = make_loop(store, llm, [add])
    sid = await loop.new_session()
    await loop.send("1 + 2?", session_id=sid)
    rows = await store.read_messages(sid)
    assert [(r.seq, r.send_index, r.role) for r in rows] == [
        (0, 0, "user"), (1, 0, "assistant"), (2, 0, "tool"), (3, 0, "assistant")]
    user, call, result, answer = (r.body for r in rows)
    assert user == {"v": 1, "parts": [{"kind": "text", "text": "1 + 2?"}], "meta": {}}
    call_id = call["parts"][0]["id"]
    assert call["v"] == 1
    assert call["parts"] == [{"kind": "tool_call", "id": call_id, "name": "add",
                              "arguments": '{"a": 1, "b": 2}'}]
    assert call["meta"]["stop_reason"] == "tool_use"
    assert set(call["meta"]["usage"]) == {"input_tokens", "output_tokens",
                                          "cache_read_tokens", "cache_write_tokens"}
    assert call["meta"]["model"] == "scripted"
    assert result == {"v": 1, "parts": [{"kind": "tool_result", "call_id": call_id,
                                         "name": "add", "content": "3", "is_error": False}],
                      "meta": {}}
    assert answer["parts"] == [{"kind": "text", "text": "It is 3."}]
    assert answer["meta"]["stop_reason"] == "end_turn"


async def test_unusual_text_survives_storage(store: Store) -> None:
    @tool
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    llm = ScriptedLLM([call_tool("echo", {"text": WEIRD}, text=WEIRD), WEIRD])
    loop = make_loop(store, llm, [echo])
    sid = await loop.new_session(system_prompt=WEIRD)
    result = await loop.send(WEIRD, session_id=sid)
    history = [h.message for h in await loop.history(sid)]
    assert tuple(history) == result.messages
    assert [m.text for m in history] == [WEIRD, WEIRD, "", WEIRD]
    assert history[2].tool_results[0].content == WEIRD
    assert llm.requests[0].system == WEIRD
    for record in await store.read_messages(sid):
        assert decode_message(record.role, record.body) == history[record.seq]


async def test_result_messages_are_immutable(store: Store) -> None:
    loop = make_loop(store, ScriptedLLM([call_tool("add", {"a": 1, "b": 2}), "Hi."]), [add])
    sid = await loop.new_session()
    result = await loop.send("Hello", session_id=sid)
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    for message in result.messages:
        with pytest.raises(TypeError):
            message.meta["stop_reason"] = "tampered"  # type: ignore[index]
    assert result.messages[-1].meta["stop_reason"] == "end_turn"
    # What the next send is built from was not changed either.
    assert [h.message for h in await loop.history(sid)] == list(result.messages)
