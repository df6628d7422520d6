"""``JsonlSink``: every event as one JSON line; ``replay`` reads them back as events."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from power_loop.errors import InvalidArgumentError
from power_loop.events.sinks._codec import decode_event, dump_line
from power_loop.events.sinks._sink import DEFAULT_QUEUE_SIZE
from power_loop.events.types import Event


class JsonlSink:
    """Appends every event to a file, one JSON object per line.

    Each line carries ``"v"`` (the schema version, :data:`SCHEMA_VERSION`), ``"type"``
    (the event class, ``"TextChunk"``...) and the event's fields, ``seq`` and ``at``
    included. Lines are ASCII: any text (NUL, lone surrogates) is escaped, never lost.
    The file is opened on the first event and written out whenever the sink's queue runs
    empty (``flush``), so it is at most a batch (about 50 ms) behind the loop.

    Args:
        path: The file (created if missing, appended to if not).
        fsync: Also ``os.fsync`` at each flush (survives a power cut, costs a disk sync).
        queue_size: Events held for the sink before new ones are dropped.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False,
                 queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.queue_size = queue_size
        self._file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"

    def handle(self, event: Event) -> None:
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115
        self._file.write(dump_line(event))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


def replay(path: str | os.PathLike[str]) -> Iterator[Event]:
    """The events of a JSONL file, as the typed objects that were written, in order.

    A last line without its newline (the writer was killed mid-line) is skipped.

    Raises:
        InvalidArgumentError: a line that is not an event of this schema version (its
            line number is in the message).
    """
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                return  # torn by a crash: it was never a whole event
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise InvalidArgumentError(f"{path}:{number}: not JSON ({exc})") from exc
            try:
                yield decode_event(data)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"{path}:{number}: {exc.message}") from exc
