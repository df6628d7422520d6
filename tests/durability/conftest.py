"""Fixtures of the durability tests: the store seen from the test, and child processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.child import UNSAFE_TOOL, ChildArgs
from tests.durability.harness import Child, StoreView

Spawn = Callable[..., Child]


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    """The file every child's tools record their side effects in."""
    return tmp_path / "effects.jsonl"


@pytest.fixture
def spawn(view: StoreView, effects: Path, tmp_path: Path) -> Iterator[Spawn]:
    """Start a child on the test's store: ``spawn(name, session_id, ops, **fields)``.

    Every child still running at the end of the test is killed.
    """
    started: list[Child] = []

    def start(name: str, session_id: str, ops: list[dict[str, str]], *,
              crash_at: str | None = None, **fields: Any) -> Child:
        fields.setdefault("tool", UNSAFE_TOOL)
        args = ChildArgs(dsn=view.dsn, prefix=view.prefix, session_id=session_id, ops=ops,
                         effects=str(effects), out=str(tmp_path / f"{name}.json"), **fields)
        child = Child(args, crash_at=crash_at, name=name)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()
