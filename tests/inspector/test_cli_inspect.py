"""``power-loop inspect`` refuses what would expose the store, before it listens."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

import power_loop
from power_loop.errors import MissingDriverError
from power_loop.inspector import require_web
from tests.cli_support import cli_env, run_cli
from tests.inspector.harness import inspector


async def test_a_public_address_needs_a_token() -> None:
    result = await run_cli("inspect", "--dsn", ":memory:", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "error [invalid_argument]: refusing to serve the inspector on '0.0.0.0'" in (
        result.stderr)


async def test_a_short_token_is_refused() -> None:
    result = await run_cli("inspect", "--dsn", ":memory:",
                           env=cli_env(POWER_LOOP_INSPECT_TOKEN="short"))
    assert result.returncode == 2 and "use at least 16" in result.stderr


async def test_a_store_that_is_not_there_is_an_error_not_an_empty_page(dsn: str) -> None:
    result = await run_cli("inspect", "--dsn", dsn, "--prefix", "nothing_here_")
    assert result.returncode == 2
    assert "schema_missing" in result.stderr or "invalid_dsn" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_core_does_not_need_the_web_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert power_loop.create_inspector_app is not None
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if it were not installed
    with pytest.raises(MissingDriverError) as caught:
        require_web()
    assert caught.value.extra == "web" and "power-loop[web]" in caught.value.message


async def test_importing_power_loop_imports_no_web_framework() -> None:
    from tests.cli_support import run_python

    result = await run_python("-c", "import sys, power_loop; print(sorted(m for m in "
                              "sys.modules if m.split('.')[0] in {'starlette', 'uvicorn'}))")
    assert result.stdout.strip() == "[]", result.output


async def test_the_inspector_creates_no_tables() -> None:
    result = await run_cli("inspect", "--dsn", ":memory:", "--schema", "auto_create")
    assert result.returncode == 2 and "never writes" in result.stderr


async def test_a_port_in_use_is_an_error(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    async with await power_loop.open_store(str(database)):
        pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli("inspect", "--dsn", str(database), "--port", str(port))
    assert result.returncode == 2, result.output
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr


async def test_a_root_path_that_is_no_prefix_is_refused() -> None:
    for bad in ("inspect", "/inspect/", "/a//b", "/a?b"):
        result = await run_cli("inspect", "--dsn", ":memory:", "--root-path", bad)
        assert result.returncode == 2, (bad, result.output)
        assert "is not a path prefix" in result.stderr


def test_behind_a_proxy_the_links_carry_the_root_path(tmp_path: Path) -> None:
    """What a proxy that strips ``/ops`` forwards (``/sessions``) answers with links
    under ``/ops``."""
    database = tmp_path / "app.db"

    async def create() -> None:
        async with await power_loop.open_store(str(database)):
            pass

    asyncio.run(create())
    with inspector(str(database), "pl_", "--root-path", "/ops") as running, \
            running.client() as client:
        page = client.get("/sessions", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert 'href="/ops/sessions"' in page.text
        assert 'href="/ops/static/inspector.css"' in page.text
        assert 'href="/sessions"' not in page.text
