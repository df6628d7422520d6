"""Human in the loop: a tool waits for approval, the agent asks the user, any process decides.

    python examples/human_in_the_loop.py

One "web request" sends; the model wants to refund an order (a tool that needs approval
above 50 EUR) and to ask the customer a question. The send stops, waiting. Later, two
other "requests" with nothing but the DSN and the session id each build their own loop:
one answers the question, the other approves the refund, and the send goes on. A
second approval of the same call is refused: the refund ran exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from _common import data_dir

from power_loop import (
    LLMRequest,
    ScriptedLLM,
    StatefulAgentLoop,
    Turn,
    WaitDecidedError,
    ask_user_tool,
    call_tools,
    reply,
    tool,
)

REFUNDS: list[str] = []


def above_50(arguments: Mapping[str, Any]) -> bool:
    """The policy: small refunds go through, larger ones wait for a person."""
    return bool(arguments["amount"] > 50)


@tool(requires_approval=above_50, approval_expires=24 * 3600)
def refund(order_id: str, amount: int) -> str:
    """Refund an order.

    Args:
        order_id: The order.
        amount: Euros to refund.
    """
    REFUNDS.append(order_id)
    return f"refunded {amount} EUR on {order_id}"


def model(request: LLMRequest) -> Turn:
    last = request.messages[-1]
    if last.role == "user":
        return call_tools(("refund", {"order_id": "A-17", "amount": 80}),
                          ("ask_user", {"question": "Shall I also cancel the subscription?"}))
    results = [m.tool_results[0].content for m in request.messages[-2:]]
    return reply(f"Done. Refund: {results[0]}. You said: {results[1]!r}.")


def make_loop(dsn: str) -> StatefulAgentLoop:
    """What each request builds: a loop from the DSN, the app's model and tools."""
    return StatefulAgentLoop(llm=ScriptedLLM(model), dsn=dsn,
                             tools=[refund, ask_user_tool()])


async def main() -> None:
    dsn = str(data_dir("hitl") / "app.db")

    async with make_loop(dsn) as loop:  # request 1: the customer writes
        sid = await loop.new_session(system_prompt="You are a support agent.")
        result = await loop.send("My order A-17 arrived broken.", sid)
        print(f"send stopped: {result.status}, {result.stop_reason}")
        for wait in result.waiting:
            print(f"  waits for {wait.kind}: {wait.tool_name} {wait.arguments} "
                  f"(call {wait.wait_id})")
        refund_call, question = sorted(result.waiting, key=lambda w: w.kind)

    async with make_loop(dsn) as loop:  # request 2: the customer answers
        result = await loop.answer(sid, question.wait_id, "No, keep it.")
        print(f"after the answer: {result.status}, still waiting on "
              f"{[w.tool_name for w in result.waiting]}")

    async with make_loop(dsn) as loop:  # request 3: a supervisor approves
        result = await loop.approve(sid, refund_call.wait_id)
        print(f"after the approval: {result.status}: {result.final_text}")
        try:
            await loop.approve(sid, refund_call.wait_id)
        except WaitDecidedError as exc:
            print(f"approving again: {exc.code} ({exc.status})")
    print(f"refunds made: {REFUNDS}")


if __name__ == "__main__":
    asyncio.run(main())
