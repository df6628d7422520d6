"""``power-loop demo``: the README's main job, run as a user runs it (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_openai import FakeOpenAI

WRONG_KEY = "sk-wrong-key-7781"


def test_demo_survives_the_crash_and_books_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POWER_LOOP_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "power_loop.cli.main", "demo", "--dir",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ScriptedLLM, offline and deterministic" in out
    assert "SIGKILL" in out and "send #0 is pending" in out
    assert "not re-run; the model is told its outcome is unknown" in out
    assert "find_booking" in out
    assert "You first asked" in out
    assert "1 booking (never booked twice)" in out
    bookings = json.loads((tmp_path / "restaurant-bookings.json").read_text())
    assert len(bookings) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_wrong_api_key_is_the_providers_typed_error(tmp_path: Path, provider: str) -> None:
    server: FakeOpenAI | FakeAnthropic = (FakeOpenAI() if provider == "openai"
                                          else FakeAnthropic())
    with server:
        env = {**os.environ, "POWER_LOOP_PROVIDER": provider, "POWER_LOOP_API_KEY": WRONG_KEY,
               "POWER_LOOP_MODEL": "m", "POWER_LOOP_BASE_URL": server.base_url}
        done = subprocess.run([sys.executable, "-m", "power_loop.cli.main", "demo", "--dir",
                               str(tmp_path)], capture_output=True, text=True, env=env,
                              timeout=180)
        assert server.attempts >= 1  # the key reached the (fake) provider, which said 401
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error [llm_authentication]: " in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert WRONG_KEY not in done.stdout + done.stderr
    assert not (tmp_path / "restaurant-bookings.json").exists()
