"""Property: no fold model and no fold strategy wedges a session, on every backend.

Hypothesis draws what the model doing the folding does, for ``LLMSummaryFold`` and
``AgenticFold``: fail with any exception kind (before or after streaming text); stream
something of the wrong shape; answer with hostile summary text (huge, empty, NUL, lone
surrogates), token counts and stop reasons; for the agentic fold, call its note tools
and unknown tools with malformed, deeply nested or huge arguments and note operations
that break the note bounds, round after round past ``max_rounds``; or hang until the
send is cancelled. A fold strategy of one's own returning garbage is drawn too.

For every example: the send returns, or raises a PowerLoopError (never anything else,
never a hang), or, when it hung, is cancelled; the history decodes and pairs every call
with its result; the lease is free; the fold journal holds whole folds only (never left
``started``; a failure is the last entry, ``failed``, with its error); notes stay within
their bounds; and the next send works.
``HYPOTHESIS_PROFILE=deep`` runs more examples.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from power_loop import (
    FoldFailed,
    FoldJob,
    FoldOutcome,
    LLMError,
    LLMRequest,
    Message,
    PowerLoopError,
    SendCost,
    SendResult,
    Store,
    TextPart,
    ToolCallPart,
)
from power_loop.llm.service import TextDelta
from tests.context.hostile_fold import (
    check_after_fold,
    hung_send,
    send_bounded,
    session_needing_fold,
)
from tests.loop.hostile import Behaviour, HostileLLM, answer, raising
from tests.loop.test_hostile_model_property import (
    BROKEN,
    ERRORS,
    arguments,
    hostile_text,
    stops,
    usages,
)

PROFILES = {
    "ci": settings(max_examples=25, derandomize=True, database=None),
    "deep": settings(max_examples=300),
}
RUNS = settings(PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"]),
                deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

FOLD_SEND = 6
"""The index of the send that folds (after the filling sends)."""
summaries = st.one_of(hostile_text, st.sampled_from(["", "   ", "\x00", "\ud800", "s" * 400_000,
                                                     "\U0001f600" * 50_000]))
note_tools = st.sampled_from(["note_add", "note_update", "note_delete", "write_summary"])
tool_names = st.one_of(note_tools, note_tools, hostile_text)
note_args = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(hostile_text, st.just("x" * 41),
                                             st.just("a fact"))}).map(json.dumps),
    st.fixed_dictionaries({"note_id": st.one_of(st.integers(-3, 5), st.booleans(), st.none(),
                                                st.integers(10**20, 10**30), hostile_text),
                           "text": hostile_text}).map(json.dumps),
    st.fixed_dictionaries({"summary": summaries}).map(json.dumps),
    st.just(json.dumps({"note_id": 1e400})), st.just('{"note_id": ' + "1" * 5_000 + "}"),
    st.just('{"note_id": ' + "[" * 900 + "]" * 900 + "}"),
    arguments)


@dataclass(frozen=True)
class Case:
    """What the fold's model (or the strategy itself) does."""

    category: str
    kind: str  # "summary" or "agentic"
    behaviours: Sequence[Behaviour] = ()
    hangs: bool = False
    own: FoldOutcome | object | None = None


def _answer(text: str, calls: Sequence[tuple[str, str]], usage: Any, stop: Any) -> Behaviour:
    parts = ((TextPart(text),) if text else ()) + tuple(
        ToolCallPart(f"c{i}", name, args) for i, (name, args) in enumerate(calls))
    return answer(Message("assistant", parts), usage, stop)


failures = st.tuples(st.sampled_from(sorted(ERRORS)), st.lists(hostile_text, max_size=2),
                     st.sampled_from(["summary", "agentic"]), st.integers(0, 2))


def _failure(name: str, deltas: list[str], kind: str, after: int) -> Case:
    # An agentic fold may fail in a later round, after notes were written in earlier ones.
    before = [_answer("", [("note_add", json.dumps({"text": f"note {i}"}))], None, "tool_use")
              for i in range(after if kind == "agentic" else 0)]
    failing = raising(ERRORS[name](), [TextDelta(t) for t in deltas])
    label = f"failure: {name}" + (" mid-stream" if deltas else "")
    return Case(label, kind, (*before, failing))


rounds = st.lists(st.tuples(hostile_text, st.lists(st.tuples(tool_names, note_args),
                                                   min_size=1, max_size=4), usages, stops),
                  min_size=1, max_size=4)


class OwnStrategy:
    """A strategy of one's own that returns whatever the case says."""

    name: ClassVar[str] = "own"

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        return len(sends)

    async def fold(self, job: FoldJob) -> FoldOutcome:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome  # type: ignore[return-value]


OWN_OUTCOMES: dict[str, object] = {
    "not an outcome": "a summary",
    "summary None": FoldOutcome(None),  # type: ignore[arg-type]
    "huge summary": FoldOutcome("h" * 1_000_000),
    "empty summary": FoldOutcome(""),
    "NUL and surrogates": FoldOutcome("\x00\ud800\udfff end"),
    "ops not a list": FoldOutcome("s", 5),  # type: ignore[arg-type]
    "op not a mapping": FoldOutcome("s", ["add"]),  # type: ignore[list-item]
    "unknown op": FoldOutcome("s", [{"op": "drop"}]),
    "too many notes": FoldOutcome("s", [{"op": "add", "text": f"n{i}"} for i in range(9)]),
    "note too long": FoldOutcome("s", [{"op": "add", "text": "x" * 999}]),
    "no such note": FoldOutcome("s", [{"op": "delete", "note_id": 7}]),
    "huge note id": FoldOutcome("s", [{"op": "update", "note_id": 10**5000, "text": "t"}]),
    "usage garbage": FoldOutcome("s", (), "usage", -3),  # type: ignore[arg-type]
    "raises": ValueError("strategy bug"),
    "raises GeneratorExit": GeneratorExit(),
    "raises ExceptionGroup": ExceptionGroup("g", [KeyError("k")]),
    "raises PowerLoopError": LLMError("down", provider="own"),
}

BY_CATEGORY: dict[str, st.SearchStrategy[Case]] = {
    "failure": failures.map(lambda f: _failure(*f)),
    "broken": st.tuples(st.sampled_from(sorted(BROKEN)), st.sampled_from(["summary", "agentic"])
                        ).map(lambda b: Case(f"broken: {b[0]}", b[1], (BROKEN[b[0]],))),
    "summary answer": st.tuples(summaries, usages, stops).map(
        lambda a: Case("summary answer", "summary", (_answer(a[0], [], a[1], a[2]),))),
    "agentic tool calls": rounds.map(lambda rs: Case(
        f"agentic: {len(rs)} round(s)" + (", past max_rounds" if len(rs) >= 3 else ""),
        "agentic", tuple(_answer(*r) for r in rs))),
    "own strategy": st.sampled_from(sorted(OWN_OUTCOMES)).map(
        lambda k: Case(f"own strategy: {k}", "own", own=OWN_OUTCOMES[k])),
    "hang": st.sampled_from(["summary", "agentic"]).map(
        lambda k: Case(f"hang ({k}), cancelled", k, hangs=True)),
}


def hanging(streaming: asyncio.Event) -> Behaviour:
    async def run(request: LLMRequest) -> AsyncIterator[Any]:
        yield TextDelta("thinking")
        streaming.set()
        await asyncio.Event().wait()

    return run


# One test per category, so each gets its share of examples.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("category", list(BY_CATEGORY))
@RUNS
@given(data=st.data())
async def test_no_hostile_fold_wedges_a_session(store: Store, category: str,
                                                data: st.DataObject) -> None:
    case = data.draw(BY_CATEGORY[category], label="case")
    event(case.category)
    streaming = asyncio.Event()
    folder = HostileLLM([hanging(streaming)] if case.hangs else case.behaviours)
    own = OwnStrategy(case.own) if case.kind == "own" else None
    folding = await session_needing_fold(store, case.kind, folder, own)
    outcome: SendResult | BaseException
    if case.hangs:
        outcome = await hung_send(folding, streaming)
        assert (await store.get_send(folding.sid, FOLD_SEND)).status == "cancelled"
        assert [f.status for f in await store.list_folds(folding.sid)] == ["failed"]
    else:
        outcome = await send_bounded(folding)
        assert folder.requests or own is not None, "the send should have folded"
    if isinstance(outcome, PowerLoopError):
        event(f"raised {outcome.code}")
    elif isinstance(outcome, SendResult):
        assert outcome.status == "done", "a failed fold never fails the send"
    failed = [e for e in folding.events if isinstance(e, FoldFailed)]
    for failure in failed:
        assert isinstance(failure.error, PowerLoopError)
        event(f"fold failed: {failure.error.code}")
    event(f"session after: {await check_after_fold(store, folding, outcome)}")
