"""Count the SQL statements a workload sends, at the driver.

Counting happens below power_loop, so ``BEGIN``/``COMMIT`` issued inside the driver
adapters and statements the driver sends on its own (asyncpg's pool resets a connection
with a query each time one is released) are seen too. Each call into the driver that
sends SQL counts once, labelled by its leading keyword; a multi-statement string is
labelled by all of them (``SELECT+CLOSE+UNLISTEN+RESET``).

:func:`trace_statements` records each statement with the connection it went through,
and :func:`transactions` groups a trace into transactions (``BEGIN`` ... ``COMMIT`` on
one connection), telling the ones that write from the ones that only read.

The hooks wrap driver methods at class level for the duration of the ``with`` block
only; they are never active while a benchmark is timed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Methods that send SQL and do not call one another: the calls a workload makes.
# (SQLite: sqlite3 connections are C objects; they are traced, see _traced_sqlite.)
_HOOKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "asyncpg": ("asyncpg.connection:Connection",
                ("execute", "executemany", "fetch", "fetchrow", "fetchval")),
    # Below cursors, begin() and commit(): every COM_QUERY goes through here.
    "aiomysql": ("aiomysql.connection:Connection", ("_execute_command",)),
}


def _keyword(statement: str) -> str:
    word = statement.split(None, 1)[0].upper()
    if word == "WITH":
        # A data-modifying CTE (PostgreSQL's one-statement writes) is labelled by what
        # its first part does: WITH(UPDATE) writes, a plain WITH reads.
        head = statement.upper().split("(", 1)
        inner = head[1].split(None, 1)[0] if len(head) > 1 and head[1].split() else ""
        return f"WITH({inner})" if inner in _WRITES else word
    return word


def label(sql: object) -> str:
    """The leading keyword of each statement in ``sql``: ``UPDATE``, ``BEGIN``...; a
    ``WITH`` whose first part writes is ``WITH(UPDATE)`` (or ``INSERT``...)."""
    text = sql.decode("utf-8", "replace") if isinstance(sql, bytes | bytearray) else str(sql)
    words = [_keyword(part) for part in text.split(";") if part.strip()]
    return "+".join(words) or "(empty)"


def _sql_argument(driver: str, args: tuple[Any, ...]) -> object | None:
    # args[0] is the connection; aiomysql's _execute_command(command, sql) sends any
    # protocol command, of which only COM_QUERY (3) carries SQL.
    sql: object = args[1]
    if driver == "aiomysql":
        sql = args[2] if args[1] == 3 else None
    return sql


Record = Callable[[object, str], None]
"""Called with the driver connection and the statement's label, for each statement."""


def _recording(driver: str, method: Callable[..., Any], record: Record) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sql = _sql_argument(driver, args)
        if sql is not None:
            record(args[0], label(sql))
        return method(*args, **kwargs)

    return wrapper


@contextmanager
def _traced_sqlite(record: Record) -> Iterator[None]:
    """Every ``sqlite3`` connection, open now or opened in the block, reports each
    statement it runs (``set_trace_callback``; statements run inside one, from
    triggers or table-valued pragmas, come as ``--`` comments and are left out)."""
    traced: list[sqlite3.Connection] = []

    def trace(conn: sqlite3.Connection) -> None:
        key = object()  # stands for the connection (the callback must not keep it alive)

        def callback(sql: str) -> None:
            if not sql.startswith("--"):
                record(key, label(sql))

        conn.set_trace_callback(callback)
        traced.append(conn)

    original = sqlite3.connect

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = original(*args, **kwargs)
        trace(conn)
        return conn

    for obj in gc.get_objects():
        if isinstance(obj, sqlite3.Connection):
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed
                trace(obj)
    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = original
        for conn in traced:
            with contextlib.suppress(sqlite3.ProgrammingError):
                conn.set_trace_callback(None)


@contextmanager
def _hooked(record: Record) -> Iterator[None]:
    undo: list[tuple[type, str, Any]] = []
    tracing = _traced_sqlite(record)
    tracing.__enter__()
    try:
        for driver, (target, methods) in _HOOKS.items():
            try:
                module_name, class_name = target.split(":")
                cls = getattr(importlib.import_module(module_name), class_name)
            except ImportError:
                continue
            for name in methods:
                original = cls.__dict__[name]
                undo.append((cls, name, original))
                setattr(cls, name, _recording(driver, original, record))
        yield
    finally:
        for cls, name, original in reversed(undo):
            setattr(cls, name, original)
        tracing.__exit__(None, None, None)


@contextmanager
def count_statements() -> Iterator[Counter[str]]:
    """Count, by label, the statements sent through every installed driver."""
    counts: Counter[str] = Counter()

    def record(_: object, name: str) -> None:
        counts[name] += 1

    with _hooked(record):
        yield counts


Trace = list[tuple[int, str]]
"""Statements in the order sent: (an id of the driver connection, label)."""


@contextmanager
def trace_statements() -> Iterator[Trace]:
    """Record every statement sent through every installed driver, with its connection."""
    trace: Trace = []

    def record(conn: object, name: str) -> None:
        trace.append((id(conn), name))

    with _hooked(record):
        yield trace


_OPEN = frozenset({"BEGIN", "START"})
_CLOSE = frozenset({"COMMIT", "ROLLBACK"})
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT"})
_SETTINGS = frozenset({"SET", "SHOW", "PRAGMA"})
"""Session settings, not transactions (MySQL sets the isolation level before a read)."""


@dataclass(frozen=True, slots=True)
class Transactions:
    """How the statements of a trace group into transactions."""

    writing: int
    """Transactions holding at least one INSERT/UPDATE/DELETE (a lone writing statement
    outside any transaction counts as one)."""
    reading: int
    """Transactions holding no writing statement."""


def _writes(word: str) -> bool:
    return word in _WRITES or word.startswith("WITH(")


def transactions(trace: Iterable[tuple[int, str]]) -> Transactions:
    """Group a trace into transactions, per connection, ``BEGIN``/``START`` to
    ``COMMIT``/``ROLLBACK`` (also inside one multi-statement text, as MySQL's writes
    are sent); a statement outside one is its own transaction."""
    open_: dict[int, bool] = {}  # connection -> whether its open transaction wrote
    writing = reading = 0
    for conn, name in trace:
        words = name.split("+")
        if conn not in open_ and not _OPEN.intersection(words):
            if words[0] not in _SETTINGS:
                wrote = any(_writes(word) for word in words)
                writing, reading = writing + wrote, reading + (not wrote)
            continue
        for word in words:
            if word in _OPEN:
                open_[conn] = False
            elif word in _CLOSE:
                if conn in open_:
                    wrote = open_.pop(conn)
                    writing, reading = writing + wrote, reading + (not wrote)
            elif conn in open_:
                open_[conn] = open_[conn] or _writes(word)
    for wrote in open_.values():
        writing, reading = writing + wrote, reading + (not wrote)
    return Transactions(writing, reading)
