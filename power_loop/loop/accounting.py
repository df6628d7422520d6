"""What a send stores as its ``token_usage``: the total, model calls, and by model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from power_loop.llm.messages import Message, Usage


def usage_json(tail: Sequence[Message]) -> dict[str, Any]:
    """A send's stored usage, from its messages.

    The four token counts (as :meth:`Usage.to_json`), ``model_calls`` (the model
    answers that reported usage) and ``models``: the same per model name, as the
    provider reported it (``""`` when it reported none), so a price table can price
    each model's tokens at its own rate.
    """
    total, calls = Usage(), 0
    models: dict[str, tuple[Usage, int]] = {}
    for message in tail:
        if message.role != "assistant" or "usage" not in message.meta:
            continue
        usage = Usage.from_json(message.meta.get("usage"))
        model = message.meta.get("model")
        name = model if isinstance(model, str) else ""
        seen, count = models.get(name, (Usage(), 0))
        models[name] = (seen + usage, count + 1)
        total, calls = total + usage, calls + 1
    stored: dict[str, Any] = total.to_json()
    stored["model_calls"] = calls
    stored["models"] = {name: {**usage.to_json(), "model_calls": count}
                        for name, (usage, count) in models.items()}
    return stored
