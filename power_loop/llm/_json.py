"""Decoding stored JSON fast (orjson, when installed) without changing what it decodes to.

orjson reads an integer beyond 64 bits as a float, where ``json`` keeps it exact; a text
with a run of 19 digits or more (the shortest that can leave 64 bits) is therefore left
to ``json``, as is whatever orjson refuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_LONG_NUMBER = re.compile(r"\d{19}")

_fast: Callable[[str], Any] | None
try:  # optional: pip install power-loop[fast]
    from orjson import loads as _fast
except ImportError:  # pragma: no cover - depends on the environment
    _fast = None


def loads(text: str) -> Any:
    """``json.loads(text)``, through orjson when that gives the same value."""
    if _fast is not None and _LONG_NUMBER.search(text) is None:
        try:
            return _fast(text)
        except ValueError:
            pass
    return json.loads(text)
