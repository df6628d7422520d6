"""Timers and workers with real ``power-loop worker`` processes, kills, freezes and skew."""
