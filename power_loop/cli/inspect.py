"""``power-loop inspect``: serve the read-only session inspector over a store.

It binds 127.0.0.1 by default. It shows everything the agents stored (prompts, tool
arguments and results, metadata), so it refuses a non-loopback address without a token;
put TLS in front of it before it leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys

from power_loop.cli.argtypes import positive_int
from power_loop.cli.registry import Command, set_handler
from power_loop.cli.store_access import (
    VERIFY_READS,
    add_store_arguments,
    opened_store,
    store_target,
)
from power_loop.errors import InvalidArgumentError
from power_loop.inspector import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    create_inspector_app,
    require_web,
)
from power_loop.store import SchemaPolicy, redact_dsn


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(args: argparse.Namespace) -> str | None:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and len(token) < 16:
        raise InvalidArgumentError(
            f"the token is {len(token)} characters; use at least 16 (for example "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return token or None


def _root_path(value: str) -> str:
    if value and (not value.startswith("/") or value.endswith("/") or "//" in value
                  or any(c in value for c in "?#\\") or not value.isprintable()):
        raise InvalidArgumentError(
            f"--root-path {value!r} is not a path prefix: give it as /name (a leading "
            "slash, no trailing one), or leave it out to serve at the root")
    return value


def _inspect(args: argparse.Namespace) -> int:
    target = store_target(args)
    if target.policy is SchemaPolicy.AUTO_CREATE:
        raise InvalidArgumentError("the inspector never writes, so it does not create "
                                   "tables: use --schema verify (the default) or none")
    token = _token(args)
    host, port = str(args.host), int(args.port)
    if not _loopback(host) and token is None:
        raise InvalidArgumentError(
            f"refusing to serve the inspector on {host!r} without a token: it shows "
            f"everything the agents stored. Set ${TOKEN_ENV} (and put TLS in front), or "
            "bind 127.0.0.1")
    root_path = _root_path(args.root_path)
    require_web()
    import uvicorn

    async def serve() -> None:
        async with opened_store(target) as store:
            app = create_inspector_app(store, token=token)
            config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                    access_log=False, lifespan="off", root_path=root_path,
                                    timeout_graceful_shutdown=2)
            server = uvicorn.Server(config)
            print(f"power-loop inspect: {redact_dsn(target.dsn)} (prefix {target.prefix}, "
                  f"read-only) on http://{host}:{port}/"
                  f"{f' (links under {root_path}/)' if root_path else ''} "
                  f"({'token required' if token else 'no token'}); Ctrl-C stops",
                  file=sys.stderr, flush=True)
            try:
                await server.serve()
            except SystemExit:  # uvicorn's way of saying it could not bind
                server.started = False
            if not server.started:
                raise InvalidArgumentError(
                    f"could not listen on {host}:{port} (in use, or not an address of "
                    "this machine?); pass another --port or --host")

    asyncio.run(serve())
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="the address to listen on (default: %(default)s; any other "
                             "needs a token)")
    parser.add_argument("--port", type=positive_int, default=DEFAULT_PORT,
                        help="the port (default: %(default)s)")
    parser.add_argument("--token", default=None,
                        help=f"ask every request for this token, at least 16 characters "
                             f"(default: ${TOKEN_ENV}; prefer the variable: arguments show "
                             "in `ps`)")
    parser.add_argument("--root-path", default="",
                        help="the path prefix a reverse proxy serves the inspector under "
                             "and strips before passing requests on (e.g. /inspect): "
                             "links then carry it (default: served at the root)")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, _inspect)


COMMANDS: tuple[Command, ...] = (
    Command(
        name="inspect",
        help="serve a read-only web UI over the store's sessions",
        description=__doc__,
        epilog=(
            "examples:\n"
            "  power-loop inspect --dsn app.db\n"
            f"  {TOKEN_ENV}=$(cat token) power-loop inspect --dsn postgresql://app@db/app\n"
            "  ssh -L 8710:127.0.0.1:8710 server   # then open http://127.0.0.1:8710/"),
        configure=_configure,
    ),
)
