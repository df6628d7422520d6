"""A :class:`ShellResult` as the text the model reads."""

from __future__ import annotations

import signal

from power_loop.shell.backend import ShellOutput, ShellResult


def render_result(result: ShellResult, timeout: float) -> str:
    """Exit code, timeout, both streams and every note, as bounded valid text.

    Bytes that are not UTF-8 are shown as ``\\xNN`` escapes, and so is NUL; the middle
    of cut output is replaced by a line saying how many bytes were dropped.
    """
    lines = [f"exit code: {result.exit_code}{_signal_note(result.exit_code)}"]
    if result.timed_out:
        lines.append(f"timed out: the command ran past {timeout:g}s; its process group "
                     "was killed")
    lines.extend(f"note: {note}" for note in result.notes)
    lines.append(_stream("stdout", result.stdout))
    lines.append(_stream("stderr", result.stderr))
    return "\n".join(lines)


def show_bytes(data: bytes) -> str:
    """``data`` as text: UTF-8 where it is, ``\\xNN`` escapes elsewhere and for NUL."""
    return data.decode("utf-8", "backslashreplace").replace("\0", "\\x00")


def _stream(name: str, output: ShellOutput) -> str:
    if output.size == 0:
        return f"{name}: (empty)"
    if output.cut <= 0:
        body = show_bytes(output.data)
    else:
        body = (f"{show_bytes(output.head)}\n[... {output.cut:,} bytes cut: {output.size:,} "
                f"bytes in all; the start and the end are shown ...]\n"
                f"{show_bytes(output.tail)}")
    end = "" if body.endswith("\n") else "\n"
    return f"<{name}>\n{body}{end}</{name}>"


def _signal_note(code: int) -> str:
    if code >= 0:
        return ""
    try:
        return f" (ended by {signal.Signals(-code).name})"
    except ValueError:
        return f" (ended by signal {-code})"
