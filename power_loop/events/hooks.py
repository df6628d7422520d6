"""Hooks: code of yours that runs at fixed points of a send, and may change what happens.

There are four hook points, each with a "before" and an "after" method:

=============  =====================  ===============================================
point          method                 may return
=============  =====================  ===============================================
send           ``on_send_start``      ``str`` (the user's text, changed), ``Reply``
                                      (answer without the model), ``Veto``, ``None``
               ``on_send_end``        ``None`` (observe only: the send is stored)
model call     ``on_model_request``   ``LLMRequest`` (changed, for this call only),
                                      ``LLMResponse`` (answer without the model),
                                      ``Veto`` (end the send), ``None``
               ``on_model_response``  ``LLMResponse`` (the answer, changed), ``None``
tool call      ``on_tool_start``      ``ToolCallPart`` (new arguments),
                                      ``ToolResultPart`` (answer without the tool),
                                      ``Veto`` (an error result the model reads),
                                      ``None``
               ``on_tool_end``        ``ToolResultPart`` (the result, changed), ``None``
fold           ``on_fold_start``      ``FoldOutcome`` (fold without the strategy),
                                      ``Veto`` (no fold this time), ``None``
               ``on_fold_end``        ``FoldOutcome`` (the fold, changed), ``None``
=============  =====================  ===============================================

``None`` always means "go on unchanged". Hooks run in the order of
``AgentLoopConfig(hooks=[...])``: each sees what the ones before it changed, and the
first ``Reply``, ``LLMResponse``, ``ToolResultPart``, ``FoldOutcome`` or ``Veto`` returned
by a "before" method ends that point's chain (the later hooks' "before" methods are not
called; every "after" method still is). See docs/hooks.md for what is stored and which
hooks run again when a send is resumed.

Subclass :class:`Hooks` and override the methods you need; the loop skips the others at
no cost. :class:`Hook` is the protocol the loop accepts (an object of your own with all
eight coroutine methods works as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from power_loop.llm.messages import ToolCallPart, ToolResultPart
from power_loop.llm.service import LLMRequest, LLMResponse
from power_loop.tools.context import ToolContext

if TYPE_CHECKING:
    from power_loop.context.fold import FoldJob, FoldOutcome
    from power_loop.loop.results import SendResult

__all__ = ["HOOK_POINTS", "Hook", "Hooks", "Reply", "SendContext", "Veto"]

HOOK_POINTS = ("on_send_start", "on_send_end", "on_model_request", "on_model_response",
               "on_tool_start", "on_tool_end", "on_fold_start", "on_fold_end")
"""Every hook method, in the order a send reaches them."""


@dataclass(frozen=True, slots=True)
class Veto:
    """Refuse what is about to happen.

    At a send: nothing is stored and the send raises ``SendVetoedError``. At a model
    call: the model is not called and the send ends (stop reason ``vetoed``) with
    ``reason`` stored as its answer. At a tool call: the tool does not run; the model
    reads ``reason`` as an error result. At a fold: the fold is journaled ``failed``
    (code ``fold_vetoed``) and the send goes on unfolded.

    Attributes:
        reason: Why, written for whoever reads it (the caller, the model, the journal).
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer a send without calling the model (``on_send_start`` only).

    The user's message and this answer are stored together when the send begins; the
    send ends with stop reason ``short_circuit``.

    Attributes:
        text: The answer.
    """

    text: str


@dataclass(frozen=True, slots=True)
class SendContext:
    """The send a hook runs in.

    Attributes:
        session_id: The session.
        send_index: The send's index; ``None`` in ``on_send_start`` (it runs before the
            send is begun).
        source: Who is speaking: ``user``, ``timer``...
        session_metadata: The session's metadata (empty in ``on_send_start``).
    """

    session_id: str
    send_index: int | None
    source: str = "user"
    session_metadata: Any = field(default_factory=lambda: MappingProxyType({}))


@runtime_checkable
class Hook(Protocol):
    """What a hook implements: one coroutine method per hook point (see the module doc)."""

    async def on_send_start(self, ctx: SendContext, text: str) -> str | Reply | Veto | None:
        """Before anything of a new send is stored (never again on resume)."""
        ...

    async def on_send_end(self, ctx: SendContext, result: SendResult) -> None:
        """After a send's final write, in the process that finished it (at most once)."""
        ...

    async def on_model_request(self, ctx: SendContext, request: LLMRequest,
                               ) -> LLMRequest | LLMResponse | Veto | None:
        """Before each model call whose answer is not stored (again on resume)."""
        ...

    async def on_model_response(self, ctx: SendContext, request: LLMRequest,
                                response: LLMResponse) -> LLMResponse | None:
        """After each answer (the model's or a hook's), before it is stored."""
        ...

    async def on_tool_start(self, ctx: ToolContext, call: ToolCallPart,
                            ) -> ToolCallPart | ToolResultPart | Veto | None:
        """Before each tool call whose result is not stored (again on resume)."""
        ...

    async def on_tool_end(self, ctx: ToolContext, call: ToolCallPart,
                          result: ToolResultPart) -> ToolResultPart | None:
        """After each tool call's result is made, before it is stored."""
        ...

    async def on_fold_start(self, job: FoldJob) -> FoldOutcome | Veto | None:
        """Before a fold's strategy runs (again on resume if the fold was not committed)."""
        ...

    async def on_fold_end(self, job: FoldJob, outcome: FoldOutcome) -> FoldOutcome | None:
        """After a fold's outcome is made, before it is committed."""
        ...


class Hooks:
    """A hook that does nothing: subclass it and override the points you need.

    Example::

        class NoDeletes(Hooks):
            async def on_tool_start(self, ctx, call):
                if call.name == "delete_file":
                    return Veto("Deleting files is not allowed here.")
                return None

        config = AgentLoopConfig(hooks=[NoDeletes()])
    """

    async def on_send_start(self, ctx: SendContext, text: str) -> str | Reply | Veto | None:
        return None

    async def on_send_end(self, ctx: SendContext, result: SendResult) -> None:
        return None

    async def on_model_request(self, ctx: SendContext, request: LLMRequest,
                               ) -> LLMRequest | LLMResponse | Veto | None:
        return None

    async def on_model_response(self, ctx: SendContext, request: LLMRequest,
                                response: LLMResponse) -> LLMResponse | None:
        return None

    async def on_tool_start(self, ctx: ToolContext, call: ToolCallPart,
                            ) -> ToolCallPart | ToolResultPart | Veto | None:
        return None

    async def on_tool_end(self, ctx: ToolContext, call: ToolCallPart,
                          result: ToolResultPart) -> ToolResultPart | None:
        return None

    async def on_fold_start(self, job: FoldJob) -> FoldOutcome | Veto | None:
        return None

    async def on_fold_end(self, job: FoldJob, outcome: FoldOutcome) -> FoldOutcome | None:
        return None
