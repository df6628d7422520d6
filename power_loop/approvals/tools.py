"""``ask_user``: the built-in tool that puts a question to the user and waits."""

from __future__ import annotations

import dataclasses

from power_loop.tools.tool import Tool, ToolError, make_tool

_DESCRIPTION = ("Ask the user a question and wait for the answer. Use it when you need "
                "information or a choice only the user can give; the conversation pauses "
                "until they answer, and their answer is this tool's result.")


def ask_user_tool(*, name: str = "ask_user", description: str = _DESCRIPTION) -> Tool:
    """The ``ask_user`` tool, under another name or description if you like.

    Add it to a loop's tools to let the model ask. A call stops the send with
    ``stop_reason="awaiting_input"``; ``loop.answer(session_id, call_id, text)``
    continues it with ``text`` as the result.
    """

    async def ask_user(question: str) -> str:
        """Ask the user.

        Args:
            question: The question, as the user should read it.
        """
        # Only reached when the call could not wait (an unknown state): never answer
        # on the user's behalf.
        raise ToolError("Error: the question could not be put to the user.")

    built = make_tool(ask_user, name=name, description=description)
    return dataclasses.replace(built, asks_user=True)
