"""Shared by the examples: where their data goes, and which model they talk to.

Every example runs offline with ``ScriptedLLM``. When ``POWER_LOOP_API_KEY`` is set
and the providers are available, :func:`pick_llm` returns the real model configured by
the environment instead (see docs/providers.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from power_loop import LLMService, ScriptedLLM, create_llm_service_from_env


def data_dir(name: str) -> Path:
    """A fresh directory for one example's SQLite file."""
    return Path(tempfile.mkdtemp(prefix=f"power-loop-{name}-"))


def pick_llm(offline: ScriptedLLM) -> LLMService:
    """The real model from the environment if configured, else ``offline``."""
    if os.environ.get("POWER_LOOP_API_KEY"):
        return create_llm_service_from_env()
    return offline
