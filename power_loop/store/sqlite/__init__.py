"""SQLite backend: its dialect (SQL text, no driver import) beside its driver adapter."""
