"""The subcommand registry: each command is a name, a help line and a configure hook.

A command module declares ``COMMANDS: tuple[Command, ...]``; ``configure`` adds the
command's arguments (and nested subcommands) to the parser it is given and binds the
function that runs it with :func:`set_handler`. Nothing is registered by importing a
module: the registry is built explicitly, so the command set is visible in one place
and tests can build a registry of their own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]
"""Runs a parsed command line and returns the process exit status."""

_HANDLER = "_power_loop_handler"


@dataclass(frozen=True, slots=True)
class Command:
    """A top-level ``power-loop`` subcommand.

    Attributes:
        name: What the user types (``sessions``).
        help: One line for the command list in ``power-loop --help``.
        configure: Adds arguments to the command's parser and binds a handler with
            :func:`set_handler` (on the parser itself, or on each nested subcommand).
        description: The longer text at the top of ``power-loop NAME --help``.
        epilog: Text after the arguments (examples, exit status).
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    description: str | None = None
    epilog: str | None = None


def set_handler(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """Make ``handler`` run when the command line selects ``parser``."""
    parser.set_defaults(**{_HANDLER: handler})


def get_handler(args: argparse.Namespace) -> Handler | None:
    """The handler bound by :func:`set_handler` for the parsed command, if any."""
    handler: Handler | None = getattr(args, _HANDLER, None)
    return handler


def new_subparsers(parser: argparse.ArgumentParser, *, dest: str,
                   metavar: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A required group of nested subcommands, help text formatted like the top level."""
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)


def add_command_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *,
    help: str, description: str | None = None, epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand parser that keeps the line breaks of its description and epilog."""
    return subparsers.add_parser(
        name, help=help, description=description or help, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)


Action = tuple[str, str, Callable[[argparse.ArgumentParser], None]]
"""A nested subcommand: its name, its help line and the hook adding its arguments."""


def add_actions(parser: argparse.ArgumentParser, actions: Sequence[Action]) -> None:
    """Give a command its required ``ACTION`` subcommands (``sessions list``...)."""
    subparsers = new_subparsers(parser, dest="action", metavar="ACTION")
    for name, help_text, configure in actions:
        configure(add_command_parser(subparsers, name, help=help_text))


class CommandRegistry:
    """The ordered set of top-level commands the parser is built from."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        """Register ``command``; a second command with the same name is a bug."""
        if command.name in self._commands:
            raise ValueError(f"a command named {command.name!r} is already registered")
        self._commands[command.name] = command

    def extend(self, commands: tuple[Command, ...]) -> None:
        """Register every command of a module's ``COMMANDS``."""
        for command in commands:
            self.add(command)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def install(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add a parser for each command to ``subparsers`` and let it configure itself."""
        for command in self:
            parser = add_command_parser(subparsers, command.name, help=command.help,
                                        description=command.description,
                                        epilog=command.epilog)
            command.configure(parser)
