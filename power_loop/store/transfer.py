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
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError, SessionExistsError, SessionNotFoundError
from power_loop.store.migrations import LATEST_VERSION, session_tables
from power_loop.store.port import ColumnType, Connection
from power_loop.store.records import check_count, check_id, check_name, dump_json, load_json
from power_loop.store.schema import Table, TableNames
from power_loop.store.sends import SEND_STATUSES

if TYPE_CHECKING:
    from power_loop.store.store import Store

FORMAT = "power_loop.session"
FORMAT_VERSION = 1
_PAGE = 500


def _line(value: Any) -> str:
    # No sort_keys: the keys of each line come in a fixed order (header fields, then the
    # schema's column order), and JSON values keep the key order they were stored with.
    # Text that is not valid Unicode is escaped, so an export is always UTF-8.
    return dump_json(value)


def _to_export(table: Table, columns: tuple[str, ...], row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if value is not None and table.column(name).type is ColumnType.JSON:
            value = load_json(value)
        elif isinstance(value, bool):
            value = int(value)
        out[name] = value
    return out


async def export_session(store: Store, names: TableNames,
                         session_id: str) -> AsyncGenerator[str, None]:
    """Yield the export's lines (each ending in ``\\n``) from one consistent snapshot."""
    dialect = store._database.dialect
    async with store._database.transaction(write=False) as conn:
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
    if not keys:  # keyed by the session alone: one row at most
        for row in await conn.fetch(render(head), [session_id]):
            yield row
        return
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


def _header(item: Any) -> str:
    if not isinstance(item, dict) or item.get("format") != FORMAT:
        raise InvalidArgumentError(
            f"import line 1 is not a {FORMAT} header; was this made by export_session?")
    if item.get("version") != FORMAT_VERSION:
        raise InvalidArgumentError(f"unsupported export format version {item.get('version')!r}")
    schema_version = item.get("schema_version")
    if not isinstance(schema_version, int) or schema_version > LATEST_VERSION:
        raise InvalidArgumentError(
            f"export comes from schema version {schema_version!r}, newer than this "
            f"power_loop ({LATEST_VERSION}); upgrade power-loop to import it")
    return check_id(item.get("session_id"))


def _check_value(table: Table, name: str, value: Any, where: str) -> None:
    column = table.column(name)
    what = f"{where}: {table.name}.{name}"
    if column.type is ColumnType.JSON:
        dump_json(value)  # raises InvalidArgumentError for NaN and the like
        return
    if value is None:
        if not column.nullable:
            raise InvalidArgumentError(f"{what} may not be null")
        return
    if column.type is ColumnType.ID:
        check_id(value, what)
    elif column.type is ColumnType.NAME:
        check_name(value, what)
    elif column.type is ColumnType.TEXT:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{what} must be a string")
    else:
        check_count(value, what)


def _parse(lines: Iterable[str]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Check a whole export before anything is written.

    An export from an older schema lacks the columns added since: they get their
    defaults.
    """
    tables = {t.name: t for t in session_tables()}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    session_id: str | None = None
    version = LATEST_VERSION
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"import line {number} is not JSON: {exc}") from None
        if session_id is None:
            session_id = _header(item)
            version = int(item["schema_version"])
            continue
        where = f"import line {number}"
        if not isinstance(item, dict) or item.get("table") not in tables or not isinstance(
                item.get("row"), dict):
            raise InvalidArgumentError(f"{where}: unknown table or malformed row")
        table = tables[item["table"]]
        row = item["row"]
        expected = [c for c in table.columns if c.exported and c.since <= version]
        if set(row) != {c.name for c in expected}:
            raise InvalidArgumentError(
                f"{where}: {table.name} row has columns {sorted(row)}, expected "
                f"{sorted(c.name for c in expected)}")
        for column in table.columns:
            if column.exported and column.since > version:
                row[column.name] = column.default
        for name, value in row.items():
            _check_value(table, name, value, where)
        if row[table.session_column] != session_id:
            raise InvalidArgumentError(
                f"{where}: row belongs to session {row[table.session_column]!r}, not "
                f"{session_id!r}")
        rows[table.name].append(row)
    if session_id is None:
        raise InvalidArgumentError("import is empty: no header line")
    _check_consistency(session_id, rows)
    return session_id, rows


def _check_consistency(session_id: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """The invariants the store keeps: contiguous seqs and send indexes, one pending send."""
    if len(rows["sessions"]) != 1:
        raise InvalidArgumentError("import must hold exactly one sessions row")
    session = rows["sessions"][0]
    seqs = sorted(r["seq"] for r in rows["messages"])
    if seqs != list(range(session["next_seq"])):
        raise InvalidArgumentError(
            f"import of {session_id!r}: message seqs must be exactly 0..next_seq-1 "
            f"(next_seq {session['next_seq']}, {len(seqs)} messages)")
    sends = {r["send_index"]: r for r in rows["sends"]}
    if sorted(sends) != list(range(session["send_count"])) or len(sends) != len(rows["sends"]):
        raise InvalidArgumentError(
            f"import of {session_id!r}: send indexes must be exactly 0..send_count-1")
    pending = session["pending_send"]
    waiting = [index for index, send in sends.items() if send["status"] == "pending"]
    if waiting != ([] if pending is None else [pending]):
        raise InvalidArgumentError(
            f"import of {session_id!r}: pending_send {pending} must name the one pending "
            f"send (pending: {waiting})")
    unknown = {s["status"] for s in rows["sends"]} - SEND_STATUSES
    if unknown:
        raise InvalidArgumentError(f"import of {session_id!r}: unknown send status {unknown}")
    if not isinstance(session["metadata"], dict) or not (
            session["system_prompt"] is None or isinstance(session["system_prompt"], str)):
        raise InvalidArgumentError(
            f"import of {session_id!r}: metadata must be an object and system_prompt text")
    if any(not isinstance(m["body"], dict) for m in rows["messages"]):
        raise InvalidArgumentError(f"import of {session_id!r}: a message body is not an object")
    keys = [r["request_key"] for r in rows["sends"] if r["request_key"] is not None]
    if len(keys) != len(set(keys)):
        raise InvalidArgumentError(f"import of {session_id!r}: a request_key is used twice")


def _to_db(table: Table, columns: tuple[str, ...], row: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for name in columns:
        value = row.get(name)
        column = table.column(name)
        if column.fresh:
            value = uuid.uuid4().hex
        elif column.type is ColumnType.JSON and not (value is None and column.nullable):
            value = dump_json(value)  # a NOT NULL JSON column holds JSON null as 'null'
        values.append(value)
    return values


async def import_session(store: Store, names: TableNames, lines: Iterable[str], *,
                         replace: bool) -> str:
    """Load an export in one transaction; with ``replace``, over an existing session.

    Replacing never moves the session's lease epoch backwards: the imported epoch is
    raised above the replaced one, so a writer fenced out before the import stays out.
    """
    session_id, rows = _parse(lines)
    dialect = store._database.dialect
    statements = []
    for table in session_tables():
        columns = tuple(c.name for c in table.columns)
        marks = ", ".join("?" for _ in columns)
        sql = dialect.render(f"INSERT INTO {dialect.quote(names.raw(table))} "
                             f"({', '.join(columns)}) VALUES ({marks})")
        statements.append((table, sql, [_to_db(table, columns, r) for r in rows[table.name]]))
    deletes = [dialect.render(f"DELETE FROM {dialect.quote(names.raw(t))} "
                              f"WHERE {t.session_column} = ?")
               for t in reversed(session_tables())]
    epoch_sql = dialect.render(f"SELECT lease_epoch FROM {names.sessions} WHERE id = ?"
                               + dialect.for_update())
    epoch_at = tuple(c.name for c in session_tables()[0].columns).index("lease_epoch")

    async def load(conn: Connection) -> str:
        existing = await conn.fetchone(epoch_sql, [session_id])
        if existing is not None and not replace:
            raise SessionExistsError(
                f"session {session_id!r} already exists; pass replace=True to overwrite it",
                session_id=session_id)
        if existing is not None:
            for sql in deletes:
                await conn.execute(sql, [session_id])
        for table, sql, values in statements:
            if table.name == "sessions" and existing is not None:
                row = values[0]
                row[epoch_at] = max(int(row[epoch_at]), int(existing[0]) + 1)
            if values:
                await conn.executemany(sql, values)
        return session_id

    return await store._write(load)
