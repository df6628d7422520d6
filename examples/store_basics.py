"""The store on its own: sessions, messages, leases, fencing, export and import.

    python examples/store_basics.py [DSN]

Runs on a temporary SQLite file by default; pass a postgresql:// or mysql:// DSN to run
the same code on another engine.
"""

from __future__ import annotations

import asyncio
import sys

from _common import data_dir

from power_loop import LeaseLostError, NewMessage, SessionBusyError, open_store


async def main(dsn: str) -> None:
    async with await open_store(dsn, table_prefix="example_") as store:
        session = await store.create_session("trip-42", system_prompt="You plan trips.",
                                             metadata={"user": "ada"})
        print(f"created {session.id!r} on {store.backend}")

        seqs = await store.append_messages(session.id, [
            NewMessage(0, "user", {"v": 1, "parts": [{"kind": "text", "text": "Lisbon? 🇵🇹"}],
                                   "meta": {}}),
        ])
        print(f"appended at seqs {seqs}; next_seq is now {await store.next_seq(session.id)}")

        lease = await store.acquire_lease(session.id, "worker-a", ttl=30)
        print(f"worker-a holds the lease, epoch {lease.epoch}")
        try:
            await store.acquire_lease(session.id, "worker-b", ttl=30)
        except SessionBusyError as busy:
            print(f"worker-b must wait: held by {busy.holder} for {busy.retry_after:.0f}s")

        # worker-a is paused; its lease lapses; worker-b takes over (simulated by a
        # release here), and worker-a's late write is fenced off.
        await store.release_lease(lease)
        taken = await store.acquire_lease(session.id, "worker-b", ttl=30)
        try:
            await store.append_messages(session.id, [NewMessage(0, "user", {"late": True})],
                                        epoch=lease.epoch)
        except LeaseLostError as lost:
            print(f"worker-a's late write rejected ({lost.code}); worker-b has epoch "
                  f"{taken.epoch}")
        await store.release_lease(taken)

        lines = [line async for line in store.export_session(session.id)]
        print(f"exported {len(lines)} JSONL lines; first: {lines[0].strip()[:70]}...")
        await store.delete_session(session.id)
        await store.import_session(lines)
        again = [line async for line in store.export_session(session.id)]
        print(f"re-imported; export is byte-identical: {again == lines}")
        await store.delete_session(session.id)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else str(data_dir("store") / "store.db")
    asyncio.run(main(target))
