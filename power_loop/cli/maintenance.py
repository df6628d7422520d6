"""``power-loop prune`` and ``power-loop vacuum``: retention and space reclamation."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from power_loop.cli.argtypes import positive_int
from power_loop.cli.registry import Command, set_handler
from power_loop.cli.store_access import add_store_arguments, store_handler
from power_loop.store import SchemaPolicy, Store

_AGE = re.compile(r"(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WHY = "a maintenance run must fail on a mistyped DSN or prefix, not create tables"


def parse_cutoff(text: str, now: datetime | None = None) -> datetime:
    """``--older-than``: an age (``90d``, ``12h``, ``30m``, ``2w``) or an ISO date/time.

    An age counts back from ``now`` (this machine's clock). A date or time without an
    offset is read as UTC. The cutoff must lie in the past.

    Raises:
        argparse.ArgumentTypeError: not an age or date, zero, or in the future.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    match = _AGE.match(value.lower())
    if match:
        amount = float(match["amount"])
        if amount <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive age")
        try:
            return now - timedelta(**{_UNITS[match["unit"]]: amount})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} reaches back too far") from None
    try:
        cutoff = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (90d, 12h, 30m, 45s, 2w) nor an ISO date "
            "(2025-01-31 or 2025-01-31T12:00:00+02:00)") from None
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=UTC)
    if cutoff > now:
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future: every idle session would be pruned")
    return cutoff


async def _prune(store: Store, args: argparse.Namespace) -> int:
    cutoff: datetime = args.older_than
    deleted = await store.prune(older_than=cutoff, batch_size=int(args.batch_size))
    stamp = cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"pruned {deleted} session{'' if deleted == 1 else 's'} not updated since "
          f"{stamp} UTC")
    return 0


def _configure_prune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than", required=True, type=parse_cutoff, metavar="AGE|DATE",
        help="delete sessions whose last change is older than this: an age such as 90d, "
             "12h, 30m, 45s or 2w (counted from now), or an ISO date or time such as "
             "2025-01-31 or 2025-01-31T12:00:00+02:00 (UTC when no offset is given)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=500, metavar="N",
        help="sessions deleted per transaction (default: %(default)s); smaller batches "
             "hold locks for less time")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=_WHY)
    set_handler(parser, store_handler(_prune))


async def _vacuum(store: Store, args: argparse.Namespace) -> int:
    await store.vacuum()
    print(f"vacuumed the {store.backend} store (prefix {store.table_prefix!r})")
    return 0


def _configure_vacuum(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=_WHY)
    set_handler(parser, store_handler(_vacuum))


COMMANDS: tuple[Command, ...] = (
    Command(
        name="prune",
        help="delete sessions not updated for a while",
        description=(
            "Delete every session (with its messages and sends) whose last change is\n"
            "older than --older-than. Sessions whose lease is still held are kept, so a\n"
            "conversation in progress is never pruned. Work is done in batches, one\n"
            "transaction each; the number deleted is printed. Opens the store with\n"
            "--schema verify."),
        epilog=(
            "examples:\n"
            "  power-loop prune --dsn app.db --older-than 90d\n"
            "  power-loop prune --older-than 2025-01-01   # with $POWER_LOOP_DSN set"),
        configure=_configure_prune,
    ),
    Command(
        name="vacuum",
        help="reclaim space and refresh planner statistics",
        description=(
            "Reclaim the space left by deleted sessions and refresh the query planner's\n"
            "statistics: VACUUM, a WAL checkpoint and PRAGMA optimize on SQLite;\n"
            "VACUUM (ANALYZE) of each table on PostgreSQL; OPTIMIZE and ANALYZE TABLE\n"
            "on MySQL. Run it after a large prune, at a quiet time: on SQLite it\n"
            "rewrites the whole file and blocks writers while it does. Opens the store\n"
            "with --schema verify."),
        epilog="example:\n  power-loop vacuum --dsn app.db",
        configure=_configure_vacuum,
    ),
)
