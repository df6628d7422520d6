"""What every store command shares: the ``--dsn``/``--prefix``/``--schema`` options,
opening the store under the right schema policy, and keeping passwords out of output.

Policy per command: commands that read or delete open with ``SchemaPolicy.VERIFY``, so a
mistyped DSN or prefix fails with ``schema_missing`` instead of quietly creating an empty
set of tables (and reporting "no sessions"). ``sessions import`` opens with
``AUTO_CREATE``: loading an export into a fresh database is its main use. A VERIFY
command also refuses a SQLite file that does not exist, because opening it would create
it. ``--schema`` overrides the default for one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from power_loop.errors import InvalidDSNError
from power_loop.store import SchemaPolicy, Store, open_store, redact_dsn
from power_loop.store.dsn import parse_dsn

DSN_ENV = "POWER_LOOP_DSN"
VERIFY_READS = "a mistyped DSN or prefix must fail, not show an empty new store"
"""Why a reading command opens the store with ``--schema verify``."""
VERIFY_WRITES = "it must not create tables in a database that was never a store"
"""Why a command changing existing rows opens the store with ``--schema verify``."""
"""The environment variable read when ``--dsn`` is not given."""

_POLICY_HELP = {
    SchemaPolicy.VERIFY: "fail with the DDL to run when the tables are missing; never "
                         "creates anything",
    SchemaPolicy.AUTO_CREATE: "create or upgrade the tables when needed",
    SchemaPolicy.NONE: "skip the check",
}


def add_store_arguments(parser: argparse.ArgumentParser, *, policy: SchemaPolicy,
                        why: str) -> None:
    """Add ``--dsn``, ``--prefix`` and ``--schema`` (defaulting to ``policy``)."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--dsn", metavar="DSN", default=None,
        help=f"the store: a SQLite file path, sqlite:///file.db, postgresql://... or "
             f"mysql://... (default: ${DSN_ENV}). Prefer the variable for a DSN with a "
             f"password: command-line arguments are visible to other users in `ps`")
    group.add_argument(
        "--prefix", default="pl_", metavar="PREFIX",
        help="table prefix the application uses (default: %(default)s)")
    choices = ", ".join(f"{p.value} ({_POLICY_HELP[p]})" for p in SchemaPolicy)
    group.add_argument(
        "--schema", default=policy.value, choices=[p.value for p in SchemaPolicy],
        metavar="POLICY",
        help=f"what to do about the tables on opening: {choices}. "
             f"Default for this command: {policy.value}, because {why}")


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Where a store command works, resolved from its arguments and the environment."""

    dsn: str
    prefix: str
    policy: SchemaPolicy

    def __repr__(self) -> str:
        return f"StoreTarget(dsn={redact_dsn(self.dsn)!r}, prefix={self.prefix!r})"


def given_dsn(args: argparse.Namespace) -> str | None:
    """The DSN from ``--dsn`` or ``$POWER_LOOP_DSN``, if the command takes one."""
    if not hasattr(args, "dsn"):
        return None
    value = os.environ.get(DSN_ENV) if args.dsn is None else args.dsn
    return None if value is None else str(value)


def store_target(args: argparse.Namespace) -> StoreTarget:
    """Resolve the target of a store command, or raise :class:`InvalidDSNError`."""
    dsn = given_dsn(args)
    if not dsn:
        raise InvalidDSNError(f"no database given: pass --dsn or set {DSN_ENV}")
    return StoreTarget(dsn=dsn, prefix=str(args.prefix), policy=SchemaPolicy(args.schema))


def dsn_secrets(dsn: str | None) -> list[str]:
    """Password strings that may hide in ``dsn``, in every spelling that could be echoed."""
    if not dsn or "://" not in dsn:
        return []
    try:
        parts = urlsplit(dsn)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in {"password", "passwd"}]
    except ValueError:
        return []
    spellings = {s for raw in found for s in (raw, unquote(raw))}
    return sorted((s for s in spellings if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _refuse_missing_sqlite_file(dsn: str) -> None:
    parsed = parse_dsn(dsn)
    location = parsed.location
    if not parsed.backend.file_dsn or location == ":memory:" or location.startswith(
            "file:"):
        return
    if not Path(location).exists():
        raise InvalidDSNError(
            f"SQLite database {location!r} does not exist; check the path (only "
            "`sessions import` creates a database, or pass --schema auto_create)")


@asynccontextmanager
async def opened_store(target: StoreTarget) -> AsyncIterator[Store]:
    """The store at ``target``, closed on exit."""
    if target.policy is not SchemaPolicy.AUTO_CREATE:
        _refuse_missing_sqlite_file(target.dsn)
    store = await open_store(target.dsn, schema=target.policy, table_prefix=target.prefix)
    try:
        yield store
    finally:
        await store.aclose()


StoreBody = Callable[[Store, argparse.Namespace], Awaitable[int]]
"""The part of a store command that runs with the store open."""


def run_with_store(args: argparse.Namespace, body: StoreBody) -> int:
    """Open the target store, run ``body`` on an event loop, and close the store."""
    target = store_target(args)

    async def run() -> int:
        async with opened_store(target) as store:
            return await body(store, args)

    return asyncio.run(run())


def store_handler(body: StoreBody) -> Callable[[argparse.Namespace], int]:
    """Wrap ``body`` into a command handler (see :func:`run_with_store`)."""

    def handler(args: argparse.Namespace) -> int:
        return run_with_store(args, body)

    return handler
