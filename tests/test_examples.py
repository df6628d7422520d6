"""Every example runs, offline, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def test_every_example_is_listed_in_the_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    assert SCRIPTS, "no examples found"
    for name in SCRIPTS:
        assert f"`{name}" in readme, f"{name} is missing from examples/README.md"


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_offline(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POWER_LOOP_API_KEY"}
    done = subprocess.run([sys.executable, name], cwd=EXAMPLES, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{name} printed nothing"
