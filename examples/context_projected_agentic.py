"""Context engineering: ProjectedRepresentation x AgenticFold.

    python examples/context_projected_agentic.py

A long support session on a small context budget: older sends are folded into a
summary (see docs/context.md for when to choose this pairing).
"""

from __future__ import annotations

import asyncio

from _context_demo import run

from power_loop import AgenticFold, ProjectedRepresentation

if __name__ == "__main__":
    asyncio.run(run("context_projected_agentic", ProjectedRepresentation(max_chars=300),
                    AgenticFold(keep_last_sends=4), budget=700))
