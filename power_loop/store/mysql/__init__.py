"""MySQL and MariaDB backend: its dialect (SQL text, no driver import) beside its driver adapter."""
