"""References, templates and conditions: the DSL's data language (pure, deterministic)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from power_loop.workflows.spec import TEMPLATE

_MISSING = object()


def resolve(ref: str, scope: Mapping[str, Any]) -> Any:
    """The value a dotted reference names (``None`` when any part is missing)."""
    parts = ref.split(".")
    value: Any = scope.get(parts[0])
    for part in parts[1:]:
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            i = int(part)
            value = value[i] if -len(value) <= i < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def render(template: str, scope: Mapping[str, Any]) -> str:
    """``template`` with every ``{{ref}}`` replaced (strings as they are, others as JSON)."""
    def one(match: Any) -> str:
        value = resolve(match.group(1), scope)
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return TEMPLATE.sub(one, template)


def _operand(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return resolve(value["ref"], scope)
    return value


def holds(cond: Mapping[str, Any], scope: Mapping[str, Any]) -> bool:
    """Whether a (validated) condition holds. Comparisons of mismatched types are false."""
    (op, arg), = cond.items()
    if op == "not":
        return not holds(arg, scope)
    if op == "and":
        return all(holds(c, scope) for c in arg)
    if op == "or":
        return any(holds(c, scope) for c in arg)
    if op == "exists":
        return resolve(arg, scope) is not None
    a, b = (_operand(v, scope) for v in arg)
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op == "contains":
        if (isinstance(a, str) and isinstance(b, str)) or isinstance(a, list):
            return b in a
        return isinstance(a, dict) and isinstance(b, str) and b in a
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return bool(a < b) if op == "lt" else bool(a > b)
