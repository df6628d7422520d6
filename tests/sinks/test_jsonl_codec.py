"""The JSONL codec: every event type survives a write and a replay, whatever it holds.

The event types are enumerated, not listed: an event class added to power_loop is
generated from its declared fields and must round-trip, or this fails.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power_loop import Event, InvalidArgumentError, JsonlSink, TextChunk, replay
from power_loop.events.sinks import SCHEMA_VERSION, decode_event, encode_event
from power_loop.events.sinks._codec import _encode_line, _finite, dump_line, dumps
from tests.sinks.support import event_classes, events_of, plain

CLASSES = event_classes()
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_enumeration_finds_the_event_types() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"SendStarted", "TextChunk", "ToolCallFinished", "UsageUpdated", "FoldFailed",
            "SendFinished", "SendFailed", "TimerScheduled", "WorkerClaimed"} <= names
    assert len(CLASSES) >= 21


def _carries_error(value: Any) -> bool:
    """Whether ``value`` holds an exception anywhere (a ``ChildEvent``'s event may)."""
    if isinstance(value, BaseException):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_carries_error(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, list | tuple):
        return any(_carries_error(v) for v in value)
    return False


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_every_event_type_round_trips_through_a_jsonl_file(cls: type[Event], data: st.DataObject,
                                                           tmp_path_factory: pytest.TempPathFactory,
                                                           ) -> None:
    events = data.draw(st.lists(events_of(cls), min_size=1, max_size=3))
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    sink = JsonlSink(path)
    for event in events:
        sink.handle(event)
    sink.flush()
    sink.close()
    back = list(replay(path))
    assert [type(e) for e in back] == [type(e) for e in events]
    assert [plain(e) for e in back] == [plain(e) for e in events]
    # What carries no error (errors compare by identity) compares equal as it is.
    for original, replayed in zip(events, back, strict=True):
        if not _carries_error(original):
            assert replayed == original
    lines = path.read_bytes().splitlines()
    assert all(line.isascii() for line in lines)
    assert [json.loads(line)["v"] for line in lines] == [SCHEMA_VERSION] * len(events)
    assert [json.loads(line)["type"] for line in lines] == [cls.__name__] * len(events)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_the_fast_encoder_writes_what_json_writes(cls: type[Event], data: st.DataObject) -> None:
    # orjson writes a line only when it is the same JSON value, in ASCII; an infinity
    # (orjson: null), a big integer or a non-ASCII text is left to json.
    event = data.draw(events_of(cls))
    line = dump_line(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line) == json.loads(_encode_line(encode_event(event)))


def test_non_finite_floats_anywhere_are_left_to_json() -> None:
    assert not _finite({"a": [1, {"b": float("inf")}]})
    assert not _finite({"a": (float("nan"),)})
    assert _finite({"a": [1.5, "x", None, {"b": -0.0}]})
    line = {"v": 1, "lateness": float("-inf")}
    assert _encode_line(line) == '{"v":1,"lateness":-Infinity}'


def test_a_line_is_flat_and_readable() -> None:
    event = TextChunk(session_id="s", send_index=2, text="hi\x00\ud800")
    line = json.loads(dumps(event))
    assert line == {"v": SCHEMA_VERSION, "type": "TextChunk", "session_id": "s",
                    "send_index": 2, "seq": event.seq, "at": event.at, "text": "hi\x00\ud800"}


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    first, second = TextChunk(session_id="s", text="a"), TextChunk(session_id="s", text="b")
    path = tmp_path / "e.jsonl"
    path.write_text(dumps(first) + "\n" + dumps(second)[:20], encoding="ascii")
    assert list(replay(path)) == [first]


@pytest.mark.parametrize(("line", "problem"), [
    ("{not json", "not JSON"),
    ('{"v": 99, "type": "TextChunk"}', "schema version 99"),
    ('{"v": 1, "type": "NoSuchEvent"}', "unknown event type 'NoSuchEvent'"),
    ('{"v": 1, "type": "TextChunk", "session_id": "s"}', "lacks ['text']"),
    ('{"v": 1, "type": "UsageUpdated", "session_id": "s", "usage": 3, "total": {}}',
     "malformed UsageUpdated"),
    ("[1, 2]", "must be a JSON object"),
])
def test_a_bad_line_is_refused_with_its_line_number(tmp_path: Path, line: str,
                                                    problem: str) -> None:
    path = tmp_path / "e.jsonl"
    good = dumps(TextChunk(session_id="s", text="ok"))
    path.write_text(f"{good}\n{line}\n", encoding="ascii")
    replayed = replay(path)
    assert next(replayed).type == "TextChunk"
    with pytest.raises(InvalidArgumentError, match=re.escape(problem)) as raised:
        next(replayed)
    assert f"{path}:2:" in str(raised.value)


def test_fields_added_later_are_ignored_and_missing_defaults_are_filled() -> None:
    line = json.loads(dumps(TextChunk(session_id="s", text="t")))
    line["from_the_future"] = 1
    del line["send_index"]
    assert decode_event(line) == TextChunk(session_id="s", send_index=None, text="t",
                                           seq=line["seq"], at=line["at"])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Uncodable(Event):
    """An event with a field the codec was never taught."""

    items: frozenset[int]


def test_an_event_with_a_field_the_codec_cannot_write_fails_loudly() -> None:
    with pytest.raises(TypeError, match=r"Uncodable.items: the JSONL codec cannot write"):
        encode_event(Uncodable(session_id="s", items=frozenset({1})))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Custom(Event):
    """An application's own event type."""

    note: str


def test_an_event_type_from_outside_power_loop_is_named_by_its_module() -> None:
    event = Custom(session_id="s", note="n")
    line = encode_event(event)
    assert line["type"] == f"{__name__}.Custom"
    assert decode_event(line) == event
