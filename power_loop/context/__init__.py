"""Context engineering on two orthogonal axes: representation x fold strategy.

* A :class:`Representation` decides how a finished send appears in later requests
  (verbatim, or as a terse projection).
* A :class:`FoldStrategy` decides how older history is compacted once the request is over
  ``context_budget_tokens`` (one summary call, or an agentic loop that also keeps notes).

Any representation works with any fold. The message log is never rewritten: recall tools
bring back the original detail. Notes and cross-session memory ride at the request's
tail, so the cached prefix stays byte-stable.
"""

from power_loop.context.fold import (
    AgenticFold,
    FoldJob,
    FoldOutcome,
    FoldStrategy,
    LLMSummaryFold,
    SendCost,
)
from power_loop.context.memory import KeywordMemory, MemoryProvider
from power_loop.context.notes import NoteLimits
from power_loop.context.representation import (
    ProjectedRepresentation,
    Representation,
    VerbatimRepresentation,
)
from power_loop.context.tokens import EstimatingCounter, TokenCounter

__all__ = [
    "AgenticFold",
    "EstimatingCounter",
    "FoldJob",
    "FoldOutcome",
    "FoldStrategy",
    "KeywordMemory",
    "LLMSummaryFold",
    "MemoryProvider",
    "NoteLimits",
    "ProjectedRepresentation",
    "Representation",
    "SendCost",
    "TokenCounter",
    "VerbatimRepresentation",
]
