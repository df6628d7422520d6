"""The send's waiting state: tool calls that need a person before they run.

Before a round's tool calls run, :func:`hold` looks at each: a call of a tool with
``requires_approval`` (or whose policy says so for these arguments) waits for
``approve``/``reject``; a call of ``ask_user`` waits for ``answer``. If any call of the
round waits, **none of the round runs**: every call gets a wait row (the others as
``held``), the session lease is released in the same transaction, and the send stops
with ``stop_reason="awaiting_approval"`` (or ``"awaiting_input"`` when only questions
wait), status ``waiting``. Holding the whole round keeps results in call order and
means nothing happens before the person has seen everything the model asked for.

When the last wait of the round is decided, the send continues (in the deciding
process, or a worker's): rejected and expired calls get their reason as an error
result, answered questions their answer, and approved and held calls run, each one
moved to ``executing`` first by a conditional write under the session lease, so it
runs at most once. The write that stores its result moves it on to ``done``
(:func:`finished_waits`); a call whose result is lost (its process died mid-call, or
the send was cancelled while it ran) stays ``executing``: its outcome is unknown.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import fastjsonschema

from power_loop.events.types import SendFinished, ToolCallFinished
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart
from power_loop.loop.accounting import send_usage
from power_loop.loop.results import SendResult
from power_loop.store.waits import NewWait, WaitRecord, wait_id_for, waits_of
from power_loop.tools.registry import truncate
from power_loop.tools.tool import Tool

if TYPE_CHECKING:
    from power_loop.loop.driver import SendRun

AWAITING_APPROVAL = "awaiting_approval"
AWAITING_INPUT = "awaiting_input"
LOST_RESULTS = frozenset({"unknown_outcome", "cancelled"})
"""The stand-ins power_loop stores for a started call's lost result (``synthetic``)."""


def rejection_text(wait: WaitRecord) -> str:
    """The result the model reads for a rejected or expired call."""
    if wait.status == "expired":
        return ("Nobody approved this call in time, so it was not run. Do not retry it "
                "unless the user asks.")
    reason = f" Reason: {wait.decision}" if wait.decision else ""
    return f"The user rejected this call, so it was not run.{reason}"


def gate(found: Tool | None, call: ToolCallPart) -> tuple[str | None, str | None]:
    """Whether ``call`` waits: (``approval``/``input``/``None``, a policy failure).

    Calls the registry will refuse anyway (unknown tool, bad arguments) never wait:
    they run nothing.
    """
    if found is None or (found.requires_approval is False and not found.asks_user):
        return None, None
    try:
        arguments = call.parsed_arguments()
    except ValueError:
        return None, None
    if not isinstance(arguments, dict):
        return None, None
    try:
        found.validate(arguments)
    except fastjsonschema.JsonSchemaValueException:
        return None, None
    if found.asks_user:
        return "input", None
    policy = found.requires_approval
    if policy is True:
        return "approval", None
    assert callable(policy)
    try:
        verdict = policy(arguments)
        if inspect.isawaitable(verdict):
            if inspect.iscoroutine(verdict):
                verdict.close()
            raise TypeError("the policy must be a plain function returning a bool, not async")
        needs = bool(verdict)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"[:500]
        return None, (f"Error: the approval policy of tool {call.name!r} failed ({text}), "
                      "so the call was not run.")
    return ("approval" if needs else None), None


async def hold(run: SendRun, calls: Sequence[ToolCallPart]) -> SendResult | None:
    """Stop the send if the round waits on a person; else prepare the round to run.

    Returns the ``waiting`` result, or ``None`` when the round may run (with the
    decided calls' results put in ``run.decided`` and the approved calls that never
    started marked fresh).
    """
    tools = run._deps.tools
    kinds: dict[str, str] = {}
    refused: dict[str, str] = {}
    for call in calls:
        kind, problem = gate(tools.get(call.name), call)
        if problem is not None:
            refused[call.id] = problem
        elif kind is not None:
            kinds[call.id] = kind
    fresh = all(c.id in run._fresh_calls for c in calls)
    rows: Mapping[str, WaitRecord] = {}
    if kinds or not fresh:
        # Rows decide for the calls that have them; a fresh round has none.
        waits = waits_of(run._deps.store)
        found = {w.wait_id: w for w in await waits.of_send_index(run.session_id,
                                                                  run.send_index)}
        rows = {c.id: found[wait_id_for(c.id)] for c in calls if wait_id_for(c.id) in found}
    new = [c for c in calls if c.id in kinds and c.id not in rows]
    if new or any(w.status == "waiting" for w in rows.values()):
        return await _wait(run, calls, kinds, refused, rows)
    for call in calls:
        row = rows.get(call.id)
        if row is None and call.id in refused:
            _decide(run, call, refused[call.id], True, "policy_failed")
        elif row is None:
            continue
        elif row.status in ("rejected", "expired"):
            _decide(run, call, row.decision if row.kind == "held" and row.decision
                    else rejection_text(row), True, row.status)
        elif row.status == "answered":
            _decide(run, call, row.decision or "", False, None)
    run.started_waits.update((c.id, rows[c.id].wait_id) for c in calls if c.id in rows
                             and rows[c.id].status in ("approved", "held", "executing"))
    starting = {rows[c.id].wait_id: c.id for c in calls
                if c.id in rows and rows[c.id].status in ("approved", "held")}
    if starting:
        started = await waits_of(run._deps.store).start(run.session_id, list(starting),
                                                        epoch=run.lease.epoch)
        run._fresh_calls.update(starting[w] for w in started)
    return None


def finished_waits(run: SendRun, messages: Sequence[Message]) -> tuple[str, ...]:
    """The waits of started calls whose outcome ``messages`` stores (to become ``done``
    in the same write): not those given a stand-in for a lost result."""
    started = run.started_waits
    if not started:
        return ()
    return tuple(started[part.call_id] for m in messages
                 if m.meta.get("synthetic") not in LOST_RESULTS
                 for part in m.tool_results if part.call_id in started)


def _decide(run: SendRun, call: ToolCallPart, text: str, is_error: bool,
            why: str | None) -> None:
    """Give ``call`` its result without running it (capped like a tool's output)."""
    found = run._deps.tools.get(call.name)
    text = truncate(text, (found.max_output_chars if found is not None else None)
                    or run._deps.limits.max_output_chars)
    run.decided[call.id] = Message.tool_result(ToolResultPart(call.id, call.name, text,
                                                              is_error))
    run._event(ToolCallFinished, call_id=call.id, name=call.name, output=text,
               is_error=is_error, duration=0.0, synthetic=why)


async def _wait(run: SendRun, calls: Sequence[ToolCallPart], kinds: Mapping[str, str],
                refused: Mapping[str, str], rows: Mapping[str, WaitRecord]) -> SendResult:
    """Record the round's waits, let the session go, and return the waiting result."""
    new: list[NewWait] = []
    for call in calls:
        if call.id in rows:
            continue
        found = run._deps.tools.get(call.name)
        kind, wait_id = kinds.get(call.id, "held"), wait_id_for(call.id)
        if call.id in refused:
            new.append(NewWait(wait_id, "held", call.name, call.arguments, status="rejected",
                               decision=refused[call.id]))
        else:
            new.append(NewWait(wait_id, kind, call.name, call.arguments,
                               found.approval_expires if found and kind == "approval"
                               else None))
    async with run._lease_lock:
        run._stopped = True
        waiting = await waits_of(run._deps.store).hold(run.session_id, run.send_index, new,
                                                      lease=run.lease)
        run.settled = True
    tail = run.window.messages
    stop = (AWAITING_APPROVAL if any(w.kind == "approval" for w in waiting)
            else AWAITING_INPUT)
    result = SendResult(run.session_id, run.send_index, "", send_usage(tail),
                        sum(1 for m in tail if m.role == "assistant"), stop, "waiting",
                        tuple(tail), waiting=tuple(waiting))
    run._event(SendFinished, result=result)
    return result


def describe(waiting: Sequence[WaitRecord]) -> str:
    """One line per wait, for messages and the CLI."""
    return "; ".join(f"{w.wait_id} ({w.kind} for {w.tool_name})" for w in waiting)


def as_arguments(wait: WaitRecord) -> Any:
    """A wait's arguments decoded, or the raw text when they are not JSON."""
    import json

    try:
        return json.loads(wait.arguments)
    except ValueError:
        return wait.arguments
