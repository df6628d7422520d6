"""Export and import as JSON Lines: exact round trips, on one backend and across them."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.probes import NO_ROWS, count_rows, raw_json_column, session_row_counts
from conformance.samples import build_rich_session, export_text, lines_of, message
from power_loop import (
    InvalidArgumentError,
    LeaseLostError,
    SessionExistsError,
    Store,
    open_store,
)
from power_loop.store import LATEST_VERSION
from power_loop.store.migrations import session_tables
from power_loop.testing import BackendUnavailable, backend_dsn, drop_store_tables, fresh_prefix


async def test_export_is_header_then_rows_in_schema_and_key_order(store: Store) -> None:
    await build_rich_session(store, "rich")

    lines = [json.loads(line) for line in lines_of(await export_text(store, "rich"))]

    assert lines[0] == {"format": "power_loop.session", "version": 1,
                        "schema_version": LATEST_VERSION, "session_id": "rich"}
    # Keys in a fixed order, not sorted: the header's fields, then each table's columns.
    assert list(lines[0]) == ["format", "version", "schema_version", "session_id"]
    columns = {t.name: list(t.exported_columns) for t in session_tables()}
    for line in lines[1:]:
        assert list(line) == ["table", "row"]
        assert list(line["row"]) == columns[line["table"]]
    # JSON values keep the key order they were stored with (build_rich_session's).
    stored = await store.get_session("rich")
    assert list(lines[1]["row"]["metadata"]) == list(stored.metadata) == [
        "user", "tags", "limits", "nul\x00key", "flag"]
    usage = next(line["row"]["token_usage"] for line in lines[1:] if line["table"] == "sends")
    assert list(usage) == ["input_tokens", "output_tokens", "cost", "cache"]
    tables = [line["table"] for line in lines[1:]]
    assert tables == sorted(tables, key=["sessions", "messages", "sends"].index)
    session = lines[1]["row"]
    assert "lease_owner" not in session and "lease_expires_at" not in session
    assert (session["lease_epoch"], session["pending_send"]) == (3, 2)
    seqs = [line["row"]["seq"] for line in lines[1:] if line["table"] == "messages"]
    assert seqs == list(range(session["next_seq"]))
    indexes = [line["row"]["send_index"] for line in lines[1:] if line["table"] == "sends"]
    assert indexes == [0, 1, 2]


async def test_delete_then_import_gives_byte_identical_export(store: Store) -> None:
    await build_rich_session(store, "rich")
    original = await export_text(store, "rich")
    before = await store.get_session("rich")
    await store.delete_session("rich")

    assert await store.import_session(lines_of(original)) == "rich"

    assert await export_text(store, "rich") == original
    after = await store.get_session("rich")
    assert (after.lease_owner, after.lease_expires_at) == (None, None)
    assert after.updated_at == before.updated_at and after.lease_epoch == before.lease_epoch


async def test_session_without_system_prompt_round_trips(store: Store) -> None:
    await store.create_session("plain")
    await store.append_messages("plain", [message("hi")])
    original = await export_text(store, "plain")
    assert json.loads(list(lines_of(original))[1])["row"]["system_prompt"] is None
    await store.delete_session("plain")

    await store.import_session(lines_of(original))

    assert await export_text(store, "plain") == original
    assert (await store.get_session("plain")).system_prompt is None
    # The NOT NULL column holds the JSON document null, as create_session writes it.
    assert await raw_json_column(store, "sessions", "system_prompt", "plain") == "null"


async def test_export_pages_through_many_rows(store: Store) -> None:
    await store.create_session("long", system_prompt="p")
    for start in range(0, 1203, 401):
        await store.append_messages("long", [message(str(i)) for i in range(start, start + 401)])
    original = await export_text(store, "long")
    await store.delete_session("long")

    await store.import_session(lines_of(original))

    assert len(list(lines_of(original))) == 2 + 1203
    assert [m.body["text"] for m in await store.read_messages("long")] == [
        str(i) for i in range(1203)]
    assert await export_text(store, "long") == original


async def test_import_refuses_an_existing_session_unless_replacing(store: Store) -> None:
    await build_rich_session(store, "rich")
    snapshot = await export_text(store, "rich")
    await store.finish_send("rich", 2, [message("later", role="assistant")])
    modified = await export_text(store, "rich")

    with pytest.raises(SessionExistsError) as info:
        await store.import_session(lines_of(snapshot))

    assert info.value.code == "session_exists" and info.value.session_id == "rich"
    assert await export_text(store, "rich") == modified
    assert await store.import_session(lines_of(snapshot), replace=True) == "rich"
    # The snapshot comes back whole, but for its lease epoch: raised above the replaced
    # session's (3), never rolled back, so older fencing tokens stay stale.
    restored, epoch = _without_epoch(await export_text(store, "rich"))
    assert (restored, epoch) == (_without_epoch(snapshot)[0], 4)
    assert (await store.get_session("rich")).lease_epoch == 4
    assert await count_rows(store, "sessions") == 1


def _without_epoch(export: str) -> tuple[list[Any], int]:
    """An export's parsed lines with the session's lease epoch taken out, and that epoch."""
    items = [json.loads(line) for line in lines_of(export)]
    return items, items[1]["row"].pop("lease_epoch")


async def test_replacing_keeps_a_fenced_out_writer_out(store: Store) -> None:
    await build_rich_session(store, "rich")  # ends released at epoch 3
    backup = await export_text(store, "rich")
    stale = await store.acquire_lease("rich", "worker-d", ttl=30)
    assert stale.epoch == 4

    await store.import_session(lines_of(backup), replace=True)

    session = await store.get_session("rich")
    assert session.lease_epoch == 5 and session.lease_owner is None
    with pytest.raises(LeaseLostError):
        await store.append_messages("rich", [message("late")], epoch=stale.epoch)
    assert await store.next_seq("rich") == session.next_seq
    assert (await store.acquire_lease("rich", "worker-e", ttl=30)).epoch == 6


async def test_an_import_carrying_a_higher_epoch_keeps_it(store: Store) -> None:
    await build_rich_session(store, "rich")
    export = await export_text(store, "rich")
    newer = _edit("sessions", lambda row: row.update(lease_epoch=40))(list(lines_of(export)))

    await store.import_session(newer, replace=True)

    assert (await store.get_session("rich")).lease_epoch == 40


async def test_every_import_is_a_new_incarnation(store: Store) -> None:
    await store.create_session("s", metadata={"k": "v"})
    await store.append_messages("s", [message("hi")])
    before = await store.get_session("s")
    export = await export_text(store, "s")
    assert "incarnation" not in export

    await store.import_session(lines_of(export), replace=True)
    replaced = await store.get_session("s")
    await store.delete_session("s")
    await store.import_session(lines_of(export))
    reimported = await store.get_session("s")

    assert len({before.incarnation, replaced.incarnation, reimported.incarnation}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", s.incarnation) for s in (replaced, reimported))
    # Otherwise the same session record (and a replace raises the epoch above the old).
    assert dataclasses.replace(reimported, incarnation=before.incarnation) == before
    assert replaced.lease_epoch == before.lease_epoch + 1
    assert dataclasses.replace(replaced, incarnation=before.incarnation,
                               lease_epoch=before.lease_epoch) == before


async def test_messages_outside_any_send_round_trip(store: Store) -> None:
    await store.create_session("s")
    await store.append_messages("s", [message("note", send_index=7),
                                      message("x", send_index=2)])
    send = await store.start_send("s", [message("q")])
    await store.finish_send("s", send.send_index, [message("a", role="assistant",
                                                           send_index=3)])
    export = await export_text(store, "s")
    await store.delete_session("s")

    await store.import_session(lines_of(export))

    assert [m.send_index for m in await store.read_messages("s")] == [7, 2, 0, 0]
    assert await export_text(store, "s") == export


def _edit(table: str, change: Callable[[dict[str, Any]], None], nth: int = 0
          ) -> Callable[[list[str]], list[str]]:
    """Apply ``change`` to the ``nth`` row of ``table`` in an export."""
    def apply(lines: list[str]) -> list[str]:
        out, seen = [], 0
        for line in lines:
            item = json.loads(line)
            if item.get("table") == table:
                if seen == nth:
                    change(item["row"])
                    line = json.dumps(item) + "\n"
                seen += 1
            out.append(line)
        return out
    return apply


def _header(**changes: Any) -> Callable[[list[str]], list[str]]:
    def apply(lines: list[str]) -> list[str]:
        return [json.dumps({**json.loads(lines[0]), **changes}) + "\n", *lines[1:]]
    return apply


_SHAPE_ERRORS: dict[str, Callable[[list[str]], list[str]]] = {
    "empty": lambda lines: [],
    "blank_lines_only": lambda lines: ["\n", "   \n"],
    "not_json": lambda lines: [lines[0], "{\"table\": \"messages\", \n", *lines[1:]],
    "no_header": lambda lines: lines[1:],
    "wrong_format": _header(format="other.format"),
    "future_format_version": _header(version=2),
    "future_schema_version": _header(schema_version=LATEST_VERSION + 1),
    "header_id_empty": _header(session_id=""),
    "header_id_with_nul": _header(session_id="a\x00b"),
    "line_not_an_object": lambda lines: [*lines, "[1, 2]\n"],
    "unknown_table": lambda lines: [*lines, '{"table": "users", "row": {}}\n'],
    "row_not_an_object": lambda lines: [*lines, '{"table": "messages", "row": [1]}\n'],
    "missing_column": _edit("messages", lambda row: row.pop("role")),
    "extra_column": _edit("sends", lambda row: row.update(extra=1)),
    "row_of_another_session": _edit("messages", lambda row: row.update(session_id="other")),
    "two_session_rows": lambda lines: [*lines, lines[1]],
    "no_session_row": lambda lines: [lines[0], *lines[2:]],
}
def _drop(table: str, nth: int) -> Callable[[list[str]], list[str]]:
    """Remove the ``nth`` row of ``table`` from an export."""
    def apply(lines: list[str]) -> list[str]:
        rows = [i for i, line in enumerate(lines) if json.loads(line).get("table") == table]
        return [line for i, line in enumerate(lines) if i != rows[nth]]
    return apply


def _repeat(table: str, nth: int) -> Callable[[list[str]], list[str]]:
    """Repeat the ``nth`` row of ``table`` right after itself."""
    def apply(lines: list[str]) -> list[str]:
        rows = [i for i, line in enumerate(lines) if json.loads(line).get("table") == table]
        at = rows[nth]
        return [*lines[:at + 1], lines[at], *lines[at + 1:]]
    return apply


def _shift(column: str, by: int) -> Callable[[dict[str, Any]], None]:
    return lambda row: row.update({column: row[column] + by})


# build_rich_session: 7 messages, sends 0 (done, req-1), 1 (failed), 2 (pending, req-3).
_VALUE_ERRORS: dict[str, Callable[[list[str]], list[str]]] = {
    # column types: ids, tokens, non-negative integers (not bools or floats), strings
    "seq_of_wrong_type": _edit("messages", lambda row: row.update(seq="zero")),
    "seq_a_bool": _edit("messages", lambda row: row.update(seq=True), nth=1),
    "seq_a_float": _edit("messages", lambda row: row.update(seq=1.0), nth=1),
    "send_index_negative": _edit("messages", lambda row: row.update(send_index=-1)),
    "created_at_a_string": _edit("sessions", lambda row: row.update(created_at="2024-01-01")),
    "created_at_negative": _edit("messages", lambda row: row.update(created_at=-1)),
    "finished_at_a_float": _edit("sends", lambda row: row.update(finished_at=1.5)),
    "rounds_negative": _edit("sends", lambda row: row.update(rounds=-1)),
    "lease_epoch_beyond_bigint": _edit("sessions", lambda row: row.update(lease_epoch=2**63)),
    "role_not_a_token": _edit("messages", lambda row: row.update(role="Not A Role")),
    "role_a_number": _edit("messages", lambda row: row.update(role=1)),
    "status_not_a_token": _edit("sends", lambda row: row.update(status="DONE")),
    "source_empty": _edit("sends", lambda row: row.update(source="")),
    "stop_reason_with_space": _edit("sends", lambda row: row.update(stop_reason="end turn")),
    "request_key_too_long": _edit("sends", lambda row: row.update(request_key="k" * 201)),
    "request_key_empty": _edit("sends", lambda row: row.update(request_key="")),
    "request_key_a_number": _edit("sends", lambda row: row.update(request_key=7)),
    "parent_id_with_nul": _edit("sessions", lambda row: row.update(parent_id="a\x00b")),
    "parent_id_lone_surrogate": _edit("sessions", lambda row: row.update(parent_id="p\udcff")),
    "json_nan": _edit("messages", lambda row: row.update(body={"x": math.nan})),
    # NOT NULL
    "null_in_required_column": _edit("messages", lambda row: row.update(role=None)),
    "null_created_at": _edit("sends", lambda row: row.update(created_at=None)),
    "null_send_count": _edit("sessions", lambda row: row.update(send_count=None)),
    "null_lease_epoch": _edit("sessions", lambda row: row.update(lease_epoch=None)),
    # message seqs exactly 0..next_seq-1
    "duplicate_message": lambda lines: [*lines[:3], lines[2], *lines[3:]],
    "gap_in_seqs": lambda lines: [*lines[:3], *lines[4:]],
    "last_message_missing": _drop("messages", -1),
    "next_seq_too_high": _edit("sessions", _shift("next_seq", 1)),
    "next_seq_too_low": _edit("sessions", _shift("next_seq", -1)),
    "seqs_from_one": _edit("messages", lambda row: row.update(seq=7)),
    # send indexes exactly 0..send_count-1
    "gap_in_sends": _drop("sends", 1),
    "duplicate_send": _repeat("sends", 0),
    "send_count_too_high": _edit("sessions", _shift("send_count", 1)),
    "send_count_too_low": _edit("sessions", _shift("send_count", -1)),
    # pending_send names a pending send
    "pending_send_is_done": _edit("sessions", lambda row: row.update(pending_send=0)),
    "pending_send_missing": _edit("sessions", lambda row: row.update(pending_send=9)),
    # request keys unique
    "request_key_reused": _edit("sends", lambda row: row.update(request_key="req-1"), nth=2),
}
_STATE_ERRORS: dict[str, Callable[[list[str]], list[str]]] = {
    "pending_send_unset_with_a_pending_send": _edit(
        "sessions", lambda row: row.update(pending_send=None)),
    "two_pending_sends": _edit("sends", lambda row: row.update(status="pending"), nth=1),
    "unknown_send_status": _edit("sends", lambda row: row.update(status="bogus")),
    "body_not_an_object": _edit("messages", lambda row: row.update(body="text")),
    "metadata_not_an_object": _edit("sessions", lambda row: row.update(metadata=[1])),
    "system_prompt_a_number": _edit("sessions", lambda row: row.update(system_prompt=5)),
}


@pytest.mark.parametrize("case", [
    *sorted(_SHAPE_ERRORS), *sorted(_VALUE_ERRORS),
    *sorted(_STATE_ERRORS),
])
async def test_malformed_import_is_rejected_and_writes_nothing(store: Store, case: str) -> None:
    await build_rich_session(store, "rich")
    good = list(lines_of(await export_text(store, "rich")))
    await store.delete_session("rich")
    await store.create_session("bystander")
    broken = {**_SHAPE_ERRORS, **_VALUE_ERRORS, **_STATE_ERRORS}[case](good)
    assert broken != good

    with pytest.raises(InvalidArgumentError) as info:
        await store.import_session(broken)

    assert info.value.code == "invalid_argument"
    assert await session_row_counts(store, "rich") == NO_ROWS
    assert await count_rows(store, "sessions") == 1


@pytest.mark.parametrize("case", ["missing_column", "row_of_another_session", "gap_in_seqs",
                                  "null_created_at", "request_key_reused"])
async def test_malformed_replace_keeps_the_existing_session(store: Store, case: str) -> None:
    await build_rich_session(store, "rich")
    original = await export_text(store, "rich")
    before = await store.get_session("rich")
    broken = {**_SHAPE_ERRORS, **_VALUE_ERRORS}[case](list(lines_of(original)))

    with pytest.raises(InvalidArgumentError):
        await store.import_session(broken, replace=True)

    assert await export_text(store, "rich") == original
    assert await store.get_session("rich") == before  # not even a new incarnation


async def _open(backend: str, directory: Path) -> Store:
    try:
        dsn = backend_dsn(backend, directory)
    except BackendUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    return await open_store(dsn, table_prefix=fresh_prefix())


async def test_cross_backend_round_trip_is_byte_identical(backend_pair: tuple[str, str],
                                                          tmp_path: Path) -> None:
    source_name, target_name = backend_pair
    # A pair never holds two SQLite stores, so both may use tmp_path.
    source = await _open(source_name, tmp_path)
    try:
        target = await _open(target_name, tmp_path)
        try:
            await build_rich_session(source, "rich")
            exported = await export_text(source, "rich")

            await target.import_session(lines_of(exported))

            assert await export_text(target, "rich") == exported
            assert await target.read_messages("rich") == await source.read_messages("rich")
            assert await target.list_sends("rich") == await source.list_sends("rich")
            moved, original = await target.get_session("rich"), await source.get_session("rich")
            assert (moved.system_prompt, moved.metadata, moved.lease_epoch) == (
                original.system_prompt, original.metadata, original.lease_epoch)
        finally:
            await drop_store_tables(target)
            await target.aclose()
    finally:
        await drop_store_tables(source)
        await source.aclose()
