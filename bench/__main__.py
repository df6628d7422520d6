"""``python -m bench <benchmark> [options]``: run one benchmark and print its figures.

Each benchmark is a module of this package exposing ``main(argv: list[str]) -> int``
(it parses its own options). Adding one is one line in :data:`BENCHMARKS`; modules are
imported only when chosen, so a benchmark never pays for another's imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

BENCHMARKS: dict[str, str] = {
    "store": "appends/s through Store.append_messages against the raw driver (the floor)",
    "loop": "agent sends/s, SQL per send, latency by history length, cold send, memory",
    "concurrency": "no-tool sends from 1-64 sessions and 2 processes, client CPU per send",
    "context": "a 5,000-send folding session: per-send latency, store share, request size",
    "worker": "timer fires/s and lateness through power-loop worker processes (1 and 3)",
    "web": "a loop per request (dsn=, shared store), warm, new process: latency by history",
    "hooks": "what hooks cost a SQLite send: none, an empty list, observers; the floor",
    "workflow": "a 1,000-item foreach: per step beside a bare send, bytes, resume at 900",
    "shell": "a bash tool call beside a bare subprocess.run: start-up and 10 MB capped",
    "mcp_schema": "MCP argument checks: jsonschema 2020-12 beside fastjsonschema, the floor",
}
"""Benchmark name (the module ``bench.<name>``) and a one-line summary for ``--help``."""


def usage() -> str:
    """The list of benchmarks, for ``python -m bench --help``."""
    width = max(len(name) for name in BENCHMARKS)
    lines = [f"  {name:<{width}}  {summary}" for name, summary in BENCHMARKS.items()]
    return ("usage: python -m bench BENCHMARK [options]   "
            "(python -m bench BENCHMARK --help for its options)\n\nbenchmarks:\n"
            + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to ``bench.<name>.main(argv[1:])``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    entry: Callable[[list[str]], int] = module.main
    return entry(rest)


if __name__ == "__main__":
    raise SystemExit(main())
