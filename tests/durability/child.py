"""A child process for the durability tests: one ``StatefulAgentLoop`` doing as it is told.

Run as ``python -m tests.durability.child '<json>'`` (see :class:`ChildArgs` for the
fields). The model is a :class:`~power_loop.ScriptedLLM` whose answer depends only on
the conversation (see :func:`answer`), so a fresh process that picks a send up after a
crash answers exactly as the dead one would have. Tools append their side effects to a
JSON Lines file, one line when they start and one when their effect is done, so the test
can count executions across processes.

The child writes what it did to ``out`` as JSON (results, the error if any, the lease
waits it reported, and every request its model received, as ``canonical_bytes()`` JSON)
and exits with :data:`EXIT_OK`, :data:`EXIT_LEASE_LOST` or :data:`EXIT_ERROR`. A crash
point (``POWER_LOOP_CRASH_AT``) or the test's own SIGKILL ends it with no output at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power_loop import (
    AgentLoopConfig,
    Event,
    LeaseLostError,
    LLMRequest,
    Message,
    NewMessage,
    ScriptedLLM,
    SessionBusyError,
    StatefulAgentLoop,
    Store,
    Tool,
    ToolContext,
    Turn,
    call_tools,
    reply,
    tool,
)
from power_loop.events import LeaseWait
from power_loop.llm.messages import encode_message

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LEASE_LOST = 3
"""The send was taken over by another process (``LeaseLostError``)."""

SAFE_TOOL = "safe_tool"
UNSAFE_TOOL = "unsafe_tool"
GATED_TOOL = "gated_tool"
"""Not safe to repeat, and needs approval before it runs."""
DONE_PREFIX = "done: "


@dataclass(frozen=True, slots=True)
class ChildArgs:
    """What one child does.

    Attributes:
        dsn, prefix: The store.
        session_id: The session every operation works on.
        ops: Run in order: ``{"op": "send", "text": ...}`` (and optionally
            ``"request_key"``), ``{"op": "resume"}``,
            ``{"op": "wait", "path": ...}`` (until that file exists), ``{"op": "heal"}``,
            ``{"op": "approve", "call_id": ...}``,
            ``{"op": "abort"}``, or
            ``{"op": "race_begin", "sends": n}`` (see :func:`race_begin`).
        tool: Which tool the model calls for each user message (or tools, see
            :func:`answer`).
        effects: The JSON Lines file tools record their side effects in.
        out: Where the child writes its report.
        tool_sleep: Seconds a tool waits between starting and doing its effect.
        slow_tool: If set, only this tool waits ``tool_sleep``.
        model_delay: Seconds the model takes to answer; each model call is recorded in
            ``effects`` as a ``model`` event as it starts.
        lease_ttl: The loop's ``lease_ttl``.
        on_pending: The loop's ``on_pending``.
        gate: If set, wait for this file to exist before the first operation (so that
            several children start their sends together).
        keep_requests: Put the model's requests in the report (``False`` for long runs:
            each request holds the whole conversation).
    """

    dsn: str
    prefix: str
    session_id: str
    ops: list[dict[str, Any]]
    tool: str
    effects: str
    out: str
    tool_sleep: float = 0.0
    slow_tool: str | None = None
    model_delay: float = 0.0
    lease_ttl: float = 30.0
    on_pending: str = "raise"
    gate: str | None = None
    keep_requests: bool = True

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def from_json(cls, text: str) -> ChildArgs:
        return cls(**json.loads(text))


def answer(tool_name: str, *, delay: float = 0.0,
           on_call: Callable[[], None] | None = None) -> Callable[[LLMRequest], Turn]:
    """The model: after a tool result, say done with it; after a user message, call the tool
    (``tool_name`` may name several, comma-separated: they are called at once, in order).

    It depends only on the request, so any process gives the same answer at the same point
    of the conversation. ``delay`` makes every answer slow; ``on_call`` runs as each call
    starts (before the delay).
    """

    def script(request: LLMRequest) -> Turn:
        if on_call is not None:
            on_call()
        last = request.messages[-1]
        if last.role == "tool":
            return reply(DONE_PREFIX + last.tool_results[0].content, delay=delay)
        names = tool_name.split(",")
        return call_tools(*[(name, {"tag": last.text}) for name in names], delay=delay)

    return script


def record(path: str, line: dict[str, Any]) -> None:
    """Append one line with a single ``write`` (O_APPEND), safe across processes."""
    data = (json.dumps(line, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_tools(effects: str, sleep: float, slow: str | None = None) -> list[Tool]:
    """The two tools: the same effect, one declared safe to repeat and one not.

    Each waits ``sleep`` seconds before its effect (only the ``slow`` one, if given).
    """

    async def effect(name: str, tag: str, ctx: ToolContext) -> str:
        facts = {"tool": name, "pid": os.getpid(), "session_id": ctx.session_id,
                 "send_index": ctx.send_index, "call_id": ctx.call_id,
                 "attempt": ctx.attempt, "key": ctx.idempotency_key, "tag": tag}
        record(effects, {"event": "start", **facts})
        if sleep and slow in (None, name):
            await asyncio.sleep(sleep)
        record(effects, {"event": "effect", **facts})
        return f"{name}({tag}) attempt {ctx.attempt}"

    @tool(name=SAFE_TOOL, safe_to_repeat=True)
    async def safe(tag: str, ctx: ToolContext) -> str:
        """Record an idempotent effect.

        Args:
            tag: What to record.
        """
        return await effect(SAFE_TOOL, tag, ctx)

    @tool(name=UNSAFE_TOOL)
    async def unsafe(tag: str, ctx: ToolContext) -> str:
        """Record an effect that must not happen twice.

        Args:
            tag: What to record.
        """
        return await effect(UNSAFE_TOOL, tag, ctx)

    @tool(name=GATED_TOOL, requires_approval=True)
    async def gated(tag: str, ctx: ToolContext) -> str:
        """Record an effect a person must approve first.

        Args:
            tag: What to record.
        """
        return await effect(GATED_TOOL, tag, ctx)

    return [safe, unsafe, gated]


def wait_for_file(path: Path) -> None:
    while not path.exists():
        time.sleep(0.005)


async def race_begin(store: Store, session_id: str, sends: int,
                     report: dict[str, Any]) -> None:
    """Open and at once finish ``sends`` sends, retrying a busy session without pausing.

    Straight on the store, with no backoff, so that several of these contend for the
    session's lease as hard as possible. The only refusal that can be right here is
    ``SessionBusyError``: every send is finished (and its lease released) in one
    transaction, so no send is ever pending while the lease is free.
    """
    owner = f"race-{os.getpid()}"
    first = [NewMessage(0, "user", encode_message(Message.user(f"race {owner}")))]
    busy = done = 0
    waits: list[float] = []
    while done < sends:
        try:
            start = await store.begin_send(session_id, first, owner=owner, ttl=30.0)
        except SessionBusyError as exc:
            busy += 1
            waits.append(exc.retry_after)
            continue
        assert start.lease is not None
        # Hold the lease a moment, as a send would: on SQLite a whole begin-and-finish
        # takes ~0.1 ms, over before the other racers have left their starting gate.
        await asyncio.sleep(0.002)
        await store.finish_send(session_id, start.send_index, release=start.lease,
                                stop_reason="end_turn")
        done += 1
    report["results"].append({"op": "race_begin", "sends": done, "busy": busy,
                              "retry_after_min": min(waits, default=0.0)})


async def run(args: ChildArgs, report: dict[str, Any], llm: ScriptedLLM) -> None:
    def on_event(event: Event) -> None:
        if isinstance(event, LeaseWait):
            report["lease_waits"].append({"holder": event.holder, "reason": event.reason,
                                          "send_index": event.send_index})

    config = AgentLoopConfig(lease_ttl=args.lease_ttl, on_event=on_event,
                             on_pending=args.on_pending)  # type: ignore[arg-type]
    tools = make_tools(args.effects, args.tool_sleep, args.slow_tool)
    async with StatefulAgentLoop(llm=llm, dsn=args.dsn, table_prefix=args.prefix,
                                 config=config, tools=tools) as loop:
        if args.gate is not None:
            await asyncio.to_thread(wait_for_file, Path(args.gate))
        for op in args.ops:
            if op["op"] == "send":
                result = await loop.send(op["text"], args.session_id,
                                         request_key=op.get("request_key"))
            elif op["op"] == "resume":
                resumed = await loop.resume(args.session_id)
                if resumed is None:
                    report["results"].append(None)
                    continue
                result = resumed
            elif op["op"] == "approve":
                result = await loop.approve(args.session_id, op["call_id"])
            elif op["op"] == "heal":
                report["results"].append({"op": "heal",
                                          "healed": await loop.heal_pending(args.session_id)})
                continue
            elif op["op"] == "abort":
                report["results"].append({"op": "abort",
                                          "aborted": await loop.abort_pending(args.session_id)})
                continue
            elif op["op"] == "wait":
                await asyncio.to_thread(wait_for_file, Path(op["path"]))
                continue
            elif op["op"] == "race_begin":
                await race_begin(loop.store, args.session_id, int(op["sends"]), report)
                continue
            else:
                raise ValueError(f"unknown op {op!r}")
            outcome = {
                "op": op["op"], "send_index": result.send_index,
                "final_text": result.final_text, "status": result.status,
                "stop_reason": result.stop_reason, "rounds": result.rounds}
            if result.waiting:
                outcome["waiting"] = [w.wait_id for w in result.waiting]
            report["results"].append(outcome)


def main(argv: list[str]) -> int:
    args = ChildArgs.from_json(argv[1])
    llm = ScriptedLLM(answer(
        args.tool, delay=args.model_delay,
        on_call=lambda: record(args.effects, {"event": "model", "pid": os.getpid()})))
    report: dict[str, Any] = {"pid": os.getpid(), "results": [], "error": None,
                              "lease_waits": []}
    code = EXIT_OK
    try:
        asyncio.run(run(args, report, llm))
    except LeaseLostError as exc:
        code = EXIT_LEASE_LOST
        report["error"] = {"type": type(exc).__name__, "code": exc.code, "message": str(exc),
                           "epoch": exc.epoch}
    except (Exception, asyncio.CancelledError) as exc:
        # A CancelledError nobody asked for is a finding too: report it like any error.
        code = EXIT_ERROR
        report["error"] = {"type": type(exc).__name__, "code": getattr(exc, "code", None),
                           "message": str(exc), "traceback": traceback.format_exc()}
    report["requests"] = ([json.loads(r.canonical_bytes()) for r in llm.requests]
                          if args.keep_requests else [])
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
