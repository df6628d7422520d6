"""``power-loop ddl``: print the statements that create the power_loop tables.

Only dialects are imported (they carry the SQL text, never a driver), so the DDL prints
on a machine where neither asyncpg nor aiomysql is installed: a DBA can
provision the schema for an application that will run with ``--schema verify``.
"""

from __future__ import annotations

import argparse
import sys

from power_loop.cli.registry import Command, set_handler
from power_loop.errors import InvalidArgumentError
from power_loop.store.dsn import DIALECT_NAMES, dialect_for
from power_loop.store.migrations import LATEST_VERSION, render_ddl
from power_loop.store.schema import validate_prefix

DIALECTS: tuple[str, ...] = DIALECT_NAMES
"""Names accepted by ``--dialect``: the DSN schemes."""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dialect", required=True, choices=list(DIALECTS), metavar="DIALECT",
        help="SQL flavour: sqlite, postgres (or postgresql), mysql (or mariadb; the same "
             "statements run on MySQL 8 and MariaDB 10.6+)")
    parser.add_argument(
        "--prefix", default="pl_", metavar="PREFIX",
        help="prefix of every table and index name, as passed to open_store(table_prefix=) "
             "(default: %(default)s)")
    parser.add_argument(
        "--from-version", type=int, default=0, metavar="N",
        help="print only what upgrades a schema already at version N (default: 0, the "
             f"whole schema; the latest version is {LATEST_VERSION})")
    set_handler(parser, _run)


def _run(args: argparse.Namespace) -> int:
    prefix = validate_prefix(str(args.prefix))
    after = int(args.from_version)
    if not 0 <= after <= LATEST_VERSION:
        raise InvalidArgumentError(
            f"--from-version must be between 0 and {LATEST_VERSION}, not {after}")
    dialect = dialect_for(str(args.dialect))
    sys.stdout.write(render_ddl(dialect, prefix, after))
    return 0


COMMANDS: tuple[Command, ...] = (
    Command(
        name="ddl",
        help="print the SQL that creates the power_loop tables",
        description=(
            "Print the DDL that creates (or upgrades) the power_loop tables for one SQL\n"
            "dialect, one statement per paragraph, each ending in ';'. No database is\n"
            "contacted and no driver needs to be installed.\n\n"
            "Use it when the application's database user may not create tables: a DBA\n"
            "runs the output once, and the application opens the store with\n"
            "SchemaPolicy.VERIFY (or NONE)."),
        epilog=(
            "examples:\n"
            "  power-loop ddl --dialect postgres > schema.sql\n"
            "  power-loop ddl --dialect mysql --prefix myapp_ | mysql myapp\n"
            "  power-loop ddl --dialect sqlite | sqlite3 app.db"),
        configure=_configure,
    ),
)
