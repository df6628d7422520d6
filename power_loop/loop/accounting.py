"""What a send stores as its ``token_usage``: the total, model calls, by model, children."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from power_loop.llm.messages import Message, Usage


def children_usage(tail: Sequence[Message]) -> Usage:
    """Tokens the send's sub-agents spent (kept in their results' ``child_usage``)."""
    total = Usage()
    for message in tail:
        if message.role == "tool" and "child_usage" in message.meta:
            total = total + Usage.from_json(message.meta["child_usage"])
    return total


def send_usage(tail: Sequence[Message]) -> Usage:
    """Tokens the send spent: its own model calls and its sub-agents'."""
    total = children_usage(tail)
    for message in tail:
        if message.role == "assistant":
            total = total + Usage.from_json(message.meta.get("usage"))
    return total


def usage_json(tail: Sequence[Message]) -> dict[str, Any]:
    """A send's stored usage, from its messages.

    The four token counts (as :meth:`Usage.to_json`) of the send's own model calls and
    its sub-agents' together; ``children``: the sub-agents' part, when there is one;
    ``model_calls`` (the send's own model answers that reported usage) and ``models``:
    its own calls per model name, as the provider reported it (``""`` when it reported
    none), so a price table can price each model's tokens at its own rate.
    """
    return send_accounts(tail)[2]


def send_accounts(tail: Sequence[Message]) -> tuple[Usage, Usage, dict[str, Any]]:
    """:func:`send_usage`, :func:`children_usage` and :func:`usage_json` of ``tail``, in
    one pass over it (the end of every send needs all three)."""
    own, calls = Usage(), 0
    models: dict[str, tuple[Usage, int]] = {}
    for message in tail:
        if message.role != "assistant" or "usage" not in message.meta:
            continue
        usage = Usage.from_json(message.meta.get("usage"))
        model = message.meta.get("model")
        name = model if isinstance(model, str) else ""
        seen = models.get(name)
        models[name] = (usage, 1) if seen is None else (seen[0] + usage, seen[1] + 1)
        own, calls = own + usage, calls + 1
    children = children_usage(tail)
    total = own + children
    stored: dict[str, Any] = total.to_json()
    if children.total_tokens:
        stored["children"] = children.to_json()
    stored["model_calls"] = calls
    stored["models"] = {name: {**usage.to_json(), "model_calls": count}
                        for name, (usage, count) in models.items()}
    return total, children, stored
