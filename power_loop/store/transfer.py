"""Export and import one session as JSON Lines, portable across backends.

The format (version 1), one JSON object per line, UTF-8::

    {"format":"power_loop.session","version":1,"schema_version":1,"session_id":"..."}
    {"table":"sessions","row":{"id":"...","created_at":1732500000000000,...}}
    {"table":"messages","row":{"session_id":"...","seq":0,"body":{...},...}}
    {"table":"sends","row":{...}}

Tables come in schema order and rows in primary-key order; keys are sorted and output
is compact, so an export is byte-for-byte reproducible: export from one backend, import
into another, export again, and the bytes match. Timestamps are integers (microseconds
since the epoch, UTC); JSON columns are embedded as JSON values. Lease ownership is
runtime state and is not exported. Every table holding session data is included,
because the list comes from the schema (:func:`session_tables`), not from this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError, SessionExistsError, SessionNotFoundError
from power_loop.store.migrations import LATEST_VERSION, session_tables
from power_loop.store.port import ColumnType, Connection
from power_loop.store.records import check_id, dump_json, load_json
from power_loop.store.schema import Table, TableNames

if TYPE_CHECKING:
    from power_loop.store.store import Store

FORMAT = "power_loop.session"
FORMAT_VERSION = 1
_PAGE = 500


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)


def _to_export(table: Table, columns: tuple[str, ...], row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if value is not None and table.column(name).type is ColumnType.JSON:
            value = load_json(value)
        elif isinstance(value, bool):
            value = int(value)
        out[name] = value
    return out


async def export_session(store: Store, names: TableNames, session_id: str) -> AsyncIterator[str]:
    """Yield the export's lines (each ending in ``\\n``) from one consistent snapshot."""
    dialect = store.database.dialect
    async with store.database.transaction(write=False) as conn:
        for table in session_tables():
            columns = table.exported_columns
            head = (f"SELECT {', '.join(columns)} FROM {dialect.quote(names.raw(table))} "
                    f"WHERE {table.session_column} = ?")
            keys = [c for c in table.primary_key if c != table.session_column]
            if table.name == "sessions":
                rows = await conn.fetch(dialect.render(head), [session_id])
                if not rows:
                    raise SessionNotFoundError(f"session {session_id!r} does not exist",
                                               session_id=session_id)
                yield _line({"format": FORMAT, "version": FORMAT_VERSION,
                             "schema_version": LATEST_VERSION,
                             "session_id": session_id}) + "\n"
                row = _to_export(table, columns, rows[0])
                yield _line({"table": table.name, "row": row}) + "\n"
                continue
            async for row in _pages(conn, dialect.render, head, keys, columns, session_id):
                yield _line({"table": table.name, "row": _to_export(table, columns, row)}) + "\n"


async def _pages(conn: Connection, render: Any, head: str, keys: list[str],
                 columns: tuple[str, ...], session_id: str) -> AsyncIterator[Any]:
    """Rows in primary-key order, read in keyset pages (one extra key column)."""
    order = ", ".join(keys)
    if len(keys) != 1:
        for row in await conn.fetch(render(f"{head} ORDER BY {order}"), [session_id]):
            yield row
        return
    position = columns.index(keys[0])
    first = render(f"{head} ORDER BY {order} LIMIT {_PAGE}")
    following = render(f"{head} AND {keys[0]} > ? ORDER BY {order} LIMIT {_PAGE}")
    rows = await conn.fetch(first, [session_id])
    while rows:
        for row in rows:
            yield row
        if len(rows) < _PAGE:
            return
        rows = await conn.fetch(following, [session_id, rows[-1][position]])


def _parse(lines: Iterable[str]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Check a whole export before anything is written."""
    tables = {t.name: t for t in session_tables()}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    session_id: str | None = None
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"import line {number} is not JSON: {exc}") from None
        if session_id is None:
            if not isinstance(item, dict) or item.get("format") != FORMAT:
                raise InvalidArgumentError(
                    f"import line 1 is not a {FORMAT} header; was this made by export_session?")
            if item.get("version") != FORMAT_VERSION:
                raise InvalidArgumentError(
                    f"unsupported export format version {item.get('version')!r}")
            schema_version = item.get("schema_version")
            if not isinstance(schema_version, int) or schema_version > LATEST_VERSION:
                raise InvalidArgumentError(
                    f"export comes from schema version {item.get('schema_version')!r}, newer "
                    f"than this power_loop ({LATEST_VERSION}); upgrade power-loop to import it")
            session_id = check_id(item.get("session_id"))
            continue
        if not isinstance(item, dict) or item.get("table") not in tables or not isinstance(
                item.get("row"), dict):
            raise InvalidArgumentError(f"import line {number}: unknown table or malformed row")
        table = tables[item["table"]]
        row = item["row"]
        expected = set(table.exported_columns)
        if set(row) != expected:
            raise InvalidArgumentError(
                f"import line {number}: {table.name} row has columns {sorted(row)}, "
                f"expected {sorted(expected)}")
        if row[table.session_column] != session_id:
            raise InvalidArgumentError(
                f"import line {number}: row belongs to session "
                f"{row[table.session_column]!r}, not {session_id!r}")
        rows[table.name].append(row)
    if session_id is None:
        raise InvalidArgumentError("import is empty: no header line")
    if len(rows["sessions"]) != 1:
        raise InvalidArgumentError("import must hold exactly one sessions row")
    return session_id, rows


def _to_db(table: Table, columns: tuple[str, ...], row: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for name in columns:
        value = row.get(name)
        if value is not None and table.column(name).type is ColumnType.JSON:
            value = dump_json(value)
        values.append(value)
    return values


async def import_session(store: Store, names: TableNames, lines: Iterable[str], *,
                         replace: bool) -> str:
    """Load an export in one transaction; with ``replace``, over an existing session."""
    session_id, rows = _parse(lines)
    dialect = store.database.dialect
    statements = []
    for table in session_tables():
        columns = tuple(c.name for c in table.columns)
        marks = ", ".join("?" for _ in columns)
        sql = dialect.render(f"INSERT INTO {dialect.quote(names.raw(table))} "
                             f"({', '.join(columns)}) VALUES ({marks})")
        statements.append((sql, [_to_db(table, columns, r) for r in rows[table.name]]))
    deletes = [dialect.render(f"DELETE FROM {dialect.quote(names.raw(t))} "
                              f"WHERE {t.session_column} = ?")
               for t in reversed(session_tables())]

    async def load(conn: Connection) -> str:
        exists = 0
        for sql in deletes if replace else []:
            exists = await conn.execute(sql, [session_id])
        if not replace:
            probe = dialect.render(f"SELECT 1 FROM {names.sessions} WHERE id = ?")
            exists = 1 if await conn.fetchone(probe, [session_id]) else 0
            if exists:
                raise SessionExistsError(
                    f"session {session_id!r} already exists; pass replace=True to overwrite it",
                    session_id=session_id)
        for sql, values in statements:
            if values:
                await conn.executemany(sql, values)
        return session_id

    return await store.write(load)
