"""Structured output: the final answer parsed as JSON and checked against a schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from power_loop.errors import InvalidArgumentError

_FENCE = re.compile(r"\A\s*```(?:json)?\s*\n(.*)\n\s*```\s*\Z", re.DOTALL)
_VALIDATORS: dict[str, Callable[[Any], Any]] = {}


def validator_for(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A compiled validator for ``schema`` (cached; an invalid schema is refused)."""
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _VALIDATORS.get(key)
    if found is None:
        try:
            found = fastjsonschema.compile(dict(schema))
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise InvalidArgumentError(f"output_schema is not a valid JSON Schema: {exc}") from exc
        _VALIDATORS[key] = found
    return found


def parse_output(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``(value, None)`` when ``text`` is JSON matching ``schema``, else ``(None, problem)``.

    A JSON document wrapped in a Markdown code fence is accepted.
    """
    fenced = _FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError as exc:
        return None, f"the answer is not JSON ({exc})"
    except RecursionError:
        return None, "the answer is JSON nested too deeply to decode"
    try:
        validator_for(schema)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return None, f"the answer does not match the schema: {exc.message[:500]}"
    except RecursionError:
        return None, "the answer is nested too deeply to check against the schema"
    return value, None
