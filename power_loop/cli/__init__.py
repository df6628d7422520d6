"""The ``power-loop`` command line: schema DDL, session inspection and transfer, upkeep.

Layout: ``main.py`` builds the parser from a :class:`CommandRegistry` and maps errors to
exit codes; each other module contributes ``COMMANDS`` (``ddl.py``, ``sessions.py``,
``maintenance.py``), with ``store_access.py`` holding what the store commands share. A
new command (``demo``, ``chat``, ``worker``) is a module with a ``COMMANDS`` tuple, listed
once in :data:`power_loop.cli.main.BUILTIN_COMMANDS`.

This package does not import :mod:`power_loop.cli.main` itself, so
``python -m power_loop.cli.main`` runs it without a double-import warning.
"""

from power_loop.cli.registry import Command, CommandRegistry, Handler

__all__ = ["Command", "CommandRegistry", "Handler"]
