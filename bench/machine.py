"""What a benchmark ran on, and how its figures are laid out."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
_DISTRIBUTIONS = ("power-loop", "asyncpg", "aiomysql", "PyMySQL")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(_REPO), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, str]:
    """CPU, OS, Python, driver versions and the power_loop commit, as printable text."""
    facts = {
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "power_loop": f"{_version('power-loop')} (git {_commit()})",
    }
    drivers = ", ".join(f"{d} {_version(d)}" for d in _DISTRIBUTIONS[1:])
    facts["drivers"] = f"{drivers}, SQLite library {sqlite3.sqlite_version}"
    return facts


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 left: int = 1) -> str:
    """An aligned text table: the first ``left`` columns flush left, the rest right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
