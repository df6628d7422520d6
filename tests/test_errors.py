"""The error tree: one root, frozen codes, the documented shape, structured attributes."""

from __future__ import annotations

import inspect
import re
import tomllib

import pytest

import power_loop
from power_loop import errors, llm
from power_loop.errors import (
    MissingDriverError,
    PowerLoopError,
    SchemaMissingError,
    SendNotFoundError,
    SessionBusyError,
    SessionError,
    SessionNotFoundError,
    StoreError,
)
from tests.cli_support import REPO

# Frozen: users match on these strings. Changing one is a breaking change; adding a
# class means adding its line here on purpose.
FROZEN_CODES: dict[str, str] = {
    "MCPServerError": "mcp_server",
    "WorkflowBusyError": "workflow_busy",
    "WorkflowError": "workflow_error",
    "WorkflowFailedError": "workflow_failed",
    "WorkflowLeaseLostError": "workflow_lease_lost",
    "WorkflowNotFoundError": "workflow_not_found",
    "WorkflowSpecChangedError": "workflow_spec_changed",
    "WorkflowSpecError": "workflow_spec_invalid",
    "PowerLoopError": "power_loop_error",
    "ConfigurationError": "configuration",
    "InvalidDSNError": "invalid_dsn",
    "MissingDriverError": "missing_driver",
    "InvalidIdentifierError": "invalid_identifier",
    "SkillError": "skill_invalid",
    "InvalidArgumentError": "invalid_argument",
    "HistoryInvariantError": "history_invariant",
    "FoldError": "fold_failed",
    "FoldVetoedError": "fold_vetoed",
    "HookError": "hook_failed",
    "SendVetoedError": "send_vetoed",
    "StructuredOutputError": "structured_output_invalid",
    "LLMError": "llm_error",
    "LLMRateLimitError": "llm_rate_limited",
    "LLMQuotaError": "llm_quota_exceeded",
    "LLMUnavailableError": "llm_unavailable",
    "LLMTimeoutError": "llm_timeout",
    "LLMAuthenticationError": "llm_authentication",
    "LLMBadRequestError": "llm_bad_request",
    "LLMContextOverflowError": "llm_context_overflow",
    "LLMStreamInterruptedError": "llm_stream_interrupted",
    "LLMResponseError": "llm_invalid_response",
    "SessionError": "session_error",
    "SessionNotFoundError": "session_not_found",
    "SessionExistsError": "session_exists",
    "SendNotFoundError": "send_not_found",
    "SessionBusyError": "session_busy",
    "SendPendingError": "send_pending",
    "LeaseLostError": "lease_lost",
    "SessionWaitingError": "session_waiting",
    "WaitNotFoundError": "wait_not_found",
    "WaitDecidedError": "wait_already_decided",
    "StoreError": "store_error",
    "SchemaMissingError": "schema_missing",
    "SchemaVersionError": "schema_version",
    "TransientStoreError": "store_transient",
    "IntegrityConflictError": "store_conflict",
    "ConnectionLostError": "connection_lost",
    "CommitInDoubtError": "commit_in_doubt",
    "SeqConflictError": "seq_conflict",
    "StorageFullError": "storage_full",
    "StoreAuthenticationError": "store_authentication",
    "DatabaseNotFoundError": "database_not_found",
    "StoreFileError": "store_file",
    "StoreFileCorruptError": "store_file_corrupt",
    "PacketTooLargeError": "store_packet_too_large",
    "ScriptExhaustedError": "script_exhausted",
    "ToolError": "tool_error",
}


def error_classes() -> list[type[BaseException]]:
    """Every exception class defined in power_loop.errors or exported by power_loop."""
    found = {obj for _, obj in inspect.getmembers(errors, inspect.isclass)
             if issubclass(obj, BaseException) and obj.__module__ == errors.__name__}
    found |= {obj for name in power_loop.__all__
              for obj in [getattr(power_loop, name)]
              if inspect.isclass(obj) and issubclass(obj, BaseException)}
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_error_derives_from_power_loop_error() -> None:
    classes = error_classes()
    assert classes
    for cls in classes:
        assert issubclass(cls, PowerLoopError), cls


def test_codes_are_frozen() -> None:
    codes = {cls.__name__: cls.code for cls in error_classes()
             if issubclass(cls, PowerLoopError)}
    assert codes == FROZEN_CODES


def test_codes_are_unique_and_declared_by_each_class() -> None:
    classes = [c for c in error_classes() if issubclass(c, PowerLoopError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert "code" in vars(cls), f"{cls.__name__} inherits its parent's code"
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code)


def test_every_error_is_exported() -> None:
    defined_here = {cls.__name__ for cls in error_classes() if cls.__module__ == errors.__name__}
    assert set(errors.__all__) == defined_here
    for name in defined_here:
        assert getattr(power_loop, name) is getattr(errors, name)
        assert name in power_loop.__all__


def test_tool_error_is_in_the_tree_and_importable_where_it_was() -> None:
    from power_loop.tools import ToolError as from_tools
    from power_loop.tools.tool import ToolError as from_tool

    assert from_tools is from_tool is power_loop.ToolError is errors.ToolError
    raised = errors.ToolError("amount_cents must be positive")
    assert isinstance(raised, PowerLoopError) and raised.code == "tool_error"
    assert str(raised) == raised.message == "amount_cents must be positive"
    assert str(errors.ToolError()) == ""  # raising the bare class still works


def test_every_public_error_lives_in_the_error_module() -> None:
    outside = [c.__name__ for c in error_classes() if c.__module__ != errors.__name__]
    assert outside == []
    # Where users import it from is still the same class.
    exhausted = errors.ScriptExhaustedError
    assert llm.ScriptExhaustedError is exhausted is power_loop.ScriptExhaustedError


def test_the_docstring_draws_the_real_tree() -> None:
    assert errors.__doc__ is not None
    tree = errors.__doc__.split("The tree::", 1)[1]
    entries = re.findall(r"^( *[│├└─ ]*?)(\w+Error)(?: +(\w+))? *$", tree, re.MULTILINE)
    assert entries[0][1:] == ("PowerLoopError", "")  # the root, drawn without its code
    drawn = {name: code for _, name, code in entries[1:]}
    assert drawn == {c.__name__: c.code for c in error_classes()
                     if issubclass(c, PowerLoopError) and c is not PowerLoopError
                     and c.__module__ == errors.__name__}
    parents: list[str] = []
    for indent, name, _ in entries:
        depth = len(indent) // 4
        del parents[depth - 1:]
        cls = getattr(errors, name)
        expected = parents[-1] if parents else "Exception"
        assert cls.__bases__[0].__name__ == expected, f"{name} is drawn under {expected}"
        parents.append(name)


def test_code_is_readable_on_instances_and_in_repr() -> None:
    exc = SessionNotFoundError("session 's' does not exist", session_id="s")
    assert exc.code == "session_not_found" == SessionNotFoundError.code
    assert exc.session_id == "s" and exc.details == {"session_id": "s"}
    assert str(exc) == exc.message == "session 's' does not exist"
    assert "session_not_found" in repr(exc)


def test_structured_attributes() -> None:
    busy = SessionBusyError("busy", session_id="s", holder="w1", retry_after=2.5)
    assert (busy.session_id, busy.holder, busy.retry_after) == ("s", "w1", 2.5)
    assert StoreError("boom", backend="mysql").backend == "mysql"
    missing = SchemaMissingError("tables missing", backend="sqlite", ddl="CREATE TABLE x;")
    assert missing.ddl == "CREATE TABLE x;"
    assert missing.reason == "tables missing"  # the message without the DDL
    assert missing.message.startswith("tables missing")
    assert missing.message.endswith("CREATE TABLE x;")  # the DDL travels with the error
    send = SendNotFoundError("no send #3", session_id="s", send_index=3)
    assert (send.session_id, send.send_index, send.code) == ("s", 3, "send_not_found")
    assert send.details == {"session_id": "s", "send_index": 3}
    # A session that exists but lacks the send: a SessionError, never "session not found".
    assert isinstance(send, SessionError) and not isinstance(send, SessionNotFoundError)


@pytest.mark.parametrize(("driver", "extra"),
                         [("asyncpg", "postgres"), ("aiomysql", "mysql")])
def test_missing_driver_error_names_the_extra(driver: str, extra: str) -> None:
    exc = MissingDriverError(driver, extra)
    assert (exc.driver, exc.extra, exc.code) == (driver, extra, "missing_driver")
    assert f"pip install 'power-loop[{extra}]'" in exc.message
    assert driver in exc.message


@pytest.mark.parametrize(("driver", "extra"),
                         [("asyncpg", "postgres"), ("aiomysql", "mysql")])
def test_the_named_extra_installs_the_driver(driver: str, extra: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert extra in project["optional-dependencies"]
    installs = project["optional-dependencies"][extra] + project["dependencies"]
    assert any(re.match(rf"{driver}\b", requirement) for requirement in installs)
