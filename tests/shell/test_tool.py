"""The ``bash`` tool as the model meets it: results, errors, the idempotency key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from power_loop import (
    InvalidArgumentError,
    ShellBackend,
    ShellOutput,
    ShellRequest,
    ShellResult,
    ToolCallPart,
    ToolRegistry,
    bash_tool,
)
from power_loop.shell.tool import TIMEOUT_SLACK
from power_loop.tools.registry import ToolLimits
from tests.shell.support import call_bash, context, tagged_shell


@dataclass
class RecordingShell:
    """A backend of our own behind the seam: records each request, runs nothing."""

    timeout: float = 7.0
    requests: list[ShellRequest] = field(default_factory=list)

    async def run(self, request: ShellRequest) -> ShellResult:
        self.requests.append(request)
        return ShellResult(0, ShellOutput(b"recorded\n", b"", 9))


async def test_the_model_reads_exit_code_streams_and_the_key(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path)
    outcome = await call_bash(shell, {"command": 'echo "$POWER_LOOP_IDEMPOTENCY_KEY '
                                                 '$POWER_LOOP_ATTEMPT"; echo oops >&2; exit 4'})
    assert not outcome.result.is_error
    assert outcome.result.content == ("exit code: 4\n<stdout>\ns1:0:c1 1\n</stdout>\n"
                                      "<stderr>\noops\n</stderr>")


async def test_a_timeout_and_a_cut_are_stated(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path, timeout=1.0, max_output_bytes=200)
    outcome = await call_bash(shell, {"command": "head -c 1000 /dev/zero | tr '\\0' a; "
                                                 "exec sleep 30"})
    text = outcome.result.content
    assert text.startswith("exit code: -15 (ended by SIGTERM)\ntimed out: the command ran "
                           "past 1s; its process group was killed\n<stdout>\n" + "a" * 100)
    assert "[... 800 bytes cut: 1,000 bytes in all" in text
    assert text.endswith("a" * 100 + "\n</stdout>\nstderr: (empty)")


async def test_bytes_that_are_not_utf8_are_escaped(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path)
    outcome = await call_bash(shell, {"command": "printf 'caf\\303\\251 \\377\\000end'"})
    assert "<stdout>\ncafé \\xff\\x00end\n</stdout>" in outcome.result.content


@pytest.mark.parametrize("arguments, says", [
    ("{not json", "not valid JSON"), ('["ls"]', "must be a JSON object"),
    ("{}", "invalid arguments"), ('{"command": 3}', "invalid arguments"),
    ('{"command": "ls", "cwd": "/"}', "invalid arguments"),
])
async def test_bad_arguments_are_tool_errors(tmp_path: Path, arguments: str,
                                             says: str) -> None:
    shell, _ = tagged_shell(tmp_path)
    outcome = await call_bash(shell, arguments)
    assert outcome.result.is_error and says in outcome.result.content


async def test_a_command_that_cannot_start_is_an_error_result(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path / "gone")
    outcome = await call_bash(shell, {"command": "ls"})
    assert outcome.result.is_error
    assert outcome.result.content.startswith("Error: the command could not be started: ")
    assert outcome.error_type == "power_loop.errors.ToolError"


async def test_the_seam_takes_any_backend() -> None:
    backend = RecordingShell()
    assert isinstance(backend, ShellBackend)
    built = bash_tool(backend, name="sh", description="Run it.", requires_approval=True)
    assert (built.name, built.description, built.safe_to_repeat) == ("sh", "Run it.", False)
    assert built.timeout == 7.0 + TIMEOUT_SLACK and built.requires_approval is True
    registry = ToolRegistry([built])
    result = await registry.execute(ToolCallPart("c9", "sh", '{"command": "rm -rf /"}'),
                                    context("c9", attempt=2), ToolLimits())
    [request] = backend.requests
    assert (request.command, dict(request.env)) == (
        "rm -rf /", {"POWER_LOOP_IDEMPOTENCY_KEY": "s1:0:c9", "POWER_LOOP_ATTEMPT": "2"})
    assert result.content == "exit code: 0\n<stdout>\nrecorded\n</stdout>\nstderr: (empty)"


@pytest.mark.parametrize("candidate", [object(), RecordingShell(timeout=0),
                                       RecordingShell(timeout=True)])
def test_bash_tool_refuses_what_is_not_a_backend(candidate: object) -> None:
    with pytest.raises(InvalidArgumentError, match="needs a ShellBackend"):
        bash_tool(candidate)  # type: ignore[arg-type]


def test_the_shell_is_unsafe_to_repeat_by_default(tmp_path: Path) -> None:
    shell, _ = tagged_shell(tmp_path, max_output_bytes=1_000)
    built = bash_tool(shell)
    assert (built.name, built.safe_to_repeat) == ("bash", False)
    assert built.max_output_chars == 2 * 1_000 + 2_000
    assert "5 seconds" in built.description
    assert list(built.parameters["properties"]) == ["command"]
    assert bash_tool(shell, safe_to_repeat=True).safe_to_repeat
