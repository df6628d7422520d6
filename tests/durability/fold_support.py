"""What the fold crash tests share: the fold child process, store reads, and the checks.

:class:`FoldChild` runs ``python -m tests.durability.fold_child`` and behaves like the
harness's :class:`~tests.durability.harness.Child` (wait, signal, report). The checks
read the fold journal, notes and projections through the test's own
:class:`~tests.durability.harness.StoreView`, and judge the requests a child's model saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from power_loop import ScriptedLLM
from power_loop.store.context_ops import FoldRecord, NoteRecord
from tests.durability.fold_child import (
    TOOL_ASK,
    FoldArgs,
    make_loop,
    note_texts,
    script,
    summary_text,
)
from tests.durability.harness import (
    REPO,
    Child,
    Snapshot,
    StoreView,
    assert_paired,
    child_env,
    read_effects,
)

SUMMARY_HEAD = "[power_loop] Summary of the conversation"
CONTEXT_HEAD = "[power_loop context]"


class FoldChild(Child):
    """One ``python -m tests.durability.fold_child`` process."""

    def __init__(self, args: FoldArgs, *, crash_at: str | None = None,
                 name: str = "child") -> None:
        # Child starts tests.durability.child; everything else about it applies as is.
        self.args = args
        self.name = name
        self._log = Path(args.out).with_suffix(".log")
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.durability.fold_child", args.to_json()],
                cwd=REPO, env=child_env(crash_at), stdout=log, stderr=subprocess.STDOUT)


Spawn = Callable[..., FoldChild]


def prefill_text(index: int) -> str:
    """The pre-fill's sends: every third one calls the tool."""
    return f"{TOOL_ASK}item {index}" if index % 3 == 1 else f"question {index}"


def folds(view: StoreView, sid: str) -> list[FoldRecord]:
    found: list[FoldRecord] = view.run(view.store.list_folds(sid))
    return found


def notes(view: StoreView, sid: str) -> list[NoteRecord]:
    found: list[NoteRecord] = view.run(view.store.list_notes(sid))
    return found


def projections(view: StoreView, sid: str, upto: int) -> dict[int, Any]:
    found: dict[int, Any] = view.run(view.store.read_projections(sid, 0, upto))
    return found


def prefill(view: StoreView, strategy: str, representation: str, sends: int, *,
            budget: int | None = None, text: Callable[[int], str] = prefill_text,
            reused_call_id: str | None = None) -> str:
    """A session with ``sends`` finished sends (``text(index)`` each), made in the test's
    process with ``budget`` (default: one nothing reaches, so nothing is folded)."""

    async def fill() -> str:
        llm = ScriptedLLM(script(pid=os.getpid(), reused_call_id=reused_call_id))
        loop = make_loop(view.store, strategy, representation, budget or 10**9, llm)
        sid = await loop.new_session()
        for index in range(sends):
            await loop.send(text(index), sid)
        return sid

    sid: str = view.run(fill())
    return sid


def model_calls(effects: Path, pid: int) -> list[tuple[str, int]]:
    """(purpose, round) of each model call process ``pid`` made, in order."""
    return [(e["purpose"], e["round"]) for e in read_effects(effects)
            if e["event"] == "model" and e["pid"] == pid]


def fold_calls(strategy: str) -> list[tuple[str, int]]:
    return [("fold", 0)] if strategy == "llm_summary" else [("fold", 0), ("fold", 1)]


def written_notes(strategy: str, fold_index: int, pid: int) -> list[str]:
    return [] if strategy == "llm_summary" else list(note_texts(fold_index, pid))


def check_fold(fold: FoldRecord, strategy: str, pid: int) -> None:
    """A ``done`` fold written by process ``pid``: its summary and its notes."""
    assert fold.status == "done" and fold.strategy == strategy
    assert fold.summary == summary_text(fold.fold_index, pid)
    assert [op["text"] for op in fold.notes_written] == written_notes(strategy,
                                                                      fold.fold_index, pid)
    assert all(op["op"] == "add" for op in fold.notes_written)


def check_journal(view: StoreView, sid: str, strategy: str, known: list[FoldRecord],
                  pid: int) -> None:
    """One ``done`` row per fold index 0, 1, ...: the ``known`` ones as they were, the
    later ones written by process ``pid``; the notes are exactly what the folds wrote."""
    journal = folds(view, sid)
    assert [f.fold_index for f in journal] == list(range(len(journal)))
    assert journal[:len(known)] == known
    for fold in journal[len(known):]:
        check_fold(fold, strategy, pid)
    for fold in journal[1:]:
        assert fold.first_send == journal[fold.fold_index - 1].end_send
    assert all(f.status == "done" for f in journal)
    applied = [op for f in journal for op in f.notes_written]
    assert [(n.note_id, n.text) for n in notes(view, sid)] == [
        (op["note_id"], op["text"]) for op in applied]


# -- what the model saw ----------------------------------------------------------------------


def check_requests(requests: list[dict[str, Any]], snap: Snapshot, journal: list[FoldRecord],
                   representation: str, forbidden: str | None) -> None:
    """Every request is well paired and never shows ``forbidden`` (a dead fold's mark);
    a send's request is a committed fold's summary, the sends after that fold as the
    representation renders them, the notes, then the send's own stored messages."""
    summaries = {f.summary: f for f in journal}
    for n, request in enumerate(requests):
        messages = request["messages"]
        assert_paired(messages)
        if forbidden is not None:
            assert forbidden not in json.dumps(request), f"request {n} shows a dead fold"
        if request["metadata"].get("purpose") == "fold":
            continue
        send_index = request["metadata"]["send_index"]
        texts = ["".join(p.get("text", "") for p in m["parts"]) for m in messages]
        assert texts[0].startswith(SUMMARY_HEAD), f"request {n} does not open with a summary"
        (fold,) = [f for s, f in summaries.items() if texts[0].endswith("\n" + s)]
        own = [{"role": m.role, "parts": m.body["parts"]} for m in snap.of_send(send_index)]
        shown = next((k for k in range(len(own), 0, -1) if messages[-k:] == own[:k]), 0)
        assert shown, f"request {n} does not end with send #{send_index} as stored"
        middle = messages[1:len(messages) - shown]
        if middle and texts[len(messages) - shown - 1].startswith(CONTEXT_HEAD):
            context = texts[len(messages) - shown - 1]
            middle = middle[:-1]
            for note in [op["text"] for f in journal if f.fold_index <= fold.fold_index
                         for op in f.notes_written]:
                assert note in context
        kept = range(fold.end_send, send_index)
        if representation == "verbatim":
            assert middle == [{"role": m.role, "parts": m.body["parts"]}
                              for i in kept for m in snap.of_send(i)], f"request {n}"
        else:
            asked = [m["parts"][0]["text"] for m in middle[::2]]
            assert asked == [snap.of_send(i)[0].body["parts"][0]["text"] for i in kept]
            assert [m["role"] for m in middle] == ["user", "assistant"] * len(kept)


