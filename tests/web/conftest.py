"""The web example's servers: started once per module and backend, on tables of their own.

``web_backend`` is the module-scoped twin of ``backend`` (same ``--backends`` option), so
each module starts its processes once per backend rather than once per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from power_loop.testing import (
    BACKENDS,
    BackendUnavailable,
    backend_dsn,
    fresh_prefix,
)
from tests.browser_support import browser, page  # noqa: F401 (fixtures)
from tests.durability.harness import StoreView, ThreadedStoreView
from tests.web.support import Process


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "web_backend" in metafunc.fixturenames:
        chosen = [b for b in metafunc.config.getoption("--backends").split(",")
                  if b in BACKENDS]
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is not None:
            chosen = [b for b in chosen if b in marker.args]
        metafunc.parametrize("web_backend", chosen, scope="module")


@dataclass(frozen=True, slots=True)
class Site:
    """A running example: its web server, its worker, and the store they share."""

    web: Process
    worker: Process
    view: StoreView

    @property
    def url(self) -> str:
        return self.web.url


@pytest.fixture(scope="module")
def site_options() -> list[str]:
    """The example's options for a module's servers (a module overrides it)."""
    return ["--research-seconds", "0.5", "--lease-ttl", "3", "--poll", "0.2",
            "--heartbeat", "1"]


@pytest.fixture(scope="module")
def site(web_backend: str, site_options: list[str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example's web server and a worker, on a fresh table prefix."""
    folder = tmp_path_factory.mktemp(f"web-{web_backend}")
    try:
        dsn = backend_dsn(web_backend, folder)
    except BackendUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    view = ThreadedStoreView(dsn, fresh_prefix())  # creates the tables before the servers start
    web = Process("web", dsn, view.prefix, folder / "web.log", options=site_options)
    worker = Process("worker", dsn, view.prefix, folder / "worker.log", options=site_options)
    try:
        web.start()
        worker.start()
        yield Site(web, worker, view)
    finally:
        web.stop()
        worker.stop()
        view.close()
