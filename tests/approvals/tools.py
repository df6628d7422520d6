"""Tools the approval tests share, and what they ran (``RUNS``, cleared before each test
by the ``_clear_runs`` fixture a module imports)."""

from __future__ import annotations

import pytest

from power_loop import tool

RUNS: list[str] = []


@tool(requires_approval=True)
def wire(amount: int) -> str:
    """Wire money."""
    RUNS.append(f"wire {amount}")
    return f"wired {amount}"


@tool
def balance() -> str:
    """Read the balance."""
    RUNS.append("balance")
    return "100"


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()
