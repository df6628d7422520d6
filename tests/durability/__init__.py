"""Durability and concurrency tests with real processes, real servers and SIGKILL."""
