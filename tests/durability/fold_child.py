"""A child process for the fold crash tests: a loop that must fold before it answers.

Run as ``python -m tests.durability.fold_child '<json>'`` (a :class:`FoldArgs`). The
loop has a fold strategy (``LLMSummaryFold`` or ``AgenticFold``), a representation
(verbatim or projected) and a small ``context_budget_tokens``; its model is a
:class:`~power_loop.ScriptedLLM` function script (:func:`script`) that answers sends
(a long text answer, or one ``lookup`` call when the user's text starts with
:data:`TOOL_ASK`) and folds (``metadata["purpose"] == "fold"``): a summary, or for
``AgenticFold`` two ``note_add`` calls, then ``write_summary``. What a fold writes names
the process that wrote it (:func:`mark`), so the test can tell a redone fold's summary
and notes from the ones a killed process had in memory.

Every model call is recorded in ``effects`` as it starts (``purpose``, ``fold_index``,
``round``). The report (``out``) holds each op's result, the error if any, and every
request the model received with its metadata. A crash point or the test's SIGKILL ends
the child with no report at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    FoldStrategy,
    LeaseLostError,
    LLMRequest,
    LLMSummaryFold,
    NoteLimits,
    ProjectedRepresentation,
    Representation,
    ScriptedLLM,
    StatefulAgentLoop,
    Store,
    Tool,
    Turn,
    Usage,
    VerbatimRepresentation,
    call_tool,
    call_tools,
    open_store,
    reply,
    tool,
)
from power_loop.context.tokens import EstimatingCounter, count_messages, count_tools
from power_loop.llm.scripted import ScriptedCall
from tests.durability.child import (
    EXIT_ERROR,
    EXIT_LEASE_LOST,
    EXIT_OK,
    ChildArgs,
    record,
    wait_for_file,
)

STRATEGIES = ("llm_summary", "agentic")
REPRESENTATIONS = ("verbatim", "projected")
KEEP_LAST_SENDS = 2
"""``AgenticFold(keep_last_sends=...)``: the sends a fold leaves verbatim."""
TOOL_ASK = "look up "
"""A user text starting with this makes the model call ``lookup`` before answering."""
CRASH_TEXT = TOOL_ASK + "the crash send"
"""The send that must fold (and then calls the tool)."""
DONE_PREFIX = "done: "
ANSWER_CHARS = 800
"""Length of a text answer: long, so that a few sends go over the budget."""
USAGE = Usage(input_tokens=0, output_tokens=20)
"""Reported by every answer: no input count, so the loop's estimate stays uncalibrated
(scale 1) and when a send folds depends on the estimate alone."""


@dataclass(frozen=True, slots=True)
class FoldArgs(ChildArgs):
    """What one fold child does (the :class:`ChildArgs` fields, and these).

    Attributes:
        strategy: ``llm_summary`` or ``agentic``.
        representation: ``verbatim`` or ``projected``.
        budget: The loop's ``context_budget_tokens``.
        fold_delay: Seconds a slow fold call waits before answering.
        slow_round: Which fold call is slow (its ``round``; ``LLMSummaryFold`` makes
            round 0 only); ``None``: none.
        fold_gate: If set, the slow fold call also waits for this file to exist.
        reused_call_id: The id of every ``lookup`` call (default: unique ids).
        note_pad: Characters added to each note a fold writes.
        lease_wait: The loop's ``lease_wait``.
    """

    strategy: str = "llm_summary"
    representation: str = "verbatim"
    budget: int = 10**9
    fold_delay: float = 0.0
    slow_round: int | None = None
    fold_gate: str | None = None
    reused_call_id: str | None = None
    note_pad: int = 0
    lease_wait: float | None = 300.0


def mark(pid: int) -> str:
    """How a fold names the process that wrote it."""
    return f"[by pid {pid}]"


def answer_text(asked: str) -> str:
    head = f"answer to {asked}: "
    filler = "the figures agree with the plan and nothing else changed; "
    return (head + filler * (ANSWER_CHARS // len(filler) + 1))[:ANSWER_CHARS]


def summary_text(fold_index: int, pid: int) -> str:
    return f"summary #{fold_index} {mark(pid)}: the user asked questions and got answers."


def note_texts(fold_index: int, pid: int, pad: int = 0) -> tuple[str, str]:
    """The two notes ``AgenticFold`` writes (each ``pad`` characters longer)."""
    tail = "." * pad
    return (f"fact {fold_index}a {mark(pid)}{tail}", f"fact {fold_index}b {mark(pid)}{tail}")


def script(*, pid: int, fold_delay: float = 0.0, slow_round: int | None = None,
           fold_gate: str | None = None, reused_call_id: str | None = None,
           note_pad: int = 0,
           on_call: Callable[[dict[str, Any]], None] | None = None,
           ) -> Callable[[LLMRequest], Turn | Awaitable[Turn]]:
    """The model. Sends: a long answer, or a ``lookup`` call then ``done: <result>``.
    Folds: the summary (``LLMSummaryFold``); two notes, then ``write_summary``
    (``AgenticFold``). Fold call ``slow_round`` waits ``fold_delay`` seconds first (and
    for ``fold_gate`` to exist, if given). ``reused_call_id``: every ``lookup`` call has
    this id, like a provider numbering the calls of each answer from 0. ``note_pad``
    makes each note that many characters longer, and a fold that finds two notes
    rewrites them instead of adding two more (as a model reading its notes would)."""

    async def gated(turn: Turn) -> Turn:
        assert fold_gate is not None
        await asyncio.to_thread(wait_for_file, Path(fold_gate))
        return turn

    def answer(request: LLMRequest) -> Turn | Awaitable[Turn]:
        turn = respond(request)
        meta = request.metadata
        if (fold_gate is not None and meta.get("purpose") == "fold"
                and meta.get("round", 0) == slow_round):
            return gated(turn)
        return turn

    def respond(request: LLMRequest) -> Turn:
        meta = request.metadata
        purpose = str(meta.get("purpose", "send"))
        fold_index = int(meta.get("fold_index", -1))
        round_no = int(meta.get("round", 0))
        if on_call is not None:
            on_call({"purpose": purpose, "fold_index": fold_index, "round": round_no,
                     "send_index": meta.get("send_index")})
        if purpose == "fold":
            delay = fold_delay if slow_round == round_no else 0.0
            if not request.tools:  # LLMSummaryFold: one plain summary call
                return reply(summary_text(fold_index, pid), delay=delay, usage=USAGE)
            if round_no == 0:
                first, second = note_texts(fold_index, pid, note_pad)
                kept = re.findall(r"^#(\d+): ", request.messages[-1].text, re.MULTILINE)
                if note_pad and len(kept) >= 2:  # long notes: rewrite them, do not pile up
                    return call_tools(
                        ("note_update", {"note_id": int(kept[0]), "text": first}),
                        ("note_update", {"note_id": int(kept[1]), "text": second}),
                        delay=delay, usage=USAGE)
                return call_tools(("note_add", {"text": first}), ("note_add", {"text": second}),
                                  delay=delay, usage=USAGE)
            return call_tool("write_summary", {"summary": summary_text(fold_index, pid)},
                             delay=delay, usage=USAGE)
        last = request.messages[-1]
        if last.role == "tool":
            return reply(DONE_PREFIX + last.tool_results[0].content, usage=USAGE)
        if last.text.startswith(TOOL_ASK):
            # ScriptedLLM numbers calls by the request's length, which a fold shortens:
            # the send index keeps ids unique in the log, as a real provider's are.
            call_id = reused_call_id or f"call_{meta.get('send_index')}_{len(request.messages)}"
            call = ScriptedCall("lookup", {"key": last.text[len(TOOL_ASK):]}, id=call_id)
            return Turn(tool_calls=(call,), usage=USAGE)
        return reply(answer_text(last.text), usage=USAGE)

    return answer


def make_tools() -> list[Tool]:
    @tool(safe_to_repeat=True)
    async def lookup(key: str) -> str:
        """Look a key up.

        Args:
            key: What to look up.
        """
        return f"value of {key}"

    return [lookup]


def make_config(strategy: str, representation: str, budget: int, *, lease_ttl: float = 30.0,
                lease_wait: float | None = 300.0, on_pending: str = "raise") -> AgentLoopConfig:
    fold: FoldStrategy = (LLMSummaryFold() if strategy == "llm_summary"
                          else AgenticFold(keep_last_sends=KEEP_LAST_SENDS))
    shown: Representation = (VerbatimRepresentation() if representation == "verbatim"
                             else ProjectedRepresentation())
    return AgentLoopConfig(lease_ttl=lease_ttl, lease_wait=lease_wait,
                           on_pending=on_pending,  # type: ignore[arg-type]
                           representation=shown, fold_strategy=fold,
                           context_budget_tokens=budget, notes=NoteLimits())


def make_loop(store: Store, strategy: str, representation: str, budget: int,
              llm: ScriptedLLM, **config: Any) -> StatefulAgentLoop:
    """The loop every fold child runs (also used by the test to pre-fill a session)."""
    return StatefulAgentLoop(llm=llm, store=store, tools=make_tools(),
                             config=make_config(strategy, representation, budget, **config))


def estimate(request: LLMRequest) -> int:
    """The request's input tokens as the loop estimates them (before calibration)."""
    counter = EstimatingCounter()
    return (count_messages(counter, request.messages) + count_tools(counter, request.tools)
            + counter.count_text(request.system or ""))


def request_json(request: LLMRequest) -> dict[str, Any]:
    """A request as the report holds it: what the provider is sent, the metadata, and
    its estimated size."""
    return {**request.to_json(), "metadata": dict(request.metadata),
            "estimate": estimate(request)}


async def run(args: FoldArgs, report: dict[str, Any], llm: ScriptedLLM) -> None:
    store = await open_store(args.dsn, table_prefix=args.prefix)
    try:
        loop = make_loop(store, args.strategy, args.representation, args.budget, llm,
                         lease_ttl=args.lease_ttl, lease_wait=args.lease_wait,
                         on_pending=args.on_pending)
        for op in args.ops:
            if op["op"] == "wait":
                await asyncio.to_thread(wait_for_file, Path(op["path"]))
                continue
            if op["op"] == "send":
                result = await loop.send(op["text"], args.session_id)
            elif op["op"] == "resume":
                resumed = await loop.resume(args.session_id)
                if resumed is None:
                    report["results"].append(None)
                    continue
                result = resumed
            else:
                raise ValueError(f"unknown op {op!r}")
            report["results"].append({
                "op": op["op"], "send_index": result.send_index,
                "final_text": result.final_text, "status": result.status,
                "stop_reason": result.stop_reason, "calls": len(llm.requests)})
    finally:
        await store.aclose()


def main(argv: list[str]) -> int:
    args = FoldArgs(**json.loads(argv[1]))
    pid = os.getpid()
    llm = ScriptedLLM(script(
        pid=pid, fold_delay=args.fold_delay, slow_round=args.slow_round,
        fold_gate=args.fold_gate, reused_call_id=args.reused_call_id, note_pad=args.note_pad,
        on_call=lambda facts: record(args.effects, {"event": "model", "pid": pid, **facts})))
    report: dict[str, Any] = {"pid": pid, "results": [], "error": None}
    code = EXIT_OK
    try:
        asyncio.run(run(args, report, llm))
    except LeaseLostError as exc:
        code = EXIT_LEASE_LOST
        report["error"] = {"type": type(exc).__name__, "code": exc.code, "message": str(exc)}
    except (Exception, asyncio.CancelledError) as exc:
        code = EXIT_ERROR
        report["error"] = {"type": type(exc).__name__, "code": getattr(exc, "code", None),
                           "message": str(exc), "traceback": traceback.format_exc()}
    report["requests"] = [request_json(r) for r in llm.requests]
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
