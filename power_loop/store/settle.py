"""Checks that settle a write whose ``COMMIT`` is in doubt, by reading what it wrote.

Each check answers one question about one conditional write, in a read transaction:
did it land? It returns what the write would have returned had it answered, or
:data:`~power_loop.store.core.NOT_LANDED`. The writes are conditional so that the answer
stays true: an append names the seq it expects (a copy that lands late finds the session
moved on), a lease is taken by an owner unique to one send or claim, a send is closed
only while it is the pending one. :meth:`~power_loop.store.core.StoreCore._settled` runs
them.
"""

from __future__ import annotations

from collections.abc import Sequence

from power_loop.store.core import NOT_LANDED, NotLanded
from power_loop.store.fused import message_body
from power_loop.store.port import Connection, Row
from power_loop.store.records import NewMessage, load_json
from power_loop.store.statements import Statements


async def appended(conn: Connection, sql: Statements, session_id: str,
                   messages: Sequence[NewMessage], expect: int) -> list[int] | NotLanded:
    """The seqs of an append expected at ``expect``, if the messages there are these."""
    rows = await conn.fetch(sql.read_messages_limit, [session_id, expect, len(messages)])
    if len(rows) != len(messages):
        return NOT_LANDED
    for i, (row, msg) in enumerate(zip(rows, messages, strict=True)):
        if (int(row[0]) != expect + i or int(row[1]) != msg.send_index
                or row[2] != msg.role or load_json(row[3]) != message_body(msg)):
            return NOT_LANDED
    return list(range(expect, expect + len(messages)))


async def leased_to(conn: Connection, sql: Statements, session_id: str,
                    owner: str) -> Row | NotLanded:
    """The session's lease and send state, if ``owner`` holds its lease: an owner is
    unique to one send or claim, so then that write landed. The row: epoch, expiry,
    send count, next seq, system prompt, incarnation, metadata, owner, pending send."""
    row = await conn.fetchone(sql.lease_state, [session_id])
    if row is None or row[7] != owner:
        return NOT_LANDED
    return row


async def send_closed(conn: Connection, sql: Statements, session_id: str,
                      send_index: int, count: int) -> int | NotLanded:
    """The first seq of the ``count`` last messages of a send no longer pending (only
    the write that closes it appends to it then), if it is closed."""
    send = await conn.fetchone(sql.get_send, [session_id, send_index])
    if send is None or send[2] == "pending":
        return NOT_LANDED
    last = await conn.fetchone(sql.send_last_seq, [session_id, send_index])
    if last is None or last[0] is None:
        return int(send[5])
    return int(last[0]) + 1 - count
