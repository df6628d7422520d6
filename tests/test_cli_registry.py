"""The command registry and ``main``'s error handling, in-process."""

from __future__ import annotations

import argparse

import pytest

from power_loop import SessionNotFoundError
from power_loop.cli import Command, CommandRegistry
from power_loop.cli.main import BUILTIN_COMMANDS, default_registry, main
from power_loop.cli.registry import set_handler
from power_loop.cli.store_access import add_store_arguments
from power_loop.store import SchemaPolicy

SECRET = "hunter2-secret"


def _registry_with(name: str, behaviour: str) -> CommandRegistry:
    def run(args: argparse.Namespace) -> int:
        if behaviour == "missing":
            raise SessionNotFoundError("session 'x' does not exist", session_id="x")
        if behaviour == "bug":
            raise RuntimeError(f"unexpected, while using {args.dsn}")
        print(f"hello {args.who}")
        return 0

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("who")
        add_store_arguments(parser, policy=SchemaPolicy.VERIFY, why="it is a test")
        set_handler(parser, run)

    registry = default_registry()
    registry.add(Command(name=name, help="a command added by another module",
                         configure=configure))
    return registry


def test_builtin_commands_include_the_store_commands() -> None:
    names = [c.name for c in BUILTIN_COMMANDS]
    assert {"ddl", "sessions", "prune", "vacuum"} <= set(names)
    assert len(names) == len(set(names))
    assert all(c.help and c.description for c in BUILTIN_COMMANDS)


def test_a_module_can_add_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    registry = _registry_with("hello", "ok")
    assert "hello" in registry and "ddl" in registry
    assert main(["hello", "world"], registry=registry) == 0
    assert capsys.readouterr().out == "hello world\n"
    assert main(["--help"], registry=registry) == 0
    assert "a command added by another module" in capsys.readouterr().out


def test_a_name_is_registered_once() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.add(BUILTIN_COMMANDS[0])


def test_power_loop_errors_become_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["missing", "x"], registry=_registry_with("missing", "missing")) == 2
    captured = capsys.readouterr()
    assert captured.err == "error [session_not_found]: session 'x' does not exist\n"
    assert captured.out == ""


def test_a_bug_shows_its_traceback_without_the_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://app:{SECRET}@db.example/app"
    assert main(["bug", "x", "--dsn", dsn], registry=_registry_with("bug", "bug")) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err and "this is a bug" in err
    assert SECRET not in err and "app:***@db.example" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions"]) == 2
    assert main(["sessions", "list", "--limit", "0"]) == 2
    assert main(["nonsense"]) == 2
    assert "usage: power-loop" in capsys.readouterr().err
