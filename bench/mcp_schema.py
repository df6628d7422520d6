"""``python -m bench mcp_schema``: what checking an MCP tool's arguments costs per call.

An MCP server's schemas are checked with ``jsonschema`` (JSON Schema 2020-12,
interpreted: no generated code is executed); the user's own ``@tool`` schemas keep
``fastjsonschema`` (compiled to Python with ``exec``). This measures, per call, both
validators on the same arguments for two schemas (``small``: the shape of most tools,
two required fields; ``large``: nested objects, arrays, enums, ``$ref``), beside the
floor (a ``dict`` check: the least any validation costs), and one compile of each.
With ``--wire`` (the default) it also times a whole ``tools/call`` round trip to a
real stdio MCP server (the test server), to set the validation cost beside the call's.

Figures are medians over ``--repeat`` rounds of ``--n`` calls, in wall and CPU
microseconds per call (CPU is steadier: the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema

from bench.machine import machine_facts
from power_loop.mcp.schema import canonical_schema, compile_schema

SERVER_FILE = Path(__file__).resolve().parents[1] / "tests" / "mcp" / "server.py"
SMALL: dict[str, Any] = {
    "type": "object", "properties": {"key": {"type": "string"}, "value": {"type": "integer"}},
    "required": ["key", "value"]}
SMALL_ARGS = {"key": "colour", "value": 7}
LARGE: dict[str, Any] = {
    "type": "object",
    "$defs": {"tag": {"type": "string", "maxLength": 40}},
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "sort": {"enum": ["relevance", "date", "name"]},
        "filters": {"type": "array", "items": {
            "type": "object",
            "properties": {"field": {"type": "string"}, "op": {"enum": ["eq", "lt", "gt"]},
                           "value": {"type": ["string", "number", "boolean"]}},
            "required": ["field", "op", "value"], "additionalProperties": False}},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "required": ["query"],
}
LARGE_ARGS = {"query": "durable agents", "limit": 20, "sort": "date",
              "filters": [{"field": "year", "op": "gt", "value": 2020},
                          {"field": "lang", "op": "eq", "value": "en"}],
              "tags": ["python", "asyncio", "sql"]}


def per_call(fn: Callable[[Any], Any], arguments: Any, n: int, repeat: int) -> tuple[float, float]:
    """Median wall and CPU microseconds per call of ``fn(arguments)``."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn(arguments)
        walls.append((time.perf_counter() - wall) / n * 1e6)
        cpus.append((time.process_time() - cpu) / n * 1e6)
    return statistics.median(walls), statistics.median(cpus)


def compile_cost(build: Callable[[], Any], repeat: int) -> tuple[float, float]:
    return per_call(lambda _: build(), None, 20, repeat)


def floor(arguments: Any) -> None:
    if not isinstance(arguments, dict):
        raise TypeError


async def wire(n: int) -> tuple[float, float]:
    from power_loop.mcp import MCPServer

    server = MCPServer.stdio("bench", sys.executable, [str(SERVER_FILE), "stdio"])
    listing = await server.list_tools()
    put = next(t for t in listing.tools if t.name == "bench__put")
    try:
        await put.fn(**SMALL_ARGS)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await put.fn(**SMALL_ARGS)
        return ((time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
    finally:
        await server.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench mcp_schema", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the median is shown)")
    parser.add_argument("--no-wire", action="store_true", help="skip the MCP round trip")
    args = parser.parse_args(argv)
    print(machine_facts())
    print("shared machine: compare CPU figures; wall figures wander with the load\n")
    print(f"{'schema':<7} {'validator':<26} {'wall us/call':>13} {'cpu us/call':>12}")
    for label, schema, arguments in (("small", SMALL, SMALL_ARGS), ("large", LARGE, LARGE_ARGS)):
        fast = fastjsonschema.compile(schema)
        safe = compile_schema(canonical_schema(schema, label), label)
        for name, fn in (("floor (a dict check)", floor),
                         ("fastjsonschema (@tool)", fast),
                         ("jsonschema 2020-12 (MCP)", safe)):
            w, c = per_call(fn, arguments, args.n, args.repeat)
            print(f"{label:<7} {name:<26} {w:>13.2f} {c:>12.2f}")
    print(f"\n{'compile once per schema':<34} {'wall us':>13} {'cpu us':>12}")
    for label, schema in (("small", SMALL), ("large", LARGE)):
        for name, build in (
                ("fastjsonschema", lambda s=schema: fastjsonschema.compile(s)),
                ("jsonschema", lambda s=schema, lb=label: compile_schema(s, lb))):
            w, c = compile_cost(build, args.repeat)
            print(f"{label + ' ' + name:<34} {w:>13.1f} {c:>12.1f}")
    if not args.no_wire:
        w, c = asyncio.run(wire(max(50, args.n // 100)))
        print(f"\nwhole tools/call round trip over stdio (small): {w:.0f} us wall, "
              f"{c:.0f} us cpu (client side) per call")
    return 0
