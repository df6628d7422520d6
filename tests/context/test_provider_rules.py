"""The provider-rule checks used by the other tests reject what the providers reject.

And one place where a request power_loop builds breaks Anthropic's rules.
"""

from __future__ import annotations

import pytest

from power_loop import (
    AgentLoopConfig,
    LLMRequest,
    Message,
    StatefulAgentLoop,
    Store,
    ToolCallPart,
    ToolResultPart,
)
from tests.context.planned import Call, PlannedModel, SendPlan, Step
from tests.context.providers import anthropic_kwargs, check_anthropic, check_both, check_openai
from tests.context.support import echo

CALL = ToolCallPart("c1", "echo", '{"text": "x"}')
RESULT = Message.tool_result(ToolResultPart("c1", "echo", "x"))


def request(*messages: Message, cache_prefix: int = 0) -> LLMRequest:
    return LLMRequest(messages=messages, system="sys", cache_prefix=cache_prefix)


def test_a_well_formed_request_passes() -> None:
    check_both(request(Message.user("hi"), Message.assistant("", [CALL]), RESULT,
                       Message.assistant("done"), Message.user("[power_loop context]\nnotes"),
                       Message.user("next"), cache_prefix=4))


@pytest.mark.parametrize(("messages", "problem"), [
    ((Message.user("hi"), Message.assistant("", [CALL]), Message.user("no result")),
     "answered by"),
    ((Message.user("hi"), RESULT), "without its call"),
    ((Message.user("hi"), Message.assistant("", [CALL]), RESULT, RESULT), "without its call"),
])
def test_openai_rules(messages: tuple[Message, ...], problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        check_openai(request(*messages))


@pytest.mark.parametrize(("messages", "problem"), [
    ((Message.assistant("hello"), Message.user("hi")), "first turn"),
    ((Message.user("hi"), Message.assistant("", [CALL])), "ends on an assistant turn"),
    ((Message.user("hi"), Message.assistant("", [CALL]), Message.user("x"), RESULT),
     "text before results"),
    ((Message.user("hi"), Message.assistant("", [CALL]), Message.user("no result")),
     "answers"),
    ((Message.user("hi"), Message.assistant("", [CALL]), RESULT, Message.assistant("", [CALL]),
      RESULT), "twice"),
    ((Message.user(" \n "),), "empty text block|no messages"),
])
def test_anthropic_rules(messages: tuple[Message, ...], problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        check_anthropic(request(*messages))


def test_anthropic_breakpoints_are_counted() -> None:
    kwargs = anthropic_kwargs(request(Message.user("a"), Message.assistant("b"),
                                      Message.user("c"), cache_prefix=2))
    marked = [b for t in kwargs["messages"] for b in t["content"] if "cache_control" in b]
    assert len(marked) == 2 and "cache_control" in kwargs["system"][0]


async def test_a_blank_answer_is_not_sent_as_a_text_block(store: Store) -> None:
    model = PlannedModel([SendPlan("go", (Step(calls=(Call("echo", {"text": "x"}),),
                                               text="\n\n"), Step(text="done")))])
    loop = StatefulAgentLoop(llm=model.llm, store=store, tools=[echo], config=AgentLoopConfig())
    await loop.send("go", session_id=await loop.new_session())
    check_anthropic(model.requests[-1])
