"""Server schemas are JSON Schema 2020-12, checked without generated code; the user's
own ``@tool`` schemas keep the compiled fast path."""

from __future__ import annotations

import fastjsonschema
import pytest

from power_loop import InvalidArgumentError, tool
from power_loop.mcp.schema import canonical_schema, compile_schema

SCHEMA = {
    "type": "object",
    "properties": {
        "point": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}],
                  "items": False},
        "card": {"type": "string"}, "cvv": {"type": "string"},
        "kind": {"$ref": "#/$defs/kind"}},
    "dependentRequired": {"card": ["cvv"]},
    "$defs": {"kind": {"enum": ["a", "b"]}},
}


def test_2020_12_keywords_are_enforced() -> None:
    validate = compile_schema(canonical_schema(SCHEMA, "t"), "t")
    validate({"point": [1, 2.5], "card": "4111", "cvv": "123", "kind": "a"})
    for wrong, says in (({"point": [1, 2, 3]}, "point"), ({"point": ["x", 1]}, "point/0"),
                        ({"card": "4111"}, "cvv"), ({"kind": "c"}, "kind")):
        with pytest.raises(fastjsonschema.JsonSchemaValueException) as caught:
            validate(wrong)
        assert says in caught.value.message


def test_a_schema_that_cannot_be_compiled_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid input schema"):
        compile_schema({"type": "object", "properties": {"a": {"type": 5}}}, "t")
    with pytest.raises(InvalidArgumentError, match="describes 'array'"):
        canonical_schema({"type": "array"}, "t")
    with pytest.raises(InvalidArgumentError, match="not a JSON object"):
        canonical_schema(["type"], "t")


def test_remote_refs_are_never_fetched() -> None:
    validate = compile_schema({"type": "object", "properties": {
        "a": {"$ref": "https://example.invalid/schema.json"}}}, "t")
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="cannot be applied"):
        validate({"a": 1})
    validate({})  # the ref is only followed where it applies


def test_user_tools_keep_the_compiled_validator() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add.validator is None
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        add.validate({"a": "x", "b": 1})
