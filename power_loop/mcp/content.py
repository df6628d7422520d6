"""What an MCP tool result becomes: the text the model reads.

A power_loop tool result is text. Text blocks are carried as they are; a text resource
embedded in the result is carried with its URI; structured content is carried as JSON
when there is no text beside it. What text cannot carry (images, audio, binary
resources) is stated in its place, with its type and size, so the model knows it was
there and was not shown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from power_loop.errors import ToolError


def _size(data: Any) -> str:
    if not isinstance(data, str):
        return "unknown size"
    return f"about {len(data) * 3 // 4} bytes"


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(getattr(block, "text", ""))
    if kind in ("image", "audio"):
        mime = getattr(block, "mime_type", None) or "unknown type"
        return (f"[{kind} ({mime}, {_size(getattr(block, 'data', None))}) not shown: this "
                f"tool result carries text only]")
    if kind == "resource":
        resource = getattr(block, "resource", None)
        uri = str(getattr(resource, "uri", "?"))
        text = getattr(resource, "text", None)
        if isinstance(text, str):
            return f"[resource {uri}]\n{text}"
        mime = getattr(resource, "mime_type", None) or "unknown type"
        return (f"[binary resource {uri} ({mime}, {_size(getattr(resource, 'blob', None))}) "
                "not shown: this tool result carries text only]")
    if kind == "resource_link":
        uri = str(getattr(block, "uri", "?"))
        name = getattr(block, "name", None)
        return f"[resource link {uri}{f' ({name})' if name else ''}]"
    return f"[content of type {str(kind)[:40]!r} not shown: this client does not know it]"


def result_text(content: Sequence[Any], structured: Any) -> str:
    """The text of a result's content blocks (and its structured content when there is
    no text)."""
    parts = [_block_text(block) for block in content]
    if structured is not None and not any(getattr(b, "type", None) == "text" for b in content):
        try:
            parts.append(json.dumps(structured, ensure_ascii=False, sort_keys=True))
        except (TypeError, ValueError):
            parts.append("[structured content not shown: it is not plain JSON]")
    return "\n".join(parts)


def tool_output(result: Any) -> str:
    """A ``CallToolResult``'s text, or :class:`ToolError` with it when the server says
    the call failed."""
    content = getattr(result, "content", None)
    if not isinstance(content, (list, tuple)):
        raise ToolError("Error: the MCP server answered without content.")
    text = result_text(content, getattr(result, "structured_content", None))
    if getattr(result, "is_error", False):
        raise ToolError(f"Error: the tool failed on the MCP server: {text or 'no detail'}")
    return text
