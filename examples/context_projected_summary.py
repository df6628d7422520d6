"""Context engineering: ProjectedRepresentation x LLMSummaryFold.

    python examples/context_projected_summary.py

A long support session on a small context budget: older sends are folded into a
summary (see docs/context.md for when to choose this pairing).
"""

from __future__ import annotations

import asyncio

from _context_demo import run

from power_loop import LLMSummaryFold, ProjectedRepresentation

if __name__ == "__main__":
    asyncio.run(run("context_projected_summary", ProjectedRepresentation(max_chars=300),
                    LLMSummaryFold(), budget=700))
