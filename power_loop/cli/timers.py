"""``power-loop timers``: list, cancel and unpark the durable timers of a store.

A timer whose firing kept failing is ``parked`` by the workers (see ``--max-attempts``
of ``power-loop worker``); ``timers list --status parked`` shows them with their last
error, and ``timers unpark`` lets the workers try again once the cause is fixed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from power_loop.cli.argtypes import positive_int
from power_loop.cli.formatting import compact, one_line, print_json, table, timer_dict, when
from power_loop.cli.registry import Action, Command, add_actions, set_handler
from power_loop.cli.store_access import (
    VERIFY_READS,
    VERIFY_WRITES,
    StoreBody,
    add_store_arguments,
    store_handler,
)
from power_loop.errors import InvalidArgumentError
from power_loop.store import SchemaPolicy, Store
from power_loop.timers.records import TIMER_STATUSES, TimerRecord


def _every(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:g}s"


async def _list(store: Store, args: argparse.Namespace) -> int:
    limit = int(args.limit)
    records = await store.list_timers(args.session, status=args.status, limit=limit + 1)
    shown, more = records[:limit], len(records) > limit
    if args.json:
        print_json([timer_dict(r) for r in shown])
    elif shown:
        rows = [[r.timer_id, r.session_id, r.status, when(r.due_at), _every(r.every),
                 str(r.fire_count), str(r.attempts),
                 "-" if r.last_error is None else compact(dict(r.last_error), 40),
                 one_line(r.message, 40)] for r in shown]
        print(table(["ID", "SESSION", "STATUS", "DUE (UTC)", "EVERY", "FIRES", "ATTEMPTS",
                     "LAST ERROR", "MESSAGE"], rows))
    else:
        print("no timers", file=sys.stderr)
    if more:
        print(f"(showing the {limit} due soonest; pass --limit to see more)", file=sys.stderr)
    return 0


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", metavar="ID", default=None,
                        help="only the timers of this session")
    parser.add_argument("--status", choices=TIMER_STATUSES, default=None,
                        help="only timers with this status")
    parser.add_argument("--limit", type=positive_int, default=50, metavar="N",
                        help="show at most N timers, soonest due first "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON array of timer objects instead of a table")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, store_handler(_list))


async def _existing(store: Store, timer_id: str) -> TimerRecord:
    timer = await store.get_timer(timer_id)
    if timer is None:
        raise InvalidArgumentError(f"no timer {timer_id!r} in this store (check --dsn and "
                                   "--prefix; `power-loop timers list` shows the timers)")
    return timer


async def _status(store: Store, timer: TimerRecord) -> str:
    """Its status now (it may have changed since it was read)."""
    now = await store.get_timer(timer.timer_id)
    return "deleted" if now is None else now.status


async def _cancel(store: Store, args: argparse.Namespace) -> int:
    timer = await _existing(store, str(args.timer_id))
    if await store.cancel_timer(timer.timer_id):
        print(f"cancelled timer {timer.timer_id!r}")
    else:
        print(f"timer {timer.timer_id!r} is {await _status(store, timer)}: nothing to "
              "cancel", file=sys.stderr)
    return 0


async def _unpark(store: Store, args: argparse.Namespace) -> int:
    timer = await _existing(store, str(args.timer_id))
    if await store.unpark_timer(timer.timer_id):
        print(f"unparked timer {timer.timer_id!r}: workers will fire it when due")
    else:
        print(f"timer {timer.timer_id!r} is {await _status(store, timer)}, not parked",
              file=sys.stderr)
    return 0


def _on_one_timer(body: StoreBody) -> Callable[[argparse.ArgumentParser], None]:
    """Configure an action taking one timer id and changing that timer."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("timer_id", metavar="ID", help="the timer's id")
        add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_WRITES)
        set_handler(parser, store_handler(body))

    return configure


_ACTIONS: tuple[Action, ...] = (
    ("list", "list timers, soonest due first", _configure_list),
    ("cancel", "cancel a scheduled or parked timer", _on_one_timer(_cancel)),
    ("unpark", "let workers fire a parked timer again", _on_one_timer(_unpark)),
)


def _configure(parser: argparse.ArgumentParser) -> None:
    add_actions(parser, _ACTIONS)


COMMANDS: tuple[Command, ...] = (
    Command(
        name="timers",
        help="list, cancel or unpark timers",
        description=__doc__,
        epilog=(
            "examples:\n"
            "  power-loop timers list --session 6f1c0d\n"
            "  power-loop timers list --status parked\n"
            "  power-loop timers unpark 0b9e21\n"
            "  power-loop timers cancel 0b9e21"),
        configure=_configure,
    ),
)
