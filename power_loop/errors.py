"""Every error power_loop raises on purpose.

(Over 600 lines on purpose: one module, one root, the whole tree in one place, as httpx
keeps it; each class is a few lines.)

All of them derive from :class:`PowerLoopError` and carry a frozen, machine-readable
``code`` (a class attribute: match on it, log it, alert on it; it never changes between
releases). Structured attributes (``session_id``, ``backend``...) replace strings to
parse. Foreign exceptions (driver and SDK errors) are mapped to these at exactly one
boundary per adapter and chained with ``raise ... from exc``.

The tree::

    PowerLoopError
    ├── ConfigurationError              configuration
    │   ├── InvalidDSNError             invalid_dsn
    │   ├── MissingDriverError          missing_driver
    │   ├── InvalidIdentifierError      invalid_identifier
    │   └── SkillError                  skill_invalid
    ├── InvalidArgumentError            invalid_argument
    │   └── WorkflowSpecError           workflow_spec_invalid
    ├── FoldError                       fold_failed
    │   └── FoldVetoedError             fold_vetoed
    ├── HookError                       hook_failed
    ├── SendVetoedError                 send_vetoed
    ├── HistoryInvariantError           history_invariant
    ├── ScriptExhaustedError            script_exhausted
    ├── StructuredOutputError           structured_output_invalid
    ├── ToolError                       tool_error
    ├── LLMError                        llm_error
    │   ├── LLMRateLimitError           llm_rate_limited
    │   ├── LLMQuotaError               llm_quota_exceeded
    │   ├── LLMUnavailableError         llm_unavailable
    │   ├── LLMTimeoutError             llm_timeout
    │   ├── LLMAuthenticationError      llm_authentication
    │   ├── LLMBadRequestError          llm_bad_request
    │   │   └── LLMContextOverflowError llm_context_overflow
    │   ├── LLMStreamInterruptedError   llm_stream_interrupted
    │   └── LLMResponseError            llm_invalid_response
    ├── SessionError                    session_error
    │   ├── SessionNotFoundError        session_not_found
    │   ├── SessionExistsError          session_exists
    │   ├── SendNotFoundError           send_not_found
    │   ├── SessionBusyError            session_busy
    │   ├── SendPendingError            send_pending
    │   │   └── SessionWaitingError     session_waiting
    │   ├── LeaseLostError              lease_lost
    │   ├── SeqConflictError            seq_conflict
    │   ├── WaitNotFoundError           wait_not_found
    │   └── WaitDecidedError            wait_already_decided
    ├── StoreError                      store_error
    │   ├── SchemaMissingError          schema_missing
    │   ├── SchemaVersionError          schema_version
    │   ├── TransientStoreError         store_transient
    │   ├── IntegrityConflictError      store_conflict
    │   ├── ConnectionLostError         connection_lost
    │   ├── CommitInDoubtError          commit_in_doubt
    │   ├── StorageFullError            storage_full
    │   ├── StoreAuthenticationError    store_authentication
    │   ├── DatabaseNotFoundError       database_not_found
    │   ├── StoreFileError              store_file
    │   │   └── StoreFileCorruptError   store_file_corrupt
    │   └── PacketTooLargeError         store_packet_too_large
    ├── MCPServerError                  mcp_server
    └── WorkflowError                   workflow_error
        ├── WorkflowNotFoundError       workflow_not_found
        ├── WorkflowSpecChangedError    workflow_spec_changed
        ├── WorkflowBusyError           workflow_busy
        ├── WorkflowLeaseLostError      workflow_lease_lost
        └── WorkflowFailedError         workflow_failed
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CommitInDoubtError",
    "ConfigurationError",
    "ConnectionLostError",
    "DatabaseNotFoundError",
    "FoldError",
    "FoldVetoedError",
    "HistoryInvariantError",
    "HookError",
    "IntegrityConflictError",
    "InvalidArgumentError",
    "InvalidDSNError",
    "InvalidIdentifierError",
    "LLMAuthenticationError",
    "LLMBadRequestError",
    "LLMContextOverflowError",
    "LLMError",
    "LLMQuotaError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMStreamInterruptedError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "LeaseLostError",
    "MCPServerError",
    "MissingDriverError",
    "PacketTooLargeError",
    "PowerLoopError",
    "SchemaMissingError",
    "SchemaVersionError",
    "ScriptExhaustedError",
    "SendNotFoundError",
    "SendPendingError",
    "SendVetoedError",
    "SeqConflictError",
    "SessionBusyError",
    "SessionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionWaitingError",
    "SkillError",
    "StorageFullError",
    "StoreAuthenticationError",
    "StoreError",
    "StoreFileCorruptError",
    "StoreFileError",
    "StructuredOutputError",
    "ToolError",
    "TransientStoreError",
    "WaitDecidedError",
    "WaitNotFoundError",
    "WorkflowBusyError",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowLeaseLostError",
    "WorkflowNotFoundError",
    "WorkflowSpecChangedError",
    "WorkflowSpecError",
]


class PowerLoopError(Exception):
    """Root of every error power_loop raises on purpose.

    Attributes:
        code: Stable machine-readable identifier of the error class.
        message: Human-readable explanation, saying what to do about it.
    """

    code: ClassVar[str] = "power_loop_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


# -- configuration ---------------------------------------------------------------------


class ConfigurationError(PowerLoopError):
    """The library was set up wrongly (DSN, options, environment)."""

    code: ClassVar[str] = "configuration"


class InvalidDSNError(ConfigurationError):
    """A DSN could not be understood: unknown scheme, bad option, bad value."""

    code: ClassVar[str] = "invalid_dsn"


class MissingDriverError(ConfigurationError):
    """The database driver for a DSN's scheme (or a sink's SDK, or PyYAML for skills) is
    not installed.

    Attributes:
        driver: The Python package that is missing (``asyncpg``, ``opentelemetry-api``...).
        extra: The power-loop extra that installs it (``postgres``...).
    """

    code: ClassVar[str] = "missing_driver"

    def __init__(self, driver: str, extra: str) -> None:
        super().__init__(
            f"the {driver!r} driver is not installed; install it with "
            f"`pip install 'power-loop[{extra}]'`",
            driver=driver,
            extra=extra,
        )
        self.driver = driver
        self.extra = extra


class InvalidIdentifierError(ConfigurationError):
    """A name that becomes part of SQL (a table prefix) is not a plain identifier."""

    code: ClassVar[str] = "invalid_identifier"


class SkillError(ConfigurationError):
    """A skills folder, or one of its ``SKILL.md`` files, cannot be accepted.

    Raised when :class:`~power_loop.Skills` reads the folder, never in the middle of a
    send (a bad call of a skill tool is a tool error the model reads).

    Attributes:
        path: The file or folder at fault.
        reason: What was wrong, a stable token: ``not_found``, ``not_a_folder``,
            ``unreadable``, ``too_large``, ``not_utf8``, ``not_text``,
            ``no_front_matter``, ``yaml_invalid``, ``yaml_alias``, ``yaml_tag``,
            ``not_a_mapping``, ``missing_name``, ``invalid_name``, ``name_mismatch``,
            ``missing_description``, ``invalid_description``, ``no_skill_file``.
    """

    code: ClassVar[str] = "skill_invalid"

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message, path=path, reason=reason)
        self.path = path
        self.reason = reason


# -- caller input ----------------------------------------------------------------------


class InvalidArgumentError(PowerLoopError):
    """A value passed to power_loop cannot be accepted (it is never half-written)."""

    code: ClassVar[str] = "invalid_argument"


class FoldError(PowerLoopError):
    """A fold strategy failed in a way of its own (it raised, or returned no usable fold).

    A fold's model failing is an :class:`LLMError` instead. Either way the send goes on
    with its history unfolded; the error is reported by a ``FoldFailed`` event.
    """

    code: ClassVar[str] = "fold_failed"


class FoldVetoedError(FoldError):
    """A hook's ``on_fold_start`` vetoed the fold: it is journaled ``failed`` with this code.

    The send goes on with its history unfolded, as after any failed fold.
    """

    code: ClassVar[str] = "fold_vetoed"


class HookError(PowerLoopError):
    """A hook raised, or returned something its hook point cannot use.

    The send ends with this error (chained to what the hook raised) and is left as
    consistent as a crash at that point would leave it: nothing the hook touched is
    half-written, the session's lease is released, and ``resume`` carries the send on
    once the hook stops failing. Raised from ``on_send_end``, the send is already
    stored finished and ``result`` holds it.

    Attributes:
        hook: The hook's class name.
        point: The hook point (``on_model_request``...).
        result: With ``on_send_end``: the finished send's result; else ``None``.
    """

    code: ClassVar[str] = "hook_failed"

    def __init__(self, message: str, *, hook: str, point: str, result: Any = None) -> None:
        super().__init__(message, hook=hook, point=point)
        self.hook = hook
        self.point = point
        self.result = result


class SendVetoedError(PowerLoopError):
    """A hook's ``on_send_start`` vetoed the send: nothing was stored.

    Attributes:
        reason: The veto's reason, as the hook gave it.
    """

    code: ClassVar[str] = "send_vetoed"

    def __init__(self, message: str, *, reason: str, session_id: str) -> None:
        super().__init__(message, reason=reason, session_id=session_id)
        self.reason = reason
        self.session_id = session_id


class HistoryInvariantError(PowerLoopError):
    """A request about to go to the model breaks a pairing rule (a power_loop bug).

    Every tool call must be followed, at once and in order, by exactly one result with
    its id. The request is never sent; please report the message with the session id.
    """

    code: ClassVar[str] = "history_invariant"


class ScriptExhaustedError(PowerLoopError):
    """A :class:`~power_loop.ScriptedLLM` was called more times than it has turns."""

    code: ClassVar[str] = "script_exhausted"


class StructuredOutputError(PowerLoopError):
    """The model's final answer is not JSON matching the requested ``output_schema``.

    The send itself is stored and finished; the answer is kept in ``text``.

    Attributes:
        text: The answer as the model wrote it.
        problem: What is wrong with it (a JSON error or the failed schema rule).
        result: The send's :class:`~power_loop.SendResult`.
    """

    code: ClassVar[str] = "structured_output_invalid"

    def __init__(self, message: str, *, text: str, problem: str, result: Any = None) -> None:
        super().__init__(message, problem=problem)
        self.text = text
        self.problem = problem
        self.result = result


class ToolError(PowerLoopError):
    """Raise from a tool to send the model an error with exactly this message.

    power_loop catches it (and every other exception a tool raises) and gives the model
    an error result; only this one's message is sent verbatim, so write it for the model:
    what was wrong and what to do instead. It is also importable from
    ``power_loop.tools``.
    """

    code: ClassVar[str] = "tool_error"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message, **details)


# -- model providers -------------------------------------------------------------------


class LLMError(PowerLoopError):
    """A model provider failed or refused a request.

    Attributes:
        provider: ``openai``, ``anthropic``...
        status_code: The HTTP status, when there was one.
        request_id: The provider's request id, when it sent one.
        retry_after: Seconds the provider asked to wait, when it said.
        retryable: Whether power_loop's retry policy tries again.
    """

    code: ClassVar[str] = "llm_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str, status_code: int | None = None,
                 request_id: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status_code=status_code,
                         request_id=request_id, retry_after=retry_after)
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after


class LLMRateLimitError(LLMError):
    """Too many requests for now (HTTP 429); retried with backoff."""

    code: ClassVar[str] = "llm_rate_limited"
    retryable: ClassVar[bool] = True


class LLMQuotaError(LLMError):
    """A spending limit or quota is exhausted; retrying will not help."""

    code: ClassVar[str] = "llm_quota_exceeded"


class LLMUnavailableError(LLMError):
    """The provider is down, overloaded (5xx, 529) or unreachable; retried."""

    code: ClassVar[str] = "llm_unavailable"
    retryable: ClassVar[bool] = True


class LLMTimeoutError(LLMError):
    """The provider did not answer in time; retried."""

    code: ClassVar[str] = "llm_timeout"
    retryable: ClassVar[bool] = True


class LLMAuthenticationError(LLMError):
    """The API key was refused (HTTP 401/403): check POWER_LOOP_API_KEY."""

    code: ClassVar[str] = "llm_authentication"


class LLMBadRequestError(LLMError):
    """The provider rejected the request as invalid (HTTP 400/404/422)."""

    code: ClassVar[str] = "llm_bad_request"


class LLMContextOverflowError(LLMBadRequestError):
    """The request is longer than the model's context window."""

    code: ClassVar[str] = "llm_context_overflow"


class LLMStreamInterruptedError(LLMError):
    """The answer broke off after part of it had streamed.

    It is never retried silently: the loop keeps the partial answer (marked) and leaves
    the send pending, so ``resume`` can continue it.
    """

    code: ClassVar[str] = "llm_stream_interrupted"


class LLMResponseError(LLMError):
    """An :class:`~power_loop.LLMService` broke its contract (a bug in the service).

    It yielded something that is not a stream item, ended without an ``LLMResponse``, or
    answered with a message power_loop cannot store (a role other than ``assistant``, a
    tool result, a part whose fields are not strings). Nothing of the answer is stored;
    the send is left pending (``resume`` calls the model again, ``abort`` ends it).
    """

    code: ClassVar[str] = "llm_invalid_response"


# -- sessions --------------------------------------------------------------------------


class SessionError(PowerLoopError):
    """Something about one session prevents the operation.

    Attributes:
        session_id: The session concerned.
    """

    code: ClassVar[str] = "session_error"

    def __init__(self, message: str, *, session_id: str, **details: Any) -> None:
        super().__init__(message, session_id=session_id, **details)
        self.session_id = session_id


class SessionNotFoundError(SessionError):
    """No session with this id exists in the store."""

    code: ClassVar[str] = "session_not_found"


class SessionExistsError(SessionError):
    """A session with this id already exists (create or import)."""

    code: ClassVar[str] = "session_exists"


class SendNotFoundError(SessionError):
    """The session exists but has no send with this index.

    Attributes:
        send_index: The index asked for.
    """

    code: ClassVar[str] = "send_not_found"

    def __init__(self, message: str, *, session_id: str, send_index: int) -> None:
        super().__init__(message, session_id=session_id, send_index=send_index)
        self.send_index = send_index


class SessionBusyError(SessionError):
    """Another holder has the session's lease and it has not expired.

    Attributes:
        holder: The lease owner's id, as it recorded itself.
        retry_after: Seconds until the current lease expires if not renewed.
    """

    code: ClassVar[str] = "session_busy"

    def __init__(
        self, message: str, *, session_id: str, holder: str | None, retry_after: float
    ) -> None:
        super().__init__(message, session_id=session_id, holder=holder, retry_after=retry_after)
        self.holder = holder
        self.retry_after = retry_after


class SendPendingError(SessionError):
    """The session has an unfinished send; resume, heal or abort it before a new one.

    Attributes:
        send_index: The index of the unfinished send.
    """

    code: ClassVar[str] = "send_pending"

    def __init__(self, message: str, *, session_id: str, send_index: int) -> None:
        super().__init__(message, session_id=session_id, send_index=send_index)
        self.send_index = send_index


class LeaseLostError(SessionError):
    """A write carried a lease epoch that is no longer current (a fencing rejection).

    Someone else took the session over after this holder's lease expired. Nothing was
    written; the holder must stop working on the session.

    Attributes:
        epoch: The stale epoch the writer presented.
    """

    code: ClassVar[str] = "lease_lost"

    def __init__(self, message: str, *, session_id: str, epoch: int) -> None:
        super().__init__(message, session_id=session_id, epoch=epoch)
        self.epoch = epoch


class SeqConflictError(SessionError):
    """An append named the seq it expected its first message to get
    (``expect_seq``), and the session had moved past it: another writer appended
    first. Nothing was written; read the session again before appending.

    Attributes:
        expected: The seq the caller expected.
        actual: The session's next seq when the append was refused.
    """

    code: ClassVar[str] = "seq_conflict"

    def __init__(self, message: str, *, session_id: str, expected: int, actual: int) -> None:
        super().__init__(message, session_id=session_id, expected=expected, actual=actual)
        self.expected = expected
        self.actual = actual


class SessionWaitingError(SendPendingError):
    """The session's last send waits on a person: approve, reject or answer its calls
    (``loop.approve`` / ``loop.reject`` / ``loop.answer``, or ``power-loop sessions``),
    or abandon it with ``abort_pending``, before sending again.

    Attributes:
        waiting: The ids of the calls it waits on.
    """

    code: ClassVar[str] = "session_waiting"

    def __init__(self, message: str, *, session_id: str, send_index: int,
                 waiting: tuple[str, ...]) -> None:
        super().__init__(message, session_id=session_id, send_index=send_index)
        self.details["waiting"] = waiting
        self.waiting = waiting


class WaitNotFoundError(SessionError):
    """The session's send waits on no call with this id (a typo, or another session).

    Attributes:
        wait_id: The call id asked for.
    """

    code: ClassVar[str] = "wait_not_found"

    def __init__(self, message: str, *, session_id: str, wait_id: str) -> None:
        super().__init__(message, session_id=session_id, wait_id=wait_id)
        self.wait_id = wait_id


class WaitDecidedError(SessionError):
    """The call was decided already (by another process, or by its expiry), or its send
    was abandoned: the decision asked for was not recorded.

    Attributes:
        wait_id: The call id.
        status: The decision it has: ``approved``, ``rejected``, ``answered`` or
            ``expired``; or ``abandoned`` (its send was aborted).
    """

    code: ClassVar[str] = "wait_already_decided"

    def __init__(self, message: str, *, session_id: str, wait_id: str, status: str) -> None:
        super().__init__(message, session_id=session_id, wait_id=wait_id, status=status)
        self.wait_id = wait_id
        self.status = status


# -- storage ---------------------------------------------------------------------------


class StoreError(PowerLoopError):
    """The database failed or refused an operation.

    Attributes:
        backend: ``sqlite``, ``postgresql`` or ``mysql`` when known.
    """

    code: ClassVar[str] = "store_error"

    def __init__(self, message: str, *, backend: str | None = None, **details: Any) -> None:
        super().__init__(message, backend=backend, **details)
        self.backend = backend


class SchemaMissingError(StoreError):
    """The power_loop tables are missing or behind (policy ``VERIFY``).

    Attributes:
        reason: What is missing, without the DDL.
        ddl: The exact statements that create or upgrade them, ready to run.
    """

    code: ClassVar[str] = "schema_missing"

    def __init__(self, message: str, *, backend: str, ddl: str) -> None:
        full = f"{message}\n\n-- run this DDL:\n{ddl}" if ddl else message
        super().__init__(full, backend=backend, ddl=ddl)
        self.reason = message
        self.ddl = ddl


class SchemaVersionError(StoreError):
    """The database schema is newer than this version of power_loop understands."""

    code: ClassVar[str] = "schema_version"


class TransientStoreError(StoreError):
    """A retryable failure (deadlock, serialization failure, lock timeout, busy file).

    The store retries these itself; one surfaces only once retries are exhausted.
    """

    code: ClassVar[str] = "store_transient"


class IntegrityConflictError(StoreError):
    """A uniqueness or integrity constraint rejected a write."""

    code: ClassVar[str] = "store_conflict"


class ConnectionLostError(StoreError):
    """The connection to the database broke or could not be made."""

    code: ClassVar[str] = "connection_lost"


class CommitInDoubtError(StoreError):
    """A write's ``COMMIT`` failed in a way that leaves its outcome unknown (the
    connection broke, or the statement timed out, after it was sent), and the store
    could not settle by reading whether it landed.

    The store never replays such a write blindly: writes it can check (appends with an
    expected seq, the send path's writes, lease claims) are settled by reading and
    surface as success or as the error the settled state implies. This error is what is
    left: read the state the write would have changed before deciding to write again.

    Attributes:
        operation: The store operation (``create_session``, ``append_messages``...).
        resolution: How far it got: ``unverifiable`` (the operation has no check: it
            may or may not have committed) or ``unreachable`` (the check itself could
            not reach the database in time).
    """

    code: ClassVar[str] = "commit_in_doubt"

    def __init__(self, message: str, *, backend: str | None = None,
                 operation: str = "", resolution: str = "unverifiable") -> None:
        super().__init__(message, backend=backend, operation=operation,
                         resolution=resolution)
        self.operation = operation
        self.resolution = resolution


class StorageFullError(StoreError):
    """The database has no room left (disk full, quota, tablespace)."""

    code: ClassVar[str] = "storage_full"


class StoreAuthenticationError(StoreError):
    """The server refused the login: a wrong password, an unknown user, or no rule
    letting this user in from this host. Check the user and password in the DSN."""

    code: ClassVar[str] = "store_authentication"


class DatabaseNotFoundError(StoreError):
    """The database named in the DSN does not exist (MySQL: or this user may not use it).

    Attributes:
        database: The name from the DSN.
    """

    code: ClassVar[str] = "database_not_found"

    def __init__(self, message: str, *, backend: str, database: str) -> None:
        super().__init__(message, backend=backend, database=database)
        self.database = database


class StoreFileError(StoreError):
    """A SQLite file cannot be opened or written: its directory is missing, it is a
    directory, or the process may not write it (WAL mode also writes beside it).

    Attributes:
        path: The file, as given in the DSN.
    """

    code: ClassVar[str] = "store_file"

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, backend="sqlite", path=path)
        self.path = path


class StoreFileCorruptError(StoreFileError):
    """The file is not a SQLite database, or it is damaged. Nothing read from it is
    copied into the message; restore the file from a backup."""

    code: ClassVar[str] = "store_file_corrupt"


class PacketTooLargeError(StoreError):
    """A statement is larger than the MySQL server's ``max_allowed_packet``.

    Nothing was written. Raise the server's limit or store smaller values.

    Attributes:
        size: The statement's size in bytes, when known.
        limit: The server's ``max_allowed_packet`` in bytes, when known.
    """

    code: ClassVar[str] = "store_packet_too_large"

    def __init__(self, message: str, *, size: int | None = None,
                 limit: int | None = None) -> None:
        super().__init__(message, backend="mysql", size=size, limit=limit)
        self.size = size
        self.limit = limit


# -- workflows -------------------------------------------------------------------------


class WorkflowError(PowerLoopError):
    """Something about one workflow prevents the operation.

    Attributes:
        workflow_id: The workflow concerned.
    """

    code: ClassVar[str] = "workflow_error"

    def __init__(self, message: str, *, workflow_id: str, **details: Any) -> None:
        super().__init__(message, workflow_id=workflow_id, **details)
        self.workflow_id = workflow_id


class WorkflowSpecError(InvalidArgumentError):
    """A workflow spec is not valid; nothing ran.

    Attributes:
        pointer: The JSON pointer of the offending node (``""`` for the whole spec).
        reason: What is wrong there.
    """

    code: ClassVar[str] = "workflow_spec_invalid"

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(f"workflow spec at {pointer or '/'!r}: {reason}", pointer=pointer,
                         reason=reason)
        self.pointer = pointer
        self.reason = reason


class WorkflowNotFoundError(WorkflowError):
    """No workflow with this id exists in the store."""

    code: ClassVar[str] = "workflow_not_found"


class WorkflowSpecChangedError(WorkflowError):
    """A resume was given a spec that differs from the one the workflow started with.

    Attributes:
        path: The JSON pointer of the first node that differs.
    """

    code: ClassVar[str] = "workflow_spec_changed"

    def __init__(self, message: str, *, workflow_id: str, path: str) -> None:
        super().__init__(message, workflow_id=workflow_id, path=path)
        self.path = path


class WorkflowBusyError(WorkflowError):
    """Another executor holds the workflow's lease and it has not expired."""

    code: ClassVar[str] = "workflow_busy"


class WorkflowLeaseLostError(WorkflowError):
    """A journal write carried a lease epoch that is no longer current; nothing was
    written. Another executor took the workflow over: this one must stop."""

    code: ClassVar[str] = "workflow_lease_lost"


class WorkflowFailedError(WorkflowError):
    """The workflow ended without an output (a step failed, or it was cancelled).

    Attributes:
        status: ``failed`` or ``cancelled``.
    """

    code: ClassVar[str] = "workflow_failed"

    def __init__(self, message: str, *, workflow_id: str, status: str) -> None:
        super().__init__(message, workflow_id=workflow_id, status=status)
        self.status = status


# -- MCP servers ----------------------------------------------------------------------


class MCPServerError(PowerLoopError):
    """An MCP server's tools could not be listed: it could not be started or reached,
    or it did not answer the handshake or ``tools/list`` in time (see docs/mcp.md).

    A send whose tool source fails this way stays pending (resume it once the server
    is back), as after a model outage. Failures of single calls never raise this: they
    become error results the model reads.

    Attributes:
        server: The server's ``name``.
    """

    code: ClassVar[str] = "mcp_server"

    def __init__(self, message: str, *, server: str, **details: Any) -> None:
        super().__init__(message, server=server, **details)
        self.server = server
