"""A reference web application: power_loop behind Starlette, a worker beside it.

``python -m examples.web`` (from the repository's root) serves the page on
http://127.0.0.1:8000 and runs a worker process next to it; docs/web.md explains the
parts and how to deploy them.
"""
