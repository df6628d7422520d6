"""The ``power-loop`` console script: parser, dispatch, errors and exit status.

Exit status: 0 on success; 2 for an error power_loop expects (printed as one
``error [<code>]: <message>`` paragraph on stderr, ``<code>`` being the error's frozen
:attr:`~power_loop.PowerLoopError.code`) and for a command-line usage error; 130 when
interrupted; 141 when the reader of stdout went away; 1 for an unexpected failure (a
bug), reported with its traceback. Nothing printed ever holds the DSN's password.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import traceback
from collections.abc import Sequence

from power_loop import __version__
from power_loop.cli import (
    chat,
    ddl,
    demo,
    inspect,
    maintenance,
    sessions,
    timers,
    worker,
    workflows,
)
from power_loop.cli.registry import Command, CommandRegistry, get_handler
from power_loop.cli.store_access import DSN_ENV, dsn_secrets, given_dsn, scrub
from power_loop.errors import PowerLoopError

BUILTIN_COMMANDS: tuple[Command, ...] = (
    *demo.COMMANDS,
    *chat.COMMANDS,
    *worker.COMMANDS,
    *ddl.COMMANDS,
    *sessions.COMMANDS,
    *timers.COMMANDS,
    *workflows.COMMANDS,
    *maintenance.COMMANDS,
    *inspect.COMMANDS,
)
"""Every command ``power-loop`` ships, in the order ``--help`` lists them."""

EXIT_OK = 0
EXIT_BUG = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_DESCRIPTION = """\
Operate the power_loop store: print its DDL, inspect, export, import and delete
sessions, prune old ones and reclaim space. Every store command takes --dsn (or reads
$POWER_LOOP_DSN) and --prefix (the application's table_prefix, default pl_)."""

_EPILOG = f"""\
environment:
  {DSN_ENV}  the DSN used when --dsn is not given

exit status:
  0    success
  2    an error power_loop expects, printed as `error [<code>]: <message>` on stderr
       (codes are stable: session_not_found, schema_missing, invalid_dsn, ...),
       or a usage error
  130  interrupted
  141  stdout was closed early (for example piped into `head`)
  1    an unexpected failure (a bug: please report the traceback)

Run `power-loop COMMAND --help` for a command's options."""


def default_registry() -> CommandRegistry:
    """A registry holding :data:`BUILTIN_COMMANDS`, ready for more to be added."""
    registry = CommandRegistry()
    registry.extend(BUILTIN_COMMANDS)
    return registry


def build_parser(registry: CommandRegistry | None = None) -> argparse.ArgumentParser:
    """The ``power-loop`` parser, with a subcommand for each registered command."""
    parser = argparse.ArgumentParser(
        prog="power-loop", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"power-loop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    (registry or default_registry()).install(commands)
    return parser


def _tolerate_unencodable_output() -> None:
    # A session id or metadata in a script the terminal cannot encode must not turn
    # into a UnicodeEncodeError halfway through a listing.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    # The reader left (`power-loop sessions export ... | head`): point stdout at devnull
    # so the interpreter's final flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None, *, registry: CommandRegistry | None = None) -> int:
    """Run ``power-loop`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    _tolerate_unencodable_output()
    parser = build_parser(registry)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    handler = get_handler(args)
    if handler is None:  # a registered command that forgot set_handler()
        parser.error(f"command {args.command!r} has no handler")
    secrets = dsn_secrets(given_dsn(args))
    try:
        return handler(args)
    except PowerLoopError as exc:
        print(scrub(f"error [{exc.code}]: {exc.message}", secrets), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception:
        report = scrub(traceback.format_exc(), secrets)
        print(f"{report}\ninternal error: this is a bug in power_loop; please report it "
              "with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
