"""The worker process: finishes the sends a dead web process left, fires timers.

It builds its loop from the same :mod:`.agent` as the web process (same model, tools
and configuration), so it can finish any send the web process started.
"""

from __future__ import annotations

from power_loop import StatefulAgentLoop, Store, Worker, WorkerStats

from .agent import Settings, make_llm, make_loop, make_tools


async def run_worker(settings: Settings, *, poll_interval: float = 1.0) -> WorkerStats:
    """Work until SIGTERM or SIGINT (running sends get their grace, then are handed back)."""
    llm, tools = make_llm(), make_tools(settings)

    def loop_factory(store: Store) -> StatefulAgentLoop:
        return make_loop(store, settings, llm, tools)

    worker = Worker(dsn=settings.dsn, table_prefix=settings.table_prefix,
                    loop_factory=loop_factory, poll_interval=poll_interval,
                    claim_ttl=max(5.0, settings.lease_ttl), grace_period=10.0)
    return await worker.run(handle_signals=True)
