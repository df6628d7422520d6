"""Hostile decisions, generated: unknown and odd ids, huge and odd reasons and answers,
decisions racing each other, and approval policies that misbehave.

Every outcome is one of: the decision is recorded and the send goes on, or a typed
``PowerLoopError`` is raised and nothing changed. The session is never wedged: after
each example it either finished its send or still waits on exactly its real call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import (
    InvalidArgumentError,
    PowerLoopError,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Turn,
    WaitDecidedError,
    WaitNotFoundError,
    ask_user_tool,
    call_tools,
    tool,
)
from power_loop.llm.scripted import ScriptedCall
from power_loop.store.waits import MAX_DECISION_CHARS
from tests.loop.support import make_loop

RUNS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

ODD_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=50),
    st.sampled_from(["", "\x00", "\ud800", "a\udfffb", "'; DROP TABLE x; --", "%s", "?",
                     "{now}", "😀" * 70, "x" * 201, "null", " "]),
    st.integers(min_value=MAX_DECISION_CHARS - 2, max_value=MAX_DECISION_CHARS + 5_000)
    .map(lambda n: "r" * n),
)


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Counter:
    def __init__(self) -> None:
        self.runs = 0


def gated(counter: Counter) -> Any:
    @tool(requires_approval=True)
    def act(x: int) -> str:
        """Act."""
        counter.runs += 1
        return "acted"

    return act


async def waiting_session(loop: StatefulAgentLoop) -> tuple[str, str, str]:
    """A session whose send waits on an ``act`` approval and an ``ask_user`` answer."""
    sid = await loop.new_session()
    result = await loop.send("go", sid)
    assert result.status == "waiting"
    act, ask = sorted(result.waiting, key=lambda w: w.kind)
    assert (act.kind, ask.kind) == ("approval", "input")
    return sid, act.wait_id, ask.wait_id


def script() -> ScriptedLLM:
    return ScriptedLLM(lambda request: (
        call_tools(("act", {"x": 1}), ("ask_user", {"question": "why?"}))
        if request.messages[-1].role == "user" else "finished"))


async def still_waits_on(loop: StatefulAgentLoop, sid: str, ids: set[str]) -> None:
    assert {w.wait_id for w in await loop.waiting_for(sid)} == ids


@RUNS
@given(call_id=ODD_TEXT, verb=st.sampled_from(["approve", "reject", "answer"]))
async def test_unknown_or_odd_ids_are_typed_errors(store: Store, call_id: str,
                                                   verb: str) -> None:
    counter = Counter()
    loop = make_loop(store, script(), [gated(counter), ask_user_tool()])
    sid, act, ask = await waiting_session(loop)
    if call_id in (act, ask):
        return
    try:
        if verb == "answer":
            await loop.answer(sid, call_id, "text")
        else:
            await getattr(loop, verb)(sid, call_id)
        raise AssertionError("an unknown call was decided")
    except (WaitNotFoundError, InvalidArgumentError) as exc:
        assert exc.code in {"wait_not_found", "invalid_argument"}
    await still_waits_on(loop, sid, {act, ask})
    assert counter.runs == 0


@RUNS
@given(reason=ODD_TEXT, answer=ODD_TEXT)
async def test_huge_and_odd_reasons_and_answers_go_to_the_model(store: Store, reason: str,
                                                               answer: str) -> None:
    counter = Counter()
    llm = script()
    loop = make_loop(store, llm, [gated(counter), ask_user_tool()])
    sid, act, ask = await waiting_session(loop)
    partly = await loop.reject(sid, act, reason=reason)
    assert partly.status == "waiting"
    result = await loop.answer(sid, ask, answer)
    assert result.status == "done"
    assert counter.runs == 0
    rejected, answered = (m.tool_results[0] for m in llm.requests[-1].messages[-2:])
    assert rejected.is_error and "rejected" in rejected.content
    assert not answered.is_error
    cap = loop.config.max_tool_output_chars
    for sent, got in ((reason, rejected.content), (answer, answered.content)):
        assert len(got) <= cap
        if _valid(sent) and len(sent) < cap - 100:
            assert got.endswith(sent)  # verbatim: NUL, quotes, emoji and all
        elif len(sent) >= cap:
            assert "truncated" in got


@RUNS
@given(reason=st.one_of(st.integers(), st.binary(max_size=5), st.lists(st.text(), max_size=2)))
async def test_a_reason_that_is_not_text_is_refused(store: Store, reason: Any) -> None:
    counter = Counter()
    loop = make_loop(store, script(), [gated(counter), ask_user_tool()])
    sid, act, ask = await waiting_session(loop)
    try:
        await loop.reject(sid, act, reason=reason)
        raise AssertionError("a non-text reason was accepted")
    except InvalidArgumentError:
        pass
    await still_waits_on(loop, sid, {act, ask})


@RUNS
@given(verbs=st.lists(st.sampled_from(["approve", "reject"]), min_size=2, max_size=5))
async def test_racing_decisions_one_wins(store: Store, verbs: list[str]) -> None:
    counter = Counter()
    act_tool = gated(counter)
    loop = make_loop(store, script(), [act_tool, ask_user_tool()])
    sid, act, ask = await waiting_session(loop)
    await loop.answer(sid, ask, "because")
    deciders = [make_loop(store, script(), [act_tool, ask_user_tool()]) for _ in verbs]
    outcomes = await asyncio.gather(
        *(getattr(d, verb)(sid, act) for d, verb in zip(deciders, verbs, strict=True)),
        return_exceptions=True)
    won = [verb for verb, o in zip(verbs, outcomes, strict=True)
           if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert all(isinstance(e, WaitDecidedError) for e in lost), lost
    assert counter.runs == (1 if won == ["approve"] else 0)
    assert (await store.get_session(sid)).pending_send is None


POLICY_OUTCOMES = st.one_of(
    st.sampled_from([True, False, None, 0, 1, "", "yes", [], [1]]),
    st.sampled_from([ValueError("bad"), KeyError("x"), RuntimeError("\x00" * 3),
                     ZeroDivisionError(), RecursionError("deep")]),
)


@RUNS
@given(outcome=POLICY_OUTCOMES)
async def test_a_misbehaving_policy_never_wedges_the_session(store: Store,
                                                             outcome: Any) -> None:
    runs: list[int] = []

    def policy(arguments: Mapping[str, Any]) -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @tool(requires_approval=policy)
    def act(x: int) -> str:
        """Act."""
        runs.append(x)
        return "acted"

    llm = ScriptedLLM(lambda request: (call_tools(("act", {"x": 1}))
                                       if request.messages[-1].role == "user" else "end"))
    loop = make_loop(store, llm, [act])
    sid = await loop.new_session()
    result = await loop.send("go", sid)
    if isinstance(outcome, BaseException):
        assert result.status == "done" and runs == []
        content = llm.requests[-1].messages[-1].tool_results[0]
        assert content.is_error and "policy" in content.content
    elif bool(outcome):
        assert result.status == "waiting" and runs == []
        (call,) = result.waiting
        try:
            finished = await loop.approve(sid, call.wait_id)
        except PowerLoopError as exc:  # pragma: no cover - would be a finding
            raise AssertionError(exc) from exc
        assert finished.status == "done" and runs == [1]
    else:
        assert result.status == "done" and runs == [1]
    assert (await store.get_session(sid)).pending_send is None


@RUNS
@given(call_id=st.text(min_size=1, max_size=400),
       name=st.text(max_size=300).filter(lambda n: n != "act"))
async def test_hostile_call_ids_and_tool_names_still_wait_and_resume(
        store: Store, call_id: str, name: str) -> None:
    """The model's own ids and names may be anything: the send still waits, and the
    wait ids it lists decide it."""
    counter = Counter()
    llm = ScriptedLLM(lambda request: (
        Turn(tool_calls=(ScriptedCall("act", {"x": 1}, id=call_id),
                         ScriptedCall(name or "?", {}, id=call_id + "2")))
        if request.messages[-1].role == "user" else "end"))
    loop = make_loop(store, llm, [gated(counter)])
    sid = await loop.new_session()
    waiting = await loop.send("go", sid)
    assert waiting.status == "waiting"
    (act,) = waiting.waiting
    assert act.tool_name == "act"
    result = await loop.approve(sid, act.wait_id)
    assert result.status == "done" and counter.runs == 1
