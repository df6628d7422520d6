"""Shared pieces of the context-engineering tests.

The four representation x fold pairings, the loop's own token estimate of a request, the
request layout the engine promises (summary, finished sends, context message, current
send), test tools (one that fails, one that "crashes" the process), a deterministic
:class:`MemoryProvider`, and direct calls of the recall tools with their expected text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from power_loop import (
    AgenticFold,
    EstimatingCounter,
    FoldStrategy,
    LLMRequest,
    LLMSummaryFold,
    Message,
    PowerLoopError,
    ProjectedRepresentation,
    Representation,
    SendResult,
    StatefulAgentLoop,
    Store,
    VerbatimRepresentation,
    tool,
)
from power_loop.context.active import ACTIVE_RUN, ActiveRun
from power_loop.context.tokens import count_message, count_messages, count_tools
from power_loop.llm.messages import decode_message
from power_loop.store.records import MessageRecord
from power_loop.tools.tool import ToolError

COUNTER = EstimatingCounter()


@dataclass(frozen=True)
class Pairing:
    """One representation x fold strategy combination (fresh objects on each call)."""

    name: str
    representation: Callable[[], Representation]
    fold: Callable[[], FoldStrategy]


def pairings(*, max_chars: int = 80, keep_last_sends: int = 2) -> list[Pairing]:
    """Every pairing, projected sends clipped to ``max_chars``."""
    reps: list[tuple[str, Callable[[], Representation]]] = [
        ("verbatim", VerbatimRepresentation),
        ("projected", lambda: ProjectedRepresentation(max_chars=max_chars))]
    folds: list[tuple[str, Callable[[], FoldStrategy]]] = [
        ("summary", LLMSummaryFold),
        ("agentic", lambda: AgenticFold(keep_last_sends=keep_last_sends))]
    return [Pairing(f"{r}-{f}", rep, fold) for r, rep in reps for f, fold in folds]


PAIRING_NAMES = [p.name for p in pairings()]


def pairing(name: str, **options: int) -> Pairing:
    return next(p for p in pairings(**options) if p.name == name)


# -- the request, as the loop estimates and lays it out ---------------------------------


def request_tokens(request: LLMRequest) -> int:
    """The loop's estimate of a request (system, tools, every message)."""
    return (COUNTER.count_text(request.system or "") + count_tools(COUNTER, request.tools)
            + count_messages(COUNTER, request.messages))


def message_tokens(messages: Sequence[Message]) -> int:
    return count_messages(COUNTER, messages)


def one_message_tokens(message: Message) -> int:
    return count_message(COUNTER, message)


def is_fold_request(request: LLMRequest) -> bool:
    return request.metadata.get("purpose") == "fold"


@dataclass(frozen=True)
class Layout:
    """A loop request cut where the engine says it is cut.

    Attributes:
        summary: The summary message of the latest fold (first), if any.
        finished: The rendered finished sends after the fold.
        context: The notes/memory message right after the cached prefix, if any.
        current: The current send's messages (its user message first).
    """

    summary: Message | None
    finished: tuple[Message, ...]
    context: Message | None
    current: tuple[Message, ...]


def layout(request: LLMRequest) -> Layout:
    """Cut a loop request into its parts, asserting the order the engine promises."""
    messages = request.messages
    prefix, rest = messages[:request.cache_prefix], messages[request.cache_prefix:]
    summary = prefix[0] if prefix and "summary" in prefix[0].meta else None
    finished = prefix[1:] if summary is not None else prefix
    for message in finished:
        assert "summary" not in message.meta, "a summary message after the first message"
        assert not message.meta.get("context"), "the context message inside the cached prefix"
    context = rest[0] if rest and rest[0].meta.get("context") else None
    current = rest[1:] if context is not None else rest
    assert current and current[0].role == "user", "the current send does not start the tail"
    for message in current:
        assert not message.meta.get("context") and "summary" not in message.meta, (
            "a context or summary message inside the current send")
    return Layout(summary, tuple(finished), context, tuple(current))


def summary_text(message: Message) -> str:
    """The fold summary carried by the summary message."""
    head, _, body = message.text.partition(":\n")
    assert head.startswith("[power_loop] Summary of the conversation"), head
    return body


# -- tools ------------------------------------------------------------------------------


class ModelDown(PowerLoopError):
    """What a provider adapter raises when the model cannot be reached."""

    code: ClassVar[str] = "model_down"


class Crash(BaseException):
    """A process dying in the middle of a tool: nothing after it runs."""


@tool
async def echo(text: str) -> str:
    """Say the text back.

    Args:
        text: What to say.
    """
    return f"echo: {text}"


@tool(safe_to_repeat=True)
async def lookup(key: str) -> str:
    """Read a value (harmless to repeat).

    Args:
        key: Which value.
    """
    return f"value of {key}"


@tool
async def boom(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise ToolError(f"Error: boom because {reason}")


@tool
async def crash() -> str:
    """Kills the process running it (simulated)."""
    raise Crash


TOOLS = [echo, lookup, boom, crash]


class EchoMemory:
    """A deterministic MemoryProvider: recalls a line naming the query, learns nothing."""

    def __init__(self, text: str = "remembered") -> None:
        self.text = text
        self.queries: list[tuple[str, str, int]] = []

    async def recall(self, session_id: str, query: str, *, budget_tokens: int) -> str | None:
        self.queries.append((session_id, query, budget_tokens))
        return f"{self.text} about {query[:24]}"

    async def remember(self, session_id: str, result: SendResult) -> None:
        return None


# -- the recall tools, called directly --------------------------------------------------


async def _no_notes(op: Mapping[str, Any]) -> Mapping[str, Any]:
    raise AssertionError("the recall tools write no notes")


async def call_recall(loop: StatefulAgentLoop, session_id: str, name: str,
                      **arguments: Any) -> str:
    """Run a recall tool as the session's next send would (the ActiveRun context set)."""
    store = loop.store
    session = await store.get_session(session_id)
    run = ActiveRun(store, session_id, session.send_count, session.lease_epoch, _no_notes)
    found = loop.tools.get(name)
    assert found is not None, f"{name} is not registered"
    token = ACTIVE_RUN.set(run)
    try:
        result = await found.fn(**arguments)
    finally:
        ACTIVE_RUN.reset(token)
    assert isinstance(result, str)
    return result


def rendered(records: Sequence[MessageRecord]) -> str:
    """Messages as the recall tools document them: ``[seq] role:`` blocks, verbatim parts."""
    blocks = []
    for record in records:
        message = decode_message(record.role, record.body)
        lines = [f"[{record.seq}] {message.role}:"]
        if message.text:
            lines.append(message.text)
        lines.extend(f"call {c.name} {c.arguments}" for c in message.tool_calls)
        lines.extend(f"result of {r.name}{' (error)' if r.is_error else ''}: {r.content}"
                     for r in message.tool_results)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


async def delete_projections(store: Store, session_id: str) -> None:
    """Drop a session's projection rows (derived data the loop must rebuild)."""
    dialect = store._database.dialect
    table = dialect.quote(f"{store.table_prefix}projections")
    async with store._database.transaction() as conn:
        await conn.execute(dialect.render(f"DELETE FROM {table} WHERE session_id = ?"),
                           [session_id])
