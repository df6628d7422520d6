"""``WorkflowSpec``: the JSON DSL of a workflow, validated before anything runs.

A node is one JSON object with exactly one kind key:

* ``{"agent": NAME, "input": TEMPLATE}``: a leaf, one task for the agent ``NAME``;
* ``{"sequence": [NODE, ...]}``: one after another; its output is the last one's;
* ``{"parallel": [NODE, ...], "max_concurrency": N}``: at once; a list of outputs;
* ``{"foreach": REF, "do": NODE, "max_concurrency": N}``: ``do`` once per item of the
  list ``REF`` names; a list of outputs, in item order;
* ``{"branch": [{"if": COND, "then": NODE}, ...], "else": NODE}``: the first whose
  condition holds;
* ``{"wait": SIGNAL, "timeout": SECONDS}``: until ``signal_workflow`` sends ``SIGNAL``
  (output: its payload; ``null`` on timeout);
* ``{"sleep": SECONDS}``: a durable pause.

Any node may carry ``"id"``: later steps read its output as ``steps.<id>``. References
(``REF``) are dotted paths: ``input``, ``input.a.0``, ``steps.x``, ``item``, ``index``.
Templates substitute ``{{REF}}``. Conditions are JSON too (``eq``, ``ne``, ``lt``,
``gt``, ``contains``, ``exists``, ``not``, ``and``, ``or``); operands are literals or
``{"ref": REF}``. Nothing is evaluated as code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from power_loop.errors import WorkflowSpecError

KINDS = ("agent", "sequence", "parallel", "foreach", "branch", "wait", "sleep")
_ALLOWED: dict[str, frozenset[str]] = {
    "agent": frozenset({"agent", "input", "id"}),
    "sequence": frozenset({"sequence", "id"}),
    "parallel": frozenset({"parallel", "max_concurrency", "id"}),
    "foreach": frozenset({"foreach", "do", "max_concurrency", "id"}),
    "branch": frozenset({"branch", "else", "id"}),
    "wait": frozenset({"wait", "timeout", "id"}),
    "sleep": frozenset({"sleep", "id"}),
}
COMPARE = ("eq", "ne", "lt", "gt", "contains")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
MAX_CONCURRENCY = 64
MAX_SLEEP = 366 * 86_400.0


def _ptr(base: str, *parts: str | int) -> str:
    for part in parts:
        base += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return base


@dataclass(frozen=True, slots=True)
class _Scope:
    visible: frozenset[str]
    in_foreach: bool


class WorkflowSpec:
    """A validated workflow (see the module docstring for the DSL).

    Args:
        spec: The JSON object (a ``dict``) or its JSON text.
        agents: When given, every leaf must name one of these agents.

    Raises:
        WorkflowSpecError: with ``pointer`` (the JSON pointer of the offending node) and
            ``reason``.
    """

    def __init__(self, spec: Mapping[str, Any] | str, *,
                 agents: frozenset[str] | set[str] | None = None) -> None:
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError as exc:
                raise WorkflowSpecError("", f"not JSON: {exc}") from None
        if not isinstance(spec, Mapping):
            raise WorkflowSpecError("", "a workflow is a JSON object with one kind key "
                                    f"({', '.join(KINDS)})")
        self.root: dict[str, Any] = json.loads(json.dumps(spec))
        self._agents = None if agents is None else frozenset(agents)
        self._ids: set[str] = set()
        self._check(self.root, "", _Scope(frozenset(), False))

    @property
    def hash(self) -> str:
        """A hash of the spec's canonical JSON (stored with the workflow)."""
        return spec_hash(self.root)

    def to_json(self) -> dict[str, Any]:
        """A copy of the spec as JSON data."""
        copy: dict[str, Any] = json.loads(json.dumps(self.root))
        return copy

    # -- validation -------------------------------------------------------------------

    def _check(self, node: Any, ptr: str, scope: _Scope) -> frozenset[str]:
        """Check ``node``; return the ids it defines that later siblings may read."""
        if not isinstance(node, dict):
            raise WorkflowSpecError(ptr, "a step is a JSON object with one kind key "
                                    f"({', '.join(KINDS)})")
        kinds = [k for k in KINDS if k in node]
        if len(kinds) != 1:
            raise WorkflowSpecError(ptr, f"a step needs exactly one of {', '.join(KINDS)}; "
                                    f"found {kinds or 'none'}")
        kind = kinds[0]
        extra = sorted(set(node) - _ALLOWED[kind])
        if extra:
            raise WorkflowSpecError(_ptr(ptr, extra[0]), f"unknown key in a {kind!r} step; "
                                    f"allowed: {', '.join(sorted(_ALLOWED[kind]))}")
        own: frozenset[str] = frozenset()
        if "id" in node:
            step_id = node["id"]
            if not isinstance(step_id, str) or not _ID.match(step_id):
                raise WorkflowSpecError(_ptr(ptr, "id"), "an id is 1-64 letters, digits, "
                                        "'_' or '-', starting with a letter or '_'")
            if step_id in self._ids:
                raise WorkflowSpecError(_ptr(ptr, "id"), f"id {step_id!r} is used twice")
            self._ids.add(step_id)
            own = frozenset({step_id})
        inner: frozenset[str] = getattr(self, f"_check_{kind}")(node, ptr, scope)
        return own | inner

    def _check_agent(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        name = node["agent"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkflowSpecError(_ptr(ptr, "agent"), "an agent name is 1-64 letters, "
                                    "digits, '_' or '-'")
        if self._agents is not None and name not in self._agents:
            raise WorkflowSpecError(_ptr(ptr, "agent"), f"there is no agent {name!r}; "
                                    f"agents: {', '.join(sorted(self._agents)) or 'none'}")
        template = node.get("input", "")
        if not isinstance(template, str):
            raise WorkflowSpecError(_ptr(ptr, "input"), "the input template is a string")
        for match in TEMPLATE.finditer(template):
            self._check_ref(match.group(1), _ptr(ptr, "input"), scope)
        return frozenset()

    def _children(self, node: dict[str, Any], key: str, ptr: str) -> list[Any]:
        children = node[key]
        if not isinstance(children, list) or not children:
            raise WorkflowSpecError(_ptr(ptr, key), f"{key!r} takes a non-empty list of steps")
        return children

    def _check_sequence(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        defined: frozenset[str] = frozenset()
        for i, child in enumerate(self._children(node, "sequence", ptr)):
            defined |= self._check(child, _ptr(ptr, "sequence", i),
                                   _Scope(scope.visible | defined, scope.in_foreach))
        return defined

    def _check_concurrency(self, node: dict[str, Any], ptr: str) -> None:
        if "max_concurrency" in node:
            value = node["max_concurrency"]
            if (not isinstance(value, int) or isinstance(value, bool)
                    or not 1 <= value <= MAX_CONCURRENCY):
                raise WorkflowSpecError(_ptr(ptr, "max_concurrency"), "max_concurrency is "
                                        f"an integer from 1 to {MAX_CONCURRENCY}")

    def _check_parallel(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        self._check_concurrency(node, ptr)
        defined: frozenset[str] = frozenset()
        for i, child in enumerate(self._children(node, "parallel", ptr)):
            # Siblings run at once: none may read another's output.
            defined |= self._check(child, _ptr(ptr, "parallel", i), scope)
        return defined

    def _check_foreach(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        self._check_concurrency(node, ptr)
        source = node["foreach"]
        if not isinstance(source, str):
            raise WorkflowSpecError(_ptr(ptr, "foreach"), "foreach takes a reference to a "
                                    "list (input..., steps.<id>..., item...)")
        self._check_ref(source, _ptr(ptr, "foreach"), scope)
        if "do" not in node:
            raise WorkflowSpecError(ptr, "foreach needs a 'do' step")
        self._check(node["do"], _ptr(ptr, "do"), _Scope(scope.visible, True))
        return frozenset()  # outputs inside an item are read only inside it

    def _check_branch(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        for i, arm in enumerate(self._children(node, "branch", ptr)):
            at = _ptr(ptr, "branch", i)
            if not isinstance(arm, dict) or set(arm) != {"if", "then"}:
                raise WorkflowSpecError(at, "a branch arm is {\"if\": condition, "
                                        "\"then\": step}")
            self._check_cond(arm["if"], _ptr(at, "if"), scope)
            self._check(arm["then"], _ptr(at, "then"), scope)
        if "else" in node:
            self._check(node["else"], _ptr(ptr, "else"), scope)
        return frozenset()  # an arm may not run: its outputs are not for later steps

    def _check_wait(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        name = node["wait"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkflowSpecError(_ptr(ptr, "wait"), "a signal name is 1-64 letters, "
                                    "digits, '_' or '-'")
        if "timeout" in node:
            self._check_seconds(node["timeout"], _ptr(ptr, "timeout"))
        return frozenset()

    def _check_sleep(self, node: dict[str, Any], ptr: str, scope: _Scope) -> frozenset[str]:
        self._check_seconds(node["sleep"], _ptr(ptr, "sleep"))
        return frozenset()

    @staticmethod
    def _check_seconds(value: Any, ptr: str) -> None:
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not 0 <= value <= MAX_SLEEP):
            raise WorkflowSpecError(ptr, f"seconds are a number from 0 to {MAX_SLEEP:.0f}")

    def _check_ref(self, ref: str, ptr: str, scope: _Scope) -> None:
        parts = ref.split(".")
        head = parts[0]
        if head == "input":
            return
        if head in ("item", "index"):
            if not scope.in_foreach:
                raise WorkflowSpecError(ptr, f"{head!r} is only known inside a foreach's do")
            return
        if head == "steps" and len(parts) >= 2:
            if parts[1] not in scope.visible:
                raise WorkflowSpecError(ptr, f"reference {ref!r}: no step with id "
                                        f"{parts[1]!r} has finished before this one "
                                        "(only earlier steps of a sequence can be read)")
            return
        raise WorkflowSpecError(ptr, f"reference {ref!r} must start with input, steps.<id>, "
                                "item or index")

    def _check_cond(self, cond: Any, ptr: str, scope: _Scope) -> None:
        if not isinstance(cond, dict) or len(cond) != 1:
            raise WorkflowSpecError(ptr, "a condition is an object with one operator: "
                                    f"{', '.join(COMPARE)}, exists, not, and, or")
        (op, arg), = cond.items()
        if op in COMPARE:
            if not isinstance(arg, list) or len(arg) != 2:
                raise WorkflowSpecError(_ptr(ptr, op), f"{op!r} takes two operands")
            for i, operand in enumerate(arg):
                if isinstance(operand, dict):
                    if set(operand) != {"ref"} or not isinstance(operand["ref"], str):
                        raise WorkflowSpecError(_ptr(ptr, op, i), "an object operand is "
                                                "{\"ref\": reference}")
                    self._check_ref(operand["ref"], _ptr(ptr, op, i, "ref"), scope)
        elif op == "exists":
            if not isinstance(arg, str):
                raise WorkflowSpecError(_ptr(ptr, op), "'exists' takes a reference")
            self._check_ref(arg, _ptr(ptr, op), scope)
        elif op == "not":
            self._check_cond(arg, _ptr(ptr, op), scope)
        elif op in ("and", "or"):
            if not isinstance(arg, list) or not arg:
                raise WorkflowSpecError(_ptr(ptr, op), f"{op!r} takes a non-empty list")
            for i, sub in enumerate(arg):
                self._check_cond(sub, _ptr(ptr, op, i), scope)
        else:
            raise WorkflowSpecError(_ptr(ptr, op), f"unknown operator {op!r}")


def spec_hash(root: Any) -> str:
    text = json.dumps(root, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def first_difference(old: Any, new: Any, ptr: str = "") -> str | None:
    """The JSON pointer of the first place ``old`` and ``new`` differ (``None``: equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                return _ptr(ptr, key)
            found = first_difference(old[key], new[key], _ptr(ptr, key))
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            found = first_difference(a, b, _ptr(ptr, i))
            if found is not None:
                return found
        return None if len(old) == len(new) else _ptr(ptr, min(len(old), len(new)))
    return None if old == new and type(old) is type(new) else ptr


def iter_nodes(node: dict[str, Any], ptr: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node with its pointer, parents first."""
    yield ptr, node
    for key in ("sequence", "parallel"):
        for i, child in enumerate(node.get(key, ())):
            yield from iter_nodes(child, _ptr(ptr, key, i))
    if "do" in node:
        yield from iter_nodes(node["do"], _ptr(ptr, "do"))
    for i, arm in enumerate(node.get("branch", ())):
        yield from iter_nodes(arm["then"], _ptr(ptr, "branch", i, "then"))
    if "else" in node:
        yield from iter_nodes(node["else"], _ptr(ptr, "else"))
