"""Each hook kind (observe, modify, veto, short-circuit) at each point (send, model call,
tool call, fold), on every backend: what the hook sees, what runs, what is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from power_loop import (
    AgentLoopConfig,
    FoldOutcome,
    Hooks,
    InvalidArgumentError,
    LLMRequest,
    LLMResponse,
    Message,
    Reply,
    ScriptedLLM,
    SendVetoedError,
    StatefulAgentLoop,
    StopReason,
    Store,
    ToolCallPart,
    ToolResultPart,
    Usage,
    Veto,
    call_tools,
    reply,
)
from power_loop.events._chain import HookChain
from tests.hooks.support import (
    FixedFold,
    Recorder,
    fill,
    history_of,
    make_lookup,
    make_loop,
    points,
)
from tests.loop.support import lease_is_free

TOOL_SEND = ["on_send_start", "on_model_request", "on_model_response", "on_tool_start",
             "on_tool_end", "on_model_request", "on_model_response", "on_send_end"]


# -- observe ---------------------------------------------------------------------------


async def test_observe_every_point_in_order(store: Store) -> None:
    log: list[str] = []
    fold = FixedFold()
    loop = make_loop(store, [Recorder(log)], fold=fold)
    sid = await loop.new_session()
    await fill(loop, sid)
    log.clear()
    before = fold.calls
    result = await loop.send("use k1", session_id=sid)
    assert result.final_text == "done: value of k1"
    assert points(log) == ["on_send_start", "on_fold_start", "on_fold_end", *TOOL_SEND[1:]]
    assert fold.calls == before + 1


async def test_hooks_run_in_declared_order(store: Store) -> None:
    log: list[str] = []
    loop = make_loop(store, [Recorder(log, "a"), Recorder(log, "b")])
    sid = await loop.new_session()
    await loop.send("use k", session_id=sid)
    assert log[:4] == ["a:on_send_start", "b:on_send_start", "a:on_model_request",
                       "b:on_model_request"]
    assert len(log) == 2 * len(TOOL_SEND)


async def test_the_context_names_the_send(store: Store) -> None:
    seen: list[tuple[str, Any]] = []

    def act(point: str, ctx: Any, *rest: Any) -> None:
        if point in ("on_send_start", "on_model_request", "on_send_end"):
            seen.append((point, (ctx.session_id, ctx.send_index, ctx.source)))
        elif point == "on_tool_start":
            seen.append((point, (ctx.session_id, ctx.send_index, ctx.attempt)))

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    await loop.send("hi", session_id=sid)
    await loop.send("use k", session_id=sid)
    assert seen[:3] == [("on_send_start", (sid, None, "user")),
                        ("on_model_request", (sid, 0, "user")),
                        ("on_send_end", (sid, 0, "user"))]
    assert ("on_tool_start", (sid, 1, 1)) in seen


# -- the send point --------------------------------------------------------------------


async def test_send_modify_stores_the_changed_text(store: Store) -> None:
    def act(point: str, ctx: Any, *rest: Any) -> Any:
        return rest[0].replace("secret", "[redacted]") if point == "on_send_start" else None

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    result = await loop.send("my secret", session_id=sid)
    assert result.final_text == "echo: my [redacted]"
    stored = await history_of(store, sid)
    assert stored[0][2]["parts"] == [{"kind": "text", "text": "my [redacted]"}]


async def test_send_veto_stores_nothing(store: Store) -> None:
    log: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        return Veto("no shouting") if point == "on_send_start" and rest[0].isupper() else None

    loop = make_loop(store, [Recorder(log, act=act), Recorder(log, "later")])
    sid = await loop.new_session()
    with pytest.raises(SendVetoedError) as caught:
        await loop.send("HELLO", session_id=sid)
    assert caught.value.reason == "no shouting" and caught.value.code == "send_vetoed"
    assert log == ["h:on_send_start"]  # the later hook's before-method is not called
    assert await history_of(store, sid) == []
    session = await store.get_session(sid)
    assert (session.send_count, session.pending_send) == (0, None)
    assert (await loop.send("hello", session_id=sid)).final_text == "echo: hello"


async def test_send_short_circuit_answers_without_the_model(store: Store) -> None:
    log: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        return Reply("We open at nine.") if point == "on_send_start" else None

    loop = make_loop(store, [Recorder(log, act=act)])
    sid = await loop.new_session()
    result = await loop.send("hours?", session_id=sid)
    assert (result.final_text, result.stop_reason, result.rounds) == (
        "We open at nine.", "short_circuit", 1)
    assert points(log) == ["on_send_start", "on_send_end"]
    assert [(i, role) for i, role, _ in await history_of(store, sid)] == [
        (0, "user"), (0, "assistant")]
    assert await lease_is_free(store, sid)


# -- the model call --------------------------------------------------------------------


async def test_model_request_modify_is_not_stored(store: Store) -> None:
    seen: list[LLMRequest] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point != "on_model_request":
            return None
        request: LLMRequest = rest[0]
        changed = LLMRequest((*request.messages[:-1], Message.user("injected")),
                             system="changed", tools=request.tools)
        seen.append(changed)
        return changed

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    result = await loop.send("original", session_id=sid)
    assert result.final_text == "echo: injected"
    llm = loop._llm
    assert llm.requests[-1].system == "changed"  # type: ignore[attr-defined]
    stored = await history_of(store, sid)
    assert stored[0][2]["parts"] == [{"kind": "text", "text": "original"}]


async def test_model_short_circuit_is_stored_as_the_answer(store: Store) -> None:
    cached = LLMResponse(Message.assistant("from the cache"), Usage(), StopReason.END_TURN)
    log: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        return cached if point == "on_model_request" else None

    loop = make_loop(store, [Recorder(log, act=act), Recorder(log, "later")])
    sid = await loop.new_session()
    result = await loop.send("hi", session_id=sid)
    assert result.final_text == "from the cache"
    assert loop._llm.requests == []  # type: ignore[attr-defined]
    # the later hook's before-method is skipped; every after-method still runs
    assert "later:on_model_request" not in log and "later:on_model_response" in log
    stored = await history_of(store, sid)
    assert stored[1][2]["meta"]["hook"] == "short_circuit"


async def test_model_short_circuit_with_tool_calls_goes_on(store: Store) -> None:
    calls: list[str] = []
    asked = ToolCallPart("c1", "lookup", json.dumps({"key": "z"}))

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_model_request" and rest[0].messages[-1].role == "user":
            return LLMResponse(Message("assistant", (asked,)), Usage(), StopReason.TOOL_USE)
        return None

    loop = make_loop(store, [Recorder([], act=act)], calls=calls)
    sid = await loop.new_session()
    result = await loop.send("hi", session_id=sid)
    assert (result.final_text, calls) == ("done: value of z", ["z"])


async def test_model_veto_ends_the_send(store: Store) -> None:
    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_model_request" and rest[0].messages[-1].role == "tool":
            return Veto("Budget spent: no more model calls today.")
        return None

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    result = await loop.send("use k", session_id=sid)
    assert (result.final_text, result.stop_reason, result.status) == (
        "Budget spent: no more model calls today.", "vetoed", "done")
    stored = await history_of(store, sid)
    assert [role for _, role, _ in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[-1][2]["meta"]["synthetic"] == "vetoed"
    assert (await loop.send("again", session_id=sid)).final_text == "echo: again"


async def test_model_response_modify_is_stored(store: Store) -> None:
    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point != "on_model_response":
            return None
        response: LLMResponse = rest[1]
        text = response.message.text.replace("hello", "*****")
        return LLMResponse(Message.assistant(text), response.usage, response.stop_reason)

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    assert (await loop.send("hello", session_id=sid)).final_text == "echo: *****"
    stored = await history_of(store, sid)
    assert stored[1][2]["parts"] == [{"kind": "text", "text": "echo: *****"}]
    assert stored[1][2]["meta"]["hook"] == "changed"


# -- the tool call ---------------------------------------------------------------------


async def test_tool_modify_arguments_runs_them_and_stores_them(store: Store) -> None:
    calls: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_tool_start":
            call: ToolCallPart = rest[0]
            return ToolCallPart(call.id, call.name, json.dumps({"key": "safe"}))
        return None

    loop = make_loop(store, [Recorder([], act=act)], calls=calls)
    sid = await loop.new_session()
    result = await loop.send("use danger", session_id=sid)
    assert (calls, result.final_text) == (["safe"], "done: value of safe")
    stored = await history_of(store, sid)
    assert stored[2][2]["meta"]["arguments"] == json.dumps({"key": "safe"})
    assert json.loads(stored[1][2]["parts"][0]["arguments"]) == {"key": "danger"}


async def test_tool_veto_is_an_error_result_the_model_reads(store: Store) -> None:
    calls: list[str] = []
    log: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        return Veto("lookup is disabled") if point == "on_tool_start" else None

    loop = make_loop(store, [Recorder(log, act=act)], calls=calls)
    sid = await loop.new_session()
    result = await loop.send("use k", session_id=sid)
    assert (calls, result.final_text) == ([], "done: lookup is disabled")
    stored = await history_of(store, sid)
    assert stored[2][2]["parts"][0]["is_error"] is True
    assert stored[2][2]["meta"] == {"hook": "vetoed"}
    assert "h:on_tool_end" in log


async def test_tool_short_circuit_answers_without_the_tool(store: Store) -> None:
    calls: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_tool_start":
            return ToolResultPart("ignored", "ignored", "cached value")
        return None

    loop = make_loop(store, [Recorder([], act=act)], calls=calls)
    sid = await loop.new_session()
    result = await loop.send("use k", session_id=sid)
    assert (calls, result.final_text) == ([], "done: cached value")
    stored = await history_of(store, sid)
    call_id = stored[1][2]["parts"][0]["id"]
    assert stored[2][2]["parts"][0]["call_id"] == call_id  # the call's id, not the hook's
    assert stored[2][2]["meta"] == {"hook": "short_circuit"}


async def test_tool_result_modify_is_stored(store: Store) -> None:
    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_tool_end":
            result: ToolResultPart = rest[1]
            return ToolResultPart(result.call_id, result.name, result.content.upper())
        return None

    loop = make_loop(store, [Recorder([], act=act)])
    sid = await loop.new_session()
    assert (await loop.send("use k", session_id=sid)).final_text == "done: VALUE OF K"
    stored = await history_of(store, sid)
    assert stored[2][2]["parts"][0]["content"] == "VALUE OF K"


# -- the fold --------------------------------------------------------------------------


async def _folded(store: Store, act: Any) -> tuple[FixedFold, str]:
    fold = FixedFold()
    loop = make_loop(store, [Recorder([], act=act)], fold=fold)
    sid = await loop.new_session()
    await fill(loop, sid, 3)
    return fold, sid


async def test_fold_short_circuit_commits_the_hooks_summary(store: Store) -> None:
    def act(point: str, *rest: Any) -> Any:
        return FoldOutcome("the hook's summary") if point == "on_fold_start" else None

    fold, sid = await _folded(store, act)
    latest = await store.latest_fold(sid)
    assert fold.calls == 0
    assert latest is not None and latest.summary == "the hook's summary"


async def test_fold_modify_commits_the_changed_summary(store: Store) -> None:
    def act(point: str, *rest: Any) -> Any:
        if point == "on_fold_end":
            return FoldOutcome(rest[1].summary + " (checked)")
        return None

    fold, sid = await _folded(store, act)
    latest = await store.latest_fold(sid)
    assert fold.calls >= 1
    assert latest is not None and latest.summary.endswith("(checked)")


async def test_fold_veto_keeps_the_history_unfolded(store: Store) -> None:
    def act(point: str, *rest: Any) -> Any:
        return Veto("not now") if point == "on_fold_start" else None

    fold, sid = await _folded(store, act)
    assert fold.calls == 0
    folds = await store.list_folds(sid)
    assert folds and all(f.status == "failed" for f in folds)
    assert all(f.usage["error"]["code"] == "fold_vetoed" for f in folds)
    assert await lease_is_free(store, sid)


# -- configuration ---------------------------------------------------------------------


def test_hooks_that_do_nothing_cost_nothing() -> None:
    assert HookChain.of([]) is None
    assert HookChain.of([Hooks(), Hooks()]) is None
    assert HookChain.of([Recorder([])]) is not None


class SyncHook(Hooks):
    def on_tool_start(self, ctx: Any, call: Any) -> None:  # type: ignore[override]
        return None


@pytest.mark.parametrize("hooks", [[object()], [SyncHook()], "hooks", 3])
def test_a_bad_hook_is_refused_when_configured(hooks: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        AgentLoopConfig(hooks=hooks)


async def test_parallel_tool_calls_each_go_through_the_hooks(store: Store) -> None:
    calls: list[str] = []

    def act(point: str, ctx: Any, *rest: Any) -> Any:
        if point == "on_tool_start" and json.loads(rest[0].arguments)["key"] == "b":
            return Veto("not b")
        return None

    llm = ScriptedLLM([call_tools(("lookup", {"key": "a"}), ("lookup", {"key": "b"}),
                                  ("lookup", {"key": "c"})), reply("ok")])
    loop = StatefulAgentLoop(llm=llm, store=store, tools=[make_lookup(calls)],
                             config=AgentLoopConfig(hooks=[Recorder([], act=act)]))
    sid = await loop.new_session()
    await loop.send("go", session_id=sid)
    assert sorted(calls) == ["a", "c"]
    results = [part for message in llm.requests[-1].messages for part in message.tool_results]
    assert [(r.content, r.is_error) for r in results] == [
        ("value of a", False), ("not b", True), ("value of c", False)]
