"""``power-loop sessions approve|reject|answer``: decide what a waiting send waits on.

The decision is recorded in the store at once (exactly one decision per call wins).
Continuing the send needs the application's tools and model: with ``--app
module:factory`` (the factory ``power-loop worker`` takes) this command continues it
itself and prints the outcome; without, a running ``power-loop worker`` picks the send up
once nothing of its round is left undecided.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable

from power_loop.cli.formatting import one_line, print_json
from power_loop.cli.registry import set_handler
from power_loop.cli.store_access import VERIFY_WRITES, add_store_arguments, store_handler
from power_loop.cli.worker import load_factory
from power_loop.errors import ConfigurationError
from power_loop.loop.agent import StatefulAgentLoop
from power_loop.loop.results import SendResult
from power_loop.store import SchemaPolicy, Store
from power_loop.store.waits import Decided, as_mapping, waits_of

_VERBS = {"approve": "approved", "reject": "rejected", "answer": "answered"}


def _decision(args: argparse.Namespace) -> str | None:
    if args.verb == "answer":
        text = str(args.text)
        return sys.stdin.read() if text == "-" else text
    reason = getattr(args, "reason", None)
    return None if reason is None else str(reason)


async def _with_app(store: Store, args: argparse.Namespace) -> SendResult:
    made = load_factory(str(args.app))(store)
    loop = await made if inspect.isawaitable(made) else made
    if not isinstance(loop, StatefulAgentLoop):
        raise ConfigurationError("--app must return a StatefulAgentLoop")
    sid, call = str(args.session_id), str(args.call_id)
    if args.verb == "approve":
        return await loop.approve(sid, call)
    if args.verb == "reject":
        return await loop.reject(sid, call, reason=_decision(args))
    return await loop.answer(sid, call, _decision(args) or "")


async def _decide(store: Store, args: argparse.Namespace) -> int:
    sid, call = str(args.session_id), str(args.call_id)
    if args.app is not None:
        result = await _with_app(store, args)
        if args.json:
            print_json({"status": result.status, "stop_reason": result.stop_reason,
                        "final_text": result.final_text,
                        "waiting": [as_mapping(w) for w in result.waiting]})
        elif result.waiting:
            print(f"{_VERBS[args.verb]} {call!r}; session {sid!r} still waits on "
                  + ", ".join(repr(w.wait_id) for w in result.waiting))
        else:
            print(f"{_VERBS[args.verb]} {call!r}; send #{result.send_index} {result.status}: "
                  f"{one_line(result.final_text, 200)}")
        return 0
    decided: Decided = await waits_of(store).decide(sid, call, _VERBS[args.verb],
                                                    _decision(args))
    if args.json:
        print_json({"decided": as_mapping(decided.wait),
                    "waiting": [as_mapping(w) for w in decided.remaining]})
    elif decided.remaining:
        print(f"{_VERBS[args.verb]} {call!r}; session {sid!r} still waits on "
              + ", ".join(repr(w.wait_id) for w in decided.remaining))
    else:
        print(f"{_VERBS[args.verb]} {call!r}; a worker (`power-loop worker --app ...`) "
              "continues the send, or pass --app here to continue it now")
    return 0


def configure(verb: str) -> Callable[[argparse.ArgumentParser], None]:
    """The parser setup of one decision command."""

    def setup(parser: argparse.ArgumentParser) -> None:
        parser.set_defaults(verb=verb)
        parser.add_argument("session_id", metavar="ID", help="the session's id")
        parser.add_argument("call_id", metavar="CALL",
                            help="the waiting call's id (`sessions show` lists them)")
        if verb == "answer":
            parser.add_argument("text", metavar="TEXT",
                                help="the answer the model reads ('-': read it from stdin)")
        if verb == "reject":
            parser.add_argument("--reason", metavar="TEXT", default=None,
                                help="why, for the model to read")
        parser.add_argument("--app", metavar="MODULE:FACTORY", default=None,
                            help="continue the send here with the application's loop (the "
                                 "factory `power-loop worker --app` takes); without it, "
                                 "only the decision is recorded and a worker continues")
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
        add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_WRITES)
        set_handler(parser, store_handler(_decide))

    return setup
