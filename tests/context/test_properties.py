"""Property tests: random sessions under every pairing, on every backend.

Hypothesis draws a session (sends with text answers, single and parallel tool calls,
failing tools, malformed arguments, unknown tools, recall and note calls, model errors
left pending, simulated process deaths inside a tool, cancelled sends; each pending send
is then resumed, healed and resumed, aborted, or healed and aborted) and a configuration
(``context_budget_tokens``, so folds happen at random points; notes on or off; a memory
provider on or off). The session is played twice in one store: by one warm loop, and by
a fresh cold loop for every call. Then:

(a) every request either loop sent (fold requests too) is well-formed for OpenAI and for
    Anthropic, as their adapters convert it (``tests.context.providers``);
(b) budget: the model reports as input tokens exactly the loop's own estimate, so the
    calibration factor is 1. For each request of the loop, with ``P`` its cached prefix
    (summary and rendered finished sends) and ``u`` the current send's user message:
    ``tokens(system) + tokens(tools) + tokens(P) + tokens(u) + memory reserve
    <= context_budget_tokens``, unless ``P`` holds no finished send (nothing is left to
    fold) or the call that prepared the send made ``MAX_FOLDS_PER_SEND`` folds. The
    current send beyond its user message, and the context message, are outside the bound:
    they cannot be folded (notes in the fold decision are tested on their own);
(c) ``recall_send(N)`` returns exactly send N's messages from the log (text, call
    arguments and result contents verbatim), directly and as stored by the loop when the
    model called it; ``recall_compacted(page)`` pages cover exactly the folded region;
(d) the cold loop sent byte-for-byte the same requests as the warm one, and both stored
    the same log, fold journal and notes.

The fold journal is also checked (done folds over whole sends, contiguous).

Runs come from this file's Hypothesis profiles: ``ci`` (the default: 25 derandomized
examples per pairing and backend, about a minute for the whole file on three backends)
or ``HYPOTHESIS_PROFILE=deep`` (200 random examples each, shrinking on failure).

Cold loops share the test's store object (a loop's cache is its own, not the store's);
``test_pairings`` also checks cold loops opened from the DSN.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import AgentLoopConfig, NoteLimits, StatefulAgentLoop, Store
from power_loop.context.engine import MAX_FOLDS_PER_SEND
from power_loop.context.tokens import count_tools
from power_loop.llm.messages import decode_message
from power_loop.loop.window import check_next
from power_loop.tools.registry import truncate
from power_loop.tools.tool import ToolError
from tests.context.planned import (
    Call,
    PlannedModel,
    Recovery,
    SendPlan,
    SessionRunner,
    Step,
)
from tests.context.providers import check_both
from tests.context.support import (
    COUNTER,
    PAIRING_NAMES,
    TOOLS,
    EchoMemory,
    call_recall,
    is_fold_request,
    layout,
    message_tokens,
    one_message_tokens,
    pairing,
    rendered,
)

# Profiles of this file only: Hypothesis ships a global "ci" profile of its own, and other
# suites register theirs; changing either would change their runs.
PROFILES = {
    "ci": settings(max_examples=25, derandomize=True, database=None),
    "deep": settings(max_examples=200),
}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
RUNS = settings(PROFILES.get(PROFILE, PROFILES["ci"]), deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


RECALL_CHARS = 3_000
NOTE_LIMITS = NoteLimits(max_notes=3, max_chars=60)
RECOVERIES: list[Recovery] = ["resume", "heal_resume", "abort", "heal_abort"]
_WORDS = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
                 min_size=1, max_size=80).filter(lambda s: bool(s.strip()))


@dataclass(frozen=True)
class Scenario:
    plans: tuple[SendPlan, ...]
    budget: int
    notes: bool
    memory_reserve: int | None


def calls_for(send: int, notes: bool) -> st.SearchStrategy[Call]:
    options = [
        st.builds(lambda t: Call("echo", {"text": t}), _WORDS),
        st.builds(lambda t: Call("lookup", {"key": t}), _WORDS),
        st.builds(lambda t: Call("boom", {"reason": t}), _WORDS),
        st.just(Call("echo", '{"text": "unterminated')),
        st.just(Call("nope", {})),
        st.builds(lambda p: Call("recall_compacted", {"page": p}), st.integers(0, 1)),
    ]
    if send > 0:
        options.append(st.builds(lambda n: Call("recall_send", {"send_index": n}),
                                 st.integers(0, send - 1)))
    if notes:
        options += [st.builds(lambda t: Call("note_add", {"text": t}), _WORDS),
                    st.builds(lambda n: Call("note_delete", {"note_id": n}), st.integers(0, 4)),
                    st.builds(lambda n, t: Call("note_update", {"note_id": n, "text": t}),
                              st.integers(0, 4), _WORDS)]
    return st.one_of(options)


@st.composite
def send_plans(draw: st.DrawFn, send: int, notes: bool) -> SendPlan:
    steps: list[Step] = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 7)) == 0:
            calls: tuple[Call, ...] = (Call("crash", {}),)
        else:
            drawn = draw(st.lists(calls_for(send, notes), min_size=1, max_size=3))
            # Parallel note calls race for the next note id: keep one per answer, so that
            # the warm and the cold run stay comparable.
            first_note = next((c for c in drawn if c.name.startswith("note_")), None)
            calls = tuple(c for c in drawn if not c.name.startswith("note_") or c is first_note)
        fail = draw(st.integers(0, 5)) == 0
        steps.append(Step(calls=calls, text=draw(st.one_of(st.just(""), _WORDS)), fail=fail,
                          partial=draw(_WORDS) if fail and draw(st.booleans()) else ""))
    if draw(st.integers(0, 7)) == 0:
        steps.append(Step(cancel=True))
    else:
        fail = draw(st.integers(0, 5)) == 0
        steps.append(Step(text=draw(_WORDS) * draw(st.integers(1, 3)), fail=fail,
                          partial=draw(_WORDS) if fail and draw(st.booleans()) else ""))
    recoveries = draw(st.lists(st.sampled_from(RECOVERIES), max_size=3))
    return SendPlan(f"s{send} {draw(_WORDS)}", tuple(steps), tuple(recoveries))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    notes = draw(st.booleans())
    count = draw(st.integers(3, 12))
    plans = tuple(draw(send_plans(i, notes)) for i in range(count))
    memory = draw(st.one_of(st.none(), st.integers(0, 120)))
    return Scenario(plans, draw(st.integers(450, 1000)), notes, memory)


def config_for(name: str, scenario: Scenario) -> AgentLoopConfig:
    chosen = pairing(name, max_chars=60, keep_last_sends=2)
    reserve = scenario.memory_reserve
    return AgentLoopConfig(
        system_prompt="Answer briefly.", representation=chosen.representation(),
        fold_strategy=chosen.fold(), context_budget_tokens=scenario.budget,
        notes=NOTE_LIMITS if scenario.notes else None,
        memory=EchoMemory() if reserve is not None else None,
        memory_budget_tokens=reserve or 0, recall_max_chars=RECALL_CHARS)


async def play(store: Store, name: str, scenario: Scenario, *, cold: bool,
               ) -> tuple[SessionRunner, StatefulAgentLoop]:
    model = PlannedModel(scenario.plans, note_chars=NOTE_LIMITS.max_chars)
    config = config_for(name, scenario)

    def make_loop() -> StatefulAgentLoop:
        return StatefulAgentLoop(llm=model.llm, store=store, tools=list(TOOLS), config=config)

    reader = make_loop()
    runner = SessionRunner(model, await reader.new_session(), make_loop, cold=cold)
    for plan in scenario.plans:
        await runner.play(plan)
    return runner, reader


def check_budget(model: PlannedModel, scenario: Scenario) -> None:
    folds: dict[int, set[int]] = defaultdict(set)
    for op, request in zip(model.ops, model.requests, strict=True):
        if is_fold_request(request):
            folds[op].add(request.metadata["fold_index"])
    reserve = scenario.memory_reserve or 0
    for op, request in zip(model.ops, model.requests, strict=True):
        if is_fold_request(request):
            continue
        parts = layout(request)
        if not parts.finished or len(folds[op]) >= MAX_FOLDS_PER_SEND:
            event("budget: nothing left to fold" if not parts.finished
                  else "budget: the fold limit was reached")
            continue
        event("budget: checked with finished sends shown")
        prefix = request.messages[:request.cache_prefix]
        base = (COUNTER.count_text(request.system or "") + count_tools(COUNTER, request.tools)
                + message_tokens(prefix) + one_message_tokens(parts.current[0]) + reserve)
        assert base <= scenario.budget, (
            f"send {request.metadata['send_index']}: {base} tokens before its first answer, "
            f"over the budget of {scenario.budget}, with {len(parts.finished)} rendered "
            "messages left unfolded")


async def check_recall(loop: StatefulAgentLoop, sid: str) -> None:
    store = loop.store
    records = await store.read_messages(sid)
    session = await store.get_session(sid)
    by_send: dict[int, list[int]] = defaultdict(list)
    for position, record in enumerate(records):
        by_send[record.send_index].append(position)
    for index in range(session.send_count):
        own = [records[p] for p in by_send[index]]
        expected = truncate(f"send {index}:\n\n{rendered(own)}", RECALL_CHARS)
        assert await call_recall(loop, sid, "recall_send", send_index=index) == expected
    for record in records:  # what the loop stored when the model called recall_send
        for result in decode_message(record.role, record.body).tool_results:
            if result.name == "recall_send" and not result.is_error:
                index = int(result.content.split(":", 1)[0].removeprefix("send "))
                own = [records[p] for p in by_send[index]]
                assert result.content == truncate(f"send {index}:\n\n{rendered(own)}",
                                                  RECALL_CHARS)
    fold = await store.latest_fold(sid)
    first = await call_recall(loop, sid, "recall_compacted", page=0)
    if fold is None:
        assert first == "Nothing has been folded in this session."
        return
    pages = -(-fold.end_seq // 40)
    for page in range(pages):
        chunk = records[page * 40:min(page * 40 + 40, fold.end_seq)]
        header = f"folded history (sends 0-{fold.end_send - 1}), page {page} of {pages - 1}:"
        assert await call_recall(loop, sid, "recall_compacted", page=page) == truncate(
            f"{header}\n\n{rendered(chunk)}", RECALL_CHARS)
    with pytest.raises(ToolError, match="page must be between"):
        await call_recall(loop, sid, "recall_compacted", page=pages)


async def check_journal(store: Store, sid: str) -> None:
    records = await store.read_messages(sid)
    previous_end = 0
    for index, fold in enumerate(await store.list_folds(sid)):
        assert (fold.fold_index, fold.status, fold.first_send) == (index, "done", previous_end)
        assert fold.end_seq == (await store.get_send(sid, fold.end_send)).first_seq
        open_calls: list[str] = []
        for seq, record in enumerate(records[:fold.end_seq]):
            check_next(decode_message(record.role, record.body), open_calls, set(), sid, seq)
        assert not open_calls
        previous_end = fold.end_send


async def check_scenario(store: Store, name: str, scenario: Scenario) -> None:
    warm, loop = await play(store, name, scenario, cold=False)
    cold, _ = await play(store, name, scenario, cold=True)
    assert warm.outcomes == cold.outcomes
    for request in warm.model.requests:
        check_both(request)
    check_budget(warm.model, scenario)
    assert ([r.canonical_bytes() for r in cold.model.requests]
            == [r.canonical_bytes() for r in warm.model.requests])
    logs = [[(r.seq, r.send_index, r.role, r.body) for r in await store.read_messages(sid)]
            for sid in (warm.session_id, cold.session_id)]
    assert logs[0] == logs[1]
    journals = [[(f.fold_index, f.status, f.first_send, f.end_send, f.end_seq, f.summary,
                  f.notes_written) for f in await store.list_folds(sid)]
                + [(n.note_id, n.text) for n in await store.list_notes(sid)]
                for sid in (warm.session_id, cold.session_id)]
    assert journals[0] == journals[1]
    await check_recall(loop, warm.session_id)
    await check_journal(store, warm.session_id)
    folds = len(await store.list_folds(warm.session_id))
    event(f"folds: {'none' if not folds else 'one' if folds == 1 else 'several'}")
    for outcome in set(warm.outcomes):
        event(f"a send {outcome}")
    if any(c.name == "crash" for p in scenario.plans for s in p.steps for c in s.calls):
        event("a tool crashed")


# A passing run is quick; a failing one then shrinks its example against a real database.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", PAIRING_NAMES)
@RUNS
@given(scenario=scenarios())
async def test_random_sessions(store: Store, name: str, scenario: Scenario) -> None:
    await check_scenario(store, name, scenario)
