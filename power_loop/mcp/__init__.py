"""Model Context Protocol servers' tools as power_loop tools (see docs/mcp.md).

Needs the optional ``mcp`` extra (``pip install 'power-loop[mcp]'``); the SDK is only
imported when a server is first reached, so the rest of power_loop works without it.
"""

from power_loop.mcp.server import MCPServer
from power_loop.mcp.tools import MCPToolPolicy

__all__ = ["MCPServer", "MCPToolPolicy"]
