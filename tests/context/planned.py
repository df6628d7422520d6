"""A scripted model that follows a plan per send, and a runner that drives sessions.

:class:`PlannedModel` answers whatever the loop asks: a normal request gets the next step
of the plan of the current send (found by the send's user text; the step is the number
of tool-calling answers the send already has), and a fold request gets a summary (one
call for ``LLMSummaryFold``; a small tool session for ``AgenticFold``). It reports as
input tokens exactly the loop's own estimate of each request (times ``scale``), so the
calibration factor is known and budgets can be checked exactly. A step may fail once
(the send is left pending), hang until the test cancels the send, or call ``crash`` (a
simulated process death in a tool).

:class:`SessionRunner` plays plans through a loop, either one warm loop for everything or
a fresh (cold) loop for every call, and applies each plan's recovery when a send is left
pending (resume, heal then resume, abort, heal then abort).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from power_loop import LLMRequest, ScriptedLLM, StatefulAgentLoop, Usage
from power_loop.llm.scripted import ScriptedCall, Turn
from tests.context.support import Crash, ModelDown, is_fold_request, layout, request_tokens

Recovery = Literal["resume", "heal_resume", "abort", "heal_abort"]
Outcome = Literal["done", "pending", "cancelled"]


@dataclass(frozen=True)
class Call:
    """A tool call the model makes (``arguments`` may be raw, even malformed, JSON)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One model answer of a send.

    Attributes:
        calls: Tool calls (none: this is the final answer).
        text: The answer's text.
        fail: The first attempt at this step raises ModelDown after streaming ``partial``.
        cancel: The model hangs here until the test cancels the send.
    """

    calls: tuple[Call, ...] = ()
    text: str = ""
    fail: bool = False
    partial: str = ""
    cancel: bool = False


@dataclass(frozen=True)
class SendPlan:
    """A send: the user's text (unique in its session) and the model's steps."""

    text: str
    steps: tuple[Step, ...]
    recoveries: tuple[Recovery, ...] = ()


def fold_summary(request: LLMRequest) -> str:
    """The summary the planned model writes: which sends it saw, and the fold's index."""
    sends = re.findall(r"^--- send (\d+) ---$", request.messages[0].text, re.MULTILINE)
    return f"fold {request.metadata['fold_index']} read sends {','.join(sends)}"


class PlannedModel:
    """A ScriptedLLM following send plans; see the module docstring."""

    def __init__(self, plans: Sequence[SendPlan] = (), *, note_chars: int = 80,
                 scale: float = 1.0) -> None:
        self.plans = {plan.text: plan for plan in plans}
        self.note_chars = note_chars
        self.scale = scale
        """Reported input tokens over the loop's estimate (the calibration it will learn)."""
        self.failed: set[tuple[str, int]] = set()
        self.op = 0
        self.ops: list[int] = []
        """The runner's call number at each request (parallel to ``llm.requests``)."""
        self.hanging = asyncio.Event()
        self.llm = ScriptedLLM(self.answer)

    def add(self, plan: SendPlan) -> None:
        self.plans[plan.text] = plan

    @property
    def requests(self) -> list[LLMRequest]:
        return self.llm.requests

    async def answer(self, request: LLMRequest) -> Turn:
        self.ops.append(self.op)
        usage = Usage(input_tokens=round(request_tokens(request) * self.scale), output_tokens=5)
        if is_fold_request(request):
            return self._fold(request, usage)
        current = layout(request).current
        plan = self.plans[current[0].text]
        index = sum(1 for m in current if m.role == "assistant" and m.tool_calls)
        assert index < len(plan.steps), f"send {plan.text!r} has no step {index}"
        step = plan.steps[index]
        if step.fail and (plan.text, index) not in self.failed:
            self.failed.add((plan.text, index))
            return Turn(text=step.partial, error=ModelDown("the model is down"),
                        error_after=1 if step.partial else 0)
        if step.cancel:
            self.hanging.set()
            await asyncio.Event().wait()
        calls = tuple(ScriptedCall(c.name, c.arguments) for c in step.calls)
        return Turn(text=step.text, tool_calls=calls, usage=usage)

    def _fold(self, request: LLMRequest, usage: Usage) -> Turn:
        summary = fold_summary(request) if request.metadata.get("round", 0) == 0 else ""
        if not request.tools or request.tool_choice == "none":  # a summary call
            return Turn(text=summary or "final summary", usage=usage)
        fold_index, round_no = request.metadata["fold_index"], request.metadata["round"]
        written = f"fold {fold_index} summary"
        variants: list[list[Turn]] = [
            [Turn(tool_calls=(ScriptedCall("note_add", {"text": f"fact of fold {fold_index}"}),
                              ScriptedCall("note_delete", {"note_id": 999}))),
             Turn(tool_calls=(ScriptedCall("write_summary", {"summary": written}),))],
            [Turn(text=summary)],
            [Turn(tool_calls=(ScriptedCall("note_update", "{not json"),)),
             Turn(tool_calls=(ScriptedCall("note_add", {"text": "x" * (self.note_chars + 1)}),)),
             Turn(tool_calls=(ScriptedCall("write_summary", {"summary": written}),))],
        ]
        script = variants[fold_index % len(variants)]
        turn = script[min(round_no, len(script) - 1)]
        return Turn(text=turn.text, tool_calls=turn.tool_calls, usage=usage)


LoopFactory = Callable[[], StatefulAgentLoop]


class SessionRunner:
    """Plays plans on one session through a warm loop, or a cold loop per call."""

    def __init__(self, model: PlannedModel, session_id: str, make_loop: LoopFactory, *,
                 cold: bool) -> None:
        self.model = model
        self.session_id = session_id
        self._make_loop = make_loop
        self._warm = None if cold else make_loop()
        self.outcomes: list[Outcome] = []

    def loop(self) -> StatefulAgentLoop:
        return self._warm if self._warm is not None else self._make_loop()

    async def _call(self, action: Callable[[StatefulAgentLoop], Awaitable[object]]) -> Outcome:
        self.model.op += 1
        self.model.hanging.clear()

        async def run() -> object:
            return await action(self.loop())

        task = asyncio.create_task(run())
        hanging = asyncio.create_task(self.model.hanging.wait())
        await asyncio.wait({task, hanging}, return_when=asyncio.FIRST_COMPLETED)
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled(), "a cancelled send must end by re-raising the cancellation"
            return "cancelled"
        error = task.exception()
        if isinstance(error, (ModelDown, Crash)):
            return "pending"
        if error is not None:
            raise error
        return "done"

    async def play(self, plan: SendPlan) -> Outcome:
        """Send the plan's text, then recover until the send is no longer pending."""
        sid = self.session_id
        recoveries = list(plan.recoveries)
        outcome = await self._call(lambda loop: loop.send(plan.text, session_id=sid))
        while outcome == "pending":
            action = recoveries.pop(0) if recoveries else "resume"
            if action.startswith("heal"):
                await self.loop().heal_pending(sid)
            if action.endswith("abort"):
                assert await self.loop().abort_pending(sid)
                outcome = "done"
            else:
                outcome = await self._call(lambda loop: loop.resume(sid))
        self.outcomes.append(outcome)
        return outcome
