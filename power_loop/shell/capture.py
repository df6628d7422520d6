"""Reading a command's pipe on the event loop, keeping only a bounded part of it."""

from __future__ import annotations

import asyncio
import os

from power_loop.shell.backend import ShellOutput

_CHUNK = 65_536


class CappedBuffer:
    """The first and last bytes of a stream, at most ``cap`` in all, and its size."""

    def __init__(self, cap: int) -> None:
        self._head_cap = cap // 2
        self._tail_cap = cap - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data[-self._tail_cap:]
            del self._tail[:-self._tail_cap]

    def output(self) -> ShellOutput:
        return ShellOutput(bytes(self._head), bytes(self._tail), self.size)


class PipeReader:
    """Reads a non-blocking pipe into a :class:`CappedBuffer` until end of file.

    ``done`` is set at end of file (or on a read error); ``close`` stops reading and
    closes the pipe, whether or not it was finished.
    """

    def __init__(self, fd: int, cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.buffer = CappedBuffer(cap)
        self.done: asyncio.Future[None] = loop.create_future()
        self._fd = fd
        self._loop = loop
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.buffer.feed(data)
            return
        self._loop.remove_reader(self._fd)
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self.done.done():
            self.done.set_result(None)
