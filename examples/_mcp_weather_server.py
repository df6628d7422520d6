"""A tiny MCP server for examples/mcp_tools.py, built with the official SDK.

    python examples/_mcp_weather_server.py     # speaks MCP over stdin/stdout
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("weather")
umbrellas: list[str] = []


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def forecast(city: str) -> str:
    """Tomorrow's weather for a city."""
    return f"Rain all day in {city}, 12°C."


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def cancel_picnic(city: str) -> str:
    """Cancel the picnic planned in a city (it cannot be undone)."""
    return f"The picnic in {city} is cancelled."


@server.tool()
def order_umbrella(city: str) -> str:
    """Order an umbrella delivered in a city."""
    umbrellas.append(city)
    return f"Umbrella #{len(umbrellas)} ordered for {city}."


if __name__ == "__main__":
    server.run("stdio")
