"""Where the benchmarks find their database servers.

A networked backend's DSN comes from the command line (``--pg-dsn``, ``--mysql-dsn``),
else from the variables the test suite uses (``POWER_LOOP_TEST_PG_DSN``,
``POWER_LOOP_TEST_MYSQL_DSN``), else from throwaway servers started with
``scripts/testbed.py`` (root only) and stopped afterwards. A backend that ends up without
a server is reported with the reason, never skipped silently.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BACKENDS: tuple[str, ...] = ("sqlite", "postgresql", "mysql")
ENV_VARS: dict[str, str] = {"postgresql": "POWER_LOOP_TEST_PG_DSN",
                            "mysql": "POWER_LOOP_TEST_MYSQL_DSN"}
TESTBED = Path(__file__).resolve().parent.parent / "scripts" / "testbed.py"
_EXPORT = re.compile(r"^export (\w+)='([^']*)'$")


@dataclass(frozen=True, slots=True)
class Server:
    """A networked backend's DSN and where it came from, or why there is none."""

    backend: str
    dsn: str | None
    origin: str
    problem: str | None = None

    @property
    def address(self) -> str:
        """``host:port (origin)``, safe to print (no credentials)."""
        if self.dsn is None:
            return f"unavailable ({self.origin})"
        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port} ({self.origin})"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backends``, ``--pg-dsn`` and ``--mysql-dsn``, the same for every benchmark."""
    parser.add_argument("--backends", default=",".join(BACKENDS), type=_backend_list,
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--pg-dsn", help=f"PostgreSQL DSN (default: ${ENV_VARS['postgresql']}, "
                        "else a throwaway server from scripts/testbed.py)")
    parser.add_argument("--mysql-dsn", help=f"MySQL/MariaDB DSN (default: ${ENV_VARS['mysql']}, "
                        "else a throwaway server from scripts/testbed.py)")


def _backend_list(text: str) -> list[str]:
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(BACKENDS)}")
    return chosen


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def provision(backends: Sequence[str], *, pg_dsn: str | None = None,
              mysql_dsn: str | None = None) -> Iterator[dict[str, Server]]:
    """The servers for the networked ``backends`` among those asked for.

    Starts throwaway servers for those without a DSN, and stops them on exit.
    """
    given = {"postgresql": pg_dsn, "mysql": mysql_dsn}
    servers: dict[str, Server] = {}
    missing: list[str] = []
    for backend in backends:
        if backend not in ENV_VARS:
            continue
        variable = ENV_VARS[backend]
        if given[backend]:
            servers[backend] = Server(backend, given[backend], "command line")
        elif os.environ.get(variable):
            servers[backend] = Server(backend, os.environ[variable], f"${variable}")
        else:
            missing.append(backend)
    if not missing:
        yield servers
        return
    base = Path(tempfile.mkdtemp(prefix="power-loop-bench-"))
    try:
        servers.update(_start_testbed(base, missing))
        yield servers
    finally:
        _stop_testbed(base)


def _start_testbed(base: Path, backends: list[str]) -> dict[str, Server]:
    _progress(f"no DSN for {', '.join(backends)}: starting throwaway servers with "
              f"{TESTBED.name} in {base}")
    env = dict(os.environ)
    for backend, variable in ENV_VARS.items():
        # testbed.py starts a server only for an unset variable: mark the ones we do not
        # need so it starts nothing more.
        if backend not in backends:
            env[variable] = "unused-by-bench"
    try:
        done = subprocess.run([sys.executable, str(TESTBED), "start", str(base)], env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        output, errors, code = done.stdout, done.stderr, done.returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        output, errors, code = "", str(exc), -1
    dsns = {m.group(1): m.group(2) for m in map(_EXPORT.match, output.splitlines()) if m}
    why = (errors.strip().splitlines() or [f"exit status {code}"])[-1]
    servers: dict[str, Server] = {}
    for backend in backends:
        dsn = dsns.get(ENV_VARS[backend])
        if dsn:
            servers[backend] = Server(backend, dsn, "throwaway testbed server")
        else:
            servers[backend] = Server(
                backend, None, "no DSN given",
                problem=(f"no {ENV_VARS[backend]} and `scripts/testbed.py start` could not "
                         f"start a server (exit {code}): {why}"))
    return servers


def _stop_testbed(base: Path) -> None:
    try:
        done = subprocess.run([sys.executable, str(TESTBED), "stop", str(base)],
                              capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _progress(f"could not stop the throwaway servers in {base}: {exc}")
        return
    if done.returncode != 0:
        _progress(f"`scripts/testbed.py stop {base}` failed: {done.stderr.strip()}")
