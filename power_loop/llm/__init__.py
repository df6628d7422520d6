"""The model layer: provider-neutral messages, the ``LLMService`` protocol, ScriptedLLM."""

from power_loop.errors import ScriptExhaustedError
from power_loop.llm.env import create_llm_service_from_env
from power_loop.llm.messages import (
    Message,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
    decode_message,
    encode_message,
)
from power_loop.llm.retry import RetryPolicy
from power_loop.llm.scripted import (
    ScriptedCall,
    ScriptedLLM,
    Turn,
    call_tool,
    call_tools,
    fail,
    reply,
)
from power_loop.llm.service import (
    LLMRequest,
    LLMResponse,
    LLMService,
    StopReason,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)

__all__ = [
    "LLMRequest",
    "LLMResponse",
    "LLMService",
    "Message",
    "Part",
    "RetryPolicy",
    "ScriptExhaustedError",
    "ScriptedCall",
    "ScriptedLLM",
    "StopReason",
    "StreamItem",
    "TextDelta",
    "TextPart",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolResultPart",
    "ToolSpec",
    "Turn",
    "Usage",
    "call_tool",
    "call_tools",
    "create_llm_service_from_env",
    "decode_message",
    "encode_message",
    "fail",
    "reply",
]
