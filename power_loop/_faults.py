"""Named crash points, for tests that prove durability by killing real processes.

The loop calls :func:`checkpoint` at each boundary of a send (after the model answered,
after a write committed, inside the final write before its commit...). Normally that is
a set lookup and nothing else. A test process started with
``POWER_LOOP_CRASH_AT=<point>`` (optionally ``<point>:<n>`` for the n-th time it is
reached) sends itself SIGKILL there: no cleanup, no ``finally``, exactly like a crash.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("POWER_LOOP_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_TARGET = int(_NTH) if _NTH else 1
_hits = 0

POINTS = frozenset({
    "after_begin",          # the user message and the send row are committed
    "after_model_answer",   # the model answered; nothing of the answer is stored yet
    "after_assistant_saved",  # the assistant message (with its tool calls) is committed
    "after_tool_ran",       # a tool returned (its side effects happened); result not stored
    "after_results_saved",  # tool results are committed
    "in_final_write",       # inside the final transaction, before COMMIT
    "fold_started",         # a fold is journaled as started; its model calls not made
    "fold_answered",        # the fold strategy produced its summary; nothing committed
    "in_fold_commit",       # inside the fold's commit transaction, before COMMIT
    "after_decision",       # an approval (rejection, answer) is committed; the send not
                            # continued yet
    "workflow_before_step",  # a workflow step is about to get its row (nothing written)
    "workflow_leaf_answered",  # a leaf's child session answered; its outcome not recorded
    "workflow_step_recorded",  # a step's outcome is committed to the journal
})


def checkpoint(point: str) -> None:
    """Crash here if this process was told to (see the module docstring)."""
    global _hits
    if point != _POINT:
        return
    _hits += 1
    if _hits == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
