"""The application the worker benchmark's ``power-loop worker`` processes run.

``power-loop worker --app bench.worker_app:make_loop`` builds its loop here: a
:class:`~power_loop.llm.scripted.ScriptedLLM` that answers every request at once with
``ok`` and keeps none of them, no tools, the default config.

When ``$BENCH_WORKER_DIR`` is set (the benchmark sets it), the process also counts the
SQL statements it sends (:func:`bench.statements.count_statements`, with the labels
cached: :func:`cache_labels`) and reports to that directory:

* ``snap-<pid>-0.json`` once the loop is built (the worker polls right after): the
  signal that the process is ready;
* ``snap-<pid>-<n>.json`` on the ``n``-th SIGUSR1.

A snapshot holds the statements counted so far, by leading keyword, and the process's
CPU seconds (its threads included), both since the process started.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

from bench import statements
from bench.statements import count_statements
from power_loop import StatefulAgentLoop
from power_loop.llm.scripted import ScriptedLLM, Turn, reply
from power_loop.llm.service import LLMRequest
from power_loop.store import Store

DIR_ENV = "BENCH_WORKER_DIR"
"""Where a benchmarked worker reports (unset: it only runs the loop)."""


class _Forgetful(list[LLMRequest]):
    """``ScriptedLLM.requests`` keeping nothing: a real client drops answered requests."""

    def append(self, item: LLMRequest) -> None:
        pass


def _answer(request: LLMRequest) -> Turn:
    return reply("ok")


def scripted_llm() -> ScriptedLLM:
    """The model: answers ``ok`` at once, keeps no request."""
    llm = ScriptedLLM(_answer)
    llm.requests = _Forgetful()
    return llm


def cache_labels() -> None:
    """Make :func:`bench.statements.label` parse each distinct SQL text once.

    It splits and upper-cases the text of every statement counted: about 7 microseconds,
    some 10% of a worker's CPU per fire. A worker sends the same few strings over and
    over, so a cache takes the counting's cost down to a dictionary look-up (the hooks
    call ``label`` through the module, so they pick the cached one up).
    """
    if not hasattr(statements.label, "cache_info"):
        statements.label = functools.lru_cache(maxsize=4096)(statements.label)


class _Reporter:
    """Counts this process's statements and writes snapshots on SIGUSR1."""

    def __init__(self, directory: Path) -> None:
        cache_labels()
        self.directory = directory
        self.taken = 0
        self._counting = count_statements()
        self.counts: Counter[str] = self._counting.__enter__()  # held for the process's life

    def snapshot(self) -> None:
        body = {"statements": dict(self.counts), "cpu_seconds": time.process_time()}
        final = self.directory / f"snap-{os.getpid()}-{self.taken}.json"
        self.taken += 1
        scratch = final.with_suffix(".tmp")
        scratch.write_text(json.dumps(body))
        scratch.replace(final)  # the benchmark never reads a half-written file


_reporter: _Reporter | None = None


def make_loop(store: Store) -> StatefulAgentLoop:
    """The ``--app`` factory: a loop on the worker's store with the scripted model."""
    global _reporter
    loop = StatefulAgentLoop(llm=scripted_llm(), store=store)
    directory = os.environ.get(DIR_ENV)
    if directory and _reporter is None:
        _reporter = _Reporter(Path(directory))
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _reporter.snapshot)
        _reporter.snapshot()
    return loop
