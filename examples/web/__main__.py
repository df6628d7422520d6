"""``python -m examples.web``: the page, its web process and a worker, in one command.

Usage (from the repository's root)::

    python -m examples.web                                  # SQLite: power-loop-web.db
    python -m examples.web --dsn postgresql://app@db/app    # PostgreSQL (or mysql://...)
    python -m examples.web --role web --port 8001           # only the web process
    python -m examples.web --role worker                    # only a worker

Offline with a scripted model unless ``POWER_LOOP_API_KEY`` is set (docs/providers.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from .agent import Settings
from .app import create_app, stop_streams
from .worker import run_worker


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.web", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("POWER_LOOP_DSN",
                                                        "power-loop-web.db"),
                        help="the store (default: power-loop-web.db, or $POWER_LOOP_DSN)")
    parser.add_argument("--prefix", default="pl_", help="table prefix (default pl_)")
    parser.add_argument("--role", choices=("all", "web", "worker"), default="all",
                        help="all (default): the web process and a worker process")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lease-ttl", type=float, default=10.0,
                        help="seconds before a worker takes over a dead process's send")
    parser.add_argument("--research-seconds", type=float, default=4.0,
                        help="how long the offline research tool takes")
    parser.add_argument("--poll", type=float, default=1.0, help="the worker's poll interval")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds running sends get on shutdown before a worker "
                             "takes them over")
    parser.add_argument("--heartbeat", type=float, default=15.0,
                        help="seconds between heartbeats on a quiet event stream")
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(dsn=args.dsn, table_prefix=args.prefix, lease_ttl=args.lease_ttl,
                    research_seconds=args.research_seconds)


class _Server(uvicorn.Server):
    """uvicorn, ending the open event streams as soon as it is asked to stop."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        stop_streams(self._app)
        super().handle_exit(sig, frame)


def serve(args: argparse.Namespace) -> None:
    app = create_app(settings_of(args), heartbeat=args.heartbeat,
                     shutdown_grace=args.grace)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            timeout_graceful_shutdown=15)
    print(f"power_loop web example on http://{args.host}:{args.port}/ "
          f"(store: {args.dsn})", flush=True)
    _Server(config, app).run()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.role == "worker":
        asyncio.run(run_worker(settings_of(args), poll_interval=args.poll))
        return
    if args.role == "web":
        serve(args)
        return
    forwarded = list(argv if argv is not None else sys.argv[1:])
    worker = subprocess.Popen([sys.executable, "-m", "examples.web", *forwarded,
                               "--role", "worker"])
    try:
        serve(args)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait()


if __name__ == "__main__":
    main()
