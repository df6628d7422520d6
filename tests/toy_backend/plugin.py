"""A pytest plugin that registers the toy backend: ``pytest -p tests.toy_backend.plugin``."""

from power_loop.store import register_backend
from tests.toy_backend import BACKEND

register_backend(BACKEND)
