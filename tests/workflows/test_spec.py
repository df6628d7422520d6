"""WorkflowSpec validation: precise pointers and reasons, and the published JSON Schema
agreeing with the validator (the committed file is the function's output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import WorkflowSpec, WorkflowSpecError, workflow_json_schema
from power_loop.workflows.spec import first_difference

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "workflow.schema.json"

VALID: list[dict[str, Any]] = [
    {"agent": "a", "input": "x {{input.q}}"},
    {"sequence": [{"agent": "a", "id": "s1"}, {"agent": "b", "input": "{{steps.s1}}"}]},
    {"parallel": [{"agent": "a"}, {"sleep": 1}], "max_concurrency": 2},
    {"foreach": "input.items", "do": {"agent": "a", "input": "{{item}} {{index}}"}},
    {"branch": [{"if": {"and": [{"exists": "input.x"}, {"not": {"gt": [{"ref": "input.x"},
                                                                        3]}}]},
                 "then": {"agent": "a"}}], "else": {"wait": "go", "timeout": 5}},
    {"branch": [{"if": {"contains": [{"ref": "input.tags"}, "x"]}, "then": {"sleep": 0}}]},
]

# (spec, pointer, a fragment of the reason)
INVALID: list[tuple[Any, str, str]] = [
    ([], "", "JSON object"),
    ({}, "", "exactly one of"),
    ({"agent": "a", "sleep": 1}, "", "exactly one of"),
    ({"agent": "a", "extra": 1}, "/extra", "unknown key"),
    ({"agent": "bad name"}, "/agent", "agent name"),
    ({"agent": "a", "input": 3}, "/input", "template is a string"),
    ({"sequence": []}, "/sequence", "non-empty list"),
    ({"sequence": [{"agent": "a"}, 3]}, "/sequence/1", "JSON object"),
    ({"parallel": [{"agent": "a"}], "max_concurrency": 0}, "/max_concurrency", "1 to"),
    ({"foreach": "input.x"}, "", "'do'"),
    ({"foreach": 3, "do": {"agent": "a"}}, "/foreach", "reference"),
    ({"agent": "a", "input": "{{item}}"}, "/input", "inside a foreach"),
    ({"agent": "a", "input": "{{steps.nope}}"}, "/input", "no step with id"),
    ({"sequence": [{"agent": "a", "input": "{{steps.b}}"}, {"agent": "b", "id": "b"}]},
     "/sequence/0/input", "no step with id"),
    ({"parallel": [{"agent": "a", "id": "p"}, {"agent": "b", "input": "{{steps.p}}"}]},
     "/parallel/1/input", "no step with id"),
    ({"sequence": [{"agent": "a", "id": "x"}, {"agent": "b", "id": "x"}]},
     "/sequence/1/id", "used twice"),
    ({"branch": [{"if": {"eq": [1]}, "then": {"agent": "a"}}]}, "/branch/0/if/eq",
     "two operands"),
    ({"branch": [{"if": {"lol": 1}, "then": {"agent": "a"}}]}, "/branch/0/if/lol",
     "unknown operator"),
    ({"branch": [{"then": {"agent": "a"}}]}, "/branch/0", "branch arm"),
    ({"wait": "go", "timeout": -1}, "/timeout", "seconds"),
    ({"sleep": True}, "/sleep", "seconds"),
    ({"agent": "a", "input": "{{os.system}}"}, "/input", "must start with"),
    ("{not json", "", "not JSON"),
]


_check_shape = fastjsonschema.compile(workflow_json_schema())


@pytest.mark.parametrize("spec", VALID)
def test_valid_specs_pass_the_validator_and_the_schema(spec: dict[str, Any]) -> None:
    WorkflowSpec(spec)
    _check_shape(spec)


@pytest.mark.parametrize(("spec", "pointer", "reason"), INVALID)
def test_invalid_specs_name_the_node_and_the_fault(spec: Any, pointer: str,
                                                   reason: str) -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        WorkflowSpec(spec)
    assert caught.value.code == "workflow_spec_invalid"
    assert caught.value.pointer == pointer
    assert reason in caught.value.reason


def test_leaves_may_be_checked_against_known_agents() -> None:
    with pytest.raises(WorkflowSpecError) as caught:
        WorkflowSpec({"parallel": [{"agent": "a"}, {"agent": "z"}]}, agents={"a"})
    assert caught.value.pointer == "/parallel/1/agent"


def test_the_committed_schema_is_the_published_one() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == workflow_json_schema()


def test_first_difference_names_the_first_changed_node() -> None:
    old = {"sequence": [{"agent": "a"}, {"agent": "b", "input": "x"}]}
    assert first_difference(old, old) is None
    assert first_difference(old, {"sequence": [{"agent": "a"}, {"agent": "b", "input": "y"}]}
                            ) == "/sequence/1/input"
    assert first_difference(old, {"sequence": [{"agent": "a"}]}) == "/sequence/1"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
        ["a", "go", "input.items", "{{input}}", "agent", "sequence", "do", "if"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["agent", "sequence", "parallel", "foreach", "do", "branch", "if",
                         "then", "else", "wait", "sleep", "timeout", "id", "input",
                         "max_concurrency", "eq", "ref", "not"]), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_json)
def test_the_schema_never_accepts_what_the_validator_refuses(spec: Any) -> None:
    """Hostile JSON: the validator either accepts it or names a pointer into it; and
    whatever fails the schema's shape also fails the validator."""
    try:
        WorkflowSpec(spec) if isinstance(spec, dict) else WorkflowSpec(json.dumps(spec))
        accepted = True
    except WorkflowSpecError as exc:
        accepted = False
        assert exc.pointer == "" or exc.pointer.startswith("/")
    if accepted:
        _check_shape(spec)


@pytest.mark.parametrize("spec", [spec for spec, _, reason in INVALID
                                  if reason not in ("no step with id", "used twice",
                                                    "inside a foreach", "must start with",
                                                    "not JSON", "reference")])
def test_the_schema_refuses_what_is_wrong_in_shape(spec: Any) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        _check_shape(spec)
