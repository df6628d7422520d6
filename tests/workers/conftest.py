"""Fixtures of the worker tests: the store seen from the test, and worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.harness import StoreView
from tests.workers.support import WorkerProcess

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def record_path(tmp_path: Path) -> Path:
    """The file every worker's app appends its events and tool runs to."""
    return tmp_path / "record.jsonl"


@pytest.fixture
def start_worker(view: StoreView, record_path: Path,
                 tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``power-loop worker`` on the test's store: ``start_worker(name, **options)``.

    ``env`` adds to the app's environment (``PLW_RECORD`` is set); every worker still
    running at the end of the test is killed.
    """
    started: list[WorkerProcess] = []

    def start(name: str, *, env: dict[str, str] | None = None,
              **options: Any) -> WorkerProcess:
        full_env = {"PLW_RECORD": str(record_path), **(env or {})}
        worker = WorkerProcess(view.dsn, view.prefix, tmp_path / f"{name}.log", env=full_env,
                               **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
