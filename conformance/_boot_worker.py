"""One process of the concurrent first-boot test (run as a script, not collected).

    python _boot_worker.py DSN TABLE_PREFIX START_AT

Sleeps until the wall-clock time START_AT so that every worker calls ``open_store`` at
the same moment, then opens the store (creating the schema if nobody has yet), writes
one session named after its pid, and exits 0; any error is printed and exits 1.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from power_loop import open_store


async def boot(dsn: str, prefix: str) -> None:
    store = await open_store(dsn, table_prefix=prefix)
    try:
        await store.create_session(f"boot-{os.getpid()}")
    finally:
        await store.aclose()


def main() -> None:
    dsn, prefix, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start_at - time.time()))
    asyncio.run(boot(dsn, prefix))


if __name__ == "__main__":
    main()
