"""The opt-in ``bash`` tool and the ``ShellBackend`` seam its commands run through."""

from power_loop.shell.backend import ShellBackend, ShellOutput, ShellRequest, ShellResult
from power_loop.shell.local import DEFAULT_ENV_ALLOW, LocalShell
from power_loop.shell.tool import IDEMPOTENCY_KEY_VAR, bash_tool

__all__ = ["DEFAULT_ENV_ALLOW", "IDEMPOTENCY_KEY_VAR", "LocalShell", "ShellBackend",
           "ShellOutput", "ShellRequest", "ShellResult", "bash_tool"]
