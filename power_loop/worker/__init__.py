"""Background workers: fire due timers and finish sends that dead processes left."""

from power_loop.worker.worker import LoopFactory, Worker, WorkerStats, run_worker

__all__ = ["LoopFactory", "Worker", "WorkerStats", "run_worker"]
