"""How older history is compacted once the rendered prefix is over budget.

A :class:`FoldStrategy` chooses how many of the oldest unfolded sends to fold (always
whole sends, so a tool call is never split from its result) and writes the summary
that stands for them, folding the previous summary in too. The loop journals each fold
(``started``, then ``done`` with the summary and the notes written, in one transaction),
so a fold cut off by a crash is simply done again and a fold is never half-applied.

* :class:`LLMSummaryFold`: one summary call.
* :class:`AgenticFold`: a bounded tool loop that writes the summary and durable notes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from power_loop.context.notes import NoteLedger, NoteLimits
from power_loop.errors import InvalidArgumentError
from power_loop.llm.contract import (
    as_power_loop_error,
    check_item,
    checked_answer,
    close_quietly,
    is_process_exit,
    protocol_error,
)
from power_loop.llm.messages import Message, ToolCallPart, ToolResultPart, Usage
from power_loop.llm.service import LLMRequest, LLMResponse, LLMService, ToolSpec
from power_loop.store.context_ops import NoteRecord

SUMMARY_SYSTEM = (
    "You compress the history of a conversation between a user and an AI agent. Keep what "
    "later turns will need: the user's goals and preferences, decisions made, facts "
    "learned (with numbers, names and ids exactly), open tasks and their state, and what "
    "tools did. Drop small talk and repetition. Write plain prose or terse bullet points.")


@dataclass(frozen=True, slots=True)
class SendCost:
    """One unfolded finished send and its rendered size in tokens."""

    send_index: int
    tokens: int


@dataclass(frozen=True, slots=True)
class FoldJob:
    """What a strategy folds.

    Attributes:
        sends: The sends to fold, oldest first, verbatim from the log.
        previous_summary: The summary of earlier folds, to fold in as well.
        notes: The session's notes now.
        llm: The loop's model (a strategy may use its own instead).
        note_limits: The bounds notes must respect.
    """

    session_id: str
    fold_index: int
    sends: Sequence[tuple[int, Sequence[Message]]]
    previous_summary: str | None
    notes: Sequence[NoteRecord]
    llm: LLMService
    note_limits: NoteLimits


@dataclass(frozen=True, slots=True)
class FoldOutcome:
    """What a fold produced: the summary, note operations, and what it cost."""

    summary: str
    note_ops: Sequence[Mapping[str, Any]] = ()
    usage: Usage = field(default_factory=Usage)
    calls: int = 0


@runtime_checkable
class FoldStrategy(Protocol):
    """How to compact older history. Implement it for a strategy of your own."""

    @property
    def name(self) -> str:
        """A short lowercase name, recorded in the fold journal."""
        ...

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        """How many of the oldest ``sends`` to fold (at least 1, at most all).

        ``budget_tokens`` is what the finished sends may take: the context budget less
        what every request carries besides them (system prompt, tools, summary, notes,
        the current send, the memory reserve).
        """
        ...

    async def fold(self, job: FoldJob) -> FoldOutcome:
        """Write the summary (and note operations) for ``job``."""
        ...


def transcript(job: FoldJob, max_chars: int) -> str:
    """The sends to fold as plain text, the previous summary first, within ``max_chars``."""
    lines: list[str] = []
    if job.previous_summary:
        lines.append(f"Summary of the conversation before these turns:\n{job.previous_summary}\n")
    for index, messages in job.sends:
        lines.append(f"--- send {index} ---")
        for message in messages:
            lines.extend(_message_lines(message))
    text = "\n".join(lines)
    if len(text) > max_chars:
        head = max_chars // 3
        text = (text[:head] + f"\n[... {len(text) - max_chars} characters omitted ...]\n"
                + text[-(max_chars - head):])
    return text


def _message_lines(message: Message) -> list[str]:
    lines = []
    if message.text:
        lines.append(f"{message.role}: {message.text}")
    for call in message.tool_calls:
        lines.append(f"assistant called {call.name}({call.arguments})")
    for result in message.tool_results:
        status = "error" if result.is_error else "result"
        lines.append(f"{result.name} {status}: {result.content}")
    return lines


FOLD_FAILED = ("The fold is journaled as failed and the send goes on with its history "
               "unfolded; the next send over the budget folds again")
"""What a failed fold leads to (the sentence ending its error's message)."""


async def complete(llm: LLMService, request: LLMRequest) -> LLMResponse:
    """Run one model call to its end and return the response, checked.

    The service is held to the same contract as in a send (power_loop.llm.contract):
    whatever it raises becomes an :class:`~power_loop.LLMError`, a stream of the wrong
    shape or an answer power_loop cannot use an :class:`~power_loop.LLMResponseError`.
    Only the cancellation of the caller and a process exit get through as they are.
    """
    response: LLMResponse | None = None
    stream: object = None
    try:
        items = llm.stream(request)
        stream = items
        async for raw in items:
            item = check_item(raw, llm, then=FOLD_FAILED)
            if response is not None:
                raise protocol_error(llm, "it yielded more after its LLMResponse",
                                     then=FOLD_FAILED)
            if isinstance(item, LLMResponse):
                response = item
        if response is None:
            raise protocol_error(llm, "it ended without an LLMResponse", then=FOLD_FAILED)
        return checked_answer(response, llm, then=FOLD_FAILED)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the send is being stopped
        failure: BaseException = exc  # one the service met on its own: a failure
    except BaseException as exc:
        if is_process_exit(exc):
            raise
        failure = exc
    error = as_power_loop_error(failure, llm, then=FOLD_FAILED)
    await close_quietly(stream)
    if error is failure:
        raise error
    raise error from failure


class LLMSummaryFold:
    """One summary call folds everything but the most recent sends.

    Args:
        llm: The model writing summaries (default: the loop's model).
        max_summary_tokens: The summary call's output cap.
        keep_fraction: Share of the room for finished sends (the budget less system
            prompt, tools, summary, notes and the current send) left to recent ones.
        transcript_chars: The most transcript characters the summary call reads.
    """

    name: ClassVar[str] = "llm_summary"

    def __init__(self, llm: LLMService | None = None, *, max_summary_tokens: int = 800,
                 keep_fraction: float = 0.5, transcript_chars: int = 120_000) -> None:
        if not 0 <= keep_fraction < 1:
            raise InvalidArgumentError("LLMSummaryFold.keep_fraction must be in [0, 1)")
        self.llm = llm
        self.max_summary_tokens = max_summary_tokens
        self.keep_fraction = keep_fraction
        self.transcript_chars = transcript_chars

    def __repr__(self) -> str:
        return (f"LLMSummaryFold(max_summary_tokens={self.max_summary_tokens}, "
                f"keep_fraction={self.keep_fraction})")

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        room, kept = budget_tokens * self.keep_fraction, 0
        for send in reversed(sends):
            if send.tokens > room:
                break
            room -= send.tokens
            kept += 1
        return min(len(sends), max(1, len(sends) - kept))

    async def fold(self, job: FoldJob) -> FoldOutcome:
        llm = self.llm or job.llm
        prompt = ("Summarize this conversation history for the agent's future turns.\n\n"
                  + transcript(job, self.transcript_chars))
        request = LLMRequest(messages=(Message.user(prompt),), system=SUMMARY_SYSTEM,
                             max_output_tokens=self.max_summary_tokens,
                             metadata={"purpose": "fold", "session_id": job.session_id,
                                       "fold_index": job.fold_index})
        response = await complete(llm, request)
        summary = response.message.text.strip() or "(nothing worth keeping)"
        return FoldOutcome(summary, (), response.usage, 1)


_AGENT_TOOLS = (
    ToolSpec("note_add", "Save a durable note (a fact, decision or open task to remember).",
             {"type": "object", "properties": {"text": {"type": "string"}},
              "required": ["text"], "additionalProperties": False}),
    ToolSpec("note_update", "Replace the text of an existing note.",
             {"type": "object", "properties": {"note_id": {"type": "integer"},
                                               "text": {"type": "string"}},
              "required": ["note_id", "text"], "additionalProperties": False}),
    ToolSpec("note_delete", "Delete a note that is no longer true or useful.",
             {"type": "object", "properties": {"note_id": {"type": "integer"}},
              "required": ["note_id"], "additionalProperties": False}),
    ToolSpec("write_summary", "Write the summary of the history; this ends the fold.",
             {"type": "object", "properties": {"summary": {"type": "string"}},
              "required": ["summary"], "additionalProperties": False}),
)


class AgenticFold:
    """A bounded tool loop folds all but the last sends, writing a summary and notes.

    The model reads the history to fold and the current notes, may add, update and
    delete notes (within the loop's note bounds), and ends by writing the summary. Its
    note operations are applied with the fold, atomically.

    Args:
        keep_last_sends: Recent sends kept unfolded (at least one send is folded, and
            more when the kept ones alone would not fit the budget).
        llm: The model running the fold (default: the loop's model).
        max_rounds: Model calls one fold may make.
        max_summary_tokens: Output cap of each of those calls.
        transcript_chars: The most transcript characters the fold reads.
    """

    name: ClassVar[str] = "agentic"

    def __init__(self, keep_last_sends: int = 4, *, llm: LLMService | None = None,
                 max_rounds: int = 6, max_summary_tokens: int = 800,
                 transcript_chars: int = 120_000) -> None:
        if keep_last_sends < 0 or max_rounds < 1:
            raise InvalidArgumentError("AgenticFold needs keep_last_sends >= 0, max_rounds >= 1")
        self.keep_last_sends = keep_last_sends
        self.llm = llm
        self.max_rounds = max_rounds
        self.max_summary_tokens = max_summary_tokens
        self.transcript_chars = transcript_chars

    def __repr__(self) -> str:
        return f"AgenticFold(keep_last_sends={self.keep_last_sends}, max_rounds={self.max_rounds})"

    def choose(self, sends: Sequence[SendCost], budget_tokens: int) -> int:
        # All but the last keep_last_sends; more when those alone would not fit.
        count = min(len(sends), max(1, len(sends) - self.keep_last_sends))
        kept = sum(s.tokens for s in sends[count:])
        while count < len(sends) and kept > budget_tokens:
            kept -= sends[count].tokens
            count += 1
        return count

    async def fold(self, job: FoldJob) -> FoldOutcome:
        llm = self.llm or job.llm
        ledger = NoteLedger(job.notes, job.note_limits)
        prompt = ("Fold this conversation history. First save, as notes, the facts, decisions "
                  "and open tasks the agent must not lose (update or delete stale notes); then "
                  "call write_summary with a summary of the history.\n\n"
                  f"Current notes:\n{ledger.render() or '(none)'}\n\n"
                  + transcript(job, self.transcript_chars))
        messages: list[Message] = [Message.user(prompt)]
        usage, calls = Usage(), 0
        for round_no in range(self.max_rounds):
            last = round_no == self.max_rounds - 1
            if last:
                messages.append(Message.user("Write the summary now, as plain text."))
            request = LLMRequest(
                messages=tuple(messages), system=SUMMARY_SYSTEM, tools=_AGENT_TOOLS,
                tool_choice="none" if last else "auto",
                max_output_tokens=self.max_summary_tokens,
                metadata={"purpose": "fold", "session_id": job.session_id,
                          "fold_index": job.fold_index, "round": round_no})
            response = await complete(llm, request)
            usage, calls = usage + response.usage, calls + 1
            answer = response.message
            tool_calls = () if last else tuple(
                ToolCallPart(f"fold_{round_no}_{i}", c.name, c.arguments)  # ids unique
                for i, c in enumerate(answer.tool_calls))
            if not tool_calls:
                summary = answer.text.strip() or "(nothing worth keeping)"
                return FoldOutcome(summary, ledger.ops, usage, calls)
            messages.append(Message("assistant", tuple(
                p for p in answer.parts if not isinstance(p, ToolCallPart)) + tool_calls))
            written: str | None = None
            for call in tool_calls:
                content, done = self._run(call, ledger)
                messages.append(Message.tool_result(ToolResultPart(
                    call.id, call.name, content, content.startswith("Error"))))
                written = done if done is not None else written
            if written is not None:
                return FoldOutcome(written, ledger.ops, usage, calls)
        raise AssertionError("unreachable: the last round has no tools")

    @staticmethod
    def _run(call: ToolCallPart, ledger: NoteLedger) -> tuple[str, str | None]:
        try:
            args = json.loads(call.arguments or "{}")
        except (ValueError, RecursionError):  # RecursionError: nested too deep to read
            return "Error: the arguments are not valid JSON.", None
        if not isinstance(args, dict):
            return "Error: the arguments must be a JSON object.", None
        try:
            if call.name == "write_summary":
                summary = args.get("summary")
                if not isinstance(summary, str) or not summary.strip():
                    return "Error: summary must be non-empty text.", None
                return "Summary saved.", summary.strip()
            if call.name == "note_add":
                return ledger.add(args.get("text")), None
            if call.name == "note_update":
                return ledger.update(args.get("note_id"), args.get("text")), None
            if call.name == "note_delete":
                return ledger.delete(args.get("note_id")), None
        except InvalidArgumentError as exc:
            return f"Error: {exc.message}", None
        name = call.name if len(call.name) <= 64 else call.name[:64] + "..."
        return f"Error: unknown tool {name!r}.", None
