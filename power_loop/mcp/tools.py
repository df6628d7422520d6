"""An MCP server's tool list as power_loop tools: named, ordered, with their policy.

Everything here is a function of the listing alone (names, descriptions, schemas,
annotations) and of the user's options, never of the order or the time the server
sent it, so two processes listing the same server build byte-identical requests.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError
from power_loop.mcp.schema import canonical_schema, compile_schema
from power_loop.tools.tool import Tool

if TYPE_CHECKING:
    from power_loop.mcp.server import MCPServer

log = logging.getLogger("power_loop.mcp")

MAX_NAME = 64
"""The longest tool name every provider accepts."""
MAX_DESCRIPTION_CHARS = 4_000
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]")

Caller = Callable[[str, dict[str, Any], bool], Awaitable[str]]
"""Calls a tool on the server: (MCP name, arguments, safe to repeat) -> result text."""


@dataclass(frozen=True, slots=True)
class MCPToolPolicy:
    """Your word on one MCP tool, over what its annotations say.

    Attributes:
        safe_to_repeat: Re-run it after a crash (``None``: as its annotations say:
            ``readOnlyHint`` or ``idempotentHint``).
        requires_approval: ``True``/``False``, or a function of the arguments (``None``:
            as its annotations say: ``destructiveHint``, when the server's
            ``approve_destructive`` is on).
        timeout: Seconds before a call is abandoned (``None``: the server's).
        enabled: ``False`` leaves the tool out of the requests.
    """

    safe_to_repeat: bool | None = None
    requires_approval: bool | Callable[[Mapping[str, Any]], bool] | None = None
    timeout: float | None = None
    enabled: bool = True


def model_name(prefix: str, mcp_name: str) -> str:
    """The name the model sees: ``prefix__name``, cut to the providers' rules (letters,
    digits, ``_`` and ``-``, at most 64) with a short hash of the real name whenever
    it had to be changed, so two names never meet."""
    base = _UNSAFE_CHARS.sub("_", mcp_name)
    name = f"{prefix}__{base}"
    if base != mcp_name or len(name) > MAX_NAME:
        digest = hashlib.sha256(mcp_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}_{digest}"
    return name


def _hint(annotations: Any, name: str) -> bool | None:
    value = getattr(annotations, name, None)
    return value if isinstance(value, bool) else None


def build_tools(server: MCPServer, listed: Sequence[Any],
                call: Caller) -> tuple[tuple[Tool, ...], dict[str, str]]:
    """The listing's tools in name order, and the tools refused with why (a name
    the listing repeats, a schema that cannot be compiled)."""
    tools: list[Tool] = []
    refused: dict[str, str] = {}
    by_name: dict[str, Any] = {}
    for item in listed:
        mcp_name = getattr(item, "name", None)
        if not isinstance(mcp_name, str) or not mcp_name:
            refused[repr(mcp_name)[:80]] = "no name"
            continue
        if mcp_name in by_name:
            refused[mcp_name] = "listed twice"
            continue
        by_name[mcp_name] = item
    for mcp_name in sorted(by_name.keys() - refused.keys()):
        policy = server.overrides.get(mcp_name, MCPToolPolicy())
        if not policy.enabled:
            continue
        try:
            tools.append(_build(server, mcp_name, by_name[mcp_name], policy, call))
        except InvalidArgumentError as exc:
            refused[mcp_name] = exc.message
    for mcp_name, why in refused.items():
        log.warning("MCP server %r: tool %s left out: %s", server.name, mcp_name[:80], why)
    return tuple(tools), refused


def _build(server: MCPServer, mcp_name: str, item: Any, policy: MCPToolPolicy,
           call: Caller) -> Tool:
    where = f"MCP server {server.name!r}, tool {mcp_name[:80]!r}"
    schema = canonical_schema(getattr(item, "input_schema", None), where)
    validator = compile_schema(schema, where)
    annotations = getattr(item, "annotations", None)
    read_only = _hint(annotations, "read_only_hint") is True
    safe = policy.safe_to_repeat
    if safe is None:
        safe = read_only or _hint(annotations, "idempotent_hint") is True
    approval = policy.requires_approval
    if approval is None:
        approval = (server.approve_destructive and not read_only
                    and _hint(annotations, "destructive_hint") is True)
    description = getattr(item, "description", None) or getattr(item, "title", None) \
        or mcp_name
    if not isinstance(description, str):
        description = mcp_name
    description = description.strip()[:MAX_DESCRIPTION_CHARS] or mcp_name

    async def call_tool(**arguments: Any) -> str:
        return await call(mcp_name, arguments, bool(safe))

    return Tool(name=model_name(server.name, mcp_name), description=description,
                parameters=schema, fn=call_tool, safe_to_repeat=safe,
                timeout=policy.timeout if policy.timeout is not None else server.timeout,
                requires_approval=approval, validator=validator)
