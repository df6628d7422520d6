"""Every representation x fold pairing, on every backend, through a long session.

A session of 30 sends (text answers, single and parallel tool calls, agent notes, model
failures resumed by a cold loop) runs with a small ``context_budget_tokens`` so that it
folds several times. Then:

* the fold journal holds only ``done`` folds, numbered from 0, each covering whole sends
  (``first_send`` is where the previous fold ended, ``end_seq`` is the first message of
  ``end_send``, no tool call is open at ``end_seq``), with the model's summary and the
  notes it wrote (within ``NoteLimits``);
* ``FoldStarted``/``FoldFinished`` events were streamed for each fold, in that order;
* every request starts with the summary of the fold in effect, then the finished sends
  since that fold exactly as the representation renders them, then the context message
  (notes, memory), then the current send; ``cache_prefix`` is the context message's index;
* every request is well-formed for both providers;
* each time a send fails, a cold loop (a new ``StatefulAgentLoop`` on the same DSN and
  prefix) resumes it with a request byte-for-byte equal to the warm loop's.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from power_loop import (
    AgentLoopConfig,
    Event,
    FoldFinished,
    FoldStarted,
    LLMRequest,
    Message,
    NoteLimits,
    ProjectedRepresentation,
    StatefulAgentLoop,
    Store,
)
from power_loop.llm.messages import decode_message
from power_loop.loop.window import check_next
from power_loop.store.context_ops import FoldRecord
from tests.context.planned import Call, PlannedModel, SendPlan, Step
from tests.context.providers import check_both
from tests.context.support import (
    PAIRING_NAMES,
    EchoMemory,
    ModelDown,
    echo,
    is_fold_request,
    layout,
    pairing,
    summary_text,
)

SENDS = 30
BUDGET = 900
LIMITS = NoteLimits(max_notes=4, max_chars=80)
SYSTEM = "You are a terse assistant."


def plan_for(i: int) -> SendPlan:
    answer = f"answer {i}: " + "lorem ipsum dolor sit amet " * 4
    final = Step(text=answer, fail=i % 10 == 7)
    if i % 5 == 1:
        steps: tuple[Step, ...] = (Step(calls=(Call("echo", {"text": f"one {i}"}),)), final)
    elif i % 5 == 3:
        steps = (Step(calls=(Call("echo", {"text": f"a{i}"}), Call("echo", {"text": f"b{i}"})),
                      text="two calls"), final)
    elif i % 6 == 4:
        steps = (Step(calls=(Call("note_add", {"text": f"user fact {i}"}),)), final)
    else:
        steps = (final,)
    return SendPlan(f"question {i}: what about item {i}?", steps)


def config_for(name: str, memory: EchoMemory) -> AgentLoopConfig:
    chosen = pairing(name, max_chars=80, keep_last_sends=3)
    return AgentLoopConfig(
        system_prompt=SYSTEM, representation=chosen.representation(),
        fold_strategy=chosen.fold(), context_budget_tokens=BUDGET, notes=LIMITS,
        memory=memory, memory_budget_tokens=40, recall_max_chars=20_000)


async def run_session(loop: StatefulAgentLoop, model: PlannedModel, dsn: str,
                      table_prefix: str, name: str) -> tuple[list[Event], str]:
    plans = [plan_for(i) for i in range(SENDS)]
    memory = loop.config.memory
    assert isinstance(memory, EchoMemory)
    events: list[Event] = []
    resumed = 0
    sid = await loop.new_session()
    for plan in plans:
        try:
            async for event in loop.stream(plan.text, session_id=sid):
                events.append(event)
        except ModelDown:
            warm = model.requests[-1]
            async with StatefulAgentLoop(llm=model.llm, dsn=dsn, table_prefix=table_prefix,
                                         tools=[echo], config=config_for(name, memory)) as cold:
                await cold.resume(sid, on_event=events.append)
            assert model.requests[-2] is warm
            assert model.requests[-1].canonical_bytes() == warm.canonical_bytes()
            resumed += 1
    # The checks above ran once per failing send (``fail=``), not never.
    assert resumed == sum(step.fail for plan in plans for step in plan.steps) > 0
    return events, sid


async def check_journal(store: Store, sid: str, folds: Sequence[FoldRecord],
                        model: PlannedModel) -> None:
    assert len(folds) >= 2, "the session should fold more than once"
    log = [decode_message(r.role, r.body) for r in await store.read_messages(sid)]
    previous_end = 0
    for index, fold in enumerate(folds):
        assert (fold.fold_index, fold.status) == (index, "done")
        assert fold.first_send == previous_end < fold.end_send
        start = await store.get_send(sid, fold.first_send)
        end = await store.get_send(sid, fold.end_send)
        assert fold.end_seq == end.first_seq and start.first_seq <= fold.end_seq
        open_calls: list[str] = []
        for seq, message in enumerate(log[:fold.end_seq]):
            check_next(message, open_calls, set(), sid, seq)
        assert not open_calls, f"fold {index} splits tool calls {open_calls} from results"
        fold_requests = [r for r in model.requests
                         if is_fold_request(r) and r.metadata["fold_index"] == index]
        assert fold_requests, f"fold {index} made no model call"
        assert fold.summary in (f"fold {index} summary", f"fold {index} read sends "
                                + ",".join(str(s) for s in range(fold.first_send,
                                                                 fold.end_send)))
        for op in fold.notes_written:
            assert op["op"] == "add" and len(op["text"]) <= LIMITS.max_chars
        previous_end = fold.end_send
    notes = await store.list_notes(sid)
    assert len(notes) <= LIMITS.max_notes
    assert all(len(note.text) <= LIMITS.max_chars for note in notes)


def check_events(events: Sequence[Event], folds: Sequence[FoldRecord], strategy: str) -> None:
    started = [e for e in events if isinstance(e, FoldStarted)]
    finished = [e for e in events if isinstance(e, FoldFinished)]
    assert [e.fold_index for e in started] == [f.fold_index for f in folds]
    assert [e.fold_index for e in finished] == [f.fold_index for f in folds]
    for start, finish, fold in zip(started, finished, folds, strict=True):
        assert start.seq < finish.seq and start.send_index == finish.send_index
        assert (start.first_send, start.end_send, start.strategy) == (
            fold.first_send, fold.end_send, strategy)
        assert (finish.end_send, finish.summary) == (fold.end_send, fold.summary)
        assert finish.notes_written == len(fold.notes_written)


async def expected_finished(store: Store, sid: str, first: int, upto: int,
                            projected: ProjectedRepresentation | None) -> list[Message]:
    out: list[Message] = []
    projections = await store.read_projections(sid, first, upto)
    for index in range(first, upto):
        messages = [decode_message(r.role, r.body)
                    for r in await store.read_send_messages(sid, index)]
        if projected is None:
            out.extend(messages)
        else:
            version, body = projections[index]
            assert version == projected.version
            assert body == projected.project(index, messages)
            out.extend(projected.render(index, None, body))
    return out


async def check_requests(store: Store, sid: str, requests: Sequence[LLMRequest],
                         events: Sequence[Event], folds: Sequence[FoldRecord],
                         projected: ProjectedRepresentation | None) -> None:
    fold_at = {e.fold_index: e.send_index for e in events if isinstance(e, FoldFinished)}
    for request in requests:
        check_both(request)
        if is_fold_request(request):
            continue
        send = request.metadata["send_index"]
        parts = layout(request)
        in_effect = [f for f in folds if fold_at[f.fold_index] <= send]
        first = in_effect[-1].end_send if in_effect else 0
        if in_effect:
            assert parts.summary is not None
            assert summary_text(parts.summary) == in_effect[-1].summary
        else:
            assert parts.summary is None
        assert list(parts.finished) == await expected_finished(store, sid, first, send,
                                                                projected)
        assert parts.context is not None
        assert request.cache_prefix == len(parts.finished) + (parts.summary is not None)
        assert request.messages[request.cache_prefix] is parts.context
        assert f"remembered about {parts.current[0].text[:24]}" in parts.context.text
        assert parts.current[0].text == plan_for(send).text


@pytest.mark.parametrize("name", PAIRING_NAMES)
async def test_pairing_folds_and_lays_out_requests(dsn: str, table_prefix: str, store: Store,
                                                   name: str) -> None:
    model = PlannedModel([plan_for(i) for i in range(SENDS)], note_chars=LIMITS.max_chars)
    async with StatefulAgentLoop(llm=model.llm, dsn=dsn, table_prefix=table_prefix,
                                 tools=[echo], config=config_for(name, EchoMemory())) as loop:
        events, sid = await run_session(loop, model, dsn, table_prefix, name)
        folds = await store.list_folds(sid)
        await check_journal(store, sid, folds, model)
        strategy = loop.config.fold_strategy
        assert strategy is not None
        check_events(events, folds, strategy.name)
        representation = loop.config.representation
        projected = (representation if isinstance(representation, ProjectedRepresentation)
                     else None)
        await check_requests(store, sid, model.requests, events, folds, projected)
