"""Benchmarks for power_loop: ``python -m bench <name>`` prints figures, never asserts them.

* ``store`` (:mod:`bench.store`): appends per second through ``Store.append_messages``
  on each backend, beside a floor written against the raw driver.
* ``loop`` (:mod:`bench.loop`): agent sends through ``StatefulAgentLoop`` beside a
  raw-driver floor (:mod:`bench.send_floor`), SQL per send, latency by history length
  with the store's share (:mod:`bench.stopwatch`), a cold send, memory.

Shared pieces: :mod:`bench.servers` finds (or starts) the database servers,
:mod:`bench.machine` describes the machine and renders tables, :mod:`bench.statements`
counts the SQL statements a workload sends through each driver.
"""
