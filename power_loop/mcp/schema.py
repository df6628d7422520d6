"""Validating arguments against an MCP server's JSON Schema.

MCP servers publish JSON Schema 2020-12 (or name another draft with ``$schema``). The
validator is ``jsonschema``'s: it interprets the schema and never generates or executes
code, which matters for schemas that come from a remote server (the fast validator of
the user's own ``@tool`` schemas compiles them to Python with ``exec``). It never
fetches a remote ``$ref`` either: one that is not inside the schema fails the call.
Measured against the fast one in ``python -m bench mcp_schema``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from power_loop.errors import InvalidArgumentError, MissingDriverError

MAX_SCHEMA_CHARS = 100_000
"""A tool schema longer than this (as JSON) is refused: it would crowd every request."""

_MAX_ERROR_CHARS = 500


def canonical_schema(schema: Any, where: str) -> dict[str, Any]:
    """The schema as a fresh, plain, key-sorted object, ready for every request.

    Key order is fixed so that two processes listing the same server build
    byte-identical requests whatever order the server sent the keys in.

    Raises:
        InvalidArgumentError: The schema is not a JSON object describing an object, or
            is too big.
    """
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, Mapping):
        raise InvalidArgumentError(f"{where}: the input schema is a {type(schema).__name__}, "
                                   "not a JSON object")
    try:
        text = json.dumps(schema, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"{where}: the input schema is not plain JSON ({exc})") \
            from exc
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidArgumentError(f"{where}: the input schema is {len(text)} characters, "
                                   f"over {MAX_SCHEMA_CHARS}")
    plain: dict[str, Any] = json.loads(text)
    kind = plain.get("type", "object")
    if kind != "object":
        raise InvalidArgumentError(f"{where}: the input schema describes {kind!r}; tool "
                                   "arguments are an object")
    plain["type"] = "object"
    return dict(sorted(plain.items()))


def compile_schema(schema: Mapping[str, Any], where: str) -> Callable[[Any], None]:
    """A validator of arguments against ``schema`` (2020-12 unless ``$schema`` names
    another draft), raising ``fastjsonschema.JsonSchemaValueException`` (what the tool
    registry reads) for arguments that don't fit.

    Raises:
        InvalidArgumentError: The schema is not a valid schema of its draft.
        MissingDriverError: ``jsonschema`` is not installed.
    """
    try:
        from jsonschema import exceptions, validators
    except ImportError as exc:
        raise MissingDriverError("jsonschema", "mcp") from exc

    try:
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        cls.check_schema(schema)
        checker = cls(schema)
    except exceptions.SchemaError as exc:
        raise InvalidArgumentError(
            f"{where}: invalid input schema: {_short(exc.message)} (at "
            f"{'/'.join(map(str, exc.absolute_path)) or 'the top'})") from exc
    except Exception as exc:  # a schema hostile enough to break the metaschema check
        raise InvalidArgumentError(f"{where}: invalid input schema: {_short(str(exc))}") \
            from exc

    def validate(arguments: Any) -> None:
        try:
            error = exceptions.best_match(checker.iter_errors(arguments))
        except Exception as exc:  # an unresolvable $ref, a recursion that never ends...
            raise fastjsonschema.JsonSchemaValueException(
                f"the server's schema cannot be applied: {_short(str(exc))}") from exc
        if error is not None:
            place = "/".join(map(str, error.absolute_path))
            raise fastjsonschema.JsonSchemaValueException(
                f"{place + ': ' if place else ''}{_short(error.message)}")

    return validate


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."
