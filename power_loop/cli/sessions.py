"""``power-loop sessions``: list, show, export, import, delete and unpark sessions, and
decide what a waiting send waits on (approve, reject, answer).

Export writes the portable JSON Lines format of :meth:`Store.export_session`, so a
session moves between databases and engines (SQLite to PostgreSQL...) with
``export`` on one side and ``import`` on the other; exporting again gives the same
bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from power_loop.cli.argtypes import non_negative_int, positive_int
from power_loop.cli.decisions import configure as configure_decision
from power_loop.cli.formatting import (
    compact,
    one_line,
    pending,
    print_json,
    send_dict,
    session_dict,
    table,
    when,
)
from power_loop.cli.registry import Action, Command, add_actions, set_handler
from power_loop.cli.session_tree import configure_tree
from power_loop.cli.store_access import (
    VERIFY_READS,
    VERIFY_WRITES,
    add_store_arguments,
    run_with_store,
    store_handler,
)
from power_loop.errors import InvalidArgumentError, SessionExistsError
from power_loop.llm.messages import Usage
from power_loop.store import SchemaPolicy, SessionRecord, Store
from power_loop.store.usage import SessionUsage, usage_reader
from power_loop.store.waits import as_mapping, waits_of

# -- list ------------------------------------------------------------------------------


async def _list(store: Store, args: argparse.Namespace) -> int:
    limit = int(args.limit)
    if args.parked:
        records = await store.list_parked_sessions(limit=limit + 1)
    else:
        records = await store.list_sessions(limit=limit + 1)
    shown, more = records[:limit], len(records) > limit
    if args.json:
        print_json([session_dict(r) for r in shown])
    elif shown:
        rows = [[r.id, when(r.created_at), when(r.updated_at), str(r.next_seq),
                 str(r.send_count), pending(r)]
                for r in shown]
        print(table(["ID", "CREATED (UTC)", "UPDATED (UTC)", "MESSAGES", "SENDS", "PENDING"],
                    rows))
    else:
        print("no parked sessions" if args.parked else "no sessions", file=sys.stderr)
    if more:
        which = "longest parked" if args.parked else "newest"
        print(f"(showing the {which} {limit}; pass --limit to see more)", file=sys.stderr)
    return 0


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=positive_int, default=50, metavar="N",
                        help="show at most the N newest sessions (default: %(default)s)")
    parser.add_argument("--parked", action="store_true",
                        help="only sessions workers gave up on (their pending send failed "
                             "--max-attempts times), the longest parked first")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON array of session objects instead of a table")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, store_handler(_list))


# -- show ------------------------------------------------------------------------------


def _lease(record: SessionRecord) -> str:
    if record.lease_owner is None:
        return f"free (epoch {record.lease_epoch})"
    return (f"{record.lease_owner!r} until {when(record.lease_expires_at)} UTC "
            f"(epoch {record.lease_epoch})")


def _tokens(usage: Usage, calls: int) -> str:
    return (f"{usage.input_tokens:,} in, {usage.output_tokens:,} out, "
            f"{usage.cache_read_tokens:,} cache read, {usage.cache_write_tokens:,} cache "
            f"write; {calls:,} model call{'' if calls == 1 else 's'}")


def _usage_dict(usage: SessionUsage) -> dict[str, Any]:
    return {"own": {**usage.own.to_json(), "model_calls": usage.own_model_calls},
            "total": {**usage.total.to_json(), "model_calls": usage.model_calls},
            "folds": {**usage.folds.to_json(), "model_calls": usage.fold_calls},
            "sub_sessions": len(usage.children),
            "by_model": {m: u.to_json() for m, u in sorted(usage.by_model.items())}}


async def _show(store: Store, args: argparse.Namespace) -> int:
    record = await store.get_session(str(args.session_id))
    first = max(0, record.send_count - int(args.sends))
    sends = await store.list_sends(record.id, from_index=first) if int(args.sends) else []
    waits = await waits_of(store).waiting(record.id)
    usage = await usage_reader(store).usage(record.id)
    if args.json:
        print_json({"session": session_dict(record), "sends": [send_dict(s) for s in sends],
                    "waiting": [as_mapping(w) for w in waits], "usage": _usage_dict(usage)})
        return 0
    waiting = "none pending" if record.pending_send is None else (
        f"#{record.pending_send} pending")
    if record.parked_at is not None:
        waiting += (f", parked {when(record.parked_at)} UTC after "
                    f"{record.resume_attempts} failed resumes")
    prompt = "-" if record.system_prompt is None else one_line(record.system_prompt, 200)
    print(table(["session", record.id], [
        ["parent", record.parent_id or "-"],
        ["created", f"{when(record.created_at)} UTC"],
        ["updated", f"{when(record.updated_at)} UTC"],
        ["messages", str(record.next_seq)],
        ["sends", f"{record.send_count}, {waiting}"],
        ["lease", _lease(record)],
        ["metadata", compact(dict(record.metadata), 200)],
        ["system prompt", prompt],
        ["usage", _tokens(usage.own, usage.own_model_calls)],
        ["total usage", f"{_tokens(usage.total, usage.model_calls)} (sub-sessions "
                        f"included: {len(usage.children)} direct)"],
    ]))
    if waits:
        print(f"\nwaiting (send #{waits[0].send_index}; decide with `power-loop sessions "
              "approve|reject|answer ID CALL`):")
        print(table(["CALL", "WAITS FOR", "TOOL", "ARGUMENTS", "EXPIRES (UTC)"],
                    [[w.wait_id, "an answer" if w.kind == "input" else "approval",
                      w.tool_name, one_line(w.arguments, 80),
                      when(w.expires_at) if w.expires_at else "never"] for w in waits]))
    if sends:
        print(f"\nsends (the last {len(sends)} of {record.send_count}):"
              if len(sends) < record.send_count else "\nsends:")
        print(table(
            ["SEND", "STATUS", "SOURCE", "STARTED (UTC)", "FINISHED (UTC)", "ROUNDS", "STOP",
             "USAGE"],
            [[f"#{s.send_index}", s.status, s.source, when(s.created_at), when(s.finished_at),
              str(s.rounds), s.stop_reason or "-", _send_tokens(s.usage)]
             for s in sends]))
    return 0


def _send_tokens(stored: Mapping[str, Any]) -> str:
    usage = Usage.from_json(stored)
    return f"{usage.input_tokens:,} in / {usage.output_tokens:,} out"


def _configure_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="the session's id")
    parser.add_argument("--sends", type=non_negative_int, default=20, metavar="N",
                        help="include the last N sends (default: %(default)s; 0 for none)")
    parser.add_argument("--json", action="store_true",
                        help='print {"session": {...}, "sends": [...]} as JSON')
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, store_handler(_show))


# -- export ----------------------------------------------------------------------------


async def _write_export(store: Store, session_id: str, out: BinaryIO) -> int:
    count = 0
    lines = store.export_session(session_id)
    try:
        async for line in lines:
            out.write(line.encode("utf-8"))
            count += 1
    finally:
        # The export holds a read transaction open; end it now if writing failed,
        # not whenever the generator is collected.
        if isinstance(lines, AsyncGenerator):
            await lines.aclose()
    out.flush()
    return count


def _export(args: argparse.Namespace) -> int:
    session_id = str(args.session_id)

    def to(out: BinaryIO) -> int:
        async def body(store: Store, _: argparse.Namespace) -> int:
            return await _write_export(store, session_id, out)

        return run_with_store(args, body)

    if args.output in (None, "-"):
        sys.stdout.flush()
        to(sys.stdout.buffer)
        return 0
    path = Path(str(args.output))
    # Written beside the target and renamed over it only when complete, so a failed
    # export never leaves a truncated file that an import would reject (or trust).
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        out = partial.open("wb")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    try:
        with out:
            count = to(out)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    print(f"exported session {session_id!r} ({count} lines) to {str(path)!r}",
          file=sys.stderr)
    return 0


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="the session's id")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE (replaced only once the export is complete) "
                             "instead of stdout")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_READS)
    set_handler(parser, _export)


# -- import ----------------------------------------------------------------------------


def _read_lines(source: str) -> list[str]:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {source!r}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{source!r} is not UTF-8 text (byte {exc.start}); is it a session export?"
        ) from None
    # Split on \n only: str.splitlines() would also split inside JSON strings at U+2028,
    # U+0085 and friends, which the export leaves unescaped.
    return text.split("\n")


def _import(args: argparse.Namespace) -> int:
    lines = _read_lines(str(args.file))
    replace = bool(args.replace)

    async def body(store: Store, _: argparse.Namespace) -> int:
        try:
            session_id = await store.import_session(lines, replace=replace)
        except SessionExistsError as exc:
            raise SessionExistsError(
                f"session {exc.session_id!r} already exists; pass --replace to overwrite it",
                session_id=exc.session_id) from exc
        print(f"imported session {session_id!r}")
        return 0

    return run_with_store(args, body)


def _configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="a file written by `sessions export`, or - for stdin")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite a session with the same id (default: refuse with "
                             "session_exists)")
    add_store_arguments(
        parser, policy=SchemaPolicy.AUTO_CREATE,
        why="importing into a fresh database (a restore, or a move to another engine) "
            "is the main use")
    set_handler(parser, _import)


# -- delete ----------------------------------------------------------------------------


async def _delete(store: Store, args: argparse.Namespace) -> int:
    session_id = str(args.session_id)
    await store.delete_session(session_id)
    print(f"deleted session {session_id!r}")
    return 0


def _configure_delete(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="the session's id")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_WRITES)
    set_handler(parser, store_handler(_delete))


# -- unpark ----------------------------------------------------------------------------


async def _unpark(store: Store, args: argparse.Namespace) -> int:
    session_id = str(args.session_id)
    record = await store.get_session(session_id)
    if record.parked_at is None:
        print(f"session {session_id!r} is not parked", file=sys.stderr)
        return 0
    await store.unpark_session(session_id)
    print(f"unparked session {session_id!r}: workers will resume send "
          f"#{record.pending_send}")
    return 0


def _configure_unpark(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="ID", help="the session's id")
    add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why=VERIFY_WRITES)
    set_handler(parser, store_handler(_unpark))


# -- the group -------------------------------------------------------------------------

_ACTIONS: tuple[Action, ...] = (
    ("list", "list sessions, newest first", _configure_list),
    ("show", "show one session: its row, message count and recent sends", _configure_show),
    ("export", "write one session as portable JSON Lines", _configure_export),
    ("import", "load a session written by `sessions export`", _configure_import),
    ("delete", "delete one session and everything it holds", _configure_delete),
    ("unpark", "let workers resume a parked session's send again", _configure_unpark),
    ("tree", "show a session and the sub-agent sessions below it", configure_tree),
    ("approve", "approve a tool call the session's send waits on", configure_decision("approve")),
    ("reject", "reject a tool call the session's send waits on", configure_decision("reject")),
    ("answer", "answer the session's ask_user question", configure_decision("answer")),
)


def _configure(parser: argparse.ArgumentParser) -> None:
    add_actions(parser, _ACTIONS)


COMMANDS: tuple[Command, ...] = (
    Command(
        name="sessions",
        help="list, show, export, import, delete, unpark sessions; show their trees; approve, "
             "reject, answer",
        description=(
            "Inspect and move sessions.\n\n"
            "list, show, export, delete, unpark, tree, approve, reject and answer open\n"
            "the store with --schema verify: a mistyped DSN or prefix fails with the DDL\n"
            "to run instead of creating tables. import opens it with --schema\n"
            "auto_create, so an export can be loaded into a brand-new database."),
        epilog=(
            "examples:\n"
            "  export POWER_LOOP_DSN=postgresql://app@db/app\n"
            "  power-loop sessions list --limit 20\n"
            "  power-loop sessions list --parked\n"
            "  power-loop sessions show 6f1c0d --json\n"
            "  power-loop sessions export 6f1c0d -o 6f1c0d.jsonl\n"
            "  power-loop sessions import 6f1c0d.jsonl --dsn sqlite:///copy.db\n"
            "  power-loop sessions delete 6f1c0d\n"
            "  power-loop sessions unpark 6f1c0d\n"
            "  power-loop sessions tree 6f1c0d\n"
            "  power-loop sessions approve 6f1c0d call_1 --app myapp.agents:make_loop\n"
            "  power-loop sessions reject 6f1c0d call_1 --reason 'not today'\n"
            "  power-loop sessions answer 6f1c0d call_2 'Paris'"),
        configure=_configure,
    ),
)
