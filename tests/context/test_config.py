"""The context knobs of ``AgentLoopConfig`` are validated; ``Usage`` reports cache hits."""

from __future__ import annotations

from typing import Any

import pytest

from power_loop import (
    AgenticFold,
    AgentLoopConfig,
    FoldStrategy,
    InvalidArgumentError,
    LLMSummaryFold,
    MemoryProvider,
    ProjectedRepresentation,
    Representation,
    TokenCounter,
    Usage,
    VerbatimRepresentation,
)
from tests.context.support import EchoMemory


@pytest.mark.parametrize("options", [
    {"fold_strategy": LLMSummaryFold()},
    {"context_budget_tokens": 1_000},
    {"fold_strategy": AgenticFold(), "context_budget_tokens": 0},
    {"fold_strategy": AgenticFold(), "context_budget_tokens": -5},
    {"memory_budget_tokens": -1},
    {"recall_max_chars": 0},
])
def test_inconsistent_context_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        AgentLoopConfig(**options)


def test_defaults_and_accepted_settings() -> None:
    config = AgentLoopConfig()
    assert isinstance(config.representation, VerbatimRepresentation)
    assert (config.fold_strategy, config.context_budget_tokens, config.notes,
            config.memory) == (None, None, None, None)
    AgentLoopConfig(fold_strategy=AgenticFold(), context_budget_tokens=1, memory_budget_tokens=0)


def test_the_protocols_are_met_by_the_built_ins() -> None:
    assert isinstance(VerbatimRepresentation(), Representation)
    assert isinstance(ProjectedRepresentation(), Representation)
    assert isinstance(LLMSummaryFold(), FoldStrategy)
    assert isinstance(AgenticFold(), FoldStrategy)
    assert isinstance(EchoMemory(), MemoryProvider)
    assert isinstance(AgentLoopConfig().token_counter, TokenCounter)


@pytest.mark.parametrize(("usage", "ratio"), [
    (Usage(), 0.0),
    (Usage(output_tokens=50), 0.0),
    (Usage(input_tokens=100), 0.0),
    (Usage(input_tokens=60, cache_read_tokens=30, cache_write_tokens=10), 0.3),
    (Usage(cache_read_tokens=40), 1.0),
    (Usage(input_tokens=10, cache_write_tokens=90), 0.0),
])
def test_cache_hit_ratio(usage: Usage, ratio: float) -> None:
    assert usage.cache_hit_ratio == pytest.approx(ratio)


def test_cache_hit_ratio_of_a_sum() -> None:
    total = Usage(input_tokens=100) + Usage(cache_read_tokens=100, output_tokens=7)
    assert total.cache_hit_ratio == pytest.approx(0.5)
    assert total.total_tokens == 207
