"""Benchmarks for power_loop: ``python -m bench <name>`` prints figures, never asserts them.

* ``store`` (:mod:`bench.store`): appends per second through ``Store.append_messages``
  on each backend, beside a floor written against the raw driver.

Shared pieces: :mod:`bench.servers` finds (or starts) the database servers,
:mod:`bench.machine` describes the machine and renders tables, :mod:`bench.statements`
counts the SQL statements a workload sends through each driver.
"""
