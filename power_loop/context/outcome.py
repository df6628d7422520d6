"""What a fold strategy returns, checked before it is committed; what a failed fold becomes.

A strategy is code of its own (or a model's tool loop): its :class:`FoldOutcome` is held
to what the journal and every later request need. The summary is text, stored as the
store gives it back, never empty and never longer than what it replaces; note operations
are replayed against the session's notes and the note bounds, as the agent's own are;
token counts are non-negative integers. Anything it raises becomes a
:class:`~power_loop.PowerLoopError`, so a failed fold is always reported typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from power_loop.context.fold import FOLD_FAILED, FoldOutcome
from power_loop.context.notes import NoteLedger, NoteLimits
from power_loop.context.tokens import TokenCounter
from power_loop.errors import FoldError, InvalidArgumentError, PowerLoopError
from power_loop.llm.contract import (
    checked_usage,
    describe,
    exception_code,
    exception_text,
    storable,
)
from power_loop.store.context_ops import NoteRecord

EMPTY_SUMMARY = "(nothing worth keeping)"
SUMMARY_CUT = "\n[... the summary was cut to the size of the history it replaces]"


def fold_error(exc: BaseException, strategy: object) -> PowerLoopError:
    """A strategy's failure as a PowerLoopError (a PowerLoopError, e.g. its model's, is kept)."""
    if isinstance(exc, PowerLoopError):
        return exc
    return FoldError(f"{type(strategy).__name__}.fold failed with {describe(exc)}. "
                     f"{FOLD_FAILED}")


def error_record(error: PowerLoopError) -> dict[str, Any]:
    """The failure as the journal keeps it."""
    return {"type": type(error).__name__, "code": exception_code(error),
            "message": storable(exception_text(error, 2000))}


def checked_outcome(outcome: object, strategy: object, *, notes: Sequence[NoteRecord],
                    limits: NoteLimits, counter: TokenCounter,
                    max_summary_tokens: int) -> FoldOutcome:
    """``outcome`` made safe to commit, or raise :class:`FoldError`."""
    name = type(strategy).__name__
    if not isinstance(outcome, FoldOutcome):
        raise FoldError(f"{name}.fold returned a {type(outcome).__name__}, not a "
                        f"FoldOutcome. {FOLD_FAILED}")
    if not isinstance(outcome.summary, str):
        raise FoldError(f"{name}.fold returned no summary text. {FOLD_FAILED}")
    summary = _clipped(storable(outcome.summary).strip() or EMPTY_SUMMARY, counter,
                       max_summary_tokens)
    ops = _replayed(outcome.note_ops, notes, limits, name)
    calls = outcome.calls if type(outcome.calls) is int and outcome.calls >= 0 else 0
    return FoldOutcome(summary, ops, checked_usage(outcome.usage), calls)


def _clipped(summary: str, counter: TokenCounter, max_tokens: int) -> str:
    """A summary longer than ``max_tokens`` cut to it (by its share of characters), marked."""
    tokens = counter.count_text(summary)
    if tokens <= max_tokens:
        return summary
    keep = max(0, len(summary) * max_tokens // tokens - len(SUMMARY_CUT))
    return summary[:keep] + SUMMARY_CUT


def _replayed(ops: object, notes: Sequence[NoteRecord], limits: NoteLimits,
              name: str) -> list[Mapping[str, Any]]:
    """The note operations, checked one by one against the notes as they would stand."""
    if not isinstance(ops, (list, tuple)):
        raise FoldError(f"{name}.fold returned note_ops that are not a list. {FOLD_FAILED}")
    ledger = NoteLedger(notes, limits)
    for index, op in enumerate(ops):
        if not isinstance(op, Mapping):
            raise FoldError(f"{name}.fold returned note operation #{index}, a "
                            f"{type(op).__name__}, not a mapping. {FOLD_FAILED}")
        kind, text, note_id = op.get("op"), op.get("text"), op.get("note_id")
        text = storable(text) if isinstance(text, str) else text
        try:
            if kind == "add":
                ledger.add(text)
            elif kind == "update":
                ledger.update(note_id, text)
            elif kind == "delete":
                ledger.delete(note_id)
            else:
                raise InvalidArgumentError("its op is not 'add', 'update' or 'delete'")
        except InvalidArgumentError as exc:
            raise FoldError(f"{name}.fold returned note operation #{index} that cannot be "
                            f"applied: {exc.message}. {FOLD_FAILED}") from None
    return ledger.ops
