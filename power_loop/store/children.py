"""Child sessions: sessions a send makes, linked to it, and the trees they form.

A child (a sub-agent's session; later, a workflow leaf) is linked to its parent by
(parent session, send, call): its id is derived from that link
(:func:`child_session_id`), so whoever makes it again after a crash finds the same
session instead of making a second one. The link row (``session_links``) also names
the agent, so any process can tell which agent's tools resume it, and records the
child's depth in its tree.

Children of one send are made one at a time: the transaction that makes one locks the
parent's session row first, so the limits on depth and on children per send hold
against any number of concurrent calls and processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from power_loop.store.core import StoreCore
from power_loop.store.port import Connection, Row
from power_loop.store.records import (
    SendRecord,
    SessionRecord,
    check_count,
    check_id,
    check_name,
    dump_json,
    from_us,
)
from power_loop.store.statements import (
    SEND_COLUMNS,
    SESSION_COLUMNS,
    send_from_row,
    session_from_row,
)

_LINK_COLUMNS = ("session_id, parent_id, parent_send, parent_call, kind, name, depth, "
                 "created_at")
_BATCH = 200
"""Ids per ``IN (...)`` list when reading a tree level by level."""


def child_session_id(parent_id: str, parent_send: int, parent_call: str) -> str:
    """The id of the child made by ``parent_call`` of send ``parent_send``: the same in
    every process, so a resumed parent finds the child it made before."""
    link = f"{parent_id}\x00{parent_send}\x00{parent_call}".encode("utf-8", "surrogatepass")
    return "child_" + hashlib.blake2b(link, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionLink:
    """How a child session hangs from its parent.

    Attributes:
        session_id: The child.
        parent_id: The session whose send made it.
        parent_send: That send's index.
        parent_call: The tool call (or workflow step) that made it.
        kind: ``agent`` for a sub-agent.
        name: The agent's name.
        depth: 1 for a child of a session that has no parent, 2 below that...
    """

    session_id: str
    parent_id: str
    parent_send: int
    parent_call: str
    kind: str
    name: str
    depth: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChildSlot:
    """What :meth:`ChildOps.make_child_session` found or did.

    Attributes:
        link: The child's link (``None`` when refused).
        created: The child was made now (``False``: it existed; nothing was written).
        refused: ``depth`` or ``children`` when a limit forbids a new child.
        depth: The depth the child has (or would have had).
        siblings: Children the parent's send had before this one.
    """

    link: SessionLink | None
    created: bool
    refused: str | None
    depth: int
    siblings: int


@dataclass(frozen=True, slots=True)
class SessionTree:
    """A session, its sends, and the child sessions below it, as stored.

    Attributes:
        session: The session's row.
        link: How it hangs from its parent (``None`` for the root of a tree).
        sends: Its sends, in order.
        children: Its children, in the order they were made.
    """

    session: SessionRecord
    link: SessionLink | None
    sends: tuple[SendRecord, ...]
    children: tuple[SessionTree, ...]

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def agent(self) -> str | None:
        """The agent's name (``None`` for a session no agent was made for)."""
        return None if self.link is None else self.link.name

    @property
    def status(self) -> str:
        """The last send's status (``pending``, ``done``...), ``idle`` with no send."""
        return self.sends[-1].status if self.sends else "idle"

    def walk(self) -> Iterator[SessionTree]:
        """This node and every node below it, depth first, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()


def _link_from_row(row: Row) -> SessionLink:
    return SessionLink(row[0], row[1], int(row[2]), row[3], row[4], row[5], int(row[6]),
                       from_us(row[7]))


class _ChildStatements:
    def __init__(self, ops: StoreCore) -> None:
        d, names = ops._db.dialect, ops._names
        r, links = d.render, names.session_links
        self.insert = r(f"INSERT INTO {links} ({_LINK_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, {now})")
        self.link = r(f"SELECT {_LINK_COLUMNS} FROM {links} WHERE session_id = ?")
        self.count = r(f"SELECT COUNT(*) FROM {links} WHERE parent_id = ? AND parent_send = ?")
        self.sessions, self.sends, self.links = names.sessions, names.sends, links
        self.render = r


class ChildOps(StoreCore):
    """Child sessions and trees (mixed into :class:`~power_loop.Store`)."""

    @property
    def _csql(self) -> _ChildStatements:
        found: _ChildStatements | None = getattr(self, "_child_statements", None)
        if found is None:
            found = _ChildStatements(self)
            self._child_statements = found
        return found

    async def make_child_session(self, parent_id: str, parent_send: int, parent_call: str,
                                 *, name: str, kind: str = "agent",
                                 system_prompt: str | None = None,
                                 metadata: Mapping[str, Any] | None = None,
                                 max_depth: int | None = None,
                                 max_children: int | None = None) -> ChildSlot:
        """Find or make the child of ``parent_call`` in send ``parent_send``.

        A child that exists is returned as it is (``created=False``), whatever the
        limits say now: it was allowed when it was made. A new one is made (session and
        link, in one transaction) unless it would be deeper than ``max_depth`` or the
        send already has ``max_children`` children; then nothing is written and
        ``refused`` says why.

        Raises:
            SessionNotFoundError: the parent does not exist.
        """
        check_id(parent_id, "parent_id")
        check_count(parent_send, "parent_send")
        check_id(parent_call, "parent_call")
        check_id(name, "name")
        check_name(kind, "kind")
        return await self._write(self._make_child_txn, parent_id, parent_send, parent_call,
                                 name, kind, dump_json(system_prompt),
                                 dump_json(dict(metadata or {})), max_depth, max_children)

    async def _make_child_txn(self, conn: Connection, parent_id: str, parent_send: int,
                              parent_call: str, name: str, kind: str, prompt: str, meta: str,
                              max_depth: int | None, max_children: int | None) -> ChildSlot:
        sql = self._csql
        child_id = child_session_id(parent_id, parent_send, parent_call)
        # Locks the parent's row: children of one send are made one at a time.
        await self._update_session(conn, self._sql.touch, parent_id, [])
        row = await conn.fetchone(sql.link, [child_id])
        if row is not None:
            link = _link_from_row(row)
            return ChildSlot(link, False, None, link.depth, 0)
        above = await conn.fetchone(sql.link, [parent_id])
        depth = 1 if above is None else int(above[6]) + 1
        counted = await conn.fetchone(sql.count, [parent_id, parent_send])
        siblings = int(counted[0]) if counted is not None else 0
        refused = ("depth" if max_depth is not None and depth > max_depth else
                   "children" if max_children is not None and siblings >= max_children
                   else None)
        if refused is not None:
            return ChildSlot(None, False, refused, depth, siblings)
        await self._create_session_txn(conn, child_id, parent_id, prompt, meta)
        await conn.execute(sql.insert, [child_id, parent_id, parent_send, parent_call, kind,
                                        name, depth])
        row = await conn.fetchone(sql.link, [child_id])
        assert row is not None
        return ChildSlot(_link_from_row(row), True, None, depth, siblings)

    async def get_session_link(self, session_id: str) -> SessionLink | None:
        """How ``session_id`` hangs from its parent (``None``: it is not a child)."""
        row = await self._read(_one, self._csql.link, [check_id(session_id)])
        return None if row is None else _link_from_row(row)

    async def session_tree(self, session_id: str) -> SessionTree:
        """The session and every child session below it, read in one snapshot.

        Raises:
            SessionNotFoundError: no such session.
        """
        return await self._read(self._tree_txn, check_id(session_id))

    async def _tree_txn(self, conn: Connection, root_id: str) -> SessionTree:
        sql = self._csql
        root = await self._get_session_txn(conn, root_id)
        row = await conn.fetchone(sql.link, [root_id])
        sessions: dict[str, SessionRecord] = {root_id: root}
        links: dict[str, SessionLink | None] = {root_id: None if row is None
                                                else _link_from_row(row)}
        below: dict[str, list[str]] = {}
        level = [root_id]
        while level:
            found = [_link_from_row(r) for r in await _in(
                conn, sql, f"SELECT {_LINK_COLUMNS} FROM {sql.links} WHERE parent_id IN",
                level)]
            found = [link for link in found if link.session_id not in links]  # no cycles
            found.sort(key=lambda link: (link.created_at, link.session_id))
            for link in found:
                links[link.session_id] = link
                below.setdefault(link.parent_id, []).append(link.session_id)
            level = [link.session_id for link in found]
            for r in await _in(conn, sql, f"SELECT {SESSION_COLUMNS} FROM {sql.sessions} "
                               "WHERE id IN", level):
                sessions[r[0]] = session_from_row(r)
        sends: dict[str, list[SendRecord]] = {}
        for r in await _in(conn, sql, f"SELECT {SEND_COLUMNS} FROM {sql.sends} "
                           "WHERE session_id IN", list(sessions)):
            record = send_from_row(r)
            sends.setdefault(record.session_id, []).append(record)

        def build(session_id: str) -> SessionTree:
            kids = tuple(build(c) for c in below.get(session_id, ()) if c in sessions)
            mine = tuple(sorted(sends.get(session_id, ()), key=lambda s: s.send_index))
            return SessionTree(sessions[session_id], links[session_id], mine, kids)

        return build(root_id)


async def _in(conn: Connection, sql: _ChildStatements, head: str,
              ids: Sequence[str]) -> list[Row]:
    """``head (?, ?...)`` over ``ids``, in batches."""
    rows: list[Row] = []
    for start in range(0, len(ids), _BATCH):
        batch = ids[start:start + _BATCH]
        marks = ", ".join("?" for _ in batch)
        rows.extend(await conn.fetch(sql.render(f"{head} ({marks})"), batch))
    return rows


async def _one(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    return await conn.fetchone(sql, args)
