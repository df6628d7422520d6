"""Count the SQL statements a workload sends, at the driver.

Counting happens below power_loop, so ``BEGIN``/``COMMIT`` issued inside the driver
adapters and statements the driver sends on its own (asyncpg's pool resets a connection
with a query each time one is released) are seen too. Each call into the driver that
sends SQL counts once, labelled by its leading keyword; a multi-statement string is
labelled by all of them (``SELECT+CLOSE+UNLISTEN+RESET``).

The hooks wrap driver methods at class level for the duration of the ``with`` block
only; they are never active while a benchmark is timed.
"""

from __future__ import annotations

import functools
import importlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# Methods that send SQL and do not call one another: the calls a workload makes.
_HOOKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aiosqlite": ("aiosqlite.core:Connection",
                  ("execute", "execute_fetchall", "executemany", "execute_insert")),
    "asyncpg": ("asyncpg.connection:Connection",
                ("execute", "executemany", "fetch", "fetchrow", "fetchval")),
    # Below cursors, begin() and commit(): every COM_QUERY goes through here.
    "aiomysql": ("aiomysql.connection:Connection", ("_execute_command",)),
}


def label(sql: object) -> str:
    """The leading keyword of each statement in ``sql``: ``UPDATE``, ``BEGIN``..."""
    text = sql.decode("utf-8", "replace") if isinstance(sql, bytes | bytearray) else str(sql)
    words = [part.split(None, 1)[0].upper() for part in text.split(";") if part.strip()]
    return "+".join(words) or "(empty)"


def _sql_argument(driver: str, args: tuple[Any, ...]) -> object | None:
    # args[0] is the connection; aiomysql's _execute_command(command, sql) sends any
    # protocol command, of which only COM_QUERY (3) carries SQL.
    sql: object = args[1]
    if driver == "aiomysql":
        sql = args[2] if args[1] == 3 else None
    return sql


def _counting(driver: str, method: Callable[..., Any],
              counts: Counter[str]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        sql = _sql_argument(driver, args)
        if sql is not None:
            counts[label(sql)] += 1
        return method(*args, **kwargs)

    return wrapper


@contextmanager
def count_statements() -> Iterator[Counter[str]]:
    """Count, by label, the statements sent through every installed driver."""
    counts: Counter[str] = Counter()
    undo: list[tuple[type, str, Any]] = []
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
                setattr(cls, name, _counting(driver, original, counts))
        yield counts
    finally:
        for cls, name, original in reversed(undo):
            setattr(cls, name, original)
