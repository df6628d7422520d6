"""``power-loop worker``: fire due timers and finish interrupted sends, until stopped.

The application's loop comes from ``--app module:factory``: a callable taking the opened
store and returning a StatefulAgentLoop on it (its model, tools and config), sync or
async. Run as many workers as you like, on one machine or many: they share the work.
SIGTERM stops claiming and lets running work finish for ``--grace`` seconds, then hands
the rest to other workers; a second SIGTERM exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from typing import Any

from power_loop.cli.registry import Command, set_handler
from power_loop.cli.store_access import add_store_arguments, store_target
from power_loop.errors import ConfigurationError
from power_loop.events.types import Event
from power_loop.store.migrations import SchemaPolicy
from power_loop.worker.worker import Worker


def load_factory(spec: str) -> Any:
    """``module:attribute`` (the current directory importable, as for uvicorn)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app {spec!r} must look like package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigurationError(f"--app: {module_name!r} has no callable {attribute!r}")
    return factory


def _print_event(event: Event) -> None:
    fields = {k: getattr(event, k) for k in ("timer_id", "kind", "key", "fire", "reason",
                                              "attempts") if hasattr(event, k)}
    details = " ".join(f"{k}={v}" for k, v in fields.items())
    logging.getLogger("power_loop.worker").info("%s session=%s %s", event.type,
                                                event.session_id, details)


def _handle(args: argparse.Namespace) -> int:
    target = store_target(args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(dsn=target.dsn, table_prefix=target.prefix,
                    loop_factory=load_factory(args.app), concurrency=args.concurrency,
                    poll_interval=args.poll, claim_ttl=args.claim_ttl,
                    max_attempts=args.max_attempts, grace_period=args.grace,
                    on_event=None if args.quiet else _print_event)
    stats = asyncio.run(worker.run(handle_signals=True))
    print(f"worker stopped: {stats}", file=sys.stderr)
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, policy=SchemaPolicy.AUTO_CREATE,
                        why="a worker may be the first process on a new database")
    parser.add_argument("--app", required=True, metavar="MODULE:FACTORY",
                        help="the factory building your loop from the store, e.g. "
                             "myapp.agents:make_loop")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="timers and sends run at once (default: %(default)s)")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="longest sleep between polls, seconds; on PostgreSQL a new "
                             "timer wakes the worker sooner (default: %(default)s)")
    parser.add_argument("--claim-ttl", type=float, default=30.0,
                        help="timer claim lease, seconds (default: %(default)s)")
    parser.add_argument("--max-attempts", type=int, default=5,
                        help="failed attempts before a timer or session is parked "
                             "(default: %(default)s)")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds running work may finish after SIGTERM "
                             "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    set_handler(parser, _handle)


COMMANDS = (
    Command("worker", "fire due timers and finish interrupted sends (any number of them)",
            _configure, description=__doc__),
)
