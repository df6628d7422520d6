"""The JSON Schema (draft-07) of the workflow DSL, for editors and for models.

The validator (:class:`~power_loop.WorkflowSpec`) checks more than the schema can say
(references to earlier steps, unique ids, known agents); the schema never accepts what
the validator refuses for its shape. docs/workflow.schema.json is this, committed.
"""

from __future__ import annotations

from typing import Any

from power_loop.workflows.spec import COMPARE, MAX_CONCURRENCY, MAX_SLEEP

_STEP = {"$ref": "#/definitions/step"}
_ID = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_CONC = {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY}
_SECONDS = {"type": "number", "minimum": 0, "maximum": MAX_SLEEP}
_REF = {"type": "string", "description": "input..., steps.<id>..., item..., index"}


def _kind(key: str, value: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key],
            "properties": {key: value, "id": _ID, **more}, "additionalProperties": False}


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow spec."""
    steps = {"type": "array", "minItems": 1, "items": _STEP}
    operand = {"anyOf": [{"type": "object", "required": ["ref"], "properties": {"ref": _REF},
                          "additionalProperties": False},
                         {"not": {"type": "object"}}]}
    compare = [{"type": "object", "required": [op], "properties": {
        op: {"type": "array", "minItems": 2, "maxItems": 2, "items": operand}},
        "additionalProperties": False} for op in COMPARE]
    conds = {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/condition"}}
    condition = {"oneOf": [
        *compare,
        _only("exists", _REF), _only("not", {"$ref": "#/definitions/condition"}),
        _only("and", conds), _only("or", conds)]}
    arm = {"type": "object", "required": ["if", "then"], "additionalProperties": False,
           "properties": {"if": {"$ref": "#/definitions/condition"}, "then": _STEP}}
    step = {"oneOf": [
        _kind("agent", _NAME, input={"type": "string"}),
        _kind("sequence", steps),
        _kind("parallel", steps, max_concurrency=_CONC),
        {**_kind("foreach", _REF, do=_STEP, max_concurrency=_CONC),
         "required": ["foreach", "do"]},
        _kind("branch", {"type": "array", "minItems": 1, "items": arm}, **{"else": _STEP}),
        _kind("wait", _NAME, timeout=_SECONDS),
        _kind("sleep", _SECONDS),
    ]}
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "https://power-loop.dev/schemas/workflow.json",
            "title": "power_loop workflow spec", "$ref": "#/definitions/step",
            "definitions": {"step": step, "condition": condition}}


def _only(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: value},
            "additionalProperties": False}
