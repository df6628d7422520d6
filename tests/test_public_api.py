"""The public surface is curated: ``__all__`` and ``STABLE_API`` change only on purpose."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import power_loop

# Frozen, sorted. Adding or removing a public name means editing this list in the same
# change, which makes the decision visible in review.
EXPECTED_ALL: list[str] = [
    "AgentLoopConfig",
    "AgenticFold",
    "AnthropicService",
    "ConfigurationError",
    "ConnectOptions",
    "ConnectionLostError",
    "DatabaseNotFoundError",
    "EstimatingCounter",
    "Event",
    "FoldError",
    "FoldFailed",
    "FoldFinished",
    "FoldJob",
    "FoldOutcome",
    "FoldStarted",
    "FoldStrategy",
    "HistoryInvariantError",
    "HistoryItem",
    "IntegrityConflictError",
    "InvalidArgumentError",
    "InvalidDSNError",
    "InvalidIdentifierError",
    "JsonlSink",
    "KeywordMemory",
    "LLMAuthenticationError",
    "LLMBadRequestError",
    "LLMContextOverflowError",
    "LLMError",
    "LLMQuotaError",
    "LLMRateLimitError",
    "LLMRequest",
    "LLMResponse",
    "LLMResponseError",
    "LLMService",
    "LLMStreamInterruptedError",
    "LLMSummaryFold",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "Lease",
    "LeaseLostError",
    "MemoryProvider",
    "MemorySink",
    "Message",
    "MessageRecord",
    "MissingDriverError",
    "NewMessage",
    "NoteLimits",
    "OpenAIChatService",
    "OtelSink",
    "PacketTooLargeError",
    "PowerLoopError",
    "ProjectedRepresentation",
    "PrometheusSink",
    "Representation",
    "RetryPolicy",
    "RoundFinished",
    "RoundStarted",
    "SchemaMissingError",
    "SchemaPolicy",
    "SchemaVersionError",
    "ScriptExhaustedError",
    "ScriptedLLM",
    "SendCost",
    "SendFailed",
    "SendFinished",
    "SendNotFoundError",
    "SendPendingError",
    "SendRecord",
    "SendResult",
    "SendStarted",
    "SessionBusyError",
    "SessionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionRecord",
    "Sink",
    "SinkStats",
    "StatefulAgentLoop",
    "StopReason",
    "StorageFullError",
    "Store",
    "StoreAuthenticationError",
    "StoreError",
    "StoreFileCorruptError",
    "StoreFileError",
    "StructuredOutputError",
    "TextChunk",
    "TextPart",
    "TokenCounter",
    "Tool",
    "ToolCallFinished",
    "ToolCallPart",
    "ToolCallStarted",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResultPart",
    "ToolSpec",
    "TransientStoreError",
    "Turn",
    "Usage",
    "UsageUpdated",
    "VerbatimRepresentation",
    "call_tool",
    "call_tools",
    "close_sinks",
    "create_llm_service_from_env",
    "fail",
    "flush_sinks",
    "open_store",
    "replay",
    "reply",
    "sink_stats",
    "tool",
]

# The names under semantic versioning: a subset of __all__, pinned separately so that
# promoting a name to stable is its own decision.
EXPECTED_STABLE_API: list[str] = [
    "AgentLoopConfig",
    "AgenticFold",
    "AnthropicService",
    "ConfigurationError",
    "ConnectOptions",
    "ConnectionLostError",
    "DatabaseNotFoundError",
    "EstimatingCounter",
    "Event",
    "FoldError",
    "FoldFailed",
    "FoldFinished",
    "FoldJob",
    "FoldOutcome",
    "FoldStarted",
    "FoldStrategy",
    "HistoryInvariantError",
    "HistoryItem",
    "IntegrityConflictError",
    "InvalidArgumentError",
    "InvalidDSNError",
    "InvalidIdentifierError",
    "JsonlSink",
    "KeywordMemory",
    "LLMAuthenticationError",
    "LLMBadRequestError",
    "LLMContextOverflowError",
    "LLMError",
    "LLMQuotaError",
    "LLMRateLimitError",
    "LLMRequest",
    "LLMResponse",
    "LLMResponseError",
    "LLMService",
    "LLMStreamInterruptedError",
    "LLMSummaryFold",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "Lease",
    "LeaseLostError",
    "MemoryProvider",
    "MemorySink",
    "Message",
    "MessageRecord",
    "MissingDriverError",
    "NewMessage",
    "NoteLimits",
    "OpenAIChatService",
    "OtelSink",
    "PacketTooLargeError",
    "PowerLoopError",
    "ProjectedRepresentation",
    "PrometheusSink",
    "Representation",
    "RetryPolicy",
    "RoundFinished",
    "RoundStarted",
    "SchemaMissingError",
    "SchemaPolicy",
    "SchemaVersionError",
    "ScriptExhaustedError",
    "ScriptedLLM",
    "SendCost",
    "SendFailed",
    "SendFinished",
    "SendNotFoundError",
    "SendPendingError",
    "SendRecord",
    "SendResult",
    "SendStarted",
    "SessionBusyError",
    "SessionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionRecord",
    "Sink",
    "SinkStats",
    "StatefulAgentLoop",
    "StopReason",
    "StorageFullError",
    "Store",
    "StoreAuthenticationError",
    "StoreError",
    "StoreFileCorruptError",
    "StoreFileError",
    "StructuredOutputError",
    "TextChunk",
    "TextPart",
    "TokenCounter",
    "Tool",
    "ToolCallFinished",
    "ToolCallPart",
    "ToolCallStarted",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResultPart",
    "ToolSpec",
    "TransientStoreError",
    "Turn",
    "Usage",
    "UsageUpdated",
    "VerbatimRepresentation",
    "call_tool",
    "call_tools",
    "close_sinks",
    "create_llm_service_from_env",
    "fail",
    "flush_sinks",
    "open_store",
    "replay",
    "reply",
    "sink_stats",
    "tool",
]


def test_expected_lists_are_sorted() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL
    assert sorted(EXPECTED_STABLE_API) == EXPECTED_STABLE_API


def test_all_is_pinned() -> None:
    assert list(power_loop.__all__) == EXPECTED_ALL


def test_stable_api_is_pinned() -> None:
    assert isinstance(power_loop.STABLE_API, frozenset)
    assert sorted(power_loop.STABLE_API) == EXPECTED_STABLE_API


def test_stable_names_are_exported() -> None:
    assert set(power_loop.STABLE_API) <= set(power_loop.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from power_loop import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(power_loop.__all__)


def _own_docstring(obj: Any) -> str:
    doc = obj.__doc__ if inspect.isclass(obj) or callable(obj) else None
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        # A dataclass without a docstring gets its signature as __doc__: not documentation.
        signature = f"{obj.__name__}{inspect.signature(obj)}".replace(" -> None", "")
        if doc == signature:
            return ""
    return (doc or "").strip()


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_public_name_is_importable_and_documented(name: str) -> None:
    obj = getattr(power_loop, name)
    assert obj.__module__.startswith("power_loop"), f"{name} is re-exported from elsewhere"
    assert _own_docstring(obj), f"{name} has no docstring"


def test_package_is_documented_and_versioned() -> None:
    assert power_loop.__doc__ and power_loop.__doc__.strip()
    assert isinstance(power_loop.__version__, str) and power_loop.__version__
