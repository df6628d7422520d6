"""``power-loop workflows``: list, show, cancel and signal the workflows of a store.

``show`` prints the state of every journaled step (by its path in the spec). ``signal``
releases a ``wait`` step (now, or when the workflow reaches it); ``cancel`` stops a
running workflow at its executor's next journal write. Finishing a workflow whose
executor died is the workers' job (``power-loop worker`` with the application's agents).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from power_loop.cli.argtypes import positive_int
from power_loop.cli.formatting import compact, print_json, table
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
from power_loop.workflows._journal import Journal, WorkflowRecord


def _summary(record: WorkflowRecord) -> dict[str, object]:
    return {"workflow_id": record.workflow_id, "status": record.status,
            "parked": record.parked, "attempts": record.attempts,
            "epoch": record.lease_epoch, "output": record.output, "error": record.error}


async def _list(store: Store, args: argparse.Namespace) -> int:
    records = await Journal(store).recent(int(args.limit))
    if args.json:
        print_json([_summary(r) for r in records])
    elif records:
        print(table(["ID", "STATUS", "PARKED", "ATTEMPTS", "OUTPUT/ERROR"],
                    [[r.workflow_id, r.status, "yes" if r.parked else "-", str(r.attempts),
                      compact(r.error if r.error is not None else r.output, 50)]
                     for r in records]))
    else:
        print("no workflows", file=sys.stderr)
    return 0


async def _show(store: Store, args: argparse.Namespace) -> int:
    journal = Journal(store)
    record = await journal.load(str(args.workflow_id))
    steps = await journal.steps(record.workflow_id)
    if args.json:
        print_json({**_summary(record), "spec": record.spec, "input": record.input,
                    "steps": [{"path": s.path, "kind": s.kind, "status": s.status,
                               "output": s.output, "child_session": s.child_session}
                              for s in steps.values()]})
        return 0
    print(f"workflow {record.workflow_id}: {record.status}"
          + (" (parked)" if record.parked else "") + f", epoch {record.lease_epoch}")
    if steps:
        print(table(["PATH", "KIND", "STATUS", "OUTPUT", "CHILD SESSION"],
                    [[s.path, s.kind, s.status, compact(s.output, 40), s.child_session or "-"]
                     for s in steps.values()]))
    if record.status == "done":
        print(f"output: {compact(record.output, 200)}")
    elif record.error is not None:
        print(f"error: {compact(record.error, 200)}")
    return 0


async def _cancel(store: Store, args: argparse.Namespace) -> int:
    if await Journal(store).cancel(str(args.workflow_id)):
        print(f"cancelled workflow {args.workflow_id!r}")
    else:
        print(f"workflow {args.workflow_id!r} had ended: nothing to cancel", file=sys.stderr)
    return 0


async def _signal(store: Store, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError:
        raise InvalidArgumentError(f"the payload is not JSON: {args.payload!r:.60} (quote a "
                                   "string as '\"text\"')") from None
    if await Journal(store).signal(str(args.workflow_id), str(args.name), payload):
        print(f"sent signal {args.name!r} to workflow {args.workflow_id!r}")
    else:
        print(f"signal {args.name!r} was sent to workflow {args.workflow_id!r} before; the "
              "first one stands", file=sys.stderr)
    return 0


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=positive_int, default=50, metavar="N",
                        help="show at most N workflows, newest first (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, store_handler(_list))


def _on_one(body: StoreBody, *, reads: bool = False, extra: Callable[
        [argparse.ArgumentParser], None] | None = None,
        ) -> Callable[[argparse.ArgumentParser], None]:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("workflow_id", metavar="ID", help="the workflow's id")
        if extra is not None:
            extra(parser)
        add_store_arguments(parser, policy=SchemaPolicy.VERIFY,
                            why=VERIFY_READS if reads else VERIFY_WRITES)
        set_handler(parser, store_handler(body))
    return configure


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _signal_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the signal's name (a wait step's 'wait')")
    parser.add_argument("payload", nargs="?", default="null",
                        help="its payload, as JSON (default: null)")


_ACTIONS: tuple[Action, ...] = (
    ("list", "list workflows, newest first", _configure_list),
    ("show", "show a workflow and the state of every journaled step",
     _on_one(_show, reads=True, extra=_json_flag)),
    ("cancel", "cancel a running workflow", _on_one(_cancel)),
    ("signal", "send a signal to a workflow's wait step", _on_one(_signal, extra=_signal_args)),
)


def _configure(parser: argparse.ArgumentParser) -> None:
    add_actions(parser, _ACTIONS)


COMMANDS: tuple[Command, ...] = (
    Command(
        name="workflows",
        help="list, show, cancel or signal workflows",
        description=__doc__,
        epilog=(
            "examples:\n"
            "  power-loop workflows list\n"
            "  power-loop workflows show wf_3e1d...\n"
            "  power-loop workflows signal wf_3e1d... approved '{\"by\": \"ana\"}'\n"
            "  power-loop workflows cancel wf_3e1d..."),
        configure=_configure,
    ),
)
